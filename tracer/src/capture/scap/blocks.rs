//! Process-list and fd-list blocks (`userspace/libscap/scap_savefile.c`):
//! what was running, and what it had open, when the capture started.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::events::{le16, le32, le64};
use crate::event::Endpoint;

/// Process list block versions (block type → version 1..=9).
pub(super) fn proclist_version(kind: u32) -> Option<u8> {
    Some(match kind {
        0x202 | 0x8000_ABCD => 1,
        0x207 | 0x8013_ABCD => 2,
        0x209 | 0x8014_ABCD => 3,
        0x210 => 4,
        0x211 => 5,
        0x212 => 6,
        0x213 => 7,
        0x214 => 8,
        0x215 => 9,
        _ => return None,
    })
}

/// One thread of a process list block.
#[derive(Debug, Default)]
pub(super) struct ProcEntry {
    pub(super) tid: u64,
    pub(super) pid: u64,
    pub(super) comm: Vec<u8>,
    pub(super) exe: Vec<u8>,
    /// `subsys=path` entries separated by NUL (v4+).
    pub(super) cgroups: Vec<u8>,
}

/// Bounds-checked reader over a block body.
struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let v = le16(self.b, self.at)?;
        self.at += 2;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let v = le32(self.b, self.at)?;
        self.at += 4;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = le64(self.b, self.at)?;
        self.at += 8;
        Some(v)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(v)
    }
    /// A u16-length-prefixed string.
    fn str16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }
}

/// Parses a process list block body. Returns the entries read and whether
/// the block was malformed (entries before the fault are kept).
pub(super) fn proclist(body: &[u8], version: u8, mut each: impl FnMut(ProcEntry)) -> bool {
    let mut r = Rd { b: body, at: 0 };
    while r.left() >= 4 {
        let start = r.at;
        match proc_entry(&mut r, version) {
            Some((e, sub_len)) => {
                if sub_len != 0 {
                    // v9 entries carry their own length (the u32 included):
                    // newer fields are skipped through it.
                    let Some(end) = start.checked_add(sub_len as usize) else { return true };
                    if end < r.at || end > body.len() {
                        return true;
                    }
                    r.at = end;
                }
                each(e);
            }
            None => return true,
        }
    }
    false
}

fn proc_entry(r: &mut Rd<'_>, v: u8) -> Option<(ProcEntry, u32)> {
    let sub_len = if v >= 9 { r.u32()? } else { 0 };
    let mut e = ProcEntry { tid: r.u64()?, pid: r.u64()?, ..ProcEntry::default() };
    let _ptid = r.u64()?;
    if v >= 6 {
        let _sid = r.u64()?;
    }
    if v >= 8 {
        let _vpgid = r.u64()?;
    }
    e.comm = r.str16()?.to_vec();
    e.exe = r.str16()?.to_vec();
    if v >= 7 {
        let _exepath = r.str16()?;
    }
    let _args = r.str16()?;
    let _cwd = r.str16()?;
    let _fdlimit = r.u64()?;
    let _flags = r.u32()?;
    let _uid = r.u32()?;
    let _gid = r.u32()?;
    if v >= 2 {
        // vmsize, vmrss, vmswap, pfmajor, pfminor
        r.take(4 + 4 + 4 + 8 + 8)?;
    }
    if v >= 3 {
        let _env = r.str16()?;
    }
    if v >= 4 {
        let _vtid = r.u64()?;
        let _vpid = r.u64()?;
        e.cgroups = r.str16()?.to_vec();
    }
    if v >= 5 {
        let _root = r.str16()?;
    }
    if v < 9 {
        // Pre-v9 blocks carry nothing more per entry.
        return Some((e, 0));
    }
    Some((e, sub_len))
}

/// Transport of a socket in an fd list (`scap_l4_proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum L4 {
    Tcp,
    Udp,
    Other,
}

impl L4 {
    fn from_scap(v: u8) -> Self {
        match v {
            2 => Self::Tcp,
            3 => Self::Udp,
            _ => Self::Other,
        }
    }
}

