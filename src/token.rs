//! Generation-tagged ids.
//!
//! A source lives in a slab slot, and slots are reused once a source is
//! reclaimed. An id that only named the slot would let a late event, a
//! rescheduled dispatch or a user's stale copy of the id reach whichever source
//! took the slot next. So every id also carries the slot's generation (how
//! many sources held it before): an id whose generation does not match the
//! slot's current occupant is stale, and everything done with it is a no-op.
//! A slot whose generations are used up is retired, never reused, so no
//! generation ever comes back.

use std::fmt;

/// Bits of a [`mio::Token`] that hold the slab index; the rest hold the generation.
const INDEX_BITS: u32 = 32;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

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
/// a newer source that reuses the same slot, however many times the slot is
/// reused (a slot is retired before its 32-bit generation would wrap).
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

    pub(crate) fn token(self) -> mio::Token {
        mio::Token(((self.generation as usize) << INDEX_BITS) | self.index as usize)
    }

    pub(crate) fn from_token(token: mio::Token) -> SourceId {
        SourceId {
            index: (token.0 & INDEX_MASK) as u32,
            generation: (token.0 >> INDEX_BITS) as u32,
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
        let id = SourceId::new(7, 0xdead_beef);
        assert_eq!(id.generation(), 0xdead_beef);
        let back = SourceId::from_token(id.token());
        assert_eq!(back, id);
        assert!(id.token().0 < RESERVED_BASE);
    }
}
