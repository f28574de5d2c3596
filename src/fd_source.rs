//! [`FdSource`]: any owned fd as a source, without writing a
//! `mio::event::Source` impl by hand.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Wraps anything that owns an fd (an `OwnedFd`, a `File`, a std socket, a
/// pipe end...) so that it can be registered with
/// [`Ctx::register`](crate::Ctx::register). The loop then owns it: dropping
/// the source (when it is closed, or the loop dropped) drops `T`, closing
/// the fd.
///
/// Other handlers reach the wrapped value through
/// [`Ctx::source_mut`](crate::Ctx::source_mut)`::<FdSource<T>>(id)`, and it
/// dereferences to `T`. The fd must be non-blocking for edge-triggered
/// polling to be useful: read until `WouldBlock`, or reschedule. Do not
/// replace the wrapped value while it is registered (through `DerefMut` or
/// [`get_mut`](Self::get_mut)): the poller knows the old fd, not the new one.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use evloop::{Action, EventLoop, FdSource, Interest};
///
/// let (a, mut b) = UnixStream::pair()?;
/// a.set_nonblocking(true)?;
/// let mut el = EventLoop::<Vec<u8>>::new()?;
/// el.register(FdSource::new(a), Interest::READABLE, |a, _ev, ctx, got: &mut Vec<u8>| {
///     let mut buf = [0; 16];
///     match a.read(&mut buf) {
///         Ok(n) => got.extend_from_slice(&buf[..n]),
///         Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
///     }
///     ctx.stop();
///     Action::Keep
/// })?;
/// b.write_all(b"ping")?;
/// let mut got = Vec::new();
/// el.run(&mut got)?;
/// assert_eq!(got, b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FdSource<T: AsFd> {
    inner: T,
}

impl<T: AsFd> FdSource<T> {
    /// Wrap `inner`.
    pub fn new(inner: T) -> FdSource<T> {
        FdSource { inner }
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped value, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwrap it (deregister it first if it is registered).
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn fd(&self) -> RawFd {
        self.inner.as_fd().as_raw_fd()
    }
}

impl<T: AsFd> Deref for FdSource<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsFd> DerefMut for FdSource<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsFd> AsRawFd for FdSource<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl<T: AsFd> mio::event::Source for FdSource<T> {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.fd()).register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.fd()).reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        SourceFd(&self.fd()).deregister(r)
    }
}
