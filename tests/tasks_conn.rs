//! An `AsyncConn` as a new user drives it: a task writing in a loop is
//! held to the connection's backpressure (nothing lost, nothing
//! overflowing), `read_line` counts what it appends and keeps to the
//! connection's `max_input`, and tasks sharing a listener are each handed
//! connections.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::{turn_until, turns, Watchdog};
use evloop::net::{Addr, CloseReason, Conn, ConnConfig, ListenConfig};
use evloop::task::{self, AsyncConn, AsyncListener};
use evloop::EventLoop;

fn listener(el: &mut EventLoop<()>, conn: ConnConfig) -> (AsyncListener, std::net::SocketAddr) {
    let cfg = ListenConfig {
        conn,
        ..Default::default()
    };
    let listener = task::listen(el, &"127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    (listener, addr)
}

/// One connection accepted for a task, and its client.
fn one_conn(el: &mut EventLoop<()>, cfg: ConnConfig) -> (AsyncConn, TcpStream) {
    let (listener, addr) = listener(el, cfg);
    let got: Rc<RefCell<Option<AsyncConn>>> = Rc::default();
    let into = got.clone();
    el.spawn(async move {
        *into.borrow_mut() = listener.accept().await.ok();
    })
    .unwrap();
    let client = TcpStream::connect(addr).unwrap();
    turn_until(el, &mut (), |_| got.borrow().is_some());
    let conn = got.borrow_mut().take().unwrap();
    (conn, client)
}

/// The `i`th line a writer sends: its number, padded to 16 bytes.
fn numbered(i: usize) -> String {
    format!("{i:015}\n")
}

#[test]
fn a_task_writing_in_a_loop_waits_for_a_slow_reader_and_loses_nothing() {
    let _dog = Watchdog::new(
        60,
        "a_task_writing_in_a_loop_waits_for_a_slow_reader_and_loses_nothing",
    );
    const LINES: usize = 600_000; // 9.6 MB: over twice the default max_queued
    let mut el = EventLoop::<()>::new().unwrap();
    let cfg = ConnConfig::default();
    let max_queued = cfg.max_queued;
    let (mut conn, mut client) = one_conn(&mut el, cfg);
    let id = conn.id();
    let written = Rc::new(Cell::new(0));
    let result: Rc<RefCell<Option<std::io::Result<()>>>> = Rc::default();
    let (w, r) = (written.clone(), result.clone());
    el.spawn(async move {
        let outcome = async {
            for i in 0..LINES {
                conn.write_all(numbered(i).as_bytes()).await?;
                w.set(i + 1);
            }
            conn.shutdown().await
        }
        .await;
        *r.borrow_mut() = Some(outcome);
    })
    .unwrap();

    // The client does not read yet: the task must be held back, and the
    // connection neither overflow nor close.
    let mut max_seen = 0;
    for _ in 0..50 {
        turns(&mut el, &mut (), 1);
        let queued = el.source_mut::<Conn>(id).expect("still open").queued();
        max_seen = max_seen.max(queued);
    }
    assert!(
        result.borrow().is_none(),
        "the writer finished with nobody reading"
    );
    assert!(written.get() < LINES);
    assert!(max_seen <= max_queued, "{max_seen} queued, over {max_queued}");

    // Now read everything: every line, in order, then the end.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        tx.send(()).unwrap();
        all
    });
    turn_until(&mut el, &mut (), |_| rx.try_recv().is_ok());
    let all = reader.join().unwrap();
    assert!(matches!(*result.borrow(), Some(Ok(()))), "{:?}", result.borrow());
    assert_eq!(all.len(), LINES * 16);
    for (i, line) in all.chunks(16).enumerate() {
        assert_eq!(line, numbered(i).as_bytes(), "line {i}");
    }
}

