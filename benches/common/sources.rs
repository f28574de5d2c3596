//! Event sources for the dispatch benchmarks, and evloops full of them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use evloop::{Action, EventLoop, SourceId};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A non-blocking eventfd, as an owned mio source.
pub struct EventFd(pub OwnedFd);

impl EventFd {
    pub fn new() -> EventFd {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        EventFd(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl mio::event::Source for EventFd {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

/// Raise the soft limit on open files to the hard limit: a comparison keeps
/// two loops of 1,024 eventfds each open at once, past a common soft limit
/// of 1,024.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the local `rlimit` passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Add 1 to an eventfd's counter, making it readable.
pub fn signal(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live local buffer to an fd the caller keeps open.
    let n = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    debug_assert_eq!(n, 8);
}

/// Read (and so reset) an eventfd's counter: 1 if there was something to read.
pub fn drain(fd: RawFd) -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live local buffer of 8 bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    (n == 8) as u64
}

/// A source the kernel never hears of: it only becomes ready when scheduled.
pub struct Inert;

impl mio::event::Source for Inert {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

/// evloop with `n` eventfd sources; returns the loop and the fds to signal.
pub fn evloop_eventfds(n: usize) -> (EventLoop<u64>, Vec<RawFd>) {
    let mut el = EventLoop::<u64>::new().unwrap();
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        let efd = EventFd::new();
        raw.push(efd.0.as_raw_fd());
        el.register(
            efd,
            Interest::READABLE,
            |efd: &mut EventFd, _ev, _ctx, count: &mut u64| {
                *count += drain(efd.0.as_raw_fd());
                Action::Keep
            },
        )
        .unwrap();
    }
    (el, raw)
}

/// evloop with `n` sources that only become ready when scheduled.
pub fn evloop_inert(n: usize) -> (EventLoop<u64>, Vec<SourceId>) {
    let mut el = EventLoop::<u64>::new().unwrap();
    let ids = (0..n)
        .map(|_| {
            el.register(
                Inert,
                Interest::READABLE,
                |_: &mut Inert, _ev, _ctx, count: &mut u64| {
                    *count += 1;
                    Action::Keep
                },
            )
            .unwrap()
        })
        .collect();
    (el, ids)
}
