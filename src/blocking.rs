//! Blocking work off the loop: [`Ctx::spawn_blocking`].
//!
//! Some calls have no non-blocking form (`getaddrinfo`, a file read on most
//! kernels, a CPU-bound hash). A handler must not make them, or every other
//! source waits. `spawn_blocking` hands such a call to a small pool of worker
//! threads and runs its `done` callback back on the loop.
//!
//! The way back is an ordinary [`channel`](crate::channel()) registered with
//! [`Ctx::add_channel`]: a worker sends `(job number, result)`, the channel
//! notifies the loop's one shared waker, and the channel's handler runs the
//! job's `done` in the dispatch phase, in completion order. `done` closures
//! are not `Send`, so they never leave the loop thread: they wait in a table
//! on the loop side, keyed by the job number the worker sends back.
//!
//! Nothing here exists until the first `spawn_blocking`: a loop that never
//! calls it starts no thread.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use slab::Slab;

use crate::channel::{channel, Sender};
use crate::{Ctx, SourceId};

/// Worker threads by default: enough to overlap a few slow lookups without
/// making a loop that only resolves a name now and then hold many threads.
const DEFAULT_THREADS: usize = 4;
/// Jobs queued and not yet started, by default.
const DEFAULT_QUEUE: usize = 1024;

/// The pool's settings, chosen on the [`Builder`](crate::Builder).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) threads: usize,
    pub(crate) queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: DEFAULT_THREADS,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// What a job's `work` returns, its type erased so one channel carries every
/// job's result.
pub(crate) type Output = Box<dyn Any + Send>;
/// A job as a worker sees it.
type Work = Box<dyn FnOnce() -> Output + Send>;
/// A job's `done`, waiting on the loop side for its result.
type Done<S> = Box<dyn FnOnce(io::Result<Output>, &mut Ctx<S>, &mut S)>;

/// A job queued for the workers.
struct Job {
    /// Where its `done` waits in the loop's table.
    key: usize,
    work: Work,
}

/// A finished job, on its way back to the loop.
struct Completion {
    key: usize,
    result: io::Result<Output>,
}

/// What the loop and the workers share.
struct Shared {
    state: Mutex<State>,
    /// Idle workers wait here for a job or for the loop to go.
    wake: Condvar,
}

