//! The task layer's per-loop state: what futures ask of the loop while they
//! are polled, done by the loop when the poll returns.
//!
//! A future is polled with a `Context` and nothing else, so it cannot reach
//! the loop's [`Ctx`] (no `unsafe`, no pointer in a thread-local). Instead a
//! leaf future notes what it needs ([`Op`]) in the hub, which it finds
//! through the thread-local set for the poll, and the executor applies the
//! notes with the `Ctx` it holds right after the poll. An op noted outside
//! any poll (a connection handle dropped with its task, at reclaim) wakes
//! the hub's own source, which applies it in the next dispatch phase.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Interest;
use slab::Slab;

use super::net::Io;
use super::Task;
use crate::net::Conn;
use crate::remote::LocalWakes;
use crate::source::{Attach, Entry};
use crate::{Action, Ctx, Event, Priority, SourceId, TimerId};

/// Input buffers kept for reuse, at most (see [`Hub::give_buf`]).
const POOL_BUFFERS: usize = 1024;
/// Bytes of input buffers kept for reuse, at most.
const POOL_BYTES: usize = 1024 * 1024;
/// A larger input buffer is not kept for reuse.
const SPARE_KEEP: usize = POOL_BYTES / 4;
/// A larger staging buffer is not kept once its bytes are sent.
const STAGING_KEEP: usize = 256 * 1024;

/// Reads a task may complete in one poll before it must let the others
/// run (see [`Hub::may_read`]).
pub(crate) const POLL_BUDGET: u32 = 128;

/// When a sleep ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum When {
    At(Instant),
    /// From the turn's `now()` when the timer is armed.
    After(Duration),
}

/// Bytes a future asked to send on connection `conn`: `staging[start..end]`.
struct Write {
    conn: SourceId,
    io: Rc<RefCell<Io>>,
    start: usize,
    end: usize,
}

/// Something else a future asked of the loop.
pub(crate) enum Op {
    /// Read from connection `conn` again.
    Resume(SourceId),
    /// Shut connection `conn`'s write half once its queue is written.
    Shutdown(SourceId),
    /// Close connection `conn` once its queue is written.
    Close(SourceId),
    /// Close connection `conn` now, dropping its queue.
    Abort(SourceId),
    /// Close connection `conn` now with a reset: its stream was cut short.
    Reset(SourceId),
    /// Close a source (a listener whose handle was dropped).
    CloseSource(SourceId),
    /// Arm the timer of sleep slot `slot`.
    Arm {
        slot: usize,
        when: When,
    },
    /// Cancel the timer of sleep slot `slot` and free the slot.
    Disarm(usize),
    CancelTask(SourceId),
    /// Stop the loop.
    Stop,
    /// Start a job on the worker pool; its result goes to `slot`.
    Blocking {
        work: super::blocking::Work,
        slot: Rc<RefCell<super::blocking::Slot>>,
    },
    /// Connect for a task; the connection goes to `slot`.
    Connect {
        to: crate::net::Target,
        cfg: crate::net::ConnectConfig,
        slot: Rc<RefCell<super::net::Dialing>>,
    },
}

/// A sleep's timer, as the sleep and the timer callback share it.
pub(crate) struct TimerSlot {
    pub(crate) timer: Option<TimerId>,
    pub(crate) fired: bool,
    pub(crate) waker: Option<std::task::Waker>,
}

/// Empty a staging buffer whose bytes were sent; a large one is freed.
fn keep_or_free(staging: &mut Vec<u8>) {
    if staging.capacity() > STAGING_KEEP {
        *staging = Vec::new();
    } else {
        staging.clear();
    }
}

