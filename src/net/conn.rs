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

use std::io::{self, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Interest;

use super::listener::ListenShared;
use super::stream::Stream;
use crate::{Ctx, SourceId, TimerId};

/// A write at least this big into an empty queue bypasses the cork.
pub(crate) const DIRECT_WRITE_MIN: usize = 8 * 1024;

/// Limits and timeouts of a connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Queued output above which the connection stops reading (default 256 KiB).
    /// One at or above [`max_queued`](Self::max_queued) could never act
    /// (the queue overflows first): half of `max_queued` is used instead.
    /// (To never pause the reader, turn off
    /// [`read_backpressure`](Self::read_backpressure).)
    pub high_water: usize,
    /// Queued output below which it reads again (default 64 KiB), and at
    /// or below which [`Handler::on_room`] runs (so a low water of 0 means
    /// "once the queue is empty"); one above
    /// [`high_water`](Self::high_water) is taken as high water.
    pub low_water: usize,
    /// Queued output above which the connection is closed with
    /// [`CloseReason::Overflow`] (default 4 MiB): the bound on a peer that never reads.
    /// The queue is dropped and the socket reset, so the peer sees an error,
    /// not a clean end, after what it had been sent.
    pub max_queued: usize,
    /// Unconsumed input above which the connection is closed with
    /// [`CloseReason::InputTooLarge`] (default 1 MiB).
    pub max_input: usize,
    /// Bytes read per dispatch before yielding to other sources (default 256 KiB).
    pub read_budget: usize,
    /// How long a connection may stay idle (see [`idle_mode`](Self::idle_mode))
    /// before its handler's [`on_idle`](Handler::on_idle) runs, which by
    /// default closes it with [`CloseReason::Idle`].
    pub idle_timeout: Option<Duration>,
    /// What counts as activity for the idle timeout (default: reads and writes).
    pub idle_mode: IdleMode,
    /// Stop reading from the peer while this connection's own output is above
    /// [`high_water`](Self::high_water), until it falls below
    /// [`low_water`](Self::low_water) (default on): the right rule for a
    /// server, whose replies are what fills the queue. A forwarder turns it
    /// off and throttles the *other* side instead (see
    /// [`Conn::has_room`] and [`Handler::on_room`]): a relay that stopped
    /// reading its upstream because the upstream reads slowly could deadlock
    /// with an upstream that applies the same rule.
    pub read_backpressure: bool,
    /// After a graceful close whose peer may still be sending, how long to
    /// keep reading (and discarding) before closing the socket (default
    /// 5 s; `None`: close at once). Closing with unread input makes the
    /// kernel send a reset, which destroys what the peer has not read yet
    /// of what we wrote; lingering until the peer's FIN avoids that, as
    /// RFC 9112 §9.6 asks. The handler's `on_close` runs when the close
    /// begins, as without lingering.
    pub linger: Option<Duration>,
}

/// What keeps a connection from being idle (see [`ConnConfig::idle_timeout`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleMode {
    /// Bytes read or written: a peer we keep sending to is not idle.
    #[default]
    ReadOrWrite,
    /// Bytes read only: a peer that only receives (a subscriber fed from
    /// elsewhere, a stalled client we keep writing to) still times out.
    Read,
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
            idle_mode: IdleMode::ReadOrWrite,
            read_backpressure: true,
            linger: Some(Duration::from_secs(5)),
        }
    }
}

impl ConnConfig {
    /// The water marks made usable: a high water at or above the cap
    /// would never pause the reader (the queue overflows, and is reset,
    /// first), so it becomes half the cap; a low water above high water
    /// would never let it resume, so it becomes high water. A user who
    /// lowers only `max_queued`, or only `high_water`, gets what they meant.
    pub(crate) fn normalized(&self) -> ConnConfig {
        let mut cfg = self.clone();
        if cfg.high_water >= cfg.max_queued {
            cfg.high_water = cfg.max_queued / 2;
        }
        cfg.low_water = cfg.low_water.min(cfg.high_water);
        cfg
    }
}

/// Why [`Conn::try_write`] sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The queue has no room for it; [`Handler::on_room`] follows.
    Full,
    /// It is larger than [`ConnConfig::max_queued`]: it would never fit.
    /// Write it in pieces.
    TooLarge,
    /// The connection is closing or closed, or its write half is shut.
    Closed,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteError::Full => "the connection's output queue is full",
            WriteError::TooLarge => "the write is larger than the connection's max_queued",
            WriteError::Closed => "the connection is closing or its write half is shut",
        })
    }
}

impl std::error::Error for WriteError {}

