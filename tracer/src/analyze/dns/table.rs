//! The open-addressing table under the pairer's indexes: linear probing
//! over an array of stored hashes, entries beside them, deletion by
//! backward shift (no tombstones, so a table under churn never degrades).
//!
//! Keys carry a hash computed once per message; the table stores the full
//! 64-bit hash per bucket and compares it before the caller's equality, so
//! a probe touches the hash array only until it meets its own hash. At
//! most half full: an unsuccessful probe reads ~2.5 buckets on average.
//!
//! What it replaced: `HashMap<ByClient, Slot>` and `HashMap<Loose, Slot>`
//! (the join indexes), which moved ~100-byte entries (a whole key per
//! group) through the entry API on every new lookup and every completion,
//! and hashbrown's `HashTable` under the in-flight table and the
//! recent-answers window. Pairing on `hot-cap --summary` (callgrind, one
//! replay thread): 3,713 → 3,280 instructions per query; `ktrace-busy`
//! 2,816 → 2,398. Then packed keys, answered queries kept in their slot
//! (`slots`), one copy out and none in, and one probe per join-group
//! update ([`Table::find_or_insert`]): 3,280 → 2,279 on `hot-cap`,
//! 2,395 → 1,582 on `ktrace-busy`.

use std::mem::MaybeUninit;

/// A bucket's hash when empty (a real hash of 0 is stored as 1).
const EMPTY: u64 = 0;

/// Entries of type `E`, found by hash and a caller's equality.
pub(super) struct Table<E> {
    hashes: Vec<u64>,
    /// Initialised exactly where `hashes` is not [`EMPTY`].
    items: Vec<MaybeUninit<E>>,
    len: usize,
}

impl<E> Default for Table<E> {
    fn default() -> Self {
        Self { hashes: Vec::new(), items: Vec::new(), len: 0 }
    }
}

impl<E: Copy + std::fmt::Debug> std::fmt::Debug for Table<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len).field("buckets", &self.hashes.len()).finish_non_exhaustive()
    }
}

#[inline]
fn stored(h: u64) -> u64 {
    if h == EMPTY { 1 } else { h }
}

