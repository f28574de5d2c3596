//! Counters the loop keeps about itself, and stall detection.

use std::time::{Duration, Instant};

/// Running totals since the loop was built. Read with
/// [`Ctx::metrics`](crate::Ctx::metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Turns completed.
    pub turns: u64,
    /// Handler dispatches (kernel readiness, rescheduled and notified sources).
    pub dispatched: u64,
    /// Timer callbacks run.
    pub timers_fired: u64,
    /// Deferred callbacks run.
    pub deferred_run: u64,
    /// Polls that were allowed to sleep (timeout other than zero).
    pub sleeping_polls: u64,
    /// Callbacks that ran longer than the stall threshold.
    pub stalls: u64,
    /// Handler panics caught under [`PanicPolicy::CloseSource`](crate::PanicPolicy::CloseSource).
    pub panics: u64,
    /// Sources registered right now.
    pub sources: usize,
    /// Timers armed right now.
    pub timers: usize,
}

/// Times callbacks when a stall threshold is set, and warns about slow ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StallWatch {
    threshold: Option<Duration>,
}

impl StallWatch {
    pub(crate) fn new(threshold: Option<Duration>) -> StallWatch {
        StallWatch { threshold }
    }

    /// Start timing (reads the real clock only when watching).
    // `#[inline]` on both ends: the loop is generic, so it is compiled in the
    // user's crate, and without the hint these two became out-of-line calls
    // (about 35 instructions per dispatched event, with the message's
    // arguments built even when nobody watches). Inlined, an unwatched loop
    // pays one test of `threshold` each.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        self.threshold.map(|_| Instant::now())
    }

    /// Finish timing `what`; warns and counts when it took too long, and
    /// says so (the loop's reading of "now" is stale after it).
    #[inline]
    pub(crate) fn finish(
        &self,
        started: Option<Instant>,
        metrics: &mut Metrics,
        what: std::fmt::Arguments<'_>,
    ) -> bool {
        match (started, self.threshold) {
            (Some(t0), Some(limit)) => Self::check(t0, limit, metrics, what),
            _ => false,
        }
    }

    #[cold]
    #[inline(never)]
    fn check(t0: Instant, limit: Duration, metrics: &mut Metrics, what: std::fmt::Arguments<'_>) -> bool {
        let took = t0.elapsed();
        if took > limit {
            metrics.stalls += 1;
            log::warn!("evloop: {what} stalled the loop for {took:?} (threshold {limit:?})");
        }
        took > limit
    }
}