#[test]
fn read_line_counts_only_what_it_appends() {
    let _dog = Watchdog::new(30, "read_line_counts_only_what_it_appends");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, mut client) = one_conn(&mut el, ConnConfig::default());
    type Lines = Rc<RefCell<Vec<(usize, Vec<u8>)>>>;
    let got: Lines = Rc::default();
    let g = got.clone();
    el.spawn(async move {
        // A line arriving in two pieces, after a prefix the caller keeps.
        let mut line = b"prefix:".to_vec();
        let n = conn.read_line(&mut line).await.unwrap();
        g.borrow_mut().push((n, line));
        // The input ends inside a line.
        let mut line = b"p:".to_vec();
        let n = conn.read_line(&mut line).await.unwrap();
        g.borrow_mut().push((n, line));
        let mut line = b"q:".to_vec();
        let n = conn.read_line(&mut line).await.unwrap();
        g.borrow_mut().push((n, line));
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    client.write_all(b"abc").unwrap();
    turns(&mut el, &mut (), 3);
    client.write_all(b"def\nxyz").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    turn_until(&mut el, &mut (), |_| got.borrow().len() == 3);
    assert_eq!(
        *got.borrow(),
        [
            (7, b"prefix:abcdef\n".to_vec()),
            (3, b"p:xyz".to_vec()),
            (0, b"q:".to_vec())
        ]
    );
}

#[test]
fn read_line_keeps_to_the_connections_max_input() {
    let _dog = Watchdog::new(30, "read_line_keeps_to_the_connections_max_input");
    let mut el = EventLoop::<()>::new().unwrap();
    let cfg = ConnConfig {
        max_input: 1000,
        ..Default::default()
    };
    let (mut conn, mut client) = one_conn(&mut el, cfg);
    type Lines = Vec<Result<Vec<u8>, std::io::ErrorKind>>;
    let got: Rc<RefCell<Lines>> = Rc::default();
    let g = got.clone();
    el.spawn(async move {
        loop {
            let mut line = Vec::new();
            match conn.read_line(&mut line).await {
                Ok(0) => break,
                Ok(_) => g.borrow_mut().push(Ok(line)),
                Err(e) => g.borrow_mut().push(Err(e.kind())),
            }
        }
    })
    .unwrap();
    let line = |c: u8, n: usize| {
        let mut l = vec![c; n - 1];
        l.push(b'\n');
        l
    };
    // 1,000 bytes with the newline: allowed. 1,001 (the newline the byte
    // past the cap), 5,000, and 3,000 sent a byte at a time: refused, and
    // the line after each is read whole, as the line it is.
    client.write_all(&line(b'a', 1000)).unwrap();
    client.write_all(&line(b'b', 1001)).unwrap();
    client.write_all(b"one\n").unwrap();
    client.write_all(&line(b'c', 5000)).unwrap();
    client.write_all(b"two\n").unwrap();
    turn_until(&mut el, &mut (), |_| got.borrow().len() == 5);
    for &b in &line(b'd', 3000) {
        client.write_all(&[b]).unwrap();
        turns(&mut el, &mut (), 1);
    }
    client.write_all(b"three\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    turn_until(&mut el, &mut (), |_| got.borrow().len() == 7);
    let invalid = Err(std::io::ErrorKind::InvalidData);
    let want = [
        Ok(line(b'a', 1000)),
        invalid.clone(),
        Ok(b"one\n".to_vec()),
        invalid.clone(),
        Ok(b"two\n".to_vec()),
        invalid,
        Ok(b"three\n".to_vec()),
    ];
    assert_eq!(*got.borrow(), want);
}

#[test]
fn tasks_sharing_a_listener_are_each_handed_connections() {
    let _dog = Watchdog::new(30, "tasks_sharing_a_listener_are_each_handed_connections");
    let mut el = EventLoop::<()>::new().unwrap();
    let (listener, addr) = listener(&mut el, ConnConfig::default());
    let listener = Rc::new(listener);
    let served: Rc<RefCell<Vec<usize>>> = Rc::default();
    let held: Rc<RefCell<Vec<AsyncConn>>> = Rc::default();
    for worker in 0..2 {
        let (l, s, h) = (listener.clone(), served.clone(), held.clone());
        el.spawn(async move {
            // Each worker takes one connection and keeps it.
            if let Ok(conn) = l.accept().await {
                s.borrow_mut().push(worker);
                h.borrow_mut().push(conn);
            }
        })
        .unwrap();
    }
    turns(&mut el, &mut (), 2); // both wait in accept
    let _first = TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| served.borrow().len() == 1);
    let _second = TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| served.borrow().len() == 2);
    let mut workers = served.borrow().clone();
    workers.sort_unstable();
    assert_eq!(workers, [0, 1]);
}

