//! From packets to DNS messages: UDP directly, TCP through per-stream
//! reassembly of the two-byte length framing (bounded table, evictions counted).
//!
//! TCP streams are keyed by where they were seen (netns, node, hook) and
//! their endpoints, so the two directions and the two ends of one connection
//! reassemble independently. Sequence numbers are followed: duplicates are
//! dropped, a few out-of-order segments are held until the hole fills, and a
//! hole that does not fill (or a stream first seen mid-way) is resynchronized
//! on the first segment that looks like the start of a framed DNS message.

use std::{collections::BTreeMap, sync::Arc};

use crate::event::{Endpoint, Hook, PacketInfo, PacketRecord, PacketRef, Transport};

use super::{
    DecodeStats, DnsEvent, DnsMessage, Interner, dns,
    echo::Echo,
    packet::{self, L4View, PacketError, tcp_flags},
};

/// TCP streams tracked at once; the least recently used is evicted beyond.
pub const MAX_TCP_STREAMS: usize = 4096;
/// Largest frame: two length bytes + a 65535-byte message.
const MAX_FRAME: usize = 2 + 65535;
/// Out-of-order segments held per stream while waiting for a hole to fill.
const MAX_PENDING_SEGMENTS: usize = 8;
/// Bytes held per stream in out-of-order segments; also how far ahead of the
/// expected sequence number a segment may start before we call it a gap.
const MAX_PENDING_BYTES: usize = 65536;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StreamKey {
    netns_cookie: u64,
    netns_ino: u32,
    node: Option<Arc<str>>,
    hook: Hook,
    src: Endpoint,
    dst: Endpoint,
}

#[derive(Debug, Default)]
struct Stream {
    /// Sequence number of the next byte we expect; None until synchronized.
    next_seq: Option<u32>,
    /// The incomplete frame at the end of what was received (≤ [`MAX_FRAME`]).
    buf: Vec<u8>,
    /// Segments that arrived ahead of `next_seq`: (seq, bytes).
    pending: Vec<(u32, Vec<u8>)>,
    pending_bytes: usize,
    /// Position in the LRU index.
    tick: u64,
}

impl Stream {
    /// Forgets everything received: the next plausible segment resyncs.
    fn desync(&mut self) {
        self.next_seq = None;
        self.buf.clear();
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

/// A packet the decoder takes: owned (its process and node move into its
/// message), borrowed or shared (they are copied: reference counts). Either
/// way the bytes are decoded where they are and not kept, and the facts are
/// copied only into a message, straight into its place in the output (not
/// first onto the stack: ~60 instructions per message).
pub trait PacketInput: Sized {
    /// Where the packet was observed.
    fn hook(&self) -> Hook;
    /// Its length on the wire.
    fn wire_len(&self) -> u32;
    /// Its bytes, from the IP header on.
    fn bytes(&self) -> &[u8];
    /// What is known about it, copied (the names are shared).
    fn to_info(&self) -> PacketInfo;
    /// What is known about it, taken (for its one message).
    #[inline]
    fn into_info(self) -> PacketInfo {
        self.to_info()
    }
}

// Here, not beside `PacketRef`: `event` sits below `decode` (tests/layers.rs).
impl PacketInput for PacketRef<'_> {
    #[inline]
    fn hook(&self) -> Hook {
        self.facts.hook
    }
    #[inline]
    fn wire_len(&self) -> u32 {
        self.wire_len
    }
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.data
    }
    #[expect(clippy::inline_always, reason = "measured: outlined, the facts were copied twice more")]
    #[inline(always)]
    fn to_info(&self) -> PacketInfo {
        self.info()
    }
}

/// The methods every form of a [`PacketRecord`] shares (owned, borrowed,
/// shared): fields and `info()` reach the record through auto-deref.
macro_rules! record_input {
    () => {
        fn hook(&self) -> Hook {
            self.hook
        }
        fn wire_len(&self) -> u32 {
            self.wire_len
        }
        fn bytes(&self) -> &[u8] {
            &self.data
        }
        fn to_info(&self) -> PacketInfo {
            self.info()
        }
    };
}

impl PacketInput for PacketRecord {
    record_input!();
    fn into_info(self) -> PacketInfo {
        self.into_parts().0
    }
}

impl PacketInput for &PacketRecord {
    record_input!();
}

impl PacketInput for Arc<PacketRecord> {
    record_input!();
}

