//! The analyzer's detectors, fed transactions as the pairer reports them.

use std::collections::{HashMap, HashSet};

use super::{fanout::common_label_prefix, *};
use crate::analyze::pairing::test_util::{MS, ep, pod, process, tx};

const BASE: &str = "backend.critical-app.svc.cluster.local";
const SEARCH: [&str; 4] = ["critical-app.svc.cluster.local", "svc.cluster.local", "cluster.local", "localdomain"];
const RESOLVER: &str = "10.0.2.53:53";
const UPSTREAM: &str = "10.0.9.9:53";
const K8S_CONF: &str = "search critical-app.svc.cluster.local svc.cluster.local cluster.local localdomain\nnameserver 10.0.2.53\noptions ndots:5 timeout:2 attempts:1\n";
const A: u16 = 1;
const AAAA: u16 = 28;
const NOERROR: u16 = 0;
const NX: u16 = 3;

fn evidence(pid: u32, text: &str) -> ResolvConfEvidence {
    ResolvConfEvidence {
        ts_ns: 0,
        pid,
        netns_ino: 4_026_532_000,
        path: format!("/proc/{pid}/root/etc/resolv.conf"),
        text: Some(text.to_owned()),
        error: None,
    }
}

/// A client query to the cluster resolver (seen on both sides).
fn cq(ts: u64, port: u16, qname: &str, qtype: u16, outcome: Option<(u16, u64, usize)>) -> Transaction {
    let mut t = tx(ts, &format!("10.0.1.5:{port}"), RESOLVER, qname, qtype, outcome);
    t.server_pod = Some(pod("kube-system", "kube-dns"));
    t.server_process = Some(process(77, "dnsmasq"));
    t.observed = crate::analyze::Observed::Both;
    t
}

/// The resolver's forward of `qname` to the upstream.
fn fwd(ts: u64, qname: &str, qtype: u16, outcome: Option<(u16, u64, usize)>) -> Transaction {
    let mut t = tx(ts, "10.0.2.53:33000", UPSTREAM, qname, qtype, outcome);
    t.client_pod = Some(pod("kube-system", "kube-dns"));
    t.process = Some(process(77, "dnsmasq"));
    t.netns = 4_026_532_999;
    t
}

/// Feeds transactions in the order the pairer would emit them (answers at
/// their end, timeouts `pair_timeout` after their start), expiring as time
/// passes, then finishes.
fn run(an: &mut Analyzer, mut txs: Vec<Transaction>, finish: bool) -> Vec<Finding> {
    let to = an.cfg.pair_timeout_ns;
    txs.sort_by_key(|t| t.end_ns.unwrap_or(t.ts_ns + to));
    let mut out = Vec::new();
    for t in &txs {
        an.expire(t.end_ns.unwrap_or(t.ts_ns + to), &mut out);
        an.push(t, &mut out);
    }
    if finish {
        an.finish(&mut out);
    }
    out
}

/// One walk for `qtype`: NXDOMAIN for the 3 cluster suffixes, a timeout
/// for localdomain (client gives up after 2 s), then the literal name.
fn walk(t0: u64, port0: u16, qtypes: &[u16], literal_data: &[bool]) -> (Vec<Transaction>, u64) {
    let mut v = Vec::new();
    let mut t = t0;
    let mut port = port0;
    for (i, s) in SEARCH.iter().enumerate() {
        let name = format!("{BASE}.{s}");
        for &qt in qtypes {
            if i == 3 {
                v.push(cq(t, port, &name, qt, None));
                v.push(fwd(t + MS / 2, &name, qt, None));
            } else {
                v.push(cq(t, port, &name, qt, Some((NX, MS / 2, 0))));
            }
            port += 1;
        }
        t += if i == 3 { 2000 * MS } else { MS };
    }
    for (&qt, &data) in qtypes.iter().zip(literal_data) {
        v.push(cq(t, port, BASE, qt, Some((NOERROR, MS, usize::from(data)))));
        port += 1;
    }
    (v, t + MS)
}

