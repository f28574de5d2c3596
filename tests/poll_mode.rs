//! Poll modes: spin-then-block spins for its budget after work and then
//! sleeps; spin-forever never sleeps; timers stay exact while spinning and
//! bound the sleep once a spin ends. The manual clock drives the budget, and
//! `Metrics::sleeping_polls` shows each poll's decision, so nothing here
//! depends on how fast the machine is.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use evloop::{Action, Builder, Clock, EventLoop, Interest, ManualClock, PollMode};

mod common;
use common::{eventfd, eventfd_read, eventfd_write, FdSource, Watchdog};

/// The longest a test's blocking poll waits: it sleeps for real (a manual
/// clock does not move while the loop sleeps), so kept short.
const CAP: Duration = Duration::from_millis(1);

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// A loop on a manual clock in `mode`, with an eventfd whose handler counts
/// its dispatches in the state. Returns the eventfd to poke.
fn counting_loop(builder: Builder) -> (EventLoop<u32>, ManualClock, RawFd) {
    let clock = ManualClock::new();
    let mut el = builder.clock(Clock::Manual(clock.clone())).build().unwrap();
    let fd = counter(&mut el);
    (el, clock, fd)
}

fn counter(el: &mut EventLoop<u32>) -> RawFd {
    let efd = eventfd();
    let raw = efd.as_raw_fd();
    el.register(efd, Interest::READABLE, |fd: &mut FdSource, _, _, n: &mut u32| {
        eventfd_read(fd.as_raw_fd());
        *n += 1;
        Action::Keep
    })
    .unwrap();
    raw
}

/// One turn whose poll may sleep up to [`CAP`]; returns whether it was
/// allowed to sleep (the loop's own count of such polls went up).
fn slept(el: &mut EventLoop<u32>, n: &mut u32) -> bool {
    let before = el.metrics().sleeping_polls;
    el.turn(n, Some(CAP)).unwrap();
    el.metrics().sleeping_polls > before
}

#[test]
fn spin_then_block_spins_for_its_budget_after_work_then_sleeps() {
    let builder = EventLoop::builder().poll_mode(PollMode::SpinThenBlock(us(100)));
    let (mut el, clock, fd) = counting_loop(builder);
    let mut n = 0;
    assert!(slept(&mut el, &mut n), "no work yet: nothing to spin for");
    eventfd_write(fd, 1);
    assert!(slept(&mut el, &mut n), "the poll that finds the work may sleep");
    assert_eq!(n, 1);
    for _ in 0..5 {
        assert!(!slept(&mut el, &mut n), "spinning: the clock has not moved");
    }
    clock.advance(us(99));
    assert!(!slept(&mut el, &mut n), "99 of 100 us spent: still spinning");
    clock.advance(us(1));
    assert!(slept(&mut el, &mut n), "the budget is spent: the loop sleeps");
    clock.advance(us(1_000));
    for _ in 0..3 {
        assert!(slept(&mut el, &mut n), "idle: it stays asleep");
    }
    assert_eq!(n, 1);
}

#[test]
fn work_during_a_spin_starts_the_budget_again() {
    let builder = EventLoop::builder().poll_mode(PollMode::SpinThenBlock(us(100)));
    let (mut el, clock, fd) = counting_loop(builder);
    let mut n = 0;
    eventfd_write(fd, 1);
    slept(&mut el, &mut n);
    assert!(!slept(&mut el, &mut n), "the spin starts here, at 0 us");
    clock.advance(us(60));
    eventfd_write(fd, 1);
    assert!(!slept(&mut el, &mut n), "found by a spinning poll at 60 us");
    assert_eq!(n, 2);
    clock.advance(us(60));
    assert!(
        !slept(&mut el, &mut n),
        "120 us: past the first budget, within the second"
    );
    clock.advance(us(99));
    assert!(
        !slept(&mut el, &mut n),
        "219 us: the second budget counts from 120 us"
    );
    clock.advance(us(1));
    assert!(slept(&mut el, &mut n), "220 us: spent");
}

