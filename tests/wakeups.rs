//! What a burst of channel messages costs, as the guide states it
//! (docs/ARCHITECTURE.md section 7, `examples/channel.rs`): one eventfd
//! write per batch the loop takes. Sends made before the loop takes the
//! batch ride on the write already made; a producer that keeps sending while
//! the loop runs pays again for every batch.
//!
//! The writes are counted from the kernel's own count of this process's
//! write system calls (`syscw` in `/proc/self/io`): the loop under test has
//! no socket, no signal and no remote, so the producer's eventfd writes are
//! the only writes while it runs. One `#[test]` in this file, so that the
//! harness writes no "ok" line of another test in the middle of a count.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::Watchdog;
use evloop::EventLoop;

fn writes_so_far() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("syscw in /proc/self/io")
}

#[derive(Default)]
struct Seen {
    messages: u64,
    at_last_check: u64,
    /// Dispatch phases that delivered messages: the batches the loop took.
    batches: u64,
}

/// A loop whose channel counts messages (shared with the producer, which
/// may wait for the loop) and batches; it stops once the channel closes.
fn counting_loop(delivered: Arc<AtomicU64>) -> (EventLoop<Seen>, evloop::Sender<u64>) {
    let mut el = EventLoop::<Seen>::new().unwrap();
    let (tx, rx) = evloop::channel::<u64>();
    let id = el
        .add_channel(rx, move |_, _, s: &mut Seen| {
            s.messages += 1;
            delivered.store(s.messages, Ordering::Release);
        })
        .unwrap();
    el.add_check(move |ctx, s| {
        if s.messages != s.at_last_check {
            s.at_last_check = s.messages;
            s.batches += 1;
        }
        if !ctx.is_open(id) {
            ctx.stop();
            return false;
        }
        true
    });
    (el, tx)
}

fn run(el: &mut EventLoop<Seen>) -> (Seen, u64) {
    let mut seen = Seen::default();
    let before = writes_so_far();
    el.run(&mut seen).unwrap();
    (seen, writes_so_far() - before)
}

#[test]
fn a_burst_costs_one_eventfd_write_per_batch_the_loop_takes() {
    let _dog = Watchdog::new(60, "a_burst_costs_one_eventfd_write_per_batch_the_loop_takes");

    // 1. Sent before the loop looks: one batch, one write.
    let delivered = Arc::new(AtomicU64::new(0));
    let (mut el, tx) = counting_loop(delivered.clone());
    let before = writes_so_far();
    for i in 0..100_000 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let sent = writes_so_far() - before;
    assert_eq!(sent, 1, "100,000 sends before the loop ran made {sent} writes");
    let (seen, during) = run(&mut el);
    assert_eq!((seen.messages, seen.batches, during), (100_000, 1, 0));

    // 2. A producer that waits for the loop to take each message before the
    // next: every message is a batch of its own, and every one costs a write.
    let delivered = Arc::new(AtomicU64::new(0));
    let (mut el, tx) = counting_loop(delivered.clone());
    el.defer(move |_, _| {
        thread::spawn(move || {
            for i in 1..=200u64 {
                tx.send(i).unwrap();
                while delivered.load(Ordering::Acquire) < i {
                    thread::sleep(Duration::from_micros(50));
                }
            }
        });
    });
    let (seen, writes) = run(&mut el);
    assert_eq!((seen.messages, seen.batches), (200, 200));
    // The last sender's drop tells the loop the channel closed: one more
    // write when it comes after the last batch was taken.
    assert!((200..=201).contains(&writes), "200 batches cost {writes} writes");

    // 3. A producer that never waits, while the loop runs: as many writes
    // as batches the loop happened to take (the count varies run to run).
    let (mut el, tx) = counting_loop(Arc::new(AtomicU64::new(0)));
    el.defer(move |_, _| {
        thread::spawn(move || {
            for i in 0..1_000_000u64 {
                tx.send(i).unwrap();
            }
        });
    });
    let (seen, writes) = run(&mut el);
    assert_eq!(seen.messages, 1_000_000);
    assert!(
        (seen.batches..=seen.batches + 1).contains(&writes),
        "{} batches cost {writes} writes",
        seen.batches
    );
}
