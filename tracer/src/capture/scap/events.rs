//! Event headers and parameters of scap event blocks, and the part of the
//! falcosecurity/libs event table (`driver/event_table.c`) ktrace reads.
//!
//! Event types never change meaning; newer drivers only append parameters,
//! so every lookup here is by position and tolerates fewer or more parameters.

/// Most parameters an event may carry (the driver's limit is 32; newer
/// tables stay well below 64).
pub(super) const MAX_PARAMS: usize = 64;

/// Event type numbers (`enum ppm_event_code`, `driver/ppm_events_public.h`).
pub(super) mod ev {
    pub(crate) const OPEN_E: u16 = 2;
    pub(crate) const OPEN_X: u16 = 3;
    pub(crate) const CLOSE_E: u16 = 4;
    pub(crate) const CLOSE_X: u16 = 5;
    pub(crate) const READ_E: u16 = 6;
    pub(crate) const READ_X: u16 = 7;
    pub(crate) const WRITE_E: u16 = 8;
    pub(crate) const WRITE_X: u16 = 9;
    pub(crate) const EXECVE_8_X: u16 = 13;
    pub(crate) const CLONE_11_X: u16 = 15;
    pub(crate) const PROCEXIT_E: u16 = 16;
    pub(crate) const SOCKET_E: u16 = 18;
    pub(crate) const SOCKET_X: u16 = 19;
    pub(crate) const BIND_E: u16 = 20;
    pub(crate) const BIND_X: u16 = 21;
    pub(crate) const CONNECT_E: u16 = 22;
    pub(crate) const CONNECT_X: u16 = 23;
    pub(crate) const ACCEPT_X: u16 = 27;
    pub(crate) const SEND_E: u16 = 28;
    pub(crate) const SEND_X: u16 = 29;
    pub(crate) const SENDTO_E: u16 = 30;
    pub(crate) const SENDTO_X: u16 = 31;
    pub(crate) const RECV_E: u16 = 32;
    pub(crate) const RECV_X: u16 = 33;
    pub(crate) const RECVFROM_E: u16 = 34;
    pub(crate) const RECVFROM_X: u16 = 35;
    pub(crate) const SENDMSG_E: u16 = 48;
    pub(crate) const SENDMSG_X: u16 = 49;
    pub(crate) const SENDMMSG_E: u16 = 50;
    pub(crate) const SENDMMSG_X: u16 = 51;
    pub(crate) const RECVMSG_E: u16 = 52;
    pub(crate) const RECVMSG_X: u16 = 53;
    pub(crate) const RECVMMSG_X: u16 = 55;
    pub(crate) const ACCEPT4_X: u16 = 57;
    pub(crate) const OPENAT_E: u16 = 102;
    pub(crate) const OPENAT_X: u16 = 103;
    pub(crate) const READV_E: u16 = 116;
    pub(crate) const READV_X: u16 = 117;
    pub(crate) const WRITEV_E: u16 = 118;
    pub(crate) const WRITEV_X: u16 = 119;
    pub(crate) const EXECVE_13_X: u16 = 155;
    pub(crate) const CLONE_16_X: u16 = 157;
    pub(crate) const EXECVE_14_X: u16 = 173;
    pub(crate) const FORK_X: u16 = 183;
    pub(crate) const VFORK_X: u16 = 185;
    pub(crate) const PROCEXIT_1_E: u16 = 186;
    pub(crate) const EXECVE_15_X: u16 = 215;
    pub(crate) const CLONE_17_X: u16 = 217;
    pub(crate) const FORK_17_X: u16 = 219;
    pub(crate) const VFORK_17_X: u16 = 221;
    pub(crate) const CLONE_20_X: u16 = 223;
    pub(crate) const FORK_20_X: u16 = 225;
    pub(crate) const VFORK_20_X: u16 = 227;
    pub(crate) const CONTAINER_E: u16 = 228;
    pub(crate) const EXECVE_16_X: u16 = 231;
    pub(crate) const ACCEPT_5_X: u16 = 247;
    pub(crate) const ACCEPT4_5_X: u16 = 249;
    pub(crate) const CONTAINER_JSON_E: u16 = 272;
    pub(crate) const EXECVE_17_X: u16 = 283;
    pub(crate) const EXECVE_18_X: u16 = 289;
    pub(crate) const EXECVE_19_X: u16 = 293;
    pub(crate) const OPENAT_2_X: u16 = 307;
    pub(crate) const PLUGINEVENT_E: u16 = 322;
    pub(crate) const CONTAINER_JSON_2_E: u16 = 324;
    pub(crate) const OPENAT2_X: u16 = 327;
    pub(crate) const EXECVEAT_X: u16 = 331;
    pub(crate) const CLONE3_X: u16 = 335;
    pub(crate) const ASYNCEVENT_E: u16 = 402;
}

