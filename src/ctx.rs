//! [`Ctx`]: everything a handler may touch while it runs.
//!
//! The loop keeps its state in two parts: the `Ctx` (the source table,
//! timers, deferred queue, clock...) and the few buffers the turn itself
//! iterates over. A handler is taken out of its table slot while it runs, so
//! it can be handed `&mut Ctx` and register, close, arm, defer or stop
//! without `Rc<RefCell<..>>` anywhere. The [`EventLoop`](crate::EventLoop)
//! dereferences to its `Ctx`, so the owner can do the same between turns.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::Interest;
use slab::Slab;

use crate::channel::{ChannelEntry, Receiver};
use crate::clock::TurnTime;
use crate::metrics::Metrics;
use crate::remote::{Link, Posted, Remote};
use crate::source::{Action, Attach, Entry, Event, Handled, Priority, Ready};
use crate::timer::{self, Fired, Repeat, TimerId, Timers};
use crate::SourceId;

/// Size of the loop's shared read buffer (a whole UDP datagram fits).
///
/// A read that fills the buffer must be followed by another, which usually
/// only says `WouldBlock`; only a short read shows the socket drained. At
/// 128 KiB, a peer's burst of up to 64 KiB (four 16 KiB requests in flight,
/// say) comes in one read instead of two: measured with 10 connections of
/// four 16 KiB messages, 0.50 -> 0.25 reads per message. The pages past what
/// reads have reached are never touched, so they cost no memory.
pub(crate) const SCRATCH_SIZE: usize = 128 * 1024;

/// Initialized size of the loop's spare output buffer.
pub(crate) const OUT_BUF_SIZE: usize = 4 * 1024;

/// Largest output buffer the loop keeps as its spare: a burst does not pin
/// memory.
const OUT_BUF_KEEP: usize = 256 * 1024;

/// A callback queued with [`Ctx::defer`].
pub(crate) type Deferred<S> = Box<dyn FnOnce(&mut Ctx<S>, &mut S)>;
/// A callback added with [`Ctx::add_check`].
pub(crate) type Check<S> = Box<dyn FnMut(&mut Ctx<S>, &mut S) -> bool>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Active,
    Paused,
    Closed,
}

/// One row of the source table.
// 32 bytes, aligned to 32 (the slab's tag sits in a niche of the flags): a
// dispatch reads one cache line of the table, never two. With thousands of
// connections, the table and the connections together outgrow a core's L2,
// and each line a row spans is a miss paid on every message.
#[repr(C, align(32))]
pub(crate) struct Slot<S> {
    /// `None` only while its handler runs.
    pub(crate) entry: Option<Box<dyn Entry<S>>>,
    /// Generation of the source in this slot, as in its id: how many
    /// sources held the slot before it.
    pub(crate) seq: u32,
    /// Where this source stands in the current turn's ready list, if it is
    /// there (the list entry at this place names this slot): merges
    /// duplicate readiness in O(1) with nothing to reset between turns.
    pub(crate) queued_pos: u32,
    pub(crate) priority: Priority,
    pub(crate) interest: Interest,
    pub(crate) state: SlotState,
    /// Whether the poller currently knows this source.
    pub(crate) registered: bool,
    /// A registration change waits for the running handler to return.
    pub(crate) dirty: bool,
}

impl<S> Slot<S> {
    /// This slot holds the source `id` names (not a successor in the same
    /// slot), and it has not been closed.
    pub(crate) fn is_open(&self, id: SourceId) -> bool {
        self.seq == id.generation() && self.state != SlotState::Closed
    }
}

