//! Issue 6 end to end: pods on one node cannot reach pods on another.
//! A recorder runs inside each lab node's namespace (scoped to that node and
//! its pods, fingerprinting the underlay with tc); `ktrace drops -r a -r b`
//! must name each fault: a fabric that drops VXLAN (`fabric_loss`, no kernel
//! drop blamed), an nftables drop inside a node (`NETFILTER_DROP` with the
//! right pods), a connection refused (`conn_fail` with pod and process), and
//! nothing at all without a fault.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use ktrace_e2e::{Recorder, dig_from_backend, json_lines, ktrace_bin, of_type};
use serde_json::Value;
use xtask::lab::{Fault, LabGuard, LabOptions};

fn can_run(test: &str) -> bool {
    ktrace_e2e::lab_can_run(test, &["dnsmasq", "dig", "curl", "ip", "nft"])
}

fn drops(files: &[PathBuf], extra: &[&str]) -> Vec<Value> {
    drops_with_stderr(files, extra).0
}

fn drops_with_stderr(files: &[PathBuf], extra: &[&str]) -> (Vec<Value>, String) {
    let mut c = Command::new(ktrace_bin());
    c.arg("drops");
    for f in files {
        c.arg("-r").arg(f);
    }
    let out = c.args(["-o", "json"]).args(extra).output().expect("ktrace drops");
    assert!(out.status.success(), "ktrace drops: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (json_lines(&lines), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn record_both(lab: &LabGuard, tag: &str, traffic: impl FnOnce(&LabGuard)) -> Vec<PathBuf> {
    record_both_with(lab, tag, &["--underlay", "eth0"], traffic).0
}

/// Records both nodes with these `--underlay` arguments; also returns each recorder's "attached" line.
fn record_both_with(
    lab: &LabGuard,
    tag: &str,
    underlay: &[&str],
    traffic: impl FnOnce(&LabGuard),
) -> (Vec<PathBuf>, Vec<String>) {
    let snap = lab.snapshot_path();
    let snap = snap.to_str().expect("utf-8");
    let a = Recorder::start("node-a", snap, tag, underlay);
    let b = Recorder::start("node-b", snap, tag, underlay);
    traffic(lab);
    std::thread::sleep(Duration::from_millis(1500));
    let attached = vec![a.attached_line(), b.attached_line()];
    (vec![a.stop(), b.stop()], attached)
}

#[test]
fn fabric_dropping_vxlan_is_a_fabric_loss_between_nodes() {
    if !can_run("fabric_dropping_vxlan") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::FabricDropVxlan)).expect("lab up");
    let files = record_both(&lab, "vxlan", dig_from_backend);
    let v = drops(&files, &[]);
    let findings = of_type(&v, "finding");
    let loss: Vec<&&Value> = findings.iter().filter(|f| f["kind"] == "fabric_loss").collect();
    assert!(!loss.is_empty(), "a fabric_loss finding: {v:#?}");
    let f = loss.iter().find(|f| f["from_node"] == "node-b").unwrap_or_else(|| panic!("from node-b: {loss:#?}"));
    assert_eq!(f["to_node"], "node-a");
    assert_eq!(f["dport"], 4789);
    assert_eq!(f["inner_src_pod"], "critical-app/backend", "{f}");
    assert_eq!(f["inner_dst_pod"], "kube-system/kube-dns", "{f}");
    assert!(f["packets"].as_u64().unwrap_or(0) >= 2, "both dig tries lost: {f}");
    let blamed: Vec<&Value> =
        of_type(&v, "drop").into_iter().filter(|d| !d["src_pod"].is_null() || !d["dst_pod"].is_null()).collect();
    assert!(blamed.is_empty(), "no kernel drop is blamed: {blamed:#?}");
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Issue 19: recorders started with no underlay flag at all fingerprint the
/// node's VXLAN lower device (`--underlay auto` is the default), so the
/// captures a new user makes find the loss between nodes.
#[test]
fn default_underlay_auto_finds_the_vxlan_device_and_the_loss() {
    if !can_run("default_underlay_auto") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::FabricDropVxlan)).expect("lab up");
    let (files, attached) = record_both_with(&lab, "auto", &[], dig_from_backend);
    for l in &attached {
        // The lab nodes have no default route: eth0 is found as the VXLAN's `dev`.
        assert!(l.contains("underlay eth0"), "{l}");
    }
    let (v, stderr) = drops_with_stderr(&files, &[]);
    let loss: Vec<&Value> = of_type(&v, "finding").into_iter().filter(|f| f["kind"] == "fabric_loss").collect();
    assert!(loss.iter().any(|f| f["from_node"] == "node-b" && f["to_node"] == "node-a"), "{v:#?}");
    let stats = of_type(&v, "stats");
    assert!(stats[0]["underlay_fingerprints"].as_u64().unwrap_or(0) > 0, "{stats:#?}");
    assert_eq!(stats[0]["nodes_without_underlay"], serde_json::json!([]), "{stats:#?}");
    assert!(!stderr.contains("no underlay fingerprints"), "{stderr}");
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Issue 19: captures recorded without fingerprints (`--underlay none`) do
/// not pass for a healthy fabric: `drops -r` says so, and what to do.
#[test]
fn captures_without_fingerprints_are_named() {
    if !can_run("captures_without_fingerprints") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::FabricDropVxlan)).expect("lab up");
    let (files, attached) = record_both_with(&lab, "none", &["--underlay", "none"], dig_from_backend);
    assert!(attached.iter().all(|l| l.contains("no underlay")), "{attached:?}");
    let (v, stderr) = drops_with_stderr(&files, &[]);
    assert!(of_type(&v, "finding").iter().all(|f| f["kind"] != "fabric_loss"), "{v:#?}");
    assert!(stderr.contains("no underlay fingerprints") && stderr.contains("ktrace record"), "{stderr}");
    let stats = of_type(&v, "stats");
    assert_eq!(stats[0]["underlay_fingerprints"], 0, "{stats:#?}");
    assert_eq!(stats[0]["nodes_without_underlay"], serde_json::json!(["node-a", "node-b"]), "{stats:#?}");
    assert!(
        stats[0]["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|x| x.as_str().unwrap_or("").contains("no underlay fingerprints"))),
        "{stats:#?}"
    );
    // Table output says it on stderr too.
    let mut c = Command::new(ktrace_bin());
    c.arg("drops");
    for f in &files {
        c.arg("-r").arg(f);
    }
    let out = c.output().expect("ktrace drops");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no underlay fingerprints"));
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn node_nftables_drop_and_refused_connection_are_named() {
    if !can_run("node_drop_and_refused") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::NodeDrop).with(Fault::Refused)).expect("lab up");
    let files = record_both(&lab, "nodedrop", |lab| {
        let _ = lab
            .pod_command("critical-app", "client", "curl")
            .args(["-s", "-m", "2", "http://10.244.2.30:8080/"])
            .stdout(Stdio::null())
            .status();
        let _ = lab
            .pod_command("critical-app", "client", "curl")
            .args(["-s", "-m", "2", "http://10.244.2.30:8081/"])
            .stdout(Stdio::null())
            .status();
    });
    let v = drops(&files, &[]);
    let d = of_type(&v, "drop");
    let nf = d
        .iter()
        .find(|x| x["reason"] == "NETFILTER_DROP" && x["node"] == "node-b")
        .unwrap_or_else(|| panic!("NETFILTER_DROP on node-b: {v:#?}"));
    assert_eq!(nf["src_pod"], "critical-app/client", "{nf}");
    assert_eq!(nf["dst_pod"], "critical-app/backend", "{nf}");
    assert_eq!(nf["dport"], 8080);
    let c = of_type(&v, "conn_fail");
    let refused = c.iter().find(|x| x["kind"] == "refused").unwrap_or_else(|| panic!("a refused connection: {v:#?}"));
    assert_eq!(refused["src_pod"], "critical-app/client", "{refused}");
    assert_eq!(refused["process"]["comm"], "curl", "{refused}");
    assert!(refused["dst"].as_str().unwrap_or("").contains("8081"), "{refused}");
    assert!(of_type(&v, "finding").iter().all(|f| f["kind"] != "fabric_loss"), "no fabric loss: {v:#?}");
    // The per-node view: --node node-b keeps the node-b drop.
    let only_b = drops(&files, &["--node", "node-b"]);
    assert!(of_type(&only_b, "drop").iter().any(|x| x["reason"] == "NETFILTER_DROP"));
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn healthy_cluster_has_no_losses_and_no_pod_drops() {
    if !can_run("healthy_cluster") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::healthy()).expect("lab up");
    let files = record_both(&lab, "healthy", |lab| {
        dig_from_backend(lab);
        let _ = lab
            .pod_command("critical-app", "client", "curl")
            .args(["-s", "-m", "2", "http://10.244.2.30:8080/"])
            .stdout(Stdio::null())
            .status();
    });
    let v = drops(&files, &[]);
    assert!(of_type(&v, "finding").is_empty(), "no findings: {v:#?}");
    assert!(of_type(&v, "drop").is_empty(), "no drops attributed to pods or nodes: {v:#?}");
    assert!(of_type(&v, "conn_fail").is_empty(), "no failed connections: {v:#?}");
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Live on one node: `ktrace drops` inside node-b's namespace names the
/// nftables drop while it happens.
#[test]
fn live_drops_on_one_node_name_the_netfilter_drop() {
    if !can_run("live_drops_on_one_node") {
        return;
    }
    let lab = LabGuard::up(&LabOptions::default().with(Fault::NodeDrop)).expect("lab up");
    let snap = lab.snapshot_path();
    let mut child = Command::new("ip")
        .args(["netns", "exec", "kt-node-b"])
        .arg(ktrace_bin())
        .args([
            "drops",
            "--node-name",
            "node-b",
            "--node",
            "--netns-scope",
            "kt-node-b",
            "-o",
            "json",
            "--duration",
            "8s",
            "--kube-snapshot",
        ])
        .arg(&snap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ktrace drops");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[drops] {l}");
            if l.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("attached");
    let _ = lab
        .pod_command("critical-app", "client", "curl")
        .args(["-s", "-m", "2", "http://10.244.2.30:8080/"])
        .stdout(Stdio::null())
        .status();
    let out = child.wait_with_output().expect("ktrace drops output");
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let v = json_lines(&lines);
    let nf = of_type(&v, "drop")
        .into_iter()
        .find(|x| x["reason"] == "NETFILTER_DROP")
        .unwrap_or_else(|| panic!("live NETFILTER_DROP: {v:#?}"));
    assert_eq!(nf["node"], "node-b");
    assert_eq!(nf["src_pod"], "critical-app/client", "{nf}");
    assert_eq!(nf["dst_pod"], "critical-app/backend", "{nf}");
}
