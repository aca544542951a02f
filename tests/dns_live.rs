//! Issue 2 end to end: the real eBPF programs see DNS between two network
//! namespaces (real dnsmasq, real dig and glibc getent), over UDP and TCP,
//! IPv4 and IPv6, and `ktrace dns -o json` reports names, rcodes, the
//! process (thread-group leader, not dig's worker thread) and latencies.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{process::Command, time::Duration};

use ktrace_e2e::{Ktrace, NetnsPair, bpf_available, json_lines, of_type, tools_available};
use serde_json::Value;

fn find<'a>(txs: &[&'a Value], qname: &str, qtype: &str, transport: &str) -> &'a Value {
    txs.iter()
        .copied()
        .find(|t| t["qname"] == qname && t["qtype"] == qtype && t["transport"] == transport)
        .unwrap_or_else(|| panic!("no {transport} {qtype} {qname} transaction in {txs:#?}"))
}

/// `dig example.test` from the client namespace; asserts it succeeded, gives
/// the ring buffer's 10 ms drain time to pass, returns dig's pid.
fn dig_example(net: &NetnsPair) -> u32 {
    let child = net
        .exec(&net.client, "dig")
        .args(["+short", "+tries=1", "@10.253.0.1", "example.test"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("dig");
    let pid = child.id();
    assert!(child.wait_with_output().expect("dig").status.success(), "dig example.test failed");
    std::thread::sleep(Duration::from_millis(200));
    pid
}

#[test]
fn dns_transactions_between_two_namespaces() {
    if !bpf_available("dns_transactions_between_two_namespaces")
        || !tools_available("dns_live", &["dnsmasq", "dig", "getent", "ip"])
    {
        return;
    }
    let mut net = NetnsPair::new("ktt2");
    net.start_dnsmasq();
    // Only this test's client: the other test digs the same name at the same
    // addresses from its own namespaces, at the same time.
    let kt = Ktrace::start(&["dns", "-o", "json", "--duration", "60s", "--netns", &net.client]);

    let dig = |args: &[&str]| {
        let mut c = net.exec(&net.client, "dig");
        c.args(["+tries=1", "+time=2"]).args(args);
        let child = c.stdout(std::process::Stdio::piped()).spawn().expect("dig");
        let pid = child.id();
        let out = child.wait_with_output().expect("dig");
        assert!(out.status.success(), "dig {args:?} failed");
        pid
    };
    let dig_udp4 = dig(&["@10.253.0.1", "example.test", "A"]);
    let dig_tcp4 = dig(&["+tcp", "@10.253.0.1", "example.test", "A"]);
    let dig_udp6 = dig(&["@fd00:253::1", "example.test", "AAAA"]);
    let dig_nx = dig(&["@10.253.0.1", "missing.test", "A"]);
    let getent = net.exec(&net.client, "getent").args(["ahostsv4", "example.test"]).output().expect("getent");
    assert!(String::from_utf8_lossy(&getent.stdout).contains("10.1.2.3"));
    std::thread::sleep(Duration::from_millis(300));
    let lines = kt.stop();
    let v = json_lines(&lines);
    let txs = of_type(&v, "dns");
    // Only this test's traffic matters; the machine may have other DNS.
    let txs: Vec<&Value> = txs
        .into_iter()
        .filter(|t| t["server"].as_str().is_some_and(|s| s.contains("10.253.0.1") || s.contains("fd00:253::1")))
        .collect();

    let a = find(&txs, "example.test", "A", "udp");
    assert_eq!(a["rcode"], "NOERROR");
    assert_eq!(a["comm"], "dig", "the thread-group leader's name, not isc-net-0000: {a}");
    assert_eq!(a["pid"], dig_udp4);
    assert_eq!(a["timed_out"], false);
    assert!(a["answers"].to_string().contains("10.1.2.3"), "{a}");
    let lat = a["latency_ms"].as_f64().expect("latency");
    assert!(lat > 0.0 && lat < 1000.0, "latency {lat}");
    assert!(a["client"].as_str().unwrap().starts_with("10.253.0.2:"));
    assert_eq!(a["server"], "10.253.0.1:53");
    assert_ne!(a["netns"], 0, "client netns inode known");

    let t = find(&txs, "example.test", "A", "tcp");
    assert_eq!(t["rcode"], "NOERROR");
    assert_eq!(t["pid"], dig_tcp4);

    let six = find(&txs, "example.test", "AAAA", "udp");
    assert_eq!(six["rcode"], "NOERROR");
    assert_eq!(six["pid"], dig_udp6);
    assert!(six["server"].as_str().unwrap().starts_with("[fd00:253::1]"));

    let nx = find(&txs, "missing.test", "A", "udp");
    assert_eq!(nx["rcode"], "NXDOMAIN");
    assert_eq!(nx["pid"], dig_nx);

    let g = txs.iter().find(|t| t["comm"] == "getent").unwrap_or_else(|| panic!("no getent transaction in {txs:#?}"));
    assert_eq!(g["qname"], "example.test");
    assert_eq!(g["rcode"], "NOERROR");

    let stats = of_type(&v, "stats");
    assert_eq!(stats.len(), 1, "one stats record at exit");
    assert_eq!(stats[0]["lost_events"], 0);
}

/// Kernels whose verifier refuses direct BTF reads of the current task in
/// `cgroup_skb` get the `bpf_probe_read_kernel` path: forced here with
/// `KTRACE_NO_TASK_BTF`, it must name the same process and netns.
#[test]
fn probe_read_fallback_names_process_and_netns() {
    if !bpf_available("probe_read_fallback") || !tools_available("probe_read_fallback", &["dnsmasq", "dig", "ip"]) {
        return;
    }
    let mut net = NetnsPair::new("ktt2c");
    net.start_dnsmasq();
    let kt = Ktrace::start_env(
        &["dns", "-o", "json", "--duration", "60s", "--netns", &net.client],
        &[("KTRACE_NO_TASK_BTF", "1")],
    );
    let pid = dig_example(&net);
    let v = json_lines(&kt.stop());
    let txs = of_type(&v, "dns");
    let t = txs
        .iter()
        .find(|t| t["qname"] == "example.test" && t["server"] == "10.253.0.1:53")
        .unwrap_or_else(|| panic!("no transaction in {txs:#?}"));
    assert_eq!(t["comm"], "dig", "{t}");
    assert_eq!(t["pid"], pid);
    assert_ne!(t["netns"], 0, "client netns inode known: {t}");
}

/// Kernels before 6.10 refuse `bpf_get_current_pid_tgid` in `cgroup_skb`
/// (6.1: `unknown func bpf_get_current_pid_tgid#14`); ktrace then reads the
/// pid and tgid from the current task at BTF offsets. Forced here with
/// `KTRACE_PID_FROM_TASK=1`, through both task readers (BTF loads and probe
/// reads), it must name the same process (the thread-group leader's pid,
/// not dig's worker thread) and netns.
#[test]
fn pid_from_task_fallback_names_the_process() {
    if !bpf_available("pid_from_task_fallback") || !tools_available("pid_from_task_fallback", &["dnsmasq", "dig", "ip"])
    {
        return;
    }
    let mut net = NetnsPair::new("ktt2e");
    net.start_dnsmasq();
    for env in [&[("KTRACE_PID_FROM_TASK", "1")][..], &[("KTRACE_PID_FROM_TASK", "1"), ("KTRACE_NO_TASK_BTF", "1")][..]]
    {
        let kt = Ktrace::start_env(&["dns", "-o", "json", "--duration", "60s", "--netns", &net.client], env);
        let pid = dig_example(&net);
        let v = json_lines(&kt.stop());
        let txs = of_type(&v, "dns");
        let t = txs
            .iter()
            .find(|t| t["qname"] == "example.test" && t["server"] == "10.253.0.1:53")
            .unwrap_or_else(|| panic!("{env:?}: no transaction in {txs:#?}"));
        assert_eq!(t["comm"], "dig", "{env:?}: {t}");
        assert_eq!(t["pid"], pid, "{env:?}: the tgid, read from the task: {t}");
        assert_ne!(t["netns"], 0, "{env:?}: client netns inode known: {t}");
    }
}

/// `--sched-idle` (retired: accepted, no effect but a deprecation notice):
/// ktrace's threads run under `SCHED_IDLE` as by default, still trace, and
/// the exit line on stderr reports events read and lost.
#[test]
fn sched_idle_runs_idle_and_reports_losses() {
    if !bpf_available("sched_idle") || !tools_available("sched_idle", &["dnsmasq", "dig", "ip"]) {
        return;
    }
    let mut net = NetnsPair::new("ktt2d");
    net.start_dnsmasq();
    let kt = Ktrace::start(&["--sched-idle", "dns", "-o", "json", "--duration", "60s", "--netns", &net.client]);
    // Live sources switch to idle when they start reading, just after "attached".
    let mut policy = String::new();
    for _ in 0..100 {
        let sched = std::fs::read_to_string(format!("/proc/{}/sched", kt.pid())).expect("/proc/PID/sched");
        policy = sched.lines().find(|l| l.starts_with("policy")).unwrap_or_default().to_owned();
        if policy.trim_end().ends_with(" 5") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(policy.trim_end().ends_with(" 5"), "SCHED_IDLE is policy 5: {policy}");
    dig_example(&net);
    let (out, err) = kt.stop_with_stderr();
    let v = json_lines(&out);
    assert!(
        of_type(&v, "dns").iter().any(|t| t["qname"] == "example.test" && t["comm"] == "dig"),
        "transaction missing: {out:?}"
    );
    let exit =
        err.iter().find(|l| l.starts_with("ktrace: stopped: ")).unwrap_or_else(|| panic!("no exit line: {err:?}"));
    assert!(exit.contains(" 0 lost in the kernel") && exit.contains("--sched-idle"), "{exit}");
    assert!(err.iter().any(|l| l.contains("--sched-idle is deprecated and has no effect")), "{err:?}");
}

/// (thread name, scheduling policy) of every thread of `pid`, from
/// /proc/PID/task/TID/{comm,sched} (policy 0 is `SCHED_OTHER`, 5 `SCHED_IDLE`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task").flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_owned();
        let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
        let policy = sched
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(u32::MAX);
        out.push((comm, policy));
    }
    out
}

/// Idle priority is the default of live tracing: once ktrace reads the ring,
/// every thread but the booster runs under `SCHED_IDLE`, and `--sched-normal`
/// keeps all at normal priority. The catch-up path: with a 1 MiB ring per CPU and
/// ktrace stopped (SIGSTOP) while 600 queries happen, the ring backs up past
/// a quarter (the kernel's forced wakeup); after SIGCONT the booster raises
/// ktrace (the exit line counts it) and every query is delivered, none lost.
#[test]
fn idle_priority_is_the_default_and_catches_up() {
    if !bpf_available("idle_priority_default") || !tools_available("idle_priority_default", &["dnsmasq", "dig", "ip"]) {
        return;
    }
    let mut net = NetnsPair::new("ktt2i");
    net.start_dnsmasq();

    let kt = Ktrace::start(&["--sched-normal", "dns", "-o", "json", "--duration", "60s", "--netns", &net.client]);
    dig_example(&net);
    let threads = thread_policies(kt.pid());
    assert!(threads.iter().all(|(_, p)| *p == 0), "--sched-normal: every thread SCHED_OTHER: {threads:?}");
    assert!(!threads.iter().any(|(c, _)| c == "ktrace-boost"), "--sched-normal: no booster: {threads:?}");
    let (_, err) = kt.stop_with_stderr();
    let exit = err.iter().find(|l| l.starts_with("ktrace: stopped: ")).expect("exit line");
    assert!(!exit.contains("--sched-idle"), "{exit}");

    let kt = Ktrace::start(&["dns", "-o", "json", "--ring-mib", "2", "--duration", "60s", "--netns", &net.client]);
    // Live sources switch to idle when they start reading, just after "attached".
    let mut threads = Vec::new();
    for _ in 0..100 {
        threads = thread_policies(kt.pid());
        if threads.iter().any(|(c, p)| c == "ktrace-boost" && *p == 0)
            && threads.iter().filter(|(c, _)| c != "ktrace-boost").all(|(_, p)| *p == 5)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        threads.iter().any(|(c, p)| c == "ktrace-boost" && *p == 0)
            && threads.iter().filter(|(c, _)| c != "ktrace-boost").all(|(_, p)| *p == 5),
        "default: SCHED_IDLE (5) but the booster (0): {threads:?}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(kt.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    // `--ring-mib 2` is a 1 MiB ring per CPU (two CPUs). 800 queries × 4
    // events (query and answer at both sockets, ~230 B each) ≈ 740 KB,
    // split between the CPUs of dig and dnsmasq however the scheduler
    // placed them: the fuller ring holds at least half (≈ 370 KB, past its
    // 256 KiB wakeup mark) and at most all of it (short of 1 MiB). With a
    // 512 KiB ring per CPU, both on one CPU overflowed it.
    let n_queries = 800;
    let batch = std::env::temp_dir().join(format!("ktt2i-{}.dig", std::process::id()));
    std::fs::write(&batch, "+short +tries=1 +time=2 @10.253.0.1 example.test A\n".repeat(n_queries))
        .expect("batch file");
    let out = net.exec(&net.client, "dig").arg("-f").arg(&batch).output();
    let _ = std::fs::remove_file(&batch);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let out = out.expect("dig -f");
    assert!(out.status.success(), "dig -f failed");
    std::thread::sleep(Duration::from_millis(500));
    let (out, err) = kt.stop_with_stderr();
    let n = of_type(&json_lines(&out), "dns")
        .iter()
        .filter(|t| t["qname"] == "example.test" && t["comm"] == "dig" && t["rcode"] == "NOERROR")
        .count();
    let exit = err.iter().find(|l| l.starts_with("ktrace: stopped: ")).expect("exit line");
    let boosts: u64 = exit
        .split("raised to normal priority ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no boost count: {exit}"));
    assert!(boosts >= 1, "the backed-up ring raised ktrace to normal priority: {exit}");
    assert!(exit.contains(" 0 lost in the kernel"), "{exit}");
    assert_eq!(n, n_queries, "every query delivered: {exit}");
}

/// Ctrl-C detaches everything: a second run right after works, and no
/// ktrace program stays attached to the cgroup2 root.
#[test]
fn second_run_after_sigint_works_and_nothing_stays_attached() {
    if !bpf_available("second_run_after_sigint") || !tools_available("second_run", &["dnsmasq", "dig", "ip", "bpftool"])
    {
        return;
    }
    let mut net = NetnsPair::new("ktt2b");
    net.start_dnsmasq();
    for round in 0..2 {
        let kt = Ktrace::start(&["dns", "-o", "json", "--duration", "60s"]);
        dig_example(&net);
        let v = json_lines(&kt.stop());
        assert!(
            of_type(&v, "dns").iter().any(|t| t["qname"] == "example.test" && t["comm"] == "dig"),
            "round {round}: transaction missing"
        );
    }
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| std::path::Path::new(p).join("cgroup.procs").exists())
        .expect("cgroup2 root");
    let out = Command::new("bpftool").args(["cgroup", "show", root]).output().expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("dns_egress") && !text.contains("dns_ingress"), "programs left attached:\n{text}");
}

