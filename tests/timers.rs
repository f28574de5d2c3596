//! Timer ordering and semantics, driven by a manual clock: exact and instant.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use evloop::{Clock, EventLoop, ManualClock, TimerId};
use proptest::prelude::*;

mod common;

/// This file's loops hold the fired timers' tags.
fn manual_loop() -> (EventLoop<Vec<u32>>, ManualClock) {
    common::manual_loop()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Advance the clock and run one turn.
fn step(el: &mut EventLoop<Vec<u32>>, clock: &ManualClock, by: Duration, log: &mut Vec<u32>) {
    clock.advance(by);
    el.turn(log, Some(Duration::ZERO)).unwrap();
}

fn arm(el: &mut EventLoop<Vec<u32>>, at: Instant, label: u32) -> TimerId {
    el.timer_at(at, move |_, _, log: &mut Vec<u32>| log.push(label))
}

#[test]
fn fires_by_deadline_not_arm_order() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    arm(&mut el, t0 + ms(30), 3);
    arm(&mut el, t0 + ms(10), 1);
    arm(&mut el, t0 + ms(20), 2);
    let mut log = Vec::new();
    step(&mut el, &clock, ms(5), &mut log);
    assert!(log.is_empty(), "nothing is due at 5 ms");
    step(&mut el, &clock, ms(100), &mut log);
    assert_eq!(log, [1, 2, 3]);
}

#[test]
fn fires_exactly_at_deadline_not_before() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    arm(&mut el, t0 + Duration::from_micros(1500), 1);
    let mut log = Vec::new();
    step(&mut el, &clock, Duration::from_micros(1499), &mut log);
    assert!(log.is_empty());
    step(&mut el, &clock, Duration::from_micros(1), &mut log);
    assert_eq!(log, [1]);
}

#[test]
fn equal_deadlines_fire_in_arm_order() {
    let (mut el, clock) = manual_loop();
    let at = clock.now() + ms(7);
    for label in [5, 3, 9, 1] {
        arm(&mut el, at, label);
    }
    let mut log = Vec::new();
    step(&mut el, &clock, ms(7), &mut log);
    assert_eq!(log, [5, 3, 9, 1]);
}

#[test]
fn equal_deadlines_keep_arm_order_across_a_cascade() {
    // The first timer is armed 10 s ahead, far up the wheel; the second is
    // armed for the same instant when it is only 1 ms away, straight into the
    // lowest level. The first must still fire first.
    let (mut el, clock) = manual_loop();
    let at = clock.now() + Duration::from_secs(10);
    arm(&mut el, at, 1);
    let mut log = Vec::new();
    step(&mut el, &clock, Duration::from_millis(9_999), &mut log);
    arm(&mut el, at, 2);
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1, 2]);
}

#[test]
fn timer_armed_in_a_callback_for_now_fires_next_turn() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    el.timer_at(t0 + ms(1), |_, ctx, log: &mut Vec<u32>| {
        log.push(1);
        let now = ctx.now();
        ctx.timer_at(now - ms(1), |_, _, log: &mut Vec<u32>| log.push(2));
    });
    let mut log = Vec::new();
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1], "the timer armed for the past waits for the next turn");
    el.turn(&mut log, Some(Duration::ZERO)).unwrap();
    assert_eq!(log, [1, 2]);
}

#[test]
fn cancel_inside_another_timers_callback_stops_it() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let victim_slot = std::rc::Rc::new(std::cell::Cell::new(None));
    let v = victim_slot.clone();
    el.timer_at(t0 + ms(1), move |_, ctx, log: &mut Vec<u32>| {
        log.push(1);
        assert!(ctx.cancel_timer(v.get().unwrap()), "the victim is still live");
    });
    let victim = arm(&mut el, t0 + ms(1), 2);
    victim_slot.set(Some(victim));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(5), &mut log);
    assert_eq!(log, [1]);
    assert!(!el.cancel_timer(victim), "cancelling twice is a no-op");
}

#[test]
fn stale_ids_are_harmless() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let fired = arm(&mut el, t0 + ms(1), 1);
    let mut log = Vec::new();
    step(&mut el, &clock, ms(1), &mut log);
    assert!(!el.cancel_timer(fired));
    assert!(!el.reset_timer(fired, t0 + ms(10)));
    assert_eq!(el.timer_remaining(fired), None);
    // The slot is reused by a new timer; the stale id must not touch it.
    let fresh = arm(&mut el, t0 + ms(3), 2);
    assert!(!el.cancel_timer(fired));
    step(&mut el, &clock, ms(2), &mut log);
    assert_eq!(log, [1, 2]);
    assert!(!el.cancel_timer(fresh));
}