/// Why a connection closed, as reported to [`Handler::on_close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server side closed it ([`Conn::close`] or [`Conn::abort`])
    /// before the peer had ended its side.
    Local,
    /// The peer ended its side (EOF) and the connection then closed
    /// cleanly: once everything owed was written, also when the handler
    /// called [`Conn::close`] after the EOF (in `on_eof`, say).
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
    /// An outbound connection was never established: refused, unreachable,
    /// timed out (`TimedOut`: [`ConnectConfig::timeout`](super::ConnectConfig::timeout)),
    /// reset during the handshake, or its name did not resolve
    /// (`NotFound`). The kind is the last attempt's OS error.
    ConnectFailed(io::ErrorKind),
}

/// What a connection's owner implements. Only [`on_data`](Handler::on_data)
/// is required.
///
/// A handler for a line protocol: `on_data` answers every complete line and
/// returns how many bytes it used, so a line split across reads is handed
/// back whole with the rest of it. The state counts lines; `on_close` stops
/// the loop here only so that the example ends.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig};
/// use evloop::{Ctx, EventLoop};
///
/// struct Upper;
///
/// impl Handler<u32> for Upper {
///     fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<u32>, lines: &mut u32) -> usize {
///         let mut used = 0;
///         while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
///             let line = &data[used..used + end + 1];
///             conn.write(&line.to_ascii_uppercase());
///             *lines += 1;
///             used += end + 1;
///         }
///         used // an unfinished line stays for the next call
///     }
///
///     fn on_close(&mut self, _: &mut Conn, _: CloseReason, ctx: &mut Ctx<u32>, _: &mut u32) {
///         ctx.stop();
///     }
/// }
///
/// let mut el = EventLoop::<u32>::new()?;
/// let addr = "127.0.0.1:0".parse().unwrap();
/// let server = net::listen(&mut el, &addr, ListenConfig::default(), |_, _, _, _| Some(Upper))?;
/// let port = server.addr.to_string();
/// let client = std::thread::spawn(move || {
///     let mut s = std::net::TcpStream::connect(port).unwrap();
///     s.write_all(b"hel").unwrap(); // half a line first
///     s.flush().unwrap();
///     s.write_all(b"lo\nworld\n").unwrap();
///     let mut r = BufReader::new(s);
///     let (mut a, mut b) = (String::new(), String::new());
///     r.read_line(&mut a).unwrap();
///     r.read_line(&mut b).unwrap();
///     (a, b) // dropping the stream closes it
/// });
/// let mut lines = 0;
/// el.run(&mut lines)?;
/// assert_eq!(client.join().unwrap(), ("HELLO\n".into(), "WORLD\n".into()));
/// assert_eq!(lines, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Handler<S> {
    /// The connection is registered; greet the peer here if the protocol says so.
    fn on_open(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (conn, ctx, state);
    }

    /// Bytes arrived. `data` is everything not yet consumed (an earlier
    /// unconsumed tail followed by the new bytes). Return how many bytes were
    /// consumed; the rest is handed back, with more, next time, or alone
    /// once reading resumes after [`Conn::pause_reading`].
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<S>, state: &mut S) -> usize;

    /// [`on_data`](Self::on_data) for new bytes that sit at the start of
    /// the loop's read buffer, `buf[..len]`, with no earlier tail: a
    /// handler that would copy them into its own buffer may instead take
    /// `buf` for the length of this call, and must put back a buffer of at
    /// least the same length before it returns (its contents need not be
    /// kept). The task layer uses it so a task reads straight from the
    /// loop's buffer; the default calls `on_data`, which is what every
    /// other handler wants.
    #[doc(hidden)]
    #[inline]
    fn on_read_buf(
        &mut self,
        conn: &mut Conn,
        buf: &mut Box<[u8]>,
        len: usize,
        ctx: &mut Ctx<S>,
        state: &mut S,
    ) -> usize {
        self.on_data(conn, &buf[..len], ctx, state)
    }

    /// The write queue, after having been non-empty, was fully written:
    /// output the kernel could not take at once, or that waited for an
    /// outbound connect to complete. (Replies corked and sent together when
    /// the dispatch that wrote them returns do not count: nothing waited.)
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

    /// The output queue, after [`Conn::has_room`] said no (or
    /// [`Conn::try_write`] was refused for room), fell to
    /// [`ConnConfig::low_water`] or below: write more. Lets a writer stream a large
    /// answer, or a forwarder resume reading the other side, without
    /// waiting for the queue to empty completely.
    fn on_room(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (conn, ctx, state);
    }

    /// Nothing happened for [`ConnConfig::idle_timeout`]. The default closes
    /// the connection gracefully (what is queued is written first) with
    /// [`CloseReason::Idle`]; a handler may write a last line before calling
    /// [`Conn::close`], or not close at all, in which case the connection
    /// counts as active from now on. A connection that is still idle one
    /// timeout after its idle close began (a peer that does not read the
    /// goodbye) is dropped at once.
    fn on_idle(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (ctx, state);
        conn.close();
    }

    /// The connection is closed (called exactly once, also for an outbound
    /// connection that never opened: see [`CloseReason::ConnectFailed`], and
    /// for one whose registration the poller refused) and will be dropped
    /// at the end of the turn. The exceptions, where the connection is
    /// dropped without it: one of this handler's methods panicked (the
    /// loop's [`PanicPolicy`](crate::PanicPolicy) applies); it was closed
    /// with [`Ctx::close`] rather than [`net::close`](crate::net::close) or
    /// [`net::abort`](crate::net::abort); or the loop was dropped with it
    /// open (there is no state to hand it then: for a graceful shutdown,
    /// close the connections and turn the loop before dropping it).
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
    pub(super) stream: Stream,
    /// What the connection is doing, as [`Flags`] bits: one word, so the
    /// driver's questions ("may it read?", "anything unusual to settle?")
    /// are one mask test each on every message.
    pub(super) flags: Flags,
    /// What the poller currently watches (None: deregistered).
    pub(super) polled: Option<Interest>,
    /// Output not yet taken by the kernel: `out[out_pos..out_end]`. Every
    /// byte of `out` up to its length is initialized, so a small write is
    /// copied into place without growing the vector (see [`copy_small`]).
    pub(super) out_pos: usize,
    pub(super) out_end: usize,
    pub(super) out: Vec<u8>,
    pub(super) cfg: Rc<ConnConfig>,
    // ---- past the first 64 bytes ----
    pub(super) id: SourceId,
    /// Unconsumed input (a partial frame); empty for an idle connection.
    pub(super) input: Vec<u8>,
    /// Last read or write; kept only with an idle timeout (the clock is not
    /// read for connections that have none).
    pub(super) last_active: Instant,
    pub(super) listener: Option<Rc<ListenShared>>,
    pub(super) idle_timer: Option<TimerId>,
    /// Set once the connection must close; the driver reports it and closes.
    pub(super) closed: Option<CloseReason>,
}

