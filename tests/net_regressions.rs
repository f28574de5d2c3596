//! Edge cases found in review: each test failed before its fix.

use std::cell::RefCell;
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use evloop::net::{self, Addr, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Clock, Ctx, EventLoop, ManualClock};

type Log = Rc<RefCell<Vec<String>>>;

struct Recorder {
    log: Log,
    pause_on_open: bool,
    keep_on_eof: bool,
}

impl Handler<u32> for Recorder {
    fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<u32>, _: &mut u32) {
        self.log.borrow_mut().push("open".into());
        if self.pause_on_open {
            conn.pause_reading();
        }
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<u32>, _: &mut u32) -> usize {
        conn.write(data);
        data.len()
    }
    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<u32>, _: &mut u32) {
        self.log.borrow_mut().push("eof".into());
        if !self.keep_on_eof {
            conn.close();
        }
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<u32>, _: &mut u32) {
        self.log.borrow_mut().push(format!("close {reason:?}"));
    }
}

fn serve(
    el: &mut EventLoop<u32>,
    cfg: ListenConfig,
    log: &Log,
    pause_on_open: bool,
    keep_on_eof: bool,
) -> TcpStream {
    let log = log.clone();
    let l = net::listen(
        el,
        &"127.0.0.1:0".parse().unwrap(),
        cfg,
        move |_, _, _, accepted: &mut u32| {
            *accepted += 1;
            Some(Recorder {
                log: log.clone(),
                pause_on_open,
                keep_on_eof,
            })
        },
    )
    .unwrap();
    let Addr::Tcp(addr) = l.addr else { unreachable!() };
    TcpStream::connect(addr).unwrap()
}

/// Turn until `cond` holds, at most 200 turns of at most 20 ms each.
fn turn_until(el: &mut EventLoop<u32>, n: &mut u32, mut cond: impl FnMut(&mut u32) -> bool) -> bool {
    for _ in 0..200 {
        if cond(n) {
            return true;
        }
        el.turn(n, Some(Duration::from_millis(20))).unwrap();
    }
    cond(n)
}

/// A connection whose handler paused reading (nothing queued) is parked in
/// the loop; its idle timeout must still close it.
#[test]
fn idle_timeout_closes_a_connection_paused_by_its_handler() {
    let clock = ManualClock::new();
    let mut el = EventLoop::builder()
        .clock(Clock::Manual(clock.clone()))
        .build::<u32>()
        .unwrap();
    let log = Log::default();
    let mut cfg = ListenConfig::default();
    cfg.conn.idle_timeout = Some(Duration::from_secs(10));
    let _client = serve(&mut el, cfg, &log, true, false);
    let mut n = 0;
    assert!(turn_until(&mut el, &mut n, |_| log.borrow().len() == 1));
    clock.advance(Duration::from_secs(11));
    assert!(
        turn_until(&mut el, &mut n, |_| log.borrow().len() == 2),
        "parked connection never closed: {:?}",
        log.borrow()
    );
    assert_eq!(*log.borrow(), ["open", "close Idle"]);
}

/// After EOF the handler keeps the connection open; a reset that follows
/// must still close it and reach `on_close`.
#[test]
fn reset_after_eof_is_reported() {
    let mut el = EventLoop::<u32>::new().unwrap();
    let log = Log::default();
    let client = serve(&mut el, ListenConfig::default(), &log, false, true);
    let mut n = 0;
    assert!(turn_until(&mut el, &mut n, |_| log.borrow().len() == 1));
    client.shutdown(Shutdown::Write).unwrap();
    assert!(turn_until(&mut el, &mut n, |_| log.borrow().len() == 2));
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    assert!(
        turn_until(&mut el, &mut n, |_| log.borrow().len() == 3),
        "reset after EOF never reported: {:?}",
        log.borrow()
    );
    assert_eq!(*log.borrow(), ["open", "eof", "close Reset"]);
}

/// `accept_budget: 0` must not reschedule for ever without accepting.
#[test]
fn zero_accept_budget_still_accepts() {
    let mut el = EventLoop::<u32>::new().unwrap();
    let log = Log::default();
    let cfg = ListenConfig {
        accept_budget: 0,
        ..ListenConfig::default()
    };
    let _client = serve(&mut el, cfg, &log, false, false);
    let mut accepted = 0;
    assert!(turn_until(&mut el, &mut accepted, |n| *n == 1), "never accepted");
}
