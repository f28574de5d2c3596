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
    pub(crate) fn start(&self) -> Option<Instant> {
        self.threshold.map(|_| Instant::now())
    }

    /// Finish timing `what`; warns and counts when it took too long.
    pub(crate) fn finish(
        &self,
        started: Option<Instant>,
        metrics: &mut Metrics,
        what: std::fmt::Arguments<'_>,
    ) {
        if let (Some(t0), Some(limit)) = (started, self.threshold) {
            let took = t0.elapsed();
            if took > limit {
                metrics.stalls += 1;
                log::warn!("evloop: {what} stalled the loop for {took:?} (threshold {limit:?})");
            }
        }
    }
}
