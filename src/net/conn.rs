//! A buffered connection and the handler trait that drives it.
//!
//! What this module does for the user, so a server is the easy thing to write:
//!
//! - **Reads** go into one scratch buffer owned by the loop, so an idle
//!   connection holds no read buffer. The handler gets the bytes and says how
//!   many it consumed; only an unconsumed tail (half a frame) is kept.
//! - **Edge-triggered reads stop at a short read**: a read that returns less
//!   than it asked for has drained the socket, and the next edge will come, so
//!   we do not pay for one more read that returns `WouldBlock`.
//! - **Writes are corked** while the connection's own handler runs and flushed
//!   with one `write` when it returns (a write of 8 KiB or more into an empty
//!   queue goes out at once: copying it would cost more than the call saved);
//!   whatever the kernel does not take is queued, and WRITABLE interest is
//!   held only while the queue is non-empty.
//! - **Backpressure**: past the high-water mark the connection stops reading
//!   until the queue drains below the low-water mark; past the hard cap it is
//!   closed. A peer that never reads cannot grow the server.
//! - **Half-close, resets, idle peers**: EOF is reported and the handler may
//!   keep writing; ECONNRESET/EPIPE close the connection and the reason reaches
//!   the handler; an optional idle timeout closes silent peers.

use std::any::Any;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Interest;

use super::listener::ListenShared;
use super::stream::Stream;
use crate::ctx::OUT_BUF_SIZE;
use crate::source::{attach_source, Attach, Entry};
use crate::{Action, Ctx, Event, SourceId, TimerId};

/// A write at least this big into an empty queue bypasses the cork.
const DIRECT_WRITE_MIN: usize = 8 * 1024;

/// Limits and timeouts of a connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Queued output above which the connection stops reading (default 256 KiB).
    pub high_water: usize,
    /// Queued output below which it reads again (default 64 KiB).
    pub low_water: usize,
    /// Queued output above which the connection is closed with
    /// [`CloseReason::Overflow`] (default 4 MiB): the bound on a peer that never reads.
    pub max_queued: usize,
    /// Unconsumed input above which the connection is closed with
    /// [`CloseReason::InputTooLarge`] (default 1 MiB).
    pub max_input: usize,
    /// Bytes read per dispatch before yielding to other sources (default 256 KiB).
    pub read_budget: usize,
    /// Close a connection that has neither read nor written for this long.
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            max_queued: 4 * 1024 * 1024,
            max_input: 1024 * 1024,
            read_budget: 256 * 1024,
            idle_timeout: None,
        }
    }
}

/// Why a connection closed, as reported to [`Handler::on_close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server side closed it ([`Conn::close`] or [`Conn::abort`]).
    Local,
    /// The peer closed its side and everything owed to it was written.
    PeerClosed,
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// Nothing was read or written for the idle timeout.
    Idle,
    /// More output was queued than [`ConnConfig::max_queued`] allows.
    Overflow,
    /// More unconsumed input than [`ConnConfig::max_input`] allows.
    InputTooLarge,
    /// Some other I/O error.
    Error(io::ErrorKind),
}

/// What a connection's owner implements. Only [`on_data`](Handler::on_data)
/// is required.
pub trait Handler<S> {
    /// The connection is registered; greet the peer here if the protocol says so.
    fn on_open(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (conn, ctx, state);
    }

    /// Bytes arrived. `data` is everything not yet consumed (an earlier
    /// unconsumed tail followed by the new bytes). Return how many bytes were
    /// consumed; the rest is handed back, with more, next time.
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<S>, state: &mut S) -> usize;

    /// The write queue, after having been non-empty, was fully written.
    fn on_drained(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (conn, ctx, state);
    }

    /// The peer will send nothing more (half-close). The default closes the
    /// connection once everything queued is written; a handler may instead
    /// keep writing and call [`Conn::shutdown_write`] or [`Conn::close`] later.
    fn on_eof(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (ctx, state);
        conn.close();
    }

    /// The connection is closed (called exactly once) and will be dropped
    /// at the end of the turn. Not called when one of this handler's methods
    /// panicked: the loop's [`PanicPolicy`](crate::PanicPolicy) applies.
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (conn, reason, ctx, state);
    }
}

