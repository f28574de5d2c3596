//! Cost per dispatched event: evloop beside a hand-written mio loop doing the
//! same work in the same run.
//!
//! Two groups, each at 1, 64 and 1,024 sources ready per turn:
//!
//! - `dispatch_eventfd`: every source is an eventfd (registered READABLE,
//!   edge-triggered as mio does). An iteration writes 1 to each, runs one
//!   turn (evloop) or one zero-timeout poll (by hand), and every handler
//!   reads its eventfd and bumps a counter. The syscalls dominate here.
//! - `dispatch_scheduled`: sources made ready without the kernel, so the
//!   loop's own overhead shows: evloop schedules all N (`Ctx::schedule`) and
//!   turns; the hand-written loop queues N ids and calls their boxed
//!   closures from a slab. Both still make one zero-timeout `epoll_wait` per
//!   turn, as a turn of evloop does.
//!
//! Every iteration asserts that exactly N handlers did their work. The cost
//! per event of each and the ratio evloop / hand-written are printed at the
//! end, from criterion's estimates and from an interleaved re-run (see
//! `common::Report`).
//!
//! `cargo bench --bench dispatch -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use common::sources::{drain, evloop_eventfds, evloop_inert, raise_fd_limit, signal, EventFd};
use common::{Report, Unit};
use criterion::Criterion;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// Sources ready per turn.
const SIZES: [usize; 3] = [1, 64, 1024];

/// The same by hand: a poll, its events buffer, and fds indexed by token.
struct HandLoop {
    poll: Poll,
    events: Events,
    fds: Slab<OwnedFd>,
}

impl HandLoop {
    fn new(n: usize) -> HandLoop {
        let poll = Poll::new().unwrap();
        let mut fds = Slab::with_capacity(n);
        for _ in 0..n {
            let entry = fds.vacant_entry();
            let fd = EventFd::new().0;
            poll.registry()
                .register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    Token(entry.key()),
                    Interest::READABLE,
                )
                .unwrap();
            entry.insert(fd);
        }
        // The same capacity as evloop's default.
        HandLoop {
            poll,
            events: Events::with_capacity(1024),
            fds,
        }
    }

    fn turn(&mut self, count: &mut u64) {
        self.poll.poll(&mut self.events, Some(Duration::ZERO)).unwrap();
        for event in self.events.iter() {
            if let Some(fd) = self.fds.get(event.token().0) {
                *count += drain(fd.as_raw_fd());
            }
        }
    }
}

fn bench_eventfd(c: &mut Criterion, report: &mut Report) {
    let mut group = c.benchmark_group("dispatch_eventfd");
    for n in SIZES {
        let (mut el, ev_fds) = evloop_eventfds(n);
        let mut ev_count = 0u64;
        let mut hand = HandLoop::new(n);
        let hand_fds: Vec<RawFd> = hand.fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let mut hand_count = 0u64;
        report.compare(
            &mut group,
            "dispatch_eventfd",
            &n.to_string(),
            n as u64,
            || {
                let before = ev_count;
                for &fd in &ev_fds {
                    signal(fd);
                }
                el.turn(&mut ev_count, Some(Duration::ZERO)).unwrap();
                assert_eq!(ev_count - before, n as u64);
            },
            || {
                let before = hand_count;
                for &fd in &hand_fds {
                    signal(fd);
                }
                hand.turn(&mut hand_count);
                assert_eq!(hand_count - before, n as u64);
            },
        );
    }
    group.finish();
}

type Handler = Box<dyn FnMut(&mut u64)>;

/// The smallest loop that does the same: a slab of boxed closures, a list of
/// pending ids, and one zero-timeout poll per turn.
struct HandQueue {
    poll: Poll,
    events: Events,
    handlers: Slab<Handler>,
    pending: Vec<usize>,
}

impl HandQueue {
    fn new(n: usize) -> HandQueue {
        let mut handlers: Slab<Handler> = Slab::with_capacity(n);
        for _ in 0..n {
            handlers.insert(Box::new(|count: &mut u64| *count += 1));
        }
        HandQueue {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(1024),
            handlers,
            pending: Vec::with_capacity(n),
        }
    }

    fn turn(&mut self, count: &mut u64) {
        self.poll.poll(&mut self.events, Some(Duration::ZERO)).unwrap();
        for &key in &self.pending {
            if let Some(handler) = self.handlers.get_mut(key) {
                handler(count);
            }
        }
        self.pending.clear();
    }
}

fn bench_scheduled(c: &mut Criterion, report: &mut Report) {
    let mut group = c.benchmark_group("dispatch_scheduled");
    for n in SIZES {
        let (mut el, ids) = evloop_inert(n);
        let mut ev_count = 0u64;
        let mut hand = HandQueue::new(n);
        let keys: Vec<usize> = hand.handlers.iter().map(|(key, _)| key).collect();
        let mut hand_count = 0u64;
        report.compare(
            &mut group,
            "dispatch_scheduled",
            &n.to_string(),
            n as u64,
            || {
                let before = ev_count;
                for &id in &ids {
                    el.schedule(id);
                }
                el.turn(&mut ev_count, Some(Duration::ZERO)).unwrap();
                assert_eq!(ev_count - before, n as u64);
            },
            || {
                let before = hand_count;
                hand.pending.extend_from_slice(black_box(&keys));
                hand.turn(&mut hand_count);
                assert_eq!(hand_count - before, n as u64);
            },
        );
    }
    group.finish();
}

fn main() {
    raise_fd_limit();
    let mut c = Criterion::default().configure_from_args();
    let mut report = Report::new("evloop", "handwritten", Unit::NsPerElement);
    bench_eventfd(&mut c, &mut report);
    bench_scheduled(&mut c, &mut report);
    c.final_summary();
    report.print();
}
