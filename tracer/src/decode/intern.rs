//! Shared strings for the names and answer data the decoder renders.
//!
//! The same few names repeat on every message of a lookup (query and answer,
//! at the client and at the resolver) and across lookups (a node asks for the
//! same services all day), and so do the addresses in the answers. Rendering
//! each into a fresh `String` cost an allocation per message and per answer.
//! Here a rendered string is looked up in a small set-associative cache of
//! `Arc<str>`: a hit is a reference count, a miss allocates once and takes
//! the place of the least recently used string of its set. The cache never
//! grows: [`Interner::SETS`] × [`Interner::WAYS`] strings of at most
//! [`Interner::MAX_LEN`] bytes (longer ones are allocated each time and not
//! kept), so memory stays bounded whatever the traffic.

use std::sync::Arc;

/// A bounded cache of shared strings (see the module docs).
#[derive(Debug)]
pub struct Interner {
    /// `SETS * WAYS` slots, empty until the first string; within a set the
    /// most recently used comes first.
    slots: Vec<Slot>,
    /// Seeded per cache: names come from the network, and a fixed hash
    /// would let a sender aim them all at one set.
    seed: crate::hash::Seed,
    /// Question names by their wire form (labels only, no pointers) → the
    /// shared rendered string: a name seen before is hashed and compared,
    /// not walked label by label and rendered again. `WIRE_SETS * 2` slots.
    wire: Vec<WireSlot>,
    /// Seed of [`wire_hash`], drawn from `seed` with the wire table.
    wire_seed: u64,
    /// The wire slot of the last question name found or stored: the same
    /// message is often seen twice in a row (sent, then received), and any
    /// slot holds a checked name with its rendering, so matching its bytes
    /// is enough.
    last_wire: usize,
    /// Addresses of A and AAAA answers → their shared presentation form:
    /// an address seen before is neither rendered nor hashed as a string.
    /// `ADDR_SLOTS` slots each, direct-mapped.
    addr4: Vec<AddrSlot<4>>,
    addr6: Vec<AddrSlot<16>>,
    /// False for a one-off decode: every string is allocated, nothing kept.
    cached: bool,
    /// The decoder's scratch string, lent out while a message is rendered.
    buf: String,
    /// Counters, for tests and the curious.
    hits: u64,
    misses: u64,
}

#[derive(Clone, Debug, Default)]
struct WireSlot {
    hash: u64,
    wire: Box<[u8]>,
    s: Option<Arc<str>>,
}

#[derive(Clone, Debug)]
struct AddrSlot<const N: usize> {
    addr: [u8; N],
    s: Option<Arc<str>>,
}

impl<const N: usize> Default for AddrSlot<N> {
    fn default() -> Self {
        Self { addr: [0; N], s: None }
    }
}

#[derive(Clone, Debug, Default)]
struct Slot {
    hash: u64,
    s: Option<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// Sets in the cache.
    pub const SETS: usize = 4096;
    /// Strings per set.
    pub const WAYS: usize = 4;
    /// Longest string kept (a name's presentation form rarely passes 100
    /// bytes; long TXT data are rare and not worth a slot).
    pub const MAX_LEN: usize = 255;

    /// An empty cache (allocates on first use).
    #[must_use]
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            wire: Vec::new(),
            wire_seed: 0,
            last_wire: 0,
            addr4: Vec::new(),
            addr6: Vec::new(),
            seed: crate::hash::Seed::default(),
            cached: true,
            buf: String::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// No cache: each string allocated (a one-off decode need not pay for
    /// the table).
    #[must_use]
    pub fn uncached() -> Self {
        Self { cached: false, ..Self::new() }
    }

    /// The scratch string (empty, its capacity kept between messages).
    pub(super) fn take_buf(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }

    /// Gives the scratch string back.
    pub(super) fn put_buf(&mut self, mut buf: String) {
        buf.clear();
        self.buf = buf;
    }

