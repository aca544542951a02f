//! Tests of the metrics registry: values, caps, escapes, and the exposition
//! contract against what the hand-written registry wrote.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use super::{bpf::kernel_name_matches, *};
use crate::{
    analyze::Observed,
    enrich::PodRef,
    event::{Endpoint, Transport},
    testkit::exposition::{Sample, parse_exposition},
};

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef::new(ns, name, None)
}

pub(super) fn tx(pod: Option<PodRef>, qtype: u16, rcode: Option<u16>, latency_ns: Option<u64>) -> Transaction {
    let ep = Endpoint { ip: IpAddr::from([10, 0, 0, 1]), port: 53 };
    Transaction {
        ts_ns: 0,
        end_ns: latency_ns,
        node: None,
        netns: 0,
        cgroup_id: 0,
        process: None,
        server_process: None,
        client: ep,
        server: ep,
        client_pod: pod,
        server_pod: None,
        resolver: None,
        resolver_client: None,
        resolver_pod: None,
        transport: Transport::Udp,
        id: 1,
        qname: "example.com".into(),
        qtype,
        rcode,
        answers: Vec::new(),
        latency_ns,
        timed_out: rcode.is_none(),
        retransmits: 0,
        duplicate_answers: 0,
        observed: Observed::Client,
    }
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}")).value
}

