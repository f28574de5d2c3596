//! Regressions of issue 18: time has one owner, ids never alias, and no
//! event or byte is lost. One test (or two) per defect, named after what
//! must hold; the signal and embedding cases live in `signals.rs` and
//! `embed.rs`, the id wrap-around in the crate's unit tests (it needs a way
//! to skip four billion registrations that only the crate has).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{manual_loop as manual, pair, peer_sees_eof, turn_until, Watchdog};
use evloop::net::{self, Addr, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Action, Ctx, EventLoop, Interest, PanicPolicy};

const ZERO: Option<Duration> = Some(Duration::ZERO);

// ---- 1. a timer armed between turns measures from the clock ----

#[test]
fn between_turns_now_is_the_clocks_time_and_timers_measure_from_it() {
    let (mut el, clock) = manual::<u32>();
    let mut fired = 0;
    // The turn reads the clock (a callback asks for it).
    el.defer(|ctx, _| {
        ctx.now();
    });
    el.turn(&mut fired, ZERO).unwrap();
    clock.advance(Duration::from_millis(300));
    assert_eq!(el.now(), clock.now(), "the last turn's time outlived it");
    clock.advance(Duration::from_millis(5));
    assert_eq!(el.now(), clock.now(), "a reading between turns is not kept");

    let once = el.timer_after(Duration::from_millis(200), |_, _, n: &mut u32| *n += 1);
    let every = el.timer_every(Duration::from_millis(200), |_, _, _| {});
    let delay = el.timer_every_delay(Duration::from_millis(200), |_, _, _| {});
    for id in [once, every, delay] {
        assert_eq!(
            el.timer_deadline(id),
            Some(clock.now() + Duration::from_millis(200))
        );
    }
    el.turn(&mut fired, ZERO).unwrap();
    assert_eq!(fired, 0, "a 200 ms timer fired at once");
    clock.advance(Duration::from_millis(199));
    el.turn(&mut fired, ZERO).unwrap();
    assert_eq!(fired, 0);
    clock.advance(Duration::from_millis(1));
    el.turn(&mut fired, ZERO).unwrap();
    assert_eq!(fired, 1);
}

// ---- 2. a slow callback does not make the next timer late ----

/// Real time, unavoidably: the poll's timeout is what is under test. The
/// slow callback takes 400 ms; measured from before it, the next timer
/// would be 400 ms late, and the bound allows half of that.
#[test]
fn a_slow_timer_callback_does_not_make_the_next_timer_late() {
    let _dog = Watchdog::new(30, "a_slow_timer_callback_does_not_make_the_next_timer_late");
    let mut el = EventLoop::<Vec<Instant>>::new().unwrap();
    el.timer_after(Duration::from_millis(10), |_, _, _| {
        std::thread::sleep(Duration::from_millis(400))
    });
    let id = el.timer_after(Duration::from_millis(500), |_, _, log| log.push(Instant::now()));
    let deadline = el.timer_deadline(id).unwrap();
    let mut log = Vec::new();
    while log.is_empty() {
        el.turn(&mut log, Some(Duration::from_secs(2))).unwrap();
    }
    let late = log[0].saturating_duration_since(deadline);
    assert!(late < Duration::from_millis(200), "fired {late:?} late");
}

#[test]
fn a_slow_deferred_callback_does_not_make_the_next_timer_late() {
    let _dog = Watchdog::new(30, "a_slow_deferred_callback_does_not_make_the_next_timer_late");
    let mut el = EventLoop::<Vec<Instant>>::new().unwrap();
    let id = el.timer_after(Duration::from_millis(500), |_, _, log| log.push(Instant::now()));
    let deadline = el.timer_deadline(id).unwrap();
    // Armed timers make the timer phase read the clock before this runs.
    el.defer(|_, _| std::thread::sleep(Duration::from_millis(400)));
    let mut log = Vec::new();
    while log.is_empty() {
        el.turn(&mut log, Some(Duration::from_secs(2))).unwrap();
    }
    let late = log[0].saturating_duration_since(deadline);
    assert!(late < Duration::from_millis(200), "fired {late:?} late");
}

// ---- 5. a Unix listener removes its socket file ----

struct Echo;

impl<S> Handler<S> for Echo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<S>, _: &mut S) -> usize {
        conn.write(data);
        data.len()
    }
}

