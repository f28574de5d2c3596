//! Unix signals delivered as readiness on a pipe (the "self-pipe" technique).
//!
//! [`Signals`] installs a small C handler for each requested signal. The handler
//! writes the signal number as one byte into a non-blocking pipe; the read end of
//! that pipe is registered with mio like any other source, so signals show up in
//! the ordinary poll loop and are read back with [`Signals::drain`].
//!
//! # Why a self-pipe and not `signalfd`
//!
//! `signalfd` only sees a signal if that signal is blocked in *every* thread of
//! the process; otherwise the kernel is free to deliver a process-directed signal
//! to some thread that has it unblocked, where the default action (usually
//! termination) runs instead. Threads we do not control (test harness threads,
//! threads spawned by other libraries) make that guarantee impossible to give.
//! A handler installed with `sigaction` is process-wide, so whichever thread
//! receives the signal, the byte lands in our pipe.
//!
//! # Ownership
//!
//! Signal dispositions are process-global, so each signal can be owned by at most
//! one live [`Signals`] per process. Asking for a signal that is already owned
//! fails with [`io::ErrorKind::AlreadyExists`]. Dropping a [`Signals`] restores the
//! disposition each signal had when it was installed and releases ownership.
//!
//! # A full pipe
//!
//! A stalled loop under a storm of one signal (SIGCHLD, a real-time signal)
//! fills the pipe. The handler then marks the signal in a per-signal flag
//! instead, and [`Signals::drain`] reports marked signals after the bytes:
//! repeats of one signal merge, a different one is never lost behind them.
//!
//! Only Linux is supported (the handler uses `__errno_location` and the pipe is
//! created with `pipe2`).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use libc::c_int;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Highest signal number we can track; also bounds the byte the handler writes.
/// Linux's `SIGRTMAX` is 64.
const MAX_SIGNAL: c_int = 64;

/// Signals that are refused: SIGKILL and SIGSTOP cannot be caught at all, and the
/// rest report synchronous faults. Returning from a handler for a fault re-runs
/// the faulting instruction, so turning them into events would spin forever.
const REFUSED: [c_int; 6] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
];

// A `const` is the only way to build an array of atomics on our MSRV (inline
// `const {}` blocks need 1.79). It is used solely as an array-repeat initialiser,
// never shared, so the lint's concern (each use is a fresh copy) is the intent.
#[allow(clippy::declare_interior_mutable_const)]
const NO_FD: AtomicI32 = AtomicI32::new(-1);

/// Write end of the owning set's pipe, indexed by signal number; -1 = unowned.
/// This is the only state the handler can reach, hence a plain static.
static WRITE_FDS: [AtomicI32; MAX_SIGNAL as usize + 1] = [NO_FD; MAX_SIGNAL as usize + 1];

#[allow(clippy::declare_interior_mutable_const)]
const NOT_LOST: AtomicBool = AtomicBool::new(false);

/// A delivery of the signal found the pipe full, so its byte is not in it.
/// Repeats of one signal may merge, but a full pipe must not cost a
/// different signal (SIGTERM behind a storm of SIGCHLD): `drain` reports
/// these after the bytes.
static LOST: [AtomicBool; MAX_SIGNAL as usize + 1] = [NOT_LOST; MAX_SIGNAL as usize + 1];

/// Written after a signal is marked lost: no signal has number 0, so the
/// byte only wakes a reader that may have emptied the pipe just before.
const WAKE_BYTE: u8 = 0;

/// Number of handler invocations currently between reading a slot and finishing
/// the write. Drop waits for this to reach zero before closing the write end, so
/// a handler running on another thread can never write into a recycled fd number.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A set of Unix signals delivered as readiness on a pipe.
///
/// Register it with a [`mio::Registry`] for [`Interest::READABLE`]; when it becomes
/// readable, call [`Signals::drain`] to collect the signals. mio is edge-triggered,
/// so always drain until it returns (it reads until the pipe is empty).
///
/// Signal dispositions are process-global, so each signal may be owned by only
/// one live `Signals` in the process: asking for an owned one fails with
/// [`io::ErrorKind::AlreadyExists`]. Dropping the set restores every signal's
/// previous disposition. A self-pipe is used rather than `signalfd` because
/// `signalfd` needs the signal blocked in every thread of the process, which a
/// library cannot promise.
pub struct Signals {
    read: OwnedFd,
    // Only the handler writes to this (via WRITE_FDS); kept here so it is closed
    // only after the handler can no longer reach it.
    write: OwnedFd,
    signals: Vec<c_int>,
    /// Disposition each signal had before we installed ours, parallel to `signals`.
    saved: Vec<libc::sigaction>,
}

