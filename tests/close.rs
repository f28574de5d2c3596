//! Closing, registering, pausing and re-aiming sources, from the owner and
//! from inside handlers; stale ids after a slot is reused.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::{drain, pair, peer_sees_eof, turns, FdSource, TICK};
use evloop::{Action, Ctx, EventLoop, Interest, SourceId};

#[derive(Default)]
struct Runs {
    a: usize,
    b: usize,
    b_id: Option<SourceId>,
}

/// Registers A then B, each draining its socket and counting its runs; A's
/// handler also runs `a_does`. Both are made ready. Returns the state (with
/// B's id) and the peers of A and B.
fn a_then_b(
    el: &mut EventLoop<Runs>,
    mut a_does: impl FnMut(&mut Ctx<Runs>, &mut Runs) + 'static,
) -> (Runs, UnixStream, UnixStream) {
    let (a, mut a_peer) = pair();
    let (b, mut b_peer) = pair();
    el.register(a, Interest::READABLE, move |sock, _ev, ctx, r: &mut Runs| {
        drain(sock);
        r.a += 1;
        a_does(ctx, r);
        Action::Keep
    })
    .unwrap();
    let b_id = el
        .register(b, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
            drain(sock);
            r.b += 1;
            Action::Keep
        })
        .unwrap();
    a_peer.write_all(b"x").unwrap();
    b_peer.write_all(b"x").unwrap();
    let r = Runs {
        b_id: Some(b_id),
        ..Runs::default()
    };
    (r, a_peer, b_peer)
}

#[test]
fn a_source_closed_earlier_in_the_turn_gets_no_event() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (mut r, mut a_peer, mut b_peer) = a_then_b(&mut el, |ctx, r| assert!(ctx.close(r.b_id.unwrap())));
    let t = el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b), (1, 0));
    assert_eq!(t.dispatched, 1);
    assert!(!el.is_open(r.b_id.unwrap()));
    let closed = peer_sees_eof(&mut b_peer);
    assert!(closed, "B's fd is closed by the end of the turn");
    assert!(!peer_sees_eof(&mut a_peer));
}

/// Registers a source whose handler closes itself, by `ctx.close` + `Keep`
/// or by returning `Close`; it also asks to be scheduled again first, which
/// the close must cancel.
fn closes_itself(by_action: bool) {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (a, mut peer) = pair();
    let id = el
        .register(a, Interest::READABLE, move |_sock, ev, ctx, r: &mut Runs| {
            r.a += 1;
            assert!(ctx.schedule(ev.id));
            if by_action {
                Action::Close
            } else {
                assert!(ctx.close(ev.id));
                assert!(!ctx.close(ev.id), "a second close is a no-op");
                Action::Keep
            }
        })
        .unwrap();
    // Sees the source closed but not yet reclaimed.
    el.add_check(move |ctx, r: &mut Runs| {
        if r.a == 1 && r.b == 0 {
            r.b = 1;
            assert!(!ctx.is_open(id));
            assert_eq!(ctx.source_count(), 1, "reclaimed only after the check phase");
        }
        true
    });
    peer.write_all(b"x").unwrap();
    let mut r = Runs::default();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b), (1, 1));
    assert!(!el.is_open(id));
    assert_eq!(el.source_count(), 0);
    assert!(peer_sees_eof(&mut peer));
    turns(&mut el, &mut r, 3);
    assert_eq!(r.a, 1, "no dispatch after close");
}

#[test]
fn a_handler_closing_itself_with_ctx_close_gets_nothing_further() {
    closes_itself(false);
}

#[test]
fn a_handler_closing_itself_with_action_close_gets_nothing_further() {
    closes_itself(true);
}

#[test]
fn a_stale_id_never_reaches_the_source_that_reuses_its_slot() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (a, _a_peer) = pair();
    let old = el
        .register(a, Interest::READABLE, |_sock, _ev, _ctx, r: &mut Runs| {
            r.a += 1;
            Action::Keep
        })
        .unwrap();
    assert!(el.close(old));
    let mut r = Runs::default();
    el.turn(&mut r, Some(std::time::Duration::ZERO)).unwrap();

    let (b, mut b_peer) = pair();
    let new = el
        .register(b, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
            drain(sock);
            r.b += 1;
            Action::Keep
        })
        .unwrap();
    assert_eq!(new.index(), old.index(), "the slot is reused");
    assert_ne!(new, old);

    assert!(!el.is_open(old));
    assert!(!el.close(old));
    assert!(!el.schedule(old));
    assert_eq!(
        el.set_interest(old, Interest::WRITABLE).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(el.set_priority(old, evloop::Priority::High).is_err());
    assert!(el.pause(old).is_err());
    assert!(el.resume(old).is_err());
    assert!(el.source_mut::<mio::net::UnixStream>(old).is_none());
    assert!(el.source_mut::<mio::net::UnixStream>(new).is_some());

    // None of that touched the new source: still open, still readable-only,
    // not scheduled, not paused.
    assert!(el.is_open(new));
    let t = el.turn(&mut r, Some(std::time::Duration::ZERO)).unwrap();
    assert_eq!(t.dispatched, 0);
    b_peer.write_all(b"x").unwrap();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b), (0, 1));
}

