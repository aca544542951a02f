//! The agent's work per record, apart from where records come from: the
//! daemon feeds it from the node's rings, `examples/agent_replay.rs` from a
//! recording (so the agent's own cost can be counted without BPF).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{
    encode::Encoder,
    hub::{Entry, EntryKind, Hub},
    metrics::{DnsSeries, EventSeries, Metrics},
};
use crate::{
    analyze::{Finding, Transaction, pairing::PairConfig},
    capture::MetaBlock,
    enrich::Enricher,
    event::Record,
    model::drops::ConnSignal,
    pipeline::{Context, Filter, Pipeline, RunStats, Sink},
};

/// Feeds metrics and keeps findings for the hub.
struct AgentSink {
    metrics: Arc<Metrics>,
    /// This thread's handles of the DNS series (no lock per transaction).
    dns: DnsSeries,
    /// Findings made since [`NodeWork`] last queued them behind the records.
    findings: Vec<Entry>,
}

impl Sink for AgentSink {
    fn transaction(&mut self, _ctx: &Context, tx: &Transaction) {
        self.metrics.dns_transaction_cached(&mut self.dns, tx);
    }
    fn finding(&mut self, ctx: &Context, f: &Finding) {
        self.metrics.finding(f);
        let json = crate::output::json::finding(f).to_string();
        let ts = u64::try_from(ctx.wall_ns(crate::source::monotonic_ns())).unwrap_or(0);
        self.findings.push(Entry { ts_ns: ts, kind: EntryKind::Finding, pods: None, bytes: json.into() });
    }
    fn finish(&mut self, _ctx: &Context, _stats: &RunStats) {}
}

/// Everything the agent does with a record: encode it into the hub, count
/// drops and connection failures, and run the DNS analysis for metrics and
/// findings. Entries reach the hub in batches: at each [`NodeWork::tick`]
/// (the daemon's 10 ms timer), or sooner when many are waiting.
pub struct NodeWork {
    enc: Encoder,
    pipe: Pipeline<AgentSink>,
    enricher: Enricher,
    metrics: Arc<Metrics>,
    /// This thread's handles of the drop and connection series.
    series: EventSeries,
    hub: Arc<Hub>,
    kernel_lost: Arc<AtomicU64>,
}

impl NodeWork {
    /// Work for a node whose records go to `hub` and count in `metrics`;
    /// `kernel_lost` adds up the ring's lost records as they arrive.
    #[must_use]
    pub fn new(
        enc: Encoder,
        ctx: Context,
        dns_ports: &[u16],
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        kernel_lost: Arc<AtomicU64>,
    ) -> Self {
        let enricher = ctx.enricher.clone();
        let sink = AgentSink { metrics: Arc::clone(&metrics), dns: DnsSeries::default(), findings: Vec::new() };
        let mut pipe = Pipeline::new(ctx, Filter::default(), PairConfig::default(), sink);
        pipe.dns_ports = dns_ports.to_vec();
        pipe.live_output = false;
        Self { enc, pipe, enricher, metrics, series: EventSeries::default(), hub, kernel_lost }
    }

    /// One record from the node (monotonic time).
    pub fn record(&mut self, r: Record) {
        if let Record::Lost { count, .. } = &r {
            self.kernel_lost.fetch_add(*count, Ordering::Relaxed);
        }
        self.enc.queue_record(&r, &self.enricher, &self.hub);
        match &r {
            Record::Drop(d) => {
                let pod = pod_of_drop(&self.enricher, d);
                self.metrics.drop_reason_cached(
                    &mut self.series,
                    d.reason,
                    &d.reason_name,
                    pod.as_ref(),
                    u64::from(d.count),
                );
            }
            Record::Conn(c) => {
                if let Some(signal) = ConnSignal::of(c.kind) {
                    let pod = self.enricher.pod_by_ip(&c.src.ip);
                    self.metrics.conn_failure_cached(&mut self.series, signal.label(), pod.as_ref());
                }
            }
            _ => {}
        }
        self.pipe.push(r);
        self.queue_findings();
    }

    /// Findings the analysis just made, queued behind the records that made them.
    fn queue_findings(&mut self) {
        let found = &mut self.pipe.sink_mut().findings;
        if found.is_empty() {
            return;
        }
        for e in std::mem::take(found) {
            self.enc.queue(e, &self.hub);
        }
    }

    /// Time passes (monotonic ns): expires waiting queries, and hands what
    /// is queued to the hub.
    pub fn tick(&mut self, now: u64) {
        self.pipe.tick(now);
        self.queue_findings();
        self.enc.flush(&self.hub);
    }

    /// A heartbeat into the hub (fresh clock reference and coverage).
    pub fn heartbeat(&mut self) {
        self.enc.heartbeat(&self.hub);
    }

    /// Context (snapshot, network state) into the hub.
    pub fn meta(&mut self, m: &MetaBlock) {
        self.enc.meta(m, &self.hub);
    }

    /// Ends the analysis; publishes what is queued and the last findings.
    pub fn finish(self) {
        let Self { mut enc, pipe, hub, .. } = self;
        let (sink, _) = pipe.finish();
        for e in sink.findings {
            enc.queue(e, &hub);
        }
        enc.flush(&hub);
    }
}

/// The pod a kernel drop hurts: the (inner, for VXLAN) packet's source pod,
/// else its destination pod. Lax parsing: drops carry at most 128 bytes.
fn pod_of_drop(e: &Enricher, d: &crate::event::DropRecord) -> Option<crate::enrich::PodRef> {
    let h = crate::decode::packet::parse_lax(&d.data, &crate::analyze::drops::VXLAN_PORTS)?;
    let i = h.innermost();
    e.pod_by_ip(&i.t.src).or_else(|| e.pod_by_ip(&i.t.dst))
}
