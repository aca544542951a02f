//! DNS analysis: the [`pairing`] of queries with answers into transactions,
//! and the [`Analyzer`] that explains them with three detectors: search-list
//! fan-out ([`fanout`]), upstream timeouts ([`upstream`]) and NXDOMAIN
//! storms ([`storm`]). The detectors share one view of clients, resolvers
//! and resolv.conf evidence (a chain names the upstream its timed-out
//! suffix was forwarded to), so they are impl blocks of one state rather
//! than separate structs.
//!
//! Transactions arrive in completion order, not start order: an attempt that
//! timed out is only reported by the [`Pairer`] `timeout_ns` after it
//! started, long after the quick answers that followed it. Chains are
//! therefore formed when their answer arrives and kept open, absorbing late
//! attempts, until either the resolv.conf evidence says every search
//! candidate has been seen, or the pairing timeout guarantees that nothing
//! that started before the answer can still arrive.

mod bounded;
mod fanout;
mod fold;
mod inplace;
mod key;
pub mod pairing;
mod slots;
mod storm;
mod table;
mod upstream;

use std::{collections::VecDeque, fmt::Write as _, hash::BuildHasher as _, net::IpAddr, sync::Arc};

use serde::Serialize;

use crate::{
    analyze::{
        Detector, Transaction,
        resolvconf::{ResolvConf, dots},
    },
    decode::{
        DnsEvent,
        dns::{qtype_name, rcode_name},
    },
    event::{Endpoint, ResolvConfEvidence},
    hash::{FastMap, PreHashedMap, Seed},
    model::PodRef,
};

pub use crate::model::finding::{
    Attempt, Finding, ForwardedUpstream, NameCount, NxdomainStorm, Party, SearchFanout, UpstreamTimeout,
};
pub use inplace::{DrainInPlace, InPlace, drain_in_place};
pub use pairing::Pairer;

use bounded::Bounded;
use fanout::{ClientState, MAX_CHAIN_ATTEMPTS, PARALLEL_NS, ends_with_label};
use storm::{HashedStormKey, StormKeys, StormState};
use upstream::{Resolvers, UpGroup};

const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
/// How often [`Analyzer::expire`] looks at every client (it may be called per record).
const SCAN_EVERY_NS: u64 = 100_000_000;

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
    /// Most client queries remembered per resolver, over all names, to
    /// correlate its forwards (issue 18: bounded by count, not by time; at
    /// ~600 bytes each the default holds ~10 MiB per resolver).
    pub max_queries_per_resolver: usize,
    /// NXDOMAIN rate per second (over `storm_window_ns`) that makes a storm.
    pub storm_per_sec: u32,
    /// Sliding window of the storm rate.
    pub storm_window_ns: u64,
    /// The findings go to a condenser with this `slow_ns`: a walk it will
    /// only count is not a finding but a [`crate::analyze::condense::FastWalk`]
    /// in [`Analyzer::fast_walks_mut`], which the caller hands to the
    /// condenser in its place. `None`: every walk in full.
    pub fold_fast_ns: Option<u64>,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            pair_timeout_ns: pairing::PairConfig::default().timeout_ns,
            grace_ns: 500_000_000,
            max_clients: 4096,
            max_attempts_per_client: 256,
            max_chains_per_client: 16,
            max_evidence: 4096,
            max_queries_per_resolver: 16_384,
            storm_per_sec: 20,
            storm_window_ns: 10_000_000_000,
            fold_fast_ns: None,
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
    /// Client queries a resolver's table forgot (oldest first) to stay
    /// within `max_queries_per_resolver`.
    pub resolver_queries_evicted: u64,
}

/// resolv.conf evidence, parsed.
#[derive(Debug)]
struct Conf {
    parsed: Option<ResolvConf>,
    path: String,
    error: Option<String>,
}

/// Who asked: hashed once per transaction (`h`); the maps it is looked up
/// in (per client, per resolver and client, each remembered query) pass
/// that hash through. Shared: a key sits in several tables per query, and
/// cloning it was three reference counts (the pod) each time.
#[derive(Clone, Debug)]
struct ClientKey {
    id: Arc<ClientId>,
    h: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ClientId {
    pod: Option<PodRef>,
    netns: u32,
    pid: u32,
    ip: IpAddr,
}

impl ClientKey {
    fn of(seed: &Seed, tx: &Transaction) -> Self {
        let pid = tx.process.as_ref().map_or(0, |p| p.pid);
        let h = seed.hash_one((&tx.client_pod, tx.netns, pid, tx.client.ip));
        Self { id: Arc::new(ClientId { pod: tx.client_pod.clone(), netns: tx.netns, pid, ip: tx.client.ip }), h }
    }

