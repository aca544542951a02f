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
        "comm": tx.process.as_ref().map(|p| p.comm.as_str()),
        "thread": tx.process.as_ref().map(|p| p.thread.as_str()),
        "client": tx.client.to_string(),
        "server": tx.server.to_string(),
        "client_pod": pod(tx.client_pod.as_ref()),
        "server_pod": pod(tx.server_pod.as_ref()),
        "server_service": service.map(|s| format!("{}/{}", s.namespace, s.name)),
        "server_process": process(tx.server_process.as_ref()),
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
        self.line(&transaction(ctx, tx));
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
