//! The pairer's keys: a sighting's identity packed into seven words, and
//! the two looser keys of the join indexes cut from the same words.
//!
//! The key was a struct of two `Endpoint`s (an `IpAddr` enum each), the
//! transport, id, name hash and type: building it per message moved a
//! dozen fields one by one, and comparing it after the hash matched took
//! eleven branches (two per address, on its family). Packed, it is built
//! from the words that are hashed anyway and compared as seven words with
//! no branch. `waiting_key` on `hot-cap --summary` (callgrind): ~99
//! instructions per lookup before.

use std::{
    hash::BuildHasher as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use super::slots::Hashed;
use crate::{
    event::{Endpoint, Transport},
    hash::Seed,
};

/// `(a * b)` folded to 64 bits: foldhash's mixing step.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// An endpoint as (high address word, low address word, port | family).
/// Lossless: a v4 address and the v6 address with the same bits differ in
/// the family bit.
#[inline]
fn parts(e: Endpoint) -> (u64, u64, u64) {
    match e.ip {
        IpAddr::V4(a) => (0, u64::from(u32::from(a)), u64::from(e.port)),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            ((b >> 64) as u64, b as u64, u64::from(e.port) | (1 << 16))
        }
    }
}

fn endpoint(hi: u64, lo: u64, port_family: u64) -> Endpoint {
    let ip = if (port_family >> 16) & 1 == 1 {
        IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)))
    } else {
        IpAddr::V4(Ipv4Addr::from(lo as u32))
    };
    Endpoint { ip, port: port_family as u16 }
}

/// Per-run random seeds of the key hashes (keys come from the network).
#[derive(Clone, Copy, Debug)]
pub(super) struct KeySeeds([u64; 10]);

impl Default for KeySeeds {
    fn default() -> Self {
        let seed = Seed::default();
        Self(std::array::from_fn(|i| seed.hash_one(i as u64)))
    }
}

/// A sighting's identity: (client, server, transport, id, name, type).
///
/// Words: `[name hash, id | qtype << 16 | transport << 32,
/// client port+family | server port+family << 32, client address hi, lo,
/// server address hi, lo]`. The name is its seeded lower-case hash, not
/// the name: resolvers randomise the case of queries (0x20) and servers
/// echo it, but a sloppy one may not; two names of one client, server, id
/// and type colliding in 64 bits (seeded per run) is not a practical
/// concern.
#[derive(Clone, Copy, Debug)]
pub(super) struct Key {
    w: [u64; 7],
    /// Seeded hash of `w`.
    h: u64,
}

impl Key {
    #[inline]
    pub(super) fn new(
        seeds: &KeySeeds,
        client: Endpoint,
        server: Endpoint,
        transport: Transport,
        id: u16,
        qname: u64,
        qtype: u16,
    ) -> Self {
        let (c_hi, c_lo, c_pf) = parts(client);
        let (s_hi, s_lo, s_pf) = parts(server);
        let small = u64::from(id) | (u64::from(qtype) << 16) | ((transport as u64) << 32);
        let w = [qname, small, c_pf | (s_pf << 32), c_hi, c_lo, s_hi, s_lo];
        let k = &seeds.0;
        // The name hash is seeded and random already; the rest in pairs.
        let h =
            qname ^ fold(w[1] ^ k[0], w[2] ^ k[1]) ^ fold(c_hi ^ k[2], c_lo ^ k[3]) ^ fold(s_hi ^ k[4], s_lo ^ k[5]);
        Self { w, h }
    }

    pub(super) fn client(&self) -> Endpoint {
        endpoint(self.w[3], self.w[4], self.w[2] & 0xffff_ffff)
    }

    pub(super) fn server(&self) -> Endpoint {
        endpoint(self.w[5], self.w[6], self.w[2] >> 32)
    }

    pub(super) fn same_client(&self, o: &Self) -> bool {
        ((self.w[2] ^ o.w[2]) & 0xffff_ffff) | (self.w[3] ^ o.w[3]) | (self.w[4] ^ o.w[4]) == 0
    }

    pub(super) fn same_server(&self, o: &Self) -> bool {
        ((self.w[2] ^ o.w[2]) >> 32) | (self.w[5] ^ o.w[5]) | (self.w[6] ^ o.w[6]) == 0
    }

    /// The seeded hash of this key's [`ByClient`] key: computed once per
    /// new lookup (its join, its index entry) and kept for its removal.
    pub(super) fn by_client_hash(&self, seeds: &KeySeeds) -> u64 {
        let k = &seeds.0;
        self.w[0].rotate_left(23)
            ^ fold(self.w[1] ^ k[6], (self.w[2] & 0xffff_ffff) ^ k[7])
            ^ fold(self.w[3] ^ k[8], self.w[4] ^ k[9])
    }
}

impl Hashed for Key {
    #[inline]
    fn hash(&self) -> u64 {
        self.h
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        // Every field is compared anyway once the 64-bit hash matched.
        same(&self.w, &o.w)
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.h);
    }
}

