//! Outbound connections: the connect state machine in front of the driver.
//!
//! [`connect`] returns the connection's id at once. The connection is an
//! ordinary [`Conn`] whose [`Handler`] is the same trait an accepted one
//! has; until it is established it is *connecting*: what the user writes is
//! queued, nothing is read, and the dispatches it gets go to [`dial`] below
//! instead of the driver:
//!
//! 1. a host name is resolved off the loop ([`resolve`](super::resolve));
//! 2. attempts start one after another, interleaving address families as
//!    RFC 8305 (Happy Eyeballs) says: the next one when the one before
//!    fails or after [`ConnectConfig::attempt_delay`], so several may be in
//!    flight, all registered under the connection's one token;
//! 3. every dispatch probes each attempt (`SO_ERROR`, then whether it has a
//!    peer): the first to connect wins and becomes the connection's socket,
//!    the others are closed; `on_open` runs and the queued output goes out
//!    in the same dispatch;
//! 4. if all fail, or [`ConnectConfig::timeout`] passes, `on_close` gets
//!    [`CloseReason::ConnectFailed`] with the last error's kind.
//!
//! Probing on every dispatch, rather than trusting one writability edge,
//! is what makes the edge cases safe: a handshake that completed before the
//! socket was registered, two attempts ready in the same turn, a dispatch
//! caused by a write from elsewhere. Each new attempt schedules one probe of
//! its own for the same reason.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mio::Interest;
use socket2::{Domain, SockAddr, Socket, TcpKeepalive, Type};

use super::conn::{CloseReason, Conn, ConnConfig, Handler, BACKLOGGED, CONNECTING};
use super::driver::{self, drive, finish};
use super::stream::{Addr, Stream};
use crate::source::{attach_source, Attach, Entry};
use crate::{Action, Ctx, Event, Ready, SourceId, TimerId};

/// The first wait before a Unix connect whose backlog was full is retried.
const UNIX_RETRY_FIRST: Duration = Duration::from_millis(1);
/// The longest wait between such retries.
const UNIX_RETRY_MAX: Duration = Duration::from_millis(100);

/// How an outbound connection is made.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// Give up if no attempt has connected this long after [`connect`]
    /// (default 10 s; `None`: leave it to the kernel, which gives up on an
    /// unanswered TCP handshake after about two minutes, but a Unix path
    /// whose backlog stays full is then retried for ever).
    pub timeout: Option<Duration>,
    /// How long an attempt may go unanswered before the next address is
    /// tried beside it (RFC 8305's "connection attempt delay", default 250 ms).
    pub attempt_delay: Duration,
    /// Local address to bind before connecting (TCP only; port 0 lets the
    /// kernel pick). Only addresses of its family are tried; a target address
    /// of the other family is refused at once with `InvalidInput`.
    pub bind: Option<SocketAddr>,
    /// TCP_NODELAY (default on, as for accepted streams).
    pub nodelay: bool,
    /// TCP keepalive: probe an idle peer after this long (default off).
    pub keepalive: Option<Duration>,
    /// Limits and timeouts of the connection once established.
    pub conn: ConnConfig,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            timeout: Some(Duration::from_secs(10)),
            attempt_delay: Duration::from_millis(250),
            bind: None,
            nodelay: true,
            keepalive: None,
            conn: ConnConfig::default(),
        }
    }
}

