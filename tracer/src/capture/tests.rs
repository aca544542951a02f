//! Tests of the capture format: round trips, truncation, hostile input,
//! foreign files (fixtures and hand-built), tshark cross-checks, merging.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Cursor, Write},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use bytes::Bytes;

use super::{
    CaptureError, CaptureHeader, CaptureWriter, ClockRef, Format, Item, MetaBlock, merge_by_time, open, open_reader,
    pcapng::{BT_EPB, BT_IDB, BT_PB, BT_SHB, BT_SPB, BYTE_ORDER_MAGIC},
};
use crate::event::{Hook, PacketRecord, Process, Record, ResolvConfEvidence};

const CLOCK: ClockRef = ClockRef { mono_ns: 5_000_000_000, wall_ns: 1_700_000_000_000_000_000 };

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ktrace-capture-tests-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

fn header(node: &str, clock: ClockRef) -> CaptureHeader {
    CaptureHeader { node: node.into(), ktrace_version: "0.1.0-test".into(), clock, snaplen: 0, compress: false }
}

/// An IPv4/UDP/DNS query for `name` (A, IN), with a valid IP checksum.
fn dns_query(name: &str, id: u16, src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    use crate::testkit::{dns, packet};
    packet::ipv4_udp(src.into(), sport, dst.into(), 53, &dns::query(id, name, 1))
}

fn pkt(ts_ns: u64, data: Vec<u8>) -> PacketRecord {
    PacketRecord::bare(ts_ns, Hook::SocketEgress, Bytes::from(data))
}

/// Every record kind, every field set, with and without optional parts.
fn sample_records() -> Vec<(Record, Option<&'static str>)> {
    let q = dns_query("backend.a.svc.cluster.local", 0x1234, [10, 0, 0, 5], [10, 96, 0, 10], 40000);
    let mut full = pkt(CLOCK.mono_ns + 1_000, q.clone());
    full.process = Some(Process { pid: 123, tid: 125, comm: "dig".into(), thread: "isc-net-0000".into() });
    full.cgroup_id = 0xdead_beef_0000_0001;
    full.netns_cookie = 4096;
    full.netns_ino = 4_026_532_001;
    full.ifindex = 3;
    full.wire_len = 1500; // cut by the snap length
    full.node = Some(Arc::from("node-a"));
    let mut ingress = pkt(CLOCK.mono_ns + 2_000, q.clone());
    ingress.hook = Hook::SocketIngress;
    ingress.netns_ino = 4_026_532_001;
    ingress.netns_cookie = 4096;
    ingress.node = Some(Arc::from("node-a"));
    let mut tc = pkt(CLOCK.mono_ns + 3_000, q.clone());
    tc.hook = Hook::TcEgress;
    tc.netns_ino = 4_026_532_002;
    let mut tci = pkt(CLOCK.mono_ns + 3_500, q.clone());
    tci.hook = Hook::TcIngress;
    let mut wire = pkt(CLOCK.mono_ns + 3_700, vec![0x60, 1, 2, 3]);
    wire.hook = Hook::Wire;
    wire.process = Some(Process { pid: 1, tid: 1, comm: "ünïcode".into(), thread: "".into() });
    vec![
        (Record::Packet(full), Some("critical-app/client")),
        (Record::Packet(ingress), Some("critical-app/client")),
        (Record::Packet(tc), None),
        (Record::Packet(tci), None),
        (Record::Packet(wire), None),
        (Record::Lost { ts_ns: CLOCK.mono_ns + 4_000, count: 17, node: Some(Arc::from("node-a")) }, None),
        (Record::Lost { ts_ns: CLOCK.mono_ns + 4_001, count: 1, node: None }, None),
        (
            Record::ResolvConf(ResolvConfEvidence {
                ts_ns: CLOCK.mono_ns + 5_000,
                pid: 123,
                netns_ino: 4_026_532_001,
                path: "/proc/123/root/etc/resolv.conf".into(),
                text: Some("search a.svc.cluster.local\noptions ndots:5\n".into()),
                error: None,
            }),
            None,
        ),
        (
            Record::ResolvConf(ResolvConfEvidence {
                ts_ns: CLOCK.mono_ns + 5_001,
                pid: 9,
                netns_ino: 0,
                path: "/proc/9/root/etc/resolv.conf".into(),
                text: None,
                error: Some("No such process".into()),
            }),
            None,
        ),
    ]
}

