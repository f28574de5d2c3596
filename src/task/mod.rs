//! Tasks: async/await on the loop, as a layer over sources.
//!
//! A task is a `'static` future (it need not be `Send`) that the loop polls
//! in its dispatch phase. It is an ordinary entry in the source table, so it
//! has a [`SourceId`], a [`Priority`], and the dispatch
//! order every other source has: the core loop knows nothing of futures,
//! only of a source that was made ready.
//!
//! How a wake becomes a dispatch:
//!
//! - each task gets one `Waker` when it is spawned (an `Arc` made with
//!   [`std::task::Wake`]), reused for every poll: no allocation per poll or
//!   per wake, and the future stays where it was boxed;
//! - a wake on the loop's own thread pushes the task's id onto the loop's
//!   local wake list (no system call); one from another thread goes through
//!   the loop's one waker, like a channel send: wakes that come before
//!   the loop takes them share one wake-up; a flag in the waker makes
//!   every wake after the first a no-op until the task is polled;
//! - a task waiting to read an [`AsyncConn`] is polled in that
//!   connection's place: the connection reads, and its dispatch polls the
//!   task right there (as eventlet's hub switches to the green thread
//!   waiting on a ready fd), with no trip through the wake list; what it
//!   writes back goes out with the connection's flush. Not when the task's
//!   priority is below the connection's, or it was polled already this
//!   turn: then it is woken as any other;
//! - the dispatch phase takes the other woken tasks in wake order: those
//!   woken before the poll ahead of the poll's events, those woken while
//!   the phase runs (by a handler, a channel, another task) behind what is
//!   already queued, in the same turn; a task is polled at most once a
//!   turn, so one woken again after its poll waits for the next;
//! - a task completes at most 128 reads (of an [`AsyncConn`]) in one poll:
//!   then its next read wakes it and returns `Pending`, and it goes on in
//!   the next turn, after the other ready sources. A peer that pipelines
//!   thousands of lines, or floods, is served a slice a turn instead of
//!   holding up every other connection until its input runs out (50 such
//!   peers delayed another client by 340 ms without the budget, 12 ms with).
//!
//! Leaf futures are built on the loop's own machinery, not on a second
//! reactor: [`AsyncConn`] is a [`net`](crate::net) connection whose handler
//! buffers what arrives and wakes the task (accepted, or dialled with
//! [`connect`] or, from inside a task, [`AsyncConn::connect`]); [`sleep`] and [`timeout`] are
//! timers on the wheel (so a [`ManualClock`](crate::ManualClock) drives
//! them); [`AsyncReceiver`] is a channel source; [`spawn_blocking`] and
//! [`resolve`] run on the loop's worker pool
//! ([`Ctx::spawn_blocking`](crate::Ctx::spawn_blocking)), whose result
//! channel wakes the task. What a future asks of the
//! loop while it is polled (send these bytes, arm this timer) is noted and
//! done by the loop the moment the poll returns, so writes made in one poll
//! leave together, in one system call, as a handler's corked writes do
//! (a large one may go at once: see [`AsyncConn::write_all`]).
//!
//! The leaf futures need nothing but the `Context` they are polled with,
//! so any executor-agnostic combinator works on them: this layer has no
//! `select` or `join` of its own (`futures-util`'s, or a `poll_fn` over two
//! futures, wait on a line and a channel at once); to read and write one
//! connection from two tasks (a proxy copying both ways), split it with
//! [`AsyncConn::into_split`]. What each leaf does
//! when dropped before it returns is in its docs ([`AsyncConn`]'s
//! "Cancellation"). A task reaches the loop's [`Ctx`] only through what
//! the leaves offer (and [`stop`], [`cancel`], [`spawn`]): a source it
//! needs (a channel to receive from, a listener) is registered by the
//! code that spawns it and moved in.
//!
//! ```
//! use std::time::Duration;
//! use evloop::{task, EventLoop};
//!
//! let mut el = EventLoop::<()>::new()?;
//! let (tx, rx) = evloop::channel::<u32>();
//! let mut rx = task::AsyncReceiver::register(&mut el, rx)?;
//! el.spawn(async move {
//!     task::sleep(Duration::from_millis(1)).await;
//!     tx.send(7).unwrap();
//! })?;
//! let got = el.block_on(&mut (), async move { rx.recv().await })?;
//! assert_eq!(got, Some(7));
//! # Ok::<(), std::io::Error>(())
//! ```

