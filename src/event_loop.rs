//! [`EventLoop`]: the turn, `run`/`turn`/`stop`, and how it is built.
//!
//! One call of [`EventLoop::turn`] is one iteration, and reads as a list of
//! phases, each a short method below it:
//!
//! 1. clock, 2. timers, 3. deferred, 4. poll, 5. dispatch,
//! 6. after-poll hooks, 7. reclaim.

use std::any::Any;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::blocking::{self, Blocking};
use crate::clock::{Clock, TurnTime};
use crate::ctx::{Ctx, Slot, SlotState};
use crate::metrics::{Metrics, StallWatch};
use crate::remote::Link;
use crate::source::{Action, Attach, Event, Ready};
use crate::timer::hires::HiRes;
use crate::timer::{wheel, Fired, Repeat, Timers, RUNNING};
use crate::token::{SourceId, RESERVED_BASE, TIMERFD_TOKEN, WAKER_TOKEN};

/// Ready sources whose lines are loaded together ahead of their dispatch
/// (see `EventLoop::warm`).
const WARM_BATCH: usize = 8;
/// From this many registered sources on, their rows and entries no longer
/// stay in cache from one dispatch of a source to the next (256 connections'
/// ~180 bytes are more than the 32 KiB L1 data cache), and loading them
/// ahead pays for its calls. Measured in user time per message: no change
/// at 50 connections, -15 % at 1,000 and -30 % at 10,000.
const WARM_ABOVE: usize = 256;

/// What the loop does when a handler (or timer, deferred or check callback,
/// or the `Drop` of a source being released) panics. A panicking `Drop`
/// never keeps the other closed sources from being released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicPolicy {
    /// Let the panic unwind out of `turn`/`run` (the default). The source
    /// whose handler panicked is closed first, so the loop stays consistent.
    #[default]
    Propagate,
    /// Catch it, log it at `error`, close the source whose handler panicked
    /// (a panicking timer or deferred callback is dropped), and go on.
    CloseSource,
}

/// How the poll waits when nothing is ready (see [`Builder::poll_mode`]).
///
/// Blocking costs a wake-up when work arrives: the kernel has to schedule
/// the sleeping thread again, tens of microseconds on a busy or virtualised
/// machine. Spinning (polling with a zero timeout, again and again) finds
/// the work as soon as the kernel has it, for the price of a core.
/// Spinning for a while after work, then blocking, pays that price only
/// while traffic flows: a message that follows another within the budget
/// finds the loop awake, and an idle loop sleeps.
///
/// The mode governs the loop's own poll (`run`, and `turn` with a timeout
/// other than zero); a host loop that drives this one through its fd
/// decides its own waiting. Timers keep in every mode what they have under
/// `Block` (never early; late by at most the poll's rounding and whatever
/// callback runs when one comes due): a spinning loop runs its timer phase
/// every turn, so a timer fires in the first turn at or after its
/// deadline, and once a spin ends the poll sleeps no longer than until the
/// next deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PollMode {
    /// Sleep in the poll until something is ready, a timer is due or the
    /// caller's cap runs out (the default).
    #[default]
    Block,
    /// Never sleep in the poll: the lowest wake-up latency, and a core
    /// kept busy all the time, with traffic or without.
    Spin,
    /// After a turn that found work (a handler, timer or deferred callback
    /// ran), poll without sleeping for this long, counted from the next
    /// turn's poll, then block as [`Block`](PollMode::Block) does. Each
    /// turn that finds work starts the budget again, so under steady
    /// traffic the loop never sleeps, and once traffic stops it sleeps
    /// after one budget. The budget is measured on the turn's reading of
    /// the clock ([`Ctx::now`]), so spinning costs one clock read per turn;
    /// a zero budget is `Block`.
    SpinThenBlock(Duration),
}

/// What one turn did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// Handlers dispatched.
    pub dispatched: usize,
    /// Timer callbacks run.
    pub timers_fired: usize,
    /// Deferred callbacks run.
    pub deferred_run: usize,
}

impl Turn {
    /// True when the turn ran nothing at all.
    pub fn is_idle(&self) -> bool {
        *self == Turn::default()
    }
}

/// Builds an [`EventLoop`] with non-default settings.
#[derive(Clone, Debug)]
pub struct Builder {
    clock: Clock,
    panic_policy: PanicPolicy,
    events_capacity: usize,
    poll_mode: PollMode,
    latency_histograms: bool,
    high_resolution: bool,
    stall_threshold: Option<Duration>,
    blocking: blocking::Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            clock: Clock::System,
            panic_policy: PanicPolicy::Propagate,
            events_capacity: 1024,
            poll_mode: PollMode::Block,
            latency_histograms: false,
            high_resolution: false,
            stall_threshold: None,
            blocking: blocking::Config::default(),
        }
    }
}

impl Builder {
    /// Use this clock (e.g. a [`ManualClock`](crate::ManualClock) in tests).
    pub fn clock(mut self, clock: Clock) -> Builder {
        self.clock = clock;
        self
    }

    /// What to do when a callback panics.
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Builder {
        self.panic_policy = policy;
        self
    }

    /// How many kernel events one poll may return (default 1024, at least 1).
    pub fn events_capacity(mut self, n: usize) -> Builder {
        self.events_capacity = n.max(1);
        self
    }

    /// How the poll waits when nothing is ready: block (the default), spin,
    /// or spin for a while after work and then block. See [`PollMode`].
    pub fn poll_mode(mut self, mode: PollMode) -> Builder {
        self.poll_mode = mode;
        self
    }

    /// Never sleep in the poll: trade a core for the lowest wake-up latency.
    /// Shorthand for [`poll_mode`](Self::poll_mode): `true` is
    /// [`PollMode::Spin`], `false` [`PollMode::Block`]. Consider
    /// [`PollMode::SpinThenBlock`], which gives the core back when idle.
    pub fn busy_poll(mut self, on: bool) -> Builder {
        self.poll_mode = if on { PollMode::Spin } else { PollMode::Block };
        self
    }

