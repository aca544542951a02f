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
/// How often a node's expected addresses are re-read from the metadata.
const EXPECTED_REFRESH_NS: u64 = 10_000 * MS;
/// Distinct delivered paths counted for the "partial loss" hint.
const MAX_PATHS: usize = 65_536;
/// Ingress packets longer than this may be GRO super-packets (segments the
/// receiving NIC merged before tc saw them): their TCP range is remembered so
/// that the segments after the first, sent and fingerprinted separately,
/// count as delivered.
const GRO_MIN_LEN: u32 = 1600;
/// TCP flows with remembered GRO ranges.
const MAX_GRO_FLOWS: usize = 65_536;
/// Ranges remembered per flow.
const GRO_RANGES: usize = 8;

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
    /// The process that called `connect()` (first of the row).
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
    /// Still in `SYN_SENT`, with SYN retransmits, when the input ended.
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
    /// `connect()`s closed in `SYN_SENT` without reset or retransmit (aborted by the caller).
    pub connects_aborted: u64,
    /// New aggregation keys refused by `max_rows`.
    pub rows_dropped: u64,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Multicast in the local control blocks (224.0.0.0/24, `ff02::/16`) and broadcasts.
fn is_link_local_control(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (o[0] == 224 && o[1] == 0 && o[2] == 0) || a.is_broadcast()
        }
        IpAddr::V6(a) => a.segments()[0] == 0xff02,
    }
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
    /// TCP payload length the headers claim (0 when unknown): a GRO
    /// super-packet covers `seq..seq + tcp_len`.
    tcp_len: u32,
}

impl L3L4 {
    fn feed(&self, h: &mut FastHasher) {
        let (src_hi, src_lo) = ip_words(self.t.src);
        let (dst_hi, dst_lo) = ip_words(self.t.dst);
        h.write_u64(src_hi);
        h.write_u64(src_lo);
        h.write_u64(dst_hi);
        h.write_u64(dst_lo);
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

    /// Identity of the connection (no IP id, no sequence), for GRO ranges.
    fn flow_hash(&self) -> u64 {
        let mut h = FastHasher(0x6a6a);
        for l in [Some(&self.outer), self.inner.as_ref()].into_iter().flatten() {
            let strip = L3L4 { t: l.t, id: 0, seq: 0, tcp_flags: 0, icmp: 0, tcp_len: 0 };
            strip.feed(&mut h);
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
        Some(&[b0, b1, b2, b3]) => Some(u32::from_be_bytes([b0, b1, b2, b3])),
        _ => None,
    }
}

/// Parses IP + transport header fields; returns them and the UDP payload.
fn parse_l3l4(d: &[u8]) -> Option<(L3L4, &[u8])> {
    let (src, dst, proto, id, l4, nonfirst, claim) = match d.first()? >> 4 {
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
                total.saturating_sub(ihl),
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
                (40 + plen).saturating_sub(off),
            )
        }
        _ => return None,
    };
    let mut l =
        L3L4 { t: Tuple { src, dst, proto, sport: 0, dport: 0 }, id, seq: 0, tcp_flags: 0, icmp: 0, tcp_len: 0 };
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
                    if let Some(doff) = l4.get(12).map(|b| usize::from(b >> 4) * 4) {
                        l.tcp_len = claim.saturating_sub(doff) as u32;
                    }
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

/// [`parse_headers`] for the fuzz target `fuzz/fuzz_targets/packet_parse.rs`
/// (a separate crate, so it cannot reach the private parser): whether
/// headers were found, and whether a VXLAN inner packet was. Not an API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_parse_headers(data: &[u8], vxlan_ports: &[u16]) -> Option<bool> {
    parse_headers(data, vxlan_ports).map(|h| {
        let _ = h.innermost();
        h.inner.is_some()
    })
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
        PROTO_TCP => {
            format!("tcp {} > {} [{}]", ep(l.t.src, l.t.sport), ep(l.t.dst, l.t.dport), tcp_flags_str(l.tcp_flags))
        }
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
        Some(i) => format!("{} in vxlan {} > {}:{}", describe_l(i), h.outer.t.src, h.outer.t.dst, h.outer.t.dport),
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
    /// The node's addresses according to the metadata.
    expected: Vec<IpAddr>,
    /// When `expected` was read (metadata may change while live).
    expected_at: u64,
    /// Underlay (tc) records seen from this node: its capture had the
    /// underlay hooks, so a missing ingress there means something.
    tc_seen: bool,
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

/// TCP sequence ranges that arrived merged at an ingress: (ts, start, end).
struct GroCover {
    node: u16,
    last_ts: u64,
    ranges: [(u64, u32, u32); GRO_RANGES],
    next: usize,
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
    /// Per receiving node, in expiry order.
    undecided: Vec<VecDeque<Pending>>,
    undecided_len: usize,
    gro: FastMap<u64, GroCover>,
    gro_q: VecDeque<(u64, u64)>,
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
            undecided_len: 0,
            gro: FastMap::default(),
            gro_q: VecDeque::new(),
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
            undecided: self.undecided_len as u64,
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
                expected_at: self.now,
                tc_seen: false,
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

