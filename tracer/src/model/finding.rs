//! Findings: what ktrace explains about DNS, as typed values. Detectors
//! build them, the condensing stage folds them, sinks render them.

use std::sync::Arc;

use serde::Serialize;

use super::Answer;
use crate::event::{Endpoint, Process};

/// Something ktrace can explain.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A name was resolved by walking the search list.
    SearchFanout(SearchFanout),
    /// A resolver forwarded a client's query to an upstream that did not answer.
    UpstreamTimeout(UpstreamTimeout),
    /// A pod produces NXDOMAINs for search-suffixed names at a high rate.
    NxdomainStorm(NxdomainStorm),
    /// Fast search-list walks, counted per pod and name (see [`crate::analyze::condense`]).
    SearchFanoutSummary(FanoutSummary),
    /// More findings of a cause already reported in full (see [`crate::analyze::condense`]).
    Repeated(Repeated),
}

impl Finding {
    /// The client pod the finding is about, if known (`namespace/name`).
    #[must_use]
    pub fn pod(&self) -> Option<&str> {
        match self {
            Self::SearchFanout(f) => f.pod.as_deref(),
            Self::UpstreamTimeout(f) => f.client.pod.as_deref(),
            Self::NxdomainStorm(f) => f.pod.as_deref(),
            Self::SearchFanoutSummary(_) | Self::Repeated(_) => None,
        }
    }

    /// The `kind` field of its JSON record.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SearchFanout(_) => "search_fanout",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::NxdomainStorm(_) => "nxdomain_storm",
            Self::SearchFanoutSummary(_) => "search_fanout_summary",
            Self::Repeated(_) => "repeated",
        }
    }

    /// Monotonic ns it is dated at.
    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::SearchFanout(f) => f.ts_ns,
            Self::UpstreamTimeout(f) => f.ts_ns,
            Self::NxdomainStorm(f) => f.ts_ns,
            Self::SearchFanoutSummary(f) => f.ts_ns,
            Self::Repeated(f) => f.ts_ns,
        }
    }

    /// The explanation in one sentence.
    #[must_use]
    pub fn cause(&self) -> &str {
        match self {
            Self::SearchFanout(f) => &f.cause,
            Self::UpstreamTimeout(f) => &f.cause,
            Self::NxdomainStorm(f) => &f.cause,
            Self::SearchFanoutSummary(f) => &f.cause,
            Self::Repeated(f) => &f.cause,
        }
    }

    /// What to do about it (none for folded repeats).
    #[must_use]
    pub fn advice(&self) -> &[String] {
        match self {
            Self::SearchFanout(f) => &f.advice,
            Self::UpstreamTimeout(f) => &f.advice,
            Self::NxdomainStorm(f) => &f.advice,
            Self::SearchFanoutSummary(f) => &f.advice,
            Self::Repeated(_) => &[],
        }
    }

    /// Client time it says was lost, in ms: a slow walk's total (or the
    /// part before the answer), an upstream wait, a cause's repeats.
    #[must_use]
    pub fn lost_ms(&self) -> f64 {
        match self {
            Self::SearchFanout(f) if f.answered_by.is_none() => f.total_ms,
            Self::SearchFanout(f) => f.wasted_ms,
            Self::UpstreamTimeout(f) => f.waited_ms,
            Self::Repeated(f) => f.client_time_lost_ms,
            Self::NxdomainStorm(_) | Self::SearchFanoutSummary(_) => 0.0,
        }
    }

    /// Every pod the finding names (`namespace/name`, or a client address
    /// where the pod is unknown): the client, the resolver, the pods of a
    /// summary or of folded repeats. Filters select findings by these.
    #[must_use]
    pub fn pods(&self) -> Vec<&str> {
        match self {
            Self::SearchFanout(f) => f.pod.as_deref().into_iter().collect(),
            Self::UpstreamTimeout(f) => f.resolver.pod.as_deref().into_iter().chain(f.client.pod.as_deref()).collect(),
            Self::NxdomainStorm(f) => f.pod.as_deref().into_iter().collect(),
            Self::SearchFanoutSummary(f) => f.top.iter().map(|g| g.pod.as_str()).collect(),
            Self::Repeated(f) => f.top_pods.iter().map(|p| p.pod.as_str()).collect(),
        }
    }

    /// One line in plain words, for the table output.
    #[must_use]
    pub fn headline(&self) -> String {
        match self {
            Self::SearchFanout(f) => format!(
                "search_fanout {} ({}): {}",
                f.pod.as_deref().unwrap_or(&f.client.ip.to_string()),
                f.process.as_ref().map_or_else(|| "?".to_owned(), |p| format!("{} {}", p.comm, p.pid)),
                f.cause
            ),
            Self::UpstreamTimeout(f) => format!(
                "upstream_timeout: resolver {} forwarded {} to {} {} time(s) without an answer; clients waited {:.1} s",
                f.resolver.pod.as_deref().unwrap_or(&f.resolver.address),
                f.qname,
                f.upstream,
                f.attempts,
                f.waited_ms / 1000.0
            ),
            Self::NxdomainStorm(f) => format!(
                "nxdomain_storm {}: {} NXDOMAIN in {:.0} s ({:.1}/s)",
                f.pod.as_deref().unwrap_or(&f.client),
                f.nxdomain,
                f.window_ms / 1000.0,
                f.rate_per_s
            ),
            Self::SearchFanoutSummary(f) => format!("search_fanout_summary: {}", f.cause),
            Self::Repeated(f) => format!("repeated {}: {}", f.of_kind, f.cause),
        }
    }
}

