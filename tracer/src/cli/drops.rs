//! `ktrace drops`: where packets die and why — kernel drops with the
//! kernel's reason, failed TCP connections, and packets that left one node
//! and never reached the other (`fabric_loss`). Live on this node, or from
//! one or more nodes' captures (`-r node-a.pcapng -r node-b.pcapng`).

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::{
    analyze::drops::{DropAnalyzer, DropReport},
    bpf::{CaptureConfig, Probes},
    enrich::{Enricher, Snapshot},
    output::{
        fit::{Seg, Style, fit_line},
        rfc3339,
        table::{describe, paint_finding_line},
        term::{self, StatusLine, count},
    },
    pipeline::Filter,
    source::{
        ClockRef,
        file::{self, FileEvent},
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

/// Runs `ktrace drops`.
pub fn run(g: &Global, args: &DropsArgs) -> anyhow::Result<()> {
    let filter = args.scope.filter(g);
    let mut underlay_status: Option<UnderlaySeen> = None;
    let mut analyzer = DropAnalyzer::new(crate::analyze::drops::DropConfig::default());
    let (report, enricher, warnings) = if args.agents.active() {
        from_agents(g, args, &mut analyzer)?
    } else if args.read.is_empty() {
        live(g, args, &mut analyzer)?
    } else {
        let snap = g.snapshot()?;
        let user_snapshot = snap.is_some();
        let enricher = snap.as_ref().map_or_else(Enricher::empty, Enricher::from_snapshot);
        let mut underlay = UnderlaySeen::default();
        let mut warnings = file::replay(&args.read, |ev| match ev {
            FileEvent::Record(r) => {
                underlay.record(&r);
                analyzer.push(&r, &enricher);
            }
            FileEvent::Snapshot(s) => {
                if !user_snapshot {
                    enricher.apply_snapshot(&s);
                }
            }
            FileEvent::Coverage { node, from_ns, to_ns, tc } => {
                underlay.coverage(&node, tc);
                analyzer.observed(&node, from_ns, to_ns, tc, &enricher);
            }
            FileEvent::Header { node, .. } => underlay.node(&node),
            FileEvent::NetState { .. } => {}
        })?;
        warnings.extend(underlay.warning());
        underlay_status = Some(underlay);
        let report = analyzer.finish(&enricher);
        (report, enricher, warnings)
    };
    let _ = enricher;
    print(g, args, &filter, &report, &warnings, underlay_status.as_ref(), analyzer.stats().packets)
}

/// Which nodes' captures hold underlay fingerprints (without them no
/// `fabric_loss` can be found, and an empty report would look like health).
#[derive(Debug, Default)]
struct UnderlaySeen {
    /// Every node a capture came from, in order.
    nodes: Vec<String>,
    /// Nodes whose recorder fingerprinted an underlay device.
    with_tc: Vec<String>,
    /// Fingerprint records read.
    fingerprints: u64,
}

impl UnderlaySeen {
    fn node(&mut self, node: &str) {
        if !self.nodes.iter().any(|n| n == node) {
            self.nodes.push(node.to_owned());
        }
    }
    fn coverage(&mut self, node: &str, tc: bool) {
        self.node(node);
        if tc && !self.with_tc.iter().any(|n| n == node) {
            self.with_tc.push(node.to_owned());
        }
    }
    fn record(&mut self, r: &crate::event::Record) {
        if let crate::event::Record::Packet(p) = r
            && matches!(p.hook, crate::event::Hook::TcEgress | crate::event::Hook::TcIngress)
        {
            self.fingerprints += 1;
            if let Some(n) = &p.node
                && !self.with_tc.iter().any(|x| **x == **n)
            {
                self.with_tc.push(n.to_string());
            }
        }
    }
    fn without(&self) -> Vec<&str> {
        self.nodes.iter().filter(|n| !self.with_tc.contains(n)).map(String::as_str).collect()
    }
    /// What to tell the user, if anything is missing.
    fn warning(&self) -> Option<String> {
        let without = self.without();
        if self.with_tc.is_empty() {
            Some(format!(
                "the captures hold no underlay fingerprints{}: packets lost between nodes (fabric_loss) cannot be found, only kernel drops and failed connections. Record each node again with `ktrace record` (--underlay auto is the default; name the device with --underlay eth0 if auto finds none)",
                if self.nodes.is_empty() { String::new() } else { format!(" ({})", self.nodes.join(", ")) }
            ))
        } else if !without.is_empty() {
            Some(format!(
                "no underlay fingerprints from {}: losses towards or from {} cannot be found; record it again with `ktrace record` (--underlay auto is the default)",
                without.join(", "),
                if without.len() == 1 { "it" } else { "them" }
            ))
        } else {
            None
        }
    }
}

fn live(
    g: &Global,
    args: &DropsArgs,
    analyzer: &mut DropAnalyzer,
) -> anyhow::Result<(DropReport, Enricher, Vec<String>)> {
    let underlay = super::underlay::resolve(&args.underlay)?;
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
                analyzer.push(&r, &enricher);
            }
            LiveEvent::Tick(_) => status.tick(|| drops_status(events, &analyzer.stats(), lost_seen)),
        }
        true
    }))?;
    status.clear();
    let lost = src.capture().lost();
    let mut warnings = warnings;
    if lost > 0 {
        warnings.push(format!("{lost} kernel events lost (ring buffer full)"));
    }
    let report = analyzer.finish(&enricher);
    Ok((report, enricher, warnings))
}

