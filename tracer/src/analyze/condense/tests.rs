use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::{
    analyze::findings::{Attempt, NameCount, NxdomainStorm, Party, UpstreamTimeout},
    event::Endpoint,
};

const MS: u64 = 1_000_000;
const BASE: &str = "api.example.com";
const SEARCH: [&str; 3] = ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"];

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint { ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, last)), port }
}

/// A walk of `base` through the three Kubernetes suffixes, each step `step_ms`
/// apart; `fail` overrides the outcome of one suffix (`(index, rcode, timed_out)`).
fn walk(ts: u64, pod: &str, base: &str, step_ms: f64, fail: Option<(usize, &str, bool)>) -> SearchFanout {
    let mut attempts = Vec::new();
    for (i, s) in SEARCH.iter().enumerate() {
        let (rcode, to) = match fail {
            Some((j, rc, to)) if j == i => (if to { None } else { Some(rc.to_owned()) }, to),
            _ => (Some("NXDOMAIN".to_owned()), false),
        };
        attempts.push(Attempt {
            qname: format!("{base}.{s}"),
            qtype: "A".into(),
            rcode,
            latency_ms: (!to).then_some(step_ms),
            timed_out: to,
            start_ms: step_ms * i as f64,
            retransmits: 0,
        });
    }
    attempts.push(Attempt {
        qname: base.into(),
        qtype: "A".into(),
        rcode: Some("NOERROR".into()),
        latency_ms: Some(step_ms),
        timed_out: false,
        start_ms: step_ms * 3.0,
        retransmits: 0,
    });
    let extra = if fail.is_some_and(|f| f.2) { 5000.0 } else { 0.0 };
    SearchFanout {
        ts_ns: ts,
        node: None,
        pod: Some(pod.into()),
        process: None,
        client: ep(20, 40000),
        server: ep(10, 53),
        base_name: base.into(),
        attempts,
        answered_by: Some(base.into()),
        answers: Vec::new(),
        total_ms: step_ms * 4.0 + extra,
        wasted_ms: step_ms * 3.0 + extra,
        ndots: Some(5),
        search: SEARCH.iter().map(|s| (*s).to_owned()).collect(),
        nameservers: Vec::new(),
        options: Vec::new(),
        resolv_conf_source: "observed",
        resolv_conf_path: None,
        resolv_conf_error: None,
        timed_out_suffixes: fail.filter(|f| f.2).map(|f| SEARCH[f.0].to_owned()).into_iter().collect(),
        forwarded_upstream: Vec::new(),
        cause: format!("{base} walked the search list"),
        advice: vec!["use a trailing dot".into()],
    }
}

fn upstream(ts: u64, pod: &str, upstream: &str) -> Finding {
    let party = |pod: Option<&str>, address: &str| Party {
        pod: pod.map(str::to_owned),
        process: None,
        address: address.into(),
    };
    Finding::UpstreamTimeout(UpstreamTimeout {
        ts_ns: ts,
        node: None,
        resolver: party(Some("kube-system/coredns"), "10.244.1.10:53"),
        upstream: upstream.into(),
        qname: "legacy.corp.example".into(),
        qtypes: vec!["A".into()],
        attempts: 2,
        servfail: 0,
        waited_ms: 5000.0,
        client: party(Some(pod), "10.244.1.20:40000"),
        client_queries: 1,
        cause: format!("forwarded to {upstream}, never answered"),
        advice: vec!["fix the upstream".into()],
    })
}

fn storm(ts: u64, pod: &str, name: &str) -> Finding {
    Finding::NxdomainStorm(NxdomainStorm {
        ts_ns: ts,
        pod: Some(pod.into()),
        client: pod.into(),
        nxdomain: 400,
        window_ms: 10_000.0,
        rate_per_s: 40.0,
        top_names: vec![NameCount { qname: format!("{name}.ns.svc.cluster.local"), count: 200 }],
        cause: format!("storm of {name}"),
        advice: vec!["fqdn".into()],
    })
}

