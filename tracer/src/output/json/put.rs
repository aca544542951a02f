//! The field writers of [`super`]'s hand-written JSON lines and the cache
//! they share: `serde_json`'s bytes for each kind of field, written
//! without building anything.

use std::{io::Write, sync::Arc};

use crate::enrich::PodRef;

use super::super::ms;

/// What the hand writers keep between lines: names already escaped and
/// quoted, and the date and time of day of the last second written.
///
/// Names (`comm`, `node`, pod names, `qname`, answers) are `Arc<str>`s
/// shared by every event that carries them, so the same allocation comes
/// back line after line: each is escaped once and then copied. A slot keys
/// on the allocation's address and holds a clone of the `Arc`, so the
/// address cannot be freed and reused for other text while cached. Bounded:
/// [`JsonCache::NAME_SLOTS`] names of at most [`JsonCache::NAME_BYTES`]
/// bytes written (longer ones are escaped each time).
pub struct JsonCache {
    names: Box<[NameSlot]>,
    /// Numbers of five digits and more that repeat (pids, namespace inodes).
    numbers: Box<[NumberSlot]>,
    /// IPv4 addresses as `"a.b.c.d:` (the port follows).
    addrs: Box<[AddrSlot]>,
    /// The last second written (`i64::MIN`: none) and its `YYYY-MM-DDTHH:MM:SS`.
    second: i64,
    second_text: [u8; 19],
    /// The runs of lines that repeat with their parties (`json/line.rs`).
    pub(super) lines: Box<[super::line::LineSlot]>,
    /// Answer records by their names' allocations (`json/answer.rs`).
    pub(super) answers: Box<[super::answer::AnswerSlot]>,
}

/// `len` 0: empty.
#[derive(Clone, Copy)]
pub(super) struct NumberSlot {
    key: u64,
    len: u8,
    out: [u8; 20],
}

/// `len` 0: empty.
#[derive(Clone, Copy)]
pub(super) struct AddrSlot {
    key: u32,
    len: u8,
    out: [u8; 24],
}

pub(super) struct NameSlot {
    key: Option<Arc<str>>,
    len: u8,
    out: [u8; JsonCache::NAME_BYTES],
}

impl Default for JsonCache {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonCache {
    /// Names remembered, two per set picked by address (the newer first):
    /// with 256 direct-mapped slots, the 200 names of the hot-cap recording
    /// and their processes' collided in 39 % of lookups (32,886 re-escapes
    /// per 84,000 lines, callgrind); with 2,048, the benchmark capture's
    /// 2,500 names in 69 % (68,994 per 100,000 lines).
    pub const NAME_SLOTS: usize = 8192;
    /// Longest remembered rendering, quotes included.
    pub const NAME_BYTES: usize = 64;