#[test]
fn read_line_with_no_line_cap_gathers_a_line_in_pieces() {
    let _dog = Watchdog::new(30, "read_line_with_no_line_cap_gathers_a_line_in_pieces");
    let mut el = EventLoop::<()>::new().unwrap();
    let cfg = ConnConfig {
        max_input: usize::MAX,
        ..Default::default()
    };
    let (mut conn, mut client) = one_conn(&mut el, cfg);
    let got: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let g = got.clone();
    el.spawn(async move {
        let mut line = Vec::new();
        conn.read_line(&mut line).await.unwrap();
        *g.borrow_mut() = Some(line);
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    client.write_all(b"abc").unwrap();
    turns(&mut el, &mut (), 3);
    client.write_all(b"def\n").unwrap();
    turn_until(&mut el, &mut (), |_| got.borrow().is_some());
    assert_eq!(got.borrow().as_deref(), Some(&b"abcdef\n"[..]));
}

/// A task writes 1 MiB in one `write_all` to a reader that reads it all,
/// on a connection with `cfg`: how many turns it took.
fn turns_to_write_one_mib(cfg: ConnConfig) -> usize {
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, mut client) = one_conn(&mut el, cfg);
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    el.spawn(async move {
        conn.write_all(&vec![b'w'; 1 << 20]).await.unwrap();
        d.set(true);
    })
    .unwrap();
    let reader = std::thread::spawn(move || {
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        client.read_exact(&mut buf).unwrap();
        buf
    });
    let turns_taken = turn_until(&mut el, &mut (), |_| done.get());
    assert!(reader.join().unwrap().iter().all(|&b| b == b'w'));
    turns_taken
}

#[test]
fn a_low_high_water_mark_still_writes_in_large_pieces() {
    let _dog = Watchdog::new(60, "a_low_high_water_mark_still_writes_in_large_pieces");
    let cfg = ConnConfig {
        high_water: 0,
        low_water: 0,
        ..Default::default()
    };
    let turns_taken = turns_to_write_one_mib(cfg);
    assert!(turns_taken < 200, "1 MiB took {turns_taken} turns");
}

/// A low water of 0 (given, or made so by a high water of 0) means "once
/// the queue is empty": `on_room` comes then, so an echo task goes on
/// after a reply that was queued, and a large write to a reader that
/// starts late finishes.
#[test]
fn a_low_water_of_zero_still_gives_room_once_the_queue_is_empty() {
    let _dog = Watchdog::new(60, "a_low_water_of_zero_still_gives_room_once_the_queue_is_empty");
    let only_high = ConnConfig {
        high_water: 0,
        ..Default::default()
    };
    let both = ConnConfig {
        high_water: 0,
        low_water: 0,
        ..Default::default()
    };
    for cfg in [only_high, both] {
        let mut el = EventLoop::<()>::new().unwrap();
        let (mut conn, mut client) = one_conn(&mut el, cfg.clone());
        let echoed = Rc::new(Cell::new(0));
        let (e, done) = (echoed.clone(), Rc::new(Cell::new(false)));
        let d = done.clone();
        el.spawn(async move {
            let mut line = Vec::new();
            for _ in 0..3 {
                line.clear();
                conn.read_line(&mut line).await.unwrap();
                conn.write_all(&line).await.unwrap();
                e.set(e.get() + 1);
            }
            conn.write_all(&vec![b'w'; 8 << 20]).await.unwrap();
            d.set(true);
        })
        .unwrap();
        for i in 0..3 {
            client.write_all(b"hello\n").unwrap();
            turn_until(&mut el, &mut (), |_| echoed.get() == i + 1);
        }
        // The reader starts once the task's write has filled the kernel's
        // buffers and waits for room.
        turns(&mut el, &mut (), 20);
        assert!(!done.get(), "{cfg:?}: 8 MiB cannot have gone yet");
        let reader = std::thread::spawn(move || {
            client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = vec![0u8; 18 + (8 << 20)];
            client.read_exact(&mut buf).unwrap();
            buf
        });
        turn_until(&mut el, &mut (), |_| done.get());
        let got = reader.join().unwrap();
        assert_eq!(&got[..18], b"hello\nhello\nhello\n", "{cfg:?}");
        assert!(got[18..].iter().all(|&b| b == b'w'), "{cfg:?}");
    }
}

/// How much a task may stage is measured from the queue as it is, not
/// from the gap between the water marks: with high water one byte under
/// `max_queued`, or only `max_queued` lowered, a 1 MiB write still
/// leaves in large pieces, not one byte a turn.
#[test]
fn water_marks_close_to_the_cap_still_write_in_large_pieces() {
    let _dog = Watchdog::new(60, "water_marks_close_to_the_cap_still_write_in_large_pieces");
    let near_cap = ConnConfig {
        high_water: 4 * 1024 * 1024 - 1,
        max_queued: 4 * 1024 * 1024,
        ..Default::default()
    };
    let small_cap = ConnConfig {
        max_queued: 128 * 1024,
        high_water: 64 * 1024,
        low_water: 16 * 1024,
        ..Default::default()
    };
    // Only the cap lowered: high water (256 KiB by default) is taken as
    // half of it.
    let cap_only = ConnConfig {
        max_queued: 128 * 1024,
        ..Default::default()
    };
    for cfg in [near_cap, small_cap, cap_only] {
        let turns_taken = turns_to_write_one_mib(cfg.clone());
        assert!(turns_taken < 2000, "{cfg:?}: 1 MiB took {turns_taken} turns");
    }
}

/// Read `conn` to its end in a task: what the read returned, and the
/// close reason the connection gave.
fn read_to_end(
    el: &mut EventLoop<()>,
    mut conn: AsyncConn,
    step: impl Fn(&mut EventLoop<()>),
) -> (std::io::Result<usize>, Option<evloop::net::CloseReason>) {
    let out = Rc::new(RefCell::new(None));
    let into = out.clone();
    el.spawn(async move {
        let mut buf = [0u8; 64];
        let r = loop {
            match conn.read(&mut buf).await {
                Ok(0) => break Ok(0),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        *into.borrow_mut() = Some((r, conn.close_reason()));
    })
    .unwrap();
    for _ in 0..common::MAX_IDLE_TURNS {
        if out.borrow().is_some() {
            break;
        }
        step(el);
        el.turn(&mut (), Some(common::TICK)).unwrap();
    }
    let got = out.borrow_mut().take().expect("the read returned");
    got
}

/// How the connection ended reaches the task: a peer's reset is a
/// `ConnectionReset` error, the idle timeout a `TimedOut` one, and
/// `close_reason` names each; a peer's clean close is the end of input.
#[test]
fn a_task_learns_how_its_connection_ended() {
    use evloop::net::CloseReason;
    let _watchdog = Watchdog::new(30, "a_task_learns_how_its_connection_ended");

    let mut el = EventLoop::<()>::new().unwrap();
    let (conn, client) = one_conn(&mut el, ConnConfig::default());
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let (r, reason) = read_to_end(&mut el, conn, |_| {});
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(reason, Some(CloseReason::Reset));

    let (conn, client) = one_conn(&mut el, ConnConfig::default());
    client.shutdown(Shutdown::Write).unwrap();
    let (r, reason) = read_to_end(&mut el, conn, |_| {});
    assert_eq!(r.unwrap(), 0);
    assert_eq!(reason, None, "a half-close leaves the connection open");

    let (mut el, clock) = common::manual_loop::<()>();
    let cfg = ConnConfig {
        idle_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let (conn, _client) = one_conn(&mut el, cfg);
    let (r, reason) = read_to_end(&mut el, conn, |_| clock.advance(Duration::from_secs(10)));
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(reason, Some(CloseReason::Idle));
}

/// Byte `k` of the stream `replies_keep_their_order` sends.
fn pattern(k: usize) -> u8 {
    (k % 251) as u8
}

#[test]
fn replies_mixing_large_and_small_writes_keep_their_order() {
    // A large write in the connection's own dispatch may go straight to the
    // socket from the task's buffer; small ones are gathered for one write
    // afterwards. Whatever mix a reply is, and whether the client waits for
    // each reply or pipelines, the bytes arrive in the order written, none
    // lost (the stream is a known sequence, so any reorder shows), and a
    // reply larger than the socket takes at once queues its rest behind.
    let _dog = Watchdog::new(60, "replies_mixing_large_and_small_writes_keep_their_order");
    let requests: Vec<Vec<usize>> = vec![
        vec![20_000],
        vec![20_000, 5],
        vec![5, 20_000],
        vec![20_000, 20_000, 7],
        vec![9_000, 100, 9_000],
        vec![8_192],
        vec![16_000_000, 10], // more than the socket takes at once
        vec![1, 2, 3],
        vec![70_000, 70_000],
    ];
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, client) = one_conn(&mut el, ConnConfig::default());
    let done = Rc::new(Cell::new(false));
    let finished = done.clone();
    el.spawn(async move {
        let (mut line, mut sent) = (Vec::new(), 0usize);
        let mut buf = Vec::new();
        while conn.read_line(&mut line).await.unwrap() > 0 {
            for size in std::str::from_utf8(&line).unwrap().trim().split(',') {
                let n: usize = size.parse().unwrap();
                buf.clear();
                buf.extend((sent..sent + n).map(pattern));
                conn.write_all(&buf).await.unwrap();
                sent += n;
            }
            line.clear();
        }
        conn.shutdown().await.unwrap();
        finished.set(true);
    })
    .unwrap();

    let total: usize = requests.iter().flatten().sum::<usize>() * 2;
    let reader = std::thread::spawn(move || {
        let mut client = client;
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let text = |r: &Vec<usize>| {
            let parts: Vec<String> = r.iter().map(usize::to_string).collect();
            format!("{}\n", parts.join(","))
        };
        let mut got = Vec::new();
        // One request at a time, reading each reply before the next...
        for r in &requests {
            client.write_all(text(r).as_bytes()).unwrap();
            let want = got.len() + r.iter().sum::<usize>();
            let mut chunk = vec![0; 64 * 1024];
            while got.len() < want {
                let n = client.read(&mut chunk).unwrap();
                assert!(n > 0, "the server ended early");
                got.extend_from_slice(&chunk[..n]);
            }
        }
        // ...then all of them at once.
        let all: String = requests.iter().map(text).collect();
        client.write_all(all.as_bytes()).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        client.read_to_end(&mut got).unwrap();
        got
    });
    turn_until(&mut el, &mut (), |_| done.get() && reader.is_finished());
    let got = reader.join().unwrap();
    assert_eq!(got.len(), total);
    if let Some(k) = (0..total).find(|&k| got[k] != pattern(k)) {
        panic!("byte {k} of {total} is out of place");
    }
}

/// With writes timed, a large reply a task makes when the peer's EOF
/// arrives (polled in the connection's place, so sent straight to the
/// socket) counts as activity, as a small one does: 3 s after it, 11 s
/// after the last bytes read, a 10 s idle timeout has not closed the
/// connection.
fn task_reason_after_a_reply_at_eof(size: usize) -> Option<CloseReason> {
    let (mut el, clock) = common::manual_loop::<()>();
    let cfg = ConnConfig {
        idle_timeout: Some(Duration::from_secs(10)),
        linger: None,
        ..Default::default()
    };
    let (mut conn, mut client) = one_conn(&mut el, cfg);
    let kept: Rc<RefCell<Option<AsyncConn>>> = Rc::default();
    let k = kept.clone();
    el.spawn(async move {
        let mut buf = [0u8; 64];
        while conn.read(&mut buf).await.unwrap() > 0 {}
        conn.write_all(&vec![b'r'; size]).await.unwrap();
        *k.borrow_mut() = Some(conn);
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    clock.advance(Duration::from_secs(8));
    client.shutdown(Shutdown::Write).unwrap();
    turn_until(&mut el, &mut (), |_| kept.borrow().is_some());
    let mut reply = vec![0u8; size];
    client.read_exact(&mut reply).unwrap();
    clock.advance(Duration::from_secs(3));
    turns(&mut el, &mut (), 3);
    let reason = kept.borrow().as_ref().unwrap().close_reason();
    reason
}

#[test]
fn a_tasks_reply_at_eof_counts_as_activity_small_or_large() {
    let _dog = Watchdog::new(30, "a_tasks_reply_at_eof_counts_as_activity_small_or_large");
    assert_eq!(task_reason_after_a_reply_at_eof(100), None);
    assert_eq!(task_reason_after_a_reply_at_eof(16 * 1024), None);
}

#[test]
fn pipelined_mixed_replies_to_a_late_reader_keep_their_order() {
    // A client that sends every request before reading a byte: the direct
    // sends meet a full socket (partial sends, EAGAIN) mid-poll, and what
    // is left queues behind them.
    let _dog = Watchdog::new(60, "pipelined_mixed_replies_to_a_late_reader_keep_their_order");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, client) = one_conn(&mut el, ConnConfig::default());
    let done = Rc::new(Cell::new(false));
    let finished = done.clone();
    const SHAPES: [&[usize]; 6] = [
        &[40_000, 3],
        &[3, 40_000],
        &[9_000, 9_000, 9_000],
        &[100_000],
        &[8_192, 1, 8_192],
        &[70_000, 10, 70_000, 10],
    ];
    el.spawn(async move {
        let (mut line, mut sent, mut buf) = (Vec::new(), 0usize, Vec::new());
        let mut i = 0;
        while conn.read_line(&mut line).await.unwrap() > 0 {
            for &n in SHAPES[i % SHAPES.len()] {
                buf.clear();
                buf.extend((sent..sent + n).map(pattern));
                conn.write_all(&buf).await.unwrap();
                sent += n;
            }
            i += 1;
            line.clear();
        }
        conn.shutdown().await.unwrap();
        finished.set(true);
    })
    .unwrap();
    const REQUESTS: usize = 120;
    let total: usize = (0..REQUESTS)
        .map(|i| SHAPES[i % SHAPES.len()].iter().sum::<usize>())
        .sum();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut client = client;
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        client.write_all(&b"x\n".repeat(REQUESTS)).unwrap();
        // Let the server fill the socket before anything is read.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    });
    // Until the server stops making progress with nobody reading.
    turns(&mut el, &mut (), 20);
    tx.send(()).unwrap();
    turn_until(&mut el, &mut (), |_| done.get() && reader.is_finished());
    let got = reader.join().unwrap();
    assert_eq!(got.len(), total);
    if let Some(k) = (0..total).find(|&k| got[k] != pattern(k)) {
        panic!("byte {k} of {total} is out of place");
    }
}

#[test]
fn a_large_reply_to_a_reset_peer_ends_in_a_reset() {
    // The reply goes straight to the socket, which reports the reset once:
    // the task and the connection still learn it was a reset.
    let _dog = Watchdog::new(30, "a_large_reply_to_a_reset_peer_ends_in_a_reset");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, mut client) = one_conn(&mut el, ConnConfig::default());
    type Ending = Option<(std::io::Result<()>, Option<CloseReason>)>;
    let out: Rc<RefCell<Ending>> = Rc::default();
    let o = out.clone();
    el.spawn(async move {
        let mut line = Vec::new();
        let result = async {
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                conn.write_all(&vec![b'z'; 64 * 1024]).await?;
            }
        }
        .await;
        *o.borrow_mut() = Some((result, conn.close_reason()));
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    client.write_all(b"a\n").unwrap();
    // Closing with the reply unread, and linger 0, resets.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    // Until the reply has reached the client's socket.
    client.set_nonblocking(true).unwrap();
    turn_until(&mut el, &mut (), |_| client.peek(&mut [0u8]).is_ok());
    client.set_nonblocking(false).unwrap();
    client.write_all(b"b\n").unwrap();
    drop(client);
    turn_until(&mut el, &mut (), |_| out.borrow().is_some());
    let (result, reason) = out.borrow_mut().take().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(reason, Some(CloseReason::Reset));
}

#[test]
fn a_task_fed_a_long_pipeline_lets_others_run_between_slices() {
    // A client pipelines 2,000 lines at once; a task serving it reads at
    // most 128 of them a poll (a poll a turn), so another connection's task
    // is served long before the pipeline is through, and nothing is lost.
    let _dog = Watchdog::new(60, "a_task_fed_a_long_pipeline_lets_others_run_between_slices");
    const LINES: usize = 2_000;
    let mut el = EventLoop::<()>::new().unwrap();
    let (listener, addr) = listener(&mut el, ConnConfig::default());
    // Lines answered on the first connection accepted, and whether the
    // second one was answered, and when (in lines of the first).
    let answered = Rc::new(Cell::new(0usize));
    let other_at: Rc<Cell<Option<usize>>> = Rc::default();
    let (a, o) = (answered.clone(), other_at.clone());
    el.spawn(async move {
        let mut first = true;
        while let Ok(mut conn) = listener.accept().await {
            let (a, o, pipelined) = (a.clone(), o.clone(), first);
            first = false;
            task::spawn_n(async move {
                let mut line = Vec::new();
                while conn.read_line(&mut line).await.unwrap_or(0) > 0 {
                    conn.write_all(&line).await.unwrap();
                    line.clear();
                    if pipelined {
                        a.set(a.get() + 1);
                    } else {
                        o.set(Some(a.get()));
                    }
                }
            })
            .unwrap();
        }
    })
    .unwrap();
    let mut pipeline = TcpStream::connect(addr).unwrap();
    let mut other = TcpStream::connect(addr).unwrap();
    let all: String = (0..LINES).map(numbered).collect();
    pipeline.write_all(all.as_bytes()).unwrap();
    other.write_all(b"me too\n").unwrap();
    let mut most_in_a_turn = 0;
    while answered.get() < LINES {
        let before = answered.get();
        turns(&mut el, &mut (), 1);
        most_in_a_turn = most_in_a_turn.max(answered.get() - before);
    }
    assert!(most_in_a_turn <= 128, "{most_in_a_turn} lines in one turn");
    let at = other_at.get().expect("the other connection was never answered");
    assert!(at < LINES, "the other connection waited for the whole pipeline");
    let mut echoed = vec![0; all.len()];
    pipeline.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, all.as_bytes());
}

#[test]
fn a_read_inside_another_loops_block_on_is_not_held_to_the_outer_budget() {
    // A task reads 128 buffered lines (its poll's budget), then, in the same
    // poll, reads the next one through a second loop's `block_on`. That
    // `block_on` cannot return before its future does, and the outer poll
    // cannot end before it returns: the outer budget must not apply inside
    // it (it made the read yield for ever).
    let _dog = Watchdog::new(
        60,
        "a_read_inside_another_loops_block_on_is_not_held_to_the_outer_budget",
    );
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, mut client) = one_conn(&mut el, ConnConfig::default());
    let lines: String = (0..200).map(numbered).collect();
    client.write_all(lines.as_bytes()).unwrap();
    turns(&mut el, &mut (), 5);
    let out: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let into = out.clone();
    el.spawn(async move {
        let mut line = Vec::new();
        for i in 0..128 {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            assert_eq!(line, numbered(i).as_bytes());
        }
        let mut inner = EventLoop::<()>::new().unwrap();
        line.clear();
        inner
            .block_on(&mut (), conn.read_line(&mut line))
            .unwrap()
            .unwrap();
        *into.borrow_mut() = Some(line);
    })
    .unwrap();
    turn_until(&mut el, &mut (), |_| out.borrow().is_some());
    assert_eq!(out.borrow().as_deref(), Some(numbered(128).as_bytes()));
}

/// How a client that starts reading late finds the stream's end: how many
/// bytes it got, and the error it ended with (`None`: a clean EOF).
fn read_late(mut client: TcpStream) -> (usize, Option<std::io::ErrorKind>) {
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    loop {
        match client.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got += n,
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

/// Over the connection's queue and the socket's buffers.
const BIG: usize = 16 << 20;

/// A task writing `chunk`s to a client that does not read gives up (a
/// timeout on the manual clock) on the first `write_all` that cannot
/// finish, then `end`s the connection. The connection's id, and the
/// client.
fn give_up_on_a_stuck_reader<F, E>(chunk: usize, end: F) -> (EventLoop<()>, evloop::SourceId, TcpStream)
where
    F: FnOnce(AsyncConn) -> E + 'static,
    E: std::future::Future<Output = ()>,
{
    let (mut el, clock) = common::manual_loop::<()>();
    let (listener, addr) = listener(&mut el, ConnConfig::default());
    let id = Rc::new(Cell::new(None));
    let into = id.clone();
    el.spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        into.set(Some(conn.id()));
        let data = vec![b'x'; chunk];
        let mut sent = 0;
        while sent < BIG {
            match task::timeout(Duration::from_secs(5), conn.write_all(&data)).await {
                Ok(r) => r.unwrap(),
                Err(_) => break,
            }
            sent += chunk;
        }
        assert!(sent < BIG, "the client read nothing: the writes cannot finish");
        end(conn).await;
    })
    .unwrap();
    let client = TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| id.get().is_some());
    // The writes go as far as the queue and the kernel take them.
    turns(&mut el, &mut (), 60);
    clock.advance(Duration::from_secs(5));
    let id = id.get().unwrap();
    common::turn_until_closed(&mut el, &mut (), id);
    (el, id, client)
}

/// A task can drop a peer that has stopped reading: `abort` closes the
/// connection at once (a drop would wait to send what it owes), and the
/// peer gets what the kernel had taken, then the end. (The writes are of
/// 64 KiB: the one given up on waited for room with nothing staged, so the
/// stream was not cut.)
#[test]
fn abort_closes_at_once_a_connection_whose_peer_does_not_read() {
    let _dog = Watchdog::new(60, "abort_closes_at_once_a_connection_whose_peer_does_not_read");
    let (_el, _, client) = give_up_on_a_stuck_reader(64 << 10, |c| async move { c.abort() });
    let (got, end) = read_late(client);
    assert!(got > 0 && got < 16 << 20, "{got}");
    assert_eq!(end, None, "abort ends the stream as Conn::abort does");
}

/// A `write_all` dropped halfway (a timeout) cut the stream mid-message:
/// dropping the connection then resets it, so the peer cannot take the
/// cut stream for a complete one.
#[test]
fn a_connection_dropped_after_a_write_cut_short_is_reset() {
    let _dog = Watchdog::new(60, "a_connection_dropped_after_a_write_cut_short_is_reset");
    let (_el, _, client) = give_up_on_a_stuck_reader(BIG, |c| async move { drop(c) });
    let (got, end) = read_late(client);
    assert!(got < 16 << 20, "{got}");
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
}

/// A `write_all` dropped with part of its data sent resets the connection
/// at once: the task still holds it, but nothing can end the cut stream
/// with a FIN now (not a shutdown, not the idle timeout), and its writes,
/// reads and shutdown say so.
#[test]
fn a_write_cut_short_resets_at_once() {
    let _dog = Watchdog::new(60, "a_write_cut_short_resets_at_once");
    let (_el, _, client) = give_up_on_a_stuck_reader(BIG, |mut c| async move {
        let aborted = std::io::ErrorKind::ConnectionAborted;
        assert_eq!(c.write_all(b"").await.unwrap_err().kind(), aborted);
        assert_eq!(c.shutdown().await.unwrap_err().kind(), aborted);
        assert_eq!(c.read(&mut [0; 8]).await.unwrap_err().kind(), aborted);
        // Held, never dropped: the reset came from the write's drop.
        std::future::pending::<()>().await;
        drop(c);
    });
    let (got, end) = read_late(client);
    assert!(got < BIG, "{got}");
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
}

/// The loop dropped while a task is in a `write_all` to a client reading
/// as fast as it can (so the connection's queue is often empty): the
/// client sees a reset, not a clean end after part of the data.
#[test]
fn dropping_the_loop_in_a_write_all_resets_the_connection() {
    let _dog = Watchdog::new(60, "dropping_the_loop_in_a_write_all_resets_the_connection");
    const HUGE: usize = 256 << 20;
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, client) = one_conn(&mut el, ConnConfig::default());
    let id = conn.id();
    el.spawn(async move {
        conn.write_all(&vec![b'x'; HUGE]).await.unwrap();
    })
    .unwrap();
    let reader = std::thread::spawn(move || read_late(client));
    turns(&mut el, &mut (), 30);
    assert!(el.is_open(id), "still writing");
    drop(el);
    let (got, end) = reader.join().unwrap();
    assert!(got < HUGE, "{got}");
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "{got} bytes, then a clean end"
    );
}