/// Appends one message's event, each field written straight into its slot
/// in `out`. `Vec::push` of the ~200-byte event built it on the stack and
/// copied it with a `memcpy` call, and the facts were copied once more on
/// the way (~100 instructions of a message's ~700).
#[expect(clippy::inline_always, reason = "the point is to build in place, which needs the caller's values")]
#[inline(always)]
fn push_event(
    out: &mut Vec<DnsEvent>,
    rec: impl FnOnce() -> PacketInfo,
    src: Endpoint,
    dst: Endpoint,
    transport: Transport,
    msg: DnsMessage,
    partial: bool,
) {
    out.reserve(1);
    let len = out.len();
    let Some(slot) = out.spare_capacity_mut().first_mut() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: `e` is the spare slot after the `len` initialized events
    // (`reserve` made it), valid for writes and aligned. Every field is
    // written once (the pattern below it stops compiling when one is added), and
    // only then does the length take the slot in.
    unsafe {
        (&raw mut (*e).rec).write(rec());
        (&raw mut (*e).src).write(src);
        (&raw mut (*e).dst).write(dst);
        (&raw mut (*e).transport).write(transport);
        (&raw mut (*e).msg).write(msg);
        (&raw mut (*e).partial).write(partial);
        (&raw mut (*e).src_pod).write(None);
        (&raw mut (*e).dst_pod).write(None);
        out.set_len(len + 1);
    }
}

/// Names every field of [`DnsEvent`] (no `..`): a new field fails to
/// compile here until [`push_event`] writes it too.
const _: fn(DnsEvent) =
    |DnsEvent { rec: _, src: _, dst: _, transport: _, msg: _, partial: _, src_pod: _, dst_pod: _ }| {};

/// Where completed messages go.
struct Sink<'a> {
    info: &'a PacketInfo,
    src: Endpoint,
    dst: Endpoint,
    out: &'a mut Vec<DnsEvent>,
    stats: &'a mut DecodeStats,
    names: &'a mut Interner,
}

impl Sink<'_> {
    fn message(&mut self, bytes: &[u8], transport: Transport, partial: bool) {
        match dns::decode_with(bytes, self.names) {
            Ok(msg) => {
                self.stats.messages += 1;
                let info = self.info;
                push_event(self.out, || info.clone(), self.src, self.dst, transport, msg, partial);
            }
            Err(_) => self.stats.bad_dns += 1,
        }
    }
}

/// Turns packets into DNS messages. One per pipeline.
#[derive(Debug)]
pub struct DnsDecoder {
    stats: DecodeStats,
    streams: crate::hash::FastMap<StreamKey, Stream>,
    /// tick → stream, oldest first: the eviction order.
    lru: BTreeMap<u64, StreamKey>,
    tick: u64,
    max_streams: usize,
    /// Names and answer data, shared across messages (bounded).
    names: Interner,
    /// The last egress message, for its ingress sighting.
    echo: Echo,
}

impl Default for DnsDecoder {
    fn default() -> Self {
        Self::with_max_streams(MAX_TCP_STREAMS)
    }
}

impl DnsDecoder {
    /// A decoder with an empty TCP table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder tracking at most `max` TCP streams (at least 1).
    #[must_use]
    pub fn with_max_streams(max: usize) -> Self {
        Self {
            stats: DecodeStats::default(),
            streams: crate::hash::FastMap::default(),
            lru: BTreeMap::new(),
            tick: 0,
            max_streams: max.max(1),
            names: Interner::new(),
            echo: Echo::default(),
        }
    }

    /// Decodes one packet; TCP segments may complete zero or several messages.
    pub fn push(&mut self, rec: impl PacketInput, out: &mut Vec<DnsEvent>) {
        self.push_parts(rec, None, out);
    }

    /// [`Self::push`] when the packet is DNS by [`super::is_dns`] with
    /// `ports`, with one parse of its headers instead of two; false (and
    /// nothing counted) when it is not.
    pub fn push_if_dns(&mut self, rec: impl PacketInput, ports: &[u16], out: &mut Vec<DnsEvent>) -> bool {
        self.push_parts(rec, Some(ports), out)
    }

