//! Raw ring-buffer bytes → typed [`Record`]s. Each record is read as its
//! `#[repr(C)]` struct from `tracer_common` (length checked first, then one
//! unaligned copy), and its header's version is checked before anything
//! else is trusted: a short record, an unknown kind or version is an error
//! the caller counts (`ring_bad_items`), never a panic.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use aya::Pod;
use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tracer_common::{
    ConnEvent, DROP_SNAP, DropEventHead, EVENT_VERSION, EventHeader, EventKind, EventTag, PACKET_EVENT_HDR_LEN,
    PacketEventHead, REF_HEAD_LEN, SNAP_LEN, conn_kind, flags,
};

use crate::event::{ConnKind, ConnRecord, DropRecord, Endpoint, Hook, PacketRecord, Process, Record};

/// What decoding needs to know about the running kernel.
#[derive(Debug, Default)]
pub struct DecodeCtx {
    /// `skb_drop_reason` value → name (from BTF).
    pub reason_names: HashMap<u32, Arc<str>>,
}

impl DecodeCtx {
    fn reason(&self, r: u32) -> Arc<str> {
        self.reason_names.get(&r).cloned().unwrap_or_else(|| format!("REASON_{r}").into())
    }
}

/// Why a ring-buffer item could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RawError {
    /// Shorter than its layout (or its own length field) says.
    #[error("event of {0} bytes is too short")]
    Short(usize),
    /// An event kind this userspace does not know (newer kernel object?).
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    /// A layout version this userspace does not read: the kernel object and
    /// the userspace decoding it come from different builds.
    #[error(
        "event kind {kind} has layout version {version}, this ktrace reads version {expected} \
         (kernel object and userspace from different builds?)"
    )]
    UnknownVersion {
        /// The record's kind.
        kind: u32,
        /// The version the kernel wrote.
        version: u16,
        /// The version this build reads ([`EVENT_VERSION`]).
        expected: u16,
    },
    /// A hook value this userspace does not know.
    #[error("unknown hook {0}")]
    UnknownHook(u8),
    /// A reference to an earlier sighting's payload, given to [`decode`],
    /// which cannot resolve it (`bpf::dedupe::Resolver` does).
    #[error("reference item (to egress record {0}) outside a dedupe resolver")]
    Reference(u64),
}

/// Reads a plain-data record from the front of `b`.
///
/// `T: Pod` (implemented by `tracer_common` for its `#[repr(C)]` layouts of
/// integers and byte arrays) is valid for any bytes; the ring gives no
/// alignment guarantee the type system can see, hence the unaligned read.
fn read<T: Pod>(b: &[u8]) -> Result<T, RawError> {
    if b.len() < size_of::<T>() {
        return Err(RawError::Short(b.len()));
    }
    // SAFETY: `b` holds at least `size_of::<T>()` bytes (checked above), any
    // bit pattern is a valid `T` (`Pod`), and `read_unaligned` has no
    // alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// A NUL-padded kernel string.
#[must_use]
pub fn comm_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Most distinct name pairs [`intern_names`] keeps (then it starts over:
/// bounded memory whatever the processes are called).
const MAX_COMMS: usize = 4096;

/// A process's and its thread's 16-byte names, back to back → both interned.
type NamePairs = crate::hash::FastMap<[u8; 32], (Arc<str>, Arc<str>)>;

/// A name pair with its key, as [`Comms::recent`] keeps it.
type Recent = Option<([u8; 32], Arc<str>, Arc<str>)>;

/// Interned name pairs, and the last two looked up.
#[derive(Default)]
struct Comms {
    map: NamePairs,
    /// Most recent first: a DNS exchange alternates between its client and
    /// its resolver, so nearly every lookup is one of these two, found by
    /// comparing 32 bytes instead of hashing them and probing the map.
    recent: [Recent; 2],
}

thread_local! {
    static COMMS: std::cell::RefCell<Comms> = std::cell::RefCell::new(Comms::default());
}

/// The 16-byte kernel `comm`s of a process and its thread as shared
/// strings, looked up together: the same few pairs repeat on every event,
/// and two allocations per event were ~3 % of live CPU (two lookups ~1.6 %).
fn intern_names(comm: &[u8; 16], thread: &[u8; 16]) -> (Arc<str>, Arc<str>) {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(comm);
    key[16..].copy_from_slice(thread);
    COMMS.with_borrow_mut(|m| {
        if let Some((k, c, t)) = &m.recent[0]
            && *k == key
        {
            return (Arc::clone(c), Arc::clone(t));
        }
        if let Some((k, c, t)) = &m.recent[1]
            && *k == key
        {
            let found = (Arc::clone(c), Arc::clone(t));
            m.recent.swap(0, 1);
            return found;
        }
        let (c, t) = if let Some((c, t)) = m.map.get(&key) {
            (Arc::clone(c), Arc::clone(t))
        } else {
            if m.map.len() >= MAX_COMMS {
                m.map.clear();
            }
            let c: Arc<str> = comm_str(comm).into();
            let t: Arc<str> = if thread == comm { Arc::clone(&c) } else { comm_str(thread).into() };
            m.map.insert(key, (Arc::clone(&c), Arc::clone(&t)));
            (c, t)
        };
        m.recent[1] = m.recent[0].take();
        m.recent[0] = Some((key, Arc::clone(&c), Arc::clone(&t)));
        (c, t)
    })
}

fn process_of(h: &EventHeader) -> Option<Process> {
    (h.flags & flags::HAS_PROCESS != 0).then(|| {
        let (comm, thread) = intern_names(&h.comm, &h.thread_comm);
        Process { pid: h.tgid, tid: h.tid, comm, thread }
    })
}

fn addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == 10 { IpAddr::V6(Ipv6Addr::from(*a)) } else { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) }
}

