//! A hierarchical timing wheel: O(1) arm, cancel and re-arm for timers.
//!
//! # Levels
//!
//! Time is a `u64` count of nanoseconds. It is cut into *ticks* of
//! `1 << tick_shift` ns, and the wheel is a stack of levels of 64 slots each.
//! A slot at level `L` spans `64^L` ticks: level 0 has one-tick slots, level 1
//! has 64-tick slots, and so on. There are just enough levels for the top one
//! to span all of `u64`, so every deadline, `u64::MAX` included, has a home
//! and no separate overflow list is needed.
//!
//! An entry is filed at the level that holds the highest bit in which its
//! deadline tick differs from the current tick. Timers due soon therefore sit
//! in level 0 at one-tick resolution, while distant ones sit high up in coarse
//! slots and are not touched again until they get close.
//!
//! # Cascades
//!
//! As time advances, the wheel visits occupied slots in time order. A `u64`
//! occupancy bitmap per level, and one more word marking the levels that have
//! any, let it jump straight to the next occupied slot, so jumping an hour
//! ahead costs a few bit scans, not millions of ticks. A level-0 slot is
//! *fired*. A higher slot is *cascaded*: its entries are filed
//! again relative to the new current tick, which puts them in lower levels
//! because they now share more high bits with it. An entry cascades at most
//! once per level.
//!
//! Expiry is exact, not rounded to ticks: an entry fires iff
//! `deadline <= now`, so entries of the current tick that are still in the
//! future stay where they are.
//!
//! # Why ties keep their order
//!
//! Every slot list is kept in arm order: an entry is appended at the tail
//! when it is armed (insert or reset) and when it cascades. Two entries with
//! the same deadline always sit in the same slot: where an entry is filed
//! depends only on its deadline tick and the current tick, and the current
//! tick never passes the start of an occupied slot without cascading it, so
//! an entry armed later for the same deadline lands where the earlier one
//! still is. A cascade walks its slot front to back and appends to lower
//! levels, so the earlier entry stays ahead. Each batch of expired entries is
//! then sorted by deadline, ties broken by the order in which the slots gave
//! them up: first-armed-first-fired for equal deadlines, whichever levels
//! each timer travelled through, with no sequence number stored per entry
//! (8 bytes less per entry, which is cache traffic saved on every arm and
//! cancel).
//!
//! # Expiry is two-phase
//!
//! [`Wheel::collect_expired`] only *marks* due entries and reports their keys.
//! The values stay in the wheel until [`Wheel::take`]. A caller can then fire a
//! batch one callback at a time, and an earlier callback can still cancel a
//! later timer of the same batch: the later `take` just returns `None`.

use std::fmt;

/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// Null link for the intrusive lists; also why a wheel holds fewer than
/// `u32::MAX` entries.
const NIL: u32 = u32::MAX;

/// Handle to an entry of a [`Wheel`].
///
/// It carries a generation, so a key whose entry has fired and been taken, or
/// been removed, stays harmless even after its slab slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// Slab index of the entry.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Generation of the slab slot at the time the entry was inserted.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Rebuilds a key from [`index`](Key::index) and
    /// [`generation`](Key::generation), for example after packing it into a
    /// token. A made-up key is safe to use: at worst it is stale.
    // Kept for users of the wheel even where the embedding crate has no caller.
    #[allow(dead_code)]
    pub fn from_parts(index: u32, generation: u32) -> Key {
        Key { index, generation }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// On the free list; `next` is the free-list link.
    Vacant,
    /// Linked into a slot list. The position is stored so that unlinking
    /// doesn't have to recompute it from a tick that has since moved.
    Armed { level: u8, slot: u8 },
    /// Reported by `collect_expired`, waiting for `take`.
    Expired,
}

/// Size of one slab entry holding a `T` (for a size regression test).
#[cfg(test)]
pub(crate) fn entry_size<T>() -> usize {
    std::mem::size_of::<Entry<T>>()
}

struct Entry<T> {
    value: Option<T>,
    deadline: u64,
    generation: u32,
    state: State,
    /// Towards the head (armed earlier) of the slot list. Meaningless while
    /// the entry is the head: when the head is unlinked the next entry
    /// becomes the head and is not written, which at a million timers is a
    /// cache miss saved per cancel (that entry lies far ahead in the slab).
    prev: u32,
    /// Towards the tail (armed later); the free-list link while vacant.
    next: u32,
}

/// How a batch of expired entries came out so far.
struct Order {
    /// Deadline of the entry reported last.
    last: u64,
    /// Every deadline was at or after the one before.
    sorted: bool,
}

/// A slot's list: oldest entry at the head, newest at the tail.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List { head: NIL, tail: NIL };

/// A hierarchical timing wheel holding values of type `T` until their
/// deadlines pass.
///
/// The `timer::wheel` module documentation explains how it works.
pub struct Wheel<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    /// Armed plus expired-but-not-taken entries.
    len: usize,
    /// Each slot's list, `levels * SLOTS` of them.
    lists: Vec<List>,
    /// One bit per non-empty slot, one word per level.
    occupied: Vec<u64>,
    /// One bit per level whose `occupied` word is not zero: finding the next
    /// slot is two bit scans, not a walk over the levels, which matters
    /// because every turn of the loop asks (usually to learn that nothing is
    /// due yet).
    levels: u64,
    tick_shift: u32,
    /// Time last passed to `collect_expired` (or to `new`).
    now: u64,
    /// `now >> tick_shift` while idle; during a collect it walks forward
    /// through the slots being processed.
    tick: u64,
    /// Scratch space for sorting a batch that came out of order, kept to
    /// avoid reallocating: (deadline, position in the batch, index).
    batch: Vec<(u64, u32, u32)>,
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("len", &self.len)
            .field("now", &self.now)
            .field("tick_shift", &self.tick_shift)
            .field("levels", &self.occupied.len())
            .finish_non_exhaustive()
    }
}

