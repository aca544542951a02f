//! The one pipeline every command runs: records in, in time order, from any
//! source → decode → enrich → pair → explain → sink. Live and replay differ
//! only in who calls [`Pipeline::push`] and [`Pipeline::tick`].

// `--node`/`--ns`/`--pod` on the drops stage's results: filters belong to
// the pipeline, which runs the stages, not to a stage.
mod drops_filter;
// Replays on two threads: reading, decoding and pairing on one, the
// analysis and the sink on the other.
mod replay;

pub use replay::{ReplayHooks, ReplayOptions, ReplayThreads, TWO_THREADS_FROM_BYTES};

use serde::Serialize;

use crate::{
    analyze::{
        Detector,
        condense::{CondenseConfig, CondenseStats, Condenser},
        dns::{
            Analyzer, AnalyzerConfig, Pairer, TxIn, drain_in_place,
            pairing::{PairConfig, PairStats},
        },
    },
    decode::{DecodeStats, DnsDecoder, DnsEvent},
    enrich::Enricher,
    event::Record,
    model::{Finding, PodRef, Transaction},
};

/// Where results go.
pub trait Sink {
    /// A completed (answered or timed-out) transaction.
    fn transaction(&mut self, ctx: &Context, tx: &Transaction);
    /// A finding, printed after the transactions it explains.
    fn finding(&mut self, ctx: &Context, f: &Finding);
    /// End of run: counters.
    fn finish(&mut self, ctx: &Context, stats: &RunStats);
    /// Pushes buffered output out (called on every timer tick, so output
    /// stays live without a write per transaction).
    fn flush_output(&mut self) {}
    /// Whether the sink lists every record and DNS message (`ktrace
    /// replay`): only then are [`Self::record`] and [`Self::message`] called.
    fn lists_records(&self) -> bool {
        false
    }
    /// A record as it enters the pipeline (before decoding), in time order.
    fn record(&mut self, _ctx: &Context, _rec: &Record) {}
    /// A DNS message, decoded and attributed to pods, before pairing.
    fn message(&mut self, _ctx: &Context, _ev: &DnsEvent) {}
    /// A result of the drops stage (kernel drop row, failed connection,
    /// fabric finding), after `--node`/`--ns`/`--pod`; only with a drops stage.
    fn drop_output(&mut self, _ctx: &Context, _r: &crate::model::drops::DropOutput) {}
}

/// What sinks need to render: the clock and the metadata.
#[derive(Debug)]
pub struct Context {
    /// Wall-clock ns minus monotonic ns on the observing node (0 for foreign captures, whose times are wall clock).
    pub clock_offset_ns: i128,
    /// Pod/node/service lookups.
    pub enricher: Enricher,
}

impl Context {
    /// Wall-clock ns of a monotonic timestamp.
    #[must_use]
    pub fn wall_ns(&self, mono_ns: u64) -> i128 {
        i128::from(mono_ns) + self.clock_offset_ns
    }
}

/// Which transactions and findings to show (analysis always sees everything:
/// the upstream query that explains a client's wait belongs to another pod).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Pod name, or `namespace/name`.
    pub pod: Option<String>,
    /// Node name.
    pub node: Option<String>,
    /// Network namespace inode of the client.
    pub netns: Option<u32>,
    /// Process name (thread-group leader) of the client or server.
    pub comm: Option<String>,
}

impl Filter {
    /// Whether any pod selection (`--ns`, `--pod`, `--node`) is set.
    #[must_use]
    pub fn is_pod_scoped(&self) -> bool {
        self.namespace.is_some() || self.pod.is_some() || self.node.is_some()
    }

