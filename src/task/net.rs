//! Connections for tasks: an [`AsyncConn`] is an ordinary buffered
//! [`net`](crate::net) connection (backpressure, caps, half-close and the
//! idle timeout hold as for any handler) whose handler hands what arrives to
//! the task and wakes it.
//!
//! Reading: the handler appends what the connection reads to the task's
//! input (a buffer borrowed from the loop's pool while it holds unread
//! bytes, so an idle connection holds none) and wakes a waiting read. Past
//! [`READ_AHEAD`] unread bytes it pauses reading, so a task that does not
//! read leaves the rest in the kernel, and resumes once the task has read
//! everything.
//!
//! Writing: `write_all` notes its bytes in the hub, and the loop writes
//! them when the task's poll returns: the writes of one poll to one
//! connection leave together, in one system call (except that a large one
//! made once the task has read all its input, with nothing gathered before
//! it, goes straight to the socket from the task's buffer, and what follows
//! it in a second call: see [`Hub::send_direct`]). It waits while the connection's
//! queue is above [`ConnConfig::high_water`](crate::net::ConnConfig::high_water),
//! until `on_room`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::hub::{Hub, Op};
use super::{wait_in, wake, Reply, Waiter};
use crate::net::{
    self as n, Addr, CloseReason, Conn, ConnConfig, ConnectConfig, Handler, ListenConfig, Target,
};
use crate::{Ctx, SourceId};

/// Unread input above which reading pauses until the task catches up: the
/// connection's read budget, so a pipelining peer (four 16 KiB requests
/// in one read) does not pause and resume the connection every time.
const READ_AHEAD: usize = 256 * 1024;
/// Most bytes one poll stages for a connection (fewer when its queue has
/// less room under `max_queued`): a larger write goes out in pieces, one
/// per turn, while the connection has room.
const WRITE_CHUNK: usize = 256 * 1024;

/// What a connection's handler and its task share.
pub(crate) struct Io {
    /// Received and not yet read: `input[pos..]`, or while `lent` is
    /// (`input` is empty then), `lent[pos..lent_len]`.
    input: Vec<u8>,
    pos: usize,
    /// The loop's read buffer, lent for a poll in the connection's place
    /// (see `on_read_buf`); empty when not lent.
    lent: Box<[u8]>,
    lent_len: usize,
    eof: bool,
    closed: Option<CloseReason>,
    /// Reading was paused because the task fell behind.
    paused: bool,
    /// A line too long to read was refused: the rest of it, through its
    /// `\n`, is discarded before anything else is read.
    skipping: bool,
    /// Still connecting: `write_all` waits.
    connecting: bool,
    /// The connection's queue is above high water: `write_all` waits for room.
    full: bool,
    /// `shutdown` or a drop asked to end the output.
    shut: bool,
    /// A `write_all` has staged part of its data and waits to stage the
    /// rest: dropped so, it cuts the stream mid-message.
    cut: bool,
    /// The TCP peer, once connected, for a connection made to a name
    /// (`want_peer`): the others know it from the start.
    peer: Option<SocketAddr>,
    want_peer: bool,
    /// How many more bytes may be staged before `write_all` waits for the
    /// loop to write them: the connection's room when it last wrote, at
    /// most [`WRITE_CHUNK`], so a task writing in a loop yields, and finds
    /// the queue full before it passes `max_queued`.
    stage_room: usize,
    reader: Waiter,
    writer: Option<Waker>,
}

impl Io {
    fn new(connecting: bool, cfg: &ConnConfig) -> Rc<RefCell<Io>> {
        Rc::new(RefCell::new(Io {
            input: Vec::new(),
            pos: 0,
            lent: Box::default(),
            lent_len: 0,
            eof: false,
            closed: None,
            paused: false,
            skipping: false,
            connecting,
            full: false,
            shut: false,
            cut: false,
            peer: None,
            want_peer: false,
            // The queue is empty until the first write.
            stage_room: cfg.max_queued.min(WRITE_CHUNK),
            reader: Waiter::default(),
            writer: None,
        }))
    }

    /// The loop sent what the task staged: how much room is there for more?
    /// (`None`: the connection refused it, closing, and was reset: the
    /// bytes the task was told were taken are lost, and it must hear of it.)
    pub(crate) fn sent(&mut self, room: Option<usize>) {
        match room {
            Some(room) => self.room(room),
            None => {
                self.closed
                    .get_or_insert(CloseReason::Error(io::ErrorKind::ConnectionAborted));
                self.reader.wake();
                wake(&mut self.writer);
            }
        }
    }

    /// The connection has `room` bytes of room for more (0: wait for
    /// `on_room`).
    pub(crate) fn room(&mut self, room: usize) {
        self.full = room == 0;
        self.stage_room = room.min(WRITE_CHUNK);
        if !self.full {
            wake(&mut self.writer);
        }
    }

