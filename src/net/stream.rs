//! Addresses and stream sockets that may be TCP or Unix.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use mio::event::Source;
use mio::{Interest, Registry, Token};

/// Where a listener binds or a client connects: TCP (v4 or v6) or a Unix
/// socket path. Parses from `"127.0.0.1:6000"`, `"[::1]:6000"` or
/// `"unix:/path"`; a host name is refused (parsing never blocks on a lookup:
/// see [`Target`](super::Target) and [`resolve`](super::resolve)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

impl Addr {
    /// The TCP address, if it is one (a listener bound to port 0 tells its
    /// port this way).
    ///
    /// ```
    /// let addr: evloop::net::Addr = "127.0.0.1:6000".parse()?;
    /// assert_eq!(addr.tcp().map(|a| a.port()), Some(6000));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Addr::Tcp(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }
}

impl FromStr for Addr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Addr> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "evloop: \"unix:\" with an empty socket path",
                ));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        // Numeric only: parsing must never block on a name lookup inside
        // whatever handler parses it (names go through `net::resolve`, or
        // `net::connect` with a `Target` that names a host).
        s.parse::<SocketAddr>().map(Addr::Tcp).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "evloop: {s:?} is not an address (IPv4:port, [IPv6]:port or unix:PATH); \
                     resolve host names with net::resolve or connect to a net::Target"
                ),
            )
        })
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Tcp(a)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream socket: TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// Unix domain.
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// Shut down one or both halves.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// `Ok` once connected (the socket has a peer); `NotConnected` while a
    /// connect is under way.
    pub(crate) fn has_peer(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(drop),
            Stream::Unix(s) => s.peer_addr().map(drop),
        }
    }

    /// The pending socket error, if any (SO_ERROR).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// The TCP peer's address, once connected.
    pub(crate) fn tcp_peer(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// Make the socket's close a reset (TCP), for output that was cut
    /// short: what the kernel still holds is discarded, and the peer gets
    /// an error instead of a clean end. (A Unix socket's peer sees the
    /// end all the same.)
    pub(crate) fn reset_on_close(&self) {
        if let Stream::Tcp(s) = self {
            // Linger on with a zero time: the close sends a reset.
            let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

// Reads and writes go straight to libc on the socket's fd, as std would
// (`recv`, and `send` with MSG_NOSIGNAL so a closed peer is an EPIPE error,
// never a SIGPIPE), for both kinds alike: the three layers of wrappers
// between a mio stream and libc cost ~40 instructions per message echoed.
impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // call's duration, and `fd` is an open socket owned by `self`.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Stream {
    /// Bytes received and not yet read (FIONREAD).
    pub(crate) fn unread(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which is
        // valid for the call; `fd` is an open socket owned by `self`.
        if unsafe { libc::ioctl(self.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.max(0) as usize)
    }
}

/// `send` on a socket's fd (see [`Conn::direct_fd`](super::Conn::direct_fd)
/// for the one caller that does not own a `Stream`).
#[inline]
pub(crate) fn send_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call's
    // duration; the kernel touches no other memory of ours (an fd that is
    // not an open socket is an error, EBADF or ENOTSOCK).
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_fd(self.as_raw_fd(), buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}
