//! How late do timers fire? Measures the lateness of sub-millisecond one-shot
//! timers with the default epoll-timeout wake-ups and with the timerfd
//! high-resolution mode, and prints p50/p99/max for each.
//!
//! What to notice: epoll's timeout is whole milliseconds (mio rounds up, so
//! it never wakes early), so a 250 µs timer fires up to ~1 ms late; the
//! timerfd mode wakes within tens of microseconds on an idle machine.
//!
//! Usage: `cargo run --release --example timer_latency [COUNT]`

use std::time::{Duration, Instant};

use evloop::EventLoop;

struct State {
    lateness: Vec<Duration>,
    left: usize,
}

fn measure(high_resolution: bool, count: usize) -> std::io::Result<Vec<Duration>> {
    let mut el = EventLoop::builder()
        .high_resolution_timers(high_resolution)
        .build::<State>()?;
    let mut state = State {
        lateness: Vec::with_capacity(count),
        left: count,
    };
    // One timer at a time, each 250 µs after the previous fired: the loop is
    // idle in between, as in a service waiting for its next deadline.
    fn arm(ctx: &mut evloop::Ctx<State>) {
        let deadline = Instant::now() + Duration::from_micros(250);
        ctx.timer_at(deadline, move |_, ctx, s: &mut State| {
            s.lateness
                .push(Instant::now().saturating_duration_since(deadline));
            s.left -= 1;
            if s.left == 0 {
                ctx.stop();
            } else {
                arm(ctx);
            }
        });
    }
    arm(&mut el);
    el.run(&mut state)?;
    state.lateness.sort();
    Ok(state.lateness)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() -> std::io::Result<()> {
    let count = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000usize)
        .max(1);
    println!("lateness of {count} sub-millisecond timers (250 µs each)");
    println!("{:<22} {:>10} {:>10} {:>10}", "mode", "p50", "p99", "max");
    for (name, hires) in [("epoll timeout (ms)", false), ("timerfd (high-res)", true)] {
        let v = measure(hires, count)?;
        println!(
            "{:<22} {:>10.1?} {:>10.1?} {:>10.1?}",
            name,
            pct(&v, 0.50),
            pct(&v, 0.99),
            v[v.len() - 1]
        );
    }
    Ok(())
}