    /// Where the unread input ends.
    #[inline]
    fn end(&self) -> usize {
        if self.lent.is_empty() {
            self.input.len()
        } else {
            self.lent_len
        }
    }

    /// What a read finds once the input is empty: `None` to wait.
    fn end_of_input(&self) -> Option<io::Result<()>> {
        if self.eof {
            return Some(Ok(()));
        }
        self.closed.map(|reason| match reason {
            CloseReason::PeerClosed | CloseReason::Local => Ok(()),
            other => Err(close_error(other)),
        })
    }
}

/// The error a task sees for a connection that closed for `reason`.
fn close_error(reason: CloseReason) -> io::Error {
    let kind = match reason {
        CloseReason::Reset => io::ErrorKind::ConnectionReset,
        CloseReason::Idle => io::ErrorKind::TimedOut,
        CloseReason::Error(kind) | CloseReason::ConnectFailed(kind) => kind,
        CloseReason::Local | CloseReason::PeerClosed => io::ErrorKind::NotConnected,
        CloseReason::Overflow | CloseReason::InputTooLarge => io::ErrorKind::OutOfMemory,
    };
    io::Error::new(kind, format!("evloop: connection closed: {reason:?}"))
}

/// The handler of a task's connection.
struct TaskConn {
    io: Rc<RefCell<Io>>,
    hub: Rc<Hub>,
}

/// A handler dropped without its `on_close` (its registration failed, or
/// the loop was dropped): the connection is gone all the same, and a task
/// still holding it must not wait for input that cannot come.
impl Drop for TaskConn {
    fn drop(&mut self) {
        if let Ok(mut io) = self.io.try_borrow_mut() {
            if io.closed.is_none() {
                io.closed = Some(CloseReason::Error(io::ErrorKind::NotConnected));
                io.connecting = false;
                io.reader.wake();
                wake(&mut io.writer);
            }
        }
    }
}

impl TaskConn {
    /// The input grew or ended: a task waiting to read is polled right here,
    /// in the connection's place in the turn (eventlet's hub switches to
    /// the green thread waiting on the fd the same way), with no trip
    /// through the wake list; failing that (see [`Hub::poll_in_place`]) it
    /// is woken as usual.
    fn wake_reader<S>(&self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        let task = self.io.borrow_mut().reader.take_task();
        match task {
            Some(task) if self.hub.poll_in_place(task, conn, &self.io, ctx, state) => {}
            Some(_) => self.io.borrow_mut().reader.rouse(),
            None => self.io.borrow_mut().reader.wake(),
        }
    }
}

impl TaskConn {
    /// Keep `data`, which the task has not read, in the task's own buffer.
    fn keep(&self, conn: &mut Conn, data: &[u8]) {
        let mut io = self.io.borrow_mut();
        if io.input.capacity() == 0 {
            io.input = self.hub.take_buf();
        } else if io.pos > 0 {
            // Drop what the task has read (usually all but part of a
            // line), or a reader that always leaves a tail would grow the
            // buffer until reading paused.
            let pos = std::mem::take(&mut io.pos);
            io.input.drain(..pos);
        }
        io.input.extend_from_slice(data);
        if io.input.len() - io.pos >= READ_AHEAD {
            conn.pause_reading();
            io.paused = true;
        }
    }
}

impl<S> Handler<S> for TaskConn {
    fn on_open(&mut self, conn: &mut Conn, _ctx: &mut Ctx<S>, _state: &mut S) {
        let mut io = self.io.borrow_mut();
        if io.want_peer {
            io.peer = conn.stream().tcp_peer();
        }
        io.connecting = false;
        wake(&mut io.writer);
    }

    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<S>, state: &mut S) -> usize {
        self.keep(conn, data);
        self.wake_reader(conn, ctx, state);
        data.len()
    }

    /// The common case, a task waiting with nothing unread: it reads
    /// straight from the loop's read buffer, lent to it for the poll in
    /// the connection's place, and only what it leaves unread (part of a
    /// line) is copied to its own buffer.
    fn on_read_buf(
        &mut self,
        conn: &mut Conn,
        buf: &mut Box<[u8]>,
        len: usize,
        ctx: &mut Ctx<S>,
        state: &mut S,
    ) -> usize {
        {
            let mut io = self.io.borrow_mut();
            if !io.input.is_empty() || !io.reader.has_task() {
                drop(io);
                return self.on_data(conn, &buf[..len], ctx, state);
            }
            io.lent = std::mem::take(buf);
            io.lent_len = len;
            io.pos = 0;
        }
        self.wake_reader(conn, ctx, state);
        let mut io = self.io.borrow_mut();
        *buf = std::mem::take(&mut io.lent);
        let pos = std::mem::take(&mut io.pos);
        drop(io);
        if pos < len {
            self.keep(conn, &buf[pos..len]);
        }
        len
    }

    fn on_eof(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, state: &mut S) {
        // The task decides when to close (after writing what it owes).
        self.io.borrow_mut().eof = true;
        self.wake_reader(conn, ctx, state);
    }

    fn on_room(&mut self, conn: &mut Conn, _ctx: &mut Ctx<S>, _state: &mut S) {
        self.io.borrow_mut().room(conn.task_room());
    }

    fn on_idle(&mut self, conn: &mut Conn, _ctx: &mut Ctx<S>, _state: &mut S) {
        let mut io = self.io.borrow_mut();
        if io.cut {
            // A write waits with part of its message sent: the close would
            // cut it, and a reset says so.
            io.closed.get_or_insert(CloseReason::Idle);
            conn.reset();
        } else {
            conn.close();
        }
    }

    fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason, _ctx: &mut Ctx<S>, _state: &mut S) {
        let mut io = self.io.borrow_mut();
        // A reason the task gave first (its abort, its reset) stands.
        io.closed.get_or_insert(reason);
        io.connecting = false;
        io.reader.wake();
        wake(&mut io.writer);
    }
}