    /// Whether `tx` was sent by this client (the pod compared by its
    /// shared strings first, as the enricher hands out clones of one).
    fn is_of(&self, tx: &Transaction) -> bool {
        let id = &*self.id;
        id.ip == tx.client.ip
            && id.netns == tx.netns
            && id.pid == tx.process.as_ref().map_or(0, |p| p.pid)
            && id.pod == tx.client_pod
    }

    fn ip(&self) -> IpAddr {
        self.id.ip
    }

    fn pod(&self) -> Option<&PodRef> {
        self.id.pod.as_ref()
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, o: &Self) -> bool {
        self.h == o.h && (Arc::ptr_eq(&self.id, &o.id) || self.id == o.id)
    }
}

impl Eq for ClientKey {}

impl std::hash::Hash for ClientKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.h);
    }
}

/// Recent clients' keys, by a cheap hash of who they are: consecutive
/// queries mostly come from a few clients, whose key (a hash over the pod's
/// strings, and an allocation) is then made once, not per transaction.
#[derive(Debug)]
struct KeyCache {
    slots: Vec<Option<ClientKey>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self { slots: vec![None; Self::SLOTS] }
    }
}

impl KeyCache {
    /// Direct-mapped by the hash's top bits: with 64, one transaction in
    /// five of the busy recording's 300 pods missed its slot and built its
    /// key again (hashing the pod's strings, an allocation); 1,024 miss one
    /// in twenty (callgrind: 27,276 → 7,178 of 139,080).
    const SLOTS: usize = 1024;

    /// The key of `tx`'s client and its slot, taken out of the cache (a
    /// move): [`Self::put`] gives it back. Cloned and dropped again, the
    /// key's shared id cost two atomic updates per transaction.
    fn take(&mut self, seed: &Seed, tx: &Transaction) -> (usize, ClientKey) {
        // Where the slot is does not matter for correctness (the key is
        // compared in full), only for how often it hits.
        let pod = tx.client_pod.as_ref().map_or(0, |p| Arc::as_ptr(&p.name).cast::<u8>() as usize as u64);
        let ip = match tx.client.ip {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => a.to_bits() as u64,
        };
        let pid = tx.process.as_ref().map_or(0, |p| u64::from(p.pid));
        let mix = (pod >> 4 ^ ip ^ pid << 20 ^ u64::from(tx.netns) << 40).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (mix >> (64 - Self::SLOTS.trailing_zeros())) as usize % Self::SLOTS;
        if let Some(s) = self.slots.get_mut(slot)
            && s.as_ref().is_some_and(|k| k.is_of(tx))
            && let Some(k) = s.take()
        {
            return (slot, k);
        }
        (slot, ClientKey::of(seed, tx))
    }

    /// Puts back the key [`Self::take`] gave out.
    fn put(&mut self, slot: usize, k: ClientKey) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(k);
        }
    }
}

/// A transaction as the analyzer gets it: owned, shared or borrowed. Most
/// are only counted and looked at; the few an analysis keeps (failed
/// attempts, the ends of walks) are put behind an `Arc` then, so the
/// others cost no allocation.
pub trait TxIn {
    /// The transaction.
    fn tx(&self) -> &Transaction;
    /// The transaction, shared (no copy when it already is).
    fn share(self) -> Arc<Transaction>;
}

impl TxIn for Transaction {
    fn tx(&self) -> &Transaction {
        self
    }
    fn share(self) -> Arc<Transaction> {
        Arc::new(self)
    }
}

impl TxIn for Arc<Transaction> {
    fn tx(&self) -> &Transaction {
        self
    }
    fn share(self) -> Arc<Transaction> {
        self
    }
}

impl TxIn for &Transaction {
    fn tx(&self) -> &Transaction {
        self
    }
    fn share(self) -> Arc<Transaction> {
        Arc::new(self.clone())
    }
}

