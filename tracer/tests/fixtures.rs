//! Every foreign capture in `tests/fixtures/pcap/` (vendored) replays through the
//! same pipeline as live tracing, with transaction counts verified by hand
//! against `tshark -Y 'dns.flags.response==0'` / `==1` on the same files.
//! No root needed.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::path::PathBuf;

use ktrace::{
    analyze::pairing::PairConfig,
    enrich::Enricher,
    pipeline::{Context, Filter, Pipeline, RunStats},
    source::file::{FileEvent, replay},
};

use ktrace::testkit::Collect;

/// The vendored pcap fixtures (a missing one fails the test).
fn fixtures() -> PathBuf {
    ktrace::testkit::fixture("pcap")
}

fn run(file: &str) -> (Collect, RunStats) {
    let path = fixtures().join(file);
    let ctx = Context { clock_offset_ns: 0, enricher: Enricher::empty() };
    let mut pipe = Pipeline::new(
        ctx,
        Filter::default(),
        PairConfig { timeout_ns: 5_000_000_000, ..PairConfig::default() },
        Collect::default(),
    );
    let warnings = replay(&[path], |ev| {
        if let FileEvent::Record(r) = ev {
            let ts = r.ts_ns();
            pipe.push(r);
            pipe.tick(ts);
        }
    })
    .expect("replay");
    assert!(warnings.is_empty(), "{file}: {warnings:?}");
    pipe.finish()
}

#[test]
fn every_pcap_fixture_replays_with_the_expected_transactions() {
    // (file, transactions, answered, DNS messages, unmatched responses, undecodable DNS payloads)
    let expected = [
        // tshark: 2 queries, 2 responses (BADCOOKIE, then a successful retry).
        ("tcpdump__dns-badcookie.pcap", 2, 2, 4, 0, 0),
        // A compression-bomb query: not decodable, counted, no panic.
        ("tcpdump__dns-zlip-1.pcap", 0, 0, 0, 0, 1),
        // DNS over TCP: 1 query, 1 response, length-framed.
        ("tcpdump__dns_tcp.pcap", 1, 1, 2, 0, 0),
        // 21 query/response pairs with EDNS options.
        ("tcpdump__edns-opts.pcap", 21, 21, 42, 0, 0),
        // Spliced capture: tshark sees 20 queries and 65 responses, most of
        // the responses' queries are outside the splice (one query is a
        // same-id retransmit, so 19 transactions).
        ("zeek__dns-edns-ecs.pcap", 19, 15, 85, 50, 0),
        // 11 transactions on one reused 5-tuple over 267 s.
        ("zeek__dns_long-connection.pcap", 11, 11, 22, 0, 0),
        // IPv6 fragments are not reassembled: the first answer's first
        // fragment is a partial message; tshark (reassembling) sees 3 queries, 2 responses.
        ("zeek__ipv6-fragmented-dns.pcap", 2, 1, 5, 1, 0),
    ];
    for (file, txs, answered, msgs, unmatched, bad) in expected {
        let (c, s) = run(file);
        assert_eq!(c.txs.len(), txs, "{file}: transactions");
        assert_eq!(c.txs.iter().filter(|t| !t.timed_out).count(), answered, "{file}: answered");
        assert_eq!(s.decode.messages, msgs, "{file}: messages");
        assert_eq!(s.pairing.unmatched_responses, unmatched, "{file}: unmatched responses");
        assert_eq!(s.decode.bad_dns, bad, "{file}: undecodable DNS");
    }
}

#[test]
fn badcookie_and_tcp_details() {
    let (c, _) = run("tcpdump__dns-badcookie.pcap");
    let rcodes: Vec<Option<u16>> = c.txs.iter().map(|t| t.rcode).collect();
    assert!(rcodes.contains(&Some(23)), "extended rcode BADCOOKIE (23): {rcodes:?}");
    let (c, _) = run("tcpdump__dns_tcp.pcap");
    assert_eq!(c.txs[0].transport, ktrace::event::Transport::Tcp);
    assert!(c.txs[0].latency_ns.is_some());
}