/// A connected stream with a write queue, as seen by its [`Handler`].
///
/// Reach another connection from a different handler with
/// [`write`](crate::net::write) / [`close`](crate::net::close), which also
/// make sure its driver runs.
// Layout: what every message touches comes first, in the first 64 bytes
// (the socket, the flags, the output queue, the config); what only slow
// paths need (the id, a partial frame, the idle timer, the listener, the
// close reason) comes after, and the flags mirror the two of those the hot
// path asks about. With 1,000 connections this took callgrind's simulated L1
// misses from 4.5 to 4.1 per message. Aligning the struct to a cache line
// as well took them to 3.4, but glibc's aligned allocations cost ~100 bytes
// of RSS per connection (206 -> 312 B at 10,000), so it is not done. (Tried
// again at 128 bytes: 290 B, and sampled user time at 10,000 connections
// went *up* by 15-20 % in alternated runs while the simulated misses fell.)
#[repr(C)]
pub struct Conn {
    stream: Stream,
    /// What the connection is doing, as [`Flags`] bits: one word, so the
    /// driver's questions ("may it read?", "anything unusual to settle?")
    /// are one mask test each on every message.
    flags: Flags,
    /// What the poller currently watches (None: deregistered).
    polled: Option<Interest>,
    /// Output not yet taken by the kernel: `out[out_pos..out_end]`. Every
    /// byte of `out` up to its length is initialized, so a small write is
    /// copied into place without growing the vector (see [`copy_small`]).
    out_pos: usize,
    out_end: usize,
    out: Vec<u8>,
    cfg: Rc<ConnConfig>,
    // ---- past the first 64 bytes ----
    id: SourceId,
    /// Unconsumed input (a partial frame); empty for an idle connection.
    input: Vec<u8>,
    /// Last read or write; kept only with an idle timeout (the clock is not
    /// read for connections that have none).
    last_active: Instant,
    listener: Option<Rc<ListenShared>>,
    idle_timer: Option<TimerId>,
    /// Set once the connection must close; the driver reports it and closes.
    closed: Option<CloseReason>,
}

/// The connection's state bits (see [`Conn::flags`]).
type Flags = u16;
/// The owner's handler runs: writes are buffered and flushed afterwards.
const CORKED: Flags = 1;
/// `on_open` has run.
const OPENED: Flags = 1 << 1;
/// The peer closed its writing half.
const PEER_EOF: Flags = 1 << 2;
/// close() was asked: finish writing, then close.
const CLOSING: Flags = 1 << 3;
/// shutdown_write() was asked: shut the write half once the queue is empty.
const SHUT_REQUESTED: Flags = 1 << 4;
const WRITE_SHUT: Flags = 1 << 5;
/// Reading paused by backpressure (queue above high water).
const THROTTLED: Flags = 1 << 6;
/// Reading paused by the handler.
const PAUSED: Flags = 1 << 7;
const IDLE_EXPIRED: Flags = 1 << 8;
/// Reading was paused and is allowed again: data may be waiting with no
/// edge left to announce it, so the next dispatch must look.
const PROBE_READ: Flags = 1 << 9;
/// The kernel refused part of the output: `on_drained` is owed once the
/// queue empties (corked replies that leave in one write do not count).
const BACKLOGGED: Flags = 1 << 10;
/// `closed` holds a reason (mirrored here so the masks below see it).
const CLOSED: Flags = 1 << 11;
/// `input` holds a partial frame (mirrored: `input` is in the cold line).
const INPUT: Flags = 1 << 12;
/// An idle timer watches the connection, so reads and writes are timed.
const TIMED: Flags = 1 << 13;

