//! Listeners: bind through socket2, accept with a per-turn budget, survive
//! fd exhaustion, and hand each connection to a [`Handler`].

use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use mio::Interest;
use socket2::{Domain, SockAddr, Socket, Type};

use super::conn::{ConnConfig, Handler};
use super::driver;
use super::stream::{Addr, Stream};
use crate::{Action, Ctx, Priority, SourceId};

/// How a listener binds and accepts.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// listen(2) backlog (default 1024).
    pub backlog: i32,
    /// SO_REUSEADDR (default on; TCP only).
    pub reuse_address: bool,
    /// SO_REUSEPORT, to shard one port over several loops (default off).
    pub reuse_port: bool,
    /// Connections accepted per dispatch before yielding to established
    /// peers (default 64; 0 counts as 1): a connection storm cannot starve them.
    pub accept_budget: usize,
    /// Stop accepting while this many connections are open.
    pub max_connections: Option<usize>,
    /// TCP_NODELAY on accepted streams (default on).
    pub nodelay: bool,
    /// TCP keepalive on accepted streams: the kernel probes a peer silent
    /// for this long and resets the connection if it is gone (default off).
    /// Unlike [`ConnConfig::idle_timeout`] it costs no timer, and keeps a
    /// quiet but live peer.
    pub keepalive: Option<Duration>,
    /// How long to stop accepting when out of fds and no reserve fd is left.
    pub emfile_backoff: Duration,
    /// Settings for every accepted connection.
    pub conn: ConnConfig,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            accept_budget: 64,
            max_connections: None,
            nodelay: true,
            keepalive: None,
            emfile_backoff: Duration::from_millis(100),
            conn: ConnConfig::default(),
        }
    }
}

/// A bound listening socket (the registered source of a listener).
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// Unix domain.
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// Bind `addr` with `cfg`'s socket options.
    ///
    /// At a Unix path, a socket file that nobody listens on (left by a
    /// server that did not remove it) is replaced; one a live listener
    /// answers on is not, and binding fails with
    /// [`AddrInUse`](io::ErrorKind::AddrInUse). The file this creates is
    /// the caller's to remove; [`listen`] removes it when the listener is
    /// closed or the loop dropped.
    pub fn bind(addr: &Addr, cfg: &ListenConfig) -> io::Result<Listener> {
        let (domain, sockaddr) = match addr {
            Addr::Tcp(a) => (Domain::for_address(*a), SockAddr::from(*a)),
            Addr::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
        };
        let socket = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)?;
        if matches!(addr, Addr::Tcp(_)) {
            socket.set_reuse_address(cfg.reuse_address)?;
            if cfg.reuse_port {
                socket.set_reuse_port(true)?;
            }
        }
        match (socket.bind(&sockaddr), addr) {
            (Err(e), Addr::Unix(path)) if e.kind() == io::ErrorKind::AddrInUse && is_stale(path) => {
                log::warn!("evloop: replacing the stale socket file {}", path.display());
                fs::remove_file(path)?;
                socket.bind(&sockaddr)?;
            }
            (result, _) => result?,
        }
        socket.listen(cfg.backlog)?;
        Ok(match addr {
            Addr::Tcp(_) => Listener::Tcp(mio::net::TcpListener::from_std(socket.into())),
            Addr::Unix(_) => Listener::Unix(mio::net::UnixListener::from_std(socket.into())),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Tcp),
            Listener::Unix(l) => {
                let a = l.local_addr()?;
                Ok(Addr::Unix(
                    a.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default(),
                ))
            }
        }
    }

    /// Accept one connection, with TCP_NODELAY and keepalive as asked
    /// (`None`: neither, for a connection shed at once).
    fn accept(&self, opts: Option<&ListenConfig>) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                if opts.is_some_and(|o| o.nodelay) {
                    if let Err(e) = s.set_nodelay(true) {
                        log::debug!("evloop: TCP_NODELAY on {peer}: {e}");
                    }
                }
                if let Some(idle) = opts.and_then(|o| o.keepalive) {
                    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
                    if let Err(e) = socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive) {
                        log::debug!("evloop: keepalive on {peer}: {e}");
                    }
                }
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

impl mio::event::Source for Listener {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

/// True if `path` is a socket file that nobody listens on: connecting to it
/// is refused. (A live listener accepts, or, with its backlog full, makes a
/// non-blocking connect wait: either way not stale.)
fn is_stale(path: &Path) -> bool {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    let refused = || -> io::Result<bool> {
        let probe = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
        Ok(matches!(probe.connect(&SockAddr::unix(path)?),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused))
    };
    is_socket && refused().unwrap_or(false)
}

/// The socket file a Unix listener made, removed when the listener goes
/// (closed, or the loop dropped) so that a server restarted on the same
/// path can bind it; unless it is no longer the same file (another process
/// replaced it meanwhile), which is not ours to remove.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> Option<SocketFile> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let same = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino));
        if !same {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => log::debug!("evloop: removed the socket file {}", self.path.display()),
            Err(e) => log::warn!("evloop: removing the socket file {}: {e}", self.path.display()),
        }
    }
}

