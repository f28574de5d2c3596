//! Generation-tagged ids.
//!
//! A source lives in a slab slot, and slots are reused once a source is
//! reclaimed. An id that only named the slot would let a late event, a
//! rescheduled dispatch or a user's stale copy of the id reach whichever source
//! took the slot next. So every id also carries the low 32 bits of the
//! source's registration sequence number: an id whose generation does not
//! match the slot's current occupant is stale, and everything done with it is
//! a no-op.

use std::fmt;

use crate::source::Priority;

// A source's mio token: generation (high 32 bits), priority (2 bits), slab
// index (30 bits). The priority rides in the token so that the dispatch
// phase can order a kernel event without reading the source's row of the
// table (see `event_loop::queue_kernel`).
const INDEX_BITS: u32 = 30;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
const GENERATION_SHIFT: u32 = 32;
/// How many sources a loop can hold at once (slab indexes below this).
pub(crate) const MAX_SOURCES: usize = 1 << INDEX_BITS;

/// Tokens at or above this value are the loop's own (waker, timerfd), never a source's.
pub(crate) const RESERVED_BASE: usize = usize::MAX - 8;
/// The token of the loop's cross-thread waker.
pub(crate) const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);
/// The token of the high-resolution timerfd.
pub(crate) const TIMERFD_TOKEN: mio::Token = mio::Token(usize::MAX - 1);

/// Identifies a registered source for as long as it lives.
///
/// Ids are cheap to copy and compare. Once the source is closed the id goes
/// stale: operations on it return an error or `false`, and it cannot address
/// a newer source that reuses the same slot. (The generation is 32 bits: an
/// id kept across more than four billion later registrations could in
/// principle collide; kernel events never can, since they are dispatched in
/// the turn that polled them.)
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl SourceId {
    pub(crate) fn new(index: usize, generation: u32) -> SourceId {
        SourceId {
            index: index as u32,
            generation,
        }
    }

    /// The token the source is registered with while it has `priority`.
    pub(crate) fn token(self, priority: Priority) -> mio::Token {
        mio::Token(
            ((self.generation as usize) << GENERATION_SHIFT)
                | ((priority as usize) << INDEX_BITS)
                | self.index as usize,
        )
    }

    pub(crate) fn from_token(token: mio::Token) -> SourceId {
        SourceId {
            index: (token.0 & INDEX_MASK) as u32,
            generation: (token.0 >> GENERATION_SHIFT) as u32,
        }
    }

    /// The slab slot this id points at (reused by later sources).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The generation that tells this source apart from others in the same slot.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

/// The priority a source's token was registered with, as `Priority as u32`.
pub(crate) fn token_priority(token: mio::Token) -> u32 {
    (token.0 >> INDEX_BITS) as u32 & 3
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        for priority in [Priority::High, Priority::Normal, Priority::Low] {
            for (index, generation) in [(7, 0xdead_beef), (MAX_SOURCES - 1, u32::MAX), (0, 0)] {
                let id = SourceId::new(index, generation);
                let token = id.token(priority);
                assert_eq!(SourceId::from_token(token), id);
                assert_eq!(token_priority(token), priority as u32);
                assert!(token.0 < RESERVED_BASE);
            }
        }
    }
}