/// An attempt before the analysis decided to keep it ([`Att`] once kept).
struct NewAtt<T> {
    lname: Arc<str>,
    nh: u64,
    fh: u64,
    tx: Result<Arc<Transaction>, T>,
}

impl<T: TxIn> NewAtt<T> {
    fn tx(&self) -> &Transaction {
        match &self.tx {
            Ok(a) => a,
            Err(t) => t.tx(),
        }
    }

    fn keep(self) -> Att {
        let tx = match self.tx {
            Ok(a) => a,
            Err(t) => t.share(),
        };
        Att { lname: self.lname, nh: self.nh, fh: self.fh, tx, checked: false }
    }
}

#[derive(Clone, Debug)]
struct Att {
    /// Lower-case name, shared with the buffers that index it.
    lname: Arc<str>,
    /// Seeded hashes of `lname` and of its first label, computed once per
    /// distinct name: the per-client and per-resolver indexes are keyed by
    /// them instead of hashing the name again in each.
    nh: u64,
    fh: u64,
    /// Shared: an attempt sits in several buffers (chain, forwards, resolver).
    tx: Arc<Transaction>,
    /// Already looked at as the possible end of an unanswered walk.
    checked: bool,
}

impl Att {
    fn failed(&self) -> bool {
        failed(&self.tx)
    }
}

/// Not a NOERROR answer with data: part of a walk that went on.
fn failed(tx: &Transaction) -> bool {
    tx.timed_out || tx.rcode != Some(0) || tx.answers.is_empty()
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
    clients: PreHashedMap<ClientKey, ClientState>,
    resolvers: Resolvers,
    resolver_pods: Bounded<PodRef, IpAddr>,
    /// A resolver pod's own address → the Service address its clients asked
    /// (DNAT): its forwards are the Service's.
    resolver_addrs: Bounded<IpAddr, IpAddr>,
    resolver_pids: Bounded<PidOnNode, IpAddr>,
    /// The last insert into each of the three maps above: a resolver's
    /// transactions repeat it, and inserting again changes nothing.
    last_resolver: LastInserts,
    upstream: Vec<UpGroup>,
    /// Lower-case name → where it was forwarded (for `forwarded_upstream`).
    forwarded: Bounded<String, ForwardedUpstream>,
    /// Failed transactions that may be a resolver's forwards, in arrival
    /// order, until every client query that started before them is known.
    pending_fwd: VecDeque<Att>,
    /// The full expiry scan runs at most every [`SCAN_EVERY_NS`].
    next_scan: u64,
    storms: PreHashedMap<HashedStormKey, StormState>,
    storm_keys: StormKeys,
    /// One shared lower-case copy per distinct name.
    names: Names,
    keys: KeyCache,
    /// No expiry work is due before this (see [`Self::expire`]).
    next_due: u64,
    /// Walks only to be counted, each before the finding of its index
    /// ([`Self::fast_walks_mut`]).
    fast_walks: Vec<(usize, crate::analyze::condense::FastWalk)>,
}

/// A resolver process: its pid on its node.
type PidOnNode = (u32, Option<Arc<str>>);

#[derive(Debug, Default)]
struct LastInserts {
    pod: Option<(PodRef, IpAddr)>,
    addr: Option<(IpAddr, IpAddr)>,
    pid: Option<(PidOnNode, IpAddr)>,
}

/// A lower-cased name with its hash and its first label's ([`Att::nh`], [`Att::fh`]).
type Lowered = (Arc<str>, u64, u64);

/// Distinct lower-case names kept for sharing; beyond, the table starts over.
pub const MAX_NAMES: usize = 16_384;

/// Lower-cased query names, one shared copy per distinct name: a busy node
/// asks the same few hundred names over and over, and building a new
/// lower-cased `Arc<str>` per transaction was an allocation and a copy each
/// (13 % of live `-o json` CPU with the hashing around it). A cache, not a
/// registry: when it is full it is emptied, and names still held elsewhere
/// keep their copy. Each name comes with its hash and its first label's
/// (see [`Att`]), computed when the name is first seen.
#[derive(Debug, Default)]
struct Names {
    set: FastMap<Arc<str>, (u64, u64)>,
    /// The last answers by the query name's own allocation: the decoder
    /// shares one `Arc` per distinct name, so most lookups are a pointer
    /// compare instead of hashing the name. An entry holds its query name,
    /// so the address cannot be reused for another while it is here.
    recent: Vec<Option<(Arc<str>, Lowered)>>,
    /// Seed of the name hashes (random per run: names come from the network).
    seed: Seed,
    /// Lower-casing scratch for names sent with upper-case letters (0x20).
    buf: String,
}

