//! Backpressure: a peer that never reads cannot grow the server past its
//! caps while others are served, and a peer that stops reading then resumes
//! loses nothing.

mod common_net;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common_net::{connect, random_bytes, round_trip, wait_until, Server};
use evloop::net::{self, CloseReason, Conn, ConnConfig, Handler, ListenConfig};
use evloop::{Ctx, SourceId};

/// What the server saw of one connection that asked for big replies.
#[derive(Debug, Default, Clone)]
struct Hog {
    answered: usize,
    max_queued: usize,
    refused: usize,
    closed: Option<CloseReason>,
}

type Hogs = Arc<Mutex<HashMap<SourceId, Hog>>>;

/// Echoes, except that each `B` is answered with 1 MiB.
struct BigReplies {
    hogs: Hogs,
}

const BIG: usize = 1 << 20;

impl Handler<()> for BigReplies {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        let mut rest = data;
        while let Some(&first) = rest.first() {
            if first != b'B' {
                let n = rest.iter().position(|&c| c == b'B').unwrap_or(rest.len());
                conn.write(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            rest = &rest[1..];
            let accepted = conn.write(&[b'x'; BIG]);
            let mut hogs = self.hogs.lock().unwrap();
            let hog = hogs.entry(conn.id()).or_default();
            hog.answered += 1;
            hog.max_queued = hog.max_queued.max(conn.queued());
            if !accepted {
                hog.refused += 1;
                break; // the connection is closing
            }
        }
        data.len()
    }
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        if let Some(hog) = self.hogs.lock().unwrap().get_mut(&conn.id()) {
            hog.max_queued = hog.max_queued.max(conn.queued());
            hog.closed = Some(reason);
        }
    }
}

#[test]
fn peer_that_never_reads_stays_bounded_while_others_are_served() {
    let hogs: Hogs = Arc::default();
    let cfg = ListenConfig::default();
    let cap = cfg.conn.max_queued;
    let high_water = cfg.conn.high_water;
    let seen = hogs.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(BigReplies { hogs: seen.clone() })
        })?;
        Ok(l.addr)
    });
    let addr = server.tcp();

    // Hog 1 asks for 1 MiB at a time, each request after the previous one
    // was answered, until the server is throttled (queue past high water):
    // from then on it reads no more of hog 1's requests.
    let queued_of = |id: SourceId| server.call(move |ctx, _| ctx.source_mut::<Conn>(id).map(|c| c.queued()));
    let answered = |id: Option<SourceId>| {
        let hogs = hogs.lock().unwrap();
        match id {
            Some(id) => hogs.get(&id).map_or(0, |h| h.answered),
            None => hogs.values().map(|h| h.answered).sum(),
        }
    };
    let mut hog1 = connect(addr);
    let mut hog1_id = None;
    let mut throttled_at = None;
    for sent in 1..=64 {
        hog1.write_all(b"B").unwrap();
        assert!(
            wait_until(|| answered(hog1_id) == sent),
            "request {sent} was not answered"
        );
        let id = *hog1_id.get_or_insert_with(|| *hogs.lock().unwrap().keys().next().unwrap());
        let queued = queued_of(id).expect("hog 1 closed");
        if queued > high_water {
            throttled_at = Some(sent);
            break;
        }
    }
    let (hog1_id, throttled_at) = (hog1_id.unwrap(), throttled_at.expect("never throttled"));
    // More requests: they stay in the kernel's buffers, unread.
    hog1.write_all(&[b'B'; 100]).unwrap();

    // Hog 2 asks for 200 MiB in one write: its replies overflow the cap.
    let mut hog2 = connect(addr);
    hog2.write_all(&[b'B'; 200]).unwrap();
    assert!(
        wait_until(|| hogs.lock().unwrap().len() == 2),
        "the server did not start answering hog 2"
    );

    // Meanwhile, ordinary clients are served as usual.
    let workers: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for trip in 0..100 {
                    let msg = random_bytes(1 + (i * 7 + trip) % 500, (i * 1000 + trip) as u64);
                    let msg: Vec<u8> = msg
                        .into_iter()
                        .map(|b| if b == b'B' { b'b' } else { b })
                        .collect();
                    assert_eq!(round_trip(&mut s, &msg).unwrap(), msg, "client {i} trip {trip}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("ordinary client");
    }

    // Hog 1 is still open, still throttled, and its queue still bounded.
    let queued = queued_of(hog1_id).expect("hog 1 was closed");
    assert!(queued > high_water && queued <= cap, "hog 1 has {queued} queued");
    assert_eq!(
        answered(Some(hog1_id)),
        throttled_at,
        "the server read from a throttled peer"
    );

    let hogs = hogs.lock().unwrap().clone();
    println!(
        "cap {cap}, high water {high_water}; hog 1 throttled after {throttled_at} requests; hogs: {hogs:?}"
    );
    for (id, hog) in &hogs {
        assert!(
            hog.max_queued <= cap,
            "{id}: {} bytes queued, over the cap of {cap}",
            hog.max_queued
        );
        match hog.closed {
            None => assert_eq!(hog.refused, 0, "{id}: a refused write must close the connection"),
            Some(reason) => {
                assert_eq!(reason, CloseReason::Overflow, "{id}");
                assert!(hog.refused > 0);
            }
        }
    }
    drop((hog1, hog2));
}

