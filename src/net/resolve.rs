//! TEMPORARY stand-in until the resolver branch is merged.
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::Ctx;

/// Resolve `name` ("host:port") and hand the addresses to `done` on the loop.
pub fn resolve<S: 'static, F>(ctx: &mut Ctx<S>, name: &str, done: F)
where
    F: FnOnce(io::Result<Vec<SocketAddr>>, &mut Ctx<S>, &mut S) + 'static,
{
    let result = name.to_socket_addrs().map(|it| it.collect());
    ctx.defer(move |ctx, state| done(result, ctx, state));
}

/// Split "host:port".
pub fn split_host_port(s: &str) -> io::Result<(&str, u16)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad host:port {s:?}"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port.parse().map_err(|_| bad())?))
}