impl Names {
    /// Sets of `recent`, two entries each (the newer first): a busy node's
    /// few hundred names fit with few collisions (256 direct-mapped slots
    /// missed about half of 200 names), and so do the benchmark's 2,500
    /// (2,048 direct-mapped slots missed three lookups in four).
    const RECENT_SETS: usize = 4096;

    fn lower_shared(&mut self, qname: &Arc<str>) -> (Arc<str>, u64, u64) {
        let addr = Arc::as_ptr(qname).cast::<u8>() as usize as u64;
        let set = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % Self::RECENT_SETS * 2;
        if let Some([a, b]) = self.recent.get_mut(set..set + 2) {
            if let Some((q, (l, nh, fh))) = a
                && Arc::ptr_eq(q, qname)
            {
                return (Arc::clone(l), *nh, *fh);
            }
            if let Some((q, (l, nh, fh))) = b
                && Arc::ptr_eq(q, qname)
            {
                let r = (Arc::clone(l), *nh, *fh);
                std::mem::swap(a, b);
                return r;
            }
        }
        let r = self.lower(qname);
        if self.recent.is_empty() {
            self.recent = vec![None; Self::RECENT_SETS * 2];
        }
        if let Some([a, b]) = self.recent.get_mut(set..set + 2) {
            *b = a.take();
            *a = Some((Arc::clone(qname), (Arc::clone(&r.0), r.1, r.2)));
        }
        r
    }

    fn lower(&mut self, qname: &str) -> (Arc<str>, u64, u64) {
        let name = qname.trim_end_matches('.');
        let lowered = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.buf.clear();
            self.buf.push_str(name);
            self.buf.make_ascii_lowercase();
            self.buf.as_str()
        } else {
            name
        };
        if let Some((a, &(nh, fh))) = self.set.get_key_value(lowered) {
            return (Arc::clone(a), nh, fh);
        }
        if self.set.len() >= MAX_NAMES {
            self.set.clear();
        }
        let a: Arc<str> = Arc::from(lowered);
        let (nh, fh) = (self.hash(&a), self.hash(fanout::first_label(&a)));
        self.set.insert(Arc::clone(&a), (nh, fh));
        (a, nh, fh)
    }

    /// The hash [`Att::nh`] / [`Att::fh`] would have for `name`.
    fn hash(&self, name: &str) -> u64 {
        self.seed.hash_one(name)
    }
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

    /// Sets [`AnalyzerConfig::fold_fast_ns`] (the condenser's `--slow` changed).
    pub fn fold_fast_walks(&mut self, slow_ns: Option<u64>) {
        self.cfg.fold_fast_ns = slow_ns;
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

    /// Borrowed: no reference count taken per transaction.
    fn conf_for(&self, tx: &Transaction) -> Option<&Arc<Conf>> {
        conf_ref(&self.by_pid, &self.by_netns, tx)
    }

    /// Feeds a transaction (in completion order).
    ///
    /// Timed-out transactions must come from the same [`super::Pairer`]
    /// stream; call [`Self::expire`] regularly and [`Self::finish`] after the
    /// pairer's `finish`.
    pub fn push(&mut self, tx: &Transaction, out: &mut Vec<Finding>) {
        self.push_tx(tx, out);
    }

    /// [`Self::push`] for a transaction already behind an `Arc` (no copy).
    pub fn push_shared(&mut self, tx: Arc<Transaction>, out: &mut Vec<Finding>) {
        self.push_tx(tx, out);
    }

    /// [`Self::push`] of an owned, shared or borrowed transaction: only
    /// the ones an analysis keeps are put behind an `Arc` (copied if borrowed).
    pub fn push_tx<T: TxIn>(&mut self, tx: T, out: &mut Vec<Finding>) {
        let t = tx.tx();
        let seen = match t.end_ns {
            Some(end) => end,
            None if t.timed_out => t.ts_ns.saturating_add(self.cfg.pair_timeout_ns),
            None => t.ts_ns,
        };
        self.now = self.now.max(seen);
        let (lname, nh, fh) = self.names.lower_shared(&t.qname);
        let (slot, key) = self.keys.take(&self.names.seed, t);
        self.track_resolver(t, nh, &key);
        let mut att = NewAtt { lname, nh, fh, tx: Err(tx) };
        let t = att.tx();
        if t.timed_out || t.rcode == Some(RCODE_SERVFAIL) {
            if self.pending_fwd.len() >= self.cfg.max_attempts_per_client.max(1).saturating_mul(16) {
                self.pending_fwd.pop_front();
                self.stats.attempts_dropped += 1;
            }
            let kept = att.keep();
            self.pending_fwd.push_back(kept.clone());
            self.next_due = 0;
            att = NewAtt { lname: kept.lname, nh: kept.nh, fh: kept.fh, tx: Ok(kept.tx) };
        }
        self.count_storm(att.tx(), &att.lname, att.nh, out);
        self.fanout(att, &key, out);
        self.keys.put(slot, key);
        self.expire(self.now, out);
    }

    /// Emits findings whose chains ended before `now_ns`.
    #[inline]
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.now = self.now.max(now_ns);
        // Called per transaction and per record: nothing is due before the
        // next scan or the oldest pending forward's settling time.
        if self.now >= self.next_due {
            self.expire_due(out);
        }
    }

    #[inline(never)]
    fn expire_due(&mut self, out: &mut Vec<Finding>) {
        let now = self.now;
        // Forwards first: chains reported below name the upstream they hit.
        self.settle_forwards(now);
        if now >= self.next_scan {
            self.next_scan = now.saturating_add(SCAN_EVERY_NS);
            let keep_ns = self.cfg.pair_timeout_ns.saturating_mul(2).saturating_add(30_000_000_000);
            self.expire_chains(now, keep_ns, out);
            self.expire_upstream(now, keep_ns, out);
            self.expire_storms(now, keep_ns);
        }
        let fwd = self.pending_fwd.front().map_or(u64::MAX, |a| settled_at(&self.cfg, a.tx.ts_ns));
        self.next_due = self.next_scan.min(fwd);
    }

    /// End of input: emit everything pending.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        self.expire(u64::MAX, out);
    }
}

