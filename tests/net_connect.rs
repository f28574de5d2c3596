//! Outbound connections through the public API: connect, write before it
//! opens, refused and timed-out connects, falling through a list of
//! addresses, Unix paths, and closing while connecting. The client loop runs
//! on the test's thread; peers are plain blocking std sockets or evloop
//! servers on their own thread. Every wait is bounded.

mod common;
mod common_net;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common_net::{black_hole, echo_server, Server, TICK, WAIT};
use evloop::net::{self, CloseReason, Conn, ConnectConfig, Handler, Target};
use evloop::{Ctx, EventLoop, SourceId};

/// What the client's handler saw, in order.
#[derive(Default, Debug)]
struct Seen {
    events: Vec<String>,
    data: Vec<u8>,
    closed: Option<CloseReason>,
}

/// Records everything; closes once it has `want` bytes.
struct Client {
    want: usize,
    greet: &'static [u8],
}

impl Handler<Seen> for Client {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.events.push("open".into());
        assert!(!conn.is_connecting());
        conn.write(self.greet);
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Seen>, seen: &mut Seen) -> usize {
        seen.data.extend_from_slice(data);
        if seen.data.len() >= self.want {
            conn.close();
        }
        data.len()
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, ctx: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.events.push(format!("close {reason:?}"));
        seen.closed = Some(reason);
        ctx.stop();
    }
}

/// Turn `el` until its handler closes the connection (bounded).
fn run_until_closed(el: &mut EventLoop<Seen>, seen: &mut Seen) {
    for _ in 0..(WAIT.as_millis() / TICK.as_millis()) {
        el.turn(seen, Some(TICK)).unwrap();
        if seen.closed.is_some() {
            return;
        }
    }
    panic!("the connection did not close in time: {seen:?}");
}

/// The echo server's TCP address.
fn tcp(server: &Server<()>) -> SocketAddr {
    match server.addr {
        net::Addr::Tcp(a) => a,
        net::Addr::Unix(_) => unreachable!("a TCP server"),
    }
}

/// Connect `el` to `to` with the default settings and a [`Client`].
fn dial(el: &mut EventLoop<Seen>, to: &Target, want: usize, greet: &'static [u8]) -> SourceId {
    net::connect(el, to, ConnectConfig::default(), Client { want, greet }).unwrap()
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn bytes_written_before_open_go_out_first() {
    let server = echo_server();
    let mut el = EventLoop::new().unwrap();
    let to: Target = server.addr.clone().into();
    let id = dial(&mut el, &to, 11, b" world");
    // Before any turn: the connect cannot have completed.
    assert!(net::write(&mut el, id, b"hello"));
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"hello world");
    assert_eq!(seen.events, ["open", "close Local"]);
}

/// A single refused address, and a list of them (the last error counts).
#[test]
fn a_refused_connect_is_reported_with_its_kind() {
    let mut el = EventLoop::new().unwrap();
    let fds = open_fds();
    for to in [dead_port().into(), Target::Addrs(vec![dead_port(), dead_port()])] {
        dial(&mut el, &to, 1, b"");
        let mut seen = Seen::default();
        run_until_closed(&mut el, &mut seen);
        assert_eq!(
            seen.closed,
            Some(CloseReason::ConnectFailed(std::io::ErrorKind::ConnectionRefused))
        );
        assert_eq!(seen.events.len(), 1, "on_open must not run: {seen:?}");
        el.turn(&mut seen, Some(Duration::ZERO)).unwrap();
        assert_eq!(open_fds(), fds, "the failed attempts' sockets are closed");
    }
}

#[test]
fn a_list_of_addresses_falls_through_to_one_that_answers() {
    let server = echo_server();
    let live = tcp(&server);
    let mut el = EventLoop::new().unwrap();
    let to = Target::Addrs(vec![dead_port(), dead_port(), live]);
    dial(&mut el, &to, 4, b"ping");
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"ping");
    assert_eq!(seen.closed, Some(CloseReason::Local));
}

