//! The `proxy` example against a client that floods it without reading
//! and then resets: alone in its process, as its flood would move the
//! memory figures of `tests/proxy.rs`'s tests running beside it.

#[path = "../examples/proxy.rs"]
#[allow(dead_code)]
mod proxy;

mod common_net;

use std::io::Write;
use std::time::Duration;

use common_net::{connect, echo_server, wait_until, Server, WAIT};
use evloop::net::Target;

/// A proxy in front of an evloop echo server.
fn proxied_echo() -> (Server<()>, Server<()>) {
    let upstream = echo_server();
    let to = Target::from(upstream.tcp());
    let proxy = Server::start((), move |el| {
        let timeouts = proxy::Timeouts {
            connect: WAIT,
            stall: WAIT,
        };
        let l = proxy::start(el, &"127.0.0.1:0".parse()?, to, timeouts)?;
        Ok(l.addr)
    });
    (upstream, proxy)
}

/// A client that floods without reading, then goes with a reset: the
/// proxy must let go of both sides. (It closed the upstream gracefully,
/// after what it owed the upstream was written; but the upstream, whose
/// answers the proxy had stopped reading, was not reading either, and the
/// pair stayed open for good.)
#[test]
fn a_flooding_client_that_resets_frees_its_pair() {
    let (_upstream, proxy) = proxied_echo();
    let base = proxy.call(|ctx, _| ctx.source_count());
    for _ in 0..3 {
        let mut c = connect(proxy.tcp());
        c.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let give_up = std::time::Instant::now() + WAIT;
        // Until every buffer on the way is full and a write stalls.
        while c.write_all(&chunk).is_ok() {
            assert!(std::time::Instant::now() < give_up, "the proxy never pushed back");
        }
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    }
    assert!(
        wait_until(|| proxy.call(|ctx, _| ctx.source_count()) == base),
        "pairs left open: {} sources, {base} before",
        proxy.call(|ctx, _| ctx.source_count())
    );
}
