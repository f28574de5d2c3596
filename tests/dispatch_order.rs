//! Dispatch order within a turn: by priority, then the order in which sources
//! became ready (first ready, first served); and rescheduling as the cure for
//! edge-triggered starvation.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{drain, pair, TICK};
use evloop::{Action, EventLoop, Interest, Priority, Ready};

/// Register `n` socket pairs whose handlers drain and record their number.
fn recorders(el: &mut EventLoop<Vec<usize>>, n: usize) -> Vec<(evloop::SourceId, UnixStream)> {
    (0..n)
        .map(|i| {
            let (a, peer) = pair();
            let id = el
                .register(
                    a,
                    Interest::READABLE,
                    move |sock, _ev, _ctx, order: &mut Vec<usize>| {
                        drain(sock);
                        order.push(i);
                        Action::Keep
                    },
                )
                .unwrap();
            (id, peer)
        })
        .collect()
}

#[test]
fn ready_sources_run_in_the_order_they_became_ready() {
    const N: usize = 64;
    let mut el = EventLoop::new().unwrap();
    let mut sources = recorders(&mut el, N);
    // Make them ready in a scrambled order (37 is coprime to 64, so this
    // visits every index once): registration order is not what counts.
    let scrambled: Vec<usize> = (0..N).map(|k| (k * 37 + 11) % N).collect();
    for &i in &scrambled {
        sources[i].1.write_all(b"x").unwrap();
    }
    let mut order = Vec::new();
    let turn = el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(turn.dispatched, N);
    assert_eq!(order, scrambled);

    // Again, reversed, to be sure it was not luck.
    order.clear();
    for (_, peer) in sources.iter_mut().rev() {
        peer.write_all(b"y").unwrap();
    }
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, (0..N).rev().collect::<Vec<_>>());
}

#[test]
fn a_source_ready_again_before_the_poll_keeps_its_first_place() {
    let mut el = EventLoop::new().unwrap();
    let mut sources = recorders(&mut el, 3);
    for i in [2, 0, 2, 1, 0] {
        sources[i].1.write_all(b"x").unwrap();
    }
    let mut order = Vec::new();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [2, 0, 1], "one dispatch each, at its first readiness");
}

#[test]
fn priority_comes_before_readiness_order() {
    let mut el = EventLoop::new().unwrap();
    let mut sources = recorders(&mut el, 6);
    let prio = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Low,
        Priority::High,
        Priority::Normal,
    ];
    for ((id, _), p) in sources.iter().zip(prio) {
        el.set_priority(*id, p).unwrap();
    }
    for (_, peer) in sources.iter_mut().rev() {
        peer.write_all(b"x").unwrap();
    }
    let mut order = Vec::new();
    el.turn(&mut order, Some(TICK)).unwrap();
    // High (4, 2), Normal (5, 1), Low (3, 0): each class in readiness order.
    assert_eq!(order, [4, 2, 5, 1, 3, 0]);
}

#[test]
fn rescheduled_sources_come_before_what_the_poll_found() {
    let mut el = EventLoop::<Vec<usize>>::new().unwrap();
    let mut sources = recorders(&mut el, 2);
    // Source 2 is registered last and reschedules itself once: it was ready
    // before the next turn's poll, so that turn dispatches it first.
    let (c, mut c_peer) = pair();
    el.register(
        c,
        Interest::READABLE,
        |sock, _ev, _ctx, order: &mut Vec<usize>| {
            drain(sock);
            order.push(2);
            if order.iter().filter(|&&i| i == 2).count() == 1 {
                Action::Reschedule
            } else {
                Action::Keep
            }
        },
    )
    .unwrap();
    c_peer.write_all(b"x").unwrap();
    let mut order = Vec::new();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [2]);
    sources[1].1.write_all(b"x").unwrap();
    sources[0].1.write_all(b"x").unwrap();
    order.clear();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [2, 1, 0]);
}

#[test]
fn a_channel_is_dispatched_where_its_wake_up_came() {
    let mut el = EventLoop::<Vec<usize>>::new().unwrap();
    let mut sources = recorders(&mut el, 2);
    let (tx, rx) = evloop::channel::<()>();
    el.add_channel(rx, |(), _ctx, order: &mut Vec<usize>| order.push(9))
        .unwrap();
    sources[1].1.write_all(b"x").unwrap();
    tx.send(()).unwrap();
    sources[0].1.write_all(b"x").unwrap();
    let mut order = Vec::new();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [1, 9, 0]);
}

