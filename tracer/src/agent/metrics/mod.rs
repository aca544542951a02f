//! Prometheus metrics of the agent, on `prometheus-client`.
//!
//! What `prometheus-client` leaves to us, and what matters on a node, is
//! that label cardinality stays bounded however many pods, drop reasons or
//! nodes the node sees: every label dimension has a cap in front of its
//! family ([`caps`]); values past it are folded into `_other` (Kubernetes
//! names are DNS labels, so `_other` never collides with a real namespace or
//! pod). Admission is first come, first kept: a series, once exported, keeps
//! counting, so counters stay monotonic.
//!
//! Family names, label names and help texts are a public contract
//! (dashboards, alerts): `exposition_before.prom` is what the hand-written
//! registry this replaced wrote for one input, and a test compares.
//!
//! Per event nothing is allocated once a series exists and no lock is shared
//! between families: the caps hand out interned label values, the label set
//! is built from those and static strings, and a series is an atomic counter
//! (a histogram series has its own small lock). The agent's DNS path goes
//! further ([`DnsSeries`]): it keeps the series' handles per client pod, so
//! a transaction is one hash lookup and an atomic add (plus the latency
//! histogram's own lock), without the families' and caps' locks.
//!
//! [`Metrics::render`] writes the text exposition format 0.0.4.

mod bpf;
mod caps;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    hash::Hash,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

