//! The agent's gRPC API end to end, without root or BPF: synthetic records
//! go through the real encoder and hub, are served on a Unix socket or
//! loopback TCP (token, TLS, mTLS), and read back by the real client, the
//! multi-agent merge, the capture reader and the DNS pipeline.
//!
//! Every test has its own temporary directory, its own runtimes and a time
//! bound; nothing leaves the machine (Unix sockets and 127.0.0.1 only).

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    collections::BTreeSet,
    io::Cursor,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ktrace::{
    agent::{
        client::{Client, ClientAuth, Target, connect},
        encode::Encoder,
        hub::Hub,
        proto::{
            self, InfoRequest, Kind, RecordRequest, SubscribeRequest, SubscribeResponse,
            agent_server::{Agent, AgentServer},
        },
        reader::{AgentEvent, AgentSourceConfig, AgentSourceStats, run},
        server::{ListenAddr, Service, Shared, TlsFiles, serve},
    },
    analyze::pairing::PairConfig,
    capture::{self, Item},
    enrich::Enricher,
    event::{Hook, PacketRecord, Record},
    pipeline::{Context, Filter, Pipeline},
    source::{
        file::{CaptureEvents, FileEvent},
        monotonic_ns, realtime_ns,
    },
};
use tokio::runtime::Runtime;
use tonic::{Code, Status};

const QNAME: &str = "backend.critical-app.svc.cluster.local";
const CLIENT_IP: [u8; 4] = [10, 244, 1, 5];
const RESOLVER_IP: [u8; 4] = [10, 96, 0, 10];
const BACKEND_IP: [u8; 4] = [10, 244, 2, 30];
const NETNS: u32 = 4_026_532_100;
/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- fixtures

/// A directory removed when the test ends (pass or fail).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ktrace-agent-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A DNS message for `QNAME` type A: a query, or an answer with one A record.
fn dns_message(id: u16, answer: Option<[u8; 4]>) -> Vec<u8> {
    ktrace::testkit::dns::message(id, answer.is_some(), 0, QNAME, 1, answer.map(Ipv4Addr::from))
}

/// An IPv4/UDP packet (header checksum set, UDP checksum 0 = none).
fn ipv4_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Bytes {
    Bytes::from(ktrace::testkit::packet::ipv4_udp(src.into(), sport, dst.into(), dport, payload))
}

/// Transaction `i`: the client's query leaving its socket and the answer
/// arriving back (distinct source port and id per transaction).
fn transaction(i: u16) -> [(Hook, Bytes); 2] {
    let port = 40_000 + i;
    let id = 0x1000 + i;
    [
        (Hook::SocketEgress, ipv4_udp(CLIENT_IP, port, RESOLVER_IP, 53, &dns_message(id, None))),
        (Hook::SocketIngress, ipv4_udp(RESOLVER_IP, 53, CLIENT_IP, port, &dns_message(id, Some(BACKEND_IP)))),
    ]
}

/// A fake node: an encoder feeding a hub, as the daemon's loop does.
struct Node {
    name: Arc<str>,
    hub: Arc<Hub>,
    enc: Mutex<(Encoder, u64)>,
    enr: Enricher,
    /// Packets published, in publication order.
    published: Mutex<Vec<Bytes>>,
}