/// Our validator, and promtool's when it is installed.
fn check(text: &str) -> Vec<Sample> {
    let samples = parse_exposition(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    promtool_check(text);
    samples
}

fn promtool_check(text: &str) {
    use std::{io::Write as _, process::Stdio};
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: promtool not on PATH; only our validator checked the output");
        return;
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn full_registry() -> Metrics {
    let m = Metrics::new(MetricsConfig { node: "node-a".into(), ..MetricsConfig::default() });
    let web = pod("shop", "web-1");
    m.dns_transaction(&tx(Some(web.clone()), 1, Some(0), Some(2_000_000)));
    m.dns_transaction(&tx(Some(web.clone()), 1, Some(0), Some(30_000_000)));
    m.dns_transaction(&tx(Some(web.clone()), 28, Some(3), Some(1_000_000)));
    m.dns_transaction(&tx(Some(web), 1, None, None));
    m.dns_transaction(&tx(None, 65_000, Some(2), Some(20_000_000_000)));
    m.drop_reason("NETFILTER_DROP", Some(("shop", "web-1")));
    m.drop_reason("NETFILTER_DROP", Some(("shop", "web-1")));
    m.drop_reason("", None);
    m.conn_failure("refused", Some(("shop", "web-1")));
    m.fabric_loss("node-a", "node-b", 7);
    m.fabric_loss("node-a", "node-b", 3);
    m.set_lost_events(5, 2, 1);
    m.set_lost_events(4, 3, 1);
    m.set_program_stats(&[ProgramStat {
        name: "ktrace_cgroup_egress".into(),
        run_count: 10,
        run_time_ns: 1_500_000_000,
    }]);
    m.set_gauge("ktrace_history_bytes", "Bytes held in the replay history.", 1024.0);
    m.set_gauge("ktrace_subscribers", "Connected stream subscribers.", 2.0);
    m
}

/// One input that touches every family, every cap and the escapes: the
/// exposition it gives is compared with `exposition_before.prom`.
fn contract_input() -> Metrics {
    let m = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "node-\"a\"".into() });
    let qtypes = [1, 28, 5, 33, 12, 255, 65, 64, 15, 2, 6, 16, 99, 65_000];
    let rcodes = [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), Some(9), Some(16), None];
    let pods = [("shop", "web-1"), ("shop", "web-2"), ("kube-system", "coredns-0"), ("shop", "web-3"), ("x", "y")];
    for (i, (ns, p)) in pods.iter().enumerate() {
        for (j, q) in qtypes.iter().enumerate() {
            let r = rcodes[(i + j) % rcodes.len()];
            let lat = [1_000_000_u64, 5_000_000, 5_000_001, 250_000_000, 20_000_000_000][(i + j) % 5];
            m.dns_transaction(&tx(Some(pod(ns, p)), *q, r, r.map(|_| lat)));
        }
    }
    m.dns_transaction(&tx(None, 1, Some(0), Some(3_000_000)));
    m.dns_transaction(&tx(None, 1, None, None));
    let f = |kind: &str, pod: Option<&str>, new: u64| {
        use crate::analyze::{condense::Repeated, findings::NxdomainStorm};
        if kind == "nxdomain_storm" {
            Finding::NxdomainStorm(NxdomainStorm {
                ts_ns: 0,
                pod: pod.map(str::to_owned),
                client: "10.0.0.1".into(),
                nxdomain: 300,
                window_ms: 10_000.0,
                rate_per_s: 30.0,
                top_names: Vec::new(),
                cause: String::new(),
                advice: Vec::new(),
            })
        } else {
            let r = Repeated {
                ts_ns: 0,
                of_kind: kind.to_owned(),
                cause_key: String::new(),
                first_ts_ns: 0,
                first_cause: String::new(),
                last_ts_ns: 0,
                count: new,
                new,
                pods: 0,
                other_pods: 0,
                top_pods: Vec::new(),
                client_time_lost_ms: 0.0,
                cause: String::new(),
            };
            Finding::Repeated(r)
        }
    };
    m.finding(&f("nxdomain_storm", Some("shop/web-1"), 1));
    m.finding(&f("nxdomain_storm", None, 1));
    m.finding(&f("upstream_timeout", Some("shop/web-2"), 4));
    m.finding(&f("search_fanout", Some("kube-system/coredns-0"), 0));
    for (i, (ns, p)) in pods.iter().enumerate() {
        for r in ["NETFILTER_DROP", "", "TCP_INVALID_SEQUENCE", "NO_SOCKET"].iter().take(i + 1) {
            m.drop_reason(r, Some((ns, p)));
        }
        for k in ["refused", "reset", "syn_timeout", "timeout"].iter().take(i + 1) {
            m.conn_failure(k, Some((ns, p)));
        }
    }
    for i in 0..40 {
        m.conn_failure(&format!("kind{i}"), None);
        m.drop_reason(&format!("REASON_{i}"), None);
    }
    for i in 0..300 {
        m.fabric_loss(&format!("n{}", i % 290), "node-b", i);
    }
    m.conn_failure("refused", Some(("ns", "p\"o\\d\nx")));
    m.set_lost_events(5, 2, 1);
    m.set_lost_events(4, 3, 1);
    m.set_program_stats(&[
        ProgramStat { name: "ktrace_cgroup_egress".into(), run_count: 10, run_time_ns: 1_500_000_000 },
        ProgramStat { name: "ktrace_cgroup_ingress".into(), run_count: 3, run_time_ns: 2_000 },
    ]);
    m.set_gauge("ktrace_history_bytes", "Bytes held in the replay history.", 1024.0);
    m.set_gauge("ktrace_subscribers", "Connected stream subscribers.", 2.0);
    m.set_gauge("ktrace_weird", "Help with \\ backslash\nand newline.", 0.5);
    m
}

/// Every sample of an exposition: (family, labels) → value.
pub(super) type Samples = BTreeMap<(String, Vec<(String, String)>), String>;

/// HELP and TYPE per family, and every sample with its value: what an
/// exposition says, whatever the order of families and series in it.
pub(super) fn contract(text: &str) -> (BTreeMap<String, String>, Samples) {
    let mut headers = BTreeMap::new();
    for l in text.lines() {
        for kw in ["# HELP ", "# TYPE "] {
            if let Some(rest) = l.strip_prefix(kw) {
                let (name, v) = rest.split_once(' ').unwrap_or((rest, ""));
                headers.insert(format!("{kw}{name}"), v.to_owned());
            }
        }
    }
    let samples = parse_exposition(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|s| {
            // Values as numbers: `1.0` and `1` are the same sample.
            let v = if s.value.is_nan() { "NaN".to_owned() } else { format!("{:?}", s.value) };
            ((s.name, s.labels.into_iter().collect()), v)
        })
        .collect();
    (headers, samples)
}

