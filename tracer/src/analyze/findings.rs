//! Findings: search-list fan-out, upstream timeouts, NXDOMAIN storms.
//!
//! Transactions arrive in completion order, not start order: an attempt that
//! timed out is only reported by the [`super::Pairer`] `timeout_ns` after it
//! started, long after the quick answers that followed it. Chains are
//! therefore formed when their answer arrives and kept open, absorbing late
//! attempts, until either the resolv.conf evidence says every search
//! candidate has been seen, or the pairing timeout guarantees that nothing
//! that started before the answer can still arrive.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt::Write as _,
    net::IpAddr,
    sync::Arc,
};

use serde::Serialize;

use crate::{
    decode::dns::{Answer, qtype_name, rcode_name},
    enrich::PodRef,
    event::{Endpoint, Process, ResolvConfEvidence},
    hash::FastMap,
};

use super::{
    Transaction,
    resolvconf::{ResolvConf, dots},
};

const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
/// Sends closer together than this are one resolver step (A and AAAA in parallel).
const PARALLEL_NS: u64 = 50_000_000;
/// Most attempts listed in one finding.
const MAX_CHAIN_ATTEMPTS: usize = 64;
/// Most names listed as top offenders of an NXDOMAIN storm.
const STORM_TOP: usize = 5;
/// How often [`Analyzer::expire`] looks at every client (it may be called per record).
const SCAN_EVERY_NS: u64 = 100_000_000;
/// Most client queries remembered per name and resolver.
const MAX_PER_NAME: usize = 32;

/// Analyzer limits and timing.
#[derive(Clone, Copy, Debug)]
pub struct AnalyzerConfig {
    /// The pairer's `timeout_ns`: after this, every attempt that started
    /// before a given instant has been reported.
    pub pair_timeout_ns: u64,
    /// Quiet time after a complete chain's last attempt before it is reported
    /// (lets the parallel AAAA of an answered A arrive).
    pub grace_ns: u64,
    /// Most clients tracked at once (oldest evicted beyond).
    pub max_clients: usize,
    /// Most buffered attempts per client (oldest dropped beyond).
    pub max_attempts_per_client: usize,
    /// Most open chains per client (oldest reported early beyond).
    pub max_chains_per_client: usize,
    /// Most resolv.conf evidence entries kept (per pid and per netns each).
    pub max_evidence: usize,
    /// NXDOMAIN rate per second (over `storm_window_ns`) that makes a storm.
    pub storm_per_sec: u32,
    /// Sliding window of the storm rate.
    pub storm_window_ns: u64,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            pair_timeout_ns: super::pairing::PairConfig::default().timeout_ns,
            grace_ns: 500_000_000,
            max_clients: 4096,
            max_attempts_per_client: 256,
            max_chains_per_client: 16,
            max_evidence: 4096,
            storm_per_sec: 20,
            storm_window_ns: 10_000_000_000,
        }
    }
}

/// Analyzer counters: what was dropped to stay bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnalyzerStats {
    /// Clients forgotten because too many were tracked.
    pub clients_evicted: u64,
    /// Buffered attempts dropped because a client had too many.
    pub attempts_dropped: u64,
    /// Chains reported before their evidence was complete (too many open).
    pub chains_evicted: u64,
}

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
    /// Fast search-list walks, counted per pod and name (see [`super::condense`]).
    SearchFanoutSummary(super::condense::FanoutSummary),
    /// More findings of a cause already reported in full (see [`super::condense`]).
    Repeated(super::condense::Repeated),
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

/// resolv.conf evidence, parsed.
#[derive(Debug)]
struct Conf {
    parsed: Option<ResolvConf>,
    path: String,
    error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    pod: Option<PodRef>,
    netns: u32,
    pid: u32,
    ip: IpAddr,
}

impl ClientKey {
    fn of(tx: &Transaction) -> Self {
        Self {
            pod: tx.client_pod.clone(),
            netns: tx.netns,
            pid: tx.process.as_ref().map_or(0, |p| p.pid),
            ip: tx.client.ip,
        }
    }
}

#[derive(Clone, Debug)]
struct Att {
    /// Lower-case name, shared with the buffers that index it.
    lname: Arc<str>,
    /// Shared: an attempt sits in several buffers (chain, forwards, resolver).
    tx: Arc<Transaction>,
    /// Already looked at as the possible end of an unanswered walk.
    checked: bool,
}

impl Att {
    fn failed(&self) -> bool {
        self.tx.timed_out || self.tx.rcode != Some(0) || self.tx.answers.is_empty()
    }
}

#[derive(Debug)]
struct Chain {
    base: String,
    /// Every name the resolver would try, in order.
    candidates: Vec<String>,
    /// Index in `candidates` of the one that answered.
    answered: usize,
    search: Vec<String>,
    conf: Option<Arc<Conf>>,
    /// No resolv.conf: the answered name is the literal base and the suffixes
    /// are learnt from the attempts.
    inferred_literal: bool,
    /// One try's timeout (`options timeout:`).
    try_ns: u64,
    window_start: u64,
    window_end: u64,
    atts: Vec<Att>,
    deadline: u64,
    last_activity: u64,
}

impl Chain {
    fn index(&self, lname: &str) -> Option<usize> {
        self.candidates.iter().take(self.answered + 1).position(|c| c == lname)
    }

    /// With observed evidence: every candidate up to the answered one has an
    /// attempt of every query type the walk used.
    fn complete(&self) -> bool {
        if self.conf.as_ref().is_none_or(|c| c.parsed.is_none()) {
            return false;
        }
        // After a timeout the resolver moves on within one try's timeout; a
        // longer silence means a retry (next nameserver, next attempt) that
        // the pairer has not reported yet.
        let max_gap = self.try_ns.saturating_add(self.try_ns / 2).saturating_add(PARALLEL_NS);
        let gap_explained = self.atts.iter().filter(|e| e.tx.timed_out).all(|e| {
            self.atts
                .iter()
                .map(|b| b.tx.ts_ns)
                .filter(|&t| t > e.tx.ts_ns)
                .min()
                .is_some_and(|t| t - e.tx.ts_ns <= max_gap)
        });
        if !gap_explained {
            return false;
        }
        let qtypes: HashSet<u16> = self.atts.iter().map(|a| a.tx.qtype).collect();
        self.candidates
            .iter()
            .take(self.answered + 1)
            .all(|c| qtypes.iter().all(|qt| self.atts.iter().any(|a| *a.lname == **c && a.tx.qtype == *qt)))
    }
}

/// A client's attempts not (yet) part of a chain, in start order, with an
/// index of their names so chain formation costs O(candidates), not O(buffer).
#[derive(Debug, Default)]
struct Buf {
    atts: VecDeque<Att>,
    names: FastMap<Arc<str>, u32>,
    /// Every name of a walk starts with the base's first label.
    first_labels: FastMap<String, u32>,
}

impl Buf {
    fn len(&self) -> usize {
        self.atts.len()
    }
    fn is_empty(&self) -> bool {
        self.atts.is_empty()
    }
    fn get(&self, i: usize) -> Option<&Att> {
        self.atts.get(i)
    }
    fn iter(&self) -> impl Iterator<Item = &Att> {
        self.atts.iter()
    }
    fn has_name(&self, lname: &str) -> bool {
        self.names.contains_key(lname)
    }
    /// Buffered attempts whose name starts with the same label as `lname`.
    fn same_first_label(&self, lname: &str) -> u32 {
        self.first_labels.get(first_label(lname)).copied().unwrap_or(0)
    }
    fn insert(&mut self, att: Att) {
        *self.names.entry(att.lname.clone()).or_default() += 1;
        *self.first_labels.entry(first_label(&att.lname).to_owned()).or_default() += 1;
        let pos = self.atts.partition_point(|a| a.tx.ts_ns <= att.tx.ts_ns);
        self.atts.insert(pos, att);
    }
    fn forget(&mut self, lname: &str) {
        if let Some(n) = self.names.get_mut(lname) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.names.remove(lname);
            }
        }
        let first = first_label(lname);
        if let Some(n) = self.first_labels.get_mut(first) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.first_labels.remove(first);
            }
        }
    }
    fn remove(&mut self, i: usize) -> Option<Att> {
        let a = self.atts.remove(i)?;
        self.forget(&a.lname);
        Some(a)
    }
    fn pop_front(&mut self) -> Option<Att> {
        self.remove(0)
    }
    fn front_ts(&self) -> Option<u64> {
        self.atts.front().map(|a| a.tx.ts_ns)
    }
}

#[derive(Debug, Default)]
struct ClientState {
    buf: Buf,
    chains: Vec<Chain>,
    last_ts: u64,
}

/// A client query as the resolver received it.
#[derive(Clone, Debug)]
struct ClientQuery {
    key: ClientKey,
    lname: Arc<str>,
    ts: u64,
    end: Option<u64>,
    tx: Arc<Transaction>,
}

#[derive(Debug, Default)]
struct ResolverState {
    /// Per client: (start, name) of its recent queries to this resolver, in
    /// start order (to see when it gave up waiting and moved on).
    clients: FastMap<ClientKey, VecDeque<(u64, Arc<str>)>>,
    /// Per name: recent client queries (to correlate forwards).
    by_name: Bounded<Arc<str>, VecDeque<ClientQuery>>,
    last_ts: u64,
}

#[derive(Debug)]
struct UpGroup {
    resolver_ip: IpAddr,
    upstream: Endpoint,
    lname: String,
    first_ts: u64,
    last_ts: u64,
    attempts: u32,
    servfail: u32,
    qtypes: Vec<u16>,
    forwarder: Arc<Transaction>,
    /// Client queries that waited (deduplicated by client, id, qtype, start).
    waiting: Vec<ClientQuery>,
}