/// Echo that records the largest queue it ever had.
struct WatchQueue(Arc<AtomicUsize>);

impl Handler<()> for WatchQueue {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        assert!(conn.write(data), "echo refused");
        self.0.fetch_max(conn.queued(), Ordering::SeqCst);
        data.len()
    }
}

#[test]
fn reader_that_pauses_then_resumes_gets_everything() {
    const SIZE: usize = 8 << 20;
    let max_queued = Arc::new(AtomicUsize::new(0));
    let conn_cfg = ConnConfig::default();
    let high_water = conn_cfg.high_water;
    let cfg = ListenConfig {
        conn: conn_cfg,
        ..ListenConfig::default()
    };
    let watch = max_queued.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(WatchQueue(watch.clone()))
        })?;
        Ok(l.addr)
    });

    let data = random_bytes(SIZE, 42);
    let mut reader = connect(server.tcp());
    let mut writer = reader.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || writer.write_all(&sent).unwrap());

    // Do not read until the server has queued past its high-water mark
    // (so it has stopped reading from us) ...
    assert!(
        wait_until(|| max_queued.load(Ordering::SeqCst) > high_water),
        "the server never queued past high water (max {})",
        max_queued.load(Ordering::SeqCst)
    );
    // ... then read it all back, in bursts.
    let mut got = vec![0u8; SIZE];
    let mut at = 0;
    while at < SIZE {
        let end = (at + (512 << 10)).min(SIZE);
        reader.read_exact(&mut got[at..end]).unwrap();
        at = end;
    }
    w.join().expect("writer");
    assert!(got == data, "data lost or reordered across throttling");
    assert!(max_queued.load(Ordering::SeqCst) <= ConnConfig::default().max_queued);
}

/// Echo that stops reading after a `P`, and remembers its id.
struct Pauser(Arc<Mutex<Option<SourceId>>>);

impl Handler<()> for Pauser {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        *self.0.lock().unwrap() = Some(conn.id());
        conn.write(data);
        if data.contains(&b'P') {
            conn.pause_reading();
        }
        data.len()
    }
}

fn pauser_server(id: Arc<Mutex<Option<SourceId>>>, cfg: ListenConfig) -> Server<()> {
    Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(Pauser(id.clone()))
        })?;
        Ok(l.addr)
    })
}

/// A handler pauses reading; bytes that arrive meanwhile are delivered once
/// reading is resumed from elsewhere in the loop.
#[test]
fn handler_pause_then_resume_from_elsewhere() {
    let id = Arc::new(Mutex::new(None));
    let server = pauser_server(id.clone(), ListenConfig::default());
    let mut c = connect(server.tcp());
    assert_eq!(round_trip(&mut c, b"abcP").unwrap(), b"abcP");
    let id = id.lock().unwrap().expect("connection id");
    // Sent while paused: it waits in the kernel.
    let later: Vec<u8> = random_bytes(100_000, 3)
        .into_iter()
        .map(|b| if b == b'P' { b'p' } else { b })
        .collect();
    c.write_all(&later).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut one = [0u8; 1];
    assert!(c.read(&mut one).is_err(), "served while paused");
    c.set_read_timeout(Some(common_net::WAIT)).unwrap();
    assert!(server.call(move |ctx, _| net::resume_reading(ctx, id)));
    let mut back = vec![0u8; later.len()];
    c.read_exact(&mut back).unwrap();
    assert!(back == later, "bytes sent while paused were lost or changed");
}

