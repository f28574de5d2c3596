//! `recv().await` on the loop's channels: the receiving end is an ordinary
//! channel source whose handler hands each message to the task.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::hub::{Hub, Op};
use crate::{Ctx, Receiver, SourceId};

/// Messages handed over and not yet received, above which the channel
/// source is paused until the task receives again: what it has not taken
/// stays in the channel, where a bounded channel's senders wait for room.
const INBOX_MAX: usize = 64;

struct Inbox<T> {
    items: VecDeque<T>,
    waiter: Option<Waker>,
    /// Every sender is gone and the source closed itself.
    closed: bool,
    paused: bool,
    id: Cell<Option<SourceId>>,
}

/// The channel source's end of the inbox: dropped with the source, which
/// tells a waiting `recv` that no message will come.
struct Feed<T>(Rc<RefCell<Inbox<T>>>);

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        if let Ok(mut inbox) = self.0.try_borrow_mut() {
            inbox.closed = true;
            super::wake(&mut inbox.waiter);
        }
    }
}

/// The receiving end of a [`channel`](crate::channel()) for a task:
/// `recv().await` takes the messages in send order.
pub struct AsyncReceiver<T> {
    id: SourceId,
    inbox: Rc<RefCell<Inbox<T>>>,
    hub: Rc<Hub>,
}

impl<T> std::fmt::Debug for AsyncReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReceiver")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T: 'static> AsyncReceiver<T> {
    /// Register `rx` with the loop for a task to receive from (a source,
    /// as with [`Ctx::add_channel`]). Dropping the `AsyncReceiver` closes it.
    pub fn register<S>(ctx: &mut Ctx<S>, rx: Receiver<T>) -> io::Result<AsyncReceiver<T>> {
        let hub = Hub::of(ctx)?;
        let inbox = Rc::new(RefCell::new(Inbox {
            items: VecDeque::new(),
            waiter: None,
            closed: false,
            paused: false,
            id: Cell::new(None),
        }));
        let feed = Feed(inbox.clone());
        let id = ctx.add_channel(rx, move |msg, ctx, _state| {
            let mut inbox = feed.0.borrow_mut();
            inbox.items.push_back(msg);
            if inbox.waiter.is_some() {
                super::wake(&mut inbox.waiter);
            } else if inbox.items.len() >= INBOX_MAX && !inbox.paused {
                if let Some(id) = inbox.id.get() {
                    inbox.paused = ctx.pause(id).is_ok();
                }
            }
        })?;
        inbox.borrow().id.set(Some(id));
        Ok(AsyncReceiver { id, inbox, hub })
    }

    /// The next message; `None` once every sender is gone and every
    /// message has been received.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut inbox = self.inbox.borrow_mut();
            if let Some(msg) = inbox.items.pop_front() {
                return Poll::Ready(Some(msg));
            }
            if inbox.closed {
                return Poll::Ready(None);
            }
            if std::mem::take(&mut inbox.paused) {
                self.hub.push(Op::ResumeSource(self.id));
            }
            super::wait_in(&mut inbox.waiter, cx);
            Poll::Pending
        })
        .await
    }

    /// The channel source's id.
    pub fn id(&self) -> SourceId {
        self.id
    }
}

impl<T> Drop for AsyncReceiver<T> {
    fn drop(&mut self) {
        if !self.inbox.borrow().closed {
            self.hub.push(Op::CloseSource(self.id));
        }
    }
}