/// A write that finished, then a drop: everything arrives, then a clean
/// end (the reset is only for a write cut short).
#[test]
fn a_connection_dropped_after_its_writes_finished_ends_cleanly() {
    let _dog = Watchdog::new(60, "a_connection_dropped_after_its_writes_finished_ends_cleanly");
    const SIZE: usize = 3 << 20;
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conn, client) = one_conn(&mut el, ConnConfig::default());
    let id = conn.id();
    el.spawn(async move {
        conn.write_all(&vec![b'y'; SIZE]).await.unwrap();
    })
    .unwrap();
    let reader = std::thread::spawn(move || read_late(client));
    common::turn_until_closed(&mut el, &mut (), id);
    assert_eq!(reader.join().unwrap(), (SIZE, None));
}

/// Of a split connection, dropping the write half ends the output (the
/// peer reads to its end) while the read half goes on reading to the
/// peer's end.
#[test]
fn a_split_connections_halves_end_one_at_a_time() {
    let _dog = Watchdog::new(60, "a_split_connections_halves_end_one_at_a_time");
    let mut el = EventLoop::<()>::new().unwrap();
    let (conn, mut client) = one_conn(&mut el, ConnConfig::default());
    let id = conn.id();
    let (mut rx, mut tx) = conn.into_split();
    let got = Rc::new(RefCell::new(Vec::new()));
    let into = got.clone();
    el.spawn(async move {
        tx.write_all(b"bye\n").await.unwrap();
        drop(tx);
        let mut line = Vec::new();
        while rx.read_line(&mut line).await.unwrap() > 0 {}
        *into.borrow_mut() = line;
    })
    .unwrap();
    let mut sent = Vec::new();
    let reader = std::thread::spawn(move || {
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        client.read_to_end(&mut sent).unwrap();
        // Our side is still open: what we send now is read.
        client.write_all(b"still\nhere\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        sent
    });
    turn_until(&mut el, &mut (), |_| !got.borrow().is_empty());
    assert_eq!(reader.join().unwrap(), b"bye\n");
    assert_eq!(&*got.borrow(), b"still\nhere\n");
    common::turn_until_closed(&mut el, &mut (), id);
}

/// The idle timeout fires while a `write_all` waits with part of its
/// message staged: the close would cut it, so the connection is reset (the
/// peer does not get a clean end after part of it), and the task hears
/// `TimedOut`.
#[test]
fn an_idle_close_in_a_write_all_resets() {
    let _dog = Watchdog::new(60, "an_idle_close_in_a_write_all_resets");
    let (mut el, clock) = common::manual_loop::<()>();
    let cfg = ConnConfig {
        idle_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let (listener, addr) = listener(&mut el, cfg);
    let id = Rc::new(Cell::new(None));
    let result: Rc<RefCell<Option<std::io::Result<()>>>> = Rc::default();
    let (into, res) = (id.clone(), result.clone());
    el.spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        into.set(Some(conn.id()));
        *res.borrow_mut() = Some(conn.write_all(&vec![b'x'; BIG]).await);
        // Held: nothing but the net layer closes it.
        std::future::pending::<()>().await;
        drop(conn);
    })
    .unwrap();
    let client = TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| id.get().is_some());
    turns(&mut el, &mut (), 40);
    assert!(result.borrow().is_none(), "still writing");
    clock.advance(Duration::from_secs(5));
    let id = id.get().unwrap();
    common::turn_until_closed(&mut el, &mut (), id);
    let (got, end) = read_late(client);
    assert!(got < BIG, "{got}");
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
    let err = result.borrow_mut().take().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

