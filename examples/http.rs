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

#[path = "proto/http_parse.rs"]
mod http_parse;

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use evloop::net::{self, Addr, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop};
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

/// Format `t` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (year, month, day) = civil_date(days);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]); // day 0 was a Thursday
    put2(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    put2(&mut out[12..14], year / 100);
    put2(&mut out[14..16], year % 100);
    put2(&mut out[17..19], h);
    put2(&mut out[20..22], m);
    put2(&mut out[23..25], s);
    out
}

fn put2(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// (year, month 1-12, day 1-31) of the proleptic Gregorian calendar, for a
/// count of days since 1970-01-01. Works in 400-year eras (146097 days each)
/// counted from 0000-03-01, so that the leap day is the last day of a year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |s| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(&at(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&at(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&at(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&at(1_709_208_000), b"Thu, 29 Feb 2024 12:00:00 GMT");
        assert_eq!(&at(4_107_542_399), b"Sun, 28 Feb 2100 23:59:59 GMT"); // 2100 is no leap year
        assert_eq!(&at(4_133_980_799), b"Fri, 31 Dec 2100 23:59:59 GMT");
    }
}