/// The task layer's state for one loop.
pub(crate) struct Hub {
    /// The hub's own source (applies ops noted outside any poll).
    id: SourceId,
    pub(super) local: Arc<LocalWakes>,
    /// A task of this hub is being polled: its ops are applied after it.
    pub(super) polling: Cell<bool>,
    /// The task being dispatched (its entry is out of the table meanwhile).
    pub(super) running: Cell<Option<SourceId>>,
    /// The connection in whose dispatch a task is being polled (see
    /// [`Hub::poll_in_place`]): what the task asks is applied afterwards,
    /// with that connection at hand.
    pub(super) in_place: Cell<Option<SourceId>>,
    /// The socket of the connection `in_place` names, while a large write
    /// may go straight to it (see [`Hub::send_direct`]).
    direct: Cell<Option<std::os::fd::RawFd>>,
    /// What the direct sends of the poll in place came to, for the
    /// connection once its task's poll returns: bytes went out (activity
    /// for its idle timeout), or the error one met.
    direct_sent: Cell<bool>,
    direct_failed: RefCell<Option<io::Error>>,
    /// Reads the task being polled may still complete in this poll.
    pub(super) budget: Cell<u32>,
    /// Set when a task's poll begins: tells `poll_in_place` whether the
    /// task it handed the dispatch to was polled.
    pub(super) handed: Cell<bool>,
    /// Sends, kept apart from the other ops: they are the common case, and
    /// applied in place, without moving them, they cost no more than the
    /// write itself.
    writes: RefCell<Vec<Write>>,
    ops: RefCell<Vec<Op>>,
    /// The ops being applied (kept to reuse the vector).
    applying: RefCell<Vec<Op>>,
    /// Bytes that writes refer to.
    staging: RefCell<Vec<u8>>,
    /// Bytes for the connection in whose dispatch a task is polled: they
    /// go straight into it afterwards, with no note and no look-up.
    here: RefCell<Vec<u8>>,
    spawned: RefCell<Vec<Task>>,
    pub(crate) timers: RefCell<Slab<TimerSlot>>,
    /// Input buffers of connections whose task has read everything: the
    /// last one given back, and the others.
    spare: Cell<Vec<u8>>,
    pool: RefCell<Vec<Vec<u8>>>,
    pooled: Cell<usize>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The hub's row in the source table.
struct HubEntry(Rc<Hub>);

impl<S> Entry<S> for HubEntry {
    fn attach(&mut self, _how: Attach<'_>, _link: &crate::remote::Link) -> io::Result<()> {
        Ok(())
    }

    fn dispatch(&mut self, _ev: Event, ctx: &mut Ctx<S>, _state: &mut S) -> Action {
        self.0.apply(ctx);
        Action::Keep
    }

