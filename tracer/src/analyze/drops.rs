//! `ktrace drops`: kernel drops, failed TCP connects, and packets lost
//! between nodes.
//!
//! One pass over time-ordered records (several nodes' captures merged by
//! time, each node on its own clock):
//! - [`Record::Drop`] (`skb:kfree_skb`) → [`DropRow`]s aggregated by node,
//!   reason, pods (the inner packet's, for VXLAN) and port.
//! - [`Record::Conn`] (`inet_sock_set_state`, resets, retransmits) →
//!   [`ConnFail`]s, classified per socket (refused, timeout, reset).
//! - tc egress/ingress [`Record::Packet`]s on each node's underlay interface →
//!   [`FabricLoss`]: a packet that left node A for node B's address, was
//!   never seen arriving at B while B was being observed, and was dropped by
//!   no kernel on the way, was lost in the network between them. VXLAN
//!   packets leaving from an address that is not the node's →
//!   [`OverlayWrongSource`].
//!
//! Correlation uses a 64-bit fingerprint of the headers that survive the
//! trip (outer addresses, protocol, ports, IP id, and the inner packet's
//! addresses, ports, IP id and TCP sequence), never TTL, checksums or
//! lengths (GSO super-packets are split on the way, the first segment keeps
//! the id and sequence). An egress waits `match_after_ns` for its ingress; an
//! ingress stamped before its egress (the receiver's clock behind) waits
//! `match_before_ns` for it. Memory is bounded by the configured caps; every
//! eviction is counted in [`DropStats`].

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    hash::{BuildHasherDefault, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use serde::{Serialize, Serializer};

use crate::{
    enrich::{Enricher, PodRef},
    event::{ConnKind, ConnRecord, DropRecord, Endpoint, Hook, PacketRecord, Record, tcp_state},
};

const MS: u64 = 1_000_000;
/// How often (in record time) expiry runs: often enough that the pending
/// maps stay near their natural size, rare enough to cost nothing.
const TICK_NS: u64 = 50 * MS;
/// Nodes tracked; records of further nodes are treated as node-less.
const MAX_NODES: usize = 1024;
/// Samples kept per drop row.
const MAX_SAMPLES: usize = 3;
/// Learned address → node entries.
const MAX_LEARNED: usize = 65_536;
/// `Lost` marks remembered per node (oldest forgotten first).
const MAX_LOST_MARKS: usize = 4096;
/// Distinct wrong-source overlay rows.
const MAX_OVERLAY_ROWS: usize = 1024;
/// Distinct delivered paths counted for the "partial loss" hint.
const MAX_PATHS: usize = 65_536;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;
const NO_NODE: u16 = u16::MAX;

/// Limits and timing of the [`DropAnalyzer`].
#[derive(Clone, Debug)]
pub struct DropConfig {
    /// How much earlier than its egress an ingress may be stamped (receiver's
    /// clock behind the sender's).
    pub match_before_ns: u64,
    /// How much later than its egress an ingress may be stamped (latency plus
    /// the receiver's clock ahead); also the "in flight at capture end" span.
    pub match_after_ns: u64,
    /// How far out of time order merged records may arrive.
    pub reorder_slack_ns: u64,
    /// Most egress fingerprints waiting for their ingress (oldest evicted).
    pub max_pending: usize,
    /// Most TCP sockets tracked (oldest evicted).
    pub max_sockets: usize,
    /// Most aggregation rows of each kind (new keys beyond are counted, not kept).
    pub max_rows: usize,
    /// Most unmatched egress packets waiting for the receiver's capture to
    /// pass their window before they are judged.
    pub max_undecided: usize,
    /// UDP destination ports carrying VXLAN (IANA 4789, flannel's old 8472).
    pub vxlan_ports: Vec<u16>,
}

impl Default for DropConfig {
    fn default() -> Self {
        Self {
            match_before_ns: 100 * MS,
            match_after_ns: 1000 * MS,
            reorder_slack_ns: 200 * MS,
            max_pending: 1 << 20,
            max_sockets: 65_536,
            max_rows: 10_000,
            max_undecided: 1 << 18,
            vxlan_ports: vec![4789, 8472],
        }
    }
}

// ---------------------------------------------------------------------------
// Output types (JSON field names are a public contract: add, never rename).

/// A transport 5-tuple, e.g. the packet inside a VXLAN packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp`, ….
    pub proto: &'static str,
    /// Source port (0 when the protocol has none).
    pub sport: u16,
    /// Destination port (0 when the protocol has none).
    pub dport: u16,
}

/// Kernel drops aggregated by (node, reason, source, destination, protocol,
/// destination port). For VXLAN, `src`..`dport` and the pods are the inner
/// packet's (which pods are affected); the outer header is in `outer_*`.
#[derive(Clone, Debug, Serialize)]
pub struct DropRow {
    /// Drop reason name without `SKB_DROP_REASON_` (`NETFILTER_DROP`, `NO_SOCKET`, …).
    pub reason: Arc<str>,
    /// Packets dropped.
    pub count: u64,
    /// Source address of the (inner) packet; None when not IP.
    pub src: Option<IpAddr>,
    /// Destination address of the (inner) packet.
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, … of the (inner) packet.
    pub proto: Option<&'static str>,
    /// Source port of the first sample.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Source pod, `namespace/name`.
    pub src_pod: Option<String>,
    /// Destination pod, `namespace/name`.
    pub dst_pod: Option<String>,
    /// Node that dropped it.
    pub node: Option<Arc<str>>,
    /// Interface index of `skb->dev` (first sample; 0 if none).
    pub ifindex: u32,
    /// Interface name, when the caller can resolve `ifindex` (None here).
    pub dev: Option<String>,
    /// Network namespace inode where it was dropped (first sample).
    pub netns: u32,
    /// Pod owning that network namespace.
    pub netns_pod: Option<String>,
    /// First drop.
    pub first_ts_ns: u64,
    /// Last drop.
    pub last_ts_ns: u64,
    /// Up to three packets, one line each.
    pub samples: Vec<String>,
    /// The encapsulated packet (VXLAN only).
    pub inner: Option<FlowTuple>,
    /// Outer (underlay) source address (VXLAN only).
    pub outer_src: Option<IpAddr>,
    /// Outer destination address (VXLAN only).
    pub outer_dst: Option<IpAddr>,
    /// Outer protocol (VXLAN only: `udp`).
    pub outer_proto: Option<&'static str>,
    /// Outer destination port (VXLAN only: 4789).
    pub outer_dport: Option<u16>,
    /// Involves no pod and no node address (host-local noise): hidden by default.
    pub background: bool,
}

/// How a TCP connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnFailKind {
    /// The connect got an RST (nothing listening, or a firewall reject).
    Refused,
    /// The connect's SYNs went unanswered until it gave up (or the capture ended).
    Timeout,
    /// An established connection received an RST.
    Reset,
}

/// A process, briefly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessBrief {
    /// Thread-group id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
}

