//! JSON Lines: one object per transaction (`type:"dns"`), finding
//! (`type:"finding"`) and end-of-run counters (`type:"stats"`). Field names
//! are a public contract documented in docs/json.md: add, never rename.
//!
//! The writers take `b` (the line), `c` (the cache), `d` (digits on the
//! stack), `e` (an endpoint) everywhere; their small hit paths are inlined
//! into the line writer and the rare cases kept out of line (cachegrind,
//! hot-cap `-o json` minus `--summary`: 1,800 → 1,450 instructions per query).

#![expect(clippy::many_single_char_names, reason = "b, c, d, e: the same four roles in every writer")]
#![expect(clippy::inline_always, reason = "hit paths of a few instructions, measured (see above)")]

use std::io::Write;

use serde_json::{Value, json};

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_name, rcode_name},
    enrich::PodRef,
    event::Process,
    pipeline::{Context, RunStats, Sink},
};

use super::{ms, rfc3339};

fn pod(p: Option<&PodRef>) -> Value {
    p.map_or(Value::Null, |p| json!({"namespace": &*p.namespace, "name": &*p.name, "node": p.node.as_deref()}))
}

fn process(p: Option<&Process>) -> Value {
    p.map_or(Value::Null, |p| json!({"pid": p.pid, "comm": p.comm, "tid": p.tid, "thread": p.thread}))
}

/// The JSON object for a transaction: the reference form, built with
/// `serde_json` (whose maps print their keys sorted). [`put_transaction`]
/// writes the same bytes by hand; the tests compare the two.
#[must_use]
pub fn transaction(ctx: &Context, tx: &Transaction) -> Value {
    let service = ctx.enricher.service_by_ip(&tx.server.ip);
    json!({
        "type": "dns",
        "ts": rfc3339(ctx.wall_ns(tx.ts_ns)),
        "node": tx.node.as_deref(),
        "netns": tx.netns,
        "cgroup_id": tx.cgroup_id,
        "pid": tx.process.as_ref().map(|p| p.pid),
        "comm": tx.process.as_ref().map(|p| p.comm.as_ref()),
        "thread": tx.process.as_ref().map(|p| p.thread.as_ref()),
        "client": tx.client.to_string(),
        "server": tx.server.to_string(),
        "client_pod": pod(tx.client_pod.as_ref()),
        "server_pod": pod(tx.server_pod.as_ref()),
        "server_service": service.map(|s| format!("{}/{}", s.namespace, s.name)),
        "server_process": process(tx.server_process.as_ref()),
        "resolver": tx.resolver.map(|r| r.to_string()),
        "resolver_client": tx.resolver_client.map(|r| r.to_string()),
        "resolver_pod": pod(tx.resolver_pod.as_ref()),
        "transport": tx.transport,
        "id": tx.id,
        "qname": tx.qname,
        "qtype": qtype_name(tx.qtype),
        "rcode": tx.rcode.map(rcode_name),
        "answers": tx.answers.iter().map(|a| json!({"name": a.name, "type": a.rtype, "ttl": a.ttl, "data": a.data})).collect::<Vec<_>>(),
        "latency_ms": tx.latency_ns.map(ms),
        "timed_out": tx.timed_out,
        "retransmits": tx.retransmits,
        "observed": tx.observed,
        "metadata_stale": ctx.enricher.stale(),
    })
}

// The field writers and their cache: `json/put.rs`; the runs of a line
// that repeat: `json/line.rs`.
mod answer;
mod line;
mod put;
pub use put::*;