#[test]
fn exposition_matches_the_hand_written_registry() {
    let before = include_str!("exposition_before.prom");
    let now = contract_input().render();
    check(&now);
    let (h0, s0) = contract(before);
    let (h1, s1) = contract(&now);
    assert_eq!(h0, h1, "family names, help texts and types are a public contract");
    for (k, v) in &s0 {
        assert_eq!(s1.get(k), Some(v), "sample {k:?}");
    }
    for k in s1.keys() {
        assert!(s0.contains_key(k), "new sample {k:?}");
    }
    assert!(s0.len() > 300, "the input covers the caps: {} samples", s0.len());
}

#[test]
fn a_remote_clients_lookup_seen_only_at_the_resolver_is_counted_at_the_clients_node() {
    let m = Metrics::new(MetricsConfig::default());
    let client = PodRef::new("shop", "web-1", Some(Arc::from("node-b")));
    let mut t = tx(Some(client), 1, Some(0), Some(1_000_000));
    t.node = Some(Arc::from("node-a"));
    t.observed = Observed::Server;
    m.dns_transaction(&t);
    let q = [("namespace", "shop"), ("pod", "web-1"), ("qtype", "A"), ("rcode", "NOERROR")];
    let s = check(&m.render());
    assert!(find(&s, "ktrace_dns_requests_total", &q).is_none(), "counted at the client's node only");
    // The client's own node counts it; so does the resolver's node when the client is local.
    t.node = Some(Arc::from("node-b"));
    m.dns_transaction(&t);
    t.observed = Observed::Both;
    t.node = Some(Arc::from("node-a"));
    m.dns_transaction(&t);
    let s = check(&m.render());
    assert!((value(&s, "ktrace_dns_requests_total", &q) - 2.0).abs() < 1e-9);
}

