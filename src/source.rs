//! What a registered source is to the loop: its readiness, what its handler
//! answers, its priority, and the type-erased entry the source table stores.

use std::any::Any;
use std::fmt;

use crate::{Ctx, SourceId};

/// Readiness reported for one source in one turn: a small set of flags.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready(u8);

impl Ready {
    /// Nothing: the source was dispatched because it asked to be (rescheduled
    /// or scheduled), not because the kernel reported anything.
    pub const EMPTY: Ready = Ready(0);
    /// Data (or a connection, or a message) is waiting to be read.
    pub const READABLE: Ready = Ready(1);
    /// A write would not block.
    pub const WRITABLE: Ready = Ready(2);
    /// The peer closed its writing half, or the read side is shut.
    pub const READ_CLOSED: Ready = Ready(4);
    /// The write side is closed (peer gone, or shut down).
    pub const WRITE_CLOSED: Ready = Ready(8);
    /// The source has a pending error (read it with `take_error`).
    pub const ERROR: Ready = Ready(16);
    /// Priority (out-of-band) data is waiting.
    pub const PRIORITY: Ready = Ready(32);

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// See [`Ready::READABLE`].
    pub fn is_readable(self) -> bool {
        self.contains(Ready::READABLE)
    }
    /// See [`Ready::WRITABLE`].
    pub fn is_writable(self) -> bool {
        self.contains(Ready::WRITABLE)
    }
    /// See [`Ready::READ_CLOSED`].
    pub fn is_read_closed(self) -> bool {
        self.contains(Ready::READ_CLOSED)
    }
    /// See [`Ready::WRITE_CLOSED`].
    pub fn is_write_closed(self) -> bool {
        self.contains(Ready::WRITE_CLOSED)
    }
    /// See [`Ready::ERROR`].
    pub fn is_error(self) -> bool {
        self.contains(Ready::ERROR)
    }
    /// See [`Ready::PRIORITY`].
    pub fn is_priority(self) -> bool {
        self.contains(Ready::PRIORITY)
    }
    /// True when every flag of `other` is set in `self`.
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn from_mio(e: &mio::event::Event) -> Ready {
        let mut r = 0;
        if e.is_readable() {
            r |= Ready::READABLE.0;
        }
        if e.is_writable() {
            r |= Ready::WRITABLE.0;
        }
        if e.is_read_closed() {
            r |= Ready::READ_CLOSED.0;
        }
        if e.is_write_closed() {
            r |= Ready::WRITE_CLOSED.0;
        }
        if e.is_error() {
            r |= Ready::ERROR.0;
        }
        if e.is_priority() {
            r |= Ready::PRIORITY.0;
        }
        Ready(r)
    }
}

impl std::ops::BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Ready {
    fn bitor_assign(&mut self, rhs: Ready) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 6] = ["R", "W", "RC", "WC", "ERR", "PRI"];
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// What a handler receives besides its source: which source, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The source being dispatched.
    pub id: SourceId,
    /// Its readiness this turn.
    pub ready: Ready,
}

/// What a handler answers after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    /// Keep the source registered; call again on its next readiness.
    #[default]
    Keep,
    /// Close the source: it gets no further events and is dropped at the end
    /// of the turn.
    Close,
    /// "I still have work": call the handler again next turn, with the same
    /// readiness, even if the kernel reports nothing new. This is how a
    /// handler yields to others under edge-triggered polling without losing
    /// the data it did not get to.
    Reschedule,
}

/// Dispatch order among sources ready in the same turn.
///
/// Within one priority, sources are dispatched in the order they became
/// ready: first ready, first served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Dispatched before everything else (e.g. control channels, signals).
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Dispatched after everything else (e.g. bulk transfers, listeners under load).
    Low = 2,
}

/// How a source is attached to the poller, given to an entry when it is
/// registered, re-registered or removed.
pub(crate) enum Attach<'a> {
    /// Register (or re-register) with this token and interest.
    Register {
        registry: &'a mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
        reregister: bool,
    },
    /// Stop producing events.
    Deregister { registry: &'a mio::Registry },
}

/// A type-erased table entry: a source with its handler.
pub(crate) trait Entry<S> {
    /// Register or deregister with the poller. Loop-internal sources (channels)
    /// attach to the cross-thread notifier instead.
    fn attach(&mut self, how: Attach<'_>, link: &crate::remote::Link) -> std::io::Result<()>;
    /// Run the handler.
    fn dispatch(&mut self, event: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action;
    /// The source itself, for [`Ctx::source_mut`].
    fn source_any(&mut self) -> Option<&mut dyn Any>;
    /// The loop could not apply a registration change made while the
    /// handler ran, and has closed the source: its last word (a connection
    /// reports the close to its handler, whose `on_close` is promised).
    fn failed(&mut self, err: &std::io::Error, ctx: &mut Ctx<S>, state: &mut S) {
        let _ = (err, ctx, state);
    }
    /// Load the cache lines the next dispatch reads first, and return any
    /// byte of them (so the loads are made). The dispatch phase calls this
    /// for a few sources ahead when the table outgrows the cache: their
    /// misses then overlap instead of stalling one dispatch each.
    fn touch(&self) -> u8 {
        0
    }
}

/// [`Entry::attach`] for an entry whose source is a mio source.
pub(crate) fn attach_source<T: mio::event::Source>(source: &mut T, how: Attach<'_>) -> std::io::Result<()> {
    match how {
        Attach::Register {
            registry,
            token,
            interest,
            reregister: false,
        } => registry.register(source, token, interest),
        Attach::Register {
            registry,
            token,
            interest,
            reregister: true,
        } => registry.reregister(source, token, interest),
        Attach::Deregister { registry } => registry.deregister(source),
    }
}

/// A mio source and the closure that handles it.
pub(crate) struct Handled<T, F> {
    pub(crate) source: T,
    pub(crate) handler: F,
}

impl<S, T, F> Entry<S> for Handled<T, F>
where
    T: mio::event::Source + Any,
    F: FnMut(&mut T, Event, &mut Ctx<S>, &mut S) -> Action,
{
    fn attach(&mut self, how: Attach<'_>, _link: &crate::remote::Link) -> std::io::Result<()> {
        attach_source(&mut self.source, how)
    }

    fn dispatch(&mut self, event: Event, ctx: &mut Ctx<S>, state: &mut S) -> Action {
        (self.handler)(&mut self.source, event, ctx, state)
    }

    fn source_any(&mut self) -> Option<&mut dyn Any> {
        Some(&mut self.source)
    }
}
