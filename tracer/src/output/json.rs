//! JSON Lines: one object per transaction (`type:"dns"`), finding
//! (`type:"finding"`) and end-of-run counters (`type:"stats"`). Field names
//! are a public contract documented in docs/json.md: add, never rename.
//!
//! The writers take `b` (the line), `c` (the cache), `d` (digits on the
//! stack), `e` (an endpoint) everywhere; their small hit paths are inlined
//! into the line writer and the rare cases kept out of line (cachegrind,
//! hot-cap `-o json` minus `--summary`: 1,800 → 1,450 instructions per query).

#![expect(clippy::many_single_char_names, reason = "b, c, d, e: the same four roles in every writer")]
#![expect(clippy::inline_always, reason = "hit paths of a few instructions, measured (see above)")]

use std::{io::Write, sync::Arc};

use serde_json::{Value, json};

use crate::{
    analyze::{Finding, Transaction},
    decode::dns::{qtype_name, rcode_name},
    enrich::PodRef,
    event::Process,
    pipeline::{Context, RunStats, Sink},
};

use super::{ms, rfc3339};

fn pod(p: Option<&PodRef>) -> Value {
    p.map_or(Value::Null, |p| json!({"namespace": &*p.namespace, "name": &*p.name, "node": p.node.as_deref()}))
}

fn process(p: Option<&Process>) -> Value {
    p.map_or(Value::Null, |p| json!({"pid": p.pid, "comm": p.comm, "tid": p.tid, "thread": p.thread}))
}

/// The JSON object for a transaction: the reference form, built with
/// `serde_json` (whose maps print their keys sorted). [`put_transaction`]
/// writes the same bytes by hand; the tests compare the two.
#[must_use]
pub fn transaction(ctx: &Context, tx: &Transaction) -> Value {
    let service = ctx.enricher.service_by_ip(&tx.server.ip);
    json!({
        "type": "dns",
        "ts": rfc3339(ctx.wall_ns(tx.ts_ns)),
        "node": tx.node.as_deref(),
        "netns": tx.netns,
        "cgroup_id": tx.cgroup_id,
        "pid": tx.process.as_ref().map(|p| p.pid),
        "comm": tx.process.as_ref().map(|p| p.comm.as_ref()),
        "thread": tx.process.as_ref().map(|p| p.thread.as_ref()),
        "client": tx.client.to_string(),
        "server": tx.server.to_string(),
        "client_pod": pod(tx.client_pod.as_ref()),
        "server_pod": pod(tx.server_pod.as_ref()),
        "server_service": service.map(|s| format!("{}/{}", s.namespace, s.name)),
        "server_process": process(tx.server_process.as_ref()),
        "resolver": tx.resolver.map(|r| r.to_string()),
        "resolver_client": tx.resolver_client.map(|r| r.to_string()),
        "resolver_pod": pod(tx.resolver_pod.as_ref()),
        "transport": tx.transport,
        "id": tx.id,
        "qname": tx.qname,
        "qtype": qtype_name(tx.qtype),
        "rcode": tx.rcode.map(rcode_name),
        "answers": tx.answers.iter().map(|a| json!({"name": a.name, "type": a.rtype, "ttl": a.ttl, "data": a.data})).collect::<Vec<_>>(),
        "latency_ms": tx.latency_ns.map(ms),
        "timed_out": tx.timed_out,
        "retransmits": tx.retransmits,
        "observed": tx.observed,
        "metadata_stale": ctx.enricher.stale(),
    })
}

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
}

/// `len` 0: empty.
#[derive(Clone, Copy)]
struct NumberSlot {
    key: u64,
    len: u8,
    out: [u8; 20],
}

/// `len` 0: empty.
#[derive(Clone, Copy)]
struct AddrSlot {
    key: u32,
    len: u8,
    out: [u8; 24],
}

struct NameSlot {
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
    /// Names remembered (direct-mapped by address).
    pub const NAME_SLOTS: usize = 256;
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
        }
    }
}

