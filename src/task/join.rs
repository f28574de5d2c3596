//! A task's result for whoever spawned it: [`JoinHandle`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::Reply;

type Shared<T> = Rc<RefCell<Reply<io::Result<T>>>>;

/// The output of a task spawned with [`spawn`](super::spawn): await it for
/// the task's result, or drop it to let the task run on unobserved.
///
/// Resolves to an [`Interrupted`](io::ErrorKind::Interrupted) error when
/// the task ends without finishing: cancelled, dropped after a panic
/// (under [`PanicPolicy::CloseSource`](crate::PanicPolicy::CloseSource);
/// under `Propagate` the panic leaves the loop's `run` or `turn`, and the
/// task is dropped), dropped with its loop, or never placed (the source
/// table was full: logged as an error).
pub struct JoinHandle<T> {
    reply: Shared<T>,
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
                "evloop: the task ended before finishing (cancelled, panicked, never placed, or its loop stopped)",
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
    let future = Box::pin(future);
    let task = async move {
        let out = future.await;
        if let Some(reply) = finish.reply.take() {
            // Nobody waits once the handle is gone: keep the output out of
            // a cell no one will read.
            if Rc::strong_count(&reply) > 1 {
                Reply::fill(&reply, Ok(out));
            }
        }
    };
    (task, JoinHandle { reply })
}
