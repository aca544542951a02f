//! `ktrace dns`: every DNS transaction with pod, process, server, rcode and
//! latency, followed by findings that explain slow or failing resolution.
//! Live from the kernel, or from captures with `-r` (same pipeline).

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    analyze::{Finding, Transaction, condense::CondenseConfig, pairing::PairConfig, summary::Summary},
    bpf::{CaptureConfig, Probes},
    output::{
        json::JsonSink,
        table::TableSink,
        term::{self, StatusLine, count},
    },
    pipeline::{Context, Filter, Pipeline, RunStats, Sink},
    source::{
        ClockRef, FileSource, LiveRun, Source, SourceEvent,
        file::{self, FileEvent},
        live::LiveSource,
    },
};

use super::{AgentSelect, Format, Global, PodScope, netns_arg, parse_duration};

/// Arguments of `ktrace dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Read captures instead of tracing live (repeatable: several nodes' captures merge by time).
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    pub read: Vec<PathBuf>,
    /// Which pods' transactions and findings to show.
    #[command(flatten)]
    pub scope: PodScope,
    /// Only clients in this network namespace (inode number, or name under /run/netns).
    #[arg(long)]
    pub netns: Option<String>,
    /// Only transactions whose client or server process has this name.
    #[arg(long)]
    pub comm: Option<String>,
    /// Stop after this long (e.g. 10s, 2m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// DNS ports to capture (comma-separated, at most 8).
    #[arg(long, value_delimiter = ',', default_value = "53")]
    pub ports: Vec<u16>,
    /// A query unanswered this long is reported as timed out.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// A search-list walk is reported on its own when it took this long or
    /// holds a timeout or SERVFAIL; faster walks are counted per pod and name
    /// (`search_fanout_summary`).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub slow: Duration,
    /// How often counted walks and repeats of a cause already reported are summed up (record time).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub report_every: Duration,
    /// Print per-pod and per-resolver statistics instead of every transaction.
    #[arg(long)]
    pub summary: bool,
    /// Table output: print the diagnosis first, then the transactions behind it (at the end of the run).
    #[arg(long)]
    pub explain_first: bool,
    /// Kernel ring buffers in MiB, all CPUs together (each CPU gets a power-of-two share, at least 256 KiB).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ring_mib: u32,
    /// Read from node agents instead of this kernel.
    #[command(flatten)]
    pub agents: AgentSelect,
}

impl DnsArgs {
    /// The condensing limits these arguments describe.
    #[must_use]
    pub fn condense(&self) -> CondenseConfig {
        CondenseConfig {
            slow_ns: self.slow.as_nanos() as u64,
            report_every_ns: (self.report_every.as_nanos() as u64).max(1_000_000_000),
            ..CondenseConfig::default()
        }
    }

    /// The display filter these arguments describe.
    pub fn filter(&self, g: &Global) -> anyhow::Result<Filter> {
        Ok(Filter {
            netns: self.netns.as_deref().map(netns_arg).transpose()?,
            comm: self.comm.clone(),
            ..self.scope.filter(g)
        })
    }
}

/// A sink that feeds the summary as well as (optionally) another sink.
struct SummarySink<S: Sink> {
    inner: S,
    summary: Summary,
    format: Format,
}

impl<S: Sink> Sink for SummarySink<S> {
    fn transaction(&mut self, _ctx: &Context, tx: &Transaction) {
        self.summary.push(tx);
    }
    fn finding(&mut self, ctx: &Context, f: &Finding) {
        self.summary.finding(f);
        self.inner.finding(ctx, f);
    }
    fn flush_output(&mut self) {
        self.inner.flush_output();
    }
    fn finish(&mut self, ctx: &Context, stats: &RunStats) {
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Table | Format::Wide => {
                let _ = writeln!(out, "{}", self.summary.render_table());
            }
            Format::Json => {
                for row in self.summary.json_rows() {
                    let _ = writeln!(out, "{row}");
                }
            }
        }
        self.inner.finish(ctx, stats);
    }
}

