//! `ktrace record -w FILE`: everything ktrace sees plus the context needed to
//! analyse it on another machine without root (node identity, clock
//! reference, kube metadata with this node's netns/cgroup keys, resolv.conf
//! evidence, network state, lost-event counters) in one pcapng file.
//!
//! The file is written by its own thread behind a bounded queue, so a slow
//! disk never stalls the ring-buffer reader: what does not fit is counted as
//! lost and recorded as such.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{TrySendError, sync_channel},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    bpf::{CaptureConfig, Probes},
    capture::{CaptureHeader, CaptureWriter, ClockRef, MetaBlock, WriterStats},
    enrich::Enricher,
    event::Record,
    output::term::{self, StatusLine, count},
    pipeline::ScopeKeeper,
    source::live::{LiveEvent, LiveSource, StopReason},
};

use super::{AgentSelect, Global, PodScope, netns_arg, parse_duration};

/// Arguments of `ktrace record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Capture file to write (pcapng; Wireshark and tshark open it).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Which pods to record (plus the resolvers they query).
    #[command(flatten)]
    pub scope: PodScope,
    /// Only traffic of sockets in these network namespaces (inode or /run/netns name; repeatable).
    /// A recorder per lab node uses this to see only its own node.
    #[arg(long = "netns-scope", value_name = "NETNS")]
    pub netns_scope: Vec<String>,
    /// Bytes kept per packet (the kernel keeps at most 1024).
    #[arg(long, default_value_t = 1024)]
    pub snaplen: u32,
    /// Compress the file (whole-stream zstd).
    #[arg(long, value_name = "ALGO", value_parser = ["zstd"])]
    pub compress: Option<String>,
    /// DNS ports to capture.
    #[arg(long, value_delimiter = ',', default_value = "53")]
    pub ports: Vec<u16>,
    /// Kernel ring buffers in MiB, all CPUs together (each CPU gets a power-of-two share, at least 256 KiB).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ring_mib: u32,
    /// Underlay interface(s) of this node to fingerprint with tc, for cross-node
    /// loss analysis (`ktrace drops -r a -r b`); repeatable, e.g. `--underlay eth0`.
    /// `auto` (default): the lower devices of this namespace's VXLAN, Geneve and
    /// IPIP links and the default route's device; `none`: no fingerprints.
    #[arg(long, value_name = "DEV", default_value = "auto")]
    pub underlay: Vec<String>,
    /// Do not record kernel drops and TCP connection events.
    #[arg(long)]
    pub no_drops: bool,
    /// Record from node agents instead of this kernel: one file per agent
    /// (`FILE` itself for one agent, else `FILE` with the node name before its extension).
    #[command(flatten)]
    pub agents: AgentSelect,
    /// With agents: have each agent write the capture on its own node (in its
    /// --capture-dir, named after FILE's file name) instead of streaming it here.
    #[arg(long, requires = "agent_sel")]
    pub on_node: bool,
}

/// Keeps packets that involve matching pods, and the resolvers those pods query.
struct RecordFilter(ScopeKeeper);

impl RecordFilter {
    fn keep(&mut self, e: &Enricher, rec: &Record) -> bool {
        if !self.0.active() {
            return true;
        }
        let Record::Packet(p) = rec else { return true };
        let pods = crate::compose::packet_pods(e, p);
        self.0.keep(&pods.iter().flatten().collect::<Vec<_>>())
    }
}

enum ToWriter {
    Record(Record, Option<String>),
    Meta(MetaBlock),
}

