//! Two node captures for the `fabric_loss` correlation benchmark
//! (`cargo xtask bench`, section 5): `bench_fabric DIR EXCHANGES LOSE_EVERY`
//! writes `DIR/node-a.pcapng` and `DIR/node-b.pcapng`.
//!
//! Each exchange is a UDP request from a client pod on node-a to a backend
//! pod on node-b and its reply, VXLAN-encapsulated (UDP 4789) between the
//! node addresses, seen by ktrace's tc programs on each node's underlay: the
//! request leaves node-a and reaches node-b, the reply leaves node-b and —
//! except every LOSE_EVERY-th one — reaches node-a. Each capture carries a
//! Kubernetes snapshot (nodes and pods) and a coverage block, as `ktrace
//! record --underlay` writes them. Prints one JSON line.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{net::Ipv4Addr, path::Path, sync::Arc, time::Instant};

use ktrace::{
    capture::{CaptureHeader, CaptureWriter, ClockRef, MetaBlock},
    event::Hook,
    source::file::{COVERAGE, Coverage},
    testkit::{packet, packet_record as pkt},
};

/// Simulated time between exchanges (10,000 exchanges/s per node pair).
const SPACING_NS: u64 = 100_000;
/// Fabric latency per direction.
const HOP_NS: u64 = 200_000;
/// Most exchanges one call writes (bounds the run).
const MAX_EXCHANGES: u64 = 20_000_000;

const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 30);

/// IPv4 (id `id`, checksum filled in) + UDP (checksum 0) + payload.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, id: u16, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    packet::ipv4_id(src, dst, 17, id, &packet::udp(sport, dport, payload))
}

fn snapshot() -> String {
    let node = |name: &str, ip: Ipv4Addr| {
        format!(
            r#"{{"kind":"Node","metadata":{{"name":"{name}"}},"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}]}}}}"#
        )
    };
    let pod = |name: &str, node: &str, ip: Ipv4Addr| {
        format!(
            r#"{{"kind":"Pod","metadata":{{"namespace":"critical-app","name":"{name}"}},"spec":{{"nodeName":"{node}"}},"status":{{"podIP":"{ip}"}}}}"#
        )
    };
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{},{},{},{}]}}"#,
        node("node-a", NODE_A),
        node("node-b", NODE_B),
        pod("client", "node-a", CLIENT),
        pod("backend", "node-b", BACKEND)
    )
}

fn writer(dir: &Path, node: &str, clock: ClockRef) -> anyhow::Result<CaptureWriter> {
    let header = CaptureHeader {
        node: node.into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 256,
        compress: false,
    };
    let mut w = CaptureWriter::create(dir.join(format!("{node}.pcapng")), header)?;
    w.write_meta(&MetaBlock::KubeSnapshot(snapshot()))?;
    Ok(w)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(n), Some(lose)) = (args.first(), args.get(1), args.get(2)) else {
        anyhow::bail!("usage: bench_fabric DIR EXCHANGES LOSE_EVERY");
    };
    let dir = Path::new(dir);
    let n: u64 = n.parse::<u64>()?.min(MAX_EXCHANGES);
    let lose: u64 = lose.parse::<u64>()?.max(1);
    let clock = ClockRef::now();
    let (na, nb): (Arc<str>, Arc<str>) = (Arc::from("node-a"), Arc::from("node-b"));
    let mut wa = writer(dir, "node-a", clock)?;
    let mut wb = writer(dir, "node-b", clock)?;
    let start = Instant::now();
    let t0 = clock.mono_ns;
    let mut lost = 0u64;
    for i in 0..n {
        let t = t0 + i * SPACING_NS;
        let seq = i.to_be_bytes();
        let id = i as u16;
        let sport = 32_768 + (i % 28_000) as u16;
        let req = packet::vxlan(
            NODE_A,
            NODE_B,
            40_000 + (i % 1000) as u16,
            0,
            &ipv4_udp(CLIENT, BACKEND, id, sport, 8080, &seq),
        );
        let rsp = packet::vxlan(
            NODE_B,
            NODE_A,
            41_000 + (i % 1000) as u16,
            0,
            &ipv4_udp(BACKEND, CLIENT, id, 8080, sport, &seq),
        );
        wa.write_record(&pkt(t, &na, Hook::TcEgress, &req), Some("eth0"))?;
        wb.write_record(&pkt(t + HOP_NS, &nb, Hook::TcIngress, &req), Some("eth0"))?;
        wb.write_record(&pkt(t + HOP_NS + 50_000, &nb, Hook::TcEgress, &rsp), Some("eth0"))?;
        if (i + 1) % lose == 0 {
            lost += 1;
        } else {
            wa.write_record(&pkt(t + 2 * HOP_NS + 50_000, &na, Hook::TcIngress, &rsp), Some("eth0"))?;
        }
    }
    // The recordings cover the whole run plus the time a reply needs, so the
    // last lost replies are judged, not left "in flight".
    let end = t0 + n * SPACING_NS + 5_000_000_000;
    let mut bytes = 0;
    for (w, node) in [(wa, "node-a"), (wb, "node-b")] {
        let mut w = w;
        let cov = Coverage { node: node.into(), start_mono_ns: t0, end_mono_ns: end, underlay: vec!["eth0".into()] };
        w.write_meta(&MetaBlock::Custom { name: COVERAGE.into(), data: serde_json::to_vec(&cov)? })?;
        bytes += w.finish()?.bytes;
    }
    println!(
        "{{\"exchanges\":{n},\"packets\":{},\"lost\":{lost},\"bytes\":{bytes},\"seconds\":{:.3}}}",
        4 * n - lost,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