/// A connection owned by a task: read and write it with `.await`.
///
/// Made by [`AsyncListener::accept`] or [`connect`]. Dropping it closes the
/// connection once what was written has been sent (bounded by the idle
/// timeout, if there is one; [`abort`](Self::abort) closes at once, for a
/// peer that has stopped reading). A `write_all` cut short resets it (see
/// *Cancellation*), so the peer can tell the stream was cut.
///
/// # When the connection ends
///
/// Reads return what arrived before the end, then:
///
/// | how it ended ([`close_reason`](Self::close_reason)) | reads | `write_all`, `shutdown` |
/// |---|---|---|
/// | the peer shut its side (FIN), connection still open | `Ok(0)` (`read_exact`: `UnexpectedEof`) | work: half-close |
/// | `PeerClosed`, `Local` | `Ok(0)` | `NotConnected` |
/// | `Reset` | `ConnectionReset` | `ConnectionReset` |
/// | `Idle` (the idle timeout) | `TimedOut` | `TimedOut` |
/// | `Overflow`, `InputTooLarge` | `OutOfMemory` | `OutOfMemory` |
/// | `ConnectFailed(kind)`, `Error(kind)` | `kind` | `kind` |
/// | its loop was dropped: `Error(NotConnected)` | `NotConnected` | `NotConnected` |
/// | after this task's own `shutdown` | as above | `BrokenPipe` |
///
/// An `Idle` close and a [`timeout`](super::timeout) around a read are told
/// apart by where the error is (inside or outside the timeout's `Ok`), or
/// by [`close_reason`](Self::close_reason).
///
/// # Cancellation
///
/// A read dropped before it returns (by [`timeout`](super::timeout), say)
/// leaves the connection usable, and so does a `write_all` that had not
/// staged any of its bytes yet; what each loses:
///
/// - `read` and `read_line` lose nothing: `read` takes bytes only when it
///   returns them, and `read_line` appends what it took to the caller's
///   `line` as it goes, so calling it again finishes the line;
/// - `read_exact` may have taken part of `buf`'s bytes, and the caller
///   cannot tell how many: do not retry it after a timeout (read with
///   `read`, or close);
/// - `write_all` may have sent part of `data`, and then the stream is cut
///   mid-message: the connection is reset when the poll that dropped it
///   returns (TCP; a Unix socket's peer sees the end), so no later close (a drop, the idle timeout, a
///   `shutdown`) can pass the cut stream off as complete with a FIN; its
///   writes, and its reads once the input already received is read, fail
///   with [`ConnectionAborted`](io::ErrorKind::ConnectionAborted) (reads
///   end with `Ok(0)` instead if the peer had already ended its side). The same
///   holds when the loop stops or is dropped while a task is in a
///   `write_all`. (A `write_all` dropped while it waited to stage its
///   first byte sent nothing, and cuts nothing.)
pub struct AsyncConn {
    id: SourceId,
    io: Rc<RefCell<Io>>,
    hub: Rc<Hub>,
    peer: Option<SocketAddr>,
    /// Longest line `read_line` gathers (the connection's `max_input`).
    line_max: usize,
}

impl std::fmt::Debug for AsyncConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Where a connect noted by [`AsyncConn::connect`] leaves its connection.
pub(crate) type Dialing = Reply<io::Result<AsyncConn>>;

/// Make the connection a task asked for, now that there is a `Ctx`.
pub(crate) fn dial<S>(ctx: &mut Ctx<S>, to: &Target, cfg: ConnectConfig, slot: &Rc<RefCell<Dialing>>) {
    if Rc::strong_count(slot) == 1 {
        // Its future was dropped in the poll that asked: dial nobody.
        return;
    }
    Reply::fill(slot, connect(ctx, to, cfg));
}

