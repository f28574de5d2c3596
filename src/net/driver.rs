//! A connection's driver: what runs when the loop dispatches a connection.
//!
//! [`Conn`](super::Conn) is the handle a handler sees; this module is the
//! other half, the state machine around it: open, read into the loop's
//! shared buffer, hand the bytes to the handler, flush what it wrote, and
//! settle the connection's interest and fate (backpressure, half-close,
//! close, the idle timeout). Accepted and connected streams share it; an
//! outbound connection runs its connect first (see `connect.rs`).

use std::any::Any;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::Duration;

use mio::Interest;

use super::conn::*;
use super::listener::ListenShared;
use super::stream::Stream;
use crate::ctx::OUT_BUF_SIZE;
use crate::source::{attach_source, Attach, Entry};
use crate::{Action, Ctx, Event, SourceId, TimerId};

/// A connection and its handler: the source table's entry for it.
// `repr(C)` keeps the connection at the start of the box, where `touch`
// expects its first 64 bytes.
#[repr(C)]
struct Driven<H> {
    conn: Conn,
    handler: H,
}

impl<S, H: Handler<S>> Entry<S> for Driven<H> {
    fn attach(&mut self, how: Attach<'_>, _link: &crate::remote::Link) -> io::Result<()> {
        attach_source(&mut self.conn, how)
    }

    fn dispatch(&mut self, event: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
        drive(&mut self.conn, &mut self.handler, event, ctx, state)
    }

    fn source_any(&mut self) -> Option<&mut dyn Any> {
        Some(&mut self.conn)
    }

    fn touch(&self) -> u8 {
        self.conn.touch()
    }

    fn failed(&mut self, err: &io::Error, ctx: &mut Ctx<S>, state: &mut S) {
        registration_failed(&mut self.conn, &mut self.handler, err, ctx, state);
    }
}

/// The loop closed the connection because its registration could not be
/// changed: report it, unless its close was already reported.
pub(super) fn registration_failed<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    err: &io::Error,
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    if conn.closed.is_none() {
        let reason = reason_of(err);
        conn.fail(reason);
        finish(conn, h, reason, ctx, state);
    }
}

/// Register `stream` in the slot reserved as `id` (see `Ctx::reserve`), as
/// a connection driven by `handler`. On failure the slot is given back.
pub(crate) fn open_reserved<S, H>(
    ctx: &mut Ctx<S>,
    id: SourceId,
    stream: Stream,
    cfg: Rc<ConnConfig>,
    listener: Option<Rc<ListenShared>>,
    handler: H,
) -> io::Result<()>
where
    H: Handler<S> + 'static,
{
    let mut conn = Conn::new(stream, cfg, listener, ctx.now());
    conn.id = id;
    arm_idle(&mut conn, id, ctx);
    ctx.fill_reserved(id, Box::new(Driven { conn, handler }), Interest::READABLE)?;
    // `on_open` runs in the next dispatch phase.
    ctx.schedule(id);
    Ok(())
}

/// The connection `id` is established (accepted, or connected out): its
/// idle time counts from now, and its idle timer starts. (If the connection
/// never makes it into the table, the timer finds it gone and cancels itself.)
pub(super) fn arm_idle<S>(conn: &mut Conn, id: SourceId, ctx: &mut Ctx<S>) {
    conn.last_active = ctx.now();
    let Some(timeout) = conn.cfg.idle_timeout else {
        return;
    };
    let timer = ctx.timer_every_delay(timeout, move |fired, ctx, _| {
        idle_check(ctx, id, fired.id, timeout)
    });
    conn.idle_timer = Some(timer);
    conn.set(TIMED);
    if conn.cfg.idle_mode == IdleMode::ReadOrWrite {
        conn.set(TIME_WRITES);
    }
}

