//! DNS message decoding.
//!
//! Our own bounded parser rather than a full decoder: pairing needs the
//! header and the first question even from messages a strict decoder rejects
//! (a bad answer section, a mangled OPT, a cut-off tail), and the header +
//! question path must not allocate more than the qname. Rules:
//!
//! * compression pointers only point backwards (before the pointer itself),
//!   at most [`MAX_POINTER_JUMPS`] per name, names at most 255 bytes on the
//!   wire: anything else is [`DnsError::BadName`];
//! * after the first question nothing is fatal: a malformed record ends the
//!   walk and keeps what was decoded so far (`answers.len() < ancount`);
//! * at most [`MAX_ANSWERS`] answers are rendered, but every record is walked
//!   (cheaply) to find the OPT record and its extended rcode bits.
//!
//! The unit tests cross-check against `simple-dns`, a maintained full decoder.

use std::{fmt::Write as _, net::Ipv6Addr, sync::Arc};

use thiserror::Error;

pub use super::intern::Interner;

/// Why a payload is not a DNS message we can use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than the 12-byte header or than a record claims.
    #[error("DNS message truncated at byte {0}")]
    Truncated(usize),
    /// No question (we need qname/qtype to pair and explain).
    #[error("DNS message has no question")]
    NoQuestion,
    /// A compression pointer loop or a name longer than 255 bytes.
    #[error("bad DNS name at byte {0}")]
    BadName(usize),
}

pub use crate::model::{
    Answer, RType,
    rr::{qtype_name, qtype_str, rcode_name, rcode_str},
};

/// A decoded DNS message: what pairing and findings need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// Message id.
    pub id: u16,
    /// QR bit: true for a response.
    pub is_response: bool,
    /// Opcode (0 = QUERY).
    pub opcode: u8,
    /// Response code including the EDNS extended bits (e.g. 23 = BADCOOKIE).
    pub rcode: u16,
    /// TC bit.
    pub truncated: bool,
    /// RD bit.
    pub recursion_desired: bool,
    /// First question's name, no trailing dot, as sent (case kept); shared
    /// with every other message and answer that names it (see [`Interner`]).
    pub qname: Arc<str>,
    /// First question's type.
    pub qtype: u16,
    /// Answer records (answer section only), at most a bounded number.
    pub answers: Vec<Answer>,
    /// ANCOUNT from the header.
    pub ancount: u16,
}

/// Answers rendered per message; the rest are walked but not kept.
pub const MAX_ANSWERS: usize = 64;
/// Compression pointers followed per name.
pub const MAX_POINTER_JUMPS: usize = 128;
/// Longest name on the wire (RFC 1035 §2.3.4), length bytes and root included.
pub const MAX_NAME_WIRE: usize = 255;

const TYPE_OPT: u16 = 41;

#[inline]
fn be16(m: &[u8], at: usize) -> Result<u16, DnsError> {
    match m.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(DnsError::Truncated(at)),
    }
}

#[inline]
fn be32(m: &[u8], at: usize) -> Result<u32, DnsError> {
    match m.get(at..at + 4) {
        Some(&[b0, b1, b2, b3]) => Ok(u32::from_be_bytes([b0, b1, b2, b3])),
        _ => Err(DnsError::Truncated(at)),
    }
}

/// Decodes a DNS message (without TCP length prefix).
///
/// Errors only when the header or the first question cannot be read:
/// [`DnsError::Truncated`] (offset of the missing field),
/// [`DnsError::NoQuestion`] (QDCOUNT 0), [`DnsError::BadName`] (qname with a
/// forward pointer, a pointer loop, a reserved label type or over 255 bytes).
pub fn decode(payload: &[u8]) -> Result<DnsMessage, DnsError> {
    decode_with(payload, &mut Interner::uncached())
}

/// [`decode`], with names and answer data shared through `names` (a
/// decoder keeps one: the same strings repeat message after message).
///
/// # Errors
/// As [`decode`].
pub fn decode_with(payload: &[u8], names: &mut Interner) -> Result<DnsMessage, DnsError> {
    let m = payload;
    let Some(h) = m.first_chunk::<12>() else {
        return Err(DnsError::Truncated(m.len()));
    };
    let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let (id, flags, qdcount, ancount, nscount, arcount) = (be(0), be(2), be(4), be(6), be(8), be(10));
    if qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    // The question's name is nearly always plain labels, and the same name
    // comes back message after message: known by its wire form, it is not
    // rendered again.
    let (qname, off) = if let Some(recent) = names.recent_wire(m, 12) { recent } else { question_name(m, names)? };
    let qtype = be16(m, off)?;
    be16(m, off + 2)?; // qclass: must be there, not needed
    let mut msg = DnsMessage {
        id,
        is_response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: flags & 0x000f,
        truncated: flags & 0x0200 != 0,
        recursion_desired: flags & 0x0100 != 0,
        qname,
        qtype,
        answers: if ancount > 0 { Vec::with_capacity(usize::from(ancount).min(MAX_ANSWERS)) } else { Vec::new() },
        ancount,
    };
    // A query is header and question: nothing more to walk.
    if qdcount == 1 && ancount == 0 && nscount == 0 && arcount == 0 {
        return Ok(msg);
    }
    // A malformed tail keeps what was decoded: the caller still pairs on
    // header + question, and answers.len() < ancount shows the loss.
    let counts = [qdcount - 1, ancount, nscount, arcount];
    let mut buf = None;
    let _ = walk_records(m, off + 4, counts, &mut msg, names, &mut buf);
    if let Some(buf) = buf {
        names.put_buf(buf);
    }
    Ok(msg)
}