/// Who an NXDOMAIN storm is counted for: the client pod, else its address
/// (kept as values: formatting them for every NXDOMAIN was a measurable cost).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum StormKey {
    Pod(PodRef),
    Ip(IpAddr),
}

impl std::fmt::Display for StormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pod(p) => p.fmt(f),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

#[derive(Debug, Default)]
struct StormState {
    events: VecDeque<(u64, Arc<str>)>,
    quiet_until: u64,
}

/// A map with a size bound: inserting beyond it forgets the oldest insert.
#[derive(Debug)]
struct Bounded<K, V> {
    map: FastMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Self { map: FastMap::default(), order: VecDeque::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Bounded<K, V> {
    fn insert(&mut self, k: K, v: V, cap: usize) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > cap.max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    fn get_or_insert(&mut self, k: &K, cap: usize) -> Option<&mut V>
    where
        V: Default,
    {
        if !self.map.contains_key(k) {
            self.insert(k.clone(), V::default(), cap);
        }
        self.map.get_mut(k)
    }
    /// Keeps the entries `keep` says to; the order queue forgets them lazily.
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
        if self.order.len() > self.map.len().saturating_mul(2).max(64) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

/// Turns transactions into findings.
#[derive(Debug, Default)]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    stats: AnalyzerStats,
    now: u64,
    by_pid: Bounded<u32, Arc<Conf>>,
    by_netns: Bounded<u32, Arc<Conf>>,
    /// Union of every observed search list (to recognise search-suffixed names).
    known_suffixes: Bounded<String, ()>,
    clients: FastMap<ClientKey, ClientState>,
    resolvers: FastMap<IpAddr, ResolverState>,
    resolver_pods: Bounded<PodRef, IpAddr>,
    /// A resolver pod's own address → the Service address its clients asked
    /// (DNAT): its forwards are the Service's.
    resolver_addrs: Bounded<IpAddr, IpAddr>,
    resolver_pids: Bounded<(u32, Option<Arc<str>>), IpAddr>,
    upstream: Vec<UpGroup>,
    /// Lower-case name → where it was forwarded (for `forwarded_upstream`).
    forwarded: Bounded<String, ForwardedUpstream>,
    /// Failed transactions that may be a resolver's forwards, in arrival
    /// order, until every client query that started before them is known.
    pending_fwd: VecDeque<Att>,
    /// The full expiry scan runs at most every [`SCAN_EVERY_NS`].
    next_scan: u64,
    storms: FastMap<StormKey, StormState>,
}

impl Analyzer {
    /// Empty analyzer with the default limits (pairing timeout 10 s).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty analyzer; `cfg.pair_timeout_ns` must match the pairer's.
    #[must_use]
    pub fn with_config(cfg: AnalyzerConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> AnalyzerStats {
        self.stats
    }

    /// Records what a process's resolver was configured with.
    pub fn resolv_conf(&mut self, ev: &ResolvConfEvidence) {
        let conf = ev.text.as_deref().map(ResolvConf::parse);
        if let Some(c) = &conf {
            for s in &c.search {
                self.known_suffixes.insert(s.clone(), (), self.cfg.max_evidence);
            }
        }
        let conf = Arc::new(Conf { parsed: conf, path: ev.path.clone(), error: ev.error.clone() });
        if ev.pid != 0 {
            self.by_pid.insert(ev.pid, Arc::clone(&conf), self.cfg.max_evidence);
        }
        if ev.netns_ino != 0 {
            self.by_netns.insert(ev.netns_ino, conf, self.cfg.max_evidence);
        }
    }

    fn conf_for(&self, tx: &Transaction) -> Option<Arc<Conf>> {
        lookup_conf(&self.by_pid, &self.by_netns, tx)
    }

    /// Feeds a transaction (in completion order).
    ///
    /// Timed-out transactions must come from the same [`super::Pairer`]
    /// stream; call [`Self::expire`] regularly and [`Self::finish`] after the
    /// pairer's `finish`.
    pub fn push(&mut self, tx: &Transaction, out: &mut Vec<Finding>) {
        self.push_shared(Arc::new(tx.clone()), out);
    }

    /// [`Self::push`] for a transaction already behind an `Arc` (no copy).
    pub fn push_shared(&mut self, tx: Arc<Transaction>, out: &mut Vec<Finding>) {
        let seen = match tx.end_ns {
            Some(end) => end,
            None if tx.timed_out => tx.ts_ns.saturating_add(self.cfg.pair_timeout_ns),
            None => tx.ts_ns,
        };
        self.now = self.now.max(seen);
        let att = Att { lname: Arc::from(tx.qname.trim_end_matches('.').to_ascii_lowercase()), tx, checked: false };
        self.track_resolver(&att);
        if att.tx.timed_out || att.tx.rcode == Some(RCODE_SERVFAIL) {
            if self.pending_fwd.len() >= self.cfg.max_attempts_per_client.max(1).saturating_mul(16) {
                self.pending_fwd.pop_front();
                self.stats.attempts_dropped += 1;
            }
            self.pending_fwd.push_back(att.clone());
        }
        self.count_storm(&att, out);
        self.fanout(att, out);
        self.expire(self.now, out);
    }

    /// Emits findings whose chains ended before `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.now = self.now.max(now_ns);
        let now = self.now;
        // Forwards first: chains reported below name the upstream they hit.
        while self.pending_fwd.front().is_some_and(|a| settled_at(&self.cfg, a.tx.ts_ns) <= now) {
            if let Some(a) = self.pending_fwd.pop_front() {
                self.check_upstream(&a);
            }
        }
        if now < self.next_scan {
            return;
        }
        self.next_scan = now.saturating_add(SCAN_EVERY_NS);
        let keep_ns = self.cfg.pair_timeout_ns.saturating_mul(2).saturating_add(30_000_000_000);
        let mut ready = Vec::new();
        for st in self.clients.values_mut() {
            let grace = self.cfg.grace_ns;
            let (done, open): (Vec<Chain>, Vec<Chain>) = std::mem::take(&mut st.chains)
                .into_iter()
                .partition(|c| now >= c.deadline || (c.complete() && now >= c.last_activity.saturating_add(grace)));
            st.chains = open;
            ready.extend(done);
            // Walks that no name answered: once their last candidate has
            // settled, every attempt before it is known.
            let mut i = 0;
            while let Some(l) = st.buf.get(i) {
                if settled_at(&self.cfg, l.tx.ts_ns) > now {
                    break;
                }
                let maybe_end = !l.checked && st.buf.same_first_label(&l.lname) > 1 && {
                    let prefix = format!("{}.", l.lname);
                    st.buf.iter().any(|a| a.lname.starts_with(&prefix))
                };
                if let Some(a) = st.buf.atts.get_mut(i) {
                    a.checked = true;
                }
                let Some(term) = maybe_end.then(|| st.buf.get(i).cloned()).flatten() else {
                    i += 1;
                    continue;
                };
                let conf = lookup_conf(&self.by_pid, &self.by_netns, &term.tx);
                if let Some(ch) = form_chain(&self.cfg, conf, &term, &mut st.buf, true) {
                    let pos = st.buf.atts.iter().position(|a| a.tx == term.tx);
                    if let Some(pos) = pos {
                        st.buf.remove(pos);
                    }
                    ready.push(ch);
                    i = 0;
                } else {
                    i += 1;
                }
            }
            while st.buf.front_ts().is_some_and(|ts| ts.saturating_add(keep_ns) < now) {
                st.buf.pop_front();
            }
        }
        self.clients
            .retain(|_, st| !(st.chains.is_empty() && st.buf.is_empty() && st.last_ts.saturating_add(keep_ns) < now));
        // Clients are visited in hash order, which is seeded per run: report
        // in walk order so a replay prints the same lines every time.
        ready.sort_by_cached_key(|c| {
            (c.atts.iter().map(|a| a.tx.ts_ns).min().unwrap_or(c.window_start), c.base.clone())
        });
        for c in ready {
            out.extend(self.report_chain(c).map(Finding::SearchFanout));
        }
        // A forward joins a group if it started within one pairing timeout of
        // the group's last forward, and reaches us (timed out) one more
        // timeout later: only then can the group be complete. Settling any
        // earlier splits one wait into two findings that count it twice.
        let settle = self.cfg.pair_timeout_ns.saturating_mul(2).saturating_add(self.cfg.grace_ns);
        let (done, open): (Vec<UpGroup>, Vec<UpGroup>) =
            std::mem::take(&mut self.upstream).into_iter().partition(|g| g.last_ts.saturating_add(settle) <= now);
        self.upstream = open;
        for g in done {
            out.push(Finding::UpstreamTimeout(self.report_upstream(g)));
        }
        for r in self.resolvers.values_mut() {
            r.clients.retain(|_, qs| {
                while qs.front().is_some_and(|(ts, _)| ts.saturating_add(keep_ns) < now) {
                    qs.pop_front();
                }
                !qs.is_empty()
            });
            r.by_name.retain(|_, qs| {
                while qs.front().is_some_and(|q| q.ts.saturating_add(keep_ns) < now) {
                    qs.pop_front();
                }
                !qs.is_empty()
            });
        }
        self.resolvers.retain(|_, r| !r.clients.is_empty() || r.last_ts.saturating_add(keep_ns) >= now);
        self.storms.retain(|_, s| s.events.back().is_some_and(|(ts, _)| ts.saturating_add(keep_ns) >= now));
    }

    /// End of input: emit everything pending.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        self.expire(u64::MAX, out);
    }

    // ---- search fan-out ----

    fn fanout(&mut self, att: Att, out: &mut Vec<Finding>) {
        let key = ClientKey::of(&att.tx);
        if !self.clients.contains_key(&key) && self.clients.len() >= self.cfg.max_clients.max(1) {
            self.evict_client(out);
        }
        let conf = self.conf_for(&att.tx);
        let cfg = self.cfg;
        let st = self.clients.entry(key).or_default();
        st.last_ts = st.last_ts.max(att.tx.ts_ns);
        for ch in &mut st.chains {
            if ch.index(&att.lname).is_some()
                && (ch.window_start..=ch.window_end).contains(&att.tx.ts_ns)
                && may_join(&ch.atts, &att, ch.try_ns)
            {
                ch.deadline = ch.deadline.max(settled_at(&cfg, att.tx.ts_ns));
                ch.last_activity = self.now;
                if ch.atts.len() < MAX_CHAIN_ATTEMPTS {
                    ch.atts.push(att);
                }
                return;
            }
            // Without resolv.conf the search list is only known from the
            // attempts: a late timed-out `base.suffix` adds a suffix.
            if ch.inferred_literal
                && att.failed()
                && (ch.window_start..=ch.window_end).contains(&att.tx.ts_ns)
                && ch.candidates.len() < MAX_CHAIN_ATTEMPTS
                && let Some(s) = att.lname.strip_prefix(ch.base.as_str()).and_then(|s| s.strip_prefix('.'))
                && !s.is_empty()
            {
                ch.search.push(s.to_owned());
                ch.candidates.insert(ch.answered, att.lname.to_string());
                ch.answered += 1;
                ch.deadline = ch.deadline.max(settled_at(&cfg, att.tx.ts_ns));
                ch.last_activity = self.now;
                ch.atts.push(att);
                return;
            }
        }
        if att.failed() {
            if st.buf.len() >= cfg.max_attempts_per_client.max(1) {
                st.buf.pop_front();
                self.stats.attempts_dropped += 1;
            }
            // Keep the buffer in start order: timed-out attempts arrive late.
            st.buf.insert(att);
            return;
        }
        let Some(mut chain) = form_chain(&cfg, conf, &att, &mut st.buf, false) else { return };
        chain.last_activity = self.now;
        st.chains.push(chain);
        if st.chains.len() > cfg.max_chains_per_client.max(1) {
            let oldest = st.chains.remove(0);
            self.stats.chains_evicted += 1;
            out.extend(self.report_chain(oldest).map(Finding::SearchFanout));
        }
    }

    fn evict_client(&mut self, out: &mut Vec<Finding>) {
        let Some(oldest) = self.clients.iter().min_by_key(|(_, s)| s.last_ts).map(|(k, _)| k.clone()) else {
            return;
        };
        self.stats.clients_evicted += 1;
        if let Some(st) = self.clients.remove(&oldest) {
            for c in st.chains {
                out.extend(self.report_chain(c).map(Finding::SearchFanout));
            }
        }
    }

    fn report_chain(&self, mut ch: Chain) -> Option<SearchFanout> {
        ch.atts.sort_by_key(|a| a.tx.ts_ns);
        let first = ch.atts.first()?;
        let start = first.tx.ts_ns;
        let answered_name = ch.candidates.get(ch.answered)?.clone();
        let ok: Vec<&Att> = ch.atts.iter().filter(|a| *a.lname == *answered_name).collect();
        let failed: Vec<&Att> = ch.atts.iter().filter(|a| *a.lname != *answered_name).collect();
        if failed.is_empty() {
            return None;
        }
        let final_att = ok.iter().find(|a| !a.failed()).or(ok.first()).copied();
        let end = ok
            .iter()
            .filter_map(|a| a.tx.end_ns)
            .max()
            .or_else(|| final_att.and_then(|a| a.tx.end_ns))
            .unwrap_or(start);
        let total = end.saturating_sub(start);
        let ok_time = union_len(ok.iter().map(|a| (a.tx.ts_ns, a.tx.end_ns.unwrap_or(a.tx.ts_ns))));
        let wasted = total.saturating_sub(ok_time);

        let conf = ch.conf.as_ref().and_then(|c| c.parsed.as_ref());
        let per_try_ns = conf.map_or(5_000_000_000, |c| u64::from(c.timeout_s) * 1_000_000_000);
        // A timed-out attempt cost the client the time until it moved on to
        // another candidate.
        let effective_end = |a: &Att| -> u64 {
            a.tx.end_ns.unwrap_or_else(|| {
                ch.atts
                    .iter()
                    .filter(|b| b.lname != a.lname && b.tx.ts_ns > a.tx.ts_ns)
                    .map(|b| b.tx.ts_ns)
                    .min()
                    .unwrap_or_else(|| a.tx.ts_ns.saturating_add(per_try_ns).min(end.max(a.tx.ts_ns)))
            })
        };
        let suffix_of = |lname: &str| -> String {
            lname.strip_prefix(ch.base.as_str()).and_then(|s| s.strip_prefix('.')).unwrap_or(lname).to_owned()
        };
        // (suffix, timeouts, cost) in walk order.
        let mut slow: Vec<(String, u32, u64)> = Vec::new();
        for a in failed.iter().filter(|a| a.tx.timed_out) {
            let s = suffix_of(&a.lname);
            if !slow.iter().any(|(x, _, _)| *x == s) {
                let mine: Vec<&&Att> = failed.iter().filter(|b| b.lname == a.lname).collect();
                let n = mine.iter().filter(|b| b.tx.timed_out).count() as u32;
                let cost = union_len(mine.iter().map(|b| (b.tx.ts_ns, effective_end(b))));
                slow.push((s, n, cost));
            }
        }
        let forwarded_upstream: Vec<ForwardedUpstream> = failed
            .iter()
            .filter(|a| a.tx.timed_out || a.tx.rcode == Some(RCODE_SERVFAIL))
            .filter_map(|a| self.forwarded_for(&a.lname))
            .fold(Vec::new(), |mut v, f| {
                if !v.contains(&f) {
                    v.push(f);
                }
                v
            });

        let literal = ch.answered + 1 == ch.candidates.len() && answered_name == ch.base;
        let tried: Vec<String> = {
            let mut v: Vec<String> = Vec::new();
            for a in &failed {
                let s = suffix_of(&a.lname);
                if !v.contains(&s) {
                    v.push(s);
                }
            }
            v
        };
        let d = dots(&ch.base);
        let mut cause = match conf {
            Some(c) if dots(&ch.base) < usize::from(c.ndots) => format!(
                "{} has {d} dot{} < ndots:{}, so the resolver tried {} search suffix{} first",
                ch.base,
                plural(d),
                c.ndots,
                tried.len(),
                if tried.len() == 1 { "" } else { "es" }
            ),
            Some(_) => format!("{} was tried literally, then with {} search suffixes", ch.base, tried.len()),
            None => format!(
                "{} has {d} dot{}, fewer than the resolver's ndots (resolv.conf not seen; inferred from the queries), so {} search suffix{} were tried first",
                ch.base,
                plural(d),
                tried.len(),
                if tried.len() == 1 { "" } else { "es" }
            ),
        };
        if final_att.is_none_or(Att::failed) {
            let rc = final_att.and_then(|a| a.tx.rcode).map_or_else(|| "no answer".to_owned(), rcode_name);
            let _ = write!(cause, "; no name answered (the literal {answered_name} got {rc})");
        } else if !literal {
            let _ = write!(cause, "; {answered_name} answered");
        }
        for (s, n, cost) in &slow {
            let fwd = forwarded_upstream
                .iter()
                .find(|f| f.qname.ends_with(&format!(".{s}")))
                .map_or(String::new(), |f| format!(" was forwarded upstream to {} and", f.upstream));
            let _ =
                write!(cause, "; *.{s}{fwd} timed out {} ({:.1} s of {:.1} s)", times(*n), secs(*cost), secs(total));
        }
        let advice = fanout_advice(&ch, conf, literal, &answered_name, &slow);
        let search = conf.map_or_else(|| ch.search.clone(), |c| c.search.clone());
        let attempts = ch
            .atts
            .iter()
            .map(|a| Attempt {
                qname: a.lname.to_string(),
                qtype: qtype_name(a.tx.qtype),
                rcode: a.tx.rcode.map(rcode_name),
                latency_ms: a.tx.latency_ns.map(ms),
                timed_out: a.tx.timed_out,
                start_ms: ms(a.tx.ts_ns.saturating_sub(start)),
                retransmits: a.tx.retransmits,
            })
            .collect();
        let src = ch.conf.as_deref();
        Some(SearchFanout {
            ts_ns: start,
            node: first.tx.node.clone(),
            pod: first.tx.client_pod.as_ref().map(ToString::to_string),
            process: ch.atts.iter().find_map(|a| a.tx.process.clone()),
            client: first.tx.client,
            server: first.tx.server,
            base_name: ch.base.clone(),
            attempts,
            answered_by: final_att.filter(|a| !a.failed()).map(|a| a.lname.to_string()),
            answers: final_att.map(|a| a.tx.answers.clone()).unwrap_or_default(),
            total_ms: ms(total),
            wasted_ms: ms(wasted),
            ndots: conf.map(|c| c.ndots),
            search,
            nameservers: conf.map(|c| c.nameservers.clone()).unwrap_or_default(),
            options: conf.map(|c| c.options.clone()).unwrap_or_default(),
            resolv_conf_source: if conf.is_some() { "observed" } else { "inferred" },
            resolv_conf_path: src.map(|c| c.path.clone()),
            resolv_conf_error: src.and_then(|c| c.error.clone()),
            timed_out_suffixes: slow.iter().map(|(s, _, _)| s.clone()).collect(),
            forwarded_upstream,
            cause,
            advice,
        })
    }

    // ---- upstream timeouts ----

    /// Remembers client queries per resolver (server IP).
    fn track_resolver(&mut self, att: &Att) {
        let tx = &att.tx;
        let ip = tx.server.ip;
        if let Some(p) = &tx.server_pod {
            self.resolver_pods.insert(p.clone(), ip, self.cfg.max_evidence);
        }
        if let Some(r) = tx.resolver
            && r.ip != ip
        {
            self.resolver_addrs.insert(r.ip, ip, self.cfg.max_evidence);
        }
        if let Some(p) = &tx.server_process {
            self.resolver_pids.insert((p.pid, tx.node.clone()), ip, self.cfg.max_evidence);
        }
        if !self.resolvers.contains_key(&ip) && self.resolvers.len() >= self.cfg.max_clients.max(1) {
            return;
        }
        let r = self.resolvers.entry(ip).or_default();
        r.last_ts = r.last_ts.max(tx.ts_ns);
        let key = ClientKey::of(tx);
        if r.clients.contains_key(&key) || r.clients.len() < self.cfg.max_clients.max(1) {
            let qs = r.clients.entry(key.clone()).or_default();
            if qs.len() >= self.cfg.max_attempts_per_client.max(1) {
                qs.pop_front();
            }
            let pos = qs.partition_point(|(ts, _)| *ts <= tx.ts_ns);
            qs.insert(pos, (tx.ts_ns, att.lname.clone()));
        }
        if let Some(qs) = r.by_name.get_or_insert(&att.lname, self.cfg.max_evidence) {
            if qs.len() >= MAX_PER_NAME {
                qs.pop_front();
            }
            qs.push_back(ClientQuery { key, lname: att.lname.clone(), ts: tx.ts_ns, end: tx.end_ns, tx: tx.clone() });
        }
    }

    /// The resolver (by its service IP) that sent `tx`, if `tx` is a forward.
    fn forwarder_of(&self, tx: &Transaction) -> Option<IpAddr> {
        if self.resolvers.get(&tx.client.ip).is_some_and(|r| r.clients.keys().any(|k| k.ip != tx.client.ip)) {
            return Some(tx.client.ip);
        }
        if let Some(ip) = tx.client_pod.as_ref().and_then(|p| self.resolver_pods.get(p)) {
            return Some(*ip);
        }
        if let Some(ip) = self.resolver_addrs.get(&tx.client.ip) {
            return Some(*ip);
        }
        tx.process.as_ref().and_then(|p| self.resolver_pids.get(&(p.pid, tx.node.clone()))).copied()
    }

    /// Where `lname` was forwarded, from correlated or still pending forwards.
    fn forwarded_for(&self, lname: &str) -> Option<ForwardedUpstream> {
        if let Some(f) = self.forwarded.get(&lname.to_owned()) {
            return Some(f.clone());
        }
        self.pending_fwd.iter().filter(|u| *u.lname == *lname).find_map(|u| {
            let rip = self.forwarder_of(&u.tx)?;
            Some(ForwardedUpstream {
                qname: u.lname.to_string(),
                resolver: rip.to_string(),
                upstream: u.tx.server.to_string(),
            })
        })
    }

    fn check_upstream(&mut self, att: &Att) {
        let u = &att.tx;
        if !(u.timed_out || u.rcode == Some(RCODE_SERVFAIL)) {
            return;
        }
        let Some(rip) = self.forwarder_of(u) else { return };
        let Some(r) = self.resolvers.get(&rip) else { return };
        let lo = u.ts_ns.saturating_sub(self.cfg.pair_timeout_ns);
        // A client query the forward served: same name, still waiting when it was sent.
        let waiting: Vec<ClientQuery> = r
            .by_name
            .get(&att.lname)
            .into_iter()
            .flatten()
            .filter(|q| q.key.ip != u.client.ip)
            .filter(|q| q.ts >= lo && q.ts <= u.ts_ns.saturating_add(PARALLEL_NS))
            .filter(|q| q.end.is_none_or(|e| e >= u.ts_ns))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return;
        }
        let resolver_addr = waiting.first().map_or_else(|| rip.to_string(), |q| q.tx.server.to_string());
        self.forwarded.insert(
            att.lname.to_string(),
            ForwardedUpstream { qname: att.lname.to_string(), resolver: resolver_addr, upstream: u.server.to_string() },
            self.cfg.max_evidence,
        );
        let group = self.upstream.iter_mut().find(|g| {
            g.resolver_ip == rip
                && g.upstream == u.server
                && *g.lname == *att.lname
                && u.ts_ns <= g.last_ts.saturating_add(self.cfg.pair_timeout_ns)
        });
        let n = 1 + u.retransmits;
        let sf = u32::from(u.rcode == Some(RCODE_SERVFAIL));
        if let Some(g) = group {
            g.attempts = g.attempts.saturating_add(n);
            g.servfail += sf;
            g.first_ts = g.first_ts.min(u.ts_ns);
            g.last_ts = g.last_ts.max(u.ts_ns);
            if !g.qtypes.contains(&u.qtype) {
                g.qtypes.push(u.qtype);
            }
            for q in waiting {
                let dup = g
                    .waiting
                    .iter()
                    .any(|w| w.key == q.key && w.ts == q.ts && w.tx.id == q.tx.id && w.tx.qtype == q.tx.qtype);
                if !dup && g.waiting.len() < MAX_CHAIN_ATTEMPTS {
                    g.waiting.push(q);
                }
            }
        } else {
            if self.upstream.len() >= self.cfg.max_clients.max(1) {
                return;
            }
            let mut waiting = waiting;
            waiting.truncate(MAX_CHAIN_ATTEMPTS);
            self.upstream.push(UpGroup {
                resolver_ip: rip,
                upstream: u.server,
                lname: att.lname.to_string(),
                first_ts: u.ts_ns,
                last_ts: u.ts_ns,
                attempts: n,
                servfail: sf,
                qtypes: vec![u.qtype],
                forwarder: u.clone(),
                waiting,
            });
        }
    }