/// What the listener and its connections share: the live count, for the
/// connection limit.
pub(crate) struct ListenShared {
    id: Cell<Option<SourceId>>,
    live: Cell<usize>,
    max: Option<usize>,
    /// Accepting is paused because the limit was reached.
    full: Cell<bool>,
    /// Wakes the loop (through a `Remote`) when a connection is dropped
    /// while the listener is full, so its check hook runs even if nothing
    /// else would end the poll.
    wake: Option<Box<dyn Fn()>>,
}

impl ListenShared {
    /// A connection went away without a context at hand (dropped).
    pub(crate) fn forget_one(&self) {
        self.live.set(self.live.get().saturating_sub(1));
        if self.full.get() {
            if let Some(wake) = &self.wake {
                wake();
            }
        }
    }

    /// Accept again if the listener paused at its connection limit and a
    /// place is free now.
    fn resume_if_room<S>(&self, ctx: &mut Ctx<S>) {
        if self.full.get() && self.max.map_or(true, |m| self.live.get() < m) {
            self.full.set(false);
            if let Some(id) = self.id.get() {
                log::debug!("evloop: listener {id} below its connection limit; accepting again");
                let _ = ctx.resume(id);
            }
        }
    }

    pub(crate) fn connection_closed<S>(&self, ctx: &mut Ctx<S>) {
        self.forget_one();
        self.resume_if_room(ctx);
    }
}

/// A started listener.
#[derive(Clone, Debug)]
pub struct Listening {
    /// The listener's source id (close it to stop accepting).
    pub id: SourceId,
    /// Where it listens (the real port when asked for port 0).
    pub addr: Addr,
}

