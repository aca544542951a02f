//! Prometheus metrics of the agent.
//!
//! A small hand-written registry rather than the `prometheus` crate: the set
//! of families is fixed, and what matters is that label cardinality stays
//! bounded however many pods, drop reasons or nodes the node sees. Every
//! label dimension has a cap; values past it are folded into `_other`
//! (Kubernetes names are DNS labels, so `_other` never collides with a real
//! namespace or pod). Admission is first come, first kept: a series, once
//! exported, keeps counting, so counters stay monotonic.
//!
//! [`Metrics::render`] writes the text exposition format 0.0.4;
//! [`parse_exposition`] is a strict reader of that format for tests.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::{self, Write as _},
    os::fd::OwnedFd,
    sync::{Mutex, MutexGuard, PoisonError},
};

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_str, rcode_str},
    event::DropRecord,
};

/// Upper bounds (seconds) of the DNS latency histogram buckets; `+Inf` follows.
pub const DNS_LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Label value that stands for everything past a cardinality cap.
pub const OTHER: &str = "_other";

/// `rcode` label of a query that got no answer.
pub const RCODE_TIMEOUT: &str = "timeout";

/// Most series of one family, whatever the label caps allow.
const MAX_SERIES: usize = 10_000;
/// Query types with their own `qtype` label value; the rest are `_other`.
const QTYPES: [&str; 12] = ["A", "AAAA", "ANY", "CNAME", "HTTPS", "MX", "NS", "PTR", "SOA", "SRV", "SVCB", "TXT"];
/// Response codes with their own `rcode` label value; the rest are `_other`.
const RCODES: [&str; 6] = ["FORMERR", "NOERROR", "NOTIMP", "NXDOMAIN", "REFUSED", "SERVFAIL"];
/// Most distinct drop reasons (the kernel enum has about a hundred).
const MAX_REASONS: usize = 128;
/// Most distinct connection failure kinds.
const MAX_CONN_KINDS: usize = 32;
/// Most distinct (from, to) node pairs of fabric loss.
const MAX_NODE_PAIRS: usize = 256;
/// Most BPF programs reported.
const MAX_PROGRAMS: usize = 64;
/// Most gauges set through [`Metrics::set_gauge`].
const MAX_GAUGES: usize = 64;
/// Families with fixed names; gauges cannot take these (or their sample names).
const FAMILIES: [&str; 11] = [
    "ktrace_agent_info",
    "ktrace_bpf_program_run_seconds_total",
    "ktrace_bpf_program_runs_total",
    "ktrace_conn_failures_total",
    "ktrace_dns_findings_total",
    "ktrace_dns_latency_seconds",
    "ktrace_dns_requests_total",
    "ktrace_dns_timeouts_total",
    "ktrace_drops_total",
    "ktrace_fabric_loss_packets_total",
    "ktrace_lost_events_total",
];
/// Kernel limit of a BPF object name, NUL included (`BPF_OBJ_NAME_LEN`).
const BPF_OBJ_NAME_LEN: usize = 16;

/// Registry limits and identity.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Most distinct (namespace, pod) pairs per metric family; later pods count as `pod="_other"`.
    pub top_pods: usize,
    /// Most distinct namespaces per metric family; later ones count as `namespace="_other"`.
    pub max_namespaces: usize,
    /// This node's name (the `node` label of `ktrace_agent_info`).
    pub node: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { top_pods: 50, max_namespaces: 100, node: String::new() }
    }
}

/// Run statistics of one BPF program (only nonzero while [`enable_bpf_stats`] is held).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStat {
    /// Program name (the full function name, not the kernel's 15-byte one).
    pub name: String,
    /// Times it ran.
    pub run_count: u64,
    /// Total time it ran, in ns.
    pub run_time_ns: u64,
}

/// The agent's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    dns_requests: Counter,
    dns_request_pods: PodCap,
    dns_timeouts: Counter,
    dns_timeout_pods: PodCap,
    dns_latency: Histogram,
    dns_latency_namespaces: Capped,
    findings: Counter,
    finding_pods: PodCap,
    drops: Counter,
    drop_pods: PodCap,
    drop_reasons: Capped,
    conn_failures: Counter,
    conn_pods: PodCap,
    conn_kinds: Capped,
    fabric_loss: Counter,
    fabric_pairs: Capped,
    lost_events: Counter,
    program_seconds: Counter,
    program_runs: Counter,
    gauges: BTreeMap<&'static str, (&'static str, f64)>,
}

#[derive(Debug)]
struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: BTreeMap<Vec<String>, f64>,
}

impl Counter {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, series: BTreeMap::new() }
    }

    fn add(&mut self, mut values: Vec<String>, by: f64) {
        debug_assert_eq!(values.len(), self.labels.len());
        // The per-dimension caps already bound the product; this is the backstop.
        if self.series.len() >= MAX_SERIES && !self.series.contains_key(&values) {
            values = vec![OTHER.to_owned(); self.labels.len()];
        }
        *self.series.entry(values).or_insert(0.0) += by;
    }

    fn render(&self, out: &mut String, kind: &str) {
        header(out, self.name, self.help, kind);
        for (values, v) in &self.series {
            sample(out, self.name, self.labels, values, None, *v);
        }
    }
}

#[derive(Debug)]
struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: BTreeMap<Vec<String>, Hist>,
}

#[derive(Debug)]
struct Hist {
    /// Per bucket (not cumulative), one more than `bounds` for `+Inf`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, values: Vec<String>, v: f64) {
        let n = self.bounds.len();
        let h = self.series.entry(values).or_insert_with(|| Hist { buckets: vec![0; n + 1], sum: 0.0, count: 0 });
        // Buckets are `le`: a value equal to a bound belongs to it.
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(n);
        h.buckets[i] += 1;
        h.sum += v;
        h.count += 1;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let bucket = format!("{}_bucket", self.name);
        for (values, h) in &self.series {
            let mut cumulative = 0;
            for (i, c) in h.buckets.iter().enumerate() {
                cumulative += c;
                let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| fmt_value(*b));
                sample(out, &bucket, self.labels, values, Some(&le), cumulative as f64);
            }
            sample(out, &format!("{}_sum", self.name), self.labels, values, None, h.sum);
            sample(out, &format!("{}_count", self.name), self.labels, values, None, h.count as f64);
        }
    }
}

/// A bounded set of label values: the first `max` are kept, later ones fold into [`OTHER`].
#[derive(Debug)]
struct Capped {
    max: usize,
    seen: HashSet<String>,
}