/// What a handler may touch while it runs: the source table, timers, the
/// deferred queue, the turn's clock, and the loop's stop flag.
pub struct Ctx<S> {
    pub(crate) poll: mio::Poll,
    pub(crate) link: Link,
    pub(crate) sources: Slab<Slot<S>>,
    /// The generation the next source in each slot gets, by slot index
    /// (missing: 0). A slot whose generations are used up is retired: it
    /// stays in `sources`, closed and empty, and is never reused, so a stale
    /// id can never name a later source.
    pub(crate) generations: Vec<u32>,
    /// Slots retired so (they are not sources).
    pub(crate) retired: usize,
    /// Sources closed since the last reclaim phase.
    pub(crate) closing: Vec<usize>,
    /// Sources to dispatch in the next dispatch phase without a kernel event.
    pub(crate) scheduled: Vec<(SourceId, Ready)>,
    pub(crate) deferred: VecDeque<Deferred<S>>,
    pub(crate) timers: Timers<S>,
    pub(crate) checks: Vec<Check<S>>,
    /// The clock, and the reading that stands for "now" while it is valid
    /// (`clock.rs` has the rule).
    pub(crate) time: TurnTime,
    pub(crate) stop: bool,
    /// The stop was asked between turns: the next turn keeps it (it would
    /// otherwise clear what the last turn asked, and lose this one).
    pub(crate) stop_before_turn: bool,
    pub(crate) turn_no: u64,
    /// The shared read buffer ([`SCRATCH_SIZE`] bytes, allocated on first
    /// use), out while a read borrows it.
    pub(crate) scratch: Option<Box<[u8]>>,
    pub(crate) out_buf: Vec<u8>,
    pub(crate) remote: Option<Remote<S>>,
    pub(crate) metrics: Metrics,
    /// A panic caught inside a source's handler that must not close the
    /// source (a posted closure): the loop applies the panic policy to it
    /// once the handler has returned.
    pub(crate) caught_panic: Option<Box<dyn Any + Send>>,
    /// The worker pool behind [`spawn_blocking`](Self::spawn_blocking),
    /// started on first use.
    pub(crate) blocking: crate::blocking::Blocking<S>,
    /// Sources woken from the loop's thread without a `Ctx` (tasks' wakers);
    /// `None` until the first task, so a loop without tasks never looks.
    pub(crate) local_wakes: Option<std::sync::Arc<crate::remote::LocalWakes>>,
    /// The task layer's shared state, made by the first task.
    pub(crate) tasks: Option<std::rc::Rc<crate::task::Hub>>,
}

/// The error for an id that names no live source.
fn stale(id: SourceId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("evloop: source {id} is closed or was never registered"),
    )
}

impl<S> Ctx<S> {
    /// The loop's time. Inside a turn, the clock is read at the first call
    /// and that reading is kept for the callbacks of the phase (a timer,
    /// deferred or dispatch phase; the rule and its exceptions are in
    /// `docs/ARCHITECTURE.md`, "The clock"), so after the first call no
    /// system call. Between turns every call reads the clock.
    pub fn now(&self) -> Instant {
        self.time.now()
    }

