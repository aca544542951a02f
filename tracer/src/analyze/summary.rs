//! `ktrace dns --summary`: per pod and per resolver counts and latency percentiles.
//!
//! Latencies are kept exactly for the first [`EXACT_SAMPLES`] answers of a
//! row, then in logarithmic buckets 2 % wide, so memory per row is bounded
//! and percentiles stay within about 1 %.

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, sync::Arc};

use serde::Serialize;

use super::{Finding, Transaction};
use crate::{hash::FastMap, model::PodRef};

/// Answers per row whose latencies are kept exactly.
pub const EXACT_SAMPLES: usize = 10_000;
/// Most rows per scope; further pods or resolvers are added up in `(other)`.
pub const MAX_ROWS: usize = 10_000;
const OTHER: &str = "(other)";
const BUCKETS: usize = 1000;
const BUCKET_BASE_NS: f64 = 1000.0;
const BUCKET_GROWTH: f64 = 1.02;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;

/// Latency distribution: exact up to [`EXACT_SAMPLES`], bucketed beyond.
#[derive(Clone, Debug, Default)]
struct Latencies {
    exact: Vec<u64>,
    buckets: Vec<u64>,
    count: u64,
}

impl Latencies {
    fn push(&mut self, ns: u64) {
        self.count += 1;
        if self.buckets.is_empty() && self.exact.len() < EXACT_SAMPLES {
            self.exact.push(ns);
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS];
            for v in std::mem::take(&mut self.exact) {
                self.bucket_add(v);
            }
        }
        self.bucket_add(ns);
    }

    /// The bucket of `ns` by its definition (a logarithm): what
    /// [`BucketIndex`] answers without one.
    fn bucket_by_ln(ns: u64) -> usize {
        let v = ns as f64;
        if v < BUCKET_BASE_NS {
            return 0;
        }
        let i = ((v / BUCKET_BASE_NS).ln() / BUCKET_GROWTH.ln()) as usize + 1;
        i.min(BUCKETS - 1)
    }

    fn bucket_add(&mut self, ns: u64) {
        self.bucket_add_at(BUCKET_INDEX.get_or_init(BucketIndex::new).bucket(ns));
    }

    fn bucket_add_at(&mut self, i: usize) {
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
    }

    /// [`Self::push`] with the bucket of `ns` looked up at most once for
    /// the two rows a transaction counts in (`bucket`: `usize::MAX` until then).
    #[expect(clippy::inline_always, reason = "called twice per transaction; the call was ~15 of ~50 instructions")]
    #[inline(always)]
    fn push_sharing(&mut self, ns: u64, bucket: &mut usize) {
        if self.buckets.is_empty() {
            self.push(ns);
            return;
        }
        self.count += 1;
        if *bucket == usize::MAX {
            *bucket = BUCKET_INDEX.get_or_init(BucketIndex::new).bucket(ns);
        }
        self.bucket_add_at(*bucket);
    }

    /// The `q` quantile (0..=1) in ns, nearest-rank.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        if self.buckets.is_empty() {
            let mut v = self.exact.clone();
            v.sort_unstable();
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            return v.get(rank - 1).copied();
        }
        let total: u64 = self.buckets.iter().sum();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                if i == 0 {
                    return Some(0);
                }
                // Middle of the bucket.
                let lo = BUCKET_BASE_NS * BUCKET_GROWTH.powi(i as i32 - 1);
                return Some((lo * (1.0 + BUCKET_GROWTH) / 2.0) as u64);
            }
        }
        None
    }
}

/// Sub-cells per power of two in [`BucketIndex`]: a cell is at most
/// 1/128 of its lower end wide (0.8 %), narrower than a bucket (2 %), so
/// at most one bucket starts inside it.
const CELL_BITS: u32 = 7;

static BUCKET_INDEX: std::sync::OnceLock<BucketIndex> = std::sync::OnceLock::new();

/// [`Latencies::bucket_by_ln`] as two table reads: the logarithm per
/// answered query (twice, client and server row) was ~100 of the ~400
/// instructions of counting one in `--summary` (callgrind, hot-cap).
/// Built from that function itself, so every bucket is the same.
#[derive(Debug)]
struct BucketIndex {
    /// `starts[i]`: the least ns in bucket `i`.
    starts: Box<[u64]>,
    /// Per cell (power of two and the next [`CELL_BITS`] bits of a value):
    /// the bucket of the cell's least value.
    cells: Box<[u16]>,
}