/// The idle timer fired: have the connection's driver report it if the
/// connection really was idle (the timer repeats, so a handler that keeps
/// the connection gets another period), else move the timer to the end of
/// its quiet period.
fn idle_check<S>(ctx: &mut Ctx<S>, id: SourceId, timer: TimerId, timeout: Duration) {
    let now = ctx.now();
    let Some(conn) = ctx.source_mut::<Conn>(id) else {
        ctx.cancel_timer(timer);
        return;
    };
    let quiet_until = conn.last_active + timeout;
    if now >= quiet_until {
        conn.set(IDLE_EXPIRED);
        let parked = conn.is_parked();
        // A connection paused in the loop is not dispatched even when
        // scheduled: kick resumes it first, so the close really happens.
        super::kick(ctx, id, parked);
    } else {
        ctx.reset_timer(timer, quiet_until);
    }
}

/// Run one dispatch of a connection: open, read, flush, and settle its
/// interest and fate.
///
/// A panic in a handler method simply unwinds: the loop closes the source,
/// and dropping the `Conn` gives back its place under `max_connections`
/// (see its `Drop`); its idle timer finds it gone and cancels itself.
pub(super) fn drive<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    ev: Event,
    ctx: &mut Ctx<S>,
    state: &mut S,
) -> Action {
    conn.set(CORKED);
    if conn.out.capacity() == 0 {
        // Borrow the loop's spare output buffer: no allocation per message,
        // and nothing held once the queue drains.
        conn.out = ctx.take_out_buf();
    }
    if conn.flags & (OPENED | IDLE_EXPIRED | LINGERING | REOFFER) != OPENED {
        if conn.has(LINGERING) {
            return linger(conn, ctx);
        }
        open_or_expire(conn, h, ctx, state);
    }
    let mut action = Action::Keep;
    // A kernel edge, or a pause just lifted, means there may be bytes; a
    // plain scheduled dispatch (open, a write from elsewhere) does not read.
    let readable = ev.ready.is_readable() || ev.ready.is_read_closed() || ev.ready.is_error();
    if !conn.reading() && !conn.has(CLOSED) && (ev.ready.is_error() || ev.ready.is_write_closed()) {
        hung_up(conn, ev);
    }
    if conn.reading() && (readable || conn.take(PROBE_READ)) {
        action = read(conn, h, ev, ctx, state);
    }
    conn.clear(CORKED);
    settle(conn, h, ctx, state);
    if conn.has(CLOSED) {
        return closed(conn);
    }
    action
}

// The driver's rare cases, out of line so that the common dispatch (read,
// reply, flush) runs on few cache lines of code.

/// First dispatch (greet the peer), the idle timer expired, or reading
/// resumed with unconsumed input to offer again.
#[inline(never)]
fn open_or_expire<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ctx: &mut Ctx<S>, state: &mut S) {
    if conn.has(REOFFER) && conn.reading() {
        conn.clear(REOFFER);
        if conn.has(INPUT) {
            deliver_after_tail(conn, h, &[], ctx, state);
        }
    }
    if !conn.has(OPENED) {
        conn.set(OPENED);
        h.on_open(conn, ctx, state);
    }
    if conn.take(IDLE_EXPIRED) {
        if conn.is_closing() {
            // Still idle a whole timeout after its (idle or other) close
            // began: the peer is not reading what we owe it. Drop it.
            conn.fail(CloseReason::Idle);
            return;
        }
        h.on_idle(conn, ctx, state);
        if conn.is_closing() {
            conn.set(IDLE_CLOSE);
        } else {
            conn.last_active = ctx.now();
        }
    }
}

