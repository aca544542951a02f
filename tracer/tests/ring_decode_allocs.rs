//! Heap allocations per DNS query on the live reader's decode path (ring
//! item → record, `bpf::dedupe::Resolver`), counted with a counting
//! allocator: a same-node exchange as the kernel submits it, the query and
//! its response each as an egress record with its payload and an ingress
//! reference to it. Prints the figure (`--nocapture`) and holds it under a
//! budget, so a change that brings back an allocation per payload fails here.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "support/count_allocs.rs"]
mod count_allocs;

use std::{net::Ipv4Addr, sync::Arc};

use ktrace::{
    bpf::{dedupe::Resolver, raw::DecodeCtx},
    event::Record,
    testkit::{dns::message, packet::ipv4_udp},
};
use tracer_common::{
    EVENT_VERSION, EventHeader, EventKind, PACKET_EVENT_HDR_LEN, PacketEvent, PacketRefEvent, REF_HEAD_LEN, SNAP_LEN,
    flags, hook,
};

fn bytes_of<T>(v: &T, len: usize) -> Vec<u8> {
    // SAFETY: the ring layouts are plain `#[repr(C)]` data of `size_of::<T>()` bytes.
    let all = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) };
    all[..len].to_vec()
}

fn header(kind: EventKind, ts_ns: u64, comm: &[u8]) -> EventHeader {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm);
    EventHeader {
        kind: kind as u32,
        version: EVENT_VERSION,
        flags: flags::HAS_PROCESS | flags::HAS_NETNS_INO,
        ts_ns,
        tid: 100,
        tgid: 100,
        cgroup_id: 7,
        comm: c,
        thread_comm: c,
    }
}

/// An egress record carrying `pkt`, as the kernel submits it.
fn egress(ts_ns: u64, comm: &[u8], seq: u64, pkt: &[u8]) -> Vec<u8> {
    let mut data = [0u8; SNAP_LEN];
    data[..pkt.len()].copy_from_slice(pkt);
    let ev = PacketEvent {
        hdr: header(EventKind::DnsPacket, ts_ns, comm),
        netns_cookie: 0,
        netns_ino: 5,
        ifindex: 2,
        pkt_len: pkt.len() as u32,
        cap_len: pkt.len() as u16,
        hook: hook::CGROUP_EGRESS,
        ip_version: 4,
        seq,
        data,
    };
    bytes_of(&ev, PACKET_EVENT_HDR_LEN + pkt.len())
}

/// The ingress sighting of egress record `seq` (`pkt`), as a reference.
fn reference(ts_ns: u64, comm: &[u8], seq: u64, pkt: &[u8]) -> Vec<u8> {
    let mut head = [0u8; REF_HEAD_LEN];
    head[..28].copy_from_slice(&pkt[..28]);
    let ev = PacketRefEvent {
        hdr: header(EventKind::DnsPacketRef, ts_ns, comm),
        netns_cookie: 0,
        netns_ino: 6,
        ifindex: 3,
        pkt_len: pkt.len() as u32,
        cap_len: 28,
        hook: hook::CGROUP_INGRESS,
        ip_version: 4,
        seq,
        head,
    };
    bytes_of(&ev, PACKET_EVENT_HDR_LEN + 28)
}

#[test]
fn the_live_decode_path_allocates_nothing_per_payload() {
    let (client, server) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let queries = 20_000u64;
    let mut items = Vec::with_capacity(4 * queries as usize);
    for i in 0..queries {
        let id = i as u16;
        let q = ipv4_udp(client, 40_000, server, 53, &message(id, false, 0, "host.bench.test", 1, None));
        let a = Some(Ipv4Addr::new(10, 0, 0, 9));
        let r = ipv4_udp(server, 53, client, 40_000, &message(id, true, 0, "host.bench.test", 1, a));
        let t = 1_000 * i;
        items.push(egress(t, b"dnsperf", 2 * i + 1, &q));
        items.push(reference(t + 1, b"dnsmasq", 2 * i + 1, &q));
        items.push(egress(t + 2, b"dnsmasq", 2 * i + 2, &r));
        items.push(reference(t + 3, b"dnsperf", 2 * i + 2, &r));
    }
    let node: Arc<str> = Arc::from("n");
    let ctx = DecodeCtx::default();
    let mut res = Resolver::default();
    let mut run = |items: &[Vec<u8>]| {
        let mut packets = 0;
        for it in items {
            match res.decode(it, Some(&node), &ctx) {
                Ok(Some(Record::Packet(p))) => packets += usize::from(!p.data.is_empty()),
                other => panic!("not a packet: {other:?}"),
            }
        }
        packets
    };
    // Warm-up: the names interned, the first chunks cut.
    let warm = 4 * 1_000;
    assert_eq!(run(&items[..warm]), warm);
    let before = count_allocs::allocs();
    assert_eq!(run(&items[warm..]), items.len() - warm);
    let per_query = (count_allocs::allocs() - before) as f64 / (queries - 1_000) as f64;
    println!("live decode path: {per_query:.3} allocations per query (4 ring items)");
    assert!(per_query < 0.1, "{per_query:.3} allocations per query");
    assert_eq!((res.stats.refs, res.stats.unresolved), (2 * queries, 0));
}
