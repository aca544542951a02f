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

/// `"..."` with `serde_json`'s escaping: `"` and `\` backslashed, the short
/// forms `\b \f \n \r \t`, other control bytes as `\u00xx`; everything else
/// (DEL, non-ASCII) as is.
fn put_str(b: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    b.reserve(bytes.len() + 2);
    b.push(b'"');
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time past what needs no escape (nearly everything).
        if let Some(w) = bytes.get(i..i + 8) {
            if !needs_escape(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])) {
                i += 8;
                continue;
            }
        } else {
            let mut tail = [b'a'; 8];
            tail[..bytes.len() - i].copy_from_slice(&bytes[i..]);
            if !needs_escape(u64::from_le_bytes(tail)) {
                break;
            }
        }
        let c = bytes[i];
        i += 1;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        b.extend_from_slice(&bytes[from..i - 1]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            b.extend_from_slice(b"\\u00");
            b.push(HEX[usize::from(c >> 4)]);
            b.push(HEX[usize::from(c & 0xf)]);
        } else {
            b.extend_from_slice(esc);
        }
        from = i;
    }
    b.extend_from_slice(&bytes[from..]);
    b.push(b'"');
}

/// Whether any of the eight bytes of `w` is `"`, `\` or below 0x20 (exact
/// as to whether there is one; which byte is left to the byte loop).
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) & HIGH != 0
}

