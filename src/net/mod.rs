//! Networking on top of the core loop: listeners, buffered connections,
//! UDP, and name resolution. The core knows nothing of this module;
//! everything here is built from the public [`Ctx`] API (sources, timers,
//! scheduling, blocking work).
//!
//! The functions here that take a connection's id ([`write()`], [`close()`],
//! [`shutdown_write`]...) are for the rest of the loop: other connections,
//! timers, deferred work. Inside a connection's own callbacks use the
//! [`Conn`] they are given: while its handler runs the connection is out of
//! the table, so a call by its own id finds nothing (`write`, `close`,
//! `abort`, `shutdown_write`, `resume_reading` and `try_write` refuse it
//! with a warning in the log; `has_room` says true).

mod conn;
mod connect;
mod driver;
mod listener;
mod resolve;
mod stream;
mod udp;

pub(crate) use conn::DIRECT_WRITE_MIN;
pub use conn::{CloseReason, Conn, ConnConfig, Handler, IdleMode, WriteError};
pub use connect::{connect, ConnectConfig, Connector, Target};
pub use listener::{listen, ListenConfig, Listener, Listening};
pub(crate) use resolve::lookup as lookup_host;
pub use resolve::{resolve, split_host_port};
pub(crate) use stream::send_fd;
pub use stream::{Addr, Stream};
pub use udp::{bind_udp, send_to, Udp};

use crate::{Ctx, SourceId};

/// Write to connection `id` from anywhere in the loop (another connection's
/// handler, a timer, a deferred callback). Returns false if `id` is not an
/// open connection or the write was refused (see [`Conn::write`]).
pub fn write<S>(ctx: &mut Ctx<S>, id: SourceId, data: &[u8]) -> bool {
    write_with(ctx, id, data, Conn::write)
}

/// Write to connection `id` with `f` (a [`Conn`] write method), then make
/// sure its driver runs if it now has output to flush or a close to make.
#[inline]
fn write_with<S>(
    ctx: &mut Ctx<S>,
    id: SourceId,
    data: &[u8],
    f: impl FnOnce(&mut Conn, &[u8]) -> bool,
) -> bool {
    let Some(conn) = ctx.source_mut::<Conn>(id) else {
        return own_handler(ctx, id);
    };
    let accepted = f(conn, data);
    // Its driver must run to watch for writability or to close it.
    let wake = conn.queued() > 0 || conn.is_closing();
    let parked = conn.is_parked();
    if accepted && !data.is_empty() && conn.times_writes() {
        // Output is activity: a peer that only receives (a subscriber fed
        // from elsewhere) is not idle, even when the kernel took the bytes at
        // once and the connection's driver never runs to notice.
        let now = ctx.now();
        if let Some(conn) = ctx.source_mut::<Conn>(id) {
            // Noted now: its own dispatch may be far off.
            conn.mark_active(now);
            conn.clear(conn::WROTE);
        }
    }
    if wake {
        kick(ctx, id, parked);
    }
    accepted
}

/// [`task_write`] to connection `id`, with one look-up (a task's sends
/// outside the connection's dispatch); `None` also when `id` is gone.
pub(crate) fn write_then_room<S>(ctx: &mut Ctx<S>, id: SourceId, data: &[u8]) -> Option<usize> {
    let mut room = None;
    write_with(ctx, id, data, |conn, data| {
        room = task_write(conn, data);
        room.is_some()
    });
    room
}

/// A task's send: [`Conn::write`], then how much more the task may stage
/// ([`Conn::task_room`]; 0 while it must wait for `on_room`). The task was
/// told its bytes were taken; if the connection refuses them (it is
/// closing: its idle close, say), they are lost, and the connection is
/// reset so that its peer does not take what it got for the whole stream:
/// `None` then.
pub(crate) fn task_write(conn: &mut Conn, data: &[u8]) -> Option<usize> {
    if conn.write(data) {
        return Some(conn.task_room());
    }
    if conn.is_closed() {
        // Closed for a reason of its own (a reset, an overflow), which
        // reaches the task with the close.
        return Some(0);
    }
    conn.reset();
    None
}