fn sample_meta() -> Vec<MetaBlock> {
    let mut net = BTreeMap::new();
    net.insert("ip -d addr".to_string(), "1: lo: <LOOPBACK>\n".to_string());
    net.insert("nft list ruleset".to_string(), "table inet t {\n}\n".to_string());
    let mut counters = BTreeMap::new();
    counters.insert("ringbuf_full".to_string(), 3u64);
    vec![
        MetaBlock::KubeSnapshot(r#"{"pods":[{"name":"client","ip":"10.0.0.5"}]}"#.into()),
        MetaBlock::NetState(net),
        MetaBlock::Counters(counters),
        MetaBlock::Custom { name: "drops/v1".into(), data: vec![1, 2, 3, 4, 5] },
        MetaBlock::Unknown { record_type: 999, version: 7, body: b"future".to_vec() },
    ]
}

/// Records compare through their Debug form (`PacketRecord` has no `PartialEq`).
fn dbg(r: &Record) -> String {
    format!("{r:?}")
}

fn write_sample(path: &Path, compress: bool) -> (Vec<Record>, Vec<MetaBlock>) {
    let mut h = header("node-a", CLOCK);
    h.compress = compress;
    let mut w = CaptureWriter::create(path, h).expect("create");
    let metas = sample_meta();
    let mut recs = Vec::new();
    w.write_meta(&metas[0]).expect("meta");
    for (r, hint) in sample_records() {
        w.write_record(&r, hint).expect("record");
        recs.push(r);
    }
    for m in &metas[1..] {
        w.write_meta(m).expect("meta");
    }
    let stats = w.finish().expect("finish");
    assert_eq!(stats.packets, 5);
    assert_eq!(stats.records, 4);
    assert_eq!(stats.meta_blocks, 6);
    (recs, metas)
}

fn read_all(r: impl Iterator<Item = Result<Item, CaptureError>>) -> (Vec<Record>, Vec<MetaBlock>, Vec<CaptureError>) {
    let (mut recs, mut metas, mut errs) = (Vec::new(), Vec::new(), Vec::new());
    for it in r.take(100_000) {
        match it {
            Ok(Item::Record(r)) => recs.push(r),
            Ok(Item::Meta(m)) => metas.push(m),
            Err(e) => errs.push(e),
        }
    }
    (recs, metas, errs)
}

#[test]
fn round_trip_every_record_and_meta_plain_and_zstd() {
    for (name, compress) in [("rt.pcapng", false), ("rt.pcapng.zst", false), ("rt-flag.pcapng", true)] {
        let path = tmp(name);
        let (recs, metas) = write_sample(&path, compress);
        let raw = std::fs::read(&path).expect("read back");
        let zstd_magic = raw.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]);
        assert_eq!(zstd_magic, compress || Path::new(name).extension().is_some_and(|e| e == "zst"), "{name}");
        let r = open(&path).expect("open");
        assert_eq!(r.format(), Format::Ktrace, "{name}");
        assert_eq!(r.compression().is_some(), zstd_magic);
        let hdr = r.header().expect("header").clone();
        assert_eq!(hdr.node, "node-a");
        assert_eq!(hdr.clock, CLOCK);
        assert_eq!(hdr.ktrace_version, "0.1.0-test");
        assert!(r.user_application().is_some_and(|a| a.starts_with("ktrace 0.1.0-test")));
        let (got, got_meta, errs) = read_all(r);
        assert!(errs.is_empty(), "{name}: {errs:?}");
        assert_eq!(got.iter().map(dbg).collect::<Vec<_>>(), recs.iter().map(dbg).collect::<Vec<_>>());
        assert!(
            matches!(&got_meta[0], MetaBlock::Header(h) if *h == CaptureHeader { compress: zstd_magic, ..hdr.clone() })
        );
        assert_eq!(got_meta[1..], metas[..]);
    }
}

#[test]
fn writer_and_readers_can_move_to_other_threads() {
    fn send<T: Send>() {}
    send::<CaptureWriter>();
    send::<super::CaptureReader>();
    send::<super::MergeByTime>();
}

#[test]
fn interfaces_are_one_per_node_netns_and_hint_with_readable_names() {
    let path = tmp("ifaces.pcapng");
    write_sample(&path, false);
    let mut r = open(&path).expect("open");
    for it in r.by_ref() {
        it.expect("item");
    }
    assert_eq!(
        r.interface_names(),
        vec![Some("node-a/critical-app/client"), Some("node-a/netns:4026532002"), Some("node-a/unknown-netns"),]
    );
}

#[test]
fn clock_refs_move_wall_timestamps_and_wall_clock_mode_converts() {
    let path = tmp("clock.pcapng");
    let mut w = CaptureWriter::create(&path, header("n", CLOCK)).expect("create");
    w.write_record(&Record::Packet(pkt(CLOCK.mono_ns + 10, vec![0x45; 20])), None).expect("pkt");
    let later = ClockRef { mono_ns: CLOCK.mono_ns + 1_000_000, wall_ns: CLOCK.wall_ns + 2_000_000 };
    w.write_meta(&MetaBlock::ClockRef(later)).expect("clock");
    w.write_record(&Record::Packet(pkt(later.mono_ns + 10, vec![0x45; 20])), None).expect("pkt");
    w.finish().expect("finish");
    let mut r = open(&path).expect("open");
    r.set_wall_clock(true);
    let (recs, _, errs) = read_all(r);
    assert!(errs.is_empty());
    let ts: Vec<u64> = recs.iter().map(Record::ts_ns).collect();
    assert_eq!(ts, vec![CLOCK.wall_ns + 10, later.wall_ns + 10]);
}

