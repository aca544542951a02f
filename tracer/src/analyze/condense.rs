//! Keeps findings signal on a busy node.
//!
//! Every external lookup from a pod with Kubernetes' default `ndots:5` walks
//! the search list; answered in a millisecond each, such walks are how DNS
//! works there, not an incident. The [`Analyzer`](super::Analyzer) reports
//! every walk; this stage, between it and the output, keeps a walk as its own
//! finding only when it cost the client real time (`--slow`) or contains a
//! timeout or SERVFAIL, and counts the others per (pod, base name) into
//! periodic [`FanoutSummary`] records. Findings with one cause (the same
//! failing suffix or name at the same resolver, the same dead upstream, the
//! same name in an NXDOMAIN storm) are reported in full the first time; the
//! repeats become counts and top pods in periodic [`Repeated`] records.
//! Every map is bounded; what is evicted is counted.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use serde::Serialize;

use crate::{event::Endpoint, hash::FastMap};

pub use crate::model::finding::{FanoutGroup, FanoutSummary, PodCount, Repeated};

use super::{Finding, Transaction, findings::SearchFanout};

const RCODE_SERVFAIL: &str = "SERVFAIL";
/// glibc's default per-try timeout (`options timeout:5`).
const DEFAULT_TRY_MS: f64 = 5000.0;

/// Limits and thresholds of the condensing stage.
#[derive(Clone, Copy, Debug)]
pub struct CondenseConfig {
    /// A walk that took at least this long (first query → answer) is slow:
    /// reported on its own (`--slow`).
    pub slow_ns: u64,
    /// Period of the aggregate and repeat updates (record time).
    pub report_every_ns: u64,
    /// Most (pod, base name) groups of fast walks (oldest evicted beyond).
    pub max_groups: usize,
    /// Most causes remembered for folding (oldest evicted beyond).
    pub max_causes: usize,
    /// Most pods counted per cause (further pods are added up as others).
    pub max_pods_per_cause: usize,
    /// Rows in a summary's `top` and a repeat record's `top_pods`.
    pub top: usize,
}

impl Default for CondenseConfig {
    fn default() -> Self {
        Self {
            slow_ns: 100_000_000,
            report_every_ns: 60_000_000_000,
            max_groups: 4096,
            max_causes: 1024,
            max_pods_per_cause: 256,
            top: 10,
        }
    }
}

/// Whether a walk is reported on its own by a condenser with `slow_ns`
/// (else it is only counted): the analyzer asks too, to skip writing the
/// text of walks that will be folded.
#[must_use]
pub fn walk_is_slow(f: &SearchFanout, slow_ns: u64) -> bool {
    f.total_ms * 1e6 >= slow_ns as f64
        || f.attempts.iter().any(|a| a.timed_out || a.rcode.as_deref() == Some(RCODE_SERVFAIL))
}

/// A walk the condensing stage only counts (a fast [`SearchFanout`]): what
/// counting it reads. The analyzer hands these over instead of building
/// the finding (see `analyze::dns::fold`).
#[derive(Clone, Debug)]
pub struct FastWalk {
    /// First attempt's start.
    pub ts_ns: u64,
    /// Client pod (`namespace/name`), as the finding names it.
    pub pod: Option<String>,
    /// Client address (names the walk when there is no pod).
    pub client_ip: IpAddr,
    /// Resolver asked.
    pub server: Endpoint,
    /// Name looked up.
    pub base_name: String,
    /// Client process name.
    pub comm: Option<Arc<str>>,
    /// Attempts other than the answered one.
    pub extra: u64,
    /// The finding's `wasted_ms`.
    pub wasted_ms: f64,
}

impl FastWalk {
    /// What counting `f` reads of it.
    #[must_use]
    pub fn of(f: &SearchFanout) -> Self {
        Self {
            ts_ns: f.ts_ns,
            pod: f.pod.clone(),
            client_ip: f.client.ip,
            server: f.server,
            base_name: f.base_name.clone(),
            comm: f.process.as_ref().map(|p| Arc::clone(&p.comm)),
            extra: f.attempts.iter().filter(|a| Some(&a.qname) != f.answered_by.as_ref()).count() as u64,
            wasted_ms: f.wasted_ms,
        }
    }
}

