//! ktrace's Kubernetes metadata against a local HTTPS stand-in of the API
//! server (tests/apiserver.rs): attribution from list + watch (no snapshot
//! file), the API going away and coming back, 500s, watch expiry (410 →
//! relist), bad credentials, and a pod deleted with its IP reused.
//! Needs no root: nothing here touches the kernel.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

mod apiserver;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use apiserver::{ApiServer, Kind};
use ktrace::{
    analyze::{Finding, Transaction, pairing::PairConfig},
    enrich::{
        Enricher, Snapshot,
        kube::{ApiOrigin, KubeHandle, KubeSource, start_watch},
    },
    event::{Hook, PacketRecord, Record},
    pipeline::{Context, Filter, Pipeline, RunStats, Sink},
};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn source(server: &ApiServer, stale_after: Duration) -> KubeSource {
    let mut s = KubeSource::new(ApiOrigin::Kubeconfig { path: Some(server.kubeconfig()), context: None });
    s.stale_after = stale_after;
    s.max_backoff = Duration::from_millis(500);
    s
}

/// Polls `cond` every 50 ms for at most `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn synced(server: &ApiServer, stale_after: Duration) -> KubeHandle {
    let h = start_watch(source(server, stale_after)).await.expect("start_watch");
    wait_until(Duration::from_secs(20), "the first lists", || h.synced()).await;
    h
}