/// Close connection `id` gracefully from anywhere in the loop: queued output
/// is written first and its handler's `on_close` runs. Returns false for an
/// id that is not an open connection. An outbound connection still
/// connecting finishes connecting first (what was written before it opened
/// is owed too); [`abort`] gives it up at once.
///
/// Prefer this (or [`abort`]) to [`Ctx::close`]: that drops the source as it
/// is, so queued output is lost and its handler's `on_close` never runs (its
/// place under [`ListenConfig::max_connections`] is still given back).
pub fn close<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    poke(ctx, id, Conn::close)
}

/// Close connection `id` at once, dropping queued output.
pub fn abort<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    poke(ctx, id, Conn::abort)
}

/// Close connection `id` at once with a reset (a task's stream cut
/// mid-message).
pub(crate) fn reset<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    poke(ctx, id, Conn::reset)
}

/// Shut connection `id`'s write half (FIN to the peer) once everything
/// queued is written, from anywhere in the loop; it keeps reading until the
/// peer closes too. Returns false for an id that is not an open connection.
pub fn shutdown_write<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    poke(ctx, id, Conn::shutdown_write)
}

/// [`Conn::has_room`] for connection `id`, from anywhere in the loop: false
/// while its output queue is above [`ConnConfig::high_water`], and then its
/// handler's [`on_room`](Handler::on_room) runs once the queue has fallen
/// to [`ConnConfig::low_water`]. True for an id that is not an open
/// connection: there is nothing to wait for.
pub fn has_room<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    ctx.source_mut::<Conn>(id).map_or(true, Conn::has_room)
}

/// [`Conn::try_write`] for connection `id`, from anywhere in the loop: a
/// write the queue has no room for is refused without closing the
/// connection (`Err(WriteError::Full)`, and `on_room` follows).
pub fn try_write<S>(ctx: &mut Ctx<S>, id: SourceId, data: &[u8]) -> Result<(), WriteError> {
    let mut result = Err(WriteError::Closed);
    write_with(ctx, id, data, |conn, data| {
        result = conn.try_write(data);
        result.is_ok()
    });
    result
}

/// Let connection `id` read again after [`Conn::pause_reading`], from
/// anywhere in the loop: bytes that arrived meanwhile are delivered in the
/// next dispatch phase. Returns false for an id that is not an open connection.
pub fn resume_reading<S>(ctx: &mut Ctx<S>, id: SourceId) -> bool {
    poke(ctx, id, Conn::resume_reading)
}

/// Apply `f` to connection `id` and have its driver act on it.
fn poke<S>(ctx: &mut Ctx<S>, id: SourceId, f: impl FnOnce(&mut Conn)) -> bool {
    // A connection whose `on_close` has run is gone to everyone but the
    // driver, even while it lingers to read out the peer's last bytes.
    let Some(conn) = ctx.source_mut::<Conn>(id).filter(|c| !c.is_closed()) else {
        return own_handler(ctx, id);
    };
    f(conn);
    let parked = conn.is_parked();
    kick(ctx, id, parked)
}

/// A call by id found nothing: false, and if that is because it came from
/// `id`'s own handler (which holds the connection, out of the table), a
/// warning: the caller meant the `Conn` it was given.
#[cold]
fn own_handler<S>(ctx: &Ctx<S>, id: SourceId) -> bool {
    if ctx.is_running(id) {
        log::warn!(
            "evloop: {id} cannot be reached by id while its own handler runs (or before it is registered): the call does nothing; use the Conn the handler was given"
        );
    }
    false
}

/// Have connection `id`'s driver run in the next dispatch phase.
pub(crate) fn kick<S>(ctx: &mut Ctx<S>, id: SourceId, parked: bool) -> bool {
    // A connection with nothing to poll for is paused in the loop, and the
    // loop dispatches no paused source, not even a scheduled one: resume it
    // first, or the output or close we were asked for would wait forever.
    // Its driver then sets the interest it really needs.
    if parked && ctx.resume(id).is_err() {
        return false;
    }
    ctx.schedule(id)
}