/// What the condensing stage folded and what it had to forget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CondenseStats {
    /// Search-list walks below `--slow` without timeout or SERVFAIL, counted in aggregates.
    pub fast_walks: u64,
    /// Findings folded into the counts of a cause already reported.
    pub repeats_folded: u64,
    /// (pod, base name) groups forgotten to stay bounded (their walks stay in the totals).
    pub groups_evicted: u64,
    /// Causes forgotten to stay bounded (a later repeat is reported in full again).
    pub causes_evicted: u64,
}

/// Log-bucketed durations: 4 buckets per doubling from 1 µs (±10 %).
#[derive(Clone, Debug)]
struct Hist {
    buckets: Box<[u32; HIST_BUCKETS]>,
    n: u64,
}

const HIST_BUCKETS: usize = 96;

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: Box::new([0; HIST_BUCKETS]), n: 0 }
    }
}

impl Hist {
    fn bucket(ns: u64) -> usize {
        let us = (ns / 1000).max(1) as f64;
        ((us.log2() * 4.0) as usize).min(HIST_BUCKETS - 1)
    }
    fn add(&mut self, ns: u64) {
        let b = Self::bucket(ns);
        self.buckets[b] = self.buckets[b].saturating_add(1);
        self.n += 1;
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
        self.n += o.n;
    }
    /// The `q` quantile in ms (the bucket's geometric middle).
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let want = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= want {
                let us = 2f64.powf((i as f64 + 0.5) / 4.0);
                return (us / 1000.0 * 1000.0).round() / 1000.0;
            }
        }
        0.0
    }
}

#[derive(Debug)]
struct Group {
    comm: Option<String>,
    server: String,
    server_ip: IpAddr,
    lookups: u64,
    extra: u64,
    wasted_ns: u64,
    hist: Hist,
}

#[derive(Debug)]
struct Cause {
    kind: &'static str,
    first_ts: u64,
    first_text: String,
    last_ts: u64,
    count: u64,
    /// `count` when last reported (in full or in a [`Repeated`] update).
    reported: u64,
    /// Client processes whose finding of this cause was shown in full.
    full_pids: Vec<u32>,
    pods: FastMap<String, u64>,
    other_pods: u64,
    lost_ns: u64,
}

