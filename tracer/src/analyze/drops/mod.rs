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
//!
//! The stages, each a [`Detector`] with typed inputs and outputs, composed
//! by [`DropAnalyzer`] (itself the one drops [`Detector`] of the pipeline):
//! - [`kernel`]: [`KernelDrops`], kernel drops → [`DropRow`]s;
//! - [`conn`]: [`ConnTracker`], the TCP state machine → [`ConnFailure`]s,
//!   aggregated by [`ConnRows`] into [`ConnFail`]s;
//! - [`fabric`]: [`FabricCorrelator`], the node registry, fingerprint
//!   matching and GRO cover → [`FabricLoss`]es, with the [`overlay`]
//!   wrong-source check → [`OverlayWrongSource`];
//! - [`report`]: the words (samples, causes, advice, table lines).
//!
//! Headers come from the lax parser [`crate::decode::packet::parse_lax`];
//! the output types live in [`crate::model::drops`].

pub mod conn;
pub mod fabric;
pub mod kernel;
pub mod overlay;
pub mod report;

use std::{net::IpAddr, sync::Arc};

use serde::Serialize;

pub use self::{
    conn::{ConnFailure, ConnInput, ConnRows, ConnTracker},
    fabric::{FabricCorrelator, FabricInput, UnderlayPacket},
    kernel::{KernelDrop, KernelDrops},
};
use crate::{
    analyze::Detector,
    decode::packet::{Headers, parse_lax},
    enrich::{Enricher, PodRef},
    event::{Hook, Record},
};
pub use crate::{
    decode::packet::proto_name,
    model::drops::{
        ConnFail, ConnFailKind, DropFinding, DropOutput, DropReport, DropRow, FabricLoss, FlowTuple,
        OverlayWrongSource, ProcessBrief,
    },
};

pub(super) const MS: u64 = 1_000_000;
/// How often (in record time) expiry runs: often enough that the pending
/// maps stay near their natural size, rare enough to cost nothing.
const TICK_NS: u64 = 50 * MS;
const NO_NODE: u16 = u16::MAX;
/// UDP destination ports carrying VXLAN by default (IANA 4789, flannel's old 8472).
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];

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
            vxlan_ports: VXLAN_PORTS.to_vec(),
        }
    }
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

impl DropStats {
    /// Field-wise sum: each stage counts its own fields.
    fn add(&mut self, o: &Self) {
        let Self {
            packets,
            unparsed,
            matched,
            pending,
            pending_ingress,
            undecided,
            evicted,
            in_flight,
            unresolved,
            not_observed,
            kernel_dropped,
            suppressed_lost,
            drops,
            conn_events,
            sockets,
            sockets_evicted,
            connects_aborted,
            rows_dropped,
        } = o;
        self.packets += packets;
        self.unparsed += unparsed;
        self.matched += matched;
        self.pending += pending;
        self.pending_ingress += pending_ingress;
        self.undecided += undecided;
        self.evicted += evicted;
        self.in_flight += in_flight;
        self.unresolved += unresolved;
        self.not_observed += not_observed;
        self.kernel_dropped += kernel_dropped;
        self.suppressed_lost += suppressed_lost;
        self.drops += drops;
        self.conn_events += conn_events;
        self.sockets += sockets;
        self.sockets_evicted += sockets_evicted;
        self.connects_aborted += connects_aborted;
        self.rows_dropped += rows_dropped;
    }
}

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

/// [`parse_lax`] for the fuzz target `fuzz/fuzz_targets/packet_parse.rs`:
/// whether headers were found, and whether a VXLAN inner packet was. Not an API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_parse_headers(data: &[u8], vxlan_ports: &[u16]) -> Option<bool> {
    parse_lax(data, vxlan_ports).map(|h| {
        let _ = h.innermost();
        h.inner.is_some()
    })
}

/// Kernel drops, failed connections and cross-node loss from time-ordered
/// records: the drops stages composed. Feed every record with
/// [`Self::push`], then call [`Self::finish`]; or use it as the pipeline's
/// drops [`Detector`].
pub struct DropAnalyzer {
    vxlan_ports: Vec<u16>,
    now: u64,
    next_tick: u64,
    fabric: FabricCorrelator,
    kernel: KernelDrops,
    conn: ConnTracker,
    conn_rows: ConnRows,
    fails: Vec<ConnFailure>,
    findings: Vec<DropFinding>,
}