fn sock_path(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("evloop-correctness-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn listen_unix(el: &mut EventLoop<()>, path: &Path) -> std::io::Result<net::Listening> {
    net::listen(
        el,
        &Addr::Unix(path.to_path_buf()),
        ListenConfig::default(),
        |_, _, _, _| Some(Echo),
    )
}

#[test]
fn a_unix_listener_removes_its_socket_file_and_the_path_can_be_reused() {
    let path = sock_path("reuse");
    let mut el = EventLoop::<()>::new().unwrap();
    let first = listen_unix(&mut el, &path).unwrap();
    assert!(path.exists());
    el.close(first.id);
    el.turn(&mut (), ZERO).unwrap();
    assert!(!path.exists(), "closing the listener left its file");
    // Restarting on the same path works, and dropping the loop cleans up too.
    listen_unix(&mut el, &path).expect("listening again on the same path");
    assert!(path.exists());
    drop(el);
    assert!(!path.exists(), "dropping the loop left the file");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let stale = sock_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists(), "a dropped std listener leaves its file");
    let mut el = EventLoop::<()>::new().unwrap();
    listen_unix(&mut el, &stale).expect("a stale file nobody listens on is replaced");
    let mut c = std::os::unix::net::UnixStream::connect(&stale).unwrap();
    c.write_all(b"hi").unwrap();
    c.set_nonblocking(true).unwrap();
    let mut got = [0u8; 2];
    let mut n = 0;
    for _ in 0..100 {
        el.turn(&mut (), Some(Duration::from_millis(20))).unwrap();
        match c.read(&mut got[n..]) {
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        if n == 2 {
            break;
        }
    }
    assert_eq!(&got, b"hi");

    let live = sock_path("live");
    let owner = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let err = listen_unix(&mut el, &live).expect_err("a live socket was taken over");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(live.exists(), "a live listener's file was removed");
    std::os::unix::net::UnixStream::connect(&live).expect("the live listener still answers");
    drop(owner);
    let _ = std::fs::remove_file(&live);
    drop(el);
    assert!(!stale.exists());
}

// ---- 6. a panicking drop during reclaim does not leak the others ----

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a source's drop panicked");
    }
}

fn three_closed(el: &mut EventLoop<()>) -> Vec<std::os::unix::net::UnixStream> {
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (a, peer) = pair();
        let bomb = if i == 0 { Some(PanicOnDrop) } else { None };
        let id = el
            .register(a, Interest::READABLE, move |_, _, _, _| {
                let _held = &bomb;
                Action::Keep
            })
            .unwrap();
        ids.push(id);
        peers.push(peer);
    }
    for id in ids {
        el.close(id);
    }
    peers
}

#[test]
fn a_panicking_drop_in_reclaim_leaks_no_other_closed_source() {
    let mut el: EventLoop<()> = EventLoop::builder()
        .panic_policy(PanicPolicy::CloseSource)
        .build()
        .unwrap();
    let mut peers = three_closed(&mut el);
    el.turn(&mut (), ZERO).expect("the panic was caught");
    assert_eq!(el.source_count(), 0);
    for peer in &mut peers {
        assert!(peer_sees_eof(peer), "a closed source's fd is still open");
    }
    assert_eq!(el.metrics().panics, 1);
}

#[test]
fn a_propagated_drop_panic_in_reclaim_still_releases_the_others() {
    let mut el = EventLoop::<()>::new().unwrap();
    let mut peers = three_closed(&mut el);
    let result = panic::catch_unwind(AssertUnwindSafe(|| el.turn(&mut (), ZERO)));
    assert!(result.is_err(), "the drop's panic propagates");
    assert_eq!(el.source_count(), 0);
    for peer in &mut peers {
        assert!(peer_sees_eof(peer), "a closed source's fd is still open");
    }
}

// ---- 7. a fixed-rate timer survives a huge clock jump ----

#[test]
fn a_tiny_period_timer_survives_a_jump_to_the_end_of_time() {
    let (mut el, clock) = manual::<Vec<u64>>();
    let mut log = Vec::new();
    el.timer_every(Duration::ZERO, |f, _, log: &mut Vec<u64>| log.push(f.missed));
    el.timer_every(Duration::from_nanos(3), |f, _, log: &mut Vec<u64>| {
        log.push(f.missed)
    });
    el.turn(&mut log, ZERO).unwrap();
    clock.advance(Duration::MAX);
    for _ in 0..3 {
        el.turn(&mut log, ZERO).unwrap();
    }
    // Each fired once for the jump, reporting the periods it skipped, and
    // never again: its next tick lies past the clock's range.
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[1] > u64::MAX / 4 && log[2] > u64::MAX / 8, "{log:?}");
    assert_eq!(el.timer_count(), 0);
}

// ---- 8. on_close runs when re-registration fails ----

#[derive(Default)]
struct Closes {
    reasons: Vec<CloseReason>,
}

/// Breaks its connection's registration: puts /dev/null where the socket's
/// fd was, so that the poller no longer knows the fd, then pauses reading
/// (which makes the loop deregister it, and fail).
struct Breaker;

impl Handler<Closes> for Breaker {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Closes>, _: &mut Closes) -> usize {
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both fds are open; dup2 replaces the socket's fd number
        // with a copy of /dev/null, which the connection then owns and closes.
        let rc = unsafe { libc::dup2(null.as_raw_fd(), conn.stream().as_raw_fd()) };
        assert!(rc >= 0);
        conn.pause_reading();
        data.len()
    }

    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<Closes>, s: &mut Closes) {
        s.reasons.push(reason);
    }
}

