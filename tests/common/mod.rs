//! Scaffolding shared by the integration tests: owned fds as mio sources,
//! socket pairs, a bounded "turn until" driver and a watchdog.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use evloop::EventLoop;
use mio::unix::SourceFd;

/// The poll timeout of every bounded turn in the tests.
pub const TICK: Duration = Duration::from_millis(50);

/// How many turns in a row may do nothing before a wait is declared failed
/// (100 x 50 ms: far beyond anything a passing test needs).
pub const MAX_IDLE_TURNS: usize = 100;

/// An fd the loop owns, registered through [`SourceFd`]. Dropping it closes the fd.
#[derive(Debug)]
pub struct FdSource(pub OwnedFd);

impl mio::event::Source for FdSource {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

impl AsRawFd for FdSource {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A non-blocking eventfd with counter 0.
pub fn eventfd() -> FdSource {
    // SAFETY: plain syscall with constant flags; returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    FdSource(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add `n` to an eventfd's counter.
pub fn eventfd_write(fd: RawFd, n: u64) {
    let buf = n.to_ne_bytes();
    // SAFETY: writing 8 bytes from a live 8-byte buffer to an fd the caller keeps open.
    let rc = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    assert_eq!(rc, 8, "eventfd write: {}", io::Error::last_os_error());
}

/// Read and reset an eventfd's counter; 0 when it was already 0.
pub fn eventfd_read(fd: RawFd) -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: reading at most 8 bytes into a live 8-byte buffer from an fd the caller keeps open.
    let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "eventfd read: {err}");
        return 0;
    }
    u64::from_ne_bytes(buf)
}

/// A non-blocking pipe: (read end, write end).
pub fn pipe() -> (FdSource, OwnedFd) {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (FdSource(r), w)
}

/// Write one byte to a pipe's write end.
pub fn pipe_poke(w: &OwnedFd) {
    let b = [1u8];
    // SAFETY: writing 1 byte from a live buffer to an fd we hold open.
    let rc = unsafe { libc::write(w.as_raw_fd(), b.as_ptr().cast(), 1) };
    assert_eq!(rc, 1, "pipe write: {}", io::Error::last_os_error());
}

/// A connected socket pair: the loop's end (mio, non-blocking) and the test's
/// end (std, blocking).
pub fn pair() -> (mio::net::UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    (mio::net::UnixStream::from_std(a), b)
}

/// Read everything available from a non-blocking reader; returns the byte
/// count, or `None` at end of stream (or when the peer reset the stream,
/// which is how a socket closed with unread data ends).
pub fn drain(r: &mut impl Read) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return None,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// True when the loop has closed its end of the pair: the peer reads end of
/// stream. (Checking the peer, not the fd number, because parallel tests may
/// reuse fd numbers at any moment.)
pub fn peer_sees_eof(peer: &mut UnixStream) -> bool {
    peer.set_nonblocking(true).expect("nonblocking");
    let eof = drain(peer).is_none();
    peer.set_nonblocking(false).expect("blocking");
    eof
}

/// Turn the loop (each poll at most [`TICK`]) until `done(state)` holds.
/// Panics after [`MAX_IDLE_TURNS`] turns in a row that ran nothing. Returns
/// the number of turns taken.
pub fn turn_until<S>(el: &mut EventLoop<S>, state: &mut S, mut done: impl FnMut(&S) -> bool) -> usize {
    let mut turns = 0;
    let mut idle = 0;
    while !done(state) {
        let t = el.turn(state, Some(TICK)).expect("turn");
        turns += 1;
        idle = if t.is_idle() { idle + 1 } else { 0 };
        assert!(
            idle < MAX_IDLE_TURNS,
            "gave up after {turns} turns ({idle} idle in a row)"
        );
    }
    turns
}

/// Turn the loop (each poll at most [`TICK`]) until `id` is closed. Panics
/// after [`MAX_IDLE_TURNS`] turns.
pub fn turn_until_closed<S>(el: &mut EventLoop<S>, state: &mut S, id: evloop::SourceId) {
    for _ in 0..MAX_IDLE_TURNS {
        if !el.is_open(id) {
            return;
        }
        el.turn(state, Some(TICK)).expect("turn");
    }
    panic!("{id} still open after {MAX_IDLE_TURNS} turns");
}

/// Turn the loop `n` times with a [`TICK`] cap each.
pub fn turns<S>(el: &mut EventLoop<S>, state: &mut S, n: usize) {
    for _ in 0..n {
        el.turn(state, Some(TICK)).expect("turn");
    }
}

/// Aborts the whole process if not dropped within `secs` seconds: for tests
/// whose failure mode is blocking forever (a poll that should not sleep).
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    pub fn new(secs: u64, what: &'static str) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
                // Straight to fd 2: the test harness would swallow eprintln!.
                let msg = format!("watchdog: `{what}` still blocked after {secs} s; aborting\n");
                let _ = std::io::stderr().write_all(msg.as_bytes());
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender disconnects the channel and lets the thread go.
        self.0.take();
    }
}

/// A loop on a manual clock, and the clock that drives it.
pub fn manual_loop<S>() -> (EventLoop<S>, evloop::ManualClock) {
    let clock = evloop::ManualClock::new();
    let el = EventLoop::builder()
        .clock(evloop::Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    (el, clock)
}