/// Where [`connect`] goes: an address, or a host name to resolve first.
///
/// Parses from `"127.0.0.1:6000"`, `"[::1]:6000"`, `"unix:/path"` (an
/// [`Addr`]) or `"example.com:6000"` (a name: parsing never resolves, and
/// so never blocks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address or Unix path: no resolution needed.
    Addr(Addr),
    /// Addresses already resolved, tried in turn as for a name (families
    /// interleaved, RFC 8305's attempt delay between them).
    Addrs(Vec<SocketAddr>),
    /// A host name and port, resolved off the loop when connecting.
    Name {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl FromStr for Target {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Target> {
        match s.parse::<Addr>() {
            Ok(addr) => return Ok(Target::Addr(addr)),
            // A Unix path is never a host name: its own error says more.
            Err(e) if s.starts_with("unix:") => return Err(e),
            Err(_) => {}
        }
        let (host, port) = super::resolve::split_host_port(s)?;
        Ok(Target::Name {
            host: host.to_string(),
            port,
        })
    }
}

impl From<Addr> for Target {
    fn from(a: Addr) -> Target {
        Target::Addr(a)
    }
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Addr(Addr::Tcp(a))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Addrs(list) => match list.first() {
                Some(first) if list.len() > 1 => write!(f, "{first} (+{} more)", list.len() - 1),
                Some(first) => write!(f, "{first}"),
                None => f.write_str("(no address)"),
            },
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Makes outbound connections with one [`ConnectConfig`], shared by all of
/// them (a proxy keeps one and connects through it for every client: the
/// connections' settings are then one allocation, not one each).
#[derive(Clone, Debug)]
pub struct Connector {
    cfg: Rc<ConnectConfig>,
    conn_cfg: Rc<ConnConfig>,
}

impl Connector {
    /// A connector with these settings.
    pub fn new(cfg: ConnectConfig) -> Connector {
        Connector {
            conn_cfg: Rc::new(cfg.conn.normalized()),
            cfg: Rc::new(cfg),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ConnectConfig {
        &self.cfg
    }

    /// Connect to `to`, driven by `handler`: see [`connect`].
    pub fn connect<S, H>(&self, ctx: &mut Ctx<S>, to: &Target, handler: H) -> io::Result<SourceId>
    where
        H: Handler<S> + 'static,
    {
        if let (Target::Addr(Addr::Tcp(a)), Some(b)) = (to, self.cfg.bind) {
            if a.is_ipv4() != b.is_ipv4() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("evloop: cannot connect to {a} from the bind address {b}: their families differ"),
                ));
            }
        }
        let now = ctx.now();
        let mut dial = Box::new(Dial {
            cfg: self.cfg.clone(),
            target: to.clone(),
            resolved: None,
            addrs: VecDeque::new(),
            retry_delay: UNIX_RETRY_FIRST,
            primary: false,
            others: Vec::new(),
            last_error: None,
            next_attempt: None,
            // A deadline past the clock's range is no deadline.
            deadline: self.cfg.timeout.and_then(|t| now.checked_add(t)),
            timer: None,
        });
        // The connection needs a socket from the start (its handler's
        // `on_close` gets the `Conn` even if no attempt ever connects): the
        // first attempt's, or for a name an unconnected one that the first
        // attempt of its family will use.
        let stream = match to {
            Target::Addr(addr) => {
                let (stream, immediate) = start_attempt(addr, &self.cfg)?;
                dial.primary = true;
                if let Some(e) = immediate {
                    // Reported from the dispatch phase, never from inside
                    // this call: the caller has not even got the id yet.
                    if backlog_full(addr, &e) {
                        dial.retry_later(addr.clone(), now);
                    }
                    dial.fail_primary(e);
                }
                stream
            }
            Target::Addrs(list) => {
                dial.addrs = happy_eyeballs_order(list.clone(), self.cfg.bind)
                    .into_iter()
                    .map(Addr::Tcp)
                    .collect();
                if dial.addrs.is_empty() {
                    dial.note_failure(no_address(&dial));
                }
                placeholder()?
            }
            Target::Name { .. } => placeholder()?,
        };
        // The resolver's answer comes back through this cell, which the
        // connect checks on its next dispatch (the callback schedules one).
        let resolved = match to {
            Target::Name { .. } => Some(Rc::new(Cell::new(None))),
            Target::Addr(_) | Target::Addrs(_) => None,
        };
        dial.resolved = resolved.clone();
        let mut conn = Conn::new(stream, self.conn_cfg.clone(), None, now);
        conn.set(CONNECTING);
        let entry = Outbound {
            conn,
            handler,
            dial: Some(dial),
        };
        let id = ctx.register_entry(Box::new(entry), Interest::WRITABLE)?;
        if let Some(conn) = ctx.source_mut::<Conn>(id) {
            conn.id = id;
        }
        log::debug!("evloop: connecting to {to} as {id}");
        if let (Target::Name { host, port }, Some(cell)) = (to, resolved) {
            let name = format!("{host}:{port}");
            super::resolve(ctx, &name, move |result, ctx: &mut Ctx<S>, _: &mut S| {
                cell.set(Some(result));
                ctx.schedule(id);
            });
        }
        // One look in the next dispatch phase whatever the kernel reports: a
        // handshake may have finished before the socket was registered.
        ctx.schedule(id);
        Ok(id)
    }
}

/// Connect to `to` (an address, or a host name resolved off the loop), and
/// drive the connection with `handler` once it is established.
///
/// Returns the connection's id at once; nothing blocks. What is written to
/// it meanwhile ([`net::write`](super::write), or [`Conn::write`]) is queued
/// and goes out in the first write after it opens; `on_open` runs when it
/// is established. If it never is (refused, unreachable, timed out, the
/// name did not resolve), `on_close` gets [`CloseReason::ConnectFailed`]
/// with the error's kind, and `on_open` never runs. Once open, everything
/// an accepted connection has holds for it: backpressure, caps, half-close,
/// idle timeout, `net::write`/`close` from other handlers.
///
/// An error is returned only when no socket can be made at all (out of
/// fds, say); anything about the address itself (refused, unreachable, a
/// bind address in use) is reported to the handler. Closing the connection
/// with [`Ctx::close`] while it connects drops it as it is; its connect
/// timer, if any, fires once later and finds it gone.
///
/// ```
/// use evloop::net::{self, Conn, ConnectConfig, Handler, ListenConfig, CloseReason};
/// use evloop::{Ctx, EventLoop};
///
/// struct Hello;
/// impl Handler<Vec<u8>> for Hello {
///     fn on_data(&mut self, c: &mut Conn, data: &[u8], _: &mut Ctx<Vec<u8>>, got: &mut Vec<u8>) -> usize {
///         got.extend_from_slice(data);
///         c.close();
///         data.len()
///     }
///     fn on_close(&mut self, _: &mut Conn, _: CloseReason, ctx: &mut Ctx<Vec<u8>>, _: &mut Vec<u8>) {
///         ctx.stop();
///     }
/// }
/// struct Greeter;
/// impl Handler<Vec<u8>> for Greeter {
///     fn on_open(&mut self, c: &mut Conn, _: &mut Ctx<Vec<u8>>, _: &mut Vec<u8>) {
///         c.write(b"hi");
///         c.close();
///     }
///     fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<Vec<u8>>, _: &mut Vec<u8>) -> usize {
///         data.len()
///     }
/// }
///
/// let mut el = EventLoop::new()?;
/// let server = net::listen(&mut el, &"127.0.0.1:0".parse()?, ListenConfig::default(), |_, _, _, _| Some(Greeter))?;
/// net::connect(&mut el, &server.addr.into(), ConnectConfig::default(), Hello)?;
/// let mut got = Vec::new();
/// el.run(&mut got)?;
/// assert_eq!(got, b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn connect<S, H>(ctx: &mut Ctx<S>, to: &Target, cfg: ConnectConfig, handler: H) -> io::Result<SourceId>
where
    H: Handler<S> + 'static,
{
    Connector::new(cfg).connect(ctx, to, handler)
}

/// An outbound connection: the source table's entry for it. Like the
/// driver's entry for an accepted one, plus the connect in progress.
// `repr(C)` keeps the connection at the start of the box, where `touch`
// expects its first 64 bytes.
#[repr(C)]
struct Outbound<H> {
    conn: Conn,
    handler: H,
    /// The connect in progress; `None` once established.
    dial: Option<Box<Dial>>,
}

/// Where the resolver leaves its answer for a connect.
type Resolved = Rc<Cell<Option<io::Result<Vec<SocketAddr>>>>>;

/// A connect in progress.
struct Dial {
    cfg: Rc<ConnectConfig>,
    target: Target,
    /// Where the resolver leaves its answer (a name target, until resolved).
    resolved: Option<Resolved>,
    /// Addresses not tried yet, in the order to try them (a Unix path whose
    /// backlog was full comes back here, to be tried again).
    addrs: VecDeque<Addr>,
    /// The wait before a Unix path whose backlog was full is tried again;
    /// doubles each time.
    retry_delay: Duration,
    /// The connection's own socket has an attempt in flight.
    primary: bool,
    /// Further attempts in flight (Happy Eyeballs), under the same token.
    others: Vec<Stream>,
    last_error: Option<io::Error>,
    /// When the next address is tried even if the attempts in flight have
    /// not failed yet.
    next_attempt: Option<Instant>,
    deadline: Option<Instant>,
    /// The timer that wakes the connect for `next_attempt` or `deadline`,
    /// and when it is due.
    timer: Option<(TimerId, Instant)>,
}

impl Dial {
    /// An attempt failed; the last failure is what the handler learns.
    fn note_failure(&mut self, e: io::Error) {
        log::debug!("evloop: connect to {} failed: {e}", self.target);
        self.last_error = Some(e);
    }

    /// Try `addr` again after the retry delay (a Unix backlog was full).
    fn retry_later(&mut self, addr: Addr, now: Instant) {
        self.addrs.push_front(addr);
        self.next_attempt = now.checked_add(self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(UNIX_RETRY_MAX);
    }

    /// The attempt on the connection's own socket failed: the socket stays
    /// (and stays registered) until the next attempt takes its place.
    fn fail_primary(&mut self, e: io::Error) {
        self.primary = false;
        self.note_failure(e);
    }

    fn waiting_for_names(&self) -> bool {
        self.resolved.is_some()
    }
}

impl<S, H: Handler<S>> Entry<S> for Outbound<H> {
    fn attach(&mut self, how: Attach<'_>, _link: &crate::remote::Link) -> io::Result<()> {
        attach_source(&mut self.conn, how)
    }

    fn dispatch(&mut self, event: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
        if self.dial.is_some() {
            return dial(self, event, ctx, state);
        }
        drive(&mut self.conn, &mut self.handler, event, ctx, state)
    }

    fn source_any(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(&mut self.conn)
    }

    fn touch(&self) -> u8 {
        self.conn.touch()
    }

    fn failed(&mut self, err: &io::Error, ctx: &mut Ctx<S>, state: &mut S) {
        if let Some(mut dial) = self.dial.take() {
            give_up(&mut dial, ctx);
        }
        driver::registration_failed(&mut self.conn, &mut self.handler, err, ctx, state);
    }
}

/// One step of a connect in progress: take the resolver's answer, probe the
/// attempts, start the next, give up. Runs the driver at once when an
/// attempt wins.
fn dial<S, H: Handler<S>>(o: &mut Outbound<H>, ev: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
    let id = ev.id;
    let Some(mut dial) = o.dial.take() else {
        return Action::Keep;
    };
    if let Some(reason) = o.conn.closed {
        // Aborted while connecting.
        give_up(&mut dial, ctx);
        finish(&mut o.conn, &mut o.handler, reason, ctx, state);
        return Action::Close;
    }
    if let Some(cell) = &dial.resolved {
        if let Some(answer) = cell.take() {
            dial.resolved = None;
            match answer {
                Ok(list) => {
                    dial.addrs = happy_eyeballs_order(list, dial.cfg.bind)
                        .into_iter()
                        .map(Addr::Tcp)
                        .collect()
                }
                Err(e) => dial.last_error = Some(e),
            }
            if dial.addrs.is_empty() && dial.last_error.is_none() {
                dial.last_error = Some(no_address(&dial));
            }
        }
    }
    let probed = probe(&mut o.conn, &mut dial, ctx);
    if probed == Probed::Won {
        give_up(&mut dial, ctx);
        return established(o, dial, ev, ctx, state);
    }
    let now = ctx.now();
    if dial.deadline.is_some_and(|d| now >= d) {
        dial.last_error = Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {} timed out", dial.target),
        ));
        return failed(o, dial, ctx, state);
    }
    // RFC 8305: the next address starts when an attempt fails, or when the
    // attempt delay has passed without an answer.
    // With nothing in flight, only a Unix retry's wait holds it back.
    let in_flight = dial.primary || !dial.others.is_empty();
    let due = if in_flight {
        dial.next_attempt.is_some_and(|t| now >= t)
    } else {
        dial.next_attempt.map_or(true, |t| now >= t)
    };
    if !dial.waiting_for_names() && (due || probed == Probed::Lost) {
        start_next(&mut o.conn, &mut dial, id, now, ctx);
    }
    let in_flight = dial.primary || !dial.others.is_empty();
    if !in_flight && dial.addrs.is_empty() && !dial.waiting_for_names() {
        return failed(o, dial, ctx, state);
    }
    wake_at(&mut dial, id, ctx);
    o.dial = Some(dial);
    Action::Keep
}

