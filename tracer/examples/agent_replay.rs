//! The agent's whole work per record on a recording, without BPF: encoding
//! into the history, drop and connection metrics, and the DNS analysis with
//! its metrics, as `ktrace agent` does for every ring item (its
//! `agent::work::NodeWork`), timer ticks every 10 ms and heartbeats every
//! 100 ms of the recording's time. For deterministic instruction counts:
//!
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*run_all*'
//!  target/release/examples/agent_replay CAPTURE [RECORDS]`
//!
//! (`callgrind_annotate --inclusive=yes` then splits it into
//! `Encoder::record`, `Pipeline::push` and the rest). Reads up to RECORDS
//! records (default 100,000) into memory first; prints records, history
//! entries and bytes, and the rendered metrics' size.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::sync::{Arc, atomic::AtomicU64};

use ktrace::{
    agent::{
        encode::Encoder,
        hub::Hub,
        metrics::{Metrics, MetricsConfig},
        work::NodeWork,
    },
    capture::{ClockRef, Item},
    enrich::Enricher,
    event::Record,
    pipeline::Context,
};

const HISTORY: usize = 32 << 20;
const TICK_NS: u64 = 10_000_000;
const HEARTBEAT_NS: u64 = 100_000_000;

#[inline(never)]
fn run_all(recs: Vec<Record>, work: &mut NodeWork) {
    let (mut next_tick, mut next_hb) = (0, 0);
    for r in recs {
        let ts = r.ts_ns();
        if ts >= next_tick {
            if next_tick != 0 {
                work.tick(ts);
            }
            next_tick = ts + TICK_NS;
        }
        if ts >= next_hb {
            if next_hb != 0 {
                work.heartbeat();
            }
            next_hb = ts + HEARTBEAT_NS;
        }
        work.record(r);
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else { anyhow::bail!("usage: agent_replay CAPTURE [RECORDS]") };
    let max: usize = args.get(1).map_or(Ok(100_000), |n| n.parse())?;
    let mut recs = Vec::with_capacity(max);
    for it in ktrace::capture::open(path)? {
        if let Item::Record(r) = it? {
            recs.push(r);
            if recs.len() == max {
                break;
            }
        }
    }
    let n = recs.len();
    let (mut enc, head) = Encoder::new(Arc::from("bench-node"), Vec::new(), 0);
    enc.recycle_for(HISTORY);
    let hub = Arc::new(Hub::new(head, HISTORY));
    let metrics = Arc::new(Metrics::new(MetricsConfig { node: "bench-node".into(), ..MetricsConfig::default() }));
    let ctx = Context { clock_offset_ns: ClockRef::now().offset(), enricher: Enricher::empty() };
    let mut work = NodeWork::new(enc, ctx, &[53], Arc::clone(&metrics), Arc::clone(&hub), Arc::new(AtomicU64::new(0)));
    run_all(recs, &mut work);
    work.finish();
    let (entries, bytes, _) = hub.history_size();
    let text = metrics.render();
    println!(
        "{{\"records\":{n},\"history_entries\":{entries},\"history_bytes\":{bytes},\"metrics_bytes\":{}}}",
        text.len()
    );
    if std::env::var_os("AGENT_REPLAY_METRICS").is_some() {
        print!("{text}");
    }
    Ok(())
}
