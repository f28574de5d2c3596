//! Timer costs: evloop's timing wheel beside tokio-util's `DelayQueue`,
//! calloop's `Timer` sources and a plain `BinaryHeap` baseline, in one run.
//!
//! - `timers_arm_cancel`: arm N timers with random deadlines within a
//!   minute, then cancel them all, in arm order. Reported per arm+cancel
//!   pair. The structures are kept across iterations, so this is the steady
//!   state (their tables are already grown).
//! - `timers_fire_manual`: libuv's "million timers": N timers spread over one
//!   second as libuv's benchmark spreads them (N/1000 per millisecond, armed
//!   in deadline order), then time moves in 1 ms steps until all have fired.
//!   Time is virtual: evloop runs on a `ManualClock`, arms with
//!   `timer_after` (a timeout relative to the loop's time, as libuv's
//!   benchmark arms them) and turns once per step (`turn(Some(ZERO))`); tokio's clock is paused and advanced, and the
//!   runtime turns until the queue has nothing due; the heap is given the
//!   time by a minimal loop that also makes the zero-timeout `epoll_wait`
//!   every loop's turn makes. Per timer, arming included. At small N the
//!   1,000 turns dominate, so that row compares the loops' turns.
//! - real clock (timed here, not by criterion: one run takes a second):
//!   the same timers against the real clock, each loop running until all
//!   have fired, five runs, the least of each. Reported: the loop thread's CPU
//!   time per timer (what the loop itself spent; sleeping between deadlines
//!   is not counted), and wall time beyond the 1 s the timers span, per
//!   timer (mostly how late the last wake-up was). Below 1M timers the CPU
//!   is nearly all the ~1,000 wake-ups from `epoll_wait` that every loop
//!   makes (about 15 µs each here), so those rows tell little about the
//!   structures. evloop's default mode sleeps in mio's whole milliseconds
//!   (rounded up, never early), so its last timer is up to 1 ms late;
//!   calloop's poller sleeps on a timerfd to the nanosecond. A last table
//!   runs evloop in its high-resolution mode (a timerfd too) beside both.
//!
//! calloop keeps its timers in a binary heap and cancels by scanning all of
//! it (also when a fired timer's source is dropped), so its cost grows with
//! the number of live timers: it runs at 1,000, 10,000 and 30,000 only. No
//! manual clock exists for it, so it has no `timers_fire_manual` row.
//!
//! tokio runs on a current-thread runtime with its I/O driver enabled, as an
//! application has it. Every timer carries a `u32` of its own (a closure
//! capturing it, or the queued value for `DelayQueue`), and every run checks
//! that all N fired exactly once.
//!
//! Criterion measures each case in turn and prints its estimates as usual.
//! The markdown tables that end the run (ns per operation, and peer / evloop
//! ratios: above 1 means evloop is faster) come from a second pass that
//! times every case once per round, interleaved, for seven rounds, and keeps
//! each case's least time: on a shared machine a busy spell then falls on
//! all peers alike instead of on whichever criterion was measuring.
//!
//! `cargo bench --bench timers -- --warm-up-time 1 --measurement-time 3`
//!
//! A name filter works as usual for criterion; the interleaved pass and the
//! real-clock runs take it as a plain substring of `<group>/<peer>/<n>`
//! (`evloop` runs evloop's rows of every table; the real-clock group is
//! `timers_fire_real`).

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use evloop::{Clock, EventLoop, ManualClock, TimerId};
use tokio_util::time::DelayQueue;

/// Timer counts. calloop runs only the first three.
const SIZES: [u32; 4] = [1_000, 10_000, 30_000, 1_000_000];
const CALLOOP_SIZES: [u32; 3] = [1_000, 10_000, 30_000];
/// Arm+cancel deadlines fall within this much of now.
const ARM_SPAN: Duration = Duration::from_secs(60);
/// The fire benchmarks' timers span this, in 1 ms steps.
const FIRE_MS: u32 = 1_000;
const STEP: Duration = Duration::from_millis(1);
/// Real-clock runs per case. The least wall and the least CPU time are
/// reported: a shared machine only ever adds to them.
const REAL_RUNS: usize = 5;

const PEERS: [&str; 4] = ["evloop", "DelayQueue", "calloop", "heap"];
/// evloop in its high-resolution mode: real-clock runs only, in a table of
/// its own.
const HIRES: &str = "evloop-hires";