/// Not reading (after EOF, or paused), so no read will surface what this
/// event says: a reset or hang-up. Ask the socket directly, or the
/// connection would sit half-dead until the server next writes.
///
/// A hang-up with no error is a clean end, not a reset: both directions
/// are shut (a Unix peer closed; a TCP peer sent its FIN after our
/// `shutdown_write`). Output still queued is lost (nobody will read it):
/// that is a reset. With nothing left unread the connection is done, at
/// once. Paused with bytes the peer sent before its close still unread,
/// it waits: they, then the EOF, reach the handler when it reads again.
#[cold]
#[inline(never)]
fn hung_up(conn: &mut Conn, ev: Event) {
    match conn.stream.take_error() {
        Ok(Some(e)) | Err(e) => conn.fail(reason_of(&e)),
        Ok(None) if !ev.ready.is_write_closed() => {}
        Ok(None) if conn.queued() > 0 => conn.fail(CloseReason::Reset),
        Ok(None) if conn.peer_eof() || !matches!(conn.stream.unread(), Ok(n) if n > 0) => {
            conn.fail(CloseReason::PeerClosed)
        }
        Ok(None) => {}
    }
}

/// Read until a short read, EOF, the budget, or the handler stops us.
fn read<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ev: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
    let mut scratch = ctx.take_scratch();
    let mut total = 0;
    let mut action = Action::Keep;
    while conn.reading() {
        let n = match conn.stream.read(&mut scratch) {
            Ok(0) => {
                peer_eof(conn, h, ctx, state);
                break;
            }
            Ok(n) => {
                hot_trace!("evloop: {} read {n} bytes", conn.id);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                conn.fail(reason_of(&e));
                break;
            }
        };
        if conn.has(TIMED) {
            conn.last_active = ctx.now();
        }
        total += n;
        deliver(conn, h, &mut scratch, n, ctx, state);
        // A short read drained the socket; the next edge will tell us about
        // more. Unless the peer already hung up: then read on to the EOF.
        if n < scratch.len() && !ev.ready.is_read_closed() {
            break;
        }
        if total >= conn.cfg.read_budget {
            action = Action::Reschedule;
            break;
        }
    }
    ctx.put_scratch(scratch);
    action
}

/// The peer closed its writing half.
#[cold]
#[inline(never)]
fn peer_eof<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ctx: &mut Ctx<S>, state: &mut S) {
    conn.set(PEER_EOF);
    log::debug!("evloop: connection {} peer EOF", conn.id);
    h.on_eof(conn, ctx, state);
}

/// Hand the new bytes `buf[..n]` (after any unconsumed tail) to the
/// handler; keep what it did not consume.
fn deliver<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    buf: &mut Box<[u8]>,
    n: usize,
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    if conn.has(INPUT) {
        deliver_after_tail(conn, h, &buf[..n], ctx, state);
        return;
    }
    let len = buf.len();
    let used = h.on_read_buf(conn, buf, n, ctx, state).min(n);
    if buf.len() < len {
        // The handler broke `on_read_buf`'s contract; what it did not
        // consume went with the buffer it kept.
        log::error!("evloop: connection {}'s handler kept the read buffer", conn.id);
        *buf = vec![0; len].into_boxed_slice();
    } else if used < n {
        keep_tail(conn, &buf[used..n]);
    }
    // else the common case: every byte consumed, nothing kept
}

/// The handler left `tail` unconsumed: keep it for the next delivery.
#[inline(never)]
fn keep_tail(conn: &mut Conn, tail: &[u8]) {
    conn.input.extend_from_slice(tail);
    check_input(conn);
}

/// Deliver an earlier unconsumed tail followed by `new`.
#[inline(never)]
fn deliver_after_tail<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    new: &[u8],
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    let mut input = std::mem::take(&mut conn.input);
    input.extend_from_slice(new);
    let used = h.on_data(conn, &input, ctx, state).min(input.len());
    input.drain(..used);
    if input.is_empty() {
        // The frame is complete: an idle connection holds no read buffer.
        input = Vec::new();
    }
    conn.input = input;
    check_input(conn);
}

