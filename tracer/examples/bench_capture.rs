//! Writes a synthetic ktrace capture for the replay benchmark
//! (`cargo xtask bench`): `bench_capture OUT.pcapng EXCHANGES [--zstd]`.
//!
//! Each exchange is a query and its response (two DNS messages) seen at the
//! client's socket; the mix is search-list fan-out (see `benches/support/synth.rs`).
//! Prints one JSON line: messages, bytes written, file size, seconds.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{sync::Arc, time::Instant};

use ktrace::capture::{CaptureHeader, CaptureWriter, ClockRef};

/// Simulated time between exchanges: more than the 150 µs response delay,
/// so records stay in time order.
const SPACING_NS: u64 = 200_000;
/// Most exchanges one call writes (bounds the run).
const MAX_EXCHANGES: u64 = 50_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(n)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: bench_capture OUT.pcapng EXCHANGES [--zstd]");
    };
    let n: u64 = n.parse::<u64>()?.min(MAX_EXCHANGES);
    let compress = args.iter().any(|a| a == "--zstd");
    let clock = ClockRef::now();
    let header = CaptureHeader {
        node: "bench-node".into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 1024,
        compress,
    };
    let node: Arc<str> = Arc::from("bench-node");
    let start = Instant::now();
    let mut w = CaptureWriter::create(out, header)?;
    let t0 = clock.mono_ns;
    for i in 0..n {
        for rec in synth::exchange_records(i, t0 + i * SPACING_NS, &node) {
            w.write_record(&rec, None)?;
        }
    }
    let stats = w.finish()?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "{{\"messages\":{},\"pcapng_bytes\":{},\"file_bytes\":{size},\"seconds\":{:.3}}}",
        stats.packets,
        stats.bytes,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