/// Appends a transaction's JSON line (without the newline) to `b`: the same
/// bytes as serialising [`transaction`] (a `serde_json::Value`, whose keys
/// print sorted), written without building anything. The parts that only
/// depend on who took part are copied from the cache when a line with the
/// same parties was written before (see `json/line.rs`).
pub fn put_transaction(b: &mut Vec<u8>, c: &mut JsonCache, ctx: &Context, tx: &Transaction) {
    b.extend_from_slice(b"{\"answers\":[");
    for (i, a) in tx.answers.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        answer::put_answer(b, c, a);
    }
    let (generation, stale) = (ctx.enricher.generation(), ctx.enricher.stale());
    let i = line::slot_of(tx);
    // Out of the cache while the fields are written through it.
    let mut lines = std::mem::take(&mut c.lines);
    if let Some(slot) = lines.get(i)
        && let Some(runs) = slot.runs_for(tx, generation, stale)
    {
        put_with_runs(b, c, tx, runs, slot.client_at());
    } else {
        let m = put_fields(b, c, ctx, tx, stale);
        if let Some(slot) = lines.get_mut(i) {
            slot.learn(tx, generation, stale, b, &m);
        }
    }
    c.lines = lines;
    // Fixed-size copies (a few moves) instead of a `memcpy` call.
    let (text, n) = match (tx.timed_out, tx.transport) {
        (false, crate::event::Transport::Udp) => &FU,
        (false, crate::event::Transport::Tcp) => &FT,
        (true, crate::event::Transport::Udp) => &TU,
        (true, crate::event::Transport::Tcp) => &TT,
    };
    put_fixed(b, text, *n);
    put_ts(b, c, ctx.wall_ns(tx.ts_ns));
    b.extend_from_slice(b",\"type\":\"dns\"}");
}

/// `s` (`N` bytes) in a fixed-size array, for [`put_fixed`].
const fn pad<const N: usize>(s: &[u8]) -> ([u8; 48], usize) {
    let mut out = [0u8; 48];
    let mut i = 0;
    while i < N {
        out[i] = s[i];
        i += 1;
    }
    (out, N)
}
const FU: ([u8; 48], usize) = pad::<42>(b",\"timed_out\":false,\"transport\":\"udp\",\"ts\":");
const FT: ([u8; 48], usize) = pad::<42>(b",\"timed_out\":false,\"transport\":\"tcp\",\"ts\":");
const TU: ([u8; 48], usize) = pad::<41>(b",\"timed_out\":true,\"transport\":\"udp\",\"ts\":");
const TT: ([u8; 48], usize) = pad::<41>(b",\"timed_out\":true,\"transport\":\"tcp\",\"ts\":");

/// The fields from `cgroup_id` to `thread` of a line whose parties' runs
/// are cached: the fields that change, between the runs.
#[inline(always)]
fn put_with_runs(b: &mut Vec<u8>, c: &mut JsonCache, tx: &Transaction, runs: line::Runs<'_>, client_at: usize) {
    let at = b.len();
    b.extend_from_slice(&runs[0]);
    put_u16(b, tx.client.port);
    b.push(b'"');
    let client = at + client_at..b.len();
    b.extend_from_slice(&runs[1]);
    put_u16(b, tx.id);
    put_latency(b, tx.latency_ns);
    b.extend_from_slice(&runs[2]);
    put_query(b, c, tx);
    b.extend_from_slice(&runs[3]);
    put_endpoint_or_copy(b, c, tx.resolver_client.as_ref(), tx.resolver_client == Some(tx.client), client);
    b.extend_from_slice(&runs[4]);
    put_u64(b, u64::from(tx.retransmits));
    b.extend_from_slice(&runs[5]);
}

#[inline(always)]
fn put_latency(b: &mut Vec<u8>, ns: Option<u64>) {
    b.extend_from_slice(b",\"latency_ms\":");
    match ns {
        Some(ns) => put_ms(b, ns),
        None => b.extend_from_slice(b"null"),
    }
}

/// `qname` to `rcode`: the values after `"qname":`.
#[inline(always)]
fn put_query(b: &mut Vec<u8>, c: &mut JsonCache, tx: &Transaction) {
    put_name(b, c, &tx.qname);
    b.extend_from_slice(b",\"qtype\":");
    put_qtype(b, tx.qtype);
    b.extend_from_slice(b",\"rcode\":");
    match tx.rcode {
        Some(r) => put_rcode(b, r),
        None => b.extend_from_slice(b"null"),
    }
}