    fn report_upstream(&self, g: UpGroup) -> UpstreamTimeout {
        let r = self.resolvers.get(&g.resolver_ip);
        // How long each client waited: until the answer, or until the same
        // client moved on to another name (it gave up), or the pairing timeout.
        let wait_end = |q: &ClientQuery| -> u64 {
            if let Some(e) = q.end {
                return e;
            }
            let next = r
                .and_then(|r| r.clients.get(&q.key))
                .and_then(|qs| qs.iter().filter(|(ts, n)| *ts > q.ts && *n != q.lname).map(|(ts, _)| *ts).min());
            next.unwrap_or_else(|| q.ts.saturating_add(self.cfg.pair_timeout_ns))
        };
        let waited = union_len(g.waiting.iter().map(|q| (q.ts, wait_end(q))));
        let first = g.waiting.iter().min_by_key(|q| q.ts);
        let resolver = Party {
            pod: first
                .and_then(|q| q.tx.server_pod.as_ref())
                .or(g.forwarder.client_pod.as_ref())
                .map(ToString::to_string),
            process: first.and_then(|q| q.tx.server_process.clone()).or_else(|| g.forwarder.process.clone()),
            address: first.map_or_else(|| g.resolver_ip.to_string(), |q| q.tx.server.to_string()),
        };
        let client = Party {
            pod: first.and_then(|q| q.tx.client_pod.as_ref()).map(ToString::to_string),
            process: first.and_then(|q| q.tx.process.clone()),
            address: first.map_or_else(String::new, |q| q.tx.client.to_string()),
        };
        let tail = g.lname.rsplit('.').next().unwrap_or(&g.lname).to_owned();
        let advice = vec![
            format!(
                "The upstream {} does not answer for {}: fix or replace it, or stop sending it such names.",
                g.upstream, g.lname
            ),
            format!(
                "Answer *.{tail} locally so it fails fast: in CoreDNS add a server block `{tail}:53 {{ template ANY ANY {{ rcode NXDOMAIN }} }}` (or a stub domain / forward to a server that answers; dnsmasq: `local=/{tail}/`)."
            ),
            format!(
                "If *.{tail} comes from a search suffix, remove `{tail}` from the node's /etc/resolv.conf that kubelet copies into pods (or point kubelet --resolv-conf at a file without it)."
            ),
        ];
        let who = resolver.pod.clone().unwrap_or_else(|| resolver.address.clone());
        let fails = if g.servfail == g.attempts {
            "answered SERVFAIL".to_owned()
        } else if g.servfail == 0 {
            "never answered".to_owned()
        } else {
            format!("never answered or SERVFAILed ({} SERVFAIL)", g.servfail)
        };
        let cause = format!(
            "{who} forwarded {} to the upstream {} {}, which {fails}; {} client quer{} waited {:.1} s",
            g.lname,
            g.upstream,
            times(g.attempts),
            g.waiting.len(),
            if g.waiting.len() == 1 { "y" } else { "ies" },
            secs(waited)
        );
        UpstreamTimeout {
            cause,
            ts_ns: g.first_ts,
            node: g.forwarder.node.clone(),
            resolver,
            upstream: g.upstream.to_string(),
            qname: g.lname,
            qtypes: g.qtypes.into_iter().map(qtype_name).collect(),
            attempts: g.attempts,
            servfail: g.servfail,
            waited_ms: ms(waited),
            client,
            client_queries: g.waiting.len() as u32,
            advice,
        }
    }

