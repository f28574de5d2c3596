//! `Ctx::spawn_blocking`: work on the pool, `done` back on the loop in
//! completion order; panics on either side; the queue bound; what dropping
//! the loop does to queued and running jobs; no thread before first use.

mod common;

use std::cell::RefCell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use common::{turn_until, Watchdog, TICK};
use evloop::{EventLoop, PanicPolicy};

/// How long a job waits for its gate before giving up: far beyond what a
/// passing test needs, so a failing one ends instead of hanging a worker.
const GATE_LIMIT: Duration = Duration::from_secs(30);

/// A job held on a worker until the test opens its gate.
fn gate() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
    let (open, gate) = mpsc::channel();
    (open, move || {
        gate.recv_timeout(GATE_LIMIT)
            .expect("the test never opened the gate");
    })
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<AtomicBool>, DropFlag) {
    let f = Arc::new(AtomicBool::new(false));
    (f.clone(), DropFlag(f))
}

/// Wait (boundedly) for something another thread will do.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < give_up, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A loop with a pool of `threads` workers and a queue bound of `queue`.
fn pool<S>(threads: usize, queue: usize) -> EventLoop<S> {
    EventLoop::builder()
        .blocking_threads(threads)
        .blocking_queue(queue)
        .build()
        .unwrap()
}

#[test]
fn dones_run_on_the_loop_in_the_order_the_jobs_complete() {
    let _dog = Watchdog::new(30, "jobs released in a chosen order");
    let mut el = pool::<Vec<(usize, ThreadId)>>(4, 16);
    let loop_thread = thread::current().id();
    let mut gates = Vec::new();
    for i in 0..4 {
        let (open, wait) = gate();
        gates.push(open);
        el.spawn_blocking(
            move || {
                wait();
                (i, thread::current().id())
            },
            move |r, _ctx, got: &mut Vec<(usize, ThreadId)>| {
                assert_eq!(thread::current().id(), loop_thread, "done runs on the loop");
                got.push(r.unwrap());
            },
        )
        .unwrap();
    }
    let mut got = Vec::new();
    let order = [2, 0, 3, 1];
    for (n, &i) in order.iter().enumerate() {
        gates[i].send(()).unwrap();
        turn_until(&mut el, &mut got, |got| got.len() == n + 1);
    }
    let done: Vec<usize> = got.iter().map(|&(i, _)| i).collect();
    assert_eq!(done, order);
    assert!(
        got.iter().all(|&(_, worker)| worker != loop_thread),
        "work runs off the loop"
    );
}

#[test]
fn one_worker_completes_a_batch_in_queue_order() {
    let _dog = Watchdog::new(30, "a batch of jobs on one worker");
    let mut el = pool::<Vec<usize>>(1, 1024);
    for i in 0..200 {
        el.spawn_blocking(move || i, |r, _ctx, got: &mut Vec<usize>| got.push(r.unwrap()))
            .unwrap();
    }
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 200);
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn a_burst_of_completions_is_all_delivered() {
    let _dog = Watchdog::new(30, "a burst of 1000 completions");
    const JOBS: usize = 1000;
    let mut el = pool::<Vec<usize>>(4, JOBS);
    for i in 0..JOBS {
        el.spawn_blocking(
            move || i * 2,
            |r, _ctx, got: &mut Vec<usize>| got.push(r.unwrap()),
        )
        .unwrap();
    }
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == JOBS);
    got.sort_unstable();
    assert_eq!(got, (0..JOBS).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn a_panicking_job_gives_done_an_error_and_its_worker_goes_on() {
    let _dog = Watchdog::new(30, "jobs around a panicking one");
    type Got = Vec<io::Result<ThreadId>>;
    let mut el = pool::<Got>(1, 16);
    let record = |r: io::Result<ThreadId>, _: &mut evloop::Ctx<Got>, got: &mut Got| got.push(r);
    el.spawn_blocking(|| thread::current().id(), record).unwrap();
    el.spawn_blocking(|| -> ThreadId { panic!("boom {}", 42) }, record)
        .unwrap();
    el.spawn_blocking(|| thread::current().id(), record).unwrap();
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 3);
    let e = got[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Other);
    let msg = e.to_string();
    assert!(msg.contains("panicked") && msg.contains("boom 42"), "{msg}");
    let (before, after) = (got[0].as_ref().unwrap(), got[2].as_ref().unwrap());
    assert_eq!(before, after, "the one worker survived the panic");
}

