//! Replaying captures through the pipeline, on one thread or two.
//!
//! Two threads split the pipeline where it has a narrow waist. For
//! `ktrace dns -r` the reading thread reads the files and decodes DNS; the
//! calling thread (which owns the sink) names pods, pairs queries with
//! answers, filters, writes, condenses and runs the findings detectors
//! (`read_and_decode`). When records cross too (below), pairing stays on
//! the reading thread and transactions cross instead. Everything crosses in
//! order, in batches, so the sink sees exactly the calls a one-threaded run
//! makes: the output is identical by construction, not by a merge. (A split
//! by flow would not be: search-list fan-out is per client, and a forwarded
//! query pairs a client's flow with the resolver's upstream flow.)
//!
//! Every replaying command runs here (`ktrace dns -r`, `ktrace replay -r`,
//! `ktrace drops -r`): when the sink lists every record and message
//! (`replay`) or the drops stage needs every record (`drops`), the records
//! and messages cross too, in their places, and so does the capture context
//! the command handles itself ([`ReplayHooks`]).
//!
//! Memory stays bounded: at most [`DEPTH`] + 2 batches exist, each of about
//! [`BATCH_OPS`] operations, and they are reused.

use std::sync::{
    Arc,
    mpsc::{SyncSender, sync_channel},
};

mod split;

use split::{Balance, BatchSender, Sampler};

use super::{Back, Pipeline, RunStats, Sink, decode_and_pair, decode_and_pair_if_dns};
use crate::{
    analyze::{Detector, drops::DropAnalyzer, pairing::Pairer},
    decode::{DnsDecoder, DnsEvent},
    enrich::Snapshot,
    event::{PacketRef, Record, ResolvConfEvidence},
    model::{Transaction, drops::DropOutput},
    source::{
        FileSource,
        file::{FileEvent, FileRef},
    },
};

/// Operations per batch before it is handed over: large enough that the
/// hand-over (a futex wake at most) is rare, small enough that the
/// analysis thread starts early and the batches stay small.
const BATCH_OPS: usize = 1024;
/// Batches in flight between the threads.
const DEPTH: usize = 4;
/// Total capture size from which a replay uses two threads by default:
/// below it, the run is over in well under a second anyway.
pub const TWO_THREADS_FROM_BYTES: u64 = 16 << 20;
/// Records between two progress reports.
const PROGRESS_EVERY: u64 = 4096;

/// How many threads a replay uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayThreads {
    /// Two when the captures are large (≥ [`TWO_THREADS_FROM_BYTES`],
    /// regular files) and this process may run on more than one CPU; else one.
    /// `KTRACE_REPLAY_THREADS=1` or `=2` overrides the choice.
    #[default]
    Auto,
    /// Always one.
    One,
    /// Always two (tests compare both).
    Two,
    /// One unless `KTRACE_REPLAY_THREADS=2` asks (`ktrace drops -r`: its
    /// reading is nearly all its work, a second thread measured 0.91–1.07×).
    OneUnlessAsked,
}

impl ReplayThreads {
    /// Whether to use two threads for captures of `bytes` in total (`None`:
    /// not all regular files, e.g. a pipe).
    #[must_use]
    pub fn two(self, bytes: Option<u64>) -> bool {
        match self {
            Self::One => false,
            Self::Two => true,
            Self::Auto | Self::OneUnlessAsked => {
                match std::env::var("KTRACE_REPLAY_THREADS").ok().as_deref().map(str::trim) {
                    Some("1") => false,
                    Some("2") => true,
                    _ => {
                        self == Self::Auto
                            && bytes.is_some_and(|b| b >= TWO_THREADS_FROM_BYTES)
                            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
                    }
                }
            }
        }
    }
}

/// How [`Pipeline::replay`] runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOptions {
    /// Apply the Kubernetes snapshots stored in the captures (not when the
    /// user gave `--kube-snapshot`).
    pub apply_snapshots: bool,
    /// One thread or two.
    pub threads: ReplayThreads,
    /// Time does not pass per record: nothing expires before the end
    /// (`ktrace drops -r` has always read its captures so).
    pub no_ticks: bool,
}