/// Failed TCP connections aggregated by (kind, source pod or address,
/// destination, process name).
#[derive(Clone, Debug, Serialize)]
pub struct ConnFail {
    /// refused | timeout | reset.
    pub kind: ConnFailKind,
    /// Local address.
    pub src: IpAddr,
    /// Remote endpoint, `ip:port`.
    #[serde(serialize_with = "display")]
    pub dst: Endpoint,
    /// Local pod (by network namespace, else address), `namespace/name`.
    pub src_pod: Option<String>,
    /// Remote pod, `namespace/name`.
    pub dst_pod: Option<String>,
    /// The process that called connect() (first of the row).
    pub process: Option<ProcessBrief>,
    /// Connections.
    pub count: u64,
    /// SYN retransmissions over all of them.
    pub syn_retransmits: u64,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
    /// First failure.
    pub first_ts_ns: u64,
    /// Last failure.
    pub last_ts_ns: u64,
    /// Still in SYN_SENT, with SYN retransmits, when the input ended.
    pub pending: bool,
}

/// Packets that left one node towards another and never arrived, with no
/// kernel drop on either node: lost in the network between them.
#[derive(Clone, Debug, Serialize)]
pub struct FabricLoss {
    /// Sending node.
    pub from_node: Arc<str>,
    /// Node the outer destination address belongs to.
    pub to_node: Arc<str>,
    /// Packets lost.
    pub packets: u64,
    /// Packets on the same path (nodes, protocol, port) that did arrive.
    pub delivered: u64,
    /// Outer protocol (`udp` for VXLAN).
    pub proto: &'static str,
    /// Outer destination port (4789 for VXLAN).
    pub dport: u16,
    /// Outer source address (first packet).
    pub outer_src: IpAddr,
    /// Outer destination address.
    pub outer_dst: IpAddr,
    /// `vxlan` when encapsulated.
    pub encapsulation: Option<&'static str>,
    /// Innermost packet's source address (the packet itself when not encapsulated).
    pub inner_src: IpAddr,
    /// Innermost packet's destination address.
    pub inner_dst: IpAddr,
    /// Innermost source pod, `namespace/name`.
    pub inner_src_pod: Option<String>,
    /// Innermost destination pod, `namespace/name`.
    pub inner_dst_pod: Option<String>,
    /// Innermost protocol.
    pub inner_proto: &'static str,
    /// Innermost destination port (first packet).
    pub inner_dport: u16,
    /// First lost packet (sender's clock).
    pub first_ts_ns: u64,
    /// Last lost packet.
    pub last_ts_ns: u64,
    /// What happened, in a sentence.
    pub cause: String,
    /// What to check.
    pub advice: Vec<String>,
}

/// VXLAN leaving a node from an address that is not one of the node's
/// (flannel or Calico bound to the wrong interface).
#[derive(Clone, Debug, Serialize)]
pub struct OverlayWrongSource {
    /// The sending node.
    pub node: Arc<str>,
    /// The outer source address it used.
    pub outer_src: IpAddr,
    /// Its addresses according to the cluster metadata.
    pub expected: Vec<IpAddr>,
    /// Outer destination (first packet).
    pub outer_dst: IpAddr,
    /// Node of the outer destination, if known.
    pub to_node: Option<Arc<str>>,
    /// UDP port.
    pub dport: u16,
    /// Packets.
    pub packets: u64,
    /// First packet.
    pub first_ts_ns: u64,
    /// Last packet.
    pub last_ts_ns: u64,
    /// What happened, in a sentence.
    pub cause: String,
    /// What to check.
    pub advice: Vec<String>,
}

/// A finding of the drop analysis (`type:"finding"` in JSON).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DropFinding {
    /// Lost between nodes.
    FabricLoss(FabricLoss),
    /// Overlay traffic from the wrong address.
    OverlayWrongSource(OverlayWrongSource),
}

/// Everything [`DropAnalyzer::finish`] found, most frequent first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DropReport {
    /// Kernel drops.
    pub drops: Vec<DropRow>,
    /// Failed connections.
    pub conn_fails: Vec<ConnFail>,
    /// Fabric losses and overlay findings.
    pub findings: Vec<DropFinding>,
}

/// Counters of the analysis itself (what was seen, what was given up on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropStats {
    /// Underlay (tc) packets seen.
    pub packets: u64,
    /// Underlay packets whose headers could not be read.
    pub unparsed: u64,
    /// Egress packets whose ingress was found on another node.
    pub matched: u64,
    /// Egress fingerprints waiting for their ingress now.
    pub pending: u64,
    /// Ingress fingerprints waiting for a late-stamped egress now.
    pub pending_ingress: u64,
    /// Unmatched egress packets waiting for the receiver's capture to cover them.
    pub undecided: u64,
    /// Fingerprints and undecided packets evicted by the caps (never judged).
    pub evicted: u64,
    /// Unmatched, sent less than `match_after_ns` before the receiver's capture ended.
    pub in_flight: u64,
    /// Unmatched, towards an address no observed node owns (not judged).
    pub unresolved: u64,
    /// Unmatched, towards a node not observed at the time.
    pub not_observed: u64,
    /// Unmatched, but a kernel dropped the same packet (reported as a drop).
    pub kernel_dropped: u64,
    /// Unmatched, but a node lost trace events then (not judged).
    pub suppressed_lost: u64,
    /// Kernel drop records.
    pub drops: u64,
    /// TCP connection events.
    pub conn_events: u64,
    /// Sockets tracked now.
    pub sockets: u64,
    /// Sockets evicted by the cap.
    pub sockets_evicted: u64,
    /// connect()s closed in SYN_SENT without reset or retransmit (aborted by the caller).
    pub connects_aborted: u64,
    /// New aggregation keys refused by `max_rows`.
    pub rows_dropped: u64,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Name of an IP protocol number.
#[must_use]
pub fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_ICMP => "icmp",
        2 => "igmp",
        4 => "ipip",
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        41 => "ipv6",
        47 => "gre",
        50 => "esp",
        PROTO_ICMPV6 => "icmpv6",
        PROTO_SCTP => "sctp",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------
// Hashing: fingerprints are already well mixed, so maps keyed by them use a
// cheap multiply-rotate hasher instead of SipHash.

#[derive(Clone, Copy, Default)]
struct FastHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(c) {
                *d = *s;
            }
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type FastMap<Key, V> = HashMap<Key, V, BuildHasherDefault<FastHasher>>;

fn ip_words(ip: IpAddr) -> (u64, u64) {
    match ip {
        IpAddr::V4(a) => (u64::from(u32::from(a)), 4),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            ((b >> 64) as u64, b as u64)
        }
    }
}

// ---------------------------------------------------------------------------
// Header parsing. Own, truncation-tolerant parser instead of
// `decode::packet::parse`: kernel drops carry at most 128 bytes, so a VXLAN
// packet's inner TCP options are often cut, and ICMP/other protocols must
// still yield addresses.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct L3L4 {
    t: Tuple,
    /// IPv4 id, or the IPv6 fragment header's low 16 bits.
    id: u16,
    /// TCP sequence; ICMP bytes 4..8 (echo id and sequence).
    seq: u32,
    tcp_flags: u8,
    /// ICMP type << 8 | code.
    icmp: u16,
}

