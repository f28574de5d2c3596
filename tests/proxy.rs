//! The `proxy` example as a black box: a proxy loop and an upstream on
//! their own threads, blocking clients on loopback. Bytes intact both ways at
//! once, half-close passed on each way, a client that never reads, an
//! upstream that resets, refuses or never answers, a thousand clients at
//! once, and fds given back after thousands of connect/close cycles.

#[path = "../examples/proxy.rs"]
#[allow(dead_code)]
mod proxy;

mod common_net;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common_net::{
    black_hole, connect, echo_server, one_peer, random_bytes, read_to_eof, round_trip, rss_kib, set_fd_limit,
    wait_until, Server, WAIT,
};
use evloop::net::Target;

/// A proxy to `upstream` on its own thread (stalled pairs end after the
/// tests' longest wait).
fn proxy_to(upstream: SocketAddr, connect: Duration) -> Server<()> {
    proxy_with(upstream, proxy::Timeouts { connect, stall: WAIT })
}

fn proxy_with(upstream: SocketAddr, timeouts: proxy::Timeouts) -> Server<()> {
    Server::start((), move |el| {
        let l = proxy::start(el, &"127.0.0.1:0".parse()?, Target::from(upstream), timeouts)?;
        Ok(l.addr)
    })
}

/// A proxy in front of an evloop echo server.
fn proxied_echo() -> (Server<()>, Server<()>) {
    let upstream = echo_server();
    let proxy = proxy_to(upstream.tcp(), WAIT);
    (upstream, proxy)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn four_mib_each_way_at_once_arrive_intact() {
    let (_upstream, proxy) = proxied_echo();
    let mut c = connect(proxy.tcp());
    let data = random_bytes(4 << 20, 17);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the echoed bytes differ");
}

#[test]
fn a_client_half_close_reaches_the_upstream_and_the_answer_comes_back() {
    let (up_addr, upstream) = one_peer(|mut s| {
        let got = read_to_eof(&mut s).unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .unwrap();
    });
    let proxy = proxy_to(up_addr, WAIT);
    let mut c = connect(proxy.tcp());
    c.write_all(&[7; 1000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"got 1000 bytes");
    upstream.join().unwrap();
}

#[test]
fn an_upstream_half_close_reaches_the_client_which_can_still_send() {
    let (up_addr, upstream) = one_peer(|mut s| {
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s).unwrap()
    });
    let proxy = proxy_to(up_addr, WAIT);
    let mut c = connect(proxy.tcp());
    let mut hello = [0; 5];
    c.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    assert_eq!(c.read(&mut [0; 8]).unwrap(), 0, "the upstream's FIN is passed on");
    c.write_all(b"still talking").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(upstream.join().unwrap(), b"still talking");
}

#[test]
fn a_client_that_never_reads_is_throttled_while_fifty_others_are_served() {
    let (_upstream, proxy) = proxied_echo();
    let before = rss_kib();
    // Pushes until the proxy stops reading it: its echoes are never read.
    let mut slow = connect(proxy.tcp());
    slow.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let mut pushed = 0usize;
    while pushed < 256 << 20 {
        match slow.write(&chunk) {
            Ok(n) => pushed += n,
            Err(_) => break, // the write timed out: throttled
        }
    }
    assert!(pushed < 256 << 20, "a never-reading client was never throttled");
    let mut others: Vec<TcpStream> = (0..50).map(|_| connect(proxy.tcp())).collect();
    for round in 0..20u8 {
        for c in &mut others {
            assert_eq!(round_trip(c, &[round; 64]).unwrap(), [round; 64]);
        }
    }
    let grown = rss_kib().saturating_sub(before);
    // The pair holds about high water plus a read per direction (~1 MiB);
    // without the throttle it would hold what was pushed.
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB after {pushed} bytes pushed"
    );
    // Throttled, not cut off: everything it pushed comes back once it reads.
    let mut back = vec![0; pushed];
    slow.read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 1));
}

#[test]
fn an_upstream_reset_mid_stream_closes_the_client() {
    let (up_addr, upstream) = one_peer(|mut s| {
        let mut first = [0; 4];
        s.read_exact(&mut first).unwrap();
        s.write_all(b"partial").unwrap();
        // SO_LINGER 0: the close sends a reset.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let proxy = proxy_to(up_addr, WAIT);
    let mut c = connect(proxy.tcp());
    c.write_all(b"ping").unwrap();
    upstream.join().unwrap();
    // Whatever arrived before the reset may be delivered; then the client is closed.
    match read_to_eof(&mut c) {
        Ok(got) => assert!(b"partial".starts_with(&got), "{got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn an_upstream_that_refuses_or_never_answers_closes_the_client() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = proxy_to(dead, WAIT);
    let mut c = connect(proxy.tcp());
    c.write_all(b"anyone?").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"");

    // A listener with a full backlog never completes the handshake.
    let (_hole, _filler, hole_addr) = black_hole();
    let proxy = proxy_to(hole_addr, Duration::from_millis(200));
    let mut c = connect(proxy.tcp());
    c.write_all(b"anyone?").unwrap();
    assert_eq!(read_to_eof(&mut c).unwrap(), b"");
}

#[test]
fn a_thousand_clients_at_once_make_fifty_round_trips_each() {
    set_fd_limit(|hard| hard.min(20_000));
    let (_upstream, proxy) = proxied_echo();
    let mut clients: Vec<TcpStream> = (0..1000).map(|_| connect(proxy.tcp())).collect();
    for round in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&(round * 1000 + i as u32).to_le_bytes()).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut back = [0; 4];
            c.read_exact(&mut back).unwrap();
            assert_eq!(u32::from_le_bytes(back), round * 1000 + i as u32);
        }
    }
}

