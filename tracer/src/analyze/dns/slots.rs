//! The pairer's table of queries: waiting ones, and answered ones that are
//! remembered for a while to recognise the duplicate answers that follow.
//! An open-addressing index of slot numbers, keyed by each key's
//! precomputed hash, over a slab of slots that is reused; the ~600-byte
//! values of waiting queries live in a second slab, so the slots of
//! remembered answers stay small.
//!
//! A `HashMap<Key, Pending>` moved the entry on insert and again on
//! remove, and hashed the key per lookup. Here a value is written once into
//! its place and moved out once; a lookup returns the slot number, which
//! the expiry queue also holds, so checking whether a queued entry is still
//! the current one costs no lookup at all.
//!
//! An answered query keeps its slot and index entry, marked recent (it was
//! removed from this index and added to a second one, of a separate
//! window: a removal, a lookup and an insertion per answer, plus a lookup
//! per new query; 383 + ~100 instructions per query on `hot-cap`).
//! Recent keys leave in the order they were remembered, at most `ring_max`
//! of them, as the window did: a key remembered again moves to the back, a
//! key that waits again is no longer recent, and a ring entry frees its
//! slot only if the key still holds that entry's time.

use std::{collections::VecDeque, mem::MaybeUninit};

use super::table::Table;

/// A key that carries its own seeded hash.
pub(super) trait Hashed: Copy + Eq {
    fn hash(&self) -> u64;
}

#[derive(Clone, Copy, Debug)]
enum State<R> {
    Free,
    /// Waiting, its value in `vals` at this position.
    Live(u32),
    /// Answered, remembered since this time with this note.
    Recent(u64, R),
}

#[derive(Debug)]
struct Slot<K, R> {
    key: K,
    state: State<R>,
}

/// Waiting entries by key with their values, and recently answered keys
/// with a note each (`R`).
pub(super) struct Slots<K, V, R> {
    index: Table<u32>,
    entries: Vec<Slot<K, R>>,
    free: Vec<u32>,
    /// Initialised exactly where a `Live` slot points.
    vals: Vec<MaybeUninit<V>>,
    free_vals: Vec<u32>,
    live: usize,
    /// (time, key, slot) per remembering, oldest first.
    ring: VecDeque<(u64, K, u32)>,
    /// The time of `ring`'s front, `u64::MAX` when it is empty: checked
    /// per message and per replay tick, where reaching into the ring's
    /// front cost ~15 instructions a time.
    oldest: u64,
    ring_max: usize,
}

impl<K: std::fmt::Debug, V, R> std::fmt::Debug for Slots<K, V, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("live", &self.live)
            .field("entries", &self.entries.len())
            .field("remembered", &self.ring.len())
            .finish_non_exhaustive()
    }
}

impl<K, V, R> Drop for Slots<K, V, R> {
    fn drop(&mut self) {
        for s in &self.entries {
            if let State::Live(v) = s.state {
                // SAFETY: a live slot's value is initialised, and dropped only here.
                unsafe { self.vals[v as usize].assume_init_drop() };
            }
        }
    }
}

impl<K: Hashed, V, R: Copy> Slots<K, V, R> {
    /// An index sized for `n` waiting entries up front (the slabs grow as
    /// used), remembering at most `ring_max` answered keys.
    pub(super) fn new(n: usize, ring_max: usize) -> Self {
        Self {
            index: Table::with_capacity(n),
            entries: Vec::new(),
            free: Vec::new(),
            vals: Vec::new(),
            free_vals: Vec::new(),
            live: 0,
            ring: VecDeque::new(),
            oldest: u64::MAX,
            ring_max: ring_max.max(1),
        }
    }