// ---------------------------------------------------------------------------
// The BinaryHeap baseline
// ---------------------------------------------------------------------------

/// The textbook alternative to a wheel: a min-heap of `(deadline, seq, slot)`
/// and a slot table holding each live timer's value and the `seq` it was armed
/// with. Cancelling frees the slot and leaves the heap entry behind; an entry
/// whose `seq` no longer matches its slot is stale and skipped when it reaches
/// the top. The heap is compacted once stale entries outnumber live ones, so
/// memory stays bounded and cancelling stays amortised O(1). Ties pop in arm
/// order, as evloop's do.
mod heap {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::time::Instant;

    /// A live timer: its slot and the arm sequence number it must match.
    #[derive(Clone, Copy, Debug)]
    pub struct Id {
        slot: u32,
        seq: u64,
    }

    struct Slot<T> {
        seq: u64,
        value: Option<T>,
    }

    pub struct HeapTimers<T> {
        heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
        slots: Vec<Slot<T>>,
        free: Vec<u32>,
        next_seq: u64,
        live: usize,
    }

    impl<T> HeapTimers<T> {
        pub fn new() -> Self {
            HeapTimers {
                heap: BinaryHeap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                next_seq: 0,
                live: 0,
            }
        }

        pub fn insert(&mut self, deadline: Instant, value: T) -> Id {
            let seq = self.next_seq;
            self.next_seq += 1;
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Slot {
                        seq,
                        value: Some(value),
                    };
                    slot
                }
                None => {
                    self.slots.push(Slot {
                        seq,
                        value: Some(value),
                    });
                    (self.slots.len() - 1) as u32
                }
            };
            self.heap.push(Reverse((deadline, seq, slot)));
            self.live += 1;
            Id { slot, seq }
        }

        pub fn cancel(&mut self, id: Id) -> Option<T> {
            let value = self.release(id.slot, id.seq)?;
            if self.heap.len() > 2 * self.live + 64 {
                let slots = &self.slots;
                self.heap
                    .retain(|Reverse((_, seq, slot))| Self::is_live(slots, *slot, *seq));
            }
            Some(value)
        }

        /// Pops the next timer due by `now`, skipping stale entries.
        pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
            while let Some(&Reverse((deadline, seq, slot))) = self.heap.peek() {
                if deadline > now {
                    return None;
                }
                self.heap.pop();
                if let Some(value) = self.release(slot, seq) {
                    return Some(value);
                }
            }
            None
        }

        /// The earliest live deadline (drops stale entries found on top).
        pub fn next_deadline(&mut self) -> Option<Instant> {
            while let Some(&Reverse((deadline, seq, slot))) = self.heap.peek() {
                if Self::is_live(&self.slots, slot, seq) {
                    return Some(deadline);
                }
                self.heap.pop();
            }
            None
        }

        pub fn len(&self) -> usize {
            self.live
        }

        fn is_live(slots: &[Slot<T>], slot: u32, seq: u64) -> bool {
            let s = &slots[slot as usize];
            s.seq == seq && s.value.is_some()
        }

        fn release(&mut self, slot: u32, seq: u64) -> Option<T> {
            let s = self.slots.get_mut(slot as usize)?;
            if s.seq != seq {
                return None;
            }
            let value = s.value.take()?;
            self.free.push(slot);
            self.live -= 1;
            Some(value)
        }
    }
}

use heap::HeapTimers;

/// The heap's timer callback, boxed: the usual way to keep callbacks of
/// many types in one structure.
type HeapCallback = Box<dyn FnMut(&mut Tally)>;

/// The heap with a poller, for the loop-shaped runs.
struct HeapLoop {
    timers: HeapTimers<HeapCallback>,
    poll: mio::Poll,
    events: mio::Events,
}

impl HeapLoop {
    fn new() -> HeapLoop {
        HeapLoop {
            timers: HeapTimers::new(),
            poll: mio::Poll::new().unwrap(),
            events: mio::Events::with_capacity(16),
        }
    }
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

/// What the timers report to: how many fired and the sum of their numbers,
/// so a run can check that each fired exactly once.
#[derive(Default)]
struct Tally {
    count: u32,
    sum: u64,
    /// Fired count at which to stop a real-clock evloop run.
    stop_at: u32,
}

impl Tally {
    fn take(&mut self, i: u32) {
        self.count += 1;
        self.sum += u64::from(i);
    }