    fn source_any(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

impl Hub {
    /// The loop's hub, made (with its source and the loop's local wake
    /// list) the first time a task needs it.
    pub(crate) fn of<S>(ctx: &mut Ctx<S>) -> io::Result<Rc<Hub>> {
        if let Some(hub) = &ctx.tasks {
            return Ok(hub.clone());
        }
        let local = ctx
            .local_wakes
            .get_or_insert_with(|| Arc::new(LocalWakes::new()))
            .clone();
        let id = ctx.reserve(Priority::Normal)?;
        let hub = Rc::new(Hub {
            id,
            local,
            polling: Cell::new(false),
            running: Cell::new(None),
            in_place: Cell::new(None),
            direct: Cell::new(None),
            budget: Cell::new(POLL_BUDGET),
            direct_sent: Cell::new(false),
            direct_failed: RefCell::new(None),
            handed: Cell::new(false),
            writes: RefCell::new(Vec::new()),
            ops: RefCell::new(Vec::new()),
            applying: RefCell::new(Vec::new()),
            staging: RefCell::new(Vec::new()),
            here: RefCell::new(Vec::new()),
            spawned: RefCell::new(Vec::new()),
            timers: RefCell::new(Slab::new()),
            spare: Cell::new(Vec::new()),
            pool: RefCell::new(Vec::new()),
            pooled: Cell::new(0),
        });
        ctx.fill_reserved(id, Box::new(HubEntry(hub.clone())), Interest::READABLE)?;
        ctx.tasks = Some(hub.clone());
        Ok(hub)
    }

    /// Have the hub's source apply what is noted, in the next dispatch phase.
    pub(super) fn wake_self(&self) {
        if self.has_notes() {
            self.local.push(self.id);
        }
    }

    fn has_notes(&self) -> bool {
        !self.writes.borrow().is_empty() || !self.ops.borrow().is_empty() || !self.spawned.borrow().is_empty()
    }

    pub(crate) fn push(&self, op: Op) {
        self.ops.borrow_mut().push(op);
        if !self.polling.get() {
            self.local.push(self.id);
        }
    }

    /// Whether futures noted anything the loop has not done yet.
    pub(super) fn has_pending(&self) -> bool {
        !self.writes.borrow().is_empty() || !self.ops.borrow().is_empty() || !self.spawned.borrow().is_empty()
    }

    /// Drop what futures noted and the loop will not do (it is being
    /// dropped); dropping a spawned future can note more.
    pub(crate) fn clear(&self) {
        loop {
            let spawned = self.spawned.take();
            let ops = self.ops.take();
            let writes = self.writes.take();
            if spawned.is_empty() && ops.is_empty() && writes.is_empty() {
                return;
            }
            drop((spawned, ops, writes));
        }
    }

    /// Tasks spawned and not yet placed in the table.
    pub(super) fn take_spawned(&self) -> Vec<Task> {
        self.spawned.take()
    }

    pub(super) fn push_spawn(&self, task: Task) {
        self.spawned.borrow_mut().push(task);
        if !self.polling.get() {
            self.local.push(self.id);
        }
    }

    /// Note `data` to be sent on connection `conn` when the poll returns.
    /// Writes to one connection in one poll are sent together (after a
    /// direct send, if any: see [`send_direct`](Self::send_direct)).
    #[inline]
    pub(crate) fn stage(&self, conn: SourceId, io: &Rc<RefCell<Io>>, data: &[u8]) {
        if self.in_place.get() == Some(conn) {
            self.here.borrow_mut().extend_from_slice(data);
            return;
        }
        let mut staging = self.staging.borrow_mut();
        let start = staging.len();
        staging.extend_from_slice(data);
        let end = staging.len();
        drop(staging);
        let mut writes = self.writes.borrow_mut();
        match writes.last_mut() {
            Some(w) if w.conn == conn && w.end == start => w.end = end,
            _ => writes.push(Write {
                conn,
                io: io.clone(),
                start,
                end,
            }),
        }
        drop(writes);
        if !self.polling.get() {
            self.local.push(self.id);
        }
    }

    /// Send `data` for connection `conn` straight to its socket, when it
    /// is the one being dispatched, nothing written before waits (in its
    /// queue or in `here`), and `data` is as large as the connection would
    /// itself send at once rather than queue (the kernel copies it from
    /// the task's own buffer, with no copy into `here` on the way). How many
    /// bytes the kernel took; the caller stages the rest. An error (other
    /// than a full socket) fails the connection when the poll returns, with
    /// the reason its own write would have found: the socket reports an
    /// error once, and a second send would only see EPIPE.
    #[inline]
    pub(crate) fn send_direct(&self, conn: SourceId, data: &[u8]) -> usize {
        if data.len() < crate::net::DIRECT_WRITE_MIN || self.in_place.get() != Some(conn) {
            return 0;
        }
        let Some(fd) = self.direct.get() else {
            return 0;
        };
        if !self.here.borrow().is_empty() || !self.writes.borrow().is_empty() {
            return 0;
        }
        match crate::net::send_fd(fd, data) {
            Ok(n) => {
                hot_trace!("evloop: {conn} wrote {n} bytes from its task");
                self.direct_sent.set(self.direct_sent.get() | (n > 0));
                if n < data.len() {
                    // The socket is full: the rest queues behind.
                    self.direct.set(None);
                }
                n
            }
            Err(e) => {
                self.direct.set(None);
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    *self.direct_failed.borrow_mut() = Some(e);
                }
                0
            }
        }
    }

    /// Whether the task being polled may complete another read. A task
    /// whose peer sends faster than it is served (a pipeline of thousands
    /// of lines, a flood) would otherwise run for as long as input lasts,
    /// in one poll, while every other source waits: after
    /// [`POLL_BUDGET`] reads it is woken instead, and goes on in the next
    /// turn, after the others. Outside this loop's polls (a future polled
    /// by hand, or inside another loop's `block_on`, which cannot return
    /// before its future does) there is no budget.
    #[inline]
    pub(crate) fn may_read(&self, cx: &std::task::Context<'_>) -> bool {
        if self.budget.get() > 0 || !super::polls_now(self) {
            return true;
        }
        hot_trace!("evloop: task {:?} used its poll's budget", self.running.get());
        cx.waker().wake_by_ref();
        false
    }

    /// A read completed (see [`may_read`](Self::may_read)).
    #[inline]
    pub(crate) fn spend(&self) {
        self.budget.set(self.budget.get().saturating_sub(1));
    }

    /// An input buffer for a connection that has none.
    #[inline]
    pub(crate) fn take_buf(&self) -> Vec<u8> {
        let spare = self.spare.take();
        if spare.capacity() > 0 {
            return spare;
        }
        match self.pool.borrow_mut().pop() {
            Some(buf) => {
                self.pooled.set(self.pooled.get() - buf.capacity());
                buf
            }
            None => Vec::new(),
        }
    }

    /// An input buffer the task has read to its end: kept for the next
    /// connection that receives something, within limits (an idle
    /// connection holds none, and a burst does not pin memory).
    pub(crate) fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > SPARE_KEEP {
            return;
        }
        buf.clear();
        // The spare first: a task that reads each message to its end gives
        // back and takes again the same buffer, with no pool to keep count of.
        let buf = self.spare.replace(buf);
        let cap = buf.capacity();
        if cap == 0 {
            return;
        }
        let mut pool = self.pool.borrow_mut();
        if pool.len() < POOL_BUFFERS && self.pooled.get() + cap <= POOL_BYTES {
            self.pooled.set(self.pooled.get() + cap);
            pool.push(buf);
        }
    }