/// Runs `ktrace record`.
pub fn run(g: &Global, args: &RecordArgs) -> anyhow::Result<()> {
    if args.agents.active() {
        return from_agents(g, args);
    }
    anyhow::ensure!(!args.on_node, "--on-node needs --agent or --agents");
    let node = g.node();
    let underlay = crate::compose::underlay::resolve(&args.underlay)?;
    if underlay.is_empty() && !args.underlay.iter().any(|u| u == "none") {
        eprintln!(
            "ktrace: warning: --underlay auto found no tunnel lower device and no default route: no underlay fingerprints, so `ktrace drops -r` cannot see packets lost between nodes; name the device (--underlay eth0)"
        );
    }
    let cfg = CaptureConfig {
        ports: args.ports.clone(),
        ring_bytes: args.ring_mib.max(1).next_power_of_two() << 20,
        cgroup: None,
        drops: !args.no_drops,
        underlay: underlay.clone(),
        // The kernel copies no more than the capture keeps (0: all it can).
        snaplen: args.snaplen,
        ..CaptureConfig::default()
    };
    crate::source::live::hold_stop_signals();
    let cap = Probes::attach(&cfg).with_context(|| {
        format!("attaching the DNS capture (are you root? try `{} doctor`)", super::kubectl::program())
    })?;
    let (enricher, snap) = g.live_metadata(&cap.cgroup)?;
    for w in &cap.warnings {
        eprintln!("ktrace: warning: {w}");
    }
    eprintln!(
        "ktrace: attached at {}: recording to {}{}; Ctrl-C to stop",
        cap.cgroup.display(),
        args.write.display(),
        if underlay.is_empty() { ", no underlay".to_owned() } else { format!(", underlay {}", underlay.join(",")) }
    );
    let header = CaptureHeader {
        node: node.to_string(),
        ktrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        clock: ClockRef::now(),
        snaplen: args.snaplen,
        compress: args.compress.is_some(),
    };
    let start_mono = header.clock.mono_ns;
    let mut writer =
        CaptureWriter::create(&args.write, header).with_context(|| format!("creating {}", args.write.display()))?;
    if let Some(s) = &snap {
        writer.write_meta(&MetaBlock::KubeSnapshot(s.raw.clone()))?;
    }
    writer.write_meta(&MetaBlock::NetState(crate::compose::netstate::netstate()))?;

    let (tx, rx) = sync_channel::<ToWriter>(65_536);
    let path = args.write.clone();
    // pcapng bytes so far, for the status line.
    let bytes = Arc::new(AtomicU64::new(0));
    let bytes_w = Arc::clone(&bytes);
    let writer_thread =
        std::thread::Builder::new().name("ktrace-writer".into()).spawn(move || -> anyhow::Result<_> {
            for m in rx {
                match m {
                    ToWriter::Record(r, hint) => writer.write_record(&r, hint.as_deref()),
                    ToWriter::Meta(m) => writer.write_meta(&m),
                }
                .with_context(|| format!("writing {}", path.display()))?;
                bytes_w.store(writer.stats().bytes, Ordering::Relaxed);
            }
            Ok(writer.finish()?)
        })?;
    let mut status = StatusLine::new("ktrace record", args.duration);

    let mut filter = RecordFilter(ScopeKeeper::new(args.scope.filter(g)));
    let mut src = LiveSource::new(cap, Some(node.clone()));
    let scope = args.netns_scope.iter().map(|n| netns_arg(n)).collect::<anyhow::Result<Vec<u32>>>()?;
    src.scope_to_node(&scope, snap.as_ref(), &node);
    let mut queue_lost = 0u64;
    let mut kernel_lost_seen = 0u64;
    let mut written = 0u64;
    let mut last_clock = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reason = rt.block_on(src.run(args.duration, |ev| {
        match ev {
            LiveEvent::Record(r) => {
                if let Record::Lost { count, .. } = &r {
                    kernel_lost_seen += count;
                }
                if !filter.keep(&enricher, &r) {
                    return true;
                }
                let hint = match &r {
                    Record::Packet(p) => {
                        enricher.local_pod(p).map(|pod| format!("{node}/{}/{}", pod.namespace, pod.name))
                    }
                    _ => None,
                };
                match tx.try_send(ToWriter::Record(r, hint)) {
                    Ok(()) => written += 1,
                    Err(TrySendError::Full(_)) => queue_lost += 1,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            LiveEvent::Tick(_) => {
                status.tick(|| {
                    format!(
                        "{} · {} written · {} lost",
                        count(written, "event", "events"),
                        term::bytes(bytes.load(Ordering::Relaxed)),
                        queue_lost + kernel_lost_seen,
                    )
                });
                // Clocks drift: refresh the reference now and then.
                if last_clock.elapsed() > Duration::from_secs(10) {
                    last_clock = std::time::Instant::now();
                    let _ = tx.try_send(ToWriter::Meta(MetaBlock::ClockRef(ClockRef::now())));
                }
                // Watching the API: metadata changes go into the capture (at most 1/s),
                // so replay attributes each event to the pod of its time.
                if let Some(list) = enricher.poll_snapshot() {
                    let _ = tx.try_send(ToWriter::Meta(MetaBlock::KubeSnapshot(list)));
                }
            }
        }
        true
    }))?;
    status.clear();
    let kernel_lost = src.capture().lost();
    let mut counters = BTreeMap::new();
    counters.insert("kernel_lost".to_owned(), kernel_lost);
    counters.insert("writer_queue_lost".to_owned(), queue_lost);
    counters.insert("ring_items".to_owned(), src.stats.items);
    counters.insert("ring_bad_items".to_owned(), src.stats.bad_items);
    counters.insert("records_written".to_owned(), written);
    if queue_lost > 0 {
        let _ = tx.send(ToWriter::Record(
            Record::Lost { ts_ns: crate::source::monotonic_ns(), count: queue_lost, node: Some(Arc::clone(&node)) },
            None,
        ));
    }
    let _ = tx.send(ToWriter::Meta(MetaBlock::Counters(counters)));
    let coverage = crate::source::file::Coverage {
        node: node.to_string(),
        start_mono_ns: start_mono,
        end_mono_ns: crate::source::monotonic_ns(),
        underlay: underlay.clone(),
    };
    let _ = tx.send(ToWriter::Meta(MetaBlock::Custom {
        name: crate::source::file::COVERAGE.into(),
        data: serde_json::to_vec(&coverage).unwrap_or_default(),
    }));
    drop(tx);
    let stats = writer_thread.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    for line in record_summary(&args.write, reason, status.elapsed(), written, &stats, kernel_lost, queue_lost) {
        eprintln!("ktrace record: {line}");
    }
    Ok(())
}

/// What `record` tells at the end, in plain words: what was written, why it
/// stopped, and what was lost (bench/resolver.rs reads "wrote N records").
#[must_use]
pub fn record_summary(
    path: &std::path::Path,
    reason: StopReason,
    took: Duration,
    written: u64,
    stats: &WriterStats,
    kernel_lost: u64,
    queue_lost: u64,
) -> Vec<String> {
    let why = match reason {
        StopReason::Duration => "--duration elapsed",
        StopReason::Signal => "interrupted",
        StopReason::Consumer => "stopped",
    };
    let mut lines = vec![format!(
        "wrote {written} records to {} ({}) in {}; {why}.",
        path.display(),
        term::bytes(stats.bytes),
        term::clock(took)
    )];
    lines.push(format!(
        "{}, {} (resolv.conf, lost-event notes), {} of context (node, clock, pods, network state, counters).",
        count(stats.packets, "packet", "packets"),
        count(stats.records, "other record", "other records"),
        count(stats.meta_blocks, "block", "blocks"),
    ));
    lines.push(match (kernel_lost, queue_lost) {
        (0, 0) => "Nothing was lost.".to_owned(),
        (k, q) => {
            let mut parts = Vec::new();
            if k > 0 {
                parts.push(format!("{} in the kernel (ring buffer full; try --ring-mib)", count(k, "event", "events")));
            }
            if q > 0 {
                parts.push(format!("{} behind a slow disk", count(q, "event", "events")));
            }
            format!("Lost {}; the capture records how many, so replays say so too.", parts.join(" and "))
        }
    });
    lines
}

/// `FILE` for one agent; `FILE` with `node` before the extension for several.
fn agent_file(base: &std::path::Path, node: &str, several: bool) -> PathBuf {
    if !several {
        return base.to_owned();
    }
    let stem = base.file_stem().map_or_else(|| "capture".into(), |s| s.to_string_lossy().into_owned());
    let node: String =
        node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let name = match base.extension() {
        Some(e) => format!("{stem}.{node}.{}", e.to_string_lossy()),
        None => format!("{stem}.{node}"),
    };
    base.with_file_name(name)
}

fn kinds(args: &RecordArgs) -> Vec<i32> {
    use crate::agent::proto::Kind;
    if args.no_drops { vec![Kind::Dns as i32] } else { vec![Kind::Dns as i32, Kind::Drops as i32, Kind::Conn as i32] }
}

/// `ktrace record --agent…`: each agent's stream is a capture already; it is
/// written as it arrives (or, with `--on-node`, on the agent's node).
fn from_agents(g: &Global, args: &RecordArgs) -> anyhow::Result<()> {
    use crate::agent::{client::connect, proto};
    let (targets, auth) = args.agents.resolve(g)?;
    let scope = args.scope.filter(g);
    let several = targets.len() > 1;
    let duration = args.duration.unwrap_or(Duration::from_hours(1));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut tasks = Vec::new();
    for t in targets {
        let auth = auth.clone();
        let base = args.write.clone();
        let kinds = kinds(args);
        let (namespace, pod) = (scope.namespace.clone().unwrap_or_default(), scope.pod.clone().unwrap_or_default());
        let on_node = args.on_node;
        let compress = args.compress.is_some();
        let since = args.agents.since_ns();
        tasks.push(rt.spawn(async move {
            let mut c = connect(&t, &auth).await?;
            let info = c.info(proto::InfoRequest {}).await?.into_inner();
            let path = agent_file(&base, &info.node, several);
            if on_node {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let r = c
                    .record(proto::RecordRequest {
                        file_name: name,
                        duration_ms: duration.as_millis() as u64,
                        kinds,
                        namespace,
                        pod,
                        compress,
                        since_unix_ns: since,
                    })
                    .await?
                    .into_inner();
                eprintln!("ktrace record: node {}: {} ({} bytes, {} dropped)", info.node, r.path, r.bytes, r.dropped);
                return anyhow::Ok(());
            }
            let req = proto::SubscribeRequest { kinds, namespace, pod, since_unix_ns: since, history_only: false };
            let mut stream = c.subscribe(req).await?.into_inner();
            eprintln!("ktrace record: attached to agent {t} (node {}): writing {}", info.node, path.display());
            let file = {
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)
            }
            .with_context(|| format!("creating {}", path.display()))?;
            let mut out = crate::capture::byte_sink(file, compress)?;
            let deadline = tokio::time::Instant::now() + duration;
            let mut bytes = 0u64;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = tokio::signal::ctrl_c() => break,
                    m = stream.message() => match m? {
                        Some(m) => {
                            bytes += m.pcapng.len() as u64;
                            std::io::Write::write_all(&mut out, &m.pcapng)?;
                        }
                        None => break,
                    },
                }
            }
            std::io::Write::flush(&mut out)?;
            drop(out);
            eprintln!("ktrace record: node {}: {} ({bytes} bytes)", info.node, path.display());
            anyhow::Ok(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match rt.block_on(t) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    anyhow::ensure!(errors.is_empty(), "recording from agents: {}", errors.join("; "));
    Ok(())
}
