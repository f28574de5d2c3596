//! The loop's monotonic clock, and a manual clock for deterministic tests.
//!
//! The loop reads its clock at most once per turn, when something first asks
//! for [`Ctx::now`](crate::Ctx::now) (the timer phase, when timers are armed),
//! and hands that cached instant to everything else that runs in the turn; a
//! poll that actually slept makes the next ask read it afresh. With a
//! [`ManualClock`] nothing moves until the test says so, which is what makes
//! timer tests exact and instant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the loop gets the time from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// `std::time::Instant::now()`: CLOCK_MONOTONIC on Linux.
    #[default]
    System,
    /// Time that only moves when [`ManualClock::advance`] is called.
    Manual(ManualClock),
}

impl Clock {
    /// The current time according to this clock.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(m) => m.now(),
        }
    }

    #[inline]
    pub(crate) fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// The instant a loop on this clock counts its nanoseconds from. For a
    /// manual clock that is the clock's own start, so that its time is
    /// already a nanosecond count and the timer phase needs no `Instant`
    /// arithmetic (see [`ManualClock::elapsed_ns`]).
    pub(crate) fn origin(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(m) => m.base,
        }
    }
}

/// A clock that a test moves by hand. Clones share the same time, and it can
/// be moved from any thread.
///
/// ```
/// use std::time::Duration;
/// let clock = evloop::ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now() - t0, Duration::from_millis(5));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    base: Instant,
    offset_ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock frozen at the moment it was made.
    pub fn new() -> ManualClock {
        ManualClock {
            base: Instant::now(),
            offset_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.elapsed_ns())
    }

    /// Nanoseconds moved since the clock was made: a loop on this clock
    /// counts from its start ([`Clock::origin`]), so this is its time.
    #[inline]
    pub(crate) fn elapsed_ns(&self) -> u64 {
        self.offset_ns.load(Ordering::Acquire)
    }

    /// Move the clock forward by `by` (saturating far in the future).
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.saturating_add(ns))
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}
