//! A fixed amount of dispatch work, for instruction-level profiling of the
//! turn (criterion's timing loop would drown it):
//!
//! ```text
//! cargo bench --bench profile --no-run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/deps/profile-<hash> scheduled 1024 1000
//! callgrind_annotate cg.out
//! ```
//!
//! Arguments: `scheduled` (sources made ready with `Ctx::schedule`, no
//! syscall per event) or `eventfd` (sources are eventfds written to before
//! each turn), then sources per turn, then turns. Run without arguments (as
//! `cargo bench` does) it does a short `scheduled 1024 1000` and prints the
//! time per event.

mod common;

use std::time::{Duration, Instant};

use common::sources::{evloop_eventfds, evloop_inert, signal};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("scheduled", String::as_str);
    let n: usize = args.get(1).map_or(1024, |a| a.parse().expect("sources"));
    let turns: u64 = args.get(2).map_or(1000, |a| a.parse().expect("turns"));

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