/// The connection's state bits (see [`Conn::flags`]).
pub(super) type Flags = u32;
/// The owner's handler runs: writes are buffered and flushed afterwards.
pub(super) const CORKED: Flags = 1;
/// `on_open` has run.
pub(super) const OPENED: Flags = 1 << 1;
/// The peer closed its writing half.
pub(super) const PEER_EOF: Flags = 1 << 2;
/// close() was asked: finish writing, then close.
pub(super) const CLOSING: Flags = 1 << 3;
/// shutdown_write() was asked: shut the write half once the queue is empty.
pub(super) const SHUT_REQUESTED: Flags = 1 << 4;
pub(super) const WRITE_SHUT: Flags = 1 << 5;
/// Reading paused by backpressure (queue above high water).
pub(super) const THROTTLED: Flags = 1 << 6;
/// Reading paused by the handler.
pub(super) const PAUSED: Flags = 1 << 7;
pub(super) const IDLE_EXPIRED: Flags = 1 << 8;
/// Reading was paused and is allowed again: data may be waiting with no
/// edge left to announce it, so the next dispatch must look.
pub(super) const PROBE_READ: Flags = 1 << 9;
/// The kernel refused part of the output: `on_drained` is owed once the
/// queue empties (corked replies that leave in one write do not count).
pub(super) const BACKLOGGED: Flags = 1 << 10;
/// `closed` holds a reason (mirrored here so the masks below see it).
pub(super) const CLOSED: Flags = 1 << 11;
/// `input` holds a partial frame (mirrored: `input` is in the cold line).
pub(super) const INPUT: Flags = 1 << 12;
/// An idle timer watches the connection, so reads (and, with TIME_WRITES,
/// writes) are timed.
pub(super) const TIMED: Flags = 1 << 13;
/// Writes count as activity for the idle timeout.
pub(super) const TIME_WRITES: Flags = 1 << 14;
/// An outbound connect is in progress: output is queued, nothing is read.
pub(super) const CONNECTING: Flags = 1 << 15;
/// `on_room` is owed once the queue falls to the low-water mark.
pub(super) const ROOM_OWED: Flags = 1 << 16;
/// The close under way began with the idle timeout: report it as Idle.
pub(super) const IDLE_CLOSE: Flags = 1 << 17;
/// Closed for the handler, but the socket stays open to read out what the
/// peer still sends (see `driver::begin_linger`).
pub(super) const LINGERING: Flags = 1 << 18;
/// Reading resumed with unconsumed input: offer it to the handler again
/// before reading (no new byte, or only the EOF, may ever come to bring it).
pub(super) const REOFFER: Flags = 1 << 19;
/// Output went straight to the kernel in this dispatch, with nothing
/// queued (so no flush to notice it): activity for the idle timeout, noted
/// when the dispatch settles. Set only while writes are timed.
pub(super) const WROTE: Flags = 1 << 20;

