//! Tasks as sources: wake order is dispatch order, one poll per turn,
//! wakes from other threads, cancel from everywhere, stale ids, timeouts on
//! the manual clock, and panics under both policies.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use common::{eventfd, eventfd_read, eventfd_write, turn_until, turns, FdSource, Watchdog};
use evloop::net::Addr;
use evloop::task::{self, AsyncReceiver};
use evloop::{Action, Builder, Clock, EventLoop, Interest, ManualClock, PanicPolicy, Priority, SourceId};

type Log = Rc<RefCell<Vec<String>>>;

/// Gates a test opens by hand: `wait(i)` is pending until gate `i` is
/// opened, and keeps the waker of whoever waits so the test can wake it.
#[derive(Clone, Default)]
struct Gates(Rc<RefCell<Vec<Gate>>>);

/// Open (to be passed once), and who waits at it.
type Gate = (bool, Option<Waker>);

impl Gates {
    fn new(n: usize) -> Gates {
        Gates(Rc::new(RefCell::new(vec![(false, None); n])))
    }

    fn wait(&self, i: usize) -> impl Future<Output = ()> {
        let gates = self.clone();
        std::future::poll_fn(move |cx| {
            let mut g = gates.0.borrow_mut();
            if std::mem::take(&mut g[i].0) {
                return Poll::Ready(());
            }
            g[i].1 = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Open gate `i` and wake its waiter (through the task's own `Waker`).
    fn open(&self, i: usize) {
        let waker = {
            let mut g = self.0.borrow_mut();
            g[i].0 = true;
            g[i].1.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A task that logs `name` each time gate `i` opens.
fn gated(gates: &Gates, i: usize, log: &Log, name: &str) -> impl Future<Output = ()> {
    let (gates, log, name) = (gates.clone(), log.clone(), name.to_string());
    async move {
        loop {
            gates.wait(i).await;
            log.borrow_mut().push(name.clone());
        }
    }
}

/// An eventfd source that logs `name` and runs `f` when dispatched; also
/// returns a second handle on the eventfd, to make it ready from the test.
fn logged_fd(
    el: &mut EventLoop<()>,
    log: &Log,
    name: &'static str,
    mut f: impl FnMut(&mut evloop::Ctx<()>) + 'static,
) -> (SourceId, std::os::fd::OwnedFd) {
    let fd = eventfd();
    let poke = fd.0.try_clone().unwrap();
    let log = log.clone();
    let id = el
        .register(fd, Interest::READABLE, move |fd: &mut FdSource, _ev, ctx, _| {
            eventfd_read(fd.as_raw_fd());
            log.borrow_mut().push(name.into());
            f(ctx);
            Action::Keep
        })
        .unwrap();
    (id, poke)
}

#[test]
fn wake_order_is_dispatch_order_with_sources_and_priorities() {
    let mut el = EventLoop::<()>::new().unwrap();
    let log: Log = Rc::default();
    let gates = Gates::new(5);
    let ids: Vec<SourceId> = (0..5)
        .map(|i| el.spawn(gated(&gates, i, &log, &format!("t{i}"))).unwrap())
        .collect();
    el.set_priority(ids[4], Priority::High).unwrap();
    turns(&mut el, &mut (), 1); // every task parks at its gate
    assert!(log.borrow().is_empty());

    // A high-priority handler wakes tasks in a scrambled order while two
    // normal sources are ready too.
    let g = gates.clone();
    let (h, h_poke) = logged_fd(&mut el, &log, "H", move |_| {
        for i in [3, 0, 4, 1, 2] {
            g.open(i);
        }
    });
    el.set_priority(h, Priority::High).unwrap();
    let (_, e1) = logged_fd(&mut el, &log, "E1", |_| {});
    let (_, e2) = logged_fd(&mut el, &log, "E2", |_| {});
    eventfd_write(e1.as_raw_fd(), 1);
    eventfd_write(e2.as_raw_fd(), 1);
    eventfd_write(h_poke.as_raw_fd(), 1);
    turns(&mut el, &mut (), 1);
    // H first (high), then the kernel's order; the tasks H woke come behind
    // what was already ready, in wake order, the high-priority one first.
    assert_eq!(*log.borrow(), ["H", "E1", "E2", "t4", "t3", "t0", "t1", "t2"]);

    // Wakes before the poll come before the poll's events, in wake order.
    log.borrow_mut().clear();
    eventfd_write(e2.as_raw_fd(), 1);
    for i in [2, 0, 1] {
        gates.open(i);
    }
    turns(&mut el, &mut (), 1);
    assert_eq!(*log.borrow(), ["t2", "t0", "t1", "E2"]);
}

/// A task that counts its polls and ends once both its sleep and its
/// gate are done.
fn sleep_and_gate(gates: &Gates, polls: &Rc<Cell<usize>>, d: Duration) -> impl Future<Output = ()> {
    let (gates, polls) = (gates.clone(), polls.clone());
    let mut sleep = task::sleep(d);
    let mut gate = Box::pin(gates.wait(0));
    let (mut slept, mut opened) = (false, false);
    std::future::poll_fn(move |cx| {
        polls.set(polls.get() + 1);
        slept = slept || std::pin::Pin::new(&mut sleep).poll(cx).is_ready();
        opened = opened || gate.as_mut().poll(cx).is_ready();
        if slept && opened {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

#[test]
fn woken_by_a_timer_and_by_io_in_one_turn_is_polled_once() {
    let clock = ManualClock::new();
    let mut el = Builder::default()
        .clock(Clock::Manual(clock.clone()))
        .build::<()>()
        .unwrap();
    let log: Log = Rc::default();
    let gates = Gates::new(1);
    let polls = Rc::new(Cell::new(0));
    let t = el
        .spawn(sleep_and_gate(&gates, &polls, Duration::from_secs(5)))
        .unwrap();
    // Low: behind the handler that wakes it too, whatever woke it first.
    el.set_priority(t, Priority::Low).unwrap();
    turns(&mut el, &mut (), 1);
    assert_eq!(polls.get(), 1);
    let g = gates.clone();
    let (_, poke) = logged_fd(&mut el, &log, "io", move |_| g.open(0));
    clock.advance(Duration::from_secs(5));
    eventfd_write(poke.as_raw_fd(), 1);
    turns(&mut el, &mut (), 1);
    assert_eq!(
        *log.borrow(),
        ["io"],
        "the I/O and the timer both came in this turn"
    );
    assert_eq!(polls.get(), 2, "two wakes, one poll");
    assert!(!el.is_open(t), "both were seen by that one poll");
    assert_eq!(el.timer_count(), 0);
}

#[test]
fn a_task_woken_from_another_thread() {
    let _dog = Watchdog::new(30, "a_task_woken_from_another_thread");
    let mut el = EventLoop::<()>::new().unwrap();
    let polls = Rc::new(Cell::new(0usize));
    let shared: Arc<(AtomicUsize, std::sync::Mutex<Option<Waker>>)> = Arc::default();
    let (p, s) = (polls.clone(), shared.clone());
    let id = el
        .spawn(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            *s.1.lock().unwrap() = Some(cx.waker().clone());
            if s.0.load(Ordering::Acquire) >= 1000 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
        .unwrap();
    turns(&mut el, &mut (), 1);
    let waker = shared.1.lock().unwrap().clone().unwrap();
    let s = shared.clone();
    // A burst of wakes from one thread, then the loop runs.
    std::thread::spawn(move || {
        for _ in 0..1000 {
            s.0.fetch_add(1, Ordering::AcqRel);
            waker.wake_by_ref();
        }
    })
    .join()
    .unwrap();
    // The wake-ups went through the loop's one waker: the poll returns.
    for _ in 0..common::MAX_IDLE_TURNS {
        if !el.is_open(id) {
            break;
        }
        el.turn(&mut (), None).unwrap();
    }
    assert!(!el.is_open(id), "the task saw the thread's work");
    assert_eq!(polls.get(), 2, "a burst of 1,000 wakes is one poll");
}

#[test]
fn cancel_from_its_own_poll_from_another_task_and_from_a_handler() {
    let mut el = EventLoop::<()>::new().unwrap();
    let log: Log = Rc::default();
    let gates = Gates::new(4);
    let dropped = Rc::new(RefCell::new(Vec::<&str>::new()));

    // Records its drop.
    struct Guard(&'static str, Rc<RefCell<Vec<&'static str>>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.1.borrow_mut().push(self.0);
        }
    }

    // Own poll: cancels itself, then would log if polled again.
    let (g, l, d) = (gates.clone(), log.clone(), dropped.clone());
    let own = el
        .spawn(async move {
            let _guard = Guard("own", d);
            g.wait(0).await;
            task::cancel(task::current().unwrap()).unwrap();
            l.borrow_mut().push("own cancelled itself".into());
            std::future::pending::<()>().await;
        })
        .unwrap();
    // Victim of another task: woken in the same turn, after its killer.
    let (g, l, d) = (gates.clone(), log.clone(), dropped.clone());
    let victim = el
        .spawn(async move {
            let _guard = Guard("victim", d);
            loop {
                g.wait(2).await;
                l.borrow_mut().push("victim polled".into());
            }
        })
        .unwrap();
    let (g, l) = (gates.clone(), log.clone());
    el.spawn(async move {
        g.wait(1).await;
        task::cancel(victim).unwrap();
        l.borrow_mut().push("killer".into());
    })
    .unwrap();
    // Victim of a handler.
    let (d, l) = (dropped.clone(), log.clone());
    let target = el
        .spawn(async move {
            let _guard = Guard("target", d);
            std::future::pending::<()>().await;
            l.borrow_mut().push("never".into());
        })
        .unwrap();
    turns(&mut el, &mut (), 1);

    gates.open(0);
    gates.open(1);
    gates.open(2);
    turns(&mut el, &mut (), 1);
    assert_eq!(*log.borrow(), ["own cancelled itself", "killer"]);
    assert!(!el.is_open(own) && !el.is_open(victim));
    assert_eq!(
        *dropped.borrow(),
        ["own", "victim"],
        "dropped at the end of the turn"
    );

    let (_, poke) = logged_fd(&mut el, &log, "handler", move |ctx| {
        assert!(ctx.cancel_task(target));
        assert!(!ctx.cancel_task(target), "already cancelled");
    });
    eventfd_write(poke.as_raw_fd(), 1);
    turns(&mut el, &mut (), 1);
    assert!(!el.is_open(target));
    assert_eq!(*dropped.borrow(), ["own", "victim", "target"]);
    // A source that is no task is not cancelled.
    let (fd_id, _poke) = logged_fd(&mut el, &log, "fd", |_| {});
    assert!(!el.cancel_task(fd_id));
    assert!(el.is_open(fd_id));
}

#[test]
fn a_stale_task_id_reaches_nothing_after_its_slot_is_reused() {
    let mut el = EventLoop::<()>::new().unwrap();
    let log: Log = Rc::default();
    let gates = Gates::new(2);
    let old = el.spawn(gated(&gates, 0, &log, "old")).unwrap();
    turns(&mut el, &mut (), 1);
    let stale_waker = gates.0.borrow()[0].1.clone().unwrap();
    assert!(el.cancel_task(old));
    turns(&mut el, &mut (), 1);
    let new = el.spawn(gated(&gates, 1, &log, "new")).unwrap();
    assert_eq!(new.index(), old.index(), "the slot is reused");
    turns(&mut el, &mut (), 1);
    assert!(!el.cancel_task(old), "the old id is stale");
    stale_waker.wake_by_ref();
    gates.0.borrow_mut()[0].0 = true;
    turns(&mut el, &mut (), 2);
    assert!(
        log.borrow().is_empty(),
        "the old waker does not poll the new task"
    );
    assert!(el.is_open(new));
    gates.open(1);
    turns(&mut el, &mut (), 1);
    assert_eq!(*log.borrow(), ["new"]);
}

#[test]
fn timeouts_on_the_manual_clock() {
    let clock = ManualClock::new();
    let mut el = Builder::default()
        .clock(Clock::Manual(clock.clone()))
        .build::<()>()
        .unwrap();
    let results: Rc<RefCell<Vec<String>>> = Rc::default();
    let (tx, rx) = evloop::channel::<u32>();
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let (_silent_tx, silent) = evloop::channel::<u32>();
    let mut silent = AsyncReceiver::register(&mut el, silent).unwrap();
    let r = results.clone();
    el.spawn(async move {
        let got = task::timeout(Duration::from_secs(10), rx.recv()).await;
        r.borrow_mut()
            .push(format!("answered {:?}", got.map_err(|e| e.kind())));
        let got = task::timeout(Duration::from_secs(3), silent.recv()).await;
        r.borrow_mut()
            .push(format!("silent {:?}", got.map_err(|e| e.kind())));
    })
    .unwrap();
    turns(&mut el, &mut (), 1);
    assert_eq!(el.timer_count(), 1);
    clock.advance(Duration::from_secs(9));
    turns(&mut el, &mut (), 1);
    assert!(results.borrow().is_empty(), "9 s of 10: not yet");
    tx.send(7).unwrap();
    turns(&mut el, &mut (), 2);
    assert_eq!(*results.borrow(), ["answered Ok(Some(7))"]);
    assert_eq!(
        el.timer_count(),
        1,
        "the first timer was cancelled, the second armed"
    );
    clock.advance(Duration::from_millis(2_999));
    turns(&mut el, &mut (), 2);
    assert_eq!(results.borrow().len(), 1);
    clock.advance(Duration::from_millis(1));
    turns(&mut el, &mut (), 2);
    assert_eq!(
        *results.borrow(),
        ["answered Ok(Some(7))", "silent Err(TimedOut)"]
    );
    assert_eq!(el.timer_count(), 0);
}

/// A task that owns a connection accepted from `listener` and panics on
/// the first line it reads; returns the client.
fn panicking_task_with_a_connection(el: &mut EventLoop<()>) -> std::net::TcpStream {
    let listener = task::listen(el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    el.spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        let mut line = Vec::new();
        conn.read_line(&mut line).await.unwrap();
        panic!("task exploded");
    })
    .unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(common::TICK)).unwrap();
    client
}

/// Turn until the client sees its connection closed (EOF).
fn turn_until_closed_for(el: &mut EventLoop<()>, client: &mut std::net::TcpStream) {
    let mut buf = [0u8; 16];
    for _ in 0..200 {
        let r = catch_unwind(AssertUnwindSafe(|| el.turn(&mut (), Some(common::TICK))));
        if let Ok(r) = r {
            r.unwrap();
        }
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => panic!("nothing was to be echoed"),
            Err(_) => continue,
        }
    }
    panic!("the panicking task's connection was never closed");
}

#[test]
fn a_panicking_task_under_close_source_is_dropped_with_its_connection() {
    let mut el = Builder::default()
        .panic_policy(PanicPolicy::CloseSource)
        .build::<()>()
        .unwrap();
    let mut client = panicking_task_with_a_connection(&mut el);
    let alive = Rc::new(Cell::new(0));
    let a = alive.clone();
    el.spawn(async move {
        loop {
            task::sleep(Duration::from_millis(1)).await;
            a.set(a.get() + 1);
        }
    })
    .unwrap();
    client
        .write_all(
            b"boom
",
        )
        .unwrap();
    turn_until_closed_for(&mut el, &mut client);
    assert_eq!(el.metrics().panics, 1);
    let before = alive.get();
    turn_until(&mut el, &mut (), |_| alive.get() > before + 2);
}

#[test]
fn a_panicking_task_under_propagate_escapes_turn_and_its_connection_closes() {
    let mut el = EventLoop::<()>::new().unwrap();
    let mut client = panicking_task_with_a_connection(&mut el);
    client
        .write_all(
            b"boom
",
        )
        .unwrap();
    let mut escaped = false;
    for _ in 0..200 {
        if catch_unwind(AssertUnwindSafe(|| el.turn(&mut (), Some(common::TICK)))).is_err() {
            escaped = true;
            break;
        }
    }
    assert!(escaped, "the panic escaped turn");
    turn_until_closed_for(&mut el, &mut client);
}

/// A child spawned by a poll that then panics under `Propagate` is left
/// with the hub, not yet placed; the owner drops the loop after catching
/// the panic. The child goes with the loop (it held the hub through its
/// listener: a cycle that leaked it, and any fd it owned).
#[test]
fn a_child_of_a_poll_that_panicked_is_dropped_with_the_loop() {
    let _watchdog = Watchdog::new(20, "a_child_of_a_poll_that_panicked");
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let mut el = EventLoop::<()>::builder()
        .panic_policy(PanicPolicy::Propagate)
        .build()
        .unwrap();
    let listener = task::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    el.spawn(async move {
        task::spawn_n(async move {
            let _flag = flag;
            let _holds_the_hub = listener;
            std::future::pending::<()>().await;
        })
        .unwrap();
        panic!("after spawning");
    })
    .unwrap();
    let escaped = catch_unwind(AssertUnwindSafe(|| turns(&mut el, &mut (), 3)));
    assert!(escaped.is_err(), "the panic left turn");
    drop(el);
    assert!(dropped.get(), "the child was dropped with the loop");
}

/// `block_on` leaves no source behind when it returns (the one standing
/// for its future counted in `source_count` until the next turn).
#[test]
fn block_on_leaves_no_source_behind() {
    let mut el = EventLoop::<()>::new().unwrap();
    // The hub's own source comes with the first task; a turn then reclaims
    // whatever that first `block_on` left.
    el.block_on(&mut (), async {}).unwrap();
    el.turn(&mut (), Some(Duration::ZERO)).unwrap();
    let before = el.source_count();
    let n = el
        .block_on(&mut (), async {
            task::yield_now().await;
            task::current().is_some()
        })
        .unwrap();
    assert!(n);
    assert_eq!(el.source_count(), before);
}

/// A future that panics in `block_on` is the caller's panic, under either
/// policy, and leaves no source behind: the loop goes on serving.
#[test]
fn a_panicking_block_on_leaves_no_source_behind() {
    for policy in [PanicPolicy::CloseSource, PanicPolicy::Propagate] {
        let mut el = EventLoop::builder().panic_policy(policy).build::<()>().unwrap();
        el.block_on(&mut (), async {}).unwrap();
        el.turn(&mut (), Some(Duration::ZERO)).unwrap();
        let before = el.source_count();
        for _ in 0..10 {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                el.block_on(&mut (), async {
                    task::yield_now().await;
                    panic!("the future's own");
                })
            }));
            assert!(caught.is_err(), "{policy:?}");
        }
        assert_eq!(el.source_count(), before, "{policy:?}");
        assert_eq!(el.block_on(&mut (), async { 7 }).unwrap(), 7);
    }
}

#[test]
fn block_on_runs_tasks_and_handlers_meanwhile() {
    let mut el = EventLoop::<()>::new().unwrap();
    let (tx, rx) = evloop::channel::<u32>();
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    el.spawn(async move {
        for i in 0..3 {
            task::yield_now().await;
            tx.send(i).unwrap();
        }
    })
    .unwrap();
    let got = el
        .block_on(&mut (), async {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        })
        .unwrap();
    assert_eq!(got, [0, 1, 2], "None once every sender is gone");
}

/// Sets its flag when dropped: tells whether a task's future was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn stop_drops_every_task_and_closes_what_they_held() {
    let _watchdog = Watchdog::new(20, "stop_drops_every_task_and_closes_what_they_held");
    let mut el = EventLoop::<()>::new().unwrap();
    let listener = task::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let served = Rc::new(Cell::new(0));
    let (s, on_io, on_timer) = (
        served.clone(),
        Rc::new(Cell::new(false)),
        Rc::new(Cell::new(false)),
    );
    let (flag_io, flag_timer) = (DropFlag(on_io.clone()), DropFlag(on_timer.clone()));
    let acceptor = el
        .spawn(async move {
            let _flag = flag_io;
            let mut conn = listener.accept().await.unwrap();
            conn.write_all(b"hello\n").await.unwrap();
            s.set(1);
            // Parked on I/O: the client never writes.
            let mut buf = [0u8; 8];
            let _ = conn.read(&mut buf).await;
        })
        .unwrap();
    let sleeper = el
        .spawn(async move {
            let _flag = flag_timer;
            task::sleep(Duration::from_secs(3600)).await;
        })
        .unwrap();
    // A callback source survives the stop.
    let (fd, _keep) = common::pipe();
    let callback = el
        .register(fd, Interest::READABLE, |_, _, _, _| Action::Keep)
        .unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| served.get() == 1);
    el.stop();
    el.run(&mut ()).unwrap();

    assert!(on_io.get() && on_timer.get(), "both futures were dropped");
    assert!(!el.is_open(acceptor) && !el.is_open(sleeper));
    assert!(el.is_open(callback), "callback sources stay");
    // What the task wrote came before the close, with no turn after `run`.
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(
        got, b"hello\n",
        "the connection was closed after what it was owed"
    );
    // Once the client is gone, the lingering close ends, and no timer is
    // left: the sleep's went with its task.
    drop(client);
    for _ in 0..200 {
        if el.timer_count() == 0 {
            break;
        }
        el.turn(&mut (), Some(common::TICK)).unwrap();
    }
    assert_eq!(el.timer_count(), 0);
    // The loop runs again, with new tasks.
    let again = Rc::new(Cell::new(false));
    let a = again.clone();
    el.spawn(async move {
        task::yield_now().await;
        a.set(true);
    })
    .unwrap();
    turn_until(&mut el, &mut (), |_| again.get());
}

/// A task cancelled in the turn that stops the loop is dropped at that
/// turn's reclaim, after the stop's sweep would have found it: what it
/// held is still closed before `run` returns (its connection and its
/// channel stayed open until the loop turned again).
#[test]
fn a_task_cancelled_in_the_stopping_turn_closes_what_it_held_before_run_returns() {
    let _watchdog = Watchdog::new(20, "a_task_cancelled_in_the_stopping_turn");
    let mut el = EventLoop::<()>::new().unwrap();
    let listener = task::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let (tx, rx) = evloop::channel::<u32>();
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    let accepted = Rc::new(Cell::new(false));
    let a = accepted.clone();
    let id = el
        .spawn(async move {
            let mut conn = listener.accept().await.unwrap();
            a.set(true);
            let mut buf = [0u8; 8];
            // Parked on the connection; the channel is held meanwhile.
            while conn.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = rx.recv().await;
        })
        .unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    turn_until(&mut el, &mut (), |_| accepted.get());
    el.defer(move |ctx, _| {
        assert!(ctx.cancel_task(id));
        ctx.stop();
    });
    el.run(&mut ()).unwrap();

    assert!(tx.send(1).is_err(), "the task's channel receiver is gone");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "the peer saw the close, with no turn after `run`");
}

/// A task stops the loop itself (a "quit" command): its reply is sent,
/// `run` returns, every task is gone; outside a task it is an error.
#[test]
fn a_task_stops_the_loop() {
    let _watchdog = Watchdog::new(20, "a_task_stops_the_loop");
    assert!(task::stop().is_err(), "outside a task");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conns, mut clients) = accepted(&mut el, 1);
    let mut conn = conns.pop().unwrap();
    let parked = el.spawn(std::future::pending()).unwrap();
    el.spawn(async move {
        let mut line = Vec::new();
        while conn.read_line(&mut line).await.unwrap() > 0 {
            if line == b"quit\n" {
                conn.write_all(b"bye\n").await.unwrap();
                task::stop().unwrap();
            }
            line.clear();
        }
    })
    .unwrap();
    clients[0].write_all(b"quit\n").unwrap();
    el.run(&mut ()).unwrap();
    assert!(!el.is_open(parked), "every task ended with the stop");
    clients[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    clients[0].read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye\n");
}

/// An `AsyncConn` that outlives its loop (moved out of it) is closed:
/// reading it on another loop is an error at once, not a wait for input
/// that cannot come.
#[test]
fn a_connection_that_outlives_its_loop_is_closed() {
    let _watchdog = Watchdog::new(20, "a_connection_that_outlives_its_loop_is_closed");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conns, mut clients) = accepted(&mut el, 1);
    let mut conn = conns.pop().unwrap();
    drop(el);
    let mut other = EventLoop::<()>::new().unwrap();
    let got = other
        .block_on(&mut (), async move {
            let mut buf = [0u8; 8];
            let read = task::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
            let read = read.map(|r| r.map_err(|e| e.kind())).map_err(|e| e.kind());
            (read, conn.write_all(b"x").await.is_err())
        })
        .unwrap();
    assert_eq!(got, (Ok(Err(std::io::ErrorKind::NotConnected)), true));
    clients[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        clients[0].read_to_end(&mut rest).unwrap(),
        0,
        "the peer saw the close"
    );
}

/// `n` connections accepted by the loop for tasks, with their clients.
fn accepted(el: &mut EventLoop<()>, n: usize) -> (Vec<task::AsyncConn>, Vec<std::net::TcpStream>) {
    let listener = task::listen(el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let got: Rc<RefCell<Vec<task::AsyncConn>>> = Rc::default();
    let into = got.clone();
    el.spawn(async move {
        while let Ok(conn) = listener.accept().await {
            into.borrow_mut().push(conn);
        }
    })
    .unwrap();
    let clients = (0..n)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    turn_until(el, &mut (), |_| got.borrow().len() == n);
    let conns = got.borrow_mut().drain(..).collect();
    (conns, clients)
}

/// Send `data` from `client` and wait (bounded) until the server's end of
/// `conn` is readable, so the next turn's poll reports it.
fn send_and_await(el: &mut EventLoop<()>, client: &mut std::net::TcpStream, conn: SourceId, data: &[u8]) {
    client.write_all(data).unwrap();
    let fd = el
        .source_mut::<evloop::net::Conn>(conn)
        .expect("an open connection")
        .stream()
        .as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the length given.
    let n = unsafe { libc::poll(&mut pfd, 1, 5_000) };
    assert_eq!(n, 1, "the bytes reached the server's socket");
}

/// A task that reads lines from `conn` and logs `name` for each.
fn line_reader(mut conn: task::AsyncConn, log: &Log, name: &'static str) -> impl Future<Output = ()> {
    let log = log.clone();
    async move {
        let mut line = Vec::new();
        while conn.read_line(&mut line).await.unwrap_or(0) > 0 {
            log.borrow_mut().push(name.into());
            line.clear();
        }
    }
}

#[test]
fn a_task_waiting_on_a_connection_is_polled_in_its_place() {
    let _dog = Watchdog::new(30, "a_task_waiting_on_a_connection_is_polled_in_its_place");
    let mut el = EventLoop::<()>::new().unwrap();
    let log: Log = Rc::default();
    let gates = Gates::new(1);
    let (mut conns, mut clients) = accepted(&mut el, 2);
    let (b, a) = (conns.pop().unwrap(), conns.pop().unwrap());
    let (a_id, b_id) = (a.id(), b.id());
    let reader_a = el.spawn(line_reader(a, &log, "A")).unwrap();
    el.spawn(line_reader(b, &log, "B")).unwrap();
    el.spawn(gated(&gates, 0, &log, "T")).unwrap();
    turns(&mut el, &mut (), 2); // every task waits
    assert!(log.borrow().is_empty());

    // A high-priority handler wakes T first; then A's line arrives: A's
    // task runs where its connection's input arrived, ahead of T, which
    // waits behind what was ready when it was woken.
    let g = gates.clone();
    let (h, h_poke) = logged_fd(&mut el, &log, "H", move |_| g.open(0));
    el.set_priority(h, Priority::High).unwrap();
    eventfd_write(h_poke.as_raw_fd(), 1);
    send_and_await(&mut el, &mut clients[0], a_id, b"one\n");
    turns(&mut el, &mut (), 1);
    assert_eq!(*log.borrow(), ["H", "A", "T"]);

    // A low-priority task is not polled in a normal connection's place: it
    // waits behind the normal sources and tasks woken meanwhile.
    log.borrow_mut().clear();
    el.set_priority(reader_a, Priority::Low).unwrap();
    eventfd_write(h_poke.as_raw_fd(), 1);
    send_and_await(&mut el, &mut clients[0], a_id, b"two\n");
    send_and_await(&mut el, &mut clients[1], b_id, b"three\n");
    turns(&mut el, &mut (), 1);
    // B's task takes its connection's place; T and A were woken during the
    // phase and follow, by priority.
    assert_eq!(*log.borrow(), ["H", "B", "T", "A"]);
}

#[test]
fn a_task_woken_by_two_connections_in_one_turn_is_polled_once() {
    let _dog = Watchdog::new(30, "a_task_woken_by_two_connections_in_one_turn_is_polled_once");
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conns, mut clients) = accepted(&mut el, 2);
    let (mut b, mut a) = (conns.pop().unwrap(), conns.pop().unwrap());
    let (a_id, b_id) = (a.id(), b.id());
    let polls = Rc::new(Cell::new(0));
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let (p, g) = (polls.clone(), got.clone());
    // One task reads whichever of its two connections has bytes.
    el.spawn(std::future::poll_fn(move |cx| {
        p.set(p.get() + 1);
        let mut buf = [0u8; 16];
        for conn in [&mut a, &mut b] {
            let polled = std::pin::pin!(conn.read(&mut buf)).poll(cx);
            if let Poll::Ready(Ok(n)) = polled {
                g.borrow_mut().extend_from_slice(&buf[..n]);
            }
        }
        Poll::<()>::Pending
    }))
    .unwrap();
    turns(&mut el, &mut (), 2);
    let before = polls.get();
    send_and_await(&mut el, &mut clients[0], a_id, b"a");
    send_and_await(&mut el, &mut clients[1], b_id, b"b");
    turns(&mut el, &mut (), 1);
    assert_eq!(polls.get(), before + 1, "both connections read, one poll");
    turns(&mut el, &mut (), 1);
    let mut bytes = got.borrow().clone();
    bytes.sort_unstable();
    assert_eq!(
        bytes, b"ab",
        "the second connection's bytes were read in the next turn"
    );
}

#[test]
fn what_a_task_leaves_unread_in_its_connections_place_is_kept_in_order() {
    let _dog = Watchdog::new(
        30,
        "what_a_task_leaves_unread_in_its_connections_place_is_kept_in_order",
    );
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conns, mut clients) = accepted(&mut el, 1);
    let mut conn = conns.pop().unwrap();
    let id = conn.id();
    let gates = Gates::new(1);
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let (g, gate) = (got.clone(), gates.clone());
    el.spawn(async move {
        // Polled where the bytes arrive, it takes three and leaves the
        // rest of that read for later, while it waits on something else.
        let mut three = [0u8; 3];
        conn.read_exact(&mut three).await.unwrap();
        g.borrow_mut().extend_from_slice(&three);
        gate.wait(0).await;
        let mut rest = Vec::new();
        while conn.read_line(&mut rest).await.unwrap() > 0 {}
        g.borrow_mut().extend_from_slice(&rest);
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    send_and_await(&mut el, &mut clients[0], id, b"abcdefgh\nij");
    turns(&mut el, &mut (), 1);
    assert_eq!(*got.borrow(), b"abc");
    // More arrives while the task is not reading: it follows the tail.
    send_and_await(&mut el, &mut clients[0], id, b"kl\nmn");
    turns(&mut el, &mut (), 1);
    clients[0].shutdown(std::net::Shutdown::Write).unwrap();
    gates.open(0);
    turn_until(&mut el, &mut (), |_| got.borrow().len() > 3);
    assert_eq!(*got.borrow(), b"abcdefgh\nijkl\nmn");
}

#[test]
fn a_task_that_drops_its_connection_mid_read_sends_what_it_wrote_then_closes() {
    let _dog = Watchdog::new(
        30,
        "a_task_that_drops_its_connection_mid_read_sends_what_it_wrote_then_closes",
    );
    let mut el = EventLoop::<()>::new().unwrap();
    let (mut conns, mut clients) = accepted(&mut el, 1);
    let mut conn = conns.pop().unwrap();
    let id = conn.id();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    el.spawn(async move {
        let mut line = Vec::new();
        conn.read_line(&mut line).await.unwrap();
        assert_eq!(line, b"first\n");
        conn.write_all(b"bye\n").await.unwrap();
        drop(conn); // with "second\nthird" unread, in the connection's place
        d.set(true);
    })
    .unwrap();
    turns(&mut el, &mut (), 2);
    send_and_await(&mut el, &mut clients[0], id, b"first\nsecond\nthird");
    turn_until(&mut el, &mut (), |_| done.get());
    // The reply is sent before the close; then the peer sees the end.
    let mut got = Vec::new();
    clients[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    loop {
        turns(&mut el, &mut (), 1);
        let mut buf = [0u8; 64];
        match clients[0].read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"bye\n");
    // Lingering ends at the client's FIN; then the connection is gone.
    drop(clients);
    for _ in 0..1000 {
        if el.source_mut::<evloop::net::Conn>(id).is_none() {
            return;
        }
        el.turn(&mut (), Some(Duration::from_millis(5))).unwrap();
    }
    panic!("the connection was not closed");
}
