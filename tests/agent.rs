//! Issue 8 end to end: one `ktrace agent` per lab node (each scoped to its
//! node's namespaces, as a `DaemonSet` pod would be), the CLI reading both.
//! Real programs, real resolvers, real VXLAN, real nftables faults.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use ktrace_e2e::{Ktrace, dig_from_backend, finding, json_lines, ktrace_bin, of_type, run_json, tools_available};
use nix::sys::signal::Signal;
use serde_json::Value;
use xtask::lab::{Fault, LabGuard, LabOptions};

const BACKEND: &str = "backend.critical-app.svc.cluster.local";

fn can_run(test: &str) -> bool {
    ktrace_e2e::lab_can_run(test, &["dnsmasq", "getent", "dig", "curl", "ip", "nft"])
}

/// A running agent inside a lab node's network namespace.
struct Agent {
    child: Child,
    node: String,
    dir: PathBuf,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    fn sock(dir: &Path, node: &str) -> PathBuf {
        dir.join(format!("{node}.sock"))
    }

    fn start(lab: &LabGuard, dir: &Path, node: &str, port: u16, extra: &[&str]) -> Self {
        let snap = lab.snapshot_path();
        let ns = format!("kt-{node}");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(ktrace_bin())
            .args(["agent", "--node-name", node, "--netns-scope", &ns, "--underlay", "eth0", "--kube-snapshot"])
            .arg(&snap)
            .arg("--listen")
            .arg(format!("unix:{}", Self::sock(dir, node).display()))
            .arg("--capture-dir")
            .arg(dir.join(format!("cap-{node}")))
            .args(["--metrics", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let se = std::sync::Arc::clone(&stderr);
        let tag = node.to_owned();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[agent {tag}] {l}");
                if l.contains("attached at") {
                    let _ = tx.send(());
                }
                if let Ok(mut v) = se.lock() {
                    v.push(l);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("agent attached within 30 s");
        Self { child, node: node.to_owned(), dir: dir.to_owned(), port, stderr }
    }

    fn addr(&self) -> String {
        format!("unix:{}", Self::sock(&self.dir, &self.node).display())
    }

    fn http(&self, path: &str) -> (String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("kt-{}", self.node), "curl", "-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = s.rsplit_once('\n').unwrap_or((&s, ""));
        (code.to_owned(), body.to_owned())
    }

    fn metrics(&self) -> String {
        let (code, body) = self.http("/metrics");
        assert_eq!(code, "200", "/metrics: {body}");
        body
    }

    fn signal(&self, sig: Signal) {
        ktrace_e2e::signal(&self.child, sig);
    }

    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "agent {} did not exit within {within:?}", self.node);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rss_kib(&self) -> u64 {
        // `ip netns exec` execs ktrace: the child pid is the agent.
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = s.rsplit_once(')').map_or("", |x| x.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ktrace-e2e-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn getent(lab: &LabGuard) -> Duration {
    let t = Instant::now();
    let out = lab
        .pod_command("critical-app", "client", "getent")
        .args(["hosts", BACKEND])
        .stdout(Stdio::piped())
        .output()
        .expect("getent");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.2.30"));
    t.elapsed()
}

/// The value of one series in a Prometheus text exposition.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = ktrace::testkit::exposition::parse_exposition(text).expect("valid exposition");
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
}

fn promtool_ok(text: &str) {
    if !tools_available("promtool check metrics", &["promtool"]) {
        return;
    }
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut c.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = c.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[allow(clippy::many_single_char_names, reason = "a, b, c name the three nodes as in the scenario")]
fn agents_explain_the_seed_incident_and_fabric_loss_live_like_captures() {
    if !can_run("agents_live") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::FabricDropVxlan)).expect("lab up");
    let dir = tmpdir("live");
    // node-a's agent also correlates with node-b's: fabric losses towards node-a become metrics.
    let peer = format!("unix:{}", Agent::sock(&dir, "node-b").display());
    let a = Agent::start(&lab, &dir, "node-a", 9971, &["--peer", &peer]);
    let b = Agent::start(&lab, &dir, "node-b", 9972, &[]);
    let (aa, ba) = (a.addr(), b.addr());
    let (ra, rb) = (dir.join("rec.pcapng"), dir.join("rec"));
    let dns = Ktrace::start(&["dns", "--agent", &aa, "--agent", &ba, "-o", "json", "--timeout", "3s"]);
    let drops = Ktrace::start(&["drops", "--agent", &aa, "--agent", &ba, "-o", "json"]);
    // The same streams recorded through the agents, for the capture comparison.
    let rec =
        Ktrace::start(&["record", "--agent", &aa, "--agent", &ba, "-w", ra.to_str().unwrap(), "--duration", "60s"]);
    std::thread::sleep(Duration::from_secs(1));
    let took = getent(&lab);
    dig_from_backend(&lab);

    // Metrics during the incident (findings come once the agent's analysis
    // has seen the walk end: poll, bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut m = a.metrics();
    while series(&m, "ktrace_dns_findings_total", &[("kind", "search_fanout")]).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        m = a.metrics();
    }
    promtool_ok(&m);
    let req = |rcode: &str| {
        series(
            &m,
            "ktrace_dns_requests_total",
            &[("namespace", "critical-app"), ("pod", "client"), ("qtype", "A"), ("rcode", rcode)],
        )
    };
    assert_eq!(req("NXDOMAIN"), Some(3.0), "3 NXDOMAIN suffixes for A:\n{m}");
    assert_eq!(req("timeout"), Some(1.0), "the .localdomain A query timed out:\n{m}");
    assert_eq!(req("NOERROR"), Some(1.0), "the literal name answered:\n{m}");
    assert_eq!(
        series(
            &m,
            "ktrace_dns_findings_total",
            &[("kind", "search_fanout"), ("namespace", "critical-app"), ("pod", "client")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(series(&m, "ktrace_dns_latency_seconds_count", &[("namespace", "critical-app")]).unwrap_or(0.0) >= 6.0);
    assert_eq!(series(&m, "ktrace_lost_events_total", &[("where", "kernel")]), Some(0.0), "{m}");
    assert!(series(&m, "ktrace_bpf_program_runs_total", &[("program", "dns_egress")]).unwrap_or(0.0) > 0.0, "{m}");
    assert_eq!(a.http("/readyz").0, "200");
    assert_eq!(a.http("/healthz").0, "200");

    std::thread::sleep(Duration::from_secs(1));
    let live = json_lines(&dns.stop());
    let live_drops = json_lines(&drops.stop());
    // SAFETY: kill(2) on the recorder we started.
    let recorded = rec.stop();
    drop(recorded);

    // DNS: the seed incident, live through two agents.
    let f = finding(&live, "search_fanout");
    let f: Vec<&&Value> = f.iter().filter(|f| f["base_name"] == BACKEND).collect();
    assert_eq!(f.len(), 1, "one search_fanout: {live:#?}");
    assert_eq!(f[0]["pod"], "critical-app/client");
    assert_eq!(f[0]["answered_by"], BACKEND);
    let total = f[0]["total_ms"].as_f64().unwrap();
    let measured = took.as_secs_f64() * 1000.0;
    assert!((total - measured).abs() <= measured * 0.10, "finding total {total} ms vs getent {measured} ms");
    let ut = finding(&live, "upstream_timeout");
    assert!(ut.iter().any(|u| u["upstream"] == "192.168.77.53:53"), "upstream_timeout: {ut:#?}");
    assert!(ut.iter().any(|u| u["client"]["pod"] == "critical-app/client"), "the waiting client is named: {ut:#?}");
    // Through the kube-dns Service (DNAT): one transaction per lookup with
    // both views, the Service asked and the pod that answered.
    let local = format!("{BACKEND}.localdomain");
    let mine: Vec<&Value> = of_type(&live, "dns")
        .into_iter()
        .filter(|t| t["qname"] == local.as_str() && t["qtype"] == "A" && t["client_pod"]["name"] == "client")
        .collect();
    assert_eq!(mine.len(), 1, "one transaction for the lookup: {mine:#?}");
    assert_eq!(mine[0]["server"], "10.96.0.10:53");
    assert_eq!(mine[0]["server_service"], "kube-system/kube-dns");
    assert_eq!(mine[0]["resolver"], "10.244.1.10:53");
    assert_eq!(mine[0]["resolver_pod"]["name"], "kube-dns");

    // Drops: the fabric loss between the nodes, live.
    let loss = finding(&live_drops, "fabric_loss");
    let l = loss
        .iter()
        .find(|f| f["from_node"] == "node-b")
        .unwrap_or_else(|| panic!("fabric_loss from node-b: {live_drops:#?}"));
    assert_eq!(l["to_node"], "node-a");
    assert_eq!(l["dport"], 4789);
    assert_eq!(l["inner_src_pod"], "critical-app/backend", "{l}");
    assert_eq!(l["inner_dst_pod"], "kube-system/kube-dns", "{l}");

    // The agent-side correlation: the same loss, as a metric on the receiving node's agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lost =
        |m: &str| series(m, "ktrace_fabric_loss_packets_total", &[("from_node", "node-b"), ("to_node", "node-a")]);
    let mut m = a.metrics();
    while lost(&m).unwrap_or(0.0) < 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        m = a.metrics();
    }
    assert!(lost(&m).unwrap_or(0.0) >= 2.0, "fabric loss node-b → node-a exported by node-a's agent:\n{m}");
    promtool_ok(&m);

    // The captures written through the agents give the same findings on replay.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rec.") && n.ends_with(".pcapng"))
        })
        .collect();
    assert_eq!(files.len(), 2, "one capture per agent: {files:?} ({rb:?})");
    let mut args: Vec<String> = vec!["dns".into(), "-o".into(), "json".into(), "--timeout".into(), "3s".into()];
    for p in &files {
        args.push("-r".into());
        args.push(p.display().to_string());
    }
    let r = run_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let rf = finding(&r, "search_fanout");
    let rf: Vec<&&Value> = rf.iter().filter(|f| f["base_name"] == BACKEND).collect();
    assert_eq!(rf.len(), 1);
    for k in ["pod", "base_name", "answered_by", "ndots", "search"] {
        assert_eq!(rf[0][k], f[0][k], "replayed vs live field {k}");
    }
    args[0] = "drops".into();
    args.drain(3..5);
    let rd = run_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let rl = finding(&rd, "fabric_loss");
    let rl = rl.iter().find(|f| f["from_node"] == "node-b").expect("fabric_loss from captures");
    for k in ["to_node", "dport", "inner_src_pod", "inner_dst_pod"] {
        assert_eq!(rl[k], l[k], "captured vs live fabric_loss field {k}");
    }
    for p in files {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).expect("meta").permissions());
        assert_eq!(mode & 0o077, 0, "captures are private: {p:?} {mode:o}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn bpf_state(node: &str) -> String {
    let mut s = String::new();
    for args in [vec!["bpftool", "link", "show"], vec!["bpftool", "cgroup", "tree"]] {
        if let Ok(o) = Command::new(args[0]).args(&args[1..]).output() {
            s.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    if let Ok(o) = Command::new("ip")
        .args(["netns", "exec", &format!("kt-{node}"), "tc", "filter", "show", "dev", "eth0", "ingress"])
        .output()
    {
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    s
}

fn ours(state: &str) -> usize {
    ["dns_egress", "dns_ingress", "underlay_egress", "underlay_ingress", "drop_kfree_skb"]
        .iter()
        .map(|p| state.matches(p).count())
        .sum()
}

#[test]
fn agent_killed_and_restarted_leaves_nothing_behind_and_streaming_resumes() {
    if !can_run("agent_restart") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let dir = tmpdir("restart");
    let before = ours(&bpf_state("node-a"));
    let mut a = Agent::start(&lab, &dir, "node-a", 9973, &[]);
    let attached = ours(&bpf_state("node-a"));
    assert!(attached > before, "the agent's programs are visible while it runs");
    let cli = Ktrace::start(&["dns", "--agent", &a.addr(), "-o", "json", "--timeout", "2s"]);
    a.signal(Signal::SIGKILL);
    let _ = a.wait(Duration::from_secs(10));
    // BPF links die with their owner: nothing of ours stays attached.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours(&bpf_state("node-a")) > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ours(&bpf_state("node-a")), before, "no leftover attachments after SIGKILL:\n{}", bpf_state("node-a"));
    assert!(Agent::sock(&dir, "node-a").exists(), "the killed agent left its socket file");
    // A new agent replaces the stale socket; one agent's attachments, not two.
    let mut a2 = Agent::start(&lab, &dir, "node-a", 9973, &[]);
    assert_eq!(ours(&bpf_state("node-a")), attached, "no duplicate attachments after restart");
    // The CLI reconnects by itself and gets what happens after the restart.
    std::thread::sleep(Duration::from_secs(3));
    let out = lab
        .pod_command("critical-app", "client", "dig")
        .args(["+tries=1", "+time=2", "@10.244.1.10", "kube-dns.kube-system.svc.cluster.local"])
        .output()
        .expect("dig");
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let v = json_lines(&cli.stop());
    let txs = of_type(&v, "dns");
    assert!(
        txs.iter().any(|t| t["qname"] == "kube-dns.kube-system.svc.cluster.local" && t["rcode"] == "NOERROR"),
        "the query after the restart streamed through: {v:#?}"
    );
    // SIGTERM: detaches within the grace period, exit 0.
    a2.signal(Signal::SIGTERM);
    let st = a2.wait(Duration::from_secs(10));
    assert!(st.success(), "agent exit on SIGTERM: {st}; {:?}", a2.stderr.lock().map(|v| v.clone()));
    assert_eq!(ours(&bpf_state("node-a")), before, "detached on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// DNS through the kube-dns Service across nodes, read from two agents: the
/// backend (node-b) asks 10.96.0.10, node-b's kube-proxy rules send it over
/// VXLAN to the kube-dns pod on node-a. node-b's agent sees the client's
/// view, node-a's the resolver's; `ktrace dns --agent a --agent b` makes
/// each lookup one transaction, and the metrics count it once (at the
/// client's node).
#[test]
fn agents_join_a_cross_node_lookup_through_the_kube_dns_service() {
    if !can_run("agents_join_a_cross_node_lookup") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let dir = tmpdir("dnat");
    let agent_a = Agent::start(&lab, &dir, "node-a", 9975, &[]);
    let agent_b = Agent::start(&lab, &dir, "node-b", 9976, &[]);
    let (aa, ba) = (agent_a.addr(), agent_b.addr());
    let dns = Ktrace::start(&["dns", "--agent", &aa, "--agent", &ba, "-o", "json", "--timeout", "3s"]);
    std::thread::sleep(Duration::from_secs(1));
    let child = lab
        .pod_command("critical-app", "backend", "getent")
        .args(["ahostsv4", &format!("{BACKEND}.")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("getent");
    let pid = child.id();
    let out = child.wait_with_output().expect("getent");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.2.30"));
    std::thread::sleep(Duration::from_secs(2));
    let v = json_lines(&dns.stop());
    let mine: Vec<&Value> = of_type(&v, "dns").into_iter().filter(|t| t["pid"] == pid).collect();
    assert_eq!(mine.len(), 1, "one A query, one transaction: {v:#?}");
    let t = mine[0];
    assert_eq!(t["client_pod"]["name"], "backend", "{t}");
    assert_eq!(t["node"], "node-b", "{t}");
    assert_eq!(t["server"], "10.96.0.10:53", "{t}");
    assert_eq!(t["server_service"], "kube-system/kube-dns", "{t}");
    assert_eq!(t["resolver"], "10.244.1.10:53", "{t}");
    assert_eq!(t["resolver_pod"]["node"], "node-a", "{t}");
    assert_eq!(t["observed"], "both", "{t}");
    assert_eq!(t["server_process"]["comm"], "dnsmasq", "the resolver's process, from node-a's agent: {t}");
    let same = of_type(&v, "dns").into_iter().filter(|o| o["id"] == t["id"] && o["qname"] == t["qname"]).count();
    assert_eq!(same, 1, "the resolver's view is not a second transaction: {v:#?}");
    // Metrics: counted by the client's node, not again by the resolver's.
    let q = [("namespace", "critical-app"), ("pod", "backend"), ("qtype", "A"), ("rcode", "NOERROR")];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut mb = agent_b.metrics();
    while series(&mb, "ktrace_dns_requests_total", &q).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        mb = agent_b.metrics();
    }
    assert_eq!(series(&mb, "ktrace_dns_requests_total", &q), Some(1.0), "{mb}");
    let ma = agent_a.metrics();
    assert_eq!(series(&ma, "ktrace_dns_requests_total", &q), None, "{ma}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Soak: a bounded 60 s DNS flood through the lab resolver. The agent's
/// memory stays bounded, and what it could not keep is counted.
#[test]
fn agent_memory_stays_bounded_under_a_dns_flood() {
    if !can_run("agent_soak") || !tools_available("agent_soak", &["dnsperf"]) {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let dir = tmpdir("soak");
    // A small history so the bound is reached within the soak.
    let a = Agent::start(&lab, &dir, "node-a", 9974, &["--history-mib", "8"]);
    let secs: u64 = std::env::var("KTRACE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let tick = 100u64; // USER_HZ
    let idle0 = a.cpu_ticks();
    std::thread::sleep(Duration::from_secs(5));
    let idle_pct = (a.cpu_ticks() - idle0) as f64 / tick as f64 / 5.0 * 100.0;
    let qfile = dir.join("queries.txt");
    std::fs::write(&qfile, "kube-dns.kube-system.svc.cluster.local A\nbackend.critical-app.svc.cluster.local A\nnx.critical-app.svc.cluster.local A\n")
        .expect("queries");
    // dnsperf in the client pod against kube-dns (lab addresses only), rate-limited to 5k q/s = 10k msgs/s.
    let mut perf = lab
        .pod_command("critical-app", "client", "dnsperf")
        .args(["-s", "10.244.1.10", "-d"])
        .arg(&qfile)
        .args(["-l", &secs.to_string(), "-Q", "5000", "-c", "4", "-t", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsperf");
    let t0 = Instant::now();
    let c0 = a.cpu_ticks();
    let mut max_rss = 0u64;
    while t0.elapsed() < Duration::from_secs(secs + 10) {
        max_rss = max_rss.max(a.rss_kib());
        if let Ok(Some(_)) = perf.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let busy_pct = (a.cpu_ticks() - c0) as f64 / tick as f64 / t0.elapsed().as_secs_f64() * 100.0;
    let _ = perf.kill();
    let out = perf.wait_with_output().expect("dnsperf");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let m = a.metrics();
    promtool_ok(&m);
    let kernel_lost = series(&m, "ktrace_lost_events_total", &[("where", "kernel")]).expect("lost events exported");
    let evicted = series(&m, "ktrace_lost_events_total", &[("where", "history")]).expect("evictions exported");
    let hist = series(&m, "ktrace_history_bytes", &[]).expect("history size exported");
    let requests: f64 = ktrace::testkit::exposition::parse_exposition(&m)
        .expect("exposition")
        .iter()
        .filter(|s| s.name == "ktrace_dns_requests_total")
        .map(|s| s.value)
        .sum();
    let sent = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries sent:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!(
        "soak {secs}s: dnsperf sent {sent} queries; agent idle CPU {idle_pct:.1}%, busy CPU {busy_pct:.1}%, max RSS {} MiB, \
         history {} MiB (evicted {evicted}), kernel lost {kernel_lost}, DNS requests counted {requests}",
        max_rss / 1024,
        hist / 1_048_576.0
    );
    // The bound: history (8 MiB) + live buffers + the runtime, well below the DaemonSet's 256 MiB limit.
    assert!(max_rss < 128 * 1024, "agent RSS {max_rss} KiB");
    assert!(hist <= 8.0 * 1_048_576.0, "history within --history-mib");
    assert!(sent > 0.0, "dnsperf ran: {report}");
    // Every query is counted once as a transaction, or its loss is counted:
    // never silently missing (client and server side merge into one transaction).
    assert!(requests + kernel_lost >= sent * 0.98, "{requests} requests + {kernel_lost} lost vs {sent} sent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 19: an agent whose only listener it must refuse (TCP without a
/// bearer token) exits non-zero with the reason instead of running and
/// serving nothing — before it attaches anything.
#[test]
fn agent_with_only_a_refused_listener_exits_with_the_reason() {
    if !can_run("agent_refused_listener") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::healthy()).expect("lab up");
    let dir = std::env::temp_dir().join(format!("ktrace-e2e-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty_token = dir.join("token");
    std::fs::write(&empty_token, "").expect("token file");
    for extra in [vec![], vec!["--token-file".to_owned(), empty_token.display().to_string()]] {
        let mut child = Command::new("ip")
            .args(["netns", "exec", "kt-node-a"])
            .arg(ktrace_bin())
            .args(["agent", "--node-name", "node-a", "--netns-scope", "kt-node-a", "--kube-snapshot"])
            .arg(lab.snapshot_path())
            .args(["--listen", "127.0.0.1:4247", "--duration", "20s", "--capture-dir"])
            .arg(dir.join("cap"))
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent with only a refused listener kept running ({extra:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(!status.success(), "{status}: {err}");
        assert!(err.contains("127.0.0.1:4247") && err.contains("--token-file"), "{err}");
        assert!(!err.contains("attached at"), "refused before attaching: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
