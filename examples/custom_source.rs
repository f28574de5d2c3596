//! A custom event source: any fd the loop can poll, here an eventfd that a
//! producer thread bumps while the loop counts the ticks.
//!
//! What to notice:
//! - Anything with an fd becomes a source by implementing `mio::event::Source`
//!   through `mio::unix::SourceFd`; the loop owns it and closes it when the
//!   source is closed or the loop dropped.
//! - Polling is edge-triggered: the handler must consume what is ready (one
//!   `read` of an eventfd takes the whole counter), or it hears nothing more.
//! - Several writes may arrive as one wake-up: the counter then holds their
//!   sum, so the handler counts ticks, not wake-ups.
//!
//! Usage: `cargo run --example custom_source` (`RUST_LOG=evloop=trace` shows
//! each turn).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::Duration;

use evloop::{Action, EventLoop, Interest};
use mio::unix::SourceFd;

const TICKS: u64 = 20;

/// A Linux eventfd: a 64-bit counter that is readable while non-zero.
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall with constant flags; returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Add `n` to the counter (from any thread).
    fn add(fd: RawFd, n: u64) -> io::Result<()> {
        let buf = n.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live 8-byte buffer; the fd outlives the writer.
        let rc = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Take the counter, resetting it to 0; `Ok(0)` if it already was.
    fn take(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer from our own fd.
        let rc = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(err)
            };
        }
        Ok(u64::from_ne_bytes(buf))
    }
}

impl mio::event::Source for EventFd {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

#[derive(Default)]
struct State {
    ticks: u64,
    wakeups: u64,
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut el = EventLoop::<State>::new()?;

    let efd = EventFd::new()?;
    // The producer writes through a duplicate of the fd, so the loop alone
    // owns (and closes) the one it polls.
    let producer_fd = efd.0.try_clone()?;
    el.register(efd, Interest::READABLE, |efd, _ev, ctx, s: &mut State| {
        match efd.take() {
            Ok(0) => {}
            Ok(n) => {
                s.wakeups += 1;
                s.ticks += n;
                log::info!("wake-up {}: +{n} tick(s), {} so far", s.wakeups, s.ticks);
                if s.ticks >= TICKS {
                    ctx.stop();
                    return Action::Close;
                }
            }
            Err(e) => {
                log::error!("eventfd read failed: {e}");
                ctx.stop();
                return Action::Close;
            }
        }
        Action::Keep
    })?;

    let producer = thread::spawn(move || -> io::Result<()> {
        for i in 0..TICKS {
            EventFd::add(producer_fd.as_raw_fd(), 1)?;
            // Every fifth tick comes in a burst, to show coalescing.
            if i % 5 != 3 {
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    });

    let mut s = State::default();
    el.run(&mut s)?;
    producer.join().expect("producer panicked")?;
    log::info!("done: {} ticks in {} wake-ups", s.ticks, s.wakeups);
    Ok(())
}