fn sink(g: &Global, args: &DnsArgs, status: &StatusLine) -> Box<dyn Sink> {
    // Stdout is line-buffered: a BufWriter on top makes it one write per batch.
    let out = std::io::BufWriter::with_capacity(64 * 1024, status.guard(std::io::stdout()));
    let table = |out| TableSink::new(out).fitted(term::table_width(g.output == Format::Wide), term::colour_stdout());
    match (g.output, args.summary) {
        (Format::Json, false) => Box::new(JsonSink::new(out)),
        (Format::Table | Format::Wide, false) => {
            let mut t = table(out);
            t.explain_first = args.explain_first;
            Box::new(t)
        }
        (Format::Json, true) => {
            Box::new(SummarySink { inner: JsonSink::new(out), summary: Summary::default(), format: Format::Json })
        }
        (Format::Table | Format::Wide, true) => {
            let mut t = table(out);
            t.quiet = true;
            Box::new(SummarySink { inner: t, summary: Summary::default(), format: Format::Table })
        }
    }
}

/// The status line of a live run: counts so far.
fn live_status(st: &RunStats) -> String {
    format!(
        "{} · {} · {} · {} lost",
        count(st.records, "event", "events"),
        count(st.transactions, "transaction", "transactions"),
        count(st.findings, "finding", "findings"),
        st.lost_events
    )
}

impl Sink for Box<dyn Sink> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        (**self).transaction(ctx, tx);
    }
    fn finding(&mut self, ctx: &Context, f: &Finding) {
        (**self).finding(ctx, f);
    }
    fn finish(&mut self, ctx: &Context, stats: &RunStats) {
        (**self).finish(ctx, stats);
    }
    fn flush_output(&mut self) {
        (**self).flush_output();
    }
    fn lists_records(&self) -> bool {
        (**self).lists_records()
    }
    fn record(&mut self, ctx: &Context, rec: &crate::event::Record) {
        (**self).record(ctx, rec);
    }
    fn message(&mut self, ctx: &Context, ev: &crate::decode::DnsEvent) {
        (**self).message(ctx, ev);
    }
}

/// Runs `ktrace dns`.
pub fn run(g: &Global, args: &DnsArgs) -> anyhow::Result<()> {
    let filter = args.filter(g)?;
    let pair = PairConfig { timeout_ns: args.timeout.as_nanos() as u64, ..PairConfig::default() };
    if !args.read.is_empty() {
        return replay(g, args, filter, pair);
    }
    if args.agents.active() {
        return from_agents(g, args, filter, pair);
    }
    if args.ports.is_empty() || args.ports.len() > tracer_common::PORTS_MAX as usize {
        anyhow::bail!("--ports takes 1 to {} ports", tracer_common::PORTS_MAX);
    }
    let cfg = CaptureConfig {
        ports: args.ports.clone(),
        ring_bytes: args.ring_mib.max(1).next_power_of_two() << 20,
        ..CaptureConfig::default()
    };
    crate::source::live::hold_stop_signals();
    let cap = Probes::attach(&cfg).with_context(|| {
        format!("attaching the DNS capture (are you root? try `{} doctor`)", super::kubectl::program())
    })?;
    let (enricher, _snap) = g.live_metadata(&cap.cgroup)?;
    eprintln!(
        "ktrace: attached at {}: tracing DNS on port(s) {:?} in every network namespace{}; Ctrl-C to stop",
        cap.cgroup.display(),
        args.ports,
        if cap.has_offsets { "" } else { " (no BTF offsets: process names limited)" }
    );
    let clock = ClockRef::now();
    let ctx = Context { clock_offset_ns: clock.offset(), enricher };
    // Only runs with an end get a status line: an open-ended run is read as it scrolls.
    let mut status =
        if args.duration.is_some() { StatusLine::new("ktrace dns", args.duration) } else { StatusLine::off() };
    let mut pipe = Pipeline::new(ctx, filter, pair, sink(g, args, &status));
    pipe.set_condense(args.condense());
    pipe.dns_ports.clone_from(&args.ports);
    let mut src = LiveRun::new(LiveSource::new(cap, Some(g.node())), args.duration);
    let warnings = feed(&mut src, &mut pipe, &mut status, None, true)?;
    status.clear();
    pipe.stats.warnings.extend(warnings);
    pipe.stats.source_errors = src.source.stats.bad_items;
    pipe.stats.dedupe = Some(src.source.dedupe_stats());
    let (read, lost) = (pipe.stats.records, pipe.stats.lost_events);
    pipe.finish();
    // On stderr whatever the output format, so scripts (and the benchmarks)
    // see losses without parsing the stats record.
    let boosts = if g.sched_normal {
        String::new()
    } else {
        let s = &src.source.stats;
        format!(
            "; --sched-idle: raised to normal priority {} time(s) to catch up ({} ms in all)",
            s.boosts,
            s.boosted.as_millis()
        )
    };
    eprintln!("ktrace: stopped: {read} events read, {lost} lost in the kernel (ring buffer full){boosts}");
    Ok(())
}

