//! `ktrace replay`'s sink: every record and DNS message as it enters the
//! pipeline (the `sysdig -r` view), and with `-o json` also the pipeline's
//! transactions, findings and counters, as the same `dns`, `finding` and
//! `stats` records `ktrace dns -o json` prints.

use std::{fmt::Write as _, io::Write};

use serde_json::{Value, json};

use crate::{
    decode::{
        DnsEvent,
        dns::{qtype_name, rcode_name},
    },
    event::Record,
    model::{Finding, PodRef, Transaction},
    pipeline::{Context, Filter, RunStats, Sink},
};

use super::rfc3339;

fn pod_json(p: Option<&PodRef>) -> Value {
    p.map_or(Value::Null, |p| json!({"namespace": &*p.namespace, "name": &*p.name, "node": p.node.as_deref()}))
}

/// Lists records (JSON Lines or one line of text each).
pub struct RecordSink<W: Write> {
    out: std::io::BufWriter<W>,
    json: bool,
    /// Which packets are listed: pods (`--ns`, `--pod`) on either side and
    /// the observing node (`--node`). Other records are always listed.
    pods: Filter,
    node: Option<String>,
    /// A write failed (closed pipe): nothing more is written.
    failed: bool,
}

impl<W: Write> RecordSink<W> {
    /// A sink over `out`, JSON Lines when `json`, text otherwise; packets
    /// listed when they match `pods`' namespace and pod and were observed on `node`.
    pub fn new(out: W, json: bool, pods: Filter, node: Option<String>) -> Self {
        Self { out: std::io::BufWriter::with_capacity(64 * 1024, out), json, pods, node, failed: false }
    }

    /// One record: `v` in JSON mode, `text` otherwise.
    pub fn emit(&mut self, v: &Value, text: &str) {
        if self.failed {
            return;
        }
        let r = if self.json { writeln!(self.out, "{v}") } else { writeln!(self.out, "{text}") };
        self.failed = r.is_err();
    }

    /// A JSON-only record (transactions, findings, counters).
    fn emit_json(&mut self, write: impl FnOnce(&mut std::io::BufWriter<W>) -> std::io::Result<()>) {
        if self.failed || !self.json {
            return;
        }
        self.failed = write(&mut self.out).and_then(|()| self.out.write_all(b"\n")).is_err();
    }
}

impl<W: Write> Sink for RecordSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        self.emit_json(|out| super::json::write_transaction(out, ctx, tx).map_err(std::io::Error::other));
    }

    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.emit_json(|out| serde_json::to_writer(out, &super::json::finding(f)).map_err(std::io::Error::other));
    }

    fn finish(&mut self, _ctx: &Context, stats: &RunStats) {
        self.emit_json(|out| serde_json::to_writer(out, &super::json::stats(stats)).map_err(std::io::Error::other));
        let _ = self.out.flush();
    }

    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }

    fn lists_records(&self) -> bool {
        true
    }

    fn record(&mut self, _ctx: &Context, rec: &Record) {
        let ts = rfc3339(i128::from(rec.ts_ns()));
        match rec {
            // Listed as DNS messages once decoded (`message`).
            Record::Packet(_) => {}
            Record::Lost { count, node, .. } => {
                let v = json!({"type": "lost", "ts": ts, "node": node.as_deref(), "count": count});
                self.emit(&v, &format!("{ts} LOST {count} events"));
            }
            Record::Drop(d) => {
                let head = d.data.iter().take(24).fold(String::new(), |mut h, b| {
                    let _ = write!(h, "{b:02x}");
                    h
                });
                let v = json!({"type": "drop", "ts": ts, "node": d.node.as_deref(), "reason": &*d.reason_name, "ifindex": d.ifindex, "netns": d.netns_ino, "len": d.wire_len, "captured": d.data.len(), "head": head});
                let text = format!(
                    "{ts} DROP {} ifindex={} netns={} len={}",
                    d.reason_name, d.ifindex, d.netns_ino, d.wire_len
                );
                self.emit(&v, &text);
            }
            Record::Conn(c) => {
                let v = json!({"type": "conn", "ts": ts, "node": c.node.as_deref(), "kind": c.kind, "src": c.src.to_string(), "dst": c.dst.to_string(), "pid": c.process.as_ref().map(|p| p.pid), "comm": c.process.as_ref().map(|p| p.comm.as_ref())});
                self.emit(&v, &format!("{ts} CONN {:?} {} -> {}", c.kind, c.src, c.dst));
            }
            Record::ResolvConf(rc) => {
                let v = json!({"type": "resolv_conf", "ts": ts, "pid": rc.pid, "netns": rc.netns_ino, "path": rc.path, "text": rc.text, "error": rc.error});
                let body = rc.text.clone().or(rc.error.clone()).unwrap_or_default();
                self.emit(&v, &format!("{ts} resolv.conf of pid {} ({}):\n{}", rc.pid, rc.path, body.trim_end()));
            }
        }
    }

    fn message(&mut self, _ctx: &Context, e: &DnsEvent) {
        let p = &e.rec;
        if self.node.as_deref().is_some_and(|n| p.node.as_deref() != Some(n)) {
            return;
        }
        if self.pods.is_pod_scoped()
            && !self.pods.pod_matches(e.src_pod.as_ref())
            && !self.pods.pod_matches(e.dst_pod.as_ref())
        {
            return;
        }
        let ts = rfc3339(i128::from(p.ts_ns));
        let m = &e.msg;
        let proc_ = p.process.as_ref();
        let v = json!({
            "type": "packet", "ts": ts, "node": p.node.as_deref(), "hook": p.hook,
            "pid": proc_.map(|x| x.pid), "comm": proc_.map(|x| x.comm.as_ref()),
            "netns": p.netns_ino, "cgroup_id": p.cgroup_id,
            "src": e.src.to_string(), "dst": e.dst.to_string(), "transport": e.transport,
            "src_pod": pod_json(e.src_pod.as_ref()), "dst_pod": pod_json(e.dst_pod.as_ref()),
            "dns": {"id": m.id, "response": m.is_response, "qname": m.qname, "qtype": qtype_name(m.qtype),
                    "rcode": m.is_response.then(|| rcode_name(m.rcode)), "answers": m.ancount},
        });
        let who = proc_.map_or("-".into(), |x| format!("{}[{}]", x.comm, x.pid));
        let text = format!(
            "{ts} {:<8} {:<14} {:<18} {} -> {} {} {:#06x} {} {} {}",
            p.node.as_deref().unwrap_or("-"),
            format!("{:?}", p.hook),
            who,
            e.src_pod.as_ref().map_or(e.src.to_string(), |x| format!("{}({x})", e.src)),
            e.dst_pod.as_ref().map_or(e.dst.to_string(), |x| format!("{}({x})", e.dst)),
            if m.is_response { "R" } else { "Q" },
            m.id,
            m.qname,
            qtype_name(m.qtype),
            if m.is_response { rcode_name(m.rcode) } else { String::new() },
        );
        self.emit(&v, &text);
    }
}