/// A connection whose handler paused reading (and so has nothing to poll
/// for) can still be written to and closed from elsewhere: more output than
/// the kernel takes at once arrives whole, then the close.
#[test]
fn paused_connection_written_and_closed_from_elsewhere() {
    let id = Arc::new(Mutex::new(None));
    // Room to queue more than the kernel's socket buffers hold.
    let mut cfg = ListenConfig::default();
    cfg.conn.max_queued = 64 << 20;
    let server = pauser_server(id.clone(), cfg);
    let mut c = connect(server.tcp());
    assert_eq!(round_trip(&mut c, b"P").unwrap(), b"P");
    let id = id.lock().unwrap().expect("connection id");
    let big = random_bytes(16 << 20, 8);
    let sent = big.clone();
    let (wrote, queued, closed) = server.call(move |ctx, _| {
        let wrote = net::write(ctx, id, &sent);
        let queued = ctx.source_mut::<Conn>(id).map_or(0, |c| c.queued());
        (wrote, queued, net::close(ctx, id))
    });
    assert!(wrote && closed);
    assert!(queued > 0, "the scenario needs output left queued");
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert!(
        back == big,
        "got {} of {} bytes, or different ones",
        back.len(),
        big.len()
    );
}

/// Answers `b` with 32 MiB (more than loopback's socket buffers take at
/// once), anything else with an echo; counts `on_drained`.
struct Drains(Arc<AtomicUsize>);

impl Handler<()> for Drains {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        if data == b"b" {
            conn.write(&vec![7u8; 32 << 20]);
        } else {
            conn.write(data);
        }
        data.len()
    }
    fn on_drained(&mut self, _: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `on_drained` reports the end of a backlog the kernel refused, not every
/// reply that left in one write.
#[test]
fn on_drained_only_after_a_backlog() {
    let drained = Arc::new(AtomicUsize::new(0));
    let count = drained.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            conn: ConnConfig {
                max_queued: 64 << 20,
                ..ConnConfig::default()
            },
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(Drains(count.clone()))
        })?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    for i in 0..100u8 {
        assert_eq!(round_trip(&mut c, &[b'a', i]).unwrap(), [b'a', i]);
    }
    assert_eq!(drained.load(Ordering::SeqCst), 0, "small replies never backed up");
    c.write_all(b"b").unwrap();
    let mut big = vec![0u8; 32 << 20];
    c.read_exact(&mut big).unwrap();
    assert!(big.iter().all(|&b| b == 7));
    assert!(
        wait_until(|| drained.load(Ordering::SeqCst) == 1),
        "one backlog, one on_drained"
    );
}

/// Writes 100 bytes at a time, 20 times, from one `on_data`, and records
/// what each `write` answered and why the connection closed.
struct Chatty(Arc<Mutex<(Vec<bool>, Option<CloseReason>)>>);

impl Handler<()> for Chatty {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        let mut seen = self.0.lock().unwrap();
        for _ in 0..20 {
            seen.0.push(conn.write(&[b'x'; 100]));
        }
        data.len()
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().1 = Some(reason);
    }
}

/// Small writes corked inside the handler count against `max_queued` one by
/// one: the write that reaches the cap exactly is taken, the next one is
/// refused and closes the connection, and none of the refused bytes is sent.
#[test]
fn corked_small_writes_stop_at_the_cap() {
    let seen = Arc::new(Mutex::new((Vec::new(), None)));
    let record = seen.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            conn: ConnConfig {
                max_queued: 1000,
                high_water: 800,
                low_water: 200,
                ..ConnConfig::default()
            },
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(Chatty(record.clone()))
        })?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    socket2::SockRef::from(&c).set_recv_buffer_size(32 << 10).unwrap();
    c.write_all(b"go").unwrap();
    assert!(
        wait_until(|| seen.lock().unwrap().1.is_some()),
        "the connection closed"
    );
    let (answers, reason) = seen.lock().unwrap().clone();
    assert_eq!(answers[..10], [true; 10], "up to the cap: {answers:?}");
    assert!(answers[10..].iter().all(|&a| !a), "past it: {answers:?}");
    assert_eq!(reason, Some(CloseReason::Overflow));
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "an overflowing connection is dropped, not flushed ({} bytes)",
        got.len()
    );
}

