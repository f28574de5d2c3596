//! What a panicking callback does to the loop, under each `PanicPolicy`.

mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use common::{drain, pair, peer_sees_eof, TICK};
use evloop::{Action, EventLoop, Interest, PanicPolicy};

#[derive(Default, Debug)]
struct Runs {
    before: usize,
    after: usize,
    log: Vec<&'static str>,
}

/// `before` (ready first), a handler that panics, and `after`: all ready in
/// the same turn, in that order.
fn three_sources(el: &mut EventLoop<Runs>) -> (evloop::SourceId, Vec<std::os::unix::net::UnixStream>) {
    let (b, b_peer) = pair();
    let (p, p_peer) = pair();
    let (a, a_peer) = pair();
    el.register(b, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
        drain(sock);
        r.before += 1;
        Action::Keep
    })
    .unwrap();
    let bad = el
        .register(
            p,
            Interest::READABLE,
            |_sock, _ev, _ctx, _r: &mut Runs| -> Action { panic!("handler exploded") },
        )
        .unwrap();
    el.register(a, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
        drain(sock);
        r.after += 1;
        Action::Keep
    })
    .unwrap();
    let mut peers = vec![b_peer, p_peer, a_peer];
    for peer in &mut peers {
        peer.write_all(b"x").unwrap();
    }
    (bad, peers)
}

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn by_default_a_handler_panic_escapes_turn_and_the_loop_stays_usable() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (bad, mut peers) = three_sources(&mut el);
    let mut r = Runs::default();
    let err = catch_unwind(AssertUnwindSafe(|| el.turn(&mut r, Some(TICK)))).unwrap_err();
    assert_eq!(message(err), "handler exploded");
    assert!(!el.is_open(bad), "the panicking source is closed");
    assert_eq!((r.before, r.after), (1, 0));

    // The next turn finishes what the panicking one started: the source
    // whose readiness was already polled is served (under edge-triggered
    // polling it would never hear of that data again), the one already
    // served is not served twice, and the closed one is reclaimed.
    let t = el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.before, r.after), (1, 1));
    assert_eq!(t.dispatched, 1);
    assert!(peer_sees_eof(&mut peers[1]));
    assert_eq!(
        el.metrics().panics,
        0,
        "propagated panics are not counted as caught"
    );

    // And it goes on as usual.
    peers[0].write_all(b"x").unwrap();
    peers[2].write_all(b"x").unwrap();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.before, r.after), (2, 2));
}

#[test]
fn close_source_policy_catches_the_panic_and_serves_the_others() {
    let mut el = EventLoop::builder()
        .panic_policy(PanicPolicy::CloseSource)
        .build::<Runs>()
        .unwrap();
    let (bad, mut peers) = three_sources(&mut el);
    let mut r = Runs::default();
    let t = el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.before, r.after), (1, 1));
    assert_eq!(t.dispatched, 3);
    assert!(!el.is_open(bad));
    assert_eq!(el.metrics().panics, 1);
    assert!(peer_sees_eof(&mut peers[1]));

    for _ in 0..3 {
        peers[0].write_all(b"x").unwrap();
        peers[2].write_all(b"x").unwrap();
        el.turn(&mut r, Some(TICK)).unwrap();
    }
    assert_eq!((r.before, r.after), (4, 4));
    assert_eq!(el.metrics().panics, 1);
}

/// Under `policy`: build a loop, `setup` it, and run one turn in which
/// something panics; the panic escapes `turn` only under `Propagate`.
fn panicking_turn(policy: PanicPolicy, setup: fn(&mut EventLoop<Runs>)) -> (EventLoop<Runs>, Runs) {
    let mut el = EventLoop::builder().panic_policy(policy).build::<Runs>().unwrap();
    setup(&mut el);
    let mut r = Runs::default();
    let first = catch_unwind(AssertUnwindSafe(|| el.turn(&mut r, Some(Duration::ZERO))));
    assert_eq!(first.is_err(), policy == PanicPolicy::Propagate, "{policy:?}");
    (el, r)
}

const POLICIES: [PanicPolicy; 2] = [PanicPolicy::Propagate, PanicPolicy::CloseSource];

#[test]
fn a_panicking_deferred_callback_loses_no_other_deferred_work() {
    for policy in POLICIES {
        let (mut el, mut r) = panicking_turn(policy, |el| {
            el.defer(|_ctx, r| r.log.push("one"));
            el.defer(|_ctx, _r| panic!("deferred exploded"));
            el.defer(|_ctx, r| r.log.push("three"));
        });
        el.turn(&mut r, Some(Duration::ZERO)).unwrap();
        assert_eq!(r.log, ["one", "three"], "{policy:?}");
    }
}

