//! The agent's per-record encoding on a recording, for deterministic
//! instruction counts (`valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*encode_all*'`): `agent_encode CAPTURE [RECORDS]`.
//!
//! Reads up to RECORDS records (default 100,000) into memory, then runs each
//! through the agent's encoder into a 32 MiB history, as `ktrace agent` does
//! for every ring item (the pipeline `ktrace agent` shares with
//! `ktrace dns --summary` is measured by replaying with `dns -r`).
//! Prints records, history entries and bytes.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::sync::Arc;

use ktrace::{
    agent::{encode::Encoder, hub::Hub},
    capture::Item,
    enrich::Enricher,
    event::Record,
};

const HISTORY: usize = 32 << 20;

#[inline(never)]
fn encode_all(recs: &[Record], enc: &mut Encoder, enr: &Enricher, hub: &Hub) {
    for (i, r) in recs.iter().enumerate() {
        enc.queue_record(r, enr, hub);
        // The agent's heartbeat every 100 ms, at ~10k messages/s.
        if i % 1000 == 999 {
            enc.heartbeat(hub);
        }
    }
    enc.flush(hub);
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else { anyhow::bail!("usage: agent_encode CAPTURE [RECORDS]") };
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
    let (mut enc, head) = Encoder::new(Arc::from("bench-node"), Vec::new(), 0);
    enc.recycle_for(HISTORY);
    let hub = Hub::new(head, HISTORY);
    let enr = Enricher::empty();
    encode_all(&recs, &mut enc, &enr, &hub);
    let (n, bytes, _) = hub.history_size();
    println!("{{\"records\":{},\"history_entries\":{n},\"history_bytes\":{bytes}}}", recs.len());
    Ok(())
}
