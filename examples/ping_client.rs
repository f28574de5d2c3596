//! A client: N connections that each send a message, wait for it to come
//! back, and time the round trip, against any echo server.
//!
//! What to notice:
//! - **Connecting out is a `Handler` like any other.** `net::connect`
//!   returns each connection's id at once; `on_open` runs when it is
//!   established (the first ping goes out there), `on_data` counts the echo
//!   back, and a connect that fails reaches `on_close` as
//!   `CloseReason::ConnectFailed` with the OS error's kind.
//! - **Time inside a turn.** `ctx.now()` is the turn's cached time, the same
//!   for every handler in it: right for timers, too coarse for a latency. A
//!   round trip is timed with `Instant::now()` at send and at receipt.
//! - **The address may be a host name**: it is resolved off the loop, and
//!   each of its addresses is tried in turn (RFC 8305's Happy Eyeballs).
//!
//! Usage: `cargo run --release --example ping_client [ADDR] [N] [--count M] [--size B]`
//! (defaults 127.0.0.1:6000, 10 connections, 1,000 round trips each, 64 bytes).
//! Try it against `cargo run --release --example echo`.

use std::io;
use std::time::{Duration, Instant};

use evloop::net::{self, CloseReason, Conn, ConnectConfig, Handler, Target};
use evloop::{Ctx, EventLoop};

/// Round trips measured, and how the connections ended.
struct Stats {
    rtts: Vec<Duration>,
    open: usize,
    failed: usize,
}

/// One connection: pings `left` more times, `size` bytes each.
struct Pinger {
    msg: Vec<u8>,
    left: usize,
    got: usize,
    sent_at: Instant,
}

impl Pinger {
    fn ping(&mut self, conn: &mut Conn) {
        self.sent_at = Instant::now();
        conn.write(&self.msg);
    }
}

impl Handler<Stats> for Pinger {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<Stats>, _: &mut Stats) {
        self.ping(conn);
    }

    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Stats>, stats: &mut Stats) -> usize {
        self.got += data.len();
        while self.got >= self.msg.len() {
            self.got -= self.msg.len();
            stats.rtts.push(self.sent_at.elapsed());
            self.left -= 1;
            if self.left == 0 {
                conn.close();
                return data.len();
            }
            self.ping(conn);
        }
        data.len()
    }

    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, ctx: &mut Ctx<Stats>, stats: &mut Stats) {
        if self.left > 0 {
            log::warn!(
                "connection {} ended with {} round trips to go: {reason:?}",
                conn.id(),
                self.left
            );
            stats.failed += 1;
        }
        stats.open -= 1;
        if stats.open == 0 {
            ctx.stop();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let (mut addr, mut conns, mut count, mut size) = ("127.0.0.1:6000".to_string(), 10, 1000, 64);
    let mut positional = 0;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> io::Result<usize> {
            let v = args.next().unwrap_or_default();
            v.parse()
                .map_err(|_| bad(format!("{name} needs a number, got {v:?}")))
        };
        match arg.as_str() {
            "--count" => count = value("--count")?,
            "--size" => size = value("--size")?,
            _ if positional == 0 => (addr, positional) = (arg, 1),
            _ if positional == 1 => {
                conns = arg
                    .parse()
                    .map_err(|_| bad(format!("N must be a number, got {arg:?}")))?;
                positional = 2;
            }
            _ => return Err(bad(format!("unexpected argument {arg:?}"))),
        }
    }
    if conns == 0 || count == 0 || size == 0 {
        return Err(bad("N, --count and --size must be at least 1".into()));
    }
    let target: Target = addr.parse()?;
    let mut el = EventLoop::new()?;
    let connector = net::Connector::new(ConnectConfig::default());
    for i in 0..conns {
        let pinger = Pinger {
            msg: (0..size).map(|b| (b + i) as u8).collect(),
            left: count,
            got: 0,
            sent_at: Instant::now(),
        };
        connector.connect(&mut el, &target, pinger)?;
    }
    log::info!("{conns} connections to {target}, {count} round trips of {size} bytes each");
    let mut stats = Stats {
        rtts: Vec::with_capacity(conns * count),
        open: conns,
        failed: 0,
    };
    let start = Instant::now();
    el.run(&mut stats)?;
    let elapsed = start.elapsed();
    stats.rtts.sort_unstable();
    if stats.rtts.is_empty() {
        return Err(io::Error::other(format!(
            "no round trip completed ({} connections failed)",
            stats.failed
        )));
    }
    let rtts = &stats.rtts;
    println!(
        "{} round trips in {elapsed:.2?} ({:.0}/s): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        rtts.len(),
        rtts.len() as f64 / elapsed.as_secs_f64(),
        percentile(rtts, 0.50),
        percentile(rtts, 0.99),
        percentile(rtts, 0.999),
        rtts[rtts.len() - 1],
    );
    if stats.failed > 0 {
        return Err(io::Error::other(format!(
            "{} of {conns} connections failed",
            stats.failed
        )));
    }
    Ok(())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