/// Equality of word arrays with one test (a derived one called `bcmp`).
#[inline]
fn same<const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
    a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A key without its addresses, what both views of one lookup share:
/// (transport, id, name, type).
#[derive(Clone, Copy, Debug)]
pub(super) struct Loose([u64; 2]);

impl PartialEq for Loose {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        same(&self.0, &o.0)
    }
}

impl Eq for Loose {}

impl Loose {
    #[inline]
    pub(super) fn of(k: &Key) -> Self {
        Self([k.w[0], k.w[1]])
    }

    /// The name hash is seeded already: mixing in the small fields is enough.
    #[inline]
    pub(super) fn mix(&self) -> u64 {
        (self.0[0] ^ self.0[1].wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(17)
    }
}

/// The by-client join index's key: a loose key and the client address
/// (hashed by [`Key::by_client_hash`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct ByClient([u64; 5]);

impl PartialEq for ByClient {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        same(&self.0, &o.0)
    }
}

impl Eq for ByClient {}

impl ByClient {
    #[inline]
    pub(super) fn of(k: &Key) -> Self {
        Self([k.w[0], k.w[1], k.w[2] & 0xffff_ffff, k.w[3], k.w[4]])
    }
}

/// Hash of `name` in ASCII lower case, without allocating.
/// Names come from the decoder's cache, one shared string per name, so a
/// name's hash is remembered by the string's address: lowering and hashing
/// it again for each of its four or so messages was ~10 % of pairing. Each
/// entry holds its string, so an address is never reused while it is here.
#[derive(Debug, Default)]
pub(super) struct NameHashes {
    slots: Vec<Option<(Arc<str>, u64)>>,
}

impl NameHashes {
    const SLOTS: usize = 256;

    #[inline]
    pub(super) fn get(&mut self, seed: &Seed, name: &Arc<str>) -> u64 {
        if self.slots.is_empty() {
            self.slots.resize(Self::SLOTS, None);
        }
        let addr = Arc::as_ptr(name).cast::<u8>() as usize as u64;
        let at = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % Self::SLOTS;
        if let Some((n, h)) = &self.slots[at]
            && Arc::ptr_eq(n, name)
        {
            return *h;
        }
        let h = name_hash(seed, name);
        self.slots[at] = Some((Arc::clone(name), h));
        h
    }
}

fn name_hash(state: &Seed, name: &str) -> u64 {
    use std::hash::Hasher as _;
    let mut h = state.build_hasher();
    let mut buf = [0u8; 64];
    for chunk in name.as_bytes().chunks(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.copy_from_slice(chunk);
        b.make_ascii_lowercase();
        h.write(b);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::{ByClient, Key, KeySeeds, Loose};
    use crate::{
        analyze::dns::pairing::test_util::ep,
        event::{Endpoint, Transport},
    };

    fn ep6(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port }
    }

    /// Packing loses nothing: the endpoints come back out, and keys differ
    /// exactly when a field does (a v4 address and the v6 address with the
    /// same low bits included).
    #[test]
    fn keys_round_trip_and_tell_every_field_apart() {
        let s = KeySeeds::default();
        let (c, v) = (ep("10.0.0.1:40000"), ep("10.96.0.10:53"));
        let c6 = ep6("::a00:1", 40000);
        let k = |c, v, t, id, q, ty| Key::new(&s, c, v, t, id, q, ty);
        let base = k(c, v, Transport::Udp, 7, 99, 1);
        assert_eq!((base.client(), base.server()), (c, v));
        let k6 = k(c6, ep6("fd00::53", 53), Transport::Udp, 7, 99, 1);
        assert_eq!((k6.client(), k6.server()), (c6, ep6("fd00::53", 53)));
        assert_eq!(base, k(c, v, Transport::Udp, 7, 99, 1));
        assert_eq!(base.h, k(c, v, Transport::Udp, 7, 99, 1).h);
        let others = [
            k(c6, v, Transport::Udp, 7, 99, 1),
            k(ep("10.0.0.1:40001"), v, Transport::Udp, 7, 99, 1),
            k(c, ep("10.96.0.11:53"), Transport::Udp, 7, 99, 1),
            k(c, v, Transport::Tcp, 7, 99, 1),
            k(c, v, Transport::Udp, 8, 99, 1),
            k(c, v, Transport::Udp, 7, 98, 1),
            k(c, v, Transport::Udp, 7, 99, 28),
            k(v, c, Transport::Udp, 7, 99, 1),
        ];
        for o in &others {
            assert_ne!(&base, o);
        }
        assert!(base.same_client(&others[2]) && !base.same_server(&others[2]));
        assert!(base.same_server(&others[1]) && !base.same_client(&others[1]));
        assert!(!base.same_client(&others[0]), "family tells v4 from v6");
        // The loose keys drop the addresses (ByClient keeps the client's).
        assert_eq!(Loose::of(&base), Loose::of(&others[2]));
        assert_eq!(ByClient::of(&base), ByClient::of(&others[2]));
        assert_ne!(ByClient::of(&base), ByClient::of(&others[1]));
        assert_ne!(Loose::of(&base), Loose::of(&others[4]));
    }
}