impl Capped {
    fn new(max: usize) -> Self {
        Self { max, seen: HashSet::new() }
    }

    fn admit(&mut self, v: &str) -> String {
        if self.seen.contains(v) {
            return v.to_owned();
        }
        if self.seen.len() < self.max {
            self.seen.insert(v.to_owned());
            return v.to_owned();
        }
        OTHER.to_owned()
    }
}

/// Bounded (namespace, pod) label pairs of one family.
#[derive(Debug)]
struct PodCap {
    max_pods: usize,
    namespaces: Capped,
    pods: HashMap<String, HashSet<String>>,
    n_pods: usize,
}

impl PodCap {
    fn new(max_pods: usize, max_namespaces: usize) -> Self {
        Self { max_pods, namespaces: Capped::new(max_namespaces), pods: HashMap::new(), n_pods: 0 }
    }

    /// The label values to use for `pod` (None: not attributed to a pod).
    fn fold(&mut self, pod: Option<(&str, &str)>) -> [String; 2] {
        let Some((ns, name)) = pod else { return [String::new(), String::new()] };
        let ns = self.namespaces.admit(ns);
        if ns == OTHER {
            return [ns, OTHER.to_owned()];
        }
        if self.pods.get(&ns).is_some_and(|s| s.contains(name)) {
            return [ns, name.to_owned()];
        }
        if self.n_pods < self.max_pods {
            self.pods.entry(ns.clone()).or_default().insert(name.to_owned());
            self.n_pods += 1;
            return [ns, name.to_owned()];
        }
        [ns, OTHER.to_owned()]
    }
}

/// `namespace/name` as the findings carry it.
fn split_pod(s: &str) -> (&str, &str) {
    s.split_once('/').unwrap_or(("", s))
}

