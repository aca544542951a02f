//! `ktrace replay`'s sink: every record and DNS message as it enters the
//! pipeline (the `sysdig -r` view), and with `-o json` also the pipeline's
//! transactions, findings and counters, as the same `dns`, `finding` and
//! `stats` records `ktrace dns -o json` prints.
//!
//! Lines are written by hand into one reused buffer (JSON keys in the
//! sorted order `serde_json::Value` printed them in, which is the public
//! form) and the buffer goes out with one `write` per pipeline tick or
//! 64 KiB; nothing is built per record.

use std::io::Write;

use serde_json::Value;

use crate::{
    decode::DnsEvent,
    event::{ConnKind, Hook, Record},
    model::{Finding, Transaction},
    pipeline::{Context, Filter, RunStats, Sink},
};

use super::{
    json::{
        JsonCache, put_bool, put_endpoint, put_endpoint_text, put_name, put_opt_name, put_opt_str, put_opt_u64,
        put_pod, put_qtype, put_rcode, put_str, put_transaction, put_ts, put_ts_text, put_u64, put_u64_seen,
    },
    lines::LineOut,
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lists records (JSON Lines or one line of text each).
pub struct RecordSink<W: Write> {
    out: LineOut<W>,
    json: bool,
    /// Which packets are listed: pods (`--ns`, `--pod`) on either side and
    /// the observing node (`--node`). Other records are always listed.
    pods: Filter,
    node: Option<String>,
}

impl<W: Write> RecordSink<W> {
    /// A sink over `out`, JSON Lines when `json`, text otherwise; packets
    /// listed when they match `pods`' namespace and pod and were observed on `node`.
    pub fn new(out: W, json: bool, pods: Filter, node: Option<String>) -> Self {
        Self { out: LineOut::new(out), json, pods, node }
    }

    /// One record: `v` in JSON mode, `text` otherwise (the rare records:
    /// capture headers, network state).
    pub fn emit(&mut self, v: &Value, text: &str) {
        if self.json {
            self.out.value(v);
        } else {
            self.out.buf.extend_from_slice(text.as_bytes());
            self.out.end_line();
        }
    }
}

/// A record's line, JSON or text, appended to `b`.
fn put_record(b: &mut Vec<u8>, c: &mut JsonCache, json: bool, rec: &Record) {
    let ts = i128::from(rec.ts_ns());
    match rec {
        // Listed as DNS messages once decoded (`message`).
        Record::Packet(_) => {}
        Record::Lost { count, node, .. } => {
            if json {
                b.extend_from_slice(b"{\"count\":");
                put_u64(b, *count);
                b.extend_from_slice(b",\"node\":");
                put_opt_name(b, c, node.as_ref());
                b.extend_from_slice(b",\"ts\":");
                put_ts(b, c, ts);
                b.extend_from_slice(b",\"type\":\"lost\"}");
            } else {
                put_ts_text(b, c, ts);
                b.extend_from_slice(b" LOST ");
                put_u64(b, *count);
                b.extend_from_slice(b" events");
            }
        }
        Record::Drop(d) => {
            if json {
                b.extend_from_slice(b"{\"captured\":");
                put_u64(b, d.data.len() as u64);
                // Only when the kernel folded repeats into this record: a
                // single drop prints as it always did.
                if d.count > 1 {
                    b.extend_from_slice(b",\"count\":");
                    put_u64(b, u64::from(d.count));
                }
                b.extend_from_slice(b",\"head\":\"");
                for &x in d.data.iter().take(24) {
                    b.extend_from_slice(&[HEX[usize::from(x >> 4)], HEX[usize::from(x & 0xf)]]);
                }
                b.extend_from_slice(b"\",\"ifindex\":");
                put_u64(b, u64::from(d.ifindex));
                b.extend_from_slice(b",\"len\":");
                put_u64(b, u64::from(d.wire_len));
                b.extend_from_slice(b",\"netns\":");
                put_u64(b, u64::from(d.netns_ino));
                b.extend_from_slice(b",\"node\":");
                put_opt_name(b, c, d.node.as_ref());
                b.extend_from_slice(b",\"reason\":");
                put_name(b, c, &d.reason_name);
                b.extend_from_slice(b",\"ts\":");
                put_ts(b, c, ts);
                b.extend_from_slice(b",\"type\":\"drop\"}");
            } else {
                put_ts_text(b, c, ts);
                b.extend_from_slice(b" DROP ");
                b.extend_from_slice(d.reason_name.as_bytes());
                b.extend_from_slice(b" ifindex=");
                put_u64(b, u64::from(d.ifindex));
                b.extend_from_slice(b" netns=");
                put_u64(b, u64::from(d.netns_ino));
                b.extend_from_slice(b" len=");
                put_u64(b, u64::from(d.wire_len));
                if d.count > 1 {
                    b.extend_from_slice(b" count=");
                    put_u64(b, u64::from(d.count));
                }
            }
        }
        Record::Conn(cn) => {
            if json {
                b.extend_from_slice(b"{\"comm\":");
                put_opt_name(b, c, cn.process.as_ref().map(|p| &p.comm));
                b.extend_from_slice(b",\"dst\":");
                put_endpoint(b, c, &cn.dst);
                b.extend_from_slice(b",\"kind\":");
                put_conn_kind(b, cn.kind);
                b.extend_from_slice(b",\"node\":");
                put_opt_name(b, c, cn.node.as_ref());
                b.extend_from_slice(b",\"pid\":");
                put_opt_u64(b, cn.process.as_ref().map(|p| u64::from(p.pid)));
                b.extend_from_slice(b",\"src\":");
                put_endpoint(b, c, &cn.src);
                b.extend_from_slice(b",\"ts\":");
                put_ts(b, c, ts);
                b.extend_from_slice(b",\"type\":\"conn\"}");
            } else {
                put_ts_text(b, c, ts);
                let _ = write!(b, " CONN {:?} ", cn.kind);
                put_endpoint_text(b, &cn.src);
                b.extend_from_slice(b" -> ");
                put_endpoint_text(b, &cn.dst);
            }
        }
        Record::ResolvConf(rc) => {
            if json {
                b.extend_from_slice(b"{\"error\":");
                put_opt_str(b, rc.error.as_deref());
                b.extend_from_slice(b",\"netns\":");
                put_u64(b, u64::from(rc.netns_ino));
                b.extend_from_slice(b",\"path\":");
                put_str(b, &rc.path);
                b.extend_from_slice(b",\"pid\":");
                put_u64(b, u64::from(rc.pid));
                b.extend_from_slice(b",\"text\":");
                put_opt_str(b, rc.text.as_deref());
                b.extend_from_slice(b",\"ts\":");
                put_ts(b, c, ts);
                b.extend_from_slice(b",\"type\":\"resolv_conf\"}");
            } else {
                put_ts_text(b, c, ts);
                let body = rc.text.as_deref().or(rc.error.as_deref()).unwrap_or_default();
                let _ = write!(b, " resolv.conf of pid {} ({}):\n{}", rc.pid, rc.path, body.trim_end());
            }
        }
    }
}

/// [`ConnKind`] as `serde_json::Value` printed it: externally tagged, fields sorted.
fn put_conn_kind(b: &mut Vec<u8>, k: ConnKind) {
    let (tag, state): (&[u8], u8) = match k {
        ConnKind::State { old, new } => {
            b.extend_from_slice(b"{\"state\":{\"new\":");
            put_u64(b, u64::from(new));
            b.extend_from_slice(b",\"old\":");
            put_u64(b, u64::from(old));
            b.extend_from_slice(b"}}");
            return;
        }
        ConnKind::ResetReceived { state } => (b"{\"reset_received\":{\"state\":", state),
        ConnKind::ResetSent { state } => (b"{\"reset_sent\":{\"state\":", state),
        ConnKind::Retransmit { state } => (b"{\"retransmit\":{\"state\":", state),
    };
    b.extend_from_slice(tag);
    put_u64(b, u64::from(state));
    b.extend_from_slice(b"}}");
}

fn hook_json(h: Hook) -> &'static [u8] {
    match h {
        Hook::SocketEgress => b"\"socket_egress\"",
        Hook::SocketIngress => b"\"socket_ingress\"",
        Hook::TcEgress => b"\"tc_egress\"",
        Hook::TcIngress => b"\"tc_ingress\"",
        Hook::Wire => b"\"wire\"",
    }
}

