//! The agent's main loop: owns the node's BPF programs, encodes every record
//! into the [`Hub`], runs the DNS analysis for metrics and findings, and
//! serves gRPC and HTTP until SIGTERM/SIGINT, then detaches within a grace
//! period.
//!
//! Restart safety: every attachment is a BPF link (`cgroup_skb`, `tp_btf`,
//! tracepoints, TCX), which the kernel removes when the owning process dies,
//! even by SIGKILL; a stale Unix socket left by a killed predecessor is
//! replaced, a live one is an error.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::watch;

use super::{
    encode::Encoder,
    http::{HttpState, serve as serve_http},
    hub::{Entry, EntryKind, Hub},
    metrics::{Metrics, MetricsConfig, bpf_program_stats, enable_bpf_stats},
    server::{ListenAddr, Service, Shared, TlsFiles, serve},
    work::NodeWork,
};
use crate::{
    bpf::{CaptureConfig, Probes},
    capture::{ClockRef, MetaBlock},
    compose::MetaSource,
    pipeline::Context,
    source::live::{LiveEvent, LiveSource, QuietTick},
};

/// Everything `ktrace agent` was told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// gRPC listeners.
    pub listen: Vec<ListenAddr>,
    /// HTTP listener for /metrics, /healthz, /readyz.
    pub metrics: Option<std::net::SocketAddr>,
    /// Bearer token for TCP listeners.
    pub token: Option<String>,
    /// TLS for TCP listeners.
    pub tls: Option<TlsFiles>,
    /// Group allowed on the Unix socket.
    pub socket_gid: Option<u32>,
    /// Where on-node recordings go.
    pub capture_dir: PathBuf,
    /// History bound, bytes.
    pub history_bytes: usize,
    /// DNS ports.
    pub ports: Vec<u16>,
    /// Kernel ring buffer, bytes.
    pub ring_bytes: u32,
    /// Underlay devices to fingerprint.
    pub underlay: Vec<String>,
    /// Network namespaces of this node (lab: one agent per simulated node).
    pub netns_scope: Vec<u32>,
    /// Stop after this long (tests).
    pub duration: Option<Duration>,
    /// Most pods with their own metric labels.
    pub top_pods: usize,
    /// Time allowed for subscribers to drain after SIGTERM.
    pub grace: Duration,
    /// Peer agents to correlate with (cross-node `fabric_loss` metrics).
    pub peers: Vec<crate::agent::client::Target>,
    /// Credentials for the peers.
    pub peer_auth: crate::agent::client::ClientAuth,
}

/// The agent drains its rings every 50 ms (not `ktrace dns`'s 10 ms): at
/// 10k DNS messages/s, waking 100 times a second was an eighth of the
/// agent's CPU (the switch in and out of `epoll_wait`), and nobody reads its
/// entries row by row. A backed-up ring still forces a wakeup at once, and
/// heartbeats still go every 100 ms.
const TICK: Duration = Duration::from_millis(50);

/// From `source::live::BUSY_RATE` records/s (~20k DNS messages/s seen at
/// both sockets) the agent drains every 10 ms like `ktrace dns`: 50 ms of
/// records at a busy resolver's rate (~100k queries/s) come close to the
/// quarter-full ring that forces a wakeup and raises the agent to normal
/// priority, which then takes the resolver's CPU for the whole backlog.
const BUSY_TICK: Duration = Duration::from_millis(10);

/// With nobody subscribed only the metrics read the records (scraped every
/// 15 s or so): the rings are drained every 250 ms while they fill slowly
/// enough (`source::live::QuietTick`). A subscriber gets [`TICK`] again from
/// the next drain on (heartbeats every 100 ms: the CLI's merge waits for
/// them).
const QUIET_TICK: Duration = Duration::from_millis(250);

const PROGRAMS: &[&str] = &[
    "dns_egress",
    "dns_ingress",
    "drop_kfree_skb",
    "conn_state",
    "conn_recv_reset",
    "conn_send_reset",
    "conn_retransmit",
    "underlay_egress",
    "underlay_ingress",
];

