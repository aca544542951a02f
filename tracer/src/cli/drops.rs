//! `ktrace drops`: where packets die and why — kernel drops with the
//! kernel's reason, failed TCP connections, and packets that left one node
//! and never reached the other (`fabric_loss`). Live on this node, or from
//! one or more nodes' captures (`-r node-a.pcapng -r node-b.pcapng`).

use std::{
    io::{StdoutLock, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    analyze::{
        drops::{DropAnalyzer, DropConfig, DropStats},
        pairing::PairConfig,
    },
    bpf::{CaptureConfig, Probes},
    compose::underlay::UnderlaySeen,
    enrich::{Enricher, Snapshot},
    output::{
        drops::{DropsFormat, DropsSink, DropsStatsJson},
        term::{self, StatusLine, count},
    },
    pipeline::{Context, Filter, Pipeline, ReplayHooks, ReplayOptions},
    source::{
        ClockRef, FileSource,
        file::FileEvent,
        live::{LiveEvent, LiveSource},
    },
};

use super::{AgentSelect, Format, Global, PodScope, netns_arg, parse_duration};

/// Arguments of `ktrace drops`.
#[derive(Debug, Args)]
pub struct DropsArgs {
    /// Read captures instead of tracing live (repeatable: one per node, merged by time).
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    pub read: Vec<PathBuf>,
    /// Which pods and node to show drops and losses for.
    #[command(flatten)]
    pub scope: PodScope,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Underlay interface(s) to fingerprint live with tc (repeatable). `auto`
    /// (default): the lower devices of this namespace's VXLAN, Geneve and IPIP
    /// links and the default route's device; `none`: no fingerprints.
    #[arg(long, value_name = "DEV", default_value = "auto")]
    pub underlay: Vec<String>,
    /// Only traffic of these network namespaces (inode or /run/netns name; repeatable),
    /// plus the pods the snapshot places on this node.
    #[arg(long = "netns-scope", value_name = "NETNS")]
    pub netns_scope: Vec<String>,
    /// Also show background drops that involve no pod and no node address.
    #[arg(long)]
    pub all: bool,
    /// Read from node agents instead of this kernel (several nodes: live `fabric_loss`).
    #[command(flatten)]
    pub agents: AgentSelect,
}

type DropsPipeline = Pipeline<DropsSink<StdoutLock<'static>>>;

/// The one pipeline with the drops stage, printing to stdout.
fn pipeline(g: &Global, args: &DropsArgs, filter: Filter, enricher: &Enricher) -> DropsPipeline {
    let format = match g.output {
        Format::Json => DropsFormat::Json,
        Format::Table | Format::Wide => {
            DropsFormat::Table { width: term::table_width(g.output == Format::Wide), colour: term::colour_stdout() }
        }
    };
    let sink = DropsSink::new(std::io::stdout().lock(), format, args.all);
    let ctx = Context { clock_offset_ns: 0, enricher: enricher.clone() };
    let mut pipe = Pipeline::new(ctx, filter, PairConfig::default(), sink);
    // Drops only: no packet is DNS here.
    pipe.dns_ports = Vec::new();
    pipe.live_output = false;
    pipe.set_drops(DropAnalyzer::new(DropConfig::default(), enricher));
    pipe
}

/// Runs `ktrace drops`.
pub fn run(g: &Global, args: &DropsArgs) -> anyhow::Result<()> {
    let filter = args.scope.filter(g);
    let (pipe, warnings, underlay) = if args.agents.active() {
        from_agents(g, args, filter)?
    } else if args.read.is_empty() {
        live(g, args, filter)?
    } else {
        from_files(g, args, filter)?
    };
    finish(g, args, pipe, &warnings, underlay.as_ref())
}

fn from_files(
    g: &Global,
    args: &DropsArgs,
    filter: Filter,
) -> anyhow::Result<(DropsPipeline, Vec<String>, Option<UnderlaySeen>)> {
    let snap = g.snapshot()?;
    let enricher = snap.as_ref().map_or_else(Enricher::empty, Enricher::from_snapshot);
    let mut pipe = pipeline(g, args, filter, &enricher);
    let mut hooks = FileHooks::default();
    let mut src = FileSource::new(args.read.clone());
    // Time does not pass per record: the drops stage has always seen a
    // capture whole and expired nothing before the end.
    let threads = crate::pipeline::ReplayThreads::OneUnlessAsked;
    let opts = ReplayOptions { apply_snapshots: snap.is_none(), no_ticks: true, threads };
    let mut warnings = pipe.replay_with(&mut src, opts, &mut |_| {}, &mut hooks)?;
    let underlay = hooks.underlay;
    warnings.extend(underlay.warning());
    Ok((pipe, warnings, Some(underlay)))
}

/// What `ktrace drops -r` does next to the pipeline: which nodes
/// fingerprinted their underlay, and what span each recorder observed.
#[derive(Default)]
struct FileHooks {
    underlay: UnderlaySeen,
}

impl<S> ReplayHooks<S> for FileHooks {
    fn record(&mut self, rec: &crate::event::Record) {
        self.underlay.record(rec);
    }

    fn wants_records(&self) -> bool {
        true
    }

    fn context(&mut self, _sink: &mut S, drops: Option<&mut DropAnalyzer>, ev: FileEvent) {
        match ev {
            FileEvent::Coverage { node, from_ns, to_ns, tc } => {
                self.underlay.coverage(&node, tc);
                if let Some(d) = drops {
                    d.observed(&node, from_ns, to_ns, tc);
                }
            }
            FileEvent::Header { node, .. } => self.underlay.node(&node),
            FileEvent::Record(_) | FileEvent::Snapshot(_) | FileEvent::NetState { .. } => {}
        }
    }
}

fn live(
    g: &Global,
    args: &DropsArgs,
    filter: Filter,
) -> anyhow::Result<(DropsPipeline, Vec<String>, Option<UnderlaySeen>)> {
    let underlay = crate::compose::underlay::resolve(&args.underlay)?;
    let cfg = CaptureConfig { drops: true, underlay: underlay.clone(), ..CaptureConfig::default() };
    crate::source::live::hold_stop_signals();
    let cap = Probes::attach(&cfg).with_context(|| {
        format!("attaching the drop tracers (are you root? try `{} doctor`)", super::kubectl::program())
    })?;
    let warnings = cap.warnings.clone();
    for w in &warnings {
        eprintln!("ktrace: warning: {w}");
    }
    let (enricher, snap): (Enricher, Option<Snapshot>) = g.live_metadata(&cap.cgroup)?;
    let node = g.node();
    eprintln!(
        "ktrace: attached at {}: tracing kernel drops and TCP failures{}; Ctrl-C to stop",
        cap.cgroup.display(),
        if underlay.is_empty() { String::new() } else { format!(", underlay {underlay:?}") }
    );
    let _clock = ClockRef::now();
    let mut src = LiveSource::new(cap, Some(node.clone()));
    let scope = args.netns_scope.iter().map(|n| netns_arg(n)).collect::<anyhow::Result<Vec<u32>>>()?;
    src.scope_to_node(&scope, snap.as_ref(), &node);
    let mut pipe = pipeline(g, args, filter, &enricher);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut status =
        if args.duration.is_some() { StatusLine::new("ktrace drops", args.duration) } else { StatusLine::off() };
    let (mut events, mut lost_seen) = (0u64, 0u64);
    rt.block_on(src.run(args.duration, |ev| {
        match ev {
            LiveEvent::Record(r) => {
                events += 1;
                if let crate::event::Record::Lost { count, .. } = &r {
                    lost_seen += count;
                }
                pipe.push(r);
            }
            LiveEvent::Tick(_) => {
                let st = pipe.drops_mut().map(|d| d.stats()).unwrap_or_default();
                status.tick(|| drops_status(events, &st, lost_seen));
            }
        }
        true
    }))?;
    status.clear();
    let lost = src.capture().lost();
    let mut warnings = warnings;
    if lost > 0 {
        warnings.push(format!("{lost} kernel events lost (ring buffer full)"));
    }
    Ok((pipe, warnings, None))
}

/// The status line of a live run: counts so far.
fn drops_status(events: u64, st: &DropStats, lost: u64) -> String {
    format!(
        "{} · {} · {} · {lost} lost",
        count(events, "event", "events"),
        count(st.drops, "kernel drop", "kernel drops"),
        count(st.conn_events, "TCP event", "TCP events"),
    )
}

fn from_agents(
    g: &Global,
    args: &DropsArgs,
    filter: Filter,
) -> anyhow::Result<(DropsPipeline, Vec<String>, Option<UnderlaySeen>)> {
    use crate::agent::{proto::Kind, reader::AgentEvent};
    let meta = AgentSelect::enricher(g)?;
    let enricher = meta.0.clone();
    let mut pipe = pipeline(g, args, filter, &enricher);
    let kinds = [Kind::Drops, Kind::Conn];
    let warnings = args.agents.read(g, "drops", &kinds, args.duration, &meta, |ev| match ev {
        AgentEvent::File(FileEvent::Record(r)) => pipe.push(r),
        AgentEvent::File(FileEvent::Coverage { node, from_ns, to_ns, tc }) => {
            if let Some(d) = pipe.drops_mut() {
                d.observed(&node, from_ns, to_ns, tc);
            }
        }
        _ => {}
    })?;
    Ok((pipe, warnings, None))
}

/// Ends the pipeline (the drops stage reports and the sink prints), then
/// the closing line and the warnings.
fn finish(
    g: &Global,
    args: &DropsArgs,
    mut pipe: DropsPipeline,
    warnings: &[String],
    underlay: Option<&UnderlaySeen>,
) -> anyhow::Result<()> {
    let underlay_packets = pipe.drops_mut().map_or(0, |d| d.stats().packets);
    let (mut sink, _) = pipe.finish();
    if let Some(e) = sink.error.take() {
        return Err(e.into());
    }
    let shown = sink.shown;
    let out = sink.out();
    if g.output.is_table() {
        writeln!(
            out,
            "\n{shown} result(s){}",
            if args.all { "" } else { " (background drops hidden; --all shows them)" }
        )?;
    } else {
        let stats = DropsStatsJson {
            nodes_without_underlay: underlay.map(UnderlaySeen::without),
            shown,
            ty: "stats",
            underlay_fingerprints: underlay.map(|u| u.fingerprints),
            underlay_packets,
            warnings,
        };
        writeln!(out, "{}", serde_json::to_string(&stats)?)?;
    }
    out.flush()?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
