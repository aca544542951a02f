//! Fabric correlation: underlay (tc) packets of every node matched by
//! fingerprint, egress against ingress; what left one node for another and
//! never arrived, with no kernel drop on the way, is a [`FabricLoss`]. Also
//! the node registry every drops stage shares, and the GRO cover (segments
//! a receiving NIC merged count as delivered).

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use super::{DropConfig, DropStats, NO_NODE, Who, overlay::OverlayCheck, pod_string, report, who};
use crate::{
    analyze::Detector,
    decode::packet::{Headers, PROTO_TCP, proto_name},
    enrich::Enricher,
    hash::FastMap,
    model::drops::{DropFinding, FabricLoss},
};

/// Nodes tracked; records of further nodes are treated as node-less.
pub(super) const MAX_NODES: usize = 1024;
/// Learned address → node entries.
const MAX_LEARNED: usize = 65_536;
/// `Lost` marks remembered per node (oldest forgotten first).
pub(super) const MAX_LOST_MARKS: usize = 4096;
/// Distinct delivered paths counted for the "partial loss" hint.
const MAX_PATHS: usize = 65_536;
/// Ingress packets longer than this may be GRO super-packets (segments the
/// receiving NIC merged before tc saw them): their TCP range is remembered so
/// that the segments after the first, sent and fingerprinted separately,
/// count as delivered.
pub(super) const GRO_MIN_LEN: u32 = 1600;
/// TCP flows with remembered GRO ranges.
const MAX_GRO_FLOWS: usize = 65_536;
/// Ranges remembered per flow.
const GRO_RANGES: usize = 8;

pub(super) fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified() || a.octets()[3] == 255),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}

/// Every node seen, by index (records carry names; the stages keep `u16`s).
#[derive(Default)]
pub(super) struct Nodes {
    pub(super) list: Vec<NodeState>,
    pub(super) idx: HashMap<Arc<str>, u16>,
    last: Option<(Arc<str>, u16)>,
    /// Underlay addresses seen in use by each node (egress source, ingress destination).
    pub(super) learned: FastMap<IpAddr, u16>,
}

impl Nodes {
    /// The index of node `name` (registered on first sight), or [`NO_NODE`]
    /// (no name, or more than [`MAX_NODES`] nodes). `now`: when its
    /// addresses are read from the metadata.
    pub(super) fn index(&mut self, name: Option<&Arc<str>>, now: u64, enr: &Enricher) -> u16 {
        let Some(name) = name else { return NO_NODE };
        if let Some((last, i)) = &self.last
            && (Arc::ptr_eq(last, name) || **last == **name)
        {
            return *i;
        }
        let i = if let Some(i) = self.idx.get(&**name) {
            *i
        } else {
            if self.list.len() >= MAX_NODES {
                return NO_NODE;
            }
            let i = self.list.len() as u16;
            self.list.push(NodeState {
                name: name.clone(),
                first_ts: u64::MAX,
                last_ts: 0,
                lost: VecDeque::new(),
                expected: enr.node_addresses(name),
                expected_at: now,
                tc_seen: false,
            });
            self.idx.insert(name.clone(), i);
            i
        };
        self.last = Some((name.clone(), i));
        i
    }

    pub(super) fn name(&self, i: u16) -> Option<Arc<str>> {
        self.list.get(usize::from(i)).map(|n| n.name.clone())
    }

    pub(super) fn learn(&mut self, ip: IpAddr, node: u16) {
        if !is_unicast(ip) || self.learned.len() >= MAX_LEARNED {
            return;
        }
        self.learned.entry(ip).or_insert(node);
    }
}

/// What is known of one observed node.
pub(super) struct NodeState {
    pub(super) name: Arc<str>,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    /// Timestamps of `Lost` records (trace events lost: absence proves nothing then).
    pub(super) lost: VecDeque<u64>,
    /// The node's addresses according to the metadata.
    pub(super) expected: Vec<IpAddr>,
    /// When `expected` was read (metadata may change while live).
    pub(super) expected_at: u64,
    /// Underlay (tc) records seen from this node: its capture had the
    /// underlay hooks, so a missing ingress there means something.
    pub(super) tc_seen: bool,
}