fn fanouts(out: &[Finding]) -> Vec<&SearchFanout> {
    out.iter()
        .filter_map(|f| match f {
            Finding::SearchFanout(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn upstreams(out: &[Finding]) -> Vec<&UpstreamTimeout> {
    out.iter()
        .filter_map(|f| match f {
            Finding::UpstreamTimeout(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn check_seed(out: &[Finding], qtypes: usize, total_ms: f64, slow: &str) {
    let f = fanouts(out);
    assert_eq!(f.len(), 1, "{out:#?}");
    let f = f[0];
    assert_eq!(f.base_name, BASE);
    assert_eq!(f.answered_by.as_deref(), Some(BASE));
    assert_eq!(f.pod.as_deref(), Some("critical-app/client"));
    assert_eq!(f.process.as_ref().map(|p| p.pid), Some(4242));
    assert_eq!(f.ndots, Some(5));
    assert_eq!(f.search, SEARCH);
    assert_eq!(f.resolv_conf_source, "observed");
    assert_eq!(f.timed_out_suffixes, ["localdomain"]);
    assert_eq!(f.attempts.len(), 5 * qtypes);
    // Suffix order per query type.
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in &f.attempts {
        seen.entry(a.qtype.as_str()).or_default().push(a.qname.as_str());
    }
    assert_eq!(seen.len(), qtypes);
    for names in seen.values() {
        let expect: Vec<String> = SEARCH.iter().map(|s| format!("{BASE}.{s}")).chain([BASE.to_owned()]).collect();
        assert_eq!(*names, expect);
    }
    assert!((f.total_ms - total_ms).abs() < 5.0, "total {}", f.total_ms);
    let timeouts = if total_ms > 3000.0 { 4000.0 } else { 2000.0 };
    assert!((f.wasted_ms - timeouts).abs() < 10.0, "wasted {}", f.wasted_ms);
    assert!(f.cause.contains("4 dots < ndots:5"), "{}", f.cause);
    assert!(f.cause.contains("4 search suffixes"), "{}", f.cause);
    assert!(
        f.cause.contains(&format!("*.localdomain was forwarded upstream to 10.0.9.9:53 and timed out {slow}")),
        "{}",
        f.cause
    );
    assert_eq!(f.forwarded_upstream.len(), 1);
    assert!(f.advice.iter().any(|a| a.contains(&format!("`{BASE}.`"))));
    assert!(f.advice.iter().any(|a| a.contains("ndots") && a.contains("value: \"2\"")));
    assert!(f.advice.iter().any(|a| a.contains("Remove `localdomain`")));
    assert!(!f.advice.iter().any(|a| a.contains("Remove `cluster.local`")));

    let u = upstreams(out);
    assert_eq!(u.len(), 1, "{out:#?}");
    let u = u[0];
    assert_eq!(u.qname, format!("{BASE}.localdomain"));
    assert_eq!(u.upstream, UPSTREAM);
    assert_eq!(u.attempts, 2);
    assert_eq!(u.resolver.address, RESOLVER);
    assert_eq!(u.resolver.pod.as_deref(), Some("kube-system/kube-dns"));
    assert_eq!(u.resolver.process.as_ref().map(|p| p.comm.as_ref()), Some("dnsmasq"));
    assert_eq!(u.client.pod.as_deref(), Some("critical-app/client"));
    assert!((u.waited_ms - timeouts).abs() < 10.0, "waited {}", u.waited_ms);
    assert!(u.cause.contains("kube-system/kube-dns forwarded") && u.cause.contains("never answered"), "{}", u.cause);
    let json = serde_json::to_value(Finding::UpstreamTimeout(u.clone())).unwrap();
    assert_eq!(json["kind"], "upstream_timeout");
}

#[test]
fn seed_incident_aaaa_walk_then_a_walk() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let (mut v, t) = walk(0, 40000, &[AAAA], &[false]);
    let (v2, _) = walk(t + MS, 41000, &[A], &[true]);
    v.extend(v2);
    // The finding is out before the end of input: evidence says complete.
    let mut out = run(&mut an, v, false);
    an.expire(30_000 * MS, &mut out);
    check_seed(&out, 2, 4009.0, "twice (4.0 s of 4.0 s)");
    let mut rest = Vec::new();
    an.finish(&mut rest);
    assert!(rest.is_empty(), "{rest:#?}");
    let json = serde_json::to_value(&out[0]).unwrap();
    for k in [
        "kind",
        "pod",
        "process",
        "base_name",
        "attempts",
        "answered_by",
        "total_ms",
        "wasted_ms",
        "ndots",
        "search",
        "advice",
    ] {
        assert!(json.get(k).is_some(), "missing {k}");
    }
    assert_eq!(json["kind"], "search_fanout");
    assert_eq!(json["attempts"][0]["rcode"], rcode_name(3));
}

#[test]
fn seed_incident_parallel_a_aaaa() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let (v, _) = walk(0, 40000, &[A, AAAA], &[true, false]);
    let out = run(&mut an, v, true);
    check_seed(&out, 2, 2004.0, "twice (2.0 s of 2.0 s)");
}

#[test]
fn seed_incident_without_resolv_conf_is_inferred() {
    let mut an = Analyzer::new();
    let (v, _) = walk(0, 40000, &[A, AAAA], &[true, false]);
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 1, "{out:#?}");
    assert_eq!(f[0].resolv_conf_source, "inferred");
    assert_eq!(f[0].search, SEARCH);
    assert_eq!(f[0].ndots, None);
    assert_eq!(f[0].attempts.len(), 10);
    assert_eq!(f[0].timed_out_suffixes, ["localdomain"]);
    assert!((f[0].wasted_ms - 2000.0).abs() < 10.0, "{}", f[0].wasted_ms);
}

#[test]
fn musl_sequential_with_retransmits() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, &format!("{K8S_CONF}options single-request\n")));
    let mut v = Vec::new();
    let mut t = 0;
    for (i, s) in SEARCH.iter().enumerate() {
        let name = format!("{BASE}.{s}");
        for qt in [A, AAAA] {
            if i == 3 {
                let mut q = cq(t, 40000, &name, qt, None);
                q.retransmits = 1;
                v.push(q);
                t += 2000 * MS;
            } else {
                v.push(cq(t, 40000, &name, qt, Some((NX, MS / 2, 0))));
                t += MS;
            }
        }
    }
    v.push(cq(t, 40000, BASE, A, Some((NOERROR, MS, 1))));
    v.push(cq(t + 2 * MS, 40000, BASE, AAAA, Some((NOERROR, MS, 0))));
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 1, "{out:#?}");
    assert_eq!(f[0].attempts.len(), 10);
    assert_eq!(f[0].attempts.iter().map(|a| a.retransmits).sum::<u32>(), 2);
    assert!((f[0].wasted_ms - 4006.0).abs() < 10.0, "{}", f[0].wasted_ms);
    assert!(f[0].cause.contains("timed out twice (4.0 s"), "{}", f[0].cause);
}

#[test]
fn ndots_2_four_dot_name_answers_directly() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, &K8S_CONF.replace("ndots:5", "ndots:2")));
    let v = vec![cq(0, 40000, BASE, A, Some((NOERROR, MS, 1))), cq(0, 40001, BASE, AAAA, Some((NOERROR, MS, 0)))];
    assert!(run(&mut an, v, true).is_empty());
}