impl AsyncConn {
    /// Connect to `to` from inside a task (where there is no [`Ctx`] for
    /// [`connect`]): an address, a Unix path, or a host name resolved on the
    /// loop's worker pool, as [`net::connect`](crate::net::connect) does.
    ///
    /// The connection is made when the task's poll returns, and handed
    /// back before it is established, as [`connect`] does: what is
    /// written meanwhile waits for it, and a failed connect (refused,
    /// unreachable, timed out, a name that did not resolve) shows as an
    /// error on the first read or write. An error here only when no socket
    /// could be made (out of fds), or outside a task. So a
    /// [`timeout`](super::timeout) around this call bounds nothing: bound
    /// the connect with [`ConnectConfig::timeout`], or time the first read.
    ///
    /// ```
    /// use evloop::net::{ConnectConfig, ListenConfig};
    /// use evloop::task::{self, AsyncConn};
    ///
    /// let mut el = evloop::EventLoop::<()>::new()?;
    /// let server = task::listen(&mut el, &"127.0.0.1:0".parse()?, ListenConfig::default())?;
    /// let to = server.local_addr().clone().into();
    /// el.spawn(async move {
    ///     let mut conn = server.accept().await.unwrap();
    ///     conn.write_all(b"hello\n").await.unwrap();
    /// })?;
    /// let line = el.block_on(&mut (), async move {
    ///     let mut conn = AsyncConn::connect(&to, ConnectConfig::default()).await?;
    ///     let mut line = Vec::new();
    ///     conn.read_line(&mut line).await?;
    ///     Ok::<_, std::io::Error>(line)
    /// })??;
    /// assert_eq!(line, b"hello\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn connect(to: &Target, cfg: ConnectConfig) -> io::Result<AsyncConn> {
        let (hub, _) = super::current_hub().ok_or_else(super::not_in_task)?;
        let slot = Rc::new(RefCell::new(Dialing::default()));
        hub.push(Op::Connect {
            to: to.clone(),
            cfg,
            slot: slot.clone(),
        });
        std::future::poll_fn(|cx| Reply::poll_take(&slot, cx)).await
    }

    /// The connection's source id (for [`net::write`](crate::net::write)
    /// and friends from handlers).
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// The peer's address (TCP): known from the start for an accepted
    /// connection or one made to an address, and once connected for one
    /// made to a host name.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.or_else(|| self.io.borrow().peer)
    }

    /// Why the connection closed, once it has (`None` while it is open,
    /// a peer's half-close included).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.io.borrow().closed
    }

    /// Wait for input: `Ready(Some(Ok))` at the end of it (EOF or close),
    /// `Ready(None)` when there are unread bytes.
    #[inline]
    fn poll_input(&self, cx: &Context<'_>) -> Poll<Option<io::Result<()>>> {
        let mut io = self.io.borrow_mut();
        if io.pos < io.end() {
            if !io.skipping {
                return Poll::Ready(None);
            }
            drop(io);
            if self.skip_line() {
                return Poll::Ready(None);
            }
            io = self.io.borrow_mut();
        }
        if let Some(end) = io.end_of_input() {
            return Poll::Ready(Some(end));
        }
        io.reader.wait(cx, self.hub.running.get());
        Poll::Pending
    }

    /// Discard the rest of a line too long to read, through its `\n`
    /// (all the input there is, if it has not come yet); true if input
    /// is left after it.
    #[cold]
    #[inline(never)]
    fn skip_line(&self) -> bool {
        let found = self.consume(|input| match find_newline(input) {
            Some(i) => (i + 1, true),
            None => (input.len(), false),
        });
        let mut io = self.io.borrow_mut();
        io.skipping = !found;
        io.pos < io.end()
    }

    /// The error for a line over `max` bytes, `line` holding what was
    /// taken of it: the rest is skipped before the next read.
    #[cold]
    #[inline(never)]
    fn refuse_line(&self, line: &[u8], max: usize) -> io::Error {
        // What was taken may end with the `\n`: then nothing is left.
        self.io.borrow_mut().skipping = line.last() != Some(&b'\n');
        line_too_long(max)
    }

    /// Hand the unread input, up to `f`'s answer of how much it used, to `f`.
    #[inline]
    fn consume<R>(&self, f: impl FnOnce(&[u8]) -> (usize, R)) -> R {
        self.hub.spend();
        let mut io = self.io.borrow_mut();
        let (used, out) = if io.lent.is_empty() {
            f(&io.input[io.pos..])
        } else {
            f(&io.lent[io.pos..io.lent_len])
        };
        io.pos += used;
        if io.pos == io.end() {
            // Read to the end: the buffer goes back to the loop's pool (a
            // lent one when the poll returns), and a connection paused for
            // a slow reader reads again.
            if io.lent.is_empty() {
                io.pos = 0;
                self.hub.give_buf(std::mem::take(&mut io.input));
            }
            if std::mem::take(&mut io.paused) {
                self.hub.push(Op::Resume(self.id));
            }
        }
        out
    }

    /// Read some bytes into `buf`: how many, or 0 at the end of input (the
    /// peer closed its side). Waits while nothing is there.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_shared(buf).await
    }

    /// [`read`](Self::read), for either owner of a split connection.
    async fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if !self.hub.may_read(cx) {
                return Poll::Pending;
            }
            match self.poll_input(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(end)) => Poll::Ready(end.map(|()| 0)),
                Poll::Ready(None) => Poll::Ready(Ok(self.consume(|input| {
                    let n = input.len().min(buf.len());
                    buf[..n].copy_from_slice(&input[..n]);
                    (n, n)
                }))),
            }
        })
        .await
    }

    /// Append one line, up to and including its `\n`, to `line`, and say
    /// how many bytes were appended: fewer than a whole line only at the
    /// end of input (0 once nothing is left), as `BufRead::read_line`.
    ///
    /// A line longer than the connection's input cap
    /// ([`ConnConfig::max_input`](crate::net::ConnConfig::max_input), its
    /// `\n` included) is an [`InvalidData`](io::ErrorKind::InvalidData)
    /// error, once `max_input + 1` of its bytes are read (and appended).
    /// The rest of that line, through its `\n`, is discarded by the reads
    /// that follow (of any kind): the next one returns what comes after it.
    /// (A peer that never ends that line is read and discarded for as long
    /// as it sends, with no further error: the idle timeout or the task
    /// decides when to give up on it.)
    ///
    /// Cancelled (a [`timeout`](super::timeout) that ended it), it leaves
    /// what it had appended in `line` and the rest unread: a `read_line`
    /// on the same `line` goes on with the line, and returns the bytes
    /// it appended itself, not the whole line's length.
    pub async fn read_line(&mut self, line: &mut Vec<u8>) -> io::Result<usize> {
        let start = line.len();
        ReadLine {
            conn: self,
            line,
            start,
        }
        .await
    }

    /// Fill `buf` exactly; an [`UnexpectedEof`](io::ErrorKind::UnexpectedEof)
    /// error if the input ends first.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_shared(buf).await
    }

    async fn read_exact_shared(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_shared(&mut buf[filled..]).await? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "evloop: the input ended before the buffer was full",
                    ))
                }
                n => filled += n,
            }
        }
        Ok(())
    }

    /// Send all of `data`. `Ok` means the connection has taken the bytes,
    /// not that they have left (should the connection refuse them when they
    /// go, as it closes, it is reset and the task's next call fails): they
    /// leave when the task next waits (the
    /// writes of one poll together, in one system call; but a write of
    /// 8 KiB or more, made once the task has read all its input and with
    /// nothing written before it in this poll, goes to the socket at once,
    /// from `data` itself, saving a copy, and what the poll writes after it
    /// leaves in a second call, as after a handler's large
    /// [`Conn::write`](crate::net::Conn::write)); this waits while
    /// the connection's output queue is above its high-water mark, so a
    /// peer that does not read slows the task down instead of growing the
    /// server. An error once the connection is closed or its output shut.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        WriteAll {
            conn: self,
            rest: data,
        }
        .await
    }

    /// Close the connection now, dropping what is queued for it, as
    /// [`Conn::abort`](crate::net::Conn::abort) does: for a peer that has
    /// stopped reading, which a drop would wait on to send what it owes
    /// (until the idle timeout, if there is one). The peer gets what the
    /// kernel had taken, then the end. (A stream cut by a `write_all`
    /// dropped halfway was reset already.)
    pub fn abort(self) {
        self.abort_shared();
    }

    /// A stream cut mid-message (see `Io::cut`) is reset now (when the
    /// poll returns), before anything can end it with a FIN: true if it was. Its reads and
    /// writes then fail with `ConnectionAborted`.
    fn reset_if_cut(&self, io: &mut Io) -> bool {
        if !io.cut || io.closed.is_some() {
            return false;
        }
        io.closed = Some(CloseReason::Error(io::ErrorKind::ConnectionAborted));
        self.hub.push(Op::Reset(self.id));
        io.reader.wake();
        true
    }

    fn abort_shared(&self) {
        let mut io = self.io.borrow_mut();
        if io.closed.is_none() {
            io.closed = Some(CloseReason::Local);
            self.hub.push(Op::Abort(self.id));
        }
    }

    /// Split the connection in two owners, one that reads and one that
    /// writes, for two tasks to use at once (a proxy copying both ways, a
    /// reader and a writer fed from elsewhere). Dropping the
    /// [`WriteHalf`] shuts the output (a FIN once what was written has
    /// been sent), and dropping both
    /// closes the connection, as dropping an `AsyncConn` does.
    ///
    /// ```
    /// use evloop::net::{ConnectConfig, ListenConfig};
    /// use evloop::task::{self, AsyncConn};
    ///
    /// let mut el = evloop::EventLoop::<()>::new()?;
    /// let server = task::listen(&mut el, &"127.0.0.1:0".parse()?, ListenConfig::default())?;
    /// let to = server.local_addr().clone().into();
    /// let done = std::rc::Rc::new(std::cell::Cell::new(false));
    /// let seen = done.clone();
    /// el.spawn(async move {
    ///     let (mut rx, mut tx) = server.accept().await.unwrap().into_split();
    ///     // The writer goes its own way, whatever the reader waits for.
    ///     task::spawn_n(async move {
    ///         let _ = tx.write_all(b"hello\n").await;
    ///     })
    ///     .unwrap();
    ///     let mut line = Vec::new();
    ///     rx.read_line(&mut line).await.unwrap();
    ///     seen.set(line == b"bye\n");
    /// })?;
    /// el.block_on(&mut (), async move {
    ///     let mut conn = AsyncConn::connect(&to, ConnectConfig::default()).await?;
    ///     let mut line = Vec::new();
    ///     conn.read_line(&mut line).await?;
    ///     assert_eq!(line, b"hello\n");
    ///     conn.write_all(b"bye\n").await?;
    ///     conn.read_line(&mut line).await // the end, once both halves are gone
    /// })??;
    /// assert!(done.get());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let conn = Rc::new(self);
        (ReadHalf { conn: conn.clone() }, WriteHalf { conn })
    }

    /// Shut the write half (FIN to the peer) once everything written has
    /// been sent; reading goes on until the peer closes too.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.shutdown_shared()
    }

    fn shutdown_shared(&self) -> io::Result<()> {
        let mut io = self.io.borrow_mut();
        // (A `write_all` leaked half-staged, with `forget`, cut the stream
        // as one dropped would.)
        self.reset_if_cut(&mut io);
        if let Some(reason) = io.closed {
            return Err(close_error(reason));
        }
        if !io.shut {
            io.shut = true;
            self.hub.push(Op::Shutdown(self.id));
        }
        Ok(())
    }
}