impl BucketIndex {
    fn new() -> Self {
        let mut starts = vec![0u64; BUCKETS];
        for (i, s) in starts.iter_mut().enumerate().skip(1) {
            // Near the exact start (floating point), then onto it.
            let mut g = (BUCKET_BASE_NS * BUCKET_GROWTH.powi(i as i32 - 1)) as u64;
            while g > 0 && Latencies::bucket_by_ln(g - 1) >= i {
                g -= 1;
            }
            while Latencies::bucket_by_ln(g) < i {
                g += 1;
            }
            *s = g;
        }
        let mut cells = vec![0u16; 64 << CELL_BITS];
        let mut b = 0usize;
        for (c, cell) in cells.iter_mut().enumerate() {
            let lo = Self::cell_low(c);
            while b + 1 < BUCKETS && starts[b + 1] <= lo {
                b += 1;
            }
            *cell = b as u16;
        }
        Self { starts: starts.into_boxed_slice(), cells: cells.into_boxed_slice() }
    }

    #[inline]
    fn cell(ns: u64) -> usize {
        let top = (ns | 1).ilog2();
        let sub = if top >= CELL_BITS { ns >> (top - CELL_BITS) } else { ns << (CELL_BITS - top) };
        ((top as usize) << CELL_BITS) | (sub as usize & ((1 << CELL_BITS) - 1))
    }

    /// The least value whose [`Self::cell`] is `c` (the cell's first value
    /// that exists: cells below 2^7 hold one value or none).
    fn cell_low(c: usize) -> u64 {
        let (top, sub) = ((c >> CELL_BITS) as u32, (c & ((1 << CELL_BITS) - 1)) as u64);
        let v = (1u128 << top) | (u128::from(sub) << top) >> CELL_BITS;
        // Cells of small powers are finer than one: their least value rounds up.
        let exact = (u128::from(sub) << top).trailing_zeros() >= CELL_BITS;
        u64::try_from(if exact { v } else { v + 1 }).unwrap_or(u64::MAX)
    }

    #[inline]
    fn bucket(&self, ns: u64) -> usize {
        let b = self.cells.get(Self::cell(ns)).map_or(0, |&b| usize::from(b));
        // One start at most lies inside a cell.
        if self.starts.get(b + 1).is_some_and(|&s| ns >= s) { b + 1 } else { b }
    }
}

#[derive(Clone, Debug, Default)]
struct Counters {
    queries: u64,
    answered: u64,
    nxdomain: u64,
    servfail: u64,
    timeouts: u64,
    retransmits: u64,
    findings: u64,
    latency: Latencies,
}

/// What one transaction adds to each of its two rows, worked out once.
struct Delta {
    retransmits: u64,
    timeouts: u64,
    nxdomain: u64,
    servfail: u64,
    answered: u64,
    latency: Option<u64>,
    /// The latency's bucket once looked up (`usize::MAX`: not yet).
    bucket: usize,
}

impl Delta {
    #[inline]
    fn of(tx: &Transaction) -> Self {
        Self {
            retransmits: u64::from(tx.retransmits),
            timeouts: u64::from(tx.timed_out),
            nxdomain: u64::from(tx.rcode == Some(RCODE_NXDOMAIN)),
            servfail: u64::from(tx.rcode == Some(RCODE_SERVFAIL)),
            answered: u64::from(!tx.timed_out && tx.rcode.is_some()),
            latency: tx.latency_ns,
            bucket: usize::MAX,
        }
    }
}

impl Counters {
    #[inline]
    fn add(&mut self, d: &mut Delta) {
        self.queries += 1;
        self.retransmits += d.retransmits;
        self.timeouts += d.timeouts;
        self.nxdomain += d.nxdomain;
        self.servfail += d.servfail;
        self.answered += d.answered;
        if let Some(l) = d.latency {
            self.latency.push_sharing(l, &mut d.bucket);
        }
    }
}

/// Which table a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A client (pod, or address when the pod is unknown).
    Pod,
    /// A server the clients queried (pod, or address).
    Resolver,
}

