//! The human view: one line per transaction, findings as plain-language
//! blocks after the transactions they explain, and a recap at the end.

use std::io::Write;

use crate::{
    decode::dns::{qtype_name, rcode_name},
    model::{FanoutSummary, Finding, Party, Repeated, Transaction},
    pipeline::{Context, RunStats, Sink},
};

use super::{
    fit::{Align, Cell, Column, Layout, Style, rcode_style},
    rfc3339,
};

/// Most findings kept for the diagnosis at the end of a run (each is
/// printed as it comes; condensing makes a long run's findings few).
const MAX_KEPT_FINDINGS: usize = 10_000;

/// Table writer.
pub struct TableSink<W: Write> {
    out: W,
    header_done: bool,
    findings: Vec<Finding>,
    /// Print only findings (no per-transaction lines).
    pub quiet: bool,
    /// Hold transaction lines until the end and print the diagnosis first.
    pub explain_first: bool,
    held: Vec<String>,
    held_dropped: u64,
    /// A finding came that a quiet table did not keep.
    any_finding: bool,
    /// Findings beyond [`MAX_KEPT_FINDINGS`], printed but not kept.
    findings_dropped: u64,
    summary_advised: bool,
    /// Fit transaction lines into this many characters (`None`: the full table).
    pub width: Option<usize>,
    /// Colour rcodes and finding titles.
    pub colour: bool,
    layout: Option<Layout>,
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
            any_finding: false,
            findings_dropped: 0,
            summary_advised: false,
            width: None,
            colour: false,
            layout: None,
        }
    }

    /// The writer (tests read what was written).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Fitted to `width` (`None`: the full table), coloured or not.
    #[must_use]
    pub fn fitted(mut self, width: Option<usize>, colour: bool) -> Self {
        self.width = width;
        self.colour = colour;
        self
    }
}

/// The transaction table's columns. Full widths are the table's historical
/// layout (`-o wide`, pipes); when fitted, names shrink towards `min` and
/// columns go in `drop_rank` order: the query id, the answers, the
/// process, the time, the addresses, the type. The pod, name, rcode and
/// latency always stay.
pub const TX_COLUMNS: [Column; 10] = [
    Column { header: "TIME", full: 15, natural: 15, min: 15, drop_rank: 4, align: Align::Left },
    Column { header: "POD/NETNS", full: 26, natural: 32, min: 16, drop_rank: 7, align: Align::Left },
    Column { header: "PROCESS", full: 16, natural: 20, min: 12, drop_rank: 3, align: Align::Left },
    Column { header: "CLIENT -> SERVER", full: 44, natural: 64, min: 24, drop_rank: 5, align: Align::Left },
    Column { header: "ID", full: 5, natural: 5, min: 5, drop_rank: 1, align: Align::Right },
    Column { header: "QNAME", full: 44, natural: 64, min: 28, drop_rank: 0, align: Align::Left },
    Column { header: "TYPE", full: 5, natural: 5, min: 5, drop_rank: 6, align: Align::Left },
    Column { header: "RCODE", full: 9, natural: 9, min: 9, drop_rank: 0, align: Align::Left },
    Column { header: "ANSWERS", full: 24, natural: 32, min: 16, drop_rank: 2, align: Align::Left },
    Column { header: "LATENCY", full: 9, natural: 9, min: 9, drop_rank: 0, align: Align::Right },
];

