//! The second sighting of a message, recognised before it is decoded.
//!
//! A message between two sockets of one node is captured twice: leaving the
//! sender (socket egress) and, with the very same DNS bytes, reaching the
//! receiver (socket ingress), nearly always as the next DNS record (on a
//! `dnsperf` → `dnsmasq` recording 99.6 % of repeats). The decoder keeps
//! the payload and the decoded message of the last egress datagram; an
//! ingress datagram with the same bytes takes that message instead of being
//! decoded again. Decoding is a function of the bytes alone (the interner
//! only decides which equal string is shared), so the result is the same.
//!
//! Bounded: one payload of at most [`Echo::MAX_BYTES`] and one message. A
//! capture with no such pairs (a client-only view) stops paying for the
//! copy after a few misses and tries again now and then.

use std::sync::Arc;

use super::{DnsMessage, intern::same_bytes};

/// The last egress message, waiting for its ingress sighting.
#[derive(Debug, Default)]
pub(super) struct Echo {
    /// Its payload, when `msg` is held.
    bytes: Vec<u8>,
    /// Its decoded message; taken by the sighting that matches.
    msg: Option<DnsMessage>,
    /// Egress messages kept that no ingress sighting took, in a row.
    misses: u8,
    /// Egress messages passed over while `misses` says pairs are rare.
    skipped: u8,
}

impl Echo {
    /// Longest payload kept (a larger message is decoded twice).
    pub(super) const MAX_BYTES: usize = 512;
    /// Misses in a row after which messages are kept only now and then.
    const GIVE_UP: u8 = 8;
    /// While given up, one message in this many is still kept (a probe).
    const PROBE_EVERY: u8 = 64;

    /// The kept message when `payload` is its bytes (taken: a third copy of
    /// the same bytes is decoded again).
    #[inline]
    pub(super) fn take(&mut self, payload: &[u8]) -> Option<DnsMessage> {
        // The length first: a query and its answer differ in it.
        if self.bytes.len() != payload.len() || self.msg.is_none() || !same_bytes(&self.bytes, payload) {
            return None;
        }
        self.misses = 0;
        self.msg.take()
    }

    /// Whether a message is held.
    #[cfg(test)]
    pub(super) fn holds(&self) -> bool {
        self.msg.is_some()
    }

    /// Whether an egress message of `len` bytes is worth keeping.
    #[inline]
    pub(super) fn wants(&mut self, len: usize) -> bool {
        if len > Self::MAX_BYTES {
            return false;
        }
        if self.misses < Self::GIVE_UP {
            return true;
        }
        self.skipped = self.skipped.wrapping_add(1);
        self.skipped.is_multiple_of(Self::PROBE_EVERY)
    }

    /// Keeps `msg`, decoded from `payload`, for its ingress sighting.
    #[inline(never)]
    pub(super) fn keep(&mut self, payload: &[u8], msg: &DnsMessage) {
        if self.msg.is_some() {
            self.misses = self.misses.saturating_add(1);
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(payload);
        // Most messages have no answers or one: the generic `Vec` clone was
        // ~40 instructions of bookkeeping around that.
        let answers = match msg.answers.as_slice() {
            [] => Vec::new(),
            [a] => vec![a.clone()],
            all => all.to_vec(),
        };
        self.msg = Some(DnsMessage { qname: Arc::clone(&msg.qname), answers, ..*msg });
    }
}
