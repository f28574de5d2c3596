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
//! - **Open loop** (`--rate R`): instead of waiting for each echo, every
//!   connection sends on a fixed schedule (R messages a second in all,
//!   spread evenly over the connections), armed on the loop's timers; a
//!   round trip is timed from the *scheduled* send time, so a server that
//!   falls behind shows as queueing, not as a slower client.
//!
//! Usage: `cargo run --release --example ping_client [ADDR] [N] [--count M] [--size B] [--rate R] [--spin]`
//! (defaults 127.0.0.1:6000, 10 connections, 1,000 round trips each, 64
//! bytes, closed loop; `--spin`: the client's loop busy-polls, so its own
//! wake-ups stay out of what it measures). Try it against
//! `cargo run --release --example echo`.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use evloop::net::{self, CloseReason, Conn, ConnectConfig, Handler, Target};
use evloop::{Ctx, EventLoop, PollMode, SourceId};

/// Round trips measured, and how the connections ended.
struct Stats {
    rtts: Vec<Duration>,
    open: usize,
    failed: usize,
    /// Open loop: each connection's send schedule, by connection number.
    schedules: Vec<Schedule>,
}

/// Open loop: when one connection sends next, and the scheduled times of
/// its messages still awaiting their echo, oldest first.
struct Schedule {
    next: Instant,
    period: Duration,
    unsent: usize,
    msg: Vec<u8>,
    awaited: VecDeque<Instant>,
}

/// One connection: pings `left` more times, `size` bytes each.
struct Pinger {
    msg: Vec<u8>,
    left: usize,
    got: usize,
    sent_at: Instant,
    /// Open loop: this connection's place in `Stats::schedules`.
    scheduled: Option<usize>,
}

impl Pinger {
    fn ping(&mut self, conn: &mut Conn) {
        self.sent_at = Instant::now();
        conn.write(&self.msg);
    }
}

/// Open loop: send every message whose time has come, then sleep until the
/// next one's.
fn send_due(i: usize, id: SourceId, ctx: &mut Ctx<Stats>, stats: &mut Stats) {
    let s = &mut stats.schedules[i];
    let now = Instant::now();
    while s.unsent > 0 && s.next <= now {
        net::write(ctx, id, &s.msg);
        s.awaited.push_back(s.next);
        s.next += s.period;
        s.unsent -= 1;
    }
    if s.unsent > 0 {
        ctx.timer_at(s.next, move |_, ctx, stats| send_due(i, id, ctx, stats));
    }
}

impl Handler<Stats> for Pinger {
    fn on_open(&mut self, conn: &mut Conn, ctx: &mut Ctx<Stats>, stats: &mut Stats) {
        match self.scheduled {
            None => self.ping(conn),
            Some(i) => {
                // The schedule starts when the connection does.
                let s = &mut stats.schedules[i];
                s.next = Instant::now() + s.period * i as u32 / stats.open.max(1) as u32;
                s.msg.clone_from(&self.msg);
                let id = conn.id();
                ctx.timer_at(s.next, move |_, ctx, stats| send_due(i, id, ctx, stats));
            }
        }
    }

    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Stats>, stats: &mut Stats) -> usize {
        self.got += data.len();
        while self.got >= self.msg.len() {
            self.got -= self.msg.len();
            let now = Instant::now();
            match self.scheduled {
                None => stats.rtts.push(now - self.sent_at),
                Some(i) => {
                    let at = stats.schedules[i].awaited.pop_front().unwrap_or(now);
                    stats.rtts.push(now.saturating_duration_since(at));
                }
            }
            self.left -= 1;
            if self.left == 0 {
                conn.close();
                return data.len();
            }
            if self.scheduled.is_none() {
                self.ping(conn);
            }
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
    let (mut rate, mut spin) = (0, false);
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
            "--rate" => rate = value("--rate")?,
            "--spin" => spin = true,
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
    let mode = if spin { PollMode::Spin } else { PollMode::Block };
    // A blocking open-loop client sends on time only with timers finer
    // than epoll's millisecond (a spinning one checks them every turn).
    let mut el = EventLoop::builder()
        .poll_mode(mode)
        .high_resolution_timers(rate > 0 && !spin)
        .build()?;
    // Open loop: each connection sends every `conns / rate` seconds.
    let period = (rate > 0).then(|| Duration::from_secs_f64(conns as f64 / rate as f64));
    let connector = net::Connector::new(ConnectConfig::default());
    for i in 0..conns {
        let pinger = Pinger {
            msg: (0..size).map(|b| (b + i) as u8).collect(),
            left: count,
            got: 0,
            sent_at: Instant::now(),
            scheduled: period.map(|_| i),
        };
        connector.connect(&mut el, &target, pinger)?;
    }
    match period {
        None => log::info!("{conns} connections to {target}, {count} round trips of {size} bytes each"),
        Some(p) => log::info!(
            "{conns} connections to {target}, {count} messages of {size} bytes each, \
             open loop at {rate}/s in all (one every {p:?} per connection)"
        ),
    }
    let mut stats = Stats {
        rtts: Vec::with_capacity(conns * count),
        open: conns,
        failed: 0,
        schedules: (0..conns)
            .map(|_| Schedule {
                next: Instant::now(),
                period: period.unwrap_or_default(),
                unsent: count,
                msg: Vec::new(),
                awaited: VecDeque::new(),
            })
            .collect(),
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
    // The same in microseconds, for scripts (benches/latency.sh).
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "latency_us p50={:.1} p99={:.1} p99.9={:.1} max={:.1} per_s={:.0}",
        us(percentile(rtts, 0.50)),
        us(percentile(rtts, 0.99)),
        us(percentile(rtts, 0.999)),
        us(rtts[rtts.len() - 1]),
        rtts.len() as f64 / elapsed.as_secs_f64(),
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
