//! ktrace's userspace event model: what every source (ring buffer, ktrace
//! capture, foreign pcap) yields and every analysis consumes.
//!
//! Live and replay are one pipeline: a source produces [`Record`]s in time
//! order, [`crate::decode`] turns packets into DNS messages, [`crate::enrich`]
//! names pods and processes, [`crate::analyze`] pairs and explains, and
//! [`crate::output`] / [`crate::capture`] present or store.

use std::{net::IpAddr, sync::Arc};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where a packet was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// Leaving a socket (`cgroup_skb` egress): the sender's side, process known.
    SocketEgress,
    /// Delivered to a socket (`cgroup_skb` ingress): the receiver's side.
    SocketIngress,
    /// tc egress on an interface.
    TcEgress,
    /// tc ingress on an interface.
    TcIngress,
    /// From a foreign capture (pcap/pcapng by tcpdump etc.): direction unknown.
    Wire,
}

impl Hook {
    /// Maps the kernel's `tracer_common::hook` constant.
    #[must_use]
    pub fn from_raw(v: u8) -> Option<Self> {
        use tracer_common::hook;
        match v {
            hook::CGROUP_EGRESS => Some(Self::SocketEgress),
            hook::CGROUP_INGRESS => Some(Self::SocketIngress),
            hook::TC_EGRESS => Some(Self::TcEgress),
            hook::TC_INGRESS => Some(Self::TcIngress),
            _ => None,
        }
    }

    /// The raw value, as stored in captures.
    #[must_use]
    pub fn to_raw(self) -> u8 {
        use tracer_common::hook;
        match self {
            Self::SocketEgress => hook::CGROUP_EGRESS,
            Self::SocketIngress => hook::CGROUP_INGRESS,
            Self::TcEgress => hook::TC_EGRESS,
            Self::TcIngress => hook::TC_INGRESS,
            Self::Wire => 0,
        }
    }

    /// True when the packet was seen leaving its sender.
    #[must_use]
    pub fn is_egress(self) -> bool {
        matches!(self, Self::SocketEgress | Self::TcEgress)
    }
}

/// The process a packet was sent by (egress in process context only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Thread-group id: the pid users know.
    pub pid: u32,
    /// Sending thread id.
    pub tid: u32,
    /// Name of the thread-group leader (`dig`), not the thread (`isc-net-0000`).
    /// Shared: a process's name repeats on every packet it sends.
    pub comm: Arc<str>,
    /// Name of the sending thread.
    pub thread: Arc<str>,
}

/// A packet observed somewhere, with everything the kernel told us about it.
#[derive(Clone, Debug)]
pub struct PacketRecord {
    /// `CLOCK_MONOTONIC` nanoseconds on the observing node (see [`crate::capture`]
    /// for the wall-clock reference recorded with it).
    pub ts_ns: u64,
    /// Observation point.
    pub hook: Hook,
    /// Sender process, when observed in its context.
    pub process: Option<Process>,
    /// cgroup v2 id of the socket; 0 if unknown.
    pub cgroup_id: u64,
    /// Network namespace cookie; 0 if unknown.
    pub netns_cookie: u64,
    /// Network namespace inode (what `ls -l /proc/PID/ns/net` shows); 0 if unknown.
    pub netns_ino: u32,
    /// Interface index in the packet's namespace; 0 if unknown.
    pub ifindex: u32,
    /// Length on the wire (may exceed `data.len()` when truncated).
    pub wire_len: u32,
    /// The packet from its IP header on.
    pub data: Bytes,
    /// Name of the node that observed it (captures from several nodes are merged).
    pub node: Option<Arc<str>>,
}

impl PacketRecord {
    /// A packet known only by its bytes: no process, namespace or device
    /// (foreign captures, tests, fuzzing).
    #[must_use]
    pub fn bare(ts_ns: u64, hook: Hook, data: Bytes) -> Self {
        Self {
            ts_ns,
            hook,
            process: None,
            cgroup_id: 0,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 0,
            wire_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            data,
            node: None,
        }
    }

    /// Everything but the bytes, copied (the names are shared).
    #[must_use]
    pub fn info(&self) -> PacketInfo {
        PacketInfo {
            ts_ns: self.ts_ns,
            hook: self.hook,
            process: self.process.clone(),
            cgroup_id: self.cgroup_id,
            netns_cookie: self.netns_cookie,
            netns_ino: self.netns_ino,
            ifindex: self.ifindex,
            wire_len: self.wire_len,
            node: self.node.clone(),
        }
    }