struct State {
    /// Jobs not yet started: what the queue bound limits.
    queue: VecDeque<Job>,
    /// Workers started and not exited.
    threads: usize,
    /// Workers waiting for a job.
    idle: usize,
    /// The loop is gone: workers exit once their current job is done.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker never panics while holding the lock (jobs run outside it),
        // so a poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The loop's [`Ctx`] field for the pool: its settings, and the pool itself
/// once the first job has started it.
pub(crate) struct Blocking<S> {
    config: Config,
    pool: Option<Pool<S>>,
}

impl<S> Blocking<S> {
    pub(crate) fn new(config: Config) -> Blocking<S> {
        Blocking { config, pool: None }
    }
}

/// The started pool, as the loop holds it.
struct Pool<S> {
    shared: Arc<Shared>,
    /// Cloned into each worker; the receiving end is the loop's source.
    results: Sender<Completion>,
    /// `done` callbacks of jobs queued or running, by job number.
    done: Slab<Done<S>>,
    config: Config,
}

impl<S> Pool<S> {
    /// See that a worker will take one more job: refuse it when the queue
    /// is full, start a worker when every running one is busy.
    fn make_room(&self) -> io::Result<()> {
        let mut st = self.shared.lock();
        if st.queue.len() >= self.config.queue {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "evloop: blocking queue is full ({} jobs waiting: the bound set by Builder::blocking_queue)",
                    self.config.queue
                ),
            ));
        }
        // Threads start one at a time, only when every one started so far
        // has work: a loop that resolves a name now and then holds one
        // thread, not the whole pool, and the check costs nothing beyond the
        // lock the queue needs anyway. A worker notified but not yet awake
        // still counts as idle while its job waits, so a burst errs towards
        // starting a thread, never towards leaving a job without one.
        if st.queue.len() < st.idle || st.threads >= self.config.threads {
            return Ok(());
        }
        st.threads += 1;
        let number = st.threads;
        drop(st);
        let Err(e) = self.start_worker(number) else {
            return Ok(());
        };
        let mut st = self.shared.lock();
        st.threads -= 1;
        if st.threads == 0 {
            // Nothing would ever run the job.
            return Err(e);
        }
        log::warn!("evloop: starting another blocking worker failed: {e}; the job waits for a running one");
        Ok(())
    }

    /// Queue a job [`make_room`](Self::make_room) made room for.
    fn push(&mut self, work: Work, done: Done<S>) {
        let key = self.done.insert(done);
        let mut st = self.shared.lock();
        st.queue.push_back(Job { key, work });
        log::trace!("evloop: blocking job {key} queued ({} waiting)", st.queue.len());
        drop(st);
        self.shared.wake.notify_one();
    }

    fn start_worker(&self, number: usize) -> io::Result<()> {
        if number == 1 {
            log::debug!(
                "evloop: blocking pool starting (up to {} threads, queue bound {})",
                self.config.threads,
                self.config.queue
            );
        }
        let shared = self.shared.clone();
        let results = self.results.clone();
        thread::Builder::new()
            .name(format!("evloop-blocking-{number}"))
            .spawn(move || work_loop(&shared, &results))?;
        log::debug!("evloop: blocking worker {number} started");
        Ok(())
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        // Running jobs are not waited for: their workers find the loop's
        // channel closed, drop the result and exit. Queued ones never start.
        let queued = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        self.shared.wake.notify_all();
        if !queued.is_empty() {
            log::debug!(
                "evloop: loop dropped with {} blocking job(s) not started",
                queued.len()
            );
        }
        // Dropped outside the lock: a job's captures may run any code.
        drop(queued);
    }
}

/// A worker: take jobs until the loop is gone.
fn work_loop(shared: &Shared, results: &Sender<Completion>) {
    let mut st = shared.lock();
    while !st.closed {
        let Some(job) = st.queue.pop_front() else {
            st.idle += 1;
            st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle -= 1;
            continue;
        };
        drop(st);
        let key = job.key;
        let result = panic::catch_unwind(AssertUnwindSafe(job.work)).map_err(|payload| {
            io::Error::other(format!(
                "evloop: blocking job panicked: {}",
                crate::event_loop::panic_message(&*payload)
            ))
        });
        if results.try_send(Completion { key, result }).is_err() {
            log::trace!("evloop: blocking job {key} finished after its loop was dropped; result discarded");
        }
        st = shared.lock();
    }
    st.threads -= 1;
}

/// Room for one job in the pool, from [`Ctx::reserve_blocking`].
pub(crate) struct Reserved<'a, S>(&'a mut Pool<S>);

impl<S> Reserved<'_, S> {
    /// Queue the job the room was made for.
    pub(crate) fn push<T, W, D>(self, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
        D: FnOnce(io::Result<T>, &mut Ctx<S>, &mut S) + 'static,
    {
        let work: Work = Box::new(move || Box::new(work()) as Output);
        self.0.push(
            work,
            Box::new(move |result, ctx, state| {
                let result = result.and_then(|out| {
                    out.downcast::<T>()
                        .map(|t| *t)
                        .map_err(|_| io::Error::other("evloop: blocking job's result has an unexpected type"))
                });
                done(result, ctx, state);
            }),
        );
    }
}

/// The completion channel's handler: run the job's `done` on the loop.
fn deliver<S>(c: Completion, ctx: &mut Ctx<S>, state: &mut S) {
    let done = ctx
        .blocking
        .pool
        .as_mut()
        .and_then(|pool| pool.done.try_remove(c.key));
    let Some(done) = done else {
        log::error!(
            "evloop: blocking job {} completed with no callback waiting",
            c.key
        );
        return;
    };
    log::trace!("evloop: blocking job {} completed", c.key);
    // A panicking `done` is one bad message: the channel stays open for the
    // rest (see `Ctx::catch_panic`).
    ctx.catch_panic(state, "blocking job's done callback", |ctx, state| {
        done(c.result, ctx, state)
    });
}

