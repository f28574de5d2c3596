//! Timers: one-shot and periodic callbacks on a hierarchical timing wheel.
//!
//! The wheel ([`wheel`]) is a plain data structure over nanoseconds; this
//! module maps the loop's `Instant`s onto it and stores what runs when an
//! entry expires. Arm, cancel and reset are O(1) and allocate nothing in
//! steady state: callbacks wait in per-closure-type slabs ([`callbacks`]),
//! not in a box each.

pub(crate) mod callbacks;
pub(crate) mod hires;
pub(crate) mod wheel;

use std::fmt;
use std::time::{Duration, Instant};

use crate::clock::{ns_since, to_instant};
use crate::Ctx;

/// Identifies an armed timer. Stale ids (fired, cancelled) are harmless:
/// cancelling or resetting them returns `false`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) wheel::Key);

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}.{}", self.0.index(), self.0.generation())
    }
}

/// What a timer callback is told when it fires.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The timer that fired.
    pub id: TimerId,
    /// For fixed-rate periodic timers: how many whole periods passed unseen
    /// because the loop ran late. Those ticks are counted here, not replayed.
    pub missed: u64,
    /// The deadline in the wheel's nanoseconds since `origin`: turned into
    /// an `Instant` only if the callback asks, most never do.
    deadline_ns: u64,
    origin: Instant,
}

impl Fired {
    #[inline]
    pub(crate) fn new(id: TimerId, deadline_ns: u64, missed: u64, origin: Instant) -> Fired {
        Fired {
            id,
            missed,
            deadline_ns,
            origin,
        }
    }

    /// The deadline it was armed for (the turn's `now()` is at or after it).
    pub fn deadline(&self) -> Instant {
        to_instant(self.origin, self.deadline_ns)
    }
}

impl fmt::Debug for Fired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fired")
            .field("id", &self.id)
            .field("deadline", &self.deadline())
            .field("missed", &self.missed)
            .finish()
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Repeat {
    Once,
    /// Next deadline = previous deadline + period: stays on the grid.
    Rate(u64),
    /// Next deadline = the turn's now + delay, measured after the callback.
    Delay(u64),
}

/// `TimerEntry::slot` while the callback is out of its slab, running.
pub(crate) const RUNNING: u32 = u32::MAX;

pub(crate) struct TimerEntry {
    /// Which slab of [`callbacks::Callbacks`] holds the callback (one per
    /// closure type in the program, so 16 bits are plenty)...
    pub(crate) kind: u16,
    /// ...and where: [`RUNNING`] while it runs (it is moved out then, so it
    /// can reach the loop mutably).
    pub(crate) slot: u32,
    /// [`Repeat`] without its period, which lives in [`Timers::periods`]:
    /// with it this would be 16 bytes, and a wheel entry 40 instead of 32.
    /// A million armed timers then move 8 MB less through the cache, which
    /// is what arming and cancelling them mostly waits on, and one-shot
    /// timers (most of them) have no period to keep.
    mode: Mode,
    /// The callback reset its own timer: do not re-arm it afterwards.
    pub(crate) reset_inside: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Once,
    Rate,
    Delay,
}

impl TimerEntry {
    #[inline]
    fn new(kind: u32, slot: u32, mode: Mode) -> TimerEntry {
        TimerEntry {
            kind: u16::try_from(kind).expect("more than 65,536 distinct timer closure types"),
            slot,
            mode,
            reset_inside: false,
        }
    }

    /// How the timer repeats, its period read from `periods` (see
    /// [`Timers::periods`]) under its wheel key.
    pub(crate) fn repeat(&self, periods: &[u64], key: wheel::Key) -> Repeat {
        let period = || periods[key.index() as usize];
        match self.mode {
            Mode::Once => Repeat::Once,
            Mode::Rate => Repeat::Rate(period()),
            Mode::Delay => Repeat::Delay(period()),
        }
    }
}

/// The loop's timer table.
pub(crate) struct Timers<S> {
    pub(crate) wheel: wheel::Wheel<TimerEntry>,
    pub(crate) callbacks: callbacks::Callbacks<S>,
    /// Periodic timers' periods, by wheel slab index; only as long as the
    /// highest index a periodic timer has had, and never read for one-shots.
    pub(crate) periods: Vec<u64>,
    origin: Instant,
}

