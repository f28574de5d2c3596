//! The eventlet echo server, in Rust: every byte a client sends comes back.
//!
//! What to notice: the user code is the `Echo` handler, a dozen lines. The
//! net layer does the rest: accept budget, partial writes, backpressure,
//! half-close and resets. Run it, then `nc 127.0.0.1 6000`.
//!
//! Usage: `cargo run --release --example echo [ADDR]` (default 127.0.0.1:6000).
//! Stops cleanly on SIGINT/SIGTERM.

use evloop::net::{self, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop};

struct Echo;

impl Handler<()> for Echo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        conn.write(data);
        data.len()
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = net::listen(&mut el, &addr.parse()?, ListenConfig::default(), |_, _, _, _| {
        Some(Echo)
    })?;
    log::info!("echo server listening on {}", server.addr);
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    el.run(&mut ())?;
    log::info!("echo server stopped");
    Ok(())
}