/// Answers every message with 300 bytes over a small send buffer, and notes
/// (queued, buffered capacity) as each `on_data` begins.
struct SlowPeer(Arc<Mutex<Vec<(usize, usize)>>>);

impl Handler<()> for SlowPeer {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        socket2::SockRef::from(conn.stream())
            .set_send_buffer_size(4096)
            .unwrap();
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        self.0
            .lock()
            .unwrap()
            .push((conn.queued(), conn.buffered_capacity()));
        conn.write(&[b'y'; 300]);
        data.len()
    }
}

/// A connection the kernel leaves with a small backlog keeps a buffer about
/// the size of that backlog, not the loop's shared spare: a server with many
/// slow peers must not pin a spare buffer for each.
#[test]
fn a_small_backlog_does_not_keep_the_shared_buffer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |_, _, _, _| Some(SlowPeer(record.clone())),
        )?;
        Ok(l.addr)
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.tcp().into()).unwrap();
    let mut c: std::net::TcpStream = sock.into();
    c.set_nodelay(true).unwrap();
    // The client never reads: after a few dozen replies the kernel refuses
    // part of one, and every later `on_data` sees a backlog.
    for _ in 0..400 {
        c.write_all(b"x").unwrap();
        thread::sleep(std::time::Duration::from_millis(1));
        if seen.lock().unwrap().iter().filter(|&&(q, _)| q > 0).count() >= 3 {
            break;
        }
    }
    assert!(
        wait_until(|| seen.lock().unwrap().iter().any(|&(q, _)| q > 0)),
        "no backlog formed"
    );
    let seen = seen.lock().unwrap().clone();
    let small: Vec<_> = seen.iter().filter(|&&(q, _)| q > 0 && q <= 1024).collect();
    assert!(!small.is_empty(), "no small backlog was seen: {seen:?}");
    // The shared spare is 4 KiB; a buffer of the backlog's own grows by
    // doubling from the first few hundred bytes.
    for &&(queued, capacity) in &small {
        assert!(
            capacity < 4096,
            "{queued} bytes queued in a buffer of {capacity}: {seen:?}"
        );
    }
}

/// Answers the first message with 64 KiB writes until one is refused.
#[derive(Clone)]
struct Flood;

impl Handler<()> for Flood {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        while conn.write(&[b'y'; 64 * 1024]) {}
        data.len()
    }
}

/// What a client that says "go" to a server answering with `handler`
/// (1 MiB `max_queued`) reads, and how its read ends.
fn overflowed_reply<H: Handler<()> + Clone + Send + 'static>(
    handler: H,
) -> (Vec<u8>, std::io::Result<usize>) {
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            conn: ConnConfig {
                max_queued: 1 << 20,
                ..ConnConfig::default()
            },
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(handler.clone())
        })?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    socket2::SockRef::from(&c).set_recv_buffer_size(32 << 10).unwrap();
    c.write_all(b"go").unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let end = c.read_to_end(&mut got);
    (got, end)
}

/// A connection closed because its queue overflowed ends with a reset, not
/// a FIN: the peer that reads late must not take the cut stream for a
/// complete one.
#[test]
fn an_overflow_resets_the_peer_instead_of_ending_cleanly() {
    let (_, end) = overflowed_reply(Flood);
    let err = end.expect_err("a clean end after a cut stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// Answers the first message with one write larger than `max_queued`.
#[derive(Clone)]
struct OneHugeWrite;

impl Handler<()> for OneHugeWrite {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        // Fixed kernel buffers on both sides (see `overflowed_reply`): left
        // to autotuning they can grow to take all 8 MiB in the one write,
        // and then nothing overflows.
        socket2::SockRef::from(conn.stream())
            .set_send_buffer_size(64 << 10)
            .unwrap();
        conn.write(&vec![b'z'; 8 << 20]);
        data.len()
    }
}

/// The same when the write that overflowed found the queue empty: what the
/// kernel took arrives, then a reset, not a clean end.
#[test]
fn one_write_over_the_cap_resets_the_peer_too() {
    let (got, end) = overflowed_reply(OneHugeWrite);
    let err = end.expect_err("a clean end after a cut stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(got.len() < 8 << 20);
}