    // ---- NXDOMAIN storms ----

    fn count_storm(&mut self, att: &Att, out: &mut Vec<Finding>) {
        if att.tx.rcode != Some(RCODE_NXDOMAIN) {
            return;
        }
        let suffixed = match self.conf_for(&att.tx).as_ref().and_then(|c| c.parsed.as_ref()) {
            Some(c) => c.search.iter().any(|s| ends_with_label(&att.lname, s)),
            None if self.known_suffixes.map.is_empty() => true,
            None => self.known_suffixes.map.keys().any(|s| ends_with_label(&att.lname, s)),
        };
        if !suffixed {
            return;
        }
        let key = att.tx.client_pod.as_ref().map_or(StormKey::Ip(att.tx.client.ip), |p| StormKey::Pod(p.clone()));
        if !self.storms.contains_key(&key) && self.storms.len() >= self.cfg.max_clients.max(1) {
            return;
        }
        let window = self.cfg.storm_window_ns.max(1);
        let threshold = (u64::from(self.cfg.storm_per_sec) * window / 1_000_000_000).max(1);
        let cap = usize::try_from(threshold).unwrap_or(usize::MAX).saturating_mul(2).min(100_000);
        let ts = att.tx.ts_ns;
        let s = self.storms.entry(key.clone()).or_default();
        if s.events.len() >= cap {
            s.events.pop_front();
        }
        let pos = s.events.partition_point(|(t, _)| *t <= ts);
        s.events.insert(pos, (ts, att.lname.clone()));
        let newest = s.events.back().map_or(ts, |(t, _)| *t);
        while s.events.front().is_some_and(|(t, _)| t.saturating_add(window) < newest) {
            s.events.pop_front();
        }
        if (s.events.len() as u64) < threshold || newest < s.quiet_until {
            return;
        }
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for (_, n) in &s.events {
            *counts.entry(&**n).or_default() += 1;
        }
        let mut top: Vec<NameCount> =
            counts.into_iter().map(|(q, count)| NameCount { qname: q.to_owned(), count }).collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.qname.cmp(&b.qname)));
        top.truncate(STORM_TOP);
        let n = s.events.len() as u32;
        let span = s.events.front().map_or(window, |(t, _)| newest.saturating_sub(*t)).max(1_000_000_000);
        let rate = f64::from(n) / (span as f64 / 1e9);
        let cause = format!(
            "{key} got {n} NXDOMAIN answers for search-suffixed names in {:.1} s ({rate:.1}/s), most for {}",
            secs(span),
            top.first().map_or("?", |t| t.qname.as_str())
        );
        out.push(Finding::NxdomainStorm(NxdomainStorm {
            cause,
            ts_ns: newest,
            pod: match &key {
                StormKey::Pod(p) => Some(p.to_string()),
                StormKey::Ip(_) => None,
            },
            client: key.to_string(),
            nxdomain: n,
            window_ms: ms(span),
            rate_per_s: rate,
            top_names: top,
            advice: vec![
                "Each short name costs one NXDOMAIN per search suffix (ndots:5): use fully-qualified names with a trailing dot in the application's configuration.".to_owned(),
                "Lower ndots for this pod: spec.dnsConfig.options: [{name: ndots, value: \"2\"}].".to_owned(),
                "Cache negative answers close to the client (NodeLocal DNSCache) to spare the cluster DNS.".to_owned(),
            ],
        }));
        s.quiet_until = newest.saturating_add(window);
        s.events.clear();
    }
}

