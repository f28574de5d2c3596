//! Peer for the HTTP benchmark (`benches/http.sh`): the `http` example's
//! server on tokio's current-thread runtime, one task per connection.
//!
//! It answers exactly what `http` answers (`Hello, World!` to every request,
//! keep-alive, pipelining, bodies skipped as they stream in, 400/431/505 and
//! a close on bad input, a minute's idle timeout) with the same parser and
//! framing (`proto/http_parse.rs`, `proto/http_session.rs`), so what the
//! benchmark compares is the runtime,
//! not the HTTP code. The shape is what a competent tokio user would write:
//! a task owns the socket, a 16 KiB read buffer and an output buffer; after
//! each `read` it answers every complete request in the buffer and sends all
//! the responses with one `write_all`. The `Date` value is refreshed once a
//! second by a ticker task.
//!
//! Usage: `cargo run --release --example bench_tokio_http [ADDR]` (default
//! 127.0.0.1:6000), then `curl -v http://127.0.0.1:6000/`.

#[path = "proto/http_date.rs"]
mod http_date;
#[path = "proto/http_parse.rs"]
mod http_parse;
#[path = "proto/http_session.rs"]
mod http_session;

use std::cell::Cell;
use std::io;
use std::time::{Duration, SystemTime};

use http_date::http_date;
use http_parse::Error;
use http_session::{Reply, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Twice the largest head the parser accepts, so a head cut short by TCP
/// always has room to be completed in place.
const READ_BUF: usize = 2 * http_parse::MAX_HEAD;
/// As in `http`: keep-alive connections that go quiet are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    // A current-thread runtime runs every task on this thread, so the ticker
    // and the connections share the value without a lock or an Arc.
    static DATE: Cell<[u8; 29]> = Cell::new(http_date(SystemTime::now()));
}

/// Append the response. The
/// `Server` value has as many characters as `evloop`: wrk is the bottleneck,
/// and one byte in a 128-byte response is 0.8% more for it to parse.
fn respond(out: &mut Vec<u8>, reply: Reply) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nServer: tokio1\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: ",
    );
    out.extend_from_slice(&DATE.with(Cell::get));
    if !reply.keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if reply.http10 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !reply.head_only {
        out.extend_from_slice(b"Hello, World!");
    }
}

/// Append the error response; the caller closes after sending it.
fn refuse(out: &mut Vec<u8>, e: Error) {
    let (code, reason) = e.status();
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
        e.detail().len() + 1,
        e.detail()
    );
    out.extend_from_slice(response.as_bytes());
}

async fn serve(mut stream: TcpStream) {
    let mut buf = vec![0u8; READ_BUF];
    // buf[..filled] holds bytes read but not yet consumed: a partial request.
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    let mut session = Session::default();
    loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf[filled..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        filled += n;
        let (used, open) = session.on_data(&buf[..filled], |request| match request {
            Ok(reply) => respond(&mut out, reply),
            Err(e) => refuse(&mut out, e),
        });
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if !open {
            // FIN after the response, so the client reads it before the close.
            let _ = stream.shutdown().await;
            return;
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        // The parser refuses heads over MAX_HEAD and chunk lines over 1 KiB,
        // so the leftover never fills the buffer; growing it only guards
        // against a change there turning a full buffer into a fake EOF.
        if filled == buf.len() {
            buf.resize(2 * buf.len(), 0);
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("tokio http listening on {}", listener.local_addr()?);
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                DATE.with(|d| d.set(http_date(SystemTime::now())));
            }
        });
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            // evloop's listener sets TCP_NODELAY by default; match it.
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    })
}
