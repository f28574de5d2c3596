//! Idle timeout, driven by a manual clock: a silent peer is closed with
//! `Idle` once the clock passes its timeout; a peer that keeps talking is not.

mod common_net;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_net::{connect, random_bytes, round_trip, wait_until, Echo, Server};
use evloop::net::{self, CloseReason, Conn, Handler, IdleMode, ListenConfig};
use evloop::{Clock, Ctx, EventLoop, ManualClock, SourceId};

const TIMEOUT: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_secs(4);

#[derive(Default)]
struct Log {
    opened: Vec<SourceId>,
    idle: Vec<SourceId>,
    closed: Vec<(SourceId, CloseReason)>,
}

/// Echo that logs opens, idle timeouts and closes, and does `OnIdle`.
struct Logged(Arc<Mutex<Log>>, OnIdle);

/// What [`Logged`] does when its connection is idle.
#[derive(Clone, Copy)]
enum OnIdle {
    /// The trait's default (close).
    Default,
    /// Write this line, then close.
    Goodbye(&'static [u8]),
    /// Nothing: keep the connection.
    Keep,
}

impl Handler<()> for Logged {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().opened.push(conn.id());
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<()>, st: &mut ()) -> usize {
        Echo.on_data(conn, data, ctx, st)
    }
    fn on_idle(&mut self, conn: &mut Conn, ctx: &mut Ctx<()>, st: &mut ()) {
        self.0.lock().unwrap().idle.push(conn.id());
        match self.1 {
            // `Echo` keeps the trait's `on_idle`.
            OnIdle::Default => Echo.on_idle(conn, ctx, st),
            OnIdle::Goodbye(line) => {
                conn.write(line);
                conn.close();
            }
            OnIdle::Keep => {}
        }
    }
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        self.0.lock().unwrap().closed.push((conn.id(), reason));
    }
}

/// A logging echo server on a manual clock, with `idle_timeout`.
fn logged_server(idle_timeout: Option<Duration>) -> (Server<()>, ManualClock, Arc<Mutex<Log>>) {
    let mut cfg = ListenConfig::default();
    cfg.conn.idle_timeout = idle_timeout;
    idle_server(cfg, OnIdle::Default)
}

/// A logging echo server on a manual clock with `cfg`, whose handlers do
/// `on_idle` when idle.
fn idle_server(cfg: ListenConfig, on_idle: OnIdle) -> (Server<()>, ManualClock, Arc<Mutex<Log>>) {
    let clock = ManualClock::new();
    let log = Arc::new(Mutex::new(Log::default()));
    let seen = log.clone();
    let server = Server::start_with(
        EventLoop::builder().clock(Clock::Manual(clock.clone())),
        (),
        move |el| {
            Ok(net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
                Some(Logged(seen.clone(), on_idle))
            })?
            .addr)
        },
    );
    (server, clock, log)
}

#[test]
fn silent_peer_closed_active_peer_kept() {
    let (server, clock, log) = idle_server(idle_cfg(IdleMode::ReadOrWrite), OnIdle::Default);
    let opened = |n: usize| wait_until(|| log.lock().unwrap().opened.len() == n);

    let mut silent = connect(server.tcp());
    assert!(opened(1));
    let silent_id = log.lock().unwrap().opened[0];
    let mut active = connect(server.tcp());
    assert!(opened(2));
    let active_id = log.lock().unwrap().opened[1];

    // The active peer talks every 4 s of manual time; the silent one never.
    let mut elapsed = Duration::ZERO;
    let mut trip = 0u64;
    while elapsed < TIMEOUT * 4 {
        clock.advance(STEP);
        elapsed += STEP;
        trip += 1;
        let msg = random_bytes(64, trip);
        assert_eq!(round_trip(&mut active, &msg).unwrap(), msg, "at {elapsed:?}");
        if elapsed > TIMEOUT {
            assert!(
                wait_until(|| !log.lock().unwrap().closed.is_empty()),
                "silent peer still open at {elapsed:?}"
            );
        }
    }
    assert_eq!(log.lock().unwrap().closed, vec![(silent_id, CloseReason::Idle)]);
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "silent peer should see EOF");

    // Once the active peer falls silent too, it goes the same way.
    clock.advance(TIMEOUT + STEP);
    assert!(wait_until(|| log.lock().unwrap().closed.len() == 2));
    assert_eq!(log.lock().unwrap().closed[1], (active_id, CloseReason::Idle));
    assert_eq!(active.read(&mut buf).unwrap(), 0, "active peer should see EOF");
}

