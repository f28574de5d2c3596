//! Half-close: the peer shuts its writing half, still gets everything it is
//! owed, then EOF; the server's handler sees `on_eof` then `on_close(PeerClosed)`.

mod common_net;

use std::io::Write;
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::thread;

use common_net::{connect, random_bytes, read_to_eof, wait_until, Server, WAIT};
use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig, Stream};
use evloop::Ctx;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Open,
    /// Bytes delivered, and what was left queued after echoing them.
    Data(usize, usize),
    Eof {
        queued: usize,
    },
    Close(CloseReason),
}

/// Echo that writes down what the net layer told it.
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Handler<()> for Recorder {
    fn on_open(&mut self, _: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().push(Seen::Open);
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        assert!(conn.write(data), "write refused before EOF");
        self.0.lock().unwrap().push(Seen::Data(data.len(), conn.queued()));
        data.len()
    }
    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        assert!(conn.peer_eof());
        self.0.lock().unwrap().push(Seen::Eof {
            queued: conn.queued(),
        });
        conn.close();
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().push(Seen::Close(reason));
    }
}

/// `sndbuf`: a fixed kernel send buffer for accepted sockets (no autotuning).
fn recording_server(seen: Arc<Mutex<Vec<Seen>>>, cfg: ListenConfig, sndbuf: Option<usize>) -> Server<()> {
    Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |stream, _, _, _| {
            if let (Some(size), Stream::Tcp(s)) = (sndbuf, stream) {
                socket2::SockRef::from(s).set_send_buffer_size(size).unwrap();
            }
            Some(Recorder(seen.clone()))
        })?;
        Ok(l.addr)
    })
}

fn check_sequence(seen: &[Seen], total: usize) {
    assert_eq!(seen.first(), Some(&Seen::Open), "{seen:?}");
    let data: usize = seen
        .iter()
        .map(|s| if let Seen::Data(n, _) = s { *n } else { 0 })
        .sum();
    assert_eq!(data, total, "bytes delivered to on_data");
    let tail: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Eof { .. } | Seen::Close(_)))
        .cloned()
        .collect();
    assert_eq!(tail.len(), 2, "one on_eof and one on_close: {tail:?}");
    assert!(matches!(tail[0], Seen::Eof { .. }), "{tail:?}");
    assert_eq!(tail[1], Seen::Close(CloseReason::PeerClosed));
    assert!(
        matches!(seen.last(), Some(Seen::Close(_))),
        "on_close comes last: {seen:?}"
    );
}

/// Small payload: the client shuts its write half, reads the echo, then EOF.
#[test]
fn half_close_small() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = recording_server(seen.clone(), ListenConfig::default(), None);
    let mut c = connect(server.tcp());
    c.write_all(b"hello, half-closed world").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let back = read_to_eof(&mut c).unwrap();
    assert_eq!(back, b"hello, half-closed world");
    assert!(wait_until(
        || seen.lock().unwrap().len() >= 4 && matches!(seen.lock().unwrap().last(), Some(Seen::Close(_)))
    ));
    check_sequence(&seen.lock().unwrap(), back.len());
}

/// A payload bigger than the socket buffers: at EOF the server still has
/// output queued, and the client gets all of it before its EOF.
#[test]
fn half_close_with_output_queued() {
    const SIZE: usize = 16 << 20;
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Caps above the payload, so the server reads it all (and the EOF) while
    // the client is not reading yet, without backpressure kicking in.
    let mut cfg = ListenConfig::default();
    cfg.conn.high_water = 2 * SIZE;
    cfg.conn.low_water = SIZE;
    cfg.conn.max_queued = 2 * SIZE;
    let server = recording_server(seen.clone(), cfg, None);
    let data = random_bytes(SIZE, 7);
    let mut c = connect(server.tcp());
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    // Nobody reads until the server has seen the EOF: more than the kernel
    // buffers hold is then waiting in the server's queue.
    assert!(
        wait_until(|| seen.lock().unwrap().iter().any(|s| matches!(s, Seen::Eof { .. }))),
        "server never saw the EOF"
    );
    let queued_at_eof = seen.lock().unwrap().iter().find_map(|s| match s {
        Seen::Eof { queued } => Some(*queued),
        _ => None,
    });
    assert!(
        queued_at_eof.unwrap() > 0,
        "the scenario needs output queued at EOF"
    );
    let back = read_to_eof(&mut c).unwrap();
    writer.join().unwrap();
    assert!(
        back == data,
        "got {} of {} bytes back, or different ones",
        back.len(),
        data.len()
    );
    assert!(wait_until(|| matches!(
        seen.lock().unwrap().last(),
        Some(Seen::Close(_))
    )));
    check_sequence(&seen.lock().unwrap(), data.len());
}