/// A map bounded by insertion order: inserting beyond the bound forgets the oldest.
#[derive(Debug)]
struct Fifo<K, V> {
    map: FastMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V> Default for Fifo<K, V> {
    fn default() -> Self {
        Self { map: FastMap::default(), order: VecDeque::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Fifo<K, V> {
    /// The entry for `k`, made with `make` if new; the evicted entry, if any.
    fn entry(&mut self, k: K, cap: usize, make: impl FnOnce() -> V) -> (&mut V, Option<(K, V)>) {
        // Below the bound nothing is evicted: one lookup (this runs per
        // fast walk, and hashing the key twice was most of its cost).
        if self.map.len() < cap.max(1) {
            let v = match self.map.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    self.order.push_back(e.key().clone());
                    e.insert(make())
                }
            };
            return (v, None);
        }
        let mut evicted = None;
        if !self.map.contains_key(&k) {
            if self.map.len() >= cap.max(1)
                && let Some(old) = self.order.pop_front()
                && let Some(v) = self.map.remove(&old)
            {
                evicted = Some((old, v));
            }
            self.order.push_back(k.clone());
        }
        (self.map.entry(k).or_insert_with(make), evicted)
    }
}

/// The condensing stage (see the module documentation).
#[derive(Debug, Default)]
pub struct Condenser {
    cfg: CondenseConfig,
    stats: CondenseStats,
    groups: Fifo<(String, String), Group>,
    causes: Fifo<String, Cause>,
    /// Queries every resolver received (by server IP), for the shares.
    resolver_queries: FastMap<IpAddr, u64>,
    /// Totals over every fast walk, evicted groups included.
    total: Hist,
    total_extra: u64,
    total_wasted_ns: u64,
    first_walk_ts: Option<u64>,
    reported_walks: u64,
    /// Fast walks per resolver IP (for the overall share).
    extra_by_resolver: FastMap<IpAddr, u64>,
    next_report: Option<u64>,
    now: u64,
}

/// Processes of one pod whose findings of one cause are shown in full.
const SAME_POD_IN_FULL: usize = 3;

/// Most resolvers whose query totals are kept.
const MAX_RESOLVERS: usize = 4096;

impl Condenser {
    /// A condenser with these limits.
    #[must_use]
    pub fn new(cfg: CondenseConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> CondenseStats {
        self.stats
    }

    /// Counts a transaction towards its resolver's query total.
    pub fn transaction(&mut self, tx: &Transaction) {
        self.count_queries(tx.server.ip, 1 + u64::from(tx.retransmits));
    }

    /// Counts `n` queries a resolver received.
    pub fn count_queries(&mut self, server: IpAddr, n: u64) {
        if let Some(c) = self.resolver_queries.get_mut(&server) {
            *c += n;
        } else if self.resolver_queries.len() < MAX_RESOLVERS {
            self.resolver_queries.insert(server, n);
        }
    }

    /// Whether a walk is reported on its own.
    #[must_use]
    pub fn is_slow(&self, f: &SearchFanout) -> bool {
        walk_is_slow(f, self.cfg.slow_ns)
    }

    /// Takes one finding; what is to be shown goes to `out`.
    pub fn push(&mut self, f: Finding, out: &mut Vec<Finding>) {
        self.now = self.now.max(ts_of(&f));
        if let Finding::SearchFanout(s) = &f
            && !self.is_slow(s)
        {
            self.count_fast(FastWalk::of(s));
            return;
        }
        let Some((kind, key)) = cause_key(&f) else {
            out.push(f);
            return;
        };
        let pod = who(&f);
        let lost = lost_ns(&f);
        let ts = ts_of(&f);
        let (cfg, mut fresh) = (self.cfg, false);
        let (c, evicted) = self.causes.entry(key, cfg.max_causes, || {
            fresh = true;
            Cause {
                kind,
                first_ts: ts,
                first_text: cause_of(&f).to_owned(),
                last_ts: ts,
                count: 0,
                reported: 1,
                full_pids: Vec::new(),
                pods: FastMap::default(),
                other_pods: 0,
                lost_ns: 0,
            }
        });
        c.count += 1;
        c.last_ts = c.last_ts.max(ts);
        c.lost_ns = c.lost_ns.saturating_add(lost);
        // One pod's few processes hitting the cause are one incident told
        // in full (curl after getent in the same pod); the same process
        // again, or a second pod, is folded.
        let pid = pid_of(&f);
        let own_incident = !fresh
            && c.full_pids.len() < SAME_POD_IN_FULL
            && c.other_pods == 0
            && c.pods.len() == 1
            && c.pods.contains_key(&pod)
            && pid.is_some_and(|p| !c.full_pids.contains(&p));
        if let Some(n) = c.pods.get_mut(&pod) {
            *n += 1;
        } else if c.pods.len() < cfg.max_pods_per_cause.max(1) {
            c.pods.insert(pod, 1);
        } else {
            c.other_pods += 1;
        }
        if evicted.is_some() {
            self.stats.causes_evicted += 1;
        }
        if fresh || own_incident {
            if let Some(p) = pid.filter(|_| c.full_pids.len() < SAME_POD_IN_FULL) {
                c.full_pids.push(p);
            }
            if own_incident {
                c.reported += 1;
            }
            out.push(f);
        } else {
            self.stats.repeats_folded += 1;
        }
        self.arm();
    }

    /// Takes a walk the analyzer already found fast (as [`Self::push`]
    /// does with a fast [`SearchFanout`]).
    pub fn push_fast(&mut self, w: FastWalk) {
        self.now = self.now.max(w.ts_ns);
        self.count_fast(w);
    }

    fn arm(&mut self) {
        if self.next_report.is_none() {
            self.next_report = Some(self.now.saturating_add(self.cfg.report_every_ns));
        }
    }

    fn count_fast(&mut self, f: FastWalk) {
        self.stats.fast_walks += 1;
        let pod = f.pod.unwrap_or_else(|| ip_string(f.client_ip));
        let extra = f.extra;
        let wasted = (f.wasted_ms * 1e6) as u64;
        let cfg = self.cfg;
        let (g, evicted) = self.groups.entry((pod, f.base_name), cfg.max_groups, || Group {
            comm: None,
            server: f.server.to_string(),
            server_ip: f.server.ip,
            lookups: 0,
            extra: 0,
            wasted_ns: 0,
            hist: Hist::default(),
        });
        g.lookups += 1;
        g.extra += extra;
        g.wasted_ns = g.wasted_ns.saturating_add(wasted);
        g.hist.add(wasted);
        if let Some(c) = &f.comm
            && g.comm.as_deref() != Some(&**c)
        {
            g.comm = Some(c.to_string());
        }
        if evicted.is_some() {
            self.stats.groups_evicted += 1;
        }
        self.total.add(wasted);
        self.total_extra += extra;
        self.total_wasted_ns = self.total_wasted_ns.saturating_add(wasted);
        if let Some(n) = self.extra_by_resolver.get_mut(&f.server.ip) {
            *n += extra;
        } else if self.extra_by_resolver.len() < MAX_RESOLVERS {
            self.extra_by_resolver.insert(f.server.ip, extra);
        }
        self.first_walk_ts.get_or_insert(f.ts_ns);
        self.arm();
    }

    /// Time passes: the periodic updates are due at `now_ns`.
    #[inline]
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.now = self.now.max(now_ns);
        if self.next_report.is_some_and(|t| self.now >= t) {
            self.report(out);
            self.next_report = None;
        }
    }

    /// End of input: the last updates.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        self.report(out);
    }

    fn report(&mut self, out: &mut Vec<Finding>) {
        let now = self.now;
        if self.stats.fast_walks > self.reported_walks {
            out.push(Finding::SearchFanoutSummary(self.summary(now)));
            self.reported_walks = self.stats.fast_walks;
        }
        let mut due: Vec<(&String, &mut Cause)> =
            self.causes.map.iter_mut().filter(|(_, c)| c.count > c.reported).collect();
        due.sort_by_key(|(_, c)| c.first_ts);
        for (key, c) in due {
            let new = c.count - c.reported;
            c.reported = c.count;
            let mut top: Vec<PodCount> = c.pods.iter().map(|(p, n)| PodCount { pod: p.clone(), count: *n }).collect();
            top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.pod.cmp(&b.pod)));
            top.truncate(self.cfg.top);
            let pods = c.pods.len() as u64 + c.other_pods;
            let cause = format!(
                "{} more {} finding(s) with the same cause ({key}) after the one reported in full; {pods} pod(s) hit, {:.1} s of client time lost in all",
                c.count - 1,
                c.kind,
                c.lost_ns as f64 / 1e9
            );
            out.push(Finding::Repeated(Repeated {
                ts_ns: now,
                of_kind: c.kind.to_owned(),
                cause_key: key.clone(),
                first_ts_ns: c.first_ts,
                first_cause: c.first_text.clone(),
                last_ts_ns: c.last_ts,
                count: c.count,
                new,
                pods,
                other_pods: c.other_pods,
                top_pods: top,
                client_time_lost_ms: ms(c.lost_ns),
                cause,
            }));
        }
    }

    fn summary(&self, now: u64) -> FanoutSummary {
        let share = |extra: u64, ip: &IpAddr| -> f64 {
            let total = self.resolver_queries.get(ip).copied().unwrap_or(0);
            if total == 0 { 0.0 } else { round3(extra as f64 / total as f64) }
        };
        let mut top: Vec<(&(String, String), &Group)> = self.groups.map.iter().collect();
        top.sort_by(|a, b| b.1.wasted_ns.cmp(&a.1.wasted_ns).then_with(|| a.0.cmp(b.0)));
        top.truncate(self.cfg.top);
        let top: Vec<FanoutGroup> = top
            .into_iter()
            .map(|((pod, base), g)| FanoutGroup {
                pod: pod.clone(),
                comm: g.comm.clone(),
                base_name: base.clone(),
                server: g.server.clone(),
                lookups: g.lookups,
                extra_queries_per_lookup: round3(g.extra as f64 / g.lookups.max(1) as f64),
                share_of_resolver_queries: share(g.extra, &g.server_ip),
                wasted_p50_ms: g.hist.quantile_ms(0.5),
                wasted_p99_ms: g.hist.quantile_ms(0.99),
                wasted_total_ms: ms(g.wasted_ns),
            })
            .collect();
        let queries: u64 = self.extra_by_resolver.keys().filter_map(|ip| self.resolver_queries.get(ip)).sum();
        let extra_all: u64 = self.extra_by_resolver.values().sum();
        let lookups = self.stats.fast_walks;
        let mut pods: Vec<&String> = self.groups.map.keys().map(|(p, _)| p).collect();
        pods.sort_unstable();
        pods.dedup();
        let mut hist = Hist::default();
        hist.merge(&self.total);
        let per = round3(self.total_extra as f64 / lookups.max(1) as f64);
        let share_all = if queries == 0 { 0.0 } else { round3(extra_all as f64 / queries as f64) };
        let cause = format!(
            "{lookups} search-list walk(s) answered in under {:.0} ms each: {per:.1} extra quer{} per lookup for names with fewer dots than ndots, {:.0}% of the resolvers' queries; wasted per lookup p50 {:.1} ms, p99 {:.1} ms",
            ms(self.cfg.slow_ns),
            if (per - 1.0).abs() < f64::EPSILON { "y" } else { "ies" },
            share_all * 100.0,
            hist.quantile_ms(0.5),
            hist.quantile_ms(0.99),
        );
        FanoutSummary {
            ts_ns: now,
            first_ts_ns: self.first_walk_ts.unwrap_or(now),
            lookups,
            new_lookups: lookups - self.reported_walks,
            groups: self.groups.map.len() as u64,
            pods: pods.len() as u64,
            extra_queries_per_lookup: per,
            share_of_resolver_queries: share_all,
            wasted_p50_ms: hist.quantile_ms(0.5),
            wasted_p99_ms: hist.quantile_ms(0.99),
            wasted_total_ms: ms(self.total_wasted_ns),
            slow_ms: ms(self.cfg.slow_ns),
            top,
            groups_evicted: self.stats.groups_evicted,
            cause,
            advice: vec![
                "These walks are how ndots:5 resolves external names: fast, but each lookup costs the resolver one query per search suffix. Nothing is broken; to spare the resolver:".to_owned(),
                "Use fully-qualified names with a trailing dot in the applications' configuration (`api.example.com.`).".to_owned(),
                "Lower ndots where pods mostly resolve external names: spec.dnsConfig.options: [{name: ndots, value: \"2\"}].".to_owned(),
                "Cache close to the clients (NodeLocal DNSCache) so the misses do not reach the cluster DNS.".to_owned(),
            ],
        }
    }
}

