//! Channels from any thread into the loop.
//!
//! The sending half is an ordinary `Send` handle. The receiving half is a
//! source: register it with [`Ctx::add_channel`](crate::Ctx::add_channel) and its handler gets each
//! message, in send order, in the dispatch phase. A channel does not own an
//! fd: a send that finds the channel idle notifies the loop's one shared waker
//! (see [`Remote`](crate::Remote)), and later sends ride on that wake-up until
//! the loop has taken the batch.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::remote::Notifier;

struct Queue<T> {
    items: VecDeque<T>,
    /// Messages sent and not yet handed to the handler (includes the batch
    /// the loop is delivering right now): what the bound limits.
    in_flight: usize,
    /// The loop has been told about pending items and has not taken them yet.
    signaled: bool,
    /// Set once the receiving source is registered.
    notifier: Option<Notifier>,
    receiver_alive: bool,
    senders: usize,
}

impl<T> Queue<T> {
    /// Tell the loop this channel needs a dispatch, unless it already knows.
    fn announce(&mut self) {
        if !self.signaled {
            if let Some(n) = &self.notifier {
                n.notify();
                self.signaled = true;
            }
        }
    }
}

struct Chan<T> {
    queue: Mutex<Queue<T>>,
    capacity: Option<usize>,
    /// Blocked senders of a bounded channel wait here for room.
    room: Condvar,
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half of a channel into the loop. `Send + Sync` when `T: Send`;
/// clone it for each producer.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving half: register it with [`Ctx::add_channel`](crate::Ctx::add_channel).
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// Why [`Sender::try_send`] did not send; the message is handed back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// A bounded channel is at capacity.
    Full(T),
    /// The receiving source was closed or the loop dropped.
    Disconnected(T),
}

/// Why [`Sender::send`] did not send: the receiver is gone. The message is
/// handed back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("channel is full"),
            TrySendError::Disconnected(_) => f.write_str("channel receiver is gone"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel receiver is gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> TrySendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Disconnected(t) => t,
        }
    }
}

/// An unbounded channel into the loop.
///
/// ```
/// let mut el = evloop::EventLoop::<Vec<u32>>::new().unwrap();
/// let (tx, rx) = evloop::channel();
/// el.add_channel(rx, |msg, _ctx, got: &mut Vec<u32>| got.push(msg)).unwrap();
/// std::thread::spawn(move || for i in 0..3 { tx.send(i).unwrap() }).join().unwrap();
/// let mut got = Vec::new();
/// while got.len() < 3 {
///     el.turn(&mut got, Some(std::time::Duration::from_secs(5))).unwrap();
/// }
/// assert_eq!(got, [0, 1, 2]);
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make(None)
}

/// A channel holding at most `capacity` messages not yet handed to the
/// handler (for a task's [`AsyncReceiver`](crate::task::AsyncReceiver),
/// not yet returned by `recv`). [`Sender::try_send`] on a full channel returns the message;
/// [`Sender::send`] waits for room. A capacity of 0 is raised to 1.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    make(Some(capacity.max(1)))
}

fn make<T>(capacity: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            in_flight: 0,
            signaled: false,
            notifier: None,
            receiver_alive: true,
            senders: 1,
        }),
        capacity,
        room: Condvar::new(),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