/// What a command does next to the pipeline during a replay, always on the
/// sink's thread and in file order: the same calls on one thread or two.
pub trait ReplayHooks<S> {
    /// A record, before the pipeline takes it.
    fn record(&mut self, _rec: &Record) {}
    /// Capture context other than a Kubernetes snapshot (which
    /// [`ReplayOptions::apply_snapshots`] covers), with the sink and the drops stage.
    fn context(&mut self, _sink: &mut S, _drops: Option<&mut DropAnalyzer>, _ev: FileEvent) {}
    /// Whether [`Self::record`] wants every record (so they cross to the sink's thread).
    fn wants_records(&self) -> bool {
        false
    }
}

/// No hooks (`ktrace dns -r`).
struct NoHooks;

impl<S> ReplayHooks<S> for NoHooks {}

/// One step of the analysis thread, in the order the one-threaded pipeline
/// takes it.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// The next `n` transactions of the batch, then a flush.
    Txs(u32),
    /// Time passes for the analysis.
    Tick(u64),
    /// The next resolv.conf evidence of the batch.
    ResolvConf,
    /// Everything before has been written: say so (a stored Kubernetes
    /// snapshot is applied in between, as in a one-threaded run).
    Barrier,
    /// The next record of the batch, for the listing, the drops stage and the hooks.
    Record,
    /// The next DNS message of the batch, for the listing.
    Message,
    /// The next capture context of the batch, for the hooks.
    Context,
    /// The next `n` decoded DNS messages of the batch, to name and pair
    /// (split after decoding: nothing but DNS crosses), then a flush.
    Dns(u32),
    /// The next stored Kubernetes snapshot of the batch, to apply (split
    /// after decoding: pods are named on the sink's thread, so no barrier).
    Snapshot,
    /// The last operation of its batch: the pairer crosses to the reading
    /// thread, which waits for it ([`split`]).
    HandOver,
}

/// What crosses from the reading thread to the analysis thread.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    /// Shared here, so the allocation and the copy are the reading thread's.
    txs: Vec<Arc<Transaction>>,
    resolv: Vec<ResolvConfEvidence>,
    recs: Vec<Record>,
    msgs: Vec<DnsEvent>,
    context: Vec<FileEvent>,
    /// Decoded messages, not yet named or paired ([`Op::Dns`]).
    evs: Vec<DnsEvent>,
    snaps: Vec<Snapshot>,
    /// Records read into this batch (for the progress line).
    records: u64,
}

impl Batch {
    /// Takes the transactions the pairer completed.
    fn take(&mut self, done: &mut Vec<Transaction>) {
        if !done.is_empty() {
            self.ops.push(Op::Txs(u32::try_from(done.len()).unwrap_or(u32::MAX)));
            self.txs.extend(done.drain(..).map(Arc::new));
        }
    }

    /// Empty again, without the capacity a burst (a mass expiry) grew.
    fn reset(&mut self) {
        self.ops.clear();
        self.txs.clear();
        self.resolv.clear();
        self.recs.clear();
        self.msgs.clear();
        self.context.clear();
        self.evs.clear();
        self.snaps.clear();
        self.records = 0;
        self.ops.shrink_to(BATCH_OPS * 2);
        self.txs.shrink_to(BATCH_OPS);
        self.resolv.shrink_to(16);
        self.recs.shrink_to(BATCH_OPS);
        self.msgs.shrink_to(BATCH_OPS);
        self.context.shrink_to(16);
        self.evs.shrink_to(BATCH_OPS);
        self.snaps.shrink_to(4);
    }
}

/// What the reading thread counted (the rest of [`RunStats`] is the analysis thread's).
#[derive(Default)]
struct FrontCounts {
    lost_events: u64,
    other_packets: u64,
    last_ts: u64,
}

impl<S: Sink> Pipeline<S> {
    /// Replays `src` to its end: records pushed, time ticked per record,
    /// stored Kubernetes snapshots applied (with `apply_snapshots`),
    /// `on_progress` called every few thousand records. On two threads when
    /// [`ReplayOptions::threads`] says so; the output is the same either
    /// way. Returns the source's warnings.
    ///
    /// # Errors
    /// When a capture cannot be read at all.
    pub fn replay(
        &mut self,
        src: &mut FileSource,
        opts: ReplayOptions,
        on_progress: &mut dyn FnMut(&RunStats),
    ) -> anyhow::Result<Vec<String>> {
        self.replay_with(src, opts, on_progress, &mut NoHooks)
    }