/// What findings of one cause share, and their kind; None for what is never folded.
fn cause_key(f: &Finding) -> Option<(&'static str, String)> {
    match f {
        Finding::SearchFanout(s) => {
            let suffix_of = |q: &str| -> String {
                q.strip_prefix(s.base_name.as_str())
                    .and_then(|x| x.strip_prefix('.'))
                    .filter(|x| !x.is_empty())
                    .map_or_else(|| q.to_owned(), |x| format!("*.{x}"))
            };
            // Timed-out or SERVFAIL names, as suffixes (`*.localdomain`), or
            // as the name itself when the literal name failed.
            let mut failing: Vec<String> = Vec::new();
            for a in s.attempts.iter().filter(|a| a.timed_out || a.rcode.as_deref() == Some(RCODE_SERVFAIL)) {
                let x = suffix_of(&a.qname);
                if !failing.contains(&x) {
                    failing.push(x);
                }
            }
            failing.sort();
            let what = if failing.is_empty() { "slow".to_owned() } else { failing.join(",") };
            Some(("search_fanout", format!("resolver {}: {what}", s.server.ip)))
        }
        Finding::UpstreamTimeout(u) => {
            Some(("upstream_timeout", format!("resolver {} -> upstream {}", u.resolver.address, u.upstream)))
        }
        Finding::NxdomainStorm(n) => {
            let name = n.top_names.first().map_or("?", |t| t.qname.as_str());
            let first = name.split('.').next().unwrap_or(name);
            Some(("nxdomain_storm", format!("NXDOMAIN for {first}.*")))
        }
        Finding::SearchFanoutSummary(_) | Finding::Repeated(_) => None,
    }
}