#[test]
fn fds_come_back_after_five_thousand_proxied_connections() {
    let (_upstream, proxy) = proxied_echo();
    // Warm up (the loops' lazily made fds), then count.
    round_trip(&mut connect(proxy.tcp()), b"x").unwrap();
    assert!(wait_until(|| open_fds() == open_fds()));
    std::thread::sleep(Duration::from_millis(100));
    let before = open_fds();
    for i in 0..5000u32 {
        let mut c = connect(proxy.tcp());
        assert_eq!(round_trip(&mut c, &i.to_le_bytes()).unwrap(), i.to_le_bytes());
    }
    assert!(
        wait_until(|| open_fds() <= before),
        "{} fds open after the cycles, {before} before",
        open_fds()
    );
}

/// A client that resets mid-upload: the upstream is reset too, so it can
/// tell the upload was cut short (a clean EOF would say it was complete).
#[test]
fn a_client_reset_reaches_the_upstream_as_a_reset() {
    let (arrived, arrival) = std::sync::mpsc::channel();
    let (up_addr, upstream) = one_peer(move |mut s| {
        let mut part = [0u8; 17];
        s.read_exact(&mut part).unwrap();
        arrived.send(()).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map_err(|e| e.kind())
    });
    let proxy = proxy_to(up_addr, WAIT);
    let mut c = connect(proxy.tcp());
    c.write_all(b"part of an upload").unwrap();
    arrival
        .recv_timeout(WAIT)
        .expect("the bytes reached the upstream");
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let end = upstream.join().unwrap();
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
}

/// An upstream that accepts and never reads: the client's upload fills
/// the pair and stops. After the stall timeout the proxy ends the pair,
/// both sides by a reset, and gives back both fds (the pair was held for
/// good, its client side paused and never seeing the client's close).
#[test]
fn a_pair_stuck_behind_an_upstream_that_never_reads_is_ended() {
    let (up_addr, upstream) = one_peer(|s| {
        // Never reads: watches for the proxy's reset without taking a byte.
        let gave_up = wait_until(|| matches!(s.take_error(), Ok(Some(_))));
        drop(s);
        gave_up
    });
    let stall = Duration::from_millis(300);
    let proxy = proxy_with(up_addr, proxy::Timeouts { connect: WAIT, stall });
    let before = proxy.call(|ctx, _| ctx.source_count());
    let mut c = connect(proxy.tcp());
    c.set_write_timeout(Some(WAIT)).unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    // Pushes until the proxy stops taking it, then until it resets us.
    let pushed = (0..4096).try_for_each(|_| c.write_all(&chunk).map(drop));
    assert!(
        pushed.is_err(),
        "the proxy took 256 MiB for an upstream that reads nothing"
    );
    match read_to_eof(&mut c) {
        Ok(got) => assert!(got.is_empty(), "{got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert!(upstream.join().unwrap(), "the upstream was reset");
    assert!(wait_until(|| proxy.call(|ctx, _| ctx.source_count()) <= before));
}

/// A pair that owes nothing either way stays open however long it is
/// quiet: only a stall ends a pair.
#[test]
fn a_quiet_pair_outlives_the_stall_timeout() {
    let upstream = echo_server();
    let stall = Duration::from_millis(100);
    let proxy = proxy_with(upstream.tcp(), proxy::Timeouts { connect: WAIT, stall });
    let mut c = connect(proxy.tcp());
    assert_eq!(round_trip(&mut c, b"before").unwrap(), b"before");
    std::thread::sleep(stall * 5);
    assert_eq!(round_trip(&mut c, b"after").unwrap(), b"after");
}

/// An upstream that reads slowly but steadily (4 KiB every 5 ms, far
/// below what loopback carries) is not a stall: the kernel frees its send
/// buffer a little at a time, which wakes nobody (it says there is room
/// only once about a third of the buffer is free), and the proxy looks at
/// the kernel's queue too before it gives up (it reset such a pair after
/// about one stall timeout). The kernel's queue moves a window at a time
/// (64 KiB on loopback): the stall timeout here spans a few.
#[test]
fn a_slow_but_reading_upstream_is_not_taken_for_a_stall() {
    let stall = Duration::from_millis(500);
    let (up_addr, upstream) = one_peer(move |mut s| {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < stall * 5 {
            match s.read(&mut buf) {
                Ok(0) => return Err(format!("EOF after {total} bytes")),
                Ok(n) => total += n,
                Err(e) => return Err(format!("{e} after {total} bytes")),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(total)
    });
    let proxy = proxy_with(up_addr, proxy::Timeouts { connect: WAIT, stall });
    let mut c = connect(proxy.tcp());
    c.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = c.write(&chunk) {
                if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut {
                    return;
                }
            }
        }
    });
    let read = upstream.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let read = read.unwrap_or_else(|e| panic!("the pair was ended while the upstream read: {e}"));
    assert!(read > 0);
}