/// The end-of-run recap in plain words: what was seen, then what was lost
/// or could not be read (only the counters that are not zero).
#[must_use]
pub fn run_summary(s: &RunStats) -> String {
    use super::term::count;
    let mut out = format!(
        "{} ({} shown), {}, from {}.",
        count(s.transactions, "DNS transaction", "DNS transactions"),
        s.shown,
        count(s.findings, "finding", "findings"),
        count(s.records, "record", "records"),
    );
    let mut bad = Vec::new();
    if s.lost_events > 0 {
        bad.push(format!("{} lost in the kernel (ring buffer full)", count(s.lost_events, "event", "events")));
    }
    if s.decode.bad_packets > 0 || s.decode.bad_dns > 0 {
        bad.push(format!(
            "{} and {} could not be decoded",
            count(s.decode.bad_packets, "packet", "packets"),
            count(s.decode.bad_dns, "DNS message", "DNS messages")
        ));
    }
    if s.decode.tcp_evicted > 0 {
        bad.push(format!("{} evicted unfinished", count(s.decode.tcp_evicted, "TCP stream", "TCP streams")));
    }
    if s.pairing.evicted > 0 {
        bad.push(format!("{} evicted before an answer", count(s.pairing.evicted, "query", "queries")));
    }
    if s.pairing.unmatched_responses > 0 {
        bad.push(format!("{} without a query", count(s.pairing.unmatched_responses, "response", "responses")));
    }
    if bad.is_empty() {
        out.push_str(" Nothing lost, everything decoded.");
    } else {
        out.push(' ');
        out.push_str(&bad.join("; "));
        out.push('.');
    }
    out
}

/// A line of a finding's description as printed: its title in colour when
/// `colour` is on.
#[must_use]
pub fn paint_finding_line(line: &str, colour: bool) -> std::borrow::Cow<'_, str> {
    if colour && line.starts_with("== ") {
        std::borrow::Cow::Owned(Style::Bad.paint(line))
    } else {
        std::borrow::Cow::Borrowed(line)
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
    let mut s: Vec<String> = tx.answers.iter().take(3).map(|a| a.data.to_string()).collect();
    if tx.answers.len() > 3 {
        s.push(format!("+{}", tx.answers.len() - 3));
    }
    s.join(",")
}

/// A number as the JSON output writes it (`12.0`, `0.25`), or None when it
/// has no JSON form (not finite: the JSON holds `null`, and the line is left out).
fn json_num(x: f64) -> Option<String> {
    serde_json::Number::from_f64(x).map(|n| n.to_string())
}

fn process_text(p: &crate::event::Process) -> String {
    format!("{}[{}]", p.comm, p.pid)
}

fn party_text(p: &Party) -> String {
    match (&p.pod, &p.process) {
        (Some(w), Some(pr)) => format!("{w} ({}) at {}", process_text(pr), p.address),
        (Some(w), None) => format!("{w} at {}", p.address),
        (None, Some(pr)) => format!("{} at {}", process_text(pr), p.address),
        (None, None) => p.address.clone(),
    }
}

fn advice_text(advice: &[String], out: &mut Vec<String>) {
    if advice.is_empty() {
        return;
    }
    out.push("   advice:".into());
    for s in advice {
        for (i, line) in s.lines().enumerate() {
            out.push(format!("     {} {line}", if i == 0 { "-" } else { " " }));
        }
    }
}

/// Plain-language lines for a DNS finding; `advice` includes what to do
/// (left out when it would repeat, e.g. every period's fast-walk summary).
#[must_use]
pub fn describe_finding(f: &Finding, advice: bool) -> Vec<String> {
    let none: &[String] = &[];
    let mut out = Vec::new();
    match f {
        Finding::SearchFanoutSummary(s) => return fanout_summary_lines(s, if advice { &s.advice } else { none }),
        Finding::Repeated(r) => return repeated_lines(r),
        _ => {}
    }
    out.push(format!("== {} ==", title(f.kind())));
    out.push(format!("   cause: {}", f.cause()));
    let mut field = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push(format!("   {k}: {v}"));
        }
    };
    match f {
        Finding::SearchFanout(s) => {
            field("pod", s.pod.clone());
            field("process", s.process.as_ref().map(process_text));
            field("base_name", Some(s.base_name.clone()));
            field("answered_by", s.answered_by.clone());
            field("total_ms", json_num(s.total_ms));
            field("wasted_ms", json_num(s.wasted_ms));
            field("ndots", s.ndots.map(|n| n.to_string()));
            field("search", Some(s.search.join(", ")));
            field("nameservers", Some(s.nameservers.join(", ")));
            field("resolv_conf_source", Some(s.resolv_conf_source.to_owned()));
            field("client", Some(s.client.to_string()));
            out.push("   attempts:".into());
            for at in &s.attempts {
                let r = at.rcode.as_deref().unwrap_or("no answer");
                let l = at.latency_ms.filter(|l| l.is_finite()).map_or("-".into(), |l| format!("{l:.1} ms"));
                out.push(format!(
                    "     {:<55} {:<5} {:<10} {l}",
                    at.qname,
                    at.qtype,
                    if at.timed_out { "TIMEOUT" } else { r }
                ));
            }
        }
        Finding::UpstreamTimeout(u) => {
            field("resolver", Some(party_text(&u.resolver)));
            field("upstream", Some(u.upstream.clone()));
            field("qname", Some(u.qname.clone()));
            field("waited_ms", json_num(u.waited_ms));
            field("client", Some(party_text(&u.client)));
            out.push(format!("   attempts: {}", u.attempts));
        }
        Finding::NxdomainStorm(n) => {
            field("pod", n.pod.clone());
            field("client", Some(n.client.clone()));
            field("rate_per_s", json_num(n.rate_per_s));
            let names: Vec<String> = n
                .top_names
                .iter()
                .map(|c| serde_json::to_value(c).map(|v| v.to_string()).unwrap_or_default())
                .collect();
            field("top_names", Some(names.join(", ")));
        }
        Finding::SearchFanoutSummary(_) | Finding::Repeated(_) => {}
    }
    advice_text(if advice { f.advice() } else { none }, &mut out);
    out
}