/// One query of a search-list walk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    /// Name asked.
    pub qname: String,
    /// Type asked (`A`, `AAAA`).
    pub qtype: String,
    /// Response code name, None when unanswered.
    pub rcode: Option<String>,
    /// Query to answer, None when unanswered.
    pub latency_ms: Option<f64>,
    /// No answer before the pairing timeout.
    pub timed_out: bool,
    /// Start relative to the first attempt of the walk.
    pub start_ms: f64,
    /// Same-id retransmits.
    pub retransmits: u32,
}

/// A resolver and the upstream it forwarded a name to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardedUpstream {
    /// The name forwarded.
    pub qname: String,
    /// The resolver's address.
    pub resolver: String,
    /// The upstream's address.
    pub upstream: String,
}

/// `search_fanout`: a name resolved by walking the search list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchFanout {
    /// Monotonic ns of the first attempt.
    pub ts_ns: u64,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
    /// Client pod (`namespace/name`).
    pub pod: Option<String>,
    /// Client process.
    pub process: Option<Process>,
    /// Client socket of the first attempt (the port changes per query).
    pub client: Endpoint,
    /// Resolver queried.
    pub server: Endpoint,
    /// The name the application asked for.
    pub base_name: String,
    /// Every query of the walk, in the order sent.
    pub attempts: Vec<Attempt>,
    /// The name that finally answered (None when the walk was exhausted).
    pub answered_by: Option<String>,
    /// The final answer's records.
    pub answers: Vec<Answer>,
    /// First query to final answer.
    pub total_ms: f64,
    /// Time spent before the successful candidate (the failed suffixes).
    pub wasted_ms: f64,
    /// `options ndots` (None when the resolv.conf was not seen).
    pub ndots: Option<u8>,
    /// Search list (observed, or inferred from the attempts).
    pub search: Vec<String>,
    /// Nameservers from the resolv.conf.
    pub nameservers: Vec<String>,
    /// Options from the resolv.conf.
    pub options: Vec<String>,
    /// `observed` (resolv.conf read) or `inferred` (from the attempts).
    pub resolv_conf_source: &'static str,
    /// Where the resolv.conf was read from.
    pub resolv_conf_path: Option<String>,
    /// Why it could not be read.
    pub resolv_conf_error: Option<String>,
    /// Suffixes whose attempts timed out.
    pub timed_out_suffixes: Vec<String>,
    /// Timed-out names that a resolver forwarded to an upstream.
    pub forwarded_upstream: Vec<ForwardedUpstream>,
    /// The explanation in one sentence.
    pub cause: String,
    /// What to do about it.
    pub advice: Vec<String>,
}