#[test]
fn reset_and_remaining() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let a = arm(&mut el, t0 + ms(10), 1);
    arm(&mut el, t0 + ms(20), 2);
    assert_eq!(el.timer_remaining(a), Some(ms(10)));
    assert!(el.reset_timer(a, t0 + ms(30)));
    assert_eq!(el.timer_deadline(a), Some(t0 + ms(30)));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(25), &mut log);
    assert_eq!(log, [2]);
    step(&mut el, &clock, ms(5), &mut log);
    assert_eq!(log, [2, 1]);
}

#[test]
fn fixed_rate_stays_on_grid_under_a_late_turn() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let id = el.timer_every(ms(10), |fired, _, log: &mut Vec<u32>| {
        log.push(fired.missed as u32)
    });
    let mut log = Vec::new();
    step(&mut el, &clock, ms(10), &mut log);
    assert_eq!(log, [0]);
    // The loop is 25 ms late: ticks at 20 and 30 are counted, not replayed.
    step(&mut el, &clock, ms(30), &mut log);
    assert_eq!(log, [0, 2], "one call reporting two missed ticks");
    assert_eq!(
        el.timer_deadline(id),
        Some(t0 + ms(50)),
        "next tick stays on the grid"
    );
    step(&mut el, &clock, ms(10), &mut log);
    assert_eq!(log, [0, 2, 0]);
}

#[test]
fn fixed_delay_measures_from_the_firing_turn() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let id = el.timer_every_delay(ms(10), |_, _, log: &mut Vec<u32>| log.push(1));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(17), &mut log);
    assert_eq!(log, [1]);
    assert_eq!(el.timer_deadline(id), Some(t0 + ms(27)));
}

/// Periods are kept apart from the timers' slots: periodic and one-shot
/// timers reusing each other's slots must each keep their own.
#[test]
fn periodic_timers_keep_their_periods_as_slots_are_reused() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let mut log = Vec::new();
    // One-shots fill the low slots, then free them for the periodic timers.
    let ids: Vec<TimerId> = (0..4).map(|i| arm(&mut el, t0 + ms(100), i)).collect();
    for id in ids {
        assert!(el.cancel_timer(id));
    }
    let slow = el.timer_every(ms(5), |_, _, log: &mut Vec<u32>| log.push(5));
    arm(&mut el, t0 + ms(1), 99);
    let fast = el.timer_every_delay(ms(2), |_, _, log: &mut Vec<u32>| log.push(2));
    step(&mut el, &clock, ms(1), &mut log);
    // The fired one-shot's slot goes to a periodic timer of a third period.
    el.timer_every(ms(3), |_, _, log: &mut Vec<u32>| log.push(3));
    for _ in 0..9 {
        step(&mut el, &clock, ms(1), &mut log);
    }
    // At 1 ms the one-shot; 2: fast; 4: 3 then fast (re-armed later, at 2);
    // 5: slow; 6: fast; 7: 3; 8: fast; 10: slow, 3, fast, in re-arm order.
    assert_eq!(log, [99, 2, 3, 2, 5, 2, 3, 2, 5, 3, 2]);
    assert_eq!(el.timer_deadline(slow), Some(t0 + ms(15)));
    assert_eq!(el.timer_deadline(fast), Some(t0 + ms(12)));
}

#[test]
fn periodic_cancelled_from_its_own_callback_stops() {
    let (mut el, clock) = manual_loop();
    el.timer_every(ms(1), |fired, ctx, log: &mut Vec<u32>| {
        log.push(1);
        if log.len() == 3 {
            assert!(ctx.cancel_timer(fired.id));
        }
    });
    let mut log = Vec::new();
    for _ in 0..10 {
        step(&mut el, &clock, ms(1), &mut log);
    }
    assert_eq!(log.len(), 3);
    assert_eq!(el.timer_count(), 0);
}

