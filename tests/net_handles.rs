//! Reaching a connection by id from elsewhere in the loop: `net::write` from
//! another connection's handler or a timer, `net::close` and `net::abort`;
//! all of them are harmless no-ops (false) on a stale id.

mod common_net;

use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common_net::{connect, random_bytes, read_to_eof, round_trip, wait_until, Echo, Server, WAIT};
use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Ctx, SourceId};

#[derive(Default)]
struct State {
    open: Vec<SourceId>,
    closed: Vec<(SourceId, CloseReason)>,
}

/// Echo, except that `>text` is forwarded to the first connection that
/// opened, and the sender gets back `y` or `n` for what `net::write` said.
struct Relay;

impl Handler<State> for Relay {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<State>, st: &mut State) {
        st.open.push(conn.id());
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<State>, st: &mut State) -> usize {
        match data.strip_prefix(b">") {
            Some(text) => {
                let ok = net::write(ctx, st.open[0], text);
                conn.write(if ok { b"y" } else { b"n" });
            }
            None => {
                Echo.on_data(conn, data, ctx, st);
            }
        }
        data.len()
    }
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<State>, st: &mut State) {
        st.closed.push((conn.id(), reason));
    }
}

/// Send a `>` request and read the one-byte verdict.
fn relay(s: &mut (impl Read + Write), msg: &[u8]) -> u8 {
    s.write_all(msg).unwrap();
    read_exactly(s, 1)[0]
}

fn read_exactly(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn write_close_abort_by_id() {
    let listener_id = Arc::new(Mutex::new(None));
    let lid = listener_id.clone();
    let server = Server::start(State::default(), move |el| {
        // Room to queue more than the kernel's socket buffers hold (see the abort).
        let mut cfg = ListenConfig::default();
        cfg.conn.max_queued = 64 << 20;
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, |_, _, _, _| Some(Relay))?;
        *lid.lock().unwrap() = Some(l.id);
        Ok(l.addr)
    });
    let addr = server.tcp();
    let opened = |n: usize| wait_until(|| server.call(move |_, st: &mut State| st.open.len() >= n));
    let mut a = connect(addr);
    assert!(opened(1));
    let mut b = connect(addr);
    assert!(opened(2));
    let mut c = connect(addr);
    assert!(opened(3));
    let ids = server.call(|_, st: &mut State| st.open.clone());
    let (a_id, c_id) = (ids[0], ids[2]);

    // From another connection's handler.
    assert_eq!(relay(&mut b, b">from b"), b'y');
    assert_eq!(read_exactly(&mut a, 6), b"from b");

    // From a timer.
    let (tx, rx) = mpsc::channel();
    server.call(move |ctx, _| {
        ctx.timer_after(Duration::ZERO, move |_, ctx, _| {
            tx.send(net::write(ctx, a_id, b"from a timer")).unwrap();
        });
    });
    assert!(rx.recv_timeout(WAIT).unwrap(), "write from a timer refused");
    assert_eq!(read_exactly(&mut a, 12), b"from a timer");

    // From its own handler, a call by id finds nothing (the handler holds
    // the connection): refused, and the connection goes on as before.
    assert_eq!(relay(&mut a, b">to myself"), b'n');
    assert_eq!(round_trip(&mut a, b"still here").unwrap(), b"still here");

    // Not a connection: the listener's id names a live source of another type.
    let listener_id = listener_id.lock().unwrap().expect("listener id");
    let not_conn = server.call(move |ctx, _| {
        (
            net::write(ctx, listener_id, b"x"),
            net::close(ctx, listener_id),
            net::abort(ctx, listener_id),
        )
    });
    assert_eq!(not_conn, (false, false, false));

    // A graceful close by id writes what is queued first, then EOF.
    let big = random_bytes(16 << 20, 5);
    let sent = big.clone();
    let (wrote, queued, closed) = server.call(move |ctx, _| {
        let wrote = net::write(ctx, a_id, &sent);
        let queued = ctx.source_mut::<Conn>(a_id).map_or(0, |c| c.queued());
        (wrote, queued, net::close(ctx, a_id))
    });
    assert!(wrote && closed);
    assert!(queued > 0, "the scenario needs output queued at the close");
    assert!(read_to_eof(&mut a).unwrap() == big, "queued output lost on close");
    assert!(wait_until(|| server.call(move |_, st: &mut State| st
        .closed
        .iter()
        .any(|&(id, _)| id == a_id))));
    assert_eq!(
        server.call(move |_, st: &mut State| st.closed.clone()),
        vec![(a_id, CloseReason::Local)]
    );

    // Stale id: every call is a no-op that says so, from a handler as well.
    let stale = server.call(move |ctx, _| {
        (
            net::write(ctx, a_id, b"x"),
            net::close(ctx, a_id),
            net::abort(ctx, a_id),
        )
    });
    assert_eq!(stale, (false, false, false));
    assert_eq!(relay(&mut b, b">again"), b'n');

    // A newcomer (likely in the stale id's slot) gets nothing meant for the old one.
    let mut d = connect(addr);
    assert!(opened(4));
    let d_id = server.call(|_, st: &mut State| st.open[3]);
    assert_ne!(d_id, a_id);
    assert!(!server.call(move |ctx, _| net::write(ctx, a_id, b"not for d")));
    assert_eq!(round_trip(&mut d, b"d here").unwrap(), b"d here");

    // Abort by id: what is still queued is dropped; the peer gets only what
    // the kernel had already taken, then the end.
    const LEN: usize = 16 << 20;
    let (wrote, queued, aborted) = server.call(move |ctx, _| {
        let wrote = net::write(ctx, c_id, &vec![7u8; LEN]);
        let queued = ctx.source_mut::<Conn>(c_id).map_or(0, |c| c.queued());
        (wrote, queued, net::abort(ctx, c_id))
    });
    assert!(wrote && aborted);
    assert!(queued > 0, "the scenario needs output queued at the abort");
    let got = read_to_eof(&mut c).unwrap();
    assert_eq!(
        got.len(),
        LEN - queued,
        "abort should drop exactly what was queued"
    );
    assert!(wait_until(
        || server.call(move |_, st: &mut State| st.closed.len() == 2)
    ));
    assert_eq!(
        server.call(|_, st: &mut State| st.closed[1]),
        (c_id, CloseReason::Local)
    );
    assert!(!server.call(move |ctx, _| net::abort(ctx, c_id)));

    // The others are unaffected.
    assert_eq!(round_trip(&mut b, b"b fine").unwrap(), b"b fine");
    assert_eq!(round_trip(&mut d, b"d fine").unwrap(), b"d fine");
}