#[test]
fn trailing_dot_fqdn_is_one_query() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let v = vec![cq(0, 40000, &format!("{BASE}."), A, Some((NOERROR, MS, 1)))];
    assert!(run(&mut an, v, true).is_empty());
}

#[test]
fn name_under_first_suffix_is_no_finding() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let name = "backend.critical-app.svc.cluster.local";
    let v = vec![cq(0, 40000, name, A, Some((NOERROR, MS, 1))), cq(0, 40001, name, AAAA, Some((NOERROR, MS, 0)))];
    // The app asked for `backend`: first candidate answered.
    assert!(run(&mut an, v, true).is_empty());
}

#[test]
fn cross_namespace_name_answered_by_second_suffix() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let v = vec![
        cq(0, 40000, "db.other.critical-app.svc.cluster.local", A, Some((NX, MS, 0))),
        cq(2 * MS, 40001, "db.other.svc.cluster.local", A, Some((NOERROR, MS, 1))),
    ];
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].base_name, "db.other");
    assert_eq!(f[0].answered_by.as_deref(), Some("db.other.svc.cluster.local"));
    assert!(f[0].timed_out_suffixes.is_empty());
    // Inferred works too (nested Kubernetes suffixes).
    let mut an = Analyzer::new();
    let v = vec![
        cq(0, 40000, "db.other.critical-app.svc.cluster.local", A, Some((NX, MS, 0))),
        cq(2 * MS, 40001, "db.other.svc.cluster.local", A, Some((NOERROR, MS, 1))),
        cq(10 * MS, 40002, "api.github.com", A, Some((NX, MS, 0))),
        cq(20 * MS, 40003, "api.stripe.com", A, Some((NOERROR, MS, 1))),
    ];
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 1, "{out:#?}");
    assert_eq!(f[0].base_name, "db.other");
}