/// What probing the attempts in flight found.
#[derive(PartialEq, Eq)]
enum Probed {
    /// One connected, and is now the connection's socket.
    Won,
    /// At least one failed (and is gone): the next address may start now.
    Lost,
    /// Nothing changed.
    Pending,
}

/// Probe every attempt in flight.
fn probe<S>(conn: &mut Conn, dial: &mut Dial, ctx: &mut Ctx<S>) -> Probed {
    let mut found = Probed::Pending;
    if dial.primary {
        match connected(&conn.stream) {
            Ok(true) => return Probed::Won,
            Ok(false) => {}
            Err(e) => {
                dial.fail_primary(e);
                found = Probed::Lost;
            }
        }
    }
    let mut i = 0;
    while i < dial.others.len() {
        match connected(&dial.others[i]) {
            Ok(false) => i += 1,
            Ok(true) => {
                let winner = dial.others.swap_remove(i);
                // Already registered under the connection's token.
                let old = std::mem::replace(&mut conn.stream, winner);
                drop_attempt(old, ctx);
                dial.primary = true;
                return Probed::Won;
            }
            Err(e) => {
                dial.note_failure(e);
                let lost = dial.others.swap_remove(i);
                drop_attempt(lost, ctx);
                found = Probed::Lost;
            }
        }
    }
    found
}

