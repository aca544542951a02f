//! The drops stages end to end: records built here, through [`DropAnalyzer`].

use std::net::Ipv4Addr;

use bytes::Bytes;

use super::{fabric::GRO_MIN_LEN, *};
use crate::{
    decode::packet::{PROTO_TCP, PROTO_UDP},
    enrich::{Snapshot, snapshot::PodInfo},
    event::{ConnKind, ConnRecord, DropRecord, Endpoint, Process, tcp_state},
    testkit::{
        Rng,
        packet::{self, tcp, udp},
        packet_record,
    },
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

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ipv4(src: &str, dst: &str, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
    packet::ipv4_id(v4(src), v4(dst), proto, id, l4)
}

/// A VXLAN packet: outer IPv4/UDP 4789, VXLAN header (VNI 1), inner Ethernet, `inner`.
fn vxlan(osrc: &str, odst: &str, osport: u16, oid: u16, inner: &[u8]) -> Vec<u8> {
    packet::vxlan(v4(osrc), v4(odst), osport, oid, inner)
}

fn node(n: &str) -> Arc<str> {
    Arc::from(n)
}

fn pkt(ts: u64, n: &str, hook: Hook, data: &[u8]) -> Record {
    packet_record(ts, &node(n), hook, data)
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
        count: 1,
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
        pod: PodRef::new(ns, name, Some(node(n))),
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
        let req = vxlan(NA, NB, 40_000, 0, &ipv4(CLIENT, BACKEND, PROTO_TCP, i as u16, &tcp(51_000, 8080, i, 0x18)));
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
    let mut a = DropAnalyzer::new(DropConfig::default(), enr);
    for r in recs {
        a.push(r);
    }
    let rep = a.finish();
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
            let h = parse_lax(&p.data, &[4789]).unwrap();
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
    let mut a = DropAnalyzer::new(DropConfig::default(), &enr);
    for i in 0..10u16 {
        let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, i, &tcp(50_000 + i, 8080, 1, 0x02));
        a.push(&drop_rec(u64::from(i) * MS, B, "NETFILTER_DROP", &vxlan(NA, NB, 33_000 + i, i, &inner)));
    }
    // Another flow and another reason: separate rows.
    let inner = ipv4(CLIENT, BACKEND, PROTO_TCP, 1, &tcp(50_000, 9090, 1, 0x02));
    a.push(&drop_rec(20 * MS, B, "NETFILTER_DROP", &vxlan(NA, NB, 33_000, 1, &inner)));
    let plain = ipv4(CLIENT, BACKEND, PROTO_TCP, 1, &tcp(50_000, 8080, 1, 0x02));
    a.push(&drop_rec(21 * MS, B, "NO_SOCKET", &plain));
    // Host noise: no pod, no node.
    a.push(&drop_rec(22 * MS, B, "NOT_SPECIFIED", &ipv4("172.17.0.2", "172.17.0.1", PROTO_UDP, 0, &udp(1, 2, b""))));
    a.push(&drop_rec(23 * MS, B, "NOT_SPECIFIED", &[0x00, 0x01, 0x08, 0x00]));
    let rep = a.finish();
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
    let mut a = DropAnalyzer::new(DropConfig::default(), &enr);
    for (k, sock) in [(0u64, 0xffff_0001u64), (1, 0xffff_0002)] {
        let t = k * 100 * MS;
        let sport = 40_000 + k as u16;
        a.push(&conn(t, sock, state(CLOSE, SYN_SENT), 0, (BACKEND, 8081), true));
        a.push(&conn(t + MS, sock, ConnKind::ResetReceived { state: SYN_SENT }, sport, (BACKEND, 8081), false));
        a.push(&conn(t + MS, sock, state(SYN_SENT, CLOSE), sport, (BACKEND, 8081), false));
    }
    let rep = a.finish();
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
    let mut an = DropAnalyzer::new(DropConfig::default(), &enr);
    let s = 1000 * MS;
    // Timeout: two SYN retransmits, then give-up.
    an.push(&conn(0, 1, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true));
    an.push(&conn(s, 1, ConnKind::Retransmit { state: SYN_SENT }, 40_001, (BACKEND, 8080), false));
    an.push(&conn(3 * s, 1, ConnKind::Retransmit { state: SYN_SENT }, 40_001, (BACKEND, 8080), false));
    an.push(&conn(3 * s + 1, 1, state(SYN_SENT, CLOSE), 40_001, (BACKEND, 8080), true));
    // Reset of an established connection.
    an.push(&conn(4 * s, 2, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true));
    an.push(&conn(4 * s + MS, 2, state(SYN_SENT, ESTABLISHED), 40_002, (BACKEND, 8080), false));
    an.push(&conn(5 * s, 2, ConnKind::ResetReceived { state: ESTABLISHED }, 40_002, (BACKEND, 8080), false));
    an.push(&conn(5 * s, 2, state(ESTABLISHED, CLOSE), 40_002, (BACKEND, 8080), false));
    // Aborted connect (closed at once, no retransmit): not a failure.
    an.push(&conn(6 * s, 3, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true));
    an.push(&conn(6 * s + MS, 3, state(SYN_SENT, CLOSE), 40_003, (BACKEND, 8080), true));
    // Successful connect: nothing.
    an.push(&conn(6 * s, 5, state(CLOSE, SYN_SENT), 0, (BACKEND, 8080), true));
    an.push(&conn(6 * s + MS, 5, state(SYN_SENT, ESTABLISHED), 40_005, (BACKEND, 8080), false));
    // Still connecting at the end with a retransmit: pending timeout.
    an.push(&conn(7 * s, 4, state(CLOSE, SYN_SENT), 0, ("10.244.1.10", 53), true));
    an.push(&conn(8 * s, 4, ConnKind::Retransmit { state: SYN_SENT }, 40_004, ("10.244.1.10", 53), false));
    let rep = an.finish();
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
    let mut a = DropAnalyzer::new(DropConfig::default(), &enr);
    let inner = ipv4(BACKEND, CLIENT, PROTO_TCP, 1, &tcp(8080, 51_000, 1, 0x12));
    for i in 0..5u16 {
        a.push(&pkt(u64::from(i) * MS, B, Hook::TcEgress, &vxlan("10.0.0.99", NA, 41_000, i, &inner)));
        // Right source from node-a: fine.
        a.push(&pkt(u64::from(i) * MS, A, Hook::TcEgress, &vxlan(NA, NB, 41_000, i, &inner)));
    }
    let rep = a.finish();
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
    let mut a = DropAnalyzer::new(cfg, &enr);
    for i in 0..1000u32 {
        let inner = ipv4(CLIENT, BACKEND, PROTO_UDP, i as u16, &udp(5000, 53, b"x"));
        a.push(&pkt(u64::from(i), A, Hook::TcEgress, &vxlan(NA, NB, 1, 0, &inner)));
        a.push(&conn(u64::from(i), u64::from(i), state(tcp_state::CLOSE, tcp_state::SYN_SENT), 0, (BACKEND, 1), true));
    }
    let st = a.stats();
    assert!(st.pending <= 100 && st.evicted >= 900, "{st:?}");
    assert!(st.sockets <= 10 && st.sockets_evicted >= 990, "{st:?}");
    assert!(a.conn.socks_q.len() <= 20);
}

