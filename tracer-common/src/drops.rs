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
    pub pad: u16,
    /// Drops this record stands for (at least 1): this one and those of the
    /// same key the kernel counted in [`DropFold`] since the key's last record.
    pub count: u32,
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
    pub pad: u16,
    /// As [`DropEvent::count`].
    pub count: u32,
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
    assert!(offset_of!(DropEventHead, count) == offset_of!(DropEvent, count));
};

/// Slots of the per-CPU drop fold table (`DROP_FOLD`), a power of two.
pub const FOLD_SLOTS: u32 = 256;

/// Bytes of a folded key's packet kept in its slot (from the network
/// header): enough for the IPv4 or IPv6 header and a whole TCP or UDP header,
/// all `ktrace drops` parses to place a drop in its row.
pub const FOLD_HEAD: usize = 64;

/// UDP destination ports whose drops are never folded: a tunnel's outer
/// header does not tell its inner flows apart, and `ktrace drops` sorts VXLAN
/// drops by the inner packet (the analysis's default VXLAN ports).
pub const FOLD_TUNNEL_PORTS: [u16; 2] = [4789, 8472];

/// Underlay devices whose drops are never folded (see [`FoldConfig`]).
pub const FOLD_NOFOLD_DEVS: usize = 8;

/// How `drop_kfree_skb` folds repeats (`DROP_FOLD_CFG`, written by
/// userspace at load time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldConfig {
    /// Window of a key in jiffies; 0: every drop sends a record.
    pub window: u64,
    /// Network namespace inode of `devs`.
    pub netns_ino: u32,
    /// Devices (ifindex in `netns_ino`; 0 ends the list) whose drops are
    /// always sent: the underlay devices, whose packets the fabric analysis
    /// matches one by one (a packet fingerprinted at one node's egress and
    /// dropped before the other's ingress is not a fabric loss).
    pub devs: [u32; FOLD_NOFOLD_DEVS],
    /// 1: the packet bytes of the key are read with direct loads (the
    /// verifier types `skb->head` as read-only untrusted memory, 6.17+;
    /// probed at load time), 0: with `bpf_probe_read_kernel`.
    pub pkt_direct: u32,
}

/// One slot of `DROP_FOLD` (per CPU, indexed by a hash of the key): repeats
/// of a drop key within a window are counted here instead of each sending a
/// record. The key is the drop's location, reason, length, device (its
/// address: one ifindex and netns at a time, kept below and checked again
/// by each record) and its IP and TCP/UDP headers without the fields that
/// change per packet (IPv4 id and checksum; nothing past the ports), always
/// at least as fine as the row `ktrace drops` puts it in, so counts land in
/// the same rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DropFold {
    /// The key (see above); all zero: slot unused.
    pub key: [u64; 9],
    /// Drops of this key counted since its last record (sent with the next
    /// one, or read by userspace when the run ends).
    pub pending: u64,
    /// `jiffies` at which the key's window ends: a drop before it is
    /// counted, the first one after it sends a record.
    pub until: u64,
    /// Time of the key's last record (`bpf_ktime_get_ns`): what a pending
    /// count read at the end is stamped with (its drops came within one
    /// window after it).
    pub ts_ns: u64,
    /// The drop's `reason`, `ifindex`, `netns_ino` and `pkt_len`, as in its record.
    pub reason: u32,
    /// As [`DropEvent::ifindex`].
    pub ifindex: u32,
    /// As [`DropEvent::netns_ino`].
    pub netns_ino: u32,
    /// As [`DropEvent::pkt_len`].
    pub pkt_len: u32,
    /// As [`DropEvent::location`].
    pub location: u64,
    /// The first [`FOLD_HEAD`] bytes from the network header.
    pub head: [u8; FOLD_HEAD],
}

const _: () = assert!(size_of::<DropFold>() == 9 * 8 + 3 * 8 + 16 + 8 + FOLD_HEAD);