#[test]
fn on_close_runs_once_when_re_registration_fails() {
    let mut el = EventLoop::<Closes>::new().unwrap();
    let l = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        |_, _, _, _| Some(Breaker),
    )
    .unwrap();
    let Addr::Tcp(addr) = l.addr else { unreachable!() };
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"x").unwrap();
    let mut s = Closes::default();
    turn_until(&mut el, &mut s, |s| !s.reasons.is_empty());
    for _ in 0..3 {
        el.turn(&mut s, ZERO).unwrap();
    }
    assert_eq!(s.reasons.len(), 1, "{:?}", s.reasons);
    assert!(matches!(s.reasons[0], CloseReason::Error(_)), "{:?}", s.reasons);
}

// ---- 10. unconsumed input is offered again after resume_reading ----

#[derive(Default)]
struct Taken {
    bytes: Vec<u8>,
    calls: usize,
    resumed: bool,
    unconsumed_at_eof: Option<usize>,
}

/// Takes two bytes of its first delivery, pauses, and resumes from a timer.
struct TakeTwo;

impl Handler<Taken> for TakeTwo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Taken>, s: &mut Taken) -> usize {
        s.calls += 1;
        if s.calls > 1 {
            s.bytes.extend_from_slice(data);
            return data.len();
        }
        s.bytes.extend_from_slice(&data[..2]);
        conn.pause_reading();
        let id = conn.id();
        ctx.timer_after(Duration::from_millis(1), move |_, ctx, s: &mut Taken| {
            s.resumed = net::resume_reading(ctx, id);
        });
        2
    }

    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<Taken>, s: &mut Taken) {
        s.unconsumed_at_eof = Some(conn.unconsumed());
        conn.close();
    }
}

fn take_two_server() -> (EventLoop<Taken>, TcpStream) {
    let mut el = EventLoop::<Taken>::new().unwrap();
    let l = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        |_, _, _, _| Some(TakeTwo),
    )
    .unwrap();
    let Addr::Tcp(addr) = l.addr else { unreachable!() };
    (el, TcpStream::connect(addr).unwrap())
}

#[test]
fn unconsumed_input_is_offered_again_after_resume_reading() {
    let (mut el, mut client) = take_two_server();
    client.write_all(b"0123456789").unwrap();
    let mut s = Taken::default();
    turn_until(&mut el, &mut s, |s| s.resumed);
    turn_until(&mut el, &mut s, |s| s.bytes.len() == 10);
    assert_eq!(s.bytes, b"0123456789");
}

#[test]
fn unconsumed_input_is_offered_again_before_the_eof() {
    let (mut el, mut client) = take_two_server();
    client.write_all(b"0123456789").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut s = Taken::default();
    turn_until(&mut el, &mut s, |s| s.unconsumed_at_eof.is_some());
    assert_eq!(s.bytes, b"0123456789");
    assert_eq!(s.unconsumed_at_eof, Some(0));
}

// ---- 11. stop() between turns is honoured by turn() ----

#[test]
fn a_stop_requested_between_turns_is_seen_by_the_next_turn() {
    let mut el = EventLoop::<()>::new().unwrap();
    el.stop();
    el.turn(&mut (), ZERO).unwrap();
    assert!(el.is_stopping(), "turn() wiped a stop requested before it");
    // Acted on, it is cleared by the turn after.
    el.turn(&mut (), ZERO).unwrap();
    assert!(!el.is_stopping());
    // And a turn that may sleep does not, with a stop pending.
    let _dog = Watchdog::new(20, "a turn(None) with a stop pending slept");
    el.stop();
    el.turn(&mut (), None).unwrap();
    assert!(el.is_stopping());
}

// ---- check hooks after a panicking one ----

#[derive(Default)]
struct Hooks {
    turn: u32,
    late_ran_in: Vec<u32>,
}

#[test]
fn a_hook_added_in_the_check_phase_waits_for_the_next_turn_even_after_a_panic() {
    let mut el: EventLoop<Hooks> = EventLoop::builder()
        .panic_policy(PanicPolicy::CloseSource)
        .build()
        .unwrap();
    let mut added = false;
    el.add_check(move |ctx, _| {
        if !added {
            added = true;
            ctx.add_check(|_, s: &mut Hooks| {
                s.late_ran_in.push(s.turn);
                true
            });
        }
        true
    });
    el.add_check(|_, _| panic!("a check hook panicked"));
    let mut s = Hooks::default();
    for turn in 1..=3 {
        s.turn = turn;
        el.turn(&mut s, ZERO).unwrap();
    }
    assert_eq!(s.late_ran_in, [2, 3], "a hook added in turn 1 ran in turn 1");
}