/// Fast walks: one sentence, then the (pod, name) groups wasting the most time.
fn fanout_summary_lines(s: &FanoutSummary, advice: &[String]) -> Vec<String> {
    let mut out = vec![format!("== {} ==", title("search_fanout_summary"))];
    out.push(format!("   cause: {}", s.cause));
    if !s.top.is_empty() {
        out.push(format!(
            "   {:<36} {:<40} {:>8} {:>7} {:>6} {:>9} {:>9}",
            "POD", "NAME", "LOOKUPS", "EXTRA/L", "SHARE", "WASTE p50", "WASTE p99"
        ));
        for g in &s.top {
            out.push(format!(
                "   {:<36} {:<40} {:>8} {:>7.1} {:>5.1}% {:>7.1}ms {:>7.1}ms",
                g.pod,
                g.base_name,
                g.lookups as f64,
                g.extra_queries_per_lookup,
                g.share_of_resolver_queries * 100.0,
                g.wasted_p50_ms,
                g.wasted_p99_ms,
            ));
        }
        if s.groups > s.top.len() as u64 {
            out.push(format!("   … {} more pod/name group(s) (all in -o json totals)", s.groups - s.top.len() as u64));
        }
    }
    advice_text(advice, &mut out);
    out
}

/// Repeats of a cause reported in full earlier: counts and the pods hit.
fn repeated_lines(r: &Repeated) -> Vec<String> {
    let mut out =
        vec![format!("== {} again: {} more (×{} in all, {} pod(s)) ==", title(&r.of_kind), r.new, r.count, r.pods)];
    out.push(format!("   cause: {}", r.cause));
    out.push(format!("   first: {}", r.first_cause));
    let pods: Vec<String> = r.top_pods.iter().map(|p| format!("{} ×{}", p.pod, p.count)).collect();
    out.push(format!("   top pods: {}", pods.join(", ")));
    out
}

pub(crate) fn title(kind: &str) -> &str {
    match kind {
        "search_fanout" => "SLOW DNS: search-list fan-out",
        "upstream_timeout" => "SLOW DNS: upstream resolver did not answer",
        "nxdomain_storm" => "DNS: NXDOMAIN storm",
        "fabric_loss" => "PACKETS LOST between nodes",
        "search_fanout_summary" => "DNS: fast search-list walks (counted, not slow)",
        other => other,
    }
}

/// Most causes listed in the condensed diagnosis.
const DIAGNOSIS_CAUSES: usize = 8;