/// Any of these and the connection does not read.
const NOT_READING: Flags = THROTTLED | PAUSED | PEER_EOF | CLOSING | CLOSED;
/// Any of these and writes are refused.
const NOT_WRITING: Flags = CLOSING | CLOSED | SHUT_REQUESTED | WRITE_SHUT;

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        cfg: Rc<ConnConfig>,
        listener: Option<Rc<ListenShared>>,
        now: Instant,
    ) -> Conn {
        Conn {
            stream,
            id: SourceId::new(0, 0),
            flags: 0,
            polled: Some(Interest::READABLE),
            closed: None,
            cfg,
            listener,
            out: Vec::new(),
            out_pos: 0,
            out_end: 0,
            input: Vec::new(),
            last_active: now,
            idle_timer: None,
        }
    }

    fn has(&self, bits: Flags) -> bool {
        self.flags & bits != 0
    }

    fn set(&mut self, bits: Flags) {
        self.flags |= bits;
    }

    fn clear(&mut self, bits: Flags) {
        self.flags &= !bits;
    }

    /// Clear `bits`, saying whether any was set.
    fn take(&mut self, bits: Flags) -> bool {
        let had = self.has(bits);
        self.clear(bits);
        had
    }

    /// This connection's source id.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// The socket, for options and addresses.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Bytes queued and not yet taken by the kernel.
    pub fn queued(&self) -> usize {
        self.out_end - self.out_pos
    }

    /// Bytes received and not yet consumed by the handler.
    pub fn unconsumed(&self) -> usize {
        self.input.len()
    }

    /// True once the peer has closed its writing half.
    pub fn peer_eof(&self) -> bool {
        self.has(PEER_EOF)
    }

    /// True once the connection is closing or closed: writes are refused.
    pub fn is_closing(&self) -> bool {
        self.has(CLOSING | CLOSED)
    }

    /// Heap bytes this connection holds in its buffers right now.
    pub fn buffered_capacity(&self) -> usize {
        self.out.capacity() + self.input.capacity()
    }

    /// Send `data`: straight to the socket when the kernel takes it (or, while
    /// the handler runs, in one write when it returns), queued otherwise.
    /// Returns false, sending nothing, when the connection is closing, its
    /// write half is shut, or the queue would pass [`ConnConfig::max_queued`]
    /// (which also closes the connection with [`CloseReason::Overflow`]).
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> bool {
        // Inlined into the handler for what nearly every reply is: a small
        // write, corked, into a queue with room (no call, no system call).
        // `out_end` bounds `queued()`, so the cap check never lets one past.
        let (n, end) = (data.len(), self.out_end);
        if self.flags & (NOT_WRITING | CORKED) == CORKED
            && n < DIRECT_WRITE_MIN
            && end + n <= self.cfg.max_queued
        {
            if let Some(dst) = self.out.get_mut(end..end + n) {
                copy_small(dst, data);
                self.out_end = end + n;
                return true;
            }
        }
        self.write_slow(data)
    }

    #[inline(never)]
    fn write_slow(&mut self, data: &[u8]) -> bool {
        if self.has(NOT_WRITING) {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        let mut data = data;
        // Corking saves system calls on small writes; a big one would cost a
        // copy into the queue larger than the call it saves: send it now.
        if (!self.has(CORKED) || data.len() >= DIRECT_WRITE_MIN) && self.queued() == 0 {
            match write_some(&mut self.stream, data) {
                Ok(n) => {
                    hot_trace!("evloop: {} wrote {n} bytes", self.id);
                    data = &data[n..];
                }
                Err(reason) => {
                    self.fail(reason);
                    return false;
                }
            }
            if data.is_empty() {
                return true;
            }
        }
        if self.queued() + data.len() > self.cfg.max_queued {
            log::warn!(
                "evloop: connection {} queued {} bytes and would pass its cap of {}; closing it",
                self.id,
                self.queued() + data.len(),
                self.cfg.max_queued
            );
            self.fail(CloseReason::Overflow);
            return false;
        }
        if self.out_pos > 0 && self.out_end + data.len() > self.out.len() {
            // Move the unsent part to the front before growing: a peer that
            // always lags a little would otherwise grow the buffer without
            // bound while the queue itself stays under the cap.
            self.out.copy_within(self.out_pos..self.out_end, 0);
            self.out_end -= self.out_pos;
            self.out_pos = 0;
        }
        // Keep every byte up to the vector's length initialized, and the
        // queue's end inside it.
        let end = self.out_end;
        if let Some(dst) = self.out.get_mut(end..end + data.len()) {
            dst.copy_from_slice(data);
        } else {
            self.out.truncate(end);
            self.out.extend_from_slice(data);
        }
        self.out_end = end + data.len();
        true
    }

    /// Close after everything queued is written. No more reads are delivered.
    pub fn close(&mut self) {
        self.set(CLOSING);
    }

    /// Close now, dropping anything queued.
    pub fn abort(&mut self) {
        self.fail(CloseReason::Local);
    }

    /// Shut the write half (FIN to the peer) once everything queued is
    /// written; keep reading until the peer closes too.
    pub fn shutdown_write(&mut self) {
        self.set(SHUT_REQUESTED);
    }

    /// Stop reading from this peer until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&mut self) {
        self.set(PAUSED);
    }

    /// Read from this peer again. From outside the connection's own
    /// handler, use [`net::resume_reading`](crate::net::resume_reading)
    /// instead, which also makes its driver run.
    pub fn resume_reading(&mut self) {
        if self.take(PAUSED) {
            self.set(PROBE_READ);
        }
    }

    /// True while the connection has nothing to poll for and is paused in
    /// the loop (reading paused, nothing queued): scheduling alone does not
    /// reach its driver then.
    pub(super) fn is_parked(&self) -> bool {
        self.polled.is_none()
    }

    /// True when an idle timeout watches this connection (only then is its
    /// activity timed).
    pub(super) fn has_idle_timeout(&self) -> bool {
        self.has(TIMED)
    }

    /// Note output sent from outside the connection's own handler (which
    /// otherwise only its driver notes), for the idle timeout.
    pub(super) fn mark_active(&mut self, now: Instant) {
        self.last_active = now;
    }

    fn fail(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
            self.set(CLOSED);
        }
    }

    fn reading(&self) -> bool {
        !self.has(NOT_READING)
    }

    /// Write as much of the queue as the kernel takes.
    fn flush(&mut self) {
        while self.queued() > 0 && !self.has(CLOSED) {
            match write_some(&mut self.stream, &self.out[self.out_pos..self.out_end]) {
                Ok(0) => break,
                Ok(n) => {
                    hot_trace!("evloop: {} wrote {n} bytes", self.id);
                    self.out_pos += n;
                }
                Err(reason) => self.fail(reason),
            }
        }
        if self.queued() == 0 {
            self.out_pos = 0;
            self.out_end = 0;
        }
    }
}

