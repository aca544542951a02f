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

use std::mem::MaybeUninit;

use super::table::Table;

/// A key that carries its own seeded hash.
pub(super) trait Hashed: Copy + Eq {
    fn hash(&self) -> u64;
}

/// A slab entry. The value is `MaybeUninit` with a flag beside it rather
/// than an `Option`: taking a ~600-byte `Option` out wrote a whole `None`
/// back and went through two temporaries (four copies per removal); here a
/// value is written once and read out once.
struct Slot<K, V> {
    key: K,
    live: bool,
    val: MaybeUninit<V>,
}

impl<K, V> Slot<K, V> {
    #[inline]
    fn get(&self) -> Option<&V> {
        // SAFETY: `live` is set exactly while `val` holds a value.
        self.live.then(|| unsafe { self.val.assume_init_ref() })
    }

    #[inline]
    fn get_mut(&mut self) -> Option<&mut V> {
        if !self.live {
            return None;
        }
        // SAFETY: as in `get`.
        Some(unsafe { self.val.assume_init_mut() })
    }
}

impl<K, V> Drop for Slot<K, V> {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: as in `get`; the flag is not read again.
            unsafe { self.val.assume_init_drop() };
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Slot<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).field("live", &self.live).field("val", &self.get()).finish()
    }
}

/// Entries by key, in reused slots.
#[derive(Debug)]
pub(super) struct Slots<K, V> {
    index: Table<u32>,
    entries: Vec<Slot<K, V>>,
    free: Vec<u32>,
    len: usize,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Self { index: Table::default(), entries: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<K: Hashed, V> Slots<K, V> {
    /// An index sized for `n` entries up front (the slab grows as used).
    pub(super) fn with_capacity(n: usize) -> Self {
        Self { index: Table::with_capacity(n), ..Self::default() }
    }

    /// The slot holding `k`.
    #[expect(
        clippy::inline_always,
        reason = "four lookups per query: outlined, a lookup cost 135 instructions on hot-cap, inlined 99"
    )]
    #[inline(always)]
    pub(super) fn find(&self, k: &K) -> Option<u32> {
        let slots = &self.entries;
        let pos = self.index.find(k.hash(), |&i| slots[i as usize].live && slots[i as usize].key == *k)?;
        Some(*self.index.at(pos))
    }

    #[inline]
    pub(super) fn get(&self, i: u32) -> Option<&V> {
        self.entries.get(i as usize)?.get()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: u32) -> Option<&mut V> {
        self.entries.get_mut(i as usize)?.get_mut()
    }

    /// The entry under `k`.
    #[cfg(test)]
    pub(super) fn get_key(&self, k: &K) -> Option<&V> {
        self.get(self.find(k)?)
    }

    /// The key of slot `i`.
    #[inline]
    pub(super) fn key(&self, i: u32) -> Option<K> {
        self.entries.get(i as usize).filter(|s| s.live).map(|s| s.key)
    }

    /// Adds `v` under `k`, which must not be present; returns its slot.
    #[cfg(test)]
    pub(super) fn insert(&mut self, k: K, v: V) -> u32 {
        self.insert_with(k, || v)
    }

    /// [`Self::insert`] of the value `make` returns, made where it is kept
    /// when the slot is a reused one (no copy of the whole value).
    #[inline]
    pub(super) fn insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> u32 {
        let i = if let Some(i) = self.free.pop() {
            let slot = &mut self.entries[i as usize];
            slot.key = k;
            slot.val.write(make());
            slot.live = true;
            i
        } else {
            self.entries.push(Slot { key: k, live: true, val: MaybeUninit::new(make()) });
            (self.entries.len() - 1) as u32
        };
        self.index.insert(k.hash(), i);
        self.len += 1;
        i
    }

