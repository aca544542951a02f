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
}

/// Bytes of a [`PacketEvent`] before `data`.
pub const PACKET_EVENT_HDR_LEN: usize = 64 + 8 + 4 + 4 + 4 + 2 + 1 + 1;
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
};
