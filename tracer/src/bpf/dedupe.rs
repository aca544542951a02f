//! One payload per DNS message: turns the kernel's reference items back
//! into the packets the rest of ktrace reads.
//!
//! A message sent and received on the same node is seen twice, at the
//! sender's egress and at the receiver's ingress. The kernel copies its
//! payload once: the egress record carries it with a sequence number
//! (`PacketEvent::seq`), and the ingress sighting, when the kernel still
//! remembers that egress record, is a small `PacketRefEvent` with the
//! receiver, the receive time, its own IP and UDP headers and the egress
//! record's `seq`. [`Resolver`] keeps the payloads of the last egress records
//! (the [`Bytes`] the egress record already holds: shared, not copied) and
//! makes each reference the packet record the kernel would have sent in full:
//! the reference's headers (a Service DNAT between the two sightings changes
//! addresses and ports) followed by the egress record's DNS message.
//!
//! The kernel writes an egress record before anything can refer to it, so a
//! reference is resolved unless its egress record was lost (ring full,
//! counted by the kernel) or pushed out of the resolver's bounded table by
//! [`SLOTS`] later egress records. Such a reference is counted
//! ([`DedupeStats::unresolved`]) and reported like a lost event, never a panic.

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::raw::{self, DecodeCtx, Item, Payloads, RawError};
use crate::event::{Hook, Record};

/// Egress payloads the resolver keeps (a power of two). References come
/// within microseconds of their egress record (same node), so a few thousand
/// is ample; at most this many payloads of up to 1 KiB are held (8 MiB).
pub const SLOTS: usize = 8192;

/// Counters of one-payload-per-message, shown in the JSON `stats` record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DedupeStats {
    /// Ingress sightings that came as references and were resolved.
    pub refs: u64,
    /// References whose egress payload was gone (its record lost in the
    /// kernel or pushed out of the resolver's table): those sightings are
    /// lost, and also counted in `lost_events`.
    pub unresolved: u64,
    /// Ingress sightings the kernel sent in full because it no longer (or
    /// never) remembered their egress sighting: nothing lost, one more copy.
    pub kernel_misses: u64,
    /// Egress sightings the kernel could not remember (map update failed).
    pub kernel_store_errors: u64,
}

/// Resolves reference items against the payloads of recent egress records.
pub struct Resolver {
    /// Direct-mapped by a hash of `seq`: (seq, payload); seq 0 = empty.
    slots: Box<[(u64, Bytes)]>,
    shift: u32,
    /// Where the payloads of DNS records are copied out of the ring.
    payloads: Payloads,
    /// Counters (the kernel's are filled in by whoever reads its statistics).
    pub stats: DedupeStats,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::with_slots(SLOTS)
    }
}

impl Resolver {
    /// A resolver keeping `slots` payloads (rounded up to a power of two).
    #[must_use]
    pub fn with_slots(slots: usize) -> Self {
        let n = slots.max(2).next_power_of_two();
        Self {
            slots: vec![(0, Bytes::new()); n].into_boxed_slice(),
            shift: 64 - n.trailing_zeros(),
            payloads: Payloads::default(),
            stats: DedupeStats::default(),
        }
    }