fn replay(g: &Global, args: &DnsArgs, filter: Filter, pair: PairConfig) -> anyhow::Result<()> {
    let snap = g.snapshot()?;
    let enricher = snap.as_ref().map_or_else(crate::enrich::Enricher::empty, crate::enrich::Enricher::from_snapshot);
    // Replayed records are in wall-clock time (see source::file).
    let ctx = Context { clock_offset_ns: 0, enricher };
    let mut status = StatusLine::new("ktrace dns", None);
    let mut pipe = Pipeline::new(ctx, filter, pair, sink(g, args, &status));
    pipe.set_condense(args.condense());
    pipe.dns_ports.clone_from(&args.ports);
    pipe.live_output = false;
    let mut src = FileSource::new(args.read.clone());
    let progress = std::sync::Arc::clone(&src.progress);
    // One thread or two (large files): the same output either way.
    let opts = crate::pipeline::ReplayOptions { apply_snapshots: snap.is_none(), ..Default::default() };
    let warnings = pipe.replay(&mut src, opts, &mut |st| {
        status.tick(|| format!("{} · {}", describe(&progress), live_status(st)));
    })?;
    status.clear();
    pipe.stats.warnings.extend(warnings);
    pipe.finish();
    Ok(())
}

/// Runs the pipeline over any source: records in, ticks expire what waits,
/// stored metadata updates the enricher (unless `--kube-snapshot` gave it),
/// notices go to stderr. The status line shows the counts so far (and how
/// far through the files a replay is).
fn feed(
    src: &mut dyn Source,
    pipe: &mut Pipeline<Box<dyn Sink>>,
    status: &mut StatusLine,
    progress: Option<&file::Progress>,
    apply_snapshots: bool,
) -> anyhow::Result<Vec<String>> {
    let mut n = 0u32;
    src.run(&mut |ev| {
        match ev {
            SourceEvent::Record(r) => {
                pipe.push(r);
                n = n.wrapping_add(1);
            }
            SourceEvent::Tick(now) => {
                pipe.tick(now);
                match progress {
                    None => status.tick(|| live_status(&pipe.stats)),
                    // Looking at the clock costs: every 4096 records is plenty for 1 s.
                    Some(p) if n.is_multiple_of(4096) => {
                        status.tick(|| format!("{} · {}", describe(p), live_status(&pipe.stats)));
                    }
                    Some(_) => {}
                }
            }
            SourceEvent::Context(FileEvent::Snapshot(s)) => {
                if apply_snapshots {
                    // Merged, not replaced: earlier pods keep their time ranges
                    // and each agent lists its own node's pods.
                    pipe.ctx.enricher.apply_snapshot(&s);
                }
            }
            SourceEvent::Notice(n) => eprintln!("ktrace: {n}"),
            SourceEvent::Context(_) | SourceEvent::AgentFinding { .. } => {}
        }
        true
    })
}

fn from_agents(g: &Global, args: &DnsArgs, filter: Filter, pair: PairConfig) -> anyhow::Result<()> {
    use crate::agent::proto::Kind;
    let meta = AgentSelect::enricher(g)?;
    // Agent streams carry wall-clock times, as replayed captures do.
    let ctx = Context { clock_offset_ns: 0, enricher: meta.0.clone() };
    let mut status =
        if args.duration.is_some() { StatusLine::new("ktrace dns", args.duration) } else { StatusLine::off() };
    let mut pipe = Pipeline::new(ctx, filter, pair, sink(g, args, &status));
    pipe.set_condense(args.condense());
    pipe.dns_ports.clone_from(&args.ports);
    let mut src = args.agents.source(g, "DNS", &[Kind::Dns], args.duration)?;
    let warnings = feed(&mut src, &mut pipe, &mut status, None, !meta.1)?;
    status.clear();
    pipe.stats.warnings.extend(warnings);
    pipe.finish();
    Ok(())
}

/// `42% of 1.2 GiB read`: here rather than on `Progress`, so that `source`
/// does not import `output` (which imports `pipeline`, which reads sources).
fn describe(p: &file::Progress) -> String {
    let (read, total) = p.get();
    let pct = (read.min(total) * 100).checked_div(total).unwrap_or(100);
    format!("{pct}% of {} read", term::bytes(total))
}