    /// Declares that `node` was being observed from `from_ns` to `to_ns`
    /// (a recorder's coverage: it saw nothing, but it was looking), with tc on
    /// its underlay when `tc`. Without this, a node's span is inferred from its
    /// own records, and a node that received nothing would look unobserved.
    pub fn observed(&mut self, node: &str, from_ns: u64, to_ns: u64, tc: bool, enr: &Enricher) {
        let name: Arc<str> = node.into();
        let i = self.node(Some(&name), enr);
        if let Some(n) = self.nodes.get_mut(usize::from(i)) {
            n.first_ts = n.first_ts.min(from_ns);
            n.last_ts = n.last_ts.max(to_ns);
            n.tc_seen |= tc;
        }
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
        let Some(n) = self.nodes.get_mut(usize::from(node)) else { return };
        n.tc_seen = true;
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
            if let Some(e) = self.pending.get_mut(&fp)
                && e.node == node
            {
                // The same packet again (retransmit with IP id 0, or a
                // duplicate): wait for one more arrival.
                e.count = e.count.saturating_add(1);
                e.last_ts = ts;
                self.pending_q.push_back((ts, fp));
                return;
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
            let inner = hdr.innermost();
            if inner.t.proto == PROTO_TCP && inner.tcp_len > 0 && p.wire_len > GRO_MIN_LEN {
                self.gro_cover(&hdr, node, ts);
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

    fn gro_cover(&mut self, hdr: &Headers, node: u16, ts: u64) {
        let flow = hdr.flow_hash();
        let i = hdr.innermost();
        let range = (ts, i.seq, i.seq.wrapping_add(i.tcp_len));
        if let Some(g) = self.gro.get_mut(&flow) {
            if let Some(slot) = g.ranges.get_mut(g.next % GRO_RANGES) {
                *slot = range;
            }
            g.next = g.next.wrapping_add(1);
            g.node = node;
            g.last_ts = ts;
        } else if self.gro.len() < MAX_GRO_FLOWS {
            let mut ranges = [(0, 0, 0); GRO_RANGES];
            ranges[0] = range;
            self.gro.insert(flow, GroCover { node, last_ts: ts, ranges, next: 1 });
        } else {
            return;
        }
        self.gro_q.push_back((ts, flow));
    }

    /// Whether an unmatched TCP segment arrived inside a GRO super-packet.
    fn gro_covered(&self, e: &Pending) -> bool {
        let i = e.hdr.innermost();
        if i.t.proto != PROTO_TCP || self.gro.is_empty() {
            return false;
        }
        let Some(g) = self.gro.get(&e.hdr.flow_hash()) else { return false };
        let lo = e.first_ts.saturating_sub(self.cfg.match_before_ns);
        let hi = e.last_ts.saturating_add(self.cfg.match_after_ns);
        g.node != e.node
            && g.ranges
                .iter()
                .take(g.next.min(GRO_RANGES))
                .any(|&(ts, start, end)| (lo..=hi).contains(&ts) && i.seq.wrapping_sub(start) < end.wrapping_sub(start))
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
        let now = self.now;
        let Some(n) = self.nodes.get_mut(usize::from(node)) else { return };
        if now.saturating_sub(n.expected_at) > EXPECTED_REFRESH_NS {
            n.expected = enr.node_addresses(&n.name);
            n.expected_at = now;
        }
        let n = &*n;
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
                    OverlayAgg {
                        dst: hdr.outer.t.dst,
                        dport: hdr.outer.t.dport,
                        packets: 1,
                        first_ts: ts,
                        last_ts: ts,
                    },
                );
            }
            None => self.stats.rows_dropped += 1,
        }
    }

    /// Expires what can no longer match, judges it, and refreshes metadata.
    fn maintain(&mut self, enr: &Enricher) {
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
        while let Some(&(ts, flow)) = self.gro_q.front() {
            if ts.saturating_add(keep) >= now {
                break;
            }
            self.gro_q.pop_front();
            if self.gro.get(&flow).is_some_and(|g| g.last_ts == ts) {
                self.gro.remove(&flow);
            }
        }
        if self.undecided_len > 0 {
            for to in 0..self.undecided.len() {
                let last = self.nodes.get(to).map_or(0, |n| n.last_ts);
                let after_ns = self.cfg.match_after_ns;
                while let Some(q) = self.undecided.get_mut(to)
                    && q.front().is_some_and(|e| e.last_ts.saturating_add(after_ns) <= last)
                    && let Some(e) = q.pop_front()
                {
                    self.undecided_len -= 1;
                    self.judge(e, to as u16, enr, false);
                }
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
        if self.gro_covered(&e) {
            self.stats.matched += n;
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
            } else if self.undecided_len < self.cfg.max_undecided {
                let i = usize::from(to);
                if self.undecided.len() <= i {
                    self.undecided.resize_with(i + 1, VecDeque::new);
                }
                if let Some(q) = self.undecided.get_mut(i) {
                    q.push_back(e);
                    self.undecided_len += 1;
                }
            } else {
                self.stats.evicted += n;
            }
            return;
        }
        if !b.tc_seen {
            self.stats.not_observed += n;
            return;
        }
        let lo = e.first_ts.saturating_sub(self.cfg.match_before_ns);
        let hi = end.saturating_add(self.cfg.reorder_slack_ns);
        let lost_near =
            |i: u16| self.nodes.get(usize::from(i)).is_some_and(|s| s.lost.iter().any(|t| (lo..=hi).contains(t)));
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
                    LossAgg { packets: n, first_ts: e.first_ts, last_ts: e.last_ts, min_len: e.wire_len, hdr: e.hdr },
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
        // Link-local control traffic (IGMP reports, mDNS, IPv6 neighbour
        // discovery, broadcasts) is dropped routinely when nobody listens:
        // it never explains "pod A cannot reach pod B".
        let link_local = hdr.as_ref().is_some_and(|h| is_link_local_control(&h.innermost().t.dst));
        let background = link_local
            || netns_pod.is_none()
                && !matches!(key.src, Who::Pod(_))
                && !matches!(key.dst, Who::Pod(_))
                && !hdr.as_ref().is_some_and(|h| {
                    [h.outer.t.src, h.outer.t.dst, h.innermost().t.src, h.innermost().t.dst].iter().any(|ip| {
                        enr.pod_by_ip(ip).is_some() || enr.node_by_ip(ip).is_some() || self.learned.contains_key(ip)
                    })
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
            process: c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.to_string() }),
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
            s.process = c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.to_string() });
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