/// A Service-style DNAT (kube-proxy's rewrite, here in the client's own
/// namespace): dig asks 10.96.0.10, nftables sends it to dnsmasq at
/// 10.253.0.1, conntrack rewrites the answer back. The client's socket and
/// the resolver's see different addresses; ktrace reports ONE transaction
/// with the address asked and the resolver that answered.
#[test]
fn dnat_to_the_resolver_is_one_transaction() {
    if !bpf_available("dnat_to_the_resolver")
        || !tools_available("dnat_to_the_resolver", &["dnsmasq", "dig", "ip", "nft"])
    {
        return;
    }
    let mut net = NetnsPair::new("ktt2e");
    net.start_dnsmasq();
    net.service_dnat();
    let kt = Ktrace::start(&["dns", "-o", "json", "--duration", "60s"]);
    let child = net
        .exec(&net.client, "dig")
        .args(["+short", "+tries=1", "+time=2", "@10.96.0.10", "example.test"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dig");
    let pid = child.id();
    let out = child.wait_with_output().expect("dig");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.1.2.3"), "the DNATed query answered");
    std::thread::sleep(Duration::from_millis(300));
    let v = json_lines(&kt.stop());
    let txs = of_type(&v, "dns");
    let mine: Vec<&&Value> = txs.iter().filter(|t| t["pid"] == pid).collect();
    assert_eq!(mine.len(), 1, "{txs:#?}");
    let t = mine[0];
    assert_eq!(t["server"], "10.96.0.10:53", "the address dig asked: {t}");
    assert_eq!(t["resolver"], "10.253.0.1:53", "the resolver that answered: {t}");
    assert_eq!(t["resolver_client"], t["client"], "{t}");
    assert_eq!(t["observed"], "both", "{t}");
    assert_eq!(t["rcode"], "NOERROR");
    assert_eq!(t["comm"], "dig");
    assert_eq!(t["server_process"]["comm"], "dnsmasq", "{t}");
    let views = txs.iter().filter(|o| o["id"] == t["id"] && o["qname"] == "example.test").count();
    assert_eq!(views, 1, "the resolver's view is not a second transaction: {txs:#?}");
    assert!(of_type(&v, "stats")[0]["pairing"]["joined_views"].as_u64() >= Some(1));
}