impl L3L4 {
    fn feed(&self, h: &mut FastHasher) {
        let (a, b) = ip_words(self.t.src);
        let (c, d) = ip_words(self.t.dst);
        h.write_u64(a);
        h.write_u64(b);
        h.write_u64(c);
        h.write_u64(d);
        h.write_u64(
            u64::from(self.t.proto)
                | u64::from(self.t.sport) << 8
                | u64::from(self.t.dport) << 24
                | u64::from(self.id) << 40,
        );
        h.write_u64(u64::from(self.seq) | u64::from(self.icmp) << 32);
    }

    fn flow(&self) -> FlowTuple {
        FlowTuple {
            src: self.t.src,
            dst: self.t.dst,
            proto: proto_name(self.t.proto),
            sport: self.t.sport,
            dport: self.t.dport,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Headers {
    outer: L3L4,
    /// The packet inside a VXLAN packet.
    inner: Option<L3L4>,
}

impl Headers {
    fn innermost(&self) -> &L3L4 {
        self.inner.as_ref().unwrap_or(&self.outer)
    }

    /// Identity of the whole packet as it crosses the fabric.
    fn fingerprint(&self) -> u64 {
        let mut h = FastHasher(0x5151);
        self.outer.feed(&mut h);
        if let Some(i) = &self.inner {
            i.feed(&mut h);
        }
        h.finish()
    }

    /// Identity of the innermost packet: what a kernel drop after
    /// decapsulation carries.
    fn key(&self) -> u64 {
        let mut h = FastHasher(0x7777);
        self.innermost().feed(&mut h);
        h.finish()
    }
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    match d.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    match d.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, e]) => Some(u32::from_be_bytes([a, b, c, e])),
        _ => None,
    }
}

/// Parses IP + transport header fields; returns them and the UDP payload.
fn parse_l3l4(d: &[u8]) -> Option<(L3L4, &[u8])> {
    let (src, dst, proto, id, l4, nonfirst) = match d.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = d.get(..20)?.try_into().ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // Total length 0 (TSO super-packets): trust the capture.
            let end = if total < ihl { d.len() } else { total.min(d.len()) };
            let frag = u16::from_be_bytes([h[6], h[7]]);
            (
                IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                h[9],
                u16::from_be_bytes([h[4], h[5]]),
                d.get(ihl..end).unwrap_or(&[]),
                frag & 0x1fff != 0,
            )
        }
        6 => {
            let h: &[u8; 40] = d.get(..40)?.try_into().ok()?;
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut t = [0u8; 16];
            t.copy_from_slice(&h[24..40]);
            let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let end = if plen == 0 { d.len() } else { (40 + plen).min(d.len()) };
            let mut next = h[6];
            let mut off = 40usize;
            let mut id = 0u16;
            let mut nonfirst = false;
            // Bounded walk: real stacks send one or two extension headers.
            for _ in 0..8 {
                let len = match next {
                    0 | 43 | 60 => (usize::from(*d.get(off + 1)?) + 1) * 8,
                    44 => {
                        nonfirst = be16(d, off + 2)? & 0xfff8 != 0;
                        id = be16(d, off + 6)?;
                        8
                    }
                    51 => (usize::from(*d.get(off + 1)?) + 2) * 4,
                    _ => break,
                };
                next = *d.get(off)?;
                off += len;
            }
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(t)),
                next,
                id,
                d.get(off..end).unwrap_or(&[]),
                nonfirst,
            )
        }
        _ => return None,
    };
    let mut l = L3L4 { t: Tuple { src, dst, proto, sport: 0, dport: 0 }, id, seq: 0, tcp_flags: 0, icmp: 0 };
    let mut payload: &[u8] = &[];
    if !nonfirst {
        match proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                if let (Some(sp), Some(dp)) = (be16(l4, 0), be16(l4, 2)) {
                    l.t.sport = sp;
                    l.t.dport = dp;
                }
                if proto == PROTO_TCP {
                    l.seq = be32(l4, 4).unwrap_or(0);
                    l.tcp_flags = l4.get(13).copied().unwrap_or(0);
                } else if proto == PROTO_UDP {
                    payload = l4.get(8..).unwrap_or(&[]);
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                l.icmp = be16(l4, 0).unwrap_or(0);
                l.seq = be32(l4, 4).unwrap_or(0);
            }
            _ => {}
        }
    }
    Some((l, payload))
}

/// The packet inside a VXLAN UDP payload (flags with the I bit, then Ethernet).
fn vxlan_inner(p: &[u8]) -> Option<L3L4> {
    if p.first()? & 0x08 == 0 {
        return None;
    }
    let eth = p.get(8..)?;
    let mut et = be16(eth, 12)?;
    let mut off = 14;
    if et == 0x8100 || et == 0x88a8 {
        et = be16(eth, 16)?;
        off = 18;
    }
    if et != 0x0800 && et != 0x86dd {
        return None;
    }
    parse_l3l4(eth.get(off..)?).map(|(l, _)| l)
}

fn parse_headers(data: &[u8], vxlan_ports: &[u16]) -> Option<Headers> {
    let (outer, payload) = parse_l3l4(data)?;
    let inner =
        if outer.t.proto == PROTO_UDP && vxlan_ports.contains(&outer.t.dport) { vxlan_inner(payload) } else { None };
    Some(Headers { outer, inner })
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified() || a.octets()[3] == 255),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}

fn tcp_flags_str(f: u8) -> String {
    let mut s = String::with_capacity(6);
    for (bit, c) in [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P'), (0x10, '.')] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn describe_l(l: &L3L4) -> String {
    let ep = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    match l.t.proto {
        PROTO_TCP => format!("tcp {} > {} [{}]", ep(l.t.src, l.t.sport), ep(l.t.dst, l.t.dport), tcp_flags_str(l.tcp_flags)),
        PROTO_UDP | PROTO_SCTP => {
            format!("{} {} > {}", proto_name(l.t.proto), ep(l.t.src, l.t.sport), ep(l.t.dst, l.t.dport))
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            format!("{} {} > {} type {} code {}", proto_name(l.t.proto), l.t.src, l.t.dst, l.icmp >> 8, l.icmp & 0xff)
        }
        p => format!("proto {p} {} > {}", l.t.src, l.t.dst),
    }
}

fn describe(h: &Headers) -> String {
    match &h.inner {
        Some(i) => format!(
            "{} in vxlan {} > {}:{}",
            describe_l(i),
            h.outer.t.src,
            h.outer.t.dst,
            h.outer.t.dport
        ),
        None => describe_l(&h.outer),
    }
}

// ---------------------------------------------------------------------------
// Analyzer state.

/// Who a side of a flow is, for aggregation: the pod, else the address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Pod(PodRef),
    Ip(IpAddr),
    Unknown,
}

fn who(enr: &Enricher, ip: Option<IpAddr>) -> Who {
    match ip {
        Some(ip) => enr.pod_by_ip(&ip).map_or(Who::Ip(ip), Who::Pod),
        None => Who::Unknown,
    }
}

fn pod_string(w: &Who) -> Option<String> {
    match w {
        Who::Pod(p) => Some(p.to_string()),
        _ => None,
    }
}

