//! `net::resolve` and `net::split_host_port`: names through the blocking
//! pool, numeric addresses without it, malformed names refused by name.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::{turn_until, Watchdog};
use evloop::net::{self, split_host_port};
use evloop::EventLoop;

type Got = Vec<(String, io::Result<Vec<SocketAddr>>)>;

/// Resolve each name and turn the loop until every answer is in.
fn resolve_all(el: &mut EventLoop<Got>, names: &[&str]) -> Got {
    for name in names {
        let n = name.to_string();
        net::resolve(el, name, move |r, _ctx, got: &mut Got| got.push((n, r)));
    }
    let mut got = Vec::new();
    turn_until(el, &mut got, |got| got.len() == names.len());
    got
}

#[test]
fn localhost_resolves_to_loopback_addresses() {
    let _dog = Watchdog::new(60, "resolving localhost");
    let mut el = EventLoop::new().unwrap();
    let got = resolve_all(&mut el, &["localhost:6000"]);
    let addrs = got[0].1.as_ref().unwrap();
    assert!(!addrs.is_empty());
    for a in addrs {
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 6000);
    }
}

/// A pool with its one worker blocked and its queue full, to show what
/// does and does not need it. Open the gate returned to let it go.
fn saturated() -> (EventLoop<Got>, mpsc::Sender<()>) {
    let mut el = EventLoop::builder()
        .blocking_threads(1)
        .blocking_queue(1)
        .build()
        .unwrap();
    let (open, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let ignore = |_: io::Result<()>, _: &mut evloop::Ctx<Got>, _: &mut Got| {};
    el.spawn_blocking(
        move || {
            started_tx.send(()).unwrap();
            let _ = gate.recv_timeout(Duration::from_secs(30));
        },
        ignore,
    )
    .unwrap();
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    el.spawn_blocking(|| (), ignore).unwrap();
    (el, open)
}

#[test]
fn numeric_addresses_resolve_without_the_pool() {
    let _dog = Watchdog::new(30, "resolving numeric addresses");
    let (mut el, open) = saturated();
    let got = resolve_all(&mut el, &["127.0.0.1:80", "[::1]:443"]);
    let want: [SocketAddr; 2] = ["127.0.0.1:80".parse().unwrap(), "[::1]:443".parse().unwrap()];
    for ((name, r), want) in got.iter().zip(want) {
        assert_eq!(r.as_ref().unwrap(), &[want], "{name}");
    }
    open.send(()).unwrap();
}

#[test]
fn a_name_the_pool_refuses_reports_the_refusal_to_done() {
    let _dog = Watchdog::new(30, "resolving with a full pool");
    let (mut el, open) = saturated();
    let got = resolve_all(&mut el, &["localhost:80"]);
    let e = got[0].1.as_ref().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    open.send(()).unwrap();
}

#[test]
fn malformed_names_fail_with_invalid_input_naming_them() {
    let _dog = Watchdog::new(30, "resolving malformed names");
    let mut el = EventLoop::new().unwrap();
    let bad = [
        "localhost",
        ":80",
        "localhost:99999",
        "localhost:abc",
        "[::1]",
        "::1:80",
        "",
    ];
    for (name, r) in resolve_all(&mut el, &bad) {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}: {e}");
        assert!(e.to_string().contains(&format!("{name:?}")), "{name}: {e}");
    }
}

#[test]
fn split_host_port_takes_names_and_bracketed_v6() {
    assert_eq!(split_host_port("localhost:80").unwrap(), ("localhost", 80));
    assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1", 80));
    assert_eq!(split_host_port("10.0.0.1:65535").unwrap(), ("10.0.0.1", 65535));
    assert_eq!(split_host_port("host:0").unwrap(), ("host", 0));
}

#[test]
fn split_host_port_refuses_malformed_input_naming_it() {
    let bad = [
        "host",
        ":80",
        "host:99999",
        "host:abc",
        "host:",
        "host:+80",
        "[]:80",
        "[::1]80",
        "[::1",
        "::1:80",
    ];
    for s in bad {
        let e = split_host_port(s).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{s}");
        assert!(e.to_string().contains(s), "{s}: {e}");
    }
}