/// Start offsets of the blocks of a little-endian pcapng file.
fn block_ends(raw: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while at + 8 <= raw.len() {
        let len = u32::from_le_bytes(raw[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        at += len;
        ends.push(at);
    }
    ends
}

#[test]
fn truncation_at_every_byte_yields_every_complete_block() {
    let path = tmp("trunc.pcapng");
    write_sample(&path, false);
    let raw = std::fs::read(&path).expect("read");
    let ends = block_ends(&raw);
    assert_eq!(*ends.last().expect("blocks"), raw.len());
    let full_items = {
        let (r, m, _) = read_all(open_reader("full", Cursor::new(raw.clone())).expect("open"));
        r.len() + m.len()
    };
    for cut in 0..raw.len() {
        let data = raw[..cut].to_vec();
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        let Ok(r) = open_reader("cut", Cursor::new(data)) else {
            // Only a cut inside the section header can fail the open.
            assert!(complete == 0, "open failed at cut {cut}");
            continue;
        };
        let (recs, metas, errs) = read_all(r);
        // Blocks: SHB, header, kube, IDB, pkt, pkt, IDB, pkt, IDB, pkt, pkt, lost×2, rc×2, meta×4.
        let items = recs.len() + metas.len();
        assert!(items <= full_items);
        let at_boundary = ends.contains(&cut);
        if at_boundary {
            assert!(errs.is_empty(), "cut {cut} at a block boundary: {errs:?}");
        } else {
            assert_eq!(errs.len(), 1, "cut {cut}");
            assert!(errs[0].is_truncation(), "cut {cut}: {}", errs[0]);
            let last_end = ends.iter().rev().find(|&&e| e <= cut).copied().unwrap_or(0);
            assert_eq!(errs[0].offset(), Some(last_end as u64), "cut {cut}");
        }
    }
}

#[test]
fn truncated_zstd_and_gzip_streams_yield_a_prefix_then_a_truncation_warning() {
    let path = tmp("trunc.pcapng.zst");
    write_sample(&path, true);
    let zst = std::fs::read(&path).expect("read");
    let plain = zstd::decode_all(zst.as_slice()).expect("zstd");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gzip");
    let gz = gz.finish().expect("gzip");
    for raw in [zst, gz] {
        for cut in (8..raw.len()).step_by(5) {
            if let Ok(r) = open_reader("cut.zst", Cursor::new(raw[..cut].to_vec())) {
                let (_, _, errs) = read_all(r);
                assert!(errs.len() == 1 && errs[0].is_truncation(), "cut {cut}: {errs:?}");
            }
        }
    }
}

#[test]
fn corrupted_and_garbage_input_never_panics_or_hangs() {
    let path = tmp("flip.pcapng");
    write_sample(&path, false);
    let raw = std::fs::read(&path).expect("read");
    let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
    for i in 0..raw.len() {
        let mut d = raw.clone();
        d[i] ^= (rng.next() as u8) | 1;
        if let Ok(r) = open_reader("flip", Cursor::new(d)) {
            let _ = read_all(r);
        }
    }
    for len in [0usize, 1, 3, 4, 16, 100, 4096] {
        for prefix in [
            &[][..],
            &[0x0a, 0x0d, 0x0d, 0x0a][..],
            &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0][..],
            &[0x28, 0xb5, 0x2f, 0xfd][..],
            &[0x1f, 0x8b][..],
        ] {
            let mut d = prefix.to_vec();
            d.extend((0..len).map(|_| rng.next() as u8));
            if let Ok(r) = open_reader("garbage", Cursor::new(d)) {
                let _ = read_all(r);
            }
        }
    }
}

#[test]
fn hostile_block_lengths_are_errors_with_offsets() {
    let path = tmp("hostile.pcapng");
    write_sample(&path, false);
    let raw = std::fs::read(&path).expect("read");
    let second = block_ends(&raw)[0];
    for bad_len in [0u32, 4, 13, 0xFFFF_FFFC, 17 * 1024 * 1024] {
        let mut d = raw.clone();
        d[second + 4..second + 8].copy_from_slice(&bad_len.to_le_bytes());
        let r = open_reader("hostile", Cursor::new(d)).expect("open");
        let (_, _, errs) = read_all(r);
        assert_eq!(errs.len(), 1, "len {bad_len}");
        assert!(
            matches!(&errs[0], CaptureError::Corrupt { offset, .. } if *offset == second as u64),
            "len {bad_len}: {}",
            errs[0]
        );
        assert!(errs[0].to_string().contains("hostile"), "names the file");
    }
    // Leading and trailing lengths disagree.
    let mut d = raw.clone();
    let end = block_ends(&raw)[1];
    d[end - 4] ^= 0x10;
    let (_, _, errs) = read_all(open_reader("x", Cursor::new(d)).expect("open"));
    assert!(matches!(&errs[0], CaptureError::Corrupt { offset, .. } if *offset == second as u64));
    // Not a capture at all.
    for d in [&b"hello world"[..], &b""[..], &b"ab"[..]] {
        let e = open_reader("text", Cursor::new(d.to_vec())).err().expect("refused");
        assert!(e.offset().is_none_or(|o| o == 0), "{e}");
    }
}

/// The vendored fixture folder (panics when missing: never a silent skip).
#[expect(clippy::unnecessary_wraps, reason = "callers were written for a skip that no longer happens")]
fn fixtures(dir: &str) -> Option<PathBuf> {
    Some(crate::testkit::fixture(dir))
}

#[test]
fn every_pcap_fixture_opens_with_the_packet_counts_tshark_gives() {
    let Some(dir) = fixtures("pcap") else { return };
    // (file, `tshark -r FILE | wc -l`, first frame's `frame.time_epoch` in ns,
    //  link-layer header length, first frame's length): verified by hand.
    let expected: [(&str, usize, u64, u32, u32); 7] = [
        ("tcpdump__dns-badcookie.pcap", 4, 1_550_020_603_306_396_000, 4, 72),
        ("tcpdump__dns-zlip-1.pcap", 1, 955_475_231_643_199_000, 14, 77),
        ("tcpdump__dns_tcp.pcap", 11, 1_591_780_863_720_289_000, 14, 74),
        ("tcpdump__edns-opts.pcap", 42, 1_571_864_320_639_715_000, 14, 71),
        ("zeek__dns-edns-ecs.pcap", 89, 1_463_559_350_492_846_000, 14, 224),
        ("zeek__dns_long-connection.pcap", 22, 1_112_172_470_501_268_000, 14, 70),
        ("zeek__ipv6-fragmented-dns.pcap", 8, 1_331_084_278_438_444_000, 14, 135),
    ];
    let mut seen = 0;
    for (file, count, first_ts, link_hdr, first_len) in expected {
        let path = dir.join(file);
        let r = open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.format(), Format::Pcap);
        let mut r = r;
        let (recs, metas, errs) = read_all(r.by_ref());
        assert!(errs.is_empty() && metas.is_empty(), "{file}: {errs:?}");
        assert_eq!(recs.len(), count, "{file}");
        let Record::Packet(p) = &recs[0] else { panic!("{file}: not a packet") };
        assert_eq!(p.ts_ns, first_ts, "{file}");
        assert_eq!(p.hook, Hook::Wire);
        assert!(matches!(p.data.first().map(|b| b >> 4), Some(4 | 6)), "{file}: starts at IP");
        assert_eq!(p.wire_len, first_len - link_hdr, "{file}");
        assert_eq!(r.stats().packets, count as u64);
        assert_eq!(r.stats().non_ip, 0);
        seen += 1;
    }
    assert_eq!(seen, std::fs::read_dir(&dir).expect("dir").count(), "a new fixture needs its count here");
}

