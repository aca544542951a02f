//! DNS capture records (`dns_egress` / `dns_ingress`): the packet from its IP
//! header on, with who sent it.

use crate::EventHeader;

/// How many DNS ports can be configured at once.
pub const PORTS_MAX: u32 = 8;

/// Bytes of each packet (from the IP header on) copied into an event.
///
/// 1024 covers a 512-byte classic DNS message behind the largest IPv6 + TCP
/// headers with room for EDNS; longer messages are truncated and flagged.
pub const SNAP_LEN: usize = 1024;

/// A packet seen by a capture hook, from its IP header on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketEvent {
    /// Common header; `kind` is [`crate::EventKind::DnsPacket`].
    pub hdr: EventHeader,
    /// Network namespace cookie (`bpf_get_netns_cookie`), 0 if unavailable.
    pub netns_cookie: u64,
    /// Network namespace inode of the current task (egress only), 0 if unknown.
    pub netns_ino: u32,
    /// `skb->ifindex` (the device, in the packet's namespace).
    pub ifindex: u32,
    /// Length of the whole packet on the wire (L3 on).
    pub pkt_len: u32,
    /// Bytes of `data` that are valid.
    pub cap_len: u16,
    /// One of the [`crate::hook`] constants.
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Non-zero on a `dns_egress` record that later sightings of the same
    /// message may refer to ([`PacketRefEvent::seq`]); 0 otherwise.
    pub seq: u64,
    /// The packet, from the IP header on.
    pub data: [u8; SNAP_LEN],
}

/// The fixed part of a [`PacketEvent`], everything before `data`, field for
/// field: what userspace reads before the `cap_len` packet bytes that follow
/// it (the kernel submits only those, not the whole array).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketEventHead {
    /// As [`PacketEvent::hdr`].
    pub hdr: EventHeader,
    /// As [`PacketEvent::netns_cookie`].
    pub netns_cookie: u64,
    /// As [`PacketEvent::netns_ino`].
    pub netns_ino: u32,
    /// As [`PacketEvent::ifindex`].
    pub ifindex: u32,
    /// As [`PacketEvent::pkt_len`].
    pub pkt_len: u32,
    /// As [`PacketEvent::cap_len`].
    pub cap_len: u16,
    /// As [`PacketEvent::hook`].
    pub hook: u8,
    /// As [`PacketEvent::ip_version`].
    pub ip_version: u8,
    /// As [`PacketEvent::seq`].
    pub seq: u64,
}

/// Bytes of a [`PacketEvent`] before `data`.
pub const PACKET_EVENT_HDR_LEN: usize = 64 + 8 + 4 + 4 + 4 + 2 + 1 + 1 + 8;
const _: () = assert!(size_of::<PacketEvent>() == PACKET_EVENT_HDR_LEN + SNAP_LEN);
const _: () = assert!(core::mem::offset_of!(PacketEvent, data) == PACKET_EVENT_HDR_LEN);
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<PacketEventHead>() == PACKET_EVENT_HDR_LEN);
    assert!(offset_of!(PacketEventHead, netns_cookie) == offset_of!(PacketEvent, netns_cookie));
    assert!(offset_of!(PacketEventHead, netns_ino) == offset_of!(PacketEvent, netns_ino));
    assert!(offset_of!(PacketEventHead, ifindex) == offset_of!(PacketEvent, ifindex));
    assert!(offset_of!(PacketEventHead, pkt_len) == offset_of!(PacketEvent, pkt_len));
    assert!(offset_of!(PacketEventHead, cap_len) == offset_of!(PacketEvent, cap_len));
    assert!(offset_of!(PacketEventHead, hook) == offset_of!(PacketEvent, hook));
    assert!(offset_of!(PacketEventHead, ip_version) == offset_of!(PacketEvent, ip_version));
    assert!(offset_of!(PacketEventHead, seq) == offset_of!(PacketEvent, seq));
};

/// Most header bytes (IP and UDP, from the IP header on) a
/// [`PacketRefEvent`] carries; a sighting whose headers are longer is sent
/// in full.
pub const REF_HEAD_LEN: usize = 64;

/// Most distinct messages the kernel remembers between their egress and
/// ingress sightings (`DNS_DEDUPE`, an LRU hash: the oldest are forgotten
/// first; a forgotten message's ingress sighting is then sent in full).
pub const DEDUPE_ENTRIES: u32 = 16_384;

/// An ingress sighting of a DNS message whose payload is already in the
/// ring: the egress record with [`PacketEvent::seq`] equal to `seq`, written
/// earlier in ring order. It carries the receiver (process, cgroup, netns),
/// the receive time and device, and this sighting's own IP and UDP headers
/// (a Service DNAT between the two sightings changes addresses and ports, not
/// the DNS message), but no DNS payload: userspace joins the headers to the
/// egress record's payload. The fields up to `seq` are laid out as in
/// [`PacketEvent`]; `kind` is [`crate::EventKind::DnsPacketRef`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketRefEvent {
    /// Common header: receiver attribution and receive time.
    pub hdr: EventHeader,
    /// As [`PacketEvent::netns_cookie`].
    pub netns_cookie: u64,
    /// As [`PacketEvent::netns_ino`] (the receiving socket's owner).
    pub netns_ino: u32,
    /// As [`PacketEvent::ifindex`].
    pub ifindex: u32,
    /// Length of this sighting on the wire (L3 on).
    pub pkt_len: u32,
    /// Bytes of `head` that are valid: this sighting's IP and UDP headers.
    pub cap_len: u16,
    /// One of the [`crate::hook`] constants (`CGROUP_INGRESS`).
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// [`PacketEvent::seq`] of the egress record carrying the payload.
    pub seq: u64,
    /// This sighting's IP and UDP headers. The kernel submits the record
    /// cut after a 32-byte `head` when the headers fit (IPv4), whole otherwise.
    pub head: [u8; REF_HEAD_LEN],
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(PacketRefEvent, head) == PACKET_EVENT_HDR_LEN);
    assert!(offset_of!(PacketRefEvent, seq) == offset_of!(PacketEvent, seq));
    assert!(offset_of!(PacketRefEvent, cap_len) == offset_of!(PacketEvent, cap_len));
};

/// Key of the kernel's egress-sighting map: what identifies a DNS message at
/// both its sightings, even across a Service DNAT (which rewrites the
/// server's address and port, never the client's): the client-side endpoint
/// (a query's source, a response's destination), the DNS id, the QR bit,
/// the UDP payload length and the L4 protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupeKey {
    /// Client address (IPv4 in the first 4 bytes, the rest zero).
    pub addr: [u32; 4],
    /// Client port, network byte order.
    pub port: u16,
    /// DNS id, network byte order.
    pub id: u16,
    /// UDP payload length.
    pub len: u16,
    /// L4 protocol (17).
    pub proto: u8,
    /// The DNS header's QR bit: 0 query, 1 response.
    pub qr: u8,
}

const _: () = assert!(size_of::<DedupeKey>() == 24);
