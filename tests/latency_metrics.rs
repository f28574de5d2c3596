//! The latency histograms in `Metrics`: what they count, in which bucket,
//! and that they stay empty unless asked for. A manual clock stands in for
//! time, moved by the handlers themselves, so every duration is exact.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use evloop::{Action, Clock, EventLoop, LatencyHistogram, ManualClock, LATENCY_BUCKETS};

mod common;
use common::{eventfd, eventfd_read, eventfd_write, FdSource, Watchdog};

/// Register an eventfd whose handler moves the clock on by `takes` (as if
/// it worked that long) and counts its dispatch.
fn source(el: &mut EventLoop<u32>, clock: &ManualClock, takes: Duration) -> RawFd {
    let efd = eventfd();
    let raw = efd.as_raw_fd();
    let clock = clock.clone();
    el.register(
        efd,
        mio::Interest::READABLE,
        move |fd: &mut FdSource, _, _, n: &mut u32| {
            eventfd_read(fd.as_raw_fd());
            clock.advance(takes);
            *n += 1;
            Action::Keep
        },
    )
    .unwrap();
    raw
}

fn manual(histograms: bool) -> (EventLoop<u32>, ManualClock) {
    let clock = ManualClock::new();
    let el = EventLoop::builder()
        .clock(Clock::Manual(clock.clone()))
        .latency_histograms(histograms)
        .build()
        .unwrap();
    (el, clock)
}

/// Only bucket `i` holds anything, `n` durations.
fn only(h: &LatencyHistogram, i: usize, n: u64) -> bool {
    h.buckets()
        .iter()
        .enumerate()
        .all(|(b, &c)| c == if b == i { n } else { 0 })
}

#[test]
fn each_dispatch_counts_its_wait_since_the_poll_returned() {
    let (mut el, clock) = manual(true);
    let first = source(&mut el, &clock, Duration::from_micros(5));
    let second = source(&mut el, &clock, Duration::ZERO);
    eventfd_write(first, 1);
    eventfd_write(second, 1);
    let mut n = 0;
    el.turn(&mut n, Some(common::TICK)).unwrap();
    assert_eq!(n, 2);
    let m = el.metrics();
    let d = m.dispatch_latency;
    // The first ran at once; the second waited the first's 5 us: [4, 8) us.
    assert_eq!(d.count(), 2);
    assert_eq!(d.buckets()[0], 1, "{d:?}");
    assert_eq!(d.buckets()[3], 1, "{d:?}");
    assert_eq!(d.max(), Duration::from_micros(5));
    assert_eq!(d.mean(), Some(Duration::from_nanos(2_500)));
    assert_eq!(
        d.percentile(0.5),
        Some(Duration::from_micros(1)),
        "bucket 0's upper edge"
    );
    assert_eq!(
        d.percentile(0.99),
        Some(Duration::from_micros(5)),
        "capped at the max"
    );
    // The turn was busy for the handlers' 5 us.
    assert!(only(&m.turn_length, 3, 1), "{:?}", m.turn_length);
}

#[test]
fn the_polls_wait_is_not_part_of_the_turn() {
    let _dog = Watchdog::new(10, "the_polls_wait_is_not_part_of_the_turn");
    let (mut el, clock) = manual(true);
    let fd = source(&mut el, &clock, Duration::ZERO);
    // A second passes while the loop sleeps in its poll, then the event
    // comes: the clock moves before the poke, and only once the kernel says
    // the loop's thread sleeps (its one blocking call is the poll).
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let c = clock.clone();
    let poker = std::thread::spawn(move || {
        let stat = format!("/proc/self/task/{tid}/stat");
        for _ in 0..10_000 {
            let s = std::fs::read_to_string(&stat).unwrap_or_default();
            if s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        c.advance(Duration::from_secs(1));
        eventfd_write(fd, 1);
    });
    let mut n = 0;
    while n == 0 {
        el.turn(&mut n, None).unwrap();
    }
    poker.join().unwrap();
    let m = el.metrics();
    assert_eq!(m.turn_length.count(), m.turns);
    assert!(only(&m.turn_length, 0, m.turns), "{:?}", m.turn_length);
    assert!(only(&m.dispatch_latency, 0, 1), "{:?}", m.dispatch_latency);
}

#[test]
fn since_subtracts_an_earlier_reading() {
    let (mut el, clock) = manual(true);
    let fd = source(&mut el, &clock, Duration::from_millis(3));
    let mut n = 0;
    el.turn(&mut n, Some(Duration::ZERO)).unwrap();
    let before = el.metrics();
    for _ in 0..4 {
        eventfd_write(fd, 1);
        el.turn(&mut n, Some(common::TICK)).unwrap();
    }
    let after = el.metrics();
    let turns = after.turn_length.since(&before.turn_length);
    // 3 ms = 3,000 us: in [2,048, 4,096) us, bucket 12.
    assert!(only(&turns, 12, 4), "{turns:?}");
    assert_eq!(turns.percentile(0.999), Some(Duration::from_millis(3)));
    assert_eq!(after.turn_length.count(), 5);
}

#[test]
fn histograms_stay_empty_unless_enabled() {
    let (mut el, clock) = manual(false);
    let fd = source(&mut el, &clock, Duration::from_micros(5));
    let mut n = 0;
    for _ in 0..3 {
        eventfd_write(fd, 1);
        el.turn(&mut n, Some(common::TICK)).unwrap();
    }
    assert_eq!(n, 3);
    let m = el.metrics();
    assert_eq!(m.dispatch_latency, LatencyHistogram::default());
    assert_eq!(m.turn_length, LatencyHistogram::default());
    assert_eq!(m.dispatch_latency.percentile(0.5), None);
}

#[test]
fn bucket_edges_are_powers_of_two_microseconds() {
    let us = Duration::from_micros;
    assert_eq!(LatencyHistogram::bounds(0), (us(0), Some(us(1))));
    assert_eq!(LatencyHistogram::bounds(1), (us(1), Some(us(2))));
    assert_eq!(LatencyHistogram::bounds(20), (us(1 << 19), Some(us(1 << 20))));
    assert_eq!(LatencyHistogram::bounds(LATENCY_BUCKETS - 1), (us(1 << 20), None));
    assert_eq!(
        LatencyHistogram::bounds(99),
        LatencyHistogram::bounds(LATENCY_BUCKETS - 1)
    );
}
