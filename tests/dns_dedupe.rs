//! Issue 18, one payload per DNS message, end to end: a client (dig, glibc
//! `getent`) asks a Service address that nftables DNATs to dnsmasq's address in
//! another network namespace, on this node. The kernel copies each message's
//! payload once (at its sender's egress); the receiver's ingress sighting is
//! a reference that userspace joins to that payload. `ktrace dns -o json`
//! with `KTRACE_DEDUPE=1` (opt-in)
//! must report the same transactions as with `KTRACE_NO_DEDUPE=1` (every
//! sighting copied in full), each paired once, with the client's process and
//! the resolver's.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{collections::BTreeSet, time::Duration};

use ktrace_e2e::{Ktrace, NetnsPair, bpf_available, json_lines, of_type, tools_available};
use serde_json::Value;

/// Queries per run (each dig is one query, getent `ahostsv4` is one more).
const DIGS: usize = 4;

/// One run: ktrace attached, `DIGS` digs and one getent against the
/// Service address. Returns ktrace's JSON records and the pids of the clients.
fn run(net: &NetnsPair, env: &[(&str, &str)]) -> (Vec<Value>, Vec<u32>) {
    let kt = Ktrace::start_env(&["dns", "-o", "json", "--duration", "60s"], env);
    let mut pids = Vec::new();
    for i in 0..DIGS {
        let child = net
            .exec(&net.client, "dig")
            .args(["+short", "+tries=1", "+time=2", "@10.96.0.10", &format!("n{i}.example.test")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dig");
        pids.push(child.id());
        let out = child.wait_with_output().expect("dig");
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.1.2.3"), "the DNATed query answered");
    }
    // glibc's resolver, through /etc/netns/<client>/resolv.conf (the ClusterIP).
    let child = net
        .exec(&net.client, "getent")
        .args(["ahostsv4", "example.test"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("getent");
    pids.push(child.id());
    let out = child.wait_with_output().expect("getent");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.1.2.3"), "getent through the ClusterIP");
    std::thread::sleep(Duration::from_millis(300));
    (json_lines(&kt.stop()), pids)
}

/// The transactions of `pids`, with the fields that differ from run to run
/// (times, latencies, ids, ports, pids) left out.
fn stable(v: &[Value], pids: &[u32]) -> Vec<Value> {
    const VOLATILE: [&str; 12] = [
        "ts",
        "ts_ns",
        "latency_ms",
        "latency_us",
        "id",
        "pid",
        "client",
        "resolver_client",
        "server_process",
        "tid",
        "first_ts",
        "last_ts",
    ];
    let mut out: Vec<Value> = of_type(v, "dns")
        .into_iter()
        .filter(|t| t["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32))))
        .map(|t| {
            let mut t = t.clone();
            if let Some(o) = t.as_object_mut() {
                o.retain(|k, _| !VOLATILE.contains(&k.as_str()));
            }
            t
        })
        .collect();
    out.sort_by_key(ToString::to_string);
    out
}

#[test]
fn one_payload_per_message_across_a_service_dnat() {
    if !bpf_available("one_payload_per_message")
        || !tools_available("one_payload_per_message", &["dnsmasq", "dig", "getent", "ip", "nft"])
    {
        return;
    }
    let mut net = NetnsPair::new("ktdd");
    net.start_dnsmasq();
    net.service_dnat();
    std::fs::write(
        std::path::Path::new("/etc/netns").join(&net.client).join("resolv.conf"),
        "nameserver 10.96.0.10\noptions timeout:2 attempts:1\n",
    )
    .expect("resolv.conf");

    let (on, on_pids) = run(&net, &[("KTRACE_DEDUPE", "1")]);
    let (off, off_pids) = run(&net, &[("KTRACE_NO_DEDUPE", "1")]);

    // Paired once, with the client and the resolver (DNAT seen through).
    let txs = of_type(&on, "dns");
    for (i, pid) in on_pids.iter().take(DIGS).enumerate() {
        let mine: Vec<&&Value> = txs.iter().filter(|t| t["pid"] == *pid).collect();
        assert_eq!(mine.len(), 1, "dig {i}: {txs:#?}");
        let t = mine[0];
        assert_eq!(t["qname"], format!("n{i}.example.test"));
        assert_eq!((&t["comm"], &t["server_process"]["comm"]), (&"dig".into(), &"dnsmasq".into()), "{t}");
        assert!(t["server_process"]["pid"].as_u64().is_some_and(|p| p > 0), "{t}");
        assert_eq!((&t["server"], &t["resolver"]), (&"10.96.0.10:53".into(), &"10.253.0.1:53".into()), "{t}");
        assert_eq!((&t["observed"], &t["rcode"]), (&"both".into(), &"NOERROR".into()), "{t}");
    }
    let getent = on_pids[DIGS];
    let g: Vec<&&Value> = txs.iter().filter(|t| t["pid"] == getent).collect();
    assert!(!g.is_empty() && g.iter().all(|t| t["comm"] == "getent" && t["server_process"]["comm"] == "dnsmasq"));

    // Every ingress sighting of our messages came as a reference and was
    // resolved: 2 per query (the resolver's copy of the query, the client's
    // of the response); the kernel copied each payload once.
    let queries = DIGS as u64 + g.len() as u64;
    let st = &of_type(&on, "stats")[0];
    let d = &st["dedupe"];
    eprintln!("dedupe on: {d}; off: {}", of_type(&off, "stats")[0]["dedupe"]);
    assert!(d["refs"].as_u64() >= Some(2 * queries), "{st}");
    assert_eq!(d["unresolved"], 0, "{st}");
    assert_eq!(st["lost_events"], 0, "{st}");
    let st_off = &of_type(&off, "stats")[0];
    assert_eq!(st_off["dedupe"]["refs"], 0, "KTRACE_NO_DEDUPE=1 sends every sighting in full: {st_off}");

    // The same transactions either way.
    let (a, b) = (stable(&on, &on_pids), stable(&off, &off_pids));
    assert_eq!(a.len(), DIGS + g.len(), "{a:#?}");
    assert_eq!(a, b, "dedupe on vs KTRACE_NO_DEDUPE=1");
    let keys = |v: &[Value]| -> BTreeSet<String> {
        of_type(v, "dns").iter().flat_map(|t| t.as_object().into_iter().flat_map(|o| o.keys().cloned())).collect()
    };
    assert_eq!(keys(&on), keys(&off));
}