/// The status line of a live run: counts so far.
fn drops_status(events: u64, st: &crate::analyze::drops::DropStats, lost: u64) -> String {
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
    analyzer: &mut DropAnalyzer,
) -> anyhow::Result<(DropReport, Enricher, Vec<String>)> {
    use crate::{agent::proto::Kind, agent::reader::AgentEvent};
    let meta = AgentSelect::enricher(g)?;
    let enricher = meta.0.clone();
    let kinds = [Kind::Drops, Kind::Conn];
    let warnings = args.agents.read(g, "drops", &kinds, args.duration, &meta, |ev| match ev {
        AgentEvent::File(FileEvent::Record(r)) => analyzer.push(&r, &enricher),
        AgentEvent::File(FileEvent::Coverage { node, from_ns, to_ns, tc }) => {
            analyzer.observed(&node, from_ns, to_ns, tc, &enricher);
        }
        _ => {}
    })?;
    let report = analyzer.finish(&enricher);
    Ok((report, enricher, warnings))
}

fn with_type(mut v: Value, ty: &str) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String(ty.into()));
    }
    v
}

fn ts_field(v: &mut Value) {
    if let Value::Object(m) = v {
        for k in ["first_ts_ns", "last_ts_ns"] {
            if let Some(ns) = m.get(k).and_then(Value::as_u64) {
                let key = k.trim_end_matches("_ns").to_owned();
                m.insert(key, Value::String(rfc3339(i128::from(ns))));
            }
        }
    }
}

