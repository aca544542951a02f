//! End-to-end tests of the lab itself (root only): cluster DNS with the
//! search-list walk against a blackholed upstream, cross-node pod traffic
//! through VXLAN, the faults, and complete cleanup.
//!
//! Run: `cargo test -p ktrace-e2e --test lab_network -- --test-threads=1`.
//! Without root or the tools the tests skip; with `KTRACE_REQUIRE_BPF=1` they
//! fail instead.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use xtask::lab::{BACKEND, BACKEND_PORT, Fault, Lab, LabGuard, LabOptions, REFUSED_PORT};

const BACKEND_FQDN: &str = "backend.critical-app.svc.cluster.local";

/// `false` (after saying why) when the lab cannot run here.
fn lab_can_run(test: &str) -> bool {
    let mut missing = xtask::lab::missing_prerequisites();
    for tool in ["getent", "curl"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: skipped, the lab needs {}", missing.join(", "));
    assert!(std::env::var("KTRACE_REQUIRE_BPF").as_deref() != Ok("1"), "{msg} (KTRACE_REQUIRE_BPF=1)");
    eprintln!("{msg}");
    false
}

fn up(opts: &LabOptions) -> LabGuard {
    let t = Instant::now();
    match LabGuard::up(opts) {
        Ok(l) => {
            eprintln!("lab up in {:?}", t.elapsed());
            l
        }
        Err(e) => panic!("lab up failed: {e:#}"),
    }
}

/// Runs a command in the client pod and returns its output and duration.
fn in_client(lab: &Lab, program: &str, args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = lab
        .pod_command("critical-app", "client", program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} in the client pod: {e}"));
    (out, t.elapsed())
}

fn curl_backend(lab: &Lab, host: &str, port: u16) -> (Output, Duration) {
    let url = format!("http://{host}:{port}/");
    in_client(lab, "curl", &["-sS", "--max-time", "3", &url])
}

fn text(o: &Output) -> String {
    format!(
        "status {}; stdout {:?}; stderr {:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lab_netns() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(xtask::lab::PREFIX))
        .map(str::to_owned)
        .collect()
}

#[test]
fn dns_search_list_walk_is_slow_with_blackholed_upstream_and_fast_when_absolute() {
    if !lab_can_run("dns_search_list_walk") {
        return;
    }
    let mut lab = up(&LabOptions::default());

    let (out, took) = in_client(&lab, "getent", &["hosts", BACKEND_FQDN]);
    assert!(out.status.success(), "getent: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("{} ", BACKEND.ip)), "getent answered {stdout:?}");
    // Two walks (AAAA, then A), each ending in a 2 s `.localdomain` timeout.
    assert!(took >= Duration::from_secs(3), "relative lookup took only {took:?}");
    assert!(took < Duration::from_secs(10), "relative lookup took {took:?}");
    eprintln!("relative lookup with blackholed upstream: {took:?}");

    let (out, took) = in_client(&lab, "getent", &["hosts", &format!("{BACKEND_FQDN}.")]);
    assert!(out.status.success(), "getent (absolute): {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{} ", BACKEND.ip)));
    assert!(took < Duration::from_secs(1), "absolute lookup took {took:?}");
    eprintln!("absolute lookup: {took:?}");

    // kube-dns logged the forwarded `.localdomain` queries.
    let log = std::fs::read_to_string(lab.state_dir().join("logs/kube-dns-queries.log")).unwrap_or_default();
    assert!(log.contains(&format!("forwarded {BACKEND_FQDN}.localdomain")), "kube-dns log:\n{log}");

    // Without the blackhole the upstream answers NXDOMAIN at once.
    lab.set_fault(Fault::UpstreamBlackhole, false).expect("fault off");
    let (out, took) = in_client(&lab, "getent", &["hosts", BACKEND_FQDN]);
    assert!(out.status.success(), "getent (healthy): {}", text(&out));
    assert!(took < Duration::from_secs(1), "relative lookup without the blackhole took {took:?}");
    eprintln!("relative lookup with a healthy upstream: {took:?}");

    // The snapshot maps the client pod to its netns and cgroup.
    let snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.snapshot_path()).expect("snapshot")).expect("json");
    let client = snap["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "Pod" && i["metadata"]["name"] == "client"))
        .expect("client pod in snapshot");
    assert_eq!(client["metadata"]["annotations"]["ktrace.io/netns"], "kt-critical-app-client");

    // Processes started in a pod are in its cgroup.
    let (out, _) = in_client(&lab, "cat", &["/proc/self/cgroup"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0::/ktrace-lab/critical-app_client\n"), "{}", text(&out));
}

#[test]
fn cross_node_http_goes_through_vxlan_and_fabric_faults_break_it() {
    if !lab_can_run("cross_node_http") {
        return;
    }
    let mut lab = up(&LabOptions::healthy());
    let ip = BACKEND.ip.to_string();

    let (out, took) = curl_backend(&lab, &ip, BACKEND_PORT);
    assert!(out.status.success(), "curl with no fault: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from critical-app/backend"));
    eprintln!("cross-node HTTP: {took:?}");
    let (out, _) = curl_backend(&lab, "backend", BACKEND_PORT);
    assert!(out.status.success(), "curl by service name: {}", text(&out));

    for fault in [Fault::FabricDropVxlan, Fault::FabricDropPodCidr, Fault::NodeDrop] {
        lab.set_fault(fault, true).expect("fault on");
        let (out, took) = curl_backend(&lab, &ip, BACKEND_PORT);
        assert!(!out.status.success(), "curl succeeded despite {fault}");
        assert!(took < Duration::from_secs(5), "{fault}: curl took {took:?}");
        eprintln!("{fault}: curl failed after {took:?} as expected");
        lab.set_fault(fault, false).expect("fault off");
        let (out, _) = curl_backend(&lab, &ip, BACKEND_PORT);
        assert!(out.status.success(), "curl after removing {fault}: {}", text(&out));
    }

    // `refused`: a service where nothing listens is refused at once.
    lab.set_fault(Fault::Refused, true).expect("fault on");
    let (out, took) = curl_backend(&lab, "refused", REFUSED_PORT);
    assert!(!out.status.success(), "curl to the refused service succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{}", text(&out));
    assert!(took < Duration::from_secs(2), "refused took {took:?}");

    // The packets really cross the fabric as VXLAN: count them on node-a's
    // underlay while curling.
    let counter = |lab: &Lab| -> u64 {
        let out = lab
            .node_command("node-a", "ip")
            .args(["-s", "-j", "link", "show", "flannel.1"])
            .output()
            .expect("ip -s link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
    };
    let before = counter(&lab);
    let (out, _) = curl_backend(&lab, &ip, BACKEND_PORT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(counter(&lab) > before, "no packet left node-a through flannel.1");
}

#[test]
fn lab_down_leaves_nothing_behind_and_can_repeat() {
    if !lab_can_run("lab_down") {
        return;
    }
    let lab = up(&LabOptions::default().with(Fault::NodeDrop));
    assert!(lab_netns().len() >= 7, "namespaces: {:?}", lab_netns());
    // A process left running in a pod (as after a crashed test) is killed.
    let mut sleeper = lab.pod_command("critical-app", "client", "sleep").arg("300").spawn().expect("sleep");
    // Down twice, as a crashed run followed by a new one would.
    Lab::down().expect("down");
    Lab::down().expect("second down");
    assert!(lab_netns().is_empty(), "namespaces left: {:?}", lab_netns());
    assert!(matches!(sleeper.try_wait(), Ok(Some(_))), "the pod's process survived down");
    assert!(!std::path::Path::new("/sys/fs/cgroup/unified/ktrace-lab").exists());
    assert!(!std::path::Path::new(xtask::lab::STATE_DIR).exists());
    let etc: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("kt-")).collect())
        .unwrap_or_default();
    assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    drop(lab);
    assert!(lab_netns().is_empty());
}