/// Listen on `addr` and serve every accepted connection with the handler
/// `accept` returns for it (`None` closes the connection at once).
///
/// `accept` gets the new stream, the id the connection will have (so a
/// handler that pairs it with another connection can be given both ids at
/// once; the connection is reachable through that id from its `on_open` on),
/// the loop's context and the state.
///
/// Accepting stops for the turn after [`ListenConfig::accept_budget`]
/// connections. When the process runs out of fds, the listener sheds the
/// waiting connection using a reserve fd (so the peer sees a close instead of
/// hanging on a backlog we cannot drain) and logs a warning. At the fd limit
/// every accept fails, even with nobody waiting, so the episode always ends
/// with a shed that finds no one: then the listener logs a warning and stops
/// accepting for [`ListenConfig::emfile_backoff`] before trying again.
///
/// An echo server on a port the system picks, and one client:
///
/// ```
/// use std::io::{Read, Write};
/// use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig};
/// use evloop::{Ctx, EventLoop};
///
/// struct Echo;
///
/// impl Handler<()> for Echo {
///     fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
///         conn.write(data);
///         data.len()
///     }
///
///     fn on_close(&mut self, _: &mut Conn, _: CloseReason, ctx: &mut Ctx<()>, _: &mut ()) {
///         ctx.stop(); // one client, then the example ends
///     }
/// }
///
/// let mut el = EventLoop::new()?;
/// let addr = "127.0.0.1:0".parse().unwrap();
/// let server = net::listen(&mut el, &addr, ListenConfig::default(), |_stream, _id, _ctx, _state| {
///     Some(Echo) // or None to refuse this connection
/// })?;
/// let port = server.addr.to_string();
/// let client = std::thread::spawn(move || {
///     let mut s = std::net::TcpStream::connect(port).unwrap();
///     s.write_all(b"ping").unwrap();
///     let mut back = [0u8; 4];
///     s.read_exact(&mut back).unwrap();
///     back
/// });
/// el.run(&mut ())?;
/// assert_eq!(&client.join().unwrap(), b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn listen<S, F, H>(
    ctx: &mut Ctx<S>,
    addr: &Addr,
    cfg: ListenConfig,
    mut accept: F,
) -> io::Result<Listening>
where
    S: 'static,
    F: FnMut(&Stream, SourceId, &mut Ctx<S>, &mut S) -> Option<H> + 'static,
    H: Handler<S> + 'static,
{
    let listener = Listener::bind(addr, &cfg)
        .map_err(|e| io::Error::new(e.kind(), format!("evloop: cannot listen on {addr}: {e}")))?;
    // Dropped with the handler, after the socket: when the listener closes.
    let file = match addr {
        Addr::Unix(path) => SocketFile::new(path),
        Addr::Tcp(_) => None,
    };
    let addr = listener.local_addr()?;
    let wake: Option<Box<dyn Fn()>> = match cfg.max_connections {
        Some(_) => {
            let remote = ctx.remote()?;
            Some(Box::new(move || remote.wake()))
        }
        None => None,
    };
    let shared = Rc::new(ListenShared {
        id: Cell::new(None),
        live: Cell::new(0),
        max: cfg.max_connections,
        full: Cell::new(false),
        wake,
    });
    let conn_cfg = Rc::new(cfg.conn.normalized());
    let mut reserve = File::open("/dev/null").ok();
    let state_shared = shared.clone();
    let id = ctx.register(
        listener,
        Interest::READABLE,
        move |l: &mut Listener, ev, ctx, state| {
            let _file = &file;
            let shared = &state_shared;
            let mut taken = 0;
            loop {
                // Closed by the accept callback: accept nobody more.
                if !ctx.is_open(ev.id) {
                    return Action::Keep;
                }
                // A budget of 0 would reschedule for ever without accepting.
                if taken >= cfg.accept_budget.max(1) {
                    return Action::Reschedule;
                }
                if shared.max.is_some_and(|m| shared.live.get() >= m) {
                    log::debug!(
                        "evloop: listener {} at its connection limit; pausing accepts",
                        ev.id
                    );
                    shared.full.set(true);
                    if let Err(e) = ctx.pause(ev.id) {
                        log::error!("evloop: pausing listener {}: {e}", ev.id);
                    }
                    return Action::Keep;
                }
                match l.accept(Some(&cfg)) {
                    Ok((stream, peer)) => {
                        taken += 1;
                        let id = match ctx.reserve(Priority::Normal) {
                            Ok(id) => id,
                            Err(e) => {
                                log::warn!("evloop: no room for a connection from {peer:?}: {e}");
                                continue;
                            }
                        };
                        let Some(handler) = accept(&stream, id, ctx, state) else {
                            log::debug!("evloop: connection from {peer:?} refused by the accept callback");
                            // Reclaimed at the end of the turn, like any closed source.
                            ctx.close(id);
                            continue;
                        };
                        // Counted before it exists: if registering fails, the
                        // connection's Drop gives the place back.
                        shared.live.set(shared.live.get() + 1);
                        let listener = Some(shared.clone());
                        match driver::open_reserved(ctx, id, stream, conn_cfg.clone(), listener, handler) {
                            Ok(()) => log::debug!("evloop: accepted {peer:?} as {id}"),
                            Err(e) => {
                                log::warn!("evloop: registering a connection from {peer:?} failed: {e}")
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Action::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                        taken += 1;
                        if !shed(l, &mut reserve) {
                            log::warn!(
                                "evloop: listener {} out of file descriptors ({e}); pausing accepts for {:?}",
                                ev.id,
                                cfg.emfile_backoff
                            );
                            if ctx.pause(ev.id).is_ok() {
                                let id = ev.id;
                                ctx.timer_after(cfg.emfile_backoff, move |_, ctx, _| {
                                    log::debug!("evloop: listener {id} trying to accept again");
                                    let _ = ctx.resume(id);
                                });
                            }
                            return Action::Keep;
                        }
                        log::warn!(
                            "evloop: listener {} out of file descriptors ({e}); shed a waiting connection",
                            ev.id
                        );
                    }
                    Err(e) => {
                        // ECONNABORTED and friends concern one peer, not the listener.
                        log::debug!("evloop: accept on {}: {e}", ev.id);
                        taken += 1;
                    }
                }
            }
        },
    )?;
    shared.id.set(Some(id));
    if shared.max.is_some() {
        // Connections closed with `Ctx::close` are dropped without a context;
        // this hook notices their freed places after each dispatch phase.
        ctx.add_check(move |ctx, _| {
            if !ctx.is_open(id) {
                return false;
            }
            shared.resume_if_room(ctx);
            true
        });
    }
    log::debug!("evloop: listening on {addr} as {id}");
    Ok(Listening { id, addr })
}

/// Out of fds: give up the reserve fd, accept the waiting connection and
/// close it at once, then take the reserve back. False if we could not.
fn shed(l: &Listener, reserve: &mut Option<File>) -> bool {
    if reserve.take().is_none() {
        *reserve = File::open("/dev/null").ok();
        return false;
    }
    let shed = l.accept(None).is_ok();
    *reserve = File::open("/dev/null").ok();
    shed && reserve.is_some()
}