/// The `cap_len` bytes after a fixed part of `head` bytes, at most `max`.
fn payload_slice(b: &[u8], head: usize, cap_len: u16, max: usize) -> Result<&[u8], RawError> {
    let end = head + usize::from(cap_len).min(max);
    b.get(head..end).ok_or(RawError::Short(b.len()))
}

/// [`payload_slice`], copied into its own buffer.
fn payload(b: &[u8], head: usize, cap_len: u16, max: usize) -> Result<Bytes, RawError> {
    payload_slice(b, head, cap_len, max).map(Bytes::copy_from_slice)
}

/// Size of the buffers [`Payloads`] cuts DNS payloads from.
const PAYLOAD_CHUNK: usize = 16 * 1024;

/// Where a live reader copies DNS payloads out of the ring: cut from shared
/// chunks instead of one allocation each. An egress payload is shared at
/// once with the dedupe table (`bpf::dedupe`), which a `Bytes` of its own
/// allocation pays for with a second allocation (its promotion to shared);
/// cut from a chunk, both are a reference count. Nothing downstream keeps a
/// packet's bytes (messages are decoded where they lie, the agent's history
/// copies its blocks, the drops stage keeps parsed headers), so a chunk
/// lives as long as its payloads still in the dedupe table ([`SLOTS`]
/// recent egress payloads: about 1 MiB of chunks at 100-byte messages).
/// Only those kept payloads are cut from chunks ([`decode_item_with`]).
///
/// [`SLOTS`]: super::dedupe::SLOTS
#[derive(Debug, Default)]
pub struct Payloads {
    chunk: BytesMut,
}

impl Payloads {
    /// `s`, copied into the current chunk (a fresh one when it is full).
    pub fn copy(&mut self, s: &[u8]) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < s.len() {
            self.chunk = BytesMut::with_capacity(PAYLOAD_CHUNK.max(s.len()));
        }
        self.chunk.extend_from_slice(s);
        self.chunk.split().freeze()
    }
}

/// An ingress reference's own IP and UDP headers, inline: they are only
/// compared with the egress record's (and joined to its message after a
/// DNAT), never kept, so they cost no allocation.
#[derive(Clone, Copy, Debug)]
pub struct RefHead {
    len: u8,
    b: [u8; REF_HEAD_LEN],
}

impl RefHead {
    /// The first [`REF_HEAD_LEN`] bytes of `s`.
    #[must_use]
    pub fn new(s: &[u8]) -> Self {
        let n = s.len().min(REF_HEAD_LEN);
        let mut b = [0u8; REF_HEAD_LEN];
        b[..n].copy_from_slice(&s[..n]);
        #[expect(clippy::cast_possible_truncation, reason = "at most REF_HEAD_LEN (64)")]
        Self { len: n as u8, b }
    }