    /// Fabric losses decided so far (their packets' time to arrive has
    /// passed), taken out of the analyzer: a long-running agent exports them
    /// as they happen instead of at the end of a run. `now_ns`: every node's
    /// records up to this wall-clock time have been pushed.
    pub fn drain_fabric_losses(&mut self, now_ns: u64, enr: &Enricher) -> Vec<FabricLoss> {
        self.now = self.now.max(now_ns);
        self.maintain(enr);
        self.finding_rows(enr)
            .into_iter()
            .filter_map(|f| match f {
                DropFinding::FabricLoss(l) => Some(l),
                DropFinding::OverlayWrongSource(_) => None,
            })
            .collect()
    }

    /// Judges everything still pending against the whole input and returns
    /// the report. Connects still in `SYN_SENT` with SYN retransmits are
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
        let undecided = std::mem::take(&mut self.undecided);
        self.undecided_len = 0;
        for (to, q) in undecided.into_iter().enumerate() {
            for e in q {
                self.judge(e, to as u16, enr, true);
            }
        }
        self.early.clear();
        self.early_q.clear();
        self.gro.clear();
        self.gro_q.clear();
        self.dropped.clear();
        self.dropped_q.clear();
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
        let mut between: HashMap<(u16, u16), u64> = HashMap::new();
        for (p, v) in &self.delivered {
            *between.entry((p.0, p.1)).or_default() += v.0;
        }
        for (k, a) in losses {
            let (Some(from), Some(to)) = (self.node_name(k.from), self.node_name(k.to)) else { continue };
            let (delivered, max_ok_len) =
                self.delivered.get(&(k.from, k.to, k.proto, k.dport)).copied().unwrap_or((0, 0));
            let reverse = between.get(&(k.to, k.from)).copied().unwrap_or(0);
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
        overlay.sort_by_key(|o| std::cmp::Reverse(o.1.packets));
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bytes::Bytes;

    use super::*;
    use crate::{
        enrich::{Snapshot, snapshot::PodInfo},
        event::Process,
    };

    const A: &str = "node-a";
    const B: &str = "node-b";
    const NA: &str = "192.168.77.10";
    const NB: &str = "192.168.77.11";
    const CLIENT: &str = "10.244.1.20";
    const BACKEND: &str = "10.244.2.30";
    const CLIENT_NETNS: u32 = 4_026_532_001;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> [u8; 4] {
        s.parse::<Ipv4Addr>().unwrap().octets()
    }

    fn ipv4(src: &str, dst: &str, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend(total.to_be_bytes());
        p.extend(id.to_be_bytes());
        p.extend([0x40, 0, 64, proto, 0, 0]);
        p.extend(v4(src));
        p.extend(v4(dst));
        p.extend(l4);
        p
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend(sport.to_be_bytes());
        u.extend(dport.to_be_bytes());
        u.extend(((payload.len() + 8) as u16).to_be_bytes());
        u.extend([0, 0]);
        u.extend(payload);
        u
    }

    fn tcp(sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(sport.to_be_bytes());
        t.extend(dport.to_be_bytes());
        t.extend(seq.to_be_bytes());
        t.extend([0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }

    /// A VXLAN packet: outer IPv4/UDP 4789, VXLAN header (VNI 1), inner Ethernet, `inner`.
    fn vxlan(osrc: &str, odst: &str, osport: u16, oid: u16, inner: &[u8]) -> Vec<u8> {
        let mut pl = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        pl.extend([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x1e, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x14, 0x08, 0x00]);
        pl.extend(inner);
        ipv4(osrc, odst, PROTO_UDP, oid, &udp(osport, 4789, &pl))
    }

    fn node(n: &str) -> Arc<str> {
        Arc::from(n)
    }

    fn pkt(ts: u64, n: &str, hook: Hook, data: &[u8]) -> Record {
        Record::Packet(PacketRecord {
            ts_ns: ts,
            hook,
            process: None,
            cgroup_id: 0,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 2,
            wire_len: data.len() as u32,
            data: Bytes::copy_from_slice(data),
            node: Some(node(n)),
        })
    }

    fn drop_rec(ts: u64, n: &str, reason: &str, data: &[u8]) -> Record {
        Record::Drop(DropRecord {
            ts_ns: ts,
            reason: 0,
            reason_name: Arc::from(reason),
            location: 0,
            ifindex: 3,
            netns_ino: 0,
            wire_len: data.len() as u32,
            data: Bytes::copy_from_slice(data),
            node: Some(node(n)),
            process: None,
        })
    }

    fn conn(ts: u64, sock: u64, kind: ConnKind, sport: u16, dst: (&str, u16), process: bool) -> Record {
        Record::Conn(ConnRecord {
            ts_ns: ts,
            kind,
            src: Endpoint { ip: ip(CLIENT), port: sport },
            dst: Endpoint { ip: ip(dst.0), port: dst.1 },
            sock,
            process: process.then(|| Process { pid: 42, tid: 42, comm: "curl".into(), thread: "curl".into() }),
            netns_ino: if process { CLIENT_NETNS } else { 0 },
            node: Some(node(A)),
        })
    }

    fn pod(ns: &str, name: &str, n: &str, addr: &str, netns: Option<u32>) -> PodInfo {
        PodInfo {
            pod: PodRef { namespace: ns.into(), name: name.into(), node: Some(node(n)) },
            uid: String::new(),
            ips: vec![ip(addr)],
            host_network: false,
            container_ids: vec![],
            netns_name: None,
            cgroup_path: None,
            netns_ino: netns,
            cgroup_id: None,
            labels: vec![],
            created_ns: None,
            deleted_ns: None,
        }
    }

    fn enricher() -> Enricher {
        Enricher::from_snapshot(&Snapshot {
            pods: vec![
                pod("critical-app", "client", A, CLIENT, Some(CLIENT_NETNS)),
                pod("critical-app", "backend", B, BACKEND, None),
                pod("kube-system", "kube-dns", A, "10.244.1.10", None),
            ],
            nodes: vec![(Arc::from(A), vec![ip(NA)]), (Arc::from(B), vec![ip(NB)])],
            ..Snapshot::default()
        })
    }

    /// Client (node-a) ↔ backend (node-b) over VXLAN, one exchange every
    /// 10 ms: node-a's clock is off by `skew_a`, node-b's by `skew_b`;
    /// `lose(i)` drops the i-th reply between node-b and node-a.
    fn exchange(n: u32, skew_a: i64, skew_b: i64, lose: impl Fn(u32) -> bool) -> Vec<Record> {
        let base: i64 = 10_000 * MS as i64;
        let at = |t: i64, skew: i64| (base + t + skew) as u64;
        let mut recs = Vec::new();
        for i in 0..n {
            let t = i64::from(i) * 10 * MS as i64;
            let req =
                vxlan(NA, NB, 40_000, 0, &ipv4(CLIENT, BACKEND, PROTO_TCP, i as u16, &tcp(51_000, 8080, i, 0x18)));
            recs.push(pkt(at(t, skew_a), A, Hook::TcEgress, &req));
            recs.push(pkt(at(t + MS as i64, skew_b), B, Hook::TcIngress, &req));
            let rsp =
                vxlan(NB, NA, 41_000, 0, &ipv4(BACKEND, CLIENT, PROTO_TCP, i as u16, &tcp(8080, 51_000, 7 * i, 0x10)));
            recs.push(pkt(at(t + 2 * MS as i64, skew_b), B, Hook::TcEgress, &rsp));
            if !lose(i) {
                recs.push(pkt(at(t + 3 * MS as i64, skew_a), A, Hook::TcIngress, &rsp));
            }
        }
        recs.sort_by_key(Record::ts_ns);
        recs
    }

    fn run(recs: &[Record], enr: &Enricher) -> (DropReport, DropStats) {
        let mut a = DropAnalyzer::new(DropConfig::default());
        for r in recs {
            a.push(r, enr);
        }
        let rep = a.finish(enr);
        (rep, a.stats())
    }

    fn losses(rep: &DropReport) -> Vec<&FabricLoss> {
        rep.findings
            .iter()
            .filter_map(|f| match f {
                DropFinding::FabricLoss(l) => Some(l),
                DropFinding::OverlayWrongSource(_) => None,
            })
            .collect()
    }

    #[test]
    fn fabric_drop_vxlan_one_direction() {
        let enr = enricher();
        let (rep, st) = run(&exchange(300, 0, 0, |_| true), &enr);
        let l = losses(&rep);
        assert_eq!(l.len(), 1, "{rep:#?}");
        let l = l[0];
        assert_eq!((&*l.from_node, &*l.to_node), (B, A));
        assert_eq!((l.proto, l.dport, l.encapsulation), ("udp", 4789, Some("vxlan")));
        assert_eq!(l.inner_src_pod.as_deref(), Some("critical-app/backend"));
        assert_eq!(l.inner_dst_pod.as_deref(), Some("critical-app/client"));
        assert_eq!((l.inner_proto, l.inner_dport), ("tcp", 51_000));
        assert_eq!((l.outer_src, l.outer_dst), (ip(NB), ip(NA)));
        // Replies 10..=198: the first ones precede node-a's capture by less
        // than the skew margin, the last second is in flight at its end.
        assert_eq!(l.packets, 189, "{st:?}");
        assert_eq!(l.delivered, 0);
        assert!(l.cause.contains("only this direction"), "{}", l.cause);
        assert!(rep.drops.is_empty() && rep.conn_fails.is_empty());
        assert_eq!(st.matched, 300);
        assert_eq!(st.in_flight + st.not_observed + 189, 300, "{st:?}");
        assert_eq!((st.pending, st.pending_ingress, st.undecided), (0, 0, 0));
        let j = serde_json::to_value(&rep.findings[0]).unwrap();
        assert_eq!(j["kind"], "fabric_loss");
        assert_eq!(j["from_node"], B);
        assert_eq!(j["inner_src_pod"], "critical-app/backend");
        assert_eq!(j["first_ts_ns"], l.first_ts_ns);
    }

    #[test]
    fn no_fault_with_skew_reports_nothing() {
        let enr = enricher();
        for (sa, sb) in [(50, -50), (-50, 50), (0, 50), (50, 0)] {
            let (rep, st) = run(&exchange(300, sa * MS as i64, sb * MS as i64, |_| false), &enr);
            assert!(rep.findings.is_empty(), "skew {sa}/{sb}: {rep:#?}");
            assert!(rep.drops.is_empty() && rep.conn_fails.is_empty());
            assert_eq!(st.matched, 600, "skew {sa}/{sb}: {st:?}");
        }
    }

    #[test]
    fn without_metadata_nodes_are_learned() {
        let (rep, _) = run(&exchange(300, 0, 0, |_| true), &Enricher::empty());
        let l = losses(&rep);
        assert_eq!(l.len(), 1);
        assert_eq!((&*l[0].from_node, &*l[0].to_node, l[0].packets), (B, A, 189));
        assert_eq!(l[0].inner_src_pod, None);
        assert_eq!(l[0].inner_src, ip(BACKEND));
    }

    #[test]
    fn in_flight_at_capture_end_is_not_lost() {
        let enr = enricher();
        // The last 50 replies (500 ms) never arrive: node-a's capture ends first.
        let (rep, st) = run(&exchange(300, 0, 0, |i| i >= 250), &enr);
        assert!(rep.findings.is_empty(), "{rep:#?}");
        assert_eq!(st.in_flight, 50, "{st:?}");
    }

    #[test]
    fn receiver_not_recording_is_not_lost() {
        let enr = enricher();
        // Only node-b's records: node-a is never observed.
        let recs: Vec<Record> = exchange(300, 0, 0, |_| true)
            .into_iter()
            .filter(|r| matches!(r, Record::Packet(p) if p.node.as_deref() == Some(B)))
            .collect();
        let (rep, st) = run(&recs, &enr);
        assert!(rep.findings.is_empty(), "{rep:#?}");
        assert_eq!(st.unresolved, 300, "{st:?}");
    }

    #[test]
    fn kernel_drop_on_receiver_is_a_drop_not_fabric_loss() {
        let enr = enricher();
        let mut recs = exchange(300, 0, 0, |_| true);
        // node-a's kernel dropped every reply, after decapsulation (the drop
        // carries the inner packet) for even ones, before it for odd ones.
        let mut drops = Vec::new();
        for r in &recs {
            if let Record::Packet(p) = r
                && p.hook == Hook::TcEgress
                && p.node.as_deref() == Some(B)
            {
                let h = parse_headers(&p.data, &[4789]).unwrap();
                let i = h.inner.unwrap();
                let data = if i.id.is_multiple_of(2) { p.data.get(50..).unwrap().to_vec() } else { p.data.to_vec() };
                drops.push(drop_rec(p.ts_ns + 2 * MS, A, "NETFILTER_DROP", &data));
            }
        }
        recs.extend(drops);
        recs.sort_by_key(Record::ts_ns);
        let (rep, st) = run(&recs, &enr);
        assert!(losses(&rep).is_empty(), "{rep:#?}");
        assert_eq!(st.kernel_dropped, 300, "{st:?}");
        assert_eq!(rep.drops.len(), 2, "{:#?}", rep.drops);
        for d in &rep.drops {
            assert_eq!((&*d.reason, d.count, d.node.as_deref()), ("NETFILTER_DROP", 150, Some(A)));
            assert_eq!(d.src_pod.as_deref(), Some("critical-app/backend"));
            assert_eq!(d.dst_pod.as_deref(), Some("critical-app/client"));
            assert_eq!((d.proto, d.dport), (Some("tcp"), Some(51_000)));
            assert!(!d.background);
        }
        let vx = rep.drops.iter().find(|d| d.inner.is_some()).unwrap();
        assert_eq!((vx.outer_src, vx.outer_dst, vx.outer_dport), (Some(ip(NB)), Some(ip(NA)), Some(4789)));
    }

    #[test]
    fn netfilter_drops_aggregate_by_inner_pods() {
        let enr = enricher();
        let mut a = DropAnalyzer::new(DropConfig::default());
        for i in 0..10u16 {
            let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, i, &tcp(50_000 + i, 8080, 1, 0x02));
            a.push(&drop_rec(u64::from(i) * MS, B, "NETFILTER_DROP", &vxlan(NA, NB, 33_000 + i, i, &inner)), &enr);
        }
        // Another flow and another reason: separate rows.
        let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, 1, &tcp(50_000, 9090, 1, 0x02));
        a.push(&drop_rec(20 * MS, B, "NETFILTER_DROP", &vxlan(NA, NB, 33_000, 1, &inner)), &enr);
        let plain = ipv4(CLIENT, BACKEND, PROTO_TCP, 1, &tcp(50_000, 8080, 1, 0x02));
        a.push(&drop_rec(21 * MS, B, "NO_SOCKET", &plain), &enr);
        // Host noise: no pod, no node.
        a.push(
            &drop_rec(22 * MS, B, "NOT_SPECIFIED", &ipv4("172.17.0.2", "172.17.0.1", PROTO_UDP, 0, &udp(1, 2, b""))),
            &enr,
        );
        a.push(&drop_rec(23 * MS, B, "NOT_SPECIFIED", &[0x00, 0x01, 0x08, 0x00]), &enr);
        let rep = a.finish(&enr);
        assert_eq!(rep.drops.len(), 5, "{:#?}", rep.drops);
        let d = &rep.drops[0];
        assert_eq!((&*d.reason, d.count), ("NETFILTER_DROP", 10));
        assert_eq!(d.src_pod.as_deref(), Some("critical-app/client"));
        assert_eq!(d.dst_pod.as_deref(), Some("critical-app/backend"));
        assert_eq!((d.src, d.dst, d.dport), (Some(ip(CLIENT)), Some(ip(BACKEND)), Some(8080)));
        assert_eq!(
            d.inner,
            Some(FlowTuple { src: ip(CLIENT), dst: ip(BACKEND), proto: "tcp", sport: 50_000, dport: 8080 })
        );
        assert_eq!((d.outer_src, d.outer_dst, d.outer_proto), (Some(ip(NA)), Some(ip(NB)), Some("udp")));
        assert_eq!((d.first_ts_ns, d.last_ts_ns), (0, 9 * MS));
        assert_eq!(d.samples.len(), 3);
        assert!(d.samples[0].contains("tcp 10.244.1.20:50000 > 10.244.2.30:8080 [S] in vxlan"), "{}", d.samples[0]);
        let bg: Vec<bool> = rep.drops.iter().map(|d| d.background).collect();
        assert_eq!(bg.iter().filter(|b| **b).count(), 2, "{:#?}", rep.drops);
        let j = serde_json::to_value(d).unwrap();
        assert_eq!(j["src_pod"], "critical-app/client");
        assert_eq!(j["inner"]["dport"], 8080);
        assert_eq!(j["dev"], serde_json::Value::Null);
    }

    fn state(old: u8, new: u8) -> ConnKind {
        ConnKind::State { old, new }
    }

    #[test]
    fn refused_carries_the_process_from_connect() {
        use tcp_state::{CLOSE, SYN_SENT};
        let enr = enricher();
        let mut a = DropAnalyzer::new(DropConfig::default());
        for (k, sock) in [(0u64, 0xffff_0001u64), (1, 0xffff_0002)] {
            let t = k * 100 * MS;
            let sport = 40_000 + k as u16;
            a.push(&conn(t, sock, state(CLOSE, SYN_SENT), 0, (BACKEND, 8081), true), &enr);
            a.push(
                &conn(t + MS, sock, ConnKind::ResetReceived { state: SYN_SENT }, sport, (BACKEND, 8081), false),
                &enr,
            );
            a.push(&conn(t + MS, sock, state(SYN_SENT, CLOSE), sport, (BACKEND, 8081), false), &enr);
        }
        let rep = a.finish(&enr);
        assert_eq!(rep.conn_fails.len(), 1, "{:#?}", rep.conn_fails);
        let c = &rep.conn_fails[0];
        assert_eq!((c.kind, c.count, c.syn_retransmits, c.pending), (ConnFailKind::Refused, 2, 0, false));
        assert_eq!(c.process, Some(ProcessBrief { pid: 42, comm: "curl".into() }));
        assert_eq!(c.src_pod.as_deref(), Some("critical-app/client"));
        assert_eq!(c.dst_pod.as_deref(), Some("critical-app/backend"));
        assert_eq!(c.node.as_deref(), Some(A));
        let j = serde_json::to_value(c).unwrap();
        assert_eq!(j["kind"], "refused");
        assert_eq!(j["dst"], "10.244.2.30:8081");
        assert_eq!(j["process"]["comm"], "curl");
        assert_eq!(a.stats().sockets, 0);
    }

    #[test]
    fn timeouts_resets_pending_and_aborted() {
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        let enr = enricher();
        let mut an = DropAnalyzer::new(DropConfig::default());
        let s = 1000 * MS;
        // Timeout: two SYN retransmits, then give-up.
        an.push(&conn(0, 1, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true), &enr);
        an.push(&conn(s, 1, ConnKind::Retransmit { state: SYN_SENT }, 40_001, (BACKEND, 8080), false), &enr);
        an.push(&conn(3 * s, 1, ConnKind::Retransmit { state: SYN_SENT }, 40_001, (BACKEND, 8080), false), &enr);
        an.push(&conn(3 * s + 1, 1, state(SYN_SENT, CLOSE), 40_001, (BACKEND, 8080), true), &enr);
        // Reset of an established connection.
        an.push(&conn(4 * s, 2, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true), &enr);
        an.push(&conn(4 * s + MS, 2, state(SYN_SENT, ESTABLISHED), 40_002, (BACKEND, 8080), false), &enr);
        an.push(&conn(5 * s, 2, ConnKind::ResetReceived { state: ESTABLISHED }, 40_002, (BACKEND, 8080), false), &enr);
        an.push(&conn(5 * s, 2, state(ESTABLISHED, CLOSE), 40_002, (BACKEND, 8080), false), &enr);
        // Aborted connect (closed at once, no retransmit): not a failure.
        an.push(&conn(6 * s, 3, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true), &enr);
        an.push(&conn(6 * s + MS, 3, state(SYN_SENT, CLOSE), 40_003, (BACKEND, 8080), true), &enr);
        // Successful connect: nothing.
        an.push(&conn(6 * s, 5, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true), &enr);
        an.push(&conn(6 * s + MS, 5, state(SYN_SENT, ESTABLISHED), 40_005, (BACKEND, 8080), false), &enr);
        // Still connecting at the end with a retransmit: pending timeout.
        an.push(&conn(7 * s, 4, state(CLOSE, SYN_SENT), 0, ("10.244.1.10", 53), true), &enr);
        an.push(&conn(8 * s, 4, ConnKind::Retransmit { state: SYN_SENT }, 40_004, ("10.244.1.10", 53), false), &enr);
        let rep = an.finish(&enr);
        let find = |k: ConnFailKind, p: bool| rep.conn_fails.iter().find(|c| c.kind == k && c.pending == p);
        let t = find(ConnFailKind::Timeout, false).expect("timeout");
        assert_eq!((t.count, t.syn_retransmits, t.dst.port), (1, 2, 8080));
        assert_eq!(t.process.as_ref().map(|p| p.pid), Some(42));
        let r = find(ConnFailKind::Reset, false).expect("reset");
        assert_eq!(r.process.as_ref().map(|p| p.comm.as_str()), Some("curl"));
        assert_eq!(r.src_pod.as_deref(), Some("critical-app/client"));
        let p = find(ConnFailKind::Timeout, true).expect("pending");
        assert_eq!(p.dst_pod.as_deref(), Some("kube-system/kube-dns"));
        assert_eq!(rep.conn_fails.len(), 3, "{:#?}", rep.conn_fails);
        assert_eq!(an.stats().connects_aborted, 1);
    }

    #[test]
    fn overlay_wrong_source() {
        let enr = enricher();
        let mut a = DropAnalyzer::new(DropConfig::default());
        let inner = ipv4(BACKEND, CLIENT, PROTO_TCP, 1, &tcp(8080, 51_000, 1, 0x12));
        for i in 0..5u16 {
            a.push(&pkt(u64::from(i) * MS, B, Hook::TcEgress, &vxlan("10.0.0.99", NA, 41_000, i, &inner)), &enr);
            // Right source from node-a: fine.
            a.push(&pkt(u64::from(i) * MS, A, Hook::TcEgress, &vxlan(NA, NB, 41_000, i, &inner)), &enr);
        }
        let rep = a.finish(&enr);
        let o: Vec<&OverlayWrongSource> = rep
            .findings
            .iter()
            .filter_map(|f| match f {
                DropFinding::OverlayWrongSource(o) => Some(o),
                DropFinding::FabricLoss(_) => None,
            })
            .collect();
        assert_eq!(o.len(), 1, "{rep:#?}");
        assert_eq!((&*o[0].node, o[0].outer_src, o[0].packets), (B, ip("10.0.0.99"), 5));
        assert_eq!(o[0].expected, vec![ip(NB)]);
        assert_eq!(o[0].to_node.as_deref(), Some(A));
        let j = serde_json::to_value(&rep.findings[0]).unwrap();
        assert_eq!(j["kind"], "overlay_wrong_source");
    }

    #[test]
    fn caps_bound_memory_and_count_evictions() {
        let enr = enricher();
        let cfg = DropConfig { max_pending: 100, max_sockets: 10, ..DropConfig::default() };
        let mut a = DropAnalyzer::new(cfg);
        for i in 0..1000u32 {
            let inner = ipv4(CLIENT, BACKEND, PROTO_UDP, i as u16, &udp(5000, 53, b"x"));
            a.push(&pkt(u64::from(i), A, Hook::TcEgress, &vxlan(NA, NB, 1, 0, &inner)), &enr);
            a.push(
                &conn(u64::from(i), u64::from(i), state(tcp_state::CLOSE, tcp_state::SYN_SENT), 0, (BACKEND, 1), true),
                &enr,
            );
        }
        let st = a.stats();
        assert!(st.pending <= 100 && st.evicted >= 900, "{st:?}");
        assert!(st.sockets <= 10 && st.sockets_evicted >= 990, "{st:?}");
        assert!(a.socks_q.len() <= 20);
    }

    #[test]
    fn garbage_never_panics() {
        let enr = enricher();
        let mut a = DropAnalyzer::new(DropConfig::default());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 140];
        let good = vxlan(NA, NB, 1, 2, &ipv4(CLIENT, BACKEND, PROTO_TCP, 3, &tcp(1, 2, 3, 4)));
        for i in 0..20_000u64 {
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = (x as usize) % buf.len();
            let data: Vec<u8> = if i % 3 == 0 {
                let mut g = good.clone();
                let at = (x as usize >> 8) % g.len();
                g[at] = buf[0];
                g.truncate(n.max(1));
                g
            } else {
                buf[0] = if i % 2 == 0 { 0x45 } else { 0x60 };
                buf[..n].to_vec()
            };
            let hook = if i % 2 == 0 { Hook::TcEgress } else { Hook::TcIngress };
            a.push(&pkt(i * MS, if i % 4 < 2 { A } else { B }, hook, &data), &enr);
            a.push(&drop_rec(i * MS, B, "X", &data), &enr);
        }
        let _ = a.finish(&enr);
    }