fn kinds(out: &[Finding]) -> Vec<&'static str> {
    out.iter()
        .map(|f| match f {
            Finding::SearchFanout(_) => "search_fanout",
            Finding::UpstreamTimeout(_) => "upstream_timeout",
            Finding::NxdomainStorm(_) => "nxdomain_storm",
            Finding::SearchFanoutSummary(_) => "summary",
            Finding::Repeated(_) => "repeated",
        })
        .collect()
}

#[test]
fn fast_walks_are_counted_not_reported() {
    let mut c = Condenser::new(CondenseConfig::default());
    let server = ep(10, 53);
    let mut out = Vec::new();
    for i in 0..1000u64 {
        // Two pods, one base each; the resolver also answers 4000 other queries.
        let pod = if i % 2 == 0 { "shop/web-1" } else { "shop/web-2" };
        c.push(Finding::SearchFanout(walk(i * MS, pod, BASE, 1.0, None)), &mut out);
    }
    c.count_queries(server.ip, 8000);
    assert!(out.is_empty(), "{out:#?}");
    c.finish(&mut out);
    assert_eq!(kinds(&out), ["summary"]);
    let Finding::SearchFanoutSummary(s) = &out[0] else { unreachable!() };
    assert_eq!(s.lookups, 1000);
    assert_eq!(s.pods, 2);
    assert_eq!(s.groups, 2);
    assert!((s.extra_queries_per_lookup - 3.0).abs() < 1e-9, "{s:#?}");
    // 3000 extra queries of 8000 the resolver received.
    assert!((s.share_of_resolver_queries - 0.375).abs() < 1e-3, "{s:#?}");
    assert!((s.wasted_p50_ms - 3.0).abs() < 0.4, "{}", s.wasted_p50_ms);
    assert!((s.wasted_p99_ms - 3.0).abs() < 0.4, "{}", s.wasted_p99_ms);
    assert_eq!(s.top.len(), 2);
    assert_eq!(s.top[0].lookups, 500);
    assert_eq!(s.top[0].base_name, BASE);
    assert!(!s.advice.is_empty());
    assert_eq!(c.stats().fast_walks, 1000);
}

