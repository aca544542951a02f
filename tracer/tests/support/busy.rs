//! A generated capture of a busy node (issue 19, part 2), written with the
//! library's capture writer. Shared by `examples/busy_capture.rs` and the
//! `busy_capture` test (`#[path]` include).
//!
//! 300 pods on one node ask `CoreDNS` (10.244.1.10) directly, client-side
//! records as `ktrace record` stores them, each pod with the resolv.conf
//! kubelet writes (`search <ns>.svc.cluster.local svc.cluster.local
//! cluster.local`, `ndots:5`):
//! - **fast walks**: external names (`apiN.example.com`, 2 dots) walk the
//!   three suffixes, A and AAAA in parallel, every answer in about 1 ms;
//! - **direct lookups**: short service names answered by the first suffix;
//! - **a dead upstream**: 30 pods resolve `legacy.corp.example`; `CoreDNS`
//!   forwards the literal name to 10.0.0.53, which never answers; the clients
//!   time out (three rounds, 40 s apart);
//! - **an NXDOMAIN storm**: 3 pods resolve a name that exists nowhere
//!   (`missing-svc`) 25 times a second for a minute;
//! - **a slow pod**: one pod whose every answer takes 40 ms (walks of 160 ms).

#![allow(dead_code, unreachable_pub, reason = "the example and the test use different parts")]

use std::{net::Ipv4Addr, path::Path, sync::Arc};

use bytes::Bytes;
use ktrace::{
    capture::{CaptureHeader, CaptureWriter, ClockRef, MetaBlock},
    event::{Hook, PacketRecord, Process, Record, ResolvConfEvidence},
};

pub const PODS: u32 = 300;
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
pub const DEAD_UPSTREAM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 53);
pub const DEAD_NAME: &str = "legacy.corp.example";
pub const DEAD_PODS: u32 = 30;
pub const DEAD_ROUNDS: u64 = 3;
pub const STORM_NAME: &str = "missing-svc";
pub const STORM_PODS: u32 = 3;
/// The pod whose answers are slow (`team7/app-7`).
pub const SLOW_POD: u32 = 7;
pub const NODE: &str = "busy-node";
const MS: u64 = 1_000_000;
/// Capture length.
pub const SPAN_NS: u64 = 120_000 * MS;
const RESOLVER_PID: u32 = 900;
const RESOLVER_NETNS: u32 = 4_026_539_999;

/// What was generated.
#[derive(Debug, Default)]
pub struct Generated {
    /// DNS exchanges (query and answer, or an unanswered query).
    pub queries: u64,
    /// Fast walks.
    pub fast_walks: u64,
    /// Lookups of the dead name.
    pub dead_lookups: u64,
    /// Lookups of the storm name.
    pub storm_lookups: u64,
    /// Walks of the slow pod.
    pub slow_walks: u64,
    /// Records written.
    pub records: u64,
}

fn pod_ns(p: u32) -> String {
    format!("team{}", p % 20)
}

fn pod_name(p: u32) -> String {
    format!("{}/app-{p}", pod_ns(p))
}

fn pod_ip(p: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2 + (p / 250) as u8, (p % 250) as u8 + 1)
}

fn pod_netns(p: u32) -> u32 {
    4_026_540_000 + p
}

