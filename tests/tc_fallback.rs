//! Issue 17: the underlay programs on classic tc with a clsact qdisc (the path
//! for kernels without TCX, < 6.6), forced here with `KTRACE_NO_TCX=1`.
//! Netlink filters outlive a killed process, so these tests kill ktrace with
//! SIGKILL and check that the next ktrace (or `ktrace doctor`) removes exactly
//! what ktrace left, that a clsact qdisc ktrace did not create is never
//! deleted and its foreign filter survives (and still runs: ktrace's program
//! returns `TC_ACT_UNSPEC`, "next filter"), and that doctor reports ktrace's
//! real programs. Run under the host lock: `flock /tmp/ktrace-host.lock cargo test …`.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use ktrace_e2e::{Ktrace, NetnsPair, json_lines, ktrace_bin, of_type, sh};
use serde_json::Value;

const PREFIX: &str = "kt-tcf";
/// The client side of the veth, in the client namespace: ktrace's underlay.
const DEV: &str = "kt-tcf-c";
const NO_TCX: [(&str, &str); 2] = [("KTRACE_NO_TCX", "1"), ("RUST_LOG", "info")];

fn can_run(test: &str) -> bool {
    ktrace_e2e::bpf_available(test) && ktrace_e2e::tools_available(test, &["ip", "tc", "dig", "dnsmasq"])
}

fn tc(ns: &str, args: &[&str]) -> String {
    sh(Command::new("ip").args(["netns", "exec", ns, "tc"]).args(args))
}

fn filters(ns: &str) -> String {
    format!(
        "{}{}",
        tc(ns, &["-s", "filter", "show", "dev", DEV, "egress"]),
        tc(ns, &["filter", "show", "dev", DEV, "ingress"])
    )
}

fn has_clsact(ns: &str) -> bool {
    tc(ns, &["qdisc", "show", "dev", DEV]).contains("clsact")
}

/// ktrace's filters as `tc` prints them: `pref 19284 bpf … underlay_egress`.
fn ktrace_filters(ns: &str) -> usize {
    filters(ns).lines().filter(|l| l.contains("underlay_") && l.contains("pref 19284")).count()
}

fn dig(p: &NetnsPair, name: &str) {
    let _ = p.exec(&p.client.clone(), "dig").args(["+tries=1", "+time=1", "@10.253.0.1", name]).output();
}

fn record(p: &NetnsPair, file: &Path) -> Ktrace {
    let f = file.to_str().expect("utf-8 path");
    Ktrace::start_in_netns(&p.client, &["record", "--underlay", DEV, "-w", f], &NO_TCX)
}

fn replay(file: &Path) -> Vec<Value> {
    let out = Command::new(ktrace_bin()).args(["replay", "-o", "json", "-r"]).arg(file).output().expect("replay");
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    json_lines(&lines)
}

/// `(egress?, src, dst, sport, dport)`.
type Fingerprint = (bool, [u8; 4], [u8; 4], u16, u16);

/// Underlay fingerprints (tc hooks) in a capture: `(egress?, src, dst, sport, dport)` of IPv4/UDP ones.
fn fingerprints(file: &Path) -> Vec<Fingerprint> {
    use ktrace::{
        event::{Hook, Record},
        source::file::{FileEvent, replay},
    };
    let mut out = Vec::new();
    replay(&[file.to_path_buf()], |ev| {
        if let FileEvent::Record(Record::Packet(p)) = ev
            && matches!(p.hook, Hook::TcEgress | Hook::TcIngress)
            && let Some(h) = p.data.get(..24)
            && h[0] == 0x45
            && h[9] == 17
        {
            out.push((
                p.hook == Hook::TcEgress,
                [h[12], h[13], h[14], h[15]],
                [h[16], h[17], h[18], h[19]],
                u16::from_be_bytes([h[20], h[21]]),
                u16::from_be_bytes([h[22], h[23]]),
            ));
        }
    })
    .expect("reading the capture");
    out
}

const SRV: [u8; 4] = [10, 253, 0, 1];

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ktrace-e2e-tcf-{name}.pcapng"));
    let _ = std::fs::remove_file(&p);
    p
}

fn doctor(ns: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(ktrace_bin())
        .args(["doctor", "-o", "json"])
        .envs(env.iter().copied())
        .output()
        .expect("doctor");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert!(!lines.is_empty(), "doctor printed nothing: {}", String::from_utf8_lossy(&out.stderr));
    json_lines(&lines)
}