    /// The headers.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.b[..usize::from(self.len)]
    }
}

/// A packet record's fixed part (`data` empty), its `seq` and `cap_len`;
/// a [`tracer_common::PacketRefEvent`] has the same fixed part.
fn decode_packet_head(b: &[u8], node: Option<&Arc<str>>) -> Result<(PacketRecord, u64, u16), RawError> {
    let ev: PacketEventHead = read(b)?;
    let hook = Hook::from_raw(ev.hook).ok_or(RawError::UnknownHook(ev.hook))?;
    let fl = ev.hdr.flags;
    let rec = PacketRecord {
        ts_ns: ev.hdr.ts_ns,
        hook,
        process: process_of(&ev.hdr),
        cgroup_id: ev.hdr.cgroup_id,
        netns_cookie: if fl & flags::HAS_NETNS_COOKIE != 0 { ev.netns_cookie } else { 0 },
        netns_ino: if fl & flags::HAS_NETNS_INO != 0 { ev.netns_ino } else { 0 },
        ifindex: ev.ifindex,
        wire_len: ev.pkt_len,
        data: Bytes::new(),
        node: node.cloned(),
    };
    Ok((rec, ev.seq, ev.cap_len))
}

fn decode_drop(b: &[u8], node: Option<&Arc<str>>, ctx: &DecodeCtx) -> Result<Record, RawError> {
    let ev: DropEventHead = read(b)?;
    Ok(Record::Drop(DropRecord {
        ts_ns: ev.tag.ts_ns,
        reason: ev.reason,
        reason_name: ctx.reason(ev.reason),
        location: ev.location,
        ifindex: ev.ifindex,
        netns_ino: ev.netns_ino,
        wire_len: ev.pkt_len,
        data: payload(b, size_of::<DropEventHead>(), ev.cap_len, DROP_SNAP)?,
        node: node.cloned(),
        // Drops are seen where the kernel frees the packet: no process.
        process: None,
        count: ev.count.max(1),
    }))
}

fn decode_conn(b: &[u8], node: Option<&Arc<str>>) -> Result<Record, RawError> {
    let ev: ConnEvent = read(b)?;
    let (old, new) = (ev.old_state, ev.new_state);
    let kind = match ev.what {
        conn_kind::STATE => ConnKind::State { old, new },
        conn_kind::RESET_RECEIVED => ConnKind::ResetReceived { state: old },
        conn_kind::RESET_SENT => ConnKind::ResetSent { state: old },
        conn_kind::RETRANSMIT => ConnKind::Retransmit { state: old },
        other => return Err(RawError::UnknownHook(other)),
    };
    Ok(Record::Conn(ConnRecord {
        ts_ns: ev.hdr.ts_ns,
        kind,
        src: Endpoint { ip: addr(ev.family, &ev.saddr), port: ev.sport },
        dst: Endpoint { ip: addr(ev.family, &ev.daddr), port: ev.dport },
        sock: ev.sock,
        process: process_of(&ev.hdr),
        netns_ino: ev.netns_ino,
        node: node.cloned(),
    }))
}

/// One decoded ring-buffer item.
#[derive(Debug)]
pub enum Item {
    /// A complete record. `seq` is non-zero on an egress DNS packet that
    /// later [`Item::Ref`]s may refer to.
    Record {
        /// The record.
        record: Record,
        /// [`tracer_common::PacketEvent::seq`], 0 for other records.
        seq: u64,
    },
    /// An ingress sighting of a DNS message whose payload the egress record
    /// `seq` carries: everything of the sighting's record but the payload
    /// (`data` holds only its own IP and UDP headers).
    Ref {
        /// The sighting, without `data`.
        record: PacketRecord,
        /// The egress record it refers to.
        seq: u64,
        /// The sighting's own IP and UDP headers.
        head: RefHead,
    },
}

/// Decodes one ring-buffer item: its tag first (kind and layout
/// version), then the record of that kind. References stay references
/// (`bpf::dedupe::Resolver` turns them into packets).
pub fn decode_item(b: &[u8], node: Option<&Arc<str>>, ctx: &DecodeCtx) -> Result<Item, RawError> {
    decode_item_with(b, node, ctx, None)
}

