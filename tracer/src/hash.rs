//! Hash maps for the per-event path.
//!
//! Keys there come from the network (names, addresses), so the hasher must
//! be seeded per map — foldhash's `fast::RandomState` is — but `SipHash`'s
//! cryptographic strength costs ~6 % of replay time for nothing we need.

/// A `HashMap` with a fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with a fast, randomly seeded hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