    fn check(&self, n: u32) {
        assert_eq!(self.count, n, "timers fired");
        assert_eq!(self.sum, u64::from(n) * u64::from(n - 1) / 2, "timer sum");
    }
}

/// splitmix64: a fixed, dependency-free stream of random deadlines.
fn random_offsets(n: u32, span: Duration) -> Vec<Duration> {
    let mut state = 0x5EED_u64;
    let span_ns = span.as_nanos() as u64;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            Duration::from_nanos((z ^ (z >> 31)) % span_ns)
        })
        .collect()
}

/// libuv's layout: timer `i` is due at `1 + i * 1000 / n` ms, so the deadlines
/// run from 1 ms to 1000 ms in arm order, `n / 1000` to a millisecond.
fn libuv_offsets(n: u32) -> Vec<Duration> {
    (0..n)
        .map(|i| Duration::from_millis(1 + u64::from(i) * u64::from(FIRE_MS) / u64::from(n)))
        .collect()
}

fn manual_loop() -> (EventLoop<Tally>, ManualClock) {
    let clock = ManualClock::new();
    let el = EventLoop::builder()
        .clock(Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    (el, clock)
}

/// A current-thread runtime with its I/O driver, as a tokio application has
/// it (and as evloop has its poller): each runtime turn polls for I/O too.
fn current_thread(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// Everything `poll_expired` has ready now, without waiting for more.
async fn drain_ready(dq: &mut DelayQueue<u32>, tally: &mut Tally) {
    poll_fn(|cx| loop {
        match dq.poll_expired(cx) {
            Poll::Ready(Some(expired)) => tally.take(expired.into_inner()),
            Poll::Ready(None) | Poll::Pending => return Poll::Ready(()),
        }
    })
    .await
}

// ---- arm + cancel ----

fn evloop_arm_cancel(el: &mut EventLoop<Tally>, offsets: &[Duration], ids: &mut Vec<TimerId>) {
    for (i, &off) in offsets.iter().enumerate() {
        let i = i as u32;
        ids.push(el.timer_after(off, move |_, _, t: &mut Tally| t.take(i)));
    }
    for id in ids.drain(..) {
        assert!(el.cancel_timer(id));
    }
}

fn delay_queue_arm_cancel(
    dq: &mut DelayQueue<u32>,
    offsets: &[Duration],
    keys: &mut Vec<tokio_util::time::delay_queue::Key>,
) {
    let base = tokio::time::Instant::now();
    for (i, &off) in offsets.iter().enumerate() {
        keys.push(dq.insert_at(i as u32, base + off));
    }
    for key in keys.drain(..) {
        dq.remove(&key);
    }
}

fn calloop_arm_cancel(
    ev: &calloop::EventLoop<'static, Tally>,
    offsets: &[Duration],
    tokens: &mut Vec<calloop::RegistrationToken>,
) {
    use calloop::timer::{TimeoutAction, Timer};
    let handle = ev.handle();
    let base = Instant::now();
    for (i, &off) in offsets.iter().enumerate() {
        let i = i as u32;
        let token = handle
            .insert_source(Timer::from_deadline(base + off), move |_, _, t: &mut Tally| {
                t.take(i);
                TimeoutAction::Drop
            })
            .unwrap();
        tokens.push(token);
    }
    for token in tokens.drain(..) {
        handle.remove(token);
    }
}

fn heap_arm_cancel(h: &mut HeapTimers<HeapCallback>, offsets: &[Duration], ids: &mut Vec<heap::Id>) {
    let base = Instant::now();
    for (i, &off) in offsets.iter().enumerate() {
        let i = i as u32;
        ids.push(h.insert(base + off, Box::new(move |t: &mut Tally| t.take(i))));
    }
    for id in ids.drain(..) {
        assert!(h.cancel(id).is_some());
    }
}

// ---- fire, manual clock ----

fn evloop_fire_manual(el: &mut EventLoop<Tally>, clock: &ManualClock, offsets: &[Duration]) {
    let mut tally = Tally::default();
    for (i, &off) in offsets.iter().enumerate() {
        let i = i as u32;
        el.timer_after(off, move |_, _, t: &mut Tally| t.take(i));
    }
    for _ in 0..FIRE_MS {
        clock.advance(STEP);
        el.turn(&mut tally, Some(Duration::ZERO)).unwrap();
    }
    tally.check(offsets.len() as u32);
}

/// Runs inside a paused runtime: tokio's clock only moves with `advance`.
async fn delay_queue_fire_manual(dq: &mut DelayQueue<u32>, offsets: &[Duration]) {
    let mut tally = Tally::default();
    let base = tokio::time::Instant::now();
    for (i, &off) in offsets.iter().enumerate() {
        dq.insert_at(i as u32, base + off);
    }
    for _ in 0..FIRE_MS {
        tokio::time::advance(STEP).await;
        let now = tokio::time::Instant::now();
        // The queue hands out a few hundred items per wake-up of its tokio
        // `Sleep` and then waits for the runtime's timer to fire that again:
        // let the runtime turn until nothing due is left.
        loop {
            drain_ready(dq, &mut tally).await;
            match dq.peek() {
                Some(key) if dq.deadline(&key) <= now => tokio::task::yield_now().await,
                _ => break,
            }
        }
    }
    tally.check(offsets.len() as u32);
}

/// The heap in a minimal loop: per step, fire what is due and make the
/// zero-timeout `epoll_wait` that every turn of a loop makes (evloop's and
/// tokio's too), so the three compare as loops, not the heap as a bare
/// structure.
fn heap_fire_manual(h: &mut HeapLoop, now: &mut Instant, offsets: &[Duration]) {
    let mut tally = Tally::default();
    let HeapLoop {
        timers: h,
        poll,
        events,
    } = h;
    let base = *now;
    for (i, &off) in offsets.iter().enumerate() {
        let i = i as u32;
        h.insert(base + off, Box::new(move |t: &mut Tally| t.take(i)));
    }
    for _ in 0..FIRE_MS {
        *now += STEP;
        while let Some(mut f) = h.pop_expired(*now) {
            f(&mut tally);
        }
        poll.poll(events, Some(Duration::ZERO)).unwrap();
    }
    tally.check(offsets.len() as u32);
}

// ---- fire, real clock: each returns (wall, loop thread CPU) ----

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `run` by the wall clock and by this thread's CPU clock.
fn timed(run: impl FnOnce()) -> (Duration, Duration) {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    run();
    (wall.elapsed(), thread_cpu() - cpu)
}

/// `hires`: the loop's high-resolution mode (a timerfd sets the wake-ups
/// to the nanosecond instead of the poll's whole milliseconds).
fn evloop_fire_real(offsets: &[Duration], hires: bool) -> (Duration, Duration) {
    let n = offsets.len() as u32;
    let mut el: EventLoop<Tally> = EventLoop::builder()
        .high_resolution_timers(hires)
        .build()
        .unwrap();
    let mut tally = Tally {
        stop_at: n,
        ..Tally::default()
    };
    let times = timed(|| {
        for (i, &off) in offsets.iter().enumerate() {
            let i = i as u32;
            el.timer_after(off, move |_, ctx, t: &mut Tally| {
                t.take(i);
                if t.count == t.stop_at {
                    ctx.stop();
                }
            });
        }
        el.run(&mut tally).unwrap();
    });
    tally.check(n);
    times
}

fn delay_queue_fire_real(offsets: &[Duration]) -> (Duration, Duration) {
    let n = offsets.len() as u32;
    let rt = current_thread(false);
    let mut tally = Tally::default();
    let times = timed(|| {
        rt.block_on(async {
            let mut dq = DelayQueue::new();
            let base = tokio::time::Instant::now();
            for (i, &off) in offsets.iter().enumerate() {
                dq.insert_at(i as u32, base + off);
            }
            while let Some(expired) = poll_fn(|cx| dq.poll_expired(cx)).await {
                tally.take(expired.into_inner());
            }
        })
    });
    tally.check(n);
    times
}

fn calloop_fire_real(offsets: &[Duration]) -> (Duration, Duration) {
    use calloop::timer::{TimeoutAction, Timer};
    let n = offsets.len() as u32;
    let mut ev = calloop::EventLoop::<Tally>::try_new().unwrap();
    let mut tally = Tally::default();
    let times = timed(|| {
        let handle = ev.handle();
        let base = Instant::now();
        for (i, &off) in offsets.iter().enumerate() {
            let i = i as u32;
            handle
                .insert_source(Timer::from_deadline(base + off), move |_, _, t: &mut Tally| {
                    t.take(i);
                    TimeoutAction::Drop
                })
                .unwrap();
        }
        while tally.count < n {
            ev.dispatch(None, &mut tally).unwrap();
        }
    });
    tally.check(n);
    times
}

/// The heap driven by a minimal mio loop: sleep in `epoll_wait` until the
/// next deadline, then fire what is due.
fn heap_fire_real(offsets: &[Duration]) -> (Duration, Duration) {
    let n = offsets.len() as u32;
    let HeapLoop {
        timers: mut h,
        mut poll,
        mut events,
    } = HeapLoop::new();
    let mut tally = Tally::default();
    let times = timed(|| {
        let base = Instant::now();
        for (i, &off) in offsets.iter().enumerate() {
            let i = i as u32;
            h.insert(base + off, Box::new(move |t: &mut Tally| t.take(i)));
        }
        while h.len() > 0 {
            let now = Instant::now();
            while let Some(mut f) = h.pop_expired(now) {
                f(&mut tally);
            }
            if let Some(next) = h.next_deadline() {
                let wait = next.saturating_duration_since(Instant::now());
                poll.poll(&mut events, Some(wait)).unwrap();
            }
        }
    });
    tally.check(n);
    times
}

// ---------------------------------------------------------------------------
// Measurement and report
// ---------------------------------------------------------------------------

/// A measured case: (benchmark group, peer, N).
type Case = (&'static str, &'static str, u32);

const ARM_CANCEL: &str = "timers_arm_cancel";
const FIRE_MANUAL: &str = "timers_fire_manual";

/// Rounds of the interleaved re-run the tables come from.
const ROUNDS: usize = 7;
/// One timing in that re-run lasts at least this long (small cases repeat).
const MIN_TIMING: Duration = Duration::from_millis(20);

/// One case and what runs a batch of it: N operations, checked.
struct Runner {
    case: Case,
    batch: Box<dyn FnMut()>,
    /// Least ns per operation over the interleaved rounds.
    best: Option<f64>,
}

impl Runner {
    fn new(case: Case, batch: impl FnMut() + 'static) -> Runner {
        Runner {
            case,
            batch: Box::new(batch),
            best: None,
        }
    }
}

fn sizes_for(peer: &str) -> &'static [u32] {
    if peer == "calloop" {
        &CALLOOP_SIZES
    } else {
        &SIZES
    }
}

/// Every criterion case, each owning its structure (kept across batches, so
/// tables are grown: the steady state).
fn runners() -> Vec<Runner> {
    let mut all = Vec::new();
    // Arming may (re)arm a DelayQueue's tokio `Sleep`, which needs a runtime.
    let rt = Rc::new(current_thread(false));
    for peer in PEERS {
        for &n in sizes_for(peer) {
            let offsets = random_offsets(n, ARM_SPAN);
            let case = (ARM_CANCEL, peer, n);
            all.push(match peer {
                "evloop" => {
                    let (mut el, _clock) = manual_loop();
                    let mut ids = Vec::with_capacity(n as usize);
                    Runner::new(case, move || evloop_arm_cancel(&mut el, &offsets, &mut ids))
                }
                "DelayQueue" => {
                    let rt = rt.clone();
                    let mut dq = DelayQueue::new();
                    let mut keys = Vec::with_capacity(n as usize);
                    Runner::new(case, move || {
                        let _in_runtime = rt.enter();
                        delay_queue_arm_cancel(&mut dq, &offsets, &mut keys)
                    })
                }
                "calloop" => {
                    let ev = calloop::EventLoop::<Tally>::try_new().unwrap();
                    let mut tokens = Vec::with_capacity(n as usize);
                    Runner::new(case, move || calloop_arm_cancel(&ev, &offsets, &mut tokens))
                }
                _ => {
                    let mut h = HeapTimers::new();
                    let mut ids = Vec::with_capacity(n as usize);
                    Runner::new(case, move || heap_arm_cancel(&mut h, &offsets, &mut ids))
                }
            });
        }
    }
    for &n in &SIZES {
        let offsets = Rc::new(libuv_offsets(n));

        let (mut el, clock) = manual_loop();
        let offs = offsets.clone();
        all.push(Runner::new((FIRE_MANUAL, "evloop", n), move || {
            evloop_fire_manual(&mut el, &clock, &offs)
        }));

        let rt = current_thread(true);
        // Made on the paused clock: the queue counts whole milliseconds from
        // its creation, and the steps must land on them.
        let mut dq = rt.block_on(async { DelayQueue::new() });
        let offs = offsets.clone();
        all.push(Runner::new((FIRE_MANUAL, "DelayQueue", n), move || {
            rt.block_on(delay_queue_fire_manual(&mut dq, &offs))
        }));

        let mut h = HeapLoop::new();
        let mut now = Instant::now();
        all.push(Runner::new((FIRE_MANUAL, "heap", n), move || {
            heap_fire_manual(&mut h, &mut now, &offsets)
        }));
    }
    all
}

/// Runs every case under criterion, a group per benchmark.
fn criterion_cases(c: &mut Criterion, runners: &mut [Runner]) {
    for name in [ARM_CANCEL, FIRE_MANUAL] {
        let mut group = c.benchmark_group(name);
        // A batch is up to a million timers (up to a second for calloop at
        // 30,000): ten samples of as few batches as fit.
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
        for r in runners.iter_mut().filter(|r| r.case.0 == name) {
            let batch = &mut r.batch;
            group.bench_function(BenchmarkId::new(r.case.1, r.case.2), |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        batch();
                    }
                    t.elapsed()
                })
            });
        }
        group.finish();
    }
}