/// Width of a level-0 wheel slot in the high-resolution mode: 2^16 ns =
/// 65.5 µs, so that a slot holds what is due in a fraction of the 100 µs
/// the mode promises.
const HIRES_TICK_SHIFT: u32 = 16;
/// Width of a level-0 slot otherwise: 2^20 ns = 1.05 ms, about the poll's
/// own millisecond resolution. Expiry is exact either way (see [`wheel`]);
/// a wider tick means fewer cascades per timer (a one-second timer is filed
/// twice instead of three times) and fewer slots to pass per turn.
const TICK_SHIFT: u32 = 20;

impl<S> Timers<S> {
    pub(crate) fn new(origin: Instant, high_resolution: bool) -> Timers<S> {
        let shift = if high_resolution {
            HIRES_TICK_SHIFT
        } else {
            TICK_SHIFT
        };
        Timers {
            wheel: wheel::Wheel::new(shift, 0),
            callbacks: callbacks::Callbacks::new(),
            periods: Vec::new(),
            origin,
        }
    }

    /// Nanoseconds since the loop's origin; instants before it count as 0,
    /// and ones beyond 584 years saturate (they never fire early).
    pub(crate) fn to_ns(&self, t: Instant) -> u64 {
        ns_since(self.origin, t)
    }

    pub(crate) fn to_instant(&self, ns: u64) -> Instant {
        to_instant(self.origin, ns)
    }

    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// Arm for a deadline in the wheel's nanoseconds (see [`Self::to_ns`]).
    pub(crate) fn arm_ns<F>(&mut self, ns: u64, repeat: Repeat, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let (kind, slot) = self.callbacks.insert(f);
        let (mode, period) = match repeat {
            Repeat::Once => (Mode::Once, 0),
            Repeat::Rate(p) => (Mode::Rate, p),
            Repeat::Delay(p) => (Mode::Delay, p),
        };
        let key = self.wheel.insert(ns, TimerEntry::new(kind, slot, mode));
        if mode != Mode::Once {
            let index = key.index() as usize;
            if self.periods.len() <= index {
                self.periods.resize(index + 1, 0);
            }
            self.periods[index] = period;
        }
        TimerId(key)
    }

    /// Removes a live timer and drops its callback (unless it is the one
    /// running: that one is dropped when it returns).
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        match self.wheel.remove(id.0) {
            Some(entry) => {
                if entry.slot != RUNNING {
                    self.callbacks.remove(u32::from(entry.kind), entry.slot);
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn reset(&mut self, id: TimerId, deadline: Instant) -> bool {
        let ns = self.to_ns(deadline);
        match self.wheel.get_mut(id.0) {
            Some(entry) => {
                if entry.slot == RUNNING {
                    entry.reset_inside = true;
                }
                self.wheel.reset(id.0, ns)
            }
            None => false,
        }
    }

    pub(crate) fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.wheel.deadline(id.0).map(|ns| self.to_instant(ns))
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline().map(|ns| self.to_instant(ns))
    }

    /// The next deadline in the wheel's nanoseconds (a lower bound: see
    /// [`wheel::Wheel::next_deadline`]); `None`, without a call, when
    /// nothing is armed, which is a server at rest every turn.
    #[inline]
    pub(crate) fn next_deadline_ns(&self) -> Option<u64> {
        if self.wheel.is_empty() {
            return None;
        }
        self.wheel.next_deadline()
    }

    /// Bring an empty wheel to `now_ns` before a timer goes in. The timer
    /// phase leaves an empty wheel's time where it is (it reads no clock
    /// when nothing is armed), and the wheel files entries relative to its
    /// own time: from a stale one, its next deadline would be a slot start
    /// long past.
    pub(crate) fn catch_up(&mut self, now_ns: u64) {
        if self.wheel.is_empty() {
            // Nothing is armed, so nothing can be reported.
            self.wheel.collect_expired(now_ns, &mut Vec::new());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.wheel.len()
    }
}

/// Duration in whole nanoseconds, saturating (584 years is "never").
#[inline]
pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Duration in whole nanoseconds, at least 1 (a zero period would spin).
#[inline]
pub(crate) fn period_ns(d: Duration) -> u64 {
    duration_ns(d).max(1)
}

#[cfg(test)]
mod size_tests {
    /// The wheel's entry size is what a million armed timers cost in cache
    /// traffic; keep it from growing back unnoticed.
    #[test]
    fn timer_entry_is_small() {
        assert_eq!(std::mem::size_of::<super::TimerEntry>(), 8);
        assert!(super::wheel::entry_size::<super::TimerEntry>() <= 32);
    }
}