#[test]
fn a_connect_nobody_answers_times_out_on_the_loop_clock() {
    let (_l, _filler, addr) = black_hole();
    let (mut el, clock) = common::manual_loop::<Seen>();
    let cfg = ConnectConfig {
        timeout: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    net::connect(&mut el, &addr.into(), cfg, Client { want: 1, greet: b"" }).unwrap();
    let mut seen = Seen::default();
    for _ in 0..5 {
        el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    }
    clock.advance(Duration::from_millis(2999));
    el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    if seen.events == ["open"] {
        // This kernel answered the handshake despite the full backlog:
        // nothing to time out here.
        eprintln!("skipped: the kernel completed a handshake past a full backlog");
        return;
    }
    assert!(seen.closed.is_none(), "closed before its deadline: {seen:?}");
    clock.advance(Duration::from_millis(1));
    el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    assert_eq!(
        seen.closed,
        Some(CloseReason::ConnectFailed(std::io::ErrorKind::TimedOut))
    );
}

#[test]
fn the_next_address_starts_after_the_attempt_delay_and_wins() {
    let (_l, _filler, hole) = black_hole();
    let server = echo_server();
    let live = tcp(&server);
    let (mut el, clock) = common::manual_loop::<Seen>();
    // The refused one in the middle fails after the delay: the live one
    // must start at once, not one more delay later.
    let to = Target::Addrs(vec![hole, dead_port(), live]);
    dial(&mut el, &to, 2, b"hi");
    let mut seen = Seen::default();
    for _ in 0..5 {
        el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    }
    if seen.events == ["open"] {
        eprintln!("skipped: the kernel completed a handshake past a full backlog");
        return;
    }
    assert!(
        seen.events.is_empty(),
        "nothing before the attempt delay: {seen:?}"
    );
    clock.advance(Duration::from_millis(250));
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"hi");
    assert_eq!(seen.events, ["open", "close Local"]);
}