/// Mirror whether input is kept in the flags, and apply its cap.
fn check_input(conn: &mut Conn) {
    if conn.input.is_empty() {
        conn.clear(INPUT);
    } else {
        conn.set(INPUT);
    }
    if conn.input.len() > conn.cfg.max_input {
        log::warn!(
            "evloop: connection {} has {} unconsumed bytes, over its cap of {}; closing it",
            conn.id,
            conn.input.len(),
            conn.cfg.max_input
        );
        conn.fail(CloseReason::InputTooLarge);
    }
}

/// Flags that send [`settle`] past its quick exit: something to pace, owe,
/// close or shut.
const UNSETTLED: Flags =
    THROTTLED | BACKLOGGED | CLOSING | SHUT_REQUESTED | PROBE_READ | NOT_READING | ROOM_OWED;

/// After the handler ran: flush, apply backpressure, half-close and close
/// requests, and make the poller watch what the connection now needs.
fn settle<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ctx: &mut Ctx<S>, state: &mut S) {
    let had_backlog = conn.take(BACKLOGGED);
    if conn.queued() > 0 || conn.has(WROTE) {
        conn.clear(WROTE);
        conn.flush();
        if conn.has(TIME_WRITES) {
            conn.last_active = ctx.now();
        }
    }
    if conn.queued() == 0 {
        give_back_out(conn, ctx);
        // Everything written, nothing unusual, already watching for reads:
        // what nearly every dispatch of a busy server ends with.
        if conn.flags & UNSETTLED == 0 && !had_backlog && conn.polled == Some(Interest::READABLE) {
            return;
        }
    }
    settle_rest(conn, h, had_backlog, ctx, state);
}

/// The rest of [`settle`], for a dispatch that left something to pace, owe,
/// close, shut or re-register.
#[inline(never)]
fn settle_rest<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    had_backlog: bool,
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    let mut room_again = false;
    if conn.has(ROOM_OWED) && conn.queued() <= conn.cfg.low_water && !conn.has(CLOSED) {
        conn.clear(ROOM_OWED);
        h.on_room(conn, ctx, state);
        conn.flush();
        // on_room filled the queue until `has_room` said no, and the kernel
        // then took it all: there is room again and no write readiness will
        // come to say so. Owe it in a later dispatch, after the other ready
        // sources (a reply streamed this way stalled for good otherwise).
        room_again = conn.has(ROOM_OWED) && conn.queued() <= conn.cfg.low_water;
    }
    if conn.queued() == 0 {
        if conn.take(THROTTLED) {
            // Under edge triggering data may already be waiting: look now.
            conn.set(PROBE_READ);
            ctx.schedule(conn.id);
        }
        if had_backlog && !conn.has(CLOSED) {
            h.on_drained(conn, ctx, state);
            conn.flush();
            if conn.queued() > 0 {
                conn.set(BACKLOGGED);
            } else {
                give_back_out(conn, ctx);
            }
        }
    } else {
        conn.set(BACKLOGGED);
        keep_only_the_backlog(conn, ctx);
        if conn.queued() > conn.cfg.high_water && !conn.has(THROTTLED) && conn.cfg.read_backpressure {
            log::debug!(
                "evloop: connection {} over high water ({} queued); pausing reads",
                conn.id,
                conn.queued()
            );
            conn.set(THROTTLED);
        } else if conn.has(THROTTLED) && conn.queued() < conn.cfg.low_water {
            conn.clear(THROTTLED);
            conn.set(PROBE_READ);
            ctx.schedule(conn.id);
        }
    }
    if conn.queued() == 0 && !conn.has(CLOSED) {
        if conn.has(CLOSING) {
            begin_linger(conn);
            conn.fail(if conn.has(IDLE_CLOSE) {
                CloseReason::Idle
            } else if conn.has(PEER_EOF) {
                CloseReason::PeerClosed
            } else {
                CloseReason::Local
            });
        } else if conn.flags & (SHUT_REQUESTED | WRITE_SHUT) == SHUT_REQUESTED {
            conn.set(WRITE_SHUT);
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                conn.fail(reason_of(&e));
            }
        }
        if conn.flags & (WRITE_SHUT | PEER_EOF) == WRITE_SHUT | PEER_EOF {
            conn.fail(CloseReason::PeerClosed);
        }
    }
    if let Some(reason) = conn.closed {
        finish(conn, h, reason, ctx, state);
        return;
    }
    if conn.has(PROBE_READ) && conn.reading() {
        ctx.schedule(conn.id);
    }
    let want = if conn.queued() > 0 {
        if conn.reading() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        }
    } else if conn.reading() || conn.has(PEER_EOF) {
        // After EOF keep READABLE so a reset or error still reaches us.
        Interest::READABLE
    } else {
        // Paused by the handler with nothing to write. Still watch for the
        // peer's hang-up: epoll reports a reset (HUP, ERR) whatever the
        // interest, and WRITABLE, unlike READABLE, is not woken again by
        // every segment a paused peer keeps sending (one edge now, none
        // until our own output moves). Left unwatched, a vanished peer held
        // its fd until the handler resumed.
        Interest::WRITABLE
    };
    if Some(want) != conn.polled {
        let result = if conn.polled.is_none() {
            ctx.set_interest(conn.id, want).and_then(|_| ctx.resume(conn.id))
        } else {
            ctx.set_interest(conn.id, want)
        };
        match result {
            Ok(()) => conn.polled = Some(want),
            Err(e) => {
                conn.fail(reason_of(&e));
                finish(conn, h, reason_of(&e), ctx, state);
                return;
            }
        }
    }
    if room_again {
        super::kick(ctx, conn.id, conn.is_parked());
    }
}

