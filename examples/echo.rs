//! The eventlet echo server, in Rust: every byte a client sends comes back.
//!
//! What to notice: the user code is the `Echo` handler, a dozen lines. The
//! net layer does the rest: accept budget, partial writes, backpressure,
//! half-close and resets. Run it, then `nc 127.0.0.1 6000`.
//!
//! The poll mode is the one setting a latency-bound server tunes:
//! `--poll spin-then-block` keeps the loop polling for 100 µs after each
//! message (`spin-then-block:US` for another budget) so the next one finds
//! it awake, then sleeps; `--poll spin` never sleeps (a whole core, always).
//! `--histograms` keeps the loop's own latency histograms and logs their
//! percentiles at shutdown (see `evloop::LatencyHistogram`).
//!
//! `--lines` echoes whole lines, one `write` each, as eventlet's server
//! and `echo_async` do (a partial line waits for its end, and goes back as
//! it is at EOF): the callback yardstick for the task version, same work.
//!
//! Usage: `cargo run --release --example echo [ADDR] [--poll block|spin|spin-then-block[:US]] [--histograms] [--lines]`
//! (default 127.0.0.1:6000, block). Stops cleanly on SIGINT/SIGTERM.

use std::time::Duration;

use evloop::net::{self, Addr, Conn, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, LatencyHistogram, PollMode};

struct Echo;

impl Handler<()> for Echo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        conn.write(data);
        data.len()
    }
}

/// Eventlet's `handle(fd)` as a callback: each complete line goes back
/// with its own write (the connection sends a handler's small writes
/// together when it returns). An unfinished line waits in `tail`, where
/// its bytes are searched once (as `read_line` does), and goes back
/// whole when its end comes, or as it is at EOF, as eventlet's `readline`
/// returns it.
#[derive(Default)]
struct LineEcho {
    tail: Vec<u8>,
}

/// Longest line `LineEcho` gathers: the default `max_input`, which is
/// `AsyncConn::read_line`'s limit.
const LINE_MAX: usize = 1024 * 1024;

impl LineEcho {
    /// A line over `LINE_MAX` bytes, its `\n` included (where `read_line`
    /// refuses one): the lines before it have gone back; close.
    fn too_long(&mut self, conn: &mut Conn, len: usize) -> usize {
        log::warn!("connection {}: a line over {LINE_MAX} bytes; closing", conn.id());
        self.tail = Vec::new();
        conn.close();
        len
    }
}

impl Handler<()> for LineEcho {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        let mut used = 0;
        while let Some(i) = memchr::memchr(b'\n', &data[used..]) {
            let line = &data[used..=used + i];
            if self.tail.len() + line.len() > LINE_MAX {
                // Ends in this read, but is over the cap all the same.
                return self.too_long(conn, data.len());
            }
            if self.tail.is_empty() {
                conn.write(line);
            } else {
                self.tail.extend_from_slice(line);
                conn.write(&self.tail);
                self.tail = Vec::new();
            }
            used += i + 1;
        }
        if self.tail.len() + (data.len() - used) > LINE_MAX {
            return self.too_long(conn, data.len());
        }
        self.tail.extend_from_slice(&data[used..]);
        data.len()
    }

    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        conn.write(&std::mem::take(&mut self.tail));
        conn.close();
    }
}

/// Listen on `addr` and echo every connection.
pub fn start(ctx: &mut Ctx<()>, addr: &Addr) -> std::io::Result<Listening> {
    net::listen(ctx, addr, ListenConfig::default(), |_, _, _, _| Some(Echo))
}

/// Listen on `addr` and echo every connection line by line.
pub fn start_lines(ctx: &mut Ctx<()>, addr: &Addr) -> std::io::Result<Listening> {
    net::listen(ctx, addr, ListenConfig::default(), |_, _, _, _| {
        Some(LineEcho::default())
    })
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (mut addr, mut mode, mut histograms) = ("127.0.0.1:6000".to_string(), PollMode::Block, false);
    let mut lines = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--poll" => mode = poll_mode(&args.next().unwrap_or_default())?,
            "--histograms" => histograms = true,
            "--lines" => lines = true,
            _ if !arg.starts_with("--") => addr = arg,
            _ => return Err(bad(format!("unexpected argument {arg:?}"))),
        }
    }
    let mut el = EventLoop::builder()
        .poll_mode(mode)
        .latency_histograms(histograms)
        .build()?;
    let start = if lines { start_lines } else { start };
    let server = start(&mut el, &addr.parse()?)?;
    log::info!("poll mode {mode:?}");
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    log::info!("echo server listening on {}", server.addr);
    el.run(&mut ())?;
    if histograms {
        let m = el.metrics();
        log::info!("poll return to handler: {}", summary(&m.dispatch_latency));
        log::info!("turn length (poll's wait left out): {}", summary(&m.turn_length));
    }
    log::info!("echo server stopped");
    Ok(())
}

/// `block`, `spin`, or `spin-then-block[:US]` (budget in microseconds).
fn poll_mode(arg: &str) -> std::io::Result<PollMode> {
    let (name, budget) = arg.split_once(':').unwrap_or((arg, "100"));
    match (name, budget.parse()) {
        ("block", _) if name == arg => Ok(PollMode::Block),
        ("spin", _) if name == arg => Ok(PollMode::Spin),
        ("spin-then-block", Ok(us)) => Ok(PollMode::SpinThenBlock(Duration::from_micros(us))),
        _ => Err(bad(format!(
            "--poll takes block, spin or spin-then-block[:US], got {arg:?}"
        ))),
    }
}

/// Percentiles are upper bounds: the top of the power-of-two bucket each
/// falls in.
fn summary(h: &LatencyHistogram) -> String {
    let p = |q| h.percentile(q).unwrap_or_default();
    format!(
        "{} counted, p50 <= {:?}, p99 <= {:?}, p99.9 <= {:?}, max {:?}",
        h.count(),
        p(0.5),
        p(0.99),
        p(0.999),
        h.max()
    )
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}