/// The reading owner of a connection split by [`AsyncConn::into_split`]:
/// its reads are [`AsyncConn`]'s.
#[derive(Debug)]
pub struct ReadHalf {
    conn: Rc<AsyncConn>,
}

impl ReadHalf {
    /// The connection's source id.
    pub fn id(&self) -> SourceId {
        self.conn.id
    }

    /// The peer's address, as [`AsyncConn::peer_addr`].
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer_addr()
    }

    /// Why the connection closed, as [`AsyncConn::close_reason`].
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.conn.close_reason()
    }

    /// As [`AsyncConn::read`].
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.conn.read_shared(buf).await
    }

    /// As [`AsyncConn::read_line`].
    pub async fn read_line(&mut self, line: &mut Vec<u8>) -> io::Result<usize> {
        let start = line.len();
        ReadLine {
            conn: &self.conn,
            line,
            start,
        }
        .await
    }

    /// As [`AsyncConn::read_exact`].
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.conn.read_exact_shared(buf).await
    }
}

/// The writing owner of a connection split by [`AsyncConn::into_split`]:
/// its writes are [`AsyncConn`]'s. Dropping it shuts the connection's
/// output, as [`shutdown`](Self::shutdown) does.
#[derive(Debug)]
pub struct WriteHalf {
    conn: Rc<AsyncConn>,
}

