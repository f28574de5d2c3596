//! Blocking work for tasks: [`spawn_blocking`] and [`resolve`] run on the
//! loop's worker pool ([`Ctx::spawn_blocking`](crate::Ctx::spawn_blocking))
//! and their results wake the task that awaits them.
//!
//! A future cannot reach the `Ctx` that starts a job, so, as a sleep arms
//! its timer, it notes the job in the hub ([`Op::Blocking`]) and the loop
//! starts it when the poll returns. The job's result comes back through the
//! pool's channel, in the dispatch phase, into a slot the future shares
//! with the job's `done`; `done` wakes the task. The result travels as
//! `Box<dyn Any + Send>` so the hub, which knows neither the loop's state
//! type nor the job's, can carry every job alike; the future, which knows
//! the job's type, takes it back out.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::hub::Op;
use super::{current_hub, not_in_task, Reply};
use crate::net::split_host_port;
use crate::Ctx;

/// A job's work, its result type erased.
pub(crate) type Work = Box<dyn FnOnce() -> Output + Send>;
type Output = crate::blocking::Output;

/// Where a job's result waits for the future that asked for it.
pub(crate) type Slot = Reply<io::Result<Output>>;

/// Start `work` on `ctx`'s pool, its result (or the pool's refusal) to land
/// in `slot`.
pub(crate) fn start<S>(work: Work, slot: Rc<RefCell<Slot>>, ctx: &mut Ctx<S>) {
    if Rc::strong_count(&slot) == 1 {
        // Its future was dropped in the poll that asked: nobody waits.
        return;
    }
    let back = slot.clone();
    if let Err(e) = ctx.spawn_blocking(work, move |result, _, _| finish(&back, result)) {
        finish(&slot, Err(e));
    }
}

fn finish(slot: &RefCell<Slot>, result: io::Result<Output>) {
    Reply::fill(slot, result);
}

/// Run `work` on the loop's worker pool and wait for what it returns,
/// without holding up the loop: for calls with no non-blocking form (a
/// file read, `getaddrinfo`, a CPU-bound hash).
///
/// The job starts when the task's poll returns. Errors: a job that panicked
/// (an [`Other`](io::ErrorKind::Other) error with the panic's message), the
/// pool's refusal ([`WouldBlock`](io::ErrorKind::WouldBlock) when
/// [`Builder::blocking_queue`](crate::Builder::blocking_queue) jobs are
/// already waiting), and, awaited outside a task, an error saying so. A
/// job cannot be stopped once started: dropping the future (a
/// [`timeout`](super::timeout), a cancelled task) discards its result.
///
/// ```
/// use evloop::{task, EventLoop};
///
/// let mut el = EventLoop::<()>::new()?;
/// let n = el.block_on(&mut (), task::spawn_blocking(|| (1..=20u64).product::<u64>()))?;
/// assert_eq!(n?, 2_432_902_008_176_640_000);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn_blocking<T, W>(work: W) -> impl Future<Output = io::Result<T>>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
{
    Job {
        work: Some(Box::new(move || Box::new(work()) as Output)),
        slot: None,
        _out: std::marker::PhantomData,
    }
}

/// The future of [`spawn_blocking`].
struct Job<T> {
    /// The work, until the hub has it.
    work: Option<Work>,
    /// The result's slot, once the job is noted.
    slot: Option<Rc<RefCell<Slot>>>,
    _out: std::marker::PhantomData<fn() -> T>,
}

impl<T: 'static> Future for Job<T> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let slot = match &self.slot {
            Some(slot) => slot.clone(),
            None => {
                let Some((hub, _)) = current_hub() else {
                    return Poll::Ready(Err(not_in_task()));
                };
                let Some(work) = self.work.take() else {
                    return Poll::Ready(Err(io::Error::other(
                        "evloop: a blocking job polled after its end",
                    )));
                };
                let slot = Rc::new(RefCell::new(Slot::default()));
                hub.push(Op::Blocking {
                    work,
                    slot: slot.clone(),
                });
                self.slot = Some(slot.clone());
                slot
            }
        };
        Reply::poll_take(&slot, cx).map(|result| {
            result?
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| io::Error::other("evloop: a blocking job's result of another type"))
        })
    }
}

/// Resolve `name`, written `"host:port"` or `"[v6addr]:port"`, as
/// [`net::resolve`](crate::net::resolve) does (with its errors): a numeric
/// address at once, a host name with the system resolver on the loop's
/// worker pool, while the task waits.
///
/// ```
/// use evloop::{task, EventLoop};
///
/// let mut el = EventLoop::<()>::new()?;
/// let addrs = el.block_on(&mut (), task::resolve("127.0.0.1:6000"))??;
/// assert_eq!(addrs, ["127.0.0.1:6000".parse::<std::net::SocketAddr>().unwrap()]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn resolve(name: &str) -> io::Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(name)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_owned();
    spawn_blocking(move || crate::net::lookup_host(&host, port)).await?
}