/// Times every case again, round by round (each case once per round), and
/// keeps each case's least ns per operation. Criterion measures one case
/// after another, so on a shared machine a busy spell lands on whichever
/// peer runs then; interleaving spreads it over all of them, and the least
/// of the rounds is the case's cost with the least interference.
fn interleaved(runners: &mut [Runner]) {
    // Batches per timing, from one calibration batch each.
    let reps: Vec<u32> = runners
        .iter_mut()
        .map(|r| {
            let t = Instant::now();
            (r.batch)();
            let batches = MIN_TIMING.as_nanos() / t.elapsed().as_nanos().max(1);
            batches.clamp(1, 1_000_000) as u32
        })
        .collect();
    for _ in 0..ROUNDS {
        for (r, &k) in runners.iter_mut().zip(&reps) {
            let t = Instant::now();
            for _ in 0..k {
                (r.batch)();
            }
            let ns = t.elapsed().as_nanos() as f64 / (f64::from(k) * f64::from(r.case.2));
            r.best = Some(r.best.map_or(ns, |b| b.min(ns)));
        }
    }
}

/// One real-clock case: the least wall and CPU time of `REAL_RUNS` runs.
struct RealRow {
    peer: &'static str,
    n: u32,
    wall: Duration,
    cpu: Duration,
}