impl Signals {
    /// Installs handlers for `signals` (for example `libc::SIGINT`, `SIGTERM`,
    /// `SIGHUP`, `SIGUSR1`, `SIGUSR2`, or `libc::SIGRTMIN() + n`).
    ///
    /// Duplicate entries are accepted and owned once.
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] for an empty list, a number outside
    ///   `1..=SIGRTMAX` (or above 64), a number reserved by the C library between
    ///   the standard and real-time ranges, or a signal that cannot or should not
    ///   be caught (`SIGKILL`, `SIGSTOP`, `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`).
    /// - [`io::ErrorKind::AlreadyExists`] if another live `Signals` in this process
    ///   already owns one of the signals.
    /// - The OS error if `pipe2` or `sigaction` fails.
    ///
    /// On any error nothing is left behind: no handler stays installed, no signal
    /// stays owned and no fd stays open.
    pub fn new(signals: &[c_int]) -> io::Result<Signals> {
        if signals.is_empty() {
            return Err(invalid("empty signal list"));
        }
        let mut owned = Vec::with_capacity(signals.len());
        for &sig in signals {
            validate(sig)?;
            if !owned.contains(&sig) {
                owned.push(sig);
            }
        }

        let (read, write) = pipe()?;
        claim(&owned, write.as_raw_fd())?;
        for &sig in &owned {
            // A previous owner's undrained mark is not ours to report.
            LOST[sig as usize].store(false, Ordering::SeqCst);
        }
        let saved = match install(&owned) {
            Ok(saved) => saved,
            Err(err) => {
                // `install` already put back what it changed; the pipe closes
                // when `read`/`write` drop, after `release` has quiesced handlers.
                release(&owned, write.as_raw_fd());
                return Err(err);
            }
        };
        Ok(Signals {
            read,
            write,
            signals: owned,
            saved,
        })
    }

    /// Reads every signal delivered since the last call and appends them to `out`
    /// in arrival order, one entry per delivery.
    ///
    /// Repeats of a signal that arrive while an earlier one is still pending may
    /// be merged into one by the kernel, and repeats that find the pipe full
    /// (a loop stalled under a storm of signals) are merged too: each signal
    /// delivered while the pipe was full is appended once, after what the
    /// pipe held, so no signal is lost behind another. Never blocks: it reads until the pipe is
    /// empty and returns the number of signals appended. Does not allocate unless
    /// `out` needs to grow.
    ///
    /// # Errors
    ///
    /// Returns the OS error if reading the pipe fails for a reason other than it
    /// being empty. Signals read before the error are already in `out`.
    pub fn drain(&mut self, out: &mut Vec<c_int>) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        let mut count = 0;
        loop {
            // SAFETY: `read` is an fd we own for as long as `self` lives, and
            // `buf` is a writable buffer of exactly `buf.len()` bytes.
            let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(count + self.take_lost(out)),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            // We hold the write end, so EOF cannot happen; treat it as empty anyway.
            if n == 0 {
                return Ok(count + self.take_lost(out));
            }
            let before = out.len();
            let bytes = buf[..n as usize].iter().filter(|&&b| b != WAKE_BYTE);
            out.extend(bytes.map(|&b| c_int::from(b)));
            count += out.len() - before;
        }
    }

    /// Append the signals whose bytes a full pipe refused. Called once the
    /// pipe reads empty: a handler marks a signal lost only after its write
    /// failed on a full pipe, then writes a wake-up byte, so a mark made
    /// after this looks is followed by a byte, hence by another drain.
    fn take_lost(&self, out: &mut Vec<c_int>) -> usize {
        let mut n = 0;
        for &sig in &self.signals {
            if LOST[sig as usize].swap(false, Ordering::SeqCst) {
                out.push(sig);
                n += 1;
            }
        }
        n
    }

    /// The signals this set owns, without duplicates, in the order first given.
    pub fn signals(&self) -> &[c_int] {
        &self.signals
    }
}

impl mio::event::Source for Signals {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.read.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.read.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.read.as_raw_fd()).deregister(registry)
    }
}