mod blocking;
mod channel;
mod hub;
mod join;
mod net;
mod time;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use mio::Interest;

use crate::remote::{LocalWakes, Notifier};
use crate::source::{Attach, Entry};
use crate::{Action, Ctx, Event, EventLoop, Priority, SourceId};

pub use blocking::{resolve, spawn_blocking};
pub use channel::AsyncReceiver;
pub(crate) use hub::Hub;
pub use join::JoinHandle;
pub use net::{connect, listen, AsyncConn, AsyncListener, ReadHalf, WriteHalf};
pub use time::{sleep, sleep_until, timeout, yield_now, Sleep};

/// A boxed task, as the table keeps it.
type Task = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// The id of the task being polled on this thread.
    static CURRENT: Cell<Option<SourceId>> = const { Cell::new(None) };
    /// The hub of the task being polled, so leaf futures (which get only a
    /// `Context`) reach their loop. Left in place between polls: setting it
    /// only when the loop changes saves two reference counts a poll, and a
    /// weak reference holds no buffer, timer or waker of a dropped loop.
    static CURRENT_HUB: RefCell<Weak<Hub>> = const { RefCell::new(Weak::new()) };
    /// `CURRENT_HUB`'s address, to tell a poll of the same loop's task with
    /// one load (`CURRENT_HUB` has a destructor, so each access to it
    /// checks its registration first). The weak reference keeps the
    /// allocation, so no other hub can have this address meanwhile.
    static CURRENT_HUB_AT: Cell<usize> = const { Cell::new(0) };
    /// Its address tells threads apart without a system call or a
    /// reference count (`thread::current()` clones an `Arc`).
    static THREAD_MARK: u8 = const { 0 };
}

fn thread_mark() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// The hub of the task being polled, and its id.
pub(crate) fn current_hub() -> Option<(Rc<Hub>, SourceId)> {
    let id = current()?;
    Some((CURRENT_HUB.with(|h| h.borrow().upgrade())?, id))
}

/// Whether a future of `hub`'s loop is being polled on this thread, innermost
/// (not a future of another loop polled inside it, through that loop's
/// `block_on`).
pub(crate) fn polls_now(hub: &Hub) -> bool {
    hub.polling.get() && CURRENT_HUB_AT.with(Cell::get) == hub as *const Hub as usize
}

/// The id of the task being polled on this thread (`None` outside a
/// task's poll). [`EventLoop::block_on`]'s future counts as a task here,
/// with the id of the source that stands for it while it runs (so the
/// task API works inside it); cancelling that id does nothing.
pub fn current() -> Option<SourceId> {
    CURRENT.with(Cell::get)
}

fn not_in_task() -> io::Error {
    io::Error::other("evloop: called outside a task (only a future the loop polls can)")
}

/// Spawn `future` from inside a task. It is placed in the source table when
/// the current poll returns, before anything else is dispatched, and first
/// polled in this turn's dispatch phase; it learns its id with
/// [`current`]. Await the returned [`JoinHandle`] for its output, or drop
/// it to let the task run on. Outside a task (where there is a [`Ctx`])
/// use [`Ctx::spawn`], which returns the id.
///
/// ```
/// use evloop::task;
///
/// let mut el = evloop::EventLoop::<()>::new()?;
/// let sum = el.block_on(&mut (), async {
///     let a = task::spawn(async { 20 }).unwrap();
///     let b = task::spawn(async { 22 }).unwrap();
///     a.await.unwrap() + b.await.unwrap()
/// })?;
/// assert_eq!(sum, 42);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F>(future: F) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + 'static,
{
    let (hub, _) = current_hub().ok_or_else(not_in_task)?;
    let (task, handle) = join::joined(future);
    hub.push_spawn(Box::pin(task));
    Ok(handle)
}

/// [`spawn`] with no handle (eventlet's `spawn_n`): for a task whose output
/// nobody awaits, such as one per connection. It costs nothing beyond the
/// task itself (a [`JoinHandle`] needs a shared slot and a wrapper: about
/// a hundred bytes a task).
pub fn spawn_n<F>(future: F) -> io::Result<()>
where
    F: Future<Output = ()> + 'static,
{
    let (hub, _) = current_hub().ok_or_else(not_in_task)?;
    hub.push_spawn(Box::pin(future));
    Ok(())
}