impl Drop for Conn {
    /// A connection closed behind the net layer's back (`Ctx::close`, or the
    /// loop dropped) still gives back its place under `max_connections`; the
    /// listener's check hook resumes accepting if it was full.
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.forget_one();
        }
    }
}

/// Copy `src` into `dst` (of the same length), in pieces of a fixed size
/// when it is at most 64 bytes long.
///
/// `copy_from_slice` calls glibc's `memcpy`, which takes its AVX-512 variant
/// on CPUs that have it, and the first 512-bit load after the loop slept is
/// slow: at one connection (a sleep per message) `perf annotate` put 88 % of
/// `memcpy`'s samples on that one load, ~15 % of the server's user time, for
/// a 64-byte reply. Pieces of a known size compile to plain SSE moves, and
/// letting the pieces overlap covers any length without a loop (a loop of
/// pieces would be turned back into a `memcpy`).
#[inline]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n > 64 || n != dst.len() {
        dst.copy_from_slice(src);
    } else if n >= 16 {
        let (head, tail) = (n.min(32), n.max(32) - 32);
        dst[..16].copy_from_slice(&src[..16]);
        dst[head - 16..head].copy_from_slice(&src[head - 16..head]);
        dst[tail..tail + 16].copy_from_slice(&src[tail..tail + 16]);
        dst[n - 16..].copy_from_slice(&src[n - 16..]);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        // One to three bytes: single stores, not a call.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// One write; `Ok(0)` means the kernel took nothing (WouldBlock).
// Inlined: called once per message, and as a call it cost more in register
// saves than its own body.
#[inline]
fn write_some(stream: &mut Stream, data: &[u8]) -> Result<usize, CloseReason> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(reason_of(&e)),
        }
    }
}