impl WriteHalf {
    /// The connection's source id.
    pub fn id(&self) -> SourceId {
        self.conn.id
    }

    /// As [`AsyncConn::write_all`].
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        WriteAll {
            conn: &self.conn,
            rest: data,
        }
        .await
    }

    /// As [`AsyncConn::shutdown`].
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.shutdown_shared()
    }

    /// Close the whole connection now, as [`AsyncConn::abort`]: the read
    /// half sees the end of its input.
    pub fn abort(self) {
        self.conn.abort_shared();
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        // An error here: the connection is closed (or was reset).
        let _ = self.conn.shutdown_shared();
    }
}

// `read_line` and `write_all` are futures of their own, with an inline
// `poll`, rather than `poll_fn` closures: whether a closure's poll was
// inlined into the task's body depended on how rustc split the crate into
// codegen units (an unrelated `Drop` impl cost echo_async 62 instructions
// a message).

/// [`AsyncConn::read_line`]'s future.
struct ReadLine<'a> {
    conn: &'a AsyncConn,
    line: &'a mut Vec<u8>,
    /// The line's length when the call began.
    start: usize,
}

impl Future for ReadLine<'_> {
    type Output = io::Result<usize>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ReadLine { conn, line, start } = &mut *self;
        if !conn.hub.may_read(cx) {
            return Poll::Pending;
        }
        let max = conn.line_max;
        loop {
            let got = line.len() - *start;
            match conn.poll_input(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(end)) => return Poll::Ready(end.map(|()| got)),
                Poll::Ready(None) => {}
            }
            let done = conn.consume(|input| match find_newline(input) {
                Some(i) if got + i < max => {
                    line.extend_from_slice(&input[..=i]);
                    (i + 1, Some(i + 1))
                }
                _ => {
                    // Part of a line: take no more than fits the cap, so a
                    // line too long is refused before it is all gathered.
                    let n = input.len().min((max - got).saturating_add(1));
                    line.extend_from_slice(&input[..n]);
                    (n, None)
                }
            });
            if let Some(n) = done {
                return Poll::Ready(Ok(got + n));
            }
            if line.len() - *start > max {
                return Poll::Ready(Err(conn.refuse_line(line, max)));
            }
        }
    }
}