/// Who: pod, process, address.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Party {
    /// Pod (`namespace/name`).
    pub pod: Option<String>,
    /// Process.
    pub process: Option<Process>,
    /// Address (`ip:port`).
    pub address: String,
}

/// `upstream_timeout`: a resolver forwarded a query to an upstream that did not answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpstreamTimeout {
    /// Monotonic ns of the first forwarded attempt.
    pub ts_ns: u64,
    /// Node that observed it.
    pub node: Option<Arc<str>>,
    /// The resolver that forwarded.
    pub resolver: Party,
    /// The upstream's address.
    pub upstream: String,
    /// Name forwarded (lower case).
    pub qname: String,
    /// Query types forwarded.
    pub qtypes: Vec<String>,
    /// Unanswered (or SERVFAIL) upstream queries, retransmits included.
    pub attempts: u32,
    /// Of which answered SERVFAIL.
    pub servfail: u32,
    /// Time clients spent waiting on these queries (union of their waits).
    pub waited_ms: f64,
    /// The first client waiting.
    pub client: Party,
    /// Distinct client queries that waited.
    pub client_queries: u32,
    /// The explanation in one sentence.
    pub cause: String,
    /// What to do about it.
    pub advice: Vec<String>,
}

/// A name and how often it failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NameCount {
    /// Name (lower case).
    pub qname: String,
    /// NXDOMAIN answers in the window.
    pub count: u32,
}

/// `nxdomain_storm`: many NXDOMAINs for search-suffixed names from one client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NxdomainStorm {
    /// Monotonic ns of the window's end.
    pub ts_ns: u64,
    /// Client pod.
    pub pod: Option<String>,
    /// Client address (or pod) used as the key.
    pub client: String,
    /// NXDOMAIN answers in the window.
    pub nxdomain: u32,
    /// Window length.
    pub window_ms: f64,
    /// NXDOMAIN per second.
    pub rate_per_s: f64,
    /// Most frequent names.
    pub top_names: Vec<NameCount>,
    /// The explanation in one sentence.
    pub cause: String,
    /// What to do about it.
    pub advice: Vec<String>,
}

/// One (pod, base name) row of a [`FanoutSummary`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FanoutGroup {
    /// Client pod (`namespace/name`), or the client address when unknown.
    pub pod: String,
    /// Client process name (of the latest walk).
    pub comm: Option<String>,
    /// The name the application asked for.
    pub base_name: String,
    /// Resolver asked (`ip:port`).
    pub server: String,
    /// Walks counted.
    pub lookups: u64,
    /// Queries for names that failed before the answer, per lookup.
    pub extra_queries_per_lookup: f64,
    /// Share of the resolver's queries (in the run so far) these extra queries are.
    pub share_of_resolver_queries: f64,
    /// Time spent on the failed suffixes per walk: median.
    pub wasted_p50_ms: f64,
    /// …and 99th percentile.
    pub wasted_p99_ms: f64,
    /// Sum of the wasted time over every walk.
    pub wasted_total_ms: f64,
}

/// `search_fanout_summary`: fast search-list walks, counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FanoutSummary {
    /// Monotonic ns of the update (end of the period).
    pub ts_ns: u64,
    /// First walk counted.
    pub first_ts_ns: u64,
    /// Walks counted since the run began.
    pub lookups: u64,
    /// Walks counted since the previous update.
    pub new_lookups: u64,
    /// Distinct (pod, base name) groups currently tracked.
    pub groups: u64,
    /// Distinct client pods (or addresses) among the tracked groups.
    pub pods: u64,
    /// Queries for failed names, per walk.
    pub extra_queries_per_lookup: f64,
    /// Those extra queries as a share of every query the resolvers involved received.
    pub share_of_resolver_queries: f64,
    /// Wasted time per walk: median.
    pub wasted_p50_ms: f64,
    /// …and 99th percentile.
    pub wasted_p99_ms: f64,
    /// Sum of the wasted time over every walk.
    pub wasted_total_ms: f64,
    /// The `--slow` threshold below which walks are counted here.
    pub slow_ms: f64,
    /// Groups with the most wasted time, most first.
    pub top: Vec<FanoutGroup>,
    /// Groups forgotten to stay bounded (their walks stay in the totals).
    pub groups_evicted: u64,
    /// The explanation in one sentence.
    pub cause: String,
    /// What to do about it (the same for every walk).
    pub advice: Vec<String>,
}

