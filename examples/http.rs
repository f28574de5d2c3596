//! An HTTP/1.1 server that answers every request with `Hello, World!` (the
//! TechEmpower "plaintext" shape), with keep-alive and pipelining.
//!
//! What to notice:
//! - **Framing is the handler's job, buffering is not.** `on_data` gets every
//!   byte not yet consumed and returns how many it used. A request cut in half
//!   by TCP returns 0 and comes back, longer, on the next read; the net layer
//!   keeps the tail. The parser (`proto/http_parse.rs`) is stateless for
//!   exactly that reason, and the framing (`proto/http_session.rs`) keeps
//!   only the body it is skipping.
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
//! - **A request head has 10 seconds to arrive** from its first byte
//!   (nginx's `client_header_timeout`): a client that sends it a byte at a
//!   time, or never ends it, gets `408 Request Timeout` and a close, however
//!   busy it keeps the connection. The minute's idle timeout is separate.
//! - **One client cannot hold up the others.** A pipeline of thousands of
//!   requests is answered a slice at a time (`fair::Slice`); the rest waits,
//!   unconsumed, while the other clients are served.
//! - **A timer in the application state**: the `Date` header is formatted once
//!   a second by a periodic timer, not once per response.
//!
//! Usage: `cargo run --release --example http [ADDR]` (default 127.0.0.1:6000),
//! then `curl -v http://127.0.0.1:6000/` or `wrk -c 64 -t 2 http://127.0.0.1:6000/`.
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "fair/mod.rs"]
mod fair;
#[path = "proto/http_date.rs"]
mod http_date;
#[path = "proto/http_parse.rs"]
mod http_parse;
#[path = "proto/http_session.rs"]
mod http_session;

use std::io;
use std::time::{Duration, SystemTime};

use evloop::net::{self, Addr, CloseReason, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, TimerId};
use http_date::http_date;
use http_parse::Error;
use http_session::Reply;

/// How long a request head may take, from its first byte to its blank line.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a head that did not arrive in time.
const TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

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
    net::listen(ctx, addr, cfg, |_, _, _, _| Some(Session::default()))
}

/// One connection's state: where it is in the request stream, its slice
/// of work, and the deadline of the request head under way, if any.
#[derive(Default)]
struct Session {
    framing: http_session::Session,
    slice: fair::Slice,
    header_deadline: Option<TimerId>,
}

impl Handler<Http> for Session {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Http>, http: &mut Http) -> usize {
        let (mut answered, most) = (0, self.slice.left());
        let (used, open) = self.framing.on_data_upto(data, most, |request| {
            answered += 1;
            match request {
                Ok(reply) => respond(conn, reply, http),
                Err(e) => refuse(conn, e),
            }
        });
        // Bytes left over are a head cut short, unless the slice ended
        // first (then they come back next turn and are judged then) or they
        // are a piece of a body (a chunk-size line cut short): a slow body
        // is the idle timeout's business, as in nginx.
        let head_under_way = open && used < data.len() && answered < most && !self.framing.in_body();
        if answered > 0 || !head_under_way {
            // The head the deadline was for is complete (or we are closing).
            if let Some(timer) = self.header_deadline.take() {
                ctx.cancel_timer(timer);
            }
        }
        if head_under_way && self.header_deadline.is_none() {
            let id = conn.id();
            self.header_deadline = Some(ctx.timer_after(HEADER_TIMEOUT, move |_, ctx, _| {
                log::debug!("connection {id}: request head not complete in {HEADER_TIMEOUT:?}: 408");
                net::write(ctx, id, TIMED_OUT);
                net::close(ctx, id);
            }));
        }
        self.slice.spend(answered, conn, ctx);
        used
    }

    fn on_close(&mut self, _: &mut Conn, _: CloseReason, ctx: &mut Ctx<Http>, _: &mut Http) {
        if let Some(timer) = self.header_deadline.take() {
            ctx.cancel_timer(timer);
        }
    }
}

/// Write the response, and close after it unless the request keeps the
/// connection alive.
fn respond(conn: &mut Conn, reply: Reply, http: &Http) {
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

/// Public so that tests/example_torture.rs can run the whole server, signal
/// handling included, in a child process.
pub fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &addr.parse()?)?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    // Only now: whoever reads this line may stop us with a signal at once.
    log::info!("http server listening on {}", server.addr);
    el.run(&mut Http::default())?;
    log::info!("http server stopped");
    Ok(())
}
