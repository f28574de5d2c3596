//! Name resolution off the loop: [`resolve`].
//!
//! `getaddrinfo` blocks (it may read files, ask a DNS server, wait for a
//! timeout), and the C library offers no non-blocking form that works
//! everywhere, so it runs on the [`spawn_blocking`](Ctx::spawn_blocking)
//! pool. Numeric addresses need no lookup and never touch the pool.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::Ctx;

/// Resolve `name`, written `"host:port"` or `"[v6addr]:port"`, to socket
/// addresses, and call `done(result, ctx, state)` on the loop with them.
///
/// A host name is looked up with the system resolver (`getaddrinfo`, through
/// [`std::net::ToSocketAddrs`]) on the loop's
/// [`spawn_blocking`](Ctx::spawn_blocking) pool; a numeric address is
/// parsed on the spot and no thread is involved. Either way `done` runs
/// later, never inside this call (a deferred callback, or the dispatch of
/// the pool's results), so a caller's own state is never re-entered.
///
/// Every outcome reaches `done`:
///
/// * [`InvalidInput`](io::ErrorKind::InvalidInput) for a name that is not
///   `host:port` (see [`split_host_port`]), naming the input;
/// * [`NotFound`](io::ErrorKind::NotFound) when the name did not resolve:
///   no such host, no address, or no answer from the resolver (its reason,
///   and the name, in the message);
/// * an OS error the resolver met (its kind kept, the name added);
/// * the pool's refusal (a full queue: see
///   [`Builder::blocking_queue`](crate::Builder::blocking_queue)).
///
/// ```
/// use std::net::SocketAddr;
/// use evloop::{net, EventLoop};
///
/// let mut el = EventLoop::<Vec<SocketAddr>>::new()?;
/// // A host name ("localhost:6000") goes through the resolver the same way.
/// net::resolve(&mut el, "127.0.0.1:6000", |result, ctx, got: &mut Vec<SocketAddr>| {
///     *got = result.expect("a numeric address always resolves");
///     ctx.stop();
/// });
/// let mut got = Vec::new();
/// el.run(&mut got)?;
/// assert_eq!(got, ["127.0.0.1:6000".parse::<SocketAddr>().unwrap()]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resolve<S, F>(ctx: &mut Ctx<S>, name: &str, done: F)
where
    F: FnOnce(io::Result<Vec<SocketAddr>>, &mut Ctx<S>, &mut S) + 'static,
{
    let (host, port) = match split_host_port(name) {
        Ok(parts) => parts,
        Err(e) => return ctx.defer(move |ctx, state| done(Err(e), ctx, state)),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        return ctx.defer(move |ctx, state| done(Ok(vec![addr]), ctx, state));
    }
    let host = host.to_owned();
    match ctx.reserve_blocking() {
        Ok(room) => room.push(
            move || lookup(&host, port),
            move |result, ctx, state| done(result.and_then(|addrs| addrs), ctx, state),
        ),
        // Refused before `done` went to the pool: report it through `done`.
        Err(e) => ctx.defer(move |ctx, state| done(Err(e), ctx, state)),
    }
}

/// The blocking part: `getaddrinfo`, with errors that name the host.
pub(crate) fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            // getaddrinfo's own failures (no such name, no answer) come with
            // no OS error and a kind stable Rust cannot match: NotFound says
            // what the caller needs to know, the message keeps the detail.
            let kind = match e.raw_os_error() {
                Some(_) => e.kind(),
                // A name std refuses before asking (a NUL in it).
                None if e.kind() == io::ErrorKind::InvalidInput => e.kind(),
                None => io::ErrorKind::NotFound,
            };
            io::Error::new(kind, format!("evloop: resolving {host:?}: {e}"))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("evloop: resolving {host:?}: no addresses"),
        ));
    }
    Ok(addrs)
}

/// Split `"host:port"` or `"[v6addr]:port"` into host and port, the
/// brackets taken off an IPv6 host. Nothing is looked up.
///
/// Refused, with an [`InvalidInput`](io::ErrorKind::InvalidInput) error
/// naming `s`: no port (`"host"`), an empty host (`":80"`, `"[]:80"`), a
/// port that is not a decimal number up to 65535 (`"host:abc"`,
/// `"host:99999"`), and an IPv6 address without brackets (`"::1:80"`: which
/// colon starts the port would be a guess).
///
/// ```
/// use evloop::net::split_host_port;
///
/// assert_eq!(split_host_port("example.com:80")?, ("example.com", 80));
/// assert_eq!(split_host_port("[::1]:6000")?, ("::1", 6000));
/// assert!(split_host_port("example.com").is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn split_host_port(s: &str) -> io::Result<(&str, u16)> {
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("evloop: {s:?} is not \"host:port\" or \"[v6addr]:port\": {why}"),
        )
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| refuse("no closing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| refuse("no port after ']'"))?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| refuse("no port"))?;
        if host.contains(':') {
            return Err(refuse("an IPv6 address needs brackets"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(refuse("empty host"));
    }
    // `u16::from_str` would take "+80" too; a port is digits only.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse("the port is not a number"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| refuse("the port is above 65535"))?;
    Ok((host, port))
}