impl Node {
    fn new(name: &str, history_bytes: usize) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name);
        let (enc, head) = Encoder::new(Arc::clone(&name), Vec::new(), 0);
        Arc::new(Self {
            name,
            hub: Arc::new(Hub::new(head, history_bytes)),
            enc: Mutex::new((enc, 0)),
            enr: Enricher::empty(),
            published: Mutex::new(Vec::new()),
        })
    }

    /// Publishes a record stamped (monotonic, as live records are) under the
    /// encoder's lock: a heartbeat never overtakes a record older than it,
    /// and timestamps strictly increase.
    fn publish_with(&self, f: impl FnOnce(u64) -> Record) {
        let mut g = self.enc.lock().expect("encoder");
        let mut ts = monotonic_ns();
        while ts <= g.1 {
            ts = monotonic_ns();
        }
        g.1 = ts;
        let rec = f(ts);
        if let Record::Packet(p) = &rec {
            self.published.lock().expect("published").push(p.data.clone());
        }
        g.0.record(&rec, &self.enr, &self.hub);
        assert_eq!(g.0.errors, 0, "encoder refused a record");
    }

    fn publish_packet(&self, hook: Hook, data: Bytes) {
        self.publish_with(|ts| {
            let mut p = PacketRecord::bare(ts, hook, data);
            p.netns_ino = NETNS;
            p.cgroup_id = 77;
            Record::Packet(p)
        });
    }

    fn publish_transactions(&self, range: std::ops::Range<u16>, pause: Duration) {
        for i in range {
            for (hook, data) in transaction(i) {
                self.publish_packet(hook, data);
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }

    fn heartbeat(&self) {
        self.enc.lock().expect("encoder").0.heartbeat(&self.hub);
    }

    fn published(&self) -> Vec<Bytes> {
        self.published.lock().expect("published").clone()
    }

    fn shared(&self, capture_dir: &Path) -> Arc<Shared> {
        Arc::new(Shared {
            hub: Arc::clone(&self.hub),
            node: Arc::clone(&self.name),
            ready: Arc::new(AtomicBool::new(true)),
            kernel_lost: Arc::new(AtomicU64::new(0)),
            underlay: Vec::new(),
            warnings: Vec::new(),
            capture_dir: capture_dir.to_path_buf(),
        })
    }

    /// Waits until no subscriber is registered with the hub.
    fn wait_subscribers_gone(&self) {
        let t = Instant::now();
        while self.hub.subscribers() > 0 {
            assert!(t.elapsed() < WAIT, "{}: subscribers linger after {WAIT:?}", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `n` subscribers are registered with the hub.
    fn wait_subscribers(&self, n: usize) {
        let t = Instant::now();
        while self.hub.subscribers() < n {
            assert!(t.elapsed() < WAIT, "{}: no subscriber after {WAIT:?}", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One agent's gRPC listener on its own runtime (as the daemon runs it),
/// with an optional 50 ms heartbeat task (the daemon's is 100 ms).
struct Server {
    rt: Option<Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<anyhow::Result<()>>,
}

struct ServeOpts<'a> {
    token: Option<&'a str>,
    tls: Option<TlsFiles>,
    capture_dir: Option<&'a Path>,
    heartbeat: bool,
}

impl Default for ServeOpts<'_> {
    fn default() -> Self {
        Self { token: None, tls: None, capture_dir: None, heartbeat: true }
    }
}

impl Server {
    fn start(node: &Arc<Node>, addr: ListenAddr, o: ServeOpts<'_>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let svc = Service::new(node.shared(o.capture_dir.unwrap_or_else(|| Path::new("/nonexistent"))));
        let wait_for = addr.clone();
        let token = o.token.map(str::to_owned);
        rt.spawn(async move {
            let r = serve(svc, addr, token, o.tls, None, async {
                let _ = stop_rx.await;
            })
            .await;
            let _ = done_tx.send(r);
        });
        if o.heartbeat {
            let n = Arc::clone(node);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    n.heartbeat();
                }
            });
        }
        let s = Self { rt: Some(rt), stop: Some(stop_tx), done };
        s.wait_listening(&wait_for);
        s
    }

    fn wait_listening(&self, addr: &ListenAddr) {
        let t = Instant::now();
        loop {
            let up = match addr {
                ListenAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
                ListenAddr::Tcp(a) => std::net::TcpStream::connect(a).is_ok(),
            };
            if up {
                return;
            }
            if let Ok(r) = self.done.try_recv() {
                panic!("serve {addr} ended early: {r:?}");
            }
            assert!(t.elapsed() < WAIT, "{addr} not listening after {WAIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful shutdown; returns what `serve` returned.
    fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.recv_timeout(WAIT).expect("serve did not return after shutdown")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn client_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn tcp_target(a: std::net::SocketAddr, tls: bool) -> Target {
    Target::Tcp { addr: a.to_string(), tls }
}

/// Decodes a subscriber's pcapng bytes like the client does.
fn decode(bytes: Vec<u8>) -> (Vec<FileEvent>, Vec<String>) {
    match capture::open_reader("stream", Cursor::new(bytes)) {
        Ok(rd) => {
            let mut evs = CaptureEvents::new(PathBuf::from("stream"), rd);
            let v: Vec<FileEvent> = evs.by_ref().collect();
            (v, evs.warnings)
        }
        Err(e) => (Vec::new(), vec![format!("open: {e}")]),
    }
}

fn packets(evs: &[FileEvent]) -> Vec<&PacketRecord> {
    evs.iter()
        .filter_map(|e| match e {
            FileEvent::Record(Record::Packet(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn lost_total(evs: &[FileEvent]) -> u64 {
    evs.iter()
        .map(|e| match e {
            FileEvent::Record(Record::Lost { count, .. }) => *count,
            _ => 0,
        })
        .sum()
}

/// Reads a stream to its end (it must end within [`WAIT`]).
async fn read_to_end(client: &mut Client, req: SubscribeRequest) -> Vec<u8> {
    let mut s = client.subscribe(req).await.expect("subscribe").into_inner();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(m) = s.message().await.expect("stream error") {
            out.extend_from_slice(&m.pcapng);
        }
    })
    .await
    .expect("a history_only stream must end");
    out
}

use ktrace::testkit::{Collect, Rng};

/// What `agent::reader::run` handed over.
#[derive(Default)]
struct Merged {
    records: Vec<Record>,
    coverage: Vec<(String, u64, u64)>,
    headers: Vec<String>,
    notices: Vec<String>,
    ticks: Vec<u64>,
    /// When the last record was handed over.
    last_record_at: Option<Instant>,
    stats: AgentSourceStats,
}

/// Runs the multi-agent source until `want` records and a coverage event
/// from each of `nodes` have arrived, or `max` passes (at the end, the
/// source hands over every record it holds, in time order).
fn merge_from(targets: Vec<Target>, since: u64, want: usize, nodes: usize, max: Duration) -> Merged {
    let cfg = AgentSourceConfig {
        targets,
        auth: ClientAuth::default(),
        request: SubscribeRequest { since_unix_ns: since, ..Default::default() },
        duration: Some(max),
        lag: Duration::from_millis(20),
        local: None,
    };
    let mut m = Merged::default();
    let mut covered = BTreeSet::new();
    let stats = run(&cfg, |ev| {
        match ev {
            AgentEvent::File(FileEvent::Record(r)) => {
                m.records.push(r);
                m.last_record_at = Some(Instant::now());
            }
            AgentEvent::File(FileEvent::Coverage { node, from_ns, to_ns, .. }) => {
                covered.insert(node.clone());
                m.coverage.push((node, from_ns, to_ns));
            }
            AgentEvent::File(FileEvent::Header { node, .. }) => m.headers.push(node),
            AgentEvent::File(_) | AgentEvent::Finding { .. } => {}
            AgentEvent::Tick(t) => m.ticks.push(t),
            AgentEvent::Notice(n) => m.notices.push(n),
        }
        !(m.records.len() >= want && covered.len() >= nodes)
    })
    .expect("agent source");
    m.stats = stats;
    m
}

fn record_node(r: &Record) -> Option<&str> {
    match r {
        Record::Packet(p) => p.node.as_deref(),
        Record::Drop(d) => d.node.as_deref(),
        Record::Conn(c) => c.node.as_deref(),
        Record::Lost { node, .. } => node.as_deref(),
        Record::ResolvConf(_) => None,
    }
}

fn assert_non_decreasing(recs: &[Record]) {
    for w in recs.windows(2) {
        assert!(w[0].ts_ns() <= w[1].ts_ns(), "out of order: {} then {}", w[0].ts_ns(), w[1].ts_ns());
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn unix_socket_stream_roundtrip() {
    let dir = TempDir::new("unix");
    let sock = dir.path().join("a.sock");
    let node = Node::new("node-a", 1 << 20);
    let server = Server::start(&node, ListenAddr::Unix(sock.clone()), ServeOpts::default());

    // 10 transactions before anyone connects (history), 15 while streaming
    // (live, spread over heartbeats).
    let since = realtime_ns();
    node.publish_transactions(0..10, Duration::ZERO);
    let live = {
        let node = Arc::clone(&node);
        std::thread::spawn(move || {
            node.wait_subscribers(1);
            node.publish_transactions(10..25, Duration::from_millis(10));
        })
    };
    let m = merge_from(vec![Target::Unix(sock.clone())], since, 50, 1, Duration::from_secs(3));
    live.join().expect("publisher");

    assert_eq!(m.records.len(), 50, "notices: {:?}", m.notices);
    assert_non_decreasing(&m.records);
    let got: Vec<Bytes> = m
        .records
        .iter()
        .map(|r| match r {
            Record::Packet(p) => p.data.clone(),
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    assert_eq!(got, node.published(), "records differ from what was published, or their order does");
    for r in &m.records {
        assert_eq!(record_node(r), Some("node-a"));
        let Record::Packet(p) = r else { unreachable!() };
        assert_eq!(p.netns_ino, NETNS);
        // Wall clock now: after `since`, not in the future.
        assert!(p.ts_ns >= since && p.ts_ns <= realtime_ns(), "ts {} not wall clock", p.ts_ns);
    }
    assert!(m.coverage.iter().any(|(n, from, to)| n == "node-a" && from <= to), "{:?}", m.coverage);
    assert!(m.headers.iter().any(|h| h == "node-a"));
    assert!(!m.ticks.is_empty());
    assert_eq!(m.stats.connections, 1, "notices: {:?}", m.notices);
    assert!(m.stats.warnings.is_empty(), "{:?}", m.stats.warnings);
    assert_eq!(m.stats.subscriber_dropped, 0);

    // The merged records pair into the 25 transactions, all answered.
    let ctx = Context { clock_offset_ns: 0, enricher: Enricher::empty() };
    let mut pipe = Pipeline::new(ctx, Filter::default(), PairConfig::default(), Collect::default());
    for r in m.records {
        let ts = r.ts_ns();
        pipe.push(r);
        pipe.tick(ts);
    }
    let (sink, stats) = pipe.finish();
    assert_eq!(sink.txs.len(), 25, "{stats:?}");
    for tx in &sink.txs {
        assert_eq!(tx.qname.trim_end_matches('.'), QNAME);
        assert_eq!(tx.rcode, Some(0));
        assert!(!tx.timed_out);
        assert_eq!(tx.answers.len(), 1);
        assert_eq!(tx.node.as_deref(), Some("node-a"));
    }

    assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o660);
    // Shutdown removes the socket.
    server.stop().expect("serve result");
    assert!(!sock.exists(), "socket left behind after shutdown");
}

#[test]
fn two_agents_merge_in_time_order() {
    let dir = TempDir::new("merge");
    let (a, b) = (Node::new("node-a", 1 << 20), Node::new("node-b", 1 << 20));
    let (sa, sb) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let _server_a = Server::start(&a, ListenAddr::Unix(sa.clone()), ServeOpts::default());
    let _server_b = Server::start(&b, ListenAddr::Unix(sb.clone()), ServeOpts::default());
    let since = realtime_ns();
    // Each query on one node, its answer on the other: the merge must
    // interleave the two streams record by record.
    let interleave = |range: std::ops::Range<u16>, pause: Duration| {
        for i in range {
            let [q, r] = transaction(i);
            let node = if i % 2 == 0 { &a } else { &b };
            node.publish_packet(q.0, q.1);
            std::thread::sleep(pause);
            let other = if i % 2 == 0 { &b } else { &a };
            other.publish_packet(r.0, r.1);
            std::thread::sleep(pause);
        }
    };
    interleave(0..8, Duration::from_millis(1));
    let m = std::thread::scope(|s| {
        s.spawn(|| {
            a.wait_subscribers(1);
            b.wait_subscribers(1);
            interleave(8..20, Duration::from_millis(5));
        });
        merge_from(vec![Target::Unix(sa.clone()), Target::Unix(sb.clone())], since, 40, 2, Duration::from_secs(3))
    });
    assert_eq!(m.records.len(), 40, "notices: {:?}", m.notices);
    assert_non_decreasing(&m.records);
    let per_node = |n: &str| m.records.iter().filter(|r| record_node(r) == Some(n)).count();
    assert_eq!((per_node("node-a"), per_node("node-b")), (20, 20));
    // Each node's records in its publication order.
    for node in [&a, &b] {
        let got: Vec<Bytes> = m
            .records
            .iter()
            .filter(|r| record_node(r) == Some(&*node.name))
            .filter_map(|r| if let Record::Packet(p) = r { Some(p.data.clone()) } else { None })
            .collect();
        assert_eq!(got, node.published());
    }
    let covered: BTreeSet<&str> = m.coverage.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(covered, BTreeSet::from(["node-a", "node-b"]));
    assert_eq!(m.stats.connections, 2);
    assert_eq!(m.stats.released_early, 0);
    assert!(m.stats.warnings.is_empty(), "{:?}", m.stats.warnings);
}

/// A node that goes quiet must not keep its last records from the reader:
/// its heartbeats say the stream is complete up to now, so the merge
/// releases them within a heartbeat or two (plus the lag).
#[test]
fn idle_agent_releases_its_last_records() {
    let dir = TempDir::new("idle");
    let sock = dir.path().join("i.sock");
    let node = Node::new("node-i", 1 << 20);
    let _server = Server::start(&node, ListenAddr::Unix(sock.clone()), ServeOpts::default());
    let live = {
        let node = Arc::clone(&node);
        std::thread::spawn(move || {
            node.wait_subscribers(1);
            node.publish_transactions(0..5, Duration::from_millis(10));
            Instant::now()
        })
    };
    let m = merge_from(vec![Target::Unix(sock)], 0, 10, 1, Duration::from_secs(6));
    let published_at = live.join().expect("publisher");
    assert_eq!(m.records.len(), 10);
    let late = m.last_record_at.expect("records").duration_since(published_at);
    assert!(late < Duration::from_secs(1), "the last records were held {late:?} after the node went quiet");
}

#[test]
fn tcp_requires_token() {
    let node = Node::new("node-tcp", 1 << 20);
    let addr = free_port();
    let _server = Server::start(
        &node,
        ListenAddr::Tcp(addr),
        ServeOpts { token: Some("s3cret"), heartbeat: false, ..Default::default() },
    );
    let rt = client_rt();
    rt.block_on(async {
        let target = tcp_target(addr, false);
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret "), Some("S3CRET")] {
            let auth = ClientAuth { token: token.map(str::to_owned), ..Default::default() };
            let mut c = connect(&target, &auth).await.expect("connect");
            let e = c.info(InfoRequest {}).await.expect_err("info without the right token");
            assert_eq!(e.code(), Code::Unauthenticated, "token {token:?}: {e}");
            let e = c.subscribe(SubscribeRequest::default()).await.expect_err("subscribe without the right token");
            assert_eq!(e.code(), Code::Unauthenticated);
            let req = RecordRequest { file_name: "x.pcapng".into(), duration_ms: 1, ..Default::default() };
            let e = c.record(req).await.expect_err("record without the right token");
            assert_eq!(e.code(), Code::Unauthenticated);
        }
        let auth = ClientAuth { token: Some("s3cret".into()), ..Default::default() };
        let mut c = connect(&target, &auth).await.expect("connect");
        let info = c.info(InfoRequest {}).await.expect("info").into_inner();
        assert_eq!(info.node, "node-tcp");
        assert_eq!(info.api_version, 1);
        assert!(info.ready);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

        // A token that is not a header value is refused by the client.
        let bad = ClientAuth { token: Some("a\nb".into()), ..Default::default() };
        assert!(connect(&target, &bad).await.is_err());

        // No token, no TCP listener.
        let svc = Service::new(node.shared(Path::new("/nonexistent")));
        let e = tokio::time::timeout(
            WAIT,
            serve(svc, ListenAddr::Tcp(free_port()), None, None, None, std::future::pending()),
        )
        .await
        .expect("serve must refuse at once")
        .expect_err("TCP without a token must be refused");
        assert!(e.to_string().contains("token"), "{e}");
    });
}

/// Test PKI: a CA, a server certificate for 127.0.0.1 and localhost, a
/// client certificate, and a client certificate from an unrelated CA.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key")).expect("CA cert")
    };
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("writing PEM");
        p
    };
    let good_ca = ca("ktrace agent test CA");
    let rogue_ca = ca("someone else's CA");

    let key = KeyPair::generate().expect("server key");
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &good_ca).expect("server cert");

    let client = |name: &str, issuer: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().expect("client key");
        let mut p = CertificateParams::new(vec!["ktrace-cli".to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "ktrace cli");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, issuer).expect("client cert");
        (write(&format!("{name}.pem"), cert.pem()), write(&format!("{name}.key"), key.serialize_pem()))
    };
    Pki {
        ca: write("ca.pem", good_ca.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        client: client("client", &good_ca),
        rogue_client: client("rogue", &rogue_ca),
    }
}

async fn info_with(target: &Target, auth: &ClientAuth) -> Result<proto::InfoResponse, String> {
    let mut c = connect(target, auth).await.map_err(|e| format!("connect: {e}"))?;
    let r = tokio::time::timeout(WAIT, c.info(InfoRequest {})).await.map_err(|_| "info timed out".to_owned())?;
    r.map(tonic::Response::into_inner).map_err(|e: Status| format!("info: {:?}: {}", e.code(), e.message()))
}

#[test]
fn tls_and_mtls() {
    let dir = TempDir::new("tls");
    let pki = pki(dir.path());
    let node = Node::new("node-tls", 1 << 20);
    let token = Some("s3cret".to_owned());

    // mTLS: client certificates from our CA required.
    let addr = free_port();
    let tls = TlsFiles { cert: pki.cert.clone(), key: pki.key.clone(), client_ca: Some(pki.ca.clone()) };
    let _mtls = Server::start(
        &node,
        ListenAddr::Tcp(addr),
        ServeOpts { token: Some("s3cret"), tls: Some(tls), heartbeat: false, ..Default::default() },
    );
    // TLS only.
    let addr_tls = free_port();
    let tls = TlsFiles { cert: pki.cert.clone(), key: pki.key.clone(), client_ca: None };
    let _tls = Server::start(
        &node,
        ListenAddr::Tcp(addr_tls),
        ServeOpts { token: Some("s3cret"), tls: Some(tls), heartbeat: false, ..Default::default() },
    );

    let rt = client_rt();
    rt.block_on(async {
        let good = ClientAuth {
            token: token.clone(),
            ca: Some(pki.ca.clone()),
            identity: Some(pki.client.clone()),
            tls_name: None,
        };
        let https = tcp_target(addr, true);
        let info = info_with(&https, &good).await.expect("mTLS with a good client certificate");
        assert_eq!((info.node.as_str(), info.api_version), ("node-tls", 1));
        // Verifying the name "localhost" instead of the address.
        let by_name = ClientAuth { tls_name: Some("localhost".into()), ..good.clone() };
        info_with(&https, &by_name).await.expect("mTLS with tls_name localhost");
        // A name the certificate does not carry.
        let wrong_name = ClientAuth { tls_name: Some("agent.example".into()), ..good.clone() };
        assert!(info_with(&https, &wrong_name).await.is_err(), "a certificate for another name was accepted");
        // The token is still required over mTLS.
        let no_token = ClientAuth { token: None, ..good.clone() };
        let e = info_with(&https, &no_token).await.expect_err("no token over mTLS");
        assert!(e.contains("Unauthenticated"), "{e}");
        // No client certificate, or one from another CA: refused.
        let anonymous = ClientAuth { identity: None, ..good.clone() };
        assert!(info_with(&https, &anonymous).await.is_err(), "mTLS accepted a client without a certificate");
        let rogue = ClientAuth { identity: Some(pki.rogue_client.clone()), ..good.clone() };
        assert!(info_with(&https, &rogue).await.is_err(), "mTLS accepted a certificate from another CA");
        // The server is not trusted without its CA.
        let no_ca = ClientAuth { ca: None, ..good.clone() };
        assert!(info_with(&https, &no_ca).await.is_err(), "server trusted without its CA");
        // Plaintext to a TLS listener fails.
        assert!(info_with(&tcp_target(addr, false), &good).await.is_err(), "plaintext accepted by a TLS listener");

        // TLS without client certificates.
        let https = tcp_target(addr_tls, true);
        info_with(&https, &anonymous).await.expect("TLS without a client certificate");
        let e = info_with(&https, &ClientAuth { token: None, ..anonymous.clone() }).await.expect_err("no token");
        assert!(e.contains("Unauthenticated"), "{e}");

        // A missing credentials file is a clear client error.
        let missing = ClientAuth { ca: Some(dir.path().join("nope.pem")), ..good.clone() };
        let e = info_with(&https, &missing).await.expect_err("missing CA file");
        assert!(e.contains("nope.pem"), "{e}");
    });
}

#[test]
fn history_since() {
    let dir = TempDir::new("history");
    let sock = dir.path().join("h.sock");
    let node = Node::new("node-h", 1 << 20);
    // No heartbeats: history is converted with the stream head's clock,
    // exactly the clock the hub stamped the entries with.
    let _server =
        Server::start(&node, ListenAddr::Unix(sock.clone()), ServeOpts { heartbeat: false, ..Default::default() });
    node.publish_transactions(0..10, Duration::from_millis(1));

    let rt = client_rt();
    rt.block_on(async {
        let mut c = connect(&Target::Unix(sock.clone()), &ClientAuth::default()).await.expect("connect");
        let info = c.info(InfoRequest {}).await.expect("info").into_inner();
        assert_eq!(info.history_records, 20);
        assert!(info.history_bytes > 0);

        // Everything.
        let all =
            read_to_end(&mut c, SubscribeRequest { since_unix_ns: 1, history_only: true, ..Default::default() }).await;
        let (evs, warnings) = decode(all);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(evs.iter().any(|e| matches!(e, FileEvent::Header { node, .. } if node == "node-h")));
        let ts: Vec<u64> = packets(&evs).iter().map(|p| p.ts_ns).collect();
        assert_eq!(ts.len(), 20);
        assert_eq!(info.oldest_unix_ns, ts[0]);
        let data: Vec<Bytes> = packets(&evs).iter().map(|p| p.data.clone()).collect();
        assert_eq!(data, node.published());

        // From the 11th record on.
        let mid = ts[10];
        let newer =
            read_to_end(&mut c, SubscribeRequest { since_unix_ns: mid, history_only: true, ..Default::default() })
                .await;
        let (evs, warnings) = decode(newer);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(evs.iter().any(|e| matches!(e, FileEvent::Header { .. })), "context missing");
        let got: Vec<u64> = packets(&evs).iter().map(|p| p.ts_ns).collect();
        assert_eq!(got, ts[10..].to_vec());

        // Only the context.
        let ctx =
            read_to_end(&mut c, SubscribeRequest { since_unix_ns: 0, history_only: true, ..Default::default() }).await;
        let (evs, warnings) = decode(ctx);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(evs.iter().any(|e| matches!(e, FileEvent::Header { .. })));
        assert!(packets(&evs).is_empty());

        // After the newest record: nothing but context.
        let late = read_to_end(
            &mut c,
            SubscribeRequest { since_unix_ns: realtime_ns(), history_only: true, ..Default::default() },
        )
        .await;
        assert!(packets(&decode(late).0).is_empty());

        // Kind filters apply to history: no DNS when only drops are asked for.
        let req = SubscribeRequest {
            since_unix_ns: 1,
            history_only: true,
            kinds: vec![Kind::Drops as i32],
            ..Default::default()
        };
        let drops = read_to_end(&mut c, req).await;
        let (evs, warnings) = decode(drops);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(packets(&evs).is_empty());
    });
}

#[test]
fn slow_subscriber_loss_is_counted() {
    const PUBLISH: u64 = 100_000;
    let dir = TempDir::new("slow");
    let sock = dir.path().join("s.sock");
    // Small history: the flood is about live delivery.
    let node = Node::new("node-s", 256 * 1024);
    let _server =
        Server::start(&node, ListenAddr::Unix(sock.clone()), ServeOpts { heartbeat: false, ..Default::default() });
    // Declares the interface before subscribing: it is then part of the
    // context, not a live entry that the flood could push out.
    let [(hook, q), _] = transaction(0);
    node.publish_packet(hook, q.clone());

    let rt = client_rt();
    let mut c = rt.block_on(connect(&Target::Unix(sock.clone()), &ClientAuth::default())).expect("connect");
    let mut stream = rt.block_on(c.subscribe(SubscribeRequest::default())).expect("subscribe").into_inner();
    node.wait_subscribers(1);
    let t = Instant::now();
    for _ in 0..PUBLISH {
        node.publish_packet(hook, q.clone());
    }
    eprintln!("published {PUBLISH} in {:?}", t.elapsed());

    // Now read until the stream has been quiet for a while.
    let mut bytes = Vec::new();
    rt.block_on(async {
        let t = Instant::now();
        while t.elapsed() < WAIT {
            match tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
                Ok(Ok(Some(m))) => bytes.extend_from_slice(&m.pcapng),
                Ok(Ok(None)) => panic!("stream ended"),
                Ok(Err(e)) => panic!("stream error: {e}"),
                Err(_) => break,
            }
        }
    });
    let (evs, warnings) = decode(bytes);
    assert!(warnings.is_empty(), "{warnings:?}");
    let delivered = packets(&evs).len() as u64;
    let lost = lost_total(&evs);
    let dropped = node.hub.stats.subscriber_dropped.load(Ordering::Relaxed);
    eprintln!("delivered {delivered} lost {lost} hub.subscriber_dropped {dropped}");
    assert!(lost > 0, "a subscriber that does not read must lose records (delivered {delivered})");
    assert_eq!(dropped, lost, "in-band Lost records and the hub's counter disagree");
    assert_eq!(delivered + lost, PUBLISH, "delivered {delivered} + lost {lost} != published {PUBLISH}");
    // Lost records carry the node.
    assert!(evs.iter().all(|e| match e {
        FileEvent::Record(Record::Lost { node, .. }) => node.as_deref() == Some("node-s"),
        _ => true,
    }));
}

/// A new network namespace's interface declaration is a live context
/// entry: a subscriber that falls behind right then must still be able to
/// read that namespace's later packets.
#[test]
fn slow_subscriber_keeps_interfaces_declared_during_the_loss() {
    const OTHER_NETNS: u32 = 4_026_532_999;
    let dir = TempDir::new("slow-idb");
    let sock = dir.path().join("s.sock");
    let node = Node::new("node-s", 256 * 1024);
    let _server =
        Server::start(&node, ListenAddr::Unix(sock.clone()), ServeOpts { heartbeat: false, ..Default::default() });
    let [(hook, q), _] = transaction(0);
    let publish = |netns: u32| {
        node.publish_with(|ts| {
            let mut p = PacketRecord::bare(ts, hook, q.clone());
            p.netns_ino = netns;
            Record::Packet(p)
        });
    };
    publish(NETNS);
    let rt = client_rt();
    let mut c = rt.block_on(connect(&Target::Unix(sock.clone()), &ClientAuth::default())).expect("connect");
    let mut stream = rt.block_on(c.subscribe(SubscribeRequest::default())).expect("subscribe").into_inner();
    node.wait_subscribers(1);
    // What the subscriber buffers before falling behind, then the new
    // namespace, then enough to push its declaration out of the live queue.
    for _ in 0..30_000 {
        publish(NETNS);
    }
    publish(OTHER_NETNS);
    for _ in 0..60_000 {
        publish(NETNS);
    }
    for _ in 0..10 {
        publish(OTHER_NETNS);
    }
    let mut bytes = Vec::new();
    rt.block_on(async {
        while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
            bytes.extend_from_slice(&m.pcapng);
        }
    });
    let (evs, warnings) = decode(bytes);
    assert!(lost_total(&evs) > 0, "the subscriber did not fall behind: the test proves nothing");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(packets(&evs).iter().filter(|p| p.netns_ino == OTHER_NETNS).count(), 10);
}

#[test]
fn record_rpc_writes_private_capture() {
    let dir = TempDir::new("record");
    let captures = dir.path().join("captures");
    std::fs::create_dir_all(&captures).expect("capture dir");
    let sock = dir.path().join("r.sock");
    let node = Node::new("node-r", 1 << 20);
    let _server = Server::start(
        &node,
        ListenAddr::Unix(sock.clone()),
        ServeOpts { capture_dir: Some(&captures), ..Default::default() },
    );
    let rt = client_rt();
    let mut c = rt.block_on(connect(&Target::Unix(sock.clone()), &ClientAuth::default())).expect("connect");

    let record = |c: &mut Client, name: &str, ms: u64, compress: bool| {
        let req = RecordRequest { file_name: name.into(), duration_ms: ms, compress, ..Default::default() };
        rt.block_on(async { tokio::time::timeout(WAIT, c.record(req)).await.expect("record RPC hung") })
    };
    let count_packets = |p: &Path| {
        let rd = capture::open(p).expect("recorded capture opens");
        let mut n = 0;
        for it in rd {
            if let Item::Record(Record::Packet(_)) = it.expect("recorded capture replays") {
                n += 1;
            }
        }
        n
    };

    for (name, compress, txs) in [("x.pcapng", false, 0..10), ("y.pcapng.zst", true, 10..17)] {
        let published = 2 * txs.len();
        // The previous recording's subscription ends when its pump next
        // wakes up (the heartbeats see to that); only then does "one
        // subscriber" mean this recording.
        node.wait_subscribers_gone();
        let r = std::thread::scope(|s| {
            let n = Arc::clone(&node);
            s.spawn(move || {
                n.wait_subscribers(1);
                n.publish_transactions(txs, Duration::from_millis(2));
            });
            record(&mut c, name, 500, compress)
        });
        let r = r.expect("record").into_inner();
        let path = captures.join(name);
        assert_eq!(PathBuf::from(&r.path), path);
        let meta = std::fs::symlink_metadata(&path).expect("capture written");
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "capture must be private");
        if !compress {
            assert_eq!(r.bytes, meta.len());
        }
        assert_eq!(r.dropped, 0);
        assert_eq!(count_packets(&path), published, "{name}");
        eprintln!("{name}: response records={} bytes={} ({published} packets in the file)", r.records, r.bytes);
    }

    // An existing file is never reused.
    let before = std::fs::read(captures.join("x.pcapng")).expect("read");
    let e = record(&mut c, "x.pcapng", 50, false).expect_err("existing file reused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(std::fs::read(captures.join("x.pcapng")).expect("read"), before, "existing capture modified");

    // Names that leave the directory or hide.
    for bad in ["../x", "a/b", ".h", "", "/etc/passwd", "x\0y", "é.pcapng", &"a".repeat(201)] {
        let e = record(&mut c, bad, 50, false).expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
    }
    assert!(!dir.path().join("x").exists());
    for ms in [0, 3_600_001] {
        let e = record(&mut c, "d.pcapng", ms, false).expect_err("duration");
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    // A symlink planted in the capture directory is not followed.
    let target = dir.path().join("target.pcapng");
    std::os::unix::fs::symlink(&target, captures.join("l.pcapng")).expect("symlink");
    let e = record(&mut c, "l.pcapng", 50, false).expect_err("symlink followed");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(!target.exists(), "wrote through a symlink");
    assert!(std::fs::symlink_metadata(captures.join("l.pcapng")).expect("link").file_type().is_symlink());
}

/// A valid stream as a subscriber with full history receives it.
fn valid_stream() -> (Vec<u8>, usize) {
    let node = Node::new("node-x", 1 << 20);
    node.publish_transactions(0..3, Duration::ZERO);
    node.publish_with(|ts| Record::Lost { ts_ns: ts, count: 3, node: None });
    node.heartbeat();
    let sub = node.hub.subscribe(1);
    let mut b = Vec::new();
    for c in &sub.context {
        b.extend_from_slice(c);
    }
    for e in &sub.history {
        b.extend_from_slice(&e.bytes);
    }
    (b, 6)
}

/// Block boundaries of little-endian pcapng.
fn boundaries(b: &[u8]) -> BTreeSet<usize> {
    let mut at = 0;
    let mut out = BTreeSet::from([0]);
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        at += len;
        out.insert(at);
    }
    out
}

#[test]
fn hostile_stream_bytes() {
    let (valid, n) = valid_stream();
    let (evs, warnings) = decode(valid.clone());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(packets(&evs).len(), n);
    assert_eq!(lost_total(&evs), 3);

    // Cut anywhere: never a panic; cut inside a block: a warning.
    let ends = boundaries(&valid);
    for cut in 0..valid.len() {
        let (evs, warnings) = decode(valid[..cut].to_vec());
        assert!(packets(&evs).len() <= n);
        if !ends.contains(&cut) {
            assert!(!warnings.is_empty(), "cut at {cut} (inside a block) without a warning");
        }
    }

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Random bytes, alone and after a valid head.
    let head_len = *ends.iter().nth(2).expect("a head");
    for i in 0..300 {
        let len = rng.below(4096);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 1 {
            let mut v = valid[..head_len].to_vec();
            v.append(&mut b);
            b = v;
        }
        let _ = decode(b);
    }
    // Bit flips and overwritten lengths in the valid stream.
    for _ in 0..1500 {
        let mut b = valid.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(b.len());
            b[at] ^= 1 << rng.below(8);
        }
        if rng.below(4) == 0 {
            let at = rng.below(b.len() - 4);
            b[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
        }
        let _ = decode(b);
    }
    // A block claiming 4 GiB is refused, not allocated.
    let mut b = valid[..head_len].to_vec();
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    let (_, warnings) = decode(b);
    assert!(!warnings.is_empty());
    // Not a capture at all.
    let (evs, warnings) = decode(b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
    assert!(evs.is_empty() && !warnings.is_empty());
}

/// An agent that serves fixed bytes as its stream (a broken or hostile agent).
struct Garbage(Vec<u8>);

#[tonic::async_trait]
impl Agent for Garbage {
    type SubscribeStream = tokio_stream::Iter<std::vec::IntoIter<Result<SubscribeResponse, Status>>>;

    async fn info(&self, _r: tonic::Request<InfoRequest>) -> Result<tonic::Response<proto::InfoResponse>, Status> {
        Ok(tonic::Response::new(proto::InfoResponse::default()))
    }

    async fn subscribe(
        &self,
        _r: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, Status> {
        let m = SubscribeResponse { pcapng: self.0.clone(), ..Default::default() };
        Ok(tonic::Response::new(tokio_stream::iter(vec![Ok(m)])))
    }

    async fn record(
        &self,
        _r: tonic::Request<RecordRequest>,
    ) -> Result<tonic::Response<proto::RecordResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
}

#[test]
fn hostile_agent_stream_is_a_warning() {
    let dir = TempDir::new("garbage");
    let (valid, _) = valid_stream();
    let cut = valid[..valid.len() - 10].to_vec();
    let cases: [(&str, Vec<u8>, &str); 2] =
        [("junk", b"\x0a\x0d\x0d\x0a garbage, not pcapng at all".to_vec(), "corrupt"), ("cut", cut, "truncated")];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    for (name, bytes, want) in cases {
        let sock = dir.path().join(format!("{name}.sock"));
        let l = rt.block_on(async { tokio::net::UnixListener::bind(&sock) }).expect("bind");
        let server = rt.spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServer::new(Garbage(bytes)))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l)),
        );
        let cfg = AgentSourceConfig {
            targets: vec![Target::Unix(sock)],
            auth: ClientAuth::default(),
            request: SubscribeRequest::default(),
            duration: Some(Duration::from_millis(1200)),
            lag: Duration::ZERO,
            local: None,
        };
        let mut notices = Vec::new();
        let stats = run(&cfg, |ev| {
            if let AgentEvent::Notice(n) = ev {
                notices.push(n);
            }
            true
        })
        .expect("agent source");
        server.abort();
        assert!(!stats.warnings.is_empty(), "{name}: no warning; notices {notices:?}");
        assert!(stats.warnings.iter().any(|w| w.contains(want)), "{name}: {:?}", stats.warnings);
        // The stream ended each time, and the source kept retrying.
        assert!(notices.iter().any(|n| n.contains("retrying")), "{name}: {notices:?}");
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