#[test]
fn slow_but_answering_upstream_is_no_timeout() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, &K8S_CONF.replace("ndots:5", "ndots:1")));
    let name = "slow.example.com";
    let v = vec![cq(0, 40000, name, A, Some((NOERROR, 3000 * MS, 1))), fwd(MS, name, A, Some((NOERROR, 2990 * MS, 1)))];
    let out = run(&mut an, v, true);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn servfail_from_upstream_counts() {
    let mut an = Analyzer::new();
    let name = "x.localdomain";
    let v = vec![cq(0, 40000, name, A, Some((2, 5000 * MS, 0))), fwd(MS, name, A, Some((2, 4990 * MS, 0)))];
    let out = run(&mut an, v, true);
    let u = upstreams(&out);
    assert_eq!(u.len(), 1, "{out:#?}");
    assert_eq!((u[0].attempts, u[0].servfail), (1, 1));
    assert!((u[0].waited_ms - 5000.0).abs() < 1.0);
}

#[test]
fn interleaved_clients_are_kept_apart() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let (mut v, _) = walk(0, 40000, &[A], &[true]);
    // A second pod walking the same name, shifted by half a millisecond.
    let (other, _) = walk(MS / 2, 50000, &[A], &[true]);
    for mut t in other {
        if t.client.ip == ep("10.0.1.5:1").ip {
            t.client.ip = ep("10.0.1.6:1").ip;
            t.client_pod = Some(pod("critical-app", "client-2"));
            t.process = Some(process(5555, "curl"));
            t.netns = 4_026_532_111;
        }
        v.push(t);
    }
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 2, "{out:#?}");
    for f in &f {
        assert_eq!(f.attempts.len(), 5);
        assert!(f.attempts.iter().all(|a| a.qtype == qtype_name(A)));
    }
    let pods: HashSet<_> = f.iter().map(|f| f.pod.clone().unwrap()).collect();
    assert_eq!(pods.len(), 2);
    let u = upstreams(&out);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].attempts, 2);
    assert_eq!(u[0].client_queries, 2);
}