/// Whether ktrace reads events of this type, and how many parameters the
/// newest table gives it: the starting point for v1 blocks, which do not
/// record the count.
#[expect(clippy::match_same_arms, reason = "rows grouped by event kind, like the table")]
pub(super) fn max_params(t: u16) -> Option<usize> {
    #[allow(clippy::wildcard_imports, reason = "the event table's names")]
    use ev::*;
    Some(match t {
        OPEN_E => 3,
        OPEN_X => 6,
        CLOSE_E => 1,
        CLOSE_X => 2,
        READ_E | WRITE_E | SEND_E | RECV_E | RECVFROM_E | WRITEV_E => 2,
        READ_X | WRITE_X | SEND_X | RECV_X | WRITEV_X | READV_X => 4,
        EXECVE_8_X => 8,
        CLONE_11_X => 11,
        PROCEXIT_E => 0,
        SOCKET_E => 3,
        SOCKET_X | CONNECT_X => 4,
        BIND_E | RECVMSG_E | READV_E | SENDMMSG_E => 1,
        BIND_X | CONNECT_E => 2,
        ACCEPT_X | ACCEPT4_X => 3,
        SENDTO_E | SENDMSG_E => 3,
        SENDTO_X | RECVFROM_X | SENDMSG_X | SENDMMSG_X => 5,
        RECVMSG_X | RECVMMSG_X => 6,
        OPENAT_E => 4,
        OPENAT_X => 1,
        EXECVE_13_X => 13,
        EXECVE_14_X => 14,
        CLONE_16_X | FORK_X | VFORK_X | EXECVE_16_X => 16,
        PROCEXIT_1_E => 5,
        EXECVE_15_X => 15,
        CLONE_17_X | FORK_17_X | VFORK_17_X | EXECVE_17_X | EXECVE_18_X => 17,
        CLONE_20_X | FORK_20_X | VFORK_20_X | CLONE3_X => 21,
        CONTAINER_E => 4,
        ACCEPT_5_X | ACCEPT4_5_X => 5,
        CONTAINER_JSON_E | CONTAINER_JSON_2_E => 1,
        EXECVE_19_X | EXECVEAT_X => 32,
        OPENAT_2_X | OPENAT2_X => 7,
        _ => return None,
    })
}

/// Event types whose parameter lengths are 32-bit (`EF_LARGE_PAYLOAD`).
fn large_payload(t: u16) -> bool {
    matches!(t, ev::PLUGINEVENT_E | ev::CONTAINER_JSON_2_E | ev::ASYNCEVENT_E)
}

/// Header bytes of a v1 event (ts, tid, len, type).
pub(super) const HDR_V1: usize = 22;
/// Header bytes of a v2 event (v1 + u32 nparams).
pub(super) const HDR_V2: usize = 26;

/// One event's header fields, read before deciding whether to look further.
#[derive(Clone, Copy, Debug)]
pub(super) struct EventHdr {
    pub(super) ts: u64,
    pub(super) tid: u64,
    pub(super) len: u32,
    pub(super) etype: u16,
}