/// The fields from `cgroup_id` to `thread`, each written, and where the
/// runs that only depend on the parties are (for the cache).
#[inline(never)]
fn put_fields(b: &mut Vec<u8>, c: &mut JsonCache, ctx: &Context, tx: &Transaction, stale: bool) -> line::Marks {
    let run0 = b.len();
    b.extend_from_slice(b"],\"cgroup_id\":");
    put_u64_seen(b, c, tx.cgroup_id);
    b.extend_from_slice(b",\"client\":");
    let client_at = b.len();
    put_endpoint(b, c, &tx.client);
    let client = client_at..b.len();
    // The port and closing quote are the line's own.
    let port_at = b.len() - port_len(tx.client.port) - 1;
    let run1 = b.len();
    b.extend_from_slice(b",\"client_pod\":");
    put_pod(b, c, tx.client_pod.as_ref());
    b.extend_from_slice(b",\"comm\":");
    put_opt_name(b, c, tx.process.as_ref().map(|p| &p.comm));
    b.extend_from_slice(b",\"id\":");
    let id_at = b.len();
    put_u64(b, u64::from(tx.id));
    put_latency(b, tx.latency_ns);
    let run2 = b.len();
    b.extend_from_slice(if stale {
        b",\"metadata_stale\":true,\"netns\":"
    } else {
        b",\"metadata_stale\":false,\"netns\":"
    });
    put_u64_seen(b, c, u64::from(tx.netns));
    b.extend_from_slice(b",\"node\":");
    put_opt_name(b, c, tx.node.as_ref());
    b.extend_from_slice(match tx.observed {
        crate::analyze::Observed::Client => &b",\"observed\":\"client\",\"pid\":"[..],
        crate::analyze::Observed::Server => b",\"observed\":\"server\",\"pid\":",
        crate::analyze::Observed::Both => b",\"observed\":\"both\",\"pid\":",
        crate::analyze::Observed::Wire => b",\"observed\":\"wire\",\"pid\":",
    });
    match &tx.process {
        Some(p) => put_u64_seen(b, c, u64::from(p.pid)),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"qname\":");
    let qname_at = b.len();
    put_query(b, c, tx);
    let run3 = b.len();
    b.extend_from_slice(b",\"resolver\":");
    let resolver_at = b.len();
    put_opt_endpoint(b, c, tx.resolver.as_ref());
    let resolver = resolver_at..b.len();
    b.extend_from_slice(b",\"resolver_client\":");
    let resolver_client_at = b.len();
    put_endpoint_or_copy(b, c, tx.resolver_client.as_ref(), tx.resolver_client == Some(tx.client), client);
    let run4 = b.len();
    b.extend_from_slice(b",\"resolver_pod\":");
    put_pod(b, c, tx.resolver_pod.as_ref());
    b.extend_from_slice(b",\"retransmits\":");
    let retransmits_at = b.len();
    put_u64(b, u64::from(tx.retransmits));
    let run5 = b.len();
    b.extend_from_slice(b",\"server\":");
    put_endpoint_or_copy(b, c, Some(&tx.server), tx.resolver == Some(tx.server), resolver);
    b.extend_from_slice(b",\"server_pod\":");
    put_pod(b, c, tx.server_pod.as_ref());
    b.extend_from_slice(b",\"server_process\":");
    match &tx.server_process {
        Some(p) => {
            b.extend_from_slice(b"{\"comm\":");
            put_name(b, c, &p.comm);
            b.extend_from_slice(b",\"pid\":");
            put_u64_seen(b, c, u64::from(p.pid));
            b.extend_from_slice(b",\"thread\":");
            put_name(b, c, &p.thread);
            b.extend_from_slice(b",\"tid\":");
            put_u64_seen(b, c, u64::from(p.tid));
            b.push(b'}');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"server_service\":");
    match ctx.enricher.service_by_ip(&tx.server.ip) {
        // Names from the API may hold anything: escaped like any string
        // (`namespace/name`; the `/` needs no escape, so part by part).
        Some(s) => {
            b.push(b'"');
            put_str_body(b, &s.namespace);
            b.push(b'/');
            put_str_body(b, &s.name);
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"thread\":");
    put_opt_name(b, c, tx.process.as_ref().map(|p| &p.thread));
    line::Marks {
        runs: [
            run0..port_at,
            run1..id_at,
            run2..qname_at,
            run3..resolver_client_at,
            run4..retransmits_at,
            run5..b.len(),
        ],
        client_at,
    }
}

/// The JSON object for a finding.
#[must_use]
pub fn finding(f: &Finding) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String("finding".into()));
    }
    v
}