    /// An empty cache (one allocation, reused for the whole run).
    #[must_use]
    pub fn new() -> Self {
        let names = (0..Self::NAME_SLOTS).map(|_| NameSlot { key: None, len: 0, out: [0; Self::NAME_BYTES] }).collect();
        Self {
            names,
            numbers: vec![NumberSlot { key: 0, len: 0, out: [0; 20] }; 64].into_boxed_slice(),
            addrs: vec![AddrSlot { key: 0, len: 0, out: [0; 24] }; 64].into_boxed_slice(),
            second: i64::MIN,
            second_text: [0; 19],
            lines: (0..super::line::SLOTS).map(|_| super::line::LineSlot::default()).collect(),
            answers: (0..super::answer::SLOTS).map(|_| super::answer::AnswerSlot::default()).collect(),
        }
    }
}

// The slot is picked by the top bits of a product.
const _: () = assert!(JsonCache::NAME_SLOTS.is_power_of_two());

/// Appends all of `src` (a fixed size: a few moves, no `memcpy` call) and
/// cuts the vector back to the first `n` bytes of it.
#[inline(always)]
pub(super) fn put_fixed<const N: usize>(b: &mut Vec<u8>, src: &[u8; N], n: usize) {
    debug_assert!(n <= N);
    let at = b.len();
    b.extend_from_slice(src);
    b.truncate(at + n);
}

/// `"..."` with `serde_json`'s escaping: `"` and `\` backslashed, the short
/// forms `\b \f \n \r \t`, other control bytes as `\u00xx`; everything else
/// (DEL, non-ASCII) as is.
pub(crate) fn put_str(b: &mut Vec<u8>, s: &str) {
    b.reserve(s.len() + 2);
    b.push(b'"');
    put_str_body(b, s);
    b.push(b'"');
}

/// [`put_str`] without the quotes.
pub(super) fn put_str_body(b: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time past what needs no escape (nearly everything).
        if let Some(w) = bytes.get(i..i + 8) {
            if !needs_escape(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])) {
                i += 8;
                continue;
            }
        } else {
            let mut tail = [b'a'; 8];
            tail[..bytes.len() - i].copy_from_slice(&bytes[i..]);
            if !needs_escape(u64::from_le_bytes(tail)) {
                break;
            }
        }
        let c = bytes[i];
        i += 1;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        b.extend_from_slice(&bytes[from..i - 1]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            b.extend_from_slice(b"\\u00");
            b.push(HEX[usize::from(c >> 4)]);
            b.push(HEX[usize::from(c & 0xf)]);
        } else {
            b.extend_from_slice(esc);
        }
        from = i;
    }
    b.extend_from_slice(&bytes[from..]);
}

/// Whether any of the eight bytes of `w` is `"`, `\` or below 0x20 (exact
/// as to whether there is one; which byte is left to the byte loop).
#[inline]
pub(super) fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) & HIGH != 0
}

/// A shared name as [`put_str`] writes it, escaped once per allocation (see [`JsonCache`]).
#[inline(always)]
pub(crate) fn put_name(b: &mut Vec<u8>, c: &mut JsonCache, s: &Arc<str>) {
    let addr = Arc::as_ptr(s).cast::<u8>() as usize;
    // Allocations are 16-byte aligned: the bits above pick the set.
    let set = ((addr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (65 - JsonCache::NAME_SLOTS.trailing_zeros())) * 2;
    let Some([a, b2]) = c.names.get_mut(set..set + 2) else { return put_str(b, s) };
    if a.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, s)) {
        put_fixed(b, &a.out, usize::from(a.len));
    } else if b2.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, s)) {
        put_fixed(b, &b2.out, usize::from(b2.len));
        std::mem::swap(a, b2);
    } else {
        // The newer one stays, second; this one takes the first place.
        std::mem::swap(a, b2);
        put_new_name(b, a, s);
    }
}

#[inline(never)]
pub(super) fn put_new_name(b: &mut Vec<u8>, slot: &mut NameSlot, s: &Arc<str>) {
    let at = b.len();
    put_str(b, s);
    let out = &b[at..];
    if out.len() <= JsonCache::NAME_BYTES {
        slot.out[..out.len()].copy_from_slice(out);
        slot.len = out.len() as u8;
        slot.key = Some(Arc::clone(s));
    }
}