    fn push_parts<P: PacketInput>(&mut self, rec: P, ports: Option<&[u16]>, out: &mut Vec<DnsEvent>) -> bool {
        let hook = rec.hook();
        if ports.is_some() && matches!(hook, Hook::TcEgress | Hook::TcIngress) {
            return false;
        }
        let data = rec.bytes();
        let parsed = packet::parse(data);
        if let Some(ports) = ports {
            // As `is_dns`: a packet it cannot parse is the decoder's to count,
            // except in a foreign capture, where it is someone else's traffic.
            let dns = match &parsed {
                // One inlined pass over the ports, not two calls.
                Ok(v) => ports.iter().any(|&p| p == v.sport || p == v.dport),
                Err(_) => hook != Hook::Wire,
            };
            if !dns {
                return false;
            }
        }
        self.stats.packets += 1;
        // Borrowed where it was parsed: moved out, the view was copied once
        // more on the stack (~25 instructions a packet).
        let v = match &parsed {
            Ok(v) => v,
            Err(PacketError::Fragment) => {
                self.stats.fragments += 1;
                return true;
            }
            Err(_) => {
                self.stats.bad_packets += 1;
                return true;
            }
        };
        if v.first_fragment {
            self.stats.fragments += 1;
        }
        let src = Endpoint { ip: v.src, port: v.sport };
        let dst = Endpoint { ip: v.dst, port: v.dport };
        let short = v.payload.len() < v.payload_len;
        match v.transport {
            Transport::Udp => {
                let partial = rec.wire_len() as usize > data.len() || short;
                if partial {
                    self.stats.truncated += 1;
                }
                // One message per datagram: the record's facts move into it.
                // Its receiver's sighting takes the sender's decoded copy.
                if hook == Hook::SocketIngress
                    && let Some(msg) = self.echo.take(v.payload)
                {
                    self.stats.messages += 1;
                    push_event(out, || rec.into_info(), src, dst, Transport::Udp, msg, partial);
                    return true;
                }
                let r = dns::decode_with(v.payload, &mut self.names);
                if hook == Hook::SocketEgress
                    && let Ok(msg) = &r
                    && self.echo.wants(v.payload.len())
                {
                    self.echo.keep(v.payload, msg);
                }
                match r {
                    Ok(msg) => {
                        self.stats.messages += 1;
                        push_event(out, || rec.into_info(), src, dst, Transport::Udp, msg, partial);
                    }
                    Err(_) => self.stats.bad_dns += 1,
                }
            }
            Transport::Tcp => {
                if short {
                    self.stats.truncated += 1;
                }
                let info = rec.to_info();
                self.push_tcp(&info, v, src, dst, out);
            }
        }
        true
    }

    /// What could not be decoded so far.
    #[must_use]
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// TCP streams currently tracked.
    #[must_use]
    pub fn tcp_streams(&self) -> usize {
        self.streams.len()
    }

    fn push_tcp(&mut self, rec: &PacketInfo, v: &L4View<'_>, src: Endpoint, dst: Endpoint, out: &mut Vec<DnsEvent>) {
        let key = StreamKey {
            netns_cookie: rec.netns_cookie,
            netns_ino: rec.netns_ino,
            node: rec.node.clone(),
            hook: rec.hook,
            src,
            dst,
        };
        let flags = v.tcp_flags;
        if flags & tcp_flags::RST != 0 {
            self.remove(&key);
            return;
        }
        let syn = flags & tcp_flags::SYN != 0;
        let fin = flags & tcp_flags::FIN != 0;
        if !self.streams.contains_key(&key) {
            // A bare ACK or FIN of a stream we do not know carries nothing.
            if v.payload.is_empty() && !syn {
                return;
            }
            self.insert(key.clone());
        }
        self.tick += 1;
        let tick = self.tick;
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        self.lru.remove(&stream.tick);
        stream.tick = tick;
        self.lru.insert(tick, key.clone());

        let mut seq = v.tcp_seq;
        if syn {
            // A SYN (new connection or SYN-ACK) starts the byte stream afresh.
            stream.desync();
            seq = seq.wrapping_add(1);
            stream.next_seq = Some(seq);
        }
        let mut sink = Sink { info: rec, src, dst, out, stats: &mut self.stats, names: &mut self.names };
        if !v.payload.is_empty() {
            segment(stream, seq, v.payload, &mut sink);
        }
        if v.payload.len() < v.payload_len && stream.next_seq.is_some() {
            // Snapped segment: the rest of its bytes are a hole we cannot fill.
            sink.stats.tcp_gaps += 1;
            stream.desync();
        }
        if fin {
            self.remove(&key);
        }
    }