    /// Whether a pod matches the namespace, pod (`name` or `namespace/name`) and node selection.
    #[must_use]
    pub fn pod_matches(&self, p: Option<&PodRef>) -> bool {
        let Some(p) = p else { return false };
        if let Some(ns) = &self.namespace
            && *p.namespace != **ns
        {
            return false;
        }
        if let Some(want) = &self.pod {
            let ok = match want.split_once('/') {
                Some((ns, name)) => *p.namespace == *ns && *p.name == *name,
                None => *p.name == **want,
            };
            if !ok {
                return false;
            }
        }
        if let Some(n) = &self.node
            && p.node.as_deref() != Some(n.as_str())
        {
            return false;
        }
        true
    }

    /// Whether a transaction is shown.
    #[must_use]
    pub fn transaction(&self, tx: &Transaction) -> bool {
        if let Some(n) = self.netns
            && tx.netns != n
        {
            return false;
        }
        if let Some(c) = &self.comm {
            let client = tx.process.as_ref().is_some_and(|p| *p.comm == **c);
            let server = tx.server_process.as_ref().is_some_and(|p| *p.comm == **c);
            if !client && !server {
                return false;
            }
        }
        if self.namespace.is_some() || self.pod.is_some() {
            return self.pod_matches(tx.client_pod.as_ref()) || self.pod_matches(tx.server_pod.as_ref());
        }
        if let Some(n) = &self.node {
            let on = |p: Option<&PodRef>| p.and_then(|p| p.node.as_deref()) == Some(n.as_str());
            return tx.node.as_deref() == Some(n.as_str()) || on(tx.client_pod.as_ref()) || on(tx.server_pod.as_ref());
        }
        true
    }

    /// Whether a finding is shown: it mentions a matching pod anywhere.
    #[must_use]
    pub fn finding(&self, f: &Finding) -> bool {
        if self.namespace.is_none() && self.pod.is_none() && self.node.is_none() {
            return true;
        }
        // Findings name pods as `namespace/name` without their node, so
        // `--node` keeps every finding that names a pod.
        f.pods().into_iter().filter_map(|p| p.split_once('/')).any(|(ns, name)| self.names_pod(ns, name))
    }

    /// [`Self::finding`] of the fast walk's finding (it names its client pod only).
    #[must_use]
    pub fn fast_walk(&self, w: &crate::analyze::condense::FastWalk) -> bool {
        if self.namespace.is_none() && self.pod.is_none() && self.node.is_none() {
            return true;
        }
        w.pod.as_deref().and_then(|p| p.split_once('/')).is_some_and(|(ns, name)| self.names_pod(ns, name))
    }

    /// Whether `namespace/name` matches the namespace and pod selection.
    fn names_pod(&self, ns: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|w| w == ns)
            && self.pod.as_deref().is_none_or(|w| match w.split_once('/') {
                Some((a, b)) => a == ns && b == name,
                None => w == name,
            })
    }
}

/// Keeps what involves the selected pods and the resolvers those pods talk
/// to: the forwarded upstream query at kube-dns explains the client's wait,
/// so a recording or stream scoped to one namespace must keep it.
#[derive(Debug, Default)]
pub struct ScopeKeeper {
    pods: Filter,
    resolvers: std::collections::HashSet<PodRef>,
}

impl ScopeKeeper {
    /// Most peers remembered per scope (bounded memory under any traffic).
    const MAX_PEERS: usize = 1024;

    /// Keeps what involves pods matching `pods` (`--ns`, `--pod`, `--node`).
    #[must_use]
    pub fn new(pods: Filter) -> Self {
        Self { pods, resolvers: std::collections::HashSet::new() }
    }

    /// Whether a pod selection is set (otherwise everything is kept).
    #[must_use]
    pub fn active(&self) -> bool {
        self.pods.is_pod_scoped()
    }

    /// Whether a record involving `pods` (its local pod, source and
    /// destination pods) is kept; learns the peers of matching pods.
    pub fn keep(&mut self, pods: &[&PodRef]) -> bool {
        if !self.active() {
            return true;
        }
        if pods.iter().any(|x| self.pods.pod_matches(Some(x))) {
            for x in pods {
                if !self.pods.pod_matches(Some(x)) && self.resolvers.len() < Self::MAX_PEERS {
                    self.resolvers.insert((*x).clone());
                }
            }
            return true;
        }
        pods.iter().any(|x| self.resolvers.contains(*x))
    }
}

