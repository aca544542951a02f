//! The overlay wrong-source check: VXLAN leaving a node from an address that
//! is not one of the node's (flannel or Calico bound to the wrong interface).

use std::{collections::HashMap, net::IpAddr};

use super::{DropStats, MS, fabric::Nodes, report};
use crate::{
    decode::packet::Headers,
    enrich::Enricher,
    model::drops::{DropFinding, OverlayWrongSource},
};

/// Distinct wrong-source overlay rows.
const MAX_OVERLAY_ROWS: usize = 1024;
/// How often a node's expected addresses are re-read from the metadata.
const EXPECTED_REFRESH_NS: u64 = 10_000 * MS;

struct OverlayAgg {
    dst: IpAddr,
    dport: u16,
    packets: u64,
    first_ts: u64,
    last_ts: u64,
}

/// Wrong-source VXLAN rows by (node, outer source).
#[derive(Default)]
pub(super) struct OverlayCheck {
    rows: HashMap<(u16, IpAddr), OverlayAgg>,
}

impl OverlayCheck {
    /// Checks a VXLAN egress of `node`: counts it when its outer source is
    /// not one of the node's addresses.
    #[expect(clippy::too_many_arguments, reason = "the correlator's state, borrowed piecewise")]
    pub(super) fn check(
        &mut self,
        nodes: &mut Nodes,
        hdr: &Headers,
        node: u16,
        ts: u64,
        now: u64,
        enr: &Enricher,
        stats: &mut DropStats,
    ) {
        let Some(n) = nodes.list.get_mut(usize::from(node)) else { return };
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
        let len = self.rows.len();
        match self.rows.get_mut(&(node, src)) {
            Some(a) => {
                a.packets += 1;
                a.last_ts = a.last_ts.max(ts);
            }
            None if len < MAX_OVERLAY_ROWS => {
                self.rows.insert(
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
            None => stats.rows_dropped += 1,
        }
    }

    /// The rows as findings, most packets first (taken out).
    pub(super) fn findings(&mut self, nodes: &Nodes, enr: &Enricher, out: &mut Vec<DropFinding>) {
        let mut overlay: Vec<((u16, IpAddr), OverlayAgg)> = self.rows.drain().collect();
        overlay.sort_by_key(|o| std::cmp::Reverse(o.1.packets));
        for ((node, src), a) in overlay {
            let Some(n) = nodes.list.get(usize::from(node)) else { continue };
            let expected = n.expected.clone();
            let to_node = enr.node_by_ip(&a.dst).or_else(|| nodes.learned.get(&a.dst).and_then(|i| nodes.name(*i)));
            let (cause, advice) = report::overlay_text(&n.name, src, &expected, a.dport);
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
    }
}