/// Whether an attempt has connected, is still under way, or failed.
fn connected(stream: &Stream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.has_peer() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Start attempts with the next addresses until one is in flight (an
/// attempt that fails at once makes way for the next at once).
fn start_next<S>(conn: &mut Conn, dial: &mut Dial, id: SourceId, now: Instant, ctx: &mut Ctx<S>) {
    while let Some(addr) = dial.addrs.pop_front() {
        let (mut stream, immediate) = match start_attempt(&addr, &dial.cfg) {
            Ok(started) => started,
            Err(e) => {
                dial.note_failure(e);
                continue;
            }
        };
        if let Some(e) = immediate {
            if backlog_full(&addr, &e) {
                dial.retry_later(addr, now);
                dial.note_failure(e);
                return;
            }
            dial.note_failure(e);
            continue;
        }
        log::debug!("evloop: {id} trying {addr}");
        let registry = ctx.poll.registry();
        if !dial.primary {
            // The connection's own socket is free (never used, or its
            // attempt failed): this attempt takes its place and its
            // registration.
            if let Err(e) = registry.register(&mut stream, id.token(), Interest::WRITABLE) {
                dial.note_failure(e);
                continue;
            }
            let old = std::mem::replace(&mut conn.stream, stream);
            drop_attempt(old, ctx);
            dial.primary = true;
        } else {
            if let Err(e) = registry.register(&mut stream, id.token(), Interest::WRITABLE) {
                dial.note_failure(e);
                continue;
            }
            dial.others.push(stream);
        }
        // A delay past the clock's range: the next address only on failure.
        dial.next_attempt = now.checked_add(dial.cfg.attempt_delay);
        // Probe it once whatever the kernel reports (see the module docs).
        ctx.schedule(id);
        return;
    }
}

/// Close an attempt's socket. Every socket of a connect is registered
/// under its token while it is in the connect's hands (the connection's own
/// one since `register_entry` or since it took an attempt's place).
fn drop_attempt<S>(mut stream: Stream, ctx: &mut Ctx<S>) {
    if let Err(e) = ctx.poll.registry().deregister(&mut stream) {
        log::debug!("evloop: deregistering a connect attempt: {e}");
    }
}

/// Keep one timer armed for the next moment the connect must look again
/// without an event: the next attempt's start, or the deadline.
fn wake_at<S>(dial: &mut Dial, id: SourceId, ctx: &mut Ctx<S>) {
    let next = if dial.addrs.is_empty() {
        None
    } else {
        dial.next_attempt
    };
    let want = match (next, dial.deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if dial.timer.map(|(_, at)| at) == want {
        return;
    }
    if let Some((t, _)) = dial.timer.take() {
        ctx.cancel_timer(t);
    }
    if let Some(at) = want {
        let t = ctx.timer_at(at, move |_, ctx, _| {
            ctx.schedule(id);
        });
        dial.timer = Some((t, at));
    }
}

/// Stop everything the connect holds but the connection's own socket.
fn give_up<S>(dial: &mut Dial, ctx: &mut Ctx<S>) {
    if let Some((t, _)) = dial.timer.take() {
        ctx.cancel_timer(t);
    }
    for s in dial.others.drain(..) {
        drop_attempt(s, ctx);
    }
}

/// Every attempt failed, or time ran out: report it and close.
fn failed<S, H: Handler<S>>(
    o: &mut Outbound<H>,
    mut dial: Box<Dial>,
    ctx: &mut Ctx<S>,
    state: &mut S,
) -> Action {
    give_up(&mut dial, ctx);
    let e = dial.last_error.take().unwrap_or_else(|| no_address(&dial));
    // The handler learns it through `on_close`; whether that is worth a
    // warning is its call.
    log::debug!("evloop: connection {} to {} failed: {e}", o.conn.id, dial.target);
    let reason = CloseReason::ConnectFailed(e.kind());
    o.conn.fail(reason);
    finish(&mut o.conn, &mut o.handler, reason, ctx, state);
    Action::Close
}

fn no_address(dial: &Dial) -> io::Error {
    let why = match dial.cfg.bind {
        Some(b) => format!("no address of {} matches the bind address {b}", dial.target),
        None => format!("no address for {}", dial.target),
    };
    io::Error::new(io::ErrorKind::NotFound, why)
}

/// The connection's socket connected: it is now an ordinary connection.
/// Watch it for reads, arm its idle timer, and run the driver at once, so
/// `on_open` runs and the queued output goes out in this dispatch.
fn established<S, H: Handler<S>>(
    o: &mut Outbound<H>,
    dial: Box<Dial>,
    ev: Event,
    ctx: &mut Ctx<S>,
    state: &mut S,
) -> Action {
    let id = ev.id;
    log::debug!("evloop: connection {id} to {} established", dial.target);
    drop(dial);
    o.conn.clear(CONNECTING);
    if o.conn.queued() > 0 {
        // Output that waited for the connect is owed an `on_drained` once
        // it is out, as output the kernel could not take at once is.
        o.conn.set(BACKLOGGED);
    }
    // The winner is registered for writability: the driver's settle sets the
    // interest it needs from here on, starting from "not yet reading".
    o.conn.polled = Some(Interest::WRITABLE);
    driver::arm_idle(&mut o.conn, id, ctx);
    let ev = Event {
        id,
        ready: ev.ready | Ready::READABLE,
    };
    drive(&mut o.conn, &mut o.handler, ev, ctx, state)
}

/// The connection's socket until its first attempt starts: unconnected,
/// and replaced by that attempt's (so it costs one fd for the time a name
/// takes to resolve).
fn placeholder() -> io::Result<Stream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking().cloexec(), None)?;
    Ok(Stream::Tcp(mio::net::TcpStream::from_std(socket.into())))
}

/// Make a socket for `addr` with `cfg`'s options and start connecting it.
/// The second value is an error the connect reported at once (refused,
/// unreachable...), for the dispatch phase to report.
fn start_attempt(addr: &Addr, cfg: &ConnectConfig) -> io::Result<(Stream, Option<io::Error>)> {
    let domain = match addr {
        Addr::Tcp(a) => Domain::for_address(*a),
        Addr::Unix(_) => Domain::UNIX,
    };
    let socket = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)
        .map_err(|e| io::Error::new(e.kind(), format!("evloop: no socket to connect to {addr}: {e}")))?;
    // Everything past the socket concerns this address only (a bind
    // address in use, a path too long, a refusal): the handler hears it.
    let immediate = configure_and_connect(&socket, addr, cfg)
        .err()
        .map(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")));
    let stream = match addr {
        Addr::Tcp(_) => Stream::Tcp(mio::net::TcpStream::from_std(socket.into())),
        Addr::Unix(_) => Stream::Unix(mio::net::UnixStream::from_std(socket.into())),
    };
    Ok((stream, immediate))
}

/// Set `cfg`'s options on `socket` and start connecting it to `addr`.
fn configure_and_connect(socket: &Socket, addr: &Addr, cfg: &ConnectConfig) -> io::Result<()> {
    let sockaddr = match addr {
        Addr::Tcp(a) => {
            if cfg.nodelay {
                socket.set_nodelay(true)?;
            }
            if let Some(idle) = cfg.keepalive {
                socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
            }
            if let Some(local) = cfg.bind {
                socket.bind(&local.into())?;
            }
            SockAddr::from(*a)
        }
        Addr::Unix(p) => SockAddr::unix(p)?,
    };
    match socket.connect(&sockaddr) {
        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => Err(e),
        _ => Ok(()),
    }
}

/// A Unix connect that found the listener's backlog full: it was not made
/// and no event will say when to try again (Unix sockets never answer
/// `EINPROGRESS`), so it is retried on a timer.
fn backlog_full(addr: &Addr, e: &io::Error) -> bool {
    matches!(addr, Addr::Unix(_)) && e.kind() == io::ErrorKind::WouldBlock
}

/// RFC 8305's order: keep the resolver's preference, but alternate address
/// families starting with the first one's, so that a broken family costs
/// one attempt delay, not one per address. With a bind address, only its
/// family can be used.
fn happy_eyeballs_order(list: Vec<SocketAddr>, bind: Option<SocketAddr>) -> VecDeque<SocketAddr> {
    let usable = |a: &SocketAddr| bind.map_or(true, |b| b.is_ipv4() == a.is_ipv4());
    let first_v6 = list.iter().find(|a| usable(a)).is_some_and(|a| a.is_ipv6());
    let (mut first, mut second): (VecDeque<_>, VecDeque<_>) = list
        .into_iter()
        .filter(|a| usable(a))
        .partition(|a| a.is_ipv6() == first_v6);
    let mut out = VecDeque::with_capacity(first.len() + second.len());
    loop {
        match (first.pop_front(), second.pop_front()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::happy_eyeballs_order;
    use std::net::SocketAddr;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_from_the_first() {
        let got = happy_eyeballs_order(
            addrs(&["[::1]:1", "[::2]:1", "1.1.1.1:1", "2.2.2.2:1", "3.3.3.3:1"]),
            None,
        );
        let want = addrs(&["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "3.3.3.3:1"]);
        assert_eq!(Vec::from(got), want);
    }

    #[test]
    fn a_bind_address_keeps_its_family_only() {
        let bind = Some("127.0.0.1:0".parse().unwrap());
        let got = happy_eyeballs_order(addrs(&["[::1]:1", "1.1.1.1:1", "[::2]:1"]), bind);
        assert_eq!(Vec::from(got), addrs(&["1.1.1.1:1"]));
    }
}
