//! Synthetic DNS traffic for the benchmarks, the replay-capture generator
//! and the replay tests (`examples/bench_capture.rs`, `hot_paths.rs`,
//! `tests/replay_memory.rs` and `tests/replay_threads.rs` include this file
//! with `#[path]`); [`write_capture`] is the one writer of such captures.
//!
//! The mix imitates a Kubernetes node: clients in a few pods resolving
//! service names through the ndots:5 search list (NXDOMAIN for the first
//! suffixes, then an answer), seen from the client's side (query leaving its
//! socket, response arriving at it), as `ktrace record` stores them.

#![allow(dead_code, unreachable_pub, reason = "each includer uses a different part")]

use std::{net::Ipv4Addr, path::Path, sync::Arc};

use bytes::Bytes;
use ktrace::{
    capture::{CaptureError, CaptureHeader, CaptureWriter, ClockRef, WriterStats},
    event::{Hook, PacketRecord, Process, Record},
};

/// Search suffixes of a pod in namespace `ns{n}`, as kubelet writes them.
const SUFFIXES: [&str; 4] = ["critical-app.svc.cluster.local", "svc.cluster.local", "cluster.local", "localdomain"];

pub use ktrace::testkit::{dns::message as dns_message, packet::ipv4_udp};

/// The resolver every synthetic client asks (kube-dns).
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);

/// The `i`-th DNS exchange of the mix: (query packet, response packet, qname).
/// Four of every five are search-list fan-out misses (NXDOMAIN), one an answer.
#[must_use]
pub fn exchange(i: u64) -> (Vec<u8>, Vec<u8>, String) {
    let lookup = i / 5;
    let step = (i % 5) as usize;
    let svc = format!("svc{}.ns{}.svc.cluster.local", lookup % 500, lookup % 20);
    let (qname, rcode, answer) = match SUFFIXES.get(step) {
        Some(s) => (format!("{svc}.{s}"), 3u8, None),
        None => (svc, 0u8, Some(Ipv4Addr::new(10, 96, (lookup % 200) as u8, (lookup % 250) as u8 + 1))),
    };
    let client = Ipv4Addr::new(10, 244, 1, 20 + (lookup % 8) as u8);
    let sport = 32_768 + (lookup % 28_000) as u16;
    let id = (i.wrapping_mul(7919) & 0xffff) as u16;
    let qtype = if lookup.is_multiple_of(2) { 1 } else { 28 };
    let q = ipv4_udp(client, sport, RESOLVER, 53, &dns_message(id, false, 0, &qname, qtype, None));
    let r = ipv4_udp(
        RESOLVER,
        53,
        client,
        sport,
        &dns_message(id, true, rcode, &qname, qtype, answer.filter(|_| qtype == 1)),
    );
    (q, r, qname)
}

/// The `i`-th exchange as the two records a client-side recorder stores,
/// the query at `ts_ns` and the response 150 µs later.
#[must_use]
pub fn exchange_records(i: u64, ts_ns: u64, node: &Arc<str>) -> [Record; 2] {
    let (q, r, _) = exchange(i);
    let lookup = i / 5;
    let netns_ino = 4_026_532_000 + (lookup % 8) as u32;
    let process = Process {
        pid: 4000 + (lookup % 8) as u32,
        tid: 4000 + (lookup % 8) as u32,
        comm: "getent".into(),
        thread: "getent".into(),
    };
    let mk = |data: Vec<u8>, ts_ns: u64, hook: Hook, process: Option<Process>| {
        Record::Packet(PacketRecord {
            ts_ns,
            hook,
            process,
            cgroup_id: 9000 + u64::from(netns_ino % 8),
            netns_cookie: 0,
            netns_ino,
            ifindex: 0,
            wire_len: data.len() as u32,
            data: Bytes::from(data),
            node: Some(Arc::clone(node)),
        })
    };
    [mk(q, ts_ns, Hook::SocketEgress, Some(process)), mk(r, ts_ns + 150_000, Hook::SocketIngress, None)]
}

/// Simulated time between exchanges: more than the 150 µs response delay,
/// so records stay in time order.
pub const SPACING_NS: u64 = 200_000;

/// Writes the first `exchanges` exchanges of the mix as a ktrace capture
/// recorded on `node` (snap length 1024, zstd-compressed when `compress`),
/// one exchange every [`SPACING_NS`] from now.
///
/// # Errors
/// When the file cannot be written.
pub fn write_capture(path: &Path, exchanges: u64, compress: bool, node: &str) -> Result<WriterStats, CaptureError> {
    let clock = ClockRef::now();
    let header = CaptureHeader {
        node: node.into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 1024,
        compress,
    };
    let node: Arc<str> = Arc::from(node);
    let mut w = CaptureWriter::create(path, header)?;
    for i in 0..exchanges {
        for rec in exchange_records(i, clock.mono_ns + i * SPACING_NS, &node) {
            w.write_record(&rec, None)?;
        }
    }
    w.finish()
}