#[derive(Clone, Copy)]
pub(super) struct Pending {
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
pub(super) struct LossKey {
    pub(super) from: u16,
    pub(super) to: u16,
    pub(super) proto: u8,
    pub(super) dport: u16,
    pub(super) src: Who,
    pub(super) dst: Who,
}

pub(super) struct LossAgg {
    pub(super) packets: u64,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    pub(super) min_len: u32,
    pub(super) hdr: Headers,
}

/// Delivered packets per (from, to, proto, dport): count and largest size.
type PathKey = (u16, u16, u8, u16);

/// One underlay (tc) packet, parsed, for [`FabricCorrelator`].
#[derive(Clone, Copy, Debug)]
pub struct UnderlayPacket {
    /// Index of the observing node.
    pub node: u16,
    /// Time (the observing node's clock).
    pub ts_ns: u64,
    /// Left the node (tc egress), else arrived (tc ingress).
    pub egress: bool,
    /// `skb->len`.
    pub wire_len: u32,
    /// Its headers; `None` when they could not be read (counted).
    pub hdr: Option<Headers>,
}

/// What fabric correlation consumes.
#[derive(Clone, Copy, Debug)]
pub enum FabricInput {
    /// An underlay packet.
    Packet(UnderlayPacket),
    /// A kernel dropped this packet: an egress of it that never arrives was
    /// not lost in the network.
    KernelDrop {
        /// When.
        ts_ns: u64,
        /// Its headers.
        hdr: Headers,
    },
    /// Node `node` lost trace events at `ts_ns`: its silence proves nothing then.
    Lost {
        /// Node index.
        node: u16,
        /// When.
        ts_ns: u64,
    },
}

/// Fabric correlation as a [`Detector`]: [`FabricInput`]s in, [`DropFinding`]s
/// (fabric losses, wrong-source overlay) out at the end (or by
/// [`Self::drain_losses`]).
pub struct FabricCorrelator {
    enr: Enricher,
    pub(super) s: Fabric,
}

/// The correlator's state (apart from the metadata, so methods can borrow both).
pub(super) struct Fabric {
    cfg: DropConfig,
    /// Seeded per correlator: fingerprints are keyed by packet data.
    hasher: foldhash::fast::RandomState,
    pub(super) now: u64,
    pub(super) nodes: Nodes,
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
    overlay: OverlayCheck,
    pub(super) stats: DropStats,
}

impl FabricCorrelator {
    /// A correlator with these limits, looking pods and nodes up in `enr`.
    #[must_use]
    pub fn new(cfg: DropConfig, enr: Enricher) -> Self {
        Self {
            enr,
            s: Fabric {
                cfg,
                hasher: foldhash::fast::RandomState::default(),
                now: 0,
                nodes: Nodes::default(),
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
                overlay: OverlayCheck::default(),
                stats: DropStats::default(),
            },
        }
    }

    /// Registers node `name` (see [`Nodes::index`]).
    pub(super) fn node(&mut self, name: Option<&Arc<str>>) -> u16 {
        self.s.nodes.index(name, self.s.now, &self.enr)
    }

    /// Counters so far (pending sizes are current).
    #[must_use]
    pub fn stats(&self) -> DropStats {
        DropStats {
            pending: self.s.pending.len() as u64,
            pending_ingress: self.s.early.len() as u64,
            undecided: self.s.undecided_len as u64,
            ..self.s.stats
        }
    }

    /// Fabric losses decided so far (their packets' time to arrive has
    /// passed), taken out of the correlator; wrong-source overlay rows are
    /// dropped. `now_ns`: every node's records up to this time have been pushed.
    pub fn drain_losses(&mut self, now_ns: u64) -> Vec<FabricLoss> {
        self.s.now = self.s.now.max(now_ns);
        self.s.maintain(&self.enr);
        let mut out = Vec::new();
        self.s.finding_rows(&self.enr, &mut out);
        out.into_iter()
            .filter_map(|f| match f {
                DropFinding::FabricLoss(l) => Some(l),
                DropFinding::OverlayWrongSource(_) => None,
            })
            .collect()
    }
}

impl Detector for FabricCorrelator {
    type Input = FabricInput;
    type Output = DropFinding;