#[test]
fn a_source_registered_inside_a_handler_gets_events_from_the_next_poll() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (a, mut a_peer) = pair();
    let (c, mut c_peer) = pair();
    // Data is waiting on C before it is even registered.
    c_peer.write_all(b"x").unwrap();
    let mut c = Some(c);
    el.register(a, Interest::READABLE, move |sock, _ev, ctx, r: &mut Runs| {
        drain(sock);
        r.a += 1;
        if let Some(c) = c.take() {
            let id = ctx
                .register(c, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
                    drain(sock);
                    r.b += 1;
                    Action::Keep
                })
                .unwrap();
            r.b_id = Some(id);
        }
        Action::Keep
    })
    .unwrap();
    a_peer.write_all(b"x").unwrap();
    let mut r = Runs::default();
    let t1 = el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b, t1.dispatched), (1, 0, 1));
    assert!(el.is_open(r.b_id.unwrap()));
    let t2 = el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b, t2.dispatched), (1, 1, 1));
}

#[test]
fn a_paused_source_is_not_dispatched_until_resumed() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (a, mut peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |sock, _ev, _ctx, r: &mut Runs| {
            drain(sock);
            r.a += 1;
            Action::Keep
        })
        .unwrap();
    el.pause(id).unwrap();
    assert!(el.is_open(id), "paused is not closed");
    peer.write_all(b"x").unwrap();
    let mut r = Runs::default();
    turns(&mut el, &mut r, 3);
    assert_eq!(r.a, 0);
    // The data that arrived while paused is reported once polled again.
    el.resume(id).unwrap();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!(r.a, 1);
}

#[test]
fn a_source_paused_earlier_in_the_turn_gets_no_event() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (mut r, mut a_peer, _b_peer) = a_then_b(&mut el, |ctx, r| {
        if r.a == 1 {
            ctx.pause(r.b_id.unwrap()).unwrap();
        } else {
            ctx.resume(r.b_id.unwrap()).unwrap();
        }
    });
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!((r.a, r.b), (1, 0));
    a_peer.write_all(b"x").unwrap();
    el.turn(&mut r, Some(TICK)).unwrap(); // A resumes B...
    el.turn(&mut r, Some(TICK)).unwrap(); // ...which reports its old data now
    assert_eq!((r.a, r.b), (2, 1));
}

#[test]
fn a_handler_can_pause_itself_and_be_resumed() {
    let mut el = EventLoop::<Runs>::new().unwrap();
    let (a, mut peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |sock, ev, ctx, r: &mut Runs| {
            drain(sock);
            r.a += 1;
            ctx.pause(ev.id).unwrap();
            Action::Keep
        })
        .unwrap();
    peer.write_all(b"x").unwrap();
    let mut r = Runs::default();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!(r.a, 1);
    peer.write_all(b"x").unwrap();
    turns(&mut el, &mut r, 3);
    assert_eq!(r.a, 1);
    el.resume(id).unwrap();
    el.turn(&mut r, Some(TICK)).unwrap();
    assert_eq!(r.a, 2);
}

#[test]
fn set_interest_changes_what_the_source_is_polled_for() {
    #[derive(Default)]
    struct S {
        readable: usize,
        writable: usize,
    }
    let mut el = EventLoop::<S>::new().unwrap();
    let (a, mut peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |sock, ev, ctx, s: &mut S| {
            if ev.ready.is_readable() {
                drain(sock);
                s.readable += 1;
            }
            if ev.ready.is_writable() {
                s.writable += 1;
                // Changed from inside its own handler: applied on return.
                ctx.set_interest(ev.id, Interest::READABLE).unwrap();
            }
            Action::Keep
        })
        .unwrap();
    let mut s = S::default();
    // Readable-only and nothing to read: an idle turn, though it is writable.
    assert!(el.turn(&mut s, Some(TICK)).unwrap().is_idle());
    el.set_interest(id, Interest::WRITABLE).unwrap();
    el.turn(&mut s, Some(TICK)).unwrap();
    assert_eq!((s.readable, s.writable), (0, 1));
    peer.write_all(b"x").unwrap();
    el.turn(&mut s, Some(TICK)).unwrap();
    assert_eq!((s.readable, s.writable), (1, 1));
}

