//! `max_connections`: past the limit the listener stops accepting, and
//! resumes as soon as a connection leaves.

mod common_net;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_net::{connect, round_trip, wait_until, Echo, Server, WAIT};
use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop, PanicPolicy};

/// True if `s` gets no reply within a short window (the bytes sit unread in
/// the server's accept backlog). Only ever a false pass if the machine is slow,
/// never a false failure.
fn not_served(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut b = [0u8; 1];
    let quiet =
        matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    s.set_read_timeout(Some(WAIT)).unwrap();
    quiet
}

#[test]
fn third_client_waits_until_one_leaves() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            max_connections: Some(2),
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Some(Echo)
        })?;
        Ok(l.addr)
    });
    let addr = server.tcp();
    let mut c1 = connect(addr);
    assert_eq!(round_trip(&mut c1, b"one").unwrap(), b"one");
    let mut c2 = connect(addr);
    assert_eq!(round_trip(&mut c2, b"two").unwrap(), b"two");

    // The kernel completes the third handshake, but the loop does not accept it.
    let mut c3 = connect(addr);
    c3.write_all(b"three").unwrap();
    assert!(not_served(&mut c3), "third client served over the limit");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // One leaves: the third is accepted and served, its early bytes included.
    drop(c1);
    let mut back = [0u8; 5];
    c3.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"three");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // Full again (c2, c3): a fourth waits, and gets in when c2 leaves.
    let mut c4 = connect(addr);
    c4.write_all(b"four").unwrap();
    assert!(not_served(&mut c4), "fourth client served over the limit");
    drop(c2);
    let mut back = [0u8; 4];
    c4.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"four");
    assert!(wait_until(|| accepted.load(Ordering::SeqCst) == 4));
    assert_eq!(round_trip(&mut c3, b"still fine").unwrap(), b"still fine");
}

/// A handler that never consumes its input is cut off at `max_input`.
#[test]
fn unconsumed_input_over_cap_closes() {
    struct Hoarder(Arc<Mutex<Option<CloseReason>>>);
    impl Handler<()> for Hoarder {
        fn on_data(&mut self, _: &mut Conn, _: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
            0 // waiting for a frame that never completes
        }
        fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
            *self.0.lock().unwrap() = Some(reason);
        }
    }
    let reason = Arc::new(Mutex::new(None));
    let seen = reason.clone();
    let server = Server::start((), move |el| {
        let mut cfg = ListenConfig::default();
        cfg.conn.max_input = 64 * 1024;
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(Hoarder(seen.clone()))
        })?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    // Past the cap; the write may fail once the server has closed on us.
    let _ = c.write_all(&[1u8; 256 * 1024]);
    assert!(wait_until(|| reason.lock().unwrap().is_some()));
    assert_eq!(*reason.lock().unwrap(), Some(CloseReason::InputTooLarge));
    let mut buf = [0u8; 16];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "peer should see the close"
    );
}

/// With `PanicPolicy::CloseSource`, a handler that panics loses its
/// connection, and that connection no longer counts against `max_connections`.
#[test]
fn panicking_handler_frees_its_place() {
    struct Touchy;
    impl Handler<()> for Touchy {
        fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<()>, st: &mut ()) -> usize {
            if data.starts_with(b"panic") {
                panic!("test: handler panics on purpose");
            }
            Echo.on_data(conn, data, ctx, st)
        }
    }
    let builder = EventLoop::builder().panic_policy(PanicPolicy::CloseSource);
    let server = Server::start_with(builder, (), |el| {
        let cfg = ListenConfig {
            max_connections: Some(1),
            ..ListenConfig::default()
        };
        Ok(net::listen(el, &"127.0.0.1:0".parse()?, cfg, |_, _, _, _| Some(Touchy))?.addr)
    });
    let addr = server.tcp();
    for i in 0..3 {
        let mut c = connect(addr);
        assert_eq!(round_trip(&mut c, b"hello").unwrap(), b"hello", "client {i}");
        c.write_all(b"panic").unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "client {i} should see its connection close"
        );
    }
}

/// Records its connection's id when it opens, then echoes.
struct Recorded(Arc<Mutex<Vec<evloop::SourceId>>>);

impl Handler<()> for Recorded {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().push(conn.id());
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        conn.write(data);
        data.len()
    }
}

/// A connection closed with `Ctx::close` (not `net::close`) skips `on_close`,
/// but its place under `max_connections` still comes back.
#[test]
fn place_freed_by_ctx_close_is_given_back() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            max_connections: Some(1),
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(Recorded(seen.clone()))
        })?;
        Ok(l.addr)
    });
    let addr = server.tcp();
    let mut c1 = connect(addr);
    assert_eq!(round_trip(&mut c1, b"one").unwrap(), b"one");
    let mut c2 = connect(addr);
    c2.write_all(b"two").unwrap();
    assert!(not_served(&mut c2), "second client served over the limit");

    let first = ids.lock().unwrap()[0];
    assert!(server.call(move |ctx, _| ctx.close(first)));
    let mut back = [0u8; 3];
    c2.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"two");
    drop(c1);
}