/// Counters shown at the end of a run and in the JSON `type:"stats"` record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunStats {
    /// Records read from the source.
    pub records: u64,
    /// Kernel events lost (ring buffer full), as counted by the kernel.
    pub lost_events: u64,
    /// Decoder counters.
    pub decode: DecodeStats,
    /// Pairing counters.
    pub pairing: PairStats,
    /// Transactions completed.
    pub transactions: u64,
    /// Transactions shown after filtering.
    pub shown: u64,
    /// Findings.
    pub findings: u64,
    /// Records the source could not decode (unknown kinds, short events).
    pub source_errors: u64,
    /// Packets that were not DNS (underlay fingerprints, other ports).
    pub other_packets: u64,
    /// What the condensing stage counted instead of reporting one by one.
    pub condensed: CondenseStats,
    /// Extra notes (truncated capture, missing metadata...).
    pub warnings: Vec<String>,
    /// One payload per DNS message (live runs only; absent in replays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<crate::bpf::dedupe::DedupeStats>,
}

/// Pipeline state.
pub struct Pipeline<S: Sink> {
    decoder: DnsDecoder,
    pairer: Pairer,
    back: Back,
    /// Rendering context.
    pub ctx: Context,
    sink: S,
    evs: Vec<DnsEvent>,
    /// Counters.
    pub stats: RunStats,
    last_ts: u64,
    /// Ports whose packets are DNS (foreign captures hold other traffic too).
    pub dns_ports: Vec<u16>,
    /// Flush output on every tick (live: ticks are a 10 ms timer; replay
    /// ticks per record and leaves flushing to the end).
    pub live_output: bool,
    /// The sink lists records and messages (asked once: a branch, not a call, per record).
    lists_records: bool,
    /// The drops stage (`ktrace drops`): sees every record; its results go
    /// to [`Sink::drop_output`].
    drops: Option<crate::analyze::drops::DropAnalyzer>,
    drop_out: Vec<crate::model::drops::DropOutput>,
}

/// The stages after pairing: filter, sink, condensing and findings. A
/// two-threaded replay runs them on the thread that owns the sink.
struct Back {
    analyzer: Analyzer,
    condenser: Condenser,
    filter: Filter,
    /// Transactions waiting for [`Back::flush`].
    txs: Vec<Transaction>,
    findings: Vec<Finding>,
    shown_findings: Vec<Finding>,
}

impl Back {
    /// Hands the waiting transactions to the sink and the analysis, then
    /// the findings they complete. Every call that fills `findings` ends
    /// with a flush, so between calls only `txs` can hold anything.
    #[inline]
    fn flush<S: Sink>(&mut self, ctx: &Context, sink: &mut S, stats: &mut RunStats) {
        // Called several times per record and usually with nothing to do:
        // the three empty drains were ~5 % of a replay's instructions, and
        // the call itself ~1.5 % more.
        // Folded walks need no look: every call into the analysis is
        // followed by `flush_findings`, which hands them on.
        if self.txs.is_empty() && self.findings.is_empty() && self.shown_findings.is_empty() {
            return;
        }
        self.flush_owned(ctx, sink, stats);
    }

    #[inline(never)]
    fn flush_owned<S: Sink>(&mut self, ctx: &Context, sink: &mut S, stats: &mut RunStats) {
        let mut txs = std::mem::take(&mut self.txs);
        // Where they lie: the analysis moves the few it keeps into an
        // `Arc` (`drain_in_place`); the list comes back empty.
        self.flush_shared(drain_in_place(&mut txs), ctx, sink, stats);
        self.txs = txs;
    }

