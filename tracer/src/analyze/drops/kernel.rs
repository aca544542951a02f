//! Kernel drops (`skb:kfree_skb`) aggregated into [`DropRow`]s by node,
//! reason, pods (the inner packet's, for VXLAN) and port.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{DropStats, Who, pod_string, report, who};
use crate::{
    analyze::Detector,
    decode::packet::{Headers, proto_name},
    enrich::{Enricher, PodRef},
    model::drops::DropRow,
};

/// Samples kept per drop row.
const MAX_SAMPLES: usize = 3;

/// One kernel drop, parsed, for [`KernelDrops`].
#[derive(Clone, Debug)]
pub struct KernelDrop {
    /// Index of the node that dropped it.
    pub node: u16,
    /// Its name.
    pub node_name: Option<Arc<str>>,
    /// When.
    pub ts_ns: u64,
    /// Drop reason name.
    pub reason: Arc<str>,
    /// Interface index of `skb->dev`.
    pub ifindex: u32,
    /// Network namespace inode where it was dropped.
    pub netns: u32,
    /// `skb->len`.
    pub wire_len: u32,
    /// Its headers (`None`: not IP, or cut before the addresses).
    pub hdr: Option<Headers>,
    /// One of its addresses is an underlay address some node was seen using.
    pub known_underlay: bool,
    /// Drops it stands for (the record's `count`: repeats folded in the kernel).
    pub count: u32,
}

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
    node: Option<Arc<str>>,
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

/// Kernel-drop aggregation as a [`Detector`]: [`KernelDrop`]s in, [`DropRow`]s
/// out at the end, most frequent first.
pub struct KernelDrops {
    enr: Enricher,
    max_rows: usize,
    rows: HashMap<DropKey, DropAgg>,
    pub(super) stats: DropStats,
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

impl KernelDrops {
    /// At most `max_rows` rows (new keys beyond are counted, not kept).
    #[must_use]
    pub fn new(max_rows: usize, enr: Enricher) -> Self {
        Self { enr, max_rows, rows: HashMap::new(), stats: DropStats::default() }
    }
}

impl Detector for KernelDrops {
    type Input = KernelDrop;
    type Output = DropRow;

    fn push(&mut self, d: KernelDrop, _out: &mut Vec<DropRow>) {
        let enr = &self.enr;
        let n = u64::from(d.count);
        self.stats.drops += n;
        let hdr = d.hdr;
        let inner = hdr.as_ref().map(Headers::innermost);
        let key = DropKey {
            node: d.node,
            reason: d.reason.clone(),
            src: who(enr, inner.map(|l| l.t.src)),
            dst: who(enr, inner.map(|l| l.t.dst)),
            l4: inner.map(|l| (l.t.proto, l.t.dport)),
            outer: hdr.as_ref().filter(|h| h.inner.is_some()).map(|h| (h.outer.t.proto, h.outer.t.dport)),
        };
        let ts = d.ts_ns;
        if let Some(a) = self.rows.get_mut(&key) {
            a.count += n;
            a.first_ts = a.first_ts.min(ts);
            a.last_ts = a.last_ts.max(ts);
            if a.samples.len() < MAX_SAMPLES {
                a.samples.push(report::sample(hdr.as_ref(), ts, d.wire_len, d.ifindex, a.first_ts));
            }
            return;
        }
        if self.rows.len() >= self.max_rows {
            self.stats.rows_dropped += n;
            return;
        }
        let netns_pod = enr.pod_by_netns(d.netns);
        // Link-local control traffic (IGMP reports, mDNS, IPv6 neighbour
        // discovery, broadcasts) is dropped routinely when nobody listens:
        // it never explains "pod A cannot reach pod B".
        let link_local = hdr.as_ref().is_some_and(|h| is_link_local_control(&h.innermost().t.dst));
        let background = link_local
            || netns_pod.is_none()
                && !matches!(key.src, Who::Pod(_))
                && !matches!(key.dst, Who::Pod(_))
                && !d.known_underlay
                && !hdr.as_ref().is_some_and(|h| {
                    [h.outer.t.src, h.outer.t.dst, h.innermost().t.src, h.innermost().t.dst]
                        .iter()
                        .any(|ip| enr.pod_by_ip(ip).is_some() || enr.node_by_ip(ip).is_some())
                });
        let samples = vec![report::sample(hdr.as_ref(), ts, d.wire_len, d.ifindex, ts)];
        self.rows.insert(
            key,
            DropAgg {
                node: d.node_name,
                count: n,
                first_ts: ts,
                last_ts: ts,
                hdr,
                ifindex: d.ifindex,
                netns: d.netns,
                netns_pod,
                samples,
                background,
            },
        );
    }

    fn expire(&mut self, _now_ns: u64, _out: &mut Vec<DropRow>) {}

    fn finish(&mut self, out: &mut Vec<DropRow>) {
        let start = out.len();
        out.extend(self.rows.drain().map(|(k, a)| {
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
                node: a.node,
                ifindex: a.ifindex,
                dev: None,
                netns: a.netns,
                netns_pod: a.netns_pod.map(|p| p.to_string()),
                first_ts_ns: a.first_ts,
                last_ts_ns: a.last_ts,
                samples: a.samples,
                inner: vx.and_then(|h| h.inner.as_ref()).map(report::flow),
                outer_src: vx.map(|h| h.outer.t.src),
                outer_dst: vx.map(|h| h.outer.t.dst),
                outer_proto: vx.map(|h| proto_name(h.outer.t.proto)),
                outer_dport: vx.map(|h| h.outer.t.dport),
                background: a.background,
            }
        }));
        out[start..].sort_by(|a, b| b.count.cmp(&a.count).then(a.first_ts_ns.cmp(&b.first_ts_ns)));
    }
}
