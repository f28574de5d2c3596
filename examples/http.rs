//! An HTTP/1.1 server that answers every request with `Hello, World!` (the
//! TechEmpower "plaintext" shape), with keep-alive and pipelining.
//!
//! What to notice:
//! - **Framing is the handler's job, buffering is not.** `on_data` gets every
//!   byte not yet consumed and returns how many it used. A request cut in half
//!   by TCP returns 0 and comes back, longer, on the next read; the net layer
//!   keeps the tail. The parser (`proto/http_parse.rs`) is stateless for
//!   exactly that reason.
//! - **Pipelining costs nothing extra.** One `on_data` call answers every
//!   complete request in `data`; the writes are corked while the handler runs
//!   and leave in one `write(2)` when it returns.
//! - **Bodies are skipped as they stream in**, never buffered: a 1 GiB upload
//!   to this server holds no more memory than a GET. `Content-Length` and
//!   `Transfer-Encoding: chunked` bodies are both understood.
//! - **Errors close.** A malformed request gets `400 Bad Request`, a head over
//!   8 KiB without its blank line `431`, an HTTP version other than 1.0/1.1
//!   `505`, each followed by a close (we cannot know where the next request
//!   would start). `Connection: close` and HTTP/1.0 without keep-alive close
//!   after the response, too.
//! - **A timer in the application state**: the `Date` header is formatted once
//!   a second by a periodic timer, not once per response.
//!
//! Usage: `cargo run --release --example http [ADDR]` (default 127.0.0.1:6000),
//! then `curl -v http://127.0.0.1:6000/` or `wrk -c 64 -t 2 http://127.0.0.1:6000/`.
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "proto/http_date.rs"]
mod http_date;
#[path = "proto/http_parse.rs"]
mod http_parse;

use std::io;
use std::time::{Duration, SystemTime};

use evloop::net::{self, Addr, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop};
use http_date::http_date;
use http_parse::{Body, Chunked, Error};

/// The application state every connection sees: the current `Date` value.
pub struct Http {
    date: [u8; 29],
}

impl Default for Http {
    fn default() -> Http {
        Http {
            date: http_date(SystemTime::now()),
        }
    }
}

/// Listen on `addr` and serve; also arms the timer that keeps `Date` fresh.
pub fn start(ctx: &mut Ctx<Http>, addr: &Addr) -> io::Result<Listening> {
    ctx.timer_every(Duration::from_secs(1), |_, _, http: &mut Http| {
        http.date = http_date(SystemTime::now());
    });
    let cfg = ListenConfig {
        conn: ConnConfig {
            // Keep-alive connections that go quiet are closed after a minute.
            idle_timeout: Some(Duration::from_secs(60)),
            ..ConnConfig::default()
        },
        ..ListenConfig::default()
    };
    net::listen(ctx, addr, cfg, |_, _, _| Some(Session::default()))
}

/// One connection's state: only the body being skipped, if we are inside one.
#[derive(Default)]
struct Session {
    body: Option<(Skip, Reply)>,
}

/// The rest of a request body still to arrive.
enum Skip {
    Length(u64),
    Chunked(Chunked),
}

/// How to answer a request whose head we have read.
#[derive(Clone, Copy)]
struct Reply {
    keep_alive: bool,
    /// HEAD: the same headers, no body.
    head_only: bool,
    /// HTTP/1.0 clients need keep-alive spelled out.
    http10: bool,
}

impl Handler<Http> for Session {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Http>, http: &mut Http) -> usize {
        let mut used = 0;
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
                            refuse(conn, e);
                            return data.len();
                        }
                    },
                };
                if !done {
                    return used;
                }
                let reply = *reply;
                self.body = None;
                if !respond(conn, reply, http) {
                    return data.len();
                }
            }
            // Then the next request head, if all of it is here.
            let req = match http_parse::parse(&data[used..]) {
                Ok(Some(req)) => req,
                Ok(None) => return used,
                Err(e) => {
                    refuse(conn, e);
                    return data.len();
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
                    if !respond(conn, reply, http) {
                        return data.len();
                    }
                }
                Body::Length(n) => self.body = Some((Skip::Length(n), reply)),
                Body::Chunked => self.body = Some((Skip::Chunked(Chunked::default()), reply)),
            }
        }
    }
}

/// Write the response; false if the connection closes after it.
fn respond(conn: &mut Conn, reply: Reply, http: &Http) -> bool {
    conn.write(
        b"HTTP/1.1 200 OK\r\nServer: evloop\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: ",
    );
    conn.write(&http.date);
    if !reply.keep_alive {
        conn.write(b"\r\nConnection: close");
    } else if reply.http10 {
        conn.write(b"\r\nConnection: keep-alive");
    }
    conn.write(b"\r\n\r\n");
    if !reply.head_only {
        conn.write(b"Hello, World!");
    }
    if !reply.keep_alive {
        conn.close();
    }
    reply.keep_alive
}

/// Answer an unparseable request with its error status and close. The caller
/// then consumes all input: we no longer know where requests start.
fn refuse(conn: &mut Conn, e: Error) {
    let (code, reason) = e.status();
    log::debug!("connection {}: {code} {}", conn.id(), e.detail());
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
        e.detail().len() + 1,
        e.detail()
    );
    conn.write(response.as_bytes());
    conn.close();
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &addr.parse()?)?;
    log::info!("http server listening on {}", server.addr);
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    el.run(&mut Http::default())?;
    log::info!("http server stopped");
    Ok(())
}