fn name(p: Option<ktrace::enrich::PodRef>) -> Option<String> {
    p.map(|p| p.to_string())
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// IPv4 + UDP + a DNS message (query for `backend.critical-app.svc.cluster.local` A, or its answer).
fn dns_packet(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, response: bool) -> Vec<u8> {
    let dns = ktrace::testkit::dns::message(0x1234, response, 0, "backend.critical-app.svc.cluster.local", 1, None);
    ktrace::testkit::packet::ipv4_udp(src.into(), sport, dst.into(), dport, &dns)
}

fn packet(ts_ns: u64, data: Vec<u8>) -> Record {
    let mut r = PacketRecord::bare(ts_ns, Hook::Wire, data.into());
    r.node = Some("node-a".into());
    Record::Packet(r)
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Transaction>>>);

impl Sink for Collect {
    fn transaction(&mut self, _: &Context, tx: &Transaction) {
        self.0.lock().expect("collect").push(tx.clone());
    }
    fn finding(&mut self, _: &Context, _: &Finding) {}
    fn finish(&mut self, _: &Context, _: &RunStats) {}
}

/// One DNS exchange client → kube-dns at wall time `t_ns`, through the real pipeline.
fn transaction_at(enricher: Enricher, t_ns: u64) -> Transaction {
    let out = Collect::default();
    let ctx = Context { clock_offset_ns: 0, enricher };
    let mut pipe = Pipeline::new(ctx, Filter::default(), PairConfig::default(), out.clone());
    pipe.push(packet(t_ns, dns_packet([10, 244, 1, 20], 40_000, [10, 244, 1, 10], 53, false)));
    pipe.push(packet(t_ns + 1_000_000, dns_packet([10, 244, 1, 10], 53, [10, 244, 1, 20], 40_000, true)));
    pipe.finish();
    let txs = out.0.lock().expect("collect").clone();
    assert_eq!(txs.len(), 1, "one transaction: {txs:?}");
    txs.into_iter().next().expect("one transaction")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_through_the_api_without_a_snapshot() {
    let server = ApiServer::start("attr").await;
    let started = Instant::now();
    let h = start_watch(source(&server, Duration::from_mins(1))).await.expect("start_watch");
    // Starting does not wait for the API: lookups answer (empty) at once.
    assert!(started.elapsed() < Duration::from_secs(2), "start_watch blocked for {:?}", started.elapsed());
    let e = h.enricher();
    let _ = e.pod_by_ip(&ip("10.244.1.20"));
    wait_until(Duration::from_secs(20), "the first lists", || h.synced()).await;
    assert!(!h.stale());

    assert_eq!(name(e.pod_by_ip(&ip("10.244.1.20"))).as_deref(), Some("critical-app/client"));
    assert_eq!(e.pod_by_ip(&ip("10.244.1.20")).and_then(|p| p.node.clone()).as_deref(), Some("node-a"));
    let svc = e.service_by_ip(&ip("10.244.2.30")).expect("backend service");
    assert_eq!((&*svc.namespace, &*svc.name), ("critical-app", "backend"));
    assert!(e.is_cluster_dns(&ip("10.244.1.10")));
    assert!(!e.is_cluster_dns(&ip("10.244.2.30")));
    assert_eq!(e.node_by_ip(&ip("192.168.77.11")).as_deref(), Some("node-b"));
    assert_eq!(e.node_addresses("node-a"), vec![ip("192.168.77.10")]);
    let cid = "00000000000040008000000000000020".repeat(2);
    assert_eq!(name(e.pod_by_container_id(&cid)).as_deref(), Some("critical-app/client"));

    let tx = transaction_at(e.clone(), now_ns() as u64);
    assert_eq!(name(tx.client_pod).as_deref(), Some("critical-app/client"));
    assert_eq!(name(tx.server_pod).as_deref(), Some("kube-system/kube-dns"));

    // A pod created later is attributed as soon as its watch event arrives.
    server.apply(
        Kind::Pod,
        apiserver::pod(
            "critical-app",
            "late",
            "node-b",
            "10.244.2.40",
            "00000000-0000-4000-8000-000000000040",
            "2026-01-01T00:00:00Z",
            &json!({}),
        ),
    );
    wait_until(Duration::from_secs(10), "the watched pod", || e.pod_by_ip(&ip("10.244.2.40")).is_some()).await;

    // What `ktrace record` stores: a List that replays to the same answers.
    let list = h.list_json().expect("list");
    let replayed = Enricher::from_snapshot(&Snapshot::parse(&list, "watch").expect("List parses"));
    assert_eq!(name(replayed.pod_by_ip(&ip("10.244.2.40"))).as_deref(), Some("critical-app/late"));
    assert!(replayed.is_cluster_dns(&ip("10.244.1.10")));
    assert!(h.poll_snapshot().is_some(), "changes are offered to the recorder");
    assert!(h.poll_snapshot().is_none(), "at most once a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_away_keeps_last_state_marks_stale_and_recovers() {
    let mut server = ApiServer::start("away").await;
    let stale_after = Duration::from_millis(1500);
    let h = synced(&server, stale_after).await;
    let e = h.enricher();

    server.stop().await;
    // Lookups keep answering from the last state, and never block.
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(name(e.pod_by_ip(&ip("10.244.1.20"))).as_deref(), Some("critical-app/client"));
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    wait_until(Duration::from_secs(15), "stale metadata", || h.stale()).await;
    assert!(h.last_error().is_some());
    let tx = transaction_at(e.clone(), now_ns() as u64);
    assert_eq!(name(tx.client_pod).as_deref(), Some("critical-app/client"), "stale is still attributed");

    // Changes made while ktrace could not see them arrive after the restart.
    server.delete(Kind::Pod, "critical-app/backend");
    server.restart().await;
    wait_until(Duration::from_secs(20), "recovery", || !h.stale() && e.pod_by_ip(&ip("10.244.2.30")).is_none()).await;

    // 500s: the open watches expire, the relist fails, metadata goes stale, then recovers.
    server.fail_500(true);
    server.expire_watches(0);
    wait_until(Duration::from_secs(15), "stale under 500s", || h.stale()).await;
    assert!(h.last_error().unwrap_or_default().contains("500"), "{:?}", h.last_error());
    server.apply(
        Kind::Pod,
        apiserver::pod(
            "critical-app",
            "backend",
            "node-b",
            "10.244.2.31",
            "00000000-0000-4000-8000-000000000031",
            "2026-01-01T00:00:00Z",
            &json!({}),
        ),
    );
    server.fail_500(false);
    wait_until(Duration::from_secs(20), "recovery after 500s", || {
        !h.stale() && e.pod_by_ip(&ip("10.244.2.31")).is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_relists() {
    let server = ApiServer::start("gone").await;
    let h = synced(&server, Duration::from_mins(1)).await;
    let before = server.requests();
    // Open watches get 410, and so does the next watch: two relists.
    server.expire_watches(1);
    server.apply(
        Kind::Service,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "new", "uid": "svc-new"}, "spec": {"clusterIP": "10.96.0.99"}}),
    );
    let e = h.enricher();
    wait_until(Duration::from_secs(15), "the service after relisting", || e.service_by_ip(&ip("10.96.0.99")).is_some())
        .await;
    wait_until(Duration::from_secs(15), "relists", || server.requests() >= before + 6).await;
    assert!(!h.stale());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_is_unauthorized_and_stale() {
    let server = ApiServer::start("auth").await;
    let kc = server.write_kubeconfig("wrong-token");
    let mut src = source(&server, Duration::from_millis(500));
    src.origin = ApiOrigin::Kubeconfig { path: Some(kc), context: Some("standin".into()) };
    let h = start_watch(src).await.expect("start_watch does not need the API");
    wait_until(Duration::from_secs(10), "stale", || h.stale()).await;
    assert!(!h.synced());
    let err = h.last_error().unwrap_or_default();
    assert!(err.contains("401") || err.contains("Unauthorized"), "{err}");
    assert!(h.enricher().pod_by_ip(&ip("10.244.1.20")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_and_reused_ip_attributed_by_time_live_and_on_replay() {
    let server = ApiServer::start("reuse").await;
    let h = synced(&server, Duration::from_mins(1)).await;
    let e = h.enricher();
    let ip20 = ip("10.244.1.20");
    let _ = h.poll_snapshot();

    let t_old = now_ns();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.delete(Kind::Pod, "critical-app/client");
    wait_until(Duration::from_secs(10), "the deletion", || e.pod_by_ip(&ip20).is_none()).await;
    let t_gap = now_ns();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = ktrace::output::rfc3339(now_ns());
    server.apply(
        Kind::Pod,
        apiserver::pod(
            "critical-app",
            "client-2",
            "node-a",
            "10.244.1.20",
            "00000000-0000-4000-8000-000000000099",
            &created,
            &json!({}),
        ),
    );
    wait_until(Duration::from_secs(10), "the new owner", || e.pod_by_ip(&ip20).is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t_new = now_ns();

    let check = |e: &Enricher, how: &str| {
        assert_eq!(
            name(e.pod_by_ip_at(&ip20, t_old)).as_deref(),
            Some("critical-app/client"),
            "{how}: before deletion"
        );
        // creationTimestamp has one-second resolution: in the gap the new pod
        // may already be the owner, but the deleted one never is.
        let gap = name(e.pod_by_ip_at(&ip20, t_gap));
        assert!(gap.as_deref() != Some("critical-app/client"), "{how}: between deletion and reuse: {gap:?}");
        assert_eq!(name(e.pod_by_ip_at(&ip20, t_new)).as_deref(), Some("critical-app/client-2"), "{how}: after reuse");
        let old = transaction_at(e.clone(), t_old as u64);
        assert_eq!(name(old.client_pod).as_deref(), Some("critical-app/client"), "{how}: event before deletion");
        let new = transaction_at(e.clone(), t_new as u64);
        assert_eq!(name(new.client_pod).as_deref(), Some("critical-app/client-2"), "{how}: event after reuse");
    };
    check(&e, "live");

    // Replay: the List recorded after the change carries the deleted pod with
    // its end time, and the new pod with its creation time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let list = h.poll_snapshot().expect("a change to record");
    let snap = Snapshot::parse(&list, "capture").expect("List parses");
    assert!(snap.pods.iter().any(|p| p.deleted_ns.is_some()), "the deleted pod is kept with ktrace.io/deleted-at");
    check(&Enricher::from_snapshot(&snap), "replay");
}

/// The CLI's wiring: `--kubeconfig` makes `live_metadata` watch the API on its
/// own thread (no runtime needed by the caller) and return the live view.
#[test]
fn cli_live_metadata_watches_the_api() {
    use clap::Parser as _;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let server = rt.block_on(ApiServer::start("cli"));
    let kc = server.kubeconfig();
    let cli = ktrace::cli::Cli::try_parse_from([
        "ktrace",
        "--kubeconfig",
        kc.to_str().expect("utf-8 path"),
        "--metadata-stale-after",
        "30s",
        "dns",
    ])
    .expect("CLI parses");
    assert!(cli.global.kube_origin().is_some());
    let (e, snap) = cli.global.live_metadata(&server.dir).expect("live metadata");
    assert!(snap.is_none(), "no snapshot file: the API is the source");
    let t = Instant::now();
    while e.pod_by_ip(&ip("10.244.1.20")).is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "attribution never filled in");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!e.stale());
    // Live records carry monotonic times: the enricher converts them with the node's clock offset.
    let mono_now = e.wall_ns(0);
    assert!(mono_now > 1_000_000_000_000_000_000, "clock offset set: {mono_now}");
    let with_snapshot =
        ktrace::cli::Cli::try_parse_from(["ktrace", "--kube-snapshot", "/x", "--kubeconfig", "/y", "dns"])
            .expect("CLI parses");
    assert!(with_snapshot.global.kube_origin().is_none(), "an explicit snapshot wins");
    drop(e);
    drop(server);
}

/// `ktrace dns --agents`: agent pods are found through the API (label
/// selector, namespace, running, pod IP), then streamed with a bearer token.
/// The agent here is the real gRPC service over a hub fed with synthetic
/// records (no BPF needed).
#[test]
fn agents_are_discovered_through_the_api_and_streamed_with_a_token() {
    use ktrace::agent::{
        encode::Encoder,
        hub::Hub,
        server::{ListenAddr, Service, Shared, serve},
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(ApiServer::start("agents"));
    let label = json!({"app.kubernetes.io/name": "ktrace-agent"});
    let agent_pod = |ns: &str, name: &str, labels: &serde_json::Value| {
        apiserver::pod(ns, name, "node-a", "127.0.0.1", &format!("uid-{name}"), "2026-11-23T10:00:00Z", labels)
    };
    server.apply(Kind::Pod, agent_pod("ktrace", "ktrace-agent-a1", &label));
    server.apply(Kind::Pod, agent_pod("ktrace", "something-else", &json!({"app": "x"})));
    server.apply(Kind::Pod, agent_pod("default", "ktrace-agent-elsewhere", &label));
    let origin = ApiOrigin::Kubeconfig { path: Some(server.kubeconfig()), context: None };
    let found = rt
        .block_on(ktrace::enrich::kube::discover_agents(&origin, "ktrace", "app.kubernetes.io/name=ktrace-agent"))
        .expect("discovery");
    assert_eq!(
        found,
        vec![ktrace::enrich::kube::AgentPod {
            name: "ktrace-agent-a1".into(),
            ip: "127.0.0.1".into(),
            node: Some("node-a".into())
        }]
    );

    // The agent the discovered pod stands for.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let node: Arc<str> = "node-a".into();
    let (mut enc, head) = Encoder::new(Arc::clone(&node), Vec::new(), 1024);
    let hub = Arc::new(Hub::new(head, 1 << 20));
    let shared = Arc::new(Shared {
        hub: Arc::clone(&hub),
        node: Arc::clone(&node),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        kernel_lost: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        underlay: Vec::new(),
        warnings: Vec::new(),
        capture_dir: server.dir.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = ListenAddr::Tcp(format!("127.0.0.1:{port}").parse().expect("addr"));
    let served = rt.spawn(serve(Service::new(shared), addr, Some("agent-token".into()), None, None, async move {
        let _ = stop_rx.await;
    }));
    let feeder = rt.spawn(async move {
        let e = Enricher::empty();
        for i in 0..60u32 {
            if i == 15 {
                let t = ktrace::source::monotonic_ns();
                enc.record(&packet(t, dns_packet([10, 244, 1, 20], 40000, [10, 244, 1, 10], 53, false)), &e, &hub);
                enc.record(
                    &packet(t + 1_000_000, dns_packet([10, 244, 1, 10], 53, [10, 244, 1, 20], 40000, true)),
                    &e,
                    &hub,
                );
            }
            enc.heartbeat(&hub);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let out = std::process::Command::new(ktrace_e2e::ktrace_bin())
        .args(["--kubeconfig", server.kubeconfig().to_str().expect("utf-8")])
        .args(["dns", "--agents", "--agent-port", &port.to_string(), "--duration", "2500ms", "-o", "json"])
        .env("KTRACE_AGENT_TOKEN", "agent-token")
        .env_remove("KTRACE_AGENT_TOKEN_FILE")
        .output()
        .expect("ktrace dns --agents");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ktrace dns --agents: {stderr}");
    assert!(stderr.contains("ktrace-agent-a1"), "names the discovered agent: {stderr}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let v = ktrace_e2e::json_lines(&lines);
    let txs = ktrace_e2e::of_type(&v, "dns");
    assert!(
        txs.iter().any(|t| t["qname"] == "backend.critical-app.svc.cluster.local" && t["rcode"] == "NOERROR"),
        "the agent's transaction came through: {v:#?}\n{stderr}"
    );
    // A wrong token is refused for good: the CLI says so and fails instead of retrying forever.
    let bad = std::process::Command::new(ktrace_e2e::ktrace_bin())
        .args(["dns", "--agent", &format!("127.0.0.1:{port}"), "--duration", "10s", "-o", "json"])
        .env("KTRACE_AGENT_TOKEN", "wrong")
        .env_remove("KTRACE_AGENT_TOKEN_FILE")
        .output()
        .expect("ktrace dns --agent");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a refused client fails: {err}");
    assert!(err.contains("bearer token"), "unauthenticated is reported: {err}");
    let _ = stop_tx.send(());
    rt.block_on(async {
        let _ = feeder.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
    });
}
