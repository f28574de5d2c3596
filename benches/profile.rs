//! A fixed amount of dispatch or channel work, for instruction-level
//! profiling of the turn (criterion's timing loop would drown it):
//!
//! ```text
//! cargo bench --bench profile --no-run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/deps/profile-<hash> scheduled 1024 1000
//! callgrind_annotate cg.out
//! ```
//!
//! Arguments: a mode, a count and a number of rounds.
//!
//! - `scheduled N TURNS`: N sources made ready with `Ctx::schedule` (no
//!   syscall per event), dispatched in each of TURNS turns.
//! - `eventfd N TURNS`: N eventfd sources, each written to before every turn.
//! - `channel N ROUNDS` / `bounded N ROUNDS`: a producer thread sends N
//!   `u64`s through an unbounded / `bounded(1024)` channel, ROUNDS times.
//! - `timers N ROUNDS`: libuv's "million timers" on a manual clock, as
//!   `benches/timers.rs` runs it: N one-shots spread over one second
//!   (`timer_after`), then 1,000 turns 1 ms apart fire them, ROUNDS times.
//!   At N = 1,000 a turn fires one timer, so it profiles arm + fire + turn.
//!
//! Run without arguments (as `cargo bench` does) it does a short
//! `scheduled 1024 1000` and prints the time per event.

mod common;

use std::time::{Duration, Instant};

use common::sources::{evloop_eventfds, evloop_inert, signal};
use evloop::EventLoop;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("scheduled", String::as_str);
    let n: usize = args.get(1).map_or(1024, |a| a.parse().expect("sources"));
    let turns: u64 = args.get(2).map_or(1000, |a| a.parse().expect("turns"));

    match mode {
        "channel" => channel(None, n as u64, turns),
        "bounded" => channel(Some(1024), n as u64, turns),
        "timers" => timers(n as u64, turns),
        _ => dispatch(mode, n, turns),
    }
}

fn dispatch(mode: &str, n: usize, turns: u64) {
    // Scheduled sources are made ready through `ids`, eventfds through `fds`.
    let (mut el, ids, fds) = match mode {
        "scheduled" => {
            let (el, ids) = evloop_inert(n);
            (el, ids, Vec::new())
        }
        "eventfd" => {
            let (el, fds) = evloop_eventfds(n);
            (el, Vec::new(), fds)
        }
        other => panic!("unknown mode {other:?}: scheduled or eventfd"),
    };

    let mut count = 0u64;
    let t0 = Instant::now();
    for _ in 0..turns {
        for &id in &ids {
            el.schedule(id);
        }
        for &fd in &fds {
            signal(fd);
        }
        el.turn(&mut count, Some(Duration::ZERO)).unwrap();
    }
    let took = t0.elapsed();
    assert_eq!(count, turns * n as u64);
    println!(
        "{mode}: {n} sources x {turns} turns: {:.1} ns/event",
        took.as_nanos() as f64 / count as f64
    );
}

fn channel(bound: Option<usize>, n: u64, rounds: u64) {
    let mut el = EventLoop::<u64>::new().unwrap();
    let t0 = Instant::now();
    for _ in 0..rounds {
        let (tx, rx) = match bound {
            None => evloop::channel::<u64>(),
            Some(cap) => evloop::bounded::<u64>(cap),
        };
        let id = el
            .add_channel(rx, |_msg, _ctx, count: &mut u64| *count += 1)
            .unwrap();
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        let mut count = 0;
        while count < n || el.is_open(id) {
            el.turn(&mut count, Some(Duration::from_secs(5))).unwrap();
        }
        producer.join().unwrap();
        assert_eq!(count, n);
    }
    let took = t0.elapsed();
    println!(
        "channel ({}): {n} messages x {rounds} rounds: {:.1} ns/message",
        bound.map_or("unbounded".to_string(), |b| format!("bounded {b}")),
        took.as_nanos() as f64 / (n * rounds) as f64
    );
}

fn timers(n: u64, rounds: u64) {
    let clock = evloop::ManualClock::new();
    let mut el: EventLoop<u64> = EventLoop::builder()
        .clock(evloop::Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    let offsets: Vec<Duration> = (0..n).map(|i| Duration::from_millis(1 + i * 1000 / n)).collect();
    let mut sum = 0u64;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for (i, &off) in offsets.iter().enumerate() {
            // Each closure carries a value of its own, as real timers do.
            let i = i as u64;
            el.timer_after(off, move |_, _, sum: &mut u64| *sum += i);
        }
        for _ in 0..1000 {
            clock.advance(Duration::from_millis(1));
            el.turn(&mut sum, Some(Duration::ZERO)).unwrap();
        }
    }
    let took = t0.elapsed();
    assert_eq!(sum, rounds * n * (n - 1) / 2, "every timer fired once");
    println!(
        "timers: {n} x {rounds} rounds: {:.1} ns/timer",
        took.as_nanos() as f64 / (n * rounds) as f64
    );
}
