//! `recv().await` on the loop's channels: the receiving end is a source
//! that wakes the task, and `recv` takes the messages from the channel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use mio::Interest;

use super::hub::{Hub, Op};
use crate::source::{Attach, Entry};
use crate::{Action, Ctx, Event, Priority, Receiver, SourceId};

struct Inbox<T> {
    /// The channel; gone once its source is closed.
    rx: Option<Receiver<T>>,
    /// Messages taken from the channel and not yet received. They still
    /// count against a bounded channel's capacity: a sender gets room when
    /// the task receives, not when the loop looks.
    items: VecDeque<T>,
    /// Taken from `items` by `recv` and not yet reported to the channel
    /// (an unbounded channel's report waits for the next take).
    owed: usize,
    /// An empty queue whose capacity goes to the channel at the next take
    /// when `items` is not empty (so steady state does not allocate).
    spare: VecDeque<T>,
    waiter: Option<Waker>,
}

impl<T> Inbox<T> {
    /// Move what the channel holds into `items`; true when every sender is
    /// gone and nothing is left.
    fn refill(&mut self) -> bool {
        let Some(rx) = &self.rx else {
            return self.items.is_empty();
        };
        let owed = std::mem::take(&mut self.owed);
        if self.items.is_empty() {
            rx.take(&mut self.items);
        } else {
            rx.take(&mut self.spare);
            self.items.append(&mut self.spare);
        }
        rx.delivered(owed) && self.items.is_empty()
    }
}

/// The channel source: it wakes the task; the task takes the messages.
struct Feed<T>(Rc<RefCell<Inbox<T>>>);

impl<S, T: 'static> Entry<S> for Feed<T> {
    fn attach(&mut self, how: Attach<'_>, link: &crate::remote::Link) -> io::Result<()> {
        let inbox = self.0.borrow();
        if let Some(rx) = &inbox.rx {
            match how {
                Attach::Register { token, .. } => rx.attach(Some(link.notifier(SourceId::from_token(token)))),
                Attach::Deregister { .. } => rx.attach(None),
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, event: Event, _ctx: &mut Ctx<S>, _state: &mut S) -> Action {
        let mut inbox = self.0.borrow_mut();
        // Taken now, so the channel signals again on the next send.
        if inbox.refill() {
            log::debug!("evloop: channel {} has no senders left; closing", event.id);
            super::wake(&mut inbox.waiter);
            return Action::Close;
        }
        if !inbox.items.is_empty() {
            super::wake(&mut inbox.waiter);
        }
        Action::Keep
    }

    fn source_any(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// Closing the source drops the channel (senders see it gone) and tells a
/// waiting `recv` that no message will come.
impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        if let Ok(mut inbox) = self.0.try_borrow_mut() {
            inbox.rx = None;
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
            rx: Some(rx),
            items: VecDeque::new(),
            owed: 0,
            spare: VecDeque::new(),
            waiter: None,
        }));
        let id = ctx.insert(
            Box::new(Feed(inbox.clone())),
            Interest::READABLE,
            Priority::Normal,
        )?;
        Ok(AsyncReceiver { id, inbox, hub })
    }

    /// The next message; `None` once every sender is gone and every
    /// message has been received (or the source was closed).
    ///
    /// A message counts against a [`bounded`](crate::bounded) channel's
    /// capacity until `recv` returns it, so a task that does not receive
    /// holds its senders back. Cancel-safe: a `recv` dropped before it
    /// returns (under [`timeout`](super::timeout), say) takes no message.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut inbox = self.inbox.borrow_mut();
            if inbox.items.is_empty() && inbox.refill() {
                return Poll::Ready(None);
            }
            if let Some(msg) = inbox.items.pop_front() {
                inbox.owed += 1;
                if inbox.rx.as_ref().is_some_and(Receiver::is_bounded) {
                    // Room for a waiting sender now, not at the next take.
                    let owed = std::mem::take(&mut inbox.owed);
                    if let Some(rx) = &inbox.rx {
                        rx.delivered(owed);
                    }
                }
                return Poll::Ready(Some(msg));
            }
            if inbox.rx.is_none() {
                return Poll::Ready(None);
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
        if self.inbox.borrow().rx.is_some() {
            self.hub.push(Op::CloseSource(self.id));
        }
    }
}