/// The JSON object for end-of-run counters.
#[must_use]
pub fn stats(s: &RunStats) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String("stats".into()));
    }
    v
}

/// Writes JSON Lines to any writer, through a [`super::lines::LineOut`].
pub struct JsonSink<W: Write> {
    out: super::lines::LineOut<W>,
}

impl<W: Write> JsonSink<W> {
    /// A sink over `out`.
    pub fn new(out: W) -> Self {
        Self { out: super::lines::LineOut::new(out) }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        let o = &mut self.out;
        put_transaction(&mut o.buf, &mut o.cache, ctx, tx);
        o.end_line();
    }
    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.out.value(&finding(f));
    }
    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        self.out.value(&stats(s));
        self.out.flush();
    }
    fn flush_output(&mut self) {
        self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        analyze::Observed,
        decode::dns::{Answer, RType},
        enrich::{Enricher, Snapshot},
        event::{Endpoint, Transport},
    };

    const DOC: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Service","metadata":{"namespace":"kube-system","name":"kube-dns"},"spec":{"clusterIP":"10.96.0.10"}}]}"#;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port }
    }

    fn pod(ns: &str, name: &str, node: Option<&str>) -> PodRef {
        PodRef::new(ns, name, node.map(Arc::from))
    }

    fn base() -> Transaction {
        Transaction {
            ts_ns: 1_795_433_602_123_456_789,
            end_ns: None,
            node: None,
            netns: 0,
            cgroup_id: 0,
            process: None,
            server_process: None,
            client: ep("10.244.1.10", 40000),
            server: ep("10.96.0.10", 53),
            client_pod: None,
            server_pod: None,
            resolver: None,
            resolver_client: None,
            resolver_pod: None,
            transport: Transport::Udp,
            id: 1,
            qname: "a.example".into(),
            qtype: 1,
            rcode: None,
            answers: Vec::new(),
            latency_ns: None,
            timed_out: true,
            retransmits: 0,
            duplicate_answers: 0,
            observed: Observed::Wire,
        }
    }

    #[test]
    fn direct_writer_matches_value_path_byte_for_byte() {
        let snap = Snapshot::parse(DOC, "t").unwrap();
        let mut full = base();
        full.end_ns = Some(full.ts_ns + 1_234_567);
        full.node = Some(Arc::from("node-a"));
        full.netns = 4_026_532_000;
        full.cgroup_id = u64::MAX;
        full.process =
            Some(Process { pid: 7, tid: 8, comm: "getent \"q\"\\".into(), thread: "isc-net-0000\u{1}".into() });
        full.server_process = Some(Process { pid: 9, tid: 9, comm: "dnsmasq".into(), thread: "dnsmasq".into() });
        full.client_pod = Some(pod("critical-app", "client", Some("node-a")));
        full.server_pod = Some(pod("kube-system", "coredns-0", None));
        full.resolver = Some(ep("10.244.2.10", 53));
        full.resolver_client = Some(ep("192.168.77.10", 61000));
        full.resolver_pod = Some(pod("kube-system", "coredns-0", Some("node-b")));
        full.transport = Transport::Tcp;
        full.id = u16::MAX;
        full.qname = "weird\\.name\t\u{7f}é.example".into();
        full.qtype = 65_000;
        full.rcode = Some(3);
        full.answers = vec![
            Answer { name: "a".into(), rtype: RType(1), ttl: 30, data: "10.0.0.1".into() },
            Answer { name: "b".into(), rtype: RType(65_280), ttl: 0, data: "\"x\"".into() },
            Answer { name: "\u{8}\u{c}\n\r\u{1f}\u{0}".into(), rtype: RType(5), ttl: u32::MAX, data: "€/".into() },
        ];
        full.latency_ns = Some(1_234_567);
        full.timed_out = false;
        full.retransmits = 3;
        full.observed = Observed::Both;
        let mut v6 = base();
        v6.client = ep("fd00::10", 5353);
        v6.server = ep("fd00::53", 53);
        v6.rcode = Some(4095);
        v6.latency_ns = Some(999);
        v6.ts_ns = 0;
        // Numbers of every width, times in one second and across seconds,
        // days and years, and before 1970.
        let mut more = Vec::new();
        for (i, ts) in [
            1,
            999_999_999,
            1_000_000_000,
            1_795_433_602_000_000_000,
            1_795_433_602_999_999_999,
            1_795_433_603_000_000_001,
            4_102_444_799_999_999_000,
            u64::MAX,
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = full.clone();
            t.ts_ns = ts;
            t.cgroup_id = 10u64.pow(u32::try_from(i).unwrap() * 2) - 1;
            t.netns = u32::try_from(i * 37).unwrap();
            t.client = ep(&format!("{}.{}.0.{}", i * 31, i, 255 - i), u16::try_from(i * 7919).unwrap());
            more.push(t);
        }
        let mut cache = JsonCache::new();
        for (enricher, offset) in [
            (Enricher::empty(), 0),
            (Enricher::from_snapshot(&snap), -5_000_000_000),
            (Enricher::empty(), -1_795_433_602_500_000_000),
        ] {
            let ctx = Context { clock_offset_ns: offset, enricher };
            // Twice: the second round writes from the cache.
            for tx in [base(), full.clone(), v6.clone()].into_iter().chain(more.iter().cloned()).cycle().take(2 * 11) {
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                put_transaction(&mut got, &mut cache, &ctx, &tx);
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }

    /// Generated transactions, each written by hand (one cache for the whole
    /// run, as a sink has) and through `serde_json::Value`: the same bytes.
    #[test]
    fn generated_transactions_match_the_value_path() {
        use crate::output::testgen::Gen;
        let snap = Snapshot::parse(DOC, "t").unwrap();
        let mut g = Gen::new(crate::testkit::Rng::SEED);
        let mut cache = JsonCache::new();
        let observed = [Observed::Client, Observed::Server, Observed::Both, Observed::Wire];
        for (round, (enricher, offset)) in [
            (Enricher::empty(), 0),
            (Enricher::from_snapshot(&snap), 0),
            (Enricher::empty(), -1_795_433_602_500_000_000),
            (Enricher::empty(), i128::from(u64::MAX)),
        ]
        .into_iter()
        .enumerate()
        {
            let ctx = Context { clock_offset_ns: offset, enricher };
            for _ in 0..5_000 {
                let mut tx = base();
                tx.ts_ns = g.ts();
                tx.node = g.opt_name();
                tx.netns = g.u32();
                tx.cgroup_id = g.num();
                tx.process = g.process();
                tx.server_process = g.process();
                tx.client = g.endpoint();
                tx.server = if round == 1 && g.bool(2) { ep("10.96.0.10", 53) } else { g.endpoint() };
                tx.client_pod = g.pod();
                tx.server_pod = g.pod();
                tx.resolver = match g.rng.below(3) {
                    0 => None,
                    1 => Some(tx.server),
                    _ => Some(g.endpoint()),
                };
                tx.resolver_client = match g.rng.below(3) {
                    0 => None,
                    1 => Some(tx.client),
                    _ => Some(g.endpoint()),
                };
                tx.resolver_pod = g.pod();
                tx.transport = if g.bool(5) { Transport::Tcp } else { Transport::Udp };
                tx.id = g.u16();
                tx.qname = g.name();
                tx.qtype = if g.bool(2) { 1 } else { g.u16() };
                tx.rcode = (!g.bool(3)).then(|| if g.bool(2) { 0 } else { g.u16() % 5000 });
                tx.answers = (0..g.rng.below(4))
                    .map(|_| Answer {
                        name: if g.bool(2) { Arc::clone(&tx.qname) } else { g.name() },
                        rtype: RType(if g.bool(2) { 1 } else { g.u16() }),
                        ttl: g.u32(),
                        data: g.name(),
                    })
                    .collect();
                tx.latency_ns = (!g.bool(4)).then(|| g.num());
                tx.timed_out = g.bool(3);
                tx.retransmits = g.u32();
                tx.observed = observed[g.rng.below(4)];
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                put_transaction(&mut got, &mut cache, &ctx, &tx);
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }

    /// Lines whose parties repeat (written from the cached runs) while
    /// every per-query field changes, and the Services change under them
    /// (a snapshot applied mid-run): the bytes of the value path.
    #[test]
    fn repeated_parties_match_the_value_path() {
        use crate::output::testgen::Gen;
        let snap = Snapshot::parse(DOC, "t").unwrap();
        let mut g = Gen::new(crate::testkit::Rng::SEED ^ 7);
        let mut cache = JsonCache::new();
        let enricher = Enricher::empty();
        let parties: Vec<Transaction> = (0..8)
            .map(|i| {
                let mut tx = base();
                tx.node = g.opt_name();
                tx.netns = g.u32();
                tx.cgroup_id = g.num();
                tx.process = g.process();
                tx.server_process = g.process();
                tx.client = if i % 4 == 3 { ep("fd00::10", 1) } else { g.endpoint() };
                tx.server = if i % 2 == 0 { ep("10.96.0.10", 53) } else { g.endpoint() };
                tx.client_pod = g.pod();
                tx.server_pod = g.pod();
                tx.resolver = [None, Some(tx.server), Some(g.endpoint())][i % 3];
                tx.resolver_pod = g.pod();
                tx.observed = [Observed::Client, Observed::Server, Observed::Both, Observed::Wire][i % 4];
                tx
            })
            .collect();
        for round in 0..3 {
            if round == 1 {
                enricher.apply_snapshot(&snap);
            }
            let ctx = Context { clock_offset_ns: 0, enricher: enricher.clone() };
            for _ in 0..3_000 {
                let mut tx = parties[g.rng.below(parties.len())].clone();
                tx.ts_ns = g.ts();
                tx.client.port = g.u16();
                tx.resolver_client = match g.rng.below(3) {
                    0 => None,
                    1 => Some(tx.client),
                    _ => Some(g.endpoint()),
                };
                tx.id = g.u16();
                tx.qname = g.name();
                tx.qtype = if g.bool(2) { 1 } else { g.u16() };
                tx.rcode = (!g.bool(3)).then(|| g.u16() % 5000);
                tx.answers = (0..g.rng.below(3))
                    .map(|_| Answer { name: g.name(), rtype: RType(g.u16()), ttl: g.u32(), data: g.name() })
                    .collect();
                tx.latency_ns = (!g.bool(4)).then(|| g.num());
                tx.timed_out = g.bool(3);
                tx.transport = if g.bool(5) { Transport::Tcp } else { Transport::Udp };
                tx.retransmits = g.u32();
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                put_transaction(&mut got, &mut cache, &ctx, &tx);
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }

    /// Milliseconds as `serde_json` writes the float: every microsecond of
    /// the first second, then values of every width up to and past where the
    /// hand formatting hands over to `serde_json`.
    #[test]
    fn put_ms_matches_serde_json() {
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        let edges = (0..64).flat_map(|k| {
            let p = 1u64 << k;
            [
                p - 1,
                p,
                p + 1,
                p.saturating_mul(1000) - 1,
                p.saturating_mul(1000),
                p.saturating_mul(1000).saturating_add(999),
            ]
        });
        let random = (0..200_000).map(|_| {
            let shift = rng.below(64) as u32;
            rng.next() >> shift
        });
        for ns in (0..1_000_000u64).map(|us| us * 1000 + us % 1000).chain(edges).chain(random).chain([u64::MAX]) {
            let mut got = Vec::new();
            put_ms(&mut got, ns);
            assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&ms(ns)).unwrap(), "{ns}");
        }
    }

    /// Numbers and IPv4 endpoints of every width, as `Display` writes them.
    #[test]
    fn numbers_and_endpoints_match_display() {
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        let widths = (0..20).flat_map(|k| {
            let p = 10u64.pow(k);
            [p - 1, p, p + 1]
        });
        // Every value of the short path (below 100,000) and past it.
        for v in widths.chain(0..200_000).chain((0..100_000).map(|_| {
            let shift = rng.below(64) as u32;
            rng.next() >> shift
        })) {
            let mut got = Vec::new();
            put_u64(&mut got, v);
            assert_eq!(String::from_utf8(got).unwrap(), v.to_string());
        }
        let mut cache = JsonCache::new();
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(if i < 256 { i * 0x0101_0101 } else { rng.next() as u32 });
            let port = if i < 65_536 { i as u16 } else { rng.next() as u16 };
            let e = Endpoint { ip: IpAddr::V4(ip), port };
            let mut got = Vec::new();
            put_endpoint(&mut got, &mut cache, &e);
            assert_eq!(String::from_utf8(got).unwrap(), format!("\"{e}\""));
            let mut got = Vec::new();
            put_endpoint_text(&mut got, &e);
            assert_eq!(String::from_utf8(got).unwrap(), e.to_string());
            let mut got = Vec::new();
            put_u64_seen(&mut got, &mut cache, u64::from(u32::from(ip)));
            assert_eq!(String::from_utf8(got).unwrap(), u32::from(ip).to_string());
        }
    }

    /// The word-at-a-time scan escapes exactly what `serde_json` escapes,
    /// wherever the byte falls in a word and whatever the length.
    #[test]
    fn put_str_matches_serde_json_at_every_position() {
        let specials = ['"', '\\', '\u{0}', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{1f}', ' ', '\u{7f}', 'é', '€', 'a'];
        for len in 0..20 {
            for at in 0..len.max(1) {
                for c in specials {
                    for c2 in ['a', '"', '\u{1}'] {
                        let s: String = (0..len)
                            .map(|i| {
                                if i == at {
                                    c
                                } else if i == len - 1 {
                                    c2
                                } else {
                                    'x'
                                }
                            })
                            .collect();
                        let mut got = Vec::new();
                        put_str(&mut got, &s);
                        assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&s).unwrap(), "{s:?}");
                    }
                }
            }
        }
    }

    /// Type and rcode mnemonics are written without the escape scan: none needs one.
    #[test]
    fn mnemonics_need_no_escape() {
        use crate::decode::dns::{qtype_str, rcode_str};
        for t in 0..=u16::MAX {
            let (mut q, mut r) = (Vec::new(), Vec::new());
            put_qtype(&mut q, t);
            put_rcode(&mut r, t);
            assert_eq!(q, serde_json::to_vec(&qtype_name(t)).unwrap());
            assert_eq!(r, serde_json::to_vec(&rcode_name(t)).unwrap());
            for s in [qtype_str(t), rcode_str(t)].into_iter().flatten() {
                let mut b = Vec::new();
                put_mnemonic(&mut b, s);
                assert_eq!(b, serde_json::to_vec(s).unwrap());
            }
        }
    }
}