/// The first question's name and the offset after it: from the wire-form
/// cache when it is plain labels seen before, else read and rendered.
fn question_name(m: &[u8], names: &mut Interner) -> Result<(Arc<str>, usize), DnsError> {
    let plain = plain_name_end(m, 12);
    let (hash, known) = match plain {
        Some(end) => names.lookup_wire(&m[12..end]),
        None => (0, None),
    };
    if let (Some(q), Some(end)) = (known, plain) {
        return Ok((q, end));
    }
    let mut buf = names.take_buf();
    let r = read_name(m, 12, Some(&mut buf)).map(|off| {
        if buf.is_empty() {
            buf.push('.');
        }
        (names.intern(&buf), off)
    });
    names.put_buf(buf);
    let (q, off) = r?;
    if let Some(end) = plain {
        names.store_wire(hash, &m[12..end], &q);
    }
    Ok((q, off))
}

/// Walks the rest of the message: extra questions, answers (rendered),
/// authority (skipped), additional (OPT sought). `buf` is the interner's
/// scratch string, taken when something has to be rendered (the caller
/// gives it back).
fn walk_records(
    m: &[u8],
    mut off: usize,
    [extra_questions, an, ns, ar]: [u16; 4],
    msg: &mut DnsMessage,
    names: &mut Interner,
    buf: &mut Option<String>,
) -> Result<(), DnsError> {
    for _ in 0..extra_questions {
        off = read_name(m, off, None)? + 4;
    }
    for _ in 0..an {
        let keep = msg.answers.len() < MAX_ANSWERS;
        // Most owner names are a pointer to the question's name (0xc00c):
        // that name is already rendered and shared.
        let (name, after) = if !keep {
            (None, read_name(m, off, None)?)
        } else if m.get(off..off + 2) == Some(&[0xc0, 12]) {
            (Some(Arc::clone(&msg.qname)), off + 2)
        } else {
            let buf = buf.get_or_insert_with(|| names.take_buf());
            buf.clear();
            let after = read_name(m, off, Some(buf))?;
            if buf.is_empty() {
                buf.push('.');
            }
            (Some(names.intern(buf)), after)
        };
        let (rtype, ttl, rd_start, rd_end) = rr_fixed(m, after)?;
        if let Some(name) = name {
            let rd = m.get(rd_start..rd_end);
            let data = if rtype == 1
                && let Some(&[a, b, c, d]) = rd
            {
                names.addr4([a, b, c, d])
            } else if rtype == 28
                && let Some(a) = rd.and_then(|rd| <[u8; 16]>::try_from(rd).ok())
            {
                names.addr6(a)
            } else {
                let buf = buf.get_or_insert_with(|| names.take_buf());
                render_rdata(m, rtype, rd_start, rd_end, buf);
                names.intern(buf)
            };
            msg.answers.push(Answer { name, rtype: RType(rtype), ttl, data });
        }
        off = rd_end;
    }
    for _ in 0..ns {
        let after = read_name(m, off, None)?;
        off = rr_fixed(m, after)?.3;
    }
    for _ in 0..ar {
        let after = read_name(m, off, None)?;
        let (rtype, ttl, _, rd_end) = rr_fixed(m, after)?;
        if rtype == TYPE_OPT {
            // RFC 6891 §6.1.3: upper 8 bits of the 12-bit rcode in the TTL.
            msg.rcode = (((ttl >> 24) as u16) << 4) | (msg.rcode & 0x0f);
            return Ok(());
        }
        off = rd_end;
    }
    Ok(())
}

/// Where the name at `start` ends when it is only plain labels (no
/// pointer, no extended label type), all in `m` and at most
/// [`MAX_NAME_WIRE`] bytes: exactly the names [`read_name`] reads without a
/// jump or an error, ending at the same offset.
fn plain_name_end(m: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    loop {
        let len = *m.get(pos)?;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 != 0 {
            return None;
        }
        pos += 1 + usize::from(len);
        if pos + 1 - start > MAX_NAME_WIRE {
            return None;
        }
    }
}

