//! `AsyncReceiver`: a bounded channel's capacity holds for a task (a
//! message counts until `recv` returns it), nothing is lost or reordered,
//! and a `recv` dropped under a timeout takes nothing.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::{turn_until, turns, Watchdog};
use evloop::task::{self, AsyncReceiver};
use evloop::{EventLoop, TrySendError};

/// A task that has not yet asked for a message holds a bounded channel's
/// senders back at its capacity, however often the loop turns; each
/// message it receives makes room for one more. (Its receiver took up to
/// 64 messages ahead of the task, so `bounded(2)` let 66 through.)
#[test]
fn a_bounded_channel_is_full_at_its_capacity_until_the_task_receives() {
    let _watchdog = Watchdog::new(20, "a_bounded_channel_is_full_at_its_capacity");
    let mut el = EventLoop::<()>::new().unwrap();
    let (tx, rx) = evloop::bounded::<u32>(2);
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let wanted = Rc::new(Cell::new(0usize));
    let got = Rc::new(RefCell::new(Vec::new()));
    let (w, g) = (wanted.clone(), got.clone());
    el.spawn(async move {
        loop {
            // Receive only as many as the test asks for.
            while g.borrow().len() >= w.get() {
                task::yield_now().await;
            }
            match rx.recv().await {
                Some(n) => g.borrow_mut().push(n),
                None => break,
            }
        }
        g.borrow_mut().push(u32::MAX);
    })
    .unwrap();

    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    turns(&mut el, &mut (), 5);
    assert!(
        matches!(tx.try_send(3), Err(TrySendError::Full(3))),
        "two messages the task has not received fill a channel of two"
    );
    wanted.set(1);
    turn_until(&mut el, &mut (), |_| got.borrow().len() == 1);
    tx.try_send(3).unwrap();
    assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
    wanted.set(usize::MAX);
    drop(tx);
    turn_until(&mut el, &mut (), |_| got.borrow().last() == Some(&u32::MAX));
    assert_eq!(*got.borrow(), [1, 2, 3, u32::MAX]);
}

/// A sender on another thread blocked on a full `bounded(1)` moves on as
/// the task receives: every message arrives, in order, then `None`.
#[test]
fn blocked_senders_move_on_as_the_task_receives() {
    const N: u32 = 2_000;
    let _watchdog = Watchdog::new(30, "blocked_senders_move_on_as_the_task_receives");
    let mut el = EventLoop::<()>::new().unwrap();
    let (tx, rx) = evloop::bounded::<u32>(1);
    let rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let sender = std::thread::spawn(move || {
        for n in 0..N {
            tx.send(n).unwrap();
        }
    });
    let got = receive_all(&mut el, rx, u32::MAX);
    sender.join().unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// Receive until `None` in a task, yielding after every `pause`th message.
fn receive_all(el: &mut EventLoop<()>, mut rx: AsyncReceiver<u32>, pause: u32) -> Vec<u32> {
    el.block_on(&mut (), async move {
        let mut got = Vec::new();
        while let Some(n) = rx.recv().await {
            got.push(n);
            if n % pause == 0 {
                task::yield_now().await;
            }
        }
        got
    })
    .unwrap()
}

/// An unbounded channel fed faster than the task receives loses nothing
/// and keeps the order, across many takes.
#[test]
fn an_unbounded_channel_delivers_everything_in_order() {
    const N: u32 = 20_000;
    let _watchdog = Watchdog::new(30, "an_unbounded_channel_delivers_everything_in_order");
    let mut el = EventLoop::<()>::new().unwrap();
    let (tx, rx) = evloop::channel::<u32>();
    for n in 0..10 {
        tx.send(n).unwrap();
    }
    // Sent before it was registered, then from another thread meanwhile.
    let rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let sender = std::thread::spawn(move || {
        for n in 10..N {
            tx.send(n).unwrap();
        }
    });
    let got = receive_all(&mut el, rx, 97);
    sender.join().unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// `recv` under a timeout that fires takes no message: the next `recv`
/// gets the first one sent.
#[test]
fn a_recv_dropped_by_a_timeout_takes_nothing() {
    let _watchdog = Watchdog::new(20, "a_recv_dropped_by_a_timeout_takes_nothing");
    let mut el = EventLoop::<()>::new().unwrap();
    let (tx, rx) = evloop::bounded::<u32>(4);
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let got = el
        .block_on(&mut (), async move {
            let first = task::timeout(Duration::from_millis(1), rx.recv()).await;
            assert!(first.is_err(), "nothing was sent yet");
            tx.try_send(7).unwrap();
            tx.try_send(8).unwrap();
            // Dropped once a message is there but before it is polled.
            drop(rx.recv());
            drop(tx);
            let mut got = Vec::new();
            while let Some(n) = rx.recv().await {
                got.push(n);
            }
            got
        })
        .unwrap();
    assert_eq!(got, [7, 8]);
}