fn hook_debug(h: Hook) -> &'static [u8] {
    match h {
        Hook::SocketEgress => b"SocketEgress",
        Hook::SocketIngress => b"SocketIngress",
        Hook::TcEgress => b"TcEgress",
        Hook::TcIngress => b"TcIngress",
        Hook::Wire => b"Wire",
    }
}

/// Pads what was written since `from` with spaces to `width` characters,
/// as `{:<width}` does (it counts characters, not bytes).
fn pad_from(b: &mut Vec<u8>, from: usize, width: usize) {
    let chars = b[from..].iter().filter(|&&x| x & 0xc0 != 0x80).count();
    for _ in chars..width {
        b.push(b' ');
    }
}

/// A DNS message's line, JSON or text, appended to `b`.
#[expect(clippy::many_single_char_names, reason = "b, c, e, m, p: buffer, cache, event, message, packet")]
fn put_message(b: &mut Vec<u8>, c: &mut JsonCache, json: bool, e: &DnsEvent) {
    let p = &e.rec;
    let m = &e.msg;
    let ts = i128::from(p.ts_ns);
    let proc_ = p.process.as_ref();
    if json {
        b.extend_from_slice(b"{\"cgroup_id\":");
        put_u64_seen(b, c, p.cgroup_id);
        b.extend_from_slice(b",\"comm\":");
        put_opt_name(b, c, proc_.map(|x| &x.comm));
        b.extend_from_slice(b",\"dns\":{\"answers\":");
        put_u64(b, u64::from(m.ancount));
        b.extend_from_slice(b",\"id\":");
        put_u64(b, u64::from(m.id));
        b.extend_from_slice(b",\"qname\":");
        put_name(b, c, &m.qname);
        b.extend_from_slice(b",\"qtype\":");
        put_qtype(b, m.qtype);
        b.extend_from_slice(b",\"rcode\":");
        if m.is_response {
            put_rcode(b, m.rcode);
        } else {
            b.extend_from_slice(b"null");
        }
        b.extend_from_slice(b",\"response\":");
        put_bool(b, m.is_response);
        b.extend_from_slice(b"},\"dst\":");
        put_endpoint(b, c, &e.dst);
        b.extend_from_slice(b",\"dst_pod\":");
        put_pod(b, c, e.dst_pod.as_ref());
        b.extend_from_slice(b",\"hook\":");
        b.extend_from_slice(hook_json(p.hook));
        b.extend_from_slice(b",\"netns\":");
        put_u64_seen(b, c, u64::from(p.netns_ino));
        b.extend_from_slice(b",\"node\":");
        put_opt_name(b, c, p.node.as_ref());
        b.extend_from_slice(b",\"pid\":");
        match proc_ {
            Some(x) => put_u64_seen(b, c, u64::from(x.pid)),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"src\":");
        put_endpoint(b, c, &e.src);
        b.extend_from_slice(b",\"src_pod\":");
        put_pod(b, c, e.src_pod.as_ref());
        b.extend_from_slice(match e.transport {
            crate::event::Transport::Udp => b",\"transport\":\"udp\",\"ts\":",
            crate::event::Transport::Tcp => b",\"transport\":\"tcp\",\"ts\":",
        });
        put_ts(b, c, ts);
        b.extend_from_slice(b",\"type\":\"packet\"}");
        return;
    }
    // `{ts} {node:<8} {hook:<14?} {who:<18} {src} -> {dst} {Q|R} {id:#06x} {qname} {qtype} {rcode}`,
    // an endpoint followed by `(namespace/name)` when its pod is known.
    put_ts_text(b, c, ts);
    b.push(b' ');
    let at = b.len();
    b.extend_from_slice(p.node.as_deref().unwrap_or("-").as_bytes());
    pad_from(b, at, 8);
    b.push(b' ');
    let at = b.len();
    b.extend_from_slice(hook_debug(p.hook));
    pad_from(b, at, 14);
    b.push(b' ');
    let at = b.len();
    match proc_ {
        Some(x) => {
            b.extend_from_slice(x.comm.as_bytes());
            b.push(b'[');
            put_u64(b, u64::from(x.pid));
            b.push(b']');
        }
        None => b.push(b'-'),
    }
    pad_from(b, at, 18);
    b.push(b' ');
    for (i, (ep, pod)) in [(&e.src, &e.src_pod), (&e.dst, &e.dst_pod)].into_iter().enumerate() {
        if i > 0 {
            b.extend_from_slice(b" -> ");
        }
        put_endpoint_text(b, ep);
        if let Some(pod) = pod {
            b.push(b'(');
            b.extend_from_slice(pod.namespace.as_bytes());
            b.push(b'/');
            b.extend_from_slice(pod.name.as_bytes());
            b.push(b')');
        }
    }
    let id = usize::from(m.id);
    b.extend_from_slice(&[
        b' ',
        if m.is_response { b'R' } else { b'Q' },
        b' ',
        b'0',
        b'x',
        HEX[id >> 12],
        HEX[(id >> 8) & 0xf],
        HEX[(id >> 4) & 0xf],
        HEX[id & 0xf],
        b' ',
    ]);
    b.extend_from_slice(m.qname.as_bytes());
    b.push(b' ');
    match crate::decode::dns::qtype_str(m.qtype) {
        Some(s) => b.extend_from_slice(s.as_bytes()),
        None => {
            let _ = write!(b, "TYPE{}", m.qtype);
        }
    }
    b.push(b' ');
    if m.is_response {
        match crate::decode::dns::rcode_str(m.rcode) {
            Some(s) => b.extend_from_slice(s.as_bytes()),
            None => {
                let _ = write!(b, "RCODE{}", m.rcode);
            }
        }
    }
}