    /// The record taken apart: what is known about the packet, and its bytes.
    #[must_use]
    pub fn into_parts(self) -> (PacketInfo, Bytes) {
        let Self { ts_ns, hook, process, cgroup_id, netns_cookie, netns_ino, ifindex, wire_len, data, node } = self;
        (PacketInfo { ts_ns, hook, process, cgroup_id, netns_cookie, netns_ino, ifindex, wire_len, node }, data)
    }
}

/// A packet as a capture reader hands it on without owning it: its facts
/// and bytes where they lie (the mapped file or the reader's block buffer),
/// valid until the reader moves on. Replays that keep nothing of a record
/// but its decoded messages take this ([`crate::decode::DnsDecoder::push`]
/// builds the message's [`PacketInfo`] from it); [`Self::to_record`] makes
/// the owned [`PacketRecord`] for those that keep records.
#[derive(Clone, Copy, Debug)]
pub struct PacketRef<'a> {
    /// As [`PacketRecord::ts_ns`].
    pub ts_ns: u64,
    /// As [`PacketRecord::wire_len`].
    pub wire_len: u32,
    /// Everything else the kernel said (hook, process, socket ids): shared
    /// by the consecutive packets of a socket, so its `ts_ns`, `wire_len`
    /// and `node` are not this packet's (the fields beside it are).
    pub facts: &'a PacketInfo,
    /// As [`PacketRecord::node`].
    pub node: Option<&'a Arc<str>>,
    /// As [`PacketRecord::data`].
    pub data: &'a [u8],
    /// What `data` lies in, when it can be shared instead of copied.
    pub owner: Option<&'a Bytes>,
}

impl PacketRef<'_> {
    /// The packet's facts, owned (the names are shared).
    #[must_use]
    #[inline]
    pub fn info(&self) -> PacketInfo {
        let f = self.facts;
        PacketInfo {
            ts_ns: self.ts_ns,
            hook: f.hook,
            process: f.process.clone(),
            cgroup_id: f.cgroup_id,
            netns_cookie: f.netns_cookie,
            netns_ino: f.netns_ino,
            ifindex: f.ifindex,
            wire_len: self.wire_len,
            node: self.node.cloned(),
        }
    }

    /// The owned record: the bytes shared with their owner, or copied.
    #[must_use]
    pub fn to_record(&self) -> PacketRecord {
        let f = self.facts;
        PacketRecord {
            ts_ns: self.ts_ns,
            hook: f.hook,
            process: f.process.clone(),
            cgroup_id: f.cgroup_id,
            netns_cookie: f.netns_cookie,
            netns_ino: f.netns_ino,
            ifindex: f.ifindex,
            wire_len: self.wire_len,
            data: match self.owner {
                Some(b) => b.slice_ref(self.data),
                None => Bytes::copy_from_slice(self.data),
            },
            node: self.node.cloned(),
        }
    }
}

/// What the kernel told us about a packet, without the packet: what a
/// decoded DNS message keeps of the record it came in. The bytes are decoded
/// where they lie (ring item, mapped capture) and not kept, so a message
/// costs no shared record and no copy of its packet. Fields as in
/// [`PacketRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// `CLOCK_MONOTONIC` nanoseconds on the observing node.
    pub ts_ns: u64,
    /// Observation point.
    pub hook: Hook,
    /// Sender process, when observed in its context.
    pub process: Option<Process>,
    /// cgroup v2 id of the socket; 0 if unknown.
    pub cgroup_id: u64,
    /// Network namespace cookie; 0 if unknown.
    pub netns_cookie: u64,
    /// Network namespace inode; 0 if unknown.
    pub netns_ino: u32,
    /// Interface index in the packet's namespace; 0 if unknown.
    pub ifindex: u32,
    /// Length on the wire.
    pub wire_len: u32,
    /// Name of the node that observed it.
    pub node: Option<Arc<str>>,
}

/// The socket a packet was observed at, as the kernel named it: what finds
/// the pod that owns it ([`crate::enrich::Enricher::local_pod`]).
pub trait SocketIds {
    /// cgroup v2 id of the socket (0 if unknown).
    fn cgroup_id(&self) -> u64;
    /// Network namespace inode (0 if unknown).
    fn netns_ino(&self) -> u32;
}

impl SocketIds for PacketRecord {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
    fn netns_ino(&self) -> u32 {
        self.netns_ino
    }
}

impl SocketIds for PacketInfo {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
    fn netns_ino(&self) -> u32 {
        self.netns_ino
    }
}

impl PacketInfo {
    /// A packet known only by its time and hook (tests, synthetic events).
    #[must_use]
    pub const fn bare(ts_ns: u64, hook: Hook) -> Self {
        Self {
            ts_ns,
            hook,
            process: None,
            cgroup_id: 0,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 0,
            wire_len: 0,
            node: None,
        }
    }
}