fn reason_of(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            CloseReason::Reset
        }
        kind => CloseReason::Error(kind),
    }
}

impl mio::event::Source for Conn {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.stream.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.stream.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.stream.deregister(r)
    }
}

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

    /// The flags (at the start) and the config pointer (the last hot field):
    /// the allocator aligns the box to 16 bytes (glibc's malloc does), so
    /// however it falls across cache lines, these two loads bring in both
    /// lines of the connection's hot 64 bytes.
    fn touch(&self) -> u8 {
        self.conn.flags as u8 ^ Rc::as_ptr(&self.conn.cfg) as usize as u8
    }
}

/// Register `stream` as a connection driven by `handler`; its `on_open` runs
/// in the next dispatch phase.
pub(crate) fn open<S, H>(
    ctx: &mut Ctx<S>,
    stream: Stream,
    cfg: Rc<ConnConfig>,
    listener: Option<Rc<ListenShared>>,
    handler: H,
) -> io::Result<SourceId>
where
    H: Handler<S> + 'static,
{
    let conn = Conn::new(stream, cfg.clone(), listener, ctx.now());
    let id = ctx.register_entry(Box::new(Driven { conn, handler }), Interest::READABLE)?;
    if let Some(conn) = ctx.source_mut::<Conn>(id) {
        conn.id = id;
    }
    if let Some(timeout) = cfg.idle_timeout {
        let timer = ctx.timer_every_delay(timeout, move |fired, ctx, _| {
            idle_check(ctx, id, fired.id, timeout)
        });
        if let Some(conn) = ctx.source_mut::<Conn>(id) {
            conn.idle_timer = Some(timer);
            conn.set(TIMED);
        }
    }
    ctx.schedule(id);
    Ok(id)
}

/// The idle timer fired: close the connection if it really was idle, else
/// move the timer to the end of its quiet period.
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
        ctx.cancel_timer(timer);
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
fn drive<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ev: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
    conn.set(CORKED);
    if conn.out.capacity() == 0 {
        // Borrow the loop's spare output buffer: no allocation per message,
        // and nothing held once the queue drains.
        conn.out = ctx.take_out_buf();
    }
    if conn.flags & (OPENED | IDLE_EXPIRED) != OPENED {
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
        return Action::Close;
    }
    action
}

// The driver's rare cases, out of line so that the common dispatch (read,
// reply, flush) runs on few cache lines of code.

/// First dispatch (greet the peer), or the idle timer expired.
#[inline(never)]
fn open_or_expire<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ctx: &mut Ctx<S>, state: &mut S) {
    if !conn.has(OPENED) {
        conn.set(OPENED);
        h.on_open(conn, ctx, state);
    }
    if conn.has(IDLE_EXPIRED) {
        conn.fail(CloseReason::Idle);
    }
}