fn tool(name: &str) -> bool {
    let ok = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: {name} not installed");
    }
    ok
}

#[test]
fn editcap_pcapng_and_gzip_copies_of_fixtures_read_the_same() {
    let Some(dir) = fixtures("pcap") else { return };
    for f in std::fs::read_dir(&dir).expect("dir") {
        let path = f.expect("entry").path();
        let (want, _, _) = read_all(open(&path).expect("open"));
        let raw = std::fs::read(&path).expect("read");
        let gz = tmp("fixture.pcap.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).expect("gzip");
        std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
        let r = open(&gz).expect("open gz");
        assert_eq!(r.compression(), Some("gzip"));
        let (got, _, errs) = read_all(r);
        assert!(errs.is_empty());
        assert_eq!(got.iter().map(dbg).collect::<Vec<_>>(), want.iter().map(dbg).collect::<Vec<_>>());
        if tool("editcap") {
            let ng = tmp("fixture.pcapng");
            let st = Command::new("editcap").args(["-F", "pcapng"]).arg(&path).arg(&ng).status().expect("editcap");
            assert!(st.success());
            let r = open(&ng).expect("open pcapng");
            assert_eq!(r.format(), Format::Pcapng);
            let (got, _, errs) = read_all(r);
            assert!(errs.is_empty(), "{errs:?}");
            assert_eq!(
                got.iter().map(dbg).collect::<Vec<_>>(),
                want.iter().map(dbg).collect::<Vec<_>>(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn scap_fixtures_open_as_scap() {
    // Read through `capture::scap` (its own tests check what comes out).
    let Some(dir) = fixtures("scap") else { return };
    let mut n = 0;
    for f in std::fs::read_dir(&dir).expect("dir") {
        let path = f.expect("entry").path();
        if path.extension().is_none_or(|e| e != "scap") {
            continue;
        }
        let r = open(&path).expect("scap opens");
        assert_eq!(r.format(), Format::Scap);
        assert_eq!(r.compression(), Some("gzip"));
        n += 1;
    }
    assert_eq!(n, 4);
}

/// A pcapng section in either byte order, built block by block.
struct NgBuilder {
    out: Vec<u8>,
    le: bool,
}

impl NgBuilder {
    fn block(&mut self, kind: u32, body: &[u8]) {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        let w = |v: u32, le: bool| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        self.out.extend_from_slice(&w(kind, self.le));
        self.out.extend_from_slice(&w(len, self.le));
        self.out.extend_from_slice(body);
        self.out.resize(self.out.len() + (len as usize - 12 - body.len()), 0);
        self.out.extend_from_slice(&w(len, self.le));
    }
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.le { v.to_le_bytes() } else { v.to_be_bytes() }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.le { v.to_le_bytes() } else { v.to_be_bytes() }
    }
    fn shb(&mut self, le: bool) {
        self.le = le;
        let mut b = self.u32(BYTE_ORDER_MAGIC).to_vec();
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&[0xff; 8]);
        self.block(BT_SHB, &b);
    }
    fn idb(&mut self, link: u16, tsresol: Option<u8>, tsoffset: Option<u64>) {
        let mut b = self.u16(link).to_vec();
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&self.u32(0));
        if let Some(r) = tsresol {
            b.extend_from_slice(&self.u16(9));
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            b.extend_from_slice(&self.u16(14));
            b.extend_from_slice(&self.u16(8));
            b.extend_from_slice(&if self.le { o.to_le_bytes() } else { o.to_be_bytes() });
        }
        b.extend_from_slice(&[0; 4]);
        self.block(BT_IDB, &b);
    }
    fn epb(&mut self, iface: u32, ts: u64, frame: &[u8], orig: u32) {
        let mut b = self.u32(iface).to_vec();
        b.extend_from_slice(&self.u32((ts >> 32) as u32));
        b.extend_from_slice(&self.u32(ts as u32));
        b.extend_from_slice(&self.u32(frame.len() as u32));
        b.extend_from_slice(&self.u32(orig));
        b.extend_from_slice(frame);
        b.resize(b.len().div_ceil(4) * 4, 0);
        self.block(BT_EPB, &b);
    }
}

#[test]
fn foreign_pcapng_link_types_resolutions_sections_and_block_kinds() {
    let ip = dns_query("a.example", 1, [127, 0, 0, 1], [127, 0, 0, 53], 1111);
    let eth_vlan = [&[0u8; 12][..], &[0x81, 0x00, 0x00, 0x05, 0x08, 0x00], &ip].concat();
    let arp = [&[0u8; 12][..], &[0x08, 0x06, 0, 1, 8, 0]].concat();
    let sll = [&[0u8; 14][..], &[0x08, 0x00], &ip].concat();
    let sll2 = [&[0x08, 0x00][..], &[0u8; 18], &ip].concat();
    let null_be = [&[0, 0, 0, 2][..], &ip].concat();
    let mut b = NgBuilder { out: Vec::new(), le: false };
    // Section 1, big-endian: µs default, 2^-20 s, ns with an offset.
    b.shb(false);
    b.idb(1, None, None);
    b.idb(113, Some(0x80 | 0x14), None);
    b.idb(276, Some(9), Some(100));
    b.block(4, &[0, 0, 0, 0]); // name resolution block: skipped
    b.epb(0, 1_500_000_000_000_000, &eth_vlan, eth_vlan.len() as u32 + 10);
    b.epb(0, 1_500_000_000_000_001, &arp, arp.len() as u32);
    b.epb(1, 3 << 20, &sll, sll.len() as u32);
    b.epb(2, 7, &sll2, sll2.len() as u32);
    // Section 2, little-endian: interfaces start over.
    b.shb(true);
    b.idb(0, Some(3), None);
    b.epb(0, 42, &null_be, null_be.len() as u32);
    let mut spb = (ip.len() as u32 + 4).to_le_bytes().to_vec();
    spb.extend_from_slice(&null_be);
    b.block(BT_SPB, &spb);
    let mut pb = 0u16.to_le_bytes().to_vec();
    pb.extend_from_slice(&0u16.to_le_bytes());
    pb.extend_from_slice(&0u32.to_le_bytes());
    pb.extend_from_slice(&43u32.to_le_bytes());
    pb.extend_from_slice(&(null_be.len() as u32).to_le_bytes());
    pb.extend_from_slice(&(null_be.len() as u32).to_le_bytes());
    pb.extend_from_slice(&null_be);
    b.block(BT_PB, &pb);
    b.block(0x0BAD, &[0, 0, 0x7f, 0xff, 1, 2, 3, 4]); // someone else's custom block
    let mut r = open_reader("foreign.pcapng", Cursor::new(b.out)).expect("open");
    assert_eq!(r.format(), Format::Pcapng);
    let (recs, metas, errs) = read_all(r.by_ref());
    assert!(errs.is_empty() && metas.is_empty(), "{errs:?}");
    let pk: Vec<&PacketRecord> = recs
        .iter()
        .map(|r| match r {
            Record::Packet(p) => p,
            _ => panic!("not a packet"),
        })
        .collect();
    let ts: Vec<u64> = pk.iter().map(|p| p.ts_ns).collect();
    assert_eq!(ts, vec![1_500_000_000_000_000_000, 3_000_000_000, 100_000_000_007, 42_000_000, 42_000_000, 43_000_000]);
    for p in &pk {
        assert_eq!(p.data.as_ref(), &ip[..]);
        assert_eq!(p.hook, Hook::Wire);
        assert!(p.node.is_none() && p.process.is_none());
    }
    assert_eq!(pk[0].wire_len, ip.len() as u32 + 10, "snaplen-cut frame keeps its wire length");
    let st = r.stats();
    assert_eq!((st.packets, st.non_ip, st.blocks_skipped), (6, 1, 2));
}

#[test]
fn classic_pcap_big_endian_nanoseconds_and_unknown_link() {
    let ip = dns_query("b.example", 2, [10, 0, 0, 1], [10, 0, 0, 2], 2222);
    for (magic, link, expect) in [([0xa1, 0xb2, 0x3c, 0x4d], 101u32, 1usize), ([0xa1, 0xb2, 0x3c, 0x4d], 147, 0)] {
        let mut f = magic.to_vec();
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&link.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&123u32.to_be_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&ip);
        let mut r = open_reader("be.pcap", Cursor::new(f.clone())).expect("open");
        let (recs, _, errs) = read_all(r.by_ref());
        assert!(errs.is_empty());
        assert_eq!(recs.len(), expect);
        if let Some(Record::Packet(p)) = recs.first() {
            assert_eq!(p.ts_ns, 7_000_000_123);
        } else {
            assert_eq!(r.stats().unsupported_link, 1);
        }
        // Cut inside the record: a truncation warning at the record's offset.
        let (_, _, errs) = read_all(open_reader("be.pcap", Cursor::new(f[..f.len() - 3].to_vec())).expect("open"));
        assert!(matches!(errs.as_slice(), [CaptureError::Truncated { offset: 24, .. }]));
    }
}

#[test]
fn tshark_reads_the_dns_names_interfaces_comments_and_times() {
    if !tool("tshark") {
        return;
    }
    let path = tmp("tshark.pcapng");
    let mut w = CaptureWriter::create(&path, header("node-a", CLOCK)).expect("create");
    let names = ["backend.a.svc.cluster.local", "backend.svc.cluster.local", "example.com"];
    for (i, n) in names.iter().enumerate() {
        let mut p =
            pkt(CLOCK.mono_ns + i as u64 * 1_000_000, dns_query(n, i as u16, [10, 0, 0, 5], [10, 96, 0, 10], 40000));
        p.process = Some(Process { pid: 123, tid: 125, comm: "dig".into(), thread: "isc-net-0000".into() });
        p.netns_ino = 4_026_532_001;
        w.write_record(&Record::Packet(p), Some("critical-app/client")).expect("write");
    }
    w.write_record(&Record::Lost { ts_ns: CLOCK.mono_ns, count: 1, node: None }, None).expect("lost");
    w.finish().expect("finish");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-Y", "dns", "-T", "fields", "-E", "separator=|"])
        .args(["-e", "dns.qry.name", "-e", "frame.interface_name", "-e", "frame.comment", "-e", "frame.time_epoch"])
        .output()
        .expect("tshark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], names[i]);
        assert_eq!(row[1], "node-a/critical-app/client");
        assert!(
            row[2].contains("pid=123") && row[2].contains("comm=dig") && row[2].contains("hook=socket_egress"),
            "{}",
            row[2]
        );
        let secs = (CLOCK.wall_ns + i as u64 * 1_000_000) as f64 / 1e9;
        let got: f64 = row[3].parse().expect("epoch");
        assert!((got - secs).abs() < 1e-6, "{got} vs {secs}");
    }
}

#[test]
fn merge_by_time_interleaves_nodes_on_the_wall_clock() {
    // Two nodes with very different monotonic clocks but overlapping wall time.
    let a_clock = CLOCK;
    let b_clock = ClockRef { mono_ns: 900_000_000_000, wall_ns: CLOCK.wall_ns + 500 };
    let mk = |name: &str, clock: ClockRef, offsets: &[u64]| {
        let path = tmp(name);
        let mut w = CaptureWriter::create(&path, header(name, clock)).expect("create");
        for o in offsets {
            let mut p = pkt(clock.mono_ns + o, vec![0x45; 20]);
            p.node = Some(Arc::from(name));
            w.write_record(&Record::Packet(p), None).expect("write");
        }
        w.finish().expect("finish");
        open(&path).expect("open")
    };
    let a = mk("node-a", a_clock, &[0, 1000, 2000]);
    let b = mk("node-b", b_clock, &[0, 1000]);
    let foreign = open_reader("empty-ish.pcap", {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&101u32.to_le_bytes());
        Cursor::new(f)
    })
    .expect("open");
    let merged: Vec<(usize, u64)> = merge_by_time(vec![a, b, foreign])
        .filter_map(|(i, it)| match it.expect("item") {
            Item::Record(r) => Some((i, r.ts_ns() - CLOCK.wall_ns)),
            Item::Meta(_) => None,
        })
        .collect();
    assert_eq!(merged, vec![(0, 0), (1, 500), (0, 1000), (1, 1500), (0, 2000)]);
}

/// The committed seeds in ktrace's own format read as whole captures,
/// compressed or not: a seed that only reaches an error (as the
/// twice-compressed `.zst` one did) fuzzes nothing past the opening.
#[test]
fn committed_capture_seeds_read_whole() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/pcapng_read");
    let fresh = tmp("seed-check.pcapng");
    let (recs, metas) = write_sample(&fresh, false);
    for (name, zst) in [("ktrace-sample.pcapng", false), ("ktrace-sample.pcapng.zst", true)] {
        let r = open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((r.format(), r.compression().is_some()), (Format::Ktrace, zst), "{name}");
        let (got, got_meta, errs) = read_all(r);
        assert!(errs.is_empty(), "{name}: {errs:?}");
        assert_eq!((got.len(), got_meta.len()), (recs.len(), metas.len() + 1), "{name}: records, meta blocks");
    }
}