    fn insert(&mut self, key: StreamKey) {
        while self.streams.len() >= self.max_streams {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            if self.streams.remove(&old).is_some() {
                self.stats.tcp_evicted += 1;
            }
        }
        self.streams.insert(key, Stream::default());
    }

    fn remove(&mut self, key: &StreamKey) {
        if let Some(s) = self.streams.remove(key) {
            self.lru.remove(&s.tick);
        }
    }
}

/// True when `data` looks like the start of a framed DNS message: a length
/// that can hold a header, one question, a known opcode and the Z bit clear.
fn plausible_start(data: &[u8]) -> bool {
    let (Some(&[l0, l1]), Some(&[f0, f1]), Some(&[q0, q1])) = (data.get(0..2), data.get(4..6), data.get(6..8)) else {
        return false;
    };
    u16::from_be_bytes([l0, l1]) >= 12
        && data.len() >= 14
        && u16::from_be_bytes([q0, q1]) == 1
        && (f0 >> 3) & 0x0f <= 6
        && f1 & 0x40 == 0
}

/// Takes one segment's payload starting at sequence number `seq`.
fn segment(s: &mut Stream, seq: u32, data: &[u8], sink: &mut Sink<'_>) {
    let next = if let Some(n) = s.next_seq {
        n
    } else {
        if !plausible_start(data) {
            sink.stats.tcp_unsynced += 1;
            return;
        }
        s.next_seq = Some(seq);
        seq
    };
    let ahead = seq.wrapping_sub(next) as i32;
    if ahead > 0 {
        let ahead = ahead as usize;
        if ahead <= MAX_PENDING_BYTES
            && s.pending.len() < MAX_PENDING_SEGMENTS
            && s.pending_bytes + data.len() <= MAX_PENDING_BYTES
        {
            s.pending_bytes += data.len();
            s.pending.push((seq, data.to_vec()));
            return;
        }
        // The hole is not going to fill: start over from this segment.
        sink.stats.tcp_gaps += 1;
        s.desync();
        segment(s, seq, data, sink);
        return;
    }
    if !append(s, seq, next, data, sink) {
        sink.stats.tcp_retransmits += 1;
        return;
    }
    // Held segments the new bytes reached.
    while let Some(i) =
        s.pending.iter().position(|(pseq, _)| s.next_seq.is_some_and(|n| pseq.wrapping_sub(n) as i32 <= 0))
    {
        let (pseq, bytes) = s.pending.swap_remove(i);
        s.pending_bytes -= bytes.len();
        if let Some(n) = s.next_seq {
            append(s, pseq, n, &bytes, sink);
        }
    }
}

/// Appends the part of `data` (starting at `seq`, not after `next`) that is
/// new; false when all of it was seen before.
fn append(s: &mut Stream, seq: u32, next: u32, data: &[u8], sink: &mut Sink<'_>) -> bool {
    let seen = next.wrapping_sub(seq) as usize;
    let Some(new) = data.get(seen..).filter(|d| !d.is_empty()) else {
        return false;
    };
    s.next_seq = Some(next.wrapping_add(new.len() as u32));
    frames(&mut s.buf, new, sink);
    true
}

