//! The pairer's table of waiting queries: an open-addressing index of slot
//! numbers, keyed by each key's precomputed hash, over a slab of entries
//! that is reused.
//!
//! A `HashMap<Key, Pending>` moved the ~600-byte entry on insert and again
//! on remove, hashed the key per lookup, and every waiting-key check was a
//! second lookup before the `get_mut`. Here an entry is written once into
//! its slot and stays there; a lookup returns the slot number, which the
//! expiry queue also holds, so checking whether a queued entry is still the
//! current one costs no lookup at all.

use hashbrown::HashTable;

/// A key that carries its own seeded hash.
pub(super) trait Hashed: Copy + Eq {
    fn hash(&self) -> u64;
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    val: Option<V>,
}

/// Entries by key, in reused slots.
#[derive(Debug)]
pub(super) struct Slots<K, V> {
    index: HashTable<u32>,
    entries: Vec<Slot<K, V>>,
    free: Vec<u32>,
    len: usize,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Self { index: HashTable::new(), entries: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<K: Hashed, V> Slots<K, V> {
    /// An index sized for `n` entries up front (the slab grows as used).
    pub(super) fn with_capacity(n: usize) -> Self {
        Self { index: HashTable::with_capacity(n), ..Self::default() }
    }

    /// The slot holding `k`.
    #[inline]
    pub(super) fn find(&self, k: &K) -> Option<u32> {
        let slots = &self.entries;
        self.index.find(k.hash(), |&i| slots[i as usize].val.is_some() && slots[i as usize].key == *k).copied()
    }

    #[inline]
    pub(super) fn get(&self, i: u32) -> Option<&V> {
        self.entries.get(i as usize)?.val.as_ref()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: u32) -> Option<&mut V> {
        self.entries.get_mut(i as usize)?.val.as_mut()
    }

    /// The entry under `k`.
    #[inline]
    pub(super) fn get_key(&self, k: &K) -> Option<&V> {
        self.get(self.find(k)?)
    }

    /// The key of slot `i`.
    #[inline]
    pub(super) fn key(&self, i: u32) -> Option<K> {
        self.entries.get(i as usize).filter(|s| s.val.is_some()).map(|s| s.key)
    }

    /// Adds `v` under `k`, which must not be present; returns its slot.
    #[inline]
    pub(super) fn insert(&mut self, k: K, v: V) -> u32 {
        let i = if let Some(i) = self.free.pop() {
            self.entries[i as usize] = Slot { key: k, val: Some(v) };
            i
        } else {
            self.entries.push(Slot { key: k, val: Some(v) });
            (self.entries.len() - 1) as u32
        };
        let slots = &self.entries;
        self.index.insert_unique(k.hash(), i, |&j| slots[j as usize].key.hash());
        self.len += 1;
        i
    }

    /// Takes the entry out of slot `i`.
    #[inline]
    pub(super) fn remove(&mut self, i: u32) -> Option<V> {
        let slot = self.entries.get_mut(i as usize)?;
        let v = slot.val.take()?;
        if let Ok(e) = self.index.find_entry(slot.key.hash(), |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
        self.len -= 1;
        Some(v)
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::{Hashed, Slots};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct K(u64);

    impl Hashed for K {
        fn hash(&self) -> u64 {
            // Few distinct hashes: every lookup compares keys.
            self.0 % 7
        }
    }

    #[test]
    fn slots_are_reused_and_lookups_follow_removals() {
        let mut table: Slots<K, u64> = Slots::with_capacity(4);
        let first = table.insert(K(1), 10);
        let second = table.insert(K(8), 80);
        assert_eq!((table.find(&K(1)), table.find(&K(8)), table.find(&K(15))), (Some(first), Some(second), None));
        assert_eq!(table.remove(first), Some(10));
        assert_eq!((table.remove(first), table.find(&K(1)), table.len()), (None, None, 1));
        let reused = table.insert(K(15), 150);
        assert_eq!(reused, first, "the freed slot is reused");
        assert_eq!(
            (table.get_key(&K(15)), table.get_key(&K(8)), table.key(second)),
            (Some(&150), Some(&80), Some(K(8)))
        );
        for i in 0..1000 {
            let slot = table.insert(K(100 + i), i);
            assert_eq!(table.remove(slot), Some(i));
        }
        assert_eq!(table.len(), 2);
        assert!(table.entries.len() <= 3, "the slab does not grow under churn: {}", table.entries.len());
    }
}
