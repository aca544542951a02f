//! Micro-benchmarks of the pure-Rust hot paths (divan):
//! `cargo bench -p tracer --bench hot_paths`.
//!
//! * DNS decode: ktrace's decoder vs `simple-dns` (a full decoder) vs a
//!   minimal header + first-question parse that copies the name into a stack
//!   buffer (the floor any decoder can reach);
//! * `DnsDecoder::push` (IP/UDP parse + DNS decode per packet);
//! * `Pairer::push` (query/response pairing);
//! * capture write and read (pcapng, plain).
//!
//! Inputs come from `synth.rs`, the same mix the replay benchmark uses.

#![allow(
    unused_crate_dependencies,
    reason = "a bench links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "support/synth.rs"]
mod synth;

use std::sync::Arc;

use divan::{Bencher, black_box};
use ktrace::{
    analyze::pairing::{PairConfig, Pairer},
    capture::{CaptureHeader, CaptureWriter, ClockRef},
    decode::{DnsDecoder, DnsEvent, dns},
    event::{PacketRecord, Record},
};

fn main() {
    divan::main();
}

/// Messages per batch: enough that per-call overhead and cache effects average out.
const BATCH: u64 = 1000;

/// DNS payloads (UDP payload only) of the first `BATCH` exchanges: queries and responses.
fn payloads() -> Vec<Vec<u8>> {
    (0..BATCH / 2)
        .flat_map(|i| {
            let (q, r, _) = synth::exchange(i);
            [q[28..].to_vec(), r[28..].to_vec()]
        })
        .collect()
}

/// What a minimal parser extracts: id, flags, qname (wire bytes, lower-cased), qtype.
struct MinimalQuestion {
    id: u16,
    flags: u16,
    qtype: u16,
    name: [u8; 255],
    name_len: usize,
}

