//! The words of the drops report: sample lines, the cause and advice of
//! each finding, and how a finding is described in the table.

use std::{fmt::Write as _, net::IpAddr};

use super::{
    Who,
    fabric::{LossAgg, LossKey},
};
use crate::{
    decode::packet::{Headers, L3L4, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, proto_name},
    enrich::Enricher,
    model::drops::{DropFinding, FlowTuple},
};

/// The transport tuple of parsed headers.
pub(super) fn flow(l: &L3L4) -> FlowTuple {
    FlowTuple { src: l.t.src, dst: l.t.dst, proto: proto_name(l.t.proto), sport: l.t.sport, dport: l.t.dport }
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

/// One sample line of a drop row: offset from the row's first drop, the
/// packet, its length and interface.
pub(super) fn sample(hdr: Option<&Headers>, ts_ns: u64, wire_len: u32, ifindex: u32, first_ts: u64) -> String {
    let mut s = format!("+{:.3}ms ", ts_ns.saturating_sub(first_ts) as f64 / 1e6);
    match hdr {
        Some(h) => s.push_str(&describe(h)),
        None => s.push_str("non-IP packet"),
    }
    let _ = write!(s, " len {wire_len} if {ifindex}");
    s
}

fn who_text(w: &Who, ip: IpAddr) -> String {
    match w {
        Who::Pod(p) => format!("{p} ({ip})"),
        _ => ip.to_string(),
    }
}

#[expect(clippy::too_many_arguments, reason = "one call site; the pieces of one sentence")]
pub(super) fn loss_text(
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

/// Cause and advice of a wrong-source overlay finding.
pub(super) fn overlay_text(node: &str, src: IpAddr, expected: &[IpAddr], dport: u16) -> (String, Vec<String>) {
    let list = expected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let cause = format!(
        "{node} sends VXLAN (UDP {dport}) from {src}, which is not one of its cluster addresses ({list}): the overlay \
         is bound to the wrong interface, so peers are told, or see, an address that may not reach it"
    );
    let advice = vec![
        format!("check `ip -d link show flannel.1` on {node}: `local` must be {list}"),
        "flannel: set --iface (or --iface-regex) to the interface of the node's InternalIP, or fix the \
         flannel.alpha.coreos.com/public-ip annotation"
            .to_owned(),
        "Calico: set IP_AUTODETECTION_METHOD (e.g. kubernetes-internal-ip or interface=<underlay>)".to_owned(),
    ];
    (cause, advice)
}

/// A drop finding as the table prints it: a title, the cause, the advice.
#[must_use]
pub fn finding_lines(f: &DropFinding) -> Vec<String> {
    let title = match f {
        DropFinding::FabricLoss(_) => "PACKETS LOST between nodes",
        DropFinding::OverlayWrongSource(_) => f.kind(),
    };
    let mut out = vec![format!("== {title} =="), format!("   cause: {}", f.cause())];
    let advice = f.advice();
    if !advice.is_empty() {
        out.push("   advice:".into());
        for a in advice {
            for (i, line) in a.lines().enumerate() {
                out.push(format!("     {} {line}", if i == 0 { "-" } else { " " }));
            }
        }
    }
    out
}
