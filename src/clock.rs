//! The loop's monotonic clock, a manual clock for deterministic tests, and
//! [`TurnTime`]: the one place that decides when the clock is read and how
//! long a reading stands for "now".
//!
//! # The rule
//!
//! Inside a turn, [`Ctx::now`](crate::Ctx::now) reads the clock at its first
//! call and hands that reading to every later call, until one of these ends
//! it:
//!
//! - the turn begins, or ends (between turns every call reads the clock:
//!   an owner may use the loop at any time after `turn` returns, and a
//!   reading kept from the last turn could be seconds old);
//! - a phase of callbacks ran (the timer phase fired something, the
//!   deferred phase ran something): they may have taken long;
//! - a poll slept;
//! - a callback ran longer than the stall threshold, when one is set (it
//!   was timed anyway, so noticing costs nothing).
//!
//! So one reading serves the callbacks of one phase of one turn, and a turn
//! in which nothing asks (a plain echo) reads no clock at all. The poll's
//! timeout is not measured from any of these readings: the next deadline is
//! compared with a fresh one, taken right before the poll, and only when a
//! timer is armed and the poll could sleep (the timerfd of the
//! high-resolution mode is armed for the absolute deadline instead).

use std::cell::Cell;
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
/// A loop on a manual clock never sleeps for a timer (the clock does not
/// move while it sleeps), and advancing the clock wakes no loop: a test
/// drives the turns itself, advancing the clock and then calling
/// [`turn`](crate::EventLoop::turn) with a zero timeout (or a cap). A loop
/// with nothing but timers, blocked in `turn(None)`, stays blocked.
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

/// What the loop knows of the time: its clock, the origin its timers count
/// nanoseconds from, and the current reading while one is valid (see the
/// module docs for the rule).
#[derive(Debug)]
pub(crate) struct TurnTime {
    clock: Clock,
    origin: Instant,
    /// The reading, as an `Instant` and as nanoseconds since `origin`; each
    /// is derived from the other when first asked for (`None`: not yet).
    now: Cell<Option<Instant>>,
    now_ns: Cell<Option<u64>>,
    /// A turn is running: only then is a reading kept, or used.
    in_turn: Cell<bool>,
}

impl TurnTime {
    pub(crate) fn new(clock: Clock) -> TurnTime {
        let origin = clock.origin();
        TurnTime {
            clock,
            origin,
            now: Cell::new(None),
            now_ns: Cell::new(None),
            in_turn: Cell::new(false),
        }
    }

    /// The instant the timers count their nanoseconds from.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    #[inline]
    pub(crate) fn is_manual(&self) -> bool {
        self.clock.is_manual()
    }

    /// True while a turn runs (between `begin_turn` and `end_turn`).
    #[inline]
    pub(crate) fn in_turn(&self) -> bool {
        self.in_turn.get()
    }

    /// A turn begins: readings are kept from here on, starting afresh.
    #[inline]
    pub(crate) fn begin_turn(&self) {
        self.in_turn.set(true);
        self.expire();
    }

    /// The turn is over: nothing read in it outlives it. (The reading is
    /// left in place, unused outside a turn, and dropped when the next turn
    /// begins: one store per turn fewer on a path every message takes.)
    #[inline]
    pub(crate) fn end_turn(&self) {
        self.in_turn.set(false);
    }

    /// End the current reading: the next ask reads the clock.
    #[inline]
    pub(crate) fn expire(&self) {
        self.now.set(None);
        self.now_ns.set(None);
    }

    /// The current reading, if one was taken and is still valid (for
    /// tracing, which must not read the clock itself).
    pub(crate) fn peek(&self) -> Option<Instant> {
        self.now.get().filter(|_| self.in_turn.get())
    }

    /// Now: the valid reading, or a new one (kept if a turn runs).
    pub(crate) fn now(&self) -> Instant {
        if let (Some(t), true) = (self.now.get(), self.in_turn.get()) {
            return t;
        }
        let t = match &self.clock {
            // A manual clock's time is a nanosecond count from the origin:
            // the `Instant` is derived from it.
            Clock::Manual(_) => to_instant(self.origin, self.now_ns()),
            Clock::System => Instant::now(),
        };
        if self.in_turn.get() {
            self.now.set(Some(t));
        }
        t
    }

    /// [`now`](Self::now) in the timers' nanoseconds, kept alike.
    pub(crate) fn now_ns(&self) -> u64 {
        if let (Some(ns), true) = (self.now_ns.get(), self.in_turn.get()) {
            return ns;
        }
        let ns = match &self.clock {
            Clock::Manual(m) => m.elapsed_ns(),
            Clock::System => self.to_ns(self.now()),
        };
        if self.in_turn.get() {
            self.now_ns.set(Some(ns));
        }
        ns
    }

    /// A fresh reading in nanoseconds, neither taken from nor kept as the
    /// current one: what the poll's timeout is measured from.
    pub(crate) fn read_ns(&self) -> u64 {
        match &self.clock {
            Clock::Manual(m) => m.elapsed_ns(),
            Clock::System => self.to_ns(Instant::now()),
        }
    }

    /// The current reading in nanoseconds if there is one, else a fresh
    /// one (not kept). A reading is current only if taken after the last
    /// callback that ran (each phase that runs one ends the reading), so
    /// before the poll it is as fresh as a new one, and costs no clock read.
    #[inline]
    pub(crate) fn current_or_read_ns(&self) -> u64 {
        if let (Some(ns), true) = (self.now_ns.get(), self.in_turn.get()) {
            return ns;
        }
        self.read_ns()
    }

    /// The clock's time without touching the reading (`next_deadline`).
    pub(crate) fn clock_now(&self) -> Instant {
        self.clock.now()
    }

    #[inline]
    fn to_ns(&self, t: Instant) -> u64 {
        ns_since(self.origin, t)
    }
}

/// Nanoseconds from `origin` to `t`; instants before it count as 0, and
/// ones beyond 584 years saturate (they never fire early).
#[inline]
pub(crate) fn ns_since(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// `origin + ns`, saturating where `Instant` ends.
#[inline]
pub(crate) fn to_instant(origin: Instant, ns: u64) -> Instant {
    origin
        .checked_add(Duration::from_nanos(ns))
        .unwrap_or_else(|| origin + Duration::from_secs(u32::MAX as u64))
}