struct NodeState {
    name: Arc<str>,
    first_ts: u64,
    last_ts: u64,
    /// Timestamps of `Lost` records (trace events lost: absence proves nothing then).
    lost: VecDeque<u64>,
    /// The node's addresses according to the metadata (refreshed each tick).
    expected: Vec<IpAddr>,
}

#[derive(Clone, Copy)]
struct Pending {
    first_ts: u64,
    last_ts: u64,
    count: u32,
    node: u16,
    wire_len: u32,
    key: u64,
    hdr: Headers,
}

#[derive(Clone, Copy)]
struct EarlyIngress {
    ts: u64,
    count: u32,
    node: u16,
}

#[derive(Hash, PartialEq, Eq)]
struct LossKey {
    from: u16,
    to: u16,
    proto: u8,
    dport: u16,
    src: Who,
    dst: Who,
}

struct LossAgg {
    packets: u64,
    first_ts: u64,
    last_ts: u64,
    min_len: u32,
    hdr: Headers,
}

/// Delivered packets per (from, to, proto, dport): count and largest size.
type PathKey = (u16, u16, u8, u16);

#[derive(Hash, PartialEq, Eq)]
struct DropKey {
    node: u16,
    reason: Arc<str>,
    src: Who,
    dst: Who,
    l4: Option<(u8, u16)>,
    outer: Option<(u8, u16)>,
}

struct DropAgg {
    count: u64,
    first_ts: u64,
    last_ts: u64,
    hdr: Option<Headers>,
    ifindex: u32,
    netns: u32,
    netns_pod: Option<PodRef>,
    samples: Vec<String>,
    background: bool,
}

struct Sock {
    src: Endpoint,
    dst: Endpoint,
    process: Option<ProcessBrief>,
    netns: u32,
    node: u16,
    start_ts: u64,
    state: u8,
    syn_retx: u32,
    reset_in_syn: bool,
    reset_reported: bool,
}

#[derive(Hash, PartialEq, Eq)]
struct ConnKey {
    kind: ConnFailKind,
    src: Who,
    dst: Endpoint,
    comm: Option<String>,
    pending: bool,
}

struct ConnAgg {
    src: IpAddr,
    dst_pod: Option<PodRef>,
    process: Option<ProcessBrief>,
    count: u64,
    syn_retx: u64,
    node: u16,
    first_ts: u64,
    last_ts: u64,
}

struct OverlayAgg {
    dst: IpAddr,
    dport: u16,
    packets: u64,
    first_ts: u64,
    last_ts: u64,
}

/// Kernel drops, failed connections and cross-node loss from time-ordered
/// records. Feed every record with [`Self::push`], then call [`Self::finish`].
pub struct DropAnalyzer {
    cfg: DropConfig,
    now: u64,
    next_tick: u64,
    nodes: Vec<NodeState>,
    node_idx: HashMap<Arc<str>, u16>,
    last_node: Option<(Arc<str>, u16)>,
    /// Underlay addresses seen in use by each node (egress source, ingress destination).
    learned: FastMap<IpAddr, u16>,
    pending: FastMap<u64, Pending>,
    pending_q: VecDeque<(u64, u64)>,
    early: FastMap<u64, EarlyIngress>,
    early_q: VecDeque<(u64, u64)>,
    /// Fingerprints and inner keys of kernel-dropped packets, with their time.
    dropped: FastMap<u64, u64>,
    dropped_q: VecDeque<(u64, u64)>,
    /// Unmatched egress waiting for the receiver's capture to pass its window.
    undecided: Vec<(Pending, u16)>,
    delivered: FastMap<PathKey, (u64, u32)>,
    losses: HashMap<LossKey, LossAgg>,
    drops: HashMap<DropKey, DropAgg>,
    socks: HashMap<(u16, u64), Sock>,
    socks_q: VecDeque<((u16, u64), u64)>,
    conns: HashMap<ConnKey, ConnAgg>,
    overlay: HashMap<(u16, IpAddr), OverlayAgg>,
    stats: DropStats,
}

impl DropAnalyzer {
    /// An analyzer with these limits.
    #[must_use]
    pub fn new(cfg: DropConfig) -> Self {
        Self {
            cfg,
            now: 0,
            next_tick: 0,
            nodes: Vec::new(),
            node_idx: HashMap::new(),
            last_node: None,
            learned: FastMap::default(),
            pending: FastMap::default(),
            pending_q: VecDeque::new(),
            early: FastMap::default(),
            early_q: VecDeque::new(),
            dropped: FastMap::default(),
            dropped_q: VecDeque::new(),
            undecided: Vec::new(),
            delivered: FastMap::default(),
            losses: HashMap::new(),
            drops: HashMap::new(),
            socks: HashMap::new(),
            socks_q: VecDeque::new(),
            conns: HashMap::new(),
            overlay: HashMap::new(),
            stats: DropStats::default(),
        }
    }

    /// Counters so far (pending sizes are current).
    #[must_use]
    pub fn stats(&self) -> DropStats {
        DropStats {
            pending: self.pending.len() as u64,
            pending_ingress: self.early.len() as u64,
            undecided: self.undecided.len() as u64,
            sockets: self.socks.len() as u64,
            ..self.stats
        }
    }

    fn node(&mut self, name: Option<&Arc<str>>, enr: &Enricher) -> u16 {
        let Some(name) = name else { return NO_NODE };
        if let Some((last, i)) = &self.last_node
            && (Arc::ptr_eq(last, name) || **last == **name)
        {
            return *i;
        }
        let i = if let Some(i) = self.node_idx.get(&**name) {
            *i
        } else {
            if self.nodes.len() >= MAX_NODES {
                return NO_NODE;
            }
            let i = self.nodes.len() as u16;
            self.nodes.push(NodeState {
                name: name.clone(),
                first_ts: u64::MAX,
                last_ts: 0,
                lost: VecDeque::new(),
                expected: enr.node_addresses(name),
            });
            self.node_idx.insert(name.clone(), i);
            i
        };
        self.last_node = Some((name.clone(), i));
        i
    }

    fn node_name(&self, i: u16) -> Option<Arc<str>> {
        self.nodes.get(usize::from(i)).map(|n| n.name.clone())
    }

    /// Feeds one record (records must come in time order, give or take
    /// `reorder_slack_ns`).
    pub fn push(&mut self, rec: &Record, enr: &Enricher) {
        let ts = rec.ts_ns();
        self.now = self.now.max(ts);
        let node_name = match rec {
            Record::Packet(p) => p.node.as_ref(),
            Record::Drop(d) => d.node.as_ref(),
            Record::Conn(c) => c.node.as_ref(),
            Record::Lost { node, .. } => node.as_ref(),
            Record::ResolvConf(_) => None,
        };
        let node = self.node(node_name, enr);
        if let Some(n) = self.nodes.get_mut(usize::from(node)) {
            n.first_ts = n.first_ts.min(ts);
            n.last_ts = n.last_ts.max(ts);
        }
        match rec {
            Record::Packet(p) if matches!(p.hook, Hook::TcEgress | Hook::TcIngress) => self.packet(p, node, enr),
            Record::Drop(d) => self.drop_record(d, node, enr),
            Record::Conn(c) => self.conn(c, node, enr),
            Record::Lost { ts_ns, .. } => {
                if let Some(n) = self.nodes.get_mut(usize::from(node)) {
                    if n.lost.len() >= MAX_LOST_MARKS {
                        n.lost.pop_front();
                    }
                    n.lost.push_back(*ts_ns);
                }
            }
            _ => {}
        }
        if self.now >= self.next_tick {
            self.next_tick = self.now.saturating_add(TICK_NS);
            self.maintain(enr);
        }
    }