/// Stop the loop from inside a task, as [`Ctx::stop`]: the turn under way
/// ends, then every task is dropped and `run` returns.
///
/// ```
/// use evloop::{task, EventLoop};
///
/// let mut el = EventLoop::<()>::new()?;
/// el.spawn(async {
///     task::yield_now().await;
///     task::stop().unwrap();
/// })?;
/// el.run(&mut ())?; // returns: the task stopped it
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stop() -> io::Result<()> {
    let (hub, _) = current_hub().ok_or_else(not_in_task)?;
    hub.push(hub::Op::Stop);
    Ok(())
}

/// Cancel task `id` from inside a task (itself included): done when the
/// current poll returns, as [`Ctx::cancel_task`]. A stale id is a no-op.
pub fn cancel(id: SourceId) -> io::Result<()> {
    let (hub, _) = current_hub().ok_or_else(not_in_task)?;
    hub.push(hub::Op::CancelTask(id));
    Ok(())
}

/// Keep `cx`'s waker in `slot` (cloning only when it changed: a task's
/// waker is the same on every poll, so waiting again allocates nothing).
pub(crate) fn wait_in(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A value the loop hands to one waiting future (a blocking job's result,
/// a connection a task asked for), shared by the two.
pub(crate) struct Reply<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

impl<T> Default for Reply<T> {
    fn default() -> Self {
        Reply {
            value: None,
            waker: None,
        }
    }
}

impl<T> Reply<T> {
    /// Leave `value` and wake whoever waits (not while borrowed: the wake
    /// may poll at once).
    pub(crate) fn fill(cell: &RefCell<Reply<T>>, value: T) {
        let waker = {
            let mut reply = cell.borrow_mut();
            reply.value = Some(value);
            reply.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The value once it is there; until then, wait for it.
    pub(crate) fn poll_take(cell: &RefCell<Reply<T>>, cx: &Context<'_>) -> Poll<T> {
        let mut reply = cell.borrow_mut();
        match reply.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                wait_in(&mut reply.waker, cx);
                Poll::Pending
            }
        }
    }
}

/// Who waits for something that comes again and again (a connection's
/// input): its waker is kept between waits, so waiting again and being
/// woken touch no reference count.
#[derive(Default)]
pub(crate) struct Waiter {
    waker: Option<Waker>,
    waiting: bool,
    /// The task that waits, when the poll that waited was a task's (not
    /// `block_on`'s): what arrives may be handed to it in place.
    task: Option<SourceId>,
}

impl Waiter {
    /// Wait with `cx`'s waker, as task `task` if a task's poll waits.
    pub(crate) fn wait(&mut self, cx: &Context<'_>, task: Option<SourceId>) {
        wait_in(&mut self.waker, cx);
        self.waiting = true;
        self.task = task;
    }

    /// The task that waits, if one does and is known: it is no longer
    /// waiting (the caller polls it or, failing that, calls [`rouse`](Self::rouse)).
    pub(crate) fn take_task(&mut self) -> Option<SourceId> {
        if self.has_task() {
            self.waiting = false;
            return self.task;
        }
        None
    }

    /// Whether a task waits (one [`take_task`](Self::take_task) would give).
    #[inline]
    pub(crate) fn has_task(&self) -> bool {
        self.waiting && self.task.is_some()
    }

    /// Wake the kept waker, waiting or not.
    pub(crate) fn rouse(&mut self) {
        self.waiting = false;
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    /// Wake the waiter, if one waits (a kept waker of a task that has moved
    /// on to something else is not woken).
    pub(crate) fn wake(&mut self) {
        if std::mem::take(&mut self.waiting) {
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        }
    }
}

/// Wake whoever waits in `slot`.
pub(crate) fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// Makes one task ready, from any thread.
struct TaskWaker {
    id: SourceId,
    /// Woken since its last poll began: later wakes have nothing to add.
    woken: AtomicBool,
    home: usize,
    local: Arc<LocalWakes>,
    remote: Notifier,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if thread_mark() == self.home {
            // Only the loop's thread clears the flag, so on it a load and a
            // store do (a locked swap costs more than the rest of the wake).
            // A remote wake racing with this one queues the task twice at
            // worst, and the dispatch phase merges the two.
            if !self.woken.load(Ordering::Acquire) {
                self.woken.store(true, Ordering::Release);
                self.local.push(self.id);
            }
        } else if !self.woken.swap(true, Ordering::AcqRel) {
            self.remote.notify();
        }
    }
}

/// Sets [`CURRENT`] for one poll and puts back what was there, also when
/// the poll panics.
struct Polling<'a> {
    hub: &'a Rc<Hub>,
    prev: Option<SourceId>,
    /// The hub that was current, if it was another loop's (a task polling
    /// a second loop's `block_on`).
    prev_hub: Option<Weak<Hub>>,
    was_polling: bool,
    /// The budget of the poll this one is inside, if any.
    prev_budget: u32,
}

impl<'a> Polling<'a> {
    fn enter(hub: &'a Rc<Hub>, id: SourceId) -> Polling<'a> {
        let prev = CURRENT.with(|c| c.replace(Some(id)));
        let prev_hub = if CURRENT_HUB_AT.with(Cell::get) == Rc::as_ptr(hub) as usize {
            None
        } else {
            // Only a poll inside another's needs it back afterwards.
            set_current_hub(Rc::downgrade(hub)).filter(|_| prev.is_some())
        };
        let was_polling = hub.polling.replace(true);
        let prev_budget = hub.budget.replace(hub::POLL_BUDGET);
        Polling {
            hub,
            prev,
            prev_hub,
            was_polling,
            prev_budget,
        }
    }
}

/// Make `hub` the current hub; returns the one it replaces.
#[cold]
#[inline(never)]
fn set_current_hub(hub: Weak<Hub>) -> Option<Weak<Hub>> {
    CURRENT_HUB_AT.with(|at| at.set(hub.as_ptr() as usize));
    Some(CURRENT_HUB.with(|h| std::mem::replace(&mut *h.borrow_mut(), hub)))
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        if let Some(prev_hub) = self.prev_hub.take() {
            set_current_hub(prev_hub);
        }
        self.hub.polling.set(self.was_polling);
        self.hub.budget.set(self.prev_budget);
        if std::thread::panicking() {
            // The executor will not apply what the poll asked for: the hub's
            // own source will.
            self.hub.wake_self();
        }
    }
}

/// Poll `fut` as task `id`, then do what it asked of the loop.
fn poll_as<S, T>(
    fut: Pin<&mut dyn Future<Output = T>>,
    waker: &Waker,
    inner: &TaskWaker,
    hub: &Rc<Hub>,
    ctx: &mut Ctx<S>,
) -> Poll<T> {
    inner.woken.store(false, Ordering::Release);
    let poll = {
        let _current = Polling::enter(hub, inner.id);
        fut.poll(&mut Context::from_waker(waker))
    };
    if hub.in_place.get().is_none() {
        hub.apply(ctx);
    }
    // else the connection whose dispatch polled the task applies it, with
    // the connection at hand (it is out of the table meanwhile)
    poll
}

/// A task's row in the source table.
struct TaskEntry {
    future: Task,
    waker: Waker,
    inner: Arc<TaskWaker>,
    hub: Rc<Hub>,
    /// The turn of its last poll: a task is polled at most once a turn,
    /// also when it was polled in a connection's place (which the loop's
    /// ready list does not see).
    polled_turn: u64,
}

impl<S> Entry<S> for TaskEntry {
    fn attach(&mut self, how: Attach<'_>, _link: &crate::remote::Link) -> io::Result<()> {
        // Nothing to poll for. Registered (spawned or resumed): poll it
        // once, since wakes while it was paused were dropped.
        if let Attach::Register { .. } = how {
            self.inner.local.push(self.inner.id);
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Event, ctx: &mut Ctx<S>, _state: &mut S) -> Action {
        if self.polled_turn == ctx.turn_no {
            // Polled in a connection's place earlier this turn: a wake since
            // then waits for the next turn, and an older one was served.
            return if self.inner.woken.load(Ordering::Acquire) {
                Action::Reschedule
            } else {
                Action::Keep
            };
        }
        self.polled_turn = ctx.turn_no;
        self.hub.handed.set(true);
        hot_trace!("evloop: poll task {}", ev.id);
        self.hub.running.set(Some(ev.id));
        let poll = poll_as(self.future.as_mut(), &self.waker, &self.inner, &self.hub, ctx);
        self.hub.running.set(None);
        if poll.is_ready() {
            log::trace!("evloop: task {} finished", ev.id);
            return Action::Close;
        }
        Action::Keep
    }

    fn source_any(&mut self) -> Option<&mut dyn Any> {
        // Lets `cancel_task` tell a task from other sources.
        Some(&mut self.inner)
    }
}

/// Make the waker of the source reserved as `id`.
fn waker_for<S>(ctx: &Ctx<S>, hub: &Hub, id: SourceId) -> (Arc<TaskWaker>, Waker) {
    let inner = Arc::new(TaskWaker {
        id,
        // Its first poll is queued when it is registered.
        woken: AtomicBool::new(true),
        home: thread_mark(),
        local: hub.local.clone(),
        remote: ctx.link.notifier(id),
    });
    let waker = Waker::from(inner.clone());
    (inner, waker)
}

/// Put a boxed task into the source table.
pub(crate) fn spawn_boxed<S>(ctx: &mut Ctx<S>, future: Task) -> io::Result<SourceId> {
    let hub = Hub::of(ctx)?;
    let id = ctx.reserve(Priority::Normal)?;
    let (inner, waker) = waker_for(ctx, &hub, id);
    let entry = TaskEntry {
        future,
        waker,
        inner,
        hub,
        polled_turn: 0,
    };
    ctx.fill_reserved(id, Box::new(entry), Interest::READABLE)?;
    log::trace!("evloop: spawn task {id}");
    Ok(id)
}

impl<S> Ctx<S> {
    /// Spawn a task: `future` is polled in the dispatch phase whenever it
    /// is woken, first in this turn's (or the next) dispatch phase, like a
    /// ready source with [`Priority::Normal`] (change it
    /// with [`set_priority`](Self::set_priority)). It runs until it
    /// finishes or is cancelled; the returned id names it.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// let mut el = evloop::EventLoop::<()>::new()?;
    /// let done = Rc::new(Cell::new(false));
    /// let flag = done.clone();
    /// let id = el.spawn(async move { flag.set(true) })?;
    /// el.turn(&mut (), None)?;
    /// assert!(done.get() && !el.is_open(id), "finished tasks are closed");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F>(&mut self, future: F) -> io::Result<SourceId>
    where
        F: Future<Output = ()> + 'static,
    {
        spawn_boxed(self, Box::pin(future))
    }

    /// Cancel task `id`: it is not polled again, even if woken in this
    /// turn, and its future is dropped in the reclaim phase (connections it
    /// owned are then closed). Works from a handler, from the owner, and
    /// (through [`task::cancel`](cancel)) from a task, itself included.
    /// Returns false (a no-op) for a stale id or a source that is no task.
    pub fn cancel_task(&mut self, id: SourceId) -> bool {
        let running = self.tasks.as_ref().and_then(|h| h.running.get()) == Some(id);
        let is_task = running || self.source_mut::<Arc<TaskWaker>>(id).is_some();
        is_task && self.close(id)
    }
}

/// What `block_on` registers for its future: a source whose dispatch only
/// notes that the future was woken.
struct Woken(Rc<Cell<bool>>);

impl<S> Entry<S> for Woken {
    fn attach(&mut self, _how: Attach<'_>, _link: &crate::remote::Link) -> io::Result<()> {
        Ok(())
    }

    fn dispatch(&mut self, _ev: Event, _ctx: &mut Ctx<S>, _state: &mut S) -> Action {
        self.0.set(true);
        Action::Keep
    }

    fn source_any(&mut self) -> Option<&mut dyn Any> {
        None
    }
}

/// Dropping the loop drops every task first, and does what their drops
/// noted while the connections are still there (a connection whose task
/// was cut off mid-`write_all` is reset, not closed with a FIN after part
/// of it); then the source table, then what the hub still holds: tasks
/// spawned and not yet placed (a poll that panicked under
/// [`PanicPolicy::Propagate`](crate::PanicPolicy) left its children there)
/// and notes not yet applied. Those can hold the hub itself (a child's
/// connection does), a cycle nothing else would break.
impl<S> Drop for EventLoop<S> {
    fn drop(&mut self) {
        let Some(hub) = self.tasks.clone() else {
            return;
        };
        if self.close_tasks(&hub) {
            hub.apply(self);
        }
        self.tasks = None;
        drop(std::mem::take(&mut self.sources));
        hub.clear();
    }
}

impl<S> EventLoop<S> {
    /// Turn the loop until `future` is done, and return its output. The
    /// future need not be `'static`; it is polled between turns whenever it
    /// was woken, and tasks, handlers and timers run meanwhile as usual.
    ///
    /// A panic in the future is not a task's: it is the caller's, and
    /// reaches the caller whatever the panic policy (the loop stays usable).
    ///
    /// Fails if a turn fails, or with [`Interrupted`](io::ErrorKind::Interrupted)
    /// if the loop is stopped ([`Ctx::stop`], [`Remote::stop`](crate::Remote::stop))
    /// before the future is done (the future is then dropped). A stop ends
    /// the spawned tasks too, as it does for [`run`](crate::EventLoop::run):
    /// a server spawned beside the future is gone after it. A stop asked
    /// for earlier and not yet honoured by a turn stops the first turn this
    /// takes.
    ///
    /// Under a [`ManualClock`](crate::ManualClock) time moves only when the
    /// clock is advanced, and advancing it wakes no sleeping poll: a future
    /// waiting on a sleep alone waits for good unless a handler or task
    /// advances the clock. Tests drive a manual clock with
    /// [`turn`](crate::EventLoop::turn) instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut el = evloop::EventLoop::<()>::new()?;
    /// let n = el.block_on(&mut (), async {
    ///     evloop::task::sleep(Duration::from_millis(2)).await;
    ///     42
    /// })?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block_on<F: Future>(&mut self, state: &mut S, future: F) -> io::Result<F::Output> {
        let hub = Hub::of(self)?;
        let id = self.reserve(Priority::Normal)?;
        let woken = Rc::new(Cell::new(false));
        let (inner, waker) = waker_for(self, &hub, id);
        self.fill_reserved(id, Box::new(Woken(woken.clone())), Interest::READABLE)?;
        let mut future = std::pin::pin!(future);
        // A panic in the future (or, under `PanicPolicy::Propagate`, in a
        // handler) leaves through here: its stand-in source must go all the
        // same, or every such call would leave one behind.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            if let Poll::Ready(out) = poll_as(future.as_mut(), &waker, &inner, &hub, self) {
                break Ok(out);
            }
            woken.set(false);
            let turned = self.turn_until_woken(state, &woken);
            if let Err(e) = turned {
                break Err(e);
            }
        }));
        // Gone when this returns, as a source closed in a turn is at its
        // end (it counted in `source_count` until the next turn).
        self.close(id);
        self.reclaim();
        result.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    }

    /// Turn until `woken` is set, or a turn fails or stops the loop.
    fn turn_until_woken(&mut self, state: &mut S, woken: &Cell<bool>) -> io::Result<()> {
        while !woken.get() {
            self.turn(state, None)?;
            if self.is_stopping() {
                self.end_tasks(state)?;
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "evloop: the loop was stopped before block_on's future was done",
                ));
            }
        }
        Ok(())
    }

    /// A stop ends every task: each is closed and its future dropped at
    /// once (so connections and listeners it owned note their closing in
    /// the hub), the hub closes them, and one turn that does not wait lets
    /// them write what the kernel takes and close.
    pub(crate) fn end_tasks(&mut self, state: &mut S) -> io::Result<()> {
        let Some(hub) = self.tasks.clone() else {
            return Ok(());
        };
        if !self.close_tasks(&hub) {
            return Ok(());
        }
        hub.apply(self);
        self.turn(state, Some(std::time::Duration::ZERO))?;
        Ok(())
    }

    /// Close every task and drop its future at once (so connections and
    /// listeners it owned note their closing in the hub), and the tasks
    /// spawned and not yet placed; false if that left the hub nothing to
    /// do.
    fn close_tasks(&mut self, hub: &Hub) -> bool {
        let tasks: Vec<SourceId> = self
            .sources
            .iter_mut()
            .filter_map(|(index, slot)| {
                let id = SourceId::new(index, slot.seq);
                let task = slot.is_open(id) && slot.entry.as_mut()?.source_any()?.is::<Arc<TaskWaker>>();
                task.then_some(id)
            })
            .collect();
        // Tasks spawned in the stopping turn and not yet placed end too.
        drop(hub.take_spawned());
        // A task cancelled (or one that finished) in the stopping turn was
        // dropped at its reclaim: what it held noted its closing in the hub,
        // and that must be done before `run` returns, as for the others.
        if tasks.is_empty() && !hub.has_pending() {
            return false;
        }
        log::debug!("evloop: ending {} tasks", tasks.len());
        for id in tasks {
            self.close(id);
        }
        self.reclaim();
        true
    }
}
