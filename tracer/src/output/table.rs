//! The human view: one line per transaction, findings as plain-language
//! blocks after the transactions they explain, and a recap at the end.

use std::io::Write;

use serde_json::Value;

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_name, rcode_name},
    pipeline::{Context, RunStats, Sink},
};

use super::{
    fit::{Align, Cell, Column, Layout, Style, rcode_style},
    rfc3339,
};

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
            width: None,
            colour: false,
            layout: None,
        }
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
    let title = match kind {
        "search_fanout" => "SLOW DNS: search-list fan-out",
        "upstream_timeout" => "SLOW DNS: upstream resolver did not answer",
        "nxdomain_storm" => "DNS: NXDOMAIN storm",
        "fabric_loss" => "PACKETS LOST between nodes",
        other => other,
    };
    out.push(format!("== {title} =="));
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
    if let Some(Value::Array(adv)) = v.get("advice") {
        out.push("   advice:".into());
        for a in adv {
            if let Some(s) = a.as_str() {
                for (i, line) in s.lines().enumerate() {
                    out.push(format!("     {} {line}", if i == 0 { "-" } else { " " }));
                }
            }
        }
    }
    out
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
        let v = super::json::finding(f);
        if !self.explain_first {
            let _ = writeln!(self.out);
            for l in describe(&v) {
                let _ = writeln!(self.out, "{}", paint_finding_line(&l, self.colour));
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
            let _ = writeln!(self.out, "\n=== Diagnosis ({} finding(s)) ===", self.findings.len());
            for v in &self.findings {
                for l in describe(v) {
                    let _ = writeln!(self.out, "{}", paint_finding_line(&l, self.colour));
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
        let _ = writeln!(self.out, "\n{}", run_summary(s));
        for w in &s.warnings {
            let _ = writeln!(self.out, "warning: {w}");
        }
        let _ = self.out.flush();
    }
}