impl AsRawFd for Signals {
    /// The read end of the pipe.
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals")
            .field("fd", &self.read.as_raw_fd())
            .field("signals", &self.signals)
            .finish()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        restore(&self.signals, &self.saved);
        release(&self.signals, self.write.as_raw_fd());
        // The pipe fds close when the fields drop, which is after `release` has
        // made sure no handler can still be writing to them.
    }
}

/// The signal handler. Only async-signal-safe operations: atomics and `write`.
extern "C" fn on_signal(signum: c_int) {
    // SAFETY: `__errno_location` has no preconditions and returns a pointer to the
    // calling thread's errno, valid for the life of the thread.
    let saved_errno = unsafe { *libc::__errno_location() };
    // Announce ourselves before reading the slot, so Drop (which clears the slot
    // and then waits for zero) either sees us or we see its -1.
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let slot = usize::try_from(signum).ok().and_then(|i| WRITE_FDS.get(i));
    if let Some(slot) = slot {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // Validation capped signal numbers at 64, so this fits in a byte.
            if !write_byte(fd, signum as u8) {
                // The pipe is full. The reader has bytes to read and will
                // look at LOST once it has read them all; in case it emptied
                // the pipe between our write and the mark, wake it again
                // (if the pipe is still full, that write fails harmlessly).
                LOST[signum as usize].store(true, Ordering::SeqCst);
                write_byte(fd, WAKE_BYTE);
            }
        }
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above; restoring errno keeps the interrupted code's view intact.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Write one byte from the signal handler; false if the pipe was full.
fn write_byte(fd: RawFd, byte: u8) -> bool {
    loop {
        // SAFETY: `fd` is the write end of a pipe kept open until IN_FLIGHT
        // drops to zero, and `byte` is one readable byte.
        let n = unsafe { libc::write(fd, ptr::addr_of!(byte).cast(), 1) };
        if n >= 0 {
            return true;
        }
        // SAFETY: `__errno_location` has no preconditions; errno of this thread.
        if unsafe { *libc::__errno_location() } != libc::EINTR {
            // EAGAIN: full (the only other errors would be our own bugs).
            return false;
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn validate(sig: c_int) -> io::Result<()> {
    if sig < 1 || sig > libc::SIGRTMAX().min(MAX_SIGNAL) {
        return Err(invalid(&format!("signal number {sig} is out of range")));
    }
    // glibc keeps the first few real-time numbers for its own threading use.
    if sig > libc::SIGSYS && sig < libc::SIGRTMIN() {
        return Err(invalid(&format!(
            "signal number {sig} is reserved by the C library"
        )));
    }
    if REFUSED.contains(&sig) {
        return Err(invalid(&format!(
            "signal {sig} cannot be caught or is a fault, not an event"
        )));
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    // CLOEXEC so children don't inherit it; NONBLOCK so neither the handler nor
    // `drain` can ever block.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and nothing else owns them.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Marks `signals` as owned by `fd`, all or nothing.
fn claim(signals: &[c_int], fd: RawFd) -> io::Result<()> {
    for (i, &sig) in signals.iter().enumerate() {
        let slot = &WRITE_FDS[sig as usize];
        if slot
            .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // None of our handlers is installed yet, so no handler can be using
            // these slots on our behalf; clearing them is enough.
            for &prev in &signals[..i] {
                WRITE_FDS[prev as usize].store(-1, Ordering::SeqCst);
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("signal {sig} is already owned by another Signals"),
            ));
        }
    }
    Ok(())
}

/// Clears `fd`'s ownership of `signals` and waits until no handler can still
/// hold it.
fn release(signals: &[c_int], fd: RawFd) {
    for &sig in signals {
        // Only clear slots that are really ours, so a bug elsewhere can never
        // silence another set's signal.
        let released = WRITE_FDS[sig as usize]
            .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        debug_assert!(released, "signal {sig} was not owned by fd {fd}");
    }
    // Handlers never block, so this wait is bounded by one `write` call on
    // whichever thread took the signal.
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Installs `on_signal` for every signal, returning the previous dispositions.
/// On failure, puts back whatever it had already changed.
fn install(signals: &[c_int]) -> io::Result<Vec<libc::sigaction>> {
    // SAFETY: `sigaction` is a plain C struct of integers, a signal mask and a
    // nullable function pointer; all-zero is a valid value for each of them.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
    // SA_RESTART so a signal doesn't make unrelated blocking calls in the
    // program fail with EINTR. No SA_SIGINFO: the handler takes only the number.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid, writable sigset_t inside `action`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };

    let mut saved = Vec::with_capacity(signals.len());
    for &sig in signals {
        // SAFETY: as above, all-zero is a valid sigaction; it is overwritten.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `action` is fully initialised and `old` is writable; `sig` was
        // validated as a catchable signal number.
        let rc = unsafe { libc::sigaction(sig, &action, &mut old) };
        if rc == -1 {
            let err = io::Error::last_os_error();
            restore(&signals[..saved.len()], &saved);
            return Err(err);
        }
        log::debug!("installed self-pipe handler for signal {sig}");
        saved.push(old);
    }
    Ok(saved)
}

/// Puts back the dispositions saved by `install`.
fn restore(signals: &[c_int], saved: &[libc::sigaction]) {
    for (&sig, old) in signals.iter().zip(saved) {
        // SAFETY: `old` was filled in by a successful sigaction call for `sig`.
        let rc = unsafe { libc::sigaction(sig, old, ptr::null_mut()) };
        if rc == -1 {
            // Nothing sensible to do from Drop; the handler just goes quiet
            // because its slot is about to be cleared.
            log::warn!(
                "failed to restore disposition of signal {sig}: {}",
                io::Error::last_os_error()
            );
        } else {
            log::debug!("restored previous disposition of signal {sig}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    // Dispositions and fd numbers are process-wide and tests share a process, so
    // every test takes this lock; each also uses its own signals for good measure.
    static LOCK: Mutex<()> = Mutex::new(());

    fn lock() -> MutexGuard<'static, ()> {
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    const TOKEN: Token = Token(7);

    fn raise(sig: c_int) {
        // SAFETY: sending a signal to our own pid; a handler is installed.
        let rc = unsafe { libc::kill(libc::getpid(), sig) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Polls until every signal in `want` has been drained, or panics after 5s.
    fn wait_for(signals: &mut Signals, want: &[c_int]) -> Vec<c_int> {
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(signals, TOKEN, Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The signal may already be in the pipe before registration; epoll reports
        // existing readiness on registration, so the first poll still sees it.
        while !want.iter().all(|s| got.contains(s)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {want:?}, got {got:?}");
            match poll.poll(&mut events, Some(left)) {
                Ok(()) => {}
                // epoll_wait is never restarted after a handler, SA_RESTART or not.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            for event in events.iter() {
                assert_eq!(event.token(), TOKEN);
                assert!(event.is_readable());
                signals.drain(&mut got).unwrap();
            }
        }
        poll.registry().deregister(signals).unwrap();
        got
    }

    fn current_handler(sig: c_int) -> libc::sighandler_t {
        // SAFETY: all-zero is a valid sigaction; it is overwritten below.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only queries; `old` is writable.
        let rc = unsafe { libc::sigaction(sig, ptr::null(), &mut old) };
        assert_eq!(rc, 0);
        old.sa_sigaction
    }

    fn set_handler(sig: c_int, handler: libc::sighandler_t) -> libc::sigaction {
        // SAFETY: all-zero is a valid sigaction.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler;
        // SAFETY: all-zero is a valid sigaction; it is overwritten.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `action` is initialised, `old` writable, `sig` catchable.
        let rc = unsafe { libc::sigaction(sig, &action, &mut old) };
        assert_eq!(rc, 0);
        old
    }

    fn kind(result: io::Result<Signals>) -> io::ErrorKind {
        result.expect_err("expected an error").kind()
    }

    #[test]
    fn raised_signal_is_delivered() {
        let _guard = lock();
        let mut signals = Signals::new(&[libc::SIGUSR1]).unwrap();
        assert_eq!(signals.signals(), &[libc::SIGUSR1]);
        raise(libc::SIGUSR1);
        let got = wait_for(&mut signals, &[libc::SIGUSR1]);
        assert_eq!(got, vec![libc::SIGUSR1]);
        // Nothing left, and draining an empty pipe returns immediately.
        let mut rest = Vec::new();
        assert_eq!(signals.drain(&mut rest).unwrap(), 0);
        assert!(rest.is_empty());
    }

    #[test]
    fn back_to_back_signals_are_all_delivered() {
        let _guard = lock();
        let rt = libc::SIGRTMIN() + 1;
        let mut signals = Signals::new(&[libc::SIGUSR2, rt]).unwrap();
        raise(libc::SIGUSR2);
        raise(rt);
        let mut got = wait_for(&mut signals, &[libc::SIGUSR2, rt]);
        got.sort_unstable();
        assert_eq!(got, vec![libc::SIGUSR2, rt]);
    }

    #[test]
    fn drain_does_not_grow_vec_with_capacity() {
        let _guard = lock();
        let mut signals = Signals::new(&[libc::SIGRTMIN() + 4]).unwrap();
        raise(libc::SIGRTMIN() + 4);
        let _ = wait_for(&mut signals, &[libc::SIGRTMIN() + 4]);
        raise(libc::SIGRTMIN() + 4);
        let mut out = Vec::with_capacity(8);
        let before = out.as_ptr();
        // The handler has run by the time kill returns to this thread or soon
        // after; poll briefly rather than assume.
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.is_empty() {
            assert!(Instant::now() < deadline, "timed out");
            signals.drain(&mut out).unwrap();
        }
        assert_eq!(out, vec![libc::SIGRTMIN() + 4]);
        assert_eq!(out.as_ptr(), before);
    }

    #[test]
    fn second_owner_is_refused_until_first_drops() {
        let _guard = lock();
        let rt = libc::SIGRTMIN() + 2;
        let first = Signals::new(&[libc::SIGWINCH]).unwrap();
        assert_eq!(
            kind(Signals::new(&[libc::SIGWINCH])),
            io::ErrorKind::AlreadyExists
        );
        // A partly conflicting request must not keep the signals it did claim.
        assert_eq!(
            kind(Signals::new(&[rt, libc::SIGWINCH])),
            io::ErrorKind::AlreadyExists
        );
        let other = Signals::new(&[rt]).unwrap();
        drop(other);
        drop(first);
        let second = Signals::new(&[libc::SIGWINCH]).unwrap();
        assert_eq!(second.signals(), &[libc::SIGWINCH]);
    }

    #[test]
    fn uncatchable_and_bad_numbers_are_invalid() {
        let _guard = lock();
        let invalid = io::ErrorKind::InvalidInput;
        assert_eq!(kind(Signals::new(&[])), invalid);
        for sig in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            0,
            -1,
            65,
            libc::SIGRTMAX() + 1,
            libc::SIGSYS + 1,
            c_int::MAX,
        ] {
            assert_eq!(kind(Signals::new(&[sig])), invalid, "signal {sig}");
        }
        // A valid signal next to an invalid one must not stay owned.
        assert_eq!(kind(Signals::new(&[libc::SIGURG, libc::SIGKILL])), invalid);
        Signals::new(&[libc::SIGURG]).unwrap();
    }

    #[test]
    fn duplicates_are_owned_once() {
        let _guard = lock();
        let rt = libc::SIGRTMIN() + 5;
        let signals = Signals::new(&[rt, rt]).unwrap();
        assert_eq!(signals.signals(), &[rt]);
    }

    extern "C" fn custom_handler(_: c_int) {}

    #[test]
    fn drop_restores_previous_disposition() {
        let _guard = lock();
        let rt = libc::SIGRTMIN() + 3;
        let custom = custom_handler as extern "C" fn(c_int) as libc::sighandler_t;
        let original_rt = set_handler(rt, custom);
        let original_alrm = set_handler(libc::SIGALRM, libc::SIG_IGN);

        let signals = Signals::new(&[rt, libc::SIGALRM]).unwrap();
        let ours = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
        assert_eq!(current_handler(rt), ours);
        assert_eq!(current_handler(libc::SIGALRM), ours);
        drop(signals);
        assert_eq!(current_handler(rt), custom);
        assert_eq!(current_handler(libc::SIGALRM), libc::SIG_IGN);

        // Leave the process as we found it.
        // SAFETY: the saved actions came from successful sigaction calls.
        unsafe {
            libc::sigaction(rt, &original_rt, ptr::null_mut());
            libc::sigaction(libc::SIGALRM, &original_alrm, ptr::null_mut());
        }
    }

    #[test]
    fn drop_closes_both_pipe_fds() {
        let _guard = lock();
        let signals = Signals::new(&[libc::SIGRTMIN() + 6]).unwrap();
        let fds = [signals.as_raw_fd(), signals.write.as_raw_fd()];
        for fd in fds {
            // SAFETY: F_GETFD only queries flags; any fd number is acceptable.
            assert_ne!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        }
        drop(signals);
        for fd in fds {
            // SAFETY: as above.
            let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_eq!(rc, -1, "fd {fd} still open");
            assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
        }
    }
}
