//! Waking the loop from other threads.
//!
//! Every cross-thread wake-up of one loop goes through a single mio `Waker`
//! (one eventfd on Linux). A thread that has something for the loop pushes the
//! id of the source that should run onto a shared list, and writes the eventfd
//! only if no wake-up is already in flight; the loop swaps the list out when
//! the waker fires and dispatches those sources in the ordinary dispatch
//! phase. So a burst costs one eventfd write per batch the loop takes, not
//! one per message: a million messages sent before the loop looks cost one,
//! a million sent by a thread while the loop runs cost as many as the
//! batches the loop happens to take (hundreds to thousands; see
//! `examples/channel.rs` and `tests/wakeups.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::channel::{Sender, TrySendError};
use crate::{Ctx, SourceId};

/// State shared between the loop and every handle that can wake it.
pub(crate) struct Shared {
    waker: mio::Waker,
    /// A wake-up has been written and the loop has not yet consumed it.
    awake: AtomicBool,
    /// Sources notified from other threads since the loop last looked.
    notified: Mutex<Vec<SourceId>>,
    /// A remote asked the loop to stop.
    stop: AtomicBool,
}

/// The loop's end of the shared wake-up state (cheap to clone).
#[derive(Clone)]
pub(crate) struct Link(Arc<Shared>);

impl Link {
    pub(crate) fn new(registry: &mio::Registry) -> std::io::Result<Link> {
        let waker = mio::Waker::new(registry, crate::token::WAKER_TOKEN)?;
        Ok(Link(Arc::new(Shared {
            waker,
            awake: AtomicBool::new(false),
            notified: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })))
    }

    pub(crate) fn notifier(&self, id: SourceId) -> Notifier {
        Notifier {
            shared: self.0.clone(),
            id,
        }
    }

    /// Called by the loop when the waker fired: move the notified ids into
    /// `into` (whose capacity is reused) and report whether a stop was asked.
    pub(crate) fn drain(&self, into: &mut Vec<SourceId>) -> bool {
        // Clear the flag before taking the list: a notification pushed after
        // the swap then finds the flag clear and wakes us again.
        self.0.awake.store(false, Ordering::SeqCst);
        {
            let mut list = self.0.notified.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *list, into);
        }
        self.0.stop.swap(false, Ordering::AcqRel)
    }

    fn wake(&self) {
        self.0.wake();
    }
}

impl Shared {
    fn wake(&self) {
        if !self.awake.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("evloop: waking the loop failed: {e}");
            }
        }
    }
}

/// Makes one loop-internal source (a channel's receiving end) ready from any thread.
pub(crate) struct Notifier {
    shared: Arc<Shared>,
    id: SourceId,
}

impl Notifier {
    pub(crate) fn notify(&self) {
        self.shared
            .notified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.id);
        self.shared.wake();
    }
}

/// Sources made ready from the loop's own thread by a handle that has no
/// [`Ctx`] at hand (a task's `Waker`, called from a handler or a future):
/// a push onto this list, no system call. The loop drains it into the
/// dispatch phase: before the poll's events when it was filled before the
/// poll, and behind what is already queued when it was filled while the
/// dispatch phase runs, so those sources still run in this turn.
///
/// Other threads never touch the list (they go through the [`Notifier`]
/// and the one eventfd); it is behind a lock only because the handles
/// holding it must be `Send + Sync`, so the lock is never contended.
pub(crate) struct LocalWakes {
    /// Something was pushed since the loop last looked (read before the
    /// lock, so a turn with nothing to take costs one load).
    pending: AtomicBool,
    list: Mutex<Vec<SourceId>>,
}

impl LocalWakes {
    pub(crate) fn new() -> LocalWakes {
        LocalWakes {
            pending: AtomicBool::new(false),
            list: Mutex::new(Vec::new()),
        }
    }

    /// Queue `id` for the dispatch phase. Call only on the loop's thread.
    pub(crate) fn push(&self, id: SourceId) {
        self.list.lock().unwrap_or_else(PoisonError::into_inner).push(id);
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Append what was pushed to `into`, in push order.
    pub(crate) fn drain(&self, into: &mut Vec<SourceId>) {
        if self.pending.swap(false, Ordering::AcqRel) {
            into.append(&mut self.list.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

/// A closure posted into the loop from another thread.
pub(crate) type Posted<S> = Box<dyn FnOnce(&mut Ctx<S>, &mut S) + Send>;

/// A handle that lets other threads wake the loop, stop it, and run closures
/// on it. `Send + Sync + Clone`; get one from [`Ctx::remote`].
///
/// Once the loop is dropped, every call is harmless (`post` returns
/// [`LoopGone`]), but the loop's waker, one eventfd, stays open until the
/// last `Remote` is dropped too.
///
/// ```
/// let mut el = evloop::EventLoop::<u32>::new().unwrap();
/// let remote = el.remote().unwrap();
/// std::thread::spawn(move || {
///     remote.post(|ctx, n: &mut u32| { *n += 1; ctx.stop(); }).unwrap();
/// });
/// let mut n = 0;
/// el.run(&mut n).unwrap();
/// assert_eq!(n, 1);
/// ```
pub struct Remote<S> {
    pub(crate) link: Link,
    pub(crate) posted: Sender<Posted<S>>,
}

impl<S> Clone for Remote<S> {
    fn clone(&self) -> Self {
        Remote {
            link: self.link.clone(),
            posted: self.posted.clone(),
        }
    }
}

impl<S> fmt::Debug for Remote<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").finish_non_exhaustive()
    }
}

/// The loop a [`Remote`] points at has been dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGone;

impl fmt::Display for LoopGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop is gone")
    }
}

impl std::error::Error for LoopGone {}

impl<S> Remote<S> {
    /// Interrupt the loop's poll. The turn that wakes runs its phases as usual.
    pub fn wake(&self) {
        self.link.wake();
    }

    /// Ask the loop to stop: `run` returns after the turn that sees this.
    pub fn stop(&self) {
        self.link.0.stop.store(true, Ordering::Release);
        self.link.wake();
    }

    /// Run `f` on the loop's thread, in the dispatch phase of a coming turn,
    /// with the loop's context and the application state. Closures posted from
    /// one thread run in the order they were posted.
    pub fn post<F>(&self, f: F) -> Result<(), LoopGone>
    where
        F: FnOnce(&mut Ctx<S>, &mut S) + Send + 'static,
    {
        match self.posted.try_send(Box::new(f)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => unreachable!("the posted-closure channel is unbounded"),
            Err(TrySendError::Disconnected(_)) => Err(LoopGone),
        }
    }
}