#[test]
fn slow_walk_is_reported_in_full() {
    let mut c = Condenser::new(CondenseConfig::default());
    let mut out = Vec::new();
    // 4 × 30 ms = 120 ms ≥ 100 ms.
    c.push(Finding::SearchFanout(walk(0, "shop/web-1", BASE, 30.0, None)), &mut out);
    assert_eq!(kinds(&out), ["search_fanout"]);
    // Just under the threshold: counted.
    c.push(Finding::SearchFanout(walk(MS, "shop/web-1", "other.example.com", 24.0, None)), &mut out);
    assert_eq!(out.len(), 1);
    // --slow 50ms makes it slow.
    let mut c = Condenser::new(CondenseConfig { slow_ns: 50 * MS, ..CondenseConfig::default() });
    c.push(Finding::SearchFanout(walk(MS, "shop/web-1", "other.example.com", 24.0, None)), &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn fast_walk_with_servfail_or_timeout_is_reported() {
    let mut c = Condenser::new(CondenseConfig::default());
    let mut out = Vec::new();
    c.push(Finding::SearchFanout(walk(0, "shop/web-1", BASE, 1.0, Some((1, "SERVFAIL", false)))), &mut out);
    assert_eq!(kinds(&out), ["search_fanout"]);
    let mut timed_out = walk(MS, "shop/web-2", "b.example.com", 1.0, Some((2, "", true)));
    // Even if the walk's own total were small.
    timed_out.total_ms = 4.0;
    c.push(Finding::SearchFanout(timed_out), &mut out);
    assert_eq!(kinds(&out), ["search_fanout", "search_fanout"]);
    assert_eq!(c.stats().fast_walks, 0);
}

#[test]
fn repeats_of_one_cause_across_pods_are_folded() {
    let cfg = CondenseConfig { report_every_ns: 10_000 * MS, ..CondenseConfig::default() };
    let mut c = Condenser::new(cfg);
    let mut out = Vec::new();
    for i in 0..50u64 {
        let pod = format!("ns{}/app-{}", i % 5, i % 10);
        let base = format!("name{i}.example.com");
        // Every walk times out on cluster.local at the same resolver.
        c.push(Finding::SearchFanout(walk(i * 100 * MS, &pod, &base, 1.0, Some((2, "", true)))), &mut out);
        c.tick(i * 100 * MS, &mut out);
    }
    assert_eq!(kinds(&out), ["search_fanout"], "the first in full, the rest held");
    c.tick(20_000 * MS, &mut out);
    assert_eq!(kinds(&out), ["search_fanout", "repeated"]);
    let Finding::Repeated(r) = &out[1] else { unreachable!() };
    assert_eq!(r.of_kind, "search_fanout");
    assert_eq!(r.count, 50);
    assert_eq!(r.new, 49);
    assert_eq!(r.pods, 10);
    assert_eq!(r.top_pods.len(), 10);
    assert_eq!(r.top_pods[0].count, 5);
    assert!(r.cause_key.contains("*.cluster.local"), "{}", r.cause_key);
    assert_eq!(r.first_ts_ns, 0);
    assert!((r.client_time_lost_ms - 50.0 * 5003.0).abs() < 1.0, "{}", r.client_time_lost_ms);
    // Nothing new: no update.
    c.tick(40_000 * MS, &mut out);
    c.finish(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(c.stats().repeats_folded, 49);
}

#[test]
fn different_causes_are_each_reported() {
    let mut c = Condenser::new(CondenseConfig::default());
    let mut out = Vec::new();
    c.push(Finding::SearchFanout(walk(0, "a/x", BASE, 1.0, Some((2, "", true)))), &mut out);
    c.push(Finding::SearchFanout(walk(MS, "a/x", BASE, 1.0, Some((1, "", true)))), &mut out);
    c.push(upstream(2 * MS, "a/x", "10.0.0.53:53"), &mut out);
    c.push(upstream(3 * MS, "a/y", "10.0.0.54:53"), &mut out);
    c.push(upstream(4 * MS, "a/z", "10.0.0.53:53"), &mut out);
    c.push(storm(5 * MS, "a/x", "missing"), &mut out);
    c.push(storm(6 * MS, "a/y", "missing"), &mut out);
    c.push(storm(7 * MS, "a/y", "other"), &mut out);
    assert_eq!(
        kinds(&out),
        ["search_fanout", "search_fanout", "upstream_timeout", "upstream_timeout", "nxdomain_storm", "nxdomain_storm"]
    );
    c.finish(&mut out);
    let reps: Vec<&Repeated> = out
        .iter()
        .filter_map(|f| match f {
            Finding::Repeated(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reps.len(), 2, "{reps:#?}");
    assert!(reps.iter().any(|r| r.of_kind == "upstream_timeout" && r.count == 2 && r.pods == 2));
    assert!(reps.iter().any(|r| r.of_kind == "nxdomain_storm" && r.count == 2));
}

#[test]
fn periodic_summaries_while_live() {
    let cfg = CondenseConfig { report_every_ns: 10_000 * MS, ..CondenseConfig::default() };
    let mut c = Condenser::new(cfg);
    let mut out = Vec::new();
    for i in 0..300u64 {
        c.push(Finding::SearchFanout(walk(i * 100 * MS, "a/x", BASE, 1.0, None)), &mut out);
        c.tick(i * 100 * MS, &mut out);
    }
    // 30 s of walks: an update every 10 s.
    let sums: Vec<&FanoutSummary> = out
        .iter()
        .filter_map(|f| match f {
            Finding::SearchFanoutSummary(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sums.len(), 2, "{sums:#?}");
    assert_eq!(sums[0].lookups, sums[0].new_lookups);
    assert!(sums[1].lookups > sums[0].lookups);
    c.finish(&mut out);
    let Some(Finding::SearchFanoutSummary(last)) = out.last() else { panic!("{out:#?}") };
    assert_eq!(last.lookups, 300);
}

#[test]
fn memory_is_bounded_and_evictions_counted() {
    let cfg = CondenseConfig { max_groups: 16, max_causes: 8, max_pods_per_cause: 4, ..CondenseConfig::default() };
    let mut c = Condenser::new(cfg);
    let mut out = Vec::new();
    for i in 0..1000u64 {
        c.push(Finding::SearchFanout(walk(i * MS, &format!("ns/p{i}"), BASE, 1.0, None)), &mut out);
        c.push(upstream(i * MS, &format!("ns/p{i}"), &format!("10.0.{}.{}:53", i / 250, i % 250)), &mut out);
        c.push(upstream(i * MS, &format!("ns/p{i}"), "10.9.9.9:53"), &mut out);
    }
    assert!(c.groups.map.len() <= 16 && c.groups.order.len() <= 16);
    assert!(c.causes.map.len() <= 8);
    let s = c.stats();
    assert_eq!(s.groups_evicted, 1000 - 16);
    assert!(s.causes_evicted > 900, "{s:?}");
    c.finish(&mut out);
    let Some(sum) = out.iter().find_map(|f| match f {
        Finding::SearchFanoutSummary(s) => Some(s),
        _ => None,
    }) else {
        panic!("no summary")
    };
    // Evicted groups stay in the totals.
    assert_eq!(sum.lookups, 1000);
    assert_eq!(sum.groups, 16);
    assert_eq!(sum.groups_evicted, 1000 - 16);
    for f in &out {
        if let Finding::Repeated(r) = f {
            assert!(r.top_pods.len() <= 4);
            assert_eq!(r.pods, r.top_pods.len() as u64 + r.other_pods);
        }
    }
}

#[test]
fn histogram_quantiles() {
    let mut h = Hist::default();
    for i in 1..=100u64 {
        h.add(i * MS);
    }
    let p50 = h.quantile_ms(0.5);
    let p99 = h.quantile_ms(0.99);
    assert!((p50 - 50.0).abs() / 50.0 < 0.1, "{p50}");
    assert!((p99 - 99.0).abs() / 99.0 < 0.1, "{p99}");
    assert!(Hist::default().quantile_ms(0.5).abs() < f64::EPSILON);
}

#[test]
fn one_pods_own_few_repeats_stay_in_full() {
    // The demo: getent then curl in one pod, both waiting on *.localdomain.
    let mut c = Condenser::new(CondenseConfig::default());
    let mut out = Vec::new();
    let proc_ = |pid: u32, comm: &str| crate::event::Process { pid, tid: pid, comm: comm.into(), thread: comm.into() };
    for (i, (pid, comm)) in
        [(10, "getent"), (11, "curl"), (11, "curl"), (12, "wget"), (13, "python"), (14, "x")].into_iter().enumerate()
    {
        let mut w = walk(i as u64 * MS, "critical-app/client", BASE, 1.0, Some((2, "", true)));
        w.process = Some(proc_(pid, comm));
        c.push(Finding::SearchFanout(w), &mut out);
    }
    // getent, curl, wget in full; curl again and the fourth process counted.
    assert_eq!(kinds(&out), ["search_fanout"; 3]);
    // A second pod: folded at once.
    c.push(Finding::SearchFanout(walk(9 * MS, "critical-app/other", BASE, 1.0, Some((2, "", true)))), &mut out);
    assert_eq!(out.len(), 3);
    c.finish(&mut out);
    let Some(Finding::Repeated(r)) = out.last() else { panic!("{out:#?}") };
    assert_eq!((r.count, r.new, r.pods), (7, 4, 2));
}