pub use bpf::{ProgramStat, bpf_program_stats, enable_bpf_stats};
use caps::{Capped, FOLDED, Lv, PairCap, PodCap};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, histogram::Histogram, info::Info},
    registry::Registry,
};

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_str, rcode_str},
    event::DropRecord,
    hash::FastMap,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsRequestLabels {
    namespace: Lv,
    pod: Lv,
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: Lv,
    pod: Lv,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: Lv,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: Lv,
    namespace: Lv,
    pod: Lv,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Lv,
    namespace: Lv,
    pod: Lv,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodePairLabels {
    from_node: Lv,
    to_node: Lv,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

/// `where` is a keyword, so this label set is an array.
type WhereLabels = [(&'static str, &'static str); 1];

type Counters<S> = Family<S, Counter>;

fn latency_histogram() -> Histogram {
    Histogram::new(DNS_LATENCY_BUCKETS)
}

/// Every family; written in name order with its header even when empty.
#[derive(Debug)]
struct Families {
    agent_info: Info<[(&'static str, String); 2]>,
    program_seconds: Family<ProgramLabels, Counter<f64, AtomicU64>>,
    program_runs: Counters<ProgramLabels>,
    conn_failures: Bounded<KindLabels>,
    findings: Bounded<KindLabels>,
    dns_latency: Family<NamespaceLabels, Histogram, fn() -> Histogram>,
    dns_requests: Bounded<DnsRequestLabels>,
    dns_timeouts: Bounded<PodLabels>,
    drops: Bounded<ReasonLabels>,
    fabric_loss: Bounded<NodePairLabels>,
    lost_events: Counters<WhereLabels>,
    /// Gauges without labels set by name (few, set at scrape time).
    gauges: Mutex<BTreeMap<&'static str, (&'static str, f64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the gauges consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // (sample name for ordering, name given to the encoder, help, family);
        // the encoder appends `_total` to counters and `_info` to info.
        let fixed: [(&str, &str, &str, &dyn EncodeMetric); 11] = [
            ("ktrace_agent_info", "ktrace_agent", "Agent identity; always 1.", &self.agent_info),
            (
                "ktrace_bpf_program_run_seconds_total",
                "ktrace_bpf_program_run_seconds",
                "Time spent in each ktrace BPF program while run statistics are enabled.",
                &self.program_seconds,
            ),
            (
                "ktrace_bpf_program_runs_total",
                "ktrace_bpf_program_runs",
                "Runs of each ktrace BPF program while run statistics are enabled.",
                &self.program_runs,
            ),
            (
                "ktrace_conn_failures_total",
                "ktrace_conn_failures",
                "TCP connection failures, by kind and pod.",
                &self.conn_failures.family,
            ),
            (
                "ktrace_dns_findings_total",
                "ktrace_dns_findings",
                "DNS findings (search_fanout, upstream_timeout, nxdomain_storm), by client pod.",
                &self.findings.family,
            ),
            (
                "ktrace_dns_latency_seconds",
                "ktrace_dns_latency_seconds",
                "Query-to-answer time of answered DNS queries, by client namespace.",
                &self.dns_latency,
            ),
            (
                "ktrace_dns_requests_total",
                "ktrace_dns_requests",
                "DNS queries completed (answered or timed out), by client pod, query type and response code.",
                &self.dns_requests.family,
            ),
            (
                "ktrace_dns_timeouts_total",
                "ktrace_dns_timeouts",
                "DNS queries that got no answer within the pairing timeout, by client pod.",
                &self.dns_timeouts.family,
            ),
            (
                "ktrace_drops_total",
                "ktrace_drops",
                "Packets the kernel dropped, by drop reason and pod.",
                &self.drops.family,
            ),
            (
                "ktrace_fabric_loss_packets_total",
                "ktrace_fabric_loss_packets",
                "Packets sent from one node that never arrived at the other.",
                &self.fabric_loss.family,
            ),
            (
                "ktrace_lost_events_total",
                "ktrace_lost_events",
                "Events lost before reaching a consumer: kernel ring buffer full, evicted from the agent history, or dropped for a slow subscriber.",
                &self.lost_events,
            ),
        ];
        let gauges = lock(&self.gauges);
        let mut fixed = fixed.iter().peekable();
        let mut gauges = gauges.iter().peekable();
        loop {
            let take_fixed = match (fixed.peek(), gauges.peek()) {
                (None, None) => return Ok(()),
                (Some(f), Some((g, _))) => f.0 < **g,
                (f, _) => f.is_some(),
            };
            if take_fixed {
                let (_, name, help, metric) = fixed.next().expect("peeked");
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            } else {
                let (name, (help, v)) = gauges.next().expect("peeked");
                ConstGauge::new(*v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
    }
}

/// The agent's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    dns_request_pods: PodCap,
    dns_timeout_pods: PodCap,
    dns_latency_namespaces: Capped,
    finding_pods: PodCap,
    drop_pods: PodCap,
    drop_reasons: Capped,
    conn_pods: PodCap,
    conn_kinds: Capped,
    fabric_pairs: PairCap,
}

/// `namespace/name` as the findings carry it.
fn split_pod(s: &str) -> (&str, &str) {
    s.split_once('/').unwrap_or(("", s))
}

/// A counter family with a bound on its series: past [`MAX_SERIES`], new
/// label sets count as the all-`_other` one. The per-dimension caps already
/// bound the product; this is the backstop.
#[derive(Debug)]
struct Bounded<S> {
    family: Counters<S>,
    /// Series created; held while creating one.
    created: Mutex<usize>,
}

impl<S: Clone + Hash + Eq> Bounded<S> {
    fn new() -> Self {
        Self { family: Family::default(), created: Mutex::new(0) }
    }

    fn add(&self, labels: S, folded: impl FnOnce() -> S, by: u64) {
        if let Some(c) = self.family.get(&labels) {
            c.inc_by(by);
            return;
        }
        self.handle(labels, folded).inc_by(by);
    }

    /// The series of `labels` (created if the bound allows, else the folded
    /// one), as a handle that counts without the family's lock.
    fn handle(&self, labels: S, folded: impl FnOnce() -> S) -> Counter {
        if let Some(c) = self.family.get(&labels) {
            return c.clone();
        }
        let mut n = lock(&self.created);
        let labels = if *n >= MAX_SERIES { folded() } else { labels };
        if self.family.get(&labels).is_none() {
            *n += 1;
        }
        self.family.get_or_create(&labels).clone()
    }
}

/// Query type and rcode label values by index, as [`DnsSeries`] keeps them.
const QT_SLOTS: usize = QTYPES.len() + 1;
const RC_SLOTS: usize = RCODES.len() + 2;

/// A client pod by namespace and name (None: not attributed to a pod).
type PodKey = Option<(Arc<str>, Arc<str>)>;

/// The DNS series of one client pod (or of no pod), resolved on first use.
#[derive(Default)]
struct PodSeries {
    requests: [[Option<Counter>; RC_SLOTS]; QT_SLOTS],
    timeouts: Option<Counter>,
    latency: Option<Histogram>,
}

/// Handles of the DNS series, kept by the one thread that feeds
/// transactions ([`Metrics::dns_transaction_cached`]): per transaction one
/// hash lookup by client pod and an atomic add, without the families' and
/// caps' locks and without building label sets. A series' labels never
/// change once admitted (caps are first come, first kept), so a handle
/// stays right; the cache is emptied past [`DnsSeries::MAX_PODS`] pods.
#[derive(Default)]
pub struct DnsSeries {
    by_pod: FastMap<PodKey, Box<PodSeries>>,
}

impl DnsSeries {
    /// Most client pods with cached handles.
    pub const MAX_PODS: usize = 4096;
}

impl std::fmt::Debug for DnsSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSeries").field("pods", &self.by_pod.len()).finish()
    }
}

/// Handles of the drop and connection-failure series, kept by the one
/// thread that feeds records ([`Metrics::drop_reason_cached`],
/// [`Metrics::conn_failure_cached`]), like [`DnsSeries`]: per event one hash
/// lookup by (reason code or failure kind, pod) and an atomic add, without
/// the caps' and families' locks and without building label sets.
#[derive(Default)]
pub struct EventSeries {
    drops: FastMap<(u32, PodKey), Counter>,
    conn: FastMap<(&'static str, PodKey), Counter>,
}

impl EventSeries {
    /// Most series with cached handles, per kind.
    pub const MAX: usize = 4096;
}

impl std::fmt::Debug for EventSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSeries").field("drops", &self.drops.len()).field("conn", &self.conn.len()).finish()
    }
}

/// A cached handle of `key`, made by `make` on first use; the cache starts
/// afresh past [`EventSeries::MAX`] entries.
fn cached<K: Hash + Eq>(cache: &mut FastMap<K, Counter>, key: K, make: impl FnOnce() -> Counter) -> &Counter {
    if cache.len() >= EventSeries::MAX && !cache.contains_key(&key) {
        cache.clear();
    }
    cache.entry(key).or_insert_with(make)
}

impl Metrics {
    /// Empty registry.
    #[must_use]
    pub fn new(cfg: MetricsConfig) -> Self {
        let MetricsConfig { top_pods, max_namespaces, node } = cfg;
        let pods = || PodCap::new(top_pods, max_namespaces);
        let families = Arc::new(Families {
            agent_info: Info::new([("node", node), ("version", env!("CARGO_PKG_VERSION").to_owned())]),
            program_seconds: Family::default(),
            program_runs: Family::default(),
            conn_failures: Bounded::new(),
            findings: Bounded::new(),
            dns_latency: Family::new_with_constructor(latency_histogram),
            dns_requests: Bounded::new(),
            dns_timeouts: Bounded::new(),
            drops: Bounded::new(),
            fabric_loss: Bounded::new(),
            lost_events: Family::default(),
            gauges: Mutex::new(BTreeMap::new()),
        });
        for w in ["kernel", "history", "subscriber"] {
            let _created = families.lost_events.get_or_create(&[("where", w)]);
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(&families)));
        Self {
            registry,
            families,
            dns_request_pods: pods(),
            dns_timeout_pods: pods(),
            dns_latency_namespaces: Capped::new(max_namespaces),
            finding_pods: pods(),
            drop_pods: pods(),
            drop_reasons: Capped::new(MAX_REASONS),
            conn_pods: pods(),
            conn_kinds: Capped::new(MAX_CONN_KINDS),
            fabric_pairs: PairCap::new(MAX_NODE_PAIRS),
        }
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
        let qtype = qtype_str(tx.qtype).filter(|q| QTYPES.contains(q)).unwrap_or(OTHER);
        let rcode = match tx.rcode {
            _ if tx.timed_out => RCODE_TIMEOUT,
            Some(r) => rcode_str(r).filter(|r| RCODES.contains(r)).unwrap_or(OTHER),
            None => RCODE_TIMEOUT,
        };
        let f = &*self.families;
        let [namespace, pod_lv] = self.dns_request_pods.fold(pod);
        let folded = || DnsRequestLabels { namespace: FOLDED, pod: FOLDED, qtype: OTHER, rcode: OTHER };
        f.dns_requests.add(DnsRequestLabels { namespace, pod: pod_lv, qtype, rcode }, folded, 1);
        if tx.timed_out || tx.rcode.is_none() {
            let [namespace, pod] = self.dns_timeout_pods.fold(pod);
            f.dns_timeouts.add(PodLabels { namespace, pod }, || PodLabels { namespace: FOLDED, pod: FOLDED }, 1);
        } else if let Some(ns_lat) = tx.latency_ns {
            let namespace = self.dns_latency_namespaces.admit(pod.map_or("", |p| p.0));
            f.dns_latency.get_or_create(&NamespaceLabels { namespace }).observe(ns_lat as f64 / 1e9);
        }
    }

    /// [`Metrics::dns_transaction`] through `cache`: the same series and
    /// counts, without locks or label building once a pod's series exist.
    pub fn dns_transaction_cached(&self, cache: &mut DnsSeries, tx: &Transaction) {
        if tx.observed == crate::analyze::Observed::Server
            && let (Some(here), Some(there)) =
                (tx.node.as_deref(), tx.client_pod.as_ref().and_then(|p| p.node.as_deref()))
            && here != there
        {
            return;
        }
        let qi = qtype_str(tx.qtype).and_then(|q| QTYPES.iter().position(|k| *k == q)).unwrap_or(QTYPES.len());
        let timed_out = tx.timed_out || tx.rcode.is_none();
        let ri = match tx.rcode {
            _ if timed_out => RCODES.len() + 1,
            Some(r) => rcode_str(r).and_then(|r| RCODES.iter().position(|k| *k == r)).unwrap_or(RCODES.len()),
            None => RCODES.len() + 1,
        };
        let key = tx.client_pod.as_ref().map(|p| (Arc::clone(&p.namespace), Arc::clone(&p.name)));
        if cache.by_pod.len() >= DnsSeries::MAX_PODS && !cache.by_pod.contains_key(&key) {
            cache.by_pod.clear();
        }
        let series = cache.by_pod.entry(key).or_default();
        let pod = tx.client_pod.as_ref().map(|p| (&*p.namespace, &*p.name));
        let f = &*self.families;
        series.requests[qi][ri]
            .get_or_insert_with(|| {
                let qtype = QTYPES.get(qi).copied().unwrap_or(OTHER);
                let rcode =
                    if ri == RCODES.len() + 1 { RCODE_TIMEOUT } else { RCODES.get(ri).copied().unwrap_or(OTHER) };
                let [namespace, pod] = self.dns_request_pods.fold(pod);
                let folded = || DnsRequestLabels { namespace: FOLDED, pod: FOLDED, qtype: OTHER, rcode: OTHER };
                f.dns_requests.handle(DnsRequestLabels { namespace, pod, qtype, rcode }, folded)
            })
            .inc();
        if timed_out {
            series
                .timeouts
                .get_or_insert_with(|| {
                    let [namespace, pod] = self.dns_timeout_pods.fold(pod);
                    f.dns_timeouts.handle(PodLabels { namespace, pod }, || PodLabels { namespace: FOLDED, pod: FOLDED })
                })
                .inc();
        } else if let Some(ns_lat) = tx.latency_ns {
            series
                .latency
                .get_or_insert_with(|| {
                    let namespace = self.dns_latency_namespaces.admit(pod.map_or("", |p| p.0));
                    f.dns_latency.get_or_create(&NamespaceLabels { namespace }).clone()
                })
                .observe(ns_lat as f64 / 1e9);
        }
    }

    /// Counts one finding.
    pub fn finding(&self, f: &Finding) {
        // Condensed records stand for many findings: the counter counts those.
        let (kind, n) = match f {
            Finding::SearchFanout(_) => (Lv::Static("search_fanout"), 1),
            Finding::UpstreamTimeout(_) => (Lv::Static("upstream_timeout"), 1),
            Finding::NxdomainStorm(_) => (Lv::Static("nxdomain_storm"), 1),
            Finding::SearchFanoutSummary(s) => (Lv::Static("search_fanout"), s.new_lookups),
            Finding::Repeated(r) => (known_finding_kind(&r.of_kind), r.new),
        };
        if n == 0 {
            return;
        }
        let [namespace, pod] = self.finding_pods.fold(f.pod().map(split_pod));
        let folded = || KindLabels { kind: FOLDED, namespace: FOLDED, pod: FOLDED };
        self.families.findings.add(KindLabels { kind, namespace, pod }, folded, n);
    }

    /// Counts a kernel drop record's drops (`count`: repeats folded in the kernel), by its reason name.
    pub fn drop_event(&self, d: &DropRecord, pod: Option<(&str, &str)>) {
        self.drop_reasons_n(&d.reason_name, pod, u64::from(d.count));
    }

    /// Counts one packet drop with the given reason (`pod`: namespace and name).
    pub fn drop_reason(&self, reason: &str, pod: Option<(&str, &str)>) {
        self.drop_reasons_n(reason, pod, 1);
    }

    fn drop_reasons_n(&self, reason: &str, pod: Option<(&str, &str)>, n: u64) {
        let reason = self.drop_reasons.admit(if reason.is_empty() { "unknown" } else { reason });
        let [namespace, pod] = self.drop_pods.fold(pod);
        let folded = || ReasonLabels { reason: FOLDED, namespace: FOLDED, pod: FOLDED };
        self.families.drops.add(ReasonLabels { reason, namespace, pod }, folded, n);
    }

    /// [`Metrics::drop_reason`] through `cache`, keyed by the drop's raw
    /// reason code (`reason_name` is its name): the same series and counts
    /// (`n` drops: a record's `count`).
    pub fn drop_reason_cached(
        &self,
        cache: &mut EventSeries,
        reason: u32,
        reason_name: &str,
        pod: Option<&crate::enrich::PodRef>,
        n: u64,
    ) {
        let key = pod.map(|p| (Arc::clone(&p.namespace), Arc::clone(&p.name)));
        cached(&mut cache.drops, (reason, key), || {
            let reason = self.drop_reasons.admit(if reason_name.is_empty() { "unknown" } else { reason_name });
            let [namespace, pod] = self.drop_pods.fold(pod.map(|p| (&*p.namespace, &*p.name)));
            let folded = || ReasonLabels { reason: FOLDED, namespace: FOLDED, pod: FOLDED };
            self.families.drops.handle(ReasonLabels { reason, namespace, pod }, folded)
        })
        .inc_by(n);
    }

    /// [`Metrics::conn_failure`] through `cache`: the same series and counts.
    pub fn conn_failure_cached(
        &self,
        cache: &mut EventSeries,
        kind: &'static str,
        pod: Option<&crate::enrich::PodRef>,
    ) {
        let key = pod.map(|p| (Arc::clone(&p.namespace), Arc::clone(&p.name)));
        cached(&mut cache.conn, (kind, key), || {
            let kind = self.conn_kinds.admit(kind);
            let [namespace, pod] = self.conn_pods.fold(pod.map(|p| (&*p.namespace, &*p.name)));
            let folded = || KindLabels { kind: FOLDED, namespace: FOLDED, pod: FOLDED };
            self.families.conn_failures.handle(KindLabels { kind, namespace, pod }, folded)
        })
        .inc();
    }

    /// Counts one TCP connection failure of `kind` (e.g. `refused`, `syn_timeout`, `reset`).
    pub fn conn_failure(&self, kind: &str, pod: Option<(&str, &str)>) {
        let kind = self.conn_kinds.admit(kind);
        let [namespace, pod] = self.conn_pods.fold(pod);
        let folded = || KindLabels { kind: FOLDED, namespace: FOLDED, pod: FOLDED };
        self.families.conn_failures.add(KindLabels { kind, namespace, pod }, folded, 1);
    }

    /// Adds `packets` lost on the way from one node to another.
    pub fn fabric_loss(&self, from_node: &str, to_node: &str, packets: u64) {
        // Pairs are capped as a unit.
        let [from_node, to_node] = self.fabric_pairs.admit(from_node, to_node).unwrap_or([FOLDED, FOLDED]);
        let folded = || NodePairLabels { from_node: FOLDED, to_node: FOLDED };
        self.families.fabric_loss.add(NodePairLabels { from_node, to_node }, folded, packets);
    }

    /// Sets the running totals of lost events (never decreases them).
    pub fn set_lost_events(&self, kernel: u64, history_evicted: u64, subscriber_dropped: u64) {
        for (w, v) in [("kernel", kernel), ("history", history_evicted), ("subscriber", subscriber_dropped)] {
            self.families.lost_events.get_or_create(&[("where", w)]).inner().fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Replaces the BPF program run statistics (at most 64 programs, by name).
    pub fn set_program_stats(&self, stats: &[ProgramStat]) {
        let f = &*self.families;
        f.program_seconds.clear();
        f.program_runs.clear();
        let mut programs = 0;
        for s in stats {
            let key = ProgramLabels { program: s.name.clone() };
            if f.program_runs.get(&key).is_none() {
                if programs >= MAX_PROGRAMS {
                    continue;
                }
                programs += 1;
            }
            f.program_seconds.get_or_create(&key).inc_by(s.run_time_ns as f64 / 1e9);
            f.program_runs.get_or_create(&key).inc_by(s.run_count);
        }
    }

    /// Sets a gauge without labels (e.g. `ktrace_history_bytes`). Names must
    /// be valid metric names not used by another family; at most 64 gauges.
    pub fn set_gauge(&self, name: &'static str, help: &'static str, value: f64) {
        if !valid_metric_name(name) || reserved_name(name) {
            log::debug!("metrics: ignoring gauge with invalid or taken name {name:?}");
            return;
        }
        let mut g = lock(&self.families.gauges);
        if g.len() >= MAX_GAUGES && !g.contains_key(name) {
            return;
        }
        g.insert(name, (help, value));
    }

    /// The metrics in the text exposition format 0.0.4, families sorted by name.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String fails only if an encoder refuses a value.
            log::warn!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// The three finding kinds as static label values (anything else is kept as given).
fn known_finding_kind(kind: &str) -> Lv {
    match kind {
        "search_fanout" => Lv::Static("search_fanout"),
        "upstream_timeout" => Lv::Static("upstream_timeout"),
        "nxdomain_storm" => Lv::Static("nxdomain_storm"),
        other => Lv::Interned(Arc::from(other)),
    }
}

/// Whether `name` is a fixed family's name or one of its sample names.
fn reserved_name(name: &str) -> bool {
    FAMILIES
        .iter()
        .any(|f| name.strip_prefix(f).is_some_and(|rest| ["", "_bucket", "_sum", "_count", "_created"].contains(&rest)))
}

fn valid_metric_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
