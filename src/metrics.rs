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
    /// Time from a poll's return to the start of each handler it led to
    /// (one count per dispatch): what the loop itself adds to a message's
    /// latency before your code sees it. Empty unless
    /// [`Builder::latency_histograms`](crate::Builder::latency_histograms).
    pub dispatch_latency: LatencyHistogram,
    /// Each turn's length, leaving out the time its poll spent in the
    /// kernel: the loop's busy time per turn, which is how long an event
    /// arriving mid-turn waits before the next poll can report it. Empty
    /// unless [`Builder::latency_histograms`](crate::Builder::latency_histograms).
    pub turn_length: LatencyHistogram,
}

/// How many buckets a [`LatencyHistogram`] has.
pub const LATENCY_BUCKETS: usize = 22;

/// Durations counted in fixed power-of-two buckets of microseconds, with
/// the largest and the sum kept beside them. Fixed size, no allocation:
/// recording one is an increment.
///
/// # Reading it
///
/// Bucket 0 counts durations under 1 µs; bucket `i` (1 to 20) counts those
/// from 2^(i-1) µs up to, not including, 2^i µs (bucket 1 is [1, 2) µs,
/// bucket 11 is [1.024, 2.048) ms); bucket 21 counts everything from
/// 2^20 µs (about 1.05 s) on. [`bounds`](Self::bounds) gives a bucket's
/// edges. A percentile is the bucket in which the running count crosses
/// that fraction of [`count`](Self::count): [`percentile`](Self::percentile)
/// returns its upper edge (or the largest duration seen, when that is
/// lower), so "p99 ≤ 8 µs" reads as "99 % of the dispatches started within
/// 8 µs of their poll's return", accurate to a factor of two. Subtract two
/// readings (taken with [`Ctx::metrics`](crate::Ctx::metrics)) with
/// [`since`](Self::since) to see one interval.
///
/// ```
/// let m = evloop::Metrics::default();
/// let h = m.dispatch_latency;
/// assert_eq!(h.count(), 0);
/// assert_eq!(h.percentile(0.99), None);
/// assert_eq!(
///     evloop::LatencyHistogram::bounds(3),
///     (std::time::Duration::from_micros(4), Some(std::time::Duration::from_micros(8)))
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS],
    sum_ns: u64,
    max_ns: u64,
}

impl LatencyHistogram {
    /// Count one duration of `ns` nanoseconds.
    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        let us = ns / 1000;
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        self.counts[bucket.min(LATENCY_BUCKETS - 1)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// How many durations each bucket counted (see the type's docs).
    pub fn buckets(&self) -> &[u64; LATENCY_BUCKETS] {
        &self.counts
    }

    /// Bucket `i`'s lower edge (included) and upper edge (excluded; `None`
    /// for the last bucket, which has none). `i` past the last bucket is
    /// read as the last.
    pub fn bounds(i: usize) -> (Duration, Option<Duration>) {
        let i = i.min(LATENCY_BUCKETS - 1);
        let lower = if i == 0 { 0 } else { 1u64 << (i - 1) };
        let upper = (i < LATENCY_BUCKETS - 1).then(|| Duration::from_micros(1u64 << i));
        (Duration::from_micros(lower), upper)
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The largest duration counted (zero when none was).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The mean duration, `None` when none was counted.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_nanos(self.sum_ns / n))
    }

    /// An upper bound on the `p` quantile (`p` from 0 to 1, e.g. 0.999):
    /// the upper edge of the bucket holding it, or the largest duration
    /// counted when that is lower. `None` when nothing was counted.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64 * p.clamp(0.0, 1.0)).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        let max = self.max();
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bounds(i).1.map_or(max, |upper| upper.min(max)));
            }
        }
        Some(max)
    }

    /// What was counted after `earlier`, a reading of the same histogram
    /// taken before this one. The largest duration is this reading's.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut d = *self;
        for (c, e) in d.counts.iter_mut().zip(&earlier.counts) {
            *c = c.saturating_sub(*e);
        }
        d.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        d
    }
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
