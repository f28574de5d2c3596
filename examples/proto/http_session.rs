//! HTTP/1.1 request framing over one connection's byte stream: which
//! requests are complete, skipping their bodies as they stream in. Shared by
//! the `http` example and its tokio peer (`bench_tokio_http`), so the two
//! servers differ only in the runtime under them.
//!
//! The caller keeps the bytes not yet consumed (evloop's net layer does it
//! for `on_data`; the tokio peer keeps a read buffer) and hands all of them
//! to [`Session::on_data`] after every read; the session keeps only the body
//! it is inside, if any.

use super::http_parse::{self, Body, Chunked, Error};

/// One connection's framing state: only the body being skipped, if we are
/// inside one.
#[derive(Default)]
pub struct Session {
    body: Option<(Skip, Reply)>,
}

/// The rest of a request body still to arrive.
enum Skip {
    Length(u64),
    Chunked(Chunked),
}

/// How to answer a request whose head (and body) we have read.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// HEAD: the same headers, no body.
    pub head_only: bool,
    /// HTTP/1.0 clients need keep-alive spelled out.
    pub http10: bool,
}

impl Session {
    /// Walk the unconsumed bytes `data`: `answer(Ok(reply))` for every
    /// request that is complete, in order, or `answer(Err(e))` once for
    /// input that cannot be parsed. Stops after an error or a reply that
    /// closes the connection (we cannot know where a next request would
    /// start). Returns the bytes consumed and whether the connection stays
    /// open; a request cut short consumes nothing of its head and comes
    /// back, longer, with the next call.
    // The tokio peer and the fuzz targets call it; the http example
    // serves in slices (`on_data_upto`).
    #[allow(dead_code)]
    pub fn on_data(&mut self, data: &[u8], answer: impl FnMut(Result<Reply, Error>)) -> (usize, bool) {
        self.on_data_upto(data, usize::MAX, answer)
    }

    /// True while a request's body is being skipped: bytes left over are
    /// then a piece of the body (a chunk-size line cut short), not a head.
    // The http example's header deadline asks; the tokio peer has none.
    #[allow(dead_code)]
    pub fn in_body(&self) -> bool {
        self.body.is_some()
    }

    /// Like [`on_data`](Self::on_data), but stop after `most` answers
    /// (at least one): what follows is left unconsumed, for a server that
    /// serves a long pipeline a slice at a time.
    pub fn on_data_upto(
        &mut self,
        data: &[u8],
        most: usize,
        mut answer: impl FnMut(Result<Reply, Error>),
    ) -> (usize, bool) {
        let mut used = 0;
        let mut left = most.max(1);
        loop {
            // Finish skipping the current request's body, then answer it.
            if let Some((skip, reply)) = &mut self.body {
                let rest = &data[used..];
                let done = match skip {
                    Skip::Length(left) => {
                        let n = (*left).min(rest.len() as u64);
                        used += n as usize;
                        *left -= n;
                        *left == 0
                    }
                    Skip::Chunked(chunked) => match chunked.skip(rest) {
                        Ok((n, done)) => {
                            used += n;
                            done
                        }
                        Err(e) => {
                            answer(Err(e));
                            return (data.len(), false);
                        }
                    },
                };
                if !done {
                    return (used, true);
                }
                let reply = *reply;
                self.body = None;
                answer(Ok(reply));
                if !reply.keep_alive {
                    return (data.len(), false);
                }
                left -= 1;
                if left == 0 {
                    return (used, true);
                }
            }
            // Then the next request head, if all of it is here.
            let req = match http_parse::parse(&data[used..]) {
                Ok(Some(req)) => req,
                Ok(None) => return (used, true),
                Err(e) => {
                    answer(Err(e));
                    return (data.len(), false);
                }
            };
            used += req.head_len;
            log::trace!(
                "{} {}",
                String::from_utf8_lossy(req.method),
                String::from_utf8_lossy(req.target)
            );
            let reply = Reply {
                keep_alive: req.keep_alive,
                head_only: req.method == b"HEAD",
                http10: req.minor == 0,
            };
            match req.body {
                Body::Empty => {
                    answer(Ok(reply));
                    if !reply.keep_alive {
                        return (data.len(), false);
                    }
                    left -= 1;
                    if left == 0 {
                        return (used, true);
                    }
                }
                Body::Length(n) => self.body = Some((Skip::Length(n), reply)),
                Body::Chunked => self.body = Some((Skip::Chunked(Chunked::default()), reply)),
            }
        }
    }
}