#[test]
fn classic_tc_underlay_fingerprints_and_leaves_nothing_on_exit() {
    if !can_run("classic_tc_underlay_fingerprints_and_leaves_nothing_on_exit") {
        return;
    }
    let mut p = NetnsPair::new(PREFIX);
    p.start_dnsmasq();
    assert!(!has_clsact(&p.client), "fresh veth has no clsact");
    let file = tmp("capture");
    let k = record(&p, &file);
    assert!(has_clsact(&p.client), "ktrace created clsact: {}", tc(&p.client, &["qdisc", "show", "dev", DEV]));
    assert_eq!(ktrace_filters(&p.client), 2, "one ktrace filter per direction:\n{}", filters(&p.client));
    for i in 0..3 {
        dig(&p, &format!("fp{i}.example.test"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, err) = k.stop_with_stderr();
    assert!(err.iter().any(|l| l.contains("Clsact")), "mode logged: {err:?}");
    assert!(!has_clsact(&p.client), "clsact ktrace created is gone: {}", tc(&p.client, &["qdisc", "show", "dev", DEV]));
    assert_eq!(filters(&p.client).trim(), "", "no filter left");
    let fp = fingerprints(&file);
    // The socket hooks see the same queries: the tc ones must be there on their own.
    assert!(fp.iter().any(|f| f.0 && f.2 == SRV && f.4 == 53), "query fingerprinted on tc egress: {fp:?}");
    assert!(fp.iter().any(|f| !f.0 && f.1 == SRV && f.3 == 53), "response fingerprinted on tc ingress: {fp:?}");
    assert!(
        of_type(&replay(&file), "packet").iter().any(|r| r["dns"]["qname"] == "fp0.example.test"),
        "the DNS side works alongside"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn sigkill_in_clsact_mode_then_restart_and_doctor_remove_stale_filters() {
    if !can_run("sigkill_in_clsact_mode_then_restart_and_doctor_remove_stale_filters") {
        return;
    }
    let p = NetnsPair::new(PREFIX);
    let file = tmp("kill");
    let k = record(&p, &file);
    let killed = k.pid();
    k.kill9();
    assert_eq!(ktrace_filters(&p.client), 2, "netlink filters outlive SIGKILL:\n{}", filters(&p.client));
    assert!(
        filters(&p.client).contains(&format!("handle 0x{killed:x}")),
        "handle is the owner: {}",
        filters(&p.client)
    );
    assert!(has_clsact(&p.client));

    // Restart: the stale filters go, ktrace's new ones come.
    let k = record(&p, &file);
    let now = filters(&p.client);
    assert_eq!(ktrace_filters(&p.client), 2, "only the new instance's filters:\n{now}");
    assert!(!now.contains(&format!("handle 0x{killed:x}")), "stale handle removed:\n{now}");
    let (_, err) = k.stop_with_stderr();
    assert!(err.iter().any(|l| l.contains("removed a stale ktrace tc filter")), "restart said so: {err:?}");
    assert!(!has_clsact(&p.client) && filters(&p.client).trim().is_empty(), "nothing left after exit");

    // Kill again; this time `ktrace doctor` cleans up.
    let k = record(&p, &file);
    k.kill9();
    assert_eq!(ktrace_filters(&p.client), 2);
    let d = doctor(&p.client, &[]);
    let c = of_type(&d, "doctor_tc_cleanup");
    assert_eq!(c.len(), 1, "{d:?}");
    assert_eq!(c[0]["removed_filters"].as_array().map(Vec::len), Some(2), "{:?}", c[0]);
    assert_eq!(c[0]["removed_qdiscs"], serde_json::json!([DEV]), "{:?}", c[0]);
    assert!(!has_clsact(&p.client), "qdisc ktrace created removed by doctor");
    assert_eq!(filters(&p.client).trim(), "", "no filter left");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn foreign_clsact_and_its_filter_survive_exit_and_sigkill_and_still_run() {
    if !can_run("foreign_clsact_and_its_filter_survive_exit_and_sigkill_and_still_run") {
        return;
    }
    let p = NetnsPair::new(PREFIX);
    // Someone else's clsact and filter: a classic-BPF direct-action filter
    // that drops (TC_ACT_SHOT) every IPv4 packet leaving the client.
    tc(&p.client, &["qdisc", "add", "dev", DEV, "clsact"]);
    tc(
        &p.client,
        &[
            "filter",
            "add",
            "dev",
            DEV,
            "egress",
            "prio",
            "60000",
            "protocol",
            "ip",
            "bpf",
            "bytecode",
            "1,6 0 0 2,",
            "da",
        ],
    );
    let foreign = |ns: &str| filters(ns).lines().any(|l| l.contains("pref 60000") && l.contains("bytecode"));
    // clsact counts what its filters drop.
    let dropped = |ns: &str| {
        tc(ns, &["-s", "qdisc", "show", "dev", DEV])
            .split("dropped ")
            .skip(1)
            .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let file = tmp("foreign");
    let k = record(&p, &file);
    assert_eq!(ktrace_filters(&p.client), 2);
    let before = dropped(&p.client);
    dig(&p, "fpx.example.test");
    std::thread::sleep(Duration::from_millis(300));
    // ktrace (pref 19284) ran first and said "next filter": the foreign drop still happened.
    assert!(dropped(&p.client) > before, "foreign filter still runs after ktrace's:\n{}", filters(&p.client));
    let _ = k.stop();
    assert!(has_clsact(&p.client), "a clsact ktrace did not create is never deleted");
    assert!(foreign(&p.client), "foreign filter survives ktrace's exit:\n{}", filters(&p.client));
    assert_eq!(ktrace_filters(&p.client), 0);
    let fp = fingerprints(&file);
    assert!(
        fp.iter().any(|f| f.0 && f.2 == SRV && f.4 == 53),
        "ktrace saw the query on egress before the drop: {fp:?}"
    );
    assert!(!fp.iter().any(|f| !f.0 && f.1 == SRV), "and no answer came back (dropped): {fp:?}");

    // SIGKILL, then doctor: ktrace's filters go, the qdisc and the foreign filter stay.
    let k = record(&p, &file);
    k.kill9();
    assert_eq!(ktrace_filters(&p.client), 2);
    let d = doctor(&p.client, &[]);
    let c = of_type(&d, "doctor_tc_cleanup");
    assert_eq!(c[0]["removed_filters"].as_array().map(Vec::len), Some(2), "{:?}", c[0]);
    assert_eq!(c[0]["removed_qdiscs"], serde_json::json!([]), "{:?}", c[0]);
    assert!(has_clsact(&p.client) && foreign(&p.client), "foreign qdisc and filter survive:\n{}", filters(&p.client));
    assert_eq!(ktrace_filters(&p.client), 0);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn doctor_lists_the_real_programs_with_load_status_and_paths() {
    if !can_run("doctor_lists_the_real_programs_with_load_status_and_paths") {
        return;
    }
    let p = NetnsPair::new(PREFIX);
    let started = Instant::now();
    for (env, want_tc) in [(&[][..], "tcx"), (&NO_TCX[..], "clsact")] {
        let d = doctor(&p.client, env);
        let progs = of_type(&d, "doctor_program");
        for name in [
            "dns_egress",
            "dns_ingress",
            "drop_kfree_skb",
            "conn_set_state",
            "conn_recv_reset",
            "conn_send_reset",
            "conn_retransmit",
            "underlay_egress",
            "underlay_ingress",
        ] {
            let r = progs.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} missing: {progs:?}"));
            assert_eq!(r["loads"], true, "{name} loads here: {r}");
            assert_eq!(r["attaches"], true, "{name} attaches here: {r}");
            assert!(r["verified_insns"].as_u64().is_some_and(|n| n > 0), "{name}: verifier figure: {r}");
        }
        let under = progs.iter().find(|r| r["name"] == "underlay_egress").expect("underlay_egress");
        assert_eq!(under["path"], want_tc, "{under}");
        let legacy = of_type(&d, "doctor");
        for name in [
            "btf",
            "ring_buffer",
            "cgroup_skb",
            "netns_cookie",
            "task_btf",
            "tracepoint",
            "tp_btf",
            "tc",
            "kprobe",
            "fentry",
        ] {
            let c =
                legacy.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("doctor record {name}: {legacy:?}"));
            for f in ["ok", "detail", "enables", "required"] {
                assert!(!c[f].is_null(), "{name}.{f} kept: {c}");
            }
        }
        let tc_rec = legacy.iter().find(|c| c["name"] == "tc").expect("tc");
        assert_eq!(tc_rec["ok"], true);
        assert_eq!(tc_rec["path"], want_tc);
        let cg = legacy.iter().find(|c| c["name"] == "cgroup_skb").expect("cgroup_skb");
        assert_eq!(cg["programs"], serde_json::json!(["dns_egress", "dns_ingress"]), "real programs, not a stand-in");
        let feats = of_type(&d, "doctor_feature");
        for cmd in ["dns", "drops", "record", "agent"] {
            let f = feats.iter().find(|f| f["command"] == cmd).unwrap_or_else(|| panic!("feature {cmd}: {feats:?}"));
            assert_eq!(f["works"], "yes", "{f}");
        }
    }
    assert!(!has_clsact(&p.client), "doctor's tc probes ran in a throw-away netns");
    eprintln!("two doctor runs took {:?}", started.elapsed());
}