impl<T> Wheel<T> {
    /// Creates an empty wheel whose time is `now`.
    ///
    /// Level-0 slots are `1 << tick_shift` ns wide (for example, 20 gives
    /// about 1.05 ms). Smaller ticks mean more cascading for the same spread
    /// of deadlines, but never less precise firing: expiry is always exact.
    ///
    /// # Panics
    ///
    /// Panics if `tick_shift >= 64`.
    pub fn new(tick_shift: u32, now: u64) -> Self {
        assert!(tick_shift < 64, "tick_shift must be below 64");
        // Enough levels for the top one to cover every bit of a tick number.
        let tick_bits = 64 - tick_shift;
        let levels = tick_bits.div_ceil(SLOT_BITS) as usize;
        Wheel {
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            lists: vec![EMPTY; levels * SLOTS],
            occupied: vec![0; levels],
            levels: 0,
            tick_shift,
            now,
            tick: now >> tick_shift,
            batch: Vec::new(),
        }
    }

    /// Arms `value` to expire at `deadline` (ns) and returns its key.
    ///
    /// A deadline at or before the wheel's current time is fine: the entry is
    /// reported by the next [`collect_expired`](Wheel::collect_expired).
    /// O(1); it allocates only when the wheel holds more entries than ever
    /// before.
    ///
    /// # Panics
    ///
    /// Panics if the wheel already holds `u32::MAX - 1` entries.
    pub fn insert(&mut self, deadline: u64, value: T) -> Key {
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.value = Some(value);
            entry.deadline = deadline;
            index
        } else {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("timing wheel is full");
            self.entries.push(Entry {
                value: Some(value),
                deadline,
                generation: 0,
                state: State::Expired,
                prev: NIL,
                next: NIL,
            });
            index
        };
        self.link(index);
        self.len += 1;
        Key {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Removes the entry and returns its value, whether it is still armed or
    /// already reported by [`collect_expired`](Wheel::collect_expired).
    ///
    /// Returns `None` if the key is stale: its entry was taken or removed, or
    /// never existed. O(1).
    // A hint, since the wheel is generic and compiled in the caller's crate:
    // without it LLVM stopped inlining this into `cancel` once `unlink`
    // also kept the level bitmap (about 20 more instructions per cancel).
    #[inline]
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let index = self.live(key)?;
        if let State::Armed { level, slot } = self.entries[index as usize].state {
            self.unlink(index, level as usize, slot as usize);
        }
        let entry = &mut self.entries[index as usize];
        let value = entry.value.take();
        entry.state = State::Vacant;
        self.len -= 1;
        // Bumping the generation is what makes every outstanding copy of the
        // key stale, even after this slot is handed out again. A slot whose
        // generations are used up is retired instead, never handed out
        // again: wrapping would make a key four billion arms old name a
        // live entry (and with few live timers one slot takes every arm).
        // 32 bytes lost per 2^32 arms of one slot.
        if entry.generation == u32::MAX {
            return value;
        }
        entry.generation += 1;
        entry.next = self.free_head;
        self.free_head = index;
        value
    }

    /// Removes the entry and returns its value; the same as
    /// [`remove`](Wheel::remove).
    ///
    /// It exists so that firing code reads as "take what expired" while
    /// cancelling code reads as "remove". Note that if an entry reported by
    /// `collect_expired` was [`reset`](Wheel::reset) in the meantime, it is
    /// armed again and `take` still removes it; a caller that must not fire
    /// such an entry can check [`deadline`](Wheel::deadline) first.
    pub fn take(&mut self, key: Key) -> Option<T> {
        self.remove(key)
    }

    /// Moves an entry to a new deadline, keeping its key and value.
    ///
    /// This counts as arming it again: among equal deadlines it now fires
    /// after entries armed before this call. An entry already reported by
    /// [`collect_expired`](Wheel::collect_expired) but not yet taken becomes
    /// armed again. Returns `false` if the key is stale. O(1).
    pub fn reset(&mut self, key: Key, deadline: u64) -> bool {
        let Some(index) = self.live(key) else {
            return false;
        };
        if let State::Armed { level, slot } = self.entries[index as usize].state {
            self.unlink(index, level as usize, slot as usize);
        }
        self.entries[index as usize].deadline = deadline;
        self.link(index);
        true
    }

    /// Deadline of the entry, or `None` if the key is stale.
    pub fn deadline(&self, key: Key) -> Option<u64> {
        self.live(key).map(|i| self.entries[i as usize].deadline)
    }

