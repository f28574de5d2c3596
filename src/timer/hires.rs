//! High-resolution timer wake-ups through a timerfd.
//!
//! epoll's timeout is whole milliseconds (mio rounds up so it never wakes
//! early), so a 200 µs timer would fire up to a millisecond late. In
//! high-resolution mode the loop instead arms a timerfd, which has nanosecond
//! resolution, for the wheel's next deadline and polls it like any source.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

pub(crate) struct HiRes {
    fd: OwnedFd,
    /// The deadline the timerfd is armed for, to skip redundant syscalls.
    armed: Option<Instant>,
}

impl HiRes {
    pub(crate) fn new(registry: &mio::Registry) -> io::Result<HiRes> {
        // SAFETY: plain syscall with constant flags; returns a new fd or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            crate::token::TIMERFD_TOKEN,
            mio::Interest::READABLE,
        )?;
        Ok(HiRes { fd, armed: None })
    }

    /// Arm for `deadline` (or disarm for `None`), unless already armed so.
    pub(crate) fn arm(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        if deadline == self.armed {
            return Ok(());
        }
        let mut spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        if let Some(d) = deadline {
            // A zero it_value would disarm: an overdue deadline fires in 1 ns.
            let left = d
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_nanos(1));
            spec.it_value.tv_sec = left.as_secs().min(i64::MAX as u64) as libc::time_t;
            spec.it_value.tv_nsec = left.subsec_nanos() as libc::c_long;
        }
        // SAFETY: `fd` is a live timerfd; `spec` is a valid itimerspec; old value not requested.
        let rc = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }

    /// The timerfd fired: consume its expiry count and forget the deadline.
    pub(crate) fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading at most 8 bytes into a live 8-byte buffer from our own fd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.armed = None;
    }
}
