//! The seed incident end to end (issues 3, 4, 5): in the lab, the client pod
//! (ndots:5, four search suffixes, one of them `localdomain`) resolves
//! `backend.critical-app.svc.cluster.local`; kube-dns forwards the
//! `.localdomain` names to an upstream that never answers. ktrace must
//! attribute every message to the right pod and process, explain the wait as
//! one `search_fanout` plus an `upstream_timeout`, record it all, and replay
//! the capture to the same answers — which tshark also reads. The client asks
//! the kube-dns Service (`10.96.0.10`, rewritten to the pod by the node's
//! kube-proxy rules): every lookup is one transaction with both views.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use ktrace_e2e::{Ktrace, json_lines, ktrace_bin, of_type, tools_available};
use serde_json::Value;
use xtask::lab::{LabGuard, LabOptions};

const BACKEND: &str = "backend.critical-app.svc.cluster.local";
const SUFFIXES: [&str; 4] = ["critical-app.svc.cluster.local", "svc.cluster.local", "cluster.local", "localdomain"];

fn can_run(test: &str) -> bool {
    ktrace_e2e::lab_can_run(test, &["dnsmasq", "getent", "curl", "ip", "nft"])
}

fn getent(lab: &LabGuard, name: &str) -> (u32, Duration, String) {
    let t = Instant::now();
    let child = lab
        .pod_command("critical-app", "client", "getent")
        .args(["hosts", name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("getent in the client pod");
    let pid = child.id();
    let out = child.wait_with_output().expect("getent");
    (pid, t.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn capture_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ktrace-e2e-{name}.pcapng"));
    let _ = std::fs::remove_file(&p);
    p
}

/// (qname, qtype, rcode, `timed_out`) of one process's transactions, sorted.
fn tx_set(txs: &[&Value], pid: u32) -> Vec<(String, String, String, bool)> {
    let mut v: Vec<_> = txs
        .iter()
        .filter(|t| t["pid"] == pid)
        .map(|t| {
            (
                t["qname"].as_str().unwrap_or("").to_owned(),
                t["qtype"].as_str().unwrap_or("").to_owned(),
                t["rcode"].as_str().unwrap_or("-").to_owned(),
                t["timed_out"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

fn fanouts<'a>(v: &'a [Value], base: &str) -> Vec<&'a Value> {
    of_type(v, "finding").into_iter().filter(|f| f["kind"] == "search_fanout" && f["base_name"] == base).collect()
}

#[test]
fn seed_incident_is_explained_live_and_after_replay() {
    if !can_run("seed_incident_is_explained_live_and_after_replay") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let snap = lab.snapshot_path();
    let snap = snap.to_str().expect("utf-8 path");
    let pcap = capture_path("seed");
    let live =
        Ktrace::start(&["dns", "-o", "json", "--ns", "critical-app", "--kube-snapshot", snap, "--timeout", "3s"]);
    let rec = Ktrace::start(&["record", "-w", pcap.to_str().unwrap(), "--kube-snapshot", snap]);
    let (pid, took, out) = getent(&lab, BACKEND);
    assert!(out.contains("10.244.2.30"), "getent answered: {out}");
    assert!(took >= Duration::from_secs(3), "the blackhole makes the walk slow: {took:?}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = rec.stop();
    let v = json_lines(&live.stop());
    let txs = of_type(&v, "dns");

    // Every message of the walk, attributed to the client pod and getent.
    let mine: Vec<&&Value> = txs.iter().filter(|t| t["pid"] == pid).collect();
    assert!(mine.len() >= 10, "4 suffixes + literal, for A and AAAA: {mine:#?}");
    for t in &mine {
        assert_eq!(t["comm"], "getent");
        assert_eq!(t["client_pod"]["namespace"], "critical-app", "{t}");
        assert_eq!(t["client_pod"]["name"], "client", "{t}");
        assert_eq!(t["server_pod"]["namespace"], "kube-system", "{t}");
        assert_eq!(t["server_pod"]["name"], "kube-dns", "{t}");
        // The client asked the kube-dns Service; kube-proxy's DNAT sent it
        // to the pod, and both views are one transaction.
        assert_eq!(t["server"], "10.96.0.10:53", "{t}");
        assert_eq!(t["server_service"], "kube-system/kube-dns", "{t}");
        assert_eq!(t["resolver"], "10.244.1.10:53", "{t}");
        assert_eq!(t["resolver_pod"]["name"], "kube-dns", "{t}");
        assert_eq!(t["observed"], "both", "{t}");
    }
    // Counted once: the resolver's view of each query is not a second record.
    let at_pod = txs.iter().filter(|t| t["server"] == "10.244.1.10:53" && t["client_pod"]["name"] == "client").count();
    assert_eq!(at_pod, 0, "resolver views left unjoined: {txs:#?}");
    for q in ["A", "AAAA"] {
        for s in SUFFIXES {
            let name = format!("{BACKEND}.{s}");
            let t = mine
                .iter()
                .find(|t| t["qname"] == name.as_str() && t["qtype"] == q)
                .unwrap_or_else(|| panic!("no {q} {name}"));
            if s == "localdomain" {
                assert_eq!(t["timed_out"], true, "{t}");
            } else {
                assert_eq!(t["rcode"], "NXDOMAIN", "{t}");
            }
        }
    }

    // The diagnosis.
    let f = fanouts(&v, BACKEND);
    assert_eq!(f.len(), 1, "exactly one search_fanout: {f:#?}");
    let f = f[0];
    assert_eq!(f["pod"], "critical-app/client");
    assert_eq!(f["answered_by"], BACKEND);
    assert_eq!(f["ndots"], 5);
    let search: Vec<&str> = f["search"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(search, SUFFIXES);
    let tried: Vec<&str> = f["attempts"].as_array().unwrap().iter().filter_map(|a| a["qname"].as_str()).collect();
    let a_walk: Vec<String> = SUFFIXES.iter().map(|s| format!("{BACKEND}.{s}")).collect();
    let pos: Vec<usize> = a_walk.iter().map(|n| tried.iter().position(|t| t == n).expect("suffix tried")).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "suffixes in order: {tried:?}");
    let total = f["total_ms"].as_f64().unwrap();
    let measured = took.as_secs_f64() * 1000.0;
    assert!((total - measured).abs() <= measured * 0.10, "finding total {total} ms vs getent {measured} ms");
    assert!(f["wasted_ms"].as_f64().unwrap() > 3000.0);

    let ut: Vec<&Value> = of_type(&v, "finding").into_iter().filter(|f| f["kind"] == "upstream_timeout").collect();
    assert!(!ut.is_empty(), "an upstream_timeout finding");
    let local: Vec<&&Value> = ut.iter().filter(|u| u["qname"] == format!("{BACKEND}.localdomain").as_str()).collect();
    assert!(!local.is_empty(), "an upstream_timeout for the .localdomain name: {ut:#?}");
    for u in &local {
        assert_eq!(u["resolver"]["pod"], "kube-system/kube-dns");
        assert_eq!(u["upstream"], "192.168.77.53:53");
    }
    // The client waited once per query type (A and AAAA); the findings may
    // group both forwards or report them one by one, but the waits add up.
    let waited: f64 = local.iter().filter_map(|u| u["waited_ms"].as_f64()).sum();
    assert!((waited - measured).abs() <= measured * 0.10, "upstream waits {waited} ms vs getent {measured} ms");

    // Replay, without root-only state: the same transactions and findings.
    let out = Command::new(ktrace_bin())
        .args(["dns", "-r", pcap.to_str().unwrap(), "--ns", "critical-app", "-o", "json", "--timeout", "3s"])
        .output()
        .expect("ktrace dns -r");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let r = json_lines(&lines);
    assert_eq!(tx_set(&of_type(&r, "dns"), pid), tx_set(&txs, pid), "replayed transactions equal live ones");
    let rf = fanouts(&r, BACKEND);
    assert_eq!(rf.len(), 1);
    for k in ["pod", "base_name", "answered_by", "ndots", "search", "attempts"] {
        let strip = |x: &Value| -> Value {
            let mut x = x.clone();
            if let Value::Array(a) = &mut x {
                for at in a {
                    if let Value::Object(m) = at {
                        m.remove("latency_ms");
                        m.remove("start_ms");
                    }
                }
            }
            x
        };
        assert_eq!(strip(&rf[0][k]), strip(&f[k]), "replayed finding field {k}");
    }
    assert!(of_type(&r, "finding").iter().any(|f| f["kind"] == "upstream_timeout"));

    // tshark sees the same DNS messages ktrace recorded.
    if tools_available("tshark cross-check", &["tshark"]) {
        let ts = Command::new("tshark").args(["-r", pcap.to_str().unwrap(), "-Y", "dns"]).output().expect("tshark");
        let tshark_n = String::from_utf8_lossy(&ts.stdout).lines().count();
        let rep = Command::new(ktrace_bin())
            .args(["replay", "-r", pcap.to_str().unwrap(), "-o", "json"])
            .output()
            .expect("replay");
        let ours = String::from_utf8_lossy(&rep.stdout).lines().filter(|l| l.contains("\"type\":\"packet\"")).count();
        assert!(ours > 0);
        assert_eq!(tshark_n, ours, "tshark -Y dns vs ktrace replay packet count");
    }
    let _ = std::fs::remove_file(&pcap);
}

/// Variants of issue 4 that must NOT produce a fan-out finding.
#[test]
fn no_fanout_for_fqdn_low_ndots_or_first_suffix_hit() {
    if !can_run("no_fanout_variants") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let snap = lab.snapshot_path();
    let snap = snap.to_str().expect("utf-8 path");
    let resolv = PathBuf::from("/etc/netns")
        .join(lab.pod("critical-app", "client").expect("client pod").netns())
        .join("resolv.conf");
    let original = std::fs::read_to_string(&resolv).expect("client resolv.conf");
    let live =
        Ktrace::start(&["dns", "-o", "json", "--ns", "critical-app", "--kube-snapshot", snap, "--timeout", "3s"]);
    // A trailing dot: asked as-is, one answer per type.
    let (_, fqdn_took, out) = getent(&lab, &format!("{BACKEND}."));
    assert!(out.contains("10.244.2.30"));
    // A short name that exists under the first suffix.
    let out =
        lab.pod_command("critical-app", "client", "getent").args(["ahostsv4", "backend"]).output().expect("getent");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("10.244.2.30"), "backend resolves via the first suffix: {out}");
    // ndots:2: a 4-dot name is tried as-is first and answers. (A only: for
    // AAAA the literal name is NODATA, and glibc then walks the search list.)
    std::fs::write(&resolv, original.replace("ndots:5", "ndots:2")).expect("write resolv.conf");
    let t = Instant::now();
    let out = lab.pod_command("critical-app", "client", "getent").args(["ahostsv4", BACKEND]).output().expect("getent");
    let nd2_took = t.elapsed();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(&resolv, &original).expect("restore resolv.conf");
    assert!(out.contains("10.244.2.30"));
    std::thread::sleep(Duration::from_millis(300));
    let v = json_lines(&live.stop());
    assert!(fqdn_took < Duration::from_secs(1) && nd2_took < Duration::from_secs(1), "{fqdn_took:?} {nd2_took:?}");
    let f: Vec<&Value> = of_type(&v, "finding").into_iter().filter(|f| f["kind"] == "search_fanout").collect();
    assert!(f.is_empty(), "no fan-out expected: {f:#?}");
    assert!(
        of_type(&v, "dns")
            .iter()
            .any(|t| t["qname"] == "backend.critical-app.svc.cluster.local" && t["rcode"] == "NOERROR")
    );
}