#[inline(always)]
pub(crate) fn put_opt_name(b: &mut Vec<u8>, c: &mut JsonCache, s: Option<&Arc<str>>) {
    match s {
        Some(s) => put_name(b, c, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// A type or rcode mnemonic: ASCII letters, digits and `-`, nothing to escape.
pub(super) fn put_mnemonic(b: &mut Vec<u8>, s: &'static str) {
    debug_assert!(s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{s}");
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

/// A query type as `qtype_name` spells it (`A`, `TYPE65000`).
#[inline(always)]
pub(crate) fn put_qtype(b: &mut Vec<u8>, t: u16) {
    // The common ones quoted already: one fixed-size copy (a `memcpy`
    // call for a slice of any length).
    let (quoted, n): (&[u8; 8], usize) = match t {
        1 => (b"\"A\"\0\0\0\0\0", 3),
        28 => (b"\"AAAA\"\0\0", 6),
        5 => (b"\"CNAME\"\0", 7),
        12 => (b"\"PTR\"\0\0\0", 5),
        33 => (b"\"SRV\"\0\0\0", 5),
        16 => (b"\"TXT\"\0\0\0", 5),
        65 => (b"\"HTTPS\"\0", 7),
        _ => return put_other_qtype(b, t),
    };
    put_fixed(b, quoted, n);
}

#[inline(never)]
pub(super) fn put_other_qtype(b: &mut Vec<u8>, t: u16) {
    match crate::decode::dns::qtype_str(t) {
        Some(s) => put_mnemonic(b, s),
        None => put_display(b, format_args!("TYPE{t}")),
    }
}

/// An rcode as `rcode_name` spells it (`NXDOMAIN`, `RCODE4095`).
#[inline(always)]
pub(crate) fn put_rcode(b: &mut Vec<u8>, r: u16) {
    let (quoted, n): (&[u8; 16], usize) = match r {
        0 => (b"\"NOERROR\"\0\0\0\0\0\0\0", 9),
        3 => (b"\"NXDOMAIN\"\0\0\0\0\0\0", 10),
        2 => (b"\"SERVFAIL\"\0\0\0\0\0\0", 10),
        5 => (b"\"REFUSED\"\0\0\0\0\0\0\0", 9),
        _ => return put_other_rcode(b, r),
    };
    put_fixed(b, quoted, n);
}

#[inline(never)]
pub(super) fn put_other_rcode(b: &mut Vec<u8>, r: u16) {
    match crate::decode::dns::rcode_str(r) {
        Some(s) => put_mnemonic(b, s),
        None => put_display(b, format_args!("RCODE{r}")),
    }
}

pub(crate) fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// "00" to "99": two digits per division.
pub(super) const DIGITS2: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Writes `v` in decimal at the end of `d[..end]`; returns where it starts.
pub(super) fn digits_before(d: &mut [u8], mut end: usize, mut v: u64) -> usize {
    while v >= 10_000 {
        let r = (v % 10_000) as usize;
        v /= 10_000;
        let (hi, lo) = (r / 100 * 2, r % 100 * 2);
        end -= 4;
        d[end..end + 2].copy_from_slice(&DIGITS2[hi..hi + 2]);
        d[end + 2..end + 4].copy_from_slice(&DIGITS2[lo..lo + 2]);
    }
    if v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        end -= 2;
        d[end..end + 2].copy_from_slice(&DIGITS2[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        end -= 2;
        d[end..end + 2].copy_from_slice(&DIGITS2[r..r + 2]);
    } else {
        end -= 1;
        d[end] = b'0' + v as u8;
    }
    end
}

/// Decimal digits of `v`.
#[inline(always)]
pub(crate) fn put_u64(b: &mut Vec<u8>, v: u64) {
    if v < 10 {
        b.push(b'0' + v as u8);
    } else {
        put_big_u64(b, v);
    }
}

/// [`put_u64`] of a port or DNS id: the short path inlined, no range check past it.
#[inline(always)]
pub(crate) fn put_u16(b: &mut Vec<u8>, v: u16) {
    if v < 10 {
        b.push(b'0' + v as u8);
    } else {
        put_short_u64(b, u32::from(v));
    }
}

#[inline(never)]
pub(super) fn put_big_u64(b: &mut Vec<u8>, v: u64) {
    if v < 100_000 {
        put_short_u64(b, v as u32);
        return;
    }
    let n = v.ilog10() as usize + 1;
    let mut d = [0u8; 20];
    digits_before(&mut d, n, v);
    put_fixed(b, &d, n);
}

/// 10 to 99,999 (DNS ids, TTLs, ports' range): right-aligned in one word,
/// then shifted to the front, so one fixed-size copy writes it (the
/// general loop was ~110 instructions per DNS id, callgrind).
#[inline(always)]
fn put_short_u64(b: &mut Vec<u8>, v: u32) {
    debug_assert!((10..100_000).contains(&v));
    let n = if v >= 10_000 {
        5
    } else if v >= 1000 {
        4
    } else if v >= 100 {
        3
    } else {
        2
    };
    let (hi, lo) = ((v / 100) as usize, (v % 100) as usize * 2);
    let mut d = [0u8; 8];
    d[6] = DIGITS2[lo];
    d[7] = DIGITS2[lo + 1];
    let h = hi % 100 * 2;
    d[4] = DIGITS2[h];
    d[5] = DIGITS2[h + 1];
    d[3] = b'0' + (hi / 100) as u8;
    let w = u64::from_le_bytes(d) >> ((8 - n) * 8);
    put_fixed(b, &w.to_le_bytes(), n);
}

/// [`put_u64`] for numbers that repeat line after line (pids, namespace
/// inodes): five digits and more are rendered once and copied after.
#[inline(always)]
pub(crate) fn put_u64_seen(b: &mut Vec<u8>, c: &mut JsonCache, v: u64) {
    if v < 10_000 {
        put_u64(b, v);
        return;
    }
    let slot = &mut c.numbers[v.wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize >> (64 - 6)];
    if slot.key != v || slot.len == 0 {
        number_slot(slot, v);
    }
    put_fixed(b, &slot.out, usize::from(slot.len));
}

#[inline(never)]
pub(super) fn number_slot(slot: &mut NumberSlot, v: u64) {
    {
        let n = v.ilog10() as usize + 1;
        slot.out = [0; 20];
        digits_before(&mut slot.out, n, v);
        slot.key = v;
        slot.len = n as u8;
    }
}

pub(crate) fn put_opt_u64(b: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => put_u64(b, v),
        None => b.extend_from_slice(b"null"),
    }
}

/// [`super::ms`] of `ns` as `serde_json` writes the float: the shortest
/// form that reads back, which for a whole number of microseconds (below
/// 2^40, where doubles are far finer than 0.001) is the decimal milliseconds
/// without trailing zeros, `.0` when whole.
pub(crate) fn put_ms(b: &mut Vec<u8>, ns: u64) {
    let us = ns / 1000;
    if us >= 1 << 40 {
        let _ = serde_json::to_writer(&mut *b, &ms(ns));
        return;
    }
    put_u64(b, us / 1000);
    let frac = (us % 1000) as usize;
    if frac == 0 {
        b.extend_from_slice(b".0");
        return;
    }
    let d = [b'.', b'0' + (frac / 100) as u8, DIGITS2[(frac % 100) * 2], DIGITS2[(frac % 100) * 2 + 1]];
    // Trailing zeros cut (what follows `n` is cut by `put_fixed`).
    let n = if frac.is_multiple_of(100) {
        2
    } else if frac.is_multiple_of(10) {
        3
    } else {
        4
    };
    put_fixed(b, &d, n);
}

pub(crate) fn put_display(b: &mut Vec<u8>, v: impl std::fmt::Display) {
    b.push(b'"');
    let _ = write!(b, "{v}");
    b.push(b'"');
}

/// `0` to `255` and their length (in the last byte).
pub(super) const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i >= 100 {
            [b'0' + (i / 100) as u8, b'0' + (i / 10 % 10) as u8, b'0' + (i % 10) as u8, 3]
        } else if i >= 10 {
            [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8, 0, 2]
        } else {
            [b'0' + i as u8, 0, 0, 1]
        };
        i += 1;
    }
    t
};

/// An endpoint as its `Display` form in quotes (`"10.0.0.1:53"`, `"[fd00::1]:53"`).
#[inline(always)]
pub(crate) fn put_endpoint(b: &mut Vec<u8>, c: &mut JsonCache, e: &crate::event::Endpoint) {
    if let std::net::IpAddr::V4(a) = e.ip {
        // The address part (`"10.0.0.1:`) repeats far more than the port.
        let key = u32::from(a);
        let slot = &mut c.addrs[key.wrapping_mul(0x9e37_79b1) as usize >> (32 - 6)];
        if slot.key != key || slot.len == 0 {
            addr_slot(slot, a);
        }
        let mut d = [0u8; 32];
        d[..24].copy_from_slice(&slot.out);
        let mut at = usize::from(slot.len);
        // The port, two digits per step (at most five).
        let mut p = usize::from(e.port);
        let n = port_len(e.port);
        at += n;
        let mut end = at;
        while p >= 10 {
            let r = p % 100 * 2;
            p /= 100;
            end -= 2;
            d[end..end + 2].copy_from_slice(&DIGITS2[r..r + 2]);
        }
        if end > at - n {
            d[end - 1] = b'0' + p as u8;
        }
        d[at] = b'"';
        put_fixed(b, &d, at + 1);
        return;
    }
    put_endpoint_as(b, e, true);
}

#[inline(never)]
pub(super) fn addr_slot(slot: &mut AddrSlot, a: std::net::Ipv4Addr) {
    let key = u32::from(a);
    {
        let mut d = [0u8; 24];
        d[0] = b'"';
        let mut at = 1;
        for o in a.octets() {
            let t = OCTETS[usize::from(o)];
            d[at..at + 4].copy_from_slice(&t);
            at += usize::from(t[3]);
            d[at] = b'.';
            at += 1;
        }
        d[at - 1] = b':';
        *slot = AddrSlot { key, len: at as u8, out: d };
    }
}

/// Decimal digits of a port.
#[inline(always)]
pub(super) fn port_len(p: u16) -> usize {
    if p >= 10_000 {
        5
    } else if p >= 1000 {
        4
    } else if p >= 100 {
        3
    } else if p >= 10 {
        2
    } else {
        1
    }
}

/// An endpoint as its `Display` form (text lines).
pub(crate) fn put_endpoint_text(b: &mut Vec<u8>, e: &crate::event::Endpoint) {
    put_endpoint_as(b, e, false);
}

#[inline]
pub(super) fn put_endpoint_as(b: &mut Vec<u8>, e: &crate::event::Endpoint, quoted: bool) {
    match e.ip {
        std::net::IpAddr::V4(a) => {
            // Built on the stack and appended once: `"255.255.255.255:65535"`.
            let mut d = [0u8; 24];
            d[0] = b'"';
            let mut at = 1;
            for o in a.octets() {
                let t = OCTETS[usize::from(o)];
                d[at..at + 4].copy_from_slice(&t);
                at += usize::from(t[3]);
                d[at] = b'.';
                at += 1;
            }
            d[at - 1] = b':';
            at += port_len(e.port);
            digits_before(&mut d, at, u64::from(e.port));
            if quoted {
                d[at] = b'"';
                put_fixed(b, &d, at + 1);
            } else {
                let tail: &[u8; 23] = d[1..].try_into().unwrap_or(&[0; 23]);
                put_fixed(b, tail, at - 1);
            }
        }
        std::net::IpAddr::V6(_) if quoted => put_display(b, e),
        std::net::IpAddr::V6(_) => {
            let _ = write!(b, "{e}");
        }
    }
}

/// [`super::Rfc3339`] as a JSON string, the date and time of day formatted
/// once per second; the same bytes.
pub(crate) fn put_ts(b: &mut Vec<u8>, c: &mut JsonCache, wall_ns: i128) {
    put_time(b, c, wall_ns, true);
}

/// [`super::Rfc3339`], as [`put_ts`] writes it but without quotes (text lines).
pub(crate) fn put_ts_text(b: &mut Vec<u8>, c: &mut JsonCache, wall_ns: i128) {
    put_time(b, c, wall_ns, false);
}

#[inline]
pub(super) fn put_time(b: &mut Vec<u8>, c: &mut JsonCache, wall_ns: i128, quoted: bool) {
    /// Last microsecond of year 9999 (beyond, the formatter clamps).
    const MAX_US: i128 = 253_402_300_799_999_999;
    let (sec, micros) = if let Ok(ns) = u64::try_from(wall_ns) {
        // Every u64 of nanoseconds is before 9999: no range check, no i128 division.
        let us = ns / 1000;
        ((us / 1_000_000) as i64, (us % 1_000_000) as usize)
    } else {
        let us = wall_ns.div_euclid(1000);
        if !(0..=MAX_US).contains(&us) {
            if quoted {
                put_display(b, super::super::Rfc3339(wall_ns));
            } else {
                let _ = write!(b, "{}", super::super::Rfc3339(wall_ns));
            }
            return;
        }
        ((us / 1_000_000) as i64, (us % 1_000_000) as usize)
    };
    if c.second != sec {
        let mut full = [0u8; 32];
        let mut w = &mut full[..];
        let _ = write!(w, "{}", super::super::Rfc3339(i128::from(sec) * 1_000_000_000));
        c.second = sec;
        c.second_text.copy_from_slice(&full[..19]);
    }
    let mut d = [0u8; 29];
    d[0] = b'"';
    d[1..20].copy_from_slice(&c.second_text);
    d[20] = b'.';
    let (hi, mid, lo) = (micros / 10_000 * 2, micros / 100 % 100 * 2, micros % 100 * 2);
    d[21..23].copy_from_slice(&DIGITS2[hi..hi + 2]);
    d[23..25].copy_from_slice(&DIGITS2[mid..mid + 2]);
    d[25..27].copy_from_slice(&DIGITS2[lo..lo + 2]);
    d[27] = b'Z';
    d[28] = b'"';
    if quoted {
        b.extend_from_slice(&d);
    } else {
        let inner: &[u8; 27] = d[1..28].try_into().unwrap_or(&[0; 27]);
        b.extend_from_slice(inner);
    }
}

#[inline(always)]
pub(crate) fn put_opt_endpoint(b: &mut Vec<u8>, c: &mut JsonCache, e: Option<&crate::event::Endpoint>) {
    match e {
        Some(e) => put_endpoint(b, c, e),
        None => b.extend_from_slice(b"null"),
    }
}

/// A pod as `{"name":…,"namespace":…,"node":…}`, or `null`.
#[inline(always)]
pub(crate) fn put_pod(b: &mut Vec<u8>, c: &mut JsonCache, p: Option<&PodRef>) {
    match p {
        Some(p) => put_some_pod(b, c, p),
        None => b.extend_from_slice(b"null"),
    }
}

pub(super) fn put_some_pod(b: &mut Vec<u8>, c: &mut JsonCache, p: &PodRef) {
    b.extend_from_slice(b"{\"name\":");
    put_name(b, c, &p.name);
    b.extend_from_slice(b",\"namespace\":");
    put_name(b, c, &p.namespace);
    b.extend_from_slice(b",\"node\":");
    put_opt_name(b, c, p.node.as_ref());
    b.push(b'}');
}

pub(crate) fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Appends `b[range]` again when `same`, else writes `e`: an endpoint that
/// repeats one written earlier on the line (the resolver's view of the
/// client or server, when nothing was translated) is copied, not rendered.
pub(super) fn put_endpoint_or_copy(
    b: &mut Vec<u8>,
    c: &mut JsonCache,
    e: Option<&crate::event::Endpoint>,
    same: bool,
    range: std::ops::Range<usize>,
) {
    if same {
        b.extend_from_within(range);
    } else {
        put_opt_endpoint(b, c, e);
    }
}