/// [`AsyncConn::write_all`]'s future.
struct WriteAll<'a> {
    conn: &'a AsyncConn,
    /// What is left to stage.
    rest: &'a [u8],
}

impl Future for WriteAll<'_> {
    type Output = io::Result<()>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let conn = self.conn;
        let mut io = conn.io.borrow_mut();
        if let Some(reason) = io.closed {
            return Poll::Ready(Err(close_error(reason)));
        }
        if io.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "evloop: the connection's output is shut",
            )));
        }
        if self.rest.is_empty() {
            // Nothing to wait for room for.
            return Poll::Ready(Ok(()));
        }
        if io.full || io.connecting || io.stage_room == 0 {
            wait_in(&mut io.writer, cx);
            return Poll::Pending;
        }
        // Straight to the socket, when the task has read all there is (it
        // is about to wait, so this would leave alone in the poll's one
        // write): with more input unread, more replies may follow in this
        // poll, and copying them together costs less than a call each.
        if io.pos >= io.end() {
            let sent = conn.hub.send_direct(conn.id, self.rest);
            self.rest = &self.rest[sent..];
            if self.rest.is_empty() {
                io.cut = false;
                return Poll::Ready(Ok(()));
            }
        }
        let n = self.rest.len().min(io.stage_room);
        io.stage_room -= n;
        conn.hub.stage(conn.id, &conn.io, &self.rest[..n]);
        self.rest = &self.rest[n..];
        if self.rest.is_empty() {
            io.cut = false;
            return Poll::Ready(Ok(()));
        }
        // The loop sends this piece when the poll returns and says then
        // whether there is room for the next.
        io.cut = true;
        wait_in(&mut io.writer, cx);
        Poll::Pending
    }
}

/// A `write_all` dropped with part of its data staged (a timeout, a
/// cancel, its task ended) cut the stream mid-message: the connection is
/// reset when the poll returns, so that no close, however it comes (a drop, the idle
/// timeout, a shutdown), passes the cut stream off as complete with a FIN.
impl Drop for WriteAll<'_> {
    fn drop(&mut self) {
        if !self.rest.is_empty() {
            let mut io = self.conn.io.borrow_mut();
            self.conn.reset_if_cut(&mut io);
        }
    }
}

#[cold]
fn line_too_long(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("evloop: a line longer than the connection's max_input ({max} bytes)"),
    )
}

/// Where the first `\n` in `s` is. glibc's `memchr` reads a vector
/// register a step; std's (behind `read_until`) reads two words, and on a
/// short line spends most of its time getting aligned (166 instructions
/// for 64 bytes under callgrind); a byte loop cost 5 µs a 16 KiB line.
fn find_newline(s: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most `s.len()` bytes from `s`'s start, all
    // inside the slice, and returns null or a pointer to one of them.
    let at = unsafe { libc::memchr(s.as_ptr().cast(), b'\n'.into(), s.len()) };
    (!at.is_null()).then(|| at as usize - s.as_ptr() as usize)
}

impl Drop for AsyncConn {
    fn drop(&mut self) {
        let mut io = self.io.borrow_mut();
        // (A `write_all` still half-staged, one leaked with `forget`, cut
        // the stream as one dropped would.)
        if !self.reset_if_cut(&mut io) && io.closed.is_none() {
            self.hub.push(Op::Close(self.id));
        }
        let input = std::mem::take(&mut io.input);
        // Unread input is dropped, a lent buffer's too (dropped in its
        // connection's place, this task leaves nothing to keep).
        io.pos = if io.lent.is_empty() { 0 } else { io.lent_len };
        self.hub.give_buf(input);
    }
}

/// A new connection's handler, and the state it shares with the task.
fn handler(hub: &Rc<Hub>, connecting: bool, cfg: &ConnConfig) -> (TaskConn, Rc<RefCell<Io>>) {
    let io = Io::new(connecting, cfg);
    let handler = TaskConn {
        io: io.clone(),
        hub: hub.clone(),
    };
    (handler, io)
}

/// Connect to `to` for a task: the connection is returned at once, and
/// what is written before it is established waits for it. A failed connect
/// shows as an error on the first read or write.
pub fn connect<S>(ctx: &mut Ctx<S>, to: &Target, cfg: ConnectConfig) -> io::Result<AsyncConn> {
    let hub = Hub::of(ctx)?;
    let (handler, io) = handler(&hub, true, &cfg.conn);
    let peer = match to {
        Target::Addr(Addr::Tcp(a)) => Some(*a),
        _ => None,
    };
    // Which address of a name (or of a list) answers is known once open.
    io.borrow_mut().want_peer = matches!(to, Target::Name { .. } | Target::Addrs(_));
    let line_max = cfg.conn.max_input;
    let id = n::connect(ctx, to, cfg, handler)?;
    Ok(AsyncConn {
        id,
        io,
        hub,
        peer,
        line_max,
    })
}