/// Writes the seed corpora of the capture, agent, packet and DNS fuzz
/// targets (`fuzz/seeds/<target>/`, committed) from this file's sample
/// capture and the pcap fixtures. Run by `cargo xtask fuzz --write-seeds`,
/// which sets `KTRACE_FUZZ_SEEDS`.
#[test]
#[ignore = "writes fuzz seeds; run by `cargo xtask fuzz --write-seeds`"]
fn write_fuzz_seeds() {
    use prost::Message as _;

    use crate::{
        agent::proto::{Finding, Progress, SubscribeResponse},
        decode::{dns::test_pcap, packet},
    };

    let root = PathBuf::from(std::env::var_os("KTRACE_FUZZ_SEEDS").expect("KTRACE_FUZZ_SEEDS names fuzz/seeds"));
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), data).expect("write seed");
    };

    // pcapng_read: a ktrace capture with every record and meta kind, plain
    // and zstd (the writer compresses a `.zst` path itself: once).
    for name in ["ktrace-sample.pcapng", "ktrace-sample.pcapng.zst"] {
        let path = tmp(name);
        write_sample(&path, false);
        put("pcapng_read", name, &std::fs::read(&path).expect("read sample"));
    }
    // The records `ktrace drops` records besides packets: a kernel drop
    // (IPv4 UDP in VXLAN, cut at 128 bytes) and TCP connection events.
    let vxlan = {
        let inner = dns_query("x.svc", 7, [10, 244, 1, 5], [10, 244, 2, 7], 41000);
        let mut outer = dns_query("", 0, [192, 168, 0, 1], [192, 168, 0, 2], 50000);
        outer.truncate(28);
        outer[22..24].copy_from_slice(&4789u16.to_be_bytes());
        outer.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
        outer.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0]);
        outer.extend_from_slice(&inner);
        let total = u16::try_from(outer.len()).expect("small");
        outer[2..4].copy_from_slice(&total.to_be_bytes());
        outer[24..26].copy_from_slice(&(total - 20).to_be_bytes());
        outer.truncate(128);
        outer
    };
    put("packet_parse", "vxlan-drop-128", &vxlan);
    let ep = |ip: [u8; 4], port| crate::event::Endpoint { ip: std::net::IpAddr::from(ip), port };
    let mut more = vec![(
        Record::Drop(crate::event::DropRecord {
            ts_ns: CLOCK.mono_ns + 6_000,
            reason: 8,
            reason_name: Arc::from("NETFILTER_DROP"),
            location: 0xffff_ffff_8100_0000,
            ifindex: 4,
            netns_ino: 4_026_532_001,
            wire_len: 1400,
            data: Bytes::from(vxlan),
            node: Some(Arc::from("node-a")),
            process: None,
            count: 1,
        }),
        None,
    )];
    for (i, kind) in [
        crate::event::ConnKind::State { old: 7, new: 2 },
        crate::event::ConnKind::Retransmit { state: 2 },
        crate::event::ConnKind::ResetReceived { state: 2 },
        crate::event::ConnKind::ResetSent { state: 1 },
    ]
    .into_iter()
    .enumerate()
    {
        more.push((
            Record::Conn(crate::event::ConnRecord {
                ts_ns: CLOCK.mono_ns + 7_000 + i as u64,
                kind,
                src: ep([10, 244, 1, 5], 43210),
                dst: ep([10, 244, 2, 7], 8080),
                sock: 0xffff_8880_0000_1000,
                process: (i == 0).then(|| Process { pid: 77, tid: 77, comm: "curl".into(), thread: "curl".into() }),
                netns_ino: 4_026_532_001,
                node: Some(Arc::from("node-a")),
            }),
            None,
        ));
    }
    {
        let mut w = CaptureWriter::in_memory(header("node-a", CLOCK));
        for m in sample_meta() {
            w.write_meta(&m).expect("meta");
        }
        for (r, hint) in sample_records().into_iter().chain(more.clone()) {
            w.write_record(&r, hint).expect("record");
        }
        let bytes = w.take_bytes();
        let (recs, _, errs) = read_all(open_reader("seed", Cursor::new(bytes.clone())).expect("seed opens"));
        assert!(errs.is_empty(), "{errs:?}");
        let drops = recs.iter().filter(|r| matches!(r, Record::Drop(_))).count();
        let conns = recs.iter().filter(|r| matches!(r, Record::Conn(_))).count();
        assert_eq!((drops, conns), (1, 4));
        put("pcapng_read", "ktrace-drops-conn.pcapng", &bytes);
    }

    // agent_stream: the same capture as an agent streams it, a few records
    // per message, with findings and progress counters between them.
    let mut w = CaptureWriter::in_memory(header("node-a", CLOCK));
    let mut msgs = Vec::new();
    let metas = sample_meta();
    w.write_meta(&metas[0]).expect("meta");
    for (i, (r, hint)) in sample_records().into_iter().chain(more).enumerate() {
        w.write_record(&r, hint).expect("record");
        if i % 3 == 2 {
            let mut m = SubscribeResponse { pcapng: w.take_bytes(), ..Default::default() };
            m.progress =
                Some(Progress { watermark_unix_ns: CLOCK.wall_ns + i as u64, kernel_lost: 1, ..Default::default() });
            if i == 2 {
                m.findings.push(Finding { ts_unix_ns: CLOCK.wall_ns, json: r#"{"kind":"ndots_fanout"}"#.into() });
            }
            msgs.push(m);
        }
    }
    for m in &metas[1..] {
        w.write_meta(m).expect("meta");
    }
    msgs.push(SubscribeResponse { pcapng: w.take_bytes(), ..Default::default() });
    let mut framed = Vec::new();
    for m in &msgs {
        let b = m.encode_to_vec();
        framed.extend_from_slice(&u16::try_from(b.len()).expect("small message").to_be_bytes());
        framed.extend_from_slice(&b);
    }
    put("agent_stream", "ktrace-sample.msgs", &framed);

    // The pcap fixtures: whole files for the reader, their IP packets for the
    // packet parsers (one packet, and the whole file as a length-framed
    // sequence), their DNS payloads for the DNS decoder.
    let dir = fixtures("pcap").expect("pcap fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir).expect("fixtures").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        put("pcapng_read", &name, &std::fs::read(dir.join(&name)).expect("fixture"));
        let pkts = test_pcap::read(&name).expect("fixture packets");
        let mut seq = Vec::new();
        for (i, (_, ip)) in pkts.iter().enumerate() {
            if let Ok(n) = u16::try_from(ip.len()) {
                seq.extend_from_slice(&n.to_be_bytes());
                seq.extend_from_slice(ip);
            }
            if i < 3 {
                put("packet_parse", &format!("{name}.{i}"), ip);
            }
            let Ok(v) = packet::parse(ip) else { continue };
            let dns = match v.transport {
                crate::event::Transport::Tcp if v.payload.len() > 2 => &v.payload[2..],
                crate::event::Transport::Udp => v.payload,
                crate::event::Transport::Tcp => continue,
            };
            if i < 6 && !dns.is_empty() {
                put("dns_decode", &format!("{name}.{i}"), dns);
            }
        }
        put("packet_parse", &format!("{name}.seq"), &seq);
    }
}

/// Everything a reader gives, as text: items, then errors, then counters.
fn transcript(r: Result<super::CaptureReader, CaptureError>) -> String {
    match r {
        Err(e) => format!("open error: {e}"),
        Ok(mut r) => {
            let mut s = String::new();
            for it in r.by_ref().take(100_000) {
                match it {
                    Ok(i) => {
                        let _ = writeln!(s, "{i:?}");
                    }
                    Err(e) => {
                        let _ = writeln!(s, "error: {e} (truncation {})", e.is_truncation());
                    }
                }
            }
            let _ = write!(s, "{:?} {:?} {:?}", r.stats(), r.format(), r.truncated());
            s
        }
    }
}

/// Issue 18: a plain capture opened by path is memory-mapped and parsed in
/// place; it must give exactly what the streaming reader gives (items,
/// errors at the same offsets, counters), for whole files and for files cut
/// at every byte (pcapng) or at every 31st byte (pcap fixtures).
#[test]
fn mapped_and_streamed_reading_give_identical_items_and_errors() {
    let path = tmp("mapped.pcapng");
    write_sample(&path, false);
    let raw = std::fs::read(&path).expect("read");
    let mut inputs: Vec<(String, Vec<u8>, usize)> = vec![("sample.pcapng".into(), raw, 1)];
    if let Some(dir) = fixtures("pcap") {
        for f in ["tcpdump__dns_tcp.pcap", "zeek__dns-edns-ecs.pcap"] {
            inputs.push((f.into(), std::fs::read(dir.join(f)).expect("fixture"), 31));
        }
    }
    let cut_path = tmp("mapped-cut");
    for (name, raw, step) in inputs {
        for cut in (0..=raw.len()).step_by(step).chain([raw.len()]) {
            std::fs::write(&cut_path, &raw[..cut]).expect("write cut");
            // The reader names the file in errors: give both the same name.
            let mapped = transcript(open(&cut_path));
            let streamed = transcript(open_reader(&cut_path, Cursor::new(raw[..cut].to_vec())));
            assert_eq!(mapped, streamed, "{name} cut at {cut}");
        }
    }
    // A shared packet is a view of the mapping, not a copy.
    let mut r = open(&path).expect("open");
    let first = r.find_map(|i| match i {
        Ok(Item::Record(Record::Packet(p))) => Some(p),
        _ => None,
    });
    assert!(first.is_some_and(|p| !p.data.is_empty()));
}

/// Issue 18: per-packet options are decoded once per distinct socket and
/// then found by their bytes; whatever the history (more sockets than the
/// cache has slots, colliding slots, cut, mutated and over-long options),
/// a lookup gives exactly what decoding that one option alone gives.
#[test]
fn cached_option_decoding_is_the_one_off_decoding() {
    use super::{
        meta::{MetaCache, decode_packet_meta_with, encode_packet_meta},
        pcapng::BlockBuf,
    };
    let mut cache = MetaCache::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let long = "x".repeat(300);
    let names: [Option<(&str, &str)>; 5] =
        [None, Some(("dig", "dig")), Some(("coredns", "coredns")), Some(("dnsperf", "worker-1")), Some((&long, &long))];
    let hooks = [Hook::SocketEgress, Hook::SocketIngress, Hook::TcEgress, Hook::TcIngress, Hook::Wire];
    let (mut hits, mut some) = (0u32, 0u32);
    for i in 0..40_000u32 {
        let roll = next();
        // Mostly a few busy sockets, sometimes one of thousands.
        let sock = if roll % 4 == 0 { (roll >> 8) % 3_000 } else { (roll >> 8) % 6 };
        let mut p = PacketRecord::bare(next(), hooks[(sock % 5) as usize], Bytes::new());
        p.cgroup_id = sock.wrapping_mul(0x1_0000_0001);
        p.netns_cookie = sock / 3;
        p.netns_ino = 4_026_531_840 + (sock / 7) as u32;
        p.ifindex = (sock % 4) as u32;
        p.wire_len = next() as u32;
        p.process = names[(sock % 5) as usize].map(|(comm, thread)| Process {
            pid: sock as u32,
            tid: sock as u32 + (sock % 2) as u32,
            comm: comm.into(),
            thread: thread.into(),
        });
        let mut buf = BlockBuf::default();
        encode_packet_meta(&p, &mut buf);
        let mut v = buf.b;
        match i % 13 {
            0 => v.truncate((next() % (v.len() as u64 + 1)) as usize),
            1 => {
                let at = (next() % v.len() as u64) as usize;
                v[at] ^= 1 << (next() % 8);
            }
            2 => v.extend_from_slice(&[0; 700]),
            _ => {}
        }
        let want = decode_packet_meta_with(&v, &mut |b| String::from_utf8_lossy(b).into()).map(|m| {
            let facts = (m.hook, m.process, m.cgroup_id, m.netns_cookie, m.netns_ino, m.ifindex);
            (format!("{facts:?}"), m.ts_ns, m.wire_len)
        });
        let got = cache.get(&v).map(|(slot, ts, wire_len)| {
            let f = cache.facts(slot);
            let facts = (f.hook, f.process.clone(), f.cgroup_id, f.netns_cookie, f.netns_ino, f.ifindex);
            assert!(f.ts_ns == 0 && f.wire_len == 0 && f.node.is_none(), "a slot keeps no packet's own fields");
            (format!("{facts:?}"), ts, wire_len)
        });
        assert_eq!(got, want, "option {i}: {v:02x?}");
        some += u32::from(want.is_some());
        hits += u32::from(i % 13 > 2 && sock < 6);
    }
    assert!(some > 30_000 && hits > 15_000, "the cases are not all alike: {some} decoded, {hits} repeats");
}

/// A capture of ktrace packets from a few sockets, each seen several
/// times, behind the sample's blocks: what the fast path for packet
/// blocks reads.
fn write_busy_sample(path: &Path) {
    let mut w = CaptureWriter::create(path, header("node-a", CLOCK)).expect("create");
    for round in 0..3u64 {
        for (r, hint) in sample_records() {
            let r = match r {
                Record::Packet(mut p) => {
                    p.ts_ns += round * 10_000;
                    p.wire_len += round as u32;
                    Record::Packet(p)
                }
                other => other,
            };
            w.write_record(&r, hint).expect("record");
        }
    }
    w.finish().expect("finish");
}

/// Issue 18: a mapped ktrace capture's packet blocks are read by a fast
/// path with fewer checks; any byte of its packet and interface blocks
/// changed (lengths, trailers, interface ids, captured lengths, option
/// codes and lengths, the options themselves) gives exactly the items,
/// errors and counters the streaming reader (every check, no fast path) gives.
#[test]
fn mapped_fast_path_and_streaming_agree_on_every_corrupted_byte() {
    let path = tmp("busy-sample.pcapng");
    write_busy_sample(&path);
    let raw = std::fs::read(&path).expect("read");
    let cut_path = tmp("busy-sample-bad.pcapng");
    let whole = transcript(open(&path));
    assert_eq!(whole, transcript(open_reader(&path, Cursor::new(raw.clone()))));
    assert!(whole.matches("Record(Packet").count() == 15, "{whole}");
    let mut start = 0;
    let mut bytes = Vec::new();
    for end in block_ends(&raw) {
        let kind = u32::from_le_bytes(raw[start..start + 4].try_into().expect("4 bytes"));
        if kind == BT_EPB || kind == BT_IDB {
            bytes.extend(start..end);
        }
        start = end;
    }
    assert!(bytes.len() > raw.len() / 2, "{} of {} bytes", bytes.len(), raw.len());
    for at in bytes {
        for flip in [0x01u8, 0xFF] {
            let mut bad = raw.clone();
            bad[at] ^= flip;
            std::fs::write(&cut_path, &bad).expect("write");
            let mapped = transcript(open(&cut_path));
            let streamed = transcript(open_reader(&cut_path, Cursor::new(bad)));
            assert_eq!(mapped, streamed, "byte {at} ^ {flip:#x}");
        }
    }
}

/// The clock conversion without 128-bit arithmetic is the one with it.
#[test]
fn wall_clock_conversion_saturates_like_the_exact_sum() {
    let edge = [0, 1, 5_000_000_000, 1 << 62, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    for mono_ns in edge {
        for wall_ns in edge {
            let c = ClockRef { mono_ns, wall_ns };
            for t in edge {
                let exact = (i128::from(t) + i128::from(wall_ns) - i128::from(mono_ns)).clamp(0, i128::from(u64::MAX));
                assert_eq!(i128::from(c.to_wall(t)), exact, "{c:?} at {t}");
            }
        }
    }
}