#[test]
fn spin_never_sleeps_and_busy_poll_is_spin() {
    for builder in [
        EventLoop::builder().poll_mode(PollMode::Spin),
        EventLoop::builder().busy_poll(true),
    ] {
        let (mut el, clock, _fd) = counting_loop(builder);
        let mut n = 0;
        for _ in 0..10 {
            clock.advance(Duration::from_secs(3600));
            assert!(!slept(&mut el, &mut n), "spin forever: with no work, for hours");
        }
    }
    let builder = EventLoop::builder().busy_poll(true).busy_poll(false);
    let (mut el, _clock, _fd) = counting_loop(builder);
    assert!(slept(&mut el, &mut 0), "busy_poll(false) is Block");
}

#[test]
fn a_zero_budget_is_block() {
    let builder = EventLoop::builder().poll_mode(PollMode::SpinThenBlock(Duration::ZERO));
    let (mut el, _clock, fd) = counting_loop(builder);
    let mut n = 0;
    eventfd_write(fd, 1);
    slept(&mut el, &mut n);
    assert_eq!(n, 1);
    assert!(slept(&mut el, &mut n), "nothing to spin for");
}

/// A timer due while the loop spins fires in the first turn at or after its
/// deadline, never before, and the loop keeps spinning through it.
#[test]
fn timers_fire_on_time_while_spinning() {
    for mode in [PollMode::Spin, PollMode::SpinThenBlock(Duration::from_secs(1))] {
        let (mut el, clock, fd) = counting_loop(EventLoop::builder().poll_mode(mode));
        let mut n = 0;
        eventfd_write(fd, 1);
        el.turn(&mut n, Some(CAP)).unwrap();
        let t0 = clock.now();
        el.timer_at(t0 + us(250), |_, _, n: &mut u32| *n += 100);
        for (at_ns, fired) in [
            (100_000, false),
            (200_000, false),
            (249_999, false),
            (250_000, true),
        ] {
            clock.advance(Duration::from_nanos(at_ns) - (clock.now() - t0));
            assert!(!slept(&mut el, &mut n), "{mode:?}: spinning at {at_ns} ns");
            assert_eq!(n >= 100, fired, "{mode:?}: timer at 250 us, turn at {at_ns} ns");
        }
        assert_eq!(el.metrics().timers_fired, 1);
    }
}

/// Once the spin is over, a timer bounds the sleep: with nothing else to
/// wake it, `turn(None)` wakes for the timer (were its deadline ignored,
/// the poll would sleep for ever and the watchdog abort the test). The
/// timer pokes the eventfd, so that the poll of the turn it fires in (with
/// no timer left to wait for) returns too.
#[test]
fn an_armed_timer_ends_the_sleep_after_a_spin() {
    let _dog = Watchdog::new(10, "an_armed_timer_ends_the_sleep_after_a_spin");
    let mut el = EventLoop::builder()
        .poll_mode(PollMode::SpinThenBlock(us(200)))
        .build()
        .unwrap();
    let fd = counter(&mut el);
    let mut n = 0;
    eventfd_write(fd, 1);
    el.turn(&mut n, None).unwrap();
    assert_eq!(n, 1);
    let armed = Instant::now();
    let deadline = armed + Duration::from_millis(5);
    el.timer_at(deadline, move |_, _, n: &mut u32| {
        *n += 100;
        eventfd_write(fd, 1);
    });
    let sleeping = el.metrics().sleeping_polls;
    let mut turns = 0;
    while n < 100 {
        el.turn(&mut n, None).unwrap();
        turns += 1;
        assert!(turns < 10_000_000, "the timer never fired");
    }
    assert!(Instant::now() >= deadline, "fired at or after its deadline");
    assert!(
        el.metrics().sleeping_polls > sleeping,
        "the spin ended and the loop slept until the timer"
    );
}