/// Bytes a task was told were taken, refused when they go because the
/// connection is closing (its idle close began, with output still queued
/// for a slow reader): the connection is reset, so the peer does not take
/// what it got for the whole stream, and the task's next call fails.
#[test]
fn a_write_refused_by_a_closing_connection_resets_it() {
    let _dog = Watchdog::new(60, "a_write_refused_by_a_closing_connection_resets_it");
    let (mut el, clock) = common::manual_loop::<()>();
    let cfg = ConnConfig {
        idle_timeout: Some(Duration::from_secs(5)),
        idle_mode: evloop::net::IdleMode::Read,
        ..Default::default()
    };
    let (listener, addr) = listener(&mut el, cfg);
    let id = Rc::new(Cell::new(None));
    let (stop, last) = (Rc::new(Cell::new(false)), Rc::new(RefCell::new(Vec::new())));
    let (into, st, out) = (id.clone(), stop.clone(), last.clone());
    el.spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        into.set(Some(conn.id()));
        while !st.get() {
            conn.write_all(&[b'x'; 64 << 10]).await.unwrap();
            task::yield_now().await;
        }
        task::sleep(Duration::from_secs(7)).await;
        let first = conn.write_all(b"LAST MESSAGE\n").await;
        task::yield_now().await;
        let second = conn.write_all(b"more\n").await;
        *out.borrow_mut() = vec![first.map_err(|e| e.kind()), second.map_err(|e| e.kind())];
        std::future::pending::<()>().await;
        drop(conn);
    })
    .unwrap();
    let client = TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| id.get().is_some());
    let cid = id.get().unwrap();
    // A fixed send buffer: the kernel must not grow it later (autotuning)
    // and take the queue at the close, which would then end cleanly.
    let conn = el.source_mut::<Conn>(cid).unwrap();
    socket2::SockRef::from(conn.stream())
        .set_send_buffer_size(16 << 10)
        .unwrap();
    // Write until some output waits in the connection's own queue.
    for _ in 0..2000 {
        turns(&mut el, &mut (), 1);
        if el.source_mut::<Conn>(cid).map_or(0, |c| c.queued()) > 100 << 10 {
            break;
        }
    }
    stop.set(true);
    turns(&mut el, &mut (), 3);
    clock.advance(Duration::from_secs(5)); // idle: the close begins, output queued
    turns(&mut el, &mut (), 3);
    clock.advance(Duration::from_secs(2)); // the task's sleep ends
    turn_until(&mut el, &mut (), |_| !last.borrow().is_empty());
    common::turn_until_closed(&mut el, &mut (), cid);
    let aborted = std::io::ErrorKind::ConnectionAborted;
    assert_eq!(*last.borrow(), [Ok(()), Err(aborted)]);
    let (_, end) = read_late(client);
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
}