/// The resolv.conf of the process that sent `tx` (by pid, else by netns).
fn lookup_conf(
    by_pid: &Bounded<u32, Arc<Conf>>,
    by_netns: &Bounded<u32, Arc<Conf>>,
    tx: &Transaction,
) -> Option<Arc<Conf>> {
    tx.process
        .as_ref()
        .and_then(|p| by_pid.get(&p.pid))
        .or_else(|| (tx.netns != 0).then(|| by_netns.get(&tx.netns)).flatten())
        .cloned()
}

/// glibc's default `options timeout:` (5 s).
const DEFAULT_TRY_NS: u64 = 5_000_000_000;

/// Whether `a` may join a walk's attempts: a second query for the same name
/// and type only when it retries one that timed out (glibc `attempts:` on a
/// new socket, or the next nameserver) soon after; otherwise it is a new lookup.
fn may_join(atts: &[Att], a: &Att, try_ns: u64) -> bool {
    atts.iter().filter(|e| e.lname == a.lname && e.tx.qtype == a.tx.qtype).all(|e| {
        let (first, second) = if e.tx.ts_ns <= a.tx.ts_ns { (e, a) } else { (a, e) };
        first.tx.timed_out
            && second.tx.ts_ns > first.tx.ts_ns
            && second.tx.ts_ns - first.tx.ts_ns <= try_ns.saturating_mul(2)
    })
}

/// When every attempt started by `ts` has been reported by the pairer.
fn settled_at(cfg: &AnalyzerConfig, ts: u64) -> u64 {
    ts.saturating_add(cfg.pair_timeout_ns).saturating_add(cfg.grace_ns)
}

/// Finds the walk that `term` (a NOERROR answer with data) ends, taking its
/// earlier attempts out of `buf`.
///
/// With `literal_only`, `term` (unanswered) must be the last candidate of the
/// walk of its own name: the walk was exhausted.
fn form_chain(
    cfg: &AnalyzerConfig,
    conf: Option<Arc<Conf>>,
    term: &Att,
    buf: &mut Buf,
    literal_only: bool,
) -> Option<Chain> {
    let q = &*term.lname;
    let rc = conf.as_ref().and_then(|c| c.parsed.as_ref()).filter(|c| !c.search.is_empty());
    let try_ns = rc.map_or(DEFAULT_TRY_NS, |c| u64::from(c.timeout_s) * 1_000_000_000);
    let (base, candidates, answered, search, per_try_ns) = if let Some(rc) = rc {
        let mut bases = vec![q.to_owned()];
        for s in rc.search.iter().filter(|_| !literal_only) {
            if let Some(p) = q.strip_suffix(s.as_str()).and_then(|p| p.strip_suffix('.'))
                && !p.is_empty()
            {
                bases.push(p.to_owned());
            }
        }
        let mut best: Option<(usize, String, Vec<String>, usize)> = None;
        for b in bases {
            let cands = rc.candidates(&b);
            let Some(idx) = cands.iter().position(|c| c == q) else { continue };
            if literal_only && idx + 1 != cands.len() {
                continue;
            }
            let matches = cands.iter().take(idx).filter(|c| buf.has_name(c)).count();
            if best.as_ref().is_none_or(|(m, ..)| matches > *m) {
                best = Some((matches, b, cands, idx));
            }
        }
        let (matches, b, cands, idx) = best?;
        if matches == 0 {
            return None;
        }
        let per_try = u64::from(rc.timeout_s) * u64::from(rc.attempts) * 1_000_000_000;
        (b, cands, idx, rc.search.clone(), per_try)
    } else {
        infer_chain(q, term.tx.ts_ns, buf, literal_only)?
    };
    // A walk is at most every candidate, tried per query type, twice (A then AAAA).
    let span = per_try_ns.saturating_mul(2 * candidates.len() as u64).saturating_add(1_000_000_000);
    let window_start = term.tx.ts_ns.saturating_sub(span);
    let window_end = term.tx.ts_ns.saturating_add(span);
    let mut atts: Vec<Att> = vec![term.clone()];
    // Newest first, so a repeated earlier lookup of the same name stays behind.
    let mut i = buf.len();
    while i > 0 {
        i -= 1;
        let Some(a) = buf.get(i) else { break };
        let wanted = candidates.iter().take(answered + 1).any(|c| **c == *a.lname)
            && (window_start..=window_end).contains(&a.tx.ts_ns)
            && may_join(&atts, a, try_ns);
        if wanted && let Some(a) = buf.remove(i) {
            atts.push(a);
        }
    }
    let deadline = atts.iter().map(|a| settled_at(cfg, a.tx.ts_ns)).max().unwrap_or(0);
    let inferred_literal = rc.is_none() && *base == *term.lname;
    Some(Chain {
        inferred_literal,
        try_ns,
        base,
        candidates,
        answered,
        search,
        conf,
        window_start,
        window_end,
        atts,
        deadline,
        last_activity: 0,
    })
}

type Inferred = (String, Vec<String>, usize, Vec<String>, u64);

