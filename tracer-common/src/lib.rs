//! Event layouts shared by ktrace's eBPF programs and its userspace.
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, made of
//! integers and byte arrays only (no Rust `enum`, `bool` or `Option`), with
//! explicit padding and a compile-time size check, so that both sides agree
//! on the layout byte for byte. Userspace decodes `kind` with `TryFrom<u32>`.
#![no_std]

/// Name of the ring buffer map that carries every event to userspace.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the per-CPU array counting events that could not be reserved.
pub const MAP_LOST: &str = "LOST";
/// Name of the array of DNS ports to capture (`PORTS_MAX` slots, 0 = unused).
pub const MAP_PORTS: &str = "DNS_PORTS";
/// Name of the per-CPU array of program statistics (see [`Stat`]).
pub const MAP_STATS: &str = "STATS";

/// How many DNS ports can be configured at once.
pub const PORTS_MAX: u32 = 8;

/// Bytes of each packet (from the IP header on) copied into an event.
///
/// 1024 covers a 512-byte classic DNS message behind the largest IPv6 + TCP
/// headers with room for EDNS; longer messages are truncated and flagged.
pub const SNAP_LEN: usize = 1024;

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
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::DnsPacket),
            2 => Ok(Self::Drop),
            3 => Ok(Self::Conn),
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

/// Current version of [`EventHeader`]-based layouts; bump on any change.
pub const EVENT_VERSION: u16 = 1;

/// Common header at the start of every event.
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

const _: () = assert!(core::mem::size_of::<EventHeader>() == 64);

/// A packet seen by a capture hook, from its IP header on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketEvent {
    /// Common header; `kind` is [`EventKind::DnsPacket`].
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
    /// One of the [`hook`] constants.
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// The packet, from the IP header on.
    pub data: [u8; SNAP_LEN],
}

/// Bytes of a [`PacketEvent`] before `data`.
pub const PACKET_EVENT_HDR_LEN: usize = 64 + 8 + 4 + 4 + 4 + 2 + 1 + 1;
const _: () = assert!(core::mem::size_of::<PacketEvent>() == PACKET_EVENT_HDR_LEN + SNAP_LEN);
const _: () = assert!(core::mem::offset_of!(PacketEvent, data) == PACKET_EVENT_HDR_LEN);

/// Slots of the statistics array ([`MAP_STATS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Packets the capture programs looked at. No longer counted per
    /// packet (a map update on the path most traffic takes); the kernel's
    /// run count (`bpf_stats`) gives the same number. Slot kept for layout.
    Seen = 0,
    /// Packets that matched a DNS port and were sent to the ring buffer.
    Matched = 1,
    /// Packets that could not be parsed far enough to see their ports.
    ParseError = 2,
    /// `bpf_skb_load_bytes` failures.
    LoadError = 3,
}

/// Number of slots in [`MAP_STATS`].
pub const STATS_LEN: u32 = 4;

/// Offsets into kernel structures, read from BTF in userspace at load time
/// and written into the program's read-only globals (Rust eBPF has no CO-RE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `offsetof(struct task_struct, group_leader)`.
    pub task_group_leader: u32,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm: u32,
    /// `offsetof(struct task_struct, nsproxy)`.
    pub task_nsproxy: u32,
    /// `offsetof(struct nsproxy, net_ns)`.
    pub nsproxy_net_ns: u32,
    /// `offsetof(struct net, ns) + offsetof(struct ns_common, inum)`.
    pub net_ns_inum: u32,
    /// Non-zero when the offsets above are valid.
    pub valid: u32,
    /// `offsetof(struct sk_buff, head)`.
    pub skb_head: u32,
    /// `offsetof(struct sk_buff, network_header)` (u16).
    pub skb_network_header: u32,
    /// `offsetof(struct sk_buff, len)` (u32).
    pub skb_len: u32,
    /// `offsetof(struct sk_buff, dev)`.
    pub skb_dev: u32,
    /// `offsetof(struct net_device, ifindex)` (int).
    pub dev_ifindex: u32,
    /// `offsetof(struct net_device, nd_net)` (`possible_net_t`: one `struct net *`).
    pub dev_nd_net: u32,
    /// `offsetof(struct sock, __sk_common.skc_state)` (u8).
    pub sock_state: u32,
    /// Non-zero when the `sk_buff/net_device/sock` offsets are valid.
    pub skb_valid: u32,
    /// `offsetof(struct task_struct, pid)` (`pid_t`): the thread id, read from
    /// the task where `bpf_get_current_pid_tgid` is not allowed (`cgroup_skb`
    /// before 6.10). 0 = unknown.
    pub task_pid: u32,
    /// `offsetof(struct task_struct, tgid)` (`pid_t`). 0 = unknown.
    pub task_tgid: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 64);