    /// [`Self::replay`] with the command's own handling of records and
    /// capture context ([`ReplayHooks`]).
    ///
    /// # Errors
    /// When a capture cannot be read at all.
    pub fn replay_with(
        &mut self,
        src: &mut FileSource,
        opts: ReplayOptions,
        on_progress: &mut dyn FnMut(&RunStats),
        hooks: &mut dyn ReplayHooks<S>,
    ) -> anyhow::Result<Vec<String>> {
        if !opts.threads.two(src.total_bytes()) {
            return self.replay_one(src, opts, on_progress, hooks);
        }
        self.replay_two(src, opts, on_progress, hooks, BATCH_OPS, None)
    }

    fn replay_one(
        &mut self,
        src: &mut FileSource,
        opts: ReplayOptions,
        on_progress: &mut dyn FnMut(&RunStats),
        hooks: &mut dyn ReplayHooks<S>,
    ) -> anyhow::Result<Vec<String>> {
        let wants = hooks.wants_records();
        // Nothing keeps a record or lists it: packets are decoded where they lie.
        let by_ref = !wants && !self.lists_records && self.drops.is_none();
        // Events are matched where they lie, not moved out first: a move
        // of the event per record showed in the profile. Time passes to
        // each record's time after it (`FileSource::run_ref` has no ticks).
        let tick = |pipe: &mut Self, now: u64, on_progress: &mut dyn FnMut(&RunStats)| {
            if !opts.no_ticks {
                pipe.tick(now);
                if pipe.stats.records.is_multiple_of(PROGRESS_EVERY) {
                    on_progress(&pipe.stats);
                }
            }
        };
        src.run_ref(|ev| match ev {
            FileRef::Packet(p) => {
                let now = p.ts_ns;
                if by_ref {
                    self.push_ref(p);
                } else {
                    self.push_hooked(Record::Packet(p.to_record()), wants, hooks);
                }
                tick(self, now, on_progress);
            }
            FileRef::Event(FileEvent::Record(r)) => {
                let now = r.ts_ns();
                self.push_hooked(r, wants, hooks);
                tick(self, now, on_progress);
            }
            FileRef::Event(FileEvent::Snapshot(s)) => {
                if opts.apply_snapshots {
                    // Merged, not replaced: earlier pods keep their time ranges.
                    self.ctx.enricher.apply_snapshot(&s);
                }
            }
            FileRef::Event(ev) => hooks.context(&mut self.sink, self.drops.as_mut(), ev),
        })
    }

