//! The table of the key-value example's keys and of pubsub's topics: a
//! hash map whose keys carry their hash.
//!
//! A hash table that grows moves every entry to a new place, found by its
//! hash. std's map keeps no hashes, so growing it hashes every key again,
//! all of it: a table of 1,000 keys of 1 MB each took 0.3 s to grow, in
//! one go, while no other client was served. Here each key's hash is
//! computed once, when the key is stored (with std's randomly keyed hash,
//! so chosen keys cannot be made to collide), and kept beside it; the
//! table's own hasher hands that number back, so growing reads 8 bytes a
//! key, however long the key. A lookup hashes the bytes it is given, as
//! any map does, and compares bytes only when the hashes agree.
//!
//! Growing still moves every entry, in one go: two million keys made a
//! pause of 0.3 s. So the table is 256 tables, a key's hash choosing
//! which, and each grows on its own, moving a 256th of the keys.

// Each example uses the part it needs.
#![allow(dead_code)]

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// Keys (byte strings, kept as `K`: a `Box<[u8]>`, or an `Rc<[u8]>` to
/// share each key's bytes with others) to values of type `V`.
pub struct Keyspace<V, K = Box<[u8]>> {
    /// The table, in `SHARDS` parts chosen by the key's hash.
    shards: Vec<Table<K, V>>,
    /// How many keys there are, over all the shards.
    len: usize,
    /// The hash's random key.
    keys: RandomState,
}

type Table<K, V> = HashMap<Key<K>, V, BuildHasherDefault<Carried>>;

/// A table grows in one go, moving every entry; split in 256, each part
/// grows on its own, and a growth moves a 256th of the keys: at two
/// million keys, a pause of about a millisecond rather than 0.3 s.
const SHARDS: usize = 256;

/// Which shard holds a key of `hash`: bits the shard's own table does not
/// use (its bucket comes from the low bits, the tag it keeps of each entry
/// from the top seven), so each shard spreads its keys as a whole table.
fn shard(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

impl<V, K: Bytes> Default for Keyspace<V, K> {
    fn default() -> Self {
        Keyspace {
            shards: (0..SHARDS).map(|_| Table::default()).collect(),
            len: 0,
            keys: RandomState::new(),
        }
    }
}

/// What a key's bytes may be kept in.
pub trait Bytes: Borrow<[u8]> + for<'a> From<&'a [u8]> {}

impl<K: Borrow<[u8]> + for<'a> From<&'a [u8]>> Bytes for K {}

impl<V, K: Bytes> Keyspace<V, K> {
    fn probe<'a>(&self, key: &'a [u8]) -> Probe<'a> {
        Probe {
            hash: self.keys.hash_one(key),
            bytes: key,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let probe = self.probe(key);
        self.shards[shard(probe.hash)].get(&probe as &dyn View)
    }

    /// The stored copy of `key`, if it is there.
    pub fn key(&self, key: &[u8]) -> Option<&K> {
        let probe = self.probe(key);
        let table = &self.shards[shard(probe.hash)];
        table.get_key_value(&probe as &dyn View).map(|(k, _)| &k.bytes)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let probe = self.probe(key);
        self.shards[shard(probe.hash)].get_mut(&probe as &dyn View)
    }

    /// Set `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        self.put(key, K::from(key), value)
    }

    /// Set `key`, which is not in the table, to `value`, and hand back (a
    /// clone of) the stored copy of the key: an `Rc` the caller shares.
    /// (For a key already there, the table keeps its old copy.)
    pub fn insert_shared(&mut self, key: &[u8], value: V) -> K
    where
        K: Clone,
    {
        let bytes = K::from(key);
        self.put(key, bytes.clone(), value);
        bytes
    }

    /// Store `bytes`, a copy of `key`, with `value`.
    fn put(&mut self, key: &[u8], bytes: K, value: V) -> Option<V> {
        let hash = self.keys.hash_one(key);
        let old = self.shards[shard(hash)].insert(Key { hash, bytes }, value);
        self.len += usize::from(old.is_none());
        old
    }

    /// Take `key` out; its value, if it had one.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let probe = self.probe(key);
        let old = self.shards[shard(probe.hash)].remove(&probe as &dyn View);
        self.len -= usize::from(old.is_some());
        old
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True with no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every value, in no order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|t| t.values())
    }

    /// Take every key out, with its value (the table's memory goes with
    /// them).
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> {
        self.take_tables()
            .0
            .into_iter()
            .flat_map(|t| t.into_iter().map(|(k, v)| (k.bytes, v)))
    }

    /// Empty the table at once, handing its keys over to be freed a part
    /// at a time ([`Tables::free_some`]): freeing two million keys in one
    /// go took half a second.
    pub fn take_tables(&mut self) -> Tables<V, K> {
        self.len = 0;
        let empty = (0..SHARDS).map(|_| Table::default()).collect();
        Tables(std::mem::replace(&mut self.shards, empty))
    }
}

/// The parts of a table that was emptied, still to free.
pub struct Tables<V, K>(Vec<Table<K, V>>);

impl<V, K> Tables<V, K> {
    /// Free one part (a 256th of the keys); true once all are freed.
    pub fn free_some(&mut self) -> bool {
        self.0.pop();
        self.0.is_empty()
    }
}

/// A stored key and its hash.
struct Key<K> {
    hash: u64,
    bytes: K,
}

/// A key looked up: the bytes asked for, and their hash.
struct Probe<'a> {
    hash: u64,
    bytes: &'a [u8],
}