/// The diagnosis of a busy run: one row per cause (repeats folded in),
/// ranked by client time lost, then the fast walks' counts.
fn condensed_diagnosis(findings: &[Finding]) -> Vec<String> {
    struct Row<'a> {
        f: &'a Finding,
        lost: f64,
        count: u64,
        pods: u64,
        top: String,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut summary: Option<&FanoutSummary> = None;
    for f in findings {
        match f {
            Finding::SearchFanoutSummary(s) => summary = Some(s),
            Finding::Repeated(rep) => {
                if let Some(r) = rows.iter_mut().find(|r| {
                    r.f.kind() == rep.of_kind && r.f.ts_ns() == rep.first_ts_ns && r.f.cause() == rep.first_cause
                }) {
                    r.lost = r.lost.max(f.lost_ms());
                    r.count = r.count.max(rep.count);
                    r.pods = r.pods.max(rep.pods);
                    r.top = rep
                        .top_pods
                        .iter()
                        .take(3)
                        .map(|p| format!("{} ×{}", p.pod, p.count))
                        .collect::<Vec<_>>()
                        .join(", ");
                }
            }
            _ => rows.push(Row { f, lost: f.lost_ms(), count: 1, pods: 1, top: String::new() }),
        }
    }
    rows.sort_by(|a, b| b.lost.total_cmp(&a.lost).then(b.count.cmp(&a.count)));
    let mut out = vec![format!(
        "\n=== Diagnosis: {} cause(s), ranked by client time lost ({} finding record(s); -o json has every one) ===",
        rows.len(),
        findings.len()
    )];
    for (i, r) in rows.iter().take(DIAGNOSIS_CAUSES).enumerate() {
        let lost = if r.lost > 0.0 { format!("{:.1} s lost", r.lost / 1000.0) } else { "no wait".to_owned() };
        out.push(format!("{:>2}. {lost}, ×{}, {} pod(s): {}", i + 1, r.count, r.pods, title(r.f.kind())));
        out.push(format!("    cause: {}", r.f.cause()));
        if !r.top.is_empty() {
            out.push(format!("    top pods: {}", r.top));
        }
        if let Some(a) = r.f.advice().first() {
            out.push(format!("    advice: {}", a.lines().next().unwrap_or(a)));
        }
    }
    if rows.len() > DIAGNOSIS_CAUSES {
        out.push(format!("    … {} more cause(s) (-o json)", rows.len() - DIAGNOSIS_CAUSES));
    }
    if let Some(s) = summary {
        out.push(String::new());
        out.extend(fanout_summary_lines(s, &s.advice));
    }
    out
}

/// A run is shown condensed when it folded repeats or found more than a few
/// causes; a single incident keeps its full blocks.
fn needs_condensing(findings: &[Finding]) -> bool {
    findings.iter().any(|f| matches!(f, Finding::Repeated(_)))
        || findings.iter().filter(|f| !matches!(f, Finding::SearchFanoutSummary(_))).count() > 5
}