/// The peer's FIN arrives while the server is throttled (not reading, its
/// queue past high water): once the peer reads and the throttle lifts, the
/// server reads on to the EOF, and the peer gets everything, then EOF.
#[test]
fn half_close_while_throttled() {
    const SIZE: usize = 256 * 1024;
    const HIGH: usize = 16 * 1024;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = ListenConfig::default();
    cfg.conn.high_water = HIGH;
    cfg.conn.low_water = HIGH / 4;
    // Small kernel buffers on the way back (the server's send buffer, the
    // client's receive buffer), so the server's echo backs up into its queue;
    // a send buffer big enough that all the data and the FIN leave the client
    // while the server is throttled and nobody reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.set_send_buffer_size(2 * SIZE).unwrap();
    let server = recording_server(seen.clone(), cfg, Some(4096));
    let data = random_bytes(SIZE, 11);
    sock.connect(&server.tcp().into()).unwrap();
    let mut c = std::net::TcpStream::from(sock);
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    assert!(
        wait_until(|| writer.is_finished()),
        "the client could not send it all"
    );
    let throttled = || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, Seen::Data(_, queued) if *queued > HIGH))
    };
    assert!(
        wait_until(throttled),
        "the server never went past high water: {:?}",
        seen.lock().unwrap()
    );
    let got_eof = seen.lock().unwrap().iter().any(|s| matches!(s, Seen::Eof { .. }));
    assert!(!got_eof, "the scenario needs the EOF unread while throttled");

    let back = read_to_eof(&mut c).unwrap();
    writer.join().unwrap();
    assert!(
        back == data,
        "got {} of {} bytes back, or different ones",
        back.len(),
        data.len()
    );
    assert!(wait_until(|| matches!(
        seen.lock().unwrap().last(),
        Some(Seen::Close(_))
    )));
    check_sequence(&seen.lock().unwrap(), data.len());
}

/// Answers `bye` with a big farewell and shuts its write half, then keeps
/// reading (and counting) until the peer closes too.
struct Farewell(Arc<Mutex<Vec<Seen>>>);

const FAREWELL: usize = 3 << 20;

impl Handler<()> for Farewell {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        let mut seen = self.0.lock().unwrap();
        if data == b"bye" {
            assert!(conn.write(&vec![b'f'; FAREWELL]));
            conn.shutdown_write();
        } else {
            // After shutdown_write, writes are refused but reads go on.
            assert!(!conn.write(data), "write accepted after shutdown_write");
        }
        seen.push(Seen::Data(data.len(), conn.queued()));
        data.len()
    }
    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().push(Seen::Eof {
            queued: conn.queued(),
        });
        conn.close();
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().push(Seen::Close(reason));
    }
}

/// The server half-closes first: the client gets everything queued, then
/// EOF, and may still send; the server closes once the client does too.
#[test]
fn server_half_closes_first() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |_, _, _, _| Some(Farewell(log.clone())),
        )?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    c.write_all(b"bye").unwrap();
    let back = read_to_eof(&mut c).unwrap();
    assert_eq!(back.len(), FAREWELL);
    assert!(back.iter().all(|&b| b == b'f'));
    // Our half is still open: the server reads it.
    c.write_all(b"one more thing").unwrap();
    assert!(wait_until(|| seen.lock().unwrap().len() == 2));
    c.shutdown(Shutdown::Write).unwrap();
    assert!(wait_until(|| matches!(
        seen.lock().unwrap().last(),
        Some(Seen::Close(_))
    )));
    let seen = seen.lock().unwrap().clone();
    assert!(matches!(seen[0], Seen::Data(3, _)), "{seen:?}");
    assert!(matches!(seen[1], Seen::Data(14, 0)), "{seen:?}");
    assert_eq!(
        seen[2..],
        [Seen::Eof { queued: 0 }, Seen::Close(CloseReason::PeerClosed)]
    );
}
