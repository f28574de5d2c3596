//! Unix signals as a loop source.
//!
//! Dispositions are process-wide and every test here raises or inspects
//! them, so the tests take one lock and run one at a time.

mod common;

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use common::{drain, pair, turn_until, turns};
use evloop::{Action, EventLoop, Interest};
use libc::c_int;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Send `sig` to the process: any thread may take it, at any time soon.
fn raise(sig: c_int) {
    // SAFETY: sends a signal to this process; the test installed a handler first.
    let rc = unsafe { libc::kill(libc::getpid(), sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Send `sig` to this thread: its handler has run when this returns.
fn raise_here(sig: c_int) {
    // SAFETY: sends a signal to the calling thread; the test installed a handler first.
    let rc = unsafe { libc::raise(sig) };
    assert_eq!(rc, 0, "raise: {}", std::io::Error::last_os_error());
}

/// The signal's current handler, read without changing it.
fn disposition(sig: c_int) -> libc::sighandler_t {
    // SAFETY: sigaction is a plain C struct; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
    old.sa_sigaction
}

fn recorder(el: &mut EventLoop<Vec<c_int>>, signals: &[c_int]) -> evloop::SourceId {
    el.add_signals(signals, |sig, _ctx, got: &mut Vec<c_int>| got.push(sig))
        .unwrap()
}

#[test]
fn a_raised_signal_reaches_its_handler() {
    let _g = lock();
    let mut el = EventLoop::new().unwrap();
    recorder(&mut el, &[libc::SIGUSR1]);
    raise(libc::SIGUSR1);
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| !got.is_empty());
    assert_eq!(got, [libc::SIGUSR1]);
}

#[test]
fn two_different_signals_raised_together_are_both_delivered() {
    let _g = lock();
    let mut el = EventLoop::new().unwrap();
    recorder(&mut el, &[libc::SIGUSR2, libc::SIGWINCH]);
    raise(libc::SIGUSR2);
    raise(libc::SIGWINCH);
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 2);
    got.sort_unstable();
    let mut want = vec![libc::SIGUSR2, libc::SIGWINCH];
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn signals_are_dispatched_before_normal_sources() {
    let _g = lock();
    let mut el = EventLoop::new().unwrap();
    let (a, mut peer) = pair();
    // Registered first and ready first, but at normal priority.
    el.register(a, Interest::READABLE, |sock, _ev, _ctx, got: &mut Vec<c_int>| {
        drain(sock);
        got.push(0);
        Action::Keep
    })
    .unwrap();
    recorder(&mut el, &[libc::SIGUSR1]);
    // Both must be ready before the turn polls, so both land in one turn.
    peer.write_all(b"x").unwrap();
    raise_here(libc::SIGUSR1);
    let mut got = Vec::new();
    let t = el.turn(&mut got, Some(common::TICK)).unwrap();
    assert_eq!(t.dispatched, 2);
    assert_eq!(got, [libc::SIGUSR1, 0]);
}

#[test]
fn closing_the_source_restores_the_previous_disposition() {
    let _g = lock();
    let before = disposition(libc::SIGUSR1);
    let mut el = EventLoop::new().unwrap();
    let id = recorder(&mut el, &[libc::SIGUSR1]);
    assert_ne!(disposition(libc::SIGUSR1), before, "ours is installed");
    // A signal owned by a live source cannot be claimed twice.
    let again = el.add_signals(&[libc::SIGUSR1], |_sig, _ctx, _got| {});
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);

    assert!(el.close(id));
    let mut got = Vec::new();
    turns(&mut el, &mut got, 1);
    assert_eq!(disposition(libc::SIGUSR1), before);
    // Released: it can be owned again.
    recorder(&mut el, &[libc::SIGUSR1]);
}

#[test]
fn dropping_the_loop_restores_the_previous_disposition() {
    let _g = lock();
    let before = disposition(libc::SIGUSR2);
    let mut el = EventLoop::new().unwrap();
    recorder(&mut el, &[libc::SIGUSR2]);
    assert_ne!(disposition(libc::SIGUSR2), before);
    drop(el);
    assert_eq!(disposition(libc::SIGUSR2), before);
}

/// A full self-pipe (a stalled loop under a storm of one signal) must not
/// cost a different signal: repeats of one signal may merge, SIGUSR2 behind
/// 70,000 SIGUSR1 (more bytes than the pipe holds) must still arrive.
#[test]
fn a_full_signal_pipe_loses_no_other_signal() {
    let _g = lock();
    let mut el = EventLoop::new().unwrap();
    recorder(&mut el, &[libc::SIGUSR1, libc::SIGUSR2]);
    for _ in 0..70_000 {
        raise_here(libc::SIGUSR1);
    }
    raise_here(libc::SIGUSR2);
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.contains(&libc::SIGUSR2));
    assert!(got.contains(&libc::SIGUSR1));
}