/// Header + first question, no compression (questions never use it), no allocation.
fn minimal_parse(m: &[u8]) -> Option<MinimalQuestion> {
    let hdr = m.get(..12)?;
    let id = u16::from_be_bytes([hdr[0], hdr[1]]);
    let flags = u16::from_be_bytes([hdr[2], hdr[3]]);
    if u16::from_be_bytes([hdr[4], hdr[5]]) == 0 {
        return None;
    }
    let mut q = MinimalQuestion { id, flags, qtype: 0, name: [0; 255], name_len: 0 };
    let mut at = 12;
    loop {
        let len = usize::from(*m.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 || q.name_len + len + 1 > q.name.len() {
            return None;
        }
        let label = m.get(at..at + len)?;
        if q.name_len > 0 {
            q.name[q.name_len] = b'.';
            q.name_len += 1;
        }
        for (d, s) in q.name[q.name_len..q.name_len + len].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        q.name_len += len;
        at += len;
    }
    let t = m.get(at..at + 2)?;
    q.qtype = u16::from_be_bytes([t[0], t[1]]);
    Some(q)
}

#[divan::bench(name = "dns_decode_ktrace (1000 msgs)")]
fn dns_decode_ktrace(b: Bencher) {
    let p = payloads();
    b.counter(divan::counter::ItemsCount::new(p.len())).bench(|| {
        for m in &p {
            let _ = black_box(dns::decode(black_box(m)));
        }
    });
}

#[divan::bench(name = "dns_decode_simple_dns (1000 msgs)")]
fn dns_decode_simple_dns(b: Bencher) {
    let p = payloads();
    b.counter(divan::counter::ItemsCount::new(p.len())).bench(|| {
        for m in &p {
            let _ = black_box(simple_dns::Packet::parse(black_box(m)));
        }
    });
}

#[divan::bench(name = "dns_decode_minimal (1000 msgs)")]
fn dns_decode_minimal(b: Bencher) {
    let p = payloads();
    b.counter(divan::counter::ItemsCount::new(p.len())).bench(|| {
        for m in &p {
            let q = minimal_parse(black_box(m));
            black_box(q.map(|q| (q.id, q.flags, q.qtype, q.name_len)));
        }
    });
}

fn records() -> Vec<Arc<PacketRecord>> {
    let node: Arc<str> = Arc::from("bench-node");
    (0..BATCH / 2)
        .flat_map(|i| synth::exchange_records(i, 1_000_000 + i * 200_000, &node))
        .filter_map(|r| match r {
            Record::Packet(p) => Some(Arc::new(p)),
            _ => None,
        })
        .collect()
}

#[divan::bench(name = "decoder_push (1000 pkts)")]
fn decoder_push(b: Bencher) {
    let recs = records();
    b.counter(divan::counter::ItemsCount::new(recs.len())).bench(|| {
        let mut d = DnsDecoder::new();
        let mut out = Vec::with_capacity(4);
        for r in &recs {
            d.push(Arc::clone(r), &mut out);
            out.clear();
        }
        black_box(d.stats())
    });
}

fn events() -> Vec<DnsEvent> {
    let mut d = DnsDecoder::new();
    let mut out = Vec::new();
    for r in records() {
        d.push(r, &mut out);
    }
    out
}

#[divan::bench(name = "pairer_push (1000 msgs)")]
fn pairer_push(b: Bencher) {
    let evs = events();
    // The pipeline hands its events over (names and answers move into the
    // transactions): copies of them are made outside the timing.
    b.counter(divan::counter::ItemsCount::new(evs.len())).with_inputs(|| evs.clone()).bench_local_values(|evs| {
        let mut p = Pairer::new(PairConfig::default());
        let mut out = Vec::with_capacity(evs.len());
        for e in evs {
            p.push_owned(e, &mut out);
        }
        black_box(out.len())
    });
}

/// Fan-out grouping and the other findings: the analyzer fed the
/// transactions the pairer makes of the mix (four NXDOMAIN suffixes, then
/// the answer: one `search_fanout` chain per five transactions).
#[divan::bench(name = "analyzer_push (1000 msgs)")]
fn analyzer_push(b: Bencher) {
    let evs = events();
    let mut p = Pairer::new(PairConfig::default());
    let mut txs = Vec::with_capacity(evs.len());
    for e in &evs {
        p.push(e, &mut txs);
    }
    let txs: Vec<Arc<ktrace::analyze::Transaction>> = txs.into_iter().map(Arc::new).collect();
    // Counted per DNS message, like the rows above (a transaction is two).
    b.counter(divan::counter::ItemsCount::new(evs.len())).bench(|| {
        let mut a = ktrace::analyze::Analyzer::new();
        let mut out = Vec::new();
        for t in &txs {
            a.push_shared(Arc::clone(t), &mut out);
        }
        a.finish(&mut out);
        black_box(out.len())
    });
}

fn header(compress: bool) -> CaptureHeader {
    CaptureHeader {
        node: "bench-node".into(),
        ktrace_version: "bench".into(),
        clock: ClockRef { mono_ns: 0, wall_ns: 1_700_000_000_000_000_000 },
        snaplen: 1024,
        compress,
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ktrace-bench-{}-{name}", std::process::id()))
}

#[divan::bench(name = "capture_write (1000 pkts)")]
fn capture_write(b: Bencher) {
    let node: Arc<str> = Arc::from("bench-node");
    let recs: Vec<Record> =
        (0..BATCH / 2).flat_map(|i| synth::exchange_records(i, 1_000_000 + i * 200_000, &node)).collect();
    let n = std::cell::Cell::new(0u32);
    b.counter(divan::counter::ItemsCount::new(recs.len()))
        .with_inputs(|| {
            // A fresh file per iteration; creating it is not timed.
            n.set(n.get() + 1);
            CaptureWriter::create(tmp(&format!("write-{}.pcapng", n.get())), header(false)).ok()
        })
        .bench_local_values(|w| {
            let mut w = w?;
            for r in &recs {
                let _ = w.write_record(r, None);
            }
            // Returned, so closing (flush + fsync) happens outside the timing.
            Some(w)
        });
    for i in 1..=n.get() {
        let _ = std::fs::remove_file(tmp(&format!("write-{i}.pcapng")));
    }
}

#[divan::bench(name = "capture_read (1000 pkts)")]
fn capture_read(b: Bencher) {
    let node: Arc<str> = Arc::from("bench-node");
    let path = tmp("read.pcapng");
    if let Ok(mut w) = CaptureWriter::create(&path, header(false)) {
        for i in 0..BATCH / 2 {
            for r in synth::exchange_records(i, 1_000_000 + i * 200_000, &node) {
                let _ = w.write_record(&r, None);
            }
        }
        let _ = w.finish();
    }
    b.counter(divan::counter::ItemsCount::new(BATCH as usize)).bench(|| {
        let Ok(r) = ktrace::capture::open(&path) else { return 0 };
        r.flatten().count()
    });
    let _ = std::fs::remove_file(&path);
}