#[test]
fn unix_paths_connect_and_a_missing_one_fails() {
    let dir = std::env::temp_dir().join(format!("evloop-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut el = EventLoop::new().unwrap();
    let to: Target = format!("unix:{}", path.display()).parse().unwrap();
    dial(&mut el, &to, 5, b"hello");
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"hello");
    peer.join().unwrap();

    let missing: Target = format!("unix:{}", dir.join("nobody").display()).parse().unwrap();
    dial(&mut el, &missing, 1, b"");
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(
        seen.closed,
        Some(CloseReason::ConnectFailed(std::io::ErrorKind::NotFound))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn aborting_while_connecting_reports_local_and_frees_the_socket() {
    let (_l, _filler, hole) = black_hole();
    let mut el = EventLoop::new().unwrap();
    let mut seen = Seen::default();
    el.turn(&mut seen, Some(Duration::ZERO)).unwrap();
    let fds = open_fds();
    let id = dial(&mut el, &hole.into(), 1, b"");
    el.turn(&mut seen, Some(Duration::from_millis(10))).unwrap();
    if seen.events == ["open"] {
        eprintln!("skipped: the kernel completed a handshake past a full backlog");
        return;
    }
    assert!(net::abort(&mut el, id));
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.events, ["close Local"]);
    el.turn(&mut seen, Some(Duration::ZERO)).unwrap();
    assert_eq!(open_fds(), fds);
}

#[test]
fn a_graceful_close_while_connecting_still_delivers_what_was_written() {
    let (addr, peer) = common_net::one_peer(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut el = EventLoop::new().unwrap();
    let id = dial(&mut el, &addr.into(), 1, b"!");
    assert!(net::write(&mut el, id, b"fire and forget"));
    assert!(net::close(&mut el, id));
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    // on_open still runs, but its write comes after the close and is refused.
    assert_eq!(peer.join().unwrap(), b"fire and forget");
    assert_eq!(seen.events, ["open", "close Local"]);
}

#[test]
fn host_names_parse_without_resolving_and_malformed_ones_are_refused() {
    let t: Target = "example.invalid:80".parse().unwrap();
    assert_eq!(
        t,
        Target::Name {
            host: "example.invalid".into(),
            port: 80
        }
    );
    for bad in ["example.invalid", ":80", "host:99999", "host:x", ""] {
        let e = bad.parse::<Target>().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
    let e = "localhost:80".parse::<net::Addr>().unwrap_err();
    assert!(e.to_string().contains("localhost:80"), "{e}");
    // An empty Unix path is named as such, not taken for a host name.
    let e = "unix:".parse::<Target>().unwrap_err();
    assert!(e.to_string().contains("empty socket path"), "{e}");
}

#[test]
fn localhost_resolves_and_connects() {
    let server = echo_server();
    let live = tcp(&server);
    let mut el = EventLoop::new().unwrap();
    let to: Target = format!("localhost:{}", live.port()).parse().unwrap();
    let id: SourceId = dial(&mut el, &to, 3, b"abc");
    assert!(net::write(&mut el, id, b""));
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"abc");
}

/// "Never" as a timeout or an attempt delay is a setting, not a panic.
#[test]
fn durations_past_the_clocks_range_mean_never() {
    let server = echo_server();
    let live = tcp(&server);
    let mut el = EventLoop::new().unwrap();
    for cfg in [
        ConnectConfig {
            timeout: Some(Duration::MAX),
            ..Default::default()
        },
        ConnectConfig {
            attempt_delay: Duration::MAX,
            ..Default::default()
        },
    ] {
        let to = Target::Addrs(vec![dead_port(), live]);
        net::connect(
            &mut el,
            &to,
            cfg,
            Client {
                want: 2,
                greet: b"ok",
            },
        )
        .unwrap();
        let mut seen = Seen::default();
        run_until_closed(&mut el, &mut seen);
        assert_eq!(seen.data, b"ok");
    }
}

/// A Unix listener whose backlog is full refuses at once (Unix sockets
/// never say "in progress"): the connect tries again until there is room.
#[test]
fn a_unix_connect_waits_out_a_full_backlog() {
    let dir = std::env::temp_dir().join(format!("evloop-backlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let l = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    l.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    l.listen(0).unwrap();
    // Fill the backlog with connections nobody accepts yet.
    let mut fillers = Vec::new();
    loop {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&socket2::SockAddr::unix(&path).unwrap()) {
            Ok(()) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let mut el = EventLoop::new().unwrap();
    let to: Target = format!("unix:{}", path.display()).parse().unwrap();
    dial(&mut el, &to, 2, b"hi");
    let mut seen = Seen::default();
    for _ in 0..5 {
        el.turn(&mut seen, Some(Duration::from_millis(5))).unwrap();
    }
    assert!(seen.closed.is_none(), "gave up on a busy listener: {seen:?}");
    // Make room, then serve our connection: accept everything, echo the last.
    let l: std::os::unix::net::UnixListener = l.into();
    let server = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for _ in 0..fillers.len() {
            let _ = l.accept().unwrap();
        }
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0; 2];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.data, b"hi");
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Water marks that could never act are made usable: a high water at or
/// above the cap becomes half of it (a user who lowers only `max_queued`
/// still has the reader paused before the queue overflows), a low water
/// above high water becomes high water; the rest is kept as given.
#[test]
fn water_marks_that_cannot_act_are_made_usable() {
    let mut el = EventLoop::<Seen>::new().unwrap();
    let to: Target = dead_port().into();
    let cases = [
        // (low, high, max) given -> (low, high) used
        ((64 << 10, 256 << 10, 1024), (512, 512)),
        ((0, 4 << 20, 4 << 20), (0, 2 << 20)),
        ((300, 200, 4 << 20), (200, 200)),
        ((100, 200, 300), (100, 200)),
    ];
    for ((low_water, high_water, max_queued), want) in cases {
        let conn = net::ConnConfig {
            low_water,
            high_water,
            max_queued,
            ..Default::default()
        };
        let cfg = ConnectConfig {
            conn,
            ..Default::default()
        };
        let id = net::connect(&mut el, &to, cfg, Client { want: 0, greet: b"" }).unwrap();
        let c = el.source_mut::<Conn>(id).unwrap().config();
        assert_eq!(
            (c.low_water, c.high_water, c.max_queued),
            (want.0, want.1, max_queued)
        );
        net::abort(&mut el, id);
    }
}

/// A bind address of the other family than the target's is refused by
/// the call, before any socket.
#[test]
fn a_bind_address_of_the_other_family_is_refused_at_once() {
    let mut el = EventLoop::<Seen>::new().unwrap();
    let to: Target = dead_port().into();
    let cfg = ConnectConfig {
        bind: Some("[::1]:0".parse().unwrap()),
        ..Default::default()
    };
    let e = net::connect(&mut el, &to, cfg, Client { want: 0, greet: b"" }).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert_eq!(el.source_count(), 0);
}

/// What was written while connecting leaves once the connect completes,
/// and `on_drained` says when all of it is out, as for output the kernel
/// could not take at once.
#[test]
fn output_queued_while_connecting_is_followed_by_on_drained() {
    struct Drained;
    impl Handler<Seen> for Drained {
        fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<Seen>, _: &mut Seen) -> usize {
            data.len()
        }
        fn on_drained(&mut self, conn: &mut Conn, _: &mut Ctx<Seen>, seen: &mut Seen) {
            seen.events.push(format!("drained {}", conn.queued()));
            conn.close();
        }
        fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<Seen>, seen: &mut Seen) {
            seen.closed = Some(reason);
        }
    }
    let server = echo_server();
    let mut el = EventLoop::new().unwrap();
    let id = net::connect(
        &mut el,
        &server.addr.clone().into(),
        ConnectConfig::default(),
        Drained,
    )
    .unwrap();
    assert!(net::write(&mut el, id, &[b'x'; 20_000]));
    let mut seen = Seen::default();
    run_until_closed(&mut el, &mut seen);
    assert_eq!(seen.events, ["drained 0"]);
    assert_eq!(seen.closed, Some(CloseReason::Local));
}