impl<T> Sender<T> {
    /// Send without waiting. On a full bounded channel, or when the receiver
    /// is gone, the message comes back in the error: nothing is dropped.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let q = self.chan.lock();
        if !q.receiver_alive {
            return Err(TrySendError::Disconnected(msg));
        }
        if let Some(cap) = self.chan.capacity {
            if q.in_flight >= cap {
                return Err(TrySendError::Full(msg));
            }
        }
        self.push(q, msg);
        Ok(())
    }

    /// Send, waiting for room on a full bounded channel. Never call this on
    /// the loop's own thread with a bounded channel: the loop could not run to
    /// make room. Fails only when the receiver is gone.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        let mut q = self.chan.lock();
        loop {
            if !q.receiver_alive {
                return Err(SendError(msg));
            }
            match self.chan.capacity {
                Some(cap) if q.in_flight >= cap => {
                    q = self.chan.room.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                _ => break,
            }
        }
        self.push(q, msg);
        Ok(())
    }

    fn push(&self, mut q: MutexGuard<'_, Queue<T>>, msg: T) {
        q.items.push_back(msg);
        q.in_flight += 1;
        q.announce();
    }

    /// True while the receiving source is registered or still could be.
    pub fn is_connected(&self) -> bool {
        self.chan.lock().receiver_alive
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut q = self.chan.lock();
        q.senders -= 1;
        // The last sender leaving is news to the loop: the receiving source
        // closes itself once drained.
        if q.senders == 0 {
            q.announce();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut q = self.chan.lock();
        q.receiver_alive = false;
        q.notifier = None;
        let dropped = std::mem::take(&mut q.items);
        drop(q);
        self.chan.room.notify_all();
        if !dropped.is_empty() {
            log::error!(
                "evloop: channel closed with {} undelivered message(s)",
                dropped.len()
            );
        }
    }
}

impl<T> Receiver<T> {
    /// Attach to the loop: later sends notify `notifier`, and a backlog sent
    /// before registration is announced now.
    pub(crate) fn attach(&self, notifier: Option<Notifier>) {
        let mut q = self.chan.lock();
        q.notifier = notifier;
        q.signaled = false;
        if !q.items.is_empty() || q.senders == 0 {
            q.announce();
        }
    }

    /// Swap the pending messages into `batch` (an empty queue whose capacity
    /// is reused, so steady state does not allocate).
    pub(crate) fn take(&self, batch: &mut VecDeque<T>) {
        let mut q = self.chan.lock();
        std::mem::swap(&mut q.items, batch);
        q.signaled = false;
    }

    /// Whether the channel has a capacity (room comes with [`delivered`](Self::delivered)).
    pub(crate) fn is_bounded(&self) -> bool {
        self.chan.capacity.is_some()
    }

    /// `n` messages of the batch taken by [`take`](Self::take) have been
    /// handed over: make room for blocked senders. Returns true when every
    /// sender is gone and nothing is left, so the source should close.
    pub(crate) fn delivered(&self, n: usize) -> bool {
        let mut q = self.chan.lock();
        q.in_flight -= n;
        let finished = q.senders == 0 && q.items.is_empty();
        drop(q);
        if n > 0 && self.chan.capacity.is_some() {
            self.chan.room.notify_all();
        }
        finished
    }
}

/// A channel's receiving end and the closure that handles its messages.
pub(crate) struct ChannelEntry<T, F> {
    pub(crate) rx: Receiver<T>,
    pub(crate) batch: VecDeque<T>,
    pub(crate) handler: F,
}

impl<S, T, F> crate::source::Entry<S> for ChannelEntry<T, F>
where
    T: 'static,
    F: FnMut(T, &mut crate::Ctx<S>, &mut S),
{
    fn attach(&mut self, how: crate::source::Attach<'_>, link: &crate::remote::Link) -> std::io::Result<()> {
        match how {
            crate::source::Attach::Register { token, .. } => {
                let id = crate::SourceId::from_token(token);
                self.rx.attach(Some(link.notifier(id)));
            }
            crate::source::Attach::Deregister { .. } => self.rx.attach(None),
        }
        Ok(())
    }

    fn dispatch(&mut self, event: crate::Event, ctx: &mut crate::Ctx<S>, state: &mut S) -> crate::Action {
        self.rx.take(&mut self.batch);
        let mut n = 0;
        while let Some(msg) = self.batch.pop_front() {
            n += 1;
            (self.handler)(msg, ctx, state);
            if !ctx.is_open(event.id) {
                break;
            }
        }
        if !self.batch.is_empty() {
            log::error!(
                "evloop: channel {} closed by its handler with {} message(s) undelivered",
                event.id,
                self.batch.len()
            );
            self.batch.clear();
        }
        if self.rx.delivered(n) {
            log::debug!("evloop: channel {} has no senders left; closing", event.id);
            return crate::Action::Close;
        }
        crate::Action::Keep
    }

    fn source_any(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