/// [`decode_item`], with DNS payloads cut from `payloads` when given.
pub fn decode_item_with(
    b: &[u8],
    node: Option<&Arc<str>>,
    ctx: &DecodeCtx,
    payloads: Option<&mut Payloads>,
) -> Result<Item, RawError> {
    let hdr: EventTag = read(b)?;
    let kind = EventKind::try_from(hdr.kind).map_err(RawError::UnknownKind)?;
    if hdr.version != EVENT_VERSION {
        return Err(RawError::UnknownVersion { kind: hdr.kind, version: hdr.version, expected: EVENT_VERSION });
    }
    let rec = |record| Item::Record { record, seq: 0 };
    match kind {
        EventKind::DnsPacket => {
            let (mut p, seq, cap_len) = decode_packet_head(b, node)?;
            let data = payload_slice(b, PACKET_EVENT_HDR_LEN, cap_len, SNAP_LEN)?;
            // Only what the dedupe table keeps (egress sightings with a `seq`)
            // is cut from a chunk: chunks then hold kept payloads in ring order
            // and are freed as the table moves on. A short-lived payload in a
            // chunk could pin 16 KiB behind each of the table's slots.
            p.data = match payloads {
                Some(a) if seq != 0 && p.hook == Hook::SocketEgress => a.copy(data),
                _ => Bytes::copy_from_slice(data),
            };
            Ok(Item::Record { record: Record::Packet(p), seq })
        }
        EventKind::DnsPacketRef => {
            let (record, seq, cap_len) = decode_packet_head(b, node)?;
            let head = RefHead::new(payload_slice(b, PACKET_EVENT_HDR_LEN, cap_len, REF_HEAD_LEN)?);
            Ok(Item::Ref { record, seq, head })
        }
        EventKind::Drop => decode_drop(b, node, ctx).map(rec),
        EventKind::Conn => decode_conn(b, node).map(rec),
    }
}

