#![allow(
    dead_code,
    clippy::pedantic,
    unreachable_pub,
    reason = "the pre-prometheus-client registry, kept only as the reference the tests compare against"
)]
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
        if !super::valid_metric_name(name) || reserved_name(name) {
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

#[cfg(test)]
mod generate {
    use super::*;
    use crate::enrich::PodRef;
    use std::sync::Arc;
    fn pod(ns: &str, name: &str) -> PodRef {
        PodRef { namespace: Arc::from(ns), name: Arc::from(name), node: None }
    }
    fn tx(p: Option<PodRef>, q: u16, r: Option<u16>, l: Option<u64>) -> Transaction {
        super::super::tests::tx(p, q, r, l)
    }
    /// One input that touches every family, every cap and the escapes: the
    /// exposition it gives is compared with `exposition_before.prom`.
    fn contract_input() -> Metrics {
        let m = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "node-\"a\"".into() });
        let qtypes = [1, 28, 5, 33, 12, 255, 65, 64, 15, 2, 6, 16, 99, 65_000];
        let rcodes = [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), Some(9), Some(16), None];
        let pods = [("shop", "web-1"), ("shop", "web-2"), ("kube-system", "coredns-0"), ("shop", "web-3"), ("x", "y")];
        for (i, (ns, p)) in pods.iter().enumerate() {
            for (j, q) in qtypes.iter().enumerate() {
                let r = rcodes[(i + j) % rcodes.len()];
                let lat = [1_000_000_u64, 5_000_000, 5_000_001, 250_000_000, 20_000_000_000][(i + j) % 5];
                m.dns_transaction(&tx(Some(pod(ns, p)), *q, r, r.map(|_| lat)));
            }
        }
        m.dns_transaction(&tx(None, 1, Some(0), Some(3_000_000)));
        m.dns_transaction(&tx(None, 1, None, None));
        let f = |kind: &str, pod: Option<&str>, new: u64| {
            use crate::analyze::{condense::Repeated, findings::NxdomainStorm};
            if kind == "nxdomain_storm" {
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
            } else {
                let r = Repeated {
                    ts_ns: 0,
                    of_kind: kind.to_owned(),
                    cause_key: String::new(),
                    first_ts_ns: 0,
                    first_cause: String::new(),
                    last_ts_ns: 0,
                    count: new,
                    new,
                    pods: 0,
                    other_pods: 0,
                    top_pods: Vec::new(),
                    client_time_lost_ms: 0.0,
                    cause: String::new(),
                };
                Finding::Repeated(r)
            }
        };
        m.finding(&f("nxdomain_storm", Some("shop/web-1"), 1));
        m.finding(&f("nxdomain_storm", None, 1));
        m.finding(&f("upstream_timeout", Some("shop/web-2"), 4));
        m.finding(&f("search_fanout", Some("kube-system/coredns-0"), 0));
        for (i, (ns, p)) in pods.iter().enumerate() {
            for r in ["NETFILTER_DROP", "", "TCP_INVALID_SEQUENCE", "NO_SOCKET"].iter().take(i + 1) {
                m.drop_reason(r, Some((ns, p)));
            }
            for k in ["refused", "reset", "syn_timeout", "timeout"].iter().take(i + 1) {
                m.conn_failure(k, Some((ns, p)));
            }
        }
        for i in 0..40 {
            m.conn_failure(&format!("kind{i}"), None);
            m.drop_reason(&format!("REASON_{i}"), None);
        }
        for i in 0..300 {
            m.fabric_loss(&format!("n{}", i % 290), "node-b", i);
        }
        m.conn_failure("refused", Some(("ns", "p\"o\\d\nx")));
        m.set_lost_events(5, 2, 1);
        m.set_lost_events(4, 3, 1);
        m.set_program_stats(&[
            ProgramStat { name: "ktrace_cgroup_egress".into(), run_count: 10, run_time_ns: 1_500_000_000 },
            ProgramStat { name: "ktrace_cgroup_ingress".into(), run_count: 3, run_time_ns: 2_000 },
        ]);
        m.set_gauge("ktrace_history_bytes", "Bytes held in the replay history.", 1024.0);
        m.set_gauge("ktrace_subscribers", "Connected stream subscribers.", 2.0);
        m.set_gauge("ktrace_weird", "Help with \\ backslash\nand newline.", 0.5);
        m
    }

    #[test]
    #[ignore = "writes exposition_before.prom"]
    fn write_exposition_before() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/agent/metrics/exposition_before.prom");
        std::fs::write(&p, contract_input().render()).expect("write");
    }

    /// Agent CPU per metrics update, old registry against the new one,
    /// interleaved in one process (run with --release).
    #[test]
    #[ignore = "timing; run by hand with --release"]
    fn per_event_cost_side_by_side() {
        use std::{hint::black_box, time::Instant};
        let pods: Vec<PodRef> =
            (0..40).map(|i| pod(["shop", "kube-system", "web"][i % 3], &format!("pod-{i}"))).collect();
        let txs: Vec<Transaction> = (0..4096)
            .map(|i| {
                let r = [Some(0), Some(3), Some(0), None][i % 4];
                tx(
                    Some(pods[i * 7 % pods.len()].clone()),
                    [1, 28, 1, 33, 12][i % 5],
                    r,
                    r.map(|_| (i as u64 % 50) * 1_000_000),
                )
            })
            .collect();
        let drops: Vec<(&str, &str, &str)> = (0..4096)
            .map(|i| {
                (
                    ["NETFILTER_DROP", "NO_SOCKET", "TCP_INVALID_SEQUENCE"][i % 3],
                    "shop",
                    ["pod-1", "pod-4", "pod-7"][i % 3],
                )
            })
            .collect();
        let rounds = 7;
        let n = 200;
        let mut old_tx = Vec::new();
        let mut new_tx = Vec::new();
        let mut old_drop = Vec::new();
        let mut new_drop = Vec::new();
        let old = Metrics::new(MetricsConfig::default());
        let new = super::super::Metrics::new(super::super::MetricsConfig::default());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..n {
                for x in &txs {
                    old.dns_transaction(black_box(x));
                }
            }
            old_tx.push(t.elapsed().as_nanos() as f64 / (n * txs.len()) as f64);
            let t = Instant::now();
            for _ in 0..n {
                for x in &txs {
                    new.dns_transaction(black_box(x));
                }
            }
            new_tx.push(t.elapsed().as_nanos() as f64 / (n * txs.len()) as f64);
            let t = Instant::now();
            for _ in 0..n {
                for (r, ns, p) in &drops {
                    old.drop_reason(black_box(r), Some((ns, p)));
                }
            }
            old_drop.push(t.elapsed().as_nanos() as f64 / (n * drops.len()) as f64);
            let t = Instant::now();
            for _ in 0..n {
                for (r, ns, p) in &drops {
                    new.drop_reason(black_box(r), Some((ns, p)));
                }
            }
            new_drop.push(t.elapsed().as_nanos() as f64 / (n * drops.len()) as f64);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b, c, d) = (med(&mut old_tx), med(&mut new_tx), med(&mut old_drop), med(&mut new_drop));
        eprintln!("dns_transaction: old {a:.1} ns/event, new {b:.1} ns/event, new/old {:.2}", b / a);
        eprintln!("drop_reason:     old {c:.1} ns/event, new {d:.1} ns/event, new/old {:.2}", d / c);
        // Both registries counted the same.
        let (_, s0) = super::super::tests::contract(&old.render());
        let (_, s1) = super::super::tests::contract(&new.render());
        assert_eq!(s0, s1);
    }
}