impl DropAnalyzer {
    /// An analyzer with these limits, looking pods and nodes up in `enr`
    /// (shared: snapshots applied to it later are seen).
    #[must_use]
    pub fn new(cfg: DropConfig, enr: &Enricher) -> Self {
        Self {
            vxlan_ports: cfg.vxlan_ports.clone(),
            now: 0,
            next_tick: 0,
            kernel: KernelDrops::new(cfg.max_rows, enr.clone()),
            conn: ConnTracker::new(cfg.max_sockets),
            conn_rows: ConnRows::new(cfg.max_rows, enr.clone()),
            fabric: FabricCorrelator::new(cfg, enr.clone()),
            fails: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// Counters so far (pending sizes are current).
    #[must_use]
    pub fn stats(&self) -> DropStats {
        let mut s = self.fabric.stats();
        s.add(&self.kernel.stats);
        s.add(&self.conn.stats());
        s.add(&self.conn_rows.stats);
        s
    }

    /// Declares that `node` was being observed from `from_ns` to `to_ns`
    /// (a recorder's coverage: it saw nothing, but it was looking), with tc on
    /// its underlay when `tc`. Without this, a node's span is inferred from its
    /// own records, and a node that received nothing would look unobserved.
    pub fn observed(&mut self, node: &str, from_ns: u64, to_ns: u64, tc: bool) {
        let name: Arc<str> = node.into();
        let i = self.fabric.node(Some(&name));
        if let Some(n) = self.fabric.s.nodes.list.get_mut(usize::from(i)) {
            n.first_ts = n.first_ts.min(from_ns);
            n.last_ts = n.last_ts.max(to_ns);
            n.tc_seen |= tc;
        }
    }

    /// Feeds one record (records must come in time order, give or take
    /// `reorder_slack_ns`).
    pub fn push(&mut self, rec: &Record) {
        let ts = rec.ts_ns();
        self.now = self.now.max(ts);
        self.fabric.s.now = self.now;
        let node_name = match rec {
            Record::Packet(p) => p.node.as_ref(),
            Record::Drop(d) => d.node.as_ref(),
            Record::Conn(c) => c.node.as_ref(),
            Record::Lost { node, .. } => node.as_ref(),
            Record::ResolvConf(_) => None,
        };
        let node = self.fabric.node(node_name);
        if let Some(n) = self.fabric.s.nodes.list.get_mut(usize::from(node)) {
            n.first_ts = n.first_ts.min(ts);
            n.last_ts = n.last_ts.max(ts);
        }
        match rec {
            Record::Packet(p) if matches!(p.hook, Hook::TcEgress | Hook::TcIngress) => {
                let hdr = parse_lax(&p.data, &self.vxlan_ports);
                let p = UnderlayPacket {
                    node,
                    ts_ns: p.ts_ns,
                    egress: p.hook == Hook::TcEgress,
                    wire_len: p.wire_len,
                    hdr,
                };
                self.fabric.push(FabricInput::Packet(p), &mut self.findings);
            }
            Record::Drop(d) => {
                let hdr = parse_lax(&d.data, &self.vxlan_ports);
                if let Some(h) = hdr {
                    self.fabric.push(FabricInput::KernelDrop { ts_ns: d.ts_ns, hdr: h }, &mut self.findings);
                }
                let learned = &self.fabric.s.nodes.learned;
                let known_underlay = hdr.as_ref().is_some_and(|h: &Headers| {
                    [h.outer.t.src, h.outer.t.dst, h.innermost().t.src, h.innermost().t.dst]
                        .iter()
                        .any(|ip| learned.contains_key(ip))
                });
                let input = KernelDrop {
                    node,
                    node_name: self.fabric.s.nodes.name(node),
                    ts_ns: d.ts_ns,
                    reason: d.reason_name.clone(),
                    ifindex: d.ifindex,
                    netns: d.netns_ino,
                    wire_len: d.wire_len,
                    hdr,
                    known_underlay,
                    count: d.count,
                };
                self.kernel.push(input, &mut Vec::new());
            }
            Record::Conn(c) => {
                self.conn.push(ConnInput { node, rec: c.clone() }, &mut self.fails);
                for f in self.fails.drain(..) {
                    self.conn_rows.push(f);
                }
            }
            Record::Lost { ts_ns, .. } => {
                self.fabric.push(FabricInput::Lost { node, ts_ns: *ts_ns }, &mut self.findings);
            }
            _ => {}
        }
        if self.now >= self.next_tick {
            self.next_tick = self.now.saturating_add(TICK_NS);
            self.fabric.expire(self.now, &mut self.findings);
        }
    }

    /// Fabric losses decided so far (their packets' time to arrive has
    /// passed), taken out of the analyzer: a long-running agent exports them
    /// as they happen instead of at the end of a run. `now_ns`: every node's
    /// records up to this wall-clock time have been pushed.
    pub fn drain_fabric_losses(&mut self, now_ns: u64) -> Vec<FabricLoss> {
        self.now = self.now.max(now_ns);
        self.fabric.drain_losses(now_ns)
    }

    /// Judges everything still pending against the whole input and returns
    /// the report. Connects still in `SYN_SENT` with SYN retransmits are
    /// reported as pending timeouts. The analyzer is empty afterwards (its
    /// [`Self::stats`] remain).
    pub fn finish(&mut self) -> DropReport {
        let mut findings = std::mem::take(&mut self.findings);
        self.fabric.finish(&mut findings);
        self.conn.finish(&mut self.fails);
        for f in self.fails.drain(..) {
            self.conn_rows.push(f);
        }
        let mut drops = Vec::new();
        self.kernel.finish(&mut drops);
        let mut conn_fails = Vec::new();
        let nodes = &self.fabric.s.nodes;
        self.conn_rows.rows(|i| nodes.name(i), &mut conn_fails);
        DropReport { drops, conn_fails, findings }
    }
}

/// The drops stage of the pipeline: records in; drop rows, failed
/// connections and findings out at the end of input.
impl Detector for DropAnalyzer {
    type Input = Record;
    type Output = DropOutput;

    fn push(&mut self, input: Record, _out: &mut Vec<DropOutput>) {
        Self::push(self, &input);
    }

    fn expire(&mut self, now_ns: u64, out: &mut Vec<DropOutput>) {
        self.now = self.now.max(now_ns);
        let mut f = Vec::new();
        self.fabric.expire(self.now, &mut f);
        out.extend(f.into_iter().map(DropOutput::Finding));
    }

    fn finish(&mut self, out: &mut Vec<DropOutput>) {
        out.extend(Self::finish(self).into_outputs());
    }
}

#[cfg(test)]
mod tests;