/// Without resolv.conf: the answered name is the literal base and the failed
/// names are `base.suffix`; or the answered name is `prefix.suffix` after
/// failed `prefix.other-suffix` names whose suffixes end with its suffix
/// (Kubernetes search lists nest: `ns.svc.cluster.local`, `svc.cluster.local`).
fn infer_chain(q: &str, ts: u64, buf: &Buf, literal_only: bool) -> Option<Inferred> {
    if buf.same_first_label(q) == 0 {
        return None;
    }
    let lo = ts.saturating_sub(60_000_000_000);
    let recent = || buf.iter().filter(|a| a.tx.ts_ns >= lo && a.tx.ts_ns <= ts);
    let mut suffixes: Vec<String> = Vec::new();
    for a in recent() {
        if let Some(s) = a.lname.strip_prefix(q).and_then(|s| s.strip_prefix('.'))
            && !s.is_empty()
            && !suffixes.iter().any(|x| x == s)
        {
            suffixes.push(s.to_owned());
        }
    }
    if !suffixes.is_empty() {
        let mut cands: Vec<String> = suffixes.iter().map(|s| format!("{q}.{s}")).collect();
        cands.push(q.to_owned());
        let idx = cands.len() - 1;
        return Some((q.to_owned(), cands, idx, suffixes, DEFAULT_TRY_NS));
    }
    if literal_only {
        return None;
    }
    let mut best: Option<(String, Vec<String>)> = None;
    // Cheap filter first: a shared prefix starts with the whole first label.
    let first = q.find('.').and_then(|i| q.get(..=i)).unwrap_or(q);
    for a in recent().filter(|a| a.lname.starts_with(first)) {
        let p = common_label_prefix(&a.lname, q);
        if p.is_empty() || p == q || p == &*a.lname {
            continue;
        }
        let (Some(sf), Some(sq)) = (a.lname.get(p.len() + 1..), q.get(p.len() + 1..)) else {
            continue;
        };
        if !ends_with_label(sf, sq) || sf == sq {
            continue;
        }
        match &mut best {
            Some((bp, v)) if bp == p => {
                if !v.iter().any(|x| x == sf) {
                    v.push(sf.to_owned());
                }
            }
            Some((bp, v)) if v.len() < 2 && p.len() > bp.len() => best = Some((p.to_owned(), vec![sf.to_owned()])),
            Some(_) => {}
            None => best = Some((p.to_owned(), vec![sf.to_owned()])),
        }
    }
    let (p, mut suffixes) = best?;
    let sq = q.get(p.len() + 1..)?.to_owned();
    let mut cands: Vec<String> = suffixes.iter().map(|s| format!("{p}.{s}")).collect();
    cands.push(q.to_owned());
    suffixes.push(sq);
    let idx = cands.len() - 1;
    Some((p, cands, idx, suffixes, DEFAULT_TRY_NS))
}

/// `a` of `a.b.c`.
fn first_label(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// `a.b.c` and `a.b.d` → `a.b` (whole labels only).
fn common_label_prefix<'a>(x: &'a str, y: &str) -> &'a str {
    let mut len = 0;
    let mut xs = x.split('.');
    let mut ys = y.split('.');
    while let (Some(a), Some(b)) = (xs.next(), ys.next()) {
        if a != b {
            break;
        }
        len += a.len() + 1;
    }
    x.get(..len.saturating_sub(1)).unwrap_or("")
}

/// `name` is `suffix` or ends with `.suffix`.
fn ends_with_label(name: &str, suffix: &str) -> bool {
    name == suffix || name.strip_suffix(suffix).is_some_and(|p| p.ends_with('.'))
}