impl<W: Write> Sink for TableSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        if self.quiet {
            return;
        }
        let mut line = Vec::new();
        let layout = self.layout.get_or_insert_with(|| Layout::new(&TX_COLUMNS, self.width));
        if !self.header_done {
            self.header_done = true;
            let _ = writeln!(line, "{}", layout.header(&TX_COLUMNS));
        }
        let t = rfc3339(ctx.wall_ns(tx.ts_ns));
        let time = t.get(11..26).unwrap_or(&t);
        let proc_ = tx.process.as_ref().map_or("-".into(), |p| format!("{}[{}]", p.comm, p.pid));
        let rcode = if tx.timed_out { "TIMEOUT".into() } else { tx.rcode.map_or("-".into(), rcode_name) };
        let lat = tx.latency_ns.map_or("-".into(), |l| format!("{:.1}ms", l as f64 / 1e6));
        let srv = server(ctx, tx);
        let (who, ends, id, ty, ans) =
            (who(tx), format!("{} -> {srv}", tx.client), tx.id.to_string(), qtype_name(tx.qtype), answers(tx));
        let cells = [
            Cell::plain(time),
            Cell::plain(&who),
            Cell::plain(&proc_),
            Cell::or_shorter(&ends, &ends[ends.len() - srv.len() - 3..]),
            Cell::plain(&id),
            Cell::plain(&tx.qname),
            Cell::plain(&ty),
            Cell { text: &rcode, style: if self.colour { rcode_style(&rcode) } else { None }, alt: None },
            Cell::plain(&ans),
            Cell::plain(&lat),
        ];
        let _ = writeln!(line, "{}", layout.line(&TX_COLUMNS, &cells));
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
        if !self.explain_first {
            let _ = writeln!(self.out);
            // The fast walks' advice is the same every period: once is enough.
            let mut advice = true;
            if matches!(f, Finding::SearchFanoutSummary(_)) {
                advice = !self.summary_advised;
                self.summary_advised = true;
            }
            for l in describe_finding(f, advice) {
                let _ = writeln!(self.out, "{}", paint_finding_line(&l, self.colour));
            }
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
        // Kept only for the diagnosis at the end, which a quiet table (the
        // `--summary` one) does not print: keeping them there grew memory
        // with the length of the run.
        if self.quiet && !self.explain_first {
            self.any_finding = true;
        } else if self.findings.len() < MAX_KEPT_FINDINGS {
            self.findings.push(f.clone());
        } else {
            self.findings_dropped += 1;
        }
    }

    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }

    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        if !self.findings.is_empty() && !self.quiet {
            if needs_condensing(&self.findings) {
                for l in condensed_diagnosis(&self.findings) {
                    let _ = writeln!(self.out, "{}", paint_finding_line(&l, self.colour));
                }
            } else {
                let _ = writeln!(self.out, "\n=== Diagnosis ({} finding(s)) ===", self.findings.len());
                // Summaries are cumulative: the last one says it all.
                let is_sum = |f: &Finding| matches!(f, Finding::SearchFanoutSummary(_));
                let last_sum = self.findings.iter().rposition(is_sum);
                for (i, f) in self.findings.iter().enumerate() {
                    if is_sum(f) && Some(i) != last_sum {
                        continue;
                    }
                    for l in describe_finding(f, true) {
                        let _ = writeln!(self.out, "{}", paint_finding_line(&l, self.colour));
                    }
                }
            }
        }
        if self.findings_dropped > 0 && !self.quiet {
            let _ = writeln!(
                self.out,
                "... {} more finding(s) not kept for this diagnosis (bounded memory; each was printed as it came)",
                self.findings_dropped
            );
        }
        if self.explain_first {
            if self.findings.is_empty() && !self.any_finding {
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
        let _ = writeln!(self.out, "\n{}", run_summary(s));
        for w in &s.warnings {
            let _ = writeln!(self.out, "warning: {w}");
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{model::finding::samples::findings, testkit::walk::describe};

    /// The typed description says exactly what the description walked from
    /// the JSON record said (the table output stays byte for byte the same).
    #[test]
    fn typed_description_matches_the_json_walk() {
        for f in findings() {
            let v = super::super::json::finding(&f);
            assert_eq!(describe_finding(&f, true), describe(&v), "{}", f.kind());
            let mut bare = v.clone();
            if let Value::Object(m) = &mut bare {
                m.remove("advice");
            }
            assert_eq!(describe_finding(&f, false), describe(&bare), "{} without advice", f.kind());
        }
    }

    /// Typed lost time and cause matching give the condensed diagnosis the
    /// JSON walk gave.
    #[test]
    fn lost_time_is_what_the_json_says() {
        for f in findings() {
            let v = super::super::json::finding(&f);
            let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let want = match f.kind() {
                "search_fanout" if v.get("answered_by").is_none_or(Value::is_null) => num("total_ms"),
                "search_fanout" => num("wasted_ms"),
                "upstream_timeout" => num("waited_ms"),
                "repeated" => num("client_time_lost_ms"),
                _ => 0.0,
            };
            assert!((f.lost_ms() - want).abs() < f64::EPSILON, "{}", f.kind());
            assert_eq!(v.get("kind").and_then(Value::as_str), Some(f.kind()));
            assert_eq!(v.get("cause").and_then(Value::as_str), Some(f.cause()));
        }
        let lines = condensed_diagnosis(&findings());
        assert!(
            lines.iter().any(|l| l.contains("50.0 s lost, ×5, 2 pod(s): SLOW DNS: upstream resolver")),
            "{lines:#?}"
        );
    }
}