#[test]
fn source_mut_downcasts_to_the_registered_type() {
    let mut el = EventLoop::<Vec<&'static str>>::new().unwrap();
    let (a, mut a_peer) = pair();
    let (b, mut b_peer) = pair();
    let b_id = el
        .register(
            b,
            Interest::READABLE,
            |_sock, ev, ctx, log: &mut Vec<&'static str>| {
                // Its own source is lent to the handler, not to the table.
                if ctx.source_mut::<mio::net::UnixStream>(ev.id).is_none() {
                    log.push("own: none");
                }
                Action::Keep
            },
        )
        .unwrap();
    el.register(
        a,
        Interest::READABLE,
        move |sock, _ev, ctx, log: &mut Vec<&'static str>| {
            drain(sock);
            // Another handler may reach B's socket and write through it.
            let b = ctx.source_mut::<mio::net::UnixStream>(b_id).unwrap();
            b.write_all(b"from A").unwrap();
            log.push("A wrote via B");
            ctx.schedule(b_id);
            Action::Keep
        },
    )
    .unwrap();
    assert!(el.source_mut::<mio::net::UnixStream>(b_id).is_some());
    assert!(el.source_mut::<FdSource>(b_id).is_none(), "wrong type");
    assert!(el.source_mut::<String>(b_id).is_none(), "wrong type");

    a_peer.write_all(b"x").unwrap();
    let mut log = Vec::new();
    el.turn(&mut log, Some(TICK)).unwrap();
    el.turn(&mut log, Some(TICK)).unwrap();
    assert_eq!(log, ["A wrote via B", "own: none"]);
    let mut got = [0u8; 6];
    b_peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from A");
}

/// A UDP socket's handler that closes the socket gets no further datagram
/// in the same dispatch (the receive loop went on, up to its budget).
#[test]
fn a_udp_socket_closed_by_its_handler_receives_nothing_more() {
    let _watchdog = common::Watchdog::new(20, "a_udp_socket_closed_by_its_handler");
    let mut el = EventLoop::<usize>::new().unwrap();
    let me: std::rc::Rc<std::cell::Cell<Option<SourceId>>> = Default::default();
    let id_for_handler = me.clone();
    let (id, addr) = evloop::net::bind_udp(
        &mut el,
        "127.0.0.1:0".parse().unwrap(),
        move |_, _, _, ctx, calls| {
            *calls += 1;
            ctx.close(id_for_handler.get().unwrap());
        },
    )
    .unwrap();
    me.set(Some(id));
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3u8 {
        client.send_to(&[i], addr).unwrap();
    }
    let mut calls = 0;
    common::turn_until(&mut el, &mut calls, |calls| *calls > 0);
    turns(&mut el, &mut calls, 2);
    assert_eq!(calls, 1);
    assert!(!el.is_open(id));
}

/// An accept callback that closes its listener is called for no other
/// connection waiting in the backlog (the accept loop went on, up to its
/// budget, and served them).
#[test]
fn a_listener_closed_by_its_accept_callback_accepts_nobody_more() {
    use evloop::net::{self, Conn, Handler, ListenConfig};
    struct Sink;
    impl Handler<usize> for Sink {
        fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<usize>, _: &mut usize) -> usize {
            data.len()
        }
    }
    let _watchdog = common::Watchdog::new(20, "a_listener_closed_by_its_accept_callback");
    let mut el = EventLoop::<usize>::new().unwrap();
    let me: std::rc::Rc<std::cell::Cell<Option<SourceId>>> = Default::default();
    let id_for_callback = me.clone();
    let listening = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        move |_, _, ctx, n| {
            *n += 1;
            ctx.close(id_for_callback.get().unwrap());
            Some(Sink)
        },
    )
    .unwrap();
    me.set(Some(listening.id));
    let net::Addr::Tcp(addr) = listening.addr else {
        unreachable!()
    };
    // Each connect returns once the kernel has queued the connection.
    let _clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut accepted = 0;
    common::turn_until(&mut el, &mut accepted, |n| *n > 0);
    turns(&mut el, &mut accepted, 2);
    assert_eq!(accepted, 1);
}
