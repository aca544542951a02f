//! What the drops stages report: kernel drop rows, failed connections and
//! fabric findings. JSON field names are a public contract (add, never
//! rename); `docs/json.md` lists them.

use std::{net::IpAddr, sync::Arc};

use serde::{Serialize, Serializer};

use crate::event::{ConnKind, Endpoint, tcp_state};

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

/// How a TCP connection failed: the one vocabulary of `conn_fail` rows
/// (`kind`) and of the agent's `ktrace_conn_failures_total{kind}`.
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

impl ConnFailKind {
    /// The name in JSON and in metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
        }
    }
}

impl std::fmt::Display for ConnFailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a single TCP event says about its connection, before the
/// connection's outcome is known: the agent counts these live in
/// `ktrace_conn_failures_total{kind}`, the drops stage decides the outcome
/// per connection ([`ConnFailKind`]). An RST answering a SYN is the
/// connection's refusal; an RST on an established connection its reset; a
/// SYN retransmit is the first sign of what becomes a `timeout` when the
/// connect gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnSignal {
    /// The event decides the failure ([`ConnFailKind::Refused`] or [`ConnFailKind::Reset`]).
    Failed(ConnFailKind),
    /// A SYN retransmitted (label `syn_retransmit`): the connect may time out.
    SynRetransmit,
    /// A data segment retransmitted (label `retransmit`).
    Retransmit,
}

impl ConnSignal {
    /// The signal of one TCP event (`None`: routine state changes).
    #[must_use]
    pub fn of(k: ConnKind) -> Option<Self> {
        use tcp_state::SYN_SENT;
        match k {
            ConnKind::ResetReceived { state: SYN_SENT } => Some(Self::Failed(ConnFailKind::Refused)),
            ConnKind::ResetReceived { .. } => Some(Self::Failed(ConnFailKind::Reset)),
            ConnKind::Retransmit { state: SYN_SENT } => Some(Self::SynRetransmit),
            ConnKind::Retransmit { .. } => Some(Self::Retransmit),
            ConnKind::ResetSent { .. } | ConnKind::State { .. } => None,
        }
    }

    /// The metric label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Failed(k) => k.as_str(),
            Self::SynRetransmit => "syn_retransmit",
            Self::Retransmit => "retransmit",
        }
    }
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

/// Everything the drops stage found at the end of its input, most frequent first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DropReport {
    /// Kernel drops.
    pub drops: Vec<DropRow>,
    /// Failed connections.
    pub conn_fails: Vec<ConnFail>,
    /// Fabric losses and overlay findings.
    pub findings: Vec<DropFinding>,
}

impl DropFinding {
    /// The nodes it is about (sender, receiver), for `--node`.
    #[must_use]
    pub fn nodes(&self) -> [Option<&str>; 2] {
        match self {
            Self::FabricLoss(l) => [Some(&l.from_node), Some(&l.to_node)],
            Self::OverlayWrongSource(o) => [Some(&o.node), o.to_node.as_deref()],
        }
    }

    /// The pods it names (`namespace/name`), for `--ns` and `--pod`.
    #[must_use]
    pub fn pods(&self) -> [Option<&str>; 2] {
        match self {
            Self::FabricLoss(l) => [l.inner_src_pod.as_deref(), l.inner_dst_pod.as_deref()],
            Self::OverlayWrongSource(_) => [None, None],
        }
    }

    /// `kind` in JSON.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::FabricLoss(_) => "fabric_loss",
            Self::OverlayWrongSource(_) => "overlay_wrong_source",
        }
    }

    /// What happened, in a sentence.
    #[must_use]
    pub fn cause(&self) -> &str {
        match self {
            Self::FabricLoss(l) => &l.cause,
            Self::OverlayWrongSource(o) => &o.cause,
        }
    }

    /// What to check.
    #[must_use]
    pub fn advice(&self) -> &[String] {
        match self {
            Self::FabricLoss(l) => &l.advice,
            Self::OverlayWrongSource(o) => &o.advice,
        }
    }
}

/// One result of the drops stage, in the order `ktrace drops` prints them.
#[derive(Clone, Debug)]
pub enum DropOutput {
    /// A kernel drop row (`type:"drop"`).
    Drop(DropRow),
    /// A failed-connection row (`type:"conn_fail"`).
    Conn(ConnFail),
    /// A fabric finding (`type:"finding"`).
    Finding(DropFinding),
}

impl DropOutput {
    /// The JSON `type`.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Drop(_) => "drop",
            Self::Conn(_) => "conn_fail",
            Self::Finding(_) => "finding",
        }
    }
}

impl DropReport {
    /// The report as stage outputs: drops, then failed connections, then findings.
    pub fn into_outputs(self) -> impl Iterator<Item = DropOutput> {
        self.drops
            .into_iter()
            .map(DropOutput::Drop)
            .chain(self.conn_fails.into_iter().map(DropOutput::Conn))
            .chain(self.findings.into_iter().map(DropOutput::Finding))
    }
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tcp_state::{CLOSE, ESTABLISHED, SYN_RECV, SYN_SENT};

    #[test]
    fn one_vocabulary_for_rows_and_metrics() {
        for k in [ConnFailKind::Refused, ConnFailKind::Timeout, ConnFailKind::Reset] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let label = |k| ConnSignal::of(k).map(ConnSignal::label);
        // The agent's label values of earlier releases, unchanged.
        assert_eq!(label(ConnKind::ResetReceived { state: SYN_SENT }), Some("refused"));
        assert_eq!(label(ConnKind::ResetReceived { state: ESTABLISHED }), Some("reset"));
        assert_eq!(label(ConnKind::ResetReceived { state: SYN_RECV }), Some("reset"));
        assert_eq!(label(ConnKind::Retransmit { state: SYN_SENT }), Some("syn_retransmit"));
        assert_eq!(label(ConnKind::Retransmit { state: ESTABLISHED }), Some("retransmit"));
        assert_eq!(label(ConnKind::ResetSent { state: ESTABLISHED }), None);
        assert_eq!(label(ConnKind::State { old: SYN_SENT, new: CLOSE }), None);
        assert_eq!(
            ConnSignal::of(ConnKind::ResetReceived { state: SYN_SENT }),
            Some(ConnSignal::Failed(ConnFailKind::Refused))
        );
    }
}