    /// [`Self::flush`] of transactions handed over (a two-threaded
    /// replay's reading thread batches them), owned or already shared.
    fn flush_shared<S: Sink, T: TxIn>(
        &mut self,
        txs: impl Iterator<Item = T>,
        ctx: &Context,
        sink: &mut S,
        stats: &mut RunStats,
    ) {
        for tx in txs {
            let t = tx.tx();
            stats.transactions += 1;
            if self.filter.transaction(t) {
                stats.shown += 1;
                sink.transaction(ctx, t);
            }
            self.condenser.transaction(t);
            self.analyzer.push_tx(tx, &mut self.findings);
        }
        self.flush_findings(ctx, sink, stats);
    }

    #[inline]
    fn flush_findings<S: Sink>(&mut self, ctx: &Context, sink: &mut S, stats: &mut RunStats) {
        if !(self.findings.is_empty() && self.shown_findings.is_empty() && !self.analyzer.has_fast_walks()) {
            self.flush_findings_now(ctx, sink, stats);
        }
    }

    #[inline(never)]
    fn flush_findings_now<S: Sink>(&mut self, ctx: &Context, sink: &mut S, stats: &mut RunStats) {
        // Filtered before condensing: aggregates and repeat counts then
        // cover only the pods shown. Folded walks go in the place they were
        // found among the findings.
        let mut fast = std::mem::take(self.analyzer.fast_walks_mut());
        let mut walks = fast.drain(..).peekable();
        for (i, f) in self.findings.drain(..).enumerate() {
            while let Some((_, w)) = walks.next_if(|(at, _)| *at <= i) {
                if self.filter.fast_walk(&w) {
                    self.condenser.push_fast(w);
                }
            }
            if self.filter.finding(&f) {
                self.condenser.push(f, &mut self.shown_findings);
            }
        }
        for (_, w) in walks {
            if self.filter.fast_walk(&w) {
                self.condenser.push_fast(w);
            }
        }
        // The list goes back empty, keeping its allocation.
        *self.analyzer.fast_walks_mut() = fast;
        for f in self.shown_findings.drain(..) {
            stats.findings += 1;
            sink.finding(ctx, &f);
        }
    }

    /// Time passes for the analysis (after pairing has expired its queries
    /// and their transactions went through [`Self::flush`]).
    #[inline]
    fn tick<S: Sink>(&mut self, now_ns: u64, ctx: &Context, sink: &mut S, stats: &mut RunStats) {
        // Transactions were flushed before (and a two-threaded replay's
        // never wait in `txs`): only findings can be waiting here.
        Detector::expire(&mut self.analyzer, now_ns, &mut self.findings);
        self.flush_findings(ctx, sink, stats);
        // The analysis' output was handed on above: only the condenser's
        // can wait now (one test here instead of three).
        self.condenser.tick(now_ns, &mut self.shown_findings);
        if !self.shown_findings.is_empty() {
            self.flush_findings_now(ctx, sink, stats);
        }
    }
}

/// Decodes one DNS packet, names the pods of its messages and pairs them:
/// completed transactions go to `txs`, each message to `message` first.
/// One function for the one-threaded pipeline and a two-threaded replay's
/// reading thread, so both do exactly the same.
fn decode_and_pair(
    decoder: &mut DnsDecoder,
    pairer: &mut Pairer,
    enricher: &Enricher,
    evs: &mut Vec<DnsEvent>,
    p: crate::event::PacketRecord,
    txs: &mut Vec<Transaction>,
    message: impl FnMut(&DnsEvent),
) {
    decoder.push(p, evs);
    enrich_and_pair(pairer, enricher, evs, txs, message);
}

