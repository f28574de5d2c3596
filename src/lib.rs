//! # evloop
//!
//! A single-threaded, callback-style event loop built on [mio]: it polls
//! sockets, timers and your own event sources, and dispatches readiness to
//! registered handlers **in a defined order**.
//!
//! ## The turn
//!
//! One call of [`EventLoop::turn`] is one iteration; [`EventLoop::run`]
//! repeats it until stopped. Its phases, in this order, are the contract:
//!
//! 1. **clock**: start the turn's time afresh; [`Ctx::now`] reads the
//!    monotonic clock at its first call and keeps that reading for the
//!    callbacks of the phase (read afresh after a phase that ran callbacks,
//!    after a poll that slept, and on every call between turns).
//! 2. **timers**: every expired timer fires, by deadline; equal deadlines
//!    fire in the order they were armed. A timer armed during this phase for
//!    "now" fires in the next turn.
//! 3. **deferred**: callbacks queued with [`Ctx::defer`] before this phase
//!    started, FIFO; ones queued while it runs wait for the next turn.
//! 4. **poll**: block in mio for 0 if deferred work or rescheduled handlers are
//!    pending or the [`PollMode`] spins, else until the next timer deadline,
//!    else until woken (capped by the caller's timeout). For a timer more
//!    than 64 wheel ticks (67.1 ms) away the wait ends earlier, at the start
//!    of the wheel slot holding it, to file it closer: such a turn fires
//!    nothing. No timer fires before its deadline; how late one fires is the
//!    poll's rounding (whole milliseconds, unless
//!    [`Builder::high_resolution_timers`]) plus whatever callback is running
//!    when it comes due.
//! 5. **dispatch**: ready sources are dispatched by priority, then in the
//!    order they became ready (rescheduled ones first, then what the poll
//!    found, first-ready first), so no source waits behind others that
//!    became ready after it. A source closed earlier in
//!    the turn receives nothing further; ids carry a generation, so a reused
//!    slot never gets its predecessor's event. Cross-thread wake-ups
//!    ([`Remote`], [`channel()`]), completed blocking work
//!    ([`Ctx::spawn_blocking`]) and woken tasks ([`Ctx::spawn`], see
//!    [`task`]) are ordinary sources here; a task waiting on a connection
//!    is polled in the connection's place when its input arrives, and one
//!    woken otherwise while this phase runs is polled in it, behind what
//!    was already ready.
//! 6. **after-poll hooks**: [`Ctx::add_check`] callbacks, then metrics.
//! 7. **reclaim**: sources closed during the turn are deregistered and dropped.
//!
//! With `RUST_LOG=evloop=trace` (or any `log` backend at trace level) the
//! first five phases and every dispatch are logged in every turn, the check
//! and reclaim phases in the turns where they have a hook to run or a source
//! to release, so you can watch the loop turn.
//!
//! ## Example
//!
//! A handler gets its source, the event, the loop's [`Ctx`] and your state:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use evloop::{Action, EventLoop, Interest};
//!
//! let mut el = EventLoop::<Vec<u8>>::new()?;
//! let (a, mut b) = UnixStream::pair()?;
//! a.set_nonblocking(true)?;
//! let a = mio::net::UnixStream::from_std(a);
//! el.register(a, Interest::READABLE, |sock, _ev, ctx, got: &mut Vec<u8>| {
//!     let mut buf = [0u8; 64];
//!     match sock.read(&mut buf) {
//!         Ok(0) => { ctx.stop(); Action::Close }
//!         Ok(n) => { got.extend_from_slice(&buf[..n]); Action::Reschedule }
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Action::Keep,
//!         Err(_) => Action::Close,
//!     }
//! })?;
//! b.write_all(b"hello")?;
//! drop(b);
//! let mut got = Vec::new();
//! el.run(&mut got)?;
//! assert_eq!(got, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]

#[cfg(not(all(unix, target_pointer_width = "64")))]
compile_error!("evloop supports 64-bit Unix (Linux first)");

#[macro_use]
mod trace;

mod blocking;
mod channel;
mod clock;
mod ctx;
mod event_loop;
mod fd_source;
mod metrics;
pub mod net;
mod remote;
#[cfg(target_os = "linux")]
mod signal;
mod source;
pub mod task;
mod timer;
mod token;

pub use channel::{bounded, channel, Receiver, SendError, Sender, TrySendError};
pub use clock::{Clock, ManualClock};
pub use ctx::Ctx;
pub use event_loop::{Builder, EventLoop, PanicPolicy, PollMode, Turn};
pub use fd_source::FdSource;
pub use metrics::{LatencyHistogram, Metrics, LATENCY_BUCKETS};
pub use mio::Interest;
pub use remote::{LoopGone, Remote};
#[cfg(target_os = "linux")]
pub use signal::Signals;
pub use source::{Action, Event, Priority, Ready};
pub use timer::{Fired, TimerId};
pub use token::SourceId;