    // -- underlay correlation ------------------------------------------------

    fn learn(&mut self, ip: IpAddr, node: u16) {
        if !is_unicast(ip) || self.learned.len() >= MAX_LEARNED {
            return;
        }
        self.learned.entry(ip).or_insert(node);
    }

    fn packet(&mut self, p: &PacketRecord, node: u16, enr: &Enricher) {
        self.stats.packets += 1;
        let Some(hdr) = parse_headers(&p.data, &self.cfg.vxlan_ports) else {
            self.stats.unparsed += 1;
            return;
        };
        if node == NO_NODE {
            return;
        }
        let fp = hdr.fingerprint();
        let ts = p.ts_ns;
        if p.hook == Hook::TcEgress {
            self.learn(hdr.outer.t.src, node);
            if hdr.inner.is_some() {
                self.check_overlay_source(&hdr, node, ts, enr);
            }
            if !is_unicast(hdr.outer.t.dst) {
                return;
            }
            if let Some(e) = self.early.get_mut(&fp)
                && e.node != node
                && e.ts.saturating_add(self.cfg.match_before_ns) >= ts
            {
                let to = e.node;
                e.count -= 1;
                if e.count == 0 {
                    self.early.remove(&fp);
                }
                self.delivered_path(node, to, &hdr, p.wire_len);
                return;
            }
            if let Some(e) = self.pending.get_mut(&fp) {
                if e.node == node {
                    // The same packet again (retransmit with IP id 0, or a
                    // duplicate): wait for one more arrival.
                    e.count = e.count.saturating_add(1);
                    e.last_ts = ts;
                    self.pending_q.push_back((ts, fp));
                    return;
                }
            }
            if self.pending.len() >= self.cfg.max_pending {
                self.evict_pending();
            }
            self.pending.insert(
                fp,
                Pending { first_ts: ts, last_ts: ts, count: 1, node, wire_len: p.wire_len, key: hdr.key(), hdr },
            );
            self.pending_q.push_back((ts, fp));
            if self.pending_q.len() > self.cfg.max_pending.saturating_mul(2) {
                self.evict_pending();
            }
        } else {
            if is_unicast(hdr.outer.t.dst) {
                self.learn(hdr.outer.t.dst, node);
            }
            if let Some(e) = self.pending.get_mut(&fp)
                && e.node != node
                && ts <= e.last_ts.saturating_add(self.cfg.match_after_ns)
            {
                let from = e.node;
                e.count -= 1;
                if e.count == 0 {
                    self.pending.remove(&fp);
                }
                self.delivered_path(from, node, &hdr, p.wire_len);
                return;
            }
            match self.early.get_mut(&fp) {
                Some(e) if e.node == node => {
                    e.count = e.count.saturating_add(1);
                    e.ts = ts;
                }
                _ => {
                    if self.early.len() >= self.cfg.max_pending {
                        self.evict_early();
                    }
                    self.early.insert(fp, EarlyIngress { ts, count: 1, node });
                }
            }
            self.early_q.push_back((ts, fp));
            if self.early_q.len() > self.cfg.max_pending.saturating_mul(2) {
                self.evict_early();
            }
        }
    }

    fn delivered_path(&mut self, from: u16, to: u16, hdr: &Headers, wire_len: u32) {
        self.stats.matched += 1;
        let key = (from, to, hdr.outer.t.proto, hdr.outer.t.dport);
        if let Some(v) = self.delivered.get_mut(&key) {
            v.0 += 1;
            v.1 = v.1.max(wire_len);
        } else if self.delivered.len() < MAX_PATHS {
            self.delivered.insert(key, (1, wire_len));
        }
    }

    /// Drops the oldest pending egress (never judged: counted as evicted).
    fn evict_pending(&mut self) {
        while let Some((ts, fp)) = self.pending_q.pop_front() {
            if let Some(e) = self.pending.get(&fp)
                && e.last_ts == ts
            {
                self.stats.evicted += u64::from(e.count);
                self.pending.remove(&fp);
                return;
            }
        }
    }

    fn evict_early(&mut self) {
        while let Some((ts, fp)) = self.early_q.pop_front() {
            if let Some(e) = self.early.get(&fp)
                && e.ts == ts
            {
                self.stats.evicted += 1;
                self.early.remove(&fp);
                return;
            }
        }
    }

    fn check_overlay_source(&mut self, hdr: &Headers, node: u16, ts: u64, enr: &Enricher) {
        let Some(n) = self.nodes.get(usize::from(node)) else { return };
        let src = hdr.outer.t.src;
        if n.expected.is_empty() || n.expected.contains(&src) {
            return;
        }
        // The address may be the node's under another name (e.g. only the
        // ExternalIP is listed under the node): trust the metadata's owner.
        if enr.node_by_ip(&src).is_some_and(|o| *o == *n.name) {
            return;
        }
        let len = self.overlay.len();
        match self.overlay.get_mut(&(node, src)) {
            Some(a) => {
                a.packets += 1;
                a.last_ts = a.last_ts.max(ts);
            }
            None if len < MAX_OVERLAY_ROWS => {
                self.overlay.insert(
                    (node, src),
                    OverlayAgg { dst: hdr.outer.t.dst, dport: hdr.outer.t.dport, packets: 1, first_ts: ts, last_ts: ts },
                );
            }
            None => self.stats.rows_dropped += 1,
        }
    }

    /// Expires what can no longer match, judges it, and refreshes metadata.
    fn maintain(&mut self, enr: &Enricher) {
        for n in &mut self.nodes {
            n.expected = enr.node_addresses(&n.name);
        }
        let now = self.now;
        let after = self.cfg.match_after_ns.saturating_add(self.cfg.reorder_slack_ns);
        while let Some(&(ts, fp)) = self.pending_q.front() {
            if ts.saturating_add(after) >= now {
                break;
            }
            self.pending_q.pop_front();
            if let Some(e) = self.pending.get(&fp)
                && e.last_ts == ts
            {
                let e = *e;
                self.pending.remove(&fp);
                self.unmatched(e, fp, enr, false);
            }
        }
        let before = self.cfg.match_before_ns.saturating_add(self.cfg.reorder_slack_ns);
        while let Some(&(ts, fp)) = self.early_q.front() {
            if ts.saturating_add(before) >= now {
                break;
            }
            self.early_q.pop_front();
            if self.early.get(&fp).is_some_and(|e| e.ts == ts) {
                self.early.remove(&fp);
            }
        }
        let keep = after.saturating_add(before);
        while let Some(&(ts, fp)) = self.dropped_q.front() {
            if ts.saturating_add(keep) >= now {
                break;
            }
            self.dropped_q.pop_front();
            if self.dropped.get(&fp) == Some(&ts) {
                self.dropped.remove(&fp);
            }
        }
        if !self.undecided.is_empty() {
            let und = std::mem::take(&mut self.undecided);
            for (e, to) in und {
                self.judge(e, to, enr, false);
            }
        }
    }