/// [`decode_and_pair`] of a packet that may not be DNS (by `ports`, as
/// [`crate::decode::is_dns`] decides), with one parse of its headers; false
/// when it is not DNS. Owned records and packets read where they lie
/// (`PacketRef`, replay) go through the same code.
#[expect(clippy::too_many_arguments, reason = "the stages it runs, by reference, as `decode_and_pair`")]
fn decode_and_pair_if_dns(
    decoder: &mut DnsDecoder,
    pairer: &mut Pairer,
    enricher: &Enricher,
    evs: &mut Vec<DnsEvent>,
    p: impl crate::decode::PacketInput,
    ports: &[u16],
    txs: &mut Vec<Transaction>,
    message: impl FnMut(&DnsEvent),
) -> bool {
    if !decoder.push_if_dns(p, ports, evs) {
        return false;
    }
    enrich_and_pair(pairer, enricher, evs, txs, message);
    true
}

fn enrich_and_pair(
    pairer: &mut Pairer,
    enricher: &Enricher,
    evs: &mut Vec<DnsEvent>,
    txs: &mut Vec<Transaction>,
    mut message: impl FnMut(&DnsEvent),
) {
    // In place: a `DnsEvent` is ~300 bytes, and moving it out of the list
    // and into the pairer was three copies per message.
    for ev in evs.iter_mut() {
        enricher.enrich(ev);
        message(ev);
        pairer.push_ref(ev, txs);
    }
    evs.clear();
}

impl<S: Sink> Pipeline<S> {
    /// A pipeline writing to `sink`.
    pub fn new(ctx: Context, filter: Filter, pair: PairConfig, sink: S) -> Self {
        let lists_records = sink.lists_records();
        Self {
            decoder: DnsDecoder::new(),
            pairer: Pairer::new(pair),
            back: Back {
                analyzer: Analyzer::with_config(AnalyzerConfig {
                    pair_timeout_ns: pair.timeout_ns,
                    fold_fast_ns: Some(CondenseConfig::default().slow_ns),
                    ..Default::default()
                }),
                condenser: Condenser::new(CondenseConfig::default()),
                filter,
                txs: Vec::new(),
                findings: Vec::new(),
                shown_findings: Vec::new(),
            },
            ctx,
            sink,
            evs: Vec::new(),
            stats: RunStats::default(),
            last_ts: 0,
            dns_ports: vec![53],
            live_output: true,
            lists_records,
            drops: None,
            drop_out: Vec::new(),
        }
    }

    /// Adds the drops stage.
    pub fn set_drops(&mut self, stage: crate::analyze::drops::DropAnalyzer) {
        self.drops = Some(stage);
    }

    /// The drops stage, if any (to declare a node's coverage).
    pub fn drops_mut(&mut self) -> Option<&mut crate::analyze::drops::DropAnalyzer> {
        self.drops.as_mut()
    }

    fn flush_drops(&mut self) {
        for r in self.drop_out.drain(..) {
            if self.back.filter.drop_output(&r) {
                self.sink.drop_output(&self.ctx, &r);
            }
        }
    }

    /// Replaces the condensing limits (`--slow`, report period).
    pub fn set_condense(&mut self, cfg: CondenseConfig) {
        self.back.condenser = Condenser::new(cfg);
        self.back.analyzer.fold_fast_walks(Some(cfg.slow_ns));
    }

    /// Feeds one record (in time order).
    pub fn push(&mut self, rec: Record) {
        self.stats.records += 1;
        self.last_ts = self.last_ts.max(rec.ts_ns());
        if self.lists_records {
            self.sink.record(&self.ctx, &rec);
        }
        if let Some(d) = &mut self.drops {
            // By reference: the drops stage sees every record (each one
            // extends its node's observed span), DNS still gets them after.
            d.push(&rec);
        }
        match rec {
            Record::Packet(p) => {
                let (ctx, sink, lists) = (&self.ctx, &mut self.sink, self.lists_records);
                let dns = decode_and_pair_if_dns(
                    &mut self.decoder,
                    &mut self.pairer,
                    &ctx.enricher,
                    &mut self.evs,
                    p,
                    &self.dns_ports,
                    &mut self.back.txs,
                    |ev| {
                        if lists {
                            sink.message(ctx, ev);
                        }
                    },
                );
                if !dns {
                    self.stats.other_packets += 1;
                    return;
                }
                self.flush();
            }
            Record::Lost { count, .. } => self.stats.lost_events += count,
            Record::ResolvConf(r) => self.back.analyzer.resolv_conf(&r),
            // Drops and connection events are for `ktrace drops`.
            Record::Drop(_) | Record::Conn(_) => {}
        }
    }