    /// Keep [`Metrics::dispatch_latency`] and [`Metrics::turn_length`]
    /// (default off). Costs two clock reads per turn and one per dispatch,
    /// beyond those the loop makes anyway (the clock is the loop's: a
    /// [`ManualClock`](crate::ManualClock) in tests); off, a test of this
    /// flag per turn and per dispatch.
    pub fn latency_histograms(mut self, on: bool) -> Builder {
        self.latency_histograms = on;
        self
    }

    /// Wake for timers through a timerfd with nanosecond resolution instead
    /// of epoll's millisecond timeout (costs a `timerfd_settime` whenever the
    /// next deadline changes). Ignored with a manual clock.
    pub fn high_resolution_timers(mut self, on: bool) -> Builder {
        self.high_resolution = on;
        self
    }

    /// Warn (through `log`) about any callback that runs longer than this.
    pub fn stall_threshold(mut self, limit: Duration) -> Builder {
        self.stall_threshold = Some(limit);
        self
    }

    /// At most this many worker threads run
    /// [`spawn_blocking`](Ctx::spawn_blocking) jobs (default 4, at least 1).
    /// They start only as jobs need them.
    pub fn blocking_threads(mut self, n: usize) -> Builder {
        self.blocking.threads = n.max(1);
        self
    }

    /// At most this many [`spawn_blocking`](Ctx::spawn_blocking) jobs may
    /// wait for a free worker (default 1024, at least 1); one more is
    /// refused with [`WouldBlock`](io::ErrorKind::WouldBlock). Bounded so a
    /// burst the workers cannot keep up with is an error the caller sees,
    /// not memory that grows without end.
    pub fn blocking_queue(mut self, n: usize) -> Builder {
        self.blocking.queue = n.max(1);
        self
    }

    /// Build the loop. Fails only if the OS refuses an epoll fd or eventfd.
    pub fn build<S>(self) -> io::Result<EventLoop<S>> {
        let poll = mio::Poll::new()?;
        let link = Link::new(poll.registry())?;
        let hires = if self.high_resolution && !self.clock.is_manual() {
            Some(HiRes::new(poll.registry())?)
        } else {
            None
        };
        let time = TurnTime::new(self.clock);
        Ok(EventLoop {
            ctx: Ctx {
                poll,
                link,
                sources: Slab::new(),
                generations: Vec::new(),
                retired: 0,
                closing: Vec::new(),
                scheduled: Vec::new(),
                deferred: Default::default(),
                timers: Timers::new(time.origin(), hires.is_some()),
                checks: Vec::new(),
                time,
                stop: false,
                stop_before_turn: false,
                turn_no: 0,
                scratch: None,
                out_buf: Vec::new(),
                remote: None,
                metrics: Metrics::default(),
                caught_panic: None,
                blocking: Blocking::new(self.blocking),
                local_wakes: None,
                tasks: None,
            },
            events: mio::Events::with_capacity(self.events_capacity),
            ready: ReadyList::default(),
            notified: Vec::new(),
            scheduled: Vec::new(),
            expired: Vec::new(),
            panic_policy: self.panic_policy,
            spin: Spin::new(self.poll_mode),
            marks: self.latency_histograms.then(Marks::default),
            hires,
            stall: StallWatch::new(self.stall_threshold),
            warned_manual: false,
        })
    }
}

/// A caught panic's payload.
type Panic = Box<dyn Any + Send>;

/// The message a panic was raised with (`panic!("...")`'s text).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// A source queued for this turn's dispatch phase.
#[derive(Clone, Copy)]
struct Pending {
    /// Sort key: priority in the high half, place in the list below, so one
    /// integer sort orders by priority and keeps readiness order inside it.
    order: u64,
    index: u32,
    ready: Ready,
}

/// Add a source to this turn's dispatch list (at the end: the order in which
/// sources are queued is the order they became ready), merging duplicates.
fn queue<S>(sources: &mut Slab<Slot<S>>, ready: &mut ReadyList, id: SourceId, r: Ready) {
    let Some(slot) = sources.get_mut(id.index()) else {
        return;
    };
    if slot.seq != id.generation() || slot.state != SlotState::Active {
        return; // stale token, or closed/paused since
    }
    let pos = slot.queued_pos as usize;
    if let Some(queued) = ready.list.get_mut(pos).filter(|p| p.index == id.index) {
        // Already in this turn's list: each slot has at most one entry in
        // it, placed by this function, which noted the place in the slot.
        queued.ready |= r;
        return;
    }
    slot.queued_pos = ready.list.len() as u32;
    let priority = slot.priority as u64;
    if ready.list.first().is_some_and(|p| p.order >> 32 != priority) {
        ready.mixed = true;
    }
    ready.list.push(Pending {
        order: (priority << 32) | ready.list.len() as u64,
        index: id.index,
        ready: r,
    });
}

/// An event on one of the loop's own fds: the cross-thread waker or the
/// high-resolution timerfd.
#[inline(never)]
fn loop_event<S>(
    ctx: &mut Ctx<S>,
    ready: &mut ReadyList,
    notified: &mut Vec<SourceId>,
    hires: Option<&mut HiRes>,
    token: mio::Token,
) {
    if token == WAKER_TOKEN {
        // Notified sources take the place where the first of their
        // notifications woke the loop, in the order they were sent.
        if ctx.link.drain(notified) {
            hot_trace!("evloop: stop requested by a remote");
            ctx.stop = true;
        }
        for &id in notified.iter() {
            queue(&mut ctx.sources, ready, id, Ready::READABLE);
        }
        notified.clear();
    } else if token == TIMERFD_TOKEN {
        if let Some(h) = hires {
            h.fired();
        }
    }
}