    /// Poll `task`, which waits on `conn`'s input, in `conn`'s dispatch
    /// (see [`Ctx::dispatch_now`]), then do what it asked. False if it was
    /// not polled (its priority is below the connection's, it was polled
    /// already this turn, or it is gone): the caller wakes it instead.
    pub(crate) fn poll_in_place<S>(
        self: &Rc<Self>,
        task: SourceId,
        conn: &mut Conn,
        io: &RefCell<Io>,
        ctx: &mut Ctx<S>,
        state: &mut S,
    ) -> bool {
        self.handed.set(false);
        self.in_place.set(Some(conn.id()));
        // The socket stays open while its dispatch is up the stack: what
        // the task asks of the connection (a close) is applied afterwards.
        self.direct.set(conn.direct_fd());
        ctx.dispatch_now(task, conn.id(), state);
        self.in_place.set(None);
        self.direct.set(None);
        if self.direct_sent.take() {
            conn.wrote_directly();
        }
        if let Some(e) = self.direct_failed.take() {
            log::debug!("evloop: {} failed: {e}", conn.id());
            conn.fail_write(&e);
        }
        {
            let mut here = self.here.borrow_mut();
            if !here.is_empty() {
                let room = crate::net::task_write(conn, &here);
                keep_or_free(&mut here);
                io.borrow_mut().sent(room);
            }
        }
        self.apply_with(ctx, Some(conn));
        self.handed.get()
    }

    /// Do what the futures asked, in the order they asked it.
    pub(crate) fn apply<S>(self: &Rc<Self>, ctx: &mut Ctx<S>) {
        self.apply_with(ctx, None);
    }

    /// [`apply`](Self::apply), with `here` (the connection being
    /// dispatched, so out of the table) served directly.
    fn apply_with<S>(self: &Rc<Self>, ctx: &mut Ctx<S>, mut here: Option<&mut Conn>) {
        // Sends first: a shutdown or close a future notes after a write
        // must follow it, and nothing a future can note goes before a send.
        if !self.writes.borrow().is_empty() {
            self.apply_writes(ctx, here.as_deref_mut());
        }
        if self.ops.borrow().is_empty() && self.spawned.borrow().is_empty() {
            return;
        }
        self.apply_ops(ctx, here);
    }

