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

fn process_of(b: &[u8]) -> Option<Process> {
    (u16_at(b, 6) & flags::HAS_PROCESS != 0).then(|| Process {
        pid: u32_at(b, 20),
        tid: u32_at(b, 16),
        comm: comm_str(&b[32..48]),
        thread: comm_str(&b[48..64]),
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
    let cap = usize::from(u16_at(b, 92)).min(DROP_SNAP);
    if b.len() < hdr + cap {
        return Err(RawError::Short(b.len()));
    }
    let reason = u32_at(b, 72);
    Ok(Record::Drop(DropRecord {
        ts_ns: u64_at(b, 8),
        reason,
        reason_name: ctx.reason(reason),
        location: u64_at(b, 64),
        ifindex: u32_at(b, 76),
        netns_ino: u32_at(b, 80),
        wire_len: u32_at(b, 84),
        data: Bytes::copy_from_slice(&b[hdr..hdr + cap]),
        node: node.cloned(),
        process: process_of(b),
    }))
}

fn decode_conn(b: &[u8], node: Option<&Arc<str>>) -> Result<Record, RawError> {
    if b.len() < std::mem::size_of::<ConnEvent>() {
        return Err(RawError::Short(b.len()));
    }
    let (what, old, new, family) = (b[76], b[77], b[78], b[79]);
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
        src: Endpoint { ip: addr(family, &b[88..104]), port: u16_at(b, 80) },
        dst: Endpoint { ip: addr(family, &b[104..120]), port: u16_at(b, 82) },
        sock: u64_at(b, 64),
        process: process_of(b),
        netns_ino: u32_at(b, 72),
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
        let Record::Packet(p) = decode(&as_bytes(&ev, 4), None, &DecodeCtx::default()).unwrap() else { panic!("not a packet") };
        assert_eq!(p.ts_ns, 42);
        assert_eq!(p.hook, Hook::SocketEgress);
        let proc_ = p.process.unwrap();
        assert_eq!((proc_.pid, proc_.tid, proc_.comm.as_str(), proc_.thread.as_str()), (100, 101, "dig", "isc-net-0000"));
        assert_eq!(p.netns_ino, 4_026_531_840);
        assert_eq!(p.netns_cookie, 0, "cookie flag not set");
        assert_eq!(&p.data[..], &[0x45, 0, 0, 40]);
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