impl<S> Ctx<S> {
    /// Run `work` on a worker thread and `done(result, ctx, state)` back on
    /// the loop, in the dispatch phase of a later turn.
    ///
    /// For calls that block and have no non-blocking form: name resolution
    /// (see [`net::resolve`](crate::net::resolve)), file I/O, CPU-heavy
    /// work. `done` runs as the dispatch of one source (the pool's result
    /// channel, woken through the loop's shared waker, so completions that
    /// arrive before the loop takes the batch share one wake-up), in the
    /// order the jobs completed.
    ///
    /// The pool starts with the first call: before it, the loop has no
    /// thread of its own. Threads start one at a time, when all running ones
    /// are busy, up to [`Builder::blocking_threads`](crate::Builder::blocking_threads).
    ///
    /// * A job that panics does not take its worker down: `done` gets an
    ///   [`Other`](io::ErrorKind::Other) error saying it panicked, with the
    ///   panic's message.
    /// * A `done` that panics is handled by the loop's
    ///   [`PanicPolicy`](crate::PanicPolicy), like a channel handler's panic;
    ///   later jobs' results are still delivered.
    /// * Dropping the loop drops the jobs not yet started (and every `done`
    ///   still waiting) without waiting for running jobs: their results are
    ///   discarded when they finish, and the workers then exit.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) when
    /// [`Builder::blocking_queue`](crate::Builder::blocking_queue) jobs are
    /// already waiting for a worker; the error of the OS when no worker
    /// thread could be started. `done` is then dropped without being called.
    ///
    /// ```
    /// use evloop::EventLoop;
    ///
    /// let mut el = EventLoop::<Option<u64>>::new()?;
    /// el.spawn_blocking(
    ///     || (1..=20u64).product::<u64>(), // runs on a worker thread
    ///     |result, ctx, out: &mut Option<u64>| {
    ///         *out = Some(result.expect("the job did not panic"));
    ///         ctx.stop();
    ///     },
    /// )?;
    /// let mut out = None;
    /// el.run(&mut out)?;
    /// assert_eq!(out, Some(2_432_902_008_176_640_000));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_blocking<T, W, D>(&mut self, work: W, done: D) -> io::Result<()>
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
        D: FnOnce(io::Result<T>, &mut Ctx<S>, &mut S) + 'static,
    {
        self.reserve_blocking()?.push(work, done);
        Ok(())
    }

    /// Room for one more job (the pool started, a worker for it): what
    /// [`spawn_blocking`](Self::spawn_blocking) checks before it takes the
    /// job, for a caller that must still own its callback when the job is
    /// refused, to report the error through it.
    pub(crate) fn reserve_blocking(&mut self) -> io::Result<Reserved<'_, S>> {
        let pool = self.blocking_pool()?;
        pool.make_room()?;
        Ok(Reserved(pool))
    }

    /// The pool, started (its result channel registered) on first use.
    fn blocking_pool(&mut self) -> io::Result<&mut Pool<S>> {
        let pool = match self.blocking.pool.take() {
            Some(pool) => pool,
            None => self.start_pool()?,
        };
        Ok(self.blocking.pool.insert(pool))
    }

    /// A pool with no thread yet, its results channel registered.
    #[cold]
    fn start_pool(&mut self) -> io::Result<Pool<S>> {
        let (results, rx) = channel::<Completion>();
        // A closure, not `deliver::<S>` itself: a function item's type holds
        // `S`, and would make the pool need `S: 'static` (a closure's type
        // holds only what it captures).
        let id: SourceId = self.add_channel(rx, |c, ctx, state| deliver(c, ctx, state))?;
        log::debug!("evloop: blocking results come back through channel {id}");
        Ok(Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    closed: false,
                }),
                wake: Condvar::new(),
            }),
            results,
            done: Slab::new(),
            config: self.blocking.config,
        })
    }
}