    /// Two threads, handing over every `batch_ops` operations (tests use
    /// tiny batches to cross the threads everywhere, and `force_after` to
    /// move the pairer after so many batches whatever they cost).
    fn replay_two(
        &mut self,
        src: &mut FileSource,
        opts: ReplayOptions,
        on_progress: &mut dyn FnMut(&RunStats),
        hooks: &mut dyn ReplayHooks<S>,
        batch_ops: usize,
        force_after: Option<u64>,
    ) -> anyhow::Result<Vec<String>> {
        let Self {
            decoder,
            pairer,
            back,
            ctx,
            sink,
            evs,
            stats,
            dns_ports,
            live_output,
            lists_records,
            drops,
            drop_out,
            ..
        } = self;
        let live_output = *live_output;
        let lists = *lists_records;
        // Records cross when the sink's thread needs them.
        let keep = lists || drops.is_some() || hooks.wants_records();
        let (full_tx, full_rx) = sync_channel::<Batch>(DEPTH);
        // Room for every batch that can exist: returning one never blocks.
        let (free_tx, free_rx) = sync_channel::<Batch>(DEPTH + 2);
        let (ack_tx, ack_rx) = sync_channel::<()>(1);
        // The pairer, when it crosses to the reading thread ([`split`]).
        let (hand_tx, hand_rx) = sync_channel::<&mut Pairer>(1);
        let balance = Balance::new(force_after);
        let enricher = &ctx.enricher;
        let ports: &[u16] = dns_ports;
        // Where the pairer runs. When nothing crosses but DNS (`ktrace dns
        // -r`: no listing, drops stage or hooks wanting records), the split
        // starts after decoding, with the pairer on the sink's thread, and
        // the pairer may cross later ([`split`]). Otherwise the records
        // cross with the transactions and pairing stays with the reading.
        let (front_pairer, back_pairer) = if keep { (Some(pairer), None) } else { (None, Some(pairer)) };
        let (warnings, counts) = std::thread::scope(|s| {
            let balance = &balance;
            let front = std::thread::Builder::new()
                .name("ktrace-read".into())
                .spawn_scoped(s, move || {
                    let mut pairer = front_pairer;
                    let mut counts = FrontCounts::default();
                    let mut out = BatchSender::new(&full_tx, &free_rx, batch_ops, balance);
                    let mut done = Vec::new();
                    let warnings = src.run_ref(|ev| {
                        if !out.alive {
                            return;
                        }
                        let Some(pairer) = pairer.as_deref_mut() else {
                            decode_only(decoder, &mut out.batch, &mut counts, ev, opts, ports);
                            if out.is_full() {
                                if balance.offered() {
                                    out.batch.ops.push(Op::HandOver);
                                    out.send();
                                    pairer = if out.alive { hand_rx.recv().ok() } else { None };
                                    out.alive = pairer.is_some();
                                } else {
                                    out.send();
                                }
                            }
                            return;
                        };
                        // Matched where it lies (see `replay_one`): a record to
                        // handle and the time it makes pass come out.
                        let (rec, now) = match ev {
                            // Nothing keeps the record: decoded where it lies.
                            FileRef::Packet(p) if !keep => {
                                let now = p.ts_ns;
                                out.batch.records += 1;
                                counts.last_ts = counts.last_ts.max(now);
                                let Batch { ops, msgs, .. } = &mut out.batch;
                                let message = |ev: &DnsEvent| {
                                    if lists {
                                        msgs.push(ev.clone());
                                        ops.push(Op::Message);
                                    }
                                };
                                if !decode_and_pair_if_dns(decoder, pairer, enricher, evs, p, ports, &mut done, message)
                                {
                                    counts.other_packets += 1;
                                }
                                out.batch.take(&mut done);
                                (None, Some(now))
                            }
                            FileRef::Packet(p) => (Some(Record::Packet(p.to_record())), Some(p.ts_ns)),
                            FileRef::Event(FileEvent::Record(r)) => {
                                let now = r.ts_ns();
                                (Some(r), Some(now))
                            }
                            FileRef::Event(FileEvent::Snapshot(snap)) => {
                                if opts.apply_snapshots {
                                    // Applied when everything before it has been
                                    // written, before anything after it is named:
                                    // where a one-threaded run applies it.
                                    out.batch.ops.push(Op::Barrier);
                                    out.barrier(&ack_rx);
                                    enricher.apply_snapshot(&snap);
                                }
                                (None, None)
                            }
                            FileRef::Event(ev) => {
                                out.batch.context.push(ev);
                                out.batch.ops.push(Op::Context);
                                (None, None)
                            }
                        };
                        if let Some(r) = rec {
                            out.batch.records += 1;
                            counts.last_ts = counts.last_ts.max(r.ts_ns());
                            if let Record::Lost { count, .. } = &r {
                                counts.lost_events += count;
                            }
                            // Without a listing or drops stage nothing keeps the
                            // record: its headers are parsed once, by the decoder.
                            let (r, dns) = if keep {
                                let dns = matches!(&r, Record::Packet(p) if crate::decode::is_dns(p, ports));
                                if matches!(r, Record::Packet(_)) && !dns {
                                    counts.other_packets += 1;
                                }
                                // The sink's thread lists it or the drops stage
                                // takes it first, as in `Pipeline::push`; only a
                                // record decoded here as well is cloned.
                                out.batch.ops.push(Op::Record);
                                if dns || matches!(r, Record::ResolvConf(_)) {
                                    out.batch.recs.push(r.clone());
                                    (Some(r), Some(true))
                                } else {
                                    out.batch.recs.push(r);
                                    (None, Some(false))
                                }
                            } else {
                                (Some(r), None)
                            };
                            match r {
                                Some(Record::Packet(p)) if dns != Some(false) => {
                                    let Batch { ops, msgs, .. } = &mut out.batch;
                                    let message = |ev: &DnsEvent| {
                                        if lists {
                                            msgs.push(ev.clone());
                                            ops.push(Op::Message);
                                        }
                                    };
                                    if dns == Some(true) {
                                        decode_and_pair(decoder, pairer, enricher, evs, p, &mut done, message);
                                    } else if !decode_and_pair_if_dns(
                                        decoder, pairer, enricher, evs, p, ports, &mut done, message,
                                    ) {
                                        counts.other_packets += 1;
                                    }
                                    out.batch.take(&mut done);
                                }
                                Some(Record::ResolvConf(r)) => {
                                    out.batch.resolv.push(r);
                                    out.batch.ops.push(Op::ResolvConf);
                                }
                                _ => {}
                            }
                        }
                        if let Some(now) = now
                            && !opts.no_ticks
                        {
                            Detector::expire(&mut *pairer, now, &mut done);
                            out.batch.take(&mut done);
                            out.batch.ops.push(Op::Tick(now));
                        }
                        out.send_if_full();
                    });
                    out.finish();
                    warnings.map(|w| (w, counts))
                })
                .expect("spawning the replay's reading thread");
            let mut records = 0u64;
            let mut back_side = BackSide {
                back,
                ctx,
                sink,
                stats,
                drops: drops.as_mut(),
                drop_out,
                hooks,
                lists,
                pairer: back_pairer,
                hand: hand_tx,
            };
            let mut sampler = Sampler::default();
            for mut batch in full_rx {
                if back_side.pairer.is_some() && !sampler.done() {
                    let t = split::thread_cpu();
                    let timing = sampler.measuring().then_some(&mut sampler.pair_ns);
                    back_side.analyse(&mut batch, &ack_tx, live_output, timing);
                    sampler.batch(balance, batch.records, split::thread_cpu().saturating_sub(t));
                } else {
                    back_side.analyse(&mut batch, &ack_tx, live_output, None);
                }
                let before = records;
                records += batch.records;
                if before / PROGRESS_EVERY != records / PROGRESS_EVERY {
                    back_side.stats.records = records;
                    on_progress(back_side.stats);
                }
                batch.reset();
                let _ = free_tx.try_send(batch);
            }
            back_side.stats.records = records;
            match front.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        stats.lost_events += counts.lost_events;
        stats.other_packets += counts.other_packets;
        self.last_ts = self.last_ts.max(counts.last_ts);
        Ok(warnings)
    }
}

impl<S: Sink> Pipeline<S> {
    /// [`Pipeline::push`], the hooks shown the record first when they want it.
    fn push_hooked(&mut self, r: Record, wants: bool, hooks: &mut dyn ReplayHooks<S>) {
        if wants {
            hooks.record(&r);
        }
        self.push(r);
    }

    /// [`Pipeline::push`] of a packet where it lies, when nothing lists or
    /// keeps records (no listing, no drops stage, no hook wanting them).
    fn push_ref(&mut self, p: PacketRef<'_>) {
        self.stats.records += 1;
        self.last_ts = self.last_ts.max(p.ts_ns);
        let Self { decoder, pairer, ctx, evs, dns_ports, back, .. } = self;
        if !decode_and_pair_if_dns(decoder, pairer, &ctx.enricher, evs, p, dns_ports, &mut back.txs, |_| {}) {
            self.stats.other_packets += 1;
            return;
        }
        self.flush();
    }
}

/// The reading thread's share of one event while the split is after
/// decoding (`ktrace dns -r`: nothing but DNS crosses): DNS is decoded,
/// everything else crosses in order to the sink's thread.
#[inline]
fn decode_only(
    decoder: &mut DnsDecoder,
    batch: &mut Batch,
    counts: &mut FrontCounts,
    ev: FileRef<'_>,
    opts: ReplayOptions,
    ports: &[u16],
) {
    let now = match ev {
        FileRef::Packet(p) => {
            decode_into(decoder, batch, counts, p, ports);
            batch.records += 1;
            Some(p.ts_ns)
        }
        FileRef::Event(FileEvent::Record(r)) => {
            let now = r.ts_ns();
            batch.records += 1;
            match r {
                Record::Packet(p) => decode_into(decoder, batch, counts, &p, ports),
                Record::Lost { count, .. } => counts.lost_events += count,
                Record::ResolvConf(r) => {
                    batch.resolv.push(r);
                    batch.ops.push(Op::ResolvConf);
                }
                Record::Drop(_) | Record::Conn(_) => {}
            }
            Some(now)
        }
        FileRef::Event(FileEvent::Snapshot(snap)) => {
            if opts.apply_snapshots {
                // Unboxed: snapshots are rare, a move is nothing next to applying one.
                batch.snaps.push(*snap);
                batch.ops.push(Op::Snapshot);
            }
            None
        }
        FileRef::Event(ev) => {
            batch.context.push(ev);
            batch.ops.push(Op::Context);
            None
        }
    };
    if let Some(now) = now {
        counts.last_ts = counts.last_ts.max(now);
        if !opts.no_ticks {
            batch.ops.push(Op::Tick(now));
        }
    }
}

/// Decodes a packet into the batch (the messages cross where they were
/// made) when it is DNS; counts it when it is not.
#[inline]
fn decode_into(
    decoder: &mut DnsDecoder,
    batch: &mut Batch,
    counts: &mut FrontCounts,
    p: impl crate::decode::PacketInput,
    ports: &[u16],
) {
    let before = batch.evs.len();
    if !decoder.push_if_dns(p, ports, &mut batch.evs) {
        counts.other_packets += 1;
        return;
    }
    let n = batch.evs.len() - before;
    if n > 0 {
        batch.ops.push(Op::Dns(u32::try_from(n).unwrap_or(u32::MAX)));
    }
}

/// What the sink's thread owns during a two-threaded replay.
struct BackSide<'a, S> {
    back: &'a mut Back,
    ctx: &'a super::Context,
    sink: &'a mut S,
    stats: &'a mut RunStats,
    drops: Option<&'a mut DropAnalyzer>,
    drop_out: &'a mut Vec<DropOutput>,
    hooks: &'a mut dyn ReplayHooks<S>,
    lists: bool,
    /// The pairer, when the split is after decoding (`ktrace dns -r`: nothing but DNS crosses).
    pairer: Option<&'a mut Pairer>,
    /// Where the pairer goes at [`Op::HandOver`].
    hand: SyncSender<&'a mut Pairer>,
}

impl<S: Sink> BackSide<'_, S> {
    /// The sink thread's share of a batch, in order: what `Pipeline::push`
    /// and `Pipeline::tick` do after decoding and pairing.
    /// `timing`: adds the time spent naming pods and pairing ([`split`]).
    fn analyse(&mut self, batch: &mut Batch, ack: &SyncSender<()>, live_output: bool, mut timing: Option<&mut u64>) {
        let Self { back, ctx, sink, stats, drops, drop_out, hooks, lists, pairer, hand } = self;
        let clock = timing.is_some();
        let mut timed = |t: Option<std::time::Instant>| {
            if let (Some(t), Some(acc)) = (t, timing.as_deref_mut()) {
                split::add_step(acc, t);
            }
        };
        let mut txs = batch.txs.drain(..);
        let mut evs = batch.evs.iter_mut();
        let mut snaps = batch.snaps.drain(..);
        let mut resolv = batch.resolv.drain(..);
        let mut recs = batch.recs.drain(..);
        let mut msgs = batch.msgs.drain(..);
        let mut context = batch.context.drain(..);
        for op in batch.ops.drain(..) {
            match op {
                Op::Txs(n) => back.flush_shared(txs.by_ref().take(n as usize), ctx, *sink, stats),
                Op::Tick(now) => {
                    // As `Pipeline::tick` does before the analysis's turn.
                    if let Some(p) = pairer {
                        let t = clock.then(std::time::Instant::now);
                        Detector::expire(&mut **p, now, &mut back.txs);
                        timed(t);
                        back.flush(ctx, *sink, stats);
                    }
                    back.tick(now, ctx, *sink, stats);
                    if let Some(d) = drops {
                        Detector::expire(&mut **d, now, drop_out);
                        for r in drop_out.drain(..) {
                            if back.filter.drop_output(&r) {
                                sink.drop_output(ctx, &r);
                            }
                        }
                    }
                    if live_output {
                        sink.flush_output();
                    }
                }
                Op::ResolvConf => {
                    if let Some(r) = resolv.next() {
                        back.analyzer.resolv_conf(&r);
                    }
                }
                Op::Barrier => {
                    let _ = ack.send(());
                }
                Op::Record => {
                    if let Some(r) = recs.next() {
                        hooks.record(&r);
                        if *lists {
                            sink.record(ctx, &r);
                        }
                        if let Some(d) = drops {
                            d.push(&r);
                        }
                    }
                }
                Op::Message => {
                    if let Some(ev) = msgs.next() {
                        sink.message(ctx, &ev);
                    }
                }
                Op::Context => {
                    if let Some(ev) = context.next() {
                        hooks.context(*sink, drops.as_deref_mut(), ev);
                    }
                }
                Op::Dns(n) => {
                    // As `enrich_and_pair`, then `Pipeline::flush`.
                    if let Some(p) = pairer {
                        let t = clock.then(std::time::Instant::now);
                        for ev in evs.by_ref().take(n as usize) {
                            ctx.enricher.enrich(ev);
                            p.push_ref(ev, &mut back.txs);
                        }
                        timed(t);
                        back.flush(ctx, *sink, stats);
                    }
                }
                Op::Snapshot => {
                    if let Some(s) = snaps.next() {
                        // Merged, not replaced: earlier pods keep their time ranges.
                        ctx.enricher.apply_snapshot(&s);
                    }
                }
                Op::HandOver => {
                    if let Some(p) = pairer.take() {
                        let _ = hand.send(p);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        analyze::pairing::PairConfig,
        enrich::Enricher,
        model::Finding,
        pipeline::{Context, Filter},
    };

    /// Every sink call, in order, with everything it was given; with
    /// `lists`, also every record and message (as `ktrace replay`'s sink).
    #[derive(Default)]
    struct Log(Vec<String>, bool);

    impl Sink for Log {
        fn lists_records(&self) -> bool {
            self.1
        }
        fn record(&mut self, _: &Context, rec: &Record) {
            self.0.push(format!("record {rec:?}"));
        }
        fn message(&mut self, _: &Context, ev: &DnsEvent) {
            self.0.push(format!("message {ev:?}"));
        }
        fn drop_output(&mut self, _: &Context, r: &DropOutput) {
            self.0.push(format!("drop {r:?}"));
        }
        fn transaction(&mut self, _: &Context, tx: &Transaction) {
            self.0.push(format!("tx {tx:?}"));
        }
        fn finding(&mut self, _: &Context, f: &Finding) {
            self.0.push(format!("finding {f:?}"));
        }
        fn finish(&mut self, _: &Context, stats: &RunStats) {
            self.0.push(format!("stats {stats:?}"));
        }
    }

    fn capture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/captures").join(name)
    }

    /// Which command's pipeline a test runs.
    #[derive(Clone, Copy, Debug)]
    enum Cmd {
        Dns,
        /// Every record and message listed.
        Replay,
        /// The drops stage, no DNS, no ticks.
        Drops,
    }

    /// Records every hook call into the same log as the sink's.
    struct LogHooks;

    impl ReplayHooks<Log> for LogHooks {
        fn record(&mut self, rec: &Record) {
            let _ = rec.ts_ns();
        }
        fn wants_records(&self) -> bool {
            true
        }
        fn context(&mut self, sink: &mut Log, drops: Option<&mut DropAnalyzer>, ev: FileEvent) {
            if let (Some(d), FileEvent::Coverage { node, from_ns, to_ns, tc }) = (drops, &ev) {
                d.observed(node, *from_ns, *to_ns, *tc);
            }
            sink.0.push(format!("context {ev:?}"));
        }
    }

    /// `None`: one thread; `Some(n)`: two, handing over every `n` operations.
    /// With `hooked`, hooks that want every record (so records cross and the
    /// split is after pairing); without, nothing but DNS crosses and the
    /// split is after decoding (`ktrace dns -r`).
    fn run(files: &[PathBuf], snapshots: bool, batch: Option<usize>, hooked: bool) -> Vec<String> {
        run_cmd_with(Cmd::Dns, files, snapshots, batch, hooked, None)
    }

    fn run_cmd(cmd: Cmd, files: &[PathBuf], snapshots: bool, batch: Option<usize>) -> Vec<String> {
        run_cmd_with(cmd, files, snapshots, batch, true, None)
    }

    /// `force_after`: the pairer crosses to the reading thread after so many batches.
    fn run_cmd_with(
        cmd: Cmd,
        files: &[PathBuf],
        snapshots: bool,
        batch: Option<usize>,
        hooked: bool,
        force_after: Option<u64>,
    ) -> Vec<String> {
        let enricher = Enricher::empty();
        let ctx = Context { clock_offset_ns: 0, enricher: enricher.clone() };
        let pair = PairConfig { timeout_ns: 5_000_000_000, ..PairConfig::default() };
        let mut pipe = Pipeline::new(ctx, Filter::default(), pair, Log(Vec::new(), matches!(cmd, Cmd::Replay)));
        pipe.live_output = false;
        if matches!(cmd, Cmd::Drops) {
            pipe.dns_ports = Vec::new();
            pipe.set_drops(DropAnalyzer::new(crate::analyze::drops::DropConfig::default(), &enricher));
        }
        let mut src = FileSource::new(files.to_vec());
        let opts = ReplayOptions {
            apply_snapshots: snapshots,
            threads: ReplayThreads::One,
            no_ticks: matches!(cmd, Cmd::Drops),
        };
        let (mut log_hooks, mut no_hooks) = (LogHooks, NoHooks);
        let hooks: &mut dyn ReplayHooks<Log> = if hooked { &mut log_hooks } else { &mut no_hooks };
        let warnings = match batch {
            None => pipe.replay_with(&mut src, opts, &mut |_| {}, hooks),
            Some(n) => pipe.replay_two(&mut src, opts, &mut |_| {}, hooks, n, force_after),
        }
        .expect("replay");
        pipe.stats.warnings.extend(warnings);
        let last = pipe.last_ts();
        let (mut log, _) = pipe.finish();
        log.0.push(format!("last record at {last}"));
        log.0
    }

    /// `ktrace replay`'s listing and `ktrace drops`' stage make the same
    /// calls on two threads as on one, with the hooks in their places.
    #[test]
    fn listing_and_drops_make_the_same_calls_on_two_threads() {
        let cases = [
            vec![capture("lab-node-a.pcapng"), capture("lab-node-b.pcapng")],
            vec![capture("ktrace-sample.pcapng")],
            vec![capture("ktrace-drops-conn.pcapng")],
        ];
        for cmd in [Cmd::Replay, Cmd::Drops] {
            for files in &cases {
                let one = run_cmd(cmd, files, true, None);
                assert!(one.iter().any(|l| l.starts_with("record ")) || matches!(cmd, Cmd::Drops));
                for batch in [1, 3, 64, BATCH_OPS] {
                    let two = run_cmd(cmd, files, true, Some(batch));
                    assert!(one == two, "{cmd:?} {files:?}, batch {batch}: the sink calls differ");
                }
            }
        }
    }

    /// The lab recording (two nodes, fan-out, forwarded upstream queries,
    /// stored Kubernetes snapshots) gives the same sink calls on two threads
    /// as on one, whatever the batch size (1: every operation crosses alone).
    #[test]
    fn two_threads_make_the_same_calls_as_one() {
        let cases = [
            vec![capture("lab-node-a.pcapng"), capture("lab-node-b.pcapng")],
            vec![capture("lab-node-a.pcapng")],
            vec![capture("ktrace-sample.pcapng")],
            vec![capture("ktrace-drops-conn.pcapng")],
        ];
        for files in &cases {
            for (snapshots, hooked) in [(true, true), (false, true), (true, false), (false, false)] {
                let one = run(files, snapshots, None, hooked);
                assert!(one.iter().any(|l| l.starts_with("tx ")), "{files:?}: no transaction at all");
                for batch in [1, 2, 3, 7, 64, BATCH_OPS] {
                    let two = run(files, snapshots, Some(batch), hooked);
                    assert!(
                        one == two,
                        "{files:?}, snapshots {snapshots}, hooked {hooked}, batch {batch}: the sink calls differ"
                    );
                }
            }
        }
    }

    /// `ktrace dns -r` moving its pairer to the reading thread mid-replay
    /// (after the first batch, or later; before, between or after the
    /// stored snapshots) makes the same sink calls as one thread.
    #[test]
    fn pairer_crossing_threads_changes_nothing() {
        let cases =
            [vec![capture("lab-node-a.pcapng"), capture("lab-node-b.pcapng")], vec![capture("ktrace-sample.pcapng")]];
        for files in &cases {
            for snapshots in [true, false] {
                let one = run(files, snapshots, None, false);
                for batch in [1, 3, 64] {
                    for after in [0, 1, 2, 5, 40] {
                        let two = run_cmd_with(Cmd::Dns, files, snapshots, Some(batch), false, Some(after));
                        assert!(
                            one == two,
                            "{files:?}, snapshots {snapshots}, batch {batch}, crossing after {after}: the sink calls differ"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn thread_choice() {
        assert!(!ReplayThreads::One.two(Some(u64::MAX)));
        assert!(ReplayThreads::Two.two(None));
        if std::env::var_os("KTRACE_REPLAY_THREADS").is_none() {
            assert!(!ReplayThreads::Auto.two(None), "a pipe stays on one thread");
            assert!(!ReplayThreads::Auto.two(Some(TWO_THREADS_FROM_BYTES - 1)));
        }
    }
}
