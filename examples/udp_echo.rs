//! A UDP echo server: every datagram goes back to whoever sent it.
//!
//! What to notice: UDP has no connections, so there is no `Handler` and no
//! `Conn`; `net::bind_udp` takes one closure that gets each datagram, its
//! sender, and the `Udp` socket to answer on. Datagrams arrive in the loop's
//! shared buffer (nothing is allocated per datagram), and a reply that would
//! block is queued (up to 1024 datagrams) and sent when the socket is
//! writable; past that, replies are dropped and counted, as UDP allows.
//!
//! Usage: `cargo run --release --example udp_echo [ADDR]` (default
//! 127.0.0.1:6000), then `nc -u 127.0.0.1 6000` or `socat - UDP:127.0.0.1:6000`.
//! Stops cleanly on SIGINT/SIGTERM.

use std::io;
use std::net::SocketAddr;

use evloop::{net, Ctx, EventLoop};

/// Bind `addr` and echo every datagram; returns the bound address.
pub fn start<S: 'static>(ctx: &mut Ctx<S>, addr: SocketAddr) -> io::Result<SocketAddr> {
    let (_, local) = net::bind_udp(ctx, addr, |udp, datagram, from, _, _: &mut S| {
        udp.send_to(datagram, from);
    })?;
    Ok(local)
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?}: {e}")))?;
    let mut el = EventLoop::new()?;
    let local = start(&mut el, addr)?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    log::info!("udp echo listening on {local}");
    el.run(&mut ())?;
    log::info!("udp echo stopped");
    Ok(())
}