/// A pod and how often a cause hit it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodCount {
    /// Pod (`namespace/name`), or the client address when unknown.
    pub pod: String,
    /// Findings of this cause for that pod.
    pub count: u64,
}

/// `repeated`: more findings of a cause already reported in full.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Repeated {
    /// Monotonic ns of the update.
    pub ts_ns: u64,
    /// Kind of the folded findings (`search_fanout`, `upstream_timeout`, `nxdomain_storm`).
    pub of_kind: String,
    /// What the folded findings share (resolver, failing suffix or name, upstream).
    pub cause_key: String,
    /// `ts_ns` of the finding reported in full.
    pub first_ts_ns: u64,
    /// Its `cause`.
    pub first_cause: String,
    /// Newest folded finding.
    pub last_ts_ns: u64,
    /// Findings of this cause in the run, the first one included.
    pub count: u64,
    /// Of which since the previous update.
    pub new: u64,
    /// Distinct pods hit (pods beyond the per-cause bound are counted once each in `other_pods`).
    pub pods: u64,
    /// Findings of pods beyond the per-cause bound.
    pub other_pods: u64,
    /// Pods hit most, most first.
    pub top_pods: Vec<PodCount>,
    /// Client time lost over every finding of this cause (walk time or wait).
    pub client_time_lost_ms: f64,
    /// The explanation in one sentence.
    pub cause: String,
}

/// One finding of each kind, with the optional parts present and absent, for tests.
#[cfg(test)]
pub(crate) mod samples {
    use std::sync::Arc;

    use super::*;

    fn process() -> Process {
        Process { pid: 4242, tid: 4243, comm: Arc::from("getent"), thread: Arc::from("getent") }
    }

    fn fanout(pod: Option<&str>, v6: bool, answered: bool) -> Finding {
        let ip = if v6 { "fd00::5" } else { "10.0.1.5" };
        Finding::SearchFanout(SearchFanout {
            ts_ns: 7,
            node: Some(Arc::from("node-a")),
            pod: pod.map(str::to_owned),
            process: pod.map(|_| process()),
            client: Endpoint { ip: ip.parse().unwrap(), port: 40_000 },
            server: Endpoint { ip: "10.0.2.53".parse().unwrap(), port: 53 },
            base_name: "backend.critical-app".into(),
            attempts: vec![
                Attempt {
                    qname: "backend.critical-app.localdomain".into(),
                    qtype: "AAAA".into(),
                    rcode: None,
                    latency_ms: None,
                    timed_out: true,
                    start_ms: 0.0,
                    retransmits: 1,
                },
                Attempt {
                    qname: "backend.critical-app.svc.cluster.local".into(),
                    qtype: "A".into(),
                    rcode: Some("NOERROR".into()),
                    latency_ms: Some(1.25),
                    timed_out: false,
                    start_ms: 5000.0,
                    retransmits: 0,
                },
            ],
            answered_by: answered.then(|| "backend.critical-app.svc.cluster.local".into()),
            answers: vec![Answer { name: "x".into(), rtype: crate::model::RType(1), ttl: 5, data: "10.0.0.1".into() }],
            total_ms: 5001.0,
            wasted_ms: 5000.25,
            ndots: answered.then_some(5),
            search: if answered { vec!["svc.cluster.local".into(), "localdomain".into()] } else { Vec::new() },
            nameservers: Vec::new(),
            options: vec!["ndots:5".into()],
            resolv_conf_source: "observed",
            resolv_conf_path: None,
            resolv_conf_error: None,
            timed_out_suffixes: vec!["localdomain".into()],
            forwarded_upstream: vec![ForwardedUpstream {
                qname: "a".into(),
                resolver: "10.0.2.53:53".into(),
                upstream: "10.0.9.9:53".into(),
            }],
            cause: "walked the search list".into(),
            advice: vec!["Use the FQDN.".into(), "Lower ndots:\n  spec:\n    dnsConfig: {}".into()],
        })
    }