    /// [`now`](Self::now) in the timer wheel's nanoseconds, kept alike.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.time.now_ns()
    }

    /// Arm a timer for a deadline in the wheel's nanoseconds.
    fn arm<F>(&mut self, deadline_ns: u64, repeat: Repeat, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        if self.timers.wheel.is_empty() {
            // Rare (the first timer after none were armed), so reading the
            // clock here costs nothing in steady state.
            let now = self.now_ns();
            self.timers.catch_up(now);
        }
        self.timers.arm_ns(deadline_ns, repeat, f)
    }

    /// Ask the loop to stop: [`EventLoop::run`](crate::EventLoop::run)
    /// returns after the current turn completes (at once, if asked between
    /// turns), having ended every task (see
    /// [`EventLoop::run`](crate::EventLoop::run)). For a loop driven by
    /// [`EventLoop::turn`](crate::EventLoop::turn), see there.
    pub fn stop(&mut self) {
        log::trace!("evloop: stop requested");
        self.stop = true;
        if !self.time.in_turn() {
            self.stop_before_turn = true;
        }
    }

    /// True once a stop was requested in this turn (see
    /// [`EventLoop::turn`](crate::EventLoop::turn) for when it clears).
    pub fn is_stopping(&self) -> bool {
        self.stop
    }

    /// Register a mio source. `handler` runs in the dispatch phase whenever
    /// the source is ready; what it returns decides what happens next (see
    /// [`Action`]). The source is owned by the loop from here on, and dropped
    /// (closing its fd) when it is closed or the loop is dropped.
    ///
    /// Works while a handler runs, too: the new source is dispatched from the
    /// next poll on.
    ///
    /// # Drain or reschedule
    ///
    /// Sources are registered edge-triggered: the poll reports that a
    /// source *became* ready, once, not that it still is. A handler must
    /// therefore either consume what is ready until the source says
    /// `WouldBlock` (or, for a stream, a short read or EOF), or return
    /// [`Action::Reschedule`] to be called again next turn without a new
    /// event. A handler that reads one chunk and returns [`Action::Keep`]
    /// leaves the rest unread with nothing to wake it. Rescheduling is also
    /// how a busy source lets others run: stop after a budget, reschedule.
    ///
    /// ```
    /// use std::io::{ErrorKind, Read, Write};
    /// use evloop::{Action, EventLoop, Interest};
    ///
    /// let mut el = EventLoop::<Vec<u8>>::new()?;
    /// let (a, mut peer) = mio::net::UnixStream::pair()?;
    /// el.register(a, Interest::READABLE, |sock, _event, ctx, got: &mut Vec<u8>| {
    ///     let mut buf = [0u8; 4]; // small on purpose: one read is not enough
    ///     match sock.read(&mut buf) {
    ///         // More may be waiting and no new edge will say so: ask again
    ///         // next turn (this also lets other sources run in between).
    ///         Ok(n) if n > 0 => {
    ///             got.extend_from_slice(&buf[..n]);
    ///             Action::Reschedule
    ///         }
    ///         // Drained: the next byte that arrives raises a new edge.
    ///         Err(e) if e.kind() == ErrorKind::WouldBlock => Action::Keep,
    ///         // EOF or an error: done.
    ///         _ => {
    ///             ctx.stop();
    ///             Action::Close
    ///         }
    ///     }
    /// })?;
    /// peer.write_all(b"more than four bytes")?;
    /// drop(peer);
    /// let mut got = Vec::new();
    /// el.run(&mut got)?;
    /// assert_eq!(got, b"more than four bytes");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register<T, F>(&mut self, source: T, interest: Interest, handler: F) -> io::Result<SourceId>
    where
        T: mio::event::Source + Any,
        F: FnMut(&mut T, Event, &mut Ctx<S>, &mut S) -> Action + 'static,
    {
        self.insert(Box::new(Handled { source, handler }), interest, Priority::Normal)
    }

    /// Register the receiving end of a [`channel`](crate::channel()):
    /// `handler` gets every message, in send order, in the dispatch phase.
    /// The source closes itself once every sender is dropped and the last
    /// message is delivered.
    pub fn add_channel<T, F>(&mut self, rx: Receiver<T>, handler: F) -> io::Result<SourceId>
    where
        T: 'static,
        F: FnMut(T, &mut Ctx<S>, &mut S) + 'static,
    {
        let entry = ChannelEntry {
            rx,
            batch: VecDeque::new(),
            handler,
        };
        self.insert(Box::new(entry), Interest::READABLE, Priority::Normal)
    }

    /// Deliver Unix signals (SIGINT, SIGTERM, SIGHUP, SIGUSR1...) to
    /// `handler`, one call per delivered signal, in the dispatch phase. See
    /// [`Signals`](crate::Signals) for the rules (one owner per signal per
    /// process; closing the source restores the previous disposition).
    pub fn add_signals<F>(&mut self, signals: &[libc::c_int], mut handler: F) -> io::Result<SourceId>
    where
        F: FnMut(libc::c_int, &mut Ctx<S>, &mut S) + 'static,
    {
        let set = crate::Signals::new(signals)?;
        let mut got = Vec::with_capacity(8);
        let id = self.register(
            set,
            Interest::READABLE,
            move |set: &mut crate::Signals, _ev, ctx, state| {
                got.clear();
                if let Err(e) = set.drain(&mut got) {
                    log::error!("evloop: reading signals failed: {e}");
                }
                for &sig in &got {
                    handler(sig, ctx, state);
                }
                Action::Keep
            },
        )?;
        self.set_priority(id, Priority::High)?;
        Ok(id)
    }

    /// Register a source that implements the table's entry itself (the net
    /// layer's connections), at normal priority.
    pub(crate) fn register_entry(
        &mut self,
        entry: Box<dyn Entry<S>>,
        interest: Interest,
    ) -> io::Result<SourceId> {
        self.insert(entry, interest, Priority::Normal)
    }

    pub(crate) fn insert(
        &mut self,
        entry: Box<dyn Entry<S>>,
        interest: Interest,
        priority: Priority,
    ) -> io::Result<SourceId> {
        let id = self.reserve(priority)?;
        self.fill_reserved(id, entry, interest)?;
        Ok(id)
    }

    /// Take a slot and its id for a source that does not exist yet (an
    /// accepted connection whose handler the accept callback is about to
    /// make, knowing its id). Until [`fill_reserved`](Self::fill_reserved)
    /// the slot holds no entry: it is open, but dispatching it or reaching
    /// its source finds nothing, as for a source whose handler is running.
    pub(crate) fn reserve(&mut self, priority: Priority) -> io::Result<SourceId> {
        let vacant = self.sources.vacant_entry();
        if vacant.key() >= u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "evloop: source table is full",
            ));
        }
        let seq = self.generations.get(vacant.key()).copied().unwrap_or(0);
        let id = SourceId::new(vacant.key(), seq);
        vacant.insert(Slot {
            seq,
            priority,
            interest: Interest::READABLE,
            state: SlotState::Active,
            registered: false,
            dirty: false,
            queued_pos: u32::MAX,
            entry: None,
        });
        Ok(id)
    }

    /// Put `entry` into the slot reserved as `id` and register it. If the
    /// slot was closed meanwhile, or registering fails, the entry is dropped
    /// and the slot given back.
    pub(crate) fn fill_reserved(
        &mut self,
        id: SourceId,
        mut entry: Box<dyn Entry<S>>,
        interest: Interest,
    ) -> io::Result<()> {
        let registry = self.poll.registry();
        let Some(slot) = self.sources.get_mut(id.index()).filter(|slot| slot.is_open(id)) else {
            // Closed while reserved: its index is already queued for reclaim.
            return Err(stale(id));
        };
        if slot.state == SlotState::Active {
            let how = Attach::Register {
                registry,
                token: id.token(),
                interest,
                reregister: false,
            };
            if let Err(e) = entry.attach(how, &self.link) {
                // The id was handed out: the slot's next source must not get it.
                self.release(id.index());
                return Err(e);
            }
            slot.registered = true;
        }
        slot.interest = interest;
        slot.entry = Some(entry);
        log::trace!("evloop: register {id} {interest:?}");
        Ok(())
    }

    fn slot_mut(&mut self, id: SourceId) -> Option<&mut Slot<S>> {
        self.sources.get_mut(id.index()).filter(|slot| slot.is_open(id))
    }

    /// True while `id`'s handler runs (its entry is out of the table, up
    /// the stack): what asks for it by id finds nothing.
    pub(crate) fn is_running(&self, id: SourceId) -> bool {
        self.sources
            .get(id.index())
            .is_some_and(|slot| slot.is_open(id) && slot.state == SlotState::Active && slot.entry.is_none())
    }

    /// True while `id` names a source that has not been closed. A
    /// connection being closed (inside its own `on_close`) still counts: it
    /// leaves the table when its dispatch returns, though it takes no more
    /// writes.
    pub fn is_open(&self, id: SourceId) -> bool {
        self.sources.get(id.index()).is_some_and(|slot| slot.is_open(id))
    }

    /// Close a source: it receives nothing more, not even an event already
    /// polled in this turn, and is deregistered and dropped in the reclaim
    /// phase. A handler may close itself. Returns false (a no-op) for a stale id.
    pub fn close(&mut self, id: SourceId) -> bool {
        let Some(slot) = self.slot_mut(id) else {
            return false;
        };
        slot.state = SlotState::Closed;
        self.closing.push(id.index());
        log::trace!("evloop: close {id}");
        true
    }

    /// Change what the source is polled for. From inside the source's own
    /// handler the change is applied when the handler returns.
    pub fn set_interest(&mut self, id: SourceId, interest: Interest) -> io::Result<()> {
        let slot = self.slot_mut(id).ok_or_else(|| stale(id))?;
        if slot.interest != interest {
            slot.interest = interest;
            self.sync(id)?;
        }
        Ok(())
    }

    /// Where a source comes among others ready in the same turn: every ready
    /// `High` source is dispatched before any `Normal` one, and so on;
    /// within a priority, in the order they became ready.
    pub fn set_priority(&mut self, id: SourceId, priority: Priority) -> io::Result<()> {
        self.slot_mut(id).ok_or_else(|| stale(id))?.priority = priority;
        Ok(())
    }

    /// Stop polling a source without closing it; [`resume`](Self::resume)
    /// brings it back. A paused source is not dispatched, not even for an
    /// event already polled in this turn.
    pub fn pause(&mut self, id: SourceId) -> io::Result<()> {
        self.slot_mut(id).ok_or_else(|| stale(id))?.state = SlotState::Paused;
        log::trace!("evloop: pause {id}");
        self.sync(id)
    }

    /// Poll a paused source again.
    pub fn resume(&mut self, id: SourceId) -> io::Result<()> {
        self.slot_mut(id).ok_or_else(|| stale(id))?.state = SlotState::Active;
        log::trace!("evloop: resume {id}");
        self.sync(id)
    }

    /// Bring the poller's registration in line with the slot's wishes. While
    /// the source's own handler runs its entry is out of the table: mark the
    /// slot and let the dispatcher call this again when the handler returns.
    pub(crate) fn sync(&mut self, id: SourceId) -> io::Result<()> {
        let registry = self.poll.registry();
        let Some(slot) = self.sources.get_mut(id.index()) else {
            return Ok(());
        };
        let Some(entry) = slot.entry.as_mut() else {
            slot.dirty = true;
            return Ok(());
        };
        slot.dirty = false;
        let want = slot.state == SlotState::Active;
        let how = match (slot.registered, want) {
            (false, false) => return Ok(()),
            (true, false) => Attach::Deregister { registry },
            (registered, true) => Attach::Register {
                registry,
                token: id.token(),
                interest: slot.interest,
                reregister: registered,
            },
        };
        entry.attach(how, &self.link)?;
        slot.registered = want;
        Ok(())
    }

    /// Dispatch a source in the next dispatch phase with empty readiness,
    /// whether or not the kernel reports anything (the poll does not block
    /// meanwhile). Returns false for a stale id.
    pub fn schedule(&mut self, id: SourceId) -> bool {
        if !self.is_open(id) {
            return false;
        }
        self.scheduled.push((id, Ready::EMPTY));
        true
    }

    pub(crate) fn reschedule(&mut self, id: SourceId, ready: Ready) {
        if self.is_open(id) {
            self.scheduled.push((id, ready));
        }
    }

    /// Dispatch source `id` now, inside the dispatch of source `within`: a
    /// hand-off, so that `id` takes `within`'s place in the turn's order (a
    /// task waiting on a connection's input runs where the input arrived).
    /// Nothing happens, and false is returned, unless `id` is open, active,
    /// not running, and its priority not below `within`'s (a lower one must
    /// wait behind what is ready). A panic in its handler is caught and the
    /// source closed; the loop applies its panic policy once `within`'s
    /// handler has returned (as for a posted closure).
    pub(crate) fn dispatch_now(&mut self, id: SourceId, within: SourceId, state: &mut S) -> bool {
        let Some(floor) = self.sources.get(within.index()).map(|s| s.priority) else {
            return false;
        };
        let Some(slot) = self.sources.get_mut(id.index()) else {
            return false;
        };
        if slot.seq != id.generation() || slot.state != SlotState::Active || slot.priority > floor {
            return false;
        }
        let Some(mut entry) = slot.entry.take() else {
            return false;
        };
        hot_trace!("evloop: dispatch {id} in {within}'s place");
        let event = Event {
            id,
            ready: Ready::EMPTY,
        };
        let mut action = Action::Close;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            action = entry.dispatch(event, self, state);
        }));
        if let Some(slot) = self.sources.get_mut(id.index()) {
            slot.entry = Some(entry);
            if slot.dirty && self.sync(id).is_err() {
                log::error!("evloop: re-registering {id} failed; closing it");
                self.close(id);
            }
        }
        match result {
            Err(payload) => {
                self.close(id);
                if self.caught_panic.is_none() {
                    self.caught_panic = Some(payload);
                } else {
                    log::error!("evloop: a second handler panicked in {within}'s dispatch; dropped");
                }
            }
            Ok(()) => match action {
                Action::Keep => {}
                Action::Close => {
                    self.close(id);
                }
                Action::Reschedule => self.reschedule(id, Ready::EMPTY),
            },
        }
        true
    }

    /// The source registered as `id`, if it is open, of type `T`, and not the
    /// one whose handler is running right now (that one already has it).
    pub fn source_mut<T: Any>(&mut self, id: SourceId) -> Option<&mut T> {
        self.slot_mut(id)?
            .entry
            .as_mut()?
            .source_any()?
            .downcast_mut::<T>()
    }

    /// How many sources are registered (closed ones count until reclaimed).
    pub fn source_count(&self) -> usize {
        self.sources.len() - self.retired
    }

    /// Run `f` in the next deferred phase. Callbacks run FIFO; one deferred
    /// while the deferred phase runs waits for the next turn. While any are
    /// pending the poll does not block.
    pub fn defer<F>(&mut self, f: F)
    where
        F: FnOnce(&mut Ctx<S>, &mut S) + 'static,
    {
        self.deferred.push_back(Box::new(f));
    }

    /// Run `f` in the after-poll phase of every turn (after dispatch, before
    /// reclaim) for as long as it returns true.
    pub fn add_check<F>(&mut self, f: F)
    where
        F: FnMut(&mut Ctx<S>, &mut S) -> bool + 'static,
    {
        self.checks.push(Box::new(f));
    }

    /// Arm a one-shot timer for `deadline`. It fires in the timer phase of the
    /// first turn whose `now()` is at or past it; ties fire in arm order.
    pub fn timer_at<F>(&mut self, deadline: Instant, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let id = self.arm(self.timers.to_ns(deadline), Repeat::Once, f);
        // Measured from the turn's time only if something already read it:
        // tracing must not read the clock itself, or turning it on would
        // change which instant the turn holds.
        match self.time.peek() {
            Some(now) => log::trace!(
                "evloop: arm {id:?} at +{:?}",
                deadline.saturating_duration_since(now)
            ),
            None => log::trace!("evloop: arm {id:?} at {deadline:?}"),
        }
        id
    }

    /// Arm a one-shot timer `after` from the turn's `now()`.
    ///
    /// It fires in the timer phase of the first turn whose `now()` is at or
    /// past the deadline: never early, late by the poll's rounding (whole
    /// milliseconds unless
    /// [`Builder::high_resolution_timers`](crate::Builder::high_resolution_timers))
    /// and by whatever callback is running when it comes due.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Clock, EventLoop, ManualClock};
    ///
    /// // A manual clock makes timer code testable without waiting.
    /// let clock = ManualClock::new();
    /// let mut el: EventLoop<Vec<&str>> = EventLoop::builder()
    ///     .clock(Clock::Manual(clock.clone()))
    ///     .build()?;
    /// el.timer_after(Duration::from_millis(20), |_, _, log| log.push("second"));
    /// el.timer_after(Duration::from_millis(10), |_, _, log| log.push("first"));
    /// let doomed = el.timer_after(Duration::from_millis(15), |_, _, log| log.push("never"));
    /// el.cancel_timer(doomed);
    /// let mut log = Vec::new();
    /// clock.advance(Duration::from_millis(20));
    /// el.turn(&mut log, Some(Duration::ZERO))?;
    /// assert_eq!(log, ["first", "second"]); // by deadline, not by arming
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timer_after<F>(&mut self, after: Duration, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let deadline = self.now_ns().saturating_add(timer::duration_ns(after));
        let id = self.arm(deadline, Repeat::Once, f);
        log::trace!("evloop: arm {id:?} in {after:?}");
        id
    }

    /// Arm a fixed-rate periodic timer: first at `now() + period`, then on
    /// the same grid whatever the callbacks cost. When the loop runs late,
    /// the skipped ticks are reported in [`Fired::missed`], not replayed.
    /// (A periodic timer whose next run would fall past the end of the
    /// clock's range, 584 years after the loop was built, which only a
    /// manual clock reaches, is dropped: that run can never come.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Clock, EventLoop, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let mut el: EventLoop<Vec<u64>> = EventLoop::builder()
    ///     .clock(Clock::Manual(clock.clone()))
    ///     .build()?;
    /// el.timer_every(Duration::from_millis(10), |fired, _, missed| missed.push(fired.missed));
    /// let mut missed = Vec::new();
    /// clock.advance(Duration::from_millis(10));
    /// el.turn(&mut missed, Some(Duration::ZERO))?;
    /// // A late turn: three periods pass before the loop looks again.
    /// clock.advance(Duration::from_millis(30));
    /// el.turn(&mut missed, Some(Duration::ZERO))?;
    /// assert_eq!(missed, [0, 2]); // one run, two ticks reported missed, on the grid
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timer_every<F>(&mut self, period: Duration, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        // The first run is `period` away as given (a zero period: this
        // turn's next timer phase); only the repeat needs at least 1 ns.
        let first = self.now_ns().saturating_add(timer::duration_ns(period));
        self.arm(first, Repeat::Rate(timer::period_ns(period)), f)
    }

    /// Arm a fixed-delay periodic timer: each run is `delay` after the turn
    /// in which the previous one ran.
    pub fn timer_every_delay<F>(&mut self, delay: Duration, f: F) -> TimerId
    where
        F: FnMut(Fired, &mut Ctx<S>, &mut S) + 'static,
    {
        let first = self.now_ns().saturating_add(timer::duration_ns(delay));
        self.arm(first, Repeat::Delay(timer::period_ns(delay)), f)
    }

    /// Cancel a timer. Returns false (a no-op) when it already fired (one-shot)
    /// or was cancelled. Cancelling a timer that is due later in the same
    /// timer phase stops it from firing.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let done = self.timers.cancel(id);
        log::trace!("evloop: cancel {id:?} -> {done}");
        done
    }

    /// Move a live timer to a new deadline (it then ties after timers already
    /// armed for that deadline). Returns false for a stale id.
    pub fn reset_timer(&mut self, id: TimerId, deadline: Instant) -> bool {
        self.timers.reset(id, deadline)
    }

    /// When a live timer is due.
    pub fn timer_deadline(&self, id: TimerId) -> Option<Instant> {
        self.timers.deadline(id)
    }

    /// How long until a live timer is due, from the turn's `now()` (zero if overdue).
    pub fn timer_remaining(&self, id: TimerId) -> Option<Duration> {
        self.timers
            .deadline(id)
            .map(|d| d.saturating_duration_since(self.now()))
    }

    /// How many timers are armed.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// A handle for other threads: wake or stop this loop, or post closures
    /// to it. All handles of a loop share one waker.
    pub fn remote(&mut self) -> io::Result<Remote<S>>
    where
        S: 'static,
    {
        if let Some(r) = &self.remote {
            return Ok(r.clone());
        }
        let (tx, rx) = crate::channel::channel::<Posted<S>>();
        // A panicking closure is one bad message, not a broken channel: catch
        // it here so the channel (and every Remote) stays usable, and let the
        // loop apply the panic policy once the handler has returned.
        self.add_channel(rx, |f: Posted<S>, ctx, state| {
            ctx.catch_panic(state, "posted closure", f);
        })?;
        let remote = Remote {
            link: self.link.clone(),
            posted: tx,
        };
        self.remote = Some(remote.clone());
        Ok(remote)
    }

    /// Run `f` (one message of a channel handler's batch), catching a panic
    /// for the loop to apply its panic policy to once the handler returns.
    /// A panicking message must not close the channel it came through, or
    /// every message after it would be lost; only the first panic of a
    /// batch is kept (a policy acts once per dispatch).
    pub(crate) fn catch_panic<F>(&mut self, state: &mut S, what: &str, f: F)
    where
        F: FnOnce(&mut Ctx<S>, &mut S),
    {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, state))) {
            if self.caught_panic.is_none() {
                self.caught_panic = Some(payload);
            } else {
                log::error!("evloop: a second {what} panicked in the same batch; dropped");
            }
        }
    }

    /// Test hook: as if every slot used so far had been reused until its
    /// next source gets the last generation before the wrap.
    #[cfg(test)]
    pub(crate) fn skip_generations_to_wrap(&mut self) {
        self.generations.fill(u32::MAX);
    }

    /// Counters kept by the loop.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics;
        m.sources = self.source_count();
        m.timers = self.timers.len();
        m
    }

    /// Borrow the loop's shared scratch buffer (for reads that hand out
    /// borrowed bytes); give it back with [`put_scratch`](Self::put_scratch).
    /// A nested borrow (a read inside a read's callback) gets a fresh one.
    pub(crate) fn take_scratch(&mut self) -> Box<[u8]> {
        match self.scratch.take() {
            Some(buf) => buf,
            None => vec![0; SCRATCH_SIZE].into_boxed_slice(),
        }
    }

    pub(crate) fn put_scratch(&mut self, buf: Box<[u8]>) {
        self.scratch = Some(buf);
    }

    /// Borrow the loop's spare output buffer (empty while another
    /// connection has it). Its bytes are initialized up to its length (at
    /// least [`OUT_BUF_SIZE`]; their values are stale), so small writes are
    /// copied into it without growing it.
    pub(crate) fn take_out_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out_buf)
    }

    /// Return an output buffer. The loop keeps one spare: the largest
    /// returned, up to a limit (a burst does not pin memory), and a fresh
    /// one when it has none and what comes back is too small to serve.
    #[inline]
    pub(crate) fn give_out_buf(&mut self, buf: Vec<u8>) {
        // What nearly every dispatch ends with: the spare it borrowed comes
        // back to an empty slot.
        if self.out_buf.capacity() == 0 && buf.len() >= OUT_BUF_SIZE && buf.capacity() <= OUT_BUF_KEEP {
            self.out_buf = buf;
        } else {
            self.give_other_out_buf(buf);
        }
    }

    #[inline(never)]
    fn give_other_out_buf(&mut self, buf: Vec<u8>) {
        if buf.len() >= OUT_BUF_SIZE
            && buf.capacity() <= OUT_BUF_KEEP
            && buf.capacity() > self.out_buf.capacity()
        {
            self.out_buf = buf;
        } else if self.out_buf.capacity() == 0 {
            self.out_buf = vec![0; OUT_BUF_SIZE];
        }
    }
}