    /// The slot holding `k`, waiting or recent.
    #[expect(
        clippy::inline_always,
        reason = "four lookups per query: outlined, a lookup cost 135 instructions on hot-cap, inlined 99"
    )]
    #[inline(always)]
    pub(super) fn find(&self, k: &K) -> Option<u32> {
        let slots = &self.entries;
        self.index.get(k.hash(), |&i| slots[i as usize].key == *k)
    }

    /// The value of slot `i` if it waits.
    #[inline]
    pub(super) fn get(&self, i: u32) -> Option<&V> {
        match self.entries.get(i as usize)?.state {
            // SAFETY: a live slot's value is initialised.
            State::Live(v) => Some(unsafe { self.vals[v as usize].assume_init_ref() }),
            _ => None,
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: u32) -> Option<&mut V> {
        match self.entries.get(i as usize)?.state {
            // SAFETY: as in `get`.
            State::Live(v) => Some(unsafe { self.vals[v as usize].assume_init_mut() }),
            _ => None,
        }
    }

    /// The note of slot `i` if it is recent.
    #[inline]
    pub(super) fn recent(&self, i: u32) -> Option<R> {
        match self.entries.get(i as usize)?.state {
            State::Recent(_, r) => Some(r),
            _ => None,
        }
    }

    /// The entry under `k` if it waits.
    #[cfg(test)]
    pub(super) fn get_key(&self, k: &K) -> Option<&V> {
        self.get(self.find(k)?)
    }

    /// The key of slot `i` if it waits.
    #[inline]
    pub(super) fn key(&self, i: u32) -> Option<K> {
        self.entries.get(i as usize).filter(|s| matches!(s.state, State::Live(_))).map(|s| s.key)
    }

    /// The place of the next value: written by the caller, then added by
    /// [`Self::insert_written`]. Two steps rather than a closure: the
    /// closure's captures were gathered and copied (~150 instructions per
    /// query), while the value written here goes straight into place.
    #[inline]
    pub(super) fn vacant(&mut self) -> &mut MaybeUninit<V> {
        if self.free_vals.is_empty() {
            self.free_vals.push(self.vals.len() as u32);
            self.vals.push(MaybeUninit::uninit());
        }
        let v = self.free_vals[self.free_vals.len() - 1];
        &mut self.vals[v as usize]
    }

    /// Adds the value written into [`Self::vacant`]'s place under `k`,
    /// which does not wait: in `recent`, the slot where `k` is remembered
    /// ([`Self::find`]), if it is (it stops being recent), else in a new
    /// slot. Returns the slot.
    ///
    /// # Safety
    /// The place the last [`Self::vacant`] returned was written since, and
    /// nothing else was taken out or put back in between.
    #[inline]
    pub(super) unsafe fn insert_written(&mut self, k: K, recent: Option<u32>) -> u32 {
        let v = self.free_vals.pop().expect("a place was reserved by `vacant`");
        let i = match recent {
            Some(i) => {
                debug_assert!(
                    self.recent(i).is_some() && self.entries[i as usize].key == k,
                    "slot {i} is not recent under its key"
                );
                i
            }
            None => self.add(k),
        };
        self.entries[i as usize].state = State::Live(v);
        self.live += 1;
        i
    }

    /// [`Self::vacant`] and [`Self::insert_written`] of `v`.
    #[cfg(test)]
    pub(super) fn insert(&mut self, k: K, recent: Option<u32>, v: V) -> u32 {
        self.vacant().write(v);
        // SAFETY: written just above.
        unsafe { self.insert_written(k, recent) }
    }

    /// A new slot under `k` (in the index; its state is the caller's).
    fn add(&mut self, k: K) -> u32 {
        let i = if let Some(i) = self.free.pop() {
            self.entries[i as usize].key = k;
            i
        } else {
            self.entries.push(Slot { key: k, state: State::Free });
            (self.entries.len() - 1) as u32
        };
        self.index.insert(k.hash(), i);
        i
    }

    /// Answers slot `i` at `ts`: its value is handed to `take` to move out
    /// of (whatever it leaves there is forgotten, not dropped) and its key
    /// is remembered with `note`. False if `i` does not wait.
    #[inline]
    pub(super) fn retire(&mut self, i: u32, ts: u64, note: R, take: impl FnOnce(*mut V)) -> bool {
        let Some(&Slot { key, state: State::Live(v) }) = self.entries.get(i as usize) else { return false };
        // Room in the ring first, as the window did: a full ring's oldest
        // entry leaves before this one is counted.
        self.make_room();
        self.entries[i as usize].state = State::Recent(ts, note);
        self.live -= 1;
        self.free_vals.push(v);
        take(self.vals[v as usize].as_mut_ptr());
        self.push_ring(ts, key, i);
        true
    }

    /// Takes slot `i`'s value out (to `take`, as in [`Self::retire`]) and
    /// frees the slot. False if `i` does not wait.
    pub(super) fn remove_with(&mut self, i: u32, take: impl FnOnce(*mut V)) -> bool {
        let Some(&Slot { key, state: State::Live(v) }) = self.entries.get(i as usize) else { return false };
        self.free_slot(key, i);
        self.live -= 1;
        self.free_vals.push(v);
        take(self.vals[v as usize].as_mut_ptr());
        true
    }

    /// Takes the value out of slot `i` and frees it.
    #[cfg(test)]
    pub(super) fn remove(&mut self, i: u32) -> Option<V> {
        let mut out = None;
        // SAFETY: the value is read once.
        self.remove_with(i, |p| out = Some(unsafe { p.read() }));
        out
    }

    /// Remembers `k`, which does not wait, at `ts` with `note` (the newest
    /// time: callers remember in time order).
    pub(super) fn remember(&mut self, k: K, ts: u64, note: R) {
        self.make_room();
        let i = match self.find(&k) {
            Some(i) => i,
            None => self.add(k),
        };
        let slot = &mut self.entries[i as usize];
        // A waiting key is not remembered over (callers never ask).
        if !matches!(slot.state, State::Live(_)) {
            slot.state = State::Recent(ts, note);
        }
        self.push_ring(ts, k, i);
    }

    #[inline]
    fn push_ring(&mut self, ts: u64, k: K, i: u32) {
        if self.ring.is_empty() {
            self.oldest = ts;
        }
        self.ring.push_back((ts, k, i));
    }

    fn make_room(&mut self) {
        while self.ring.len() >= self.ring_max {
            self.pop_recent();
        }
    }

    /// Time of the oldest remembering (its key may have moved on since),
    /// `u64::MAX` when there is none.
    #[inline]
    pub(super) fn oldest_recent(&self) -> u64 {
        self.oldest
    }

    /// Drops the oldest remembering, and its key if the key still holds its time.
    pub(super) fn pop_recent(&mut self) {
        let Some((ts, k, i)) = self.ring.pop_front() else { return };
        self.oldest = self.ring.front().map_or(u64::MAX, |e| e.0);
        let holds = |s: &Slot<K, R>| s.key == k && matches!(s.state, State::Recent(t, _) if t == ts);
        // Nearly always the slot it was remembered in; else the key may
        // have been remembered again elsewhere at the same time.
        let i = if self.entries.get(i as usize).is_some_and(holds) {
            i
        } else {
            match self.find(&k) {
                Some(j) if holds(&self.entries[j as usize]) => j,
                _ => return,
            }
        };
        self.free_slot(k, i);
    }

    /// Forgets every recent key.
    pub(super) fn clear_recent(&mut self) {
        while !self.ring.is_empty() {
            self.pop_recent();
        }
    }

    fn free_slot(&mut self, k: K, i: u32) {
        self.entries[i as usize].state = State::Free;
        self.index.remove(k.hash(), |&j| j == i);
        self.free.push(i);
    }

    /// Waiting entries.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.live
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

    fn insert(t: &mut Slots<K, u64, u8>, k: K, v: u64) -> u32 {
        let recent = t.find(&k).filter(|&i| t.recent(i).is_some());
        t.insert(k, recent, v)
    }

    fn answer(t: &mut Slots<K, u64, u8>, k: K, ts: u64, note: u8) -> Option<u64> {
        let mut out = None;
        // SAFETY: the value is read once.
        t.retire(t.find(&k)?, ts, note, |p| out = Some(unsafe { p.read() }));
        out
    }

    fn recent(t: &Slots<K, u64, u8>, k: K) -> Option<u8> {
        t.recent(t.find(&k)?)
    }

    #[test]
    fn slots_are_reused_and_lookups_follow_removals() {
        let mut table: Slots<K, u64, u8> = Slots::new(4, 16);
        let first = insert(&mut table, K(1), 10);
        let second = insert(&mut table, K(8), 80);
        assert_eq!((table.find(&K(1)), table.find(&K(8)), table.find(&K(15))), (Some(first), Some(second), None));
        assert_eq!(table.remove(first), Some(10));
        assert_eq!((table.remove(first), table.find(&K(1)), table.len()), (None, None, 1));
        let reused = insert(&mut table, K(15), 150);
        assert_eq!(reused, first, "the freed slot is reused");
        assert_eq!(
            (table.get_key(&K(15)), table.get_key(&K(8)), table.key(second)),
            (Some(&150), Some(&80), Some(K(8)))
        );
        for i in 0..1000 {
            let slot = insert(&mut table, K(100 + i), i);
            assert_eq!(table.remove(slot), Some(i));
        }
        assert_eq!(table.len(), 2);
        assert!(table.entries.len() <= 3 && table.vals.len() <= 3, "the slabs do not grow under churn");
    }

    /// Answered keys are remembered as the window they replaced was: newest
    /// time per key, a key that waits again is no longer recent, expiry
    /// only of the time the key still holds, at most `ring_max` entries.
    #[test]
    fn answered_keys_keep_the_newest_time() {
        let mut t: Slots<K, u64, u8> = Slots::new(4, 100);
        insert(&mut t, K(1), 100);
        insert(&mut t, K(8), 800);
        assert_eq!(answer(&mut t, K(1), 10, 1), Some(100));
        assert_eq!(answer(&mut t, K(8), 11, 2), Some(800));
        assert_eq!((t.len(), recent(&t, K(1)), t.get_key(&K(1))), (0, Some(1), None));
        insert(&mut t, K(1), 101);
        assert_eq!(answer(&mut t, K(1), 12, 3), Some(101));
        assert_eq!((recent(&t, K(1)), recent(&t, K(8)), recent(&t, K(15))), (Some(3), Some(2), None));
        t.pop_recent(); // K(1) at 10: K(1) holds 12 now, stays
        assert_eq!(recent(&t, K(1)), Some(3));
        // K(8) waits again: not recent, and its old entry expires as a stale one.
        insert(&mut t, K(8), 801);
        assert_eq!((recent(&t, K(8)), t.get_key(&K(8)), t.ring.len()), (None, Some(&801), 2));
        t.pop_recent();
        assert_eq!(t.get_key(&K(8)), Some(&801));
        assert_eq!(answer(&mut t, K(8), 13, 4), Some(801));
        t.pop_recent(); // K(1) at 12
        assert_eq!((recent(&t, K(1)), recent(&t, K(8)), t.oldest_recent()), (None, Some(4), 13));
        // Two entries of one key at one time: the first to leave takes the key.
        t.remember(K(8), 13, 5);
        t.pop_recent();
        assert_eq!((recent(&t, K(8)), t.ring.len()), (None, 1));
        // Remembered without waiting first (an alias), then forgotten.
        t.remember(K(15), 14, 6);
        assert_eq!(recent(&t, K(15)), Some(6));
        t.clear_recent();
        assert!(t.oldest_recent() == u64::MAX && t.find(&K(15)).is_none() && t.find(&K(8)).is_none());
        // At most `ring_max` entries; the slab stays within them.
        for i in 0..10_000u64 {
            insert(&mut t, K(i % 50), i);
            answer(&mut t, K(i % 50), i, 0);
        }
        assert_eq!((recent(&t, K(49)), t.ring.len(), t.len()), (Some(0), 100, 0));
        assert!(t.entries.len() <= 51 && t.vals.len() <= 2, "{} slots, {} values", t.entries.len(), t.vals.len());
        // A remembering at the same time as an older stale entry of the
        // same key: the stale entry takes it (as the window did).
        let mut t: Slots<K, u64, u8> = Slots::new(4, 100);
        insert(&mut t, K(3), 3);
        answer(&mut t, K(3), 20, 1);
        insert(&mut t, K(3), 4);
        answer(&mut t, K(3), 20, 2);
        t.pop_recent();
        assert_eq!((recent(&t, K(3)), t.find(&K(3))), (None, None));
    }
}