    /// An egress packet whose window passed without an ingress.
    fn unmatched(&mut self, e: Pending, fp: u64, enr: &Enricher, at_end: bool) {
        let n = u64::from(e.count);
        if self.dropped.contains_key(&fp) || self.dropped.contains_key(&e.key) {
            self.stats.kernel_dropped += n;
            return;
        }
        let dst = e.hdr.outer.t.dst;
        let to = match enr.node_by_ip(&dst) {
            Some(name) => self.node_idx.get(&*name).copied(),
            None => self.learned.get(&dst).copied(),
        };
        let Some(to) = to else {
            self.stats.unresolved += n;
            return;
        };
        if to == e.node {
            return;
        }
        self.judge(e, to, enr, at_end);
    }

    /// Counts `e` as lost if `to` was observed over its whole window; defers
    /// it while `to`'s records have not yet passed the window.
    fn judge(&mut self, e: Pending, to: u16, enr: &Enricher, at_end: bool) {
        let n = u64::from(e.count);
        let Some(b) = self.nodes.get(usize::from(to)) else { return };
        if b.first_ts.saturating_add(self.cfg.match_before_ns) > e.first_ts {
            self.stats.not_observed += n;
            return;
        }
        let end = e.last_ts.saturating_add(self.cfg.match_after_ns);
        if b.last_ts < end {
            if at_end {
                self.stats.in_flight += n;
            } else if self.undecided.len() < self.cfg.max_undecided {
                self.undecided.push((e, to));
            } else {
                self.stats.evicted += n;
            }
            return;
        }
        let lo = e.first_ts.saturating_sub(self.cfg.match_before_ns);
        let hi = end.saturating_add(self.cfg.reorder_slack_ns);
        let lost_near = |i: u16| {
            self.nodes.get(usize::from(i)).is_some_and(|s| s.lost.iter().any(|t| (lo..=hi).contains(t)))
        };
        if lost_near(e.node) || lost_near(to) {
            self.stats.suppressed_lost += n;
            return;
        }
        let inner = e.hdr.innermost();
        let key = LossKey {
            from: e.node,
            to,
            proto: e.hdr.outer.t.proto,
            dport: e.hdr.outer.t.dport,
            src: who(enr, Some(inner.t.src)),
            dst: who(enr, Some(inner.t.dst)),
        };
        let len = self.losses.len();
        match self.losses.get_mut(&key) {
            Some(a) => {
                a.packets += n;
                a.first_ts = a.first_ts.min(e.first_ts);
                a.last_ts = a.last_ts.max(e.last_ts);
                a.min_len = a.min_len.min(e.wire_len);
            }
            None if len < self.cfg.max_rows => {
                self.losses.insert(
                    key,
                    LossAgg {
                        packets: n,
                        first_ts: e.first_ts,
                        last_ts: e.last_ts,
                        min_len: e.wire_len,
                        hdr: e.hdr,
                    },
                );
            }
            None => self.stats.rows_dropped += 1,
        }
    }

    // -- kernel drops --------------------------------------------------------

    fn drop_record(&mut self, d: &DropRecord, node: u16, enr: &Enricher) {
        self.stats.drops += 1;
        let hdr = parse_headers(&d.data, &self.cfg.vxlan_ports);
        if let Some(h) = &hdr {
            // Either identity may be what an egress elsewhere carried: the
            // whole packet before decapsulation, the inner one after.
            for fp in [h.fingerprint(), h.key()] {
                if self.dropped.len() < self.cfg.max_pending {
                    self.dropped.insert(fp, d.ts_ns);
                    self.dropped_q.push_back((d.ts_ns, fp));
                }
            }
        }
        let inner = hdr.as_ref().map(Headers::innermost);
        let key = DropKey {
            node,
            reason: d.reason_name.clone(),
            src: who(enr, inner.map(|l| l.t.src)),
            dst: who(enr, inner.map(|l| l.t.dst)),
            l4: inner.map(|l| (l.t.proto, l.t.dport)),
            outer: hdr.as_ref().filter(|h| h.inner.is_some()).map(|h| (h.outer.t.proto, h.outer.t.dport)),
        };
        let ts = d.ts_ns;
        if let Some(a) = self.drops.get_mut(&key) {
            a.count += 1;
            a.first_ts = a.first_ts.min(ts);
            a.last_ts = a.last_ts.max(ts);
            if a.samples.len() < MAX_SAMPLES {
                a.samples.push(sample(hdr.as_ref(), d, a.first_ts));
            }
            return;
        }
        if self.drops.len() >= self.cfg.max_rows {
            self.stats.rows_dropped += 1;
            return;
        }
        let netns_pod = enr.pod_by_netns(d.netns_ino);
        let background = netns_pod.is_none()
            && !matches!(key.src, Who::Pod(_))
            && !matches!(key.dst, Who::Pod(_))
            && !hdr.as_ref().is_some_and(|h| {
                [h.outer.t.src, h.outer.t.dst, h.innermost().t.src, h.innermost().t.dst]
                    .iter()
                    .any(|ip| enr.pod_by_ip(ip).is_some() || enr.node_by_ip(ip).is_some() || self.learned.contains_key(ip))
            });
        let samples = vec![sample(hdr.as_ref(), d, ts)];
        self.drops.insert(
            key,
            DropAgg {
                count: 1,
                first_ts: ts,
                last_ts: ts,
                hdr,
                ifindex: d.ifindex,
                netns: d.netns_ino,
                netns_pod,
                samples,
                background,
            },
        );
    }

    // -- TCP connections -----------------------------------------------------

    fn sock_insert(&mut self, key: (u16, u64), s: Sock) {
        if !self.socks.contains_key(&key) && self.socks.len() >= self.cfg.max_sockets {
            while let Some((k, ts)) = self.socks_q.pop_front() {
                if self.socks.get(&k).is_some_and(|s| s.start_ts == ts) {
                    self.socks.remove(&k);
                    self.stats.sockets_evicted += 1;
                    break;
                }
            }
        }
        self.socks_q.push_back((key, s.start_ts));
        self.socks.insert(key, s);
        if self.socks_q.len() > self.cfg.max_sockets.saturating_mul(2) {
            let socks = &self.socks;
            self.socks_q.retain(|(k, ts)| socks.get(k).is_some_and(|s| s.start_ts == *ts));
        }
    }

