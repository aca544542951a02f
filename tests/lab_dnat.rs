//! Issue 19 part 4 end to end: DNS through the cluster DNS Service. Pods ask
//! the kube-dns `ClusterIP` 10.96.0.10; each lab node's kube-proxy table
//! (nftables nat) rewrites it to the kube-dns pod on node-a, so the client's
//! lookups stay on node-a and the backend's (node-b) cross the VXLAN overlay.
//! Each lookup must be ONE transaction naming the client, the Service it
//! asked and the resolver pod that answered — live, and when the two views
//! come from two nodes' captures — and the findings must count it once.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use ktrace_e2e::{Ktrace, Recorder, finding, json_lines, of_type, run_json};
use serde_json::Value;
use xtask::lab::{LabGuard, LabOptions};

const BACKEND: &str = "backend.critical-app.svc.cluster.local";
const VIP: &str = "10.96.0.10:53";
const RESOLVER: &str = "10.244.1.10:53";

fn can_run(test: &str) -> bool {
    ktrace_e2e::lab_can_run(test, &["dnsmasq", "getent", "ip", "nft"])
}

/// `getent <db> <name>` in a pod: (pid, wall time, stdout).
fn getent(lab: &LabGuard, pod: &str, db: &str, name: &str) -> (u32, Duration, String) {
    let t = Instant::now();
    let child = lab
        .pod_command("critical-app", pod, "getent")
        .args([db, name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("getent in a pod");
    let pid = child.id();
    let out = child.wait_with_output().expect("getent");
    (pid, t.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn replay(files: &[&PathBuf]) -> Vec<Value> {
    let mut args: Vec<String> = vec!["dns".into(), "-o".into(), "json".into(), "--timeout".into(), "3s".into()];
    for f in files {
        args.push("-r".into());
        args.push(f.to_str().expect("utf-8 path").into());
    }
    run_json(&args)
}

/// Every transaction of the process `pid`.
fn of_pid(v: &[Value], pid: u32) -> Vec<&Value> {
    of_type(v, "dns").into_iter().filter(|t| t["pid"] == pid).collect()
}

/// The lookups of `client` (`ip:port` prefix) as one transaction each, joined
/// across the DNAT: the Service asked, the resolver pod that answered.
fn assert_one_joined_transaction_per_lookup(v: &[Value], mine: &[&Value], pod: &str, node: &str) {
    assert!(!mine.is_empty(), "no transactions of critical-app/{pod}");
    let all = of_type(v, "dns");
    for t in mine {
        assert_eq!(t["client_pod"]["name"], pod, "{t}");
        assert_eq!(t["client_pod"]["node"], node, "{t}");
        assert_eq!(t["server"], VIP, "the address the client asked: {t}");
        assert_eq!(t["server_service"], "kube-system/kube-dns", "{t}");
        assert_eq!(t["resolver"], RESOLVER, "the pod kube-proxy sent it to: {t}");
        assert_eq!(t["resolver_client"], t["client"], "no SNAT on this path: {t}");
        assert_eq!(t["resolver_pod"]["namespace"], "kube-system", "{t}");
        assert_eq!(t["resolver_pod"]["name"], "kube-dns", "{t}");
        assert_eq!(t["resolver_pod"]["node"], "node-a", "{t}");
        assert_eq!(t["server_pod"]["name"], "kube-dns", "{t}");
        assert_eq!(t["observed"], "both", "{t}");
        // Counted once: no second record of the same lookup (the resolver's
        // view, to its pod address) anywhere in the output.
        let same: Vec<&&Value> = all
            .iter()
            .filter(|o| o["id"] == t["id"] && o["qname"] == t["qname"] && o["qtype"] == t["qtype"])
            .filter(|o| o["client"] == t["client"] || o["resolver_client"] == t["client"])
            .collect();
        assert_eq!(same.len(), 1, "one lookup, one transaction: {same:#?}");
    }
}

/// The backend's (node-b) walk for `BACKEND`, crossing nodes: one
/// `search_fanout` naming the backend, and the `.localdomain` forwards'
/// `upstream_timeout` naming the backend as the waiting client.
fn assert_cross_node_findings(v: &[Value], took: Duration) {
    let f: Vec<&Value> =
        finding(v, "search_fanout").into_iter().filter(|f| f["pod"] == "critical-app/backend").collect();
    assert_eq!(f.len(), 1, "exactly one search_fanout for the backend's walk: {f:#?}");
    assert_eq!(f[0]["answered_by"], BACKEND);
    assert_eq!(f[0]["server"]["ip"], "10.96.0.10", "{}", f[0]);
    let measured = took.as_secs_f64() * 1000.0;
    let total = f[0]["total_ms"].as_f64().unwrap_or(0.0);
    assert!((total - measured).abs() <= measured * 0.10, "finding total {total} ms vs getent {measured} ms");
    let ut: Vec<&Value> = finding(v, "upstream_timeout")
        .into_iter()
        .filter(|u| u["qname"] == format!("{BACKEND}.localdomain").as_str())
        .collect();
    assert!(!ut.is_empty(), "an upstream_timeout for the backend's .localdomain name: {v:#?}");
    for u in &ut {
        assert_eq!(u["client"]["pod"], "critical-app/backend", "the waiting client: {u}");
        assert_eq!(u["resolver"]["pod"], "kube-system/kube-dns", "{u}");
        assert_eq!(u["upstream"], "192.168.77.53:53", "{u}");
    }
    let waited: f64 = ut.iter().filter_map(|u| u["waited_ms"].as_f64()).sum();
    assert!((waited - measured).abs() <= measured * 0.10, "upstream waits {waited} ms vs getent {measured} ms");
    let storms = finding(v, "nxdomain_storm");
    assert!(storms.is_empty(), "a handful of NXDOMAINs is no storm, twice counted or not: {storms:#?}");
}

#[test]
fn lookups_through_the_kube_dns_service_are_one_transaction_live() {
    if !can_run("lookups_through_the_kube_dns_service_are_one_transaction_live") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let snap = lab.snapshot_path();
    let snap = snap.to_str().expect("utf-8 path");
    let resolv = std::fs::read_to_string(
        PathBuf::from("/etc/netns")
            .join(lab.pod("critical-app", "backend").expect("backend").netns())
            .join("resolv.conf"),
    )
    .expect("backend resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10\n"), "{resolv}");
    let live = Ktrace::start(&["dns", "-o", "json", "--kube-snapshot", snap, "--timeout", "3s"]);
    // Same node: client (node-a) → 10.96.0.10 → kube-dns (node-a).
    let (same_pid, _, out) = getent(&lab, "client", "ahostsv4", &format!("{BACKEND}."));
    assert!(out.contains("10.244.2.30"), "the DNATed lookup answered: {out}");
    // Cross node: backend (node-b) → 10.96.0.10 → kube-dns (node-a) over VXLAN,
    // walking the search list into the blackholed upstream.
    let (cross_pid, took, out) = getent(&lab, "backend", "hosts", BACKEND);
    assert!(out.contains("10.244.2.30"), "the cross-node lookup answered: {out}");
    assert!(took >= Duration::from_secs(3), "the blackhole makes the walk slow: {took:?}");
    std::thread::sleep(Duration::from_millis(500));
    let v = json_lines(&live.stop());

    let same = of_pid(&v, same_pid);
    assert_eq!(same.len(), 1, "one A query for the fully-qualified name: {same:#?}");
    assert_eq!(same[0]["rcode"], "NOERROR");
    assert_one_joined_transaction_per_lookup(&v, &same, "client", "node-a");
    let cross = of_pid(&v, cross_pid);
    assert!(cross.len() >= 10, "4 suffixes + literal, for A and AAAA: {cross:#?}");
    assert_one_joined_transaction_per_lookup(&v, &cross, "backend", "node-b");
    assert_cross_node_findings(&v, took);
    let stats = of_type(&v, "stats");
    let joined = stats.first().and_then(|s| s["pairing"]["joined_views"].as_u64()).unwrap_or(0);
    assert!(joined >= 11, "every lookup joined across the DNAT: {stats:#?}");
}

#[test]
fn two_node_captures_join_the_client_and_resolver_views() {
    if !can_run("two_node_captures_join_the_client_and_resolver_views") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default()).expect("lab up");
    let snap = lab.snapshot_path();
    let snap = snap.to_str().expect("utf-8 path");
    let a = Recorder::start("node-a", snap, "dnat", &[]);
    let b = Recorder::start("node-b", snap, "dnat", &[]);
    let (cross_pid, took, out) = getent(&lab, "backend", "hosts", BACKEND);
    assert!(out.contains("10.244.2.30"), "{out}");
    let (same_pid, _, out) = getent(&lab, "client", "ahostsv4", &format!("{BACKEND}."));
    assert!(out.contains("10.244.2.30"), "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (fa, fb) = (a.stop(), b.stop());

    // Each node alone holds one view of the backend's lookups: node-b the
    // client's (to the Service), node-a the resolver's (to the pod).
    let only_b = replay(&[&fb]);
    let client_view = of_pid(&only_b, cross_pid);
    assert!(client_view.len() >= 10, "{only_b:#?}");
    for t in &client_view {
        assert_eq!((t["server"].as_str(), t["observed"].as_str()), (Some(VIP), Some("client")), "{t}");
        assert!(t["resolver"].is_null(), "{t}");
    }
    let only_a = replay(&[&fa]);
    let resolver_view: Vec<&Value> = of_type(&only_a, "dns")
        .into_iter()
        .filter(|t| t["client_pod"]["name"] == "backend" && t["server"] == RESOLVER)
        .collect();
    assert_eq!(resolver_view.len(), client_view.len(), "node-a saw every query the backend sent: {only_a:#?}");

    // Merged: one transaction per lookup, both views joined.
    let v = replay(&[&fa, &fb]);
    let cross = of_pid(&v, cross_pid);
    assert_eq!(cross.len(), client_view.len(), "{v:#?}");
    assert_one_joined_transaction_per_lookup(&v, &cross, "backend", "node-b");
    let same = of_pid(&v, same_pid);
    assert_eq!(same.len(), 1, "{same:#?}");
    assert_one_joined_transaction_per_lookup(&v, &same, "client", "node-a");
    assert_cross_node_findings(&v, took);
    // The order of -r does not matter.
    let v2 = replay(&[&fb, &fa]);
    assert_eq!(of_pid(&v2, cross_pid).len(), cross.len());
    for f in [&fa, &fb] {
        let _ = std::fs::remove_file(f);
    }
}