/// A DNS message with one question and, for a NOERROR answer with data, one A or AAAA record.
fn dns(id: u16, response: bool, rcode: u8, qname: &str, qtype: u16, data: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    m.extend_from_slice(&id.to_be_bytes());
    let flags: u16 = if response { 0x8180 | u16::from(rcode) } else { 0x0100 };
    m.extend_from_slice(&flags.to_be_bytes());
    let an = u16::from(response && data);
    for v in [1u16, an, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    ktrace::testkit::dns::put_name(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if response && data {
        m.extend_from_slice(&[0xc0, 0x0c]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&30u32.to_be_bytes());
        if qtype == 28 {
            m.extend_from_slice(&16u16.to_be_bytes());
            m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        } else {
            m.extend_from_slice(&4u16.to_be_bytes());
            m.extend_from_slice(&[192, 0, 2, 1]);
        }
    }
    m
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    ktrace::testkit::packet::ipv4_udp(src, sport, dst, dport, payload)
}

/// Deterministic jitter in [0, 1).
fn jitter(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    (x % 10_000) as f64 / 10_000.0
}

struct Gen {
    recs: Vec<Record>,
    node: Arc<str>,
    /// Per pod: next source port and message id.
    seq: Vec<u32>,
    out: Generated,
}

/// How an exchange ends.
#[derive(Clone, Copy)]
enum Outcome {
    /// rcode, with data, after ns.
    Answer(u8, bool, u64),
    /// No answer at all.
    Silent,
}

impl Gen {
    fn packet(&mut self, ts: u64, hook: Hook, netns: u32, process: Option<Process>, data: Vec<u8>) {
        self.recs.push(Record::Packet(PacketRecord {
            ts_ns: ts,
            hook,
            process,
            cgroup_id: 0,
            netns_cookie: 0,
            netns_ino: netns,
            ifindex: 0,
            wire_len: data.len() as u32,
            data: Bytes::from(data),
            node: Some(Arc::clone(&self.node)),
        }));
    }

    /// One query of pod `p` to the resolver; returns when it ended (answer or 5 s).
    fn exchange(&mut self, p: u32, ts: u64, qname: &str, qtype: u16, outcome: Outcome) -> u64 {
        let s = self.seq[p as usize];
        self.seq[p as usize] = s.wrapping_add(1);
        let sport = 20_000 + (s % 40_000) as u16;
        let id = (s.wrapping_mul(7919) & 0xffff) as u16;
        let process = Process { pid: 10_000 + p, tid: 10_000 + p, comm: "app".into(), thread: "app".into() };
        let ip = pod_ip(p);
        self.packet(
            ts,
            Hook::SocketEgress,
            pod_netns(p),
            Some(process),
            udp(ip, sport, RESOLVER, 53, &dns(id, false, 0, qname, qtype, false)),
        );
        self.out.queries += 1;
        match outcome {
            Outcome::Answer(rcode, data, after) => {
                self.packet(
                    ts + after,
                    Hook::SocketIngress,
                    pod_netns(p),
                    None,
                    udp(RESOLVER, 53, ip, sport, &dns(id, true, rcode, qname, qtype, data)),
                );
                ts + after
            }
            Outcome::Silent => ts + 5_000 * MS,
        }
    }

    /// `CoreDNS` forwarding `qname` to the dead upstream (never answered).
    fn forward(&mut self, ts: u64, n: u32, qname: &str, qtype: u16) {
        let process =
            Process { pid: RESOLVER_PID, tid: RESOLVER_PID, comm: "coredns".into(), thread: "coredns".into() };
        let sport = 50_000 + (n % 10_000) as u16;
        let id = (n.wrapping_mul(31) & 0xffff) as u16;
        self.packet(
            ts,
            Hook::SocketEgress,
            RESOLVER_NETNS,
            Some(process),
            udp(RESOLVER, sport, DEAD_UPSTREAM, 53, &dns(id, false, 0, qname, qtype, false)),
        );
        self.out.queries += 1;
    }

    /// A walk of `base` through pod `p`'s search list, A and AAAA in
    /// parallel; `last` decides the literal name's fate.
    fn walk(&mut self, pod: u32, t0: u64, base: &str, step: u64, suffix_rcode: u8, last: Outcome) -> u64 {
        let ns = pod_ns(pod);
        let mut t = t0;
        for suffix in [format!("{ns}.svc.cluster.local"), "svc.cluster.local".into(), "cluster.local".into()] {
            let qname = format!("{base}.{suffix}");
            let jit = (jitter(t) * step as f64 * 0.4) as u64;
            let end_a = self.exchange(pod, t, &qname, 1, Outcome::Answer(suffix_rcode, false, step + jit));
            let end_aaaa =
                self.exchange(pod, t + 40_000, &qname, 28, Outcome::Answer(suffix_rcode, false, step + jit / 2));
            t = end_a.max(end_aaaa) + 30_000;
        }
        let end_a = self.exchange(pod, t, base, 1, last);
        end_a.max(self.exchange(pod, t + 40_000, base, 28, last))
    }
}

/// The Kubernetes List stored in the capture: the pods and `CoreDNS`.
fn snapshot() -> String {
    let mut items = Vec::new();
    for p in 0..PODS {
        items.push(serde_json::json!({
            "kind": "Pod",
            "metadata": {"namespace": pod_ns(p), "name": format!("app-{p}"),
                         "annotations": {"ktrace.io/netns-ino": pod_netns(p).to_string()}},
            "spec": {"nodeName": NODE},
            "status": {"podIP": pod_ip(p).to_string()}
        }));
    }
    items.push(serde_json::json!({
        "kind": "Pod",
        "metadata": {"namespace": "kube-system", "name": "coredns-0", "labels": {"k8s-app": "kube-dns"},
                     "annotations": {"ktrace.io/netns-ino": RESOLVER_NETNS.to_string()}},
        "spec": {"nodeName": NODE},
        "status": {"podIP": RESOLVER.to_string()}
    }));
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Every pod's resolv.conf as kubelet writes it, read at `t0`.
pub fn resolv_confs(t0: u64) -> Vec<ResolvConfEvidence> {
    (0..PODS)
        .map(|p| ResolvConfEvidence {
            ts_ns: t0,
            pid: 10_000 + p,
            netns_ino: pod_netns(p),
            path: format!("/proc/{}/root/etc/resolv.conf", 10_000 + p),
            text: Some(format!(
                "search {}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {RESOLVER}\noptions ndots:5\n",
                pod_ns(p)
            )),
            error: None,
        })
        .collect()
}

/// Every record of the busy node, in time order, starting at `t0` (monotonic ns).
pub fn records(t0: u64) -> (Vec<Record>, Generated) {
    let mut g = Gen { recs: Vec::new(), node: NODE.into(), seq: vec![0; PODS as usize], out: Generated::default() };
    g.recs.extend(resolv_confs(t0).into_iter().map(Record::ResolvConf));
    let start = t0 + 100 * MS;
    for p in 0..PODS {
        let ns = pod_ns(p);
        // 40 rounds of one external and one internal lookup, spread over 110 s.
        let phase = (jitter(u64::from(p)) * 2_000.0) as u64 * MS;
        for r in 0..40u64 {
            let t = start + phase + r * 2_700 * MS;
            let base = format!("api{}.example.com", (u64::from(p) + r) % 20);
            if p == SLOW_POD {
                g.walk(p, t, &base, 40 * MS, 3, Outcome::Answer(0, true, 40 * MS));
                g.out.slow_walks += 1;
            } else {
                g.walk(p, t, &base, MS, 3, Outcome::Answer(0, true, MS));
                g.out.fast_walks += 1;
            }
            let svc = format!("svc{}.{ns}.svc.cluster.local", r % 7);
            let t = t + 1_300 * MS;
            g.exchange(p, t, &svc, 1, Outcome::Answer(0, true, MS));
            g.exchange(p, t + 40_000, &svc, 28, Outcome::Answer(0, true, MS));
        }
    }
    // The dead upstream: 30 pods, one lookup each per round, 3 rounds 40 s
    // apart (each round is one outage as the resolver sees it).
    let mut fwd = 0u32;
    for i in 0..DEAD_PODS {
        let p = 20 + i * 7;
        for r in 0..DEAD_ROUNDS {
            let t = start + 3_000 * MS + u64::from(i) * 500 * MS + r * 40_000 * MS;
            // The walk's suffixes fail fast; the literal is forwarded twice and never answered.
            let lit = g.walk(p, t, DEAD_NAME, MS, 3, Outcome::Silent) - 5_000 * MS;
            for (k, qtype) in [(0u64, 1u16), (1, 28)] {
                g.forward(lit + 200_000 + k * 40_000, fwd, DEAD_NAME, qtype);
                g.forward(lit + 2_000 * MS + k * 40_000, fwd + 1, DEAD_NAME, qtype);
                fwd += 2;
            }
            g.out.dead_lookups += 1;
        }
    }
    // The storm: 25 lookups a second for 60 s, A only, every name NXDOMAIN.
    for i in 0..STORM_PODS {
        let p = 100 + i * 11;
        let ns = pod_ns(p);
        for r in 0..1_500u64 {
            let mut t = start + 30_000 * MS + r * 40 * MS + u64::from(i) * 3 * MS;
            for q in [
                format!("{STORM_NAME}.{ns}.svc.cluster.local"),
                format!("{STORM_NAME}.svc.cluster.local"),
                format!("{STORM_NAME}.cluster.local"),
                STORM_NAME.to_owned(),
            ] {
                t = g.exchange(p, t, &q, 1, Outcome::Answer(3, false, 800_000)) + 50_000;
            }
            g.out.storm_lookups += 1;
        }
    }
    g.recs.sort_by_key(Record::ts_ns);
    g.out.records = g.recs.len() as u64;
    (g.recs, g.out)
}

/// Writes the busy capture to `path`.
pub fn write(path: &Path) -> anyhow::Result<Generated> {
    let clock = ClockRef::now();
    let header = CaptureHeader {
        node: NODE.into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 1024,
        compress: false,
    };
    let mut w = CaptureWriter::create(path, header)?;
    w.write_meta(&MetaBlock::KubeSnapshot(snapshot()))?;
    let (recs, out) = records(clock.mono_ns);
    for r in &recs {
        w.write_record(r, None)?;
    }
    w.finish()?;
    Ok(out)
}