/// This turn's dispatch list, and whether it holds more than one priority
/// (only then does it need sorting: kept as it is filled, so no extra pass).
#[derive(Default)]
struct ReadyList {
    list: Vec<Pending>,
    mixed: bool,
}

/// The poll mode, and the spin's state under `SpinThenBlock`.
#[derive(Clone, Copy, Debug)]
struct Spin {
    mode: PollMode,
    /// `SpinThenBlock`'s budget in nanoseconds.
    budget_ns: u64,
    /// The last turn found work: the next spin decision starts the budget.
    worked: bool,
    /// The clock's time (loop nanoseconds) at which the spin ends.
    until_ns: u64,
}

impl Spin {
    fn new(mode: PollMode) -> Spin {
        let budget = match mode {
            PollMode::SpinThenBlock(b) => b,
            _ => Duration::ZERO,
        };
        Spin {
            mode,
            budget_ns: u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX),
            worked: false,
            until_ns: 0,
        }
    }
}

/// Clock readings (loop nanoseconds) of one turn, for the latency
/// histograms: its start, and the poll's call and return.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    start: u64,
    poll_in: u64,
    poll_out: u64,
}

/// A single-threaded event loop over application state `S`.
///
/// Everything a handler can do through its [`Ctx`] the owner can do between
/// turns, because `EventLoop` dereferences to its `Ctx`.
pub struct EventLoop<S> {
    ctx: Ctx<S>,
    /// The last poll's events, kept until the next poll: if they fill the
    /// buffer, the kernel may hold more (see `next_deadline`).
    events: mio::Events,
    /// This turn's dispatch list, reused across turns (no allocation per event).
    ready: ReadyList,
    notified: Vec<SourceId>,
    scheduled: Vec<(SourceId, Ready)>,
    expired: Vec<wheel::Key>,
    panic_policy: PanicPolicy,
    spin: Spin,
    /// This turn's clock readings, when latency histograms are kept.
    marks: Option<Marks>,
    hires: Option<HiRes>,
    stall: StallWatch,
    /// A poll has slept without bound while a timer waited on a manual
    /// clock (said once: see [`warn_manual_sleep`](Self::warn_manual_sleep)).
    warned_manual: bool,
}

impl EventLoop<()> {
    /// Start building a loop with other settings; the state type is chosen
    /// by [`Builder::build`], so `EventLoop::builder()` works for any `S`.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<S> EventLoop<S> {
    /// A loop with the default settings (system clock, panics propagate).
    pub fn new() -> io::Result<EventLoop<S>> {
        Builder::default().build()
    }

    /// Run turns until [`Ctx::stop`] (or [`Remote::stop`](crate::Remote::stop))
    /// is called, then clear the stop request and return.
    ///
    /// A stop ends every [task](crate::task): their futures are dropped,
    /// the connections and listeners they owned are closed, and one more
    /// turn that does not wait lets those connections send what the kernel
    /// takes now (what it does not take is dropped with the loop, and the
    /// connection reset, so its peer sees an error rather than a clean
    /// end). Sources registered with callbacks stay, so `run` may be called
    /// again.
    pub fn run(&mut self, state: &mut S) -> io::Result<()> {
        loop {
            if std::mem::take(&mut self.ctx.stop) {
                // Asked in the last turn, or before the first one.
                self.ctx.stop_before_turn = false;
                return self.end_tasks(state);
            }
            self.turn(state, None)?;
        }
    }

