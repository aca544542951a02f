//! Raw ring-buffer bytes → typed [`Record`]s. Never trusts the length: a
//! short or unknown event is an error the caller counts, not a panic.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tracer_common::{EventKind, PACKET_EVENT_HDR_LEN, flags};

use crate::event::{Hook, PacketRecord, Process, Record};

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

/// Decodes one ring-buffer item. Offsets follow `tracer_common::PacketEvent`
/// (checked by its layout tests).
pub fn decode(b: &[u8], node: Option<&Arc<str>>) -> Result<Record, RawError> {
    if b.len() < PACKET_EVENT_HDR_LEN {
        return Err(RawError::Short(b.len()));
    }
    let kind = u32_at(b, 0);
    match EventKind::try_from(kind) {
        Ok(EventKind::DnsPacket) => {}
        Err(k) => return Err(RawError::UnknownKind(k)),
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
    let process = (fl & flags::HAS_PROCESS != 0).then(|| Process {
        pid: tgid,
        tid,
        comm: comm_str(&b[32..48]),
        thread: comm_str(&b[48..64]),
    });
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
        let Record::Packet(p) = decode(&as_bytes(&ev, 4), None).unwrap() else { panic!("not a packet") };
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
            assert!(decode(&b[..n], None).is_err(), "len {n}");
        }
        let mut bad = b.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad, None).unwrap_err(), RawError::UnknownKind(99));
    }
}
