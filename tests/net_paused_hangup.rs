//! A peer that goes away while we are not reading from it is noticed: the
//! connection is closed and its fd released at once, not when the server
//! next writes or the handler next resumes reading.
//!
//! Two ways reading stops: backpressure (our queue for the peer is above
//! high water) and the handler's own `pause_reading`. What a vanished peer
//! leaves behind, measured on Linux and on gVisor (2026-12, issue 21 item 3):
//! a peer that closes with bytes unread sends a reset (EPOLLHUP|EPOLLERR,
//! reported whatever the interest); one that read everything first sends a
//! FIN and opens its window, so our next flush meets the reset. A FIN alone,
//! with our output stuck, is a peer that half-closed and is still there: it
//! may yet read what it is owed, so it is not taken for gone.

mod common_net;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_net::{wait_until, Server, WAIT};
use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig, Stream};
use evloop::Ctx;

/// What the server saw of its one connection.
#[derive(Default, Debug)]
struct Seen {
    max_queued: usize,
    closed: Option<CloseReason>,
}

type Shared = Arc<Mutex<Seen>>;

/// Each `B` is answered with 1 MiB; a `P` pauses reading (nothing more is
/// read, nothing is written).
struct Replies(Shared);

const BIG: usize = 1 << 20;

impl Handler<()> for Replies {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'B' => {
                    conn.write(&vec![b'x'; BIG]);
                    let mut seen = self.0.lock().unwrap();
                    seen.max_queued = seen.max_queued.max(conn.queued());
                }
                b'P' => {
                    conn.pause_reading();
                    return i + 1;
                }
                _ => {}
            }
        }
        data.len()
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().closed = Some(reason);
    }
}

/// A server whose accepted sockets have a small fixed send buffer, so a
/// peer that does not read throttles it after a few hundred KiB.
fn server(seen: Shared) -> Server<()> {
    Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |s, _, _, _| {
                if let Stream::Tcp(s) = s {
                    socket2::SockRef::from(s).set_send_buffer_size(64 * 1024).unwrap();
                }
                Some(Replies(seen.clone()))
            },
        )?;
        Ok(l.addr)
    })
}

/// A client with a small receive buffer.
fn client(server: &Server<()>) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&server.tcp().into()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    TcpStream::from(sock)
}

/// Ask for 2 MiB and read none of it: the server stops reading this peer
/// (its queue passes high water) and holds the rest.
fn throttled(seen: &Shared, server: &Server<()>) -> TcpStream {
    let mut c = client(server);
    c.write_all(b"BB").unwrap();
    let high_water = ListenConfig::default().conn.high_water;
    assert!(
        wait_until(|| seen.lock().unwrap().max_queued > high_water),
        "the server never queued past high water: {:?}",
        seen.lock().unwrap()
    );
    c
}

fn closed(seen: &Shared) -> Option<CloseReason> {
    wait_until(|| seen.lock().unwrap().closed.is_some());
    seen.lock().unwrap().closed
}

#[test]
fn throttled_peer_that_closes_unread_is_noticed() {
    let seen = Shared::default();
    let server = server(seen.clone());
    let c = throttled(&seen, &server);
    drop(c);
    assert_eq!(closed(&seen), Some(CloseReason::Reset));
}

#[test]
fn throttled_peer_that_reads_a_little_and_closes_is_noticed() {
    let seen = Shared::default();
    let server = server(seen.clone());
    let mut c = throttled(&seen, &server);
    let mut buf = vec![0u8; 64 * 1024];
    c.read_exact(&mut buf).unwrap();
    drop(c);
    assert_eq!(closed(&seen), Some(CloseReason::Reset));
}

/// A FIN from a throttled peer is a half-close, not a departure: the peer
/// still gets every byte it asked for, then the server's close.
#[test]
fn throttled_peer_that_half_closes_still_gets_everything() {
    let seen = Shared::default();
    let server = server(seen.clone());
    let mut c = throttled(&seen, &server);
    c.shutdown(Shutdown::Write).unwrap();
    // Long enough for the FIN to arrive and be acted on, were it mistaken.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seen.lock().unwrap().closed,
        None,
        "a half-closed peer was dropped"
    );
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert!(buf[..n].iter().all(|&b| b == b'x'));
                got += n;
            }
            Err(e) => panic!("after {got} bytes: {e}"),
        }
    }
    assert_eq!(got, 2 * BIG);
    assert_eq!(closed(&seen), Some(CloseReason::PeerClosed));
}

/// The handler paused reading with nothing to write: the peer's reset must
/// still close the connection (it used to sit, unpolled, until resumed).
#[test]
fn paused_peer_that_resets_is_noticed() {
    let seen = Shared::default();
    let server = server(seen.clone());
    let c = client(&server);
    (&c).write_all(b"P and more input that stays unread").unwrap();
    // Let the server read the `P` and pause.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.lock().unwrap().closed, None);
    // SO_LINGER 0: close sends a reset.
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    assert_eq!(closed(&seen), Some(CloseReason::Reset));
}
