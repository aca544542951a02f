//! `ktrace replay -r FILE`: every event of one or more captures in time
//! order, decoded and attributed (the `sysdig -r` equivalent), or with
//! `--netstate` the network state each node had when recording started.
//! The captures run through the same pipeline as `ktrace dns -r`: with
//! `-o json` its transactions, findings and counters follow as the same
//! records.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::{
    analyze::{drops::DropAnalyzer, pairing::PairConfig},
    enrich::Enricher,
    output::records::RecordSink,
    pipeline::{Context, Filter, Pipeline, ReplayHooks, ReplayOptions},
    source::{FileSource, Source, SourceEvent, file::FileEvent},
};

use super::{Format, Global};

/// Arguments of `ktrace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Captures to read (repeatable; merged by time).
    #[arg(short = 'r', long = "read", value_name = "FILE", required = true)]
    pub read: Vec<PathBuf>,
    /// Print the recorded network state (interfaces, routes, VXLAN, nftables, sysctls) instead of events.
    #[arg(long)]
    pub netstate: bool,
    /// Only events involving pods of this namespace.
    #[arg(short = 'n', long = "ns", visible_alias = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only events involving this pod (`name` or `namespace/name`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only events observed on this node.
    #[arg(long)]
    pub node: Option<String>,
}

/// Runs `ktrace replay`: the captures through the one pipeline, listed by
/// [`RecordSink`] (capture headers and network state come from the source's
/// context, not the pipeline).
pub fn run(g: &Global, args: &ReplayArgs) -> anyhow::Result<()> {
    let user_snapshot = g.snapshot()?;
    let enricher = user_snapshot.as_ref().map_or_else(Enricher::empty, Enricher::from_snapshot);
    // Replayed records are in wall-clock time (see source::file).
    let ctx = Context { clock_offset_ns: 0, enricher };
    let pods = Filter { namespace: args.namespace.clone(), pod: args.pod.clone(), ..Default::default() };
    // Transactions and findings (JSON) are scoped as `ktrace dns` scopes them.
    let shown = Filter { node: args.node.clone(), ..pods.clone() };
    let sink = RecordSink::new(std::io::stdout().lock(), g.output == Format::Json, pods, args.node.clone());
    // `ktrace dns`'s default `--timeout`, so the records match `ktrace dns -r -o json`.
    let pair = PairConfig { timeout_ns: 5_000_000_000, ..PairConfig::default() };
    let mut pipe = Pipeline::new(ctx, shown, pair, sink);
    pipe.live_output = false;
    let mut src = FileSource::new(args.read.clone());
    let warnings = if args.netstate {
        netstate(&mut pipe, &mut src)?
    } else {
        let opts = ReplayOptions { apply_snapshots: user_snapshot.is_none(), ..ReplayOptions::default() };
        pipe.replay_with(&mut src, opts, &mut |_| {}, &mut Headers)?
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    pipe.stats.warnings.extend(warnings);
    if args.netstate {
        return Ok(());
    }
    let (_, stats) = pipe.finish();
    let s = stats.decode;
    if s.bad_packets + s.bad_dns > 0 {
        eprintln!("note: {} packets and {} DNS payloads could not be decoded", s.bad_packets, s.bad_dns);
    }
    Ok(())
}

type Sink = RecordSink<std::io::StdoutLock<'static>>;

/// `--netstate`: each node's recorded network state, nothing else.
fn netstate(pipe: &mut Pipeline<Sink>, src: &mut FileSource) -> anyhow::Result<Vec<String>> {
    src.run(&mut |ev| {
        if let SourceEvent::Context(FileEvent::NetState { node, state }) = ev {
            for (k, v) in state {
                pipe.sink_mut().emit(
                    &json!({"type": "netstate", "node": node, "name": k, "text": v}),
                    &format!("=== {node}: {k} ===\n{v}"),
                );
            }
        }
        true
    })
}

/// Each capture's header, listed where the file has it.
struct Headers;

impl ReplayHooks<Sink> for Headers {
    fn context(&mut self, sink: &mut Sink, _drops: Option<&mut DropAnalyzer>, ev: FileEvent) {
        if let FileEvent::Header { path, node, version } = ev {
            sink.emit(
                &json!({"type": "capture", "path": path.display().to_string(), "node": node, "ktrace_version": version}),
                &format!("# {}: recorded on node {node} by ktrace {version}", path.display()),
            );
        }
    }
}