#[test]
fn far_deadlines_never_fire_early() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let day = Duration::from_secs(86_400);
    arm(&mut el, t0 + day * 30, 1);
    let never = el.timer_after(Duration::MAX, |_, _, log: &mut Vec<u32>| log.push(99));
    let mut log = Vec::new();
    for _ in 0..29 {
        step(&mut el, &clock, day, &mut log);
    }
    assert!(log.is_empty());
    step(&mut el, &clock, day, &mut log);
    assert_eq!(log, [1]);
    step(&mut el, &clock, day * 365 * 50, &mut log);
    assert_eq!(log, [1], "a deadline of 'never' stays pending");
    assert!(el.cancel_timer(never));
}

/// `Fired::deadline` is the deadline the timer was armed for, whichever way
/// it was armed, and the turn's `now()` is at or past it; a fixed-rate
/// timer's deadlines stay on its grid.
#[test]
fn fired_tells_the_armed_deadline() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for (label, at) in [(1, Some(t0 + ms(10))), (2, None)] {
        let seen = seen.clone();
        let f = move |fired: evloop::Fired, ctx: &mut evloop::Ctx<Vec<u32>>, _: &mut Vec<u32>| {
            assert!(ctx.now() >= fired.deadline());
            seen.borrow_mut().push((label, fired.deadline() - t0));
        };
        match at {
            Some(at) => el.timer_at(at, f),
            None => el.timer_after(ms(10), f),
        };
    }
    let rate = seen.clone();
    el.timer_every(ms(4), move |fired, _, _: &mut Vec<u32>| {
        rate.borrow_mut()
            .push((3 + fired.missed as u32, fired.deadline() - t0));
    });
    let mut log = Vec::new();
    // Turns at 7 and 13 ms, both late: the periodic timer reports its grid
    // points (4, then 8 with the one at 12 counted as missed).
    step(&mut el, &clock, ms(7), &mut log);
    step(&mut el, &clock, ms(6), &mut log);
    assert_eq!(
        *seen.borrow(),
        [(3, ms(4)), (4, ms(8)), (1, ms(10)), (2, ms(10))],
        "deadlines as armed; equal ones in arm order"
    );
}

/// A loop built on a manual clock that had already moved 1,000 s.
fn loop_on_a_clock_moved_before_build() -> (EventLoop<Vec<u32>>, ManualClock) {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1000));
    let el = EventLoop::builder()
        .clock(Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    (el, clock)
}

/// A manual clock moved before the loop was built: the loop's time starts
/// where the clock is, and relative timers count from there.
#[test]
fn a_manual_clock_moved_before_the_loop_is_built() {
    let (mut el, clock) = loop_on_a_clock_moved_before_build();
    assert_eq!(el.now(), clock.now());
    let id = el.timer_after(ms(5), |_, _, log: &mut Vec<u32>| log.push(1));
    assert_eq!(el.timer_deadline(id), Some(clock.now() + ms(5)));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(4), &mut log);
    assert!(log.is_empty(), "not due yet");
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1]);
    assert_eq!(el.now(), clock.now());
}

/// `next_deadline` (what a host loop sleeps until) is never in the past,
/// however long the clock moved while no timer was armed: before the loop
/// was built, or over turns that found the wheel empty.
#[test]
fn next_deadline_is_not_stale_after_an_idle_clock() {
    let (mut el, clock) = loop_on_a_clock_moved_before_build();
    // Never past, never after the deadline (a lower bound is allowed: the
    // loop may wake early to cascade).
    let sane = |next: Option<Instant>, now: Instant, deadline: Instant| {
        let next = next.expect("a timer is armed");
        assert!(next >= now, "next deadline {:?} in the past", now - next);
        assert!(next <= deadline);
    };
    el.timer_after(ms(5), |_, _, log: &mut Vec<u32>| log.push(1));
    sane(el.next_deadline(), clock.now(), clock.now() + ms(5));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(5), &mut log);
    assert_eq!(log, [1]);
    // An hour of turns with nothing armed, then one more timer.
    for _ in 0..60 {
        step(&mut el, &clock, Duration::from_secs(60), &mut log);
    }
    let t = clock.now();
    el.timer_at(t + ms(5), |_, _, log: &mut Vec<u32>| log.push(2));
    sane(el.next_deadline(), t, t + ms(5));
    step(&mut el, &clock, ms(4), &mut log);
    assert_eq!(log, [1], "not due yet");
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1, 2]);
}