    fn party(pod: Option<&str>, process: Option<Process>) -> Party {
        Party { pod: pod.map(str::to_owned), process, address: "10.0.2.53:53".into() }
    }

    /// Every kind, several shapes.
    pub(crate) fn findings() -> Vec<Finding> {
        vec![
            fanout(Some("critical-app/client"), false, true),
            fanout(None, true, false),
            Finding::UpstreamTimeout(UpstreamTimeout {
                ts_ns: 9,
                node: None,
                resolver: party(Some("kube-system/kube-dns"), Some(process())),
                upstream: "10.0.9.9:53".into(),
                qname: "backend.critical-app.localdomain".into(),
                qtypes: vec!["A".into()],
                attempts: 3,
                servfail: 1,
                waited_ms: 10_000.0,
                client: party(None, None),
                client_queries: 2,
                cause: "upstream silent".into(),
                advice: vec!["Fix the upstream.".into()],
            }),
            Finding::UpstreamTimeout(UpstreamTimeout {
                ts_ns: 9,
                node: None,
                resolver: party(None, Some(process())),
                upstream: "10.0.9.9:53".into(),
                qname: "x".into(),
                qtypes: Vec::new(),
                attempts: 1,
                servfail: 0,
                waited_ms: 0.5,
                client: party(Some("a/b"), None),
                client_queries: 1,
                cause: "c".into(),
                advice: Vec::new(),
            }),
            Finding::NxdomainStorm(NxdomainStorm {
                ts_ns: 11,
                pod: Some("team/app".into()),
                client: "10.0.1.7".into(),
                nxdomain: 400,
                window_ms: 10_000.0,
                rate_per_s: 40.0,
                top_names: vec![
                    NameCount { qname: "a.b".into(), count: 300 },
                    NameCount { qname: "c".into(), count: 100 },
                ],
                cause: "storm".into(),
                advice: vec!["Cache.".into()],
            }),
            Finding::SearchFanoutSummary(FanoutSummary {
                ts_ns: 12,
                first_ts_ns: 1,
                lookups: 40,
                new_lookups: 4,
                groups: 3,
                pods: 2,
                extra_queries_per_lookup: 2.5,
                share_of_resolver_queries: 0.125,
                wasted_p50_ms: 1.5,
                wasted_p99_ms: 9.75,
                wasted_total_ms: 60.0,
                slow_ms: 100.0,
                top: vec![FanoutGroup {
                    pod: "team/app".into(),
                    comm: Some("curl".into()),
                    base_name: "api".into(),
                    server: "10.0.2.53:53".into(),
                    lookups: 30,
                    extra_queries_per_lookup: 3.0,
                    share_of_resolver_queries: 0.1,
                    wasted_p50_ms: 1.0,
                    wasted_p99_ms: 2.0,
                    wasted_total_ms: 45.0,
                }],
                groups_evicted: 0,
                cause: "fast walks".into(),
                advice: vec!["Use FQDNs.".into()],
            }),
            Finding::Repeated(Repeated {
                ts_ns: 13,
                of_kind: "upstream_timeout".into(),
                cause_key: "10.0.9.9:53".into(),
                first_ts_ns: 9,
                first_cause: "upstream silent".into(),
                last_ts_ns: 13,
                count: 5,
                new: 4,
                pods: 2,
                other_pods: 0,
                top_pods: vec![PodCount { pod: "a/b".into(), count: 4 }, PodCount { pod: "c/d".into(), count: 1 }],
                client_time_lost_ms: 50_000.0,
                cause: "again".into(),
            }),
        ]
    }
}