    /// Run exactly one turn. The poll sleeps at most `timeout` (`None`: as
    /// long as nothing is due), and not at all when deferred callbacks or
    /// rescheduled sources are waiting.
    ///
    /// A stop request ([`Ctx::stop`], [`Remote::stop`](crate::Remote::stop))
    /// shows in [`Ctx::is_stopping`] after the turn it was made in, or, if
    /// it was made between turns, after the next turn (which then does not
    /// sleep in its poll); the turn after that clears it. A caller driving
    /// the loop with `turn` decides itself what stopping means.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::EventLoop;
    ///
    /// let mut el = EventLoop::<Vec<&str>>::new()?;
    /// el.defer(|ctx, log| {
    ///     log.push("deferred");
    ///     ctx.timer_after(Duration::ZERO, |_, _, log| log.push("timer"));
    /// });
    /// let mut log = Vec::new();
    /// // Work is waiting, so the poll does not sleep, whatever the cap.
    /// let done = el.turn(&mut log, None)?;
    /// assert_eq!((done.deferred_run, done.timers_fired), (1, 0));
    /// // The timer armed in the deferred phase fires in the next turn.
    /// let done = el.turn(&mut log, Some(Duration::from_millis(10)))?;
    /// assert_eq!(done.timers_fired, 1);
    /// assert_eq!(log, ["deferred", "timer"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn turn(&mut self, state: &mut S, timeout: Option<Duration>) -> io::Result<Turn> {
        if self.ctx.stop_before_turn {
            self.ctx.stop_before_turn = false;
        } else {
            self.ctx.stop = false;
        }
        self.ctx.turn_no += 1;
        self.read_clock(); //                               1. clock
        let timers_fired = self.run_timers(state); //       2. timers
        let deferred_run = self.run_deferred(state); //     3. deferred
        self.poll(timeout)?; //                             4. poll
        let dispatched = self.dispatch(state); //           5. dispatch
        let done = Turn {
            dispatched,
            timers_fired,
            deferred_run,
        };
        self.after_poll(state, done); //                    6. checks, metrics
        self.reclaim(); //                                  7. reclaim
        self.end_turn();
        Ok(done)
    }

    /// Phase 1: start the turn's time afresh. The clock is read when the
    /// turn first asks for `now()`: at once when timers are armed (the timer
    /// phase needs it), else by whichever callback wants it first. A turn in
    /// which nothing asks (a plain echo) pays no clock read.
    fn read_clock(&mut self) {
        self.ctx.time.begin_turn();
        if let Some(marks) = &mut self.marks {
            marks.start = self.ctx.time.read_ns();
        }
        hot_trace!("evloop: turn {} phase clock", self.ctx.turn_no);
    }

    /// Phase 2: fire every timer due by `now`, by deadline then arm order.
    /// The batch is fixed first, so a timer armed here for "now" waits for
    /// the next turn, and one cancelled here by an earlier callback is skipped.
    fn run_timers(&mut self, state: &mut S) -> usize {
        if self.ctx.timers.len() == 0 {
            // Nothing armed: leave the wheel's clock where it is and read no
            // clock; the next arm catches the wheel up (`Timers::catch_up`).
            hot_trace!("evloop: phase timers (0 due)");
            return 0;
        }
        self.fire_due(state)
    }

    // Out of line, as are the other phases' work when they have some: a
    // turn that has none runs a few tests in a row, on few cache lines.
    #[inline(never)]
    fn fire_due(&mut self, state: &mut S) -> usize {
        let now_ns = self.ctx.now_ns();
        self.ctx.timers.wheel.collect_expired(now_ns, &mut self.expired);
        hot_trace!("evloop: phase timers ({} due)", self.expired.len());
        let mut fired = 0;
        let mut i = 0;
        // Callbacks reach the `Ctx`, never `self.expired`: the batch stays
        // put while it runs.
        while let Some(&key) = self.expired.get(i) {
            i += 1;
            match self.fire_timer(key, now_ns, state) {
                Ok(ran) => fired += ran as usize,
                Err((id, payload)) => {
                    fired += 1;
                    if self.panic_policy == PanicPolicy::Propagate {
                        // The panic unwinds out of `turn`. The rest of the
                        // batch is already out of the wheel's queue: re-arm
                        // it for its deadline (in order, so ties keep their
                        // order), or those timers would never fire.
                        for &rest in &self.expired[i..] {
                            if let Some(deadline) = self.ctx.timers.wheel.deadline(rest) {
                                self.ctx.timers.wheel.reset(rest, deadline);
                            }
                        }
                        self.expired.clear();
                    }
                    self.panicked(payload, format_args!("timer {id:?}"));
                }
            }
        }
        self.expired.clear();
        if fired > 0 {
            // The callbacks took time: what follows reads the clock again.
            self.ctx.time.expire();
        }
        fired
    }

    /// Fire one expired timer. `Ok(false)` when it was cancelled meanwhile;
    /// `Err` when its callback panicked (the timer is then removed).
    fn fire_timer(
        &mut self,
        key: wheel::Key,
        now_ns: u64,
        state: &mut S,
    ) -> Result<bool, (crate::TimerId, Panic)> {
        let timers = &mut self.ctx.timers;
        let Some((deadline_ns, entry)) = timers.wheel.collected_mut(key) else {
            // Cancelled, or reset to a new deadline, by an earlier callback
            // in this phase: it no longer belongs to this batch.
            return Ok(false);
        };
        let (kind, slot) = (u32::from(entry.kind), entry.slot);
        let repeat = entry.repeat(&timers.periods, key);
        let missed = match repeat {
            Repeat::Rate(p) => (now_ns - deadline_ns.min(now_ns)) / p,
            Repeat::Once | Repeat::Delay(_) => 0,
        };
        if let Repeat::Once = repeat {
            timers.wheel.take(key);
        } else {
            // Its callback is out of the slab while it runs.
            entry.slot = RUNNING;
        }
        let call = timers.callbacks.call(kind);
        let id = crate::TimerId(key);
        let fired = Fired::new(id, deadline_ns, missed, timers.origin());
        hot_trace!("evloop: fire {id:?} (missed {missed})");
        let t0 = self.stall.start();
        let result = self.guard(|ctx, state| call(ctx, state, kind, slot, fired), state);
        if self
            .stall
            .finish(t0, &mut self.ctx.metrics, format_args!("timer {id:?}"))
        {
            self.ctx.time.expire();
        }
        if let Err(payload) = result {
            self.ctx.timers.cancel(id);
            return Err((id, payload));
        }
        if let Repeat::Once = repeat {
            return Ok(true);
        }
        if let Some(entry) = self.ctx.timers.wheel.get_mut(key) {
            // Still armed (periodic, not cancelled from inside; the call put
            // the callback back): re-arm, unless the callback moved its own
            // deadline.
            if std::mem::take(&mut entry.reset_inside) {
                return Ok(true);
            }
            let next = match repeat {
                Repeat::Rate(p) => (missed.checked_add(1))
                    .and_then(|n| p.checked_mul(n))
                    .and_then(|d| deadline_ns.checked_add(d)),
                Repeat::Delay(p) => now_ns.checked_add(p),
                Repeat::Once => return Ok(true),
            };
            match next {
                Some(next) => {
                    self.ctx.timers.wheel.reset(key, next);
                }
                None => self.retire_timer(id),
            }
        }
        Ok(true)
    }

    /// A periodic timer's next tick lies past the end of the clock's range
    /// (584 years from the loop's start: a manual clock jumped there). It
    /// can never come; kept at the range's end instead, the timer would be
    /// due again in every turn once the clock got there.
    #[cold]
    #[inline(never)]
    fn retire_timer(&mut self, id: crate::TimerId) {
        log::debug!("evloop: {id:?}'s next tick is past the end of the clock's range; dropped");
        self.ctx.timers.cancel(id);
    }

    /// Phase 3: run the callbacks deferred before this phase began, FIFO.
    fn run_deferred(&mut self, state: &mut S) -> usize {
        let n = self.ctx.deferred.len();
        hot_trace!("evloop: phase deferred ({n} queued)");
        if n > 0 {
            self.run_queued(n, state);
            self.ctx.time.expire();
        }
        n
    }

    #[inline(never)]
    fn run_queued(&mut self, n: usize, state: &mut S) {
        for _ in 0..n {
            let Some(f) = self.ctx.deferred.pop_front() else {
                break;
            };
            let t0 = self.stall.start();
            let result = self.guard(|ctx, state| f(ctx, state), state);
            if self
                .stall
                .finish(t0, &mut self.ctx.metrics, format_args!("deferred callback"))
            {
                self.ctx.time.expire();
            }
            if let Err(payload) = result {
                self.panicked(payload, format_args!("deferred callback"));
            }
        }
    }

    /// Phase 4: block in the kernel until something is ready, the next timer
    /// is due, or `cap` runs out; not at all if work is already waiting.
    fn poll(&mut self, cap: Option<Duration>) -> io::Result<()> {
        let timeout = self.poll_timeout(cap);
        if self.hires.is_some() {
            self.arm_timerfd()?;
        }
        hot_trace!("evloop: phase poll (timeout {timeout:?})");
        if let Some(marks) = &mut self.marks {
            marks.poll_in = self.ctx.time.read_ns();
        }
        let polled = self.ctx.poll.poll(&mut self.events, timeout);
        if let Some(marks) = &mut self.marks {
            marks.poll_out = self.ctx.time.read_ns();
        }
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                self.ctx.time.end_turn();
                return Err(e);
            }
            hot_trace!("evloop: poll interrupted by a signal");
            self.events.clear();
        }
        let slept = timeout != Some(Duration::ZERO);
        if slept {
            self.ctx.metrics.sleeping_polls += 1;
            // Handlers must not arm timers from a time read before the sleep.
            self.ctx.time.expire();
        }
        Ok(())
    }

    #[inline(never)]
    fn arm_timerfd(&mut self) -> io::Result<()> {
        match self.hires.as_mut() {
            Some(h) => h.arm(self.ctx.timers.next_deadline()),
            None => Ok(()),
        }
    }

    fn poll_timeout(&mut self, cap: Option<Duration>) -> Option<Duration> {
        let c = &self.ctx;
        let zero = Some(Duration::ZERO);
        // A zero cap (an embedder's non-blocking turn) settles it at once.
        if cap == zero || c.stop || !c.deferred.is_empty() || !c.scheduled.is_empty() {
            return zero;
        }
        // Sources closed between turns (a task cancelled by `block_on`'s
        // future, an embedder's `close`) are dropped at this turn's end, and
        // a drop may wake a task: do not sleep before it (as `next_deadline`).
        if !c.closing.is_empty() {
            return zero;
        }
        if c.local_wakes.as_ref().is_some_and(|w| w.is_pending()) {
            return zero;
        }
        if self.spinning() {
            return zero;
        }
        let c = &self.ctx;
        // An empty wheel answers `None` without a call; a timerfd wakes us
        // itself, armed for the absolute deadline.
        let timer = match c.timers.next_deadline_ns() {
            Some(next) if self.hires.is_none() => self.until(next),
            _ => None,
        };
        match (timer, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (None, None)
                if c.time.is_manual() && !self.warned_manual && c.timers.next_deadline_ns().is_some() =>
            {
                self.warn_manual_sleep();
                None
            }
            (t, c) => t.or(c),
        }
    }

    /// A timer waits on a manual clock and nothing bounds the poll (`run`,
    /// `block_on`): unless an event comes, the loop sleeps for good, as
    /// advancing the clock wakes no poll. Said once, for whoever wonders
    /// why a test hangs.
    #[cold]
    fn warn_manual_sleep(&mut self) {
        self.warned_manual = true;
        log::warn!(
            "evloop: a timer waits on a ManualClock and this poll has no timeout: it sleeps until an event \
             (advancing the clock wakes no poll; drive the loop with turn(Some(..)) in tests)"
        );
    }

    /// The poll mode says not to sleep in this turn's poll.
    #[inline]
    fn spinning(&mut self) -> bool {
        match self.spin.mode {
            PollMode::Block => false,
            PollMode::Spin => true,
            PollMode::SpinThenBlock(_) => self.spin_left(),
        }
    }

    /// `SpinThenBlock`: start the budget if the last turn found work, and
    /// say whether it still runs. The turn's reading of the clock serves
    /// (taken here if the timer phase took none): one read per turn.
    #[inline(never)]
    fn spin_left(&mut self) -> bool {
        let now = self.ctx.time.now_ns();
        let spin = &mut self.spin;
        if std::mem::take(&mut spin.worked) {
            spin.until_ns = now.saturating_add(spin.budget_ns);
        }
        now < spin.until_ns
    }

    /// How long the poll may sleep for a timer due at `next` (wheel
    /// nanoseconds), measured from a reading taken after the last callback
    /// that ran: one that predated slow callbacks would make the timer late
    /// by their time. (The timer phase's reading, when no callback ran
    /// since, is such a reading: no second clock read.)
    #[inline(never)]
    fn until(&self, next: u64) -> Option<Duration> {
        let left = next.saturating_sub(self.ctx.time.current_or_read_ns());
        // A manual clock does not move while we sleep: only an already-due
        // timer bounds the sleep.
        if self.ctx.time.is_manual() && left > 0 {
            return None;
        }
        Some(Duration::from_nanos(left))
    }

    /// Phase 5: gather what is ready in the order it became ready (sources
    /// scheduled or rescheduled before the poll, then the kernel's events,
    /// which epoll lists first-ready first, cross-thread notifications at
    /// the place of their wake-up), put higher priorities first, and run
    /// each handler once.
    fn dispatch(&mut self, state: &mut S) -> usize {
        if !self.ctx.scheduled.is_empty() {
            self.queue_scheduled();
        }
        if self.ctx.local_wakes.is_some() {
            self.queue_woken(0);
        }
        for event in self.events.iter() {
            let token = event.token();
            if token.0 < RESERVED_BASE {
                let ready = Ready::from_mio(event);
                let id = SourceId::from_token(token);
                queue(&mut self.ctx.sources, &mut self.ready, id, ready);
            } else {
                let hires = self.hires.as_mut();
                loop_event(&mut self.ctx, &mut self.ready, &mut self.notified, hires, token);
            }
        }
        // Queued in readiness order; only a mix of priorities needs a sort
        // (its keys are unique, so an unstable sort keeps that order).
        if std::mem::take(&mut self.ready.mixed) {
            self.sort_ready();
        }
        hot_trace!(
            "evloop: phase dispatch ({} kernel events, {} sources ready)",
            self.events.iter().count(),
            self.ready.list.len()
        );
        let mut n = self.ready.list.len();
        let mut dispatched = 0;
        let warm = n > 1 && self.ctx.sources.len() >= WARM_ABOVE;
        let mut i = 0;
        while i < n {
            if warm && i % WARM_BATCH == 0 {
                self.warm(i, (i + WARM_BATCH).min(n));
            }
            let p = self.ready.list[i];
            match self.dispatch_one(p, state) {
                Ok(ran) => dispatched += ran as usize,
                Err((id, payload)) => {
                    dispatched += 1;
                    if self.panic_policy == PanicPolicy::Propagate {
                        // The panic unwinds out of `turn`, leaving the rest
                        // of this list undispatched. Left here, the whole
                        // list would be dispatched again next turn (twice
                        // for the sources before this one); dropped, the
                        // rest would lose readiness the kernel will not
                        // report again (edge-triggered). Carry the rest
                        // over to the next turn instead.
                        self.carry_over(i + 1);
                    }
                    self.panicked(payload, format_args!("handler of {id}"));
                }
            }
            i += 1;
            if i == n && self.ctx.local_wakes.is_some() {
                // Sources woken while this phase ran (a task whose
                // connection just read its data) run in it too, behind
                // everything already queued: they became ready last.
                n = self.queue_woken(n);
            }
        }
        self.ready.list.clear();
        dispatched
    }

    /// Queue the sources woken from the loop's thread since the last look
    /// (see `LocalWakes`), in wake order, behind this turn's list; a source
    /// already dispatched in this turn (its place is before `dispatched`)
    /// waits for the next one: at most one dispatch per source per turn.
    /// Returns the list's new length.
    #[inline(never)]
    fn queue_woken(&mut self, dispatched: usize) -> usize {
        if let Some(wakes) = &self.ctx.local_wakes {
            wakes.drain(&mut self.notified);
        }
        for &id in &self.notified {
            let pos = self
                .ctx
                .sources
                .get(id.index())
                .map_or(usize::MAX, |s| s.queued_pos as usize);
            if pos < dispatched && self.ready.list[pos].index == id.index {
                self.ctx.reschedule(id, Ready::EMPTY);
            } else {
                queue(&mut self.ctx.sources, &mut self.ready, id, Ready::EMPTY);
            }
        }
        self.notified.clear();
        // Before the poll's events (nothing dispatched yet) the phase's own
        // sort comes later; behind a dispatched list, order the newcomers by
        // priority among themselves: those dispatched cannot be overtaken.
        if dispatched > 0 && std::mem::take(&mut self.ready.mixed) {
            self.ready.list[dispatched..].sort_unstable_by_key(|p| p.order);
        }
        self.ready.list.len()
    }

    /// Load the table rows of ready sources `from..to`, and through
    /// [`Entry::touch`] what their entries will read first (a connection's
    /// hot fields; other entries load nothing more), before dispatching
    /// them. With more sources than the cache holds, each dispatch otherwise
    /// waits on misses in a row (the row, then the entry it points to), with
    /// the kernel's work for the previous dispatch in between evicting the
    /// next one's lines; loaded together, a batch's misses overlap.
    ///
    /// [`Entry::touch`]: crate::source::Entry::touch
    #[inline(never)]
    fn warm(&self, from: usize, to: usize) {
        let mut any = 0u8;
        for p in &self.ready.list[from..to] {
            if let Some(Some(entry)) = self.ctx.sources.get(p.index as usize).map(|slot| &slot.entry) {
                any ^= entry.touch();
            }
        }
        std::hint::black_box(any);
    }

    /// Queue the sources scheduled or rescheduled since the last dispatch,
    /// in the order of those calls.
    #[inline(never)]
    fn queue_scheduled(&mut self) {
        std::mem::swap(&mut self.scheduled, &mut self.ctx.scheduled);
        for &(id, ready) in &self.scheduled {
            queue(&mut self.ctx.sources, &mut self.ready, id, ready);
        }
        self.scheduled.clear();
    }

    #[inline(never)]
    fn sort_ready(&mut self) {
        self.ready.list.sort_unstable_by_key(|p| p.order);
    }

    /// Queue the undispatched tail of this turn's ready list (from `from`)
    /// for the next dispatch phase, and empty the list.
    #[cold]
    #[inline(never)]
    fn carry_over(&mut self, from: usize) {
        for p in &self.ready.list[from..] {
            if let Some(slot) = self.ctx.sources.get(p.index as usize) {
                let id = SourceId::new(p.index as usize, slot.seq);
                self.ctx.reschedule(id, p.ready);
            }
        }
        self.ready.list.clear();
        self.ready.mixed = false;
    }

    /// Run one ready source's handler. `Ok(false)` when it was closed or
    /// paused meanwhile; `Err` when the handler panicked (the source is then
    /// closed).
    fn dispatch_one(&mut self, p: Pending, state: &mut S) -> Result<bool, (SourceId, Panic)> {
        let index = p.index as usize;
        let Some(slot) = self.ctx.sources.get_mut(index) else {
            return Ok(false);
        };
        if slot.state != SlotState::Active {
            return Ok(false); // closed or paused by an earlier handler this turn
        }
        let Some(mut entry) = slot.entry.take() else {
            return Ok(false);
        };
        let id = SourceId::new(index, slot.seq);
        let event = Event { id, ready: p.ready };
        hot_trace!("evloop: dispatch {id} {:?}", p.ready);
        if let Some(marks) = &self.marks {
            self.ctx
                .metrics
                .dispatch_latency
                .record(self.ctx.time.read_ns().saturating_sub(marks.poll_out));
        }
        let t0 = self.stall.start();
        let mut action = Action::Close;
        let mut result = self.guard(|ctx, state| action = entry.dispatch(event, ctx, state), state);
        if self
            .stall
            .finish(t0, &mut self.ctx.metrics, format_args!("handler of {id}"))
        {
            self.ctx.time.expire();
        }
        if let Some(slot) = self.ctx.sources.get_mut(index) {
            slot.entry = Some(entry);
            if slot.dirty {
                if let Err(payload) = self.resync(id, state) {
                    result = result.and(Err(payload));
                }
            }
        }
        if let Err(payload) = result {
            self.ctx.close(id);
            return Err((id, payload));
        }
        match action {
            Action::Keep => {}
            Action::Close => {
                self.ctx.close(id);
            }
            Action::Reschedule => self.ctx.reschedule(id, p.ready),
        }
        if let Some(payload) = self.ctx.caught_panic.take() {
            // Caught inside the handler on purpose: the source stays open.
            return Err((id, payload));
        }
        Ok(true)
    }

    /// Apply the interest or priority a handler changed for its own source
    /// while it ran. If the poller refuses, the source is closed, and told
    /// (`Entry::failed`: a connection's `on_close` runs); `Err` if that
    /// panicked.
    #[inline(never)]
    fn resync(&mut self, id: SourceId, state: &mut S) -> Result<(), Panic> {
        let Err(e) = self.ctx.sync(id) else {
            return Ok(());
        };
        log::error!("evloop: re-registering {id} failed: {e}; closing it");
        self.ctx.close(id);
        let Some(mut entry) = self
            .ctx
            .sources
            .get_mut(id.index())
            .and_then(|slot| slot.entry.take())
        else {
            return Ok(());
        };
        let result = self.guard(|ctx, state| entry.failed(&e, ctx, state), state);
        if let Some(slot) = self.ctx.sources.get_mut(id.index()) {
            slot.entry = Some(entry);
        }
        result
    }

    /// Phase 6: after-poll hooks, in the order they were added, then the
    /// turn's counts go into the metrics.
    fn after_poll(&mut self, state: &mut S, done: Turn) {
        self.run_checks(state);
        self.spin.worked = !done.is_idle();
        let m = &mut self.ctx.metrics;
        m.turns += 1;
        m.dispatched += done.dispatched as u64;
        m.timers_fired += done.timers_fired as u64;
        m.deferred_run += done.deferred_run as u64;
    }

    /// The turn is over: its time, and its length when that is kept.
    #[inline]
    fn end_turn(&mut self) {
        if let Some(marks) = &self.marks {
            let end = self.ctx.time.read_ns();
            let busy = marks.poll_in.saturating_sub(marks.start) + end.saturating_sub(marks.poll_out);
            self.ctx.metrics.turn_length.record(busy);
        }
        self.ctx.time.end_turn();
    }

    fn run_checks(&mut self, state: &mut S) {
        if !self.ctx.checks.is_empty() {
            self.run_hooks(state);
        }
    }

    #[inline(never)]
    fn run_hooks(&mut self, state: &mut S) {
        hot_trace!("evloop: phase check ({} hooks)", self.ctx.checks.len());
        let mut checks = std::mem::take(&mut self.ctx.checks);
        let mut i = 0;
        while i < checks.len() {
            let mut keep = false;
            let check = &mut checks[i];
            let result = self.guard(|ctx, state| keep = check(ctx, state), state);
            if result.is_ok() && keep {
                i += 1;
            } else {
                drop(checks.remove(i));
            }
            if let Err(payload) = result {
                if self.panic_policy == PanicPolicy::Propagate {
                    // Put the hooks back before the panic unwinds past us.
                    checks.append(&mut self.ctx.checks);
                    self.ctx.checks = std::mem::take(&mut checks);
                }
                // Otherwise the phase goes on with its own list: hooks
                // added during it wait in `ctx.checks` for the next turn.
                self.panicked(payload, format_args!("check hook"));
            }
        }
        checks.append(&mut self.ctx.checks);
        self.ctx.checks = checks;
    }

    /// Phase 7: deregister and drop the sources closed during the turn.
    #[inline]
    pub(crate) fn reclaim(&mut self) {
        if !self.ctx.closing.is_empty() {
            self.release_closed();
        }
    }

    #[inline(never)]
    fn release_closed(&mut self) {
        hot_trace!("evloop: phase reclaim ({} closed)", self.ctx.closing.len());
        let mut closing = std::mem::take(&mut self.ctx.closing);
        let mut dropped = None;
        for &index in &closing {
            // Dropping a source runs its (and its handler's) `Drop`: one
            // that panics must not leave the sources after it closed and
            // unreleased, their fds open and registered, for ever.
            let ctx = &mut self.ctx;
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| ctx.release(index))) {
                match dropped {
                    None => dropped = Some(payload),
                    Some(_) => log::error!(
                        "evloop: dropping a closed source panicked: {}; dropped",
                        panic_message(&*payload)
                    ),
                }
            }
        }
        closing.clear();
        if self.ctx.closing.is_empty() {
            self.ctx.closing = closing;
        }
        if let Some(payload) = dropped {
            self.panicked(payload, format_args!("dropping a closed source"));
        }
    }

    /// Run a callback, catching a panic so the caller can tidy up first.
    fn guard<F>(&mut self, f: F, state: &mut S) -> Result<(), Panic>
    where
        F: FnOnce(&mut Ctx<S>, &mut S),
    {
        let ctx = &mut self.ctx;
        panic::catch_unwind(AssertUnwindSafe(|| f(ctx, state)))
    }

    /// Apply the panic policy to a caught panic, once the loop is consistent
    /// again: re-raise it, or log it and go on.
    #[cold]
    #[inline(never)]
    fn panicked(&mut self, payload: Panic, what: std::fmt::Arguments<'_>) {
        let msg = panic_message(&*payload);
        match self.panic_policy {
            PanicPolicy::Propagate => {
                log::error!("evloop: {what} panicked: {msg}; propagating");
                // The turn ends here, before its reclaim phase: release what
                // was closed (the panicking source included) now, so what it
                // held (its fd, a listener's connection place) is given back
                // before the next poll, which may sleep for ever.
                self.reclaim();
                self.ctx.time.end_turn();
                panic::resume_unwind(payload)
            }
            PanicPolicy::CloseSource => {
                log::error!("evloop: {what} panicked: {msg}; dropped it, going on");
                self.ctx.metrics.panics += 1;
            }
        }
    }

    /// When the loop next needs a turn, for a host loop that drives this
    /// one through its fd: after any turn, the host turns it when its fd is
    /// readable or when this instant has come, and that is all it takes.
    /// `Some(now)` or earlier when work is already waiting: deferred
    /// callbacks, rescheduled sources, closed ones to reclaim, or kernel
    /// events beyond what the last poll could take (it filled
    /// [`Builder::events_capacity`]: the rest stay in the kernel, and the
    /// fd raises no new edge for them). Otherwise the next timer's deadline
    /// (never later than it), or `None`.
    ///
    /// A host loop that owns the thread and turns evloop when it is due: it
    /// waits on its own terms (here it sleeps; a real host also watches the
    /// loop's fd, [`as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd), for
    /// readability) until `next_deadline`, turns the loop without letting it
    /// sleep, and asks again after every turn.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use evloop::EventLoop;
    ///
    /// let mut el = EventLoop::<u32>::new()?;
    /// el.timer_every(Duration::from_millis(2), |fired, ctx, n| {
    ///     *n += 1;
    ///     if *n == 3 {
    ///         ctx.cancel_timer(fired.id);
    ///     }
    /// });
    /// let mut fired = 0;
    /// let mut host_frames = 0;
    /// while let Some(at) = el.next_deadline() {
    ///     host_frames += 1; // the host's own work goes here
    ///     std::thread::sleep(at.saturating_duration_since(Instant::now()));
    ///     el.turn(&mut fired, Some(Duration::ZERO))?;
    /// }
    /// // Nothing armed, nothing waiting: `None`, and the host is done with it.
    /// assert_eq!(fired, 3);
    /// assert!(host_frames >= 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = &self.ctx;
        let woken = c.local_wakes.as_ref().is_some_and(|w| w.is_pending());
        if self.more_ready()
            || woken
            || !c.deferred.is_empty()
            || !c.scheduled.is_empty()
            || !c.closing.is_empty()
        {
            return Some(c.time.clock_now());
        }
        c.timers.next_deadline()
    }
}

