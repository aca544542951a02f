//! Kernel drop records (`drop_kfree_skb`).

use crate::EventHeader;

/// Bytes of a dropped packet copied from its network header.
pub const DROP_SNAP: usize = 128;

/// A packet freed by the kernel with a drop reason.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DropEvent {
    /// Header; `kind` is [`crate::EventKind::Drop`]. Process fields when in process context.
    pub hdr: EventHeader,
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

const _: () = assert!(core::mem::size_of::<DropEvent>() == 64 + 8 + 16 + 8 + DROP_SNAP);