/// A zero period means "every turn": the first run comes in the next timer
/// phase, not one nanosecond later (which a manual clock would never reach).
#[test]
fn zero_period_runs_without_the_clock_moving() {
    let (mut el, _clock) = manual_loop();
    el.timer_every(Duration::ZERO, |_, _, log: &mut Vec<u32>| log.push(1));
    el.timer_every_delay(Duration::ZERO, |_, _, log: &mut Vec<u32>| log.push(2));
    let mut log = Vec::new();
    el.turn(&mut log, Some(Duration::ZERO)).unwrap();
    assert_eq!(log, [1, 2]);
}

/// A timer the model tracks: its id, label, and (deadline, seq) while armed.
type Tracked = (TimerId, u32, Option<(u64, u64)>);

#[derive(Clone, Debug)]
enum Op {
    Arm(u64),
    Cancel(usize),
    Reset(usize, u64),
    Advance(u64),
}

fn delay() -> impl Strategy<Value = u64> {
    // Microseconds, spread over the wheel's levels: sub-tick, ms, seconds, hours, days.
    prop_oneof![
        0u64..200,
        0u64..100_000,
        0u64..10_000_000,
        0u64..4_000_000_000,
        0u64..400_000_000_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => delay().prop_map(Op::Arm),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (any::<usize>(), delay()).prop_map(|(i, d)| Op::Reset(i, d)),
        3 => delay().prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The loop's timers against a reference model: a BTreeMap keyed by
    /// (deadline, arm sequence). Every turn must fire exactly the model's due
    /// timers, in the model's order.
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
        let (mut el, clock) = manual_loop();
        let t0 = clock.now();
        let mut now_us = 0u64;
        let mut model: BTreeMap<(u64, u64), u32> = BTreeMap::new();
        let mut ids: Vec<Tracked> = Vec::new();
        let mut seq = 0u64;
        let mut log = Vec::new();
        for op in ops {
            match op {
                Op::Arm(d) => {
                    let label = ids.len() as u32;
                    let at = now_us + d;
                    let id = arm(&mut el, t0 + Duration::from_micros(at), label);
                    seq += 1;
                    model.insert((at, seq), label);
                    ids.push((id, label, Some((at, seq))));
                }
                Op::Cancel(i) if !ids.is_empty() => {
                    let i = i % ids.len();
                    let live = ids[i].2.take().is_some_and(|k| model.remove(&k).is_some());
                    prop_assert_eq!(el.cancel_timer(ids[i].0), live);
                }
                Op::Reset(i, d) if !ids.is_empty() => {
                    let i = i % ids.len();
                    let at = now_us + d;
                    let live = ids[i].2.is_some_and(|k| model.remove(&k).is_some());
                    prop_assert_eq!(el.reset_timer(ids[i].0, t0 + Duration::from_micros(at)), live);
                    if live {
                        seq += 1;
                        model.insert((at, seq), ids[i].1);
                        ids[i].2 = Some((at, seq));
                    }
                }
                Op::Advance(d) => {
                    now_us += d;
                    clock.advance(Duration::from_micros(d));
                    log.clear();
                    el.turn(&mut log, Some(Duration::ZERO)).unwrap();
                    let mut expected = Vec::new();
                    while let Some((&(at, s), &label)) = model.iter().next() {
                        if at > now_us {
                            break;
                        }
                        model.remove(&(at, s));
                        ids[label as usize].2 = None;
                        expected.push(label);
                    }
                    prop_assert_eq!(&log, &expected);
                }
                _ => {}
            }
            prop_assert_eq!(el.timer_count(), model.len());
        }
    }
}

#[test]
fn reset_inside_another_timers_callback_moves_it_out_of_the_batch() {
    let (mut el, clock) = manual_loop();
    let t0 = clock.now();
    let victim_slot = std::rc::Rc::new(std::cell::Cell::new(None));
    let v = victim_slot.clone();
    el.timer_at(t0 + ms(1), move |_, ctx, log: &mut Vec<u32>| {
        log.push(1);
        let now = ctx.now();
        assert!(ctx.reset_timer(v.get().unwrap(), now + ms(10)));
    });
    let victim = arm(&mut el, t0 + ms(1), 2);
    victim_slot.set(Some(victim));
    let mut log = Vec::new();
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1], "the reset timer is not due any more");
    step(&mut el, &clock, ms(9), &mut log);
    assert_eq!(log, [1]);
    step(&mut el, &clock, ms(1), &mut log);
    assert_eq!(log, [1, 2]);
}