impl RealRow {
    /// Wall time past the 1 s the deadlines span, per timer.
    fn beyond_ns(&self) -> f64 {
        let span = Duration::from_millis(u64::from(FIRE_MS));
        self.wall.saturating_sub(span).as_nanos() as f64 / f64::from(self.n)
    }

    fn cpu_ns(&self) -> f64 {
        self.cpu.as_nanos() as f64 / f64::from(self.n)
    }
}

/// Runs the real-clock cases whose name `wants`, in rounds (every case once
/// per round), so that a busy spell on the machine is shared out fairly.
fn run_real_clock(wants: impl Fn(&str) -> bool) -> Vec<RealRow> {
    let mut rows: Vec<RealRow> = PEERS
        .iter()
        .chain([&HIRES])
        .flat_map(|&peer| sizes_for(peer).iter().map(move |&n| (peer, n)))
        .filter(|(peer, n)| wants(&format!("timers_fire_real/{peer}/{n}")))
        .map(|(peer, n)| RealRow {
            peer,
            n,
            wall: Duration::MAX,
            cpu: Duration::MAX,
        })
        .collect();
    for _ in 0..REAL_RUNS {
        for row in &mut rows {
            let offsets = libuv_offsets(row.n);
            let (wall, cpu) = match row.peer {
                "evloop" => evloop_fire_real(&offsets, false),
                HIRES => evloop_fire_real(&offsets, true),
                "DelayQueue" => delay_queue_fire_real(&offsets),
                "calloop" => calloop_fire_real(&offsets),
                _ => heap_fire_real(&offsets),
            };
            row.wall = row.wall.min(wall);
            row.cpu = row.cpu.min(cpu);
        }
    }
    for row in &rows {
        println!(
            "timers_fire_real/{}/{}: wall {:.1} ms, cpu {:.1} ms",
            row.peer,
            row.n,
            row.wall.as_secs_f64() * 1e3,
            row.cpu.as_secs_f64() * 1e3
        );
    }
    rows
}

