//! Channels from other threads into the loop: delivery, order, bounds,
//! disconnection, and the channel source's own lifetime.

mod common;

use std::thread;

use common::{turn_until, turn_until_closed, turns};
use evloop::{bounded, channel, EventLoop, SendError, TrySendError};

#[test]
fn many_senders_every_message_once_in_per_sender_order() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 100_000;
    #[derive(Default)]
    struct S {
        next: [u64; THREADS],
        total: u64,
    }
    let mut el = EventLoop::<S>::new().unwrap();
    let (tx, rx) = channel::<(usize, u64)>();
    let id = el
        .add_channel(rx, |(t, i), _ctx, s: &mut S| {
            // Exactly once and in order, per sender: each message is the
            // next one expected from its thread.
            assert_eq!(i, s.next[t], "sender {t}");
            s.next[t] += 1;
            s.total += 1;
        })
        .unwrap();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    tx.send((t, i)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut s = S::default();
    turn_until(&mut el, &mut s, |s| s.total == THREADS as u64 * PER_THREAD);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(s.next, [PER_THREAD; THREADS]);
    // Every sender is gone and the queue is drained: the source closes itself.
    turn_until_closed(&mut el, &mut s, id);
    assert_eq!(s.total, THREADS as u64 * PER_THREAD);
}

#[test]
fn try_send_on_a_full_bounded_channel_hands_the_message_back() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = bounded::<u32>(2);
    el.add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    tx.try_send(0).unwrap();
    tx.try_send(1).unwrap();
    match tx.try_send(2) {
        Err(TrySendError::Full(m)) => assert_eq!(m, 2),
        other => panic!("expected Full(2), got {other:?}"),
    }
    assert_eq!(tx.try_send(3).unwrap_err().into_inner(), 3);

    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 2);
    assert_eq!(got, [0, 1]);
    // Drained: there is room again.
    tx.try_send(2).unwrap();
    tx.try_send(3).unwrap();
    assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
    turn_until(&mut el, &mut got, |got| got.len() == 4);
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn a_blocking_send_on_a_full_bounded_channel_completes_once_the_loop_drains() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = bounded::<u32>(1);
    el.add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    tx.send(0).unwrap();
    let blocked = thread::spawn(move || {
        // The channel is full: this waits for the loop to make room.
        tx.send(1).unwrap();
        tx.send(2).unwrap();
    });
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 3);
    blocked.join().unwrap();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn sends_fail_as_disconnected_once_the_channel_source_is_closed() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = bounded::<u32>(1);
    let id = el
        .add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    assert!(tx.is_connected());
    tx.send(0).unwrap();
    // A sender blocked on the full channel is released by the close.
    let tx2 = tx.clone();
    let blocked = thread::spawn(move || tx2.send(1));

    assert!(el.close(id));
    let mut got = Vec::new();
    el.turn(&mut got, Some(std::time::Duration::ZERO)).unwrap();
    assert!(got.is_empty(), "a closed channel delivers nothing");
    assert!(!tx.is_connected());
    assert!(matches!(tx.try_send(5), Err(TrySendError::Disconnected(5))));
    assert_eq!(tx.send(6), Err(SendError(6)));
    assert_eq!(blocked.join().unwrap(), Err(SendError(1)));
}

#[test]
fn the_channel_source_closes_itself_when_every_sender_is_gone_and_it_is_drained() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = channel::<u32>();
    let id = el
        .add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    let tx2 = tx.clone();
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let mut got = Vec::new();
    turns(&mut el, &mut got, 2);
    assert_eq!(got, [0, 1, 2]);
    assert!(el.is_open(id), "a clone is still alive");

    tx2.send(3).unwrap();
    drop(tx2);
    turn_until_closed(&mut el, &mut got, id);
    assert_eq!(got, [0, 1, 2, 3], "everything sent is delivered before the close");
}

#[test]
fn messages_sent_before_the_channel_is_registered_are_delivered() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = channel::<u32>();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    el.add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 5);
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[test]
fn a_channel_whose_senders_died_before_registration_still_delivers_then_closes() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = channel::<u32>();
    tx.send(7).unwrap();
    drop(tx);
    let id = el
        .add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    let mut got = Vec::new();
    turn_until_closed(&mut el, &mut got, id);
    assert_eq!(got, [7]);
}

#[test]
fn a_paused_channel_keeps_its_messages_until_resumed() {
    let mut el = EventLoop::<Vec<u32>>::new().unwrap();
    let (tx, rx) = channel::<u32>();
    let id = el
        .add_channel(rx, |m, _ctx, got: &mut Vec<u32>| got.push(m))
        .unwrap();
    el.pause(id).unwrap();
    tx.send(1).unwrap();
    let mut got = Vec::new();
    turns(&mut el, &mut got, 3);
    assert!(got.is_empty());
    el.resume(id).unwrap();
    turn_until(&mut el, &mut got, |got| got.len() == 1);
    assert_eq!(got, [1]);
}
