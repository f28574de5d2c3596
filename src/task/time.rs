//! Sleeping and timeouts on the loop's timing wheel: a manual clock drives
//! them as it drives every timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::hub::{Hub, Op, TimerSlot, When};

/// A future that is done once its deadline has passed: see [`sleep`] and
/// [`sleep_until`]. Its timer is armed when it is first polled and
/// cancelled if it is dropped before the end.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    when: When,
    /// The hub and timer slot, once armed.
    armed: Option<(Rc<Hub>, usize)>,
}

/// Sleep for `duration`, counted from the turn's `now()` when the sleep is
/// first polled. Outside a task (or `block_on`) it never ends.
///
/// ```
/// use std::time::Duration;
/// use evloop::{Builder, Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let mut el = Builder::default().clock(Clock::Manual(clock.clone())).build::<()>()?;
/// let id = el.spawn(evloop::task::sleep(Duration::from_secs(60)))?;
/// el.turn(&mut (), None)?;
/// assert!(el.is_open(id), "still asleep");
/// clock.advance(Duration::from_secs(60));
/// // The timer phase fires the timer, which wakes the task, which the
/// // dispatch phase of the same turn polls to its end.
/// el.turn(&mut (), None)?;
/// assert!(!el.is_open(id));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        when: When::After(duration),
        armed: None,
    }
}

/// Sleep until `deadline` (on the loop's clock).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        when: When::At(deadline),
        armed: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some((hub, slot)) = &self.armed else {
            let Some((hub, _)) = super::current_hub() else {
                log::warn!("evloop: a sleep was polled outside a task; it never ends");
                return Poll::Pending;
            };
            let slot = hub.timers.borrow_mut().insert(TimerSlot {
                timer: None,
                fired: false,
                waker: Some(cx.waker().clone()),
            });
            hub.push(Op::Arm {
                slot,
                when: self.when,
            });
            self.armed = Some((hub, slot));
            return Poll::Pending;
        };
        let mut timers = hub.timers.borrow_mut();
        let Some(s) = timers.get_mut(*slot) else {
            return Poll::Ready(());
        };
        if s.fired {
            return Poll::Ready(());
        }
        super::wait_in(&mut s.waker, cx);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let Some((hub, slot)) = self.armed.take() else {
            return;
        };
        let fired = hub.timers.borrow().get(slot).map_or(true, |s| s.fired);
        if fired {
            hub.timers.borrow_mut().try_remove(slot);
        } else {
            hub.push(Op::Disarm(slot));
        }
    }
}

/// Run `future` for at most `duration`: its output, or a
/// [`TimedOut`](io::ErrorKind::TimedOut) error once the time is up (the
/// future is then dropped). A future that is ready at once never times out.
/// Its clock is the loop's, as for [`sleep`]: outside a task (or
/// `block_on`) the time is never up.
///
/// ```
/// use std::time::Duration;
/// use evloop::task;
///
/// let mut el = evloop::EventLoop::<()>::new()?;
/// let (_tx, rx) = evloop::channel::<u8>();
/// let mut rx = task::AsyncReceiver::register(&mut el, rx)?;
/// let got = el.block_on(&mut (), task::timeout(Duration::from_millis(5), rx.recv()))?;
/// assert_eq!(got.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn timeout<F: Future>(duration: Duration, future: F) -> io::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timer = sleep(duration);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "evloop: timed out"))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Let every other ready source and task run before going on: the task is
/// polled again in the next turn.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