/// An empty queue holds no buffer: lend it back to the loop.
fn give_back_out<S>(conn: &mut Conn, ctx: &mut Ctx<S>) {
    if conn.out.capacity() > 0 {
        ctx.give_out_buf(std::mem::take(&mut conn.out));
        conn.out_pos = 0;
        conn.out_end = 0;
    }
}

/// The kernel left part of the output queued: if it sits in the loop's
/// spare buffer, move it to one of its own size and give the spare back, so
/// that a server with many slow peers does not pin a spare for each.
fn keep_only_the_backlog<S>(conn: &mut Conn, ctx: &mut Ctx<S>) {
    if conn.out.len() >= OUT_BUF_SIZE && conn.queued() <= OUT_BUF_SIZE / 2 {
        let rest = conn.out[conn.out_pos..conn.out_end].to_vec();
        conn.out_pos = 0;
        conn.out_end = rest.len();
        ctx.give_out_buf(std::mem::replace(&mut conn.out, rest));
    }
}

/// Report the close once, and release what the connection held.
pub(super) fn finish<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    reason: CloseReason,
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    log::debug!("evloop: connection {} closed: {reason:?}", conn.id);
    // An overflow always lost the write it refused; the others lose what
    // is still queued, if anything is.
    if reason == CloseReason::Overflow
        || (conn.queued() > 0 && matches!(reason, CloseReason::Idle | CloseReason::InputTooLarge))
    {
        cut_short(conn, reason);
    }
    h.on_close(conn, reason, ctx, state);
    release(conn, ctx);
    if conn.has(LINGERING) {
        arm_linger(conn, ctx);
    }
}

/// Closed for a fault with output queued that will never be sent (the
/// queue overflowed, a peer that stopped reading timed out): the socket is
/// to reset, not end with a FIN, so the peer can tell its stream was cut
/// short rather than complete. (An abort the handler asks for keeps its
/// documented end: what the kernel took, then EOF.)
#[cold]
#[inline(never)]
pub(super) fn cut_short(conn: &mut Conn, reason: CloseReason) {
    log::warn!(
        "evloop: connection {} closed ({reason:?}) with output lost ({} bytes queued); resetting it",
        conn.id,
        conn.queued()
    );
    conn.stream.reset_on_close();
}