    /// Takes the entry out of slot `i`.
    #[expect(clippy::inline_always, reason = "inlined, the ~600-byte value is copied once less on its way out")]
    #[inline(always)]
    pub(super) fn remove(&mut self, i: u32) -> Option<V> {
        let slot = self.entries.get_mut(i as usize)?;
        if !slot.live {
            return None;
        }
        slot.live = false;
        self.index.remove(slot.key.hash(), |&j| j == i);
        self.free.push(i);
        self.len -= 1;
        // SAFETY: the slot was live, and is marked free before the read, so
        // the value is read out exactly once and never dropped in place.
        Some(unsafe { self.entries[i as usize].val.assume_init_read() })
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// Keys remembered for a while, oldest first, with a value each: a FIFO
/// ring and an open-addressing index of ring positions (keyed by each key's
/// own hash) over it.
///
/// What a `HashMap<K, (ts, V)>` beside a `VecDeque<(ts, K)>` did, with the
/// same answers: a key remembered again takes the newer time and value; an
/// entry leaves when its time leaves the window, if the key still holds that
/// time; a removed key leaves the index only (its ring entry expires as a
/// stale one). The map hashed nothing but moved the ~70-byte key in and out
/// of its buckets on every insert, lookup and removal.
#[derive(Debug)]
pub(super) struct Window<K, V> {
    /// Absolute positions (`head` + offset) of the newest entry per key.
    index: Table<u64>,
    ring: std::collections::VecDeque<(u64, K, V)>,
    /// Absolute position of `ring`'s front.
    head: u64,
}

impl<K, V> Default for Window<K, V> {
    fn default() -> Self {
        Self { index: Table::default(), ring: std::collections::VecDeque::new(), head: 0 }
    }
}

impl<K: Hashed, V: Copy> Window<K, V> {
    /// Entries in the ring (stale ones included).
    #[inline]
    pub(super) fn queued(&self) -> usize {
        self.ring.len()
    }

    /// Whether no key is remembered.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Time of the oldest ring entry.
    #[inline]
    pub(super) fn oldest(&self) -> Option<u64> {
        self.ring.front().map(|e| e.0)
    }

    /// Time and value remembered for `k`.
    #[inline]
    pub(super) fn get(&self, k: &K) -> Option<(u64, V)> {
        let (ring, head) = (&self.ring, self.head);
        let pos = self.index.find(k.hash(), |&at| ring[(at - head) as usize].1 == *k)?;
        let e = &ring[(*self.index.at(pos) - head) as usize];
        Some((e.0, e.2))
    }

    /// Remembers `k` at `ts` (the newest time: callers push in time order).
    pub(super) fn insert(&mut self, k: K, ts: u64, v: V) {
        let at = self.head + self.ring.len() as u64;
        self.ring.push_back((ts, k, v));
        let (ring, head) = (&self.ring, self.head);
        match self.index.find(k.hash(), |&a| ring[(a - head) as usize].1 == k) {
            Some(pos) => *self.index.at_mut(pos) = at,
            None => {
                self.index.insert(k.hash(), at);
            }
        }
    }

    /// Forgets `k` (its ring entry stays, stale).
    #[inline]
    pub(super) fn remove(&mut self, k: &K) {
        let (ring, head) = (&self.ring, self.head);
        self.index.remove(k.hash(), |&a| ring[(a - head) as usize].1 == *k);
    }

    /// Drops the oldest ring entry, and its key when the key still holds its time.
    pub(super) fn pop_oldest(&mut self) {
        let Some(&(ts, k, _)) = self.ring.front() else { return };
        let (ring, head) = (&self.ring, self.head);
        if let Some(pos) = self.index.find(k.hash(), |&a| ring[(a - head) as usize].1 == k)
            && ring[(*self.index.at(pos) - head) as usize].0 == ts
        {
            self.index.remove_at(pos);
        }
        self.ring.pop_front();
        self.head += 1;
    }

    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.head += self.ring.len() as u64;
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{Hashed, Slots, Window};

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

    /// The window answers as the map and queue it replaced: newest time per
    /// key, removal by key, expiry only of the time the key still holds.
    #[test]
    fn window_keeps_the_newest_time_per_key() {
        let mut w: Window<K, u8> = Window::default();
        w.insert(K(1), 10, 1);
        w.insert(K(8), 11, 2);
        w.insert(K(1), 12, 3);
        assert_eq!((w.get(&K(1)), w.get(&K(8)), w.get(&K(15))), (Some((12, 3)), Some((11, 2)), None));
        w.pop_oldest(); // K(1) at 10: K(1) holds 12 now, stays
        assert_eq!(w.get(&K(1)), Some((12, 3)));
        w.remove(&K(8));
        assert_eq!((w.get(&K(8)), w.queued()), (None, 2));
        w.pop_oldest(); // stale K(8)
        w.insert(K(8), 13, 4);
        w.pop_oldest(); // K(1) at 12
        assert_eq!((w.get(&K(1)), w.get(&K(8)), w.oldest()), (None, Some((13, 4)), Some(13)));
        // Two entries of one key at one time: the first to leave takes the key.
        w.insert(K(8), 13, 5);
        w.pop_oldest();
        assert_eq!((w.get(&K(8)), w.queued()), (None, 1));
        w.clear();
        assert!(w.is_empty() && w.oldest().is_none());
        for i in 0..10_000u64 {
            w.insert(K(i % 50), i, 0);
            if w.queued() > 100 {
                w.pop_oldest();
            }
        }
        assert_eq!(w.get(&K(49)), Some((9_999, 0)));
    }
}
