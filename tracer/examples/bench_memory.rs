//! Memory per in-flight item, for `cargo xtask bench` (section 5):
//! `bench_memory N` prints one JSON line with the heap bytes the analysis
//! keeps per DNS query waiting for its answer (decoder + pairer) and per
//! underlay packet waiting for its arrival on the other node (`fabric_loss`
//! correlation), measured by a counting allocator around N of each.

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
};

use bytes::Bytes;
use ktrace::{
    analyze::{
        Pairer,
        drops::{DropAnalyzer, DropConfig},
        pairing::PairConfig,
    },
    decode::DnsDecoder,
    enrich::{Enricher, Snapshot},
    event::{Hook, PacketRecord, Record},
};

/// Live heap bytes (allocated minus freed).
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: p came from System.alloc with l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as for dealloc.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

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
        let mut inner = synth::ipv4_udp(
            Ipv4Addr::new(10, 244, 1, 20),
            32_768 + (i % 28_000) as u16,
            Ipv4Addr::new(10, 244, 2, 30),
            8080,
            &i.to_be_bytes(),
        );
        // A distinct IP id per packet, as a sender's kernel would stamp
        // (fingerprints ignore the checksum, so it is left as is).
        inner[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        let mut pl = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        pl.extend([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x1e, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x14, 0x08, 0x00]);
        pl.extend_from_slice(&inner);
        let data = synth::ipv4_udp(a, 40_000 + (i % 1000) as u16, b, 4789, &pl);
        // Within one matching window, so every packet is still waiting.
        let rec = Record::Packet(PacketRecord {
            ts_ns: 1_000_000_000 + i,
            hook: Hook::TcEgress,
            process: None,
            cgroup_id: 0,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 2,
            wire_len: data.len() as u32,
            data: Bytes::from(data),
            node: Some(Arc::clone(&node)),
        });
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
