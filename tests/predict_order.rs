//! The "predict the order" exercise of docs/ARCHITECTURE.md, run.
//!
//! The document shows this program (tests/docs.rs checks its quoted lines
//! are these) and, in the block after the marker below, what it prints.
//! This test runs the program and compares its output with that block, so
//! the answer the reader checks against is the loop's real behaviour.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use evloop::{Action, EventLoop, Interest};
use mio::net::UnixStream;

const MARKER: &str = "<!-- output of tests/predict_order.rs -->";

/// Read what is there, so the next byte raises a new edge.
fn drain(s: &mut UnixStream) {
    let mut buf = [0u8; 16];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn run_the_exercise() -> Vec<String> {
    let mut el = EventLoop::<Vec<String>>::new().unwrap();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    el.register(a, Interest::READABLE, |s, _, _, log: &mut Vec<String>| {
        drain(s);
        log.push("dispatch A".into());
        Action::Keep
    })
    .unwrap();
    el.register(b, Interest::READABLE, |s, _, ctx, log: &mut Vec<String>| {
        drain(s);
        log.push("dispatch B: arms T3 for now, defers D3".into());
        ctx.timer_after(Duration::ZERO, |_, _, log| log.push("timer T3".into()));
        ctx.defer(|_, log| log.push("deferred D3".into()));
        Action::Keep
    })
    .unwrap();
    el.timer_after(Duration::ZERO, |_, ctx, log| {
        log.push("timer T1: arms T2 for now, defers D2".into());
        ctx.timer_after(Duration::ZERO, |_, _, log| log.push("timer T2".into()));
        ctx.defer(|_, log| log.push("deferred D2".into()));
    });
    el.defer(|_, log| log.push("deferred D1".into()));
    el.add_check(|_, log| {
        log.push("check".into());
        true
    });
    b_peer.write_all(b"b").unwrap(); // B becomes ready first,
    a_peer.write_all(b"a").unwrap(); // A second.

    let mut log = Vec::new();
    for turn in 1..=2 {
        log.push(format!("-- turn {turn}"));
        el.turn(&mut log, Some(Duration::ZERO)).unwrap();
    }
    log
}

/// The lines of the ```text block that follows the marker.
fn documented_output() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let after = doc
        .split_once(MARKER)
        .expect("the marker is in ARCHITECTURE.md")
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```text\n")
        .expect("a ```text block after the marker");
    let block = &block[..block.find("```").expect("the block ends")];
    block.lines().map(str::to_string).collect()
}

#[test]
fn the_documented_answer_is_what_the_loop_does() {
    assert_eq!(run_the_exercise(), documented_output());
}