#[test]
fn a_panicking_timer_loses_no_other_due_timer() {
    for policy in POLICIES {
        let (mut el, mut r) = panicking_turn(policy, |el| {
            el.timer_after(Duration::ZERO, |_f, _ctx, r| r.log.push("one"));
            el.timer_after(Duration::ZERO, |_f, _ctx, _r| panic!("timer exploded"));
            el.timer_after(Duration::ZERO, |_f, _ctx, r| r.log.push("three"));
        });
        el.turn(&mut r, Some(Duration::ZERO)).unwrap();
        assert_eq!(r.log, ["one", "three"], "{policy:?}");
        assert_eq!(
            el.timer_count(),
            0,
            "{policy:?}: the panicking one-shot timer is gone too"
        );
    }
}

#[test]
fn a_panicking_check_hook_is_dropped_and_the_others_kept() {
    for policy in POLICIES {
        let (mut el, mut r) = panicking_turn(policy, |el| {
            el.add_check(|_ctx, r| {
                r.log.push("a");
                true
            });
            el.add_check(|_ctx, _r| panic!("check exploded"));
            el.add_check(|_ctx, r| {
                r.log.push("c");
                true
            });
        });
        r.log.clear();
        el.turn(&mut r, Some(Duration::ZERO)).unwrap();
        assert_eq!(r.log, ["a", "c"], "{policy:?}");
    }
}

/// A panicking closure posted through a `Remote` is one bad message: the
/// closures after it still run and the `Remote` keeps working.
#[test]
fn panicking_posted_closure_does_not_break_the_remote() {
    let mut el = evloop::EventLoop::builder()
        .panic_policy(evloop::PanicPolicy::CloseSource)
        .build::<Vec<u32>>()
        .unwrap();
    let remote = el.remote().unwrap();
    remote.post(|_, _| panic!("boom")).unwrap();
    remote.post(|_, v| v.push(1)).unwrap();
    let mut v = Vec::new();
    for _ in 0..3 {
        el.turn(&mut v, Some(std::time::Duration::from_millis(10)))
            .unwrap();
    }
    remote.post(|_, v| v.push(2)).expect("the remote still works");
    for _ in 0..3 {
        el.turn(&mut v, Some(std::time::Duration::from_millis(10)))
            .unwrap();
    }
    assert_eq!(v, [1, 2]);
    assert_eq!(el.metrics().panics, 1);
}

/// Under the default policy a handler's panic escapes `turn` before the
/// reclaim phase; what the panicking connection held is released anyway
/// before the panic leaves, so its peer sees the close at once and a listener
/// paused at `max_connections` resumes even if the next poll would sleep for
/// ever (its check hook is woken by the freed place).
#[test]
fn a_propagated_handler_panic_releases_what_the_source_held() {
    use std::io::Read;
    use std::net::TcpStream;

    use evloop::net::{self, Addr, Conn, Handler, ListenConfig};
    use evloop::Ctx;

    struct Touchy;
    impl Handler<()> for Touchy {
        fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
            if data.starts_with(b"panic") {
                panic!("test: handler panics on purpose");
            }
            conn.write(data);
            data.len()
        }
    }

    let _dog = common::Watchdog::new(30, "serving after a propagated handler panic");
    let mut el: EventLoop<()> = EventLoop::new().unwrap();
    let cfg = ListenConfig {
        max_connections: Some(1),
        ..ListenConfig::default()
    };
    let l = net::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), cfg, |_, _, _, _| {
        Some(Touchy)
    })
    .unwrap();
    let Addr::Tcp(addr) = l.addr else {
        unreachable!("a TCP listener")
    };
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"panic").unwrap();
    let mut escaped = false;
    for _ in 0..200 {
        let turn = catch_unwind(AssertUnwindSafe(|| el.turn(&mut (), Some(TICK))));
        if turn.is_err() {
            escaped = true;
            break;
        }
    }
    assert!(escaped, "the handler's panic never reached the caller");

    // Closed before the panic left `turn`: no further turn is needed.
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 8];
    assert!(
        matches!(first.read(&mut b), Ok(0)),
        "the panicking connection's peer should see EOF at once"
    );

    // The listener was paused at its limit of one. Turns that may sleep for
    // ever must still serve the next client (the watchdog bounds the test).
    let mut second = TcpStream::connect(addr).unwrap();
    second.write_all(b"hello").unwrap();
    second.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        el.turn(&mut (), None).unwrap();
        let mut buf = [0u8; 16];
        if let Ok(n) = second.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= 5 {
            break;
        }
    }
    assert_eq!(got, b"hello");
}