#[test]
fn render_parses_back() {
    let m = full_registry();
    let text = m.render();
    let s = check(&text);
    let web = [("namespace", "shop"), ("pod", "web-1")];
    let q = |qtype, rcode| [web[0], web[1], ("qtype", qtype), ("rcode", rcode)];
    assert!((value(&s, "ktrace_dns_requests_total", &q("A", "NOERROR")) - 2.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_requests_total", &q("AAAA", "NXDOMAIN")) - 1.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_requests_total", &q("A", RCODE_TIMEOUT)) - 1.0).abs() < 1e-9);
    let unknown = [("namespace", ""), ("pod", ""), ("qtype", OTHER), ("rcode", "SERVFAIL")];
    assert!((value(&s, "ktrace_dns_requests_total", &unknown) - 1.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_timeouts_total", &web) - 1.0).abs() < 1e-9);
    let shop = [("namespace", "shop")];
    assert!((value(&s, "ktrace_dns_latency_seconds_count", &shop) - 3.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_sum", &shop) - 0.033).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.001")]) - 1.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.005")]) - 2.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.025")]) - 2.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[shop[0], ("le", "0.05")]) - 3.0).abs() < 1e-9);
    // 20 s is past the last bound: only in +Inf.
    let none = [("namespace", "")];
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[none[0], ("le", "10")])).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_latency_seconds_bucket", &[none[0], ("le", "+Inf")]) - 1.0).abs() < 1e-9);
    let drop = [("reason", "NETFILTER_DROP"), web[0], web[1]];
    assert!((value(&s, "ktrace_drops_total", &drop) - 2.0).abs() < 1e-9);
    assert!(
        (value(&s, "ktrace_drops_total", &[("reason", "unknown"), ("namespace", ""), ("pod", "")]) - 1.0).abs() < 1e-9
    );
    assert!((value(&s, "ktrace_conn_failures_total", &[("kind", "refused"), web[0], web[1]]) - 1.0).abs() < 1e-9);
    let nodes = [("from_node", "node-a"), ("to_node", "node-b")];
    assert!((value(&s, "ktrace_fabric_loss_packets_total", &nodes) - 10.0).abs() < 1e-9);
    // Running totals never go down.
    assert!((value(&s, "ktrace_lost_events_total", &[("where", "kernel")]) - 5.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_lost_events_total", &[("where", "history")]) - 3.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_lost_events_total", &[("where", "subscriber")]) - 1.0).abs() < 1e-9);
    let prog = [("program", "ktrace_cgroup_egress")];
    assert!((value(&s, "ktrace_bpf_program_run_seconds_total", &prog) - 1.5).abs() < 1e-9);
    assert!((value(&s, "ktrace_bpf_program_runs_total", &prog) - 10.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_history_bytes", &[]) - 1024.0).abs() < 1e-9);
    let info = [("node", "node-a"), ("version", env!("CARGO_PKG_VERSION"))];
    assert!((value(&s, "ktrace_agent_info", &info) - 1.0).abs() < 1e-9);

    // Deterministic: same state, same bytes; families sorted.
    assert_eq!(text, m.render());
    let types: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
    let mut sorted = types.clone();
    sorted.sort_unstable();
    assert_eq!(types, sorted);
}

#[test]
fn empty_registry_is_valid() {
    let m = Metrics::new(MetricsConfig::default());
    let text = m.render();
    let s = check(&text);
    assert!((value(&s, "ktrace_lost_events_total", &[("where", "kernel")])).abs() < f64::EPSILON);
    let types: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
    assert_eq!(types, FAMILIES, "FAMILIES lists every fixed family, sorted");
}

#[test]
fn findings_are_counted_by_kind_and_pod() {
    use crate::analyze::findings::NxdomainStorm;
    let m = Metrics::new(MetricsConfig::default());
    let storm = |pod: Option<&str>| {
        Finding::NxdomainStorm(NxdomainStorm {
            ts_ns: 0,
            pod: pod.map(str::to_owned),
            client: "10.0.0.1".into(),
            nxdomain: 300,
            window_ms: 10_000.0,
            rate_per_s: 30.0,
            top_names: Vec::new(),
            cause: String::new(),
            advice: Vec::new(),
        })
    };
    m.finding(&storm(Some("shop/web-1")));
    m.finding(&storm(Some("shop/web-1")));
    m.finding(&storm(None));
    let s = check(&m.render());
    let k = ("kind", "nxdomain_storm");
    assert!((value(&s, "ktrace_dns_findings_total", &[k, ("namespace", "shop"), ("pod", "web-1")]) - 2.0).abs() < 1e-9);
    assert!((value(&s, "ktrace_dns_findings_total", &[k, ("namespace", ""), ("pod", "")]) - 1.0).abs() < 1e-9);
}

#[test]
fn cardinality_is_folded() {
    let m = Metrics::new(MetricsConfig { top_pods: 2, max_namespaces: 2, node: String::new() });
    for (ns, p) in [("a", "p1"), ("a", "p2"), ("a", "p3"), ("b", "p1"), ("c", "p1"), ("a", "p1")] {
        m.dns_transaction(&tx(Some(pod(ns, p)), 1, Some(0), Some(1_000_000)));
        m.conn_failure("refused", Some((ns, p)));
    }
    // Many distinct kinds: capped too.
    for i in 0..100 {
        m.conn_failure(&format!("kind{i}"), None);
        m.drop_reason(&format!("REASON_{i}"), None);
        m.fabric_loss(&format!("n{i}"), "x", 1);
    }
    let s = check(&m.render());
    let req = |ns, p| {
        value(&s, "ktrace_dns_requests_total", &[("namespace", ns), ("pod", p), ("qtype", "A"), ("rcode", "NOERROR")])
    };
    assert!((req("a", "p1") - 2.0).abs() < 1e-9, "admitted pods keep counting");
    assert!((req("a", "p2") - 1.0).abs() < 1e-9);
    assert!((req("a", OTHER) - 1.0).abs() < 1e-9, "third pod folded, namespace kept");
    assert!((req("b", OTHER) - 1.0).abs() < 1e-9, "pod cap is per family, not per namespace");
    assert!((req(OTHER, OTHER) - 1.0).abs() < 1e-9, "third namespace folded");
    let requests: Vec<_> = s.iter().filter(|x| x.name == "ktrace_dns_requests_total").collect();
    assert_eq!(requests.len(), 5);
    let mut lat: Vec<_> = s
        .iter()
        .filter(|x| x.name == "ktrace_dns_latency_seconds_count")
        .map(|x| x.labels["namespace"].as_str())
        .collect();
    // Series within a family come in no particular order.
    lat.sort_unstable();
    assert_eq!(lat, ["_other", "a", "b"]);
    let kinds: HashSet<_> =
        s.iter().filter(|x| x.name == "ktrace_conn_failures_total").map(|x| x.labels["kind"].clone()).collect();
    assert_eq!(kinds.len(), MAX_CONN_KINDS + 1);
    assert!(kinds.contains(OTHER));
    let reasons = s.iter().filter(|x| x.name == "ktrace_drops_total").count();
    assert_eq!(reasons, 100, "under the reason cap");
    let pairs = s.iter().filter(|x| x.name == "ktrace_fabric_loss_packets_total").count();
    assert_eq!(pairs, 100);
}

#[test]
fn series_are_capped_per_family() {
    let m = Metrics::new(MetricsConfig { top_pods: 2 * MAX_SERIES, max_namespaces: 1, node: String::new() });
    for i in 0..MAX_SERIES + 10 {
        m.dns_transaction(&tx(Some(pod("ns", &format!("p{i}"))), 1, Some(16), Some(1)));
    }
    let s = check(&m.render());
    let requests: Vec<_> = s.iter().filter(|x| x.name == "ktrace_dns_requests_total").collect();
    assert_eq!(requests.len(), MAX_SERIES + 1);
    let all_other = [("namespace", OTHER), ("pod", OTHER), ("qtype", OTHER), ("rcode", OTHER)];
    assert!((value(&s, "ktrace_dns_requests_total", &all_other) - 10.0).abs() < 1e-9);
    // BADVERS is not one of the named rcodes.
    assert!(
        find(&s, "ktrace_dns_requests_total", &[("namespace", "ns"), ("pod", "p0"), ("qtype", "A"), ("rcode", OTHER)])
            .is_some()
    );
}

#[test]
fn labels_and_help_are_escaped() {
    let m = Metrics::new(MetricsConfig { node: "a\"b\\c\nd".into(), ..MetricsConfig::default() });
    let weird = "p\"o\\d\nx";
    m.conn_failure("refused", Some(("ns", weird)));
    m.set_gauge("ktrace_weird", "Help with \\ backslash\nand newline.", 1.0);
    let text = m.render();
    assert!(text.contains(r#"pod="p\"o\\d\nx""#), "{text}");
    assert!(text.contains(r"# HELP ktrace_weird Help with \\ backslash\nand newline."), "{text}");
    let s = check(&text);
    assert!(
        find(&s, "ktrace_conn_failures_total", &[("kind", "refused"), ("namespace", "ns"), ("pod", weird)]).is_some()
    );
    assert!(find(&s, "ktrace_agent_info", &[("node", "a\"b\\c\nd"), ("version", env!("CARGO_PKG_VERSION"))]).is_some());
}

#[test]
fn gauges_are_bounded_and_cannot_shadow_families() {
    let m = Metrics::new(MetricsConfig::default());
    m.set_gauge("ktrace_dns_requests_total", "Clash.", 1.0);
    m.set_gauge("ktrace_dns_latency_seconds_bucket", "Clash.", 1.0);
    m.set_gauge("bad name", "Invalid.", 1.0);
    m.set_gauge("ktrace_ok", "Fine.", f64::NAN);
    let text = m.render();
    let s = check(&text);
    assert!(!text.contains("Clash") && !text.contains("bad name"));
    assert!(value(&s, "ktrace_ok", &[]).is_nan());
    let names: &[&'static str] = &[
        "g00", "g01", "g02", "g03", "g04", "g05", "g06", "g07", "g08", "g09", "g10", "g11", "g12", "g13", "g14", "g15",
        "g16", "g17", "g18", "g19", "g20", "g21", "g22", "g23", "g24", "g25", "g26", "g27", "g28", "g29", "g30", "g31",
        "g32", "g33", "g34", "g35", "g36", "g37", "g38", "g39", "g40", "g41", "g42", "g43", "g44", "g45", "g46", "g47",
        "g48", "g49", "g50", "g51", "g52", "g53", "g54", "g55", "g56", "g57", "g58", "g59", "g60", "g61", "g62", "g63",
        "g64", "g65", "g66",
    ];
    for n in names {
        m.set_gauge(n, "Many.", 1.0);
    }
    let s = check(&m.render());
    let gauges = s.iter().filter(|x| x.name.starts_with('g')).count();
    assert_eq!(gauges, MAX_GAUGES - 1, "ktrace_ok holds one slot");
}

#[test]
fn histogram_invariants() {
    let m = Metrics::new(MetricsConfig::default());
    let ns = pod("ns", "p");
    // Exactly on each bound, just above it, and beyond the last.
    for b in DNS_LATENCY_BUCKETS {
        let at = (b * 1e9).round() as u64;
        m.dns_transaction(&tx(Some(ns.clone()), 1, Some(0), Some(at)));
        m.dns_transaction(&tx(Some(ns.clone()), 1, Some(0), Some(at + 1)));
    }
    let s = check(&m.render());
    let buckets: Vec<(String, f64)> = s
        .iter()
        .filter(|x| x.name == "ktrace_dns_latency_seconds_bucket")
        .map(|x| (x.labels["le"].clone(), x.value))
        .collect();
    assert_eq!(buckets.len(), DNS_LATENCY_BUCKETS.len() + 1);
    for (i, (le, v)) in buckets.iter().enumerate() {
        // Bucket i holds its own bound and everything below: 2 per lower bound, plus 1.
        let want = if i < DNS_LATENCY_BUCKETS.len() { 2 * i + 1 } else { 2 * DNS_LATENCY_BUCKETS.len() };
        assert!((v - want as f64).abs() < 1e-9, "le={le}: {v} != {want}");
    }
    assert_eq!(buckets.last().map(|b| b.0.as_str()), Some("+Inf"));
    let count = value(&s, "ktrace_dns_latency_seconds_count", &[("namespace", "ns")]);
    assert!((count - 24.0).abs() < 1e-9);
}

#[test]
fn kernel_names_are_truncated() {
    assert!(kernel_name_matches("ktrace_cgroup_egress", b"ktrace_cgroup_e"));
    assert!(kernel_name_matches("short", b"short"));
    assert!(!kernel_name_matches("short", b"shorter"));
    assert!(!kernel_name_matches("x", b""));
}

#[test]
fn bpf_helpers_do_not_fail_without_privileges() {
    // Root or not, these must return quietly.
    let fd = enable_bpf_stats();
    let stats = bpf_program_stats(&["ktrace_no_such_program_name"]);
    assert!(stats.is_empty());
    drop(fd);
}

#[test]
fn served_as_the_format_the_encoder_writes() {
    assert_eq!(crate::agent::http::METRICS_CONTENT_TYPE, prometheus_text::CONTENT_TYPE);
}

/// The agent's path (handles cached per client pod) counts exactly what the
/// direct path counts, caps, folds and skips included, also when the cache
/// starts afresh past its pod bound.
#[test]
fn cached_handles_count_like_the_direct_path() {
    let direct = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "n".into() });
    let cached = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "n".into() });
    let mut cache = DnsSeries::default();
    let mut both = |t: &Transaction| {
        direct.dns_transaction(t);
        cached.dns_transaction_cached(&mut cache, t);
    };
    let qtypes = [1, 28, 5, 33, 12, 255, 65, 64, 15, 2, 6, 16, 99, 65_000];
    let rcodes = [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), Some(9), Some(16), None];
    let pods = [("shop", "web-1"), ("shop", "web-2"), ("kube-system", "coredns-0"), ("shop", "web-3"), ("x", "y")];
    for round in 0..3 {
        for (i, (ns, p)) in pods.iter().enumerate() {
            for (j, q) in qtypes.iter().enumerate() {
                let r = rcodes[(i + j + round) % rcodes.len()];
                let lat = [1_000_000_u64, 5_000_000, 5_000_001, 250_000_000, 20_000_000_000][(i + j) % 5];
                both(&tx(Some(pod(ns, p)), *q, r, r.map(|_| lat)));
            }
        }
        both(&tx(None, 1, Some(0), Some(3_000_000)));
        both(&tx(None, 1, None, None));
    }
    // Seen only at the resolver, client on another node: not counted here.
    let mut remote = tx(Some(PodRef::new("shop", "web-1", Some("other".into()))), 1, Some(0), Some(1));
    remote.node = Some("n".into());
    remote.observed = Observed::Server;
    both(&remote);
    // Past the series bound and the cache's pod bound.
    for i in 0..MAX_SERIES + 10 {
        both(&tx(Some(pod("many", &format!("p{i}"))), 1, Some(0), Some(1)));
    }
    assert!(cache.by_pod.len() <= DnsSeries::MAX_PODS);
    let lines = |m: &Metrics| {
        let mut v: Vec<String> = m.render().lines().map(str::to_owned).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(lines(&direct), lines(&cached));
}

