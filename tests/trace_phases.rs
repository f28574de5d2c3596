//! With a `log` backend at trace level, one turn logs each of its phases in
//! order, each dispatch, and what it reclaims.
//!
//! A process has one logger, so this is the only test in its binary.

mod common;
mod common_log;

use std::io::Write;
use std::time::Duration;

use common::{pair, TICK};
use common_log::{install, take_lines};
use evloop::{Action, EventLoop, Interest};

/// The trace line's place in the turn: its phase name, or "dispatch #" /
/// "reclaim #" for the per-source lines; `None` for the other lines.
fn step(line: &str) -> Option<String> {
    if let Some(rest) = line.split("phase ").nth(1) {
        return rest.split_whitespace().next().map(str::to_string);
    }
    for per_source in ["dispatch #", "reclaim #"] {
        if line.starts_with(&format!("evloop: {per_source}")) {
            return Some(per_source.to_string());
        }
    }
    None
}

#[test]
fn one_turn_traces_every_phase_in_order() {
    install(log::LevelFilter::Trace);

    let mut el = EventLoop::<()>::new().unwrap();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |_sock, _ev, _ctx, _s| Action::Close)
        .unwrap();
    el.timer_after(Duration::ZERO, |_f, _ctx, _s| {});
    el.defer(|_ctx, _s| {});
    el.add_check(|_ctx, _s| true);
    peer.write_all(b"x").unwrap();
    take_lines();

    el.turn(&mut (), Some(TICK)).unwrap();
    let lines = take_lines();
    let steps: Vec<String> = lines.iter().filter_map(|l| step(l)).collect();
    assert_eq!(
        steps,
        [
            "clock",
            "timers",
            "deferred",
            "poll",
            "dispatch",
            "dispatch #",
            "check",
            "reclaim",
            "reclaim #"
        ],
        "trace was:\n{}",
        lines.join("\n")
    );
}
