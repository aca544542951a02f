//! Event layouts shared by ktrace's eBPF programs and its userspace.
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, made of
//! integers and byte arrays only (no Rust `enum`, `bool` or `Option`), with
//! explicit padding and a compile-time size check, so that both sides agree
//! on the layout byte for byte. Userspace decodes `kind` with `TryFrom<u32>`.
#![no_std]

/// Name of the array of ring buffer maps, one per CPU (indexed by CPU
/// number), that carries every event to userspace.
pub const MAP_RINGS: &str = "RINGS";
/// Name of the per-CPU array counting events that could not be reserved
/// (slot of CPU `i`: the losses of ring `i`).
pub const MAP_LOST: &str = "LOST";
/// Name of the array of DNS ports to capture (`PORTS_MAX` slots, 0 = unused).
pub const MAP_PORTS: &str = "DNS_PORTS";
/// Name of the per-CPU array of program statistics (see [`Stat`]).
pub const MAP_STATS: &str = "STATS";

pub mod conn;
pub mod dns;
pub mod drops;
pub mod task;
pub mod underlay;

pub use conn::{ConnEvent, TpFields, conn_kind};
pub use dns::{
    DEDUPE_ENTRIES, DedupeKey, PACKET_EVENT_HDR_LEN, PORTS_MAX, PacketEvent, PacketEventHead, PacketRefEvent,
    REF_HEAD_LEN, SNAP_LEN,
};
pub use drops::{
    DROP_SNAP, DropEvent, DropEventHead, DropFold, FOLD_HEAD, FOLD_NOFOLD_DEVS, FOLD_SLOTS, FOLD_TUNNEL_PORTS,
    FoldConfig,
};
pub use task::{KernelOffsets, pid_source};
pub use underlay::UNDERLAY_SNAP;

/// Kinds of event, the first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`PacketEvent`] carrying a DNS message (`cgroup_skb`) or an underlay packet (tc).
    DnsPacket = 1,
    /// A [`DropEvent`] from `skb:kfree_skb`.
    Drop = 2,
    /// A [`ConnEvent`] from the sock/tcp tracepoints.
    Conn = 3,
    /// A [`PacketRefEvent`]: an ingress sighting of a DNS message whose
    /// payload an earlier egress [`PacketEvent`] carries.
    DnsPacketRef = 4,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::DnsPacket),
            2 => Ok(Self::Drop),
            3 => Ok(Self::Conn),
            4 => Ok(Self::DnsPacketRef),
            other => Err(other),
        }
    }
}

/// Where in the stack a packet was observed.
pub mod hook {
    /// `cgroup_skb` egress on the cgroup2 root: sending socket, process context for UDP.
    pub const CGROUP_EGRESS: u8 = 1;
    /// `cgroup_skb` ingress on the cgroup2 root: receiving socket, softirq context.
    pub const CGROUP_INGRESS: u8 = 2;
    /// tc (TCX) egress on an interface.
    pub const TC_EGRESS: u8 = 3;
    /// tc (TCX) ingress on an interface.
    pub const TC_INGRESS: u8 = 4;
}

/// Bits of [`EventHeader::flags`].
pub mod flags {
    /// `pid`/`tgid`/comm were read in the sending process's context.
    pub const HAS_PROCESS: u16 = 1 << 0;
    /// The packet was longer than [`crate::SNAP_LEN`] and was cut.
    pub const TRUNCATED: u16 = 1 << 1;
    /// `netns_cookie` came from the kernel (`bpf_get_netns_cookie`).
    pub const HAS_NETNS_COOKIE: u16 = 1 << 2;
    /// `netns_ino` was read from the current task's namespace.
    pub const HAS_NETNS_INO: u16 = 1 << 3;
}

/// Current version of the record layouts (every record starts with an
/// [`EventTag`]); bump on any change.
/// 2: [`PacketEvent`] gained `seq`; [`PacketRefEvent`] is new.
/// 3: [`DropEvent`] starts with an [`EventTag`] instead of an [`EventHeader`].
/// 4: [`DropEvent`] carries a `count` (repeats folded in the kernel).
pub const EVENT_VERSION: u16 = 4;