/// Without an idle timeout nothing is closed, however far the clock moves.
#[test]
fn no_timeout_no_close() {
    let (server, clock, log) = logged_server(None);
    let mut c = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    clock.advance(Duration::from_secs(24 * 3600));
    // A round trip after the jump proves the loop turned with the new time.
    assert_eq!(round_trip(&mut c, b"still here").unwrap(), b"still here");
    assert!(log.lock().unwrap().closed.is_empty());
}

/// Output counts as activity: a peer that only receives (a subscriber fed
/// from a timer or another connection through `net::write`) is not idle.
#[test]
fn peer_fed_by_net_write_is_not_idle() {
    let (server, clock, log) = logged_server(Some(TIMEOUT));
    let mut sub = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    let id = log.lock().unwrap().opened[0];
    let mut elapsed = Duration::ZERO;
    while elapsed < TIMEOUT * 4 {
        clock.advance(STEP);
        elapsed += STEP;
        // The loop's `now` is past the step once the call runs.
        assert!(
            server.call(move |ctx, _| net::write(ctx, id, b"tick")),
            "at {elapsed:?}"
        );
        let mut buf = [0u8; 4];
        sub.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"tick");
    }
    assert!(
        log.lock().unwrap().closed.is_empty(),
        "{:?}",
        log.lock().unwrap().closed
    );
}

fn idle_cfg(mode: IdleMode) -> ListenConfig {
    let mut cfg = ListenConfig::default();
    cfg.conn.idle_timeout = Some(TIMEOUT);
    cfg.conn.idle_mode = mode;
    cfg
}

/// `on_idle` may write a last line: it is delivered before the close, which
/// is reported as `Idle`.
#[test]
fn an_idle_connection_hears_its_goodbye() {
    let (server, clock, log) = idle_server(idle_cfg(IdleMode::ReadOrWrite), OnIdle::Goodbye(b"bye\n"));
    let mut c = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    let id = log.lock().unwrap().opened[0];
    clock.advance(TIMEOUT);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye\n");
    assert!(wait_until(|| !log.lock().unwrap().closed.is_empty()));
    assert_eq!(log.lock().unwrap().closed, vec![(id, CloseReason::Idle)]);
}

/// A handler that does not close keeps the connection, and hears again
/// after another quiet period.
#[test]
fn a_handler_may_keep_an_idle_connection() {
    let (server, clock, log) = idle_server(idle_cfg(IdleMode::ReadOrWrite), OnIdle::Keep);
    let mut c = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    clock.advance(TIMEOUT);
    assert!(wait_until(|| log.lock().unwrap().idle.len() == 1));
    assert_eq!(round_trip(&mut c, b"still here").unwrap(), b"still here");
    clock.advance(TIMEOUT);
    assert!(wait_until(|| log.lock().unwrap().idle.len() == 2));
    assert!(log.lock().unwrap().closed.is_empty());
}

/// With `IdleMode::Read`, a peer that only receives still times out.
#[test]
fn read_idle_mode_times_out_a_peer_that_only_receives() {
    let (server, clock, log) = idle_server(idle_cfg(IdleMode::Read), OnIdle::Default);
    let mut sub = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    let id = log.lock().unwrap().opened[0];
    let mut elapsed = Duration::ZERO;
    while elapsed < TIMEOUT - STEP {
        clock.advance(STEP);
        elapsed += STEP;
        assert!(server.call(move |ctx, _| net::write(ctx, id, b"tick")));
        let mut buf = [0u8; 4];
        sub.read_exact(&mut buf).unwrap();
    }
    clock.advance(STEP);
    assert!(wait_until(|| !log.lock().unwrap().closed.is_empty()));
    assert_eq!(log.lock().unwrap().closed, vec![(id, CloseReason::Idle)]);
}

