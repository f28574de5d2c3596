//! Blocking work and name resolution for tasks: `task::spawn_blocking` and
//! `task::resolve` on the loop's worker pool, with every outcome (a value,
//! a panic, a full queue, a dropped future, no task at all) seen by the
//! awaiting task, and the loop's state free to borrow (no `'static`).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;
use std::time::Duration;

use evloop::{task, Builder, EventLoop};

/// Bound every wait on a worker: a test that hangs fails instead.
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn tasks_get_their_own_jobs_results_back() {
    let mut el = EventLoop::<()>::new().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    for i in 0..40u64 {
        let got = got.clone();
        el.spawn(async move {
            let square = task::spawn_blocking(move || {
                // Finish out of order, so a result reaching the wrong task
                // would show.
                std::thread::sleep(Duration::from_micros((40 - i) * 50));
                i * i
            })
            .await
            .unwrap();
            got.borrow_mut().push((i, square));
        })
        .unwrap();
    }
    el.block_on(
        &mut (),
        task::timeout(LIMIT, async {
            while got.borrow().len() < 40 {
                task::yield_now().await;
            }
        }),
    )
    .unwrap()
    .expect("every job came back");
    let mut got = got.take();
    got.sort_unstable();
    assert_eq!(got, (0..40).map(|i| (i, i * i)).collect::<Vec<_>>());
}

#[test]
fn a_panicking_job_is_an_error_for_its_task_only() {
    let mut el = EventLoop::<()>::new().unwrap();
    let (bad, good) = el
        .block_on(&mut (), async {
            let bad = task::spawn_blocking(|| -> u8 { panic!("job went wrong") }).await;
            let good = task::spawn_blocking(|| 7u8).await;
            (bad, good)
        })
        .unwrap();
    let err = bad.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(err.to_string().contains("job went wrong"), "{err}");
    assert_eq!(good.unwrap(), 7);
}

/// Poll `f` once (it must wait), and go on without it.
async fn poll_once<F: Future>(mut f: std::pin::Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        assert!(f.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await
}

#[test]
fn a_full_queue_refuses_the_job_with_would_block() {
    let mut el = Builder::default()
        .blocking_threads(1)
        .blocking_queue(1)
        .build::<()>()
        .unwrap();
    let (release, held) = mpsc::channel::<()>();
    let (started, has_started) = mpsc::channel::<()>();
    let out = el
        .block_on(&mut (), async move {
            // One job runs (and waits for the test), one waits in the queue:
            // a third finds the queue full.
            let running = task::spawn_blocking(move || {
                started.send(()).unwrap();
                held.recv_timeout(LIMIT).is_ok()
            });
            let mut running = std::pin::pin!(running);
            // Poll it once, so it is noted and started, then go on.
            poll_once(running.as_mut()).await;
            // The job starts when this poll returns; then the worker has it.
            task::yield_now().await;
            has_started.recv_timeout(LIMIT).unwrap();
            let queued = task::spawn_blocking(|| 2u8);
            let mut queued = std::pin::pin!(queued);
            poll_once(queued.as_mut()).await;
            task::yield_now().await;
            let refused = task::spawn_blocking(|| 3u8).await;
            release.send(()).unwrap();
            (running.await, queued.await, refused)
        })
        .unwrap();
    assert!(out.0.unwrap(), "the first job ran to its end");
    assert_eq!(out.1.unwrap(), 2);
    assert_eq!(out.2.unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

/// A timeout drops the future while its job runs: the result is discarded,
/// the loop goes on, and the next job's result is not mistaken for it.
#[test]
fn a_job_whose_future_was_dropped_is_discarded() {
    let mut el = EventLoop::<()>::new().unwrap();
    let (release, held) = mpsc::channel::<()>();
    let out = el
        .block_on(&mut (), async move {
            let slow = task::timeout(
                Duration::from_millis(1),
                task::spawn_blocking(move || held.recv_timeout(LIMIT).map(|()| 1u32)),
            )
            .await;
            release.send(()).unwrap();
            let next = task::spawn_blocking(|| 2u32).await;
            // Let the dropped job's result arrive and be thrown away.
            task::sleep(Duration::from_millis(20)).await;
            (slow.map(|_| ()), next)
        })
        .unwrap();
    assert_eq!(out.0.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert_eq!(out.1.unwrap(), 2);
    // The loop still turns and runs jobs.
    assert_eq!(
        el.block_on(&mut (), task::spawn_blocking(|| 3u32))
            .unwrap()
            .unwrap(),
        3
    );
}

#[test]
fn awaited_outside_a_task_it_is_an_error_not_a_hang() {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let job = task::spawn_blocking(|| 1u8);
    let mut job = std::pin::pin!(job);
    match job.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.to_string().contains("outside a task"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The loop's state may borrow (`S` is not `'static`): the task layer
/// starts jobs without asking more of it than the loop does.
#[test]
fn the_loops_state_may_borrow() {
    let mut log = Vec::new();
    {
        let mut el = EventLoop::<&mut Vec<u32>>::new().unwrap();
        let got = el.block_on(&mut &mut log, task::spawn_blocking(|| 5u32)).unwrap();
        drop(el);
        log.push(got.unwrap());
    }
    assert_eq!(log, [5]);
}

#[test]
fn resolve_numeric_names_and_refuse_bad_ones() {
    let mut el = EventLoop::<()>::new().unwrap();
    let (v4, v6, bad, no_port) = el
        .block_on(&mut (), async {
            (
                task::resolve("127.0.0.1:80").await,
                task::resolve("[::1]:443").await,
                task::resolve("host:99999").await,
                task::resolve("localhost").await,
            )
        })
        .unwrap();
    assert_eq!(v4.unwrap(), ["127.0.0.1:80".parse().unwrap()]);
    assert_eq!(v6.unwrap(), ["[::1]:443".parse().unwrap()]);
    assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(no_port.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

/// A host name goes through the system resolver on a worker ("localhost"
/// is in /etc/hosts, so no network is needed).
#[test]
fn resolve_a_host_name_on_the_pool() {
    let mut el = EventLoop::<()>::new().unwrap();
    let addrs = el
        .block_on(&mut (), task::timeout(LIMIT, task::resolve("localhost:6000")))
        .unwrap()
        .expect("resolved within the limit")
        .unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs.iter().all(|a| a.port() == 6000 && a.ip().is_loopback()),
        "{addrs:?}"
    );
}