impl<S> EventLoop<S> {
    /// The last poll filled the events buffer: the kernel may hold more
    /// ready events, and the loop's fd raises no new edge for them. Worked
    /// out from the buffer when asked (`count` is its length, not a walk),
    /// so the turn pays nothing for it.
    fn more_ready(&self) -> bool {
        self.events.iter().count() == self.events.capacity()
    }
}

impl<S> Ctx<S> {
    /// Deregister and drop a closed source (reclaim phase, or `Drop`).
    pub(crate) fn release(&mut self, index: usize) {
        let Some(seq) = self.sources.get(index).map(|slot| slot.seq) else {
            return;
        };
        let (entry, registered) = if seq == u32::MAX {
            // The slot's generations are used up: retire it (see
            // `Ctx::generations`), closed and empty.
            self.retired += 1;
            let slot = &mut self.sources[index];
            // Closed for good: a later `close` of its id finds it so, and
            // does not release (and count) it twice.
            slot.state = SlotState::Closed;
            (slot.entry.take(), std::mem::take(&mut slot.registered))
        } else {
            if self.generations.len() <= index {
                self.generations.resize(index + 1, 0);
            }
            self.generations[index] = seq + 1;
            let slot = self.sources.remove(index);
            (slot.entry, slot.registered)
        };
        let id = SourceId::new(index, seq);
        if let Some(mut entry) = entry {
            if registered {
                let how = Attach::Deregister {
                    registry: self.poll.registry(),
                };
                if let Err(e) = entry.attach(how, &self.link) {
                    log::debug!("evloop: deregistering {id} failed: {e}");
                }
            }
            hot_trace!("evloop: reclaim {id}");
            drop(entry);
        }
    }
}

impl<S> Deref for EventLoop<S> {
    type Target = Ctx<S>;
    fn deref(&self) -> &Ctx<S> {
        &self.ctx
    }
}

impl<S> DerefMut for EventLoop<S> {
    fn deref_mut(&mut self) -> &mut Ctx<S> {
        &mut self.ctx
    }
}

/// The loop's epoll fd: watch it for readability in a host loop, and call
/// `turn` with a zero timeout when it is readable or when
/// [`next_deadline`](EventLoop::next_deadline) has come. After every turn
/// the host asks `next_deadline` again: those two are the whole contract
/// (the fd alone misses work the loop already holds, such as ready events
/// beyond what one poll takes).
impl<S> AsRawFd for EventLoop<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.ctx.poll.as_raw_fd()
    }
}

impl<S> std::fmt::Debug for EventLoop<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("sources", &self.ctx.source_count())
            .field("timers", &self.ctx.timers.len())
            .field("turns", &self.ctx.metrics.turns)
            .finish()
    }
}