    fn slot(&self, seq: u64) -> usize {
        // Fibonacci hashing: per-CPU counters in the low bits, the CPU in the high ones.
        (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// Decodes one ring item as [`raw::decode`] does, resolving a reference
    /// into the packet it stands for. `Ok(None)`: an unresolved reference
    /// (counted in [`DedupeStats::unresolved`]).
    pub fn decode(
        &mut self,
        b: &[u8],
        node: Option<&std::sync::Arc<str>>,
        ctx: &DecodeCtx,
    ) -> Result<Option<Record>, RawError> {
        raw::decode_item_with(b, node, ctx, Some(&mut self.payloads)).map(|i| self.resolve(i))
    }

    /// The record an item stands for: a record as it is (an egress packet's
    /// payload is kept for later references), a reference joined to its
    /// egress payload; None for an unresolved reference (counted).
    pub fn resolve(&mut self, item: Item) -> Option<Record> {
        match item {
            Item::Record { record, seq } => {
                if seq != 0
                    && let Record::Packet(p) = &record
                    && p.hook == Hook::SocketEgress
                {
                    let i = self.slot(seq);
                    self.slots[i] = (seq, p.data.clone());
                }
                Some(record)
            }
            Item::Ref { mut record, seq, head } => {
                let i = self.slot(seq);
                let joined = match &self.slots[i] {
                    (s, payload) if *s == seq && seq != 0 => join(head.bytes(), payload),
                    _ => None,
                };
                let Some(data) = joined else {
                    self.stats.unresolved += 1;
                    return None;
                };
                self.stats.refs += 1;
                record.data = data;
                Some(Record::Packet(record))
            }
        }
    }
}

/// This sighting's IP and UDP headers `head` followed by the DNS message of
/// the egress packet `egress`: `egress` itself (shared) when the headers are
/// the same, else a new buffer. None if `egress` is not an IP/UDP packet
/// with whole headers.
fn join(head: &[u8], egress: &Bytes) -> Option<Bytes> {
    let hl = match egress.first()? >> 4 {
        4 => usize::from(egress[0] & 0x0f) * 4 + 8,
        6 => 40 + 8,
        _ => return None,
    };
    if egress.len() < hl || head.is_empty() {
        return None;
    }
    if head[..] == egress[..hl] {
        return Some(egress.clone());
    }
    let mut b = BytesMut::with_capacity(head.len() + egress.len() - hl);
    b.extend_from_slice(head);
    b.extend_from_slice(&egress[hl..]);
    Some(b.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::PacketRecord;

    /// An IPv4/UDP packet from `src` to `dst` carrying `dns`.
    fn pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, dns: &[u8]) -> Bytes {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(dns);
        Bytes::from(p)
    }

    fn rec(hook: Hook, ts: u64, data: Bytes) -> PacketRecord {
        let mut r = PacketRecord::bare(ts, hook, data);
        r.node = Some(Arc::from("n"));
        r
    }

    /// An ingress sighting at `ts` referring to `seq`, with its headers `head`.
    fn reference(ts: u64, head: &Bytes, seq: u64) -> Item {
        Item::Ref { record: rec(Hook::SocketIngress, ts, Bytes::new()), seq, head: raw::RefHead::new(head) }
    }

    const DNS: &[u8] = &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];

    #[test]
    fn a_reference_becomes_the_packet_with_its_own_headers() {
        let mut r = Resolver::default();
        let egress = pkt([10, 0, 0, 1], [10, 96, 0, 10], 40000, 53, DNS);
        let out =
            r.resolve(Item::Record { record: Record::Packet(rec(Hook::SocketEgress, 1, egress.clone())), seq: 7 });
        assert!(matches!(out, Some(Record::Packet(_))));
        // Same headers: the egress payload itself, shared.
        let Some(Record::Packet(p)) = r.resolve(reference(2, &egress.slice(..28), 7)) else { panic!("not resolved") };
        assert_eq!(p.data, egress);
        assert_eq!(p.data.as_ptr(), egress.as_ptr(), "shared, not copied");
        assert_eq!((p.ts_ns, p.hook), (2, Hook::SocketIngress));
        // After a DNAT: the receiver's headers, the sender's message.
        let dnat = pkt([10, 0, 0, 1], [10, 244, 0, 5], 40000, 53, DNS);
        let Some(Record::Packet(p)) = r.resolve(reference(3, &dnat.slice(..28), 7)) else { panic!("not resolved") };
        assert_eq!(p.data, dnat);
        assert_eq!(r.stats, DedupeStats { refs: 2, unresolved: 0, ..DedupeStats::default() });
    }

    #[test]
    fn unresolved_references_are_counted_and_the_table_is_bounded() {
        let mut r = Resolver::with_slots(16);
        assert_eq!(r.slots.len(), 16);
        let head = pkt([10, 0, 0, 1], [10, 0, 0, 2], 40000, 53, DNS).slice(..28);
        // Nothing was ever sent under seq 5, or it was lost.
        assert!(r.resolve(reference(1, &head, 5)).is_none());
        assert!(r.resolve(reference(1, &head, 0)).is_none());
        // Many more egress records than slots: memory stays at 16 slots, the
        // oldest payloads are gone and their references unresolved.
        for seq in 1..=10_000u64 {
            let p = pkt([10, 0, 0, 1], [10, 0, 0, 2], 40000, 53, DNS);
            r.resolve(Item::Record { record: Record::Packet(rec(Hook::SocketEgress, seq, p)), seq });
        }
        assert_eq!(r.slots.len(), 16);
        assert!(r.slots.iter().filter(|(s, _)| *s != 0).count() <= 16);
        assert!(r.resolve(reference(1, &head, 1)).is_none());
        assert!(r.resolve(reference(1, &head, 10_000)).is_some());
        assert_eq!((r.stats.refs, r.stats.unresolved), (1, 3));
        // Only egress packets are kept: a tc record or an ingress sighting with a seq is not a payload to refer to.
        let p = pkt([10, 0, 0, 1], [10, 0, 0, 2], 40000, 53, DNS);
        r.resolve(Item::Record { record: Record::Packet(rec(Hook::TcEgress, 1, p)), seq: 20_000 });
        assert!(r.resolve(reference(1, &head, 20_000)).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = Resolver::with_slots(4);
        for egress in [Bytes::new(), Bytes::from_static(&[0x45, 0, 0]), Bytes::from_static(&[0x70; 60])] {
            r.resolve(Item::Record { record: Record::Packet(rec(Hook::SocketEgress, 1, egress)), seq: 9 });
            for head in [Bytes::new(), Bytes::from_static(&[0x45; 64])] {
                assert!(r.resolve(reference(1, &head, 9)).is_none());
            }
        }
        assert_eq!(r.stats.unresolved, 6);
    }
}