impl<E: Copy> Table<E> {
    /// Room for `n` entries without growing.
    pub(super) fn with_capacity(n: usize) -> Self {
        let mut t = Self::default();
        t.resize(buckets_for(n));
        t
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets allocated (twice the entries it holds without growing).
    #[cfg(test)]
    pub(super) fn buckets(&self) -> usize {
        self.hashes.len()
    }

    /// Where the entry with hash `h` that `eq` accepts is (`Ok`), or
    /// else the first empty bucket of its probe, where it would go
    /// (`Err`). The one probe loop of every lookup and insertion; the
    /// table must have an empty bucket (it is at most half full, and
    /// callers of an empty table check for that first).
    #[expect(clippy::inline_always, reason = "a few instructions around the caller's equality; called per lookup")]
    #[inline(always)]
    fn probe(&self, h: u64, mut eq: impl FnMut(&E) -> bool) -> Result<usize, usize> {
        let mask = self.hashes.len() - 1;
        let mut at = h as usize & mask;
        loop {
            let s = self.hashes[at];
            if s == h {
                // SAFETY: the bucket's hash is not EMPTY, so its item is written.
                if eq(unsafe { self.items[at].assume_init_ref() }) {
                    return Ok(at);
                }
            } else if s == EMPTY {
                return Err(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Position of the entry with hash `h` that `eq` accepts. Valid until
    /// the next insert or removal (removal shifts entries back).
    #[expect(clippy::inline_always, reason = "as `probe`, which it wraps")]
    #[inline(always)]
    pub(super) fn find(&self, h: u64, eq: impl FnMut(&E) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.probe(stored(h), eq).ok()
    }

    /// The entry with hash `h` that `eq` accepts.
    #[expect(clippy::inline_always, reason = "as `find`, which it wraps")]
    #[inline(always)]
    pub(super) fn get(&self, h: u64, eq: impl FnMut(&E) -> bool) -> Option<E> {
        let pos = self.find(h, eq)?;
        // SAFETY: `find` returns positions of written items.
        Some(unsafe { *self.items[pos].assume_init_ref() })
    }

    /// The entry at `pos` (from [`Self::find`]).
    #[inline]
    pub(super) fn at(&self, pos: usize) -> &E {
        assert!(self.hashes[pos] != EMPTY, "table position {pos} is empty");
        // SAFETY: checked just above.
        unsafe { self.items[pos].assume_init_ref() }
    }

    /// The entry at `pos`, to change (its hash stays).
    #[inline]
    pub(super) fn at_mut(&mut self, pos: usize) -> &mut E {
        assert!(self.hashes[pos] != EMPTY, "table position {pos} is empty");
        // SAFETY: checked just above.
        unsafe { self.items[pos].assume_init_mut() }
    }

    /// Adds `e` under `h` (the caller knows it is absent); returns its
    /// position. Grows by doubling at half full: the number of entries,
    /// and so the memory, is bounded by the caller's own cap.
    #[inline]
    pub(super) fn insert(&mut self, h: u64, e: E) -> usize {
        self.reserve_one();
        let h = stored(h);
        let mask = self.hashes.len() - 1;
        let mut at = h as usize & mask;
        while self.hashes[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.hashes[at] = h;
        self.items[at] = MaybeUninit::new(e);
        self.len += 1;
        at
    }

    /// The position of the entry with hash `h` that `eq` accepts, or of
    /// the one `make` makes, added there (true) when there was none: one
    /// probe where a find and an insert made two.
    #[inline]
    pub(super) fn find_or_insert(
        &mut self,
        h: u64,
        eq: impl FnMut(&E) -> bool,
        make: impl FnOnce() -> E,
    ) -> (usize, bool) {
        self.reserve_one();
        let h = stored(h);
        match self.probe(h, eq) {
            Ok(at) => (at, false),
            Err(at) => {
                self.hashes[at] = h;
                self.items[at] = MaybeUninit::new(make());
                self.len += 1;
                (at, true)
            }
        }
    }

    /// Removes the entry at `pos`, shifting back the entries after it that
    /// probed past it (so no lookup ever needs a tombstone). Inline: once
    /// LLVM outlined it (an unrelated change in the pairer), the join
    /// indexes' removals went from 132 to 193 instructions per query.
    #[inline]
    pub(super) fn remove_at(&mut self, pos: usize) -> E {
        let e = *self.at(pos);
        let mask = self.hashes.len() - 1;
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let h = self.hashes[j];
            if h == EMPTY {
                break;
            }
            // `j` may fill the hole if its home is not inside (hole, j].
            let home = h as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.hashes[hole] = h;
                self.items[hole] = self.items[j];
                hole = j;
            }
        }
        self.hashes[hole] = EMPTY;
        self.len -= 1;
        e
    }

    /// Removes the entry with hash `h` that `eq` accepts.
    #[inline]
    pub(super) fn remove(&mut self, h: u64, eq: impl FnMut(&E) -> bool) -> Option<E> {
        let pos = self.find(h, eq)?;
        Some(self.remove_at(pos))
    }

    #[cfg(test)]
    pub(super) fn clear(&mut self) {
        self.hashes.fill(EMPTY);
        self.len = 0;
    }

    /// Room for one more entry: doubles at half full.
    #[inline]
    fn reserve_one(&mut self) {
        if (self.len + 1) * 2 > self.hashes.len() {
            self.resize(buckets_for(self.len + 1).max(self.hashes.len() * 2));
        }
    }

    fn resize(&mut self, buckets: usize) {
        let old_h = std::mem::replace(&mut self.hashes, vec![EMPTY; buckets]);
        let old_i = std::mem::replace(&mut self.items, vec![MaybeUninit::uninit(); buckets]);
        let mask = buckets - 1;
        for (h, e) in old_h.into_iter().zip(old_i) {
            if h == EMPTY {
                continue;
            }
            let mut at = h as usize & mask;
            while self.hashes[at] != EMPTY {
                at = (at + 1) & mask;
            }
            self.hashes[at] = h;
            self.items[at] = e;
        }
    }
}

/// Buckets for `n` entries at most half full (a power of two, at least 16).
fn buckets_for(n: usize) -> usize {
    n.saturating_mul(2).max(16).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::Table;

    /// Entries are (key, value); the hash is chosen by the test.
    type T = Table<(u64, u64)>;

    fn find(t: &T, h: u64, k: u64) -> Option<u64> {
        t.find(h, |e| e.0 == k).map(|p| t.at(p).1)
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_key() {
        let mut t = T::with_capacity(4);
        for k in 0..6 {
            t.insert(7, (k, k * 10));
        }
        assert_eq!(t.len(), 6);
        for k in 0..6 {
            assert_eq!(find(&t, 7, k), Some(k * 10));
        }
        assert_eq!(find(&t, 7, 99), None);
        // A hash of 0 is stored (as 1), not taken for an empty bucket.
        t.insert(0, (42, 1));
        assert_eq!(find(&t, 0, 42), Some(1));
    }

    #[test]
    fn removal_shifts_back_and_keeps_every_other_entry_findable() {
        let mut t = T::with_capacity(8);
        let n = t.buckets() as u64;
        // A run that wraps around the end of the array: homes n-2, n-1, 0.
        let keys = [(n - 2, 1), (n - 2, 2), (n - 1, 3), (n - 1, 4), (0, 5), (n - 2, 6), (1, 7)];
        for &(h, k) in &keys {
            t.insert(h, (k, k));
        }
        for (i, &(h, k)) in keys.iter().enumerate() {
            assert_eq!(t.remove(h, |e| e.0 == k), Some((k, k)));
            assert_eq!(find(&t, h, k), None);
            for &(h2, k2) in &keys[i + 1..] {
                assert_eq!(find(&t, h2, k2), Some(k2), "after removing {k}");
            }
        }
        assert!(t.is_empty());
        assert_eq!(t.remove(3, |_| true), None);
    }

    #[test]
    fn grows_at_half_full_and_stops_with_the_callers_bound() {
        let mut t = T::with_capacity(10);
        assert_eq!(t.buckets(), 32);
        // Churn at a steady 10 entries: no growth, no tombstones.
        for k in 0..10_000u64 {
            t.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), (k, k));
            if k >= 10 {
                let old = k - 10;
                assert!(t.remove(old.wrapping_mul(0x9e37_79b9_7f4a_7c15), |e| e.0 == old).is_some());
            }
        }
        assert_eq!((t.len(), t.buckets()), (10, 32));
        // Beyond: doubles, and everything stays findable.
        for k in 0..100u64 {
            t.insert(k, (k + 1_000_000, k));
        }
        assert_eq!((t.len(), t.buckets()), (110, 256));
        assert!((0..100u64).all(|k| find(&t, k, k + 1_000_000) == Some(k)));
        t.clear();
        assert!(t.is_empty() && find(&t, 5, 1_000_005).is_none());
    }

    #[test]
    fn find_or_insert_finds_or_adds_once() {
        let mut t = T::with_capacity(4);
        assert!(t.find_or_insert(7, |e| e.0 == 1, || (1, 10)).1);
        assert!(t.find_or_insert(7, |e| e.0 == 2, || (2, 20)).1);
        let (p, added) = t.find_or_insert(7, |e| e.0 == 1, || (1, 99));
        assert!(!added);
        assert_eq!((*t.at(p), t.len()), ((1, 10), 2));
        assert_eq!((find(&t, 7, 1), find(&t, 7, 2)), (Some(10), Some(20)));
    }

    #[test]
    fn entries_change_in_place() {
        let mut t = T::default();
        assert_eq!(find(&t, 1, 1), None);
        let p = t.insert(1, (1, 0));
        t.at_mut(p).1 += 5;
        assert_eq!(find(&t, 1, 1), Some(5));
    }
}