/// What an fd-list entry describes, as far as ktrace cares.
#[derive(Debug)]
pub(super) enum FdEntryKind {
    /// A connected (or at least addressed) inet socket: local → remote.
    Inet { l4: L4, local: Endpoint, remote: Endpoint },
    /// A listening inet socket.
    Listen { l4: L4, local: Endpoint },
    /// A file with its path.
    File(Vec<u8>),
    /// Anything else (unix sockets, pipes, eventfds…).
    Other,
}

/// One fd of an fd list block.
#[derive(Debug)]
pub(super) struct FdEntry {
    pub(super) fd: i64,
    pub(super) kind: FdEntryKind,
}

/// Parses an fd list block body (`v2`: entries carry their length). Calls
/// `each(tid, entry)`; returns true when the block was malformed or held an
/// fd type that a v1 block cannot be skipped past.
pub(super) fn fdlist(body: &[u8], v2: bool, mut each: impl FnMut(u64, FdEntry)) -> bool {
    let mut r = Rd { b: body, at: 0 };
    let Some(tid) = r.u64() else { return true };
    while r.left() >= 4 {
        let start = r.at;
        let Some((e, sub_len, known)) = fd_entry(&mut r, v2) else { return true };
        if sub_len != 0 {
            let Some(end) = start.checked_add(sub_len as usize) else { return true };
            if end < r.at || end > body.len() {
                return true;
            }
            r.at = end;
        } else if !known {
            // A v1 entry of an unknown type has no length to skip by.
            return true;
        }
        each(tid, e);
    }
    false
}

fn ep4(ip: &[u8], port: u16) -> Option<Endpoint> {
    let a: [u8; 4] = ip.try_into().ok()?;
    Some(Endpoint { ip: IpAddr::V4(Ipv4Addr::from(a)), port })
}

fn ep6(ip: &[u8], port: u16) -> Option<Endpoint> {
    let a: [u8; 16] = ip.try_into().ok()?;
    Some(Endpoint { ip: IpAddr::V6(Ipv6Addr::from(a)), port })
}

fn fd_entry(r: &mut Rd<'_>, v2: bool) -> Option<(FdEntry, u32, bool)> {
    let sub_len = if v2 { r.u32()? } else { 0 };
    let fd = r.u64()? as i64;
    let _ino = r.u64()?;
    let ty = r.u8()?;
    let mut known = true;
    let kind = match ty {
        // IPv4 socket: sip, dip, sport, dport, l4proto; addresses as the
        // kernel holds them (network order bytes), ports in host order.
        3 => {
            let sip = r.take(4)?;
            let dip = r.take(4)?;
            let sport = r.u16()?;
            let dport = r.u16()?;
            let l4 = L4::from_scap(r.u8()?);
            FdEntryKind::Inet { l4, local: ep4(sip, sport)?, remote: ep4(dip, dport)? }
        }
        5 => {
            let ip = r.take(4)?;
            let port = r.u16()?;
            let l4 = L4::from_scap(r.u8()?);
            FdEntryKind::Listen { l4, local: ep4(ip, port)? }
        }
        4 => {
            let sip = r.take(16)?;
            let dip = r.take(16)?;
            let sport = r.u16()?;
            let dport = r.u16()?;
            let l4 = L4::from_scap(r.u8()?);
            FdEntryKind::Inet { l4, local: ep6(sip, sport)?, remote: ep6(dip, dport)? }
        }
        6 => {
            let ip = r.take(16)?;
            let port = r.u16()?;
            let l4 = L4::from_scap(r.u8()?);
            FdEntryKind::Listen { l4, local: ep6(ip, port)? }
        }
        // Unix socket: source, destination, name.
        8 => {
            r.take(16)?;
            r.str16()?;
            FdEntryKind::Other
        }
        // Regular file (v2 encoding): open flags, name, then dev when the entry has room.
        16 => {
            let _flags = r.u32()?;
            let name = r.str16()?.to_vec();
            FdEntryKind::File(name)
        }
        1 => FdEntryKind::File(r.str16()?.to_vec()),
        2 | 7 | 9..=15 | 17..=21 => {
            r.str16()?;
            FdEntryKind::Other
        }
        0 => FdEntryKind::Other,
        _ => {
            known = false;
            FdEntryKind::Other
        }
    };
    Some((FdEntry { fd, kind }, sub_len, known))
}