/// Decodes one ring-buffer item that is not a reference (a reference is
/// [`RawError::Reference`]; see [`decode_item`]).
pub fn decode(b: &[u8], node: Option<&Arc<str>>, ctx: &DecodeCtx) -> Result<Record, RawError> {
    match decode_item(b, node, ctx)? {
        Item::Record { record, .. } => Ok(record),
        Item::Ref { seq, .. } => Err(RawError::Reference(seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{DropEvent, PacketEvent, hook};

    /// The bytes of a plain-data record, as the ring hands them over.
    fn bytes_of<T: Pod>(v: &T) -> Vec<u8> {
        // SAFETY: `T: Pod` is plain data of `size_of::<T>()` bytes.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"dig");
        let mut thread = [0u8; 16];
        thread[..12].copy_from_slice(b"isc-net-0000");
        EventHeader {
            kind: kind as u32,
            version: EVENT_VERSION,
            flags: flags::HAS_PROCESS | flags::HAS_NETNS_INO,
            ts_ns: 42,
            tid: 101,
            tgid: 100,
            cgroup_id: 7,
            comm,
            thread_comm: thread,
        }
    }

    fn packet() -> PacketEvent {
        let mut data = [0u8; SNAP_LEN];
        data[..4].copy_from_slice(&[0x45, 0, 0, 40]);
        PacketEvent {
            hdr: header(EventKind::DnsPacket),
            netns_cookie: 9,
            netns_ino: 4_026_531_840,
            ifindex: 3,
            pkt_len: 40,
            cap_len: 4,
            hook: hook::CGROUP_EGRESS,
            ip_version: 4,
            seq: 0,
            data,
        }
    }

    /// A packet record as the kernel submits it: header plus `cap_len` bytes.
    fn packet_bytes(ev: &PacketEvent) -> Vec<u8> {
        let mut b = bytes_of(ev);
        b.truncate(PACKET_EVENT_HDR_LEN + usize::from(ev.cap_len));
        b
    }

    fn drop_event() -> DropEvent {
        let mut d = DropEvent {
            tag: EventTag { kind: EventKind::Drop as u32, version: EVENT_VERSION, flags: 0, ts_ns: 42 },
            location: 0xffff_ffff_8100_0000,
            reason: 12,
            ifindex: 3,
            netns_ino: 77,
            pkt_len: 60,
            cap_len: 2,
            pad: 0,
            count: 1,
            data: [0; DROP_SNAP],
        };
        d.data[..2].copy_from_slice(&[0x45, 0]);
        d
    }

    /// A drop record as the kernel submits it: the fixed part plus `cap_len` bytes.
    fn drop_bytes(d: &DropEvent) -> Vec<u8> {
        let mut b = bytes_of(d);
        b.truncate(size_of::<DropEventHead>() + usize::from(d.cap_len));
        b
    }

    fn conn_event() -> ConnEvent {
        let mut c = ConnEvent {
            hdr: header(EventKind::Conn),
            sock: 0xabc,
            netns_ino: 5,
            what: conn_kind::STATE,
            old_state: 7,
            new_state: 2,
            family: 2,
            sport: 40000,
            dport: 8081,
            pad: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        c.saddr[..4].copy_from_slice(&[10, 244, 1, 20]);
        c.daddr[..4].copy_from_slice(&[10, 244, 2, 30]);
        c
    }

    fn reasons() -> DecodeCtx {
        let mut ctx = DecodeCtx::default();
        ctx.reason_names.insert(12, "NETFILTER_DROP".into());
        ctx
    }

    #[test]
    fn packet_round_trips() {
        let ev = packet();
        let Record::Packet(p) = decode(&packet_bytes(&ev), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a packet")
        };
        assert_eq!(p.ts_ns, 42);
        assert_eq!(p.hook, Hook::SocketEgress);
        let proc_ = p.process.unwrap();
        assert_eq!((proc_.pid, proc_.tid, &*proc_.comm, &*proc_.thread), (100, 101, "dig", "isc-net-0000"));
        assert_eq!((p.cgroup_id, p.ifindex, p.wire_len), (7, 3, 40));
        assert_eq!(p.netns_ino, 4_026_531_840);
        assert_eq!(p.netns_cookie, 0, "cookie flag not set");
        assert_eq!(&p.data[..], &[0x45, 0, 0, 40]);

        let mut ev = packet();
        ev.hdr.flags = flags::HAS_NETNS_COOKIE;
        ev.hook = hook::TC_INGRESS;
        let node: Arc<str> = "node-a".into();
        let Record::Packet(p) = decode(&packet_bytes(&ev), Some(&node), &DecodeCtx::default()).unwrap() else {
            panic!("not a packet")
        };
        assert_eq!((p.netns_cookie, p.netns_ino, p.hook), (9, 0, Hook::TcIngress));
        assert!(p.process.is_none(), "no HAS_PROCESS flag");
        assert_eq!(p.node.as_deref(), Some("node-a"));
    }

    #[test]
    fn a_full_snap_and_an_empty_packet_decode() {
        let mut ev = packet();
        ev.cap_len = SNAP_LEN as u16;
        ev.data[SNAP_LEN - 1] = 0xaa;
        let Record::Packet(p) = decode(&packet_bytes(&ev), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a packet")
        };
        assert_eq!((p.data.len(), p.data[SNAP_LEN - 1]), (SNAP_LEN, 0xaa));
        ev.cap_len = 0;
        let Record::Packet(p) = decode(&packet_bytes(&ev), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a packet")
        };
        assert!(p.data.is_empty());
    }

    #[test]
    fn drop_round_trips() {
        let Record::Drop(r) = decode(&drop_bytes(&drop_event()), None, &reasons()).unwrap() else {
            panic!("not a drop")
        };
        assert_eq!(
            (&*r.reason_name, r.reason, r.ifindex, r.netns_ino, r.wire_len, &r.data[..]),
            ("NETFILTER_DROP", 12, 3, 77, 60, &[0x45u8, 0][..])
        );
        assert_eq!((r.location, r.ts_ns), (0xffff_ffff_8100_0000, 42));
        assert!(r.process.is_none(), "drops carry no process");
        let mut d = drop_event();
        d.reason = 99;
        let Record::Drop(r) = decode(&drop_bytes(&d), None, &reasons()).unwrap() else { panic!("not a drop") };
        assert_eq!(&*r.reason_name, "REASON_99");
    }

    #[test]
    fn conn_round_trips() {
        let Record::Conn(r) = decode(&bytes_of(&conn_event()), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a conn")
        };
        assert_eq!(r.kind, ConnKind::State { old: 7, new: 2 });
        assert_eq!(r.src.to_string(), "10.244.1.20:40000");
        assert_eq!(r.dst.to_string(), "10.244.2.30:8081");
        assert_eq!((r.sock, r.netns_ino, r.ts_ns), (0xabc, 5, 42));

        let mut c = conn_event();
        c.family = 10;
        c.what = conn_kind::RETRANSMIT;
        c.saddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        c.daddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let Record::Conn(r) = decode(&bytes_of(&c), None, &DecodeCtx::default()).unwrap() else { panic!("not a conn") };
        assert_eq!(r.kind, ConnKind::Retransmit { state: 7 });
        assert_eq!(r.src.to_string(), "[fd00::1]:40000");
        assert_eq!(r.dst.to_string(), "[fd00::2]:8081");
        c.what = 9;
        assert_eq!(decode(&bytes_of(&c), None, &DecodeCtx::default()).unwrap_err(), RawError::UnknownHook(9));
    }

    fn packet_ref() -> tracer_common::PacketRefEvent {
        let mut head = [0u8; REF_HEAD_LEN];
        head[..4].copy_from_slice(&[0x45, 0, 0, 40]);
        let mut hdr = header(EventKind::DnsPacketRef);
        hdr.comm[..7].copy_from_slice(b"dnsmasq");
        tracer_common::PacketRefEvent {
            hdr,
            netns_cookie: 0,
            netns_ino: 5,
            ifindex: 2,
            pkt_len: 80,
            cap_len: 28,
            hook: hook::CGROUP_INGRESS,
            ip_version: 4,
            seq: 0x1_0000_0000_0007,
            head,
        }
    }

    /// A reference as far as userspace reads it: the fixed part and the
    /// `cap_len` header bytes (the kernel submits up to 32 or 64).
    fn ref_bytes(r: &tracer_common::PacketRefEvent) -> Vec<u8> {
        let mut b = bytes_of(r);
        b.truncate(PACKET_EVENT_HDR_LEN + usize::from(r.cap_len));
        b
    }

    #[test]
    fn a_reference_decodes_with_its_headers_and_seq() {
        let Item::Ref { record, seq, head } =
            decode_item(&ref_bytes(&packet_ref()), None, &DecodeCtx::default()).unwrap()
        else {
            panic!("not a reference")
        };
        assert_eq!(seq, 0x1_0000_0000_0007);
        assert_eq!((record.hook, record.wire_len, record.ifindex, record.netns_ino), (Hook::SocketIngress, 80, 2, 5));
        assert_eq!(&*record.process.unwrap().comm, "dnsmasq");
        assert_eq!(head.bytes().len(), 28);
        assert_eq!(&head.bytes()[..4], &[0x45, 0, 0, 40]);
        assert!(record.data.is_empty());
        assert_eq!(
            decode(&ref_bytes(&packet_ref()), None, &DecodeCtx::default()).unwrap_err(),
            RawError::Reference(0x1_0000_0000_0007)
        );
        let mut ev = packet();
        ev.seq = 9;
        let Item::Record { seq, .. } = decode_item(&packet_bytes(&ev), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a record")
        };
        assert_eq!(seq, 9);
    }

    /// Names come back right and shared, whichever of several pairs comes
    /// next (the two most recent are found without the map).
    #[test]
    fn interned_names_are_right_in_any_order() {
        let name = |s: &str| {
            let mut b = [0u8; 16];
            b[..s.len()].copy_from_slice(s.as_bytes());
            b
        };
        let pairs = [("dig", "isc-net-0000"), ("dnsmasq", "dnsmasq"), ("coredns", "coredns"), ("dig", "dig")];
        let first: Vec<_> = pairs.iter().map(|(c, t)| intern_names(&name(c), &name(t))).collect();
        for i in [0, 1, 0, 1, 2, 2, 3, 0, 3, 1, 1, 2, 0] {
            let (c, t) = intern_names(&name(pairs[i].0), &name(pairs[i].1));
            assert_eq!((&*c, &*t), pairs[i], "pair {i}");
            assert!(Arc::ptr_eq(&c, &first[i].0) && Arc::ptr_eq(&t, &first[i].1), "pair {i} shared");
        }
    }

    /// Payloads cut from a chunk are the same bytes as copied alone, share
    /// their chunk, and one larger than a chunk gets its own.
    #[test]
    fn payloads_from_chunks_are_the_bytes_copied() {
        let mut a = Payloads::default();
        let b = packet_bytes(&packet());
        let Item::Record { record: Record::Packet(alone), .. } = decode_item(&b, None, &DecodeCtx::default()).unwrap()
        else {
            panic!("not a packet")
        };
        let Item::Record { record: Record::Packet(cut), .. } =
            decode_item_with(&b, None, &DecodeCtx::default(), Some(&mut a)).unwrap()
        else {
            panic!("not a packet")
        };
        assert_eq!(cut.data, alone.data);
        let (x, y) = (a.copy(b"abc"), a.copy(b"defg"));
        assert_eq!((&x[..], &y[..]), (&b"abc"[..], &b"defg"[..]));
        assert_eq!(y.as_ptr(), x.as_ptr().wrapping_add(3), "one chunk");
        let big = vec![7u8; PAYLOAD_CHUNK + 1];
        assert_eq!(a.copy(&big), big);
        assert_eq!(a.copy(b""), Bytes::new());
    }

    /// Every kind of record, as submitted by the kernel.
    fn all_records() -> Vec<Vec<u8>> {
        vec![packet_bytes(&packet()), drop_bytes(&drop_event()), bytes_of(&conn_event()), ref_bytes(&packet_ref())]
    }

    #[test]
    fn every_truncation_is_a_short_error() {
        for full in all_records() {
            for n in 0..full.len() {
                assert_eq!(
                    decode_item(&full[..n], None, &reasons()).unwrap_err(),
                    RawError::Short(n),
                    "{} of {} bytes",
                    n,
                    full.len()
                );
            }
            assert!(decode_item(&full, None, &reasons()).is_ok());
        }
    }

    #[test]
    fn a_length_field_beyond_the_record_is_short() {
        let mut ev = packet();
        let b = packet_bytes(&ev);
        ev.cap_len += 1;
        let mut longer = bytes_of(&ev);
        longer.truncate(b.len());
        assert_eq!(decode(&longer, None, &DecodeCtx::default()).unwrap_err(), RawError::Short(b.len()));
        let mut d = drop_event();
        d.cap_len = 3;
        let mut b = bytes_of(&d);
        b.truncate(size_of::<DropEventHead>() + 2);
        assert_eq!(decode(&b, None, &reasons()).unwrap_err(), RawError::Short(b.len()));
        // A length past the layout's array is cut to it, never read beyond.
        d.cap_len = u16::MAX;
        let Record::Drop(r) = decode(&bytes_of(&d), None, &reasons()).unwrap() else { panic!("not a drop") };
        assert_eq!(r.data.len(), DROP_SNAP);
    }

    #[test]
    fn other_versions_and_kinds_are_rejected() {
        for full in all_records() {
            let kind = u32::from_ne_bytes(full[..4].try_into().unwrap());
            for version in [0, EVENT_VERSION + 1, u16::MAX] {
                let mut b = full.clone();
                b[4..6].copy_from_slice(&version.to_ne_bytes());
                let e = decode_item(&b, None, &reasons()).unwrap_err();
                assert_eq!(e, RawError::UnknownVersion { kind, version, expected: EVENT_VERSION });
                assert!(e.to_string().contains(&format!("version {version}")), "{e}");
            }
            let mut b = full.clone();
            b[..4].copy_from_slice(&99u32.to_ne_bytes());
            assert_eq!(decode_item(&b, None, &reasons()).unwrap_err(), RawError::UnknownKind(99));
        }
        let mut ev = packet();
        ev.hook = 0;
        assert_eq!(decode(&packet_bytes(&ev), None, &reasons()).unwrap_err(), RawError::UnknownHook(0));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A fixed xorshift stream: the same inputs every run.
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        let mut next = || rng.next();
        for full in all_records() {
            for _ in 0..2000 {
                let mut b = full.clone();
                let n = (next() % b.len() as u64) as usize;
                b[n] = next() as u8;
                let cut = (next() % (b.len() as u64 + 1)) as usize;
                let _ = decode_item(&b[..cut], None, &reasons());
            }
        }
    }
}