fn fmt_ns(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{v:.1}"))
}

fn fmt_ratio(peer: Option<f64>, ours: Option<f64>) -> String {
    match (peer, ours) {
        (Some(p), Some(o)) if o > 0.0 => format!("{:.2}×", p / o),
        _ => "—".to_string(),
    }
}

/// One markdown table: a row per N, ns/op per peer, then peer/evloop ratios.
fn print_table(title: &str, value: impl Fn(&'static str, u32) -> Option<f64>) {
    let rows: Vec<u32> = SIZES
        .iter()
        .copied()
        .filter(|&n| PEERS.iter().any(|p| value(p, n).is_some()))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n### {title}\n");
    let others = &PEERS[1..];
    let mut header = String::from("| N | evloop ns |");
    let mut rule = String::from("|---:|---:|");
    for p in others {
        header += &format!(" {p} ns |");
        rule += "---:|";
    }
    for p in others {
        header += &format!(" {p} / evloop |");
        rule += "---:|";
    }
    println!("{header}\n{rule}");
    for n in rows {
        let ours = value("evloop", n);
        let theirs: Vec<Option<f64>> = others.iter().map(|p| value(p, n)).collect();
        let mut row = format!("| {n} | {} |", fmt_ns(ours));
        for &t in &theirs {
            row += &format!(" {} |", fmt_ns(t));
        }
        for &t in &theirs {
            row += &format!(" {} |", fmt_ratio(t, ours));
        }
        println!("{row}");
    }
}

/// Criterion's options that take a value (the next argument is not a filter).
const VALUE_OPTIONS: [&str; 16] = [
    "--save-baseline",
    "-s",
    "--baseline",
    "-b",
    "--baseline-lenient",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--profile-time",
    "--output-format",
    "--color",
];

/// Criterion's name filter, if one was given: the first free argument.
fn name_filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if VALUE_OPTIONS.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

fn main() {
    let filter = name_filter();
    let wants = |name: &str| filter.as_deref().map_or(true, |f| name.contains(f));

    let mut runners = runners();
    let mut c = Criterion::default().configure_from_args();
    criterion_cases(&mut c, &mut runners);
    c.final_summary();

    // Criterion does not run the rest, so its filter is applied here, as a
    // plain substring of `<group>/<peer>/<n>`.
    runners.retain(|r| wants(&format!("{}/{}/{}", r.case.0, r.case.1, r.case.2)));
    interleaved(&mut runners);
    let real = run_real_clock(wants);

    println!("\n## Timer benchmarks (peer / evloop: above 1 means evloop is faster)");
    let best = |group: &str, p: &str, n: u32| {
        runners
            .iter()
            .find(|r| r.case == (group, p, n))
            .and_then(|r| r.best)
    };
    print_table("arm + cancel, ns per pair", |p, n| best(ARM_CANCEL, p, n));
    print_table(
        "1 s of timers in 1 ms steps, manual clock: ns per timer (arm + fire)",
        |p, n| best(FIRE_MANUAL, p, n),
    );
    if !real.is_empty() {
        let find = |p: &str, n: u32| real.iter().find(|r| r.peer == p && r.n == n);
        print_table("1 s of timers, real clock: loop CPU ns per timer", |p, n| {
            find(p, n).map(RealRow::cpu_ns)
        });
        print_table(
            "1 s of timers, real clock: wall ns per timer beyond 1 s",
            |p, n| find(p, n).map(RealRow::beyond_ns),
        );
        print_hires_table(&real);
    }
}

/// evloop's two modes beside calloop (whose poller always sleeps on a
/// timerfd): what the high-resolution mode buys in lateness and costs in CPU.
fn print_hires_table(real: &[RealRow]) {
    let find = |p: &str, n: u32| real.iter().find(|r| r.peer == p && r.n == n);
    let peers = ["evloop", HIRES, "calloop"];
    if !SIZES.iter().any(|&n| find(HIRES, n).is_some()) {
        return;
    }
    println!(
        "\n### Real clock, evloop's high-resolution mode: CPU ns per timer / wall ns per timer beyond 1 s\n"
    );
    println!("| N | evloop | evloop-hires | calloop |\n|---:|---:|---:|---:|");
    for n in SIZES {
        let mut row = format!("| {n} |");
        for p in peers {
            let cell = find(p, n).map(|r| format!("{:.1} / {:.1}", r.cpu_ns(), r.beyond_ns()));
            row += &format!(" {} |", cell.unwrap_or_else(|| "—".to_string()));
        }
        println!("{row}");
    }
}