fn ts_of(f: &Finding) -> u64 {
    match f {
        Finding::SearchFanout(s) => s.ts_ns,
        Finding::UpstreamTimeout(u) => u.ts_ns,
        Finding::NxdomainStorm(n) => n.ts_ns,
        Finding::SearchFanoutSummary(s) => s.ts_ns,
        Finding::Repeated(r) => r.ts_ns,
    }
}

fn cause_of(f: &Finding) -> &str {
    match f {
        Finding::SearchFanout(s) => &s.cause,
        Finding::UpstreamTimeout(u) => &u.cause,
        Finding::NxdomainStorm(n) => &n.cause,
        Finding::SearchFanoutSummary(s) => &s.cause,
        Finding::Repeated(r) => &r.cause,
    }
}

/// The client process a finding is about.
fn pid_of(f: &Finding) -> Option<u32> {
    match f {
        Finding::SearchFanout(s) => s.process.as_ref().map(|p| p.pid),
        Finding::UpstreamTimeout(u) => u.client.process.as_ref().map(|p| p.pid),
        _ => None,
    }
}

/// The pod (or address) a finding is about.
fn who(f: &Finding) -> String {
    match f {
        Finding::SearchFanout(s) => s.pod.clone().unwrap_or_else(|| ip_string(s.client.ip)),
        Finding::UpstreamTimeout(u) => u.client.pod.clone().unwrap_or_else(|| u.client.address.clone()),
        Finding::NxdomainStorm(n) => n.pod.clone().unwrap_or_else(|| n.client.clone()),
        Finding::SearchFanoutSummary(_) | Finding::Repeated(_) => String::new(),
    }
}