    fn push(&mut self, input: FabricInput, _out: &mut Vec<DropFinding>) {
        match input {
            FabricInput::Packet(p) => self.s.packet(&p, &self.enr),
            FabricInput::KernelDrop { ts_ns, hdr } => self.s.kernel_drop(ts_ns, &hdr),
            FabricInput::Lost { node, ts_ns } => {
                if let Some(n) = self.s.nodes.list.get_mut(usize::from(node)) {
                    if n.lost.len() >= MAX_LOST_MARKS {
                        n.lost.pop_front();
                    }
                    n.lost.push_back(ts_ns);
                }
            }
        }
    }

    /// Judges what can no longer match; losses stay aggregated until
    /// [`Self::finish`] (or [`FabricCorrelator::drain_losses`]).
    fn expire(&mut self, now_ns: u64, _out: &mut Vec<DropFinding>) {
        self.s.now = self.s.now.max(now_ns);
        self.s.maintain(&self.enr);
    }

    fn finish(&mut self, out: &mut Vec<DropFinding>) {
        self.s.finish(&self.enr);
        self.s.finding_rows(&self.enr, out);
    }
}

impl Fabric {
    fn packet(&mut self, p: &UnderlayPacket, enr: &Enricher) {
        self.stats.packets += 1;
        let Some(hdr) = p.hdr else {
            self.stats.unparsed += 1;
            return;
        };
        let node = p.node;
        let Some(n) = self.nodes.list.get_mut(usize::from(node)) else { return };
        n.tc_seen = true;
        let fp = hdr.fingerprint(&self.hasher);
        let ts = p.ts_ns;
        if p.egress {
            self.nodes.learn(hdr.outer.t.src, node);
            if hdr.inner.is_some() {
                self.overlay.check(&mut self.nodes, &hdr, node, ts, self.now, enr, &mut self.stats);
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
                Pending {
                    first_ts: ts,
                    last_ts: ts,
                    count: 1,
                    node,
                    wire_len: p.wire_len,
                    key: hdr.key(&self.hasher),
                    hdr,
                },
            );
            self.pending_q.push_back((ts, fp));
            if self.pending_q.len() > self.cfg.max_pending.saturating_mul(2) {
                self.evict_pending();
            }
        } else {
            if is_unicast(hdr.outer.t.dst) {
                self.nodes.learn(hdr.outer.t.dst, node);
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
        let flow = hdr.flow_hash(&self.hasher);
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
        let Some(g) = self.gro.get(&e.hdr.flow_hash(&self.hasher)) else { return false };
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

    fn kernel_drop(&mut self, ts: u64, h: &Headers) {
        // Either identity may be what an egress elsewhere carried: the
        // whole packet before decapsulation, the inner one after.
        for fp in [h.fingerprint(&self.hasher), h.key(&self.hasher)] {
            if self.dropped.len() < self.cfg.max_pending {
                self.dropped.insert(fp, ts);
                self.dropped_q.push_back((ts, fp));
            }
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
                let last = self.nodes.list.get(to).map_or(0, |n| n.last_ts);
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
            Some(name) => self.nodes.idx.get(&*name).copied(),
            None => self.nodes.learned.get(&dst).copied(),
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
        let Some(b) = self.nodes.list.get(usize::from(to)) else { return };
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
            |i: u16| self.nodes.list.get(usize::from(i)).is_some_and(|s| s.lost.iter().any(|t| (lo..=hi).contains(t)));
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

    /// Judges everything still pending against the whole input and forgets
    /// the correlation state.
    fn finish(&mut self, enr: &Enricher) {
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
    }

    fn finding_rows(&mut self, enr: &Enricher, out: &mut Vec<DropFinding>) {
        let mut losses: Vec<(LossKey, LossAgg)> = self.losses.drain().collect();
        losses.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.1.first_ts.cmp(&b.1.first_ts)));
        let mut between: HashMap<(u16, u16), u64> = HashMap::new();
        for (p, v) in &self.delivered {
            *between.entry((p.0, p.1)).or_default() += v.0;
        }
        for (k, a) in losses {
            let (Some(from), Some(to)) = (self.nodes.name(k.from), self.nodes.name(k.to)) else { continue };
            let (delivered, max_ok_len) =
                self.delivered.get(&(k.from, k.to, k.proto, k.dport)).copied().unwrap_or((0, 0));
            let reverse = between.get(&(k.to, k.from)).copied().unwrap_or(0);
            let (cause, advice) = report::loss_text(&k, &a, &from, &to, delivered, max_ok_len, reverse, enr);
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
        self.overlay.findings(&self.nodes, enr, out);
    }
}