/// One line of the summary (JSON: the lead adds `"type": "summary"`, or use
/// [`SummaryRow::to_json`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRow {
    /// Pod or resolver.
    pub scope: Scope,
    /// `namespace/name`, or the address when no pod is known.
    pub name: String,
    /// Transactions.
    pub queries: u64,
    /// Answered (any rcode).
    pub answered: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// NXDOMAIN / queries.
    pub nxdomain_ratio: f64,
    /// SERVFAIL answers.
    pub servfail: u64,
    /// Unanswered.
    pub timeouts: u64,
    /// Same-id retransmits.
    pub retransmits: u64,
    /// Median latency of answered queries.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of answered queries.
    pub p99_ms: Option<f64>,
    /// Findings about this pod or resolver.
    pub findings: u64,
}

impl SummaryRow {
    /// `{"type": "summary", ...row}`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("type".to_owned(), serde_json::Value::from("summary"));
        }
        v
    }
}

/// Who a transaction counts for, as it comes (no text formatted): the
/// per-transaction path looks rows up by this, and only a new one pays for
/// its name. Formatting the address per transaction was ~10 % of
/// `ktrace dns -r --summary` (perf, 500k messages).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Pod(Arc<str>, Arc<str>),
    Ip(IpAddr),
    Sock(IpAddr, u16),
}

/// Per pod and per resolver counters.
///
/// Memory: at most [`MAX_ROWS`] rows per scope (plus `(other)`), each at
/// most [`EXACT_SAMPLES`] latencies (80 KB) or 1,000 buckets (8 KB); the
/// lookup cache of typed keys holds at most `2 × MAX_ROWS` per scope.
#[derive(Debug, Default)]
pub struct Summary {
    rows: Vec<(Scope, String, Counters)>,
    by_name: HashMap<(Scope, String), usize>,
    by_who: FastMap<(Scope, Who), usize>,
    per_scope: HashMap<Scope, usize>,
    /// The row of the last client and of the last server: a node's
    /// transactions come in runs from the same few, and building the key
    /// and hashing its strings was most of counting one.
    last: [Option<(Who, usize)>; 2],
}

