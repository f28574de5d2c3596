//! A spawned task's output through its `JoinHandle`: the value when it
//! finishes, an `Interrupted` error when it is cancelled, panics or is
//! dropped with its loop, and nothing held when the handle is dropped.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use evloop::task::{self, JoinHandle};
use evloop::{Builder, EventLoop, PanicPolicy};

#[test]
fn the_handle_gives_the_tasks_output() {
    let mut el = EventLoop::<()>::new().unwrap();
    let got = el
        .block_on(&mut (), async {
            let handles: Vec<JoinHandle<u32>> = (0..10u32)
                .map(|i| {
                    task::spawn(async move {
                        // Finish in an order unlike the spawn order.
                        for _ in 0..(10 - i) {
                            task::yield_now().await;
                        }
                        i * 3
                    })
                    .unwrap()
                })
                .collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
        .unwrap();
    assert_eq!(got, (0..10).map(|i| i * 3).collect::<Vec<_>>());
}

/// A task that records its id and then waits for good.
fn parked(id: &Rc<Cell<Option<evloop::SourceId>>>) -> JoinHandle<u8> {
    let id = id.clone();
    task::spawn(async move {
        id.set(task::current());
        std::future::pending::<u8>().await
    })
    .unwrap()
}

/// Also a regression test: the cancel is applied after `block_on`'s poll,
/// between turns, and the task is dropped (waking the handle's reader) at
/// the next turn's end; that turn's poll used to wait for ever first.
#[test]
fn a_cancelled_task_is_an_interrupted_error() {
    let mut el = EventLoop::<()>::new().unwrap();
    let err = el
        .block_on(&mut (), async {
            let id = Rc::new(Cell::new(None));
            let h = parked(&id);
            task::yield_now().await;
            task::cancel(id.get().expect("polled once")).unwrap();
            h.await.unwrap_err()
        })
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
}

#[test]
fn a_panicking_task_is_an_interrupted_error_under_close_source() {
    let mut el = Builder::default()
        .panic_policy(PanicPolicy::CloseSource)
        .build::<()>()
        .unwrap();
    let (err, fine) = el
        .block_on(&mut (), async {
            let bad = task::spawn(async {
                task::yield_now().await;
                panic!("task went wrong");
            })
            .unwrap();
            let good = task::spawn(async { 5u8 }).unwrap();
            (bad.await.unwrap_err(), good.await.unwrap())
        })
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
    assert_eq!(fine, 5);
}

#[test]
#[allow(clippy::async_yields_async)] // the handle is taken out on purpose, unawaited
fn a_task_dropped_with_its_loop_is_an_interrupted_error() {
    let mut el = EventLoop::<()>::new().unwrap();
    let mut h = el
        .block_on(&mut (), async {
            let h = parked(&Rc::new(Cell::new(None)));
            task::yield_now().await;
            h
        })
        .unwrap();
    drop(el);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(std::pin::Pin::new(&mut h), &mut cx) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::Interrupted),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_dropped_handle_lets_the_task_run_on() {
    let mut el = EventLoop::<()>::new().unwrap();
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    el.block_on(&mut (), async move {
        drop(
            task::spawn(async move {
                task::yield_now().await;
                flag.set(true);
            })
            .unwrap(),
        );
        for _ in 0..3 {
            task::yield_now().await;
        }
    })
    .unwrap();
    assert!(ran.get());
}

/// `spawn_n` runs a task with no handle at all (eventlet's `spawn_n`), and,
/// like `spawn`, only from inside a task.
#[test]
fn spawn_n_runs_a_task_with_no_handle() {
    let mut el = EventLoop::<()>::new().unwrap();
    let ran = Rc::new(Cell::new(0));
    let count = ran.clone();
    el.block_on(&mut (), async move {
        for _ in 0..3 {
            let count = count.clone();
            task::spawn_n(async move { count.set(count.get() + 1) }).unwrap();
        }
        task::yield_now().await;
    })
    .unwrap();
    assert_eq!(ran.get(), 3);
    let err = task::spawn_n(async {}).unwrap_err();
    assert!(err.to_string().contains("outside a task"), "{err}");
}

/// Drops its flag when its future is dropped: shows an aborted task's
/// future went (and with it what it owned).
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn an_aborted_task_is_dropped_and_its_handle_interrupted() {
    let mut el = EventLoop::<()>::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let (err, was_dropped_before_await) = el
        .block_on(&mut (), async move {
            let flag = DropFlag(d.clone());
            let h: JoinHandle<u8> = task::spawn(async move {
                let _flag = flag;
                std::future::pending::<u8>().await
            })
            .unwrap();
            task::yield_now().await; // it is parked now
            h.abort();
            task::yield_now().await;
            let gone = d.get();
            (h.await.unwrap_err(), gone)
        })
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    assert!(
        was_dropped_before_await,
        "the future was dropped at its next poll"
    );
    assert!(dropped.get());
}

#[test]
fn an_abort_before_the_first_poll_or_after_the_end() {
    let mut el = EventLoop::<()>::new().unwrap();
    let polled = Rc::new(Cell::new(false));
    let p = polled.clone();
    let (early, late) = el
        .block_on(&mut (), async move {
            // Aborted before it ever ran: it never runs.
            let early: JoinHandle<u8> = task::spawn(async move {
                p.set(true);
                1
            })
            .unwrap();
            early.abort();
            // Finished before the abort: the abort changes nothing.
            let late = task::spawn(async { 2u8 }).unwrap();
            for _ in 0..3 {
                task::yield_now().await;
            }
            late.abort();
            (early.await, late.await)
        })
        .unwrap();
    assert_eq!(early.unwrap_err().kind(), io::ErrorKind::Interrupted);
    assert!(!polled.get());
    assert_eq!(late.unwrap(), 2);
}

#[test]
fn abort_from_a_handler_outside_any_task() {
    let mut el = EventLoop::<()>::new().unwrap();
    let handle: Rc<Cell<Option<JoinHandle<u8>>>> = Rc::default();
    let h = handle.clone();
    el.block_on(&mut (), async move {
        h.set(Some(task::spawn(std::future::pending::<u8>()).unwrap()));
        task::yield_now().await;
    })
    .unwrap();
    let h = handle.take().unwrap();
    // From a timer callback (no task is polled there).
    let slot = Rc::new(Cell::new(Some(h)));
    let in_timer = slot.clone();
    let got: Rc<Cell<Option<io::ErrorKind>>> = Rc::default();
    el.timer_after(std::time::Duration::ZERO, move |_, _, _| {
        if let Some(h) = in_timer.take() {
            h.abort();
            in_timer.set(Some(h));
        }
    });
    el.turn(&mut (), Some(std::time::Duration::from_millis(10)))
        .unwrap();
    let h = slot.take().unwrap();
    let g = got.clone();
    el.block_on(&mut (), async move { g.set(h.await.err().map(|e| e.kind())) })
        .unwrap();
    assert_eq!(got.get(), Some(io::ErrorKind::Interrupted));
}