    /// Mutable access to the entry's value, or `None` if the key is stale.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let index = self.live(key)?;
        self.entries[index as usize].value.as_mut()
    }

    /// The deadline and value of an entry reported by
    /// [`collect_expired`](Wheel::collect_expired) that has been neither taken
    /// nor re-armed with [`reset`](Wheel::reset) since; `None` otherwise. A
    /// batch being fired must skip keys for which this is `None`.
    pub fn collected_mut(&mut self, key: Key) -> Option<(u64, &mut T)> {
        let index = self.live(key)?;
        let entry = &mut self.entries[index as usize];
        if entry.state != State::Expired {
            return None;
        }
        Some((entry.deadline, entry.value.as_mut()?))
    }

    /// Number of entries held: armed ones plus those reported by
    /// [`collect_expired`](Wheel::collect_expired) and not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the wheel holds no entries at all (see [`len`](Wheel::len)).
    // Kept for users of the wheel even where the embedding crate has no caller.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A time at which to call [`collect_expired`](Wheel::collect_expired)
    /// next, or `None` if nothing is armed.
    ///
    /// The result is never later than the earliest deadline of the armed
    /// entries, so sleeping until it never makes a timer late. It is exact
    /// when the earliest entry is in level 0, which is always the case once it
    /// falls in the same 64-tick-aligned window as the current time. Otherwise it is the start of the next occupied
    /// higher-level slot: waking there cascades the slot, after which the
    /// answer is sharper. It is after the wheel's current time unless an entry
    /// is already due, so a loop sleeping until it cannot busy-spin.
    ///
    /// Cost: one bitmap test per level plus a walk of one level-0 slot.
    pub fn next_deadline(&self) -> Option<u64> {
        let (level, slot) = self.next_occupied()?;
        if level > 0 {
            // Every deadline in this slot, and in all later ones, is at or
            // after the slot's first tick, which is after the current tick.
            return Some(self.slot_start(level, slot) << self.tick_shift);
        }
        let mut earliest = u64::MAX;
        let mut cursor = self.lists[slot].head;
        while cursor != NIL {
            let entry = &self.entries[cursor as usize];
            earliest = earliest.min(entry.deadline);
            cursor = entry.next;
        }
        Some(earliest)
    }

    /// Advances the wheel's time to `now` and appends to `out` the keys of all
    /// armed entries with `deadline <= now`, sorted by deadline and, for equal
    /// deadlines, by the order in which they were armed.
    ///
    /// Time never goes backwards: a `now` earlier than the previous one is
    /// treated as the previous one. Reported entries keep their values until
    /// [`take`](Wheel::take) (or [`remove`](Wheel::remove)), and are no longer
    /// counted by [`next_deadline`](Wheel::next_deadline). Entries armed after
    /// this call with a deadline `<= now` are reported by the next call.
    ///
    /// Cost: proportional to the entries reported, the entries cascaded and
    /// the occupied slots passed; empty slots are skipped by bit scans.
    pub fn collect_expired(&mut self, now: u64, out: &mut Vec<Key>) {
        let now = now.max(self.now);
        let now_tick = now >> self.tick_shift;
        let first = out.len();
        let mut order = Order {
            last: 0,
            sorted: true,
        };
        while let Some((level, slot)) = self.next_occupied() {
            let start = self.slot_start(level, slot);
            if start > now_tick {
                break;
            }
            // Nothing is filed before `start`, so the tick may move there;
            // the other entries keep valid positions relative to it.
            self.tick = start;
            if level > 0 {
                self.cascade(level, slot);
                continue;
            }
            self.fire_slot(slot, now, out, &mut order);
            if start == now_tick {
                // Whatever is left in this slot is due later in this tick.
                break;
            }
        }
        self.tick = now_tick;
        self.now = now;
        if !order.sorted {
            self.sort_by_deadline(&mut out[first..]);
        }
    }

    /// Sorts a batch of expired keys by deadline, keeping the order of equal
    /// deadlines: they came out of one slot list, in arm order (see the
    /// module docs). Only needed when a slot held deadlines out of order
    /// (armed so within one tick); slots themselves come out in time order.
    fn sort_by_deadline(&mut self, keys: &mut [Key]) {
        self.batch.clear();
        for (position, key) in keys.iter().enumerate() {
            let deadline = self.entries[key.index as usize].deadline;
            self.batch.push((deadline, position as u32, key.index));
        }
        self.batch
            .sort_unstable_by_key(|&(deadline, position, _)| (deadline, position));
        for (key, &(_, _, index)) in keys.iter_mut().zip(&self.batch) {
            let generation = self.entries[index as usize].generation;
            *key = Key { index, generation };
        }
    }

    /// Slab index of a key's entry if the key is not stale.
    fn live(&self, key: Key) -> Option<u32> {
        let entry = self.entries.get(key.index as usize)?;
        let ok = entry.generation == key.generation && entry.state != State::Vacant;
        ok.then_some(key.index)
    }

    /// Level and slot for a deadline relative to the current tick.
    fn place(&self, deadline: u64) -> (usize, usize) {
        // A deadline already passed goes in the current tick's slot: the next
        // collect always visits it, and `next_deadline` reads it exactly.
        let tick = (deadline >> self.tick_shift).max(self.tick);
        // The highest differing bit picks the level. OR-ing in the low slot
        // bits maps "same tick" to level 0 instead of needing a special case.
        let highest = 63 - ((tick ^ self.tick) | SLOT_MASK).leading_zeros();
        let level = highest / SLOT_BITS;
        let slot = (tick >> (level * SLOT_BITS)) & SLOT_MASK;
        (level as usize, slot as usize)
    }

    /// First tick covered by `slot` of `level` in the current rotation.
    fn slot_start(&self, level: usize, slot: usize) -> u64 {
        let shift = level as u32 * SLOT_BITS;
        let above = shift + SLOT_BITS;
        // The top level may reach past bit 63, where shifting would overflow.
        let base = if above >= 64 {
            0
        } else {
            (self.tick >> above) << above
        };
        base | ((slot as u64) << shift)
    }

    /// The earliest occupied slot.
    ///
    /// An entry sits at level `L` only if its tick differs from the current
    /// one above level `L - 1`, so every entry of a lower level is due before
    /// any entry of a higher one. Within a level, slots never wrap around: an
    /// entry shares all bits above its level with the current tick, so its
    /// slot is at or after the current one. Hence the lowest set bit of the
    /// lowest non-empty level is the earliest slot.
    fn next_occupied(&self) -> Option<(usize, usize)> {
        if self.levels == 0 {
            return None;
        }
        let level = self.levels.trailing_zeros() as usize;
        Some((level, self.occupied[level].trailing_zeros() as usize))
    }

    fn mark_occupied(&mut self, level: usize, slot: usize) {
        self.occupied[level] |= 1 << slot;
        self.levels |= 1 << level;
    }

    fn mark_empty(&mut self, level: usize, slot: usize) {
        self.occupied[level] &= !(1 << slot);
        if self.occupied[level] == 0 {
            self.levels &= !(1 << level);
        }
    }

    /// Appends an entry to the tail of the slot list for its deadline.
    // LLVM stopped inlining this once collecting called it from one more
    // place, which cost about 15 instructions per arm.
    #[inline(always)]
    fn link(&mut self, index: u32) {
        let (level, slot) = self.place(self.entries[index as usize].deadline);
        self.append(level * SLOTS + slot, index);
        self.entries[index as usize].state = State::Armed {
            level: level as u8,
            slot: slot as u8,
        };
        self.mark_occupied(level, slot);
    }

    /// Links `index` in at the tail of list `at`; the caller sets its state
    /// and the occupancy bits.
    fn append(&mut self, at: usize, index: u32) {
        let list = &mut self.lists[at];
        let old = list.tail;
        list.tail = index;
        if old == NIL {
            list.head = index;
        } else {
            self.entries[old as usize].next = index;
        }
        let entry = &mut self.entries[index as usize];
        entry.prev = old;
        entry.next = NIL;
    }

    /// Unlinks an armed entry from its slot list. The caller sets its state.
    fn unlink(&mut self, index: u32, level: usize, slot: usize) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        let list = &mut self.lists[level * SLOTS + slot];
        if list.head == index {
            // The head's `prev` is not kept up to date (see `Entry::prev`),
            // so the entry behind it is not written: cancelling timers in
            // the order they were armed touches no other entry.
            list.head = next;
            if next == NIL {
                list.tail = NIL;
                self.mark_empty(level, slot);
            }
            return;
        }
        self.entries[prev as usize].next = next;
        if next == NIL {
            list.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Marks the due entries of a level-0 slot expired and reports them in
    /// `out`, noting in `order` whether deadlines still come out sorted.
    ///
    /// The list is taken whole and only the entries not yet due are linked
    /// back, in their order (those of the current tick that lie later in
    /// it). Unlinking each due entry on its own would rewrite its
    /// neighbours' links one by one, for entries that are all leaving anyway.
    fn fire_slot(&mut self, slot: usize, now: u64, out: &mut Vec<Key>, order: &mut Order) {
        let mut cursor = std::mem::replace(&mut self.lists[slot], EMPTY).head;
        self.mark_empty(0, slot);
        while cursor != NIL {
            let entry = &mut self.entries[cursor as usize];
            let next = entry.next;
            if entry.deadline <= now {
                entry.state = State::Expired;
                order.sorted &= entry.deadline >= order.last;
                order.last = entry.deadline;
                out.push(Key {
                    index: cursor,
                    generation: entry.generation,
                });
            } else {
                self.append(slot, cursor);
            }
            cursor = next;
        }
        if self.lists[slot].head != NIL {
            self.mark_occupied(0, slot);
        }
    }

    /// Files every entry of a higher-level slot again, relative to the
    /// current tick (which the caller has moved to the slot's start), front
    /// to back so that arm order survives.
    fn cascade(&mut self, level: usize, slot: usize) {
        let mut cursor = std::mem::replace(&mut self.lists[level * SLOTS + slot], EMPTY).head;
        self.mark_empty(level, slot);
        while cursor != NIL {
            let next = self.entries[cursor as usize].next;
            self.link(cursor);
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;
    const DAY: u64 = 86_400 * SEC;

    /// Collects at `now` and takes everything, returning the values in
    /// firing order.
    fn advance<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<T> {
        let mut keys = Vec::new();
        wheel.collect_expired(now, &mut keys);
        keys.into_iter()
            .map(|k| wheel.take(k).expect("collected key must be takeable"))
            .collect()
    }

    #[test]
    fn basic_fire_order() {
        let mut wheel = Wheel::new(20, 0);
        wheel.insert(30 * MS, "c");
        wheel.insert(10 * MS, "a");
        wheel.insert(20 * MS, "b");
        wheel.insert(5 * SEC, "d");
        assert_eq!(wheel.len(), 4);
        assert_eq!(advance(&mut wheel, 9 * MS), Vec::<&str>::new());
        assert_eq!(advance(&mut wheel, 25 * MS), ["a", "b"]);
        assert_eq!(advance(&mut wheel, 10 * SEC), ["c", "d"]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn fires_exactly_not_rounded_to_ticks() {
        // One 1024 ns tick holds deadlines 1024..2048.
        let mut wheel = Wheel::new(10, 1024);
        wheel.insert(1500, 'b');
        wheel.insert(1100, 'a');
        assert_eq!(advance(&mut wheel, 1099), Vec::<char>::new());
        assert_eq!(advance(&mut wheel, 1100), ['a']);
        assert_eq!(advance(&mut wheel, 1499), Vec::<char>::new());
        assert_eq!(advance(&mut wheel, 1500), ['b']);
    }

    #[test]
    fn equal_deadlines_fire_in_arm_order_across_levels() {
        let mut wheel = Wheel::new(10, 0);
        let deadline = 3 * SEC; // millions of ticks away: a high level
        let x = wheel.insert(deadline, "x");
        let _a = wheel.insert(deadline, "a");
        let (level, _) = wheel.place(deadline);
        assert!(level >= 2, "test needs a cascading entry, got level {level}");

        // Get close enough that the far entries cascade into level 0.
        assert!(advance(&mut wheel, deadline - 5_000).is_empty());
        assert_eq!(wheel.place(deadline).0, 0);
        assert_eq!(wheel.next_deadline(), Some(deadline));

        // Armed late, straight into the same level-0 slot.
        wheel.insert(deadline, "b");
        // Re-arming puts "x" behind everything armed before it.
        assert!(wheel.reset(x, deadline));
        wheel.insert(deadline - 1, "first");

        assert_eq!(advance(&mut wheel, deadline), ["first", "a", "b", "x"]);
    }

    #[test]
    fn equal_deadlines_keep_arm_order_in_one_big_collect() {
        let mut wheel = Wheel::new(0, 0);
        let deadline = 7 * DAY + 12_345;
        let values: Vec<u32> = (0..100).collect();
        for &v in &values {
            wheel.insert(deadline, v);
        }
        assert_eq!(advance(&mut wheel, deadline), values);
    }

    #[test]
    fn remove_inside_batch() {
        let mut wheel = Wheel::new(20, 0);
        let k1 = wheel.insert(MS, 1);
        let k2 = wheel.insert(2 * MS, 2);
        let k3 = wheel.insert(3 * MS, 3);
        let mut out = Vec::new();
        wheel.collect_expired(10 * MS, &mut out);
        assert_eq!(out, [k1, k2, k3]);
        assert_eq!(wheel.len(), 3, "collected entries stay until taken");

        // Firing k1's callback cancels k3.
        assert_eq!(wheel.take(k1), Some(1));
        assert_eq!(wheel.remove(k3), Some(3));
        assert_eq!(wheel.take(k2), Some(2));
        assert_eq!(wheel.take(k3), None);
        assert!(wheel.is_empty());

        // A collected entry that is reset leaves the batch and re-arms.
        let k4 = wheel.insert(11 * MS, 4);
        let mut out = Vec::new();
        wheel.collect_expired(12 * MS, &mut out);
        assert_eq!(out, [k4]);
        assert!(wheel.reset(k4, 20 * MS));
        assert_eq!(wheel.next_deadline(), Some(20 * MS));
        assert!(advance(&mut wheel, 19 * MS).is_empty());
        assert_eq!(advance(&mut wheel, 20 * MS), [4]);
    }

    #[test]
    fn stale_keys_are_harmless_after_reuse() {
        let mut wheel = Wheel::new(20, 0);
        let old = wheel.insert(5 * MS, "old");
        assert_eq!(wheel.remove(old), Some("old"));
        let new = wheel.insert(7 * MS, "new");
        assert_eq!(new.index(), old.index(), "slab slot should be reused");
        assert_ne!(new.generation(), old.generation());

        assert_eq!(wheel.remove(old), None);
        assert_eq!(wheel.take(old), None);
        assert!(!wheel.reset(old, MS));
        assert_eq!(wheel.deadline(old), None);
        assert_eq!(wheel.get_mut(old), None);
        assert_eq!(wheel.deadline(new), Some(7 * MS));
        assert_eq!(wheel.len(), 1);

        // Keys that never existed.
        assert_eq!(wheel.remove(Key::from_parts(99, 0)), None);
        assert_eq!(wheel.remove(Key::from_parts(u32::MAX, 0)), None);

        // Fired-and-taken keys go stale too.
        assert_eq!(advance(&mut wheel, 10 * MS), ["new"]);
        assert_eq!(wheel.get_mut(new), None);
        assert_eq!(Key::from_parts(new.index(), new.generation()), new);
    }

    #[test]
    fn reset_moves_deadline() {
        let mut wheel = Wheel::new(20, 0);
        let a = wheel.insert(10 * MS, "a");
        let b = wheel.insert(20 * MS, "b");
        assert!(wheel.reset(a, 30 * MS)); // later
        assert!(wheel.reset(b, 5 * MS)); // earlier
        assert_eq!(wheel.deadline(a), Some(30 * MS));
        assert_eq!(wheel.next_deadline(), Some(5 * MS));
        *wheel.get_mut(b).unwrap() = "B";
        assert_eq!(advance(&mut wheel, 15 * MS), ["B"]);
        assert!(wheel.reset(a, DAY)); // into a high level...
        assert!(advance(&mut wheel, DAY - 1).is_empty());
        assert!(wheel.reset(a, DAY + SEC)); // ...and out of a low one
        assert!(advance(&mut wheel, DAY + SEC - 1).is_empty());
        assert_eq!(advance(&mut wheel, DAY + SEC), ["a"]);
    }

    #[test]
    fn far_deadlines_never_fire_early() {
        for shift in [0, 10, 20, 40, 63] {
            let mut wheel = Wheel::new(shift, 0);
            wheel.insert(3 * DAY, "days");
            wheel.insert(u64::MAX - 1, "max-1");
            wheel.insert(u64::MAX, "max");
            wheel.insert(u64::MAX - (1 << 40), "near-max");
            // Step through, landing just short of each deadline.
            assert!(advance(&mut wheel, 3 * DAY - 1).is_empty());
            assert_eq!(advance(&mut wheel, 3 * DAY), ["days"]);
            let mut t = 3 * DAY;
            while t < u64::MAX - (1 << 40) - 1 {
                t = t.saturating_mul(3).min(u64::MAX - (1 << 40) - 1);
                assert!(advance(&mut wheel, t).is_empty(), "shift {shift} t {t}");
                let next = wheel.next_deadline().unwrap();
                assert!(next > t && next <= u64::MAX - (1 << 40));
            }
            assert_eq!(advance(&mut wheel, u64::MAX - (1 << 40)), ["near-max"]);
            assert!(advance(&mut wheel, u64::MAX - 2).is_empty());
            assert_eq!(advance(&mut wheel, u64::MAX - 1), ["max-1"]);
            assert_eq!(wheel.next_deadline(), Some(u64::MAX));
            assert_eq!(advance(&mut wheel, u64::MAX), ["max"]);
            // At the end of time, new entries are simply due.
            wheel.insert(u64::MAX, "late");
            assert_eq!(advance(&mut wheel, u64::MAX), ["late"]);
        }
    }

    /// A slot whose generation would wrap is retired, never handed out
    /// again: otherwise, with few live timers, one slot takes every arm and
    /// after 2^32 of them a stale key names a live entry. (The slot's
    /// generation is set to where 2^32 - 1 reuses would leave it.)
    #[test]
    fn a_slot_whose_generation_would_wrap_is_retired() {
        let mut wheel = Wheel::new(20, 0);
        let first = wheel.insert(MS, "first");
        assert_eq!(wheel.remove(first), Some("first"));
        wheel.entries[first.index as usize].generation = u32::MAX;
        let last = wheel.insert(MS, "last");
        assert_eq!((last.index, last.generation), (first.index, u32::MAX));
        assert_eq!(wheel.remove(last), Some("last"));
        let next = wheel.insert(MS, "next");
        assert_ne!(next, first, "a stale key names a new entry");
        assert_ne!(next.index, first.index, "the worn-out slot was reused");
        assert_eq!(wheel.remove(first), None);
        assert_eq!(wheel.remove(last), None);
        assert_eq!(wheel.remove(next), Some("next"));
        assert!(wheel.is_empty());
    }

    #[test]
    fn big_jump_fires_everything_in_order() {
        let mut wheel = Wheel::new(20, 0);
        // Deadlines across every level, inserted in scrambled order.
        let mut deadlines: Vec<u64> = (0..500u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 40))
            .collect();
        for &d in &deadlines {
            wheel.insert(d, d);
        }
        deadlines.sort_unstable();
        // Hours, then the rest of time, in two jumps.
        let hours = 5 * 3_600 * SEC;
        let first = advance(&mut wheel, hours);
        let split = deadlines.partition_point(|&d| d <= hours);
        assert_eq!(first, deadlines[..split]);
        assert_eq!(advance(&mut wheel, u64::MAX), deadlines[split..]);
    }

    #[test]
    fn past_deadline_fires_at_next_collect() {
        let mut wheel = Wheel::new(20, 100 * MS);
        let mut out = Vec::new();
        wheel.collect_expired(200 * MS, &mut out);
        let past = wheel.insert(50 * MS, "past");
        let now = wheel.insert(200 * MS, "now");
        let zero = wheel.insert(0, "zero");
        // Even if the clock has not moved since, they come out now.
        assert!(wheel.next_deadline().unwrap() <= 50 * MS);
        assert_eq!(wheel.next_deadline(), Some(0));
        wheel.collect_expired(200 * MS, &mut out);
        assert_eq!(out, [zero, past, now]);
    }

    #[test]
    fn time_does_not_go_backwards() {
        let mut wheel = Wheel::new(20, 0);
        advance(&mut wheel, 100 * MS);
        wheel.insert(90 * MS, 'a');
        wheel.insert(150 * MS, 'b');
        // An earlier `now` is treated as the previous one, 100 ms.
        assert_eq!(advance(&mut wheel, 10 * MS), ['a']);
        assert!(advance(&mut wheel, 10 * MS).is_empty());
        assert_eq!(advance(&mut wheel, 150 * MS), ['b']);
    }

    #[test]
    fn next_deadline_is_exact_in_level_zero() {
        let tick = 1 << 20;
        let mut wheel = Wheel::new(20, 0);
        assert_eq!(wheel.next_deadline(), None);
        wheel.insert(40 * tick + 777, ());
        wheel.insert(40 * tick + 5, ());
        wheel.insert(41 * tick, ());
        assert_eq!(wheel.next_deadline(), Some(40 * tick + 5));
        // Same tick as now, but not due yet: still exact, still in future.
        advance(&mut wheel, 40 * tick + 6);
        assert_eq!(wheel.next_deadline(), Some(40 * tick + 777));
        // After a cascade the sharp value comes back.
        let mut wheel = Wheel::new(20, 0);
        wheel.insert(1000 * tick + 3, ());
        let coarse = wheel.next_deadline().unwrap();
        assert!(coarse > 0 && coarse <= 1000 * tick + 3);
        assert!(advance(&mut wheel, coarse).is_empty());
        assert_eq!(wheel.next_deadline(), Some(1000 * tick + 3));
    }

    #[test]
    fn next_deadline_is_after_now_unless_something_is_due() {
        let mut wheel = Wheel::new(20, 0);
        let mut now = 0;
        for i in 1..200u64 {
            wheel.insert(i * i * i * 7919 * MS, i);
        }
        // A loop that sleeps until next_deadline and collects: every wakeup
        // must make progress, and the count of wakeups stays small.
        let mut wakeups = 0;
        let mut fired = 0;
        while let Some(next) = wheel.next_deadline() {
            assert!(next > now, "would busy-spin at {now}");
            now = next;
            fired += advance(&mut wheel, now).len();
            wakeups += 1;
        }
        assert_eq!(fired, 199);
        assert!(wakeups < 199 * 8, "{wakeups} wakeups");
        // With something due, it may be <= now.
        wheel.insert(now - 1, 0);
        assert_eq!(wheel.next_deadline(), Some(now - 1));
    }

    // ---- model-based test ----

    #[derive(Clone, Debug)]
    enum When {
        /// `now` plus a random delta of up to `tick_shift + bits` bits.
        Ahead {
            bits: u32,
            raw: u64,
        },
        /// Already due.
        Behind(u64),
        NearMax(u64),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(When),
        Remove(usize),
        RemoveStale(usize),
        Reset(usize, When),
        Advance { bits: u32, raw: u64 },
    }

    fn when() -> impl Strategy<Value = When> {
        prop_oneof![
            8 => (0..=40u32, any::<u64>()).prop_map(|(bits, raw)| When::Ahead { bits, raw }),
            1 => (0..1u64 << 30).prop_map(When::Behind),
            1 => prop_oneof![0..4u64, any::<u64>()].prop_map(When::NearMax),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => when().prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Remove),
            1 => any::<usize>().prop_map(Op::RemoveStale),
            2 => (any::<usize>(), when()).prop_map(|(i, w)| Op::Reset(i, w)),
            3 => (0..=24u32, any::<u64>()).prop_map(|(bits, raw)| Op::Advance { bits, raw }),
        ]
    }

    fn delta(shift: u32, bits: u32, raw: u64) -> u64 {
        let bits = (shift + bits).min(64);
        if bits == 0 {
            0
        } else {
            raw >> (64 - bits)
        }
    }

    fn resolve(when: &When, shift: u32, now: u64) -> u64 {
        match *when {
            When::Ahead { bits, raw } => now.saturating_add(delta(shift, bits, raw)),
            When::Behind(d) => now.saturating_sub(d),
            When::NearMax(d) => u64::MAX - d,
        }
    }

    /// The wheel's expected contents: ids ordered by (deadline, arm seq).
    struct Model {
        order: BTreeMap<(u64, u64), u32>,
        live: HashMap<u32, (Key, u64, u64)>,
        seq: u64,
        now: u64,
    }

    impl Model {
        fn arm(&mut self, id: u32, key: Key, deadline: u64) {
            if let Some((_, d, s)) = self.live.remove(&id) {
                self.order.remove(&(d, s));
            }
            self.order.insert((deadline, self.seq), id);
            self.live.insert(id, (key, deadline, self.seq));
            self.seq += 1;
        }

        fn nth_live(&self, n: usize) -> Option<u32> {
            let len = self.order.len();
            (len > 0).then(|| *self.order.values().nth(n % len).unwrap())
        }
    }

    /// The slot lists hang together: `next` links run head to tail, every
    /// entry but the head has the right `prev`, entries know their slot, and
    /// the occupancy bits match.
    fn check_links<T>(wheel: &Wheel<T>) -> Result<(), TestCaseError> {
        let mut armed = 0;
        for (at, list) in wheel.lists.iter().enumerate() {
            let (level, slot) = (at / SLOTS, at % SLOTS);
            let occupied = wheel.occupied[level] & (1 << slot) != 0;
            prop_assert_eq!(occupied, list.head != NIL, "occupancy of {}", at);
            prop_assert_eq!(list.head == NIL, list.tail == NIL);
            let (mut prev, mut cursor) = (NIL, list.head);
            while cursor != NIL {
                let entry = &wheel.entries[cursor as usize];
                if prev != NIL {
                    prop_assert_eq!(entry.prev, prev);
                }
                let here = State::Armed {
                    level: level as u8,
                    slot: slot as u8,
                };
                prop_assert_eq!(entry.state, here);
                armed += 1;
                (prev, cursor) = (cursor, entry.next);
            }
            prop_assert_eq!(list.tail, prev);
        }
        let expected = wheel
            .entries
            .iter()
            .filter(|e| matches!(e.state, State::Armed { .. }));
        prop_assert_eq!(armed, expected.count());
        for level in 0..wheel.occupied.len() {
            prop_assert_eq!(wheel.levels & (1 << level) != 0, wheel.occupied[level] != 0);
        }
        Ok(())
    }

    fn check(wheel: &Wheel<u32>, model: &Model, shift: u32) -> Result<(), TestCaseError> {
        check_links(wheel)?;
        prop_assert_eq!(wheel.len(), model.live.len());
        let next = wheel.next_deadline();
        match model.order.keys().next() {
            None => prop_assert_eq!(next, None),
            Some(&(min, _)) => {
                let next = next.expect("entries but no next_deadline");
                prop_assert!(next <= min, "next {} > min {}", next, min);
                if min > model.now {
                    prop_assert!(next > model.now, "next {} <= now {}", next, model.now);
                }
                // Within the current 64-tick window everything is in level 0.
                let window = |t: u64| (t >> shift) >> SLOT_BITS;
                if min <= model.now || window(min) == window(model.now) {
                    prop_assert_eq!(next, min);
                }
            }
        }
        Ok(())
    }

    fn collect_and_compare(wheel: &mut Wheel<u32>, model: &mut Model, now: u64) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        wheel.collect_expired(now, &mut out);
        model.now = model.now.max(now);
        let mut expected = Vec::new();
        while let Some(entry) = model.order.first_entry() {
            if entry.key().0 > model.now {
                break;
            }
            let id = entry.remove();
            expected.push(model.live.remove(&id).unwrap().0);
        }
        prop_assert_eq!(&out, &expected);
        for key in out {
            prop_assert!(wheel.take(key).is_some());
            prop_assert_eq!(wheel.take(key), None);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_reference_model(
            shift in prop_oneof![0..=4u32, 8..=24u32, 0..64u32],
            start in prop_oneof![4 => 0..1u64 << 40, 1 => any::<u64>()],
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut wheel = Wheel::new(shift, start);
            let mut model = Model {
                order: BTreeMap::new(),
                live: HashMap::new(),
                seq: 0,
                now: start,
            };
            let mut stale: Vec<Key> = Vec::new();
            let mut next_id = 0u32;
            for op in &ops {
                match op {
                    Op::Insert(when) => {
                        let deadline = resolve(when, shift, model.now);
                        let key = wheel.insert(deadline, next_id);
                        model.arm(next_id, key, deadline);
                        next_id += 1;
                    }
                    Op::Remove(n) => {
                        if let Some(id) = model.nth_live(*n) {
                            let (key, d, s) = model.live.remove(&id).unwrap();
                            model.order.remove(&(d, s));
                            prop_assert_eq!(wheel.deadline(key), Some(d));
                            prop_assert_eq!(wheel.remove(key), Some(id));
                            stale.push(key);
                        }
                    }
                    Op::RemoveStale(n) => {
                        if !stale.is_empty() {
                            let key = stale[n % stale.len()];
                            prop_assert_eq!(wheel.remove(key), None);
                            prop_assert!(!wheel.reset(key, 0));
                        }
                    }
                    Op::Reset(n, when) => {
                        if let Some(id) = model.nth_live(*n) {
                            let key = model.live[&id].0;
                            let deadline = resolve(when, shift, model.now);
                            prop_assert!(wheel.reset(key, deadline));
                            model.arm(id, key, deadline);
                            prop_assert_eq!(wheel.get_mut(key).copied(), Some(id));
                        }
                    }
                    Op::Advance { bits, raw } => {
                        let now = model.now.saturating_add(delta(shift, *bits, *raw));
                        collect_and_compare(&mut wheel, &mut model, now)?;
                    }
                }
                check(&wheel, &model, shift)?;
            }
            // Drain the rest: everything left must cascade down and fire.
            collect_and_compare(&mut wheel, &mut model, u64::MAX)?;
            prop_assert!(wheel.is_empty());
            prop_assert_eq!(wheel.next_deadline(), None);
        }
    }

    // ---- rough timings: cargo test --release -- --ignored --nocapture ----

    /// Deterministic scatter so the benches need no RNG dependency.
    fn scatter(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
    }

    #[test]
    #[ignore]
    fn bench_insert_remove() {
        use std::time::Instant;
        const N: u64 = 1_000_000;
        let mut wheel = Wheel::new(20, 0);
        let mut keys = Vec::with_capacity(N as usize);
        let t = Instant::now();
        for i in 0..N {
            keys.push(wheel.insert(scatter(i) % (60 * SEC), i));
        }
        let insert = t.elapsed();
        let t = Instant::now();
        for &k in &keys {
            wheel.remove(k);
        }
        let remove = t.elapsed();
        // Steady state: the slab is warm, so no allocation happens here.
        let t = Instant::now();
        for i in 0..N {
            let k = wheel.insert(scatter(i) % (60 * SEC), i);
            wheel.remove(k);
        }
        let pair = t.elapsed();
        let per = |d: std::time::Duration| d.as_nanos() as f64 / N as f64;
        println!(
            "insert {:.1} ns/op, remove {:.1} ns/op, warm insert+remove {:.1} ns/pair",
            per(insert),
            per(remove),
            per(pair)
        );
    }

    #[test]
    #[ignore]
    fn bench_collect_one_second_in_ms_steps() {
        use std::time::{Duration, Instant};
        const N: u64 = 1_000_000;
        let mut wheel = Wheel::new(20, 0);
        let t = Instant::now();
        for i in 0..N {
            wheel.insert(scatter(i) % SEC, i);
        }
        let insert = t.elapsed();
        let mut out = Vec::new();
        let mut fired = 0;
        let mut last = 0;
        let (mut collect, mut take) = (Duration::ZERO, Duration::ZERO);
        for step in 1..=1000 {
            out.clear();
            let t = Instant::now();
            wheel.collect_expired(step * MS, &mut out);
            collect += t.elapsed();
            let t = Instant::now();
            for &k in &out {
                let deadline = scatter(wheel.take(k).unwrap()) % SEC;
                assert!(deadline >= last);
                last = deadline;
            }
            take += t.elapsed();
            fired += out.len();
        }
        assert_eq!(fired as u64, N);
        let per = |d: Duration| d.as_nanos() as f64 / N as f64;
        println!(
            "spread insert {:.1} ns/op, then in 1 ms steps: collect {:.1} ns/entry, take {:.1} ns/entry",
            per(insert),
            per(collect),
            per(take)
        );
    }
}