    #[test]
    fn gro_merged_ingress_covers_later_segments() {
        let enr = enricher();
        let mut recs = Vec::new();
        let s = 1000 * MS;
        // Both nodes observed from 0 to 3 s.
        for (t, n) in [(0, A), (0, B), (3 * s, A), (3 * s, B)] {
            recs.push(pkt(t, n, Hook::TcEgress, &ipv4(NA, "192.168.77.53", PROTO_UDP, t as u16, &udp(1, 53, b""))));
        }
        let seg = |k: u16, len: usize| {
            let mut t = tcp(51_000, 8080, 1000 + 1400 * u32::from(k), 0x10);
            t.extend(vec![0u8; len]);
            vxlan(NA, NB, 40_000, 10 + k, &ipv4(CLIENT, BACKEND, PROTO_TCP, 5 + k, &t))
        };
        for k in 0..3 {
            recs.push(pkt(s + u64::from(k), A, Hook::TcEgress, &seg(k, 1400)));
        }
        let merged = seg(0, 4200);
        assert!(merged.len() > GRO_MIN_LEN as usize);
        recs.push(pkt(s + MS, B, Hook::TcIngress, &merged));
        recs.sort_by_key(Record::ts_ns);
        let (rep, st) = run(&recs, &enr);
        assert!(rep.findings.is_empty(), "{rep:#?}");
        assert_eq!(st.matched, 3, "{st:?}");
        // Without the merged ingress the three segments are lost.
        recs.retain(|r| !matches!(r, Record::Packet(p) if p.hook == Hook::TcIngress));
        let (rep, _) = run(&recs, &enr);
        assert_eq!(losses(&rep).first().map(|l| l.packets), Some(3), "{rep:#?}");
    }