/// Anything that is not a packet and that a source can carry.
#[derive(Clone, Debug)]
pub enum Record {
    /// A packet (DNS for now).
    Packet(PacketRecord),
    /// Kernel events lost (ring buffer full, writer too slow) up to `ts_ns`.
    Lost {
        /// When the loss was noticed.
        ts_ns: u64,
        /// How many events were lost since the previous `Lost` record.
        count: u64,
        /// Node it happened on.
        node: Option<Arc<str>>,
    },
    /// What a process's resolver was configured with (resolv.conf evidence).
    ResolvConf(ResolvConfEvidence),
    /// The kernel freed a packet with a drop reason (`skb:kfree_skb`).
    Drop(DropRecord),
    /// A TCP connection event (state change, reset, retransmit).
    Conn(ConnRecord),
}

impl Record {
    /// Monotonic timestamp used to order records.
    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Packet(p) => p.ts_ns,
            Self::Lost { ts_ns, .. } => *ts_ns,
            Self::ResolvConf(r) => r.ts_ns,
            Self::Drop(d) => d.ts_ns,
            Self::Conn(c) => c.ts_ns,
        }
    }
}

/// The resolv.conf a process really used, read from `/proc/PID/root/etc/resolv.conf`
/// (or a netns-specific file) when its first DNS query was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvConfEvidence {
    /// When it was read.
    pub ts_ns: u64,
    /// Whose it is.
    pub pid: u32,
    /// Network namespace inode of that process (0 if unknown).
    pub netns_ino: u32,
    /// Where it was read from.
    pub path: String,
    /// The file's text; None when it could not be read (`error` says why).
    pub text: Option<String>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// A transport endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// L4 protocol of a DNS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (two-byte length framing).
    Tcp,
}

/// A packet the kernel dropped, with its reason (`skb:kfree_skb`, kernel >= 5.17
/// for reasons; names from the running kernel's BTF `enum skb_drop_reason`).
#[derive(Clone, Debug)]
pub struct DropRecord {
    /// Monotonic ns (wall clock after replay conversion).
    pub ts_ns: u64,
    /// Raw `skb_drop_reason` value (subsystem in the high 16 bits since 6.4).
    pub reason: u32,
    /// Its name without the `SKB_DROP_REASON_` prefix, e.g. `NETFILTER_DROP`.
    pub reason_name: Arc<str>,
    /// Kernel text address where it was freed (`location`), for `--verbose`.
    pub location: u64,
    /// Interface index of `skb->dev` (0 if none).
    pub ifindex: u32,
    /// Network namespace inode of `skb->dev` (0 if unknown).
    pub netns_ino: u32,
    /// `skb->len`.
    pub wire_len: u32,
    /// Packet bytes from the network header on (IPv4/IPv6), bounded (128 bytes).
    pub data: Bytes,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
    /// Process context, if the drop happened in one (often softirq: None).
    pub process: Option<Process>,
    /// Drops this record stands for (at least 1): the kernel counts repeats
    /// of a drop within a short window and sends them with one record.
    pub count: u32,
}

/// What happened to a TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnKind {
    /// `inet_sock_set_state`: `old` → `new` (TCP_* state numbers, e.g. 2 = `SYN_SENT`, 7 = CLOSE).
    State {
        /// Previous state.
        old: u8,
        /// New state.
        new: u8,
    },
    /// `tcp_receive_reset`: an RST arrived; `state` is the socket's state then.
    ResetReceived {
        /// TCP state.
        state: u8,
    },
    /// `tcp_send_reset`: we sent an RST.
    ResetSent {
        /// TCP state.
        state: u8,
    },
    /// `tcp_retransmit_skb` in `state` (`SYN_SENT` = a SYN retransmit).
    Retransmit {
        /// TCP state.
        state: u8,
    },
}

/// TCP state numbers as the kernel uses them (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// Connected.
    pub const ESTABLISHED: u8 = 1;
    /// `connect()` sent a SYN.
    pub const SYN_SENT: u8 = 2;
    /// Received a SYN.
    pub const SYN_RECV: u8 = 3;
    /// Closed.
    pub const CLOSE: u8 = 7;
    /// Listening.
    pub const LISTEN: u8 = 10;
}

/// A TCP connection event.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    /// Monotonic ns (wall clock after replay conversion).
    pub ts_ns: u64,
    /// What happened.
    pub kind: ConnKind,
    /// Local endpoint.
    pub src: Endpoint,
    /// Remote endpoint.
    pub dst: Endpoint,
    /// Opaque socket identity (kernel address) to join events of one socket.
    pub sock: u64,
    /// Process, when the event ran in its context (`connect()`: yes; RST in softirq: no).
    pub process: Option<Process>,
    /// Network namespace inode of the current task when in process context (0 otherwise).
    pub netns_ino: u32,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
}