#[test]
fn a_handler_that_always_reschedules_does_not_starve_the_others() {
    #[derive(Default)]
    struct S {
        hog: usize,
        others: [usize; 3],
    }
    let mut el = EventLoop::<S>::new().unwrap();
    // The hog reschedules itself, so it comes first in every turn (a
    // rescheduled source was ready before anything the poll finds).
    let (h, mut hog_peer) = pair();
    el.register(h, Interest::READABLE, |_sock, _ev, _ctx, s: &mut S| {
        s.hog += 1;
        Action::Reschedule
    })
    .unwrap();
    let mut peers = Vec::new();
    for i in 0..3 {
        let (a, peer) = pair();
        el.register(a, Interest::READABLE, move |sock, _ev, _ctx, s: &mut S| {
            drain(sock);
            s.others[i] += 1;
            Action::Keep
        })
        .unwrap();
        peers.push(peer);
    }
    hog_peer.write_all(b"x").unwrap();
    let mut s = S::default();
    for turn in 1..=20 {
        for peer in &mut peers {
            peer.write_all(b"x").unwrap();
        }
        let t = el.turn(&mut s, Some(TICK)).unwrap();
        assert_eq!(t.dispatched, 4, "turn {turn}");
        assert_eq!(s.hog, turn);
        assert_eq!(s.others, [turn; 3]);
    }
}

#[test]
fn reschedule_redispatches_with_the_same_readiness_without_a_kernel_event() {
    let mut el = EventLoop::<Vec<Ready>>::new().unwrap();
    let (a, mut peer) = pair();
    el.register(a, Interest::READABLE, |_sock, ev, _ctx, seen: &mut Vec<Ready>| {
        seen.push(ev.ready);
        // Never read: under edge-triggered polling the kernel stays silent
        // after the first event, so only the reschedule can bring us back.
        if seen.len() < 3 {
            Action::Reschedule
        } else {
            Action::Keep
        }
    })
    .unwrap();
    peer.write_all(b"x").unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        assert_eq!(el.turn(&mut seen, Some(TICK)).unwrap().dispatched, 1);
    }
    assert_eq!(seen.len(), 3);
    assert!(seen[0].is_readable());
    assert!(seen.iter().all(|&r| r == seen[0]), "{seen:?}");
    // Keep returned: no new kernel event, so no more dispatches.
    assert_eq!(el.turn(&mut seen, Some(TICK)).unwrap().dispatched, 0);
}

#[test]
fn schedule_dispatches_once_with_empty_readiness() {
    let mut el = EventLoop::<Vec<Ready>>::new().unwrap();
    let (a, _peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |_sock, ev, _ctx, seen: &mut Vec<Ready>| {
            seen.push(ev.ready);
            Action::Keep
        })
        .unwrap();
    assert!(el.schedule(id));
    assert!(el.schedule(id));
    let mut seen = Vec::new();
    el.turn(&mut seen, Some(TICK)).unwrap();
    assert_eq!(
        seen,
        [Ready::EMPTY],
        "two schedules in one turn merge into one dispatch"
    );
    el.turn(&mut seen, Some(TICK)).unwrap();
    assert_eq!(seen.len(), 1);
}

#[test]
fn scheduled_and_kernel_readiness_merge_into_one_dispatch() {
    let mut el = EventLoop::<Vec<Ready>>::new().unwrap();
    let (a, mut peer) = pair();
    let id = el
        .register(a, Interest::READABLE, |sock, ev, _ctx, seen: &mut Vec<Ready>| {
            drain(sock);
            seen.push(ev.ready);
            Action::Keep
        })
        .unwrap();
    el.schedule(id);
    peer.write_all(b"x").unwrap();
    let mut seen = Vec::new();
    let t = el.turn(&mut seen, Some(TICK)).unwrap();
    assert_eq!(t.dispatched, 1);
    assert_eq!(seen.len(), 1);
    assert!(seen[0].is_readable());
}

#[test]
fn a_priority_set_by_its_own_handler_orders_the_next_turns() {
    let mut el = EventLoop::new().unwrap();
    let (a, mut peer_a) = pair();
    let (b, mut peer_b) = pair();
    let a_id = el
        .register(a, Interest::READABLE, |sock, ev, ctx, order: &mut Vec<usize>| {
            drain(sock);
            order.push(0);
            // From the next turn on: this turn's order is already fixed.
            ctx.set_priority(ev.id, Priority::Low).unwrap();
            Action::Keep
        })
        .unwrap();
    let b_id = el
        .register(
            b,
            Interest::READABLE,
            |sock, _ev, _ctx, order: &mut Vec<usize>| {
                drain(sock);
                order.push(1);
                Action::Keep
            },
        )
        .unwrap();
    let mut order = Vec::new();
    peer_a.write_all(b"x").unwrap();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [0]);

    // A became ready first, but is Low now: B, then A.
    order.clear();
    peer_a.write_all(b"x").unwrap();
    peer_b.write_all(b"x").unwrap();
    el.turn(&mut order, Some(TICK)).unwrap();
    assert_eq!(order, [1, 0]);

    // And back, from outside a handler: B Low, A High.
    el.set_priority(b_id, Priority::Low).unwrap();
    el.set_priority(a_id, Priority::High).unwrap();
    order.clear();
    peer_b.write_all(b"x").unwrap();
    peer_a.write_all(b"x").unwrap();
    el.turn(&mut order, Some(TICK)).unwrap();
    // A's handler made itself Low again, but only after it ran.
    assert_eq!(order, [0, 1]);
}