/// The resolv.conf of the process that sent `tx` (by pid, else by netns).
fn lookup_conf(
    by_pid: &Bounded<u32, Arc<Conf>>,
    by_netns: &Bounded<u32, Arc<Conf>>,
    tx: &Transaction,
) -> Option<Arc<Conf>> {
    conf_ref(by_pid, by_netns, tx).cloned()
}

fn conf_ref<'a>(
    by_pid: &'a Bounded<u32, Arc<Conf>>,
    by_netns: &'a Bounded<u32, Arc<Conf>>,
    tx: &Transaction,
) -> Option<&'a Arc<Conf>> {
    tx.process
        .as_ref()
        .and_then(|p| by_pid.get(&p.pid))
        .or_else(|| (tx.netns != 0).then(|| by_netns.get(&tx.netns)).flatten())
}

/// When every attempt started by `ts` has been reported by the pairer.
fn settled_at(cfg: &AnalyzerConfig, ts: u64) -> u64 {
    ts.saturating_add(cfg.pair_timeout_ns).saturating_add(cfg.grace_ns)
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

impl Detector for Analyzer {
    type Input = Arc<Transaction>;
    type Output = Finding;

    fn push(&mut self, tx: Arc<Transaction>, out: &mut Vec<Finding>) {
        self.push_shared(tx, out);
    }

    #[inline]
    fn expire(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        Analyzer::expire(self, now_ns, out);
    }

    fn finish(&mut self, out: &mut Vec<Finding>) {
        Analyzer::finish(self, out);
    }
}

impl Detector for Pairer {
    type Input = DnsEvent;
    type Output = Transaction;

    fn push(&mut self, ev: DnsEvent, out: &mut Vec<Transaction>) {
        Pairer::push_owned(self, ev, out);
    }

    // Per replay tick; two comparisons when nothing is due (an outlined
    // call was 36 instructions per record).
    #[inline]
    fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        Pairer::expire(self, now_ns, out);
    }

    fn finish(&mut self, out: &mut Vec<Transaction>) {
        Pairer::finish(self, out);
    }
}

#[cfg(test)]
mod tests;
