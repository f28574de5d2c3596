//! The turn's phase order and the poll's sleep rules (DESIGN.md, "The turn").

mod common;

use std::io::Write;
use std::time::Duration;

use common::{drain, pair, Watchdog, TICK};
use evloop::{Action, EventLoop, Interest, Turn};

type Log = Vec<&'static str>;

#[test]
fn one_turn_runs_timers_then_deferred_then_dispatch_then_checks() {
    let mut el = EventLoop::<Log>::new().unwrap();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |sock, _ev, _ctx, log: &mut Log| {
        drain(sock);
        log.push("dispatch");
        Action::Keep
    })
    .unwrap();
    el.add_check(|_ctx, log| {
        log.push("check");
        true
    });
    // Queued in the reverse of the order they must run in.
    el.defer(|_ctx, log| log.push("deferred"));
    el.timer_after(Duration::ZERO, |_fired, _ctx, log| log.push("timer"));
    peer.write_all(b"x").unwrap();

    let mut log = Log::new();
    let turn = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(log, ["timer", "deferred", "dispatch", "check"]);
    assert_eq!(
        turn,
        Turn {
            dispatched: 1,
            timers_fired: 1,
            deferred_run: 1
        }
    );
    assert!(!turn.is_idle());
}

#[test]
fn turn_counts_what_it_ran_and_metrics_add_them_up() {
    let mut el = EventLoop::<Log>::new().unwrap();
    let mut log = Log::new();
    let idle = el.turn(&mut log, Some(Duration::ZERO)).unwrap();
    assert!(idle.is_idle());
    assert_eq!(idle, Turn::default());

    for _ in 0..3 {
        el.defer(|_ctx, log| log.push("d"));
    }
    el.timer_after(Duration::ZERO, |_f, _ctx, log| log.push("t"));
    el.timer_after(Duration::ZERO, |_f, _ctx, log| log.push("t"));
    let turn = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(
        turn,
        Turn {
            dispatched: 0,
            timers_fired: 2,
            deferred_run: 3
        }
    );
    let m = el.metrics();
    assert_eq!(m.turns, 2);
    assert_eq!(m.timers_fired, 2);
    assert_eq!(m.deferred_run, 3);
    assert_eq!(m.dispatched, 0);
}

#[test]
fn deferred_callbacks_run_fifo() {
    let mut el = EventLoop::<Vec<usize>>::new().unwrap();
    for i in 0..100 {
        el.defer(move |_ctx, got: &mut Vec<usize>| got.push(i));
    }
    let mut got = Vec::new();
    let turn = el.turn(&mut got, Some(TICK)).unwrap();
    assert_eq!(turn.deferred_run, 100);
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn deferred_during_the_deferred_phase_waits_for_the_next_turn() {
    let mut el = EventLoop::<Log>::new().unwrap();
    el.defer(|ctx, log| {
        log.push("first");
        ctx.defer(|_ctx, log| log.push("second"));
    });
    el.defer(|_ctx, log| log.push("also first turn"));
    let mut log = Log::new();
    let t1 = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(t1.deferred_run, 2);
    assert_eq!(log, ["first", "also first turn"]);
    let t2 = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(t2.deferred_run, 1);
    assert_eq!(log, ["first", "also first turn", "second"]);
}

#[test]
fn deferred_from_a_handler_runs_at_the_start_of_the_next_turn() {
    let mut el = EventLoop::<Log>::new().unwrap();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |sock, _ev, ctx, log: &mut Log| {
        drain(sock);
        log.push("dispatch");
        ctx.defer(|_ctx, log| log.push("deferred"));
        Action::Keep
    })
    .unwrap();
    peer.write_all(b"x").unwrap();
    let mut log = Log::new();
    el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(log, ["dispatch"]);
    let t = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(t.deferred_run, 1);
    assert_eq!(log, ["dispatch", "deferred"]);
}