/// Where the `cgroup_skb` programs take the sender's pid/tgid from (the
/// `PID_SOURCE` global, chosen by userspace at load time).
pub mod pid_source {
    /// `bpf_get_current_pid_tgid` (allowed in `cgroup_skb` since 6.10).
    pub const HELPER: u32 = 0;
    /// `task_struct.pid`/`.tgid` of `bpf_get_current_task` at BTF offsets.
    pub const TASK: u32 = 1;
    /// Neither is available: no process attribution on egress.
    pub const NONE: u32 = 2;
}

/// Bytes of a dropped packet copied from its network header.
pub const DROP_SNAP: usize = 128;

/// A packet freed by the kernel with a drop reason.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DropEvent {
    /// Header; `kind` is [`EventKind::Drop`]. Process fields when in process context.
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

/// Which tracepoint a [`ConnEvent`] came from.
pub mod conn_kind {
    /// `sock:inet_sock_set_state` (old → new).
    pub const STATE: u8 = 1;
    /// `tcp:tcp_receive_reset`.
    pub const RESET_RECEIVED: u8 = 2;
    /// `tcp:tcp_send_reset`.
    pub const RESET_SENT: u8 = 3;
    /// `tcp:tcp_retransmit_skb`.
    pub const RETRANSMIT: u8 = 4;
}

/// A TCP socket event.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnEvent {
    /// Header; `kind` is [`EventKind::Conn`].
    pub hdr: EventHeader,
    /// Kernel address of the socket: identity across events.
    pub sock: u64,
    /// Netns inode of the current task (process context only).
    pub netns_ino: u32,
    /// One of [`conn_kind`].
    pub what: u8,
    /// Old state (STATE) or current state (others).
    pub old_state: u8,
    /// New state (STATE).
    pub new_state: u8,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u8,
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// Explicit padding.
    pub pad: u32,
    /// Local address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ConnEvent>() == 64 + 8 + 8 + 8 + 32);

/// Offsets of one tracepoint's fields in its raw record (from
/// `/sys/kernel/tracing/events/<cat>/<name>/format`), `u16::MAX` = absent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TpFields {
    /// `skaddr`.
    pub skaddr: u16,
    /// `sport`.
    pub sport: u16,
    /// `dport`.
    pub dport: u16,
    /// `family`.
    pub family: u16,
    /// `saddr` (4 bytes).
    pub saddr: u16,
    /// `daddr` (4 bytes).
    pub daddr: u16,
    /// `saddr_v6` (16 bytes).
    pub saddr_v6: u16,
    /// `daddr_v6` (16 bytes).
    pub daddr_v6: u16,
    /// `oldstate` (int).
    pub oldstate: u16,
    /// `newstate` (int).
    pub newstate: u16,
    /// `state` (int).
    pub state: u16,
    /// `protocol` (u16).
    pub protocol: u16,
}

impl TpFields {
    /// Every field absent.
    pub const NONE: Self = Self {
        skaddr: u16::MAX,
        sport: u16::MAX,
        dport: u16::MAX,
        family: u16::MAX,
        saddr: u16::MAX,
        daddr: u16::MAX,
        saddr_v6: u16::MAX,
        daddr_v6: u16::MAX,
        oldstate: u16::MAX,
        newstate: u16::MAX,
        state: u16::MAX,
        protocol: u16::MAX,
    };
}

impl Default for TpFields {
    fn default() -> Self {
        Self::NONE
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data `#[repr(C)]` structs of integers and byte arrays.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropEvent {}
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
        assert_eq!(core::mem::size_of::<EventHeader>(), 64);
        assert_eq!(core::mem::offset_of!(EventHeader, ts_ns), 8);
        assert_eq!(core::mem::offset_of!(EventHeader, cgroup_id), 24);
        assert_eq!(core::mem::offset_of!(EventHeader, comm), 32);
        assert_eq!(core::mem::offset_of!(PacketEvent, netns_cookie), 64);
        assert_eq!(core::mem::offset_of!(PacketEvent, cap_len), 84);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 64);
        assert_eq!(core::mem::offset_of!(KernelOffsets, task_pid), 56);
        assert_eq!(core::mem::offset_of!(DropEvent, data), 96);
        assert_eq!(core::mem::offset_of!(ConnEvent, saddr), 88);
    }
}
