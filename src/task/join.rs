//! A task's result for whoever spawned it: [`JoinHandle`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::{wait_in, Reply};

type Shared<T> = Rc<RefCell<Reply<io::Result<T>>>>;

/// How [`JoinHandle::abort`] reaches the task: a flag, and the task's
/// waker (kept from its last poll) to have it polled and see the flag.
#[derive(Default)]
struct Abort {
    asked: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The output of a task spawned with [`spawn`](super::spawn): await it for
/// the task's result, or drop it to let the task run on unobserved.
///
/// Resolves to an [`Interrupted`](io::ErrorKind::Interrupted) error when
/// the task ends without finishing: cancelled, dropped after a panic
/// (under [`PanicPolicy::CloseSource`](crate::PanicPolicy::CloseSource);
/// under `Propagate` the panic leaves the loop's `run` or `turn`, and the
/// task is dropped), dropped with its loop, or never placed (the source
/// table was full: logged as an error), or aborted.
pub struct JoinHandle<T> {
    reply: Shared<T>,
    abort: Rc<Abort>,
}

impl<T> JoinHandle<T> {
    /// Stop the task: at its next poll (this wakes it; a task is polled at
    /// most once a turn, so a task already polled this turn goes in the
    /// next) its future is dropped unfinished, which closes what it owned, and the
    /// handle resolves to an `Interrupted` error, unless the task finished
    /// first. A task that already ended is left as it is.
    pub fn abort(&self) {
        self.abort.asked.set(true);
        let waker = self.abort.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        Reply::poll_take(&self.reply, cx)
    }
}

/// The task's end of the handle: tells it how the task ended, when it ends
/// without an output (its future dropped unfinished).
struct Finish<T> {
    reply: Option<Shared<T>>,
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let gone = io::Error::new(
                io::ErrorKind::Interrupted,
                "evloop: the task ended before finishing (aborted, cancelled, panicked, never placed, or its loop stopped)",
            );
            Reply::fill(&reply, Err(gone));
        }
    }
}

/// `future` as a task that hands its output to the returned handle.
pub(crate) fn joined<F>(future: F) -> (impl Future<Output = ()> + 'static, JoinHandle<F::Output>)
where
    F: Future + 'static,
{
    let reply: Shared<F::Output> = Rc::new(RefCell::new(Reply::default()));
    let mut finish = Finish {
        reply: Some(reply.clone()),
    };
    // Boxed apart: an async block keeps what it captures and what it awaits
    // in separate places, so a future awaited in place would take its room
    // twice (a task per connection: 300 bytes more each).
    let mut future = Box::pin(future);
    let abort = Rc::new(Abort::default());
    let aborted = abort.clone();
    let task = async move {
        let out = std::future::poll_fn(|cx| {
            if aborted.asked.get() {
                return Poll::Ready(None);
            }
            if Rc::strong_count(&aborted) > 1 {
                // The handle may abort: keep the waker it would wake.
                wait_in(&mut aborted.waker.borrow_mut(), cx);
            }
            future.as_mut().poll(cx).map(Some)
        })
        .await;
        let Some(out) = out else {
            // Aborted: the future goes now, and `finish` tells the handle.
            drop(future);
            return;
        };
        if let Some(reply) = finish.reply.take() {
            // Nobody waits once the handle is gone: keep the output out of
            // a cell no one will read.
            if Rc::strong_count(&reply) > 1 {
                Reply::fill(&reply, Ok(out));
            }
        }
    };
    (task, JoinHandle { reply, abort })
}