impl<W: Write> Sink for RecordSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        if self.json {
            let o = &mut self.out;
            put_transaction(&mut o.buf, &mut o.cache, ctx, tx);
            o.end_line();
        }
    }

    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        if self.json {
            self.out.value(&super::json::finding(f));
        }
    }

    fn finish(&mut self, _ctx: &Context, stats: &RunStats) {
        if self.json {
            self.out.value(&super::json::stats(stats));
        }
        self.out.flush();
    }

    fn flush_output(&mut self) {
        self.out.flush();
    }

    fn lists_records(&self) -> bool {
        true
    }

    fn record(&mut self, _ctx: &Context, rec: &Record) {
        if matches!(rec, Record::Packet(_)) {
            return;
        }
        let o = &mut self.out;
        put_record(&mut o.buf, &mut o.cache, self.json, rec);
        o.end_line();
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
        let o = &mut self.out;
        put_message(&mut o.buf, &mut o.cache, self.json, e);
        o.end_line();
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        decode::{
            DnsMessage,
            dns::{qtype_name, rcode_name},
        },
        enrich::Enricher,
        event::{ConnRecord, DropRecord, PacketInfo, PacketRecord, ResolvConfEvidence, Transport},
        model::PodRef,
        output::{rfc3339, testgen::Gen},
        testkit::Rng,
    };

    // The serde path this sink had before it wrote by hand: the reference.

    fn pod_json(p: Option<&PodRef>) -> Value {
        p.map_or(Value::Null, |p| json!({"namespace": &*p.namespace, "name": &*p.name, "node": p.node.as_deref()}))
    }

    fn old_record(rec: &Record) -> Option<(Value, String)> {
        let ts = rfc3339(i128::from(rec.ts_ns()));
        Some(match rec {
            Record::Packet(_) => return None,
            Record::Lost { count, node, .. } => {
                let v = json!({"type": "lost", "ts": ts, "node": node.as_deref(), "count": count});
                (v, format!("{ts} LOST {count} events"))
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
                (v, text)
            }
            Record::Conn(c) => {
                let v = json!({"type": "conn", "ts": ts, "node": c.node.as_deref(), "kind": c.kind, "src": c.src.to_string(), "dst": c.dst.to_string(), "pid": c.process.as_ref().map(|p| p.pid), "comm": c.process.as_ref().map(|p| p.comm.as_ref())});
                (v, format!("{ts} CONN {:?} {} -> {}", c.kind, c.src, c.dst))
            }
            Record::ResolvConf(rc) => {
                let v = json!({"type": "resolv_conf", "ts": ts, "pid": rc.pid, "netns": rc.netns_ino, "path": rc.path, "text": rc.text, "error": rc.error});
                let body = rc.text.clone().or(rc.error.clone()).unwrap_or_default();
                (v, format!("{ts} resolv.conf of pid {} ({}):\n{}", rc.pid, rc.path, body.trim_end()))
            }
        })
    }

    fn old_message(e: &DnsEvent) -> (Value, String) {
        let p = &e.rec;
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
        (v, text)
    }

    const HOOKS: [Hook; 5] = [Hook::SocketEgress, Hook::SocketIngress, Hook::TcEgress, Hook::TcIngress, Hook::Wire];

    fn opt_text(g: &mut Gen) -> Option<String> {
        g.opt_name().map(|s| format!("{s}\n# line two\t{s}\n\n"))
    }

    fn record(g: &mut Gen) -> Record {
        let ts_ns = g.ts();
        match g.rng.below(5) {
            0 => Record::Lost { ts_ns, count: g.num(), node: g.opt_name() },
            1 => Record::ResolvConf(ResolvConfEvidence {
                ts_ns,
                pid: g.u32(),
                netns_ino: g.u32(),
                path: g.name().to_string(),
                text: opt_text(g),
                error: opt_text(g),
            }),
            2 => {
                let len = g.rng.below(40);
                let data: Vec<u8> = (0..len).map(|_| g.rng.next() as u8).collect();
                Record::Drop(DropRecord {
                    ts_ns,
                    reason: g.u32(),
                    reason_name: g.name(),
                    location: g.num(),
                    ifindex: g.u32(),
                    netns_ino: g.u32(),
                    wire_len: g.u32(),
                    data: Bytes::from(data),
                    node: g.opt_name(),
                    process: g.process(),
                    count: 1,
                })
            }
            3 => {
                let st = g.rng.next() as u8;
                let kind = match g.rng.below(4) {
                    0 => ConnKind::State { old: st, new: g.rng.next() as u8 },
                    1 => ConnKind::ResetReceived { state: st },
                    2 => ConnKind::ResetSent { state: st },
                    _ => ConnKind::Retransmit { state: st },
                };
                Record::Conn(ConnRecord {
                    ts_ns,
                    kind,
                    src: g.endpoint(),
                    dst: g.endpoint(),
                    sock: g.num(),
                    process: g.process(),
                    netns_ino: g.u32(),
                    node: g.opt_name(),
                })
            }
            _ => Record::Packet(PacketRecord::bare(ts_ns, Hook::Wire, Bytes::new())),
        }
    }

    fn message(g: &mut Gen) -> DnsEvent {
        let is_response = g.bool(2);
        DnsEvent {
            rec: PacketInfo {
                ts_ns: g.ts(),
                hook: HOOKS[g.rng.below(HOOKS.len())],
                process: g.process(),
                cgroup_id: g.num(),
                netns_cookie: g.num(),
                netns_ino: g.u32(),
                ifindex: g.u32(),
                wire_len: g.u32(),
                node: g.opt_name(),
            },
            src: g.endpoint(),
            dst: g.endpoint(),
            transport: if g.bool(4) { Transport::Tcp } else { Transport::Udp },
            msg: DnsMessage {
                id: g.u16(),
                is_response,
                opcode: 0,
                rcode: if g.bool(2) { 0 } else { g.u16() % 5000 },
                truncated: false,
                recursion_desired: true,
                qname: g.name(),
                qtype: if g.bool(2) { 1 } else { g.u16() },
                answers: Vec::new(),
                ancount: g.u16(),
            },
            partial: false,
            src_pod: g.pod(),
            dst_pod: g.pod(),
        }
    }

    /// Every kind of record and generated DNS messages, through the sink
    /// in JSON and in text: the bytes the serde path printed, line by line.
    #[test]
    fn hand_written_lines_match_the_serde_path() {
        let ctx = Context { clock_offset_ns: 0, enricher: Enricher::empty() };
        for json in [true, false] {
            let mut g = Gen::new(Rng::SEED ^ u64::from(json));
            let (mut got, mut want) = (Vec::new(), String::new());
            {
                let mut sink = RecordSink::new(&mut got, json, Filter::default(), None);
                for i in 0..40_000 {
                    if i % 2 == 0 {
                        let r = record(&mut g);
                        sink.record(&ctx, &r);
                        if let Some((v, text)) = old_record(&r) {
                            want.push_str(&if json { v.to_string() } else { text });
                            want.push('\n');
                        }
                    } else {
                        let e = message(&mut g);
                        sink.message(&ctx, &e);
                        let (v, text) = old_message(&e);
                        want.push_str(&if json { v.to_string() } else { text });
                        want.push('\n');
                    }
                    if i % 1000 == 0 {
                        sink.flush_output();
                    }
                }
            }
            let got = String::from_utf8(got).unwrap();
            for (n, (a, b)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(a, b, "json={json}, line {n}");
            }
            assert_eq!(got, want, "json={json}");
        }
    }

    /// A closed pipe ends the listing quietly: no panic, nothing more written.
    #[test]
    fn a_failed_write_stops_the_listing() {
        struct Closed(usize);
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                self.0 += 1;
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let ctx = Context { clock_offset_ns: 0, enricher: Enricher::empty() };
        let mut out = Closed(0);
        let mut g = Gen::new(Rng::SEED);
        {
            let mut sink = RecordSink::new(&mut out, true, Filter::default(), None);
            for _ in 0..10_000 {
                sink.message(&ctx, &message(&mut g));
            }
            sink.flush_output();
            sink.flush_output();
        }
        assert_eq!(out.0, 1);
    }
}