    /// node-a sends 200 packets to node-b over 2 s, none arrive; node-b is
    /// quiet in between (records only at 0 s and at `b_end`).
    fn quiet_receiver(b_end: u64, lost_at: Option<u64>, b_hook: Hook) -> Vec<Record> {
        let s = 1000 * MS;
        let mut recs = vec![
            pkt(0, B, b_hook, &ipv4(NB, "192.168.77.53", PROTO_UDP, 0, &udp(1, 53, b""))),
            pkt(b_end, B, b_hook, &ipv4(NB, "192.168.77.53", PROTO_UDP, 1, &udp(1, 53, b""))),
        ];
        for i in 0..200u32 {
            let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, i as u16, &tcp(51_000, 8080, i, 0x02));
            recs.push(pkt(s + u64::from(i) * 10 * MS, A, Hook::TcEgress, &vxlan(NA, NB, 40_000, 0, &inner)));
        }
        if let Some(t) = lost_at {
            recs.push(Record::Lost { ts_ns: t, count: 10, node: Some(node(B)) });
        }
        recs.sort_by_key(Record::ts_ns);
        recs
    }

    #[test]
    fn quiet_receiver_is_judged_once_its_capture_passes() {
        let enr = enricher();
        let s = 1000 * MS;
        let (rep, st) = run(&quiet_receiver(5 * s, None, Hook::TcEgress), &enr);
        let l = losses(&rep);
        assert_eq!(l.len(), 1, "{rep:#?}");
        assert_eq!((&*l[0].from_node, &*l[0].to_node, l[0].packets), (A, B, 200));
        assert_eq!(l[0].inner_dst_pod.as_deref(), Some("critical-app/backend"));
        assert_eq!(st.undecided, 0);
        // node-b's capture ends right after the traffic: in flight, not lost.
        let (rep, st) = run(&quiet_receiver(3 * s, None, Hook::TcEgress), &enr);
        let lost: u64 = losses(&rep).iter().map(|l| l.packets).sum();
        assert_eq!(lost + st.in_flight, 200, "{st:?}");
        assert_eq!(st.in_flight, 99, "{st:?}");
        // node-b lost trace events at 1.5 s: absence proves nothing around then.
        let (rep, st) = run(&quiet_receiver(5 * s, Some(s + 500 * MS), Hook::TcEgress), &enr);
        let lost: u64 = losses(&rep).iter().map(|l| l.packets).sum();
        assert!(st.suppressed_lost > 0 && lost + st.suppressed_lost == 200, "{st:?}");
        // node-b recorded DNS only, no underlay: its silence proves nothing.
        let (rep, st) = run(&quiet_receiver(5 * s, None, Hook::SocketEgress), &enr);
        assert!(rep.findings.is_empty(), "{rep:#?}");
        assert_eq!(st.not_observed, 200, "{st:?}");
    }

