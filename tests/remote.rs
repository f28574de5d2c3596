//! The `Remote` handle: stopping, waking and posting closures from other
//! threads, and what it reports once the loop is gone.

mod common;

use std::thread;

use common::Watchdog;
use evloop::{EventLoop, LoopGone, Remote};

#[test]
fn remote_is_send_sync_and_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<Remote<Vec<u8>>>();
}

#[test]
fn stop_from_another_thread_makes_run_return() {
    let _dog = Watchdog::new(10, "run() waiting for a remote stop");
    let mut el = EventLoop::<()>::new().unwrap();
    let remote = el.remote().unwrap();
    let stopper = thread::spawn(move || remote.stop());
    el.run(&mut ()).unwrap();
    stopper.join().unwrap();
    assert!(!el.is_stopping(), "run clears the stop request when it returns");
}

#[test]
fn a_stop_requested_before_run_is_honoured() {
    let _dog = Watchdog::new(10, "run() after an early remote stop");
    let mut el = EventLoop::<()>::new().unwrap();
    el.remote().unwrap().stop();
    el.run(&mut ()).unwrap();
}

#[test]
fn posted_closures_run_on_the_loop_in_order_per_thread() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 1_000;
    let _dog = Watchdog::new(20, "run() waiting for posted closures");
    let mut el = EventLoop::<Vec<(usize, usize)>>::new().unwrap();
    let remote = el.remote().unwrap();
    let loop_thread = thread::current().id();
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let remote = remote.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    remote
                        .post(move |ctx, got: &mut Vec<(usize, usize)>| {
                            assert_eq!(thread::current().id(), loop_thread);
                            got.push((t, i));
                            if got.len() == THREADS * PER_THREAD {
                                ctx.stop();
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    el.run(&mut got).unwrap();
    for p in posters {
        p.join().unwrap();
    }
    assert_eq!(got.len(), THREADS * PER_THREAD);
    for t in 0..THREADS {
        let mine: Vec<usize> = got.iter().filter(|m| m.0 == t).map(|m| m.1).collect();
        assert_eq!(mine, (0..PER_THREAD).collect::<Vec<_>>(), "thread {t}");
    }
}

/// With nothing registered and no timers, `turn(None)` sleeps until woken:
/// that it returns proves the wake reached the poll.
#[test]
fn wake_interrupts_a_turn_that_would_sleep_forever() {
    let _dog = Watchdog::new(10, "turn(None) waiting for a remote wake");
    let mut el = EventLoop::<()>::new().unwrap();
    let remote = el.remote().unwrap();
    let waker = thread::spawn(move || remote.wake());
    let turn = el.turn(&mut (), None).unwrap();
    waker.join().unwrap();
    assert!(turn.is_idle(), "a bare wake dispatches nothing");
    assert!(!el.is_stopping(), "a wake is not a stop");
}

#[test]
fn remotes_report_loop_gone_after_the_loop_is_dropped() {
    let mut el = EventLoop::<u32>::new().unwrap();
    let remote = el.remote().unwrap();
    let other = el.remote().unwrap();
    drop(el);
    assert_eq!(remote.post(|_ctx, n: &mut u32| *n += 1), Err(LoopGone));
    assert_eq!(other.post(|_ctx, n: &mut u32| *n += 1), Err(LoopGone));
    // Neither may panic on a dead loop.
    remote.wake();
    remote.stop();
}

/// A caller driving the loop with `turn` sees a stop request after the turn,
/// and the next turn clears it: the loop does not go on polling with a zero
/// timeout forever because nobody called `run`.
#[test]
fn stop_request_clears_on_the_next_turn() {
    let mut el = evloop::EventLoop::<()>::new().unwrap();
    let remote = el.remote().unwrap();
    remote.stop();
    el.turn(&mut (), Some(std::time::Duration::from_secs(5))).unwrap();
    assert!(el.is_stopping());
    let before = el.metrics().sleeping_polls;
    el.turn(&mut (), Some(std::time::Duration::from_millis(1)))
        .unwrap();
    assert!(!el.is_stopping());
    assert_eq!(
        el.metrics().sleeping_polls,
        before + 1,
        "the poll was allowed to sleep again"
    );
}
