//! Memory per in-flight item, for `cargo xtask bench` (section 5):
//! `bench_memory N` prints one JSON line with the heap bytes the analysis
//! keeps per DNS query waiting for its answer (decoder + pairer) and per
//! underlay packet waiting for its arrival on the other node (`fabric_loss`
//! correlation), measured by a counting allocator around N of each.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{net::Ipv4Addr, sync::Arc};

use ktrace::{
    analyze::{
        Pairer,
        drops::{DropAnalyzer, DropConfig},
        pairing::PairConfig,
    },
    decode::DnsDecoder,
    enrich::{Enricher, Snapshot},
    event::{Hook, Record},
    testkit::{
        alloc::{Counting, live},
        packet, packet_record,
    },
};

#[global_allocator]
static A: Counting = Counting;

/// Bytes per query: N client queries (the synthetic mix) without answers.
fn per_query(n: u64) -> f64 {
    let node: Arc<str> = Arc::from("bench-node");
    let mut dec = DnsDecoder::new();
    let mut pairer = Pairer::new(PairConfig { max_inflight: usize::MAX, ..PairConfig::default() });
    let enr = Enricher::empty();
    let (mut evs, mut out) = (Vec::new(), Vec::new());
    let before = live();
    for i in 0..n {
        let [q, _] = synth::exchange_records(i, 1_000_000 + i * 1000, &node);
        if let Record::Packet(p) = q {
            dec.push(Arc::new(p), &mut evs);
        }
        for mut ev in evs.drain(..) {
            enr.enrich(&mut ev);
            pairer.push(&ev, &mut out);
        }
    }
    let after = live();
    assert!(out.is_empty(), "nothing may complete");
    std::hint::black_box((&dec, &pairer));
    (after - before) as f64 / n as f64
}

/// Bytes per underlay packet: N VXLAN packets that left node-a and have
/// not (yet) arrived at node-b.
fn per_packet(n: u64) -> f64 {
    let snap = Snapshot {
        nodes: vec![
            (Arc::from("node-a"), vec![Ipv4Addr::new(192, 168, 77, 10).into()]),
            (Arc::from("node-b"), vec![Ipv4Addr::new(192, 168, 77, 11).into()]),
        ],
        ..Snapshot::default()
    };
    let enr = Enricher::from_snapshot(&snap);
    let mut an = DropAnalyzer::new(DropConfig { max_pending: usize::MAX, ..DropConfig::default() }, &enr);
    let node: Arc<str> = Arc::from("node-a");
    let a = Ipv4Addr::new(192, 168, 77, 10);
    let b = Ipv4Addr::new(192, 168, 77, 11);
    let before = live();
    for i in 0..n {
        // A distinct IP id per packet, as a sender's kernel would stamp.
        let inner = packet::ipv4_id(
            Ipv4Addr::new(10, 244, 1, 20),
            Ipv4Addr::new(10, 244, 2, 30),
            17,
            i as u16,
            &packet::udp(32_768 + (i % 28_000) as u16, 8080, &i.to_be_bytes()),
        );
        let data = packet::vxlan(a, b, 40_000 + (i % 1000) as u16, 0, &inner);
        // Within one matching window, so every packet is still waiting.
        let rec = packet_record(1_000_000_000 + i, &node, Hook::TcEgress, &data);
        an.push(&rec);
    }
    let after = live();
    let pending = an.stats().pending;
    std::hint::black_box(&an);
    assert!(pending >= n / 2, "packets must still be pending ({pending})");
    (after - before) as f64 / pending.max(1) as f64
}

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(100_000), |s| s.parse())?.min(5_000_000);
    let q = per_query(n);
    let p = per_packet(n);
    println!("{{\"n\":{n},\"bytes_per_query\":{q:.1},\"bytes_per_packet\":{p:.1}}}");
    Ok(())
}