/// Not reading (after EOF, or paused), so no read will surface what this
/// event says: a reset or hang-up. Ask the socket directly, or the
/// connection would sit half-dead until the server next writes.
#[cold]
#[inline(never)]
fn hung_up(conn: &mut Conn, ev: Event) {
    match conn.stream.take_error() {
        Ok(Some(e)) | Err(e) => conn.fail(reason_of(&e)),
        Ok(None) if ev.ready.is_write_closed() => conn.fail(CloseReason::Reset),
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
        deliver(conn, h, &scratch[..n], ctx, state);
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

/// Hand new bytes (after any unconsumed tail) to the handler; keep what it
/// did not consume.
fn deliver<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, new: &[u8], ctx: &mut Ctx<S>, state: &mut S) {
    if conn.has(INPUT) {
        deliver_after_tail(conn, h, new, ctx, state);
        return;
    }
    let used = h.on_data(conn, new, ctx, state).min(new.len());
    if used < new.len() {
        keep_tail(conn, &new[used..]);
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
const UNSETTLED: Flags = THROTTLED | BACKLOGGED | CLOSING | SHUT_REQUESTED | PROBE_READ | NOT_READING;

/// After the handler ran: flush, apply backpressure, half-close and close
/// requests, and make the poller watch what the connection now needs.
fn settle<S, H: Handler<S>>(conn: &mut Conn, h: &mut H, ctx: &mut Ctx<S>, state: &mut S) {
    let had_backlog = conn.take(BACKLOGGED);
    if conn.queued() > 0 {
        conn.flush();
        if conn.has(TIMED) {
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
        if conn.queued() > conn.cfg.high_water && !conn.has(THROTTLED) {
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
            conn.fail(if conn.has(PEER_EOF) {
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
        Some(if conn.reading() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        })
    } else if conn.reading() || conn.has(PEER_EOF) {
        // After EOF keep READABLE so a reset or error still reaches us.
        Some(Interest::READABLE)
    } else {
        // Paused by the handler with nothing to write: nothing to poll for.
        None
    };
    if want != conn.polled {
        let result = match want {
            Some(i) if conn.polled.is_none() => {
                ctx.set_interest(conn.id, i).and_then(|_| ctx.resume(conn.id))
            }
            Some(i) => ctx.set_interest(conn.id, i),
            None => ctx.pause(conn.id),
        };
        match result {
            Ok(()) => conn.polled = want,
            Err(e) => {
                conn.fail(reason_of(&e));
                finish(conn, h, reason_of(&e), ctx, state);
            }
        }
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
fn finish<S, H: Handler<S>>(
    conn: &mut Conn,
    h: &mut H,
    reason: CloseReason,
    ctx: &mut Ctx<S>,
    state: &mut S,
) {
    log::debug!("evloop: connection {} closed: {reason:?}", conn.id);
    h.on_close(conn, reason, ctx, state);
    release(conn, ctx);
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
    conn.clear(INPUT | TIMED);
    if let Some(l) = conn.listener.take() {
        l.connection_closed(ctx);
    }
}

#[cfg(test)]
mod layout_tests {
    /// The hot fields fill the first 64 bytes and the rest the next 72 (see
    /// the comment on `Conn`): keep a new field from growing it unnoticed.
    /// `.ci/run` runs these in a release build too.
    /// 136 bytes come from the same 144-byte glibc chunk as 128 would; 137
    /// would take 160. (With debug assertions mio's sockets carry a selector
    /// id, 16 bytes more: only release builds count.)
    #[test]
    fn conn_is_136_bytes() {
        if !cfg!(debug_assertions) {
            assert_eq!(std::mem::size_of::<super::Conn>(), 136);
        }
    }

    /// `Driven::touch` loads the flags and the config pointer to bring in
    /// the connection's hot 64 bytes wherever its 16-byte-aligned box
    /// starts: one must lie in its first 16 bytes and the other in its last
    /// 16, or 64 bytes that straddle two cache lines could keep one cold.
    #[test]
    fn touch_brackets_the_hot_64_bytes() {
        if cfg!(debug_assertions) {
            return; // the socket is 16 bytes longer: release builds count
        }
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let conn = super::Conn::new(
            super::Stream::Unix(a),
            std::rc::Rc::new(super::ConnConfig::default()),
            None,
            std::time::Instant::now(),
        );
        let base = &conn as *const super::Conn as usize;
        let flags = &conn.flags as *const super::Flags as usize - base;
        let cfg = &conn.cfg as *const std::rc::Rc<super::ConnConfig> as usize - base;
        assert!(flags < 16, "flags at {flags}");
        assert!((48..64).contains(&cfg), "cfg at {cfg}");
    }
}

#[cfg(test)]
mod copy_tests {
    /// Every length the piecewise copy handles (and a few past it) copies
    /// exactly `src`, touching no byte of `dst` beyond it.
    #[test]
    fn copy_small_copies_every_length() {
        for n in 0..=100usize {
            let src: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8 | 1).collect();
            let mut buf = vec![0u8; n + 8];
            super::copy_small(&mut buf[4..4 + n], &src);
            assert_eq!(&buf[4..4 + n], &src[..], "length {n}");
            assert!(
                buf[..4].iter().chain(&buf[4 + n..]).all(|&b| b == 0),
                "length {n} wrote outside"
            );
        }
    }
}
