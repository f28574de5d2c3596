//! Misuse that does nothing says so in the log, once where it would repeat:
//! a call by a connection's own id from inside its handler, and a poll
//! that would sleep for good on a manual clock.
//!
//! A process has one logger, so this is the only test in its binary.

mod common;
mod common_log;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use common::pair;
use common_log::{install, take_lines};
use evloop::net::{self, Conn, ConnectConfig, Handler, Target};
use evloop::{Action, Ctx, Interest};

/// Closes itself by id on open (wrongly), then for real.
struct SelfCloser;

impl Handler<Vec<bool>> for SelfCloser {
    fn on_open(&mut self, conn: &mut Conn, ctx: &mut Ctx<Vec<bool>>, said: &mut Vec<bool>) {
        said.push(net::close(ctx, conn.id()));
        said.push(net::write(ctx, conn.id(), b"x"));
        conn.close();
    }
    fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<Vec<bool>>, _: &mut Vec<bool>) -> usize {
        data.len()
    }
    fn on_close(&mut self, _: &mut Conn, _: net::CloseReason, ctx: &mut Ctx<Vec<bool>>, _: &mut Vec<bool>) {
        ctx.stop();
    }
}

#[test]
fn misuse_that_does_nothing_is_logged() {
    install(log::LevelFilter::Warn);

    // By its own id, from inside its own handler: refused, and said.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let to: Target = server.local_addr().unwrap().into();
    let mut el = evloop::EventLoop::new().unwrap();
    net::connect(&mut el, &to, ConnectConfig::default(), SelfCloser).unwrap();
    let mut said = Vec::new();
    for _ in 0..500 {
        if el.is_stopping() || said.len() == 2 {
            break;
        }
        el.turn(&mut said, Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(said, [false, false]);
    let lines = take_lines();
    let by_id = lines
        .iter()
        .filter(|l| l.contains("cannot be reached by id"))
        .count();
    assert_eq!(by_id, 2, "{lines:?}");

    // A timer on a manual clock and a poll with no timeout: said once.
    let (mut el, _clock) = common::manual_loop::<()>();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |s: &mut mio::net::UnixStream, _, _, _| {
        let _ = std::io::Read::read(s, &mut [0u8; 16]);
        Action::Keep
    })
    .unwrap();
    el.timer_after(Duration::from_secs(1), |_, _, _| {});
    for _ in 0..3 {
        // An event ready, so the unbounded poll returns at once.
        peer.write_all(b"x").unwrap();
        el.turn(&mut (), None).unwrap();
    }
    let lines = take_lines();
    let manual = lines.iter().filter(|l| l.contains("ManualClock")).count();
    assert_eq!(manual, 1, "{lines:?}");
    // Bounded by the caller, the poll is not a hang: nothing to say.
    let (mut el, _clock) = common::manual_loop::<()>();
    el.timer_after(Duration::from_secs(1), |_, _, _| {});
    el.turn(&mut (), Some(Duration::ZERO)).unwrap();
    assert!(take_lines().is_empty());
}