    fn apply_writes<S>(&self, ctx: &mut Ctx<S>, mut here: Option<&mut Conn>) {
        {
            // Held across the sends: writing to a connection from outside
            // its dispatch runs no handler and no future, so nothing can
            // note more while these are borrowed.
            let writes = self.writes.borrow();
            let staging = self.staging.borrow();
            for w in writes.iter() {
                let data = &staging[w.start..w.end];
                let room = match here.as_deref_mut() {
                    Some(conn) if conn.id() == w.conn => crate::net::task_write(conn, data),
                    _ => crate::net::write_then_room(ctx, w.conn, data),
                };
                w.io.borrow_mut().sent(room);
            }
        }
        self.writes.borrow_mut().clear();
        keep_or_free(&mut self.staging.borrow_mut());
    }

    #[inline(never)]
    fn apply_ops<S>(self: &Rc<Self>, ctx: &mut Ctx<S>, mut here: Option<&mut Conn>) {
        let mut ops = self.applying.take();
        std::mem::swap(&mut ops, &mut *self.ops.borrow_mut());
        for op in ops.drain(..) {
            match (op, here.as_deref_mut()) {
                (Op::Resume(id), Some(conn)) if conn.id() == id => conn.resume_reading(),
                (Op::Shutdown(id), Some(conn)) if conn.id() == id => conn.shutdown_write(),
                (Op::Close(id), Some(conn)) if conn.id() == id => conn.close(),
                (Op::Abort(id), Some(conn)) if conn.id() == id => conn.abort(),
                (Op::Reset(id), Some(conn)) if conn.id() == id => conn.reset(),
                (op, _) => self.apply_one(op, ctx),
            }
        }
        *self.applying.borrow_mut() = ops;
        let spawned = self.spawned.take();
        for task in spawned {
            if let Err(e) = super::spawn_boxed(ctx, task) {
                log::error!("evloop: spawning a task failed: {e}");
            }
        }
    }

    fn apply_one<S>(self: &Rc<Self>, op: Op, ctx: &mut Ctx<S>) {
        match op {
            Op::Resume(conn) => {
                crate::net::resume_reading(ctx, conn);
            }
            Op::Shutdown(conn) => {
                crate::net::shutdown_write(ctx, conn);
            }
            Op::Close(conn) => {
                crate::net::close(ctx, conn);
            }
            Op::Abort(conn) => {
                crate::net::abort(ctx, conn);
            }
            Op::Reset(conn) => {
                crate::net::reset(ctx, conn);
            }
            Op::CloseSource(id) => {
                ctx.close(id);
            }
            Op::Arm { slot, when } => self.arm(slot, when, ctx),
            Op::Disarm(slot) => {
                if let Some(s) = self.timers.borrow_mut().try_remove(slot) {
                    if let Some(t) = s.timer {
                        ctx.cancel_timer(t);
                    }
                }
            }
            Op::CancelTask(id) => {
                ctx.cancel_task(id);
            }
            Op::Stop => ctx.stop(),
            Op::Blocking { work, slot } => super::blocking::start(work, slot, ctx),
            Op::Connect { to, cfg, slot } => super::net::dial(ctx, &to, cfg, &slot),
        }
    }

    fn arm<S>(self: &Rc<Self>, slot: usize, when: When, ctx: &mut Ctx<S>) {
        let hub = self.clone();
        let fire = move |_: crate::Fired, _: &mut Ctx<S>, _: &mut S| hub.fire(slot);
        let timer = match when {
            When::At(at) => ctx.timer_at(at, fire),
            When::After(d) => ctx.timer_after(d, fire),
        };
        match self.timers.borrow_mut().get_mut(slot) {
            Some(s) => s.timer = Some(timer),
            None => {
                ctx.cancel_timer(timer);
            }
        }
    }

    fn fire(&self, slot: usize) {
        let waker = match self.timers.borrow_mut().get_mut(slot) {
            Some(s) => {
                s.fired = true;
                s.timer = None;
                s.waker.take()
            }
            None => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}