/// The start of every record, and of [`EventHeader`]: what the reader needs
/// before it knows the record's layout (its kind and version) and to merge
/// the per-CPU rings (its time).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventTag {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// [`EVENT_VERSION`] of the program that wrote it.
    pub version: u16,
    /// Bits from [`flags`].
    pub flags: u16,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
}

const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<EventTag>() == 16);
    assert!(offset_of!(EventTag, version) == offset_of!(EventHeader, version));
    assert!(offset_of!(EventTag, flags) == offset_of!(EventHeader, flags));
    assert!(offset_of!(EventTag, ts_ns) == offset_of!(EventHeader, ts_ns));
};

/// Common header at the start of every event but drops ([`DropEvent`]
/// starts with its first 16 bytes, an [`EventTag`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// [`EVENT_VERSION`] of the program that wrote it.
    pub version: u16,
    /// Bits from [`flags`].
    pub flags: u16,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    /// Thread id of the sender (valid with `flags::HAS_PROCESS`).
    pub tid: u32,
    /// Thread-group id, the "pid" users expect (valid with `flags::HAS_PROCESS`).
    pub tgid: u32,
    /// cgroup v2 id of the socket (`bpf_skb_cgroup_id`); 0 if unknown.
    pub cgroup_id: u64,
    /// Name of the thread-group leader (NUL padded), e.g. `dig`.
    pub comm: [u8; 16],
    /// Name of the sending thread, e.g. `isc-net-0000`.
    pub thread_comm: [u8; 16],
}

const _: () = assert!(size_of::<EventHeader>() == 64);

/// Slots of the statistics array ([`MAP_STATS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Packets the capture programs looked at. No longer counted per
    /// packet (a map update on the path most traffic takes); the kernel's
    /// run count (`bpf_stats`) gives the same number. Slot kept for layout.
    Seen = 0,
    /// Packets that matched a DNS port and were sent to the ring buffer. No
    /// longer counted (the counter's cache line was a miss on every DNS
    /// packet; the ring's records say the same). Slot kept for layout.
    Matched = 1,
    /// Packets that could not be parsed far enough to see their ports.
    ParseError = 2,
    /// `bpf_skb_load_bytes` failures.
    LoadError = 3,
    /// Ingress DNS sightings sent as a [`PacketRefEvent`] (no payload copy).
    DedupeRef = 4,
    /// Ingress DNS sightings that could have been a reference but whose
    /// egress sighting was not in the kernel's map (another node sent it, or
    /// the LRU map forgot it): sent in full, nothing lost.
    DedupeMiss = 5,
    /// Egress sightings the kernel could not remember (map update failed):
    /// their ingress sightings are then sent in full.
    DedupeStoreError = 6,
}

/// Number of slots in [`MAP_STATS`].
pub const STATS_LEN: u32 = 7;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data `#[repr(C)]` structs of integers and byte arrays.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventTag {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketEventHead {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketRefEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DedupeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropEventHead {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropFold {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FoldConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TpFields {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_round_trips() {
        assert_eq!(EventKind::try_from(EventKind::DnsPacket as u32), Ok(EventKind::DnsPacket));
        assert_eq!(EventKind::try_from(99), Err(99));
    }

    #[test]
    fn layouts_are_stable() {
        assert_eq!(size_of::<EventHeader>(), 64);
        assert_eq!(core::mem::offset_of!(EventHeader, ts_ns), 8);
        assert_eq!(core::mem::offset_of!(EventHeader, cgroup_id), 24);
        assert_eq!(core::mem::offset_of!(EventHeader, comm), 32);
        assert_eq!(core::mem::offset_of!(PacketEvent, netns_cookie), 64);
        assert_eq!(core::mem::offset_of!(PacketEvent, cap_len), 84);
        assert_eq!(size_of::<KernelOffsets>(), 64);
        assert_eq!(core::mem::offset_of!(KernelOffsets, task_pid), 56);
        assert_eq!(core::mem::offset_of!(DropEvent, data), 48);
        assert_eq!(core::mem::offset_of!(ConnEvent, saddr), 88);
    }
}
