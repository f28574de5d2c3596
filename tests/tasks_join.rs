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
