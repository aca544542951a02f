//! Raw bytes → typed events. Decoders never format and never look anything up.
//!
//! * [`packet`]: IPv4/IPv6 + UDP/TCP headers of a captured packet.
//! * [`dns`]: a DNS message (header, question, answers), bounded and loop-safe.
//! * [`stream`]: TCP two-byte length framing, reassembled per stream.
//! * [`DnsDecoder`]: [`crate::event::PacketRecord`] → [`DnsEvent`]s.

pub mod dns;
mod echo;
pub mod intern;
pub mod packet;
pub mod stream;

use crate::event::{Endpoint, PacketInfo, PacketRecord, Transport};

pub use dns::DnsMessage;
pub use intern::Interner;

/// One DNS message observed at one point, with where it was seen.
#[derive(Clone, Debug)]
pub struct DnsEvent {
    /// What is known about the packet (or, for TCP, the packet that
    /// completed the message); its bytes are not kept.
    pub rec: PacketInfo,
    /// Sender.
    pub src: Endpoint,
    /// Receiver.
    pub dst: Endpoint,
    /// UDP or TCP.
    pub transport: Transport,
    /// The decoded message.
    pub msg: DnsMessage,
    /// True when the packet was cut by the snap length and the message may be incomplete.
    pub partial: bool,
    /// Pod owning `src`, filled by [`crate::enrich`] (None from the decoder).
    pub src_pod: Option<crate::model::PodRef>,
    /// Pod owning `dst`, filled by [`crate::enrich`] (None from the decoder).
    pub dst_pod: Option<crate::model::PodRef>,
}

/// Counters of what could not be decoded: reported, never silently dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    /// Packets handed to the decoder.
    pub packets: u64,
    /// DNS messages decoded.
    pub messages: u64,
    /// Packets whose IP/UDP/TCP headers could not be parsed.
    pub bad_packets: u64,
    /// Payloads on a DNS port that were not valid DNS.
    pub bad_dns: u64,
    /// Packets truncated by the snap length.
    pub truncated: u64,
    /// TCP streams evicted from the bounded reassembly table.
    pub tcp_evicted: u64,
    /// IP fragments seen (only first fragments carry ports; reassembly is not done).
    pub fragments: u64,
    /// TCP holes that did not fill (lost or snapped segments, too much held
    /// out of order): the stream's partial message was dropped and the
    /// stream resynchronized on the next frame start.
    pub tcp_gaps: u64,
    /// TCP segments dropped because every byte in them was already seen.
    pub tcp_retransmits: u64,
    /// TCP segments with data dropped while waiting to resynchronize on a
    /// frame start (stream first seen mid-way, or after a gap).
    pub tcp_unsynced: u64,
}

pub use stream::{DnsDecoder, PacketInput};

/// Whether a packet belongs to the DNS decoder: observed at a socket (or on
/// the wire in a foreign capture) with a DNS port on either side. Underlay
/// fingerprints (tc) and other traffic go to other analyses.
#[must_use]
pub fn is_dns(rec: &PacketRecord, ports: &[u16]) -> bool {
    use crate::event::Hook;
    if matches!(rec.hook, Hook::TcEgress | Hook::TcIngress) {
        return false;
    }
    match packet::parse(&rec.data) {
        Ok(v) => ports.contains(&v.sport) || ports.contains(&v.dport),
        // Let the decoder count what it cannot parse.
        Err(_) => rec.hook != Hook::Wire,
    }
}