    fn new_sock(c: &ConnRecord, node: u16, state: u8) -> Sock {
        Sock {
            src: c.src,
            dst: c.dst,
            process: c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.clone() }),
            netns: c.netns_ino,
            node,
            start_ts: c.ts_ns,
            state,
            syn_retx: 0,
            reset_in_syn: false,
            reset_reported: false,
        }
    }

    /// The tracked socket, created in `state` when the capture missed its start.
    fn sock_mut(&mut self, c: &ConnRecord, node: u16, state: u8) -> Option<&mut Sock> {
        let key = (node, c.sock);
        if !self.socks.contains_key(&key) {
            self.sock_insert(key, Self::new_sock(c, node, state));
        }
        let s = self.socks.get_mut(&key)?;
        // connect() reports SYN_SENT before the source port is chosen.
        if s.src.port == 0 && c.src.port != 0 {
            s.src = c.src;
        }
        if s.process.is_none() {
            s.process = c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.clone() });
        }
        if s.netns == 0 {
            s.netns = c.netns_ino;
        }
        Some(s)
    }

    fn conn(&mut self, c: &ConnRecord, node: u16, enr: &Enricher) {
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        self.stats.conn_events += 1;
        let key = (node, c.sock);
        match c.kind {
            ConnKind::State { old: CLOSE, new: SYN_SENT } => {
                self.sock_insert(key, Self::new_sock(c, node, SYN_SENT));
            }
            ConnKind::State { old, new: CLOSE } => {
                if let Some(s) = self.socks.remove(&key)
                    && old == SYN_SENT
                {
                    if s.reset_in_syn {
                        self.conn_fail(ConnFailKind::Refused, &s, c.ts_ns, false, enr);
                    } else if s.syn_retx > 0 {
                        self.conn_fail(ConnFailKind::Timeout, &s, c.ts_ns, false, enr);
                    } else {
                        self.stats.connects_aborted += 1;
                    }
                }
            }
            ConnKind::State { new, .. } => {
                if let Some(s) = self.socks.get_mut(&key) {
                    s.state = new;
                }
            }
            ConnKind::ResetReceived { state: SYN_SENT } => {
                if let Some(s) = self.sock_mut(c, node, SYN_SENT) {
                    s.reset_in_syn = true;
                }
            }
            ConnKind::ResetReceived { state: ESTABLISHED } => {
                let s = match self.socks.get_mut(&key) {
                    Some(s) if s.reset_reported => return,
                    Some(s) => {
                        s.reset_reported = true;
                        Sock { process: s.process.clone(), ..Self::new_sock(c, node, ESTABLISHED) }
                    }
                    None => Self::new_sock(c, node, ESTABLISHED),
                };
                self.conn_fail(ConnFailKind::Reset, &s, c.ts_ns, false, enr);
            }
            ConnKind::Retransmit { state: SYN_SENT } => {
                if let Some(s) = self.sock_mut(c, node, SYN_SENT) {
                    s.syn_retx = s.syn_retx.saturating_add(1);
                }
            }
            ConnKind::ResetReceived { .. } | ConnKind::ResetSent { .. } | ConnKind::Retransmit { .. } => {}
        }
    }

    fn conn_fail(&mut self, kind: ConnFailKind, s: &Sock, ts: u64, pending: bool, enr: &Enricher) {
        let src = enr.pod_by_netns(s.netns).map_or_else(|| who(enr, Some(s.src.ip)), Who::Pod);
        let key = ConnKey { kind, src, dst: s.dst, comm: s.process.as_ref().map(|p| p.comm.clone()), pending };
        let len = self.conns.len();
        match self.conns.get_mut(&key) {
            Some(a) => {
                a.count += 1;
                a.syn_retx += u64::from(s.syn_retx);
                a.first_ts = a.first_ts.min(ts);
                a.last_ts = a.last_ts.max(ts);
            }
            None if len < self.cfg.max_rows => {
                self.conns.insert(
                    key,
                    ConnAgg {
                        src: s.src.ip,
                        dst_pod: enr.pod_by_ip(&s.dst.ip),
                        process: s.process.clone(),
                        count: 1,
                        syn_retx: u64::from(s.syn_retx),
                        node: s.node,
                        first_ts: ts,
                        last_ts: ts,
                    },
                );
            }
            None => self.stats.rows_dropped += 1,
        }
    }

    // -- the end -------------------------------------------------------------

    /// Judges everything still pending against the whole input and returns
    /// the report. Connects still in SYN_SENT with SYN retransmits are
    /// reported as pending timeouts. The analyzer is empty afterwards (its
    /// [`Self::stats`] remain).
    pub fn finish(&mut self, enr: &Enricher) -> DropReport {
        self.maintain(enr);
        let mut rest: Vec<(u64, Pending)> = self.pending.drain().collect();
        rest.sort_unstable_by_key(|(_, e)| e.first_ts);
        self.pending_q.clear();
        for (fp, e) in rest {
            self.unmatched(e, fp, enr, true);
        }
        for (e, to) in std::mem::take(&mut self.undecided) {
            self.judge(e, to, enr, true);
        }
        self.early.clear();
        self.early_q.clear();
        let socks: Vec<Sock> = self.socks.drain().map(|(_, s)| s).collect();
        self.socks_q.clear();
        for s in socks {
            if s.state == tcp_state::SYN_SENT && s.syn_retx > 0 {
                let ts = s.start_ts;
                self.conn_fail(ConnFailKind::Timeout, &s, ts, true, enr);
            }
        }
        DropReport { drops: self.drop_rows(), conn_fails: self.conn_rows(), findings: self.finding_rows(enr) }
    }

    fn drop_rows(&mut self) -> Vec<DropRow> {
        let mut out: Vec<DropRow> = self
            .drops
            .drain()
            .map(|(k, a)| {
                let inner = a.hdr.as_ref().map(Headers::innermost);
                let vx = a.hdr.as_ref().filter(|h| h.inner.is_some());
                DropRow {
                    reason: k.reason,
                    count: a.count,
                    src: inner.map(|l| l.t.src),
                    dst: inner.map(|l| l.t.dst),
                    proto: inner.map(|l| proto_name(l.t.proto)),
                    sport: inner.map(|l| l.t.sport),
                    dport: inner.map(|l| l.t.dport),
                    src_pod: pod_string(&k.src),
                    dst_pod: pod_string(&k.dst),
                    node: self.nodes.get(usize::from(k.node)).map(|n| n.name.clone()),
                    ifindex: a.ifindex,
                    dev: None,
                    netns: a.netns,
                    netns_pod: a.netns_pod.map(|p| p.to_string()),
                    first_ts_ns: a.first_ts,
                    last_ts_ns: a.last_ts,
                    samples: a.samples,
                    inner: vx.and_then(|h| h.inner.as_ref()).map(L3L4::flow),
                    outer_src: vx.map(|h| h.outer.t.src),
                    outer_dst: vx.map(|h| h.outer.t.dst),
                    outer_proto: vx.map(|h| proto_name(h.outer.t.proto)),
                    outer_dport: vx.map(|h| h.outer.t.dport),
                    background: a.background,
                }
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_ts_ns.cmp(&b.first_ts_ns)));
        out
    }

    fn conn_rows(&mut self) -> Vec<ConnFail> {
        let conns: Vec<(ConnKey, ConnAgg)> = self.conns.drain().collect();
        let mut out: Vec<ConnFail> = conns
            .into_iter()
            .map(|(k, a)| ConnFail {
                kind: k.kind,
                src: a.src,
                dst: k.dst,
                src_pod: pod_string(&k.src),
                dst_pod: a.dst_pod.map(|p| p.to_string()),
                process: a.process,
                count: a.count,
                syn_retransmits: a.syn_retx,
                node: self.node_name(a.node),
                first_ts_ns: a.first_ts,
                last_ts_ns: a.last_ts,
                pending: k.pending,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_ts_ns.cmp(&b.first_ts_ns)));
        out
    }

    fn finding_rows(&mut self, enr: &Enricher) -> Vec<DropFinding> {
        let mut losses: Vec<(LossKey, LossAgg)> = self.losses.drain().collect();
        losses.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.1.first_ts.cmp(&b.1.first_ts)));
        let mut out = Vec::new();
        for (k, a) in losses {
            let (Some(from), Some(to)) = (self.node_name(k.from), self.node_name(k.to)) else { continue };
            let (delivered, max_ok_len) = self.delivered.get(&(k.from, k.to, k.proto, k.dport)).copied().unwrap_or((0, 0));
            let reverse = self
                .delivered
                .iter()
                .filter(|(p, _)| p.0 == k.to && p.1 == k.from)
                .map(|(_, v)| v.0)
                .sum::<u64>();
            let (cause, advice) = loss_text(&k, &a, &from, &to, delivered, max_ok_len, reverse, enr);
            let inner = a.hdr.innermost();
            out.push(DropFinding::FabricLoss(FabricLoss {
                from_node: from,
                to_node: to,
                packets: a.packets,
                delivered,
                proto: proto_name(k.proto),
                dport: k.dport,
                outer_src: a.hdr.outer.t.src,
                outer_dst: a.hdr.outer.t.dst,
                encapsulation: a.hdr.inner.map(|_| "vxlan"),
                inner_src: inner.t.src,
                inner_dst: inner.t.dst,
                inner_src_pod: pod_string(&k.src),
                inner_dst_pod: pod_string(&k.dst),
                inner_proto: proto_name(inner.t.proto),
                inner_dport: inner.t.dport,
                first_ts_ns: a.first_ts,
                last_ts_ns: a.last_ts,
                cause,
                advice,
            }));
        }
        let mut overlay: Vec<((u16, IpAddr), OverlayAgg)> = self.overlay.drain().collect();
        overlay.sort_by(|a, b| b.1.packets.cmp(&a.1.packets));
        for ((node, src), a) in overlay {
            let Some(n) = self.nodes.get(usize::from(node)) else { continue };
            let expected = n.expected.clone();
            let to_node = enr.node_by_ip(&a.dst).or_else(|| self.learned.get(&a.dst).and_then(|i| self.node_name(*i)));
            let list = expected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let cause = format!(
                "{} sends VXLAN (UDP {}) from {src}, which is not one of its cluster addresses ({list}): the overlay \
                 is bound to the wrong interface, so peers are told, or see, an address that may not reach it",
                n.name, a.dport
            );
            let advice = vec![
                format!("check `ip -d link show flannel.1` on {}: `local` must be {list}", n.name),
                "flannel: set --iface (or --iface-regex) to the interface of the node's InternalIP, or fix the \
                 flannel.alpha.coreos.com/public-ip annotation"
                    .to_owned(),
                "Calico: set IP_AUTODETECTION_METHOD (e.g. kubernetes-internal-ip or interface=<underlay>)".to_owned(),
            ];
            out.push(DropFinding::OverlayWrongSource(OverlayWrongSource {
                node: n.name.clone(),
                outer_src: src,
                expected,
                outer_dst: a.dst,
                to_node,
                dport: a.dport,
                packets: a.packets,
                first_ts_ns: a.first_ts,
                last_ts_ns: a.last_ts,
                cause,
                advice,
            }));
        }
        out
    }
}