/// Accepted connections waiting for a task to take them.
struct Backlog {
    conns: VecDeque<AsyncConn>,
    /// The tasks waiting in `accept` (several may share a listener).
    waiters: Vec<Waker>,
}

impl Backlog {
    /// Wake every waiting `accept`: the first polled takes the connection,
    /// the rest find none and wait again. (Waking one would lose the
    /// connection when that one's future was dropped meanwhile.)
    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

/// The listener's end of the backlog, owned by its accept callback: when
/// the listener is closed the callback is dropped, and a waiting `accept`
/// is woken to find it gone.
struct Feeder(Rc<RefCell<Backlog>>);

impl Drop for Feeder {
    fn drop(&mut self) {
        if let Ok(mut backlog) = self.0.try_borrow_mut() {
            backlog.wake_all();
        }
    }
}

/// A listener whose connections a task takes with [`accept`](Self::accept).
/// Dropping it stops listening.
pub struct AsyncListener {
    id: SourceId,
    addr: Addr,
    backlog: Rc<RefCell<Backlog>>,
    hub: Rc<Hub>,
}

impl std::fmt::Debug for AsyncListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncListener")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Listen on `addr` for a task: each connection is accepted by the
/// listener as [`net::listen`](crate::net::listen) does (accept budget, fd
/// exhaustion, connection limit all hold) and waits for
/// [`AsyncListener::accept`].
///
/// ```no_run
/// use evloop::{task, EventLoop};
/// let mut el = EventLoop::<()>::new()?;
/// let listener = task::listen(&mut el, &"127.0.0.1:6000".parse()?, Default::default())?;
/// el.spawn(async move {
///     while let Ok(mut conn) = listener.accept().await {
///         task::spawn(async move {
///             let mut line = Vec::new();
///             while conn.read_line(&mut line).await.unwrap_or(0) > 0 {
///                 if conn.write_all(&line).await.is_err() {
///                     break;
///                 }
///                 line.clear();
///             }
///         })
///         .unwrap();
///     }
/// })?;
/// el.run(&mut ())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn listen<S: 'static>(ctx: &mut Ctx<S>, addr: &Addr, cfg: ListenConfig) -> io::Result<AsyncListener> {
    let hub = Hub::of(ctx)?;
    let backlog = Rc::new(RefCell::new(Backlog {
        conns: VecDeque::new(),
        waiters: Vec::new(),
    }));
    let (feeder, conn_hub, conn_cfg) = (Feeder(backlog.clone()), hub.clone(), cfg.conn.clone());
    let listening = n::listen(ctx, addr, cfg, move |stream, id, _ctx, _state| {
        let peer = match stream {
            n::Stream::Tcp(s) => s.peer_addr().ok(),
            _ => None,
        };
        let (handler, io) = handler(&conn_hub, false, &conn_cfg);
        let conn = AsyncConn {
            id,
            io,
            hub: conn_hub.clone(),
            peer,
            line_max: conn_cfg.max_input,
        };
        let mut backlog = feeder.0.borrow_mut();
        backlog.conns.push_back(conn);
        backlog.wake_all();
        Some(handler)
    })?;
    Ok(AsyncListener {
        id: listening.id,
        addr: listening.addr,
        backlog,
        hub,
    })
}

impl AsyncListener {
    /// The listener's source id.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// Where it listens (the real port when asked for port 0).
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// The next accepted connection; waits while there is none. An error
    /// once the listener has been closed.
    pub async fn accept(&self) -> io::Result<AsyncConn> {
        std::future::poll_fn(|cx| {
            let mut backlog = self.backlog.borrow_mut();
            if let Some(conn) = backlog.conns.pop_front() {
                return Poll::Ready(Ok(conn));
            }
            if Rc::strong_count(&self.backlog) == 1 {
                // The accept callback (which holds the other reference) is
                // gone: the listener was closed.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "evloop: the listener is closed",
                )));
            }
            if !backlog.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                backlog.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for AsyncListener {
    fn drop(&mut self) {
        self.hub.push(Op::CloseSource(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::find_newline;

    #[test]
    fn find_newline_agrees_with_a_byte_search() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..80 {
            for _ in 0..200 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly bytes near '\n' (and 0x80+), where a
                        // word trick would go wrong.
                        [b'\n', 0x0b, 0x09, 0x8a, 0x00, 0xff, b'a'][(seed % 7) as usize]
                    })
                    .collect();
                let want = s.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&s), want, "{s:?}");
            }
        }
    }
}