/// Appends all of `src` (a fixed size: a few moves, no `memcpy` call) and
/// cuts the vector back to the first `n` bytes of it.
#[inline(always)]
fn put_fixed<const N: usize>(b: &mut Vec<u8>, src: &[u8; N], n: usize) {
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
fn put_str_body(b: &mut Vec<u8>, s: &str) {
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
fn needs_escape(w: u64) -> bool {
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
    // Allocations are 16-byte aligned: the bits above pick the slot.
    let slot = &mut c.names[(addr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - 8)];
    if slot.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, s)) {
        put_fixed(b, &slot.out, usize::from(slot.len));
    } else {
        put_new_name(b, slot, s);
    }
}

#[inline(never)]
fn put_new_name(b: &mut Vec<u8>, slot: &mut NameSlot, s: &Arc<str>) {
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
fn put_mnemonic(b: &mut Vec<u8>, s: &'static str) {
    debug_assert!(s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{s}");
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

/// A query type as `qtype_name` spells it (`A`, `TYPE65000`).
#[inline(always)]
pub(crate) fn put_qtype(b: &mut Vec<u8>, t: u16) {
    // The common ones quoted already: one copy.
    let quoted: &[u8] = match t {
        1 => b"\"A\"",
        28 => b"\"AAAA\"",
        5 => b"\"CNAME\"",
        12 => b"\"PTR\"",
        33 => b"\"SRV\"",
        16 => b"\"TXT\"",
        65 => b"\"HTTPS\"",
        _ => &[],
    };
    if quoted.is_empty() {
        put_other_qtype(b, t);
    } else {
        b.extend_from_slice(quoted);
    }
}

#[inline(never)]
fn put_other_qtype(b: &mut Vec<u8>, t: u16) {
    match crate::decode::dns::qtype_str(t) {
        Some(s) => put_mnemonic(b, s),
        None => put_display(b, format_args!("TYPE{t}")),
    }
}

/// An rcode as `rcode_name` spells it (`NXDOMAIN`, `RCODE4095`).
#[inline(always)]
pub(crate) fn put_rcode(b: &mut Vec<u8>, r: u16) {
    let quoted: &[u8] = match r {
        0 => b"\"NOERROR\"",
        3 => b"\"NXDOMAIN\"",
        2 => b"\"SERVFAIL\"",
        5 => b"\"REFUSED\"",
        _ => &[],
    };
    if quoted.is_empty() {
        put_other_rcode(b, r);
    } else {
        b.extend_from_slice(quoted);
    }
}

#[inline(never)]
fn put_other_rcode(b: &mut Vec<u8>, r: u16) {
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
const DIGITS2: [u8; 200] = {
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
fn digits_before(d: &mut [u8], mut end: usize, mut v: u64) -> usize {
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

#[inline(never)]
fn put_big_u64(b: &mut Vec<u8>, v: u64) {
    let n = v.ilog10() as usize + 1;
    let mut d = [0u8; 20];
    digits_before(&mut d, n, v);
    put_fixed(b, &d, n);
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
fn number_slot(slot: &mut NumberSlot, v: u64) {
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
    let mut d = [b'.', b'0' + (frac / 100) as u8, DIGITS2[(frac % 100) * 2], DIGITS2[(frac % 100) * 2 + 1]];
    let n = if frac.is_multiple_of(100) {
        2
    } else if frac.is_multiple_of(10) {
        3
    } else {
        4
    };
    d[n..].fill(b'0');
    put_fixed(b, &d, n);
}

pub(crate) fn put_display(b: &mut Vec<u8>, v: impl std::fmt::Display) {
    b.push(b'"');
    let _ = write!(b, "{v}");
    b.push(b'"');
}

/// `0` to `255` and their length (in the last byte).
const OCTETS: [[u8; 4]; 256] = {
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
fn addr_slot(slot: &mut AddrSlot, a: std::net::Ipv4Addr) {
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
fn port_len(p: u16) -> usize {
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
fn put_endpoint_as(b: &mut Vec<u8>, e: &crate::event::Endpoint, quoted: bool) {
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
fn put_time(b: &mut Vec<u8>, c: &mut JsonCache, wall_ns: i128, quoted: bool) {
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
                put_display(b, super::Rfc3339(wall_ns));
            } else {
                let _ = write!(b, "{}", super::Rfc3339(wall_ns));
            }
            return;
        }
        ((us / 1_000_000) as i64, (us % 1_000_000) as usize)
    };
    if c.second != sec {
        let mut full = [0u8; 32];
        let mut w = &mut full[..];
        let _ = write!(w, "{}", super::Rfc3339(i128::from(sec) * 1_000_000_000));
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

fn put_some_pod(b: &mut Vec<u8>, c: &mut JsonCache, p: &PodRef) {
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
fn put_endpoint_or_copy(
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

/// Appends a transaction's JSON line (without the newline) to `b`: the same
/// bytes as serialising [`transaction`] (a `serde_json::Value`, whose keys
/// print sorted), written field by field without building anything.
pub fn put_transaction(b: &mut Vec<u8>, c: &mut JsonCache, ctx: &Context, tx: &Transaction) {
    b.extend_from_slice(b"{\"answers\":[");
    for (i, a) in tx.answers.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"data\":");
        put_name(b, c, &a.data);
        b.extend_from_slice(b",\"name\":");
        put_name(b, c, &a.name);
        b.extend_from_slice(b",\"ttl\":");
        put_u64(b, u64::from(a.ttl));
        b.extend_from_slice(b",\"type\":");
        match a.rtype.mnemonic() {
            Some(s) => put_mnemonic(b, s),
            None => put_display(b, a.rtype),
        }
        b.push(b'}');
    }
    b.extend_from_slice(b"],\"cgroup_id\":");
    put_u64_seen(b, c, tx.cgroup_id);
    b.extend_from_slice(b",\"client\":");
    let client_at = b.len();
    put_endpoint(b, c, &tx.client);
    let client = client_at..b.len();
    b.extend_from_slice(b",\"client_pod\":");
    put_pod(b, c, tx.client_pod.as_ref());
    b.extend_from_slice(b",\"comm\":");
    put_opt_name(b, c, tx.process.as_ref().map(|p| &p.comm));
    b.extend_from_slice(b",\"id\":");
    put_u64(b, u64::from(tx.id));
    b.extend_from_slice(b",\"latency_ms\":");
    match tx.latency_ns {
        Some(ns) => put_ms(b, ns),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(if ctx.enricher.stale() {
        b",\"metadata_stale\":true,\"netns\":"
    } else {
        b",\"metadata_stale\":false,\"netns\":"
    });
    put_u64_seen(b, c, u64::from(tx.netns));
    b.extend_from_slice(b",\"node\":");
    put_opt_name(b, c, tx.node.as_ref());
    b.extend_from_slice(match tx.observed {
        crate::analyze::Observed::Client => &b",\"observed\":\"client\",\"pid\":"[..],
        crate::analyze::Observed::Server => b",\"observed\":\"server\",\"pid\":",
        crate::analyze::Observed::Both => b",\"observed\":\"both\",\"pid\":",
        crate::analyze::Observed::Wire => b",\"observed\":\"wire\",\"pid\":",
    });
    match &tx.process {
        Some(p) => put_u64_seen(b, c, u64::from(p.pid)),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"qname\":");
    put_name(b, c, &tx.qname);
    b.extend_from_slice(b",\"qtype\":");
    put_qtype(b, tx.qtype);
    b.extend_from_slice(b",\"rcode\":");
    match tx.rcode {
        Some(r) => put_rcode(b, r),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"resolver\":");
    let resolver_at = b.len();
    put_opt_endpoint(b, c, tx.resolver.as_ref());
    let resolver = resolver_at..b.len();
    b.extend_from_slice(b",\"resolver_client\":");
    put_endpoint_or_copy(b, c, tx.resolver_client.as_ref(), tx.resolver_client == Some(tx.client), client);
    b.extend_from_slice(b",\"resolver_pod\":");
    put_pod(b, c, tx.resolver_pod.as_ref());
    b.extend_from_slice(b",\"retransmits\":");
    put_u64(b, u64::from(tx.retransmits));
    b.extend_from_slice(b",\"server\":");
    put_endpoint_or_copy(b, c, Some(&tx.server), tx.resolver == Some(tx.server), resolver);
    b.extend_from_slice(b",\"server_pod\":");
    put_pod(b, c, tx.server_pod.as_ref());
    b.extend_from_slice(b",\"server_process\":");
    match &tx.server_process {
        Some(p) => {
            b.extend_from_slice(b"{\"comm\":");
            put_name(b, c, &p.comm);
            b.extend_from_slice(b",\"pid\":");
            put_u64_seen(b, c, u64::from(p.pid));
            b.extend_from_slice(b",\"thread\":");
            put_name(b, c, &p.thread);
            b.extend_from_slice(b",\"tid\":");
            put_u64_seen(b, c, u64::from(p.tid));
            b.push(b'}');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"server_service\":");
    match ctx.enricher.service_by_ip(&tx.server.ip) {
        // Names from the API may hold anything: escaped like any string
        // (`namespace/name`; the `/` needs no escape, so part by part).
        Some(s) => {
            b.push(b'"');
            put_str_body(b, &s.namespace);
            b.push(b'/');
            put_str_body(b, &s.name);
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"thread\":");
    put_opt_name(b, c, tx.process.as_ref().map(|p| &p.thread));
    b.extend_from_slice(match (tx.timed_out, tx.transport) {
        (false, crate::event::Transport::Udp) => &b",\"timed_out\":false,\"transport\":\"udp\",\"ts\":"[..],
        (false, crate::event::Transport::Tcp) => b",\"timed_out\":false,\"transport\":\"tcp\",\"ts\":",
        (true, crate::event::Transport::Udp) => b",\"timed_out\":true,\"transport\":\"udp\",\"ts\":",
        (true, crate::event::Transport::Tcp) => b",\"timed_out\":true,\"transport\":\"tcp\",\"ts\":",
    });
    put_ts(b, c, ctx.wall_ns(tx.ts_ns));
    b.extend_from_slice(b",\"type\":\"dns\"}");
}

/// The JSON object for a finding.
#[must_use]
pub fn finding(f: &Finding) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String("finding".into()));
    }
    v
}

/// The JSON object for end-of-run counters.
#[must_use]
pub fn stats(s: &RunStats) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String("stats".into()));
    }
    v
}

/// Writes JSON Lines to any writer: lines are built in a reused buffer and
/// written with one `write` per pipeline tick (10 ms live), or sooner when
/// the buffer passes [`JsonSink::FLUSH_AT`], so pipes still see events
/// promptly without a write per line.
pub struct JsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    cache: JsonCache,
}

impl<W: Write> JsonSink<W> {
    /// Buffered bytes that trigger a write before the next tick.
    const FLUSH_AT: usize = 64 * 1024;

    /// A sink over `out`.
    pub fn new(out: W) -> Self {
        Self { out, buf: Vec::with_capacity(Self::FLUSH_AT + 4096), cache: JsonCache::new() }
    }

    fn line(&mut self, v: &Value) {
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.end_line();
    }

    fn end_line(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= Self::FLUSH_AT {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            // A closed pipe (| head) must not panic; the run ends on its own.
            let _ = self.out.write_all(&self.buf);
            self.buf.clear();
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn transaction(&mut self, ctx: &Context, tx: &Transaction) {
        put_transaction(&mut self.buf, &mut self.cache, ctx, tx);
        self.end_line();
    }
    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.line(&finding(f));
    }
    fn finish(&mut self, _ctx: &Context, s: &RunStats) {
        self.line(&stats(s));
        self.write_out();
        let _ = self.out.flush();
    }
    fn flush_output(&mut self) {
        self.write_out();
        let _ = self.out.flush();
    }
}

impl<W: Write> Drop for JsonSink<W> {
    fn drop(&mut self) {
        self.write_out();
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use super::*;
    use crate::{
        analyze::Observed,
        decode::dns::{Answer, RType},
        enrich::{Enricher, Snapshot},
        event::{Endpoint, Transport},
    };

    const DOC: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Service","metadata":{"namespace":"kube-system","name":"kube-dns"},"spec":{"clusterIP":"10.96.0.10"}}]}"#;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port }
    }

    fn pod(ns: &str, name: &str, node: Option<&str>) -> PodRef {
        PodRef { namespace: Arc::from(ns), name: Arc::from(name), node: node.map(Arc::from) }
    }

    fn base() -> Transaction {
        Transaction {
            ts_ns: 1_795_433_602_123_456_789,
            end_ns: None,
            node: None,
            netns: 0,
            cgroup_id: 0,
            process: None,
            server_process: None,
            client: ep("10.244.1.10", 40000),
            server: ep("10.96.0.10", 53),
            client_pod: None,
            server_pod: None,
            resolver: None,
            resolver_client: None,
            resolver_pod: None,
            transport: Transport::Udp,
            id: 1,
            qname: "a.example".into(),
            qtype: 1,
            rcode: None,
            answers: Vec::new(),
            latency_ns: None,
            timed_out: true,
            retransmits: 0,
            duplicate_answers: 0,
            observed: Observed::Wire,
        }
    }

    #[test]
    fn direct_writer_matches_value_path_byte_for_byte() {
        let snap = Snapshot::parse(DOC, "t").unwrap();
        let mut full = base();
        full.end_ns = Some(full.ts_ns + 1_234_567);
        full.node = Some(Arc::from("node-a"));
        full.netns = 4_026_532_000;
        full.cgroup_id = u64::MAX;
        full.process =
            Some(Process { pid: 7, tid: 8, comm: "getent \"q\"\\".into(), thread: "isc-net-0000\u{1}".into() });
        full.server_process = Some(Process { pid: 9, tid: 9, comm: "dnsmasq".into(), thread: "dnsmasq".into() });
        full.client_pod = Some(pod("critical-app", "client", Some("node-a")));
        full.server_pod = Some(pod("kube-system", "coredns-0", None));
        full.resolver = Some(ep("10.244.2.10", 53));
        full.resolver_client = Some(ep("192.168.77.10", 61000));
        full.resolver_pod = Some(pod("kube-system", "coredns-0", Some("node-b")));
        full.transport = Transport::Tcp;
        full.id = u16::MAX;
        full.qname = "weird\\.name\t\u{7f}é.example".into();
        full.qtype = 65_000;
        full.rcode = Some(3);
        full.answers = vec![
            Answer { name: "a".into(), rtype: RType(1), ttl: 30, data: "10.0.0.1".into() },
            Answer { name: "b".into(), rtype: RType(65_280), ttl: 0, data: "\"x\"".into() },
            Answer { name: "\u{8}\u{c}\n\r\u{1f}\u{0}".into(), rtype: RType(5), ttl: u32::MAX, data: "€/".into() },
        ];
        full.latency_ns = Some(1_234_567);
        full.timed_out = false;
        full.retransmits = 3;
        full.observed = Observed::Both;
        let mut v6 = base();
        v6.client = ep("fd00::10", 5353);
        v6.server = ep("fd00::53", 53);
        v6.rcode = Some(4095);
        v6.latency_ns = Some(999);
        v6.ts_ns = 0;
        // Numbers of every width, times in one second and across seconds,
        // days and years, and before 1970.
        let mut more = Vec::new();
        for (i, ts) in [
            1,
            999_999_999,
            1_000_000_000,
            1_795_433_602_000_000_000,
            1_795_433_602_999_999_999,
            1_795_433_603_000_000_001,
            4_102_444_799_999_999_000,
            u64::MAX,
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = full.clone();
            t.ts_ns = ts;
            t.cgroup_id = 10u64.pow(u32::try_from(i).unwrap() * 2) - 1;
            t.netns = u32::try_from(i * 37).unwrap();
            t.client = ep(&format!("{}.{}.0.{}", i * 31, i, 255 - i), u16::try_from(i * 7919).unwrap());
            more.push(t);
        }
        let mut cache = JsonCache::new();
        for (enricher, offset) in [
            (Enricher::empty(), 0),
            (Enricher::from_snapshot(&snap), -5_000_000_000),
            (Enricher::empty(), -1_795_433_602_500_000_000),
        ] {
            let ctx = Context { clock_offset_ns: offset, enricher };
            // Twice: the second round writes from the cache.
            for tx in [base(), full.clone(), v6.clone()].into_iter().chain(more.iter().cloned()).cycle().take(2 * 11) {
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                put_transaction(&mut got, &mut cache, &ctx, &tx);
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }

    /// Generated transactions, each written by hand (one cache for the whole
    /// run, as a sink has) and through `serde_json::Value`: the same bytes.
    #[test]
    fn generated_transactions_match_the_value_path() {
        use crate::output::testgen::Gen;
        let snap = Snapshot::parse(DOC, "t").unwrap();
        let mut g = Gen::new(crate::testkit::Rng::SEED);
        let mut cache = JsonCache::new();
        let observed = [Observed::Client, Observed::Server, Observed::Both, Observed::Wire];
        for (round, (enricher, offset)) in [
            (Enricher::empty(), 0),
            (Enricher::from_snapshot(&snap), 0),
            (Enricher::empty(), -1_795_433_602_500_000_000),
            (Enricher::empty(), i128::from(u64::MAX)),
        ]
        .into_iter()
        .enumerate()
        {
            let ctx = Context { clock_offset_ns: offset, enricher };
            for _ in 0..5_000 {
                let mut tx = base();
                tx.ts_ns = g.ts();
                tx.node = g.opt_name();
                tx.netns = g.u32();
                tx.cgroup_id = g.num();
                tx.process = g.process();
                tx.server_process = g.process();
                tx.client = g.endpoint();
                tx.server = if round == 1 && g.bool(2) { ep("10.96.0.10", 53) } else { g.endpoint() };
                tx.client_pod = g.pod();
                tx.server_pod = g.pod();
                tx.resolver = match g.rng.below(3) {
                    0 => None,
                    1 => Some(tx.server),
                    _ => Some(g.endpoint()),
                };
                tx.resolver_client = match g.rng.below(3) {
                    0 => None,
                    1 => Some(tx.client),
                    _ => Some(g.endpoint()),
                };
                tx.resolver_pod = g.pod();
                tx.transport = if g.bool(5) { Transport::Tcp } else { Transport::Udp };
                tx.id = g.u16();
                tx.qname = g.name();
                tx.qtype = if g.bool(2) { 1 } else { g.u16() };
                tx.rcode = (!g.bool(3)).then(|| if g.bool(2) { 0 } else { g.u16() % 5000 });
                tx.answers = (0..g.rng.below(4))
                    .map(|_| Answer {
                        name: if g.bool(2) { Arc::clone(&tx.qname) } else { g.name() },
                        rtype: RType(if g.bool(2) { 1 } else { g.u16() }),
                        ttl: g.u32(),
                        data: g.name(),
                    })
                    .collect();
                tx.latency_ns = (!g.bool(4)).then(|| g.num());
                tx.timed_out = g.bool(3);
                tx.retransmits = g.u32();
                tx.observed = observed[g.rng.below(4)];
                let want = serde_json::to_string(&transaction(&ctx, &tx)).unwrap();
                let mut got = Vec::new();
                put_transaction(&mut got, &mut cache, &ctx, &tx);
                assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }
    }

    /// Milliseconds as `serde_json` writes the float: every microsecond of
    /// the first second, then values of every width up to and past where the
    /// hand formatting hands over to `serde_json`.
    #[test]
    fn put_ms_matches_serde_json() {
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        let edges = (0..64).flat_map(|k| {
            let p = 1u64 << k;
            [
                p - 1,
                p,
                p + 1,
                p.saturating_mul(1000) - 1,
                p.saturating_mul(1000),
                p.saturating_mul(1000).saturating_add(999),
            ]
        });
        let random = (0..200_000).map(|_| {
            let shift = rng.below(64) as u32;
            rng.next() >> shift
        });
        for ns in (0..1_000_000u64).map(|us| us * 1000 + us % 1000).chain(edges).chain(random).chain([u64::MAX]) {
            let mut got = Vec::new();
            put_ms(&mut got, ns);
            assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&ms(ns)).unwrap(), "{ns}");
        }
    }

    /// Numbers and IPv4 endpoints of every width, as `Display` writes them.
    #[test]
    fn numbers_and_endpoints_match_display() {
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        let widths = (0..20).flat_map(|k| {
            let p = 10u64.pow(k);
            [p - 1, p, p + 1]
        });
        for v in widths.chain((0..100_000).map(|_| {
            let shift = rng.below(64) as u32;
            rng.next() >> shift
        })) {
            let mut got = Vec::new();
            put_u64(&mut got, v);
            assert_eq!(String::from_utf8(got).unwrap(), v.to_string());
        }
        let mut cache = JsonCache::new();
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(if i < 256 { i * 0x0101_0101 } else { rng.next() as u32 });
            let port = if i < 65_536 { i as u16 } else { rng.next() as u16 };
            let e = Endpoint { ip: IpAddr::V4(ip), port };
            let mut got = Vec::new();
            put_endpoint(&mut got, &mut cache, &e);
            assert_eq!(String::from_utf8(got).unwrap(), format!("\"{e}\""));
            let mut got = Vec::new();
            put_endpoint_text(&mut got, &e);
            assert_eq!(String::from_utf8(got).unwrap(), e.to_string());
            let mut got = Vec::new();
            put_u64_seen(&mut got, &mut cache, u64::from(u32::from(ip)));
            assert_eq!(String::from_utf8(got).unwrap(), u32::from(ip).to_string());
        }
    }

    /// The word-at-a-time scan escapes exactly what `serde_json` escapes,
    /// wherever the byte falls in a word and whatever the length.
    #[test]
    fn put_str_matches_serde_json_at_every_position() {
        let specials = ['"', '\\', '\u{0}', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{1f}', ' ', '\u{7f}', 'é', '€', 'a'];
        for len in 0..20 {
            for at in 0..len.max(1) {
                for c in specials {
                    for c2 in ['a', '"', '\u{1}'] {
                        let s: String = (0..len)
                            .map(|i| {
                                if i == at {
                                    c
                                } else if i == len - 1 {
                                    c2
                                } else {
                                    'x'
                                }
                            })
                            .collect();
                        let mut got = Vec::new();
                        put_str(&mut got, &s);
                        assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&s).unwrap(), "{s:?}");
                    }
                }
            }
        }
    }

    /// Type and rcode mnemonics are written without the escape scan: none needs one.
    #[test]
    fn mnemonics_need_no_escape() {
        use crate::decode::dns::{qtype_str, rcode_str};
        for t in 0..=u16::MAX {
            let (mut q, mut r) = (Vec::new(), Vec::new());
            put_qtype(&mut q, t);
            put_rcode(&mut r, t);
            assert_eq!(q, serde_json::to_vec(&qtype_name(t)).unwrap());
            assert_eq!(r, serde_json::to_vec(&rcode_name(t)).unwrap());
            for s in [qtype_str(t), rcode_str(t)].into_iter().flatten() {
                let mut b = Vec::new();
                put_mnemonic(&mut b, s);
                assert_eq!(b, serde_json::to_vec(s).unwrap());
            }
        }
    }
}
