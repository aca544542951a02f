//! Issue 19, part 2: on a busy node the findings stay signal. A generated
//! capture (`support/busy.rs`: ≥ 100k transactions of 300 pods — fast
//! search-list walks, a dead upstream, an NXDOMAIN storm, a slow pod) is
//! written with the capture writer and replayed through the pipeline every
//! command runs. No root needed.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "support/busy.rs"]
mod busy;

use ktrace::{
    analyze::{
        Analyzer, Finding, Transaction,
        condense::{FanoutSummary, Repeated},
        pairing::PairConfig,
    },
    enrich::Enricher,
    output::table::TableSink,
    pipeline::{Context, Filter, Pipeline, RunStats, Sink},
    source::file::{FileEvent, replay},
};

struct Collect {
    findings: Vec<Finding>,
    transactions: u64,
    table: TableSink<Vec<u8>>,
    /// Every transaction, to run the analyzer alone (what `ktrace dns` reported before).
    txs: Vec<Transaction>,
}

impl Sink for Collect {
    fn transaction(&mut self, _ctx: &Context, tx: &Transaction) {
        self.transactions += 1;
        self.txs.push(tx.clone());
    }
    fn finding(&mut self, ctx: &Context, f: &Finding) {
        self.findings.push(f.clone());
        self.table.finding(ctx, f);
    }
    fn finish(&mut self, ctx: &Context, s: &RunStats) {
        self.table.finish(ctx, s);
    }
}

fn run(path: &std::path::Path) -> (Collect, RunStats) {
    let ctx = Context { clock_offset_ns: 0, enricher: Enricher::empty() };
    let mut table = TableSink::new(Vec::new());
    table.quiet = false;
    let sink = Collect { findings: Vec::new(), transactions: 0, table, txs: Vec::new() };
    let mut pipe = Pipeline::new(ctx, Filter::default(), PairConfig::default(), sink);
    pipe.live_output = false;
    let warnings = replay(&[path.to_path_buf()], |ev| match ev {
        FileEvent::Record(r) => {
            let ts = r.ts_ns();
            pipe.push(r);
            pipe.tick(ts);
        }
        FileEvent::Snapshot(s) => pipe.ctx.enricher.apply_snapshot(&s),
        _ => {}
    })
    .expect("replay");
    assert!(warnings.is_empty(), "{warnings:?}");
    pipe.finish()
}

fn kind(f: &Finding) -> &'static str {
    match f {
        Finding::SearchFanout(_) => "search_fanout",
        Finding::UpstreamTimeout(_) => "upstream_timeout",
        Finding::NxdomainStorm(_) => "nxdomain_storm",
        Finding::SearchFanoutSummary(_) => "search_fanout_summary",
        Finding::Repeated(_) => "repeated",
    }
}