/// What the map compares and hashes, stored or looked up: the map finds a
/// `Key` by a `Probe` through `Borrow<dyn View>` (std's map looks entries
/// up by a borrowed form of the key, and a key's borrowed form cannot be a
/// `Probe`, which holds a hash the bytes alone cannot give back).
trait View {
    fn hash(&self) -> u64;
    fn bytes(&self) -> &[u8];
}

impl<K: Borrow<[u8]>> View for Key<K> {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.borrow()
    }
}

impl View for Probe<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }

    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl<'a, K: Borrow<[u8]> + 'a> Borrow<dyn View + 'a> for Key<K> {
    fn borrow(&self) -> &(dyn View + 'a) {
        self
    }
}

// A key and its borrowed form must hash and compare alike.
impl<K> Hash for Key<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Hash for dyn View + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(View::hash(self));
    }
}

impl<K: Borrow<[u8]>> PartialEq for Key<K> {
    fn eq(&self, other: &Key<K>) -> bool {
        self.hash == other.hash && self.bytes.borrow() == other.bytes.borrow()
    }
}

impl<K: Borrow<[u8]>> Eq for Key<K> {}

impl PartialEq for dyn View + '_ {
    fn eq(&self, other: &Self) -> bool {
        View::hash(self) == View::hash(other) && self.bytes() == other.bytes()
    }
}

impl Eq for dyn View + '_ {}

/// The table's hasher: the hash a key carries, as it is.
#[derive(Default)]
struct Carried(u64);

impl Hasher for Carried {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Not called: keys hash as the one number they carry. (Were it, FNV-1a
    /// keeps the map correct, if not collision-proof.)
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Keyspace;
    use std::collections::HashMap;
    use std::rc::Rc;

    #[test]
    fn random_operations_agree_with_std_map() {
        // Short keys (many share the table's low bits), growth and
        // shrinking by removal, and long keys.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ks, mut std_map) = (Keyspace::<u64>::default(), HashMap::<Vec<u8>, u64>::new());
        for step in 0..100_000u64 {
            let r = next();
            let key: Vec<u8> = match r % 4 {
                0 => vec![],
                1 => vec![(r >> 8) as u8 % 7; ((r >> 16) % 3) as usize],
                2 => format!("k{}", (r >> 8) % 3000).into_bytes(),
                _ => {
                    let mut k = vec![b'x'; 300 + ((r >> 8) % 5) as usize];
                    k[0] = (r >> 20) as u8;
                    k
                }
            };
            match (r >> 40) % 5 {
                0 | 1 => assert_eq!(ks.insert(&key, step), std_map.insert(key, step), "{step}"),
                2 => assert_eq!(ks.remove(&key), std_map.remove(&key), "{step}"),
                3 => assert_eq!(ks.get(&key), std_map.get(&key), "{step}"),
                _ => {
                    if let Some(v) = ks.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = std_map.get_mut(&key) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(ks.len(), std_map.len());
        }
        let mut a: Vec<(Box<[u8]>, u64)> = ks.drain().collect();
        let mut b: Vec<(Box<[u8]>, u64)> = std_map.into_iter().map(|(k, v)| (k.into(), v)).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    /// Every shard takes its share: growth pauses stay a 256th of the
    /// table's.
    #[test]
    fn keys_spread_over_the_shards() {
        let mut ks = Keyspace::<u32>::default();
        for i in 0..256 * 64u32 {
            ks.insert(format!("key{i}").as_bytes(), i);
        }
        let sizes: Vec<usize> = ks.shards.iter().map(|t| t.len()).collect();
        assert!(sizes.iter().all(|&n| (16..=160).contains(&n)), "{sizes:?}");
    }

    /// Keys kept as `Rc`s: the stored copy is handed back to share.
    #[test]
    fn a_shared_key_is_the_stored_copy() {
        let mut ks = Keyspace::<u32, Rc<[u8]>>::default();
        let name = ks.insert_shared(b"topic", 1);
        assert!(Rc::ptr_eq(&name, ks.key(b"topic").unwrap()));
        assert_eq!(Rc::strong_count(&name), 2);
        assert_eq!(ks.remove(b"topic"), Some(1));
        assert_eq!(Rc::strong_count(&name), 1);
        assert!(ks.key(b"topic").is_none() && ks.is_empty());
    }

    #[test]
    fn keys_are_found_by_their_bytes() {
        let mut ks = Keyspace::<u32>::default();
        for i in 0..10_000u32 {
            assert_eq!(ks.insert(format!("key{i}").as_bytes(), i), None);
        }
        assert_eq!(ks.insert(b"key7", 70), Some(7), "same bytes, same key");
        assert_eq!(ks.len(), 10_000);
        assert_eq!(ks.get(b"key7"), Some(&70));
        *ks.get_mut(b"key9999").unwrap() += 1;
        assert_eq!(ks.get(b"key9999"), Some(&10_000));
        assert_eq!(ks.get(b"key10000"), None);
        assert_eq!(ks.get(b""), None);
        assert_eq!(ks.remove(b"key0"), Some(0));
        assert_eq!(ks.remove(b"key0"), None);
        assert_eq!(ks.insert(b"", 1), None, "the empty key is a key");
        assert_eq!(ks.get(b""), Some(&1));
        assert_eq!(ks.values().count(), 10_000);
        let mut drained: Vec<_> = ks.drain().map(|(k, _)| k).collect();
        drained.sort();
        assert_eq!(drained.len(), 10_000);
        assert_eq!(&*drained[0], b"");
        assert!(ks.is_empty());
    }
}