    /// Time passes (live: a timer; replay: each record's time): expire waiting queries.
    pub fn tick(&mut self, now_ns: u64) {
        Detector::expire(&mut self.pairer, now_ns, &mut self.back.txs);
        // Replays tick per record, and nearly every tick expires nothing.
        if !self.back.txs.is_empty() {
            self.flush();
        }
        self.back.tick(now_ns, &self.ctx, &mut self.sink, &mut self.stats);
        if let Some(d) = &mut self.drops {
            Detector::expire(d, now_ns, &mut self.drop_out);
            self.flush_drops();
        }
        if self.live_output {
            self.sink.flush_output();
        }
    }

    /// The sink (to write what does not pass through the pipeline: capture headers).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Timestamp of the newest record seen.
    #[must_use]
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    fn flush(&mut self) {
        self.back.flush(&self.ctx, &mut self.sink, &mut self.stats);
    }

    /// End of input: unanswered queries are reported, pending findings emitted.
    pub fn finish(mut self) -> (S, RunStats) {
        Detector::finish(&mut self.pairer, &mut self.back.txs);
        self.flush();
        Detector::finish(&mut self.back.analyzer, &mut self.back.findings);
        self.back.flush_findings(&self.ctx, &mut self.sink, &mut self.stats);
        self.back.condenser.finish(&mut self.back.shown_findings);
        self.flush();
        if let Some(d) = &mut self.drops {
            Detector::finish(d, &mut self.drop_out);
            self.flush_drops();
        }
        self.stats.condensed = self.back.condenser.stats();
        // Said only when it happened: a bounded table forgot evidence.
        let evicted = self.back.analyzer.stats().resolver_queries_evicted;
        if evicted > 0 {
            self.stats.warnings.push(format!(
                "{evicted} client queries forgotten by the resolver tables to stay bounded (forwards older than that are not correlated)"
            ));
        }
        self.stats.decode = self.decoder.stats();
        self.stats.pairing = self.pairer.stats();
        self.sink.finish(&self.ctx, &self.stats);
        (self.sink, self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::finding::samples::findings, testkit::walk::json_mentions_pod};

    /// Typed finding filters keep exactly what walking the JSON kept.
    #[test]
    fn typed_finding_filter_matches_the_json_walk() {
        let filters = [
            Filter::default(),
            Filter { namespace: Some("critical-app".into()), ..Filter::default() },
            Filter { namespace: Some("kube-system".into()), ..Filter::default() },
            Filter { namespace: Some("team".into()), pod: Some("app".into()), ..Filter::default() },
            Filter { pod: Some("a/b".into()), ..Filter::default() },
            Filter { pod: Some("c/d".into()), ..Filter::default() },
            Filter { pod: Some("client".into()), ..Filter::default() },
            Filter { node: Some("node-a".into()), ..Filter::default() },
            Filter { namespace: Some("nobody".into()), ..Filter::default() },
        ];
        let mut kept = 0;
        for f in findings() {
            let v = serde_json::to_value(&f).unwrap();
            for flt in &filters {
                let want = !flt.is_pod_scoped() || json_mentions_pod(flt, &v);
                assert_eq!(flt.finding(&f), want, "{} with {flt:?}", f.kind());
                kept += usize::from(want);
            }
        }
        // The cases are not all alike.
        assert!(kept > findings().len() && kept < findings().len() * filters.len());
    }
}