#[test]
fn garbage_never_panics() {
    let enr = enricher();
    let mut a = DropAnalyzer::new(DropConfig::default(), &enr);
    let mut rng = Rng(Rng::SEED);
    let mut x = 0;
    let mut buf = [0u8; 140];
    let good = vxlan(NA, NB, 1, 2, &ipv4(CLIENT, BACKEND, PROTO_TCP, 3, &tcp(1, 2, 3, 4)));
    for i in 0..20_000u64 {
        for b in &mut buf {
            x = rng.next();
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
        a.push(&pkt(i * MS, if i % 4 < 2 { A } else { B }, hook, &data));
        a.push(&drop_rec(i * MS, B, "X", &data));
    }
    let _ = a.finish();
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
    eprintln!("{} packets in {el:?}: {:.0} ns/packet; {st:?}", recs.len(), el.as_nanos() as f64 / recs.len() as f64);
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
    let h = |d: &[u8]| parse_lax(d, &[4789]).unwrap();
    let s = foldhash::fast::RandomState::default();
    assert_eq!(h(&p).fingerprint(&s), h(&q).fingerprint(&s));
    let other = vxlan(NA, NB, 40_000, 0, &ipv4(CLIENT, BACKEND, PROTO_TCP, 0, &tcp(1, 2, 101, 0x10)));
    assert_ne!(h(&p).fingerprint(&s), h(&other).fingerprint(&s));
    assert_eq!(h(&p).key(&s), h(&inner).key(&s));
    assert_eq!(h(&p).inner.unwrap().t.dport, 2);
}
