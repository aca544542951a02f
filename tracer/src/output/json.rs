//! JSON Lines: one object per transaction (`type:"dns"`), finding
//! (`type:"finding"`) and end-of-run counters (`type:"stats"`). Field names
//! are a public contract documented in docs/json.md: add, never rename.

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

/// The JSON object for a transaction.
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

/// Renders a `Display` value as a JSON string without an intermediate `String`.
struct Disp<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Disp<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(serde::Serialize)]
struct PodOut<'a> {
    name: &'a str,
    namespace: &'a str,
    node: Option<&'a str>,
}

impl<'a> PodOut<'a> {
    fn of(p: Option<&'a PodRef>) -> Option<Self> {
        p.map(|p| Self { name: &p.name, namespace: &p.namespace, node: p.node.as_deref() })
    }
}

#[derive(serde::Serialize)]
struct ProcessOut<'a> {
    comm: &'a str,
    pid: u32,
    thread: &'a str,
    tid: u32,
}

#[derive(serde::Serialize)]
struct AnswerOut<'a> {
    data: &'a str,
    name: &'a str,
    ttl: u32,
    #[serde(rename = "type")]
    rtype: &'a str,
}

struct Answers<'a>(&'a [crate::decode::dns::Answer]);

impl serde::Serialize for Answers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| AnswerOut { data: &a.data, name: &a.name, ttl: a.ttl, rtype: &a.rtype }))
    }
}

/// A transaction record as [`transaction`] builds it, borrowed instead of
/// built: fields in the byte order `serde_json::Value` (a sorted map) prints
/// them, so both paths give identical lines (a test checks it). The `Value`
/// path allocated a map node per field, ~40 % of replay time.
#[derive(serde::Serialize)]
struct TxOut<'a> {
    answers: Answers<'a>,
    cgroup_id: u64,
    client: Disp<crate::event::Endpoint>,
    client_pod: Option<PodOut<'a>>,
    comm: Option<&'a str>,
    id: u16,
    latency_ms: Option<f64>,
    metadata_stale: bool,
    netns: u32,
    node: Option<&'a str>,
    observed: crate::analyze::Observed,
    pid: Option<u32>,
    qname: &'a str,
    qtype: Disp<QtypeName>,
    rcode: Option<Disp<RcodeName>>,
    resolver: Option<Disp<crate::event::Endpoint>>,
    resolver_client: Option<Disp<crate::event::Endpoint>>,
    resolver_pod: Option<PodOut<'a>>,
    retransmits: u32,
    server: Disp<crate::event::Endpoint>,
    server_pod: Option<PodOut<'a>>,
    server_process: Option<ProcessOut<'a>>,
    server_service: Option<Disp<super::NsName<'a>>>,
    thread: Option<&'a str>,
    timed_out: bool,
    transport: crate::event::Transport,
    ts: Disp<super::Rfc3339>,
    #[serde(rename = "type")]
    kind: &'static str,
}

struct QtypeName(u16);

impl std::fmt::Display for QtypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match crate::decode::dns::qtype_str(self.0) {
            Some(s) => f.write_str(s),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

struct RcodeName(u16);

impl std::fmt::Display for RcodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match crate::decode::dns::rcode_str(self.0) {
            Some(s) => f.write_str(s),
            None => write!(f, "RCODE{}", self.0),
        }
    }
}

/// Writes a transaction's JSON line (without the newline) to `out`:
/// the same bytes as serialising [`transaction`], without building it.
pub fn write_transaction<W: Write>(out: W, ctx: &Context, tx: &Transaction) -> serde_json::Result<()> {
    let service = ctx.enricher.service_by_ip(&tx.server.ip);
    let v = TxOut {
        answers: Answers(&tx.answers),
        cgroup_id: tx.cgroup_id,
        client: Disp(tx.client),
        client_pod: PodOut::of(tx.client_pod.as_ref()),
        comm: tx.process.as_ref().map(|p| p.comm.as_ref()),
        id: tx.id,
        latency_ms: tx.latency_ns.map(ms),
        metadata_stale: ctx.enricher.stale(),
        netns: tx.netns,
        node: tx.node.as_deref(),
        observed: tx.observed,
        pid: tx.process.as_ref().map(|p| p.pid),
        qname: &tx.qname,
        qtype: Disp(QtypeName(tx.qtype)),
        rcode: tx.rcode.map(|r| Disp(RcodeName(r))),
        resolver: tx.resolver.map(Disp),
        resolver_client: tx.resolver_client.map(Disp),
        resolver_pod: PodOut::of(tx.resolver_pod.as_ref()),
        retransmits: tx.retransmits,
        server: Disp(tx.server),
        server_pod: PodOut::of(tx.server_pod.as_ref()),
        server_process: tx.server_process.as_ref().map(|p| ProcessOut {
            comm: &p.comm,
            pid: p.pid,
            thread: &p.thread,
            tid: p.tid,
        }),
        server_service: service.as_ref().map(|s| Disp(super::NsName(&s.namespace, &s.name))),
        thread: tx.process.as_ref().map(|p| p.thread.as_ref()),
        timed_out: tx.timed_out,
        transport: tx.transport,
        ts: Disp(super::Rfc3339(ctx.wall_ns(tx.ts_ns))),
        kind: "dns",
    };
    serde_json::to_writer(out, &v)
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

/// Writes JSON Lines to any writer, buffered; flushed on every pipeline tick
/// (10 ms live) so pipes still see events promptly without a write per line.
pub struct JsonSink<W: Write> {
    out: std::io::BufWriter<W>,
}

impl<W: Write> JsonSink<W> {
    /// A sink over `out`.
    pub fn new(out: W) -> Self {
        Self { out: std::io::BufWriter::with_capacity(64 * 1024, out) }
    }

    fn line(&mut self, v: &Value) {
        // A closed pipe (| head) must not panic; the run ends on its own.
        let _ = serde_json::to_writer(&mut self.out, v);
        let _ = self.out.write_all(b"\n");
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        // A closed pipe (| head) must not panic; the run ends on its own.
        let _ = write_transaction(&mut self.out, ctx, tx);
        let _ = self.out.write_all(b"\n");
    }
    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.line(&finding(f));
    }
    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        self.line(&stats(s));
        let _ = self.out.flush();
    }
    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        analyze::Observed,
        decode::dns::Answer,
        enrich::{Enricher, Snapshot},
        event::{Endpoint, Transport},
    };

    const DOC: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Service","metadata":{"namespace":"kube-system","name":"kube-dns"},"spec":{"clusterIP":"10.96.0.10"}}]}"#;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port }
    }

    fn pod(ns: &str, name: &str, node: Option<&str>) -> PodRef {
        PodRef { namespace: Arc::from(ns), name: Arc::from(name), node: node.map(Arc::from) }
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
            Answer { name: "a".into(), rtype: "A".into(), ttl: 30, data: "10.0.0.1".into() },
            Answer { name: "b".into(), rtype: "TYPE99".into(), ttl: 0, data: "\"x\"".into() },
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
        for (enricher, offset) in [(Enricher::empty(), 0), (Enricher::from_snapshot(&snap), -5_000_000_000)] {
            let ctx = Context { clock_offset_ns: offset, enricher };
            for tx in [base(), full.clone(), v6.clone()] {
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                write_transaction(&mut got, &ctx, &tx).unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }
}