/// Splits in-order bytes into frames, completing the buffered one first;
/// whole frames inside `data` are decoded in place, without copying.
fn frames(buf: &mut Vec<u8>, mut data: &[u8], sink: &mut Sink<'_>) {
    loop {
        if buf.is_empty() {
            let Some(&[a, b]) = data.get(0..2) else {
                buf.extend_from_slice(data);
                return;
            };
            let end = 2 + usize::from(u16::from_be_bytes([a, b]));
            let Some(msg) = data.get(2..end) else {
                buf.extend_from_slice(data);
                return;
            };
            sink.message(msg, Transport::Tcp, false);
            data = data.get(end..).unwrap_or(&[]);
        } else {
            if buf.len() < 2 {
                let take = (2 - buf.len()).min(data.len());
                buf.extend_from_slice(data.get(..take).unwrap_or(&[]));
                data = data.get(take..).unwrap_or(&[]);
                if buf.len() < 2 {
                    return;
                }
            }
            let end = 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            debug_assert!(end <= MAX_FRAME);
            let take = end.saturating_sub(buf.len()).min(data.len());
            buf.extend_from_slice(data.get(..take).unwrap_or(&[]));
            data = data.get(take..).unwrap_or(&[]);
            if buf.len() < end {
                return;
            }
            sink.message(buf.get(2..).unwrap_or(&[]), Transport::Tcp, false);
            buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bytes::Bytes;

    use super::*;
    use crate::{
        decode::dns::test_pcap,
        testkit::{
            Rng,
            dns::build,
            packet::{ipv4_frag, tcp_data, udp},
        },
    };

    fn rec(data: Vec<u8>) -> Arc<PacketRecord> {
        Arc::new(PacketRecord::bare(1, Hook::Wire, Bytes::from(data)))
    }

    fn framed(id: u16, name: &str) -> Vec<u8> {
        let m = build(id, 0x0100, name, 1, &[], None);
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend(m);
        f
    }

    fn seg(seq: u32, flags: u8, payload: &[u8]) -> Arc<PacketRecord> {
        rec(ipv4_frag(6, 0, &[], &tcp_data(40000, 53, seq, flags, payload)))
    }

    fn ids(ev: &[DnsEvent]) -> Vec<u16> {
        ev.iter().map(|e| e.msg.id).collect()
    }

    const ACK: u8 = tcp_flags::ACK;
    const PSH: u8 = tcp_flags::PSH | tcp_flags::ACK;

    #[test]
    fn udp_message() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        d.push(rec(ipv4_frag(17, 0, &[], &udp(5000, 53, &build(42, 0x0100, "a.b", 1, &[], None)))), &mut out);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.msg.id, 42);
        assert_eq!(e.transport, Transport::Udp);
        assert_eq!(e.src, Endpoint { ip: IpAddr::from([10, 0, 0, 1]), port: 5000 });
        assert_eq!(e.dst.port, 53);
        assert!(!e.partial);
        assert!(e.src_pod.is_none());
        assert_eq!(d.stats().messages, 1);
    }

    /// The receiver's sighting of a sent message takes the sender's decoded
    /// copy: the same message as decoding it, once; other bytes, and a third
    /// copy, are decoded.
    #[test]
    fn ingress_echo_takes_the_egress_message() {
        let at = |hook, payload: &[u8]| {
            Arc::new(PacketRecord::bare(1, hook, Bytes::from(ipv4_frag(17, 0, &[], &udp(53, 5000, payload)))))
        };
        let answer = build(7, 0x8180, "a.example", 1, &[(1, &[10, 0, 0, 1]), (1, &[10, 0, 0, 2])], Some(0));
        let other = build(8, 0x8180, "a.example", 1, &[(1, &[10, 0, 0, 1]), (1, &[10, 0, 0, 2])], Some(0));
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        for (hook, m) in [
            (Hook::SocketEgress, &answer),
            (Hook::SocketIngress, &other),
            (Hook::SocketIngress, &answer),
            (Hook::SocketIngress, &answer),
            (Hook::SocketEgress, &answer),
        ] {
            d.push(at(hook, m), &mut out);
        }
        let fresh = |m: &[u8]| dns::decode(m).unwrap();
        let want = [fresh(&answer), fresh(&other), fresh(&answer), fresh(&answer), fresh(&answer)];
        assert_eq!(out.iter().map(|e| e.msg.clone()).collect::<Vec<_>>(), want);
        assert_eq!(out[0].msg.answers.len(), 2);
        assert!(d.echo.holds(), "the last egress message waits");
        assert_eq!(d.stats().messages, 5);
    }

    #[test]
    fn udp_failures_are_counted() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        d.push(rec(vec![0x45, 0, 0]), &mut out);
        d.push(rec(ipv4_frag(17, 0, &[], &udp(5000, 53, b"not dns"))), &mut out);
        d.push(rec(ipv4_frag(17, 100, &[], b"fragment tail")), &mut out);
        // Snapped: wire_len says more than was captured.
        let full = ipv4_frag(17, 0, &[], &udp(5000, 53, &build(1, 0x8180, "x.y", 1, &[(1, &[1, 2, 3, 4])], None)));
        let mut r = (*rec(full[..full.len() - 4].to_vec())).clone();
        r.wire_len = full.len() as u32;
        d.push(Arc::new(r), &mut out);
        let s = d.stats();
        assert_eq!((s.packets, s.bad_packets, s.bad_dns, s.fragments, s.truncated), (4, 1, 1, 1, 1));
        assert_eq!(out.len(), 1);
        assert!(out[0].partial);
        assert_eq!(&*out[0].msg.qname, "x.y");
    }

    #[test]
    fn tcp_two_messages_in_one_segment() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        d.push(seg(100, tcp_flags::SYN, b""), &mut out);
        let p = [framed(1, "a.example"), framed(2, "b.example")].concat();
        d.push(seg(101, PSH, &p), &mut out);
        assert_eq!(ids(&out), [1, 2]);
        assert!(out.iter().all(|e| e.transport == Transport::Tcp));
    }

    #[test]
    fn tcp_message_split_across_three_segments() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        let f = framed(7, "split.example");
        d.push(seg(0, tcp_flags::SYN, b""), &mut out);
        d.push(seg(1, ACK, &f[..1]), &mut out);
        d.push(seg(2, ACK, &f[1..10]), &mut out);
        assert!(out.is_empty());
        let mut last = (*seg(11, PSH, &f[10..])).clone();
        last.ts_ns = 99;
        d.push(&last, &mut out);
        assert_eq!(ids(&out), [7]);
        assert_eq!(out[0].rec, last.info(), "the completing segment's record");
    }

    #[test]
    fn tcp_retransmission_and_overlap() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        let p = [framed(1, "a"), framed(2, "b")].concat();
        d.push(seg(1000, tcp_flags::SYN, b""), &mut out);
        d.push(seg(1001, PSH, &p[..20]), &mut out);
        d.push(seg(1001, PSH, &p[..20]), &mut out); // exact duplicate
        assert_eq!(d.stats().tcp_retransmits, 1);
        d.push(seg(1011, PSH, &p[10..]), &mut out); // overlaps 10 old bytes
        d.push(seg(1001, PSH, &p), &mut out); // whole retransmission
        assert_eq!(ids(&out), [1, 2]);
        assert_eq!(d.stats().tcp_retransmits, 2);
    }

    #[test]
    fn tcp_out_of_order() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        let p = [framed(1, "a.example"), framed(2, "b.example")].concat();
        d.push(seg(0, tcp_flags::SYN, b""), &mut out);
        d.push(seg(1 + 30, PSH, &p[30..]), &mut out);
        d.push(seg(1 + 15, PSH, &p[15..30]), &mut out);
        assert!(out.is_empty());
        d.push(seg(1, PSH, &p[..15]), &mut out);
        assert_eq!(ids(&out), [1, 2]);
        assert_eq!(d.stats().tcp_gaps, 0);
    }

    #[test]
    fn tcp_mid_stream_resync_and_gap() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        let f1 = framed(1, "first.example");
        // Seen mid-way: the tail of a message, then a fresh one.
        d.push(seg(5000, PSH, &f1[7..]), &mut out);
        assert_eq!(d.stats().tcp_unsynced, 1);
        d.push(seg(5000 + (f1.len() - 7) as u32, PSH, &framed(2, "second.example")), &mut out);
        assert_eq!(ids(&out), [2]);
        // A hole far larger than we wait for: resync on the next frame start.
        d.push(seg(900_000, PSH, &framed(3, "third.example")), &mut out);
        assert_eq!(ids(&out), [2, 3]);
        assert_eq!(d.stats().tcp_gaps, 1);
    }

    #[test]
    fn tcp_fin_rst_and_direction() {
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        let f = framed(9, "x");
        d.push(seg(0, tcp_flags::SYN, b""), &mut out);
        d.push(seg(1, ACK, &f[..5]), &mut out);
        d.push(seg(1 + 5, tcp_flags::FIN | ACK, &f[5..]), &mut out);
        assert_eq!(ids(&out), [9]);
        assert_eq!(d.tcp_streams(), 0);
        d.push(seg(0, tcp_flags::SYN, b""), &mut out);
        d.push(seg(1, ACK, &f[..5]), &mut out);
        d.push(seg(6, tcp_flags::RST, b""), &mut out);
        assert_eq!(d.tcp_streams(), 0);
        // The other direction is its own stream.
        let back = rec(ipv4_frag(6, 0, &[], &tcp_data(53, 40000, 77, PSH, &framed(10, "y"))));
        d.push(back, &mut out);
        assert_eq!(ids(&out), [9, 10]);
        assert_eq!(out[1].src.port, 53);
    }

    #[test]
    fn tcp_table_is_bounded() {
        let mut d = DnsDecoder::with_max_streams(4);
        let mut out = Vec::new();
        for port in 0..10u16 {
            let r = rec(ipv4_frag(6, 0, &[], &tcp_data(1000 + port, 53, 1, ACK, &framed(port, "a")[..5])));
            d.push(r, &mut out);
        }
        assert_eq!(d.tcp_streams(), 4);
        assert_eq!(d.stats().tcp_evicted, 6);
    }

    #[test]
    fn tcp_random_segments_never_panic() {
        let mut dec = DnsDecoder::with_max_streams(16);
        let mut out = Vec::new();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let stream = [framed(1, "a.example"), framed(2, "bb.example"), framed(3, "c")].concat();
        for _ in 0..10_000 {
            let r = rng.next();
            let lo = (r as usize) % stream.len();
            let hi = (lo + (r >> 16) as usize % 40).min(stream.len());
            let flags = [ACK, PSH, tcp_flags::SYN, tcp_flags::FIN, tcp_flags::RST][(r >> 40) as usize % 5];
            let sport = 1000 + (r >> 50) as u16 % 4;
            let seqbase = if r & (1 << 60) != 0 { 0 } else { (r >> 8) as u32 };
            let p = ipv4_frag(6, 0, &[], &tcp_data(sport, 53, seqbase.wrapping_add(lo as u32), flags, &stream[lo..hi]));
            dec.push(rec(p), &mut out);
            assert!(dec.streams.values().all(|s| s.buf.len() <= MAX_FRAME && s.pending_bytes <= MAX_PENDING_BYTES));
        }
    }

    /// Replays a fixture through the decoder.
    fn replay(name: &str) -> Option<(Vec<DnsEvent>, DecodeStats)> {
        let pkts = test_pcap::read(name)?;
        let mut d = DnsDecoder::new();
        let mut out = Vec::new();
        for (wire, ip) in pkts {
            let mut r = (*rec(ip)).clone();
            r.wire_len = wire;
            d.push(Arc::new(r), &mut out);
        }
        Some((out, d.stats()))
    }

    #[test]
    fn fixture_dns_tcp() {
        let Some((ev, st)) = replay("tcpdump__dns_tcp.pcap") else { return };
        assert_eq!(ids(&ev), [17177, 17177]);
        assert!(!ev[0].msg.is_response && ev[1].msg.is_response);
        assert_eq!(&*ev[0].msg.qname, "www.tcpdump.org");
        let a: Vec<&str> = ev[1].msg.answers.iter().map(|a| a.data.as_ref()).collect();
        assert_eq!(a, ["192.139.46.66", "198.199.88.104"]);
        assert_eq!((st.packets, st.bad_dns, st.bad_packets, st.tcp_gaps), (11, 0, 0, 0));
    }

    #[test]
    fn fixture_ipv6_fragments() {
        let Some((ev, st)) = replay("zeek__ipv6-fragmented-dns.pcap") else { return };
        // 3 queries, one unfragmented answer, and of the fragmented answer
        // to 40849 (sent twice) only the retransmission's first fragment:
        // the first copy lost its first two fragments.
        assert_eq!(ev.len(), 5);
        assert_eq!(st.fragments, 4);
        let partial: Vec<bool> = ev.iter().map(|e| e.partial).collect();
        assert_eq!(partial, [false, false, false, false, true]);
        assert_eq!(st.truncated, 1);
        assert_eq!(ev[4].msg.id, 40849);
        assert_eq!(&*ev[4].msg.qname, "txtpadding_3230.n1.netalyzr.icsi.berkeley.edu");
        assert_eq!(ev[4].msg.ancount, 1);
    }

    #[test]
    fn fixture_edns_ecs_mixed() {
        let Some((ev, st)) = replay("zeek__dns-edns-ecs.pcap") else { return };
        let tcp = ev.iter().filter(|e| e.transport == Transport::Tcp).count();
        let tc = ev.iter().filter(|e| e.msg.truncated).count();
        eprintln!("{} events, {tcp} tcp, {tc} TC=1, {st:?}", ev.len());
        assert_eq!(tc, 7);
        assert_eq!((ev.len(), tcp), (85, 9), "tshark agrees");
        assert_eq!(st.bad_dns, 0);
    }
}