impl Summary {
    /// Empty summary.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&mut self, scope: Scope, name: String) -> usize {
        if let Some(&i) = self.by_name.get(&(scope, name.clone())) {
            return i;
        }
        let n = self.per_scope.entry(scope).or_default();
        let name = if *n >= MAX_ROWS {
            let other = (scope, OTHER.to_owned());
            if let Some(&i) = self.by_name.get(&other) {
                return i;
            }
            OTHER.to_owned()
        } else {
            *n += 1;
            name
        };
        let i = self.rows.len();
        self.rows.push((scope, name.clone(), Counters::default()));
        self.by_name.insert((scope, name), i);
        i
    }

    fn row(&mut self, scope: Scope, name: String) -> &mut Counters {
        let i = self.index(scope, name);
        &mut self.rows[i].2
    }

    fn row_of(&mut self, scope: Scope, who: Who) -> usize {
        let key = (scope, who);
        if let Some(&i) = self.by_who.get(&key) {
            i
        } else {
            let name = match &key.1 {
                Who::Pod(ns, name) => format!("{ns}/{name}"),
                Who::Ip(ip) => ip.to_string(),
                Who::Sock(ip, port) => crate::event::Endpoint { ip: *ip, port: *port }.to_string(),
            };
            let i = self.index(scope, name);
            // Keys folded into `(other)` could be unbounded in number:
            // past the bound they take the slow path instead.
            if self.by_who.len() < 4 * MAX_ROWS {
                self.by_who.insert(key, i);
            }
            i
        }
    }

    /// Counts one transaction for its client and its server: what it adds
    /// is worked out once and added to both rows (counting each row on its
    /// own, the latency's bucket included, was ~160 of ~310 instructions
    /// per transaction, callgrind, hot-cap).
    pub fn push(&mut self, tx: &Transaction) {
        let client = self.cached_row(0, tx.client_pod.as_ref(), Who::Ip(tx.client.ip), Scope::Pod);
        let server =
            self.cached_row(1, tx.server_pod.as_ref(), Who::Sock(tx.server.ip, tx.server.port), Scope::Resolver);
        let mut d = Delta::of(tx);
        if let Some((.., c)) = self.rows.get_mut(client) {
            c.add(&mut d);
        }
        if let Some((.., c)) = self.rows.get_mut(server) {
            c.add(&mut d);
        }
    }

    /// The row of a pod (else the address `addr`) in `scope`, from the one-entry cache
    /// `slot` when it is the same pod (the same shared strings) or address.
    #[expect(clippy::inline_always, reason = "a hit is a few compares; called twice per transaction")]
    #[inline(always)]
    fn cached_row(&mut self, slot: usize, pod: Option<&PodRef>, addr: Who, scope: Scope) -> usize {
        let hit = match (self.last.get(slot), pod) {
            (Some(Some((Who::Pod(ns, name), i))), Some(p))
                if Arc::ptr_eq(ns, &p.namespace) && Arc::ptr_eq(name, &p.name) =>
            {
                Some(*i)
            }
            (Some(Some((w @ (Who::Ip(_) | Who::Sock(..)), i))), None) if *w == addr => Some(*i),
            _ => None,
        };
        match hit {
            Some(i) => i,
            None => self.new_row(slot, pod, addr, scope),
        }
    }

    #[inline(never)]
    fn new_row(&mut self, slot: usize, pod: Option<&PodRef>, addr: Who, scope: Scope) -> usize {
        let who = pod.map_or(addr, |p| Who::Pod(Arc::clone(&p.namespace), Arc::clone(&p.name)));
        let i = self.row_of(scope, who.clone());
        if let Some(l) = self.last.get_mut(slot) {
            *l = Some((who, i));
        }
        i
    }

    /// Counts a finding for the pod (fan-out, storm) or resolver (upstream timeout).
    pub fn finding(&mut self, f: &Finding) {
        let (scope, name) = match f {
            Finding::SearchFanout(s) => (Scope::Pod, s.pod.clone().unwrap_or_else(|| s.client.ip.to_string())),
            Finding::NxdomainStorm(s) => (Scope::Pod, s.pod.clone().unwrap_or_else(|| s.client.clone())),
            Finding::UpstreamTimeout(u) => {
                (Scope::Resolver, u.resolver.pod.clone().unwrap_or_else(|| u.resolver.address.clone()))
            }
            // Aggregates: their findings are counted where they are reported in full.
            Finding::SearchFanoutSummary(_) | Finding::Repeated(_) => return,
        };
        self.row(scope, name).findings += 1;
    }

    /// Rows, pods first, each scope by queries (most first).
    #[must_use]
    pub fn rows(&self) -> Vec<SummaryRow> {
        let mut rows: Vec<SummaryRow> = self
            .rows
            .iter()
            .map(|(scope, name, c)| SummaryRow {
                scope: *scope,
                name: name.clone(),
                queries: c.queries,
                answered: c.answered,
                nxdomain: c.nxdomain,
                nxdomain_ratio: if c.queries == 0 { 0.0 } else { c.nxdomain as f64 / c.queries as f64 },
                servfail: c.servfail,
                timeouts: c.timeouts,
                retransmits: c.retransmits,
                p50_ms: c.latency.quantile(0.5).map(ms),
                p99_ms: c.latency.quantile(0.99).map(ms),
                findings: c.findings,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.scope == Scope::Resolver)
                .cmp(&(b.scope == Scope::Resolver))
                .then(b.queries.cmp(&a.queries))
                .then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    /// The rows as JSON objects with `"type": "summary"`.
    #[must_use]
    pub fn json_rows(&self) -> Vec<serde_json::Value> {
        self.rows().iter().map(SummaryRow::to_json).collect()
    }

    /// The rows as an aligned text table.
    #[must_use]
    pub fn render_table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).clamp(4, 60);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<8} {:<width$} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>8}",
            "SCOPE", "NAME", "QUERIES", "NXDOM%", "SERVFAIL", "TIMEOUTS", "P50", "P99", "FINDINGS"
        );
        let fmt_ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"));
        for r in rows {
            let scope = match r.scope {
                Scope::Pod => "pod",
                Scope::Resolver => "resolver",
            };
            let _ = writeln!(
                s,
                "{:<8} {:<width$} {:>8} {:>6.1} {:>8} {:>8} {:>9} {:>9} {:>8}",
                scope,
                r.name,
                r.queries,
                r.nxdomain_ratio * 100.0,
                r.servfail,
                r.timeouts,
                fmt_ms(r.p50_ms),
                fmt_ms(r.p99_ms),
                r.findings
            );
        }
        s
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::pairing::test_util::{MS, pod, tx};

    #[test]
    fn counts_ratios_and_percentiles() {
        let mut s = Summary::new();
        for i in 0..100u64 {
            let rcode = if i % 4 == 0 { 3 } else { 0 };
            let mut t = tx(i * MS, "10.0.1.5:40000", "10.0.2.53:53", "a.b", 1, Some((rcode, (i + 1) * MS, 1)));
            t.server_pod = Some(pod("kube-system", "kube-dns"));
            s.push(&t);
        }
        let mut t = tx(0, "10.0.1.9:40000", "10.0.2.53:53", "a.b", 1, None);
        t.client_pod = None;
        t.server_pod = Some(pod("kube-system", "kube-dns"));
        s.push(&t);
        let rows = s.rows();
        assert_eq!(rows.len(), 3);
        let p = &rows[0];
        assert_eq!(
            (p.scope, p.name.as_str(), p.queries, p.nxdomain, p.timeouts),
            (Scope::Pod, "critical-app/client", 100, 25, 0)
        );
        assert!((p.nxdomain_ratio - 0.25).abs() < 1e-9);
        assert_eq!((p.p50_ms, p.p99_ms), (Some(50.0), Some(99.0)));
        assert_eq!(rows[1].name, "10.0.1.9");
        assert_eq!(rows[1].timeouts, 1);
        assert_eq!(
            (rows[2].scope, rows[2].name.as_str(), rows[2].queries),
            (Scope::Resolver, "kube-system/kube-dns", 101)
        );
        assert_eq!(s.json_rows().len(), 3);
        let j = rows[2].to_json();
        assert_eq!(j["type"], "summary");
        assert_eq!(j["scope"], "resolver");
        let table = s.render_table();
        assert!(table.lines().count() == 4 && table.contains("kube-system/kube-dns"), "{table}");
    }

    #[test]
    fn bucketed_percentiles_stay_close() {
        let mut l = Latencies::default();
        for i in 1..=50_000u64 {
            l.push(i * 1000);
        }
        assert!(l.exact.is_empty());
        let p50 = l.quantile(0.5).unwrap() as f64;
        let p99 = l.quantile(0.99).unwrap() as f64;
        assert!((p50 / 25_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 49_500_000.0 - 1.0).abs() < 0.02, "{p99}");
        l.push(u64::MAX);
        l.push(0);
        assert!(l.quantile(1.0).is_some());
    }

    /// The table gives every value the bucket the logarithm does: around
    /// each bucket's start, at every cell edge and over a spread of values.
    #[test]
    fn bucket_index_matches_the_logarithm() {
        let ix = BucketIndex::new();
        let check = |ns: u64| assert_eq!(ix.bucket(ns), Latencies::bucket_by_ln(ns), "{ns}");
        check(u64::MAX);
        for &s in &ix.starts {
            for d in 0..=64 {
                check(s.saturating_sub(d));
                check(s.saturating_add(d));
            }
        }
        for c in 0..ix.cells.len() {
            let lo = BucketIndex::cell_low(c);
            check(lo);
            check(lo.saturating_sub(1));
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x >> (x % 64));
        }
        for ns in 0..20_000 {
            check(ns);
        }
    }

    #[test]
    fn rows_are_bounded() {
        let mut s = Summary::new();
        for i in 0..(MAX_ROWS as u32 + 10) {
            let mut t =
                tx(0, &format!("10.{}.{}.{}:1", i >> 16 & 255, i >> 8 & 255, i & 255), "10.0.0.1:53", "a", 1, None);
            t.client_pod = None;
            s.push(&t);
        }
        let rows = s.rows();
        assert_eq!(rows.iter().filter(|r| r.scope == Scope::Pod).count(), MAX_ROWS + 1);
        assert!(rows.iter().any(|r| r.name == OTHER && r.queries == 10));
    }
}