/// A mio source made of two sockets registered under its one token.
struct TwoSockets(mio::net::UnixStream, mio::net::UnixStream);

impl mio::event::Source for TwoSockets {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> std::io::Result<()> {
        self.0.register(r, t, i)?;
        self.1.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> std::io::Result<()> {
        self.0.reregister(r, t, i)?;
        self.1.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> std::io::Result<()> {
        self.0.deregister(r)?;
        self.1.deregister(r)
    }
}

#[test]
fn a_source_with_two_ready_fds_runs_once_per_turn_and_loses_nothing() {
    let mut el = EventLoop::<Vec<(Ready, usize)>>::new().unwrap();
    let (a, mut peer_a) = pair();
    let (b, mut peer_b) = pair();
    el.register(
        TwoSockets(a, b),
        Interest::READABLE,
        |two, ev, _ctx, seen: &mut Vec<(Ready, usize)>| {
            let n = drain(&mut two.0).unwrap_or(0) + drain(&mut two.1).unwrap_or(0);
            seen.push((ev.ready, n));
            Action::Keep
        },
    )
    .unwrap();
    peer_a.write_all(b"aa").unwrap();
    peer_b.write_all(b"bbb").unwrap();
    let mut seen = Vec::new();
    let t = el.turn(&mut seen, Some(TICK)).unwrap();
    assert_eq!(
        t.dispatched, 1,
        "two events under one token merge into one dispatch"
    );
    assert_eq!(seen.len(), 1);
    assert!(seen[0].0.is_readable());
    assert_eq!(seen[0].1, 5, "every byte was read");
    let t = el.turn(&mut seen, Some(Duration::ZERO)).unwrap();
    assert_eq!(t.dispatched, 0);
}

#[test]
fn a_large_table_keeps_the_order_and_the_closes_made_during_the_turn() {
    // Past the table size from which dispatch loads sources ahead of their
    // turn (256), in both turns (a third are closed in the first): what an
    // earlier handler does to a later source must still hold when that
    // source's turn comes. N is not a multiple of the batch of 8, so the
    // last batch is a short one.
    const N: usize = 401;
    struct State {
        order: Vec<usize>,
        ids: Vec<evloop::SourceId>,
    }
    let mut el: EventLoop<State> = EventLoop::new().unwrap();
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for i in 0..N {
        let (a, peer) = pair();
        let id = el
            .register(a, Interest::READABLE, move |sock, _ev, ctx, st: &mut State| {
                drain(sock);
                st.order.push(i);
                // Every third source closes the next one, which may or may
                // not have run already this turn.
                if i % 3 == 0 {
                    ctx.close(st.ids[(i + 1) % N]);
                }
                Action::Keep
            })
            .unwrap();
        ids.push(id);
        peers.push(peer);
    }
    let mut st = State {
        order: Vec::new(),
        ids,
    };
    let scrambled: Vec<usize> = (0..N).map(|k| (k * 7 + 3) % N).collect(); // 401 is prime: every index once
    for &i in &scrambled {
        peers[i].write_all(b"x").unwrap();
    }
    let mut closed = vec![false; N];
    let mut expected = Vec::new();
    for &i in &scrambled {
        if !closed[i] {
            expected.push(i);
            if i % 3 == 0 {
                closed[(i + 1) % N] = true;
            }
        }
    }
    assert!(el.source_count() >= 256);
    let turn = el.turn(&mut st, Some(TICK)).unwrap();
    assert_eq!(turn.dispatched, expected.len());
    assert_eq!(st.order, expected);

    // Next turn: every source still open runs once more, in the new order;
    // the closed ones never again.
    st.order.clear();
    for peer in peers.iter_mut().rev() {
        // A closed source's peer may see EPIPE; that is fine.
        let _ = peer.write_all(b"y");
    }
    assert!(el.source_count() >= 256);
    el.turn(&mut st, Some(TICK)).unwrap();
    let open: Vec<usize> = (0..N).rev().filter(|&i| !closed[i]).collect();
    assert_eq!(st.order, open);
}
