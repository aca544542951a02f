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

use std::{path::Path, time::Instant};

/// Most exchanges one call writes (bounds the run).
const MAX_EXCHANGES: u64 = 50_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(n)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: bench_capture OUT.pcapng EXCHANGES [--zstd]");
    };
    let n: u64 = n.parse::<u64>()?.min(MAX_EXCHANGES);
    let compress = args.iter().any(|a| a == "--zstd");
    let start = Instant::now();
    let stats = synth::write_capture(Path::new(out), n, compress, "bench-node")?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "{{\"messages\":{},\"pcapng_bytes\":{},\"file_bytes\":{size},\"seconds\":{:.3}}}",
        stats.packets,
        stats.bytes,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
