//! Peers that reset the connection (RST, via SO_LINGER 0) while the server
//! has lots of output queued for them: the server reports `Reset`, frees
//! them, and goes on serving.

mod common_net;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common_net::{connect, wait_until, Server};
use evloop::net::{self, CloseReason, Conn, Handler, ListenConfig};
use evloop::Ctx;

/// Each byte received is answered with this many copies of it.
const AMPLIFY: usize = 64 * 1024;
/// Written in pieces this big, under the net layer's direct-write threshold.
const PIECE: usize = 4 * 1024;

struct Amplifier {
    closes: Arc<Mutex<Vec<(CloseReason, usize)>>>,
}

impl Handler<()> for Amplifier {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        // A fixed send buffer: autotuned, it can grow to take all 3.75 MiB
        // of answers, and then nothing is queued when the reset comes.
        socket2::SockRef::from(conn.stream())
            .set_send_buffer_size(64 << 10)
            .unwrap();
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        // In 4 KiB pieces: small writes are corked while the handler runs and
        // leave in one flush afterwards, so the reset finds the answers still
        // queued (a write of 8 KiB or more would go straight to the socket,
        // and fail there, with nothing queued).
        for &b in data {
            for _ in 0..AMPLIFY / PIECE {
                if !conn.write(&[b; PIECE]) {
                    return data.len();
                }
            }
        }
        data.len()
    }
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        // Still queued when the connection died: proof it died mid-write.
        self.closes.lock().unwrap().push((reason, conn.queued()));
    }
}

fn amplifier_server(closes: Arc<Mutex<Vec<(CloseReason, usize)>>>) -> Server<()> {
    Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |_, _, _, _| {
                Some(Amplifier {
                    closes: closes.clone(),
                })
            },
        )?;
        Ok(l.addr)
    })
}

#[test]
fn peers_resetting_mid_write_leave_the_server_serving() {
    const THREADS: usize = 8;
    const PEERS_PER_THREAD: usize = 10;
    const PEERS: usize = THREADS * PEERS_PER_THREAD;
    let closes = Arc::new(Mutex::new(Vec::new()));
    let server = amplifier_server(closes.clone());
    let addr = server.tcp();

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..PEERS_PER_THREAD {
                    let mut s = connect(addr);
                    socket2::SockRef::from(&s).set_recv_buffer_size(32 << 10).unwrap();
                    // 60 requests: 3.75 MiB of answers (under the 4 MiB cap), more than the
                    // socket buffers take, so the server queues the rest.
                    s.write_all(&[b'r'; 60]).unwrap();
                    // One byte back proves the server is writing to us.
                    let mut one = [0u8; 1];
                    s.read_exact(&mut one).unwrap();
                    assert_eq!(one[0], b'r');
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(s); // RST, with the server's output unread
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("resetting peer");
    }

    assert!(
        wait_until(|| closes.lock().unwrap().len() == PEERS),
        "only {} of {PEERS} resets were reported",
        closes.lock().unwrap().len()
    );
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    let mut mid_write = 0;
    for (r, queued) in closes.lock().unwrap().iter() {
        *by_reason.entry(format!("{r:?}")).or_default() += 1;
        mid_write += (*queued > 0) as usize;
    }
    println!("close reasons {by_reason:?}; {mid_write} of {PEERS} had output queued");
    assert!(
        mid_write > 0,
        "no peer was reset while the server had output queued"
    );
    // An RST surfaces as ECONNRESET on the next read or write, or EPIPE on a
    // write after it: both are reported as Reset.
    assert_eq!(
        by_reason.get("Reset").copied(),
        Some(PEERS),
        "close reasons: {by_reason:?}"
    );

    // And the server still serves.
    let mut fresh = connect(addr);
    fresh.write_all(b"ok").unwrap();
    let mut back = vec![0u8; 2 * AMPLIFY];
    fresh.read_exact(&mut back).unwrap();
    assert!(back[..AMPLIFY].iter().all(|&b| b == b'o'));
    assert!(back[AMPLIFY..].iter().all(|&b| b == b'k'));
}

/// Writes `total` bytes on open, in 64 KiB pieces, stopping early once the
/// connection's queue is above high water.
struct Flood {
    total: usize,
}

impl Handler<()> for Flood {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        let mut sent = 0;
        while sent < self.total && conn.has_room() {
            let n = (self.total - sent).min(64 * 1024);
            conn.write(&vec![b'z'; n]);
            sent += n;
        }
    }
    fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        data.len()
    }
}

/// Drop the loop while its one connection has written what `Flood` does
/// (the client not reading yet), then read: what the client got, and how
/// the stream ended (`None`: a clean EOF).
fn drop_the_loop_after(total: usize) -> (usize, Option<std::io::ErrorKind>) {
    let mut el = evloop::EventLoop::<()>::new().unwrap();
    let l = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        move |_, _, _, _| Some(Flood { total }),
    )
    .unwrap();
    let net::Addr::Tcp(addr) = l.addr else {
        unreachable!()
    };
    let mut client = connect(addr);
    assert!(wait_until(|| {
        el.turn(&mut (), Some(Duration::from_millis(10))).unwrap();
        el.source_count() == 2
    }));
    for _ in 0..5 {
        el.turn(&mut (), Some(Duration::ZERO)).unwrap();
    }
    drop(el);
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut got, mut buf) = (0, vec![0u8; 1 << 16]);
    loop {
        match client.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got += n,
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

/// A loop dropped with output still queued for a peer resets the
/// connection: the peer must not take the cut stream for a complete one.
/// With nothing queued, the peer gets all of it and a clean end.
#[test]
fn dropping_the_loop_with_output_queued_resets_the_connection() {
    let (_, end) = drop_the_loop_after(64 << 20);
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(drop_the_loop_after(1000), (1000, None));
}
