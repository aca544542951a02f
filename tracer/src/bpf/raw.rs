//! Raw ring-buffer bytes → typed [`Record`]s. Never trusts the length: a
//! short or unknown event is an error the caller counts, not a panic.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tracer_common::{EventKind, PACKET_EVENT_HDR_LEN, flags};

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{ConnEvent, DROP_SNAP, DropEvent, conn_kind};

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
    /// Shorter than its header says.
    #[error("event of {0} bytes is too short")]
    Short(usize),
    /// An event kind this userspace does not know (newer kernel object?).
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    /// A hook value this userspace does not know.
    #[error("unknown hook {0}")]
    UnknownHook(u8),
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// A NUL-padded kernel string.
#[must_use]
pub fn comm_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Most distinct names [`intern_comm`] keeps (then it starts over: bounded
/// memory whatever the processes are called).
const MAX_COMMS: usize = 4096;

thread_local! {
    static COMMS: std::cell::RefCell<crate::hash::FastMap<[u8; 16], Arc<str>>> =
        std::cell::RefCell::new(crate::hash::FastMap::default());
}

/// The 16-byte kernel `comm` as a shared string: the same few names repeat on
/// every event, and two allocations per event were ~3 % of live CPU.
fn intern_comm(b: &[u8]) -> Arc<str> {
    let mut key = [0u8; 16];
    let n = b.len().min(16);
    key[..n].copy_from_slice(&b[..n]);
    COMMS.with_borrow_mut(|m| {
        if let Some(a) = m.get(&key) {
            return Arc::clone(a);
        }
        if m.len() >= MAX_COMMS {
            m.clear();
        }
        let a: Arc<str> = comm_str(b).into();
        m.insert(key, Arc::clone(&a));
        a
    })
}

fn process_of(b: &[u8]) -> Option<Process> {
    (u16_at(b, 6) & flags::HAS_PROCESS != 0).then(|| Process {
        pid: u32_at(b, 20),
        tid: u32_at(b, 16),
        comm: intern_comm(&b[32..48]),
        thread: intern_comm(&b[48..64]),
    })
}

fn addr(family: u8, a: &[u8]) -> IpAddr {
    if family == 10 {
        let mut x = [0u8; 16];
        x.copy_from_slice(&a[..16]);
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

fn decode_drop(b: &[u8], node: Option<&Arc<str>>, ctx: &DecodeCtx) -> Result<Record, RawError> {
    let hdr = std::mem::size_of::<DropEvent>() - DROP_SNAP;
    if b.len() < hdr {
        return Err(RawError::Short(b.len()));
    }
    let cap = usize::from(u16_at(b, std::mem::offset_of!(DropEvent, cap_len))).min(DROP_SNAP);
    if b.len() < hdr + cap {
        return Err(RawError::Short(b.len()));
    }
    let reason = u32_at(b, std::mem::offset_of!(DropEvent, reason));
    Ok(Record::Drop(DropRecord {
        ts_ns: u64_at(b, 8),
        reason,
        reason_name: ctx.reason(reason),
        location: u64_at(b, std::mem::offset_of!(DropEvent, location)),
        ifindex: u32_at(b, std::mem::offset_of!(DropEvent, ifindex)),
        netns_ino: u32_at(b, std::mem::offset_of!(DropEvent, netns_ino)),
        wire_len: u32_at(b, std::mem::offset_of!(DropEvent, pkt_len)),
        data: Bytes::copy_from_slice(&b[hdr..hdr + cap]),
        node: node.cloned(),
        process: process_of(b),
    }))
}

fn decode_conn(b: &[u8], node: Option<&Arc<str>>) -> Result<Record, RawError> {
    use std::mem::offset_of;
    if b.len() < std::mem::size_of::<ConnEvent>() {
        return Err(RawError::Short(b.len()));
    }
    let (what, old, new, family) = (
        b[offset_of!(ConnEvent, what)],
        b[offset_of!(ConnEvent, old_state)],
        b[offset_of!(ConnEvent, new_state)],
        b[offset_of!(ConnEvent, family)],
    );
    let kind = match what {
        conn_kind::STATE => ConnKind::State { old, new },
        conn_kind::RESET_RECEIVED => ConnKind::ResetReceived { state: old },
        conn_kind::RESET_SENT => ConnKind::ResetSent { state: old },
        conn_kind::RETRANSMIT => ConnKind::Retransmit { state: old },
        other => return Err(RawError::UnknownHook(other)),
    };
    Ok(Record::Conn(ConnRecord {
        ts_ns: u64_at(b, 8),
        kind,
        src: Endpoint {
            ip: addr(family, &b[offset_of!(ConnEvent, saddr)..][..16]),
            port: u16_at(b, offset_of!(ConnEvent, sport)),
        },
        dst: Endpoint {
            ip: addr(family, &b[offset_of!(ConnEvent, daddr)..][..16]),
            port: u16_at(b, offset_of!(ConnEvent, dport)),
        },
        sock: u64_at(b, offset_of!(ConnEvent, sock)),
        process: process_of(b),
        netns_ino: u32_at(b, offset_of!(ConnEvent, netns_ino)),
        node: node.cloned(),
    }))
}

/// Decodes one ring-buffer item. Offsets follow the `tracer_common` layouts
/// (checked by their layout tests).
pub fn decode(b: &[u8], node: Option<&Arc<str>>, ctx: &DecodeCtx) -> Result<Record, RawError> {
    if b.len() < 64 {
        return Err(RawError::Short(b.len()));
    }
    let kind = u32_at(b, 0);
    match EventKind::try_from(kind) {
        Ok(EventKind::DnsPacket) => {}
        Ok(EventKind::Drop) => return decode_drop(b, node, ctx),
        Ok(EventKind::Conn) => return decode_conn(b, node),
        Err(k) => return Err(RawError::UnknownKind(k)),
    }
    if b.len() < PACKET_EVENT_HDR_LEN {
        return Err(RawError::Short(b.len()));
    }
    let fl = u16_at(b, 6);
    let ts_ns = u64_at(b, 8);
    let tid = u32_at(b, 16);
    let tgid = u32_at(b, 20);
    let cgroup_id = u64_at(b, 24);
    let netns_cookie = u64_at(b, 64);
    let netns_ino = u32_at(b, 72);
    let ifindex = u32_at(b, 76);
    let wire_len = u32_at(b, 80);
    let cap_len = usize::from(u16_at(b, 84));
    let hook = b[86];
    let hook = Hook::from_raw(hook).ok_or(RawError::UnknownHook(hook))?;
    let end = PACKET_EVENT_HDR_LEN + cap_len;
    if b.len() < end {
        return Err(RawError::Short(b.len()));
    }
    let _ = (tid, tgid);
    let process = process_of(b);
    Ok(Record::Packet(PacketRecord {
        ts_ns,
        hook,
        process,
        cgroup_id,
        netns_cookie: if fl & flags::HAS_NETNS_COOKIE != 0 { netns_cookie } else { 0 },
        netns_ino: if fl & flags::HAS_NETNS_INO != 0 { netns_ino } else { 0 },
        ifindex,
        wire_len,
        data: Bytes::copy_from_slice(&b[PACKET_EVENT_HDR_LEN..end]),
        node: node.cloned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{EventHeader, PacketEvent, SNAP_LEN, hook};

    fn as_bytes(ev: &PacketEvent, n: usize) -> Vec<u8> {
        // SAFETY: PacketEvent is repr(C) plain data.
        let all = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(ev).cast::<u8>(), std::mem::size_of::<PacketEvent>())
        };
        all[..PACKET_EVENT_HDR_LEN + n].to_vec()
    }

    fn sample() -> PacketEvent {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"dig");
        let mut thread = [0u8; 16];
        thread[..12].copy_from_slice(b"isc-net-0000");
        let mut data = [0u8; SNAP_LEN];
        data[..4].copy_from_slice(&[0x45, 0, 0, 40]);
        PacketEvent {
            hdr: EventHeader {
                kind: EventKind::DnsPacket as u32,
                version: 1,
                flags: flags::HAS_PROCESS | flags::HAS_NETNS_INO,
                ts_ns: 42,
                tid: 101,
                tgid: 100,
                cgroup_id: 7,
                comm,
                thread_comm: thread,
            },
            netns_cookie: 9,
            netns_ino: 4_026_531_840,
            ifindex: 3,
            pkt_len: 40,
            cap_len: 4,
            hook: hook::CGROUP_EGRESS,
            ip_version: 4,
            data,
        }
    }

    #[test]
    fn decodes_a_packet_event() {
        let ev = sample();
        let Record::Packet(p) = decode(&as_bytes(&ev, 4), None, &DecodeCtx::default()).unwrap() else {
            panic!("not a packet")
        };
        assert_eq!(p.ts_ns, 42);
        assert_eq!(p.hook, Hook::SocketEgress);
        let proc_ = p.process.unwrap();
        assert_eq!((proc_.pid, proc_.tid, &*proc_.comm, &*proc_.thread), (100, 101, "dig", "isc-net-0000"));
        assert_eq!(p.netns_ino, 4_026_531_840);
        assert_eq!(p.netns_cookie, 0, "cookie flag not set");
        assert_eq!(&p.data[..], &[0x45, 0, 0, 40]);
    }

    #[test]
    fn drop_and_conn_events_decode() {
        let mut d = DropEvent {
            hdr: sample().hdr,
            location: 0xffff_ffff_8100_0000,
            reason: 12,
            ifindex: 3,
            netns_ino: 77,
            pkt_len: 60,
            cap_len: 2,
            pad: [0; 6],
            data: [0; DROP_SNAP],
        };
        d.hdr.kind = EventKind::Drop as u32;
        d.data[..2].copy_from_slice(&[0x45, 0]);
        // SAFETY: repr(C) plain data.
        let b = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&d).cast::<u8>(), std::mem::size_of::<DropEvent>())
        };
        let mut ctx = DecodeCtx::default();
        ctx.reason_names.insert(12, "NETFILTER_DROP".into());
        let Record::Drop(r) = decode(b, None, &ctx).unwrap() else { panic!("not a drop") };
        assert_eq!(
            (&*r.reason_name, r.ifindex, r.netns_ino, r.wire_len, &r.data[..]),
            ("NETFILTER_DROP", 3, 77, 60, &[0x45u8, 0][..])
        );
        assert_eq!(r.location, 0xffff_ffff_8100_0000);

        let mut c = ConnEvent {
            hdr: sample().hdr,
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
        c.hdr.kind = EventKind::Conn as u32;
        c.saddr[..4].copy_from_slice(&[10, 244, 1, 20]);
        c.daddr[..4].copy_from_slice(&[10, 244, 2, 30]);
        // SAFETY: repr(C) plain data.
        let b = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&c).cast::<u8>(), std::mem::size_of::<ConnEvent>())
        };
        let Record::Conn(r) = decode(b, None, &ctx).unwrap() else { panic!("not a conn") };
        assert_eq!(r.kind, ConnKind::State { old: 7, new: 2 });
        assert_eq!(r.src.to_string(), "10.244.1.20:40000");
        assert_eq!(r.dst.to_string(), "10.244.2.30:8081");
        assert_eq!((r.sock, r.netns_ino), (0xabc, 5));
    }

    #[test]
    fn short_and_unknown_events_are_errors() {
        let ev = sample();
        let b = as_bytes(&ev, 4);
        for n in 0..b.len() {
            assert!(decode(&b[..n], None, &DecodeCtx::default()).is_err(), "len {n}");
        }
        let mut bad = b.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad, None, &DecodeCtx::default()).unwrap_err(), RawError::UnknownKind(99));
    }
}