#[test]
fn a_panicking_done_follows_the_panic_policy_and_later_results_still_arrive() {
    let _dog = Watchdog::new(30, "results after a panicking done");
    for policy in [PanicPolicy::CloseSource, PanicPolicy::Propagate] {
        let mut el: EventLoop<Vec<u32>> = EventLoop::builder().panic_policy(policy).build().unwrap();
        el.spawn_blocking(|| 1, |_, _, _: &mut Vec<u32>| panic!("done panics"))
            .unwrap();
        let mut got = Vec::new();
        let mut panics = 0;
        for round in 0..3 {
            el.spawn_blocking(move || round, |r, _ctx, got: &mut Vec<u32>| got.push(r.unwrap()))
                .unwrap();
            for _ in 0..common::MAX_IDLE_TURNS {
                if got.len() == round as usize + 1 {
                    break;
                }
                match catch_unwind(AssertUnwindSafe(|| el.turn(&mut got, Some(TICK)))) {
                    Ok(turn) => {
                        turn.unwrap();
                    }
                    Err(_) => panics += 1,
                }
            }
            assert_eq!(got, (0..=round).collect::<Vec<_>>(), "{policy:?}");
        }
        match policy {
            PanicPolicy::Propagate => assert_eq!(panics, 1, "the panic reached the caller once"),
            PanicPolicy::CloseSource => {
                assert_eq!(panics, 0);
                assert_eq!(el.metrics().panics, 1);
            }
        }
    }
}