/// Drops and connection failures through cached handles count what the
/// direct path counts: reasons and kinds past their caps, pods past theirs,
/// no pod, an empty reason name, and more series than the cache keeps.
#[test]
fn cached_drop_and_conn_handles_count_like_the_direct_path() {
    let direct = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "n".into() });
    let cached = Metrics::new(MetricsConfig { top_pods: 3, max_namespaces: 2, node: "n".into() });
    let mut cache = EventSeries::default();
    let pods = [
        None,
        Some(pod("shop", "web-1")),
        Some(pod("shop", "web-2")),
        Some(pod("kube-system", "dns")),
        Some(pod("shop", "web-3")),
        Some(pod("x", "y")),
    ];
    let kinds = ["refused", "reset", "syn_retransmit", "retransmit"];
    for round in 0..3 {
        for (i, p) in pods.iter().enumerate() {
            let pr = p.as_ref().map(|p| (&*p.namespace, &*p.name));
            for code in 0..(MAX_REASONS as u32 + 5) {
                if !(code as usize + i + round).is_multiple_of(7) {
                    continue;
                }
                let name = if code == 3 { String::new() } else { format!("REASON_{code}") };
                direct.drop_reason(&name, pr);
                cached.drop_reason_cached(&mut cache, code, &name, p.as_ref(), 1);
            }
            for k in kinds {
                direct.conn_failure(k, pr);
                cached.conn_failure_cached(&mut cache, k, p.as_ref());
            }
        }
    }
    for i in 0..EventSeries::MAX + 10 {
        let p = pod("many", &format!("p{i}"));
        direct.drop_reason("NETFILTER_DROP", Some((&p.namespace, &p.name)));
        cached.drop_reason_cached(&mut cache, 2, "NETFILTER_DROP", Some(&p), 1);
        direct.conn_failure("reset", Some((&p.namespace, &p.name)));
        cached.conn_failure_cached(&mut cache, "reset", Some(&p));
    }
    assert!(cache.drops.len() <= EventSeries::MAX && cache.conn.len() <= EventSeries::MAX);
    let lines = |m: &Metrics| {
        let mut v: Vec<String> = m.render().lines().map(str::to_owned).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(lines(&direct), lines(&cached));
}