/// A type or rcode mnemonic: ASCII letters, digits and `-`, nothing to escape.
fn put_mnemonic(b: &mut Vec<u8>, s: &'static str) {
    debug_assert!(s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{s}");
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// Decimal digits of `v`.
/// "00" to "99": two digits per division.
const DIGITS2: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Writes `v` in decimal at the end of `d[..end]`; returns where it starts.
fn digits_before(d: &mut [u8], mut end: usize, mut v: u64) -> usize {
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        end -= 2;
        d[end..end + 2].copy_from_slice(&DIGITS2[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        end -= 2;
        d[end..end + 2].copy_from_slice(&DIGITS2[r..r + 2]);
    } else {
        end -= 1;
        d[end] = b'0' + v as u8;
    }
    end
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    if v < 10 {
        b.push(b'0' + v as u8);
        return;
    }
    let mut d = [0u8; 20];
    let at = digits_before(&mut d, 20, v);
    b.extend_from_slice(&d[at..]);
}

fn put_display(b: &mut Vec<u8>, v: impl std::fmt::Display) {
    b.push(b'"');
    let _ = write!(b, "{v}");
    b.push(b'"');
}

fn put_endpoint(b: &mut Vec<u8>, e: &crate::event::Endpoint) {
    match e.ip {
        std::net::IpAddr::V4(a) => {
            // Built on the stack and appended once: `"255.255.255.255:65535"`.
            let mut d = [0u8; 24];
            let mut at = digits_before(&mut d, 23, u64::from(e.port));
            d[23] = b'"';
            at -= 1;
            d[at] = b':';
            for (i, o) in a.octets().into_iter().enumerate().rev() {
                at = digits_before(&mut d, at, u64::from(o));
                at -= 1;
                d[at] = if i == 0 { b'"' } else { b'.' };
            }
            b.extend_from_slice(&d[at..]);
        }
        std::net::IpAddr::V6(_) => put_display(b, e),
    }
}

thread_local! {
    /// The last second written and its `YYYY-MM-DDTHH:MM:SS` (one per second, not per line).
    static TS_SECOND: std::cell::Cell<(i64, [u8; 19])> = const { std::cell::Cell::new((-1, [0; 19])) };
}

/// [`super::Rfc3339`] as a JSON string, the date and time of day formatted
/// once per second; the same bytes.
fn put_ts(b: &mut Vec<u8>, wall_ns: i128) {
    /// Last microsecond of year 9999 (beyond, the formatter clamps).
    const MAX_US: i128 = 253_402_300_799_999_999;
    let us = wall_ns.div_euclid(1000);
    if !(0..=MAX_US).contains(&us) {
        put_display(b, super::Rfc3339(wall_ns));
        return;
    }
    let (sec, micros) = ((us / 1_000_000) as i64, (us % 1_000_000) as u64);
    let mut prefix = TS_SECOND.get();
    if prefix.0 != sec {
        let mut full = [0u8; 32];
        let mut w = &mut full[..];
        let _ = write!(w, "{}", super::Rfc3339(i128::from(sec) * 1_000_000_000));
        prefix.0 = sec;
        prefix.1.copy_from_slice(&full[..19]);
        TS_SECOND.set(prefix);
    }
    let mut d = [0u8; 29];
    d[0] = b'"';
    d[1..20].copy_from_slice(&prefix.1);
    d[20] = b'.';
    d[21..27].fill(b'0');
    digits_before(&mut d, 27, micros);
    d[27] = b'Z';
    d[28] = b'"';
    b.extend_from_slice(&d);
}

fn put_opt_endpoint(b: &mut Vec<u8>, e: Option<&crate::event::Endpoint>) {
    match e {
        Some(e) => put_endpoint(b, e),
        None => b.extend_from_slice(b"null"),
    }
}

fn put_pod(b: &mut Vec<u8>, p: Option<&PodRef>) {
    let Some(p) = p else {
        b.extend_from_slice(b"null");
        return;
    };
    b.extend_from_slice(b"{\"name\":");
    put_str(b, &p.name);
    b.extend_from_slice(b",\"namespace\":");
    put_str(b, &p.namespace);
    b.extend_from_slice(b",\"node\":");
    put_opt_str(b, p.node.as_deref());
    b.push(b'}');
}

fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Appends a transaction's JSON line (without the newline) to `b`: the same
/// bytes as serialising [`transaction`] (a `serde_json::Value`, whose keys
/// print sorted), written field by field without building anything.
pub fn put_transaction(b: &mut Vec<u8>, ctx: &Context, tx: &Transaction) {
    b.extend_from_slice(b"{\"answers\":[");
    for (i, a) in tx.answers.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"data\":");
        put_str(b, &a.data);
        b.extend_from_slice(b",\"name\":");
        put_str(b, &a.name);
        b.extend_from_slice(b",\"ttl\":");
        put_u64(b, u64::from(a.ttl));
        b.extend_from_slice(b",\"type\":");
        match a.rtype.mnemonic() {
            Some(s) => put_mnemonic(b, s),
            None => put_display(b, a.rtype),
        }
        b.push(b'}');
    }
    b.extend_from_slice(b"],\"cgroup_id\":");
    put_u64(b, tx.cgroup_id);
    b.extend_from_slice(b",\"client\":");
    put_endpoint(b, &tx.client);
    b.extend_from_slice(b",\"client_pod\":");
    put_pod(b, tx.client_pod.as_ref());
    b.extend_from_slice(b",\"comm\":");
    put_opt_str(b, tx.process.as_ref().map(|p| &*p.comm));
    b.extend_from_slice(b",\"id\":");
    put_u64(b, u64::from(tx.id));
    b.extend_from_slice(b",\"latency_ms\":");
    match tx.latency_ns {
        // serde_json's own float formatting (shortest round-trip form).
        Some(ns) => {
            let _ = serde_json::to_writer(&mut *b, &ms(ns));
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"metadata_stale\":");
    put_bool(b, ctx.enricher.stale());
    b.extend_from_slice(b",\"netns\":");
    put_u64(b, u64::from(tx.netns));
    b.extend_from_slice(b",\"node\":");
    put_opt_str(b, tx.node.as_deref());
    b.extend_from_slice(b",\"observed\":");
    b.extend_from_slice(match tx.observed {
        crate::analyze::Observed::Client => b"\"client\"",
        crate::analyze::Observed::Server => b"\"server\"",
        crate::analyze::Observed::Both => b"\"both\"",
        crate::analyze::Observed::Wire => b"\"wire\"",
    });
    b.extend_from_slice(b",\"pid\":");
    match &tx.process {
        Some(p) => put_u64(b, u64::from(p.pid)),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"qname\":");
    put_str(b, &tx.qname);
    b.extend_from_slice(b",\"qtype\":");
    match crate::decode::dns::qtype_str(tx.qtype) {
        Some(s) => put_mnemonic(b, s),
        None => put_display(b, format_args!("TYPE{}", tx.qtype)),
    }
    b.extend_from_slice(b",\"rcode\":");
    match tx.rcode {
        Some(r) => match crate::decode::dns::rcode_str(r) {
            Some(s) => put_mnemonic(b, s),
            None => put_display(b, format_args!("RCODE{r}")),
        },
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"resolver\":");
    put_opt_endpoint(b, tx.resolver.as_ref());
    b.extend_from_slice(b",\"resolver_client\":");
    put_opt_endpoint(b, tx.resolver_client.as_ref());
    b.extend_from_slice(b",\"resolver_pod\":");
    put_pod(b, tx.resolver_pod.as_ref());
    b.extend_from_slice(b",\"retransmits\":");
    put_u64(b, u64::from(tx.retransmits));
    b.extend_from_slice(b",\"server\":");
    put_endpoint(b, &tx.server);
    b.extend_from_slice(b",\"server_pod\":");
    put_pod(b, tx.server_pod.as_ref());
    b.extend_from_slice(b",\"server_process\":");
    match &tx.server_process {
        Some(p) => {
            b.extend_from_slice(b"{\"comm\":");
            put_str(b, &p.comm);
            b.extend_from_slice(b",\"pid\":");
            put_u64(b, u64::from(p.pid));
            b.extend_from_slice(b",\"thread\":");
            put_str(b, &p.thread);
            b.extend_from_slice(b",\"tid\":");
            put_u64(b, u64::from(p.tid));
            b.push(b'}');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"server_service\":");
    match ctx.enricher.service_by_ip(&tx.server.ip) {
        // Names from the API may hold anything: escaped like any string.
        Some(s) => {
            let mut ns = String::with_capacity(s.namespace.len() + 1 + s.name.len());
            let _ = std::fmt::Write::write_fmt(&mut ns, format_args!("{}", super::NsName(&s.namespace, &s.name)));
            put_str(b, &ns);
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"thread\":");
    put_opt_str(b, tx.process.as_ref().map(|p| &*p.thread));
    b.extend_from_slice(b",\"timed_out\":");
    put_bool(b, tx.timed_out);
    b.extend_from_slice(b",\"transport\":");
    b.extend_from_slice(match tx.transport {
        crate::event::Transport::Udp => b"\"udp\"",
        crate::event::Transport::Tcp => b"\"tcp\"",
    });
    b.extend_from_slice(b",\"ts\":");
    put_ts(b, ctx.wall_ns(tx.ts_ns));
    b.extend_from_slice(b",\"type\":\"dns\"}");
}

/// Writes a transaction's JSON line (without the newline) to `out`:
/// the same bytes as serialising [`transaction`], without building it.
///
/// # Errors
/// When `out` fails.
pub fn write_transaction<W: Write>(mut out: W, ctx: &Context, tx: &Transaction) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(512);
    put_transaction(&mut b, ctx, tx);
    out.write_all(&b)
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

/// Writes JSON Lines to any writer: lines are built in a reused buffer and
/// written with one `write` per pipeline tick (10 ms live), or sooner when
/// the buffer passes [`JsonSink::FLUSH_AT`], so pipes still see events
/// promptly without a write per line.
pub struct JsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    /// Buffered bytes that trigger a write before the next tick.
    const FLUSH_AT: usize = 64 * 1024;

    /// A sink over `out`.
    pub fn new(out: W) -> Self {
        Self { out, buf: Vec::with_capacity(Self::FLUSH_AT + 4096) }
    }

    fn line(&mut self, v: &Value) {
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.end_line();
    }

    fn end_line(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= Self::FLUSH_AT {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            // A closed pipe (| head) must not panic; the run ends on its own.
            let _ = self.out.write_all(&self.buf);
            self.buf.clear();
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        put_transaction(&mut self.buf, ctx, tx);
        self.end_line();
    }
    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.line(&finding(f));
    }
    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        self.line(&stats(s));
        self.write_out();
        let _ = self.out.flush();
    }
    fn flush_output(&mut self) {
        self.write_out();
        let _ = self.out.flush();
    }
}

impl<W: Write> Drop for JsonSink<W> {
    fn drop(&mut self) {
        self.write_out();
        let _ = self.out.flush();
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
        for (enricher, offset) in [
            (Enricher::empty(), 0),
            (Enricher::from_snapshot(&snap), -5_000_000_000),
            (Enricher::empty(), -1_795_433_602_500_000_000),
        ] {
            let ctx = Context { clock_offset_ns: offset, enricher };
            for tx in [base(), full.clone(), v6.clone()].into_iter().chain(more.iter().cloned()) {
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                write_transaction(&mut got, &ctx, &tx).unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
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
            for s in [qtype_str(t), rcode_str(t)].into_iter().flatten() {
                let mut b = Vec::new();
                put_mnemonic(&mut b, s);
                assert_eq!(b, serde_json::to_vec(s).unwrap());
            }
        }
    }
}