fn sample(hdr: Option<&Headers>, d: &DropRecord, first_ts: u64) -> String {
    let mut s = format!("+{:.3}ms ", d.ts_ns.saturating_sub(first_ts) as f64 / 1e6);
    match hdr {
        Some(h) => s.push_str(&describe(h)),
        None => s.push_str("non-IP packet"),
    }
    let _ = write!(s, " len {} if {}", d.wire_len, d.ifindex);
    s
}

fn who_text(w: &Who, ip: IpAddr) -> String {
    match w {
        Who::Pod(p) => format!("{p} ({ip})"),
        _ => ip.to_string(),
    }
}

#[expect(clippy::too_many_arguments, reason = "one call site; the pieces of one sentence")]
fn loss_text(
    k: &LossKey,
    a: &LossAgg,
    from: &str,
    to: &str,
    delivered: u64,
    max_ok_len: u32,
    reverse: u64,
    enr: &Enricher,
) -> (String, Vec<String>) {
    let o = &a.hdr.outer.t;
    let i = a.hdr.innermost();
    let what = if a.hdr.inner.is_some() {
        format!(
            "{} VXLAN packet(s) (UDP {}, {} → {}) carrying {} {} → {}:{}",
            a.packets,
            k.dport,
            o.src,
            o.dst,
            proto_name(i.t.proto),
            who_text(&k.src, i.t.src),
            who_text(&k.dst, i.t.dst),
            i.t.dport
        )
    } else {
        format!(
            "{} {} packet(s) {} → {}:{}",
            a.packets,
            proto_name(k.proto),
            who_text(&k.src, o.src),
            who_text(&k.dst, o.dst),
            k.dport
        )
    };
    let mut cause = format!(
        "{what} left {from}'s underlay interface and never arrived at {to}'s, and no kernel on either node dropped \
         them: they were lost in the network between the nodes"
    );
    let mtu = delivered > 0 && a.min_len > max_ok_len;
    if mtu {
        let _ = write!(
            cause,
            "; only large packets are lost (≥ {} bytes, while packets up to {max_ok_len} bytes arrive): a path MTU problem",
            a.min_len
        );
    } else if delivered > 0 {
        let _ = write!(cause, "; {delivered} other packet(s) on this path did arrive (partial loss)");
    }
    if reverse > 0 {
        let _ = write!(cause, "; traffic from {to} to {from} arrives, so only this direction is blocked");
    }
    let mut advice = Vec::new();
    if mtu {
        advice.push(format!(
            "lower the pod MTU (VXLAN adds 50 bytes) or raise the underlay MTU between {from} and {to}; check that \
             ICMP 'fragmentation needed' is not filtered"
        ));
    }
    let pod_routed = a.hdr.inner.is_none()
        && (enr.pod_by_ip(&o.src).is_some() || enr.pod_by_ip(&o.dst).is_some())
        && enr.node_by_ip(&o.src).is_none();
    if pod_routed {
        advice.push(
            "pod addresses cross the fabric unencapsulated: disable the cloud's source/destination check on the \
             nodes (AWS SourceDestCheck=false, GCP canIpForward) or use an encapsulating overlay (VXLAN/IPIP)"
                .to_owned(),
        );
    }
    advice.push(format!(
        "allow {} port {} from {} to {} in the security groups / firewall / network ACLs between the nodes",
        proto_name(k.proto),
        k.dport,
        o.src,
        o.dst
    ));
    advice.push(format!(
        "confirm on the wire: `tcpdump -ni <underlay> {} port {}` on {from} (leaves) and on {to} (never arrives)",
        proto_name(k.proto),
        k.dport
    ));
    (cause, advice)
}

