//! A hash map with a size cap: evidence and resolver tables stay bounded
//! under any traffic.

use std::collections::VecDeque;

/// A map with a size bound: inserting beyond it forgets the oldest insert.
#[derive(Debug)]
pub(crate) struct Bounded<K, V, S = foldhash::fast::RandomState> {
    pub(super) map: std::collections::HashMap<K, V, S>,
    pub(super) order: VecDeque<K>,
}

impl<K, V, S: Default> Default for Bounded<K, V, S> {
    fn default() -> Self {
        Self { map: std::collections::HashMap::default(), order: VecDeque::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V, S: std::hash::BuildHasher> Bounded<K, V, S> {
    pub(super) fn insert(&mut self, k: K, v: V, cap: usize) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > cap.max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    pub(super) fn get_or_insert(&mut self, k: &K, cap: usize) -> Option<&mut V>
    where
        V: Default,
    {
        if !self.map.contains_key(k) {
            self.insert(k.clone(), V::default(), cap);
        }
        self.map.get_mut(k)
    }
    /// Keeps the entries `keep` says to; the order queue forgets them lazily.
    pub(super) fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
        if self.order.len() > self.map.len().saturating_mul(2).max(64) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}