#[test]
fn nxdomain_storm_with_top_names() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let mut v = Vec::new();
    for i in 0..400u64 {
        let name = format!("svc{}.{}", i % 3, SEARCH[1]);
        v.push(cq(i * 20 * MS, 40000, &name, A, Some((NX, MS, 0))));
    }
    // Not search-suffixed: not counted.
    v.push(cq(0, 40000, "nope.example.org", A, Some((NX, MS, 0))));
    let out = run(&mut an, v, true);
    let storms: Vec<&NxdomainStorm> = out
        .iter()
        .filter_map(|f| match f {
            Finding::NxdomainStorm(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(!storms.is_empty() && storms.len() <= 2, "{}", storms.len());
    assert_eq!(storms[0].pod.as_deref(), Some("critical-app/client"));
    assert_eq!(storms[0].top_names.len(), 3);
    assert!(storms[0].rate_per_s >= 20.0);
}

#[test]
fn memory_is_bounded() {
    let cfg = AnalyzerConfig { max_clients: 8, max_attempts_per_client: 4, ..AnalyzerConfig::default() };
    let mut an = Analyzer::with_config(cfg);
    let mut out = Vec::new();
    for i in 0..1000u64 {
        let mut t = tx(
            i * MS,
            &format!("10.1.{}.{}:1000", i / 200, i % 200),
            RESOLVER,
            &format!("n{i}.x.{}", SEARCH[0]),
            A,
            None,
        );
        t.client_pod = None;
        an.push(&t, &mut out);
    }
    assert!(an.clients.len() <= 8);
    assert!(an.stats().clients_evicted > 0);
    an.finish(&mut out);
    assert!(an.clients.is_empty());
}

/// The seed incident as packets, through the real pairer: client and
/// dnsmasq on one node, dnsmasq forwarding `.localdomain` (same id) to an
/// upstream that never answers; AAAA walk then A walk.
#[test]
fn seed_incident_from_packets_through_pairer() {
    use crate::{
        analyze::pairing::{
            PairConfig, Pairer,
            test_util::{event, with_proc},
        },
        event::Hook,
    };
    let client_pod = pod("critical-app", "client");
    let dns_pod = pod("kube-system", "kube-dns");
    let mut evs = Vec::new();
    let mut t = 0u64;
    let mut id = 100u16;
    for qt in [AAAA, A] {
        let names: Vec<String> = SEARCH.iter().map(|s| format!("{BASE}.{s}")).chain([BASE.to_owned()]).collect();
        for (i, name) in names.iter().enumerate() {
            id += 1;
            let c = format!("10.0.1.5:{}", 40000 + id);
            let mut q = with_proc(
                event(t, Hook::SocketEgress, &c, RESOLVER, id, name, qt, None),
                process(4242, "getent"),
                4_026_532_000,
            );
            q.src_pod = Some(client_pod.clone());
            q.dst_pod = Some(dns_pod.clone());
            let mut si = event(t + MS / 20, Hook::SocketIngress, &c, RESOLVER, id, name, qt, None);
            si.src_pod = Some(client_pod.clone());
            si.dst_pod = Some(dns_pod.clone());
            evs.push(q);
            evs.push(si);
            if i == 3 {
                let mut f = with_proc(
                    event(t + MS / 5, Hook::SocketEgress, "10.0.2.53:33000", UPSTREAM, id, name, qt, None),
                    process(77, "dnsmasq"),
                    4_026_532_999,
                );
                f.src_pod = Some(dns_pod.clone());
                evs.push(f);
                t += 2000 * MS;
            } else {
                let (rcode, n) = if i == 4 { (NOERROR, usize::from(qt == A)) } else { (NX, 0) };
                let mut se = with_proc(
                    event(t + 2 * MS / 5, Hook::SocketEgress, RESOLVER, &c, id, name, qt, Some((rcode, n))),
                    process(77, "dnsmasq"),
                    4_026_532_999,
                );
                se.src_pod = Some(dns_pod.clone());
                let mut ci = event(t + MS / 2, Hook::SocketIngress, RESOLVER, &c, id, name, qt, Some((rcode, n)));
                ci.src_pod = Some(dns_pod.clone());
                ci.dst_pod = Some(client_pod.clone());
                evs.push(se);
                evs.push(ci);
                t += MS;
            }
        }
    }
    let timeout = 5000 * MS;
    let mut pairer = Pairer::new(PairConfig { timeout_ns: timeout, max_inflight: 1024 });
    let mut an = Analyzer::with_config(AnalyzerConfig { pair_timeout_ns: timeout, ..AnalyzerConfig::default() });
    an.resolv_conf(&evidence(4242, K8S_CONF));
    let mut txs = Vec::new();
    let mut out = Vec::new();
    let feed = |txs: &mut Vec<Transaction>, an: &mut Analyzer, out: &mut Vec<Finding>| {
        for tx in txs.drain(..) {
            an.push(&tx, out);
        }
    };
    for ev in &evs {
        pairer.expire(ev.rec.ts_ns, &mut txs);
        pairer.push(ev, &mut txs);
        feed(&mut txs, &mut an, &mut out);
        an.expire(ev.rec.ts_ns, &mut out);
    }
    // Time passes (ticks every 100 ms) until the capture ends at 30 s.
    for tick in (t / (100 * MS))..300 {
        pairer.expire(tick * 100 * MS, &mut txs);
        feed(&mut txs, &mut an, &mut out);
        an.expire(tick * 100 * MS, &mut out);
    }
    let before_end = out.len();
    pairer.finish(&mut txs);
    feed(&mut txs, &mut an, &mut out);
    an.finish(&mut out);
    assert_eq!(before_end, out.len(), "everything was reported before the end of input");
    assert_eq!(pairer.stats(), pairing::PairStats::default());
    check_seed(&out, 2, 4004.0, "twice (4.0 s of 4.0 s)");
}

#[test]
fn retry_on_next_nameserver_joins_the_walk_and_repeats_stay_apart() {
    let mut an = Analyzer::new();
    an.resolv_conf(&evidence(4242, &format!("{K8S_CONF}nameserver 10.0.2.54\n")));
    let mut v = Vec::new();
    for (n, t0) in [0u64, 20_000 * MS].into_iter().enumerate() {
        let port = 40000 + 100 * n as u16;
        for (i, s) in SEARCH.iter().take(3).enumerate() {
            v.push(cq(t0 + i as u64 * MS, port + i as u16, &format!("{BASE}.{s}"), A, Some((NX, MS / 2, 0))));
        }
        let name = format!("{BASE}.localdomain");
        v.push(cq(t0 + 3 * MS, port + 3, &name, A, None));
        let mut second = tx(t0 + 2003 * MS, &format!("10.0.1.5:{}", port + 4), "10.0.2.54:53", &name, A, None);
        second.observed = crate::analyze::Observed::Client;
        v.push(second);
        v.push(cq(t0 + 4003 * MS, port + 5, BASE, A, Some((NOERROR, MS, 1))));
    }
    let out = run(&mut an, v, true);
    let f = fanouts(&out);
    assert_eq!(f.len(), 2, "{out:#?}");
    for f in f {
        assert_eq!(f.attempts.len(), 6);
        assert!((f.wasted_ms - 4003.0).abs() < 2.0, "{}", f.wasted_ms);
        assert!(f.cause.contains("*.localdomain timed out twice (4.0 s of 4.0 s)"), "{}", f.cause);
    }
}

#[test]
fn exhausted_walk_is_reported_once_settled() {
    for with_conf in [true, false] {
        let mut an = Analyzer::new();
        if with_conf {
            an.resolv_conf(&evidence(4242, K8S_CONF));
        }
        let mut v = Vec::new();
        for (i, s) in SEARCH.iter().enumerate() {
            let name = format!("nosuch.{s}");
            let outcome = if i == 3 { None } else { Some((NX, MS / 2, 0)) };
            v.push(cq(i as u64 * MS, 40000 + i as u16, &name, A, outcome));
        }
        v.push(cq(2003 * MS, 40010, "nosuch", A, Some((NX, MS, 0))));
        let mut out = run(&mut an, v, false);
        an.expire(13_000 * MS, &mut out);
        let f = fanouts(&out);
        assert_eq!(f.len(), 1, "{out:#?}");
        assert_eq!(f[0].base_name, "nosuch");
        assert_eq!(f[0].answered_by, None);
        assert_eq!(f[0].attempts.len(), 5);
        assert!(f[0].cause.contains("no name answered"), "{}", f[0].cause);
        assert_eq!(f[0].timed_out_suffixes, ["localdomain"]);
        let mut rest = Vec::new();
        an.finish(&mut rest);
        assert!(rest.is_empty());
    }
}

#[test]
fn label_helpers() {
    assert_eq!(common_label_prefix("a.b.c", "a.b.d"), "a.b");
    assert_eq!(common_label_prefix("ab.c", "a.c"), "");
    assert!(ends_with_label("x.cluster.local", "cluster.local"));
    assert!(!ends_with_label("xcluster.local", "cluster.local"));
    assert_eq!(union_len([(0, 10), (5, 20), (30, 31)].into_iter()), 21);
}

/// Lower-cased names are shared per distinct name, and the table stays bounded.
#[test]
fn names_are_lowered_once_and_shared() {
    let mut n = Names::default();
    let (a, ah, af) = n.lower("Backend.Critical-App.svc.cluster.local.");
    let (b, bh, bf) = n.lower("backend.critical-app.svc.cluster.local");
    assert_eq!(&*a, "backend.critical-app.svc.cluster.local");
    assert!(Arc::ptr_eq(&a, &b), "one copy per distinct name");
    // The hashes the indexes use are the name's and its first label's.
    assert_eq!((ah, af), (bh, bf));
    assert_eq!((ah, af), (n.hash(&a), n.hash("backend")));
    assert_eq!(&*n.lower(".").0, "");
    for i in 0..MAX_NAMES + 10 {
        n.lower(&format!("host{i}.example"));
    }
    assert!(n.set.len() <= MAX_NAMES);
    // A name held elsewhere outlives the table's reset.
    assert_eq!(&*a, "backend.critical-app.svc.cluster.local");
}

/// With folding, the walks the condenser only counts reach it as
/// `FastWalk`s, each where its finding would have been, and it reports
/// exactly what it reports from the full findings (with resolv.conf
/// evidence and without, inferred).
#[test]
fn folded_walks_count_as_the_findings_they_replace() {
    use crate::analyze::condense::{CondenseConfig, Condenser};
    let mut txs = Vec::new();
    let mut t = 1_000 * MS;
    for (n, base) in ["api", "db.team", "cache.team.svc"].into_iter().enumerate() {
        for k in 0..3u16 {
            let mut port = 40_000 + 100 * n as u16 + 10 * k;
            for s in &SEARCH[..3] {
                txs.push(cq(t, port, &format!("{base}.{s}"), A, Some((NX, MS / 2, 0))));
                t += MS;
                port += 1;
            }
            txs.push(cq(t, port, base, A, Some((NOERROR, MS, 1))));
            t += 300 * MS;
        }
    }
    let slow_ns = CondenseConfig::default().slow_ns;
    for conf in [false, true] {
        let condensed = |fold: bool| {
            let mut an = Analyzer::with_config(AnalyzerConfig {
                fold_fast_ns: fold.then_some(slow_ns),
                ..AnalyzerConfig::default()
            });
            if conf {
                an.resolv_conf(&evidence(4242, K8S_CONF));
            }
            let out = run(&mut an, txs.clone(), true);
            let mut walks = std::mem::take(an.fast_walks_mut()).into_iter().peekable();
            let (mut c, mut shown) = (Condenser::new(CondenseConfig::default()), Vec::new());
            for (i, f) in out.into_iter().enumerate() {
                while let Some((_, w)) = walks.next_if(|(at, _)| *at <= i) {
                    c.push_fast(w);
                }
                assert!(!fold || !matches!(&f, Finding::SearchFanout(s) if !c.is_slow(s)), "{f:#?}");
                c.push(f, &mut shown);
            }
            walks.for_each(|(_, w)| c.push_fast(w));
            c.finish(&mut shown);
            (serde_json::to_string(&shown).unwrap(), c.stats())
        };
        let (full, folded) = (condensed(false), condensed(true));
        // Without resolv.conf a base's repeated lookups fold into one walk.
        assert_eq!(full.1.fast_walks, if conf { 9 } else { 3 }, "conf {conf}: {}", full.0);
        assert_eq!(full, folded, "conf {conf}");
    }
}