/// Total length of a union of intervals.
fn union_len(iter: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut v: Vec<(u64, u64)> = iter.map(|(a, b)| (a, b.max(a))).collect();
    v.sort_unstable();
    let mut total = 0u64;
    let mut cur: Option<(u64, u64)> = None;
    for (a, b) in v {
        cur = match cur {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total = total.saturating_add(e - s);
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = cur {
        total = total.saturating_add(e - s);
    }
    total
}

fn fanout_advice(
    ch: &Chain,
    conf: Option<&ResolvConf>,
    literal: bool,
    answered: &str,
    slow: &[(String, u32, u64)],
) -> Vec<String> {
    let mut advice = Vec::new();
    let fqdn = if literal { ch.base.as_str() } else { answered };
    let n = ch.candidates.iter().take(ch.answered + 1).count();
    advice.push(format!(
        "Use the fully-qualified name with a trailing dot, `{fqdn}.`, in the application's configuration: one query per record type instead of {n}."
    ));
    let d = dots(&ch.base);
    if literal && d > 0 {
        let v = d.min(2);
        advice.push(format!(
            "Lower ndots for this pod so names with {v}+ dots are tried as-is first:\n  spec:\n    dnsConfig:\n      options:\n      - name: ndots\n        value: \"{v}\""
        ));
    }
    let cluster = conf.and_then(ResolvConf::cluster_domain).unwrap_or("cluster.local");
    let foreign: Vec<&String> = ch
        .search
        .iter()
        .filter(|s| !ends_with_label(s, cluster))
        .filter(|s| slow.iter().any(|(x, _, _)| x == *s) || conf.is_some())
        .collect();
    for s in foreign {
        advice.push(format!(
            "Remove `{s}` from the search line of the node's /etc/resolv.conf, which kubelet copies into pods (or start kubelet with --resolv-conf pointing at a file without it)."
        ));
        advice.push(format!(
            "Make the cluster DNS answer *.{s} itself so it fails fast: CoreDNS `{s}:53 {{ template ANY ANY {{ rcode NXDOMAIN }} }}`, or a stub domain / forward to a server that answers."
        ));
    }
    advice
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn times(n: u32) -> String {
    match n {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1000.0).round() / 1000.0
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::pairing::test_util::{MS, ep, pod, process, tx};

    const BASE: &str = "backend.critical-app.svc.cluster.local";
    const SEARCH: [&str; 4] = ["critical-app.svc.cluster.local", "svc.cluster.local", "cluster.local", "localdomain"];
    const RESOLVER: &str = "10.0.2.53:53";
    const UPSTREAM: &str = "10.0.9.9:53";
    const K8S_CONF: &str = "search critical-app.svc.cluster.local svc.cluster.local cluster.local localdomain\nnameserver 10.0.2.53\noptions ndots:5 timeout:2 attempts:1\n";
    const A: u16 = 1;
    const AAAA: u16 = 28;
    const NOERROR: u16 = 0;
    const NX: u16 = 3;

    fn evidence(pid: u32, text: &str) -> ResolvConfEvidence {
        ResolvConfEvidence {
            ts_ns: 0,
            pid,
            netns_ino: 4_026_532_000,
            path: format!("/proc/{pid}/root/etc/resolv.conf"),
            text: Some(text.to_owned()),
            error: None,
        }
    }

    /// A client query to the cluster resolver (seen on both sides).
    fn cq(ts: u64, port: u16, qname: &str, qtype: u16, outcome: Option<(u16, u64, usize)>) -> Transaction {
        let mut t = tx(ts, &format!("10.0.1.5:{port}"), RESOLVER, qname, qtype, outcome);
        t.server_pod = Some(pod("kube-system", "kube-dns"));
        t.server_process = Some(process(77, "dnsmasq"));
        t.observed = crate::analyze::Observed::Both;
        t
    }

    /// The resolver's forward of `qname` to the upstream.
    fn fwd(ts: u64, qname: &str, qtype: u16, outcome: Option<(u16, u64, usize)>) -> Transaction {
        let mut t = tx(ts, "10.0.2.53:33000", UPSTREAM, qname, qtype, outcome);
        t.client_pod = Some(pod("kube-system", "kube-dns"));
        t.process = Some(process(77, "dnsmasq"));
        t.netns = 4_026_532_999;
        t
    }

    /// Feeds transactions in the order the pairer would emit them (answers at
    /// their end, timeouts `pair_timeout` after their start), expiring as time
    /// passes, then finishes.
    fn run(an: &mut Analyzer, mut txs: Vec<Transaction>, finish: bool) -> Vec<Finding> {
        let to = an.cfg.pair_timeout_ns;
        txs.sort_by_key(|t| t.end_ns.unwrap_or(t.ts_ns + to));
        let mut out = Vec::new();
        for t in &txs {
            an.expire(t.end_ns.unwrap_or(t.ts_ns + to), &mut out);
            an.push(t, &mut out);
        }
        if finish {
            an.finish(&mut out);
        }
        out
    }

    /// One walk for `qtype`: NXDOMAIN for the 3 cluster suffixes, a timeout
    /// for localdomain (client gives up after 2 s), then the literal name.
    fn walk(t0: u64, port0: u16, qtypes: &[u16], literal_data: &[bool]) -> (Vec<Transaction>, u64) {
        let mut v = Vec::new();
        let mut t = t0;
        let mut port = port0;
        for (i, s) in SEARCH.iter().enumerate() {
            let name = format!("{BASE}.{s}");
            for &qt in qtypes {
                if i == 3 {
                    v.push(cq(t, port, &name, qt, None));
                    v.push(fwd(t + MS / 2, &name, qt, None));
                } else {
                    v.push(cq(t, port, &name, qt, Some((NX, MS / 2, 0))));
                }
                port += 1;
            }
            t += if i == 3 { 2000 * MS } else { MS };
        }
        for (&qt, &data) in qtypes.iter().zip(literal_data) {
            v.push(cq(t, port, BASE, qt, Some((NOERROR, MS, usize::from(data)))));
            port += 1;
        }
        (v, t + MS)
    }

    fn fanouts(out: &[Finding]) -> Vec<&SearchFanout> {
        out.iter()
            .filter_map(|f| match f {
                Finding::SearchFanout(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn upstreams(out: &[Finding]) -> Vec<&UpstreamTimeout> {
        out.iter()
            .filter_map(|f| match f {
                Finding::UpstreamTimeout(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn check_seed(out: &[Finding], qtypes: usize, total_ms: f64, slow: &str) {
        let f = fanouts(out);
        assert_eq!(f.len(), 1, "{out:#?}");
        let f = f[0];
        assert_eq!(f.base_name, BASE);
        assert_eq!(f.answered_by.as_deref(), Some(BASE));
        assert_eq!(f.pod.as_deref(), Some("critical-app/client"));
        assert_eq!(f.process.as_ref().map(|p| p.pid), Some(4242));
        assert_eq!(f.ndots, Some(5));
        assert_eq!(f.search, SEARCH);
        assert_eq!(f.resolv_conf_source, "observed");
        assert_eq!(f.timed_out_suffixes, ["localdomain"]);
        assert_eq!(f.attempts.len(), 5 * qtypes);
        // Suffix order per query type.
        let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
        for a in &f.attempts {
            seen.entry(a.qtype.as_str()).or_default().push(a.qname.as_str());
        }
        assert_eq!(seen.len(), qtypes);
        for names in seen.values() {
            let expect: Vec<String> = SEARCH.iter().map(|s| format!("{BASE}.{s}")).chain([BASE.to_owned()]).collect();
            assert_eq!(*names, expect);
        }
        assert!((f.total_ms - total_ms).abs() < 5.0, "total {}", f.total_ms);
        let timeouts = if total_ms > 3000.0 { 4000.0 } else { 2000.0 };
        assert!((f.wasted_ms - timeouts).abs() < 10.0, "wasted {}", f.wasted_ms);
        assert!(f.cause.contains("4 dots < ndots:5"), "{}", f.cause);
        assert!(f.cause.contains("4 search suffixes"), "{}", f.cause);
        assert!(
            f.cause.contains(&format!("*.localdomain was forwarded upstream to 10.0.9.9:53 and timed out {slow}")),
            "{}",
            f.cause
        );
        assert_eq!(f.forwarded_upstream.len(), 1);
        assert!(f.advice.iter().any(|a| a.contains(&format!("`{BASE}.`"))));
        assert!(f.advice.iter().any(|a| a.contains("ndots") && a.contains("value: \"2\"")));
        assert!(f.advice.iter().any(|a| a.contains("Remove `localdomain`")));
        assert!(!f.advice.iter().any(|a| a.contains("Remove `cluster.local`")));

        let u = upstreams(out);
        assert_eq!(u.len(), 1, "{out:#?}");
        let u = u[0];
        assert_eq!(u.qname, format!("{BASE}.localdomain"));
        assert_eq!(u.upstream, UPSTREAM);
        assert_eq!(u.attempts, 2);
        assert_eq!(u.resolver.address, RESOLVER);
        assert_eq!(u.resolver.pod.as_deref(), Some("kube-system/kube-dns"));
        assert_eq!(u.resolver.process.as_ref().map(|p| p.comm.as_ref()), Some("dnsmasq"));
        assert_eq!(u.client.pod.as_deref(), Some("critical-app/client"));
        assert!((u.waited_ms - timeouts).abs() < 10.0, "waited {}", u.waited_ms);
        assert!(
            u.cause.contains("kube-system/kube-dns forwarded") && u.cause.contains("never answered"),
            "{}",
            u.cause
        );
        let json = serde_json::to_value(Finding::UpstreamTimeout(u.clone())).unwrap();
        assert_eq!(json["kind"], "upstream_timeout");
    }

    #[test]
    fn seed_incident_aaaa_walk_then_a_walk() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let (mut v, t) = walk(0, 40000, &[AAAA], &[false]);
        let (v2, _) = walk(t + MS, 41000, &[A], &[true]);
        v.extend(v2);
        // The finding is out before the end of input: evidence says complete.
        let mut out = run(&mut an, v, false);
        an.expire(30_000 * MS, &mut out);
        check_seed(&out, 2, 4009.0, "twice (4.0 s of 4.0 s)");
        let mut rest = Vec::new();
        an.finish(&mut rest);
        assert!(rest.is_empty(), "{rest:#?}");
        let json = serde_json::to_value(&out[0]).unwrap();
        for k in [
            "kind",
            "pod",
            "process",
            "base_name",
            "attempts",
            "answered_by",
            "total_ms",
            "wasted_ms",
            "ndots",
            "search",
            "advice",
        ] {
            assert!(json.get(k).is_some(), "missing {k}");
        }
        assert_eq!(json["kind"], "search_fanout");
        assert_eq!(json["attempts"][0]["rcode"], rcode_name(3));
    }

    #[test]
    fn seed_incident_parallel_a_aaaa() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let (v, _) = walk(0, 40000, &[A, AAAA], &[true, false]);
        let out = run(&mut an, v, true);
        check_seed(&out, 2, 2004.0, "twice (2.0 s of 2.0 s)");
    }

    #[test]
    fn seed_incident_without_resolv_conf_is_inferred() {
        let mut an = Analyzer::new();
        let (v, _) = walk(0, 40000, &[A, AAAA], &[true, false]);
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 1, "{out:#?}");
        assert_eq!(f[0].resolv_conf_source, "inferred");
        assert_eq!(f[0].search, SEARCH);
        assert_eq!(f[0].ndots, None);
        assert_eq!(f[0].attempts.len(), 10);
        assert_eq!(f[0].timed_out_suffixes, ["localdomain"]);
        assert!((f[0].wasted_ms - 2000.0).abs() < 10.0, "{}", f[0].wasted_ms);
    }

    #[test]
    fn musl_sequential_with_retransmits() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, &format!("{K8S_CONF}options single-request\n")));
        let mut v = Vec::new();
        let mut t = 0;
        for (i, s) in SEARCH.iter().enumerate() {
            let name = format!("{BASE}.{s}");
            for qt in [A, AAAA] {
                if i == 3 {
                    let mut q = cq(t, 40000, &name, qt, None);
                    q.retransmits = 1;
                    v.push(q);
                    t += 2000 * MS;
                } else {
                    v.push(cq(t, 40000, &name, qt, Some((NX, MS / 2, 0))));
                    t += MS;
                }
            }
        }
        v.push(cq(t, 40000, BASE, A, Some((NOERROR, MS, 1))));
        v.push(cq(t + 2 * MS, 40000, BASE, AAAA, Some((NOERROR, MS, 0))));
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 1, "{out:#?}");
        assert_eq!(f[0].attempts.len(), 10);
        assert_eq!(f[0].attempts.iter().map(|a| a.retransmits).sum::<u32>(), 2);
        assert!((f[0].wasted_ms - 4006.0).abs() < 10.0, "{}", f[0].wasted_ms);
        assert!(f[0].cause.contains("timed out twice (4.0 s"), "{}", f[0].cause);
    }

    #[test]
    fn ndots_2_four_dot_name_answers_directly() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, &K8S_CONF.replace("ndots:5", "ndots:2")));
        let v = vec![cq(0, 40000, BASE, A, Some((NOERROR, MS, 1))), cq(0, 40001, BASE, AAAA, Some((NOERROR, MS, 0)))];
        assert!(run(&mut an, v, true).is_empty());
    }

    #[test]
    fn trailing_dot_fqdn_is_one_query() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let v = vec![cq(0, 40000, &format!("{BASE}."), A, Some((NOERROR, MS, 1)))];
        assert!(run(&mut an, v, true).is_empty());
    }

    #[test]
    fn name_under_first_suffix_is_no_finding() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let name = "backend.critical-app.svc.cluster.local";
        let v = vec![cq(0, 40000, name, A, Some((NOERROR, MS, 1))), cq(0, 40001, name, AAAA, Some((NOERROR, MS, 0)))];
        // The app asked for `backend`: first candidate answered.
        assert!(run(&mut an, v, true).is_empty());
    }

    #[test]
    fn cross_namespace_name_answered_by_second_suffix() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let v = vec![
            cq(0, 40000, "db.other.critical-app.svc.cluster.local", A, Some((NX, MS, 0))),
            cq(2 * MS, 40001, "db.other.svc.cluster.local", A, Some((NOERROR, MS, 1))),
        ];
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].base_name, "db.other");
        assert_eq!(f[0].answered_by.as_deref(), Some("db.other.svc.cluster.local"));
        assert!(f[0].timed_out_suffixes.is_empty());
        // Inferred works too (nested Kubernetes suffixes).
        let mut an = Analyzer::new();
        let v = vec![
            cq(0, 40000, "db.other.critical-app.svc.cluster.local", A, Some((NX, MS, 0))),
            cq(2 * MS, 40001, "db.other.svc.cluster.local", A, Some((NOERROR, MS, 1))),
            cq(10 * MS, 40002, "api.github.com", A, Some((NX, MS, 0))),
            cq(20 * MS, 40003, "api.stripe.com", A, Some((NOERROR, MS, 1))),
        ];
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 1, "{out:#?}");
        assert_eq!(f[0].base_name, "db.other");
    }

    #[test]
    fn slow_but_answering_upstream_is_no_timeout() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, &K8S_CONF.replace("ndots:5", "ndots:1")));
        let name = "slow.example.com";
        let v =
            vec![cq(0, 40000, name, A, Some((NOERROR, 3000 * MS, 1))), fwd(MS, name, A, Some((NOERROR, 2990 * MS, 1)))];
        let out = run(&mut an, v, true);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn servfail_from_upstream_counts() {
        let mut an = Analyzer::new();
        let name = "x.localdomain";
        let v = vec![cq(0, 40000, name, A, Some((2, 5000 * MS, 0))), fwd(MS, name, A, Some((2, 4990 * MS, 0)))];
        let out = run(&mut an, v, true);
        let u = upstreams(&out);
        assert_eq!(u.len(), 1, "{out:#?}");
        assert_eq!((u[0].attempts, u[0].servfail), (1, 1));
        assert!((u[0].waited_ms - 5000.0).abs() < 1.0);
    }

    #[test]
    fn interleaved_clients_are_kept_apart() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let (mut v, _) = walk(0, 40000, &[A], &[true]);
        // A second pod walking the same name, shifted by half a millisecond.
        let (other, _) = walk(MS / 2, 50000, &[A], &[true]);
        for mut t in other {
            if t.client.ip == ep("10.0.1.5:1").ip {
                t.client.ip = ep("10.0.1.6:1").ip;
                t.client_pod = Some(pod("critical-app", "client-2"));
                t.process = Some(process(5555, "curl"));
                t.netns = 4_026_532_111;
            }
            v.push(t);
        }
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 2, "{out:#?}");
        for f in &f {
            assert_eq!(f.attempts.len(), 5);
            assert!(f.attempts.iter().all(|a| a.qtype == qtype_name(A)));
        }
        let pods: HashSet<_> = f.iter().map(|f| f.pod.clone().unwrap()).collect();
        assert_eq!(pods.len(), 2);
        let u = upstreams(&out);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].attempts, 2);
        assert_eq!(u[0].client_queries, 2);
    }

    #[test]
    fn nxdomain_storm_with_top_names() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let mut v = Vec::new();
        for i in 0..400u64 {
            let name = format!("svc{}.{}", i % 3, SEARCH[1]);
            v.push(cq(i * 20 * MS, 40000, &name, A, Some((NX, MS, 0))));
        }
        // Not search-suffixed: not counted.
        v.push(cq(0, 40000, "nope.example.org", A, Some((NX, MS, 0))));
        let out = run(&mut an, v, true);
        let storms: Vec<&NxdomainStorm> = out
            .iter()
            .filter_map(|f| match f {
                Finding::NxdomainStorm(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(!storms.is_empty() && storms.len() <= 2, "{}", storms.len());
        assert_eq!(storms[0].pod.as_deref(), Some("critical-app/client"));
        assert_eq!(storms[0].top_names.len(), 3);
        assert!(storms[0].rate_per_s >= 20.0);
    }

    #[test]
    fn memory_is_bounded() {
        let cfg = AnalyzerConfig { max_clients: 8, max_attempts_per_client: 4, ..AnalyzerConfig::default() };
        let mut an = Analyzer::with_config(cfg);
        let mut out = Vec::new();
        for i in 0..1000u64 {
            let mut t = tx(
                i * MS,
                &format!("10.1.{}.{}:1000", i / 200, i % 200),
                RESOLVER,
                &format!("n{i}.x.{}", SEARCH[0]),
                A,
                None,
            );
            t.client_pod = None;
            an.push(&t, &mut out);
        }
        assert!(an.clients.len() <= 8);
        assert!(an.stats().clients_evicted > 0);
        an.finish(&mut out);
        assert!(an.clients.is_empty());
    }

    /// The seed incident as packets, through the real pairer: client and
    /// dnsmasq on one node, dnsmasq forwarding `.localdomain` (same id) to an
    /// upstream that never answers; AAAA walk then A walk.
    #[test]
    fn seed_incident_from_packets_through_pairer() {
        use crate::{
            analyze::pairing::{
                PairConfig, Pairer,
                test_util::{event, with_proc},
            },
            event::Hook,
        };
        let client_pod = pod("critical-app", "client");
        let dns_pod = pod("kube-system", "kube-dns");
        let mut evs = Vec::new();
        let mut t = 0u64;
        let mut id = 100u16;
        for qt in [AAAA, A] {
            let names: Vec<String> = SEARCH.iter().map(|s| format!("{BASE}.{s}")).chain([BASE.to_owned()]).collect();
            for (i, name) in names.iter().enumerate() {
                id += 1;
                let c = format!("10.0.1.5:{}", 40000 + id);
                let mut q = with_proc(
                    event(t, Hook::SocketEgress, &c, RESOLVER, id, name, qt, None),
                    process(4242, "getent"),
                    4_026_532_000,
                );
                q.src_pod = Some(client_pod.clone());
                q.dst_pod = Some(dns_pod.clone());
                let mut si = event(t + MS / 20, Hook::SocketIngress, &c, RESOLVER, id, name, qt, None);
                si.src_pod = Some(client_pod.clone());
                si.dst_pod = Some(dns_pod.clone());
                evs.push(q);
                evs.push(si);
                if i == 3 {
                    let mut f = with_proc(
                        event(t + MS / 5, Hook::SocketEgress, "10.0.2.53:33000", UPSTREAM, id, name, qt, None),
                        process(77, "dnsmasq"),
                        4_026_532_999,
                    );
                    f.src_pod = Some(dns_pod.clone());
                    evs.push(f);
                    t += 2000 * MS;
                } else {
                    let (rcode, n) = if i == 4 { (NOERROR, usize::from(qt == A)) } else { (NX, 0) };
                    let mut se = with_proc(
                        event(t + 2 * MS / 5, Hook::SocketEgress, RESOLVER, &c, id, name, qt, Some((rcode, n))),
                        process(77, "dnsmasq"),
                        4_026_532_999,
                    );
                    se.src_pod = Some(dns_pod.clone());
                    let mut ci = event(t + MS / 2, Hook::SocketIngress, RESOLVER, &c, id, name, qt, Some((rcode, n)));
                    ci.src_pod = Some(dns_pod.clone());
                    ci.dst_pod = Some(client_pod.clone());
                    evs.push(se);
                    evs.push(ci);
                    t += MS;
                }
            }
        }
        let timeout = 5000 * MS;
        let mut pairer = Pairer::new(PairConfig { timeout_ns: timeout, max_inflight: 1024 });
        let mut an = Analyzer::with_config(AnalyzerConfig { pair_timeout_ns: timeout, ..AnalyzerConfig::default() });
        an.resolv_conf(&evidence(4242, K8S_CONF));
        let mut txs = Vec::new();
        let mut out = Vec::new();
        let feed = |txs: &mut Vec<Transaction>, an: &mut Analyzer, out: &mut Vec<Finding>| {
            for tx in txs.drain(..) {
                an.push(&tx, out);
            }
        };
        for ev in &evs {
            pairer.expire(ev.rec.ts_ns, &mut txs);
            pairer.push(ev, &mut txs);
            feed(&mut txs, &mut an, &mut out);
            an.expire(ev.rec.ts_ns, &mut out);
        }
        // Time passes (ticks every 100 ms) until the capture ends at 30 s.
        for tick in (t / (100 * MS))..300 {
            pairer.expire(tick * 100 * MS, &mut txs);
            feed(&mut txs, &mut an, &mut out);
            an.expire(tick * 100 * MS, &mut out);
        }
        let before_end = out.len();
        pairer.finish(&mut txs);
        feed(&mut txs, &mut an, &mut out);
        an.finish(&mut out);
        assert_eq!(before_end, out.len(), "everything was reported before the end of input");
        assert_eq!(pairer.stats(), crate::analyze::pairing::PairStats::default());
        check_seed(&out, 2, 4004.0, "twice (4.0 s of 4.0 s)");
    }

    #[test]
    fn retry_on_next_nameserver_joins_the_walk_and_repeats_stay_apart() {
        let mut an = Analyzer::new();
        an.resolv_conf(&evidence(4242, &format!("{K8S_CONF}nameserver 10.0.2.54\n")));
        let mut v = Vec::new();
        for (n, t0) in [0u64, 20_000 * MS].into_iter().enumerate() {
            let port = 40000 + 100 * n as u16;
            for (i, s) in SEARCH.iter().take(3).enumerate() {
                v.push(cq(t0 + i as u64 * MS, port + i as u16, &format!("{BASE}.{s}"), A, Some((NX, MS / 2, 0))));
            }
            let name = format!("{BASE}.localdomain");
            v.push(cq(t0 + 3 * MS, port + 3, &name, A, None));
            let mut second = tx(t0 + 2003 * MS, &format!("10.0.1.5:{}", port + 4), "10.0.2.54:53", &name, A, None);
            second.observed = crate::analyze::Observed::Client;
            v.push(second);
            v.push(cq(t0 + 4003 * MS, port + 5, BASE, A, Some((NOERROR, MS, 1))));
        }
        let out = run(&mut an, v, true);
        let f = fanouts(&out);
        assert_eq!(f.len(), 2, "{out:#?}");
        for f in f {
            assert_eq!(f.attempts.len(), 6);
            assert!((f.wasted_ms - 4003.0).abs() < 2.0, "{}", f.wasted_ms);
            assert!(f.cause.contains("*.localdomain timed out twice (4.0 s of 4.0 s)"), "{}", f.cause);
        }
    }

    #[test]
    fn exhausted_walk_is_reported_once_settled() {
        for with_conf in [true, false] {
            let mut an = Analyzer::new();
            if with_conf {
                an.resolv_conf(&evidence(4242, K8S_CONF));
            }
            let mut v = Vec::new();
            for (i, s) in SEARCH.iter().enumerate() {
                let name = format!("nosuch.{s}");
                let outcome = if i == 3 { None } else { Some((NX, MS / 2, 0)) };
                v.push(cq(i as u64 * MS, 40000 + i as u16, &name, A, outcome));
            }
            v.push(cq(2003 * MS, 40010, "nosuch", A, Some((NX, MS, 0))));
            let mut out = run(&mut an, v, false);
            an.expire(13_000 * MS, &mut out);
            let f = fanouts(&out);
            assert_eq!(f.len(), 1, "{out:#?}");
            assert_eq!(f[0].base_name, "nosuch");
            assert_eq!(f[0].answered_by, None);
            assert_eq!(f[0].attempts.len(), 5);
            assert!(f[0].cause.contains("no name answered"), "{}", f[0].cause);
            assert_eq!(f[0].timed_out_suffixes, ["localdomain"]);
            let mut rest = Vec::new();
            an.finish(&mut rest);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn label_helpers() {
        assert_eq!(common_label_prefix("a.b.c", "a.b.d"), "a.b");
        assert_eq!(common_label_prefix("ab.c", "a.c"), "");
        assert!(ends_with_label("x.cluster.local", "cluster.local"));
        assert!(!ends_with_label("xcluster.local", "cluster.local"));
        assert_eq!(union_len([(0, 10), (5, 20), (30, 31)].into_iter()), 21);
    }
}