/// Client time a finding cost: the walk's wasted time (all of it when no
/// name answered), the wait on a dead upstream; storms cost resolver work, not time.
#[must_use]
pub fn lost_ns(f: &Finding) -> u64 {
    let ns = |x: f64| (x.max(0.0) * 1e6) as u64;
    match f {
        // An exhausted walk that ended in a timeout has no end: the client
        // waited at least until its last query's answer or timeout (glibc's
        // default `timeout:5`).
        Finding::SearchFanout(s) if s.answered_by.is_none() => ns(s.attempts.iter().fold(s.total_ms, |m, a| {
            m.max(a.start_ms + a.latency_ms.unwrap_or(if a.timed_out { DEFAULT_TRY_MS } else { 0.0 }))
        })),
        Finding::SearchFanout(s) => ns(s.wasted_ms),
        Finding::UpstreamTimeout(u) => ns(u.waited_ms),
        Finding::Repeated(r) => ns(r.client_time_lost_ms),
        Finding::SearchFanoutSummary(s) => ns(s.wasted_total_ms),
        Finding::NxdomainStorm(_) => 0,
    }
}

/// `ip.to_string()`, without the formatting machinery for IPv4 (~1,300
/// instructions per fast walk without a pod, callgrind).
fn ip_string(ip: IpAddr) -> String {
    let IpAddr::V4(a) = ip else { return ip.to_string() };
    let mut s = String::with_capacity(15);
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

fn ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