fn print(
    g: &Global,
    args: &DropsArgs,
    filter: &Filter,
    report: &DropReport,
    warnings: &[String],
    underlay: Option<&UnderlaySeen>,
    underlay_packets: u64,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let keep = |v: &Value| -> bool {
        if !args.all && v.get("background").and_then(Value::as_bool) == Some(true) {
            return false;
        }
        if let Some(n) = &filter.node {
            let on =
                ["node", "from_node", "to_node"].iter().any(|k| v.get(*k).and_then(Value::as_str) == Some(n.as_str()));
            if !on {
                return false;
            }
        }
        if filter.namespace.is_some() || filter.pod.is_some() {
            let pod_filter =
                Filter { namespace: filter.namespace.clone(), pod: filter.pod.clone(), ..Filter::default() };
            return crate::pipeline::json_mentions_pod(&pod_filter, v);
        }
        true
    };
    let mut rows: Vec<Value> = Vec::new();
    for d in &report.drops {
        rows.push(with_type(serde_json::to_value(d)?, "drop"));
    }
    for c in &report.conn_fails {
        rows.push(with_type(serde_json::to_value(c)?, "conn_fail"));
    }
    for f in &report.findings {
        rows.push(with_type(serde_json::to_value(f)?, "finding"));
    }
    let width = term::table_width(g.output == Format::Wide);
    let colour = term::colour_stdout();
    let mut shown = 0usize;
    for mut v in rows.into_iter().filter(|v| keep(v)) {
        shown += 1;
        ts_field(&mut v);
        match g.output {
            Format::Json => writeln!(out, "{v}")?,
            Format::Table | Format::Wide => match v.get("type").and_then(Value::as_str) {
                Some("drop") => writeln!(out, "{}", drop_line(&v, width, colour))?,
                Some("conn_fail") => writeln!(out, "{}", conn_line(&v, width, colour))?,
                _ => {
                    writeln!(out)?;
                    for l in describe(&v) {
                        writeln!(out, "{}", paint_finding_line(&l, colour))?;
                    }
                }
            },
        }
    }
    if g.output.is_table() {
        writeln!(
            out,
            "\n{shown} result(s){}",
            if args.all { "" } else { " (background drops hidden; --all shows them)" }
        )?;
    } else {
        let mut stats = serde_json::json!({
            "type": "stats", "shown": shown, "warnings": warnings, "underlay_packets": underlay_packets,
        });
        if let (Some(u), Value::Object(m)) = (underlay, &mut stats) {
            m.insert("underlay_fingerprints".into(), Value::from(u.fingerprints));
            m.insert("nodes_without_underlay".into(), Value::from(u.without()));
        }
        writeln!(out, "{stats}")?;
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// A kernel drop as one line: the full line of old for pipes and `-o wide`;
/// on a terminal the device, then the node, then the inner packet are left
/// out and pod names shortened in the middle until it fits.
fn drop_line(v: &Value, width: Option<usize>, colour: bool) -> String {
    let tag = if colour { Style::Bad.paint("DROP") } else { "DROP".to_owned() };
    fit_line(
        vec![
            Seg::fixed(format!(
                "{tag}  {:<22} x{:<5} {} ",
                s(v, "reason"),
                v.get("count").and_then(Value::as_u64).unwrap_or(0),
                s(v, "proto")
            )),
            Seg::name(pod_or(v, "src_pod", "src"), 16),
            Seg::fixed(" -> "),
            Seg::name(pod_or(v, "dst_pod", "dst"), 16),
            Seg::fixed(format!(" {}:{}", s(v, "dst"), s(v, "dport"))),
            Seg::optional(format!("  node={}", s(v, "node")), 2),
            Seg::optional(format!(" dev={}", s(v, "dev")), 1),
            Seg::optional(
                v.get("inner").filter(|x| !x.is_null()).map_or(String::new(), |i| format!("  inner: {i}")),
                1,
            ),
        ],
        width.map(|w| w + tag.len() - 4),
    )
}

/// A failed connection as one line (see [`drop_line`]).
fn conn_line(v: &Value, width: Option<usize>, colour: bool) -> String {
    let tag = if colour { Style::Bad.paint("CONN") } else { "CONN".to_owned() };
    fit_line(
        vec![
            Seg::fixed(format!(
                "{tag}  {:<22} x{:<5} ",
                s(v, "kind"),
                v.get("count").and_then(Value::as_u64).unwrap_or(0)
            )),
            Seg::name(pod_or(v, "src_pod", "src"), 16),
            Seg::fixed(" -> "),
            Seg::name(s(v, "dst"), 16),
            Seg::optional(
                format!(
                    "  process={}",
                    v.get("process").map_or("-".into(), |p| format!("{}[{}]", s(p, "comm"), s(p, "pid")))
                ),
                2,
            ),
            Seg::optional(format!(" node={}", s(v, "node")), 1),
        ],
        width.map(|w| w + tag.len() - 4),
    )
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(x)) => x.clone(),
        Some(x) => x.to_string(),
    }
}

fn pod_or(v: &Value, pod: &str, addr: &str) -> String {
    match v.get(pod).and_then(Value::as_str) {
        Some(p) => p.to_owned(),
        None => s(v, addr),
    }
}