/// A peer that never reads the goodbye is dropped one timeout later.
#[test]
fn a_goodbye_nobody_reads_does_not_keep_the_connection() {
    let mut cfg = idle_cfg(IdleMode::ReadOrWrite);
    cfg.conn.max_queued = 64 << 20;
    let big: &'static [u8] = Vec::leak(vec![b'z'; 8 << 20]);
    let (server, clock, log) = idle_server(cfg, OnIdle::Goodbye(big));
    let _c = connect(server.tcp());
    assert!(wait_until(|| log.lock().unwrap().opened.len() == 1));
    clock.advance(TIMEOUT);
    assert!(wait_until(|| log.lock().unwrap().idle.len() == 1));
    assert!(
        log.lock().unwrap().closed.is_empty(),
        "8 MiB cannot have been taken"
    );
    // Bytes the kernel still takes (its buffers filling) are activity, and
    // may move the deadline once or twice; then nothing moves.
    let closed = || !log.lock().unwrap().closed.is_empty();
    for _ in 0..10 {
        clock.advance(TIMEOUT);
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while !closed() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if closed() {
            break;
        }
    }
    assert!(closed(), "still open ten timeouts after its goodbye stalled");
    assert_eq!(log.lock().unwrap().closed[0].1, CloseReason::Idle);
}

/// With writes timed, a reply the kernel takes at once counts as activity
/// whatever its size: a small one is corked and flushed, a large one (8 KiB
/// or more) goes straight to the socket with nothing queued, and both keep
/// the connection from being idle for a whole timeout after it. Written
/// from `on_eof`, where no read marks the dispatch as active. Returns how
/// the connection ended (`None`: still open) 3 s after the reply, 11 s
/// after the last bytes read, with a 10 s timeout.
fn reason_after_a_reply_at_eof(size: usize) -> Option<CloseReason> {
    use std::cell::Cell;
    use std::io::Write;
    use std::net::Shutdown;
    use std::rc::Rc;

    struct ReplyAtEof(usize, Rc<Cell<Option<CloseReason>>>, Rc<Cell<bool>>);
    impl Handler<()> for ReplyAtEof {
        fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
            self.2.set(true);
            data.len()
        }
        fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
            conn.write(&vec![b'r'; self.0]);
            self.2.set(false);
        }
        fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
            self.1.set(Some(reason));
        }
    }
    let clock = ManualClock::new();
    let mut el = EventLoop::<()>::builder()
        .clock(Clock::Manual(clock.clone()))
        .build()
        .unwrap();
    // `heard`: set by the first bytes, cleared by the reply at the EOF.
    let (reason, heard) = (Rc::new(Cell::new(None)), Rc::new(Cell::new(false)));
    let (r, h) = (reason.clone(), heard.clone());
    let mut cfg = idle_cfg(IdleMode::ReadOrWrite);
    cfg.conn.linger = None;
    let server = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        cfg,
        move |_, _, _, _| Some(ReplyAtEof(size, r.clone(), h.clone())),
    )
    .unwrap();
    let evloop::net::Addr::Tcp(addr) = server.addr else {
        unreachable!()
    };
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(b"hello").unwrap();
    let turn = |el: &mut EventLoop<()>| el.turn(&mut (), Some(Duration::from_millis(20))).unwrap();
    let turn_while = |el: &mut EventLoop<()>, heard_is: bool| {
        for _ in 0..500 {
            if heard.get() != heard_is {
                return;
            }
            turn(el);
        }
        panic!("the handler never heard the client");
    };
    turn_while(&mut el, false);
    clock.advance(Duration::from_secs(8));
    client.shutdown(Shutdown::Write).unwrap();
    turn_while(&mut el, true);
    let mut reply = vec![0; size];
    client.read_exact(&mut reply).unwrap();
    clock.advance(Duration::from_secs(3));
    for _ in 0..5 {
        turn(&mut el);
    }
    reason.get()
}

#[test]
fn a_reply_at_eof_counts_as_activity_small_or_large() {
    assert_eq!(reason_after_a_reply_at_eof(100), None);
    assert_eq!(
        reason_after_a_reply_at_eof(16 * 1024),
        None,
        "a 16 KiB reply the kernel took at once was not counted as activity"
    );
}