/// `turn(None)` on a loop with nothing else to do would sleep forever: that
/// it returns at all proves the poll did not block. The watchdog turns a hang
/// into a failure.
#[test]
fn poll_does_not_block_while_deferred_work_is_pending() {
    let _dog = Watchdog::new(10, "turn(None) with deferred work pending");
    let mut el = EventLoop::<Log>::new().unwrap();
    el.defer(|ctx, log| {
        log.push("first");
        ctx.defer(|_ctx, log| log.push("second"));
    });
    let mut log = Log::new();
    // "second" was deferred during the deferred phase: it is pending when
    // the poll starts, so the poll must not sleep.
    el.turn(&mut log, None).unwrap();
    assert_eq!(log, ["first"]);
    el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(log, ["first", "second"]);
}

#[test]
fn poll_does_not_block_while_a_source_is_rescheduled() {
    let _dog = Watchdog::new(10, "turn(None) with a rescheduled source");
    let mut el = EventLoop::<usize>::new().unwrap();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |_sock, _ev, _ctx, calls: &mut usize| {
        *calls += 1;
        // Leave the byte unread: only the reschedule can bring us back.
        if *calls < 3 {
            Action::Reschedule
        } else {
            Action::Keep
        }
    })
    .unwrap();
    peer.write_all(b"x").unwrap();
    let mut calls = 0;
    for _ in 0..3 {
        el.turn(&mut calls, None).unwrap();
    }
    assert_eq!(calls, 3);
}

#[test]
fn poll_does_not_block_while_a_source_is_scheduled() {
    let _dog = Watchdog::new(10, "turn(None) with a scheduled source");
    let mut el = EventLoop::<usize>::new().unwrap();
    let (a, _peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |_sock, _ev, _ctx, calls: &mut usize| {
            *calls += 1;
            Action::Keep
        })
        .unwrap();
    assert!(el.schedule(id));
    let mut calls = 0;
    let t = el.turn(&mut calls, None).unwrap();
    assert_eq!((calls, t.dispatched), (1, 1));
}

#[test]
fn timer_armed_for_now_inside_a_timer_fires_next_turn() {
    let _dog = Watchdog::new(10, "turn(None) with a timer already due");
    let mut el = EventLoop::<Log>::new().unwrap();
    el.timer_after(Duration::ZERO, |_f, ctx, log| {
        log.push("outer");
        let now = ctx.now();
        ctx.timer_at(now, |_f, _ctx, log| log.push("inner"));
    });
    let mut log = Log::new();
    // The inner timer is due when this turn polls, so even an unbounded poll
    // must not sleep.
    let t1 = el.turn(&mut log, None).unwrap();
    assert_eq!(t1.timers_fired, 1);
    assert_eq!(log, ["outer"]);
    let t2 = el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(t2.timers_fired, 1);
    assert_eq!(log, ["outer", "inner"]);
}

#[test]
fn check_hooks_run_every_turn_until_they_return_false() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let mut n = 0;
    el.add_check(move |_ctx, got: &mut Vec<u32>| {
        n += 1;
        got.push(n);
        n < 3
    });
    let mut got = Vec::new();
    for _ in 0..5 {
        el.turn(&mut got, Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(got, [1, 2, 3]);
}

/// The turn's time is read when first asked for, then held for the rest of
/// the turn; the next turn reads afresh.
#[test]
fn now_is_read_at_first_use_and_held_for_the_turn() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Instant;

    let clock = evloop::ManualClock::new();
    let t0 = clock.now();
    let mut el: EventLoop<()> = EventLoop::builder()
        .clock(evloop::Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    let seen: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let (c, s) = (clock.clone(), seen.clone());
    el.defer(move |ctx, _| {
        // Nothing has asked yet this turn (no timer is armed): moving the
        // clock now shows in the first `now()`...
        c.advance(Duration::from_millis(5));
        s.borrow_mut().push(ctx.now());
        // ...which then holds for the rest of the turn.
        c.advance(Duration::from_millis(5));
        s.borrow_mut().push(ctx.now());
    });
    el.turn(&mut (), Some(Duration::ZERO)).unwrap();
    let s = seen.clone();
    el.defer(move |ctx, _| s.borrow_mut().push(ctx.now()));
    el.turn(&mut (), Some(Duration::ZERO)).unwrap();
    let ms = |n| t0 + Duration::from_millis(n);
    assert_eq!(*seen.borrow(), vec![ms(5), ms(5), ms(10)]);
}
