//! Hash maps for the per-event path.
//!
//! Keys there come from the network (names, addresses), so the hasher must
//! be seeded per map — foldhash's `fast::RandomState` is — but `SipHash`'s
//! cryptographic strength costs ~6 % of replay time for nothing we need.

/// A `HashMap` with a fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with a fast, randomly seeded hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The seeded hasher of [`FastMap`], for hashes computed once and kept
/// (a key hashed once per message, then looked up in several maps).
pub type Seed = foldhash::fast::RandomState;

/// A `HashMap` whose keys carry their own hash (computed once with a
/// [`Seed`] and written by the key's `Hash` as one `u64`): a lookup then
/// costs no hashing at all.
pub type PreHashedMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Passthrough>>;

/// The hasher of [`PreHashedMap`]: passes a key's precomputed hash through.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough(u64);

impl std::hash::Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        // Mixed in, so a key writing more than its hash still spreads.
        self.0 = (self.0 ^ n).rotate_left(29);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
