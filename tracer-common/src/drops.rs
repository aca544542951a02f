//! Kernel drop records (`drop_kfree_skb`).

use crate::EventTag;

/// Bytes of a dropped packet copied from its network header.
pub const DROP_SNAP: usize = 128;

/// A packet freed by the kernel with a drop reason.
///
/// It starts with an [`EventTag`], not a whole [`crate::EventHeader`]: a drop
/// is seen wherever the kernel frees the packet (mostly softirq), so it never
/// had a process, and 48 bytes of zeros were a ring cache line per drop.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DropEvent {
    /// Kind ([`crate::EventKind::Drop`]), version and time.
    pub tag: EventTag,
    /// Kernel text address that freed it.
    pub location: u64,
    /// `enum skb_drop_reason` value.
    pub reason: u32,
    /// `skb->dev->ifindex` (0 if no device).
    pub ifindex: u32,
    /// Network namespace inode of `skb->dev` (0 if unknown).
    pub netns_ino: u32,
    /// `skb->len`.
    pub pkt_len: u32,
    /// Valid bytes of `data`.
    pub cap_len: u16,
    /// Explicit padding.
    pub pad: [u8; 6],
    /// From the network header on.
    pub data: [u8; DROP_SNAP],
}

const _: () = assert!(size_of::<DropEvent>() == 16 + 8 + 16 + 8 + DROP_SNAP);

/// The fixed part of a [`DropEvent`], everything before `data`, field for
/// field: what userspace reads before the `cap_len` bytes that follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DropEventHead {
    /// As [`DropEvent::tag`].
    pub tag: EventTag,
    /// As [`DropEvent::location`].
    pub location: u64,
    /// As [`DropEvent::reason`].
    pub reason: u32,
    /// As [`DropEvent::ifindex`].
    pub ifindex: u32,
    /// As [`DropEvent::netns_ino`].
    pub netns_ino: u32,
    /// As [`DropEvent::pkt_len`].
    pub pkt_len: u32,
    /// As [`DropEvent::cap_len`].
    pub cap_len: u16,
    /// As [`DropEvent::pad`].
    pub pad: [u8; 6],
}

const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<DropEventHead>() == offset_of!(DropEvent, data));
    assert!(offset_of!(DropEventHead, location) == offset_of!(DropEvent, location));
    assert!(offset_of!(DropEventHead, reason) == offset_of!(DropEvent, reason));
    assert!(offset_of!(DropEventHead, ifindex) == offset_of!(DropEvent, ifindex));
    assert!(offset_of!(DropEventHead, netns_ino) == offset_of!(DropEvent, netns_ino));
    assert!(offset_of!(DropEventHead, pkt_len) == offset_of!(DropEvent, pkt_len));
    assert!(offset_of!(DropEventHead, cap_len) == offset_of!(DropEvent, cap_len));
};
