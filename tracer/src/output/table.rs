//! The human view: one line per transaction, findings as plain-language
//! blocks after the transactions they explain, and a recap at the end.

use std::io::Write;

use serde_json::Value;

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_name, rcode_name},
    pipeline::{Context, RunStats, Sink},
};

use super::rfc3339;

/// Table writer.
pub struct TableSink<W: Write> {
    out: W,
    header_done: bool,
    findings: Vec<Value>,
    /// Print only findings (no per-transaction lines).
    pub quiet: bool,
    /// Hold transaction lines until the end and print the diagnosis first.
    pub explain_first: bool,
    held: Vec<String>,
    held_dropped: u64,
    summary_advised: bool,
}

impl<W: Write> TableSink<W> {
    /// A table over `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            header_done: false,
            findings: Vec::new(),
            quiet: false,
            explain_first: false,
            held: Vec::new(),
            held_dropped: 0,
            summary_advised: false,
        }
    }

    /// The writer (tests read what was written).
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

fn who(tx: &Transaction) -> String {
    match (&tx.client_pod, tx.netns) {
        (Some(p), _) => p.to_string(),
        (None, 0) => "-".into(),
        (None, n) => format!("netns:{n}"),
    }
}

fn server(ctx: &Context, tx: &Transaction) -> String {
    if let Some(p) = &tx.server_pod {
        return format!("{} ({})", tx.server, p);
    }
    if let Some(s) = ctx.enricher.service_by_ip(&tx.server.ip) {
        return format!("{} (svc {}/{})", tx.server, s.namespace, s.name);
    }
    tx.server.to_string()
}

fn answers(tx: &Transaction) -> String {
    if tx.answers.is_empty() {
        return "-".into();
    }
    let mut s: Vec<String> = tx.answers.iter().take(3).map(|a| a.data.clone()).collect();
    if tx.answers.len() > 3 {
        s.push(format!("+{}", tx.answers.len() - 3));
    }
    s.join(",")
}

/// A JSON value as a person reads it: `getent[4242]` for a process,
/// `10.0.0.1:53` for an endpoint, `a, b, c` for a list of names.
#[must_use]
pub fn render(x: &Value) -> String {
    match x {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(", "),
        Value::Object(m) => {
            if let (Some(c), Some(p)) = (m.get("comm").and_then(Value::as_str), m.get("pid")) {
                return format!("{c}[{p}]");
            }
            if let (Some(ip), Some(port)) = (m.get("ip").and_then(Value::as_str), m.get("port")) {
                return if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
            }
            if let Some(addr) = m.get("address").and_then(Value::as_str) {
                let who = m.get("pod").filter(|p| !p.is_null()).map(render);
                let proc_ = m.get("process").filter(|p| !p.is_null()).map(render);
                return match (who, proc_) {
                    (Some(w), Some(p)) => format!("{w} ({p}) at {addr}"),
                    (Some(w), None) => format!("{w} at {addr}"),
                    (None, Some(p)) => format!("{p} at {addr}"),
                    (None, None) => addr.to_owned(),
                };
            }
            x.to_string()
        }
        other => other.to_string(),
    }
}

/// Plain-language lines for a finding, from its JSON form (so new finding
/// kinds render without touching this file).
#[must_use]
#[expect(clippy::many_single_char_names, reason = "short-lived closure arguments")]
pub fn describe(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("finding");
    match kind {
        "search_fanout_summary" => return describe_fanout_summary(v),
        "repeated" => return describe_repeated(v),
        _ => {}
    }
    out.push(format!("== {} ==", title(kind)));
    if let Some(c) = v.get("cause").and_then(Value::as_str) {
        out.push(format!("   cause: {c}"));
    }
    let field = |k: &str| v.get(k).filter(|x| !x.is_null()).map(render);
    for k in [
        "pod",
        "process",
        "base_name",
        "answered_by",
        "total_ms",
        "wasted_ms",
        "ndots",
        "search",
        "nameservers",
        "resolv_conf_source",
        "resolver",
        "upstream",
        "qname",
        "attempts_count",
        "waited_ms",
        "client",
        "rate_per_s",
        "top_names",
    ] {
        if k == "attempts" {
            continue;
        }
        if let Some(val) = field(k) {
            out.push(format!("   {k}: {val}"));
        }
    }
    if let Some(a) = v.get("attempts") {
        match a {
            Value::Array(list) => {
                out.push("   attempts:".into());
                for at in list {
                    let q = at.get("qname").and_then(Value::as_str).unwrap_or("?");
                    let t = at.get("qtype").and_then(Value::as_str).unwrap_or("?");
                    let r = at.get("rcode").and_then(Value::as_str).unwrap_or("no answer");
                    let to = at.get("timed_out").and_then(Value::as_bool).unwrap_or(false);
                    let l = at.get("latency_ms").and_then(Value::as_f64).map_or("-".into(), |l| format!("{l:.1} ms"));
                    out.push(format!("     {q:<55} {t:<5} {:<10} {l}", if to { "TIMEOUT" } else { r }));
                }
            }
            other => out.push(format!("   attempts: {other}")),
        }
    }
    advice_lines(v, &mut out);
    out
}