#[test]
fn busy_capture_findings_stay_signal() {
    let dir = std::env::temp_dir().join(format!("ktrace-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("busy.pcapng");
    let gen_ = busy::write(&path).expect("generate");
    let (c, stats) = run(&path);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(c.transactions >= 100_000, "only {} transactions", c.transactions);

    // What the analyzer alone reports (every walk its own finding), as before.
    let mut an = Analyzer::new();
    for e in busy::resolv_confs(0) {
        an.resolv_conf(&e);
    }
    let mut raw = Vec::new();
    for tx in &c.txs {
        an.push(tx, &mut raw);
    }
    an.finish(&mut raw);
    let count = |v: &[Finding], k: &str| v.iter().filter(|f| kind(f) == k).count();
    eprintln!(
        "busy capture: {} transactions; analyzer alone: {} findings ({} search_fanout, {} upstream_timeout, {} nxdomain_storm); condensed: {} finding records ({} search_fanout, {} upstream_timeout, {} nxdomain_storm, {} search_fanout_summary, {} repeated); {:?}",
        c.transactions,
        raw.len(),
        count(&raw, "search_fanout"),
        count(&raw, "upstream_timeout"),
        count(&raw, "nxdomain_storm"),
        c.findings.len(),
        count(&c.findings, "search_fanout"),
        count(&c.findings, "upstream_timeout"),
        count(&c.findings, "nxdomain_storm"),
        count(&c.findings, "search_fanout_summary"),
        count(&c.findings, "repeated"),
        stats.condensed,
    );
    assert!(raw.len() > 10_000, "the generator no longer makes a busy node: {} raw findings", raw.len());
    assert!(c.findings.len() <= 100, "{} finding records", c.findings.len());
    assert_eq!(stats.findings, c.findings.len() as u64);

    // Every slow cause is reported in full, once.
    let fanouts: Vec<_> = c
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::SearchFanout(s) => Some(s),
            _ => None,
        })
        .collect();
    let dead: Vec<_> = fanouts.iter().filter(|f| f.base_name == busy::DEAD_NAME).collect();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0].attempts.iter().any(|a| a.timed_out), "{:#?}", dead[0]);
    let slow_pod: Vec<_> = fanouts.iter().filter(|f| f.pod.as_deref() == Some("team7/app-7")).collect();
    assert_eq!(slow_pod.len(), 1, "the slow pod's walks are one cause: {fanouts:#?}");
    assert!(slow_pod[0].total_ms >= 100.0);
    // Fast walks only in aggregate.
    assert!(fanouts.iter().all(|f| f.total_ms >= 100.0 || f.attempts.iter().any(|a| a.timed_out)), "{fanouts:#?}");
    let ups: Vec<_> = c
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::UpstreamTimeout(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 1, "{ups:#?}");
    assert_eq!(ups[0].upstream, format!("{}:53", busy::DEAD_UPSTREAM));
    assert_eq!(ups[0].qname, busy::DEAD_NAME);
    let storms: Vec<_> = c
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::NxdomainStorm(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(storms.len(), 1, "{storms:#?}");
    assert!(storms[0].top_names[0].qname.starts_with(busy::STORM_NAME));

    // Repeats are counted with their pods.
    let reps: Vec<&Repeated> = c
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Repeated(r) => Some(r),
            _ => None,
        })
        .collect();
    let last = |k: &str| reps.iter().rev().find(|r| r.of_kind == k).copied();
    let dead_rep = reps
        .iter()
        .rev()
        .find(|r| r.of_kind == "search_fanout" && r.cause_key.contains(busy::DEAD_NAME))
        .expect("dead-name walks folded");
    // The analyzer may miss a walk at the capture's edges; the cause and every pod are there.
    let lookups = u64::from(busy::DEAD_PODS) * busy::DEAD_ROUNDS;
    assert!(dead_rep.count * 10 >= lookups * 9 && dead_rep.count <= lookups, "{dead_rep:#?}");
    assert!(dead_rep.client_time_lost_ms >= 5000.0 * (dead_rep.count as f64), "{dead_rep:#?}");
    assert_eq!(dead_rep.pods, u64::from(busy::DEAD_PODS));
    assert!(!dead_rep.top_pods.is_empty());
    // One outage per round: the first reported, the other rounds counted.
    assert!(last("upstream_timeout").is_some_and(|r| r.count == busy::DEAD_ROUNDS), "{reps:#?}");
    assert!(last("nxdomain_storm").is_some_and(|r| r.pods == u64::from(busy::STORM_PODS)), "{reps:#?}");

    // The fast walks, in aggregate: periodic updates and a final one.
    let sums: Vec<&FanoutSummary> = c
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::SearchFanoutSummary(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(sums.len() >= 2, "periodic and final: {}", sums.len());
    let s = sums.last().expect("summary");
    // The storm's exhausted walks are fast walks too.
    assert!(s.lookups >= gen_.fast_walks, "{} < {}", s.lookups, gen_.fast_walks);
    assert!(s.pods >= u64::from(busy::PODS) - 1, "{}", s.pods);
    assert!(s.extra_queries_per_lookup > 4.0 && s.extra_queries_per_lookup <= 6.0, "{}", s.extra_queries_per_lookup);
    assert!(s.share_of_resolver_queries > 0.5 && s.share_of_resolver_queries < 1.0, "{}", s.share_of_resolver_queries);
    assert!(s.wasted_p50_ms > 2.0 && s.wasted_p50_ms < 10.0, "{}", s.wasted_p50_ms);
    assert!(s.wasted_p99_ms < 100.0, "{}", s.wasted_p99_ms);
    assert_eq!(s.top.len(), 10);

    // The table's diagnosis fits a screen, ranked by client time lost.
    let table = String::from_utf8_lossy(c.table.get_ref()).into_owned();
    let diag = table.split("=== Diagnosis").nth(1).expect("diagnosis");
    let lines = diag.lines().take_while(|l| !l.contains(" transactions (")).count();
    eprintln!("=== Diagnosis{diag}");
    assert!(lines <= 60, "{lines} lines:\n{diag}");
    let first = diag.lines().find(|l| l.starts_with(" 1.")).expect("ranked rows");
    assert!(first.contains("s lost"), "{first}");
}