/// Reads type, TTL and rdata bounds of a record whose name ends at `off`.
fn rr_fixed(m: &[u8], off: usize) -> Result<(u16, u32, usize, usize), DnsError> {
    let rtype = be16(m, off)?;
    let ttl = be32(m, off + 4)?;
    let rdlen = usize::from(be16(m, off + 8)?);
    let start = off + 10;
    let end = start + rdlen;
    if end > m.len() {
        return Err(DnsError::Truncated(m.len()));
    }
    Ok((rtype, ttl, start, end))
}

/// Reads the name at `start`, appending its presentation form (no trailing
/// dot, root as empty) to `out` when given; returns the offset right after
/// the name at `start` (after the first pointer if there is one).
///
/// With `out == None` the name is only skipped: pointers are not followed,
/// which is all the record walk needs.
fn read_name(m: &[u8], start: usize, out: Option<&mut String>) -> Result<usize, DnsError> {
    // SAFETY: only ASCII is appended below (plain label bytes are 0x21..=0x7e,
    // everything else is escaped with ASCII), so the string stays UTF-8 even
    // when the walk stops half-way with an error.
    let mut out = out.map(|s| unsafe { s.as_mut_vec() });
    // Appended after whatever `out` holds (rdata: `10 mail.example`).
    let base = out.as_ref().map_or(0, |s| s.len());
    let mut pos = start;
    let mut jumps = 0usize;
    let mut wire = 1usize; // the root label's length byte
    let mut end = None;
    loop {
        let len = *m.get(pos).ok_or(DnsError::Truncated(pos))?;
        match len & 0xc0 {
            0xc0 => {
                let lo = *m.get(pos + 1).ok_or(DnsError::Truncated(pos + 1))?;
                if out.is_none() {
                    return Ok(pos + 2);
                }
                let target = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                jumps += 1;
                if target >= pos || jumps > MAX_POINTER_JUMPS {
                    return Err(DnsError::BadName(pos));
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            0x00 => {
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                let n = usize::from(len);
                wire += n + 1;
                if wire > MAX_NAME_WIRE {
                    return Err(DnsError::BadName(pos));
                }
                let label = m.get(pos + 1..pos + 1 + n).ok_or(DnsError::Truncated(pos + 1))?;
                if let Some(s) = out.as_deref_mut() {
                    if s.len() > base {
                        s.push(b'.');
                    }
                    push_label_ascii(s, label);
                }
                pos += 1 + n;
            }
            // 0x40 extended and 0x80 reserved label types (RFC 6891 §5).
            _ => return Err(DnsError::BadName(pos)),
        }
    }
}

/// Reads a name and returns it in presentation form (root = ".").
#[cfg(test)]
fn name_string(m: &[u8], off: usize) -> Result<(String, usize), DnsError> {
    let mut s = String::new();
    let next = read_name(m, off, Some(&mut s))?;
    if s.is_empty() {
        s.push('.');
    }
    Ok((s, next))
}

/// Appends a label, escaping as `dig` does: `\.`, `\\` and `\DDD` for bytes
/// outside printable ASCII, so a name never smuggles control characters.
/// Appends only ASCII (see [`read_name`]).
fn push_label_ascii(s: &mut Vec<u8>, label: &[u8]) {
    // Nearly every label needs no escape: one check, one copy.
    if label.iter().all(|&b| matches!(b, 0x21..=0x7e) && b != b'.' && b != b'\\') {
        s.extend_from_slice(label);
        return;
    }
    for &b in label {
        match b {
            b'.' | b'\\' => s.extend_from_slice(&[b'\\', b]),
            0x21..=0x7e => s.push(b),
            _ => s.extend_from_slice(&ddd(b)),
        }
    }
}

/// [`push_label_ascii`] onto a string (what the tests check).
#[cfg(test)]
fn push_label(s: &mut String, label: &[u8]) {
    let mut v = std::mem::take(s).into_bytes();
    push_label_ascii(&mut v, label);
    *s = String::from_utf8(v).expect("labels are escaped to ASCII");
}

/// `\DDD`: a byte in decimal.
fn ddd(b: u8) -> [u8; 4] {
    [b'\\', b'0' + b / 100, b'0' + (b / 10) % 10, b'0' + b % 10]
}

fn push_ddd(s: &mut String, b: u8) {
    s.extend(ddd(b).map(char::from));
}

/// Presentation form of rdata into `s` (cleared first); the RFC 3597
/// generic form when the type is not one we render or the data does not fit
/// its type.
fn render_rdata(m: &[u8], rtype: u16, start: usize, end: usize, s: &mut String) {
    s.clear();
    if render_known(m, rtype, start, end, s).is_some() {
        return;
    }
    // A known type that did not fit may have written part of itself.
    s.clear();
    let rd = m.get(start..end).unwrap_or(&[]);
    let _ = write!(s, "\\# {}", rd.len());
    if !rd.is_empty() {
        s.push(' ');
        for b in rd {
            let _ = write!(s, "{b:02x}");
        }
    }
}

/// `Ipv4Addr`'s `Display` form, written without the formatting machinery
/// (every A answer goes through here).
pub(super) fn push_dotted_quad(s: &mut String, a: [u8; 4]) {
    for (i, o) in a.into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + (o / 10) % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
}

/// `Ipv6Addr`'s `Display` form (every AAAA answer rendered goes through here).
pub(super) fn push_ipv6(s: &mut String, a: [u8; 16]) {
    let _ = write!(s, "{}", Ipv6Addr::from(a));
}

/// [`push_dotted_quad`] into a new string (what the tests check).
#[cfg(test)]
fn dotted_quad(a: [u8; 4]) -> String {
    let mut s = String::new();
    push_dotted_quad(&mut s, a);
    s
}

/// Appends the name at `off` (root = "."), which must end inside the rdata
/// ending at `end`; returns the offset after it.
fn push_name_in(s: &mut String, m: &[u8], off: usize, end: usize) -> Option<usize> {
    let from = s.len();
    let next = read_name(m, off, Some(s)).ok()?;
    if s.len() == from {
        s.push('.');
    }
    // Pointers may leave the rdata; the name itself may not.
    (next <= end).then_some(next)
}

/// Appends the presentation form of a type we render; None when the type
/// is another or the data does not fit it (`s` may then hold a part).
fn render_known(m: &[u8], rtype: u16, start: usize, end: usize, s: &mut String) -> Option<()> {
    let rd = m.get(start..end)?;
    match rtype {
        1 => {
            let a: [u8; 4] = rd.try_into().ok()?;
            push_dotted_quad(s, a);
        }
        28 => push_ipv6(s, rd.try_into().ok()?),
        // NS, CNAME, PTR, DNAME
        2 | 5 | 12 | 39 => {
            let next = push_name_in(s, m, start, end)?;
            (next == end).then_some(())?;
        }
        15 => {
            let pref = be16(m, start).ok()?;
            let _ = write!(s, "{pref} ");
            let next = push_name_in(s, m, start + 2, end)?;
            (next == end).then_some(())?;
        }
        33 => {
            if rd.len() < 7 {
                return None;
            }
            let (prio, weight, port) = (be16(m, start).ok()?, be16(m, start + 2).ok()?, be16(m, start + 4).ok()?);
            let _ = write!(s, "{prio} {weight} {port} ");
            let next = push_name_in(s, m, start + 6, end)?;
            (next == end).then_some(())?;
        }
        6 => {
            let next = push_name_in(s, m, start, end)?;
            s.push(' ');
            let next = push_name_in(s, m, next, end)?;
            if end.checked_sub(next)? != 20 {
                return None;
            }
            let f = |i: usize| be32(m, next + 4 * i).ok();
            let _ = write!(s, " {} {} {} {} {}", f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
        }
        16 | 99 => {
            let mut rest = rd;
            while let Some((&n, tail)) = rest.split_first() {
                let txt = tail.get(..usize::from(n))?;
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push('"');
                for &b in txt {
                    match b {
                        b'"' | b'\\' => {
                            s.push('\\');
                            s.push(b as char);
                        }
                        0x20..=0x7e => s.push(b as char),
                        _ => push_ddd(s, b),
                    }
                }
                s.push('"');
                rest = tail.get(usize::from(n)..)?;
            }
        }
        _ => return None,
    }
    Some(())
}

/// A minimal pcap reader for tests (the real one lives in `capture/`):
/// classic pcap, either byte order, link types NULL, Ethernet (with VLAN
/// tags), RAW, Linux SLL and SLL2. Yields (wire length, IP packet).
#[cfg(test)]
pub(crate) mod test_pcap {
    use std::path::PathBuf;

    /// The vendored `tests/fixtures/pcap/NAME` (panics when missing).
    pub(crate) fn fixture(name: &str) -> PathBuf {
        crate::testkit::fixture(&format!("pcap/{name}"))
    }

    /// Reads a fixture (panics when it is not there).
    #[allow(
        clippy::unnecessary_wraps,
        reason = "callers still use the skip-when-missing form; a missing fixture panics now"
    )]
    pub(crate) fn read(name: &str) -> Option<Vec<(u32, Vec<u8>)>> {
        let path = fixture(name);
        let f = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let magic = u32::from_le_bytes(f[0..4].try_into().unwrap());
        let le = match magic {
            0xa1b2_c3d4 | 0xa1b2_3c4d => true,
            0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
            _ => panic!("{}: not a pcap", path.display()),
        };
        let u32at = |o: usize| {
            let b: [u8; 4] = f[o..o + 4].try_into().unwrap();
            if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
        };
        let linktype = u32at(20);
        let mut out = Vec::new();
        let mut o = 24;
        while o + 16 <= f.len() {
            let incl = u32at(o + 8) as usize;
            let orig = u32at(o + 12);
            let frame = &f[o + 16..o + 16 + incl];
            o += 16 + incl;
            let ip = match linktype {
                0 => &frame[4..],
                101 => frame,
                1 => {
                    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
                    let mut l2 = 14;
                    while et == 0x8100 || et == 0x88a8 {
                        et = u16::from_be_bytes([frame[l2 + 2], frame[l2 + 3]]);
                        l2 += 4;
                    }
                    &frame[l2..]
                }
                113 => &frame[16..],
                276 => &frame[20..],
                t => panic!("link type {t}"),
            };
            let hdr = (frame.len() - ip.len()) as u32;
            out.push((orig - hdr, ip.to_vec()));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        decode::packet,
        testkit::{
            Rng,
            dns::{build, put_name},
        },
    };

    /// Labels are escaped as dig does, wherever the odd byte sits.
    #[test]
    fn labels_escape_like_dig() {
        let cases: [(&[u8], &str); 7] = [
            (b"plain-label_09", "plain-label_09"),
            (b"a.b", "a\\.b"),
            (b"\\x", "\\\\x"),
            (b" lead", "\\032lead"),
            (b"trail\x7f", "trail\\127"),
            (b"mid\x00dle\xff", "mid\\000dle\\255"),
            (b"", ""),
        ];
        for (label, want) in cases {
            let mut s = String::from("x");
            push_label(&mut s, label);
            assert_eq!(s, format!("x{want}"), "{label:?}");
        }
    }

    #[test]
    fn dotted_quad_is_ipv4_display() {
        for a in [[0, 0, 0, 0], [10, 0, 0, 1], [255, 255, 255, 255], [9, 10, 99, 100], [1, 20, 200, 109]] {
            assert_eq!(dotted_quad(a), Ipv4Addr::from(a).to_string());
        }
    }

    fn name_rd(name: &str) -> Vec<u8> {
        let mut b = Vec::new();
        put_name(&mut b, name);
        b
    }

    #[test]
    fn query_header_and_question() {
        let q = build(0xbeef, 0x0100, "Backend.A.svc.cluster.local", 28, &[], Some(0));
        let m = decode(&q).unwrap();
        assert_eq!(m.id, 0xbeef);
        assert!(!m.is_response);
        assert!(m.recursion_desired);
        assert!(!m.truncated);
        assert_eq!(m.opcode, 0);
        assert_eq!(m.rcode, 0);
        assert_eq!(&*m.qname, "Backend.A.svc.cluster.local");
        assert_eq!(m.qtype, 28);
        assert!(m.answers.is_empty());
        assert_eq!(m.ancount, 0);
    }

    #[test]
    fn response_answers_rendered() {
        let mut mx = vec![0, 10];
        mx.extend(name_rd("mail.example"));
        let mut srv = vec![0, 1, 0, 2, 0, 53];
        srv.extend(name_rd("dns.example"));
        let mut soa = name_rd("ns.example");
        soa.extend(name_rd("host.example"));
        for v in [1u32, 2, 3, 4, 5] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        let aaaa = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let answers: Vec<(u16, &[u8])> = vec![
            (1, &[10, 0, 0, 1]),
            (28, &aaaa),
            (5, &[0xc0, 12]),
            (12, &[3, b'p', b't', b'r', 0]),
            (15, &mx),
            (16, b"\x05hello\x03a\"b"),
            (33, &srv),
            (6, &soa),
            (2, &[0]),
            (65280, &[0xab, 0xcd]),
            (10, &[]),
            (1, &[1, 2, 3]),
        ];
        let r = build(7, 0x8183, "www.example", 1, &answers, None);
        let m = decode(&r).unwrap();
        assert!(m.is_response);
        assert_eq!(m.rcode, 3);
        assert_eq!(m.ancount, 12);
        let got: Vec<(String, &str)> = m.answers.iter().map(|a| (a.rtype.to_string(), &*a.data)).collect();
        let got: Vec<(&str, &str)> = got.iter().map(|(t, d)| (t.as_str(), *d)).collect();
        assert_eq!(
            got,
            [
                ("A", "10.0.0.1"),
                ("AAAA", "2001:db8::1"),
                ("CNAME", "www.example"),
                ("PTR", "ptr"),
                ("MX", "10 mail.example"),
                ("TXT", "\"hello\" \"a\\\"b\""),
                ("SRV", "1 2 53 dns.example"),
                ("SOA", "ns.example host.example 1 2 3 4 5"),
                ("NS", "."),
                ("TYPE65280", "\\# 2 abcd"),
                ("NULL", "\\# 0"),
                ("A", "\\# 3 010203"),
            ]
        );
        assert!(m.answers.iter().all(|a| &*a.name == "www.example" && a.ttl == 300));
    }

    #[test]
    fn edns_extended_rcode() {
        // BADCOOKIE = 23 = (1 << 4) | 7
        let r = build(1, 0x8007, ".", 6, &[], Some(1 << 24));
        let m = decode(&r).unwrap();
        assert_eq!(m.rcode, 23);
        assert_eq!(rcode_name(m.rcode), "BADCOOKIE");
        assert_eq!(&*m.qname, ".");
    }

    #[test]
    fn answers_are_bounded_but_opt_still_found() {
        let a: &[u8] = &[1, 2, 3, 4];
        let answers = vec![(1u16, a); 100];
        let r = build(1, 0x8000, "x", 1, &answers, Some(1 << 24));
        let m = decode(&r).unwrap();
        assert_eq!(m.answers.len(), MAX_ANSWERS);
        assert_eq!(m.ancount, 100);
        assert_eq!(m.rcode, 16);
    }

    #[test]
    fn escaped_labels() {
        let mut q = build(1, 0, "a", 1, &[], None);
        // replace the label "a" with "a.b c\\"
        let lab = b"a.b c\\";
        q.splice(12..14, [&[lab.len() as u8][..], lab].concat());
        assert_eq!(&*decode(&q).unwrap().qname, "a\\.b\\032c\\\\");
    }

    #[test]
    fn truncated_at_every_offset() {
        let mut mx = vec![0, 10];
        mx.extend(name_rd("mail.example"));
        let r = build(9, 0x8180, "example.com", 15, &[(15, &mx)], Some(0));
        let q_end = 12 + 13 + 4;
        for n in 0..r.len() {
            match decode(&r[..n]) {
                Err(DnsError::Truncated(at)) => assert!(n < q_end && at <= n, "{n}: {at}"),
                Ok(m) => {
                    assert!(n >= q_end, "{n}");
                    assert_eq!(&*m.qname, "example.com");
                    assert!(m.answers.len() <= 1);
                }
                Err(e) => panic!("{n}: {e}"),
            }
        }
        assert_eq!(decode(&r).unwrap().answers.len(), 1);
    }

    #[test]
    fn bad_names() {
        let hdr = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        // Pointer to itself.
        let m = [&hdr[..], &[0xc0, 12, 0, 1, 0, 1]].concat();
        assert_eq!(decode(&m), Err(DnsError::BadName(12)));
        // Forward pointer.
        let m = [&hdr[..], &[0xc0, 14, 1, b'a', 0, 0, 1, 0, 1]].concat();
        assert_eq!(decode(&m), Err(DnsError::BadName(12)));
        // Loop through two labels and pointers: 12: "a" -> ptr 12 at 14.
        let m = [&hdr[..], &[1, b'a', 0xc0, 12, 0, 1, 0, 1]].concat();
        assert!(matches!(decode(&m), Err(DnsError::BadName(_))));
        // Reserved label type.
        let m = [&hdr[..], &[0x40, 0, 0, 1, 0, 1]].concat();
        assert_eq!(decode(&m), Err(DnsError::BadName(12)));
        // 300-byte name.
        let long =
            format!("{}.{}.{}.{}.{}", "a".repeat(60), "b".repeat(60), "c".repeat(60), "d".repeat(60), "e".repeat(60));
        let m = build(1, 0, &long, 1, &[], None);
        assert!(matches!(decode(&m), Err(DnsError::BadName(_))));
        // 253 characters (255 on the wire) is the longest legal name.
        let ok = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(decode(&build(1, 0, &ok, 1, &[], None)).unwrap().qname, Arc::from(ok.as_str()));
        let over = format!("{ok}x");
        assert!(matches!(decode(&build(1, 0, &over, 1, &[], None)), Err(DnsError::BadName(_))));
    }

    #[test]
    fn compression_chain_is_bounded() {
        // "x" at 12, then 200 pointers, each to the one before it (the
        // first to 12): every pointer is backwards, the chain is just long.
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0];
        let mut prev = 12u16;
        for _ in 0..200 {
            let here = m.len() as u16;
            m.extend_from_slice(&(0xc000 | prev).to_be_bytes());
            prev = here;
        }
        let last = m.len() - 2;
        assert_eq!(read_name(&m, last, Some(&mut String::new())), Err(DnsError::BadName(last - 2 * 128)));
        // 101 jumps: within bounds.
        assert_eq!(name_string(&m, 15 + 2 * 100).unwrap(), ("x".to_string(), 15 + 2 * 101));
    }

    #[test]
    fn no_question_and_garbage() {
        let mut r = build(1, 0x8180, "x", 1, &[], None);
        r[5] = 0;
        assert_eq!(decode(&r), Err(DnsError::NoQuestion));
        assert_eq!(decode(&[]), Err(DnsError::Truncated(0)));
        assert_eq!(decode(&[0; 11]), Err(DnsError::Truncated(11)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let base = build(3, 0x8180, "a.example.com", 1, &[(1, &[1, 2, 3, 4]), (5, &[0xc0, 14])], Some(0));
        let mut buf = vec![0u8; 200];
        for i in 0..10_000 {
            for b in &mut buf {
                *b = rng.next() as u8;
            }
            let x = rng.0;
            let n = (x >> 32) as usize % buf.len();
            let _ = decode(&buf[..n]);
            // Mutate a valid message too, so the deep paths are reached.
            let mut m = base.clone();
            let at = (x as usize >> 8) % m.len();
            m[at] = (x >> 40) as u8;
            if i % 3 == 0 {
                m[4] = 0;
                m[5] = 1;
            }
            let _ = decode(&m);
        }
    }

    /// A shared cache changes nothing decoded: every mutated message (and
    /// its repeats, which hit the caches) decodes as a one-off decode does,
    /// including the errors; repeated names are one string.
    #[test]
    fn cached_decoding_is_the_one_off_decoding() {
        let mut rng = Rng(0x0dd_ba11_5eed);
        let mut names = Interner::new();
        let bases = [
            build(3, 0x8180, "a.example.com", 1, &[(1, &[1, 2, 3, 4]), (5, &[0xc0, 14])], Some(0)),
            build(4, 0x0100, "Svc.NS.svc.cluster.local", 28, &[], None),
            build(5, 0x8183, ".", 6, &[(6, &[0, 0, 0, 0])], None),
        ];
        for i in 0..20_000u32 {
            let x = rng.next();
            let mut m = bases[i as usize % bases.len()].clone();
            if i % 2 == 1 {
                let at = (x as usize >> 8) % m.len();
                m[at] = (x >> 40) as u8;
            }
            let cut = if i % 7 == 0 { (x >> 16) as usize % (m.len() + 1) } else { m.len() };
            let m = &m[..cut];
            for _ in 0..2 {
                assert_eq!(decode_with(m, &mut names), decode(m), "{m:02x?}");
            }
        }
        let a = decode_with(&bases[1], &mut names).unwrap().qname;
        let b = decode_with(&bases[1], &mut names).unwrap().qname;
        assert!(Arc::ptr_eq(&a, &b));
        assert!(names.counts().0 > 20_000, "the caches answer repeats");
    }

    /// The shortcuts for a question name seen just before (its wire bytes
    /// matched in place) and for known A/AAAA addresses decode exactly as the
    /// general path does, on names that share a prefix or a wire form with
    /// the one before them, or end in a pointer, a cut or a bad label.
    #[test]
    fn recent_name_shortcut_is_the_general_decoding() {
        let mut names = Interner::new();
        let base = build(1, 0x8180, "a.example", 1, &[(1, &[10, 0, 0, 1]), (1, &[10, 0, 0, 2])], None);
        let name_end = 12 + 11;
        let mut cases = vec![
            base.clone(),
            build(2, 0x0100, "a.example.com", 1, &[], None),
            build(3, 0x0100, "a.exampl", 1, &[], None),
            build(4, 0x0100, "A.example", 1, &[], None),
            build(5, 0x8180, "b.example", 1, &[(1, &[10, 0, 0, 2]), (1, &[10, 0, 0, 1])], None),
        ];
        // AAAA answers, cached by address: plain, v4-mapped, zero runs, and
        // one a byte short (rendered generically).
        let v6: Vec<[u8; 16]> = ["2001:db8::1", "::ffff:10.0.0.1", "::", "fe80:0:0:1::2"]
            .iter()
            .map(|a| a.parse::<Ipv6Addr>().unwrap().octets())
            .collect();
        let aaaa: Vec<(u16, &[u8])> = v6.iter().map(|a| (28, &a[..])).chain([(28, &v6[0][..15])]).collect();
        cases.push(build(6, 0x8180, "c.example", 28, &aaaa, None));
        let back: Vec<(u16, &[u8])> = aaaa.iter().rev().copied().collect();
        cases.push(build(7, 0x8180, "c.example", 28, &back, None));
        // The same labels, then a pointer instead of the root; then a label
        // type that is reserved; then cut right after the name.
        let mut ptr = base.clone();
        ptr.splice(name_end - 1..name_end, [0xc0, 12]);
        cases.push(ptr);
        let mut reserved = base.clone();
        reserved[name_end - 1] = 0x40;
        cases.push(reserved);
        cases.push(base[..name_end].to_vec());
        cases.push(base[..name_end - 1].to_vec());
        for i in 0..cases.len() {
            for j in 0..cases.len() {
                for m in [&cases[i], &cases[j], &cases[i]] {
                    assert_eq!(decode_with(m, &mut names), decode(m), "{i} {j}: {m:02x?}");
                }
            }
        }
    }

    /// The committed fuzz seeds decode through the shared caches and their
    /// shortcuts exactly as a one-off decode does, twice in a row.
    #[test]
    fn fuzz_seeds_decode_as_one_offs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/dns_decode");
        let mut names = Interner::new();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fuzz/seeds/dns_decode") {
            let m = std::fs::read(e.expect("seed").path()).expect("seed bytes");
            for _ in 0..2 {
                assert_eq!(decode_with(&m, &mut names), decode(&m), "{m:02x?}");
            }
            n += 1;
        }
        assert!(n > 10, "only {n} seeds");
    }

    #[test]
    fn names_of_types_and_rcodes() {
        assert_eq!(qtype_name(1), "A");
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(255), "ANY");
        assert_eq!(qtype_name(65280), "TYPE65280");
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(11), "DSOTYPENI");
        assert_eq!(rcode_name(16), "BADVERS");
        assert_eq!(rcode_name(23), "BADCOOKIE");
        assert_eq!(rcode_name(30), "RCODE30");
    }

    /// Every UDP DNS payload in a fixture, with its packet's parse result.
    fn udp_payloads(name: &str) -> Option<Vec<Vec<u8>>> {
        let pkts = test_pcap::read(name)?;
        Some(
            pkts.iter()
                .filter_map(|(_, ip)| {
                    let v = packet::parse(ip).ok()?;
                    (v.transport == crate::event::Transport::Udp).then(|| v.payload.to_vec())
                })
                .collect(),
        )
    }

    #[test]
    fn fixture_long_connection() {
        let Some(p) = udp_payloads("zeek__dns_long-connection.pcap") else { return };
        let msgs: Vec<DnsMessage> = p.iter().map(|b| decode(b).unwrap()).collect();
        assert_eq!(msgs.len(), 22);
        assert_eq!(msgs.iter().filter(|m| m.is_response).count(), 11);
        assert_eq!(msgs.iter().filter(|m| m.rcode == 3).count(), 1);
        assert_eq!((msgs[0].id, msgs[0].qname.as_ref(), msgs[0].qtype), (63343, "google.com", 15));
        assert_eq!(&*msgs[1].answers[0].data, "40 smtp4.google.com");
        assert_eq!(msgs[1].answers.len(), 6);
        assert_eq!(&*msgs[5].answers[0].data, "66-192-9-104.gen.twtelecom.net");
        assert_eq!(&*msgs[9].answers[0].data, "2001:4f8:4:7:2e0:81ff:fe52:9a6b");
    }

    #[test]
    fn fixture_badcookie() {
        let Some(p) = udp_payloads("tcpdump__dns-badcookie.pcap") else {
            return;
        };
        assert_eq!(p.len(), 4);
        let msgs: Vec<DnsMessage> = p.iter().map(|b| decode(b).unwrap()).collect();
        let rc: Vec<u16> = msgs.iter().map(|m| m.rcode).collect();
        assert_eq!(rc, [0, 23, 0, 0]);
        assert!(msgs.iter().all(|m| &*m.qname == "." && m.qtype == 6));
        assert_eq!(msgs[3].answers[0].rtype, "SOA");
    }

    #[test]
    fn fixture_edns_opts_all_decode() {
        let Some(p) = udp_payloads("tcpdump__edns-opts.pcap") else { return };
        assert_eq!(p.len(), 42);
        for b in &p {
            let m = decode(b).unwrap();
            assert_eq!(&*m.qname, "example.com");
            if m.is_response {
                assert_eq!(&*m.answers[0].data, "93.184.216.34");
            }
        }
    }

    #[test]
    fn fixture_zlip_bomb() {
        let Some(pkts) = test_pcap::read("tcpdump__dns-zlip-1.pcap") else { return };
        let ip = &pkts[0].1;
        let v = packet::parse(ip).unwrap();
        // The UDP header says 8 (no payload), IP carries the bomb: decoding
        // what UDP claims fails cleanly, and so does the bomb itself.
        assert!(decode(v.payload).is_err());
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let bomb = ip.get(ihl + 8..).unwrap_or(&[]);
        assert!(decode(bomb).is_err());
    }

    /// Cross-check against simple-dns, a maintained full decoder, on every
    /// message of every fixture it accepts.
    #[test]
    fn cross_check_with_simple_dns() {
        let mut checked = 0;
        for f in [
            "zeek__dns_long-connection.pcap",
            "tcpdump__edns-opts.pcap",
            "tcpdump__dns-badcookie.pcap",
            "zeek__dns-edns-ecs.pcap",
            "zeek__ipv6-fragmented-dns.pcap",
        ] {
            let Some(p) = udp_payloads(f) else { return };
            for b in &p {
                let Ok(theirs) = simple_dns::Packet::parse(b) else { continue };
                let ours = decode(b).unwrap();
                assert_eq!(ours.id, theirs.id());
                let q = &theirs.questions[0];
                let tq = q.qname.to_string();
                let tq = if tq.is_empty() { ".".to_string() } else { tq };
                assert_eq!(ours.qname.trim_end_matches('.'), tq.trim_end_matches('.'), "{f}");
                assert_eq!(ours.qtype, u16::from(q.qtype), "{f}");
                assert_eq!(ours.answers.len(), theirs.answers.len().min(MAX_ANSWERS), "{f}");
                assert_eq!(ours.is_response, theirs.has_flags(simple_dns::PacketFlag::RESPONSE));
                for (a, t) in ours.answers.iter().zip(&theirs.answers) {
                    assert_eq!(a.ttl, t.ttl, "{f}");
                    if let simple_dns::rdata::RData::A(x) = &t.rdata {
                        assert_eq!(&*a.data, Ipv4Addr::from(x.address).to_string());
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} messages cross-checked");
    }
}