    /// `s` as a shared string: the cached one when it was seen recently.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if !self.cached || s.len() > Self::MAX_LEN {
            return Arc::from(s);
        }
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); Self::SETS * Self::WAYS];
        }
        let hash = std::hash::BuildHasher::hash_one(&self.seed, s.as_bytes());
        let set = (hash as usize & (Self::SETS - 1)) * Self::WAYS;
        let ways = &mut self.slots[set..set + Self::WAYS];
        for i in 0..Self::WAYS {
            if ways[i].hash == hash
                && let Some(found) = &ways[i].s
                && **found == *s
            {
                let found = Arc::clone(found);
                // Most recently used first: the last way is the one evicted.
                ways[..=i].rotate_right(1);
                self.hits += 1;
                return found;
            }
        }
        self.misses += 1;
        let new: Arc<str> = Arc::from(s);
        ways.rotate_right(1);
        ways[0] = Slot { hash, s: Some(Arc::clone(&new)) };
        new
    }

    /// Wire-form sets (two names each; a name is at most 255 wire bytes).
    const WIRE_SETS: usize = 2048;

    /// The question name at `m[at..]` when it is the last one found or
    /// stored, with the offset after it; None otherwise (or not cached).
    #[inline]
    pub(super) fn recent_wire(&mut self, m: &[u8], at: usize) -> Option<(Arc<str>, usize)> {
        let slot = self.wire.get(self.last_wire)?;
        let n = slot.wire.len();
        // An empty slot has no wire bytes and no string.
        let got = m.get(at..at + n)?;
        if n == 0 || !same_bytes(got, &slot.wire) {
            return None;
        }
        let s = Arc::clone(slot.s.as_ref()?);
        self.hits += 1;
        Some((s, at + n))
    }

    /// The shared string of a question name by its wire form `wire`
    /// (labels and the root byte, no pointers), with the hash to
    /// [`Self::store_wire`] it under when it is not known (or not cached).
    #[inline]
    pub(super) fn lookup_wire(&mut self, wire: &[u8]) -> (u64, Option<Arc<str>>) {
        if !self.cached {
            return (0, None);
        }
        if self.wire.is_empty() {
            self.wire = vec![WireSlot::default(); Self::WIRE_SETS * 2];
            self.wire_seed = std::hash::BuildHasher::hash_one(&self.seed, 0x5eed_u64) | 1;
        }
        let hash = wire_hash(self.wire_seed, wire);
        let set = (hash as usize & (Self::WIRE_SETS - 1)) * 2;
        let ways = &mut self.wire[set..set + 2];
        for i in 0..2 {
            if ways[i].hash == hash
                && same_bytes(&ways[i].wire, wire)
                && let Some(s) = &ways[i].s
            {
                let s = Arc::clone(s);
                // Most recently used first: two ways, so a swap.
                if i == 1 {
                    ways.swap(0, 1);
                }
                self.last_wire = set;
                self.hits += 1;
                return (hash, Some(s));
            }
        }
        (hash, None)
    }

    /// Remembers `s` as the rendering of the wire-form name `wire`.
    pub(super) fn store_wire(&mut self, hash: u64, wire: &[u8], s: &Arc<str>) {
        if !self.cached || self.wire.is_empty() {
            return;
        }
        let set = (hash as usize & (Self::WIRE_SETS - 1)) * 2;
        let ways = &mut self.wire[set..set + 2];
        ways.rotate_right(1);
        ways[0] = WireSlot { hash, wire: wire.into(), s: Some(Arc::clone(s)) };
        self.last_wire = set;
    }

    /// Direct-mapped slots per address family.
    const ADDR_SLOTS: usize = 1024;

    /// The dotted quad of the A answer address `a`.
    #[inline]
    pub(super) fn addr4(&mut self, a: [u8; 4]) -> Arc<str> {
        self.addr(a, |t| &mut t.addr4, super::dns::push_dotted_quad)
    }

    /// The presentation form of the AAAA answer address `a` (as
    /// `Ipv6Addr`'s `Display`, which costs a thousand instructions).
    #[inline]
    pub(super) fn addr6(&mut self, a: [u8; 16]) -> Arc<str> {
        self.addr(a, |t| &mut t.addr6, super::dns::push_ipv6)
    }

    /// The shared `render`ing of the address `a`, from `table` when it was
    /// seen (and cached), else rendered, interned and kept there. The hit
    /// is inlined into the decoder (as a call, saving and restoring
    /// registers was a third of an A answer's ~50 instructions).
    #[inline]
    fn addr<const N: usize>(
        &mut self,
        a: [u8; N],
        table: fn(&mut Self) -> &mut Vec<AddrSlot<N>>,
        render: fn(&mut String, [u8; N]),
    ) -> Arc<str> {
        if self.cached && self.wire_seed != 0 {
            let at = self.addr_at(&a);
            if let Some(s) = table(self).get(at).filter(|e| e.addr == a).and_then(|e| e.s.clone()) {
                self.hits += 1;
                return s;
            }
        }
        self.addr_miss(a, table, render)
    }

    /// The slot of the address `a` (seeded, so a sender cannot aim its
    /// addresses at one slot).
    #[inline]
    fn addr_at<const N: usize>(&self, a: &[u8; N]) -> usize {
        let (lo, hi) = if N >= 8 { (le64(a, 0), le64(a, N - 8)) } else { (le32(a, 0), 0) };
        (fold_mul(lo ^ self.wire_seed, hi ^ MUL) >> 54) as usize & (Self::ADDR_SLOTS - 1)
    }

    /// [`Self::addr`] past the inlined hit: the first address, a miss, or
    /// no cache.
    #[inline(never)]
    fn addr_miss<const N: usize>(
        &mut self,
        a: [u8; N],
        table: fn(&mut Self) -> &mut Vec<AddrSlot<N>>,
        render: fn(&mut String, [u8; N]),
    ) -> Arc<str> {
        let at = if self.cached {
            if self.wire_seed == 0 {
                self.wire_seed = std::hash::BuildHasher::hash_one(&self.seed, 0x5eed_u64) | 1;
            }
            let at = self.addr_at(&a);
            let t = table(self);
            if t.is_empty() {
                *t = vec![AddrSlot::default(); Self::ADDR_SLOTS];
            }
            if let Some(s) = t.get(at).filter(|e| e.addr == a).and_then(|e| e.s.clone()) {
                self.hits += 1;
                return s;
            }
            Some(at)
        } else {
            None
        };
        let mut buf = self.take_buf();
        render(&mut buf, a);
        let s = self.intern(&buf);
        self.put_buf(buf);
        if let Some(at) = at
            && let Some(e) = table(self).get_mut(at)
        {
            *e = AddrSlot { addr: a, s: Some(Arc::clone(&s)) };
        }
        s
    }

    /// Lookups answered from the cache and lookups that allocated.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// An odd constant with well-spread bits (the fractional part of pi).