#[cfg(test)]
mod id_tests {
    use std::time::Duration;

    use crate::{Action, EventLoop, Interest};

    /// A stale `SourceId` never names a later source, even once the slot's
    /// generations run out: the loop is set to where four billion
    /// registrations would leave it, and the slot that reaches the last
    /// generation is retired.
    #[test]
    fn a_stale_source_id_never_names_a_later_source() {
        let mut el = EventLoop::<()>::new().unwrap();
        let register = |el: &mut EventLoop<()>| {
            let (a, _b) = mio::net::UnixStream::pair().unwrap();
            el.register(a, Interest::READABLE, |_, _, _, _| Action::Keep)
                .unwrap()
        };
        let first = register(&mut el);
        assert!(el.close(first));
        el.turn(&mut (), Some(Duration::ZERO)).unwrap();
        el.skip_generations_to_wrap();
        let last = register(&mut el);
        assert_eq!(last.index(), first.index());
        assert!(el.close(last));
        el.turn(&mut (), Some(Duration::ZERO)).unwrap();
        let next = register(&mut el);
        assert_ne!(next, first, "a stale id names a new source");
        assert!(!el.close(first), "a stale id closed a live source");
        assert!(!el.is_open(last));
        assert!(el.is_open(next));
        assert_eq!(el.source_count(), 1);
    }
}

#[cfg(test)]
mod layout_tests {
    /// A row of the source table fills exactly one aligned half line, with
    /// the slab's vacant/occupied tag in a niche (the enum mirrors the
    /// slab's own entry type): see the comment on `Slot`.
    #[test]
    fn a_slot_is_32_bytes_with_the_slab_tag() {
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        assert_eq!(std::mem::size_of::<super::Slot<()>>(), 32);
        assert_eq!(std::mem::align_of::<super::Slot<()>>(), 32);
        assert_eq!(std::mem::size_of::<SlabEntry<super::Slot<()>>>(), 32);
    }
}