/// Any of these and the connection does not read.
pub(super) const NOT_READING: Flags = THROTTLED | PAUSED | PEER_EOF | CLOSING | CLOSED | CONNECTING;
/// Any of these and writes are refused.
pub(super) const NOT_WRITING: Flags = CLOSING | CLOSED | SHUT_REQUESTED | WRITE_SHUT;

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

    pub(super) fn has(&self, bits: Flags) -> bool {
        self.flags & bits != 0
    }

    pub(super) fn set(&mut self, bits: Flags) {
        self.flags |= bits;
    }

    pub(super) fn clear(&mut self, bits: Flags) {
        self.flags &= !bits;
    }

    /// Clear `bits`, saying whether any was set.
    pub(super) fn take(&mut self, bits: Flags) -> bool {
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

    /// True once the connection is closed (its `on_close` runs, or has run).
    pub(super) fn is_closed(&self) -> bool {
        self.has(CLOSED)
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
    /// Returns false, sending nothing, when the connection is closing or its
    /// write half is shut. Also false when what is left to queue would pass
    /// [`ConnConfig::max_queued`]: the connection is then closed with
    /// [`CloseReason::Overflow`], by a reset. A large write (8 KiB or more)
    /// into an empty queue goes to the socket first, so the peer may have
    /// had its first part: the reset tells it the rest is not coming. Use
    /// [`try_write`](Self::try_write) to be refused with nothing sent.
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
        // (Not while connecting: the first write after the connect sends it.)
        if (!self.has(CORKED) || data.len() >= DIRECT_WRITE_MIN)
            && self.queued() == 0
            && !self.has(CONNECTING)
        {
            match write_some(&mut self.stream, data) {
                Ok(n) => {
                    hot_trace!("evloop: {} wrote {n} bytes", self.id);
                    if n > 0 {
                        self.wrote_directly();
                    }
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

    /// Like [`write`](Self::write), except that a write the queue has no
    /// room for is refused without closing the connection: it sends nothing,
    /// returns [`WriteError::Full`], and [`Handler::on_room`] runs once the
    /// queue has fallen to [`ConnConfig::low_water`]. Room means the
    /// queue stays within [`ConnConfig::max_queued`]; a write larger than
    /// that would never fit, and is refused with [`WriteError::TooLarge`]
    /// (no `on_room` follows).
    pub fn try_write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if self.has(NOT_WRITING) {
            return Err(WriteError::Closed);
        }
        if data.len() > self.cfg.max_queued {
            return Err(WriteError::TooLarge);
        }
        if self.queued() + data.len() > self.cfg.max_queued {
            self.set(ROOM_OWED);
            return Err(WriteError::Full);
        }
        if self.write(data) {
            Ok(())
        } else {
            Err(WriteError::Closed)
        }
    }

    /// True while the output queue is at or below [`ConnConfig::high_water`].
    /// When it says no, [`Handler::on_room`] runs once the queue has fallen
    /// to [`ConnConfig::low_water`]: a forwarder writes what it read,
    /// asks this, and pauses reading its source until then.
    pub fn has_room(&mut self) -> bool {
        if self.queued() > self.cfg.high_water {
            self.set(ROOM_OWED);
            false
        } else {
            true
        }
    }

    /// How many more bytes a task may hand this connection before it
    /// must wait: the room left under [`ConnConfig::max_queued`] while the
    /// queue is at or below [`ConnConfig::high_water`]; none otherwise, and
    /// then `on_room` is owed. Measured from the queue as it is, so a task
    /// whose replies the kernel took at once may stage a large piece again,
    /// whatever the gap between the two marks.
    #[inline]
    pub(crate) fn task_room(&mut self) -> usize {
        let (queued, cfg) = (self.queued(), &*self.cfg);
        if queued <= cfg.high_water && queued < cfg.max_queued {
            return cfg.max_queued - queued;
        }
        self.set(ROOM_OWED);
        0
    }

    /// The settings this connection runs with: its listener's or
    /// connector's [`ConnConfig`], with the water marks made usable (see
    /// [`ConnConfig::high_water`]).
    pub fn config(&self) -> &ConnConfig {
        &self.cfg
    }

    /// The socket's fd while a write may go straight to it: open for
    /// writing, connected, and nothing queued ahead. For the task layer,
    /// whose future, polled while this connection's dispatch is up the
    /// stack (so with no `&mut Conn` to reach), sends a large reply from
    /// the task's own buffer instead of copying it here first. Valid only
    /// until the connection's dispatch returns.
    pub(crate) fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        (self.flags & (NOT_WRITING | CONNECTING) == 0 && self.queued() == 0).then(|| self.stream.as_raw_fd())
    }

    /// Note output the kernel took at once, for the idle timeout (see
    /// [`WROTE`]); the task layer's direct sends (see [`direct_fd`](Self::direct_fd))
    /// are noted here too.
    pub(crate) fn wrote_directly(&mut self) {
        if self.has(TIME_WRITES) {
            self.set(WROTE);
        }
    }

    /// Fail the connection for an error a write met outside it (the task
    /// layer's direct send): the reason the connection's own write would
    /// have found, which the socket reports only once.
    pub(crate) fn fail_write(&mut self, e: &io::Error) {
        self.fail(reason_of(e));
    }

    /// True while an outbound connection is still connecting: what is
    /// written meanwhile is queued, and goes out when it opens.
    pub fn is_connecting(&self) -> bool {
        self.has(CONNECTING)
    }

    /// Close after everything queued is written. No more reads are delivered.
    pub fn close(&mut self) {
        self.set(CLOSING);
    }

    /// Close now, dropping anything queued.
    pub fn abort(&mut self) {
        self.fail(CloseReason::Local);
    }

    /// Close now with a reset: for a stream cut mid-message, so the peer
    /// can tell it from a complete one.
    pub(crate) fn reset(&mut self) {
        if !self.has(CLOSED) {
            self.stream.reset_on_close();
            self.fail(CloseReason::Local);
        }
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

    /// Read from this peer again. Input the handler left unconsumed is
    /// offered to [`on_data`](Handler::on_data) again first, whether or not
    /// new bytes came meanwhile (and before an EOF is reported). From
    /// outside the connection's own handler, use
    /// [`net::resume_reading`](crate::net::resume_reading) instead, which
    /// also makes its driver run.
    pub fn resume_reading(&mut self) {
        if self.take(PAUSED) {
            self.set(PROBE_READ);
            if self.has(INPUT) {
                self.set(REOFFER);
            }
        }
    }

    /// True while the connection has nothing to poll for and is paused in
    /// the loop (reading paused, nothing queued): scheduling alone does not
    /// reach its driver then.
    pub(super) fn is_parked(&self) -> bool {
        self.polled.is_none()
    }

    /// True when an idle timeout watches this connection and counts writes
    /// as activity (only then is its output timed).
    pub(super) fn times_writes(&self) -> bool {
        self.has(TIME_WRITES)
    }

    /// Note output sent from outside the connection's own handler (which
    /// otherwise only its driver notes), for the idle timeout.
    pub(super) fn mark_active(&mut self, now: Instant) {
        self.last_active = now;
    }

    pub(super) fn fail(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
            self.set(CLOSED);
        }
    }

    pub(super) fn reading(&self) -> bool {
        !self.has(NOT_READING)
    }

    /// Load the connection's hot 64 bytes (for `Entry::touch`): the flags
    /// (near the start) and the config pointer (the last hot field). The
    /// allocator aligns the entry's box to 16 bytes (glibc's malloc does), so
    /// however it falls across cache lines, these two loads bring in both.
    pub(super) fn touch(&self) -> u8 {
        self.flags as u8 ^ Rc::as_ptr(&self.cfg) as usize as u8
    }

    /// Write as much of the queue as the kernel takes.
    pub(super) fn flush(&mut self) {
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
    /// listener's check hook resumes accepting if it was full. If it had
    /// output queued, that is lost, and the peer gets a reset, not a FIN
    /// that would pass the cut stream off as complete.
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.forget_one();
        }
        if self.queued() > 0 && !self.has(CLOSED) {
            log::error!(
                "evloop: connection {} dropped with {} bytes unsent; resetting it",
                self.id,
                self.queued()
            );
            self.stream.reset_on_close();
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
pub(super) fn write_some(stream: &mut Stream, data: &[u8]) -> Result<usize, CloseReason> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(reason_of(&e)),
        }
    }
}

pub(super) fn reason_of(e: &io::Error) -> CloseReason {
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