#[test]
fn a_full_queue_refuses_the_next_job_and_drops_its_done() {
    let _dog = Watchdog::new(30, "filling the blocking queue");
    let mut el = pool::<Vec<&'static str>>(1, 2);
    let (open, wait) = gate();
    let (started_tx, started) = mpsc::channel();
    let push = |name| {
        move |r: io::Result<()>, _: &mut evloop::Ctx<_>, got: &mut Vec<&str>| {
            r.unwrap();
            got.push(name);
        }
    };
    el.spawn_blocking(
        move || {
            started_tx.send(()).unwrap();
            wait();
        },
        push("held"),
    )
    .unwrap();
    started
        .recv_timeout(GATE_LIMIT)
        .expect("the worker never took the first job");
    // The one worker is busy: these two fill the queue.
    el.spawn_blocking(|| (), push("queued 1")).unwrap();
    el.spawn_blocking(|| (), push("queued 2")).unwrap();
    let (done_dropped, in_done) = flag();
    let e = el
        .spawn_blocking(
            || (),
            move |_, _, got: &mut Vec<&str>| {
                let _keep = &in_done;
                got.push("refused");
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(e.to_string().contains("blocking_queue"), "{e}");
    assert!(e.to_string().contains('2'), "names the bound: {e}");
    assert!(
        done_dropped.load(Ordering::SeqCst),
        "the refused job's done is dropped"
    );

    open.send(()).unwrap();
    let mut got = Vec::new();
    turn_until(&mut el, &mut got, |got| got.len() == 3);
    assert_eq!(got, ["held", "queued 1", "queued 2"]);
    el.spawn_blocking(|| (), push("after")).unwrap();
    turn_until(&mut el, &mut got, |got| got.len() == 4);
    assert_eq!(got[3], "after");
}

thread_local! {
    /// Set by a job on its worker: dropped when that thread exits.
    static ON_EXIT: RefCell<Option<DropFlag>> = const { RefCell::new(None) };
}

#[test]
fn dropping_the_loop_drops_queued_jobs_and_does_not_wait_for_running_ones() {
    let _dog = Watchdog::new(30, "dropping a loop whose worker is blocked");
    let mut el = pool::<()>(1, 16);
    let (open, wait) = gate();
    let (started_tx, started) = mpsc::channel();
    let (worker_exited, on_exit) = flag();
    let (result_dropped, result) = flag();
    let (running_done_dropped, running_done) = flag();
    el.spawn_blocking(
        move || {
            ON_EXIT.with(|f| *f.borrow_mut() = Some(on_exit));
            started_tx.send(()).unwrap();
            wait();
            result
        },
        move |_, _, _| drop(running_done),
    )
    .unwrap();
    started
        .recv_timeout(GATE_LIMIT)
        .expect("the worker never took the first job");
    let ran = Arc::new(AtomicBool::new(false));
    let (queued_work_dropped, queued_work) = flag();
    let (queued_done_dropped, queued_done) = flag();
    let ran_in_job = ran.clone();
    el.spawn_blocking(
        move || {
            let _keep = &queued_work;
            ran_in_job.store(true, Ordering::SeqCst);
        },
        move |_, _, _| drop(queued_done),
    )
    .unwrap();

    // The worker is still blocked: this returns without waiting for it.
    drop(el);
    assert!(
        queued_work_dropped.load(Ordering::SeqCst),
        "the queued job is dropped"
    );
    assert!(queued_done_dropped.load(Ordering::SeqCst), "and its done");
    assert!(
        running_done_dropped.load(Ordering::SeqCst),
        "the running job's done too"
    );
    assert!(
        !result_dropped.load(Ordering::SeqCst),
        "the running job is still running"
    );

    open.send(()).unwrap();
    eventually("the running job's result is discarded", || {
        result_dropped.load(Ordering::SeqCst)
    });
    eventually("the idle worker exits", || worker_exited.load(Ordering::SeqCst));
    assert!(!ran.load(Ordering::SeqCst), "the queued job never ran");
}

/// Threads of this process, from /proc.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

const CHILD_ENV: &str = "EVLOOP_TEST_THREAD_COUNT_CHILD";

/// Counting threads means nothing while other tests start and end theirs,
/// so [`thread_count_child`] runs alone in a process of its own.
#[test]
fn no_thread_starts_before_the_first_spawn_blocking() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "thread_count_child",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || io::read_to_string(&mut out).unwrap_or_default());
    let err = thread::spawn(move || io::read_to_string(&mut err).unwrap_or_default());
    let give_up = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            child.kill().unwrap();
            panic!("the thread-counting child did not finish");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "thread_count_child failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains("1 passed"), "the child ran no test:\n{out}");
}

/// Run by [`no_thread_starts_before_the_first_spawn_blocking`] in a process
/// of its own.
#[test]
#[ignore = "run by no_thread_starts_before_the_first_spawn_blocking in its own process"]
fn thread_count_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let before = threads();
    let mut el = pool::<u32>(4, 16);
    let (tx, rx) = evloop::channel();
    el.add_channel(rx, |n, _, got: &mut u32| *got += n).unwrap();
    el.defer(|_, got| *got += 1);
    tx.send(1).unwrap();
    let mut got = 0;
    turn_until(&mut el, &mut got, |&got| got == 2);
    assert_eq!(
        threads(),
        before,
        "a loop that never spawns blocking work starts no thread"
    );

    el.spawn_blocking(|| 5, |r, _, got: &mut u32| *got += r.unwrap())
        .unwrap();
    turn_until(&mut el, &mut got, |&got| got == 7);
    assert_eq!(
        threads(),
        before + 1,
        "one job starts one worker, not the whole pool"
    );
}