fn title(kind: &str) -> &str {
    match kind {
        "search_fanout" => "SLOW DNS: search-list fan-out",
        "upstream_timeout" => "SLOW DNS: upstream resolver did not answer",
        "nxdomain_storm" => "DNS: NXDOMAIN storm",
        "fabric_loss" => "PACKETS LOST between nodes",
        "search_fanout_summary" => "DNS: fast search-list walks (counted, not slow)",
        other => other,
    }
}

fn advice_lines(v: &Value, out: &mut Vec<String>) {
    if let Some(Value::Array(adv)) = v.get("advice") {
        if adv.is_empty() {
            return;
        }
        out.push("   advice:".into());
        for a in adv {
            if let Some(s) = a.as_str() {
                for (i, line) in s.lines().enumerate() {
                    out.push(format!("     {} {line}", if i == 0 { "-" } else { " " }));
                }
            }
        }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Fast walks: one sentence, then the (pod, name) groups wasting the most time.
fn describe_fanout_summary(v: &Value) -> Vec<String> {
    let mut out = vec![format!("== {} ==", title("search_fanout_summary"))];
    out.push(format!("   cause: {}", text(v, "cause")));
    if let Some(Value::Array(top)) = v.get("top")
        && !top.is_empty()
    {
        out.push(format!(
            "   {:<36} {:<40} {:>8} {:>7} {:>6} {:>9} {:>9}",
            "POD", "NAME", "LOOKUPS", "EXTRA/L", "SHARE", "WASTE p50", "WASTE p99"
        ));
        for g in top {
            out.push(format!(
                "   {:<36} {:<40} {:>8} {:>7.1} {:>5.1}% {:>7.1}ms {:>7.1}ms",
                text(g, "pod"),
                text(g, "base_name"),
                num(g, "lookups"),
                num(g, "extra_queries_per_lookup"),
                num(g, "share_of_resolver_queries") * 100.0,
                num(g, "wasted_p50_ms"),
                num(g, "wasted_p99_ms"),
            ));
        }
        let more = num(v, "groups") as u64;
        if more > top.len() as u64 {
            out.push(format!("   … {} more pod/name group(s) (all in -o json totals)", more - top.len() as u64));
        }
    }
    advice_lines(v, &mut out);
    out
}

/// Repeats of a cause reported in full earlier: counts and the pods hit.
fn describe_repeated(v: &Value) -> Vec<String> {
    let kind = text(v, "of_kind");
    let mut out = vec![format!(
        "== {} again: {} more (×{} in all, {} pod(s)) ==",
        title(kind),
        num(v, "new") as u64,
        num(v, "count") as u64,
        num(v, "pods") as u64
    )];
    out.push(format!("   cause: {}", text(v, "cause")));
    out.push(format!("   first: {}", text(v, "first_cause")));
    if let Some(Value::Array(top)) = v.get("top_pods") {
        let pods: Vec<String> = top.iter().map(|p| format!("{} ×{}", text(p, "pod"), num(p, "count") as u64)).collect();
        out.push(format!("   top pods: {}", pods.join(", ")));
    }
    out
}

/// Client time a finding (JSON) says was lost, in ms.
fn lost_ms(v: &Value) -> f64 {
    match v.get("kind").and_then(Value::as_str) {
        Some("search_fanout") if v.get("answered_by").is_none_or(Value::is_null) => num(v, "total_ms"),
        Some("search_fanout") => num(v, "wasted_ms"),
        Some("upstream_timeout") => num(v, "waited_ms"),
        Some("repeated") => num(v, "client_time_lost_ms"),
        _ => 0.0,
    }
}

/// Most causes listed in the condensed diagnosis.
const DIAGNOSIS_CAUSES: usize = 8;

/// The diagnosis of a busy run: one row per cause (repeats folded in),
/// ranked by client time lost, then the fast walks' counts.
fn condensed_diagnosis(findings: &[Value]) -> Vec<String> {
    struct Row<'a> {
        v: &'a Value,
        lost: f64,
        count: u64,
        pods: u64,
        top: String,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut summary: Option<&Value> = None;
    for v in findings {
        match v.get("kind").and_then(Value::as_str) {
            Some("search_fanout_summary") => summary = Some(v),
            Some("repeated") => {
                let first = v.get("first_ts_ns").and_then(Value::as_u64);
                let of = v.get("of_kind");
                let cause = v.get("first_cause");
                if let Some(r) = rows.iter_mut().find(|r| {
                    r.v.get("kind") == of
                        && r.v.get("ts_ns").and_then(Value::as_u64) == first
                        && r.v.get("cause") == cause
                }) {
                    r.lost = r.lost.max(lost_ms(v));
                    r.count = r.count.max(num(v, "count") as u64);
                    r.pods = r.pods.max(num(v, "pods") as u64);
                    if let Some(Value::Array(t)) = v.get("top_pods") {
                        r.top = t
                            .iter()
                            .take(3)
                            .map(|p| format!("{} ×{}", text(p, "pod"), num(p, "count") as u64))
                            .collect::<Vec<_>>()
                            .join(", ");
                    }
                }
            }
            _ => rows.push(Row { v, lost: lost_ms(v), count: 1, pods: 1, top: String::new() }),
        }
    }
    rows.sort_by(|a, b| b.lost.total_cmp(&a.lost).then(b.count.cmp(&a.count)));
    let mut out = vec![format!(
        "\n=== Diagnosis: {} cause(s), ranked by client time lost ({} finding record(s); -o json has every one) ===",
        rows.len(),
        findings.len()
    )];
    for (i, r) in rows.iter().take(DIAGNOSIS_CAUSES).enumerate() {
        let kind = r.v.get("kind").and_then(Value::as_str).unwrap_or("finding");
        let lost = if r.lost > 0.0 { format!("{:.1} s lost", r.lost / 1000.0) } else { "no wait".to_owned() };
        out.push(format!("{:>2}. {lost}, ×{}, {} pod(s): {}", i + 1, r.count, r.pods, title(kind)));
        out.push(format!("    cause: {}", text(r.v, "cause")));
        if !r.top.is_empty() {
            out.push(format!("    top pods: {}", r.top));
        }
        if let Some(a) = r.v.get("advice").and_then(|a| a.get(0)).and_then(Value::as_str) {
            out.push(format!("    advice: {}", a.lines().next().unwrap_or(a)));
        }
    }
    if rows.len() > DIAGNOSIS_CAUSES {
        out.push(format!("    … {} more cause(s) (-o json)", rows.len() - DIAGNOSIS_CAUSES));
    }
    if let Some(s) = summary {
        out.push(String::new());
        out.extend(describe_fanout_summary(s));
    }
    out
}

/// A run is shown condensed when it folded repeats or found more than a few
/// causes; a single incident keeps its full blocks.
fn needs_condensing(findings: &[Value]) -> bool {
    let kind = |v: &Value| v.get("kind").and_then(Value::as_str).map(str::to_owned);
    findings.iter().any(|v| kind(v).as_deref() == Some("repeated"))
        || findings.iter().filter(|v| kind(v).as_deref() != Some("search_fanout_summary")).count() > 5
}

impl<W: Write> Sink for TableSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        if self.quiet {
            return;
        }
        let mut line = Vec::new();
        if !self.header_done {
            self.header_done = true;
            let _ = writeln!(
                line,
                "{:<15} {:<26} {:<16} {:<44} {:>5} {:<44} {:<5} {:<9} {:<24} {:>9}",
                "TIME",
                "POD/NETNS",
                "PROCESS",
                "CLIENT -> SERVER",
                "ID",
                "QNAME",
                "TYPE",
                "RCODE",
                "ANSWERS",
                "LATENCY"
            );
        }
        let t = rfc3339(ctx.wall_ns(tx.ts_ns));
        let time = t.get(11..26).unwrap_or(&t);
        let proc_ = tx.process.as_ref().map_or("-".into(), |p| format!("{}[{}]", p.comm, p.pid));
        let rcode = if tx.timed_out { "TIMEOUT".into() } else { tx.rcode.map_or("-".into(), rcode_name) };
        let lat = tx.latency_ns.map_or("-".into(), |l| format!("{:.1}ms", l as f64 / 1e6));
        let _ = writeln!(
            line,
            "{time:<15} {:<26} {proc_:<16} {:<44} {:>5} {:<44} {:<5} {rcode:<9} {:<24} {lat:>9}",
            who(tx),
            format!("{} -> {}", tx.client, server(ctx, tx)),
            tx.id,
            tx.qname,
            qtype_name(tx.qtype),
            answers(tx),
        );
        if self.explain_first {
            // Bounded: a long run keeps the first 100k lines and counts the rest.
            if self.held.len() < 100_000 {
                self.held.push(String::from_utf8_lossy(&line).into_owned());
            } else {
                self.held_dropped += 1;
            }
            return;
        }
        let _ = self.out.write_all(&line);
    }

    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        let v = super::json::finding(f);
        if !self.explain_first {
            let _ = writeln!(self.out);
            let mut shown = v.clone();
            // The fast walks' advice is the same every period: once is enough.
            if matches!(f, Finding::SearchFanoutSummary(_)) {
                if self.summary_advised
                    && let Value::Object(m) = &mut shown
                {
                    m.remove("advice");
                }
                self.summary_advised = true;
            }
            for l in describe(&shown) {
                let _ = writeln!(self.out, "{l}");
            }
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
        self.findings.push(v);
    }

    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }

    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        if !self.findings.is_empty() && !self.quiet {
            if needs_condensing(&self.findings) {
                for l in condensed_diagnosis(&self.findings) {
                    let _ = writeln!(self.out, "{l}");
                }
            } else {
                let _ = writeln!(self.out, "\n=== Diagnosis ({} finding(s)) ===", self.findings.len());
                // Summaries are cumulative: the last one says it all.
                let is_sum = |v: &Value| v.get("kind").and_then(Value::as_str) == Some("search_fanout_summary");
                let last_sum = self.findings.iter().rposition(is_sum);
                for (i, v) in self.findings.iter().enumerate() {
                    if is_sum(v) && Some(i) != last_sum {
                        continue;
                    }
                    for l in describe(v) {
                        let _ = writeln!(self.out, "{l}");
                    }
                }
            }
        }
        if self.explain_first {
            if self.findings.is_empty() {
                let _ = writeln!(self.out, "\n=== Diagnosis: nothing to explain ===");
            }
            let _ = writeln!(self.out, "\n=== The transactions behind it ===");
            for l in &self.held {
                let _ = self.out.write_all(l.as_bytes());
            }
            if self.held_dropped > 0 {
                let _ = writeln!(self.out, "... {} more transactions not shown", self.held_dropped);
            }
        }
        let _ = writeln!(
            self.out,
            "\n{} transactions ({} shown), {} findings, {} records; lost kernel events: {}; undecodable: {} packets, {} DNS; TCP streams evicted: {}; pairing evictions: {}, unmatched responses: {}",
            s.transactions,
            s.shown,
            s.findings,
            s.records,
            s.lost_events,
            s.decode.bad_packets,
            s.decode.bad_dns,
            s.decode.tcp_evicted,
            s.pairing.evicted,
            s.pairing.unmatched_responses
        );
        for w in &s.warnings {
            let _ = writeln!(self.out, "warning: {w}");
        }
        let _ = self.out.flush();
    }
}