/// What a dispatch that closed the connection answers: drop it, unless it
/// lingers to read out what the peer still sends.
fn closed(conn: &Conn) -> Action {
    if conn.has(LINGERING) {
        Action::Keep
    } else {
        Action::Close
    }
}

// Lingering close (RFC 9112 §9.6; nginx's `lingering_close`): a socket
// closed with unread input makes the kernel answer with a reset, and a
// reset destroys what we wrote that the peer has not read yet (a client
// pipelining requests behind a `Connection: close` lost most of the
// answers it was owed). So a graceful close whose peer may still be
// sending sends our FIN once everything is written, reads and discards
// until the peer's FIN or `ConnConfig::linger` passes, and only then
// closes. The handler's `on_close` has already run: to it, and to
// `net::write`, the connection is closed.

/// The close under way is graceful and the queue is empty: shut our write
/// half and linger, if the peer may still be sending.
fn begin_linger(conn: &mut Conn) {
    if conn.cfg.linger.is_none() || conn.has(PEER_EOF) {
        return; // nothing more will come: a plain close resets nothing
    }
    if conn.has(WRITE_SHUT) || conn.stream.shutdown(std::net::Shutdown::Write).is_ok() {
        conn.set(LINGERING);
    }
}

/// The handler has been told; keep the socket open, watched for reads
/// only, until the peer's FIN or the linger time runs out.
fn arm_linger<S>(conn: &mut Conn, ctx: &mut Ctx<S>) {
    let id = conn.id;
    let Some(time) = conn.cfg.linger else {
        return;
    };
    let result = if conn.polled.is_none() {
        ctx.set_interest(id, Interest::READABLE)
            .and_then(|_| ctx.resume(id))
    } else {
        ctx.set_interest(id, Interest::READABLE)
    };
    if result.is_err() {
        conn.clear(LINGERING);
        return;
    }
    conn.polled = Some(Interest::READABLE);
    log::debug!("evloop: connection {id} lingering for the peer's FIN");
    conn.idle_timer = Some(ctx.timer_after(time, move |_, ctx, _| {
        if ctx.close(id) {
            log::debug!("evloop: connection {id} closed after lingering");
        }
    }));
    // Input may have arrived with no edge left to announce it.
    ctx.schedule(id);
}

/// A dispatch of a lingering connection: read and discard.
#[cold]
#[inline(never)]
fn linger<S>(conn: &mut Conn, ctx: &mut Ctx<S>) -> Action {
    conn.clear(CORKED);
    give_back_out(conn, ctx);
    let mut scratch = ctx.take_scratch();
    let mut total = 0;
    let action = loop {
        match conn.stream.read(&mut scratch) {
            Ok(0) => break Action::Close,
            Ok(n) => {
                total += n;
                if total >= conn.cfg.read_budget {
                    break Action::Reschedule;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Action::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break Action::Close,
        }
    };
    ctx.put_scratch(scratch);
    if action == Action::Close {
        if let Some(t) = conn.idle_timer.take() {
            ctx.cancel_timer(t);
        }
    }
    action
}

/// Give back what a closed connection holds: its idle timer, its buffers,
/// its place under the listener's connection limit.
fn release<S>(conn: &mut Conn, ctx: &mut Ctx<S>) {
    if let Some(t) = conn.idle_timer.take() {
        ctx.cancel_timer(t);
    }
    ctx.give_out_buf(std::mem::take(&mut conn.out));
    conn.out_pos = 0;
    conn.out_end = 0;
    conn.input = Vec::new();
    conn.clear(INPUT | TIMED | TIME_WRITES | ROOM_OWED);
    // A lingering socket still holds its fd: its place under the listener's
    // `max_connections` is given back when it is dropped (`Conn`'s `Drop`).
    if !conn.has(LINGERING) {
        if let Some(l) = conn.listener.take() {
            l.connection_closed(ctx);
        }
    }
}