const MUL: u64 = 0x243f_6a88_85a3_08d3;

/// The 128-bit product of `a` and `b`, folded to 64 bits: one multiply
/// that mixes every input bit into the middle output bits.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Eight bytes of `b` from `at` (which must leave eight), little-endian.
#[inline]
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
}

/// Four bytes of `b` from `at` (which must leave four), little-endian.
#[inline]
fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |c| u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
}

/// A seeded hash of a wire-form name, eight bytes per step and inlined: a
/// general `Hasher` (length prefix, byte-slice path, a call) cost about as
/// much as the rest of a query's question. Every byte counts and so does the
/// length (the last chunk overlaps the one before it).
#[inline]
fn wire_hash(seed: u64, w: &[u8]) -> u64 {
    let n = w.len();
    let mut h = fold_mul(seed ^ n as u64, MUL);
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            h = fold_mul(h ^ le64(w, at), MUL);
            at += 8;
        }
        h = fold_mul(h ^ le64(w, n - 8), MUL);
    } else if n >= 4 {
        h = fold_mul(h ^ (le32(w, 0) << 32 | le32(w, n - 4)), MUL);
    } else if n > 0 {
        let x = u64::from(w[0]) << 16 | u64::from(w[n / 2]) << 8 | u64::from(w[n - 1]);
        h = fold_mul(h ^ x, MUL);
    }
    fold_mul(h, seed)
}

/// `a == b` for short slices, eight bytes per step and inlined (the
/// library's comparison is a call into `memcmp`).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let mut at = 0;
    while at + 8 < n {
        if le64(a, at) != le64(b, at) {
            return false;
        }
        at += 8;
    }
    le64(a, n - 8) == le64(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_share_one_string() {
        let mut t = Interner::new();
        let a = t.intern("svc.ns.svc.cluster.local");
        let b = t.intern(&String::from("svc.ns.svc.cluster.local"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(t.counts(), (1, 1));
        assert_eq!(&*t.intern("other"), "other");
    }

    #[test]
    fn long_strings_are_not_kept() {
        let mut t = Interner::new();
        let long = "x".repeat(Interner::MAX_LEN + 1);
        let a = t.intern(&long);
        let b = t.intern(&long);
        assert_eq!(a, b);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(t.counts(), (0, 0));
    }

    /// Far more distinct strings than slots: every one comes back right,
    /// the cache holds at most its slots, and recent ones still hit.
    #[test]
    fn bounded_and_correct_under_churn() {
        let mut t = Interner::new();
        let slots = Interner::SETS * Interner::WAYS;
        for i in 0..slots * 3 {
            let s = format!("name-{i}.example");
            assert_eq!(&*t.intern(&s), s);
        }
        let held = t.slots.iter().filter(|s| s.s.is_some()).count();
        assert!(held <= slots);
        // Strings only the cache holds are freed when evicted: one owner each.
        assert!(t.slots.iter().filter_map(|s| s.s.as_ref()).all(|s| Arc::strong_count(s) == 1));
        let recent = format!("name-{}.example", slots * 3 - 1);
        let before = t.counts().0;
        t.intern(&recent);
        assert_eq!(t.counts().0, before + 1);
    }
}
