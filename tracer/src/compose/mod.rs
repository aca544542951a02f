//! Composition: what every command (and the agent) wires together before
//! the pipeline runs — metadata ([`meta`]), the node's network state
//! ([`netstate`]), the underlay devices and their coverage ([`underlay`]),
//! and which pods a packet involves. `cli/` parses flags and calls these;
//! nothing here imports `cli`.

pub mod meta;
pub mod netstate;
pub mod underlay;

use crate::{
    decode::packet,
    enrich::{Enricher, PodRef},
    event::PacketRecord,
};

pub use meta::MetaSource;

/// The pods a packet involves: the pod whose socket it passed, its source and its destination.
#[must_use]
pub fn packet_pods(e: &Enricher, p: &PacketRecord) -> [Option<PodRef>; 3] {
    let local = e.local_pod(p);
    // Lax: a packet cut after its addresses still names its pods.
    let (src, dst) = match packet::parse_lax(&p.data, &[]) {
        Some(h) => (e.pod_by_ip(&h.outer.t.src), e.pod_by_ip(&h.outer.t.dst)),
        None => (None, None),
    };
    [local, src, dst]
}
