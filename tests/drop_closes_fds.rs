//! Dropping the loop closes every fd it owns.
//!
//! Counts `/proc/self/fd`, so it must be the only test in its binary: any
//! other test running in parallel would open and close fds under it.

mod common;

use std::os::fd::OwnedFd;
use std::time::Duration;

use common::{eventfd, pair, peer_sees_eof, pipe, turn_until};
use evloop::{Action, EventLoop, Interest, LoopGone, TrySendError};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropping_the_loop_closes_every_fd_it_owns() {
    const N: usize = 8;
    let start = open_fds();

    let mut el = EventLoop::builder()
        .high_resolution_timers(true)
        .build::<usize>()
        .unwrap();
    let mut kept_write_ends: Vec<OwnedFd> = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..N {
        let (r, w) = pipe();
        el.register(r, Interest::READABLE, |_fd, _ev, _ctx, _n: &mut usize| {
            Action::Keep
        })
        .unwrap();
        kept_write_ends.push(w);
        let (a, peer) = pair();
        el.register(a, Interest::READABLE, |_s, _ev, _ctx, _n: &mut usize| {
            Action::Keep
        })
        .unwrap();
        peers.push(peer);
    }
    let efd = eventfd();
    el.register(efd, Interest::READABLE, |_fd, _ev, _ctx, _n| Action::Keep)
        .unwrap();
    let tcp = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    el.register(tcp, Interest::READABLE, |_l, _ev, _ctx, _n| Action::Keep)
        .unwrap();
    let udp = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    el.register(udp, Interest::READABLE, |_u, _ev, _ctx, _n| Action::Keep)
        .unwrap();
    el.add_signals(&[libc::SIGUSR1, libc::SIGUSR2], |_sig, _ctx, _n| {})
        .unwrap();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = evloop::channel::<u32>();
        el.add_channel(rx, |_m, _ctx, n: &mut usize| *n += 1).unwrap();
        senders.push(tx);
    }
    let remote = el.remote().unwrap();
    // Callbacks that never run still own what they captured: a far timer and
    // a deferred callback the loop never gets to.
    let (r1, w1) = pipe();
    el.timer_after(Duration::from_secs(3600), move |_f, _ctx, _n| {
        let _owned = (&r1, &w1);
    });
    let (r2, w2) = pipe();
    el.defer(move |_ctx, _n| drop((r2, w2)));

    // Make the loop do some work with them first.
    senders[0].send(1).unwrap();
    senders[1].send(2).unwrap();
    let mut n = 0;
    turn_until(&mut el, &mut n, |n| *n == 2);
    assert!(open_fds() > start);

    drop(el);
    for peer in &mut peers {
        assert!(peer_sees_eof(peer), "the loop's end of every pair is closed");
    }
    for tx in &senders {
        assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
    }
    assert_eq!(remote.post(|_ctx, _n| {}), Err(LoopGone));

    // What the test itself holds: a remote shares the loop's waker, so it
    // keeps that one fd alive until the last remote goes.
    drop((remote, senders, peers, kept_write_ends));
    assert_eq!(open_fds(), start, "fds leaked by the loop");
}