/// Runs the agent until a signal (or `duration`).
pub fn run(meta: &MetaSource, cfg: &AgentConfig) -> anyhow::Result<()> {
    no_huge_pages();
    let node = meta.node();
    std::fs::create_dir_all(&cfg.capture_dir).with_context(|| format!("creating {}", cfg.capture_dir.display()))?;
    let capture_dir = cfg.capture_dir.canonicalize()?;
    // 0700: recordings hold DNS names of every pod on the node.
    std::fs::set_permissions(&capture_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let capture = Probes::attach(&CaptureConfig {
        ports: cfg.ports.clone(),
        ring_bytes: cfg.ring_bytes,
        cgroup: None,
        drops: true,
        underlay: cfg.underlay.clone(),
        ..CaptureConfig::default()
    })
    .context("attaching the node's BPF programs (are we root / do we have CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN? try `ktrace doctor`)")?;
    for w in &capture.warnings {
        eprintln!("ktrace agent: warning: {w}");
    }
    let (enricher, snap) = meta.live_metadata(&capture.cgroup)?;
    let _stats_fd = enable_bpf_stats();

    let (mut enc, head) = Encoder::new(Arc::clone(&node), cfg.underlay.clone(), 1024);
    enc.recycle_for(cfg.history_bytes);
    let hub = Arc::new(Hub::new(head, cfg.history_bytes));
    if let Some(s) = &snap {
        enc.meta(&MetaBlock::KubeSnapshot(s.raw.clone()), &hub);
    }
    enc.meta(&MetaBlock::NetState(crate::compose::netstate::netstate()), &hub);

    let metrics = Arc::new(Metrics::new(MetricsConfig {
        top_pods: cfg.top_pods,
        node: node.to_string(),
        ..MetricsConfig::default()
    }));
    let ready = Arc::new(AtomicBool::new(false));
    let kernel_lost = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicU64::new(crate::source::monotonic_ns()));
    let shared = Arc::new(Shared {
        hub: Arc::clone(&hub),
        node: Arc::clone(&node),
        ready: Arc::clone(&ready),
        kernel_lost: Arc::clone(&kernel_lost),
        underlay: cfg.underlay.clone(),
        warnings: capture.warnings.clone(),
        capture_dir,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut servers = Vec::new();
    for addr in &cfg.listen {
        if matches!(addr, ListenAddr::Tcp(_)) && cfg.token.is_none() {
            eprintln!(
                "ktrace agent: not serving {addr}: no --token-file (TCP needs a bearer token); Unix sockets still served"
            );
            continue;
        }
        let svc = Service::new(Arc::clone(&shared));
        let fut =
            serve(svc, addr.clone(), cfg.token.clone(), cfg.tls.clone(), cfg.socket_gid, stopped(stop_rx.clone()));
        let a = addr.clone();
        servers.push(rt.spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("ktrace agent: gRPC on {a}: {e:#}");
            }
        }));
        eprintln!("ktrace agent: gRPC on {addr}");
    }
    if let Some(addr) = cfg.metrics {
        let l = rt.block_on(tokio::net::TcpListener::bind(addr)).with_context(|| format!("binding {addr}"))?;
        let mut st = HttpState::new(Arc::clone(&metrics), Arc::clone(&ready));
        let (h, kl, al) = (Arc::clone(&hub), Arc::clone(&kernel_lost), Arc::clone(&alive));
        st.before_render = Some(Box::new(move |m: &Metrics| {
            let (n, bytes, _) = h.history_size();
            m.set_lost_events(
                kl.load(Ordering::Relaxed),
                h.stats.evicted.load(Ordering::Relaxed),
                h.stats.subscriber_dropped.load(Ordering::Relaxed),
            );
            m.set_gauge("ktrace_history_bytes", "Bytes held in the agent's history of recent records.", bytes as f64);
            m.set_gauge("ktrace_history_records", "Records held in the agent's history.", n as f64);
            m.set_gauge("ktrace_subscribers", "Live gRPC subscribers and recordings.", h.subscribers() as f64);
            m.set_gauge("ktrace_resident_memory_bytes", "The agent's resident memory.", rss_bytes() as f64);
            m.set_program_stats(&bpf_program_stats(PROGRAMS));
        }));
        // Alive = the main loop ticked within the last 5 s.
        let al2 = Arc::clone(&alive);
        st.healthy = Some(Box::new(move || {
            crate::source::monotonic_ns().saturating_sub(al2.load(Ordering::Relaxed)) < 5_000_000_000
        }));
        let _ = al;
        let fut = serve_http(l, Arc::new(st), stopped(stop_rx.clone()));
        servers.push(rt.spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("ktrace agent: HTTP: {e}");
            }
        }));
        eprintln!("ktrace agent: metrics on http://{addr}/metrics");
    }

    let stop_corr = Arc::new(AtomicBool::new(false));
    let corr = (!cfg.peers.is_empty()).then(|| {
        spawn_correlation(cfg, Arc::clone(&hub), Arc::clone(&node), Arc::clone(&metrics), Arc::clone(&stop_corr))
    });

    let clock = ClockRef::now();
    let ctx = Context { clock_offset_ns: clock.offset(), enricher: enricher.clone() };
    let mut work =
        NodeWork::new(enc, ctx, &cfg.ports, Arc::clone(&metrics), Arc::clone(&hub), Arc::clone(&kernel_lost));
    let mut src = LiveSource::new(capture, Some(Arc::clone(&node)));
    src.scope_to_node(&cfg.netns_scope, snap.as_ref(), &node);
    src.tick = TICK;
    src.busy_tick = Some(BUSY_TICK);
    let h = Arc::clone(&hub);
    src.quiet = Some(QuietTick { tick: QUIET_TICK, now: Box::new(move || h.subscribers() == 0) });
    ready.store(true, Ordering::Relaxed);
    eprintln!(
        "ktrace agent: node {node}: attached at {}; history {} MiB",
        src.capture().cgroup.display(),
        cfg.history_bytes >> 20
    );
    let mut last_hb = Instant::now();
    let mut last_meta = Instant::now();
    // The ring is read on this thread with its own single-threaded runtime:
    // under the multi-threaded one (gRPC, HTTP) its timer and readiness
    // events arrive at a worker thread, which then has to wake this one,
    // two context switches per 10 ms tick instead of one.
    let live_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reason = live_rt.block_on(src.run(cfg.duration, |ev| {
        match ev {
            LiveEvent::Record(r) => work.record(r),
            LiveEvent::Tick(now) => {
                alive.store(now, Ordering::Relaxed);
                work.tick(now);
                if last_hb.elapsed() >= Duration::from_millis(100) {
                    last_hb = Instant::now();
                    work.heartbeat();
                }
                if last_meta.elapsed() >= Duration::from_secs(1) {
                    last_meta = Instant::now();
                    if let Some(list) = enricher.poll_snapshot() {
                        work.meta(&MetaBlock::KubeSnapshot(list));
                    }
                }
            }
        }
        true
    }))?;
    let lost = src.capture().lost();
    kernel_lost.fetch_max(lost, Ordering::Relaxed);
    ready.store(false, Ordering::Relaxed);
    // The same closing line as `ktrace dns` (scripts and benchmarks read it).
    eprintln!(
        "ktrace agent: stopped: {} events read, {lost} lost in the kernel (ring buffer full); raised to normal priority {} time(s) to catch up ({} ms in all)",
        src.stats.items,
        src.stats.boosts,
        src.stats.boosted.as_millis()
    );
    // Subscribers get what was produced up to now, then their streams end.
    work.heartbeat();
    eprintln!("ktrace agent: stopping ({reason:?}); detaching");
    let _ = stop_tx.send(true);
    rt.block_on(async {
        let all = futures_util::future::join_all(servers);
        let _ = tokio::time::timeout(cfg.grace, all).await;
    });
    stop_corr.store(true, Ordering::Relaxed);
    if let Some(Ok(h)) = corr {
        let _ = h.join();
    }
    drop(src);
    work.finish();
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Correlates this node's stream with its peers' (the same merge and
/// `fabric_loss` analysis as `ktrace drops --agent a --agent b`), exporting
/// losses as they are decided. Each agent reports only losses *towards its
/// own node*, so a pair is counted once across the cluster.
fn spawn_correlation(
    cfg: &AgentConfig,
    hub: Arc<Hub>,
    node: Arc<str>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use crate::{
        agent::{
            proto::{Kind, SubscribeRequest},
            reader::{AgentEvent, AgentSourceConfig, run_until},
        },
        analyze::drops::{DropAnalyzer, DropConfig, DropFinding},
        source::file::FileEvent,
    };
    let src = AgentSourceConfig {
        targets: cfg.peers.clone(),
        auth: cfg.peer_auth.clone(),
        request: SubscribeRequest { kinds: vec![Kind::Drops as i32, Kind::Conn as i32], ..Default::default() },
        duration: None,
        lag: Duration::from_millis(500),
        local: Some((Arc::clone(&hub), Arc::clone(&node))),
    };
    std::thread::Builder::new().name("ktrace-correlate".into()).spawn(move || {
        // Its own metadata: peers' snapshots name their pods, which the
        // node's own watch (restricted to this node) does not know.
        let enr = crate::enrich::Enricher::empty();
        let mut an = DropAnalyzer::new(DropConfig::default(), &enr);
        let mut born = Instant::now();
        let mut drained = Instant::now();
        let r = run_until(&src, &stop, |ev| {
            match ev {
                AgentEvent::File(FileEvent::Record(r)) => an.push(&r),
                AgentEvent::File(FileEvent::Snapshot(s)) => enr.apply_snapshot(&s),
                AgentEvent::File(FileEvent::Coverage { node: n, from_ns, to_ns, tc }) => {
                    an.observed(&n, from_ns, to_ns, tc);
                }
                AgentEvent::Tick(upto) if drained.elapsed() >= Duration::from_secs(1) => {
                    drained = Instant::now();
                    for l in an.drain_fabric_losses(upto) {
                        if *l.to_node != *node {
                            continue;
                        }
                        metrics.fabric_loss(&l.from_node, &l.to_node, l.packets);
                        if let Ok(line) = crate::output::drops::finding_json(&DropFinding::FabricLoss(l), false) {
                            hub.publish(Entry {
                                ts_ns: upto,
                                kind: EntryKind::Finding,
                                pods: None,
                                bytes: line.into(),
                            });
                        }
                    }
                    // Bounded state in a long-running daemon: start afresh now and then.
                    if born.elapsed() > Duration::from_mins(10) {
                        born = Instant::now();
                        an = DropAnalyzer::new(DropConfig::default(), &enr);
                    }
                }
                AgentEvent::Notice(n) => log::info!("correlation: {n}"),
                AgentEvent::File(_) | AgentEvent::Tick(_) | AgentEvent::Finding { .. } => {}
            }
            true
        });
        if let Err(e) = r {
            eprintln!("ktrace agent: correlation with peers stopped: {e:#}");
        }
    })
}

/// No transparent huge pages for the agent's memory from here on. mimalloc
/// asks for them on its arenas and gives freed ranges back to the kernel a
/// second later; a record batch's allocations then fault a fresh huge page
/// in, and the kernel zeroes all 2 MiB of it (`clear_page_erms` in
/// `do_huge_pmd_anonymous_page`: 3.5 % of the agent's samples at 10k DNS
/// messages/s, ~250 such faults in 4 s). With 4 KiB pages the faults cost
/// little, and the peak RSS is 14 MiB lower. Measured side by side with
/// `dns-hotpath.sh` (5k queries/s, 9 alternating rounds in two sessions):
/// the typical run is unchanged (median 4.92 µs/query vs 4.94), the runs
/// with many huge-page faults are gone (worst 5.24 vs 7.10, mean 5.01 vs 5.45).
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process's memory map.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        log::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}