/// Reads the fixed header (`ts`, `tid`, `len`, `type`); `None` if `b` is too short.
pub(super) fn header(b: &[u8]) -> Option<EventHdr> {
    Some(EventHdr { ts: le64(b, 0)?, tid: le64(b, 8)?, len: le32(b, 16)?, etype: le16(b, 20)? })
}

/// An event's parameters: byte ranges into the event.
pub(super) struct Params<'a> {
    ev: &'a [u8],
    ranges: [(u32, u32); MAX_PARAMS],
    n: usize,
    /// End of the last parameter.
    end: usize,
}

impl<'a> Params<'a> {
    /// Number of parameters present.
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// Parameter `i`, if present.
    pub(super) fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.n {
            return None;
        }
        let &(s, l) = self.ranges.get(i)?;
        self.ev.get(s as usize..(s as usize).checked_add(l as usize)?)
    }

    /// Parameter `i` as a little-endian signed integer of its own width (1, 2, 4 or 8 bytes).
    pub(super) fn int(&self, i: usize) -> Option<i64> {
        let b = self.get(i)?;
        Some(match b.len() {
            1 => i64::from(*b.first()? as i8),
            2 => i64::from(le16(b, 0)? as i16),
            4 => i64::from(le32(b, 0)? as i32),
            8 => le64(b, 0)? as i64,
            _ => return None,
        })
    }

    /// Parameter `i` as text up to its first NUL.
    pub(super) fn str(&self, i: usize) -> Option<&'a [u8]> {
        let b = self.get(i)?;
        Some(b.split(|&c| c == 0).next().unwrap_or(b))
    }
}

/// Why an event's parameters could not be located.
#[derive(Debug)]
pub(super) enum ParamError {
    /// Header or length array cut short, or lengths overrun the event.
    Malformed(#[allow(dead_code, reason = "shown by Debug in logs")] &'static str),
}

/// Splits the parameters of `ev` (the whole event, header included, exactly
/// `len` bytes). `v2` selects the header with `nparams`; v1 events derive the
/// count from the table by decrementing until the lengths add up.
pub(super) fn params(ev: &[u8], etype: u16, v2: bool) -> Result<Params<'_>, ParamError> {
    let mut p = Params { ev, ranges: [(0, 0); MAX_PARAMS], n: 0, end: 0 };
    if v2 {
        let n = le32(ev, HDR_V1).ok_or(ParamError::Malformed("short v2 header"))? as usize;
        if n > MAX_PARAMS {
            return Err(ParamError::Malformed("more parameters than any event has"));
        }
        let w = if large_payload(etype) { 4 } else { 2 };
        fill(&mut p, HDR_V2, n, w)?;
        return Ok(p);
    }
    let max = max_params(etype).unwrap_or(0).min(MAX_PARAMS);
    for n in (0..=max).rev() {
        if fill(&mut p, HDR_V1, n, 2).is_ok() && p.end == ev.len() {
            return Ok(p);
        }
    }
    Err(ParamError::Malformed("parameter lengths do not add up to the event length"))
}

/// Reads `n` lengths of `w` bytes at `at`, then the ranges they describe.
fn fill(p: &mut Params<'_>, at: usize, n: usize, w: usize) -> Result<(), ParamError> {
    let mut data = n.checked_mul(w).and_then(|x| x.checked_add(at)).ok_or(ParamError::Malformed("overflow"))?;
    if data > p.ev.len() {
        return Err(ParamError::Malformed("parameter lengths past the event"));
    }
    for i in 0..n {
        let off = at + i * w;
        let l = if w == 4 { le32(p.ev, off) } else { le16(p.ev, off).map(u32::from) };
        let l = l.ok_or(ParamError::Malformed("short length array"))? as usize;
        let end = data.checked_add(l).ok_or(ParamError::Malformed("overflow"))?;
        if end > p.ev.len() {
            return Err(ParamError::Malformed("parameter past the event"));
        }
        if let Some(r) = p.ranges.get_mut(i) {
            *r = (data as u32, l as u32);
        }
        data = end;
    }
    p.n = n;
    p.end = data;
    Ok(())
}

pub(super) fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub(super) fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(super) fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}
