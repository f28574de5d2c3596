//! Numbers the guide quotes, pinned: timers on the manual clock, and the
//! network layer's thresholds.
//!
//! docs/ARCHITECTURE.md and `examples/timers.rs` say the poll sleeps until
//! the next deadline *or earlier*: a timer further away than the wheel's
//! level 0 (64 ticks of 2^20 ns, 67.1 ms) is reached through a wake-up at
//! the start of its higher-level slot, which files it closer and fires
//! nothing. These tests drive the loop the way a sleeping `run` would (jump
//! the clock to `next_deadline`, turn) and count those turns.

mod common;

use std::time::Duration;

use common::manual_loop;

const ZERO: Option<Duration> = Some(Duration::ZERO);
const TICK_NS: u64 = 1 << 20;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_timer_beyond_level_0_is_reached_through_one_early_wake_up() {
    let (mut el, clock) = manual_loop::<u32>();
    let t0 = clock.now();
    el.timer_after(ms(100), |_, _, n| *n += 1);
    let mut fired = 0;
    // The wheel's answer is the start of the level-1 slot that holds it:
    // tick 64, 67.1 ms, not 100 ms.
    let early = el.next_deadline().unwrap();
    assert_eq!(early - t0, Duration::from_nanos(64 * TICK_NS));
    clock.advance(early - t0);
    el.turn(&mut fired, ZERO).unwrap();
    assert_eq!(fired, 0, "the early wake-up fired the timer");
    // Now in level 0: the answer is exact.
    assert_eq!(el.next_deadline().unwrap() - t0, ms(100));
    clock.advance(ms(100) - (early - t0));
    el.turn(&mut fired, ZERO).unwrap();
    assert_eq!(fired, 1);
}

/// `examples/timers.rs`'s timers, replayed: a 100 ms fixed-rate tick
/// stopped at the fifth, two one-shots at 150 ms, one armed for 200 ms and
/// cancelled, one armed for 50 ms and reset to 250 ms. A real run traced 14
/// turns, 7 of which fired nothing: the first and six early wake-ups
/// (ARCHITECTURE.md, phase 4).
#[test]
fn the_timers_example_takes_14_turns_of_which_7_fire_nothing() {
    let (mut el, clock) = manual_loop::<u32>();
    let t0 = clock.now();
    el.timer_every(ms(100), |fired, ctx, ticks: &mut u32| {
        *ticks += 1;
        if *ticks == 5 {
            ctx.cancel_timer(fired.id);
            ctx.stop();
        }
    });
    for _ in 0..2 {
        el.timer_after(ms(150), |_, _, _| {});
    }
    let doomed = el.timer_after(ms(200), |_, _, _| {});
    el.cancel_timer(doomed);
    let late = el.timer_after(ms(50), |_, _, _| {});
    el.reset_timer(late, t0 + ms(250));

    let mut ticks = 0;
    let (mut turns, mut empty) = (0, 0);
    loop {
        let done = el.turn(&mut ticks, ZERO).unwrap();
        turns += 1;
        if done.timers_fired == 0 {
            empty += 1;
        }
        if ticks == 5 {
            break;
        }
        assert!(turns < 100, "the replay does not end");
        let next = el.next_deadline().expect("a timer is armed");
        clock.advance(next.saturating_duration_since(clock.now()));
    }
    assert_eq!(clock.now() - t0, ms(500));
    assert_eq!((turns, empty), (14, 7));
}

/// The thresholds ARCHITECTURE.md section 8 draws, and the budgets it
/// quotes (section 2, the EMFILE row), are the defaults.
#[test]
fn the_quoted_network_thresholds_are_the_defaults() {
    let l = evloop::net::ListenConfig::default();
    let c = &l.conn;
    const KIB: usize = 1024;
    assert_eq!(
        (c.low_water, c.high_water, c.max_queued),
        (64 * KIB, 256 * KIB, 4 * KIB * KIB)
    );
    assert_eq!(c.read_budget, 256 * KIB);
    assert_eq!(l.accept_budget, 64);
    assert_eq!(l.emfile_backoff, ms(100));
}
