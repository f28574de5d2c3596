//! Embedding: a host loop that owns the thread drives evloop through its fd,
//! turning it (without sleeping) when the fd is readable or when
//! `next_deadline` has come.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{drain, pair, TICK};
use evloop::{Action, EventLoop, Interest};
use mio::unix::SourceFd;
use mio::{Events, Poll, Token};

const EVLOOP: Token = Token(0);

#[derive(Default)]
struct S {
    bytes: usize,
    messages: Vec<u32>,
    timer_fired: bool,
    deferred_ran: bool,
}

/// The host: its own poll, watching evloop's fd among whatever else it has.
struct Host {
    poll: Poll,
    events: Events,
    /// Host iterations in which evloop's fd was readable.
    fd_wakeups: usize,
}

impl Host {
    fn new(el: &EventLoop<S>) -> Host {
        let poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut SourceFd(&el.as_raw_fd()), EVLOOP, Interest::READABLE)
            .unwrap();
        Host {
            poll,
            events: Events::with_capacity(16),
            fd_wakeups: 0,
        }
    }

    /// Run host iterations until `done(state)`, at most 200 of them (each
    /// sleeps at most [`TICK`]). Evloop never sleeps inside: it gets a zero
    /// timeout, and only when it has something to do.
    fn drive(&mut self, el: &mut EventLoop<S>, s: &mut S, done: impl Fn(&S) -> bool) {
        for _ in 0..200 {
            if done(s) {
                return;
            }
            let wait = match el.next_deadline() {
                Some(d) => d.saturating_duration_since(Instant::now()).min(TICK),
                None => TICK,
            };
            match self.poll.poll(&mut self.events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("host poll: {e}"),
            }
            let readable = self.events.iter().any(|e| e.token() == EVLOOP);
            self.fd_wakeups += readable as usize;
            let due = el.next_deadline().is_some_and(|d| d <= Instant::now());
            if readable || due {
                el.turn(s, Some(Duration::ZERO)).unwrap();
            }
        }
        panic!("the host loop gave up");
    }
}

#[test]
fn a_source_event_reaches_evloop_through_the_host() {
    let mut el = EventLoop::<S>::new().unwrap();
    let mut host = Host::new(&el);
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |sock, _ev, _ctx, s: &mut S| {
        s.bytes += drain(sock).unwrap_or(0);
        Action::Keep
    })
    .unwrap();
    let mut s = S::default();
    peer.write_all(b"hello").unwrap();
    host.drive(&mut el, &mut s, |s| s.bytes == 5);
    assert!(host.fd_wakeups >= 1);
    // And again, once the first wake-up has been consumed.
    peer.write_all(b"world").unwrap();
    host.drive(&mut el, &mut s, |s| s.bytes == 10);
}

#[test]
fn a_channel_message_reaches_evloop_through_the_host() {
    let mut el = EventLoop::<S>::new().unwrap();
    let mut host = Host::new(&el);
    let (tx, rx) = evloop::channel::<u32>();
    el.add_channel(rx, |m, _ctx, s: &mut S| s.messages.push(m))
        .unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..3 {
            tx.send(i).unwrap();
        }
    });
    let mut s = S::default();
    host.drive(&mut el, &mut s, |s| s.messages.len() == 3);
    sender.join().unwrap();
    assert_eq!(s.messages, [0, 1, 2]);
    assert!(host.fd_wakeups >= 1, "delivered because the fd woke the host");
}

#[test]
fn timers_and_deferred_work_reach_evloop_through_next_deadline() {
    let mut el = EventLoop::<S>::new().unwrap();
    let mut host = Host::new(&el);
    let mut s = S::default();
    assert_eq!(el.next_deadline(), None, "nothing to do: no deadline");

    el.defer(|_ctx, s| s.deferred_ran = true);
    assert!(
        el.next_deadline().unwrap() <= Instant::now(),
        "deferred work is due now"
    );
    host.drive(&mut el, &mut s, |s| s.deferred_ran);

    let id = el.timer_after(Duration::from_millis(20), |_f, _ctx, s| s.timer_fired = true);
    // Never later than the timer (the wheel may answer earlier, with the
    // start of the slot holding it; the turn taken there sharpens it).
    assert!(el.next_deadline().unwrap() <= el.timer_deadline(id).unwrap());
    host.drive(&mut el, &mut s, |s| s.timer_fired);
    assert_eq!(el.next_deadline(), None);
    assert_eq!(
        host.fd_wakeups, 0,
        "the fd had nothing to report: the deadline did it all"
    );
}

/// A burst of ready sources larger than the loop's events buffer: one poll
/// takes only the first, epoll keeps the rest, and the loop's fd raises no
/// new edge for them, so the host must learn from `next_deadline` that the
/// loop needs another turn at once.
#[test]
fn a_burst_larger_than_the_events_buffer_is_served_without_help() {
    let mut el: EventLoop<S> = EventLoop::builder().events_capacity(1).build().unwrap();
    let mut host = Host::new(&el);
    let mut peers = Vec::new();
    for _ in 0..50 {
        let (a, peer) = pair();
        el.register(a, Interest::READABLE, |sock, _ev, _ctx, s: &mut S| {
            s.bytes += drain(sock).unwrap_or(0);
            Action::Keep
        })
        .unwrap();
        peers.push(peer);
    }
    let mut s = S::default();
    for peer in &mut peers {
        peer.write_all(b"x").unwrap();
    }
    host.drive(&mut el, &mut s, |s| s.bytes == 50);
    // A full poll may have been the last one: one more turn finds nothing,
    // and then the loop says so.
    if el.next_deadline().is_some() {
        el.turn(&mut s, Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(el.next_deadline(), None, "nothing is left to do");
}