impl Metrics {
    /// Empty registry.
    #[must_use]
    pub fn new(cfg: MetricsConfig) -> Self {
        let MetricsConfig { top_pods, max_namespaces, node } = cfg;
        let pods = || PodCap::new(top_pods, max_namespaces);
        let mut lost_events = Counter::new(
            "ktrace_lost_events_total",
            "Events lost before reaching a consumer: kernel ring buffer full, evicted from the agent history, or dropped for a slow subscriber.",
            &["where"],
        );
        for w in ["kernel", "history", "subscriber"] {
            lost_events.add(vec![w.to_owned()], 0.0);
        }
        let inner = Inner {
            node,
            dns_requests: Counter::new(
                "ktrace_dns_requests_total",
                "DNS queries completed (answered or timed out), by client pod, query type and response code.",
                &["namespace", "pod", "qtype", "rcode"],
            ),
            dns_request_pods: pods(),
            dns_timeouts: Counter::new(
                "ktrace_dns_timeouts_total",
                "DNS queries that got no answer within the pairing timeout, by client pod.",
                &["namespace", "pod"],
            ),
            dns_timeout_pods: pods(),
            dns_latency: Histogram {
                name: "ktrace_dns_latency_seconds",
                help: "Query-to-answer time of answered DNS queries, by client namespace.",
                labels: &["namespace"],
                bounds: &DNS_LATENCY_BUCKETS,
                series: BTreeMap::new(),
            },
            dns_latency_namespaces: Capped::new(max_namespaces),
            findings: Counter::new(
                "ktrace_dns_findings_total",
                "DNS findings (search_fanout, upstream_timeout, nxdomain_storm), by client pod.",
                &["kind", "namespace", "pod"],
            ),
            finding_pods: pods(),
            drops: Counter::new(
                "ktrace_drops_total",
                "Packets the kernel dropped, by drop reason and pod.",
                &["reason", "namespace", "pod"],
            ),
            drop_pods: pods(),
            drop_reasons: Capped::new(MAX_REASONS),
            conn_failures: Counter::new(
                "ktrace_conn_failures_total",
                "TCP connection failures, by kind and pod.",
                &["kind", "namespace", "pod"],
            ),
            conn_pods: pods(),
            conn_kinds: Capped::new(MAX_CONN_KINDS),
            fabric_loss: Counter::new(
                "ktrace_fabric_loss_packets_total",
                "Packets sent from one node that never arrived at the other.",
                &["from_node", "to_node"],
            ),
            fabric_pairs: Capped::new(MAX_NODE_PAIRS),
            lost_events,
            program_seconds: Counter::new(
                "ktrace_bpf_program_run_seconds_total",
                "Time spent in each ktrace BPF program while run statistics are enabled.",
                &["program"],
            ),
            program_runs: Counter::new(
                "ktrace_bpf_program_runs_total",
                "Runs of each ktrace BPF program while run statistics are enabled.",
                &["program"],
            ),
            gauges: BTreeMap::new(),
        };
        Self { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves counters consistent
        // enough to keep exporting.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one completed DNS transaction: `ktrace_dns_requests_total`
    /// (common query types and rcodes by name, others `_other`, unanswered
    /// `rcode="timeout"`), and either `ktrace_dns_timeouts_total` or the
    /// latency histogram (by client namespace).
    pub fn dns_transaction(&self, tx: &Transaction) {
        // Only the resolver's side was seen here, and the client runs on
        // another node: that node's agent counts the lookup (with the
        // latency its client saw). Counting it here too would count every
        // cross-node lookup twice in a sum over nodes.
        if tx.observed == crate::analyze::Observed::Server
            && let (Some(here), Some(there)) =
                (tx.node.as_deref(), tx.client_pod.as_ref().and_then(|p| p.node.as_deref()))
            && here != there
        {
            return;
        }
        let pod = tx.client_pod.as_ref().map(|p| (&*p.namespace, &*p.name));
        let qtype = qtype_str(tx.qtype).filter(|q| QTYPES.contains(q)).unwrap_or(OTHER).to_owned();
        let rcode = match tx.rcode {
            _ if tx.timed_out => RCODE_TIMEOUT,
            Some(r) => rcode_str(r).filter(|r| RCODES.contains(r)).unwrap_or(OTHER),
            None => RCODE_TIMEOUT,
        };
        let mut g = self.lock();
        let g = &mut *g;
        let [ns, name] = g.dns_request_pods.fold(pod);
        g.dns_requests.add(vec![ns, name, qtype, rcode.to_owned()], 1.0);
        if tx.timed_out || tx.rcode.is_none() {
            let labels = g.dns_timeout_pods.fold(pod).to_vec();
            g.dns_timeouts.add(labels, 1.0);
        } else if let Some(ns_lat) = tx.latency_ns {
            let ns = g.dns_latency_namespaces.admit(pod.map_or("", |p| p.0));
            g.dns_latency.observe(vec![ns], ns_lat as f64 / 1e9);
        }
    }

    /// Counts one finding.
    pub fn finding(&self, f: &Finding) {
        // Condensed records stand for many findings: the counter counts those.
        let (kind, n) = match f {
            Finding::SearchFanout(_) => ("search_fanout", 1),
            Finding::UpstreamTimeout(_) => ("upstream_timeout", 1),
            Finding::NxdomainStorm(_) => ("nxdomain_storm", 1),
            Finding::SearchFanoutSummary(s) => ("search_fanout", s.new_lookups),
            Finding::Repeated(r) => (r.of_kind.as_str(), r.new),
        };
        if n == 0 {
            return;
        }
        let mut g = self.lock();
        let [ns, name] = g.finding_pods.fold(f.pod().map(split_pod));
        g.findings.add(vec![kind.to_owned(), ns, name], n as f64);
    }

    /// Counts one kernel packet drop, by its reason name.
    pub fn drop_event(&self, d: &DropRecord, pod: Option<(&str, &str)>) {
        self.drop_reason(&d.reason_name, pod);
    }

    /// Counts one packet drop with the given reason (`pod`: namespace and name).
    pub fn drop_reason(&self, reason: &str, pod: Option<(&str, &str)>) {
        let mut g = self.lock();
        let reason = g.drop_reasons.admit(if reason.is_empty() { "unknown" } else { reason });
        let [ns, name] = g.drop_pods.fold(pod);
        g.drops.add(vec![reason, ns, name], 1.0);
    }

    /// Counts one TCP connection failure of `kind` (e.g. `refused`, `syn_timeout`, `reset`).
    pub fn conn_failure(&self, kind: &str, pod: Option<(&str, &str)>) {
        let mut g = self.lock();
        let kind = g.conn_kinds.admit(kind);
        let [ns, name] = g.conn_pods.fold(pod);
        g.conn_failures.add(vec![kind, ns, name], 1.0);
    }

    /// Adds `packets` lost on the way from one node to another.
    pub fn fabric_loss(&self, from_node: &str, to_node: &str, packets: u64) {
        let mut g = self.lock();
        // Pairs are capped as a unit (node names never contain a newline).
        let key = format!("{from_node}\n{to_node}");
        let labels = if g.fabric_pairs.admit(&key) == OTHER {
            vec![OTHER.to_owned(), OTHER.to_owned()]
        } else {
            vec![from_node.to_owned(), to_node.to_owned()]
        };
        g.fabric_loss.add(labels, packets as f64);
    }

    /// Sets the running totals of lost events (never decreases them).
    pub fn set_lost_events(&self, kernel: u64, history_evicted: u64, subscriber_dropped: u64) {
        let mut g = self.lock();
        for (w, v) in [("kernel", kernel), ("history", history_evicted), ("subscriber", subscriber_dropped)] {
            let e = g.lost_events.series.entry(vec![w.to_owned()]).or_insert(0.0);
            *e = e.max(v as f64);
        }
    }

    /// Replaces the BPF program run statistics (at most 64 programs, by name).
    pub fn set_program_stats(&self, stats: &[ProgramStat]) {
        let mut g = self.lock();
        g.program_seconds.series.clear();
        g.program_runs.series.clear();
        for s in stats {
            let key = vec![s.name.clone()];
            if g.program_runs.series.len() >= MAX_PROGRAMS && !g.program_runs.series.contains_key(&key) {
                continue;
            }
            g.program_seconds.add(key.clone(), s.run_time_ns as f64 / 1e9);
            g.program_runs.add(key, s.run_count as f64);
        }
    }

    /// Sets a gauge without labels (e.g. `ktrace_history_bytes`). Names must
    /// be valid metric names not used by another family; at most 64 gauges.
    pub fn set_gauge(&self, name: &'static str, help: &'static str, value: f64) {
        if !valid_metric_name(name) || reserved_name(name) {
            log::debug!("metrics: ignoring gauge with invalid or taken name {name:?}");
            return;
        }
        let mut g = self.lock();
        if g.gauges.len() >= MAX_GAUGES && !g.gauges.contains_key(name) {
            return;
        }
        g.gauges.insert(name, (help, value));
    }

    /// The metrics in the text exposition format 0.0.4, families sorted by name.
    #[must_use]
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut blocks: Vec<(&str, String)> = Vec::new();
        for c in [&g.dns_requests, &g.dns_timeouts, &g.findings, &g.drops, &g.conn_failures, &g.fabric_loss]
            .into_iter()
            .chain([&g.lost_events, &g.program_seconds, &g.program_runs])
        {
            let mut s = String::new();
            c.render(&mut s, "counter");
            blocks.push((c.name, s));
        }
        let mut s = String::new();
        g.dns_latency.render(&mut s);
        blocks.push((g.dns_latency.name, s));

        let mut s = String::new();
        header(&mut s, "ktrace_agent_info", "Agent identity; always 1.", "gauge");
        sample(
            &mut s,
            "ktrace_agent_info",
            &["node", "version"],
            &[g.node.clone(), env!("CARGO_PKG_VERSION").to_owned()],
            None,
            1.0,
        );
        blocks.push(("ktrace_agent_info", s));

        for (name, (help, v)) in &g.gauges {
            let mut s = String::new();
            header(&mut s, name, help, "gauge");
            sample(&mut s, name, &[], &[], None, *v);
            blocks.push((name, s));
        }
        blocks.sort_by(|a, b| a.0.cmp(b.0));
        blocks.into_iter().map(|(_, s)| s).collect()
    }
}

/// Whether `name` is a fixed family's name or one of its sample names.
fn reserved_name(name: &str) -> bool {
    FAMILIES
        .iter()
        .any(|f| name.strip_prefix(f).is_some_and(|rest| ["", "_bucket", "_sum", "_count", "_created"].contains(&rest)))
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", EscapeHelp(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[&str], values: &[String], le: Option<&str>, v: f64) {
    out.push_str(name);
    let pairs = labels.iter().zip(values).map(|(l, v)| (*l, v.as_str())).chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (l, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{l}=\"{}\"", EscapeLabel(v));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&fmt_value(v));
    out.push('\n');
}

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`; shortest round trip otherwise).
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

struct EscapeLabel<'a>(&'a str);

impl fmt::Display for EscapeLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

struct EscapeHelp<'a>(&'a str);

impl fmt::Display for EscapeHelp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Turns on kernel-wide BPF run statistics (`BPF_ENABLE_STATS`, Linux 5.8+)
/// for as long as the returned descriptor is open. None when not permitted
/// or not supported; statistics then stay zero.
#[must_use]
pub fn enable_bpf_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::debug!("BPF run statistics unavailable: {e}");
            None
        }
    }
}

/// Run statistics of the loaded BPF programs named in `names`, summed per
/// name (the kernel keeps only the first 15 bytes of a name; programs of
/// other processes with the same name are included). Empty when the
/// programs cannot be listed (no `CAP_SYS_ADMIN`).
#[must_use]
pub fn bpf_program_stats(names: &[&str]) -> Vec<ProgramStat> {
    let mut out: BTreeMap<&str, ProgramStat> = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                log::debug!("listing BPF programs: {e}");
                continue;
            }
        };
        let kernel = info.name();
        let Some(name) = names.iter().find(|n| kernel_name_matches(n, kernel)) else { continue };
        let s = out.entry(name).or_insert_with(|| ProgramStat { name: (*name).to_owned(), ..ProgramStat::default() });
        s.run_count = s.run_count.saturating_add(info.run_count());
        s.run_time_ns = s.run_time_ns.saturating_add(u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX));
    }
    out.into_values().collect()
}

fn kernel_name_matches(full: &str, kernel: &[u8]) -> bool {
    let b = full.as_bytes();
    !kernel.is_empty() && kernel == &b[..b.len().min(BPF_OBJ_NAME_LEN - 1)]
}

// ---------------------------------------------------------------------------
// Strict reader of the text format, for tests.

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Sample name (e.g. `x_bucket` of histogram `x`).
    pub name: String,
    /// Labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Why an exposition is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Default)]
struct FamilyState {
    kind: Option<Kind>,
    help: bool,
    samples: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct HistCheck {
    line: usize,
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
}

/// Parses and checks a text exposition (format 0.0.4) strictly: metric and
/// label name syntax, escapes, HELP and TYPE (each once) before a family's
/// samples, families in one group each, no duplicate series, counters
/// non-negative, histogram buckets cumulative with `le` ending at `+Inf` and
/// `_count` equal to it.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, ExpositionError> {
    let err = |line: usize, reason: String| ExpositionError { line, reason };
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    } else if !text.is_empty() {
        return Err(err(lines.len(), "last line does not end with a newline".into()));
    }
    let mut families: HashMap<String, FamilyState> = HashMap::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    let mut hists: BTreeMap<(String, BTreeMap<String, String>), HistCheck> = BTreeMap::new();
    let mut out = Vec::new();

    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let line = raw.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if raw.contains('\r') {
            return Err(err(n, "carriage return in line".into()));
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches([' ', '\t']);
            let (kw, rest) = split_token(rest);
            if kw != "HELP" && kw != "TYPE" {
                continue;
            }
            let (name, rest) = split_token(rest);
            if !valid_metric_name(name) {
                return Err(err(n, format!("invalid metric name {name:?} in {kw}")));
            }
            enter_family(&mut families, &mut current, name).map_err(|r| err(n, r))?;
            let fam = families.get_mut(name).expect("entered above");
            if kw == "HELP" {
                if fam.help {
                    return Err(err(n, format!("second HELP for {name}")));
                }
                fam.help = true;
                check_help_escapes(rest).map_err(|r| err(n, r))?;
            } else {
                if fam.kind.is_some() {
                    return Err(err(n, format!("second TYPE for {name}")));
                }
                if fam.samples {
                    return Err(err(n, format!("TYPE for {name} after its samples")));
                }
                let (t, extra) = split_token(rest);
                if !extra.is_empty() {
                    return Err(err(n, format!("trailing text after TYPE: {extra:?}")));
                }
                fam.kind = Some(match t {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    "untyped" => Kind::Untyped,
                    _ => return Err(err(n, format!("unknown metric type {t:?}"))),
                });
            }
            continue;
        }

        let s = parse_sample_line(line).map_err(|r| err(n, r))?;
        // Which family the sample belongs to: the current one if it is a
        // histogram or summary and the name carries one of its suffixes.
        let family = current
            .as_ref()
            .filter(|c| {
                let kind = families.get(*c).and_then(|f| f.kind);
                let suffixes: &[&str] = match kind {
                    Some(Kind::Histogram) => &["_bucket", "_sum", "_count"],
                    Some(Kind::Summary) => &["", "_sum", "_count"],
                    _ => &[""],
                };
                s.name.strip_prefix(c.as_str()).is_some_and(|rest| suffixes.contains(&rest))
            })
            .cloned()
            .unwrap_or_else(|| s.name.clone());
        enter_family(&mut families, &mut current, &family).map_err(|r| err(n, r))?;
        let fam = families.get_mut(&family).expect("entered above");
        let Some(kind) = fam.kind else {
            return Err(err(n, format!("sample {} without a TYPE line", s.name)));
        };
        if !fam.help {
            return Err(err(n, format!("sample {} without a HELP line", s.name)));
        }
        fam.samples = true;
        if !series.insert((s.name.clone(), s.labels.clone())) {
            return Err(err(n, format!("duplicate series {}{:?}", s.name, s.labels)));
        }
        match kind {
            Kind::Counter if s.value.is_nan() || s.value < 0.0 => {
                return Err(err(n, format!("counter {} has value {}", s.name, s.value)));
            }
            Kind::Histogram => {
                let suffix = &s.name[family.len()..];
                let mut key_labels = s.labels.clone();
                let le = key_labels.remove("le");
                let h = hists
                    .entry((family.clone(), key_labels))
                    .or_insert_with(|| HistCheck { line: n, ..HistCheck::default() });
                match (suffix, le) {
                    ("_bucket", Some(le)) => {
                        let bound = parse_float(&le).ok_or_else(|| err(n, format!("invalid le {le:?}")))?;
                        if bound.is_nan() {
                            return Err(err(n, "le is NaN".into()));
                        }
                        if s.value.is_nan() || s.value < 0.0 {
                            return Err(err(n, format!("bucket count {}", s.value)));
                        }
                        if let Some(&(prev_le, prev)) = h.buckets.last() {
                            if bound <= prev_le {
                                return Err(err(n, format!("le {le} not above the previous bucket's")));
                            }
                            if s.value < prev {
                                return Err(err(n, "bucket counts are not cumulative".into()));
                            }
                        }
                        h.buckets.push((bound, s.value));
                    }
                    ("_bucket", None) => return Err(err(n, "bucket without le label".into())),
                    (_, Some(_)) => return Err(err(n, format!("le label on {}", s.name))),
                    ("_count", None) => {
                        if s.value.is_nan() || s.value < 0.0 {
                            return Err(err(n, format!("histogram count {}", s.value)));
                        }
                        h.count = Some(s.value);
                    }
                    ("_sum", None) => h.sum = Some(s.value),
                    _ => return Err(err(n, format!("sample {} in histogram {family}", s.name))),
                }
            }
            _ => {}
        }
        out.push(s);
    }

    for ((family, labels), h) in &hists {
        let e = |r: String| err(h.line, format!("histogram {family}{labels:?}: {r}"));
        let Some(&(last_le, inf)) = h.buckets.last() else { return Err(e("no buckets".into())) };
        if last_le != f64::INFINITY {
            return Err(e("buckets do not end with le=\"+Inf\"".into()));
        }
        match h.count {
            None => return Err(e("no _count".into())),
            Some(c) if c.total_cmp(&inf).is_ne() => {
                return Err(e(format!("_count {c} differs from the +Inf bucket {inf}")));
            }
            Some(_) => {}
        }
        if h.sum.is_none() {
            return Err(e("no _sum".into()));
        }
    }
    Ok(out)
}

fn enter_family(
    families: &mut HashMap<String, FamilyState>,
    current: &mut Option<String>,
    name: &str,
) -> Result<(), String> {
    if current.as_deref() == Some(name) {
        return Ok(());
    }
    if let Some(prev) = current.take() {
        families.entry(prev).or_default().closed = true;
    }
    let fam = families.entry(name.to_owned()).or_default();
    if fam.closed {
        return Err(format!("{name} appears in two separate groups"));
    }
    *current = Some(name.to_owned());
    Ok(())
}

/// The token up to the next blank, and the rest after the blanks that follow.
fn split_token(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches([' ', '\t']))
}

fn check_help_escapes(s: &str) -> Result<(), String> {
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('\\' | 'n') => {}
                other => {
                    return Err(format!("invalid escape in HELP: \\{}", other.map(String::from).unwrap_or_default()));
                }
            }
        }
    }
    Ok(())
}

fn valid_metric_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust also reads "inf", "infinity" and "nan"; Prometheus writes only the above.
        _ if s.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => None,
        _ => s.parse().ok(),
    }
}

fn parse_sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a blank before the value".into());
    }
    let (value, rest) = split_token(rest.trim_start_matches([' ', '\t']));
    let value = parse_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let (ts, rest) = split_token(rest);
    if !ts.is_empty() && ts.parse::<i64>().is_err() {
        return Err(format!("invalid timestamp {ts:?}"));
    }
    if !rest.is_empty() {
        return Err(format!("trailing text {rest:?}"));
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parses labels after `{`; returns the text after `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let name = &s[..end];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if name.starts_with("__") {
            return Err(format!("reserved label name {name:?}"));
        }
        s = s[end..].trim_start_matches([' ', '\t']);
        s = s.strip_prefix('=').ok_or_else(|| format!("expected '=' after label {name}"))?;
        s = s.trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"').ok_or_else(|| format!("expected '\"' to open the value of {name}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("invalid escape in label {name}: {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        s = s[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        analyze::Observed,
        enrich::PodRef,
        event::{Endpoint, Transport},
    };

    fn pod(ns: &str, name: &str) -> PodRef {
        PodRef { namespace: Arc::from(ns), name: Arc::from(name), node: None }
    }

    fn tx(pod: Option<PodRef>, qtype: u16, rcode: Option<u16>, latency_ns: Option<u64>) -> Transaction {
        let ep = Endpoint { ip: IpAddr::from([10, 0, 0, 1]), port: 53 };
        Transaction {
            ts_ns: 0,
            end_ns: latency_ns,
            node: None,
            netns: 0,
            cgroup_id: 0,
            process: None,
            server_process: None,
            client: ep,
            server: ep,
            client_pod: pod,
            server_pod: None,
            resolver: None,
            resolver_client: None,
            resolver_pod: None,
            transport: Transport::Udp,
            id: 1,
            qname: "example.com".into(),
            qtype,
            rcode,
            answers: Vec::new(),
            latency_ns,
            timed_out: rcode.is_none(),
            retransmits: 0,
            duplicate_answers: 0,
            observed: Observed::Client,
        }
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        find(samples, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}")).value
    }

    /// Our validator, and promtool's when it is installed.
    fn check(text: &str) -> Vec<Sample> {
        let samples = parse_exposition(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        promtool_check(text);
        samples
    }

    fn promtool_check(text: &str) {
        use std::{io::Write as _, process::Stdio};
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("note: promtool not on PATH; only our validator checked the output");
            return;
        };
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
        let out = child.wait_with_output().expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n---\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn full_registry() -> Metrics {
        let m = Metrics::new(MetricsConfig { node: "node-a".into(), ..MetricsConfig::default() });
        let web = pod("shop", "web-1");
        m.dns_transaction(&tx(Some(web.clone()), 1, Some(0), Some(2_000_000)));
        m.dns_transaction(&tx(Some(web.clone()), 1, Some(0), Some(30_000_000)));
        m.dns_transaction(&tx(Some(web.clone()), 28, Some(3), Some(1_000_000)));
        m.dns_transaction(&tx(Some(web), 1, None, None));
        m.dns_transaction(&tx(None, 65_000, Some(2), Some(20_000_000_000)));
        m.drop_reason("NETFILTER_DROP", Some(("shop", "web-1")));
        m.drop_reason("NETFILTER_DROP", Some(("shop", "web-1")));
        m.drop_reason("", None);
        m.conn_failure("refused", Some(("shop", "web-1")));
        m.fabric_loss("node-a", "node-b", 7);
        m.fabric_loss("node-a", "node-b", 3);
        m.set_lost_events(5, 2, 1);
        m.set_lost_events(4, 3, 1);
        m.set_program_stats(&[ProgramStat {
            name: "ktrace_cgroup_egress".into(),
            run_count: 10,
            run_time_ns: 1_500_000_000,
        }]);
        m.set_gauge("ktrace_history_bytes", "Bytes held in the replay history.", 1024.0);
        m.set_gauge("ktrace_subscribers", "Connected stream subscribers.", 2.0);
        m
    }

    #[test]
    fn a_remote_clients_lookup_seen_only_at_the_resolver_is_counted_at_the_clients_node() {
        let m = Metrics::new(MetricsConfig::default());
        let mut client = pod("shop", "web-1");
        client.node = Some(Arc::from("node-b"));
        let mut t = tx(Some(client), 1, Some(0), Some(1_000_000));
        t.node = Some(Arc::from("node-a"));
        t.observed = Observed::Server;
        m.dns_transaction(&t);
        let q = [("namespace", "shop"), ("pod", "web-1"), ("qtype", "A"), ("rcode", "NOERROR")];
        let s = check(&m.render());
        assert!(find(&s, "ktrace_dns_requests_total", &q).is_none(), "counted at the client's node only");
        // The client's own node counts it; so does the resolver's node when the client is local.
        t.node = Some(Arc::from("node-b"));
        m.dns_transaction(&t);
        t.observed = Observed::Both;
        t.node = Some(Arc::from("node-a"));
        m.dns_transaction(&t);
        let s = check(&m.render());
        assert!((value(&s, "ktrace_dns_requests_total", &q) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn render_parses_back() {
        let m = full_registry();
        let text = m.render();
        let s = check(&text);
        let web = [("namespace", "shop"), ("pod", "web-1")];
        let q = |qtype, rcode| [web[0], web[1], ("qtype", qtype), ("rcode", rcode)];
        assert!((value(&s, "ktrace_dns_requests_total", &q("A", "NOERROR")) - 2.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_requests_total", &q("AAAA", "NXDOMAIN")) - 1.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_requests_total", &q("A", RCODE_TIMEOUT)) - 1.0).abs() < 1e-9);
        let unknown = [("namespace", ""), ("pod", ""), ("qtype", OTHER), ("rcode", "SERVFAIL")];
        assert!((value(&s, "ktrace_dns_requests_total", &unknown) - 1.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_timeouts_total", &web) - 1.0).abs() < 1e-9);
        let shop = [("namespace", "shop")];
        assert!((value(&s, "ktrace_dns_latency_seconds_count", &shop) - 3.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_sum", &shop) - 0.033).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.001")]) - 1.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.005")]) - 2.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.025")]) - 2.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.05")]) - 3.0).abs() < 1e-9);
        // 20 s is past the last bound: only in +Inf.
        let none = [("namespace", "")];
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[none[0], ("le", "10")])).abs() < 1e-9);
        assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[none[0], ("le", "+Inf")]) - 1.0).abs() < 1e-9);
        let drop = [("reason", "NETFILTER_DROP"), web[0], web[1]];
        assert!((value(&s, "ktrace_drops_total", &drop) - 2.0).abs() < 1e-9);
        assert!(
            (value(&s, "ktrace_drops_total", &[("reason", "unknown"), ("namespace", ""), ("pod", "")]) - 1.0).abs()
                < 1e-9
        );
        assert!((value(&s, "ktrace_conn_failures_total", &[("kind", "refused"), web[0], web[1]]) - 1.0).abs() < 1e-9);
        let nodes = [("from_node", "node-a"), ("to_node", "node-b")];
        assert!((value(&s, "ktrace_fabric_loss_packets_total", &nodes) - 10.0).abs() < 1e-9);
        // Running totals never go down.
        assert!((value(&s, "ktrace_lost_events_total", &[("where", "kernel")]) - 5.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_lost_events_total", &[("where", "history")]) - 3.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_lost_events_total", &[("where", "subscriber")]) - 1.0).abs() < 1e-9);
        let prog = [("program", "ktrace_cgroup_egress")];
        assert!((value(&s, "ktrace_bpf_program_run_seconds_total", &prog) - 1.5).abs() < 1e-9);
        assert!((value(&s, "ktrace_bpf_program_runs_total", &prog) - 10.0).abs() < 1e-9);
        assert!((value(&s, "ktrace_history_bytes", &[]) - 1024.0).abs() < 1e-9);
        let info = [("node", "node-a"), ("version", env!("CARGO_PKG_VERSION"))];
        assert!((value(&s, "ktrace_agent_info", &info) - 1.0).abs() < 1e-9);

        // Deterministic: same state, same bytes; families sorted.
        assert_eq!(text, m.render());
        let types: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
        let mut sorted = types.clone();
        sorted.sort_unstable();
        assert_eq!(types, sorted);
    }

    #[test]
    fn empty_registry_is_valid() {
        let m = Metrics::new(MetricsConfig::default());
        let text = m.render();
        let s = check(&text);
        assert!((value(&s, "ktrace_lost_events_total", &[("where", "kernel")])).abs() < f64::EPSILON);
        let types: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
        assert_eq!(types, FAMILIES, "FAMILIES lists every fixed family, sorted");
    }

    #[test]
    fn findings_are_counted_by_kind_and_pod() {
        use crate::analyze::findings::NxdomainStorm;
        let m = Metrics::new(MetricsConfig::default());
        let storm = |pod: Option<&str>| {
            Finding::NxdomainStorm(NxdomainStorm {
                ts_ns: 0,
                pod: pod.map(str::to_owned),
                client: "10.0.0.1".into(),
                nxdomain: 300,
                window_ms: 10_000.0,
                rate_per_s: 30.0,
                top_names: Vec::new(),
                cause: String::new(),
                advice: Vec::new(),
            })
        };
        m.finding(&storm(Some("shop/web-1")));
        m.finding(&storm(Some("shop/web-1")));
        m.finding(&storm(None));
        let s = check(&m.render());
        let k = ("kind", "nxdomain_storm");
        assert!(
            (value(&s, "ktrace_dns_findings_total", &[k, ("namespace", "shop"), ("pod", "web-1")]) - 2.0).abs() < 1e-9
        );
        assert!((value(&s, "ktrace_dns_findings_total", &[k, ("namespace", ""), ("pod", "")]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cardinality_is_folded() {
        let m = Metrics::new(MetricsConfig { top_pods: 2, max_namespaces: 2, node: String::new() });
        for (ns, p) in [("a", "p1"), ("a", "p2"), ("a", "p3"), ("b", "p1"), ("c", "p1"), ("a", "p1")] {
            m.dns_transaction(&tx(Some(pod(ns, p)), 1, Some(0), Some(1_000_000)));
            m.conn_failure("refused", Some((ns, p)));
        }
        // Many distinct kinds: capped too.
        for i in 0..100 {
            m.conn_failure(&format!("kind{i}"), None);
            m.drop_reason(&format!("REASON_{i}"), None);
            m.fabric_loss(&format!("n{i}"), "x", 1);
        }
        let s = check(&m.render());
        let req = |ns, p| {
            value(
                &s,
                "ktrace_dns_requests_total",
                &[("namespace", ns), ("pod", p), ("qtype", "A"), ("rcode", "NOERROR")],
            )
        };
        assert!((req("a", "p1") - 2.0).abs() < 1e-9, "admitted pods keep counting");
        assert!((req("a", "p2") - 1.0).abs() < 1e-9);
        assert!((req("a", OTHER) - 1.0).abs() < 1e-9, "third pod folded, namespace kept");
        assert!((req("b", OTHER) - 1.0).abs() < 1e-9, "pod cap is per family, not per namespace");
        assert!((req(OTHER, OTHER) - 1.0).abs() < 1e-9, "third namespace folded");
        let requests: Vec<_> = s.iter().filter(|x| x.name == "ktrace_dns_requests_total").collect();
        assert_eq!(requests.len(), 5);
        let lat: Vec<_> = s
            .iter()
            .filter(|x| x.name == "ktrace_dns_latency_seconds_count")
            .map(|x| x.labels["namespace"].as_str())
            .collect();
        assert_eq!(lat, ["_other", "a", "b"]);
        let kinds: HashSet<_> =
            s.iter().filter(|x| x.name == "ktrace_conn_failures_total").map(|x| x.labels["kind"].clone()).collect();
        assert_eq!(kinds.len(), MAX_CONN_KINDS + 1);
        assert!(kinds.contains(OTHER));
        let reasons = s.iter().filter(|x| x.name == "ktrace_drops_total").count();
        assert_eq!(reasons, 100, "under the reason cap");
        let pairs = s.iter().filter(|x| x.name == "ktrace_fabric_loss_packets_total").count();
        assert_eq!(pairs, 100);
    }

    #[test]
    fn series_are_capped_per_family() {
        let m = Metrics::new(MetricsConfig { top_pods: 2 * MAX_SERIES, max_namespaces: 1, node: String::new() });
        for i in 0..MAX_SERIES + 10 {
            m.dns_transaction(&tx(Some(pod("ns", &format!("p{i}"))), 1, Some(16), Some(1)));
        }
        let s = check(&m.render());
        let requests: Vec<_> = s.iter().filter(|x| x.name == "ktrace_dns_requests_total").collect();
        assert_eq!(requests.len(), MAX_SERIES + 1);
        let all_other = [("namespace", OTHER), ("pod", OTHER), ("qtype", OTHER), ("rcode", OTHER)];
        assert!((value(&s, "ktrace_dns_requests_total", &all_other) - 10.0).abs() < 1e-9);
        // BADVERS is not one of the named rcodes.
        assert!(
            find(
                &s,
                "ktrace_dns_requests_total",
                &[("namespace", "ns"), ("pod", "p0"), ("qtype", "A"), ("rcode", OTHER)]
            )
            .is_some()
        );
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let m = Metrics::new(MetricsConfig { node: "a\"b\\c\nd".into(), ..MetricsConfig::default() });
        let weird = "p\"o\\d\nx";
        m.conn_failure("refused", Some(("ns", weird)));
        m.set_gauge("ktrace_weird", "Help with \\ backslash\nand newline.", 1.0);
        let text = m.render();
        assert!(text.contains(r#"pod="p\"o\\d\nx""#), "{text}");
        assert!(text.contains(r"# HELP ktrace_weird Help with \\ backslash\nand newline."), "{text}");
        let s = check(&text);
        assert!(
            find(&s, "ktrace_conn_failures_total", &[("kind", "refused"), ("namespace", "ns"), ("pod", weird)])
                .is_some()
        );
        assert!(
            find(&s, "ktrace_agent_info", &[("node", "a\"b\\c\nd"), ("version", env!("CARGO_PKG_VERSION"))]).is_some()
        );
    }

    #[test]
    fn gauges_are_bounded_and_cannot_shadow_families() {
        let m = Metrics::new(MetricsConfig::default());
        m.set_gauge("ktrace_dns_requests_total", "Clash.", 1.0);
        m.set_gauge("ktrace_dns_latency_seconds_bucket", "Clash.", 1.0);
        m.set_gauge("bad name", "Invalid.", 1.0);
        m.set_gauge("ktrace_ok", "Fine.", f64::NAN);
        let text = m.render();
        let s = check(&text);
        assert!(!text.contains("Clash") && !text.contains("bad name"));
        assert!(value(&s, "ktrace_ok", &[]).is_nan());
        let names: &[&'static str] = &[
            "g00", "g01", "g02", "g03", "g04", "g05", "g06", "g07", "g08", "g09", "g10", "g11", "g12", "g13", "g14",
            "g15", "g16", "g17", "g18", "g19", "g20", "g21", "g22", "g23", "g24", "g25", "g26", "g27", "g28", "g29",
            "g30", "g31", "g32", "g33", "g34", "g35", "g36", "g37", "g38", "g39", "g40", "g41", "g42", "g43", "g44",
            "g45", "g46", "g47", "g48", "g49", "g50", "g51", "g52", "g53", "g54", "g55", "g56", "g57", "g58", "g59",
            "g60", "g61", "g62", "g63", "g64", "g65", "g66",
        ];
        for n in names {
            m.set_gauge(n, "Many.", 1.0);
        }
        let s = check(&m.render());
        let gauges = s.iter().filter(|x| x.name.starts_with('g')).count();
        assert_eq!(gauges, MAX_GAUGES - 1, "ktrace_ok holds one slot");
    }

    #[test]
    fn histogram_invariants() {
        let m = Metrics::new(MetricsConfig::default());
        let ns = pod("ns", "p");
        // Exactly on each bound, just above it, and beyond the last.
        for b in DNS_LATENCY_BUCKETS {
            let at = (b * 1e9).round() as u64;
            m.dns_transaction(&tx(Some(ns.clone()), 1, Some(0), Some(at)));
            m.dns_transaction(&tx(Some(ns.clone()), 1, Some(0), Some(at + 1)));
        }
        let s = check(&m.render());
        let buckets: Vec<(String, f64)> = s
            .iter()
            .filter(|x| x.name == "ktrace_dns_latency_seconds_bucket")
            .map(|x| (x.labels["le"].clone(), x.value))
            .collect();
        assert_eq!(buckets.len(), DNS_LATENCY_BUCKETS.len() + 1);
        for (i, (le, v)) in buckets.iter().enumerate() {
            // Bucket i holds its own bound and everything below: 2 per lower bound, plus 1.
            let want = if i < DNS_LATENCY_BUCKETS.len() { 2 * i + 1 } else { 2 * DNS_LATENCY_BUCKETS.len() };
            assert!((v - want as f64).abs() < 1e-9, "le={le}: {v} != {want}");
        }
        assert_eq!(buckets.last().map(|b| b.0.as_str()), Some("+Inf"));
        let count = value(&s, "ktrace_dns_latency_seconds_count", &[("namespace", "ns")]);
        assert!((count - 24.0).abs() < 1e-9);
    }

    #[test]
    fn kernel_names_are_truncated() {
        assert!(kernel_name_matches("ktrace_cgroup_egress", b"ktrace_cgroup_e"));
        assert!(kernel_name_matches("short", b"short"));
        assert!(!kernel_name_matches("short", b"shorter"));
        assert!(!kernel_name_matches("x", b""));
    }

    #[test]
    fn bpf_helpers_do_not_fail_without_privileges() {
        // Root or not, these must return quietly.
        let fd = enable_bpf_stats();
        let stats = bpf_program_stats(&["ktrace_no_such_program_name"]);
        assert!(stats.is_empty());
        drop(fd);
    }

    #[test]
    fn validator_accepts_the_format_it_should() {
        let ok = "# A comment\n\
                  # HELP x_total Things.\n\
                  # TYPE x_total counter\n\
                  x_total{a=\"1\",b=\"q\\\"\\\\\\n\",} 3 1700000000000\n\
                  x_total 0\n\
                  \n\
                  # HELP h Hist.\n\
                  # TYPE h histogram\n\
                  h_bucket{le=\"0.5\"} 1\n\
                  h_bucket{le=\"+Inf\"} 2\n\
                  h_sum -1.5e-3\n\
                  h_count 2\n\
                  # HELP g\n\
                  # TYPE g gauge\n\
                  g{x = \"y\"}\t-Inf\n";
        let s = parse_exposition(ok).expect("valid");
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].labels["b"], "q\"\\\n");
        assert!(s[6].value == f64::NEG_INFINITY);
        assert!(parse_exposition("").expect("empty is valid").is_empty());
    }

    #[test]
    fn validator_rejects_bad_expositions() {
        let head = "# HELP c C.\n# TYPE c counter\n";
        let hist = "# HELP h H.\n# TYPE h histogram\n";
        let cases: &[(&str, String)] = &[
            ("no trailing newline", format!("{head}c 1")),
            ("sample without TYPE", "# HELP c C.\nc 1\n".into()),
            ("sample without HELP", "# TYPE c counter\nc 1\n".into()),
            ("TYPE twice", format!("{head}# TYPE c counter\nc 1\n")),
            ("HELP twice", format!("{head}# HELP c again\nc 1\n")),
            ("TYPE after samples", "# HELP c C.\nc 1\n# TYPE c counter\n".into()),
            ("unknown type", "# HELP c C.\n# TYPE c countr\nc 1\n".into()),
            ("bad metric name", "# HELP 1c C.\n# TYPE 1c counter\n1c 1\n".into()),
            ("bad metric name in sample", format!("{head}c-x 1\n")),
            ("bad label name", format!("{head}c{{1a=\"x\"}} 1\n")),
            ("reserved label name", format!("{head}c{{__name__=\"x\"}} 1\n")),
            ("duplicate label", format!("{head}c{{a=\"x\",a=\"y\"}} 1\n")),
            ("duplicate series", format!("{head}c{{a=\"x\"}} 1\nc{{a=\"x\"}} 2\n")),
            ("duplicate series, label order", format!("{head}c{{a=\"x\",b=\"y\"}} 1\nc{{b=\"y\",a=\"x\"}} 2\n")),
            ("negative counter", format!("{head}c -1\n")),
            ("NaN counter", format!("{head}c NaN\n")),
            ("bad escape", format!("{head}c{{a=\"\\t\"}} 1\n")),
            ("bad HELP escape", "# HELP c C\\\"\n# TYPE c counter\nc 1\n".into()),
            ("unterminated value", format!("{head}c{{a=\"x}} 1\n")),
            ("unquoted value", format!("{head}c{{a=x}} 1\n")),
            ("missing value", format!("{head}c\n")),
            ("bad value", format!("{head}c one\n")),
            ("lower-case inf", format!("{head}c inf\n")),
            ("bad timestamp", format!("{head}c 1 1.5\n")),
            ("trailing text", format!("{head}c 1 2 3\n")),
            ("no blank before value", format!("{head}c{{a=\"x\"}}1\n")),
            ("split family", format!("{head}c{{a=\"1\"}} 1\n# HELP d D.\n# TYPE d gauge\nd 1\nc{{a=\"2\"}} 1\n")),
            ("carriage return", format!("{head}c 1\r\n")),
            ("bucket without le", format!("{hist}h_bucket 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n")),
            ("no +Inf bucket", format!("{hist}h_bucket{{le=\"1\"}} 1\nh_sum 1\nh_count 1\n")),
            (
                "not cumulative",
                format!("{hist}h_bucket{{le=\"1\"}} 2\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"),
            ),
            (
                "le not increasing",
                format!(
                    "{hist}h_bucket{{le=\"2\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"
                ),
            ),
            ("bad le", format!("{hist}h_bucket{{le=\"x\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n")),
            ("count differs", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count 3\n")),
            ("no count", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\n")),
            ("no sum", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_count 2\n")),
            ("no buckets", format!("{hist}h_sum 1\nh_count 0\n")),
            ("le on count", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count{{le=\"1\"}} 2\n")),
            (
                "negative bucket",
                format!("{hist}h_bucket{{le=\"1\"}} -1\nh_bucket{{le=\"+Inf\"}} 0\nh_sum 1\nh_count 0\n"),
            ),
            ("histogram sample without suffix", format!("{hist}h 1\n")),
        ];
        for (what, text) in cases {
            assert!(parse_exposition(text).is_err(), "accepted {what}:\n{text}");
        }
    }
}