    /// `cargo test --release -p tracer --lib throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand"]
    fn throughput() {
        let enr = enricher();
        let mut recs = Vec::new();
        for i in 0..500_000u32 {
            let t = u64::from(i) * 10_000;
            let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, i as u16, &tcp(51_000, 8080, i, 0x10));
            let p = vxlan(NA, NB, 40_000, (i >> 3) as u16, &inner);
            recs.push(pkt(t, A, Hook::TcEgress, &p));
            recs.push(pkt(t + 500_000, B, Hook::TcIngress, &p));
        }
        recs.sort_by_key(Record::ts_ns);
        let start = std::time::Instant::now();
        let (rep, st) = run(&recs, &enr);
        let el = start.elapsed();
        eprintln!(
            "{} packets in {el:?}: {:.0} ns/packet; {st:?}",
            recs.len(),
            el.as_nanos() as f64 / recs.len() as f64
        );
        assert!(rep.findings.is_empty());
        assert_eq!(st.matched, 500_000);
    }

    #[test]
    fn fingerprint_ignores_ttl_and_checksum_but_not_inner_seq() {
        let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, 0, &tcp(1, 2, 100, 0x10));
        let p = vxlan(NA, NB, 40_000, 0, &inner);
        let mut q = p.clone();
        q[8] = 63; // TTL
        q[10] = 0xab; // checksum
        let h = |d: &[u8]| parse_headers(d, &[4789]).unwrap();
        assert_eq!(h(&p).fingerprint(), h(&q).fingerprint());
        let other = vxlan(NA, NB, 40_000, 0, &ipv4(CLIENT, BACKEND, PROTO_TCP, 0, &tcp(1, 2, 101, 0x10)));
        assert_ne!(h(&p).fingerprint(), h(&other).fingerprint());
        assert_eq!(h(&p).key(), h(&inner).key());
        assert_eq!(h(&p).inner.unwrap().t.dport, 2);
    }
}
