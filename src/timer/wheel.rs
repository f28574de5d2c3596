//! TEMPORARY reference wheel (BTreeMap) until the real timing wheel lands.
#![allow(missing_docs, dead_code)]
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}
impl Key {
    pub fn index(&self) -> u32 {
        self.index
    }
    pub fn generation(&self) -> u32 {
        self.generation
    }
    pub fn from_parts(index: u32, generation: u32) -> Key {
        Key { index, generation }
    }
}
struct E<T> {
    deadline: u64,
    seq: u64,
    value: T,
    gen: u32,
    expired: bool,
}
pub struct Wheel<T> {
    slots: Vec<Option<E<T>>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    order: BTreeMap<(u64, u64), u32>,
    seq: u64,
    now: u64,
}
impl<T> Wheel<T> {
    pub fn new(_tick_shift: u32, now: u64) -> Self {
        Wheel {
            slots: vec![],
            gens: vec![],
            free: vec![],
            order: BTreeMap::new(),
            seq: 0,
            now,
        }
    }
    pub fn insert(&mut self, deadline: u64, value: T) -> Key {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.seq += 1;
        let g = self.gens[i as usize];
        self.slots[i as usize] = Some(E {
            deadline,
            seq: self.seq,
            value,
            gen: g,
            expired: false,
        });
        self.order.insert((deadline, self.seq), i);
        Key {
            index: i,
            generation: g,
        }
    }
    fn live(&self, k: Key) -> bool {
        matches!(self.slots.get(k.index as usize), Some(Some(e)) if e.gen == k.generation)
    }
    pub fn remove(&mut self, key: Key) -> Option<T> {
        if !self.live(key) {
            return None;
        }
        let e = self.slots[key.index as usize].take().unwrap();
        if !e.expired {
            self.order.remove(&(e.deadline, e.seq));
        }
        self.gens[key.index as usize] += 1;
        self.free.push(key.index);
        Some(e.value)
    }
    pub fn take(&mut self, key: Key) -> Option<T> {
        self.remove(key)
    }
    pub fn reset(&mut self, key: Key, deadline: u64) -> bool {
        if !self.live(key) {
            return false;
        }
        self.seq += 1;
        let seq = self.seq;
        let e = self.slots[key.index as usize].as_mut().unwrap();
        if !e.expired {
            self.order.remove(&(e.deadline, e.seq));
        }
        e.expired = false;
        e.deadline = deadline;
        e.seq = seq;
        self.order.insert((deadline, seq), key.index);
        true
    }
    pub fn deadline(&self, key: Key) -> Option<u64> {
        if self.live(key) {
            self.slots[key.index as usize].as_ref().map(|e| e.deadline)
        } else {
            None
        }
    }
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        if self.live(key) {
            self.slots[key.index as usize].as_mut().map(|e| &mut e.value)
        } else {
            None
        }
    }
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn next_deadline(&self) -> Option<u64> {
        self.order.keys().next().map(|k| k.0)
    }
    pub fn collect_expired(&mut self, now: u64, out: &mut Vec<Key>) {
        self.now = self.now.max(now);
        while let Some((&(d, s), &i)) = self.order.iter().next() {
            if d > self.now {
                break;
            }
            self.order.remove(&(d, s));
            let e = self.slots[i as usize].as_mut().unwrap();
            e.expired = true;
            out.push(Key {
                index: i,
                generation: e.gen,
            });
        }
    }
}
