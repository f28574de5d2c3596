//! The eventlet echo server as tasks: eventlet's straight-line handler,
//! line for line, on the same ordered loop as the callback `echo`.
//!
//! What to notice: `handle` reads like eventlet's `handle(fd)`: read a
//! line, write it back, until the peer is done. Underneath it is the
//! callback server's connection (same backpressure, half-close and
//! caps); a task sits in the dispatch phase like any source: when the
//! connection reads a line, the task waiting on it is polled right there,
//! in the connection's place (as eventlet's hub switches to the green
//! thread waiting on a ready fd), and its reply leaves with the
//! connection's flush, in one `write`. Run it, then `nc 127.0.0.1 6000`.
//!
//! Usage: `cargo run --release --example echo_async [ADDR]` (default 127.0.0.1:6000).
//! Stops cleanly on SIGINT/SIGTERM.

use evloop::net::{Addr, ListenConfig};
use evloop::task::{self, AsyncConn};
use evloop::{Ctx, EventLoop};

/// Line buffer capacity kept from one line to the next: an idle client
/// does not keep its largest line's memory, and a client whose lines stay
/// under this does not pay a reallocation (and its copy) per line.
const LINE_KEEP: usize = 64 * 1024;

/// One client: eventlet's `handle(fd)`.
async fn handle(mut conn: AsyncConn) {
    log::info!("client connected");
    let mut line = Vec::new();
    loop {
        // pass through every non-eof line (after a huge one, a new buffer,
        // as eventlet's readline makes a new string)
        line.clear();
        line.shrink_to(LINE_KEEP);
        match conn.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.write_all(&line).await.is_err() {
            break;
        }
        log::debug!("echoed {:?}", String::from_utf8_lossy(&line));
    }
    log::info!("client disconnected");
}

/// Listen on `addr` and serve each connection with its own task; returns
/// where it listens.
pub fn start<S: 'static>(ctx: &mut Ctx<S>, addr: &Addr) -> std::io::Result<Addr> {
    let server = task::listen(ctx, addr, ListenConfig::default())?;
    let bound = server.local_addr().clone();
    ctx.spawn(async move {
        while let Ok(conn) = server.accept().await {
            log::info!("accepted {:?}", conn.peer_addr());
            if let Err(e) = task::spawn_n(handle(conn)) {
                log::error!("spawn: {e}");
            }
        }
        log::error!("the listener closed");
    })?;
    Ok(bound)
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let bound = start(&mut el, &addr.parse()?)?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    log::info!("server socket listening on {bound}");
    el.run(&mut ())?;
    log::info!("echo_async server stopped");
    Ok(())
}
