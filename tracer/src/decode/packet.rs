//! IPv4/IPv6 + transport header parsing of a packet that starts at its IP header.
//!
//! This is what the kernel programs capture (`skb->data` at the network
//! header) and what `LINKTYPE_RAW` captures carry. There is one parser,
//! [`read`]: lax (any protocol, cut headers: it reads what is there) and it
//! records the first defect that makes a packet unusable as UDP/TCP. DNS
//! takes its UDP/TCP view ([`parse`]: a whole header or the reason, counted
//! as a fragment or a bad packet); drops, fabric correlation and the agent
//! take the header fields a cut packet still has ([`parse_lax`]). It never
//! allocates and never panics: every read is bounds-checked and the IPv6
//! extension-header walk is bounded.

use std::{
    hash::{BuildHasher, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use thiserror::Error;

use crate::event::Transport;

/// Why a packet could not be parsed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the headers it claims.
    #[error("packet truncated at byte {0}")]
    Truncated(usize),
    /// Not IPv4 or IPv6.
    #[error("unknown IP version {0}")]
    BadVersion(u8),
    /// Not UDP or TCP (after extension headers).
    #[error("not UDP or TCP (protocol {0})")]
    NotUdpTcp(u8),
    /// A non-first fragment: no transport header.
    #[error("non-first IP fragment")]
    Fragment,
    /// A header field contradicts the header itself (IHL < 5, TCP data
    /// offset < 5, UDP length < 8, total length shorter than the header,
    /// too many IPv6 extension headers); the offset is that field's.
    #[error("malformed header field at byte {0}")]
    Malformed(usize),
}

/// The parsed headers and where the transport payload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4View<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    /// TCP sequence number (0 for UDP).
    pub tcp_seq: u32,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Transport payload as captured (may be shorter than `payload_len`).
    pub payload: &'a [u8],
    /// Payload length the headers claim.
    pub payload_len: usize,
    /// True when this is the first fragment of a fragmented datagram.
    pub first_fragment: bool,
}

/// TCP flag bits of [`L4View::tcp_flags`].
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
}

/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 extension headers walked before giving up: real stacks send one or
/// two, and the bound keeps a crafted chain from costing more than this.
const MAX_EXT_HEADERS: usize = 8;

fn get16(d: &[u8], at: usize) -> Option<u16> {
    match d.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

fn get32(d: &[u8], at: usize) -> Option<u32> {
    match d.get(at..at.checked_add(4)?) {
        Some(&[b0, b1, b2, b3]) => Some(u32::from_be_bytes([b0, b1, b2, b3])),
        _ => None,
    }
}

/// One packet as [`read`] finds it: the IP header's fields, the transport
/// segment, and whether it holds a whole UDP/TCP header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (after the IPv6 extension headers).
    pub proto: u8,
    /// IPv4 identification, or the IPv6 fragment header's low 16 bits (0 without one).
    pub id: u16,
    /// Fragment offset in 8-byte units; not 0 for a non-first fragment,
    /// which carries no transport header.
    pub frag_offset: u16,
    /// More fragments follow (with `frag_offset` 0: a first fragment).
    pub more_fragments: bool,
    /// The transport segment as captured, trimmed to the length IP claims
    /// (link padding is not part of it).
    pub segment: &'a [u8],
    /// Where the UDP/TCP payload starts in `segment` (8, or the TCP data
    /// offset); `None` when the header is cut or contradicts itself, or the
    /// packet is not a whole UDP/TCP packet (see `defect`).
    pub payload_off: Option<usize>,
    /// The UDP/TCP payload as captured, trimmed to the UDP length (empty
    /// without `payload_off`).
    pub payload: &'a [u8],
    /// Payload length the headers claim (may exceed `payload.len()`).
    pub payload_len: usize,
    /// The first reason, in the order the headers are read, why this is not
    /// a whole UDP/TCP packet: a cut or contradictory header, a non-first
    /// fragment, another protocol. The fields before it are still valid.
    pub defect: Option<PacketError>,
    /// What the IP length field claims for the segment (0 when it is 0).
    ip_claim: usize,
}

impl<'a> Parsed<'a> {
    /// Source and destination port; 0 when the protocol has none (TCP, UDP
    /// and SCTP have), the header is cut, or this is a non-first fragment.
    #[must_use]
    pub fn ports(&self) -> (u16, u16) {
        match (self.frag_offset, self.proto, get16(self.segment, 0), get16(self.segment, 2)) {
            (0, PROTO_TCP | PROTO_UDP | PROTO_SCTP, Some(s), Some(d)) => (s, d),
            _ => (0, 0),
        }
    }

    /// The UDP/TCP view DNS decodes, or the packet's defect.
    ///
    /// # Errors
    /// [`Parsed::defect`], when there is one.
    #[inline]
    pub fn l4(&self) -> Result<L4View<'a>, PacketError> {
        if let Some(e) = self.defect {
            return Err(e);
        }
        let (sport, dport) = self.ports();
        let tcp = self.proto == PROTO_TCP;
        Ok(L4View {
            src: self.src,
            dst: self.dst,
            sport,
            dport,
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
            ip_id: if self.src.is_ipv4() { self.id } else { 0 },
            tcp_seq: if tcp { get32(self.segment, 4).unwrap_or(0) } else { 0 },
            tcp_flags: if tcp { self.segment.get(13).copied().unwrap_or(0) } else { 0 },
            payload: self.payload,
            payload_len: self.payload_len,
            first_fragment: self.more_fragments,
        })
    }

    /// The header fields drops and fabric correlation key on, as far as
    /// they were captured (missing ones are 0).
    #[must_use]
    pub fn l3l4(&self) -> L3L4 {
        let (sport, dport) = self.ports();
        let seg = self.segment;
        let mut l = L3L4 {
            t: Tuple { src: self.src, dst: self.dst, proto: self.proto, sport, dport },
            id: self.id,
            seq: 0,
            tcp_flags: 0,
            icmp: 0,
            tcp_len: 0,
        };
        if self.frag_offset == 0 {
            match self.proto {
                PROTO_TCP => {
                    l.seq = get32(seg, 4).unwrap_or(0);
                    l.tcp_flags = seg.get(13).copied().unwrap_or(0);
                    if let Some(b) = seg.get(12) {
                        l.tcp_len = self.ip_claim.saturating_sub(usize::from(b >> 4) * 4) as u32;
                    }
                }
                PROTO_ICMP | PROTO_ICMPV6 => {
                    l.icmp = get16(seg, 0).unwrap_or(0);
                    l.seq = get32(seg, 4).unwrap_or(0);
                }
                _ => {}
            }
        }
        l
    }
}

/// What the network layer leaves to the transport layer.
struct L3<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    frag_offset: u16,
    more_fragments: bool,
    segment: &'a [u8],
    /// Offset of the transport header in the packet (for error offsets).
    l4_off: usize,
    /// Transport segment length: what IP claims, or what was captured when
    /// its length field is 0.
    claim: usize,
    /// What the IP length field claims (0 when it is 0).
    ip_claim: usize,
    defect: Option<PacketError>,
}

/// The parser: IP and transport header fields of a packet that starts at
/// its IP header. Lax: it takes any protocol and cut headers, and reads what
/// is there; [`Parsed::defect`] says what makes it unusable as a UDP/TCP
/// packet.
///
/// # Errors
/// Only when there are no addresses: [`PacketError::Truncated`] (cut inside
/// the IP header or an IPv6 extension header), [`PacketError::BadVersion`],
/// [`PacketError::Malformed`] (IPv4 IHL < 5). When a later defect (e.g. a
/// non-first fragment) was found before the cut, that is the error.
pub fn read(data: &[u8]) -> Result<Parsed<'_>, PacketError> {
    Ok(transport(&l3(data)?))
}

/// The network layer of `data`: where every view starts.
#[expect(
    clippy::inline_always,
    reason = "DNS parses every packet twice: inlined, the parser costs 8.6M instead of 9.3M instructions on a 25k-packet replay"
)]
#[inline(always)]
fn l3(data: &[u8]) -> Result<L3<'_>, PacketError> {
    match data.first().map(|b| b >> 4) {
        None => Err(PacketError::Truncated(0)),
        Some(4) => l3_v4(data),
        Some(6) => l3_v6(data),
        Some(v) => Err(PacketError::BadVersion(v)),
    }
}

/// The UDP/TCP view of `data`, for DNS: [`read`] and [`Parsed::l4`] in one
/// call (DNS needs a whole UDP/TCP header or the reason it is not there).
///
/// # Errors
/// [`PacketError::Truncated`] when a header is cut, with the offset of the
/// first missing field; [`PacketError::Fragment`] for non-first fragments;
/// [`PacketError::NotUdpTcp`] for other protocols.
// Inlined so the common IPv4/UDP case is read straight into the caller's
// frame: as a call, its ~70-byte view was written out and copied twice.
#[inline]
pub fn parse(data: &[u8]) -> Result<L4View<'_>, PacketError> {
    match parse_v4_udp(data) {
        Some(v) => Ok(v),
        None => parse_general(data),
    }
}

/// [`parse`] of the packet DNS nearly always is: IPv4 without options, not
/// a fragment, UDP with a usable length field, all of it captured. None for
/// anything else, which [`parse_general`] then reads (and reports).
#[inline]
fn parse_v4_udp(d: &[u8]) -> Option<L4View<'_>> {
    let h = d.first_chunk::<28>()?;
    // Version 4, IHL 5; flags: only DF (no MF, no reserved bit), offset 0.
    if h[0] != 0x45 || h[9] != PROTO_UDP || h[6] & 0xbf != 0 || h[7] != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let ulen = usize::from(u16::from_be_bytes([h[24], h[25]]));
    if total < 28 || total > d.len() || ulen < 8 {
        return None;
    }
    let body = d.get(28..total)?;
    let payload_len = ulen - 8;
    Some(L4View {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        sport: u16::from_be_bytes([h[20], h[21]]),
        dport: u16::from_be_bytes([h[22], h[23]]),
        transport: Transport::Udp,
        ip_id: u16::from_be_bytes([h[4], h[5]]),
        tcp_seq: 0,
        tcp_flags: 0,
        payload: body.get(..payload_len.min(body.len())).unwrap_or(body),
        payload_len,
        first_fragment: false,
    })
}

/// [`parse`] of any packet.
fn parse_general(data: &[u8]) -> Result<L4View<'_>, PacketError> {
    // What `read(data)?.l4()` gives, without building the lax view: this
    // runs twice per packet on the DNS path.
    let l3 = l3(data)?;
    if let Some(e) = l3.defect {
        return Err(e);
    }
    let (_, payload, payload_len) = udp_tcp(l3.segment, l3.l4_off, l3.claim, l3.proto)?;
    let seg = l3.segment;
    let tcp = l3.proto == PROTO_TCP;
    Ok(L4View {
        src: l3.src,
        dst: l3.dst,
        sport: get16(seg, 0).unwrap_or(0),
        dport: get16(seg, 2).unwrap_or(0),
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        ip_id: if l3.src.is_ipv4() { l3.id } else { 0 },
        tcp_seq: if tcp { get32(seg, 4).unwrap_or(0) } else { 0 },
        tcp_flags: if tcp { seg.get(13).copied().unwrap_or(0) } else { 0 },
        payload,
        payload_len,
        first_fragment: l3.more_fragments,
    })
}

#[inline]
fn l3_v4(d: &[u8]) -> Result<L3<'_>, PacketError> {
    let Some(h) = d.first_chunk::<20>() else {
        return Err(PacketError::Truncated(d.len()));
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::Malformed(0));
    }
    let mut defect = (d.len() < ihl).then_some(PacketError::Truncated(d.len()));
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let end = if total < ihl {
        // 0: TSO/BIG TCP super-packets seen before segmentation; trust the capture.
        if total != 0 {
            defect.get_or_insert(PacketError::Malformed(2));
        }
        d.len()
    } else {
        total.min(d.len())
    };
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x1fff != 0 {
        defect.get_or_insert(PacketError::Fragment);
    }
    let segment = d.get(ihl..end).unwrap_or(&[]);
    Ok(L3 {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto: h[9],
        id: u16::from_be_bytes([h[4], h[5]]),
        frag_offset: frag & 0x1fff,
        more_fragments: frag & 0x2000 != 0,
        segment,
        l4_off: ihl,
        claim: if total == 0 { segment.len() } else { total.saturating_sub(ihl) },
        ip_claim: total.saturating_sub(ihl),
        defect,
    })
}

#[inline]
fn l3_v6(d: &[u8]) -> Result<L3<'_>, PacketError> {
    let Some(h) = d.first_chunk::<40>() else {
        return Err(PacketError::Truncated(d.len()));
    };
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // 0 means a jumbogram or a BIG TCP super-packet: use what we have.
    let ip_end = if plen == 0 { d.len() } else { 40 + plen };
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = 40usize;
    let (mut id, mut fo) = (0u16, 0u16);
    let mut defect = None;
    let mut walked = 0;
    loop {
        // One header past the bound is only looked at for the defect it has.
        let beyond = walked == MAX_EXT_HEADERS;
        let cut = |at: usize, defect: &mut Option<PacketError>| {
            let e = *defect.get_or_insert(PacketError::Truncated(at));
            if beyond { Ok(()) } else { Err(e) }
        };
        let (nh, len) = match next {
            // hop-by-hop, routing, destination options: (len + 1) * 8 bytes;
            // authentication header: (len + 2) * 4 bytes.
            0 | 43 | 51 | 60 => match d.get(off..off + 2) {
                Some(&[nh, n]) if next == 51 => (nh, (usize::from(n) + 2) * 4),
                Some(&[nh, n]) => (nh, (usize::from(n) + 1) * 8),
                _ => {
                    cut(off + 1, &mut defect)?;
                    break;
                }
            },
            // fragment: fixed 8 bytes.
            44 => {
                let (Some(&nh), Some(frag)) = (d.get(off), get16(d, off + 2)) else {
                    cut(off + 2, &mut defect)?;
                    break;
                };
                if frag & 0xfff8 != 0 {
                    defect.get_or_insert(PacketError::Fragment);
                }
                if !beyond {
                    fo = frag;
                    let Some(ident) = get16(d, off + 6) else {
                        return Err(*defect.get_or_insert(PacketError::Truncated(d.len())));
                    };
                    id = ident;
                }
                (nh, 8)
            }
            _ => break,
        };
        if beyond {
            let end = off + len;
            defect.get_or_insert(if d.len() < end {
                PacketError::Truncated(d.len())
            } else {
                PacketError::Malformed(end)
            });
            break;
        }
        next = nh;
        off += len;
        walked += 1;
        if d.len() < off {
            defect.get_or_insert(PacketError::Truncated(d.len()));
        }
    }
    if ip_end < off {
        defect.get_or_insert(PacketError::Malformed(4));
    }
    let end = if plen == 0 { d.len() } else { ip_end.min(d.len()) };
    Ok(L3 {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: next,
        id,
        frag_offset: fo >> 3,
        more_fragments: fo & 1 != 0,
        segment: d.get(off..end).unwrap_or(&[]),
        l4_off: off,
        claim: ip_end.saturating_sub(off),
        ip_claim: (40 + plen).saturating_sub(off),
        defect,
    })
}

/// The parsed packet, with its UDP/TCP header checked when nothing before
/// it was wrong.
fn transport<'a>(l3: &L3<'a>) -> Parsed<'a> {
    let mut p = Parsed {
        src: l3.src,
        dst: l3.dst,
        proto: l3.proto,
        id: l3.id,
        frag_offset: l3.frag_offset,
        more_fragments: l3.more_fragments,
        segment: l3.segment,
        payload_off: None,
        payload: &[],
        payload_len: 0,
        defect: l3.defect,
        ip_claim: l3.ip_claim,
    };
    if p.defect.is_none() {
        match udp_tcp(l3.segment, l3.l4_off, l3.claim, l3.proto) {
            Ok((at, payload, payload_len)) => {
                p.payload_off = Some(at);
                p.payload = payload;
                p.payload_len = payload_len;
            }
            Err(e) => p.defect = Some(e),
        }
    }
    p
}

/// Where a whole UDP/TCP header's payload starts, the payload and the
/// length the headers claim; else why the header is not whole (offsets are
/// of the packet: `off` is the segment's).
fn udp_tcp(seg: &[u8], off: usize, claim: usize, proto: u8) -> Result<(usize, &[u8], usize), PacketError> {
    match proto {
        PROTO_UDP => {
            if seg.len() < 8 {
                // The first field that is missing: ports, length, checksum.
                let at = match seg.len() {
                    0 | 1 => 0,
                    2 | 3 => 2,
                    4 | 5 => 4,
                    n => n,
                };
                return Err(PacketError::Truncated(off + at));
            }
            let ulen = usize::from(u16::from_be_bytes([seg[4], seg[5]]));
            let payload_len = if ulen == 0 {
                // Jumbograms and UDP GSO leave the length 0: trust IP.
                claim.saturating_sub(8)
            } else if ulen < 8 {
                return Err(PacketError::Malformed(off + 4));
            } else {
                // A first fragment claims the whole datagram here, more than
                // IP carries: payload_len > payload.len() marks it partial.
                ulen - 8
            };
            let body = seg.get(8..).unwrap_or(&[]);
            Ok((8, body.get(..payload_len.min(body.len())).unwrap_or(body), payload_len))
        }
        PROTO_TCP => {
            if seg.len() < 14 {
                // The first field that is missing: ports, sequence, data offset, flags.
                let at = match seg.len() {
                    0 | 1 => 0,
                    2 | 3 => 2,
                    4..=7 => 4,
                    8..=12 => 12,
                    _ => 13,
                };
                return Err(PacketError::Truncated(off + at));
            }
            let doff = usize::from(seg[12] >> 4) * 4;
            if doff < 20 {
                return Err(PacketError::Malformed(off + 12));
            }
            if seg.len() < doff {
                return Err(PacketError::Truncated(off + seg.len()));
            }
            if claim < doff {
                return Err(PacketError::Malformed(off + 12));
            }
            Ok((doff, seg.get(doff..).unwrap_or(&[]), claim - doff))
        }
        p => Err(PacketError::NotUdpTcp(p)),
    }
}

// ---------------------------------------------------------------------------
// What drops, fabric correlation and the agent's attribution read.

/// ICMP.
pub const PROTO_ICMP: u8 = 1;
/// `ICMPv6`.
pub const PROTO_ICMPV6: u8 = 58;
/// SCTP.
pub const PROTO_SCTP: u8 = 132;

/// Name of an IP protocol number.
#[must_use]
pub fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_ICMP => "icmp",
        2 => "igmp",
        4 => "ipip",
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        41 => "ipv6",
        47 => "gre",
        50 => "esp",
        PROTO_ICMPV6 => "icmpv6",
        PROTO_SCTP => "sctp",
        _ => "other",
    }
}

fn ip_words(ip: IpAddr) -> (u64, u64) {
    match ip {
        IpAddr::V4(a) => (u64::from(u32::from(a)), 4),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            ((b >> 64) as u64, b as u64)
        }
    }
}

/// Addresses, protocol and ports of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 when the protocol has none or the header is cut).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// IP and transport header fields of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3L4 {
    /// Addresses, protocol and ports.
    pub t: Tuple,
    /// IPv4 id, or the IPv6 fragment header's low 16 bits.
    pub id: u16,
    /// TCP sequence; ICMP bytes 4..8 (echo id and sequence).
    pub seq: u32,
    /// TCP flags byte (0 when not TCP or cut).
    pub tcp_flags: u8,
    /// ICMP type << 8 | code.
    pub icmp: u16,
    /// TCP payload length the headers claim (0 when unknown): a GRO
    /// super-packet covers `seq..seq + tcp_len`.
    pub tcp_len: u32,
}

impl L3L4 {
    /// Feeds the fields that survive the trip across the fabric (never TTL,
    /// checksums or lengths) to `h`.
    pub fn feed<H: Hasher>(&self, h: &mut H) {
        let (src_hi, src_lo) = ip_words(self.t.src);
        let (dst_hi, dst_lo) = ip_words(self.t.dst);
        h.write_u64(src_hi);
        h.write_u64(src_lo);
        h.write_u64(dst_hi);
        h.write_u64(dst_lo);
        h.write_u64(
            u64::from(self.t.proto)
                | u64::from(self.t.sport) << 8
                | u64::from(self.t.dport) << 24
                | u64::from(self.id) << 40,
        );
        h.write_u64(u64::from(self.seq) | u64::from(self.icmp) << 32);
    }
}

/// A packet's headers, and those of the packet inside it (VXLAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// The packet itself (the underlay packet, for VXLAN).
    pub outer: L3L4,
    /// The packet inside a VXLAN packet.
    pub inner: Option<L3L4>,
}

impl Headers {
    /// The packet inside the VXLAN packet, else the packet itself.
    #[must_use]
    pub fn innermost(&self) -> &L3L4 {
        self.inner.as_ref().unwrap_or(&self.outer)
    }

    /// Identity of the whole packet as it crosses the fabric (`s`: the
    /// correlating stage's seeded hasher).
    #[must_use]
    pub fn fingerprint(&self, s: &impl BuildHasher) -> u64 {
        let mut h = s.build_hasher();
        h.write_u64(0x5151);
        self.outer.feed(&mut h);
        if let Some(i) = &self.inner {
            i.feed(&mut h);
        }
        h.finish()
    }

    /// Identity of the connection (no IP id, no sequence), for GRO ranges.
    #[must_use]
    pub fn flow_hash(&self, s: &impl BuildHasher) -> u64 {
        let mut h = s.build_hasher();
        h.write_u64(0x6a6a);
        for l in [Some(&self.outer), self.inner.as_ref()].into_iter().flatten() {
            let strip = L3L4 { t: l.t, id: 0, seq: 0, tcp_flags: 0, icmp: 0, tcp_len: 0 };
            strip.feed(&mut h);
        }
        h.finish()
    }

    /// Identity of the innermost packet: what a kernel drop after
    /// decapsulation carries.
    #[must_use]
    pub fn key(&self, s: &impl BuildHasher) -> u64 {
        let mut h = s.build_hasher();
        h.write_u64(0x7777);
        self.innermost().feed(&mut h);
        h.finish()
    }
}

/// The packet inside a VXLAN UDP payload (flags with the I bit, then Ethernet).
fn vxlan_inner(p: &[u8]) -> Option<L3L4> {
    if p.first()? & 0x08 == 0 {
        return None;
    }
    let eth = p.get(8..)?;
    let mut et = get16(eth, 12)?;
    let mut off = 14;
    if et == 0x8100 || et == 0x88a8 {
        et = get16(eth, 16)?;
        off = 18;
    }
    if et != 0x0800 && et != 0x86dd {
        return None;
    }
    read(eth.get(off..)?).ok().map(|p| p.l3l4())
}

/// The header fields of a packet that starts at its IP header, and of the
/// packet inside it when it is VXLAN to one of `vxlan_ports`: [`read`] for
/// drops, fabric correlation and the agent, which take any protocol
/// (addresses only) and cut headers (fields missing are 0): kernel drops
/// carry at most 128 bytes, so a VXLAN packet's inner TCP options are often
/// cut. `None` only when not even the IP header is there.
#[must_use]
pub fn parse_lax(data: &[u8], vxlan_ports: &[u16]) -> Option<Headers> {
    let p = read(data).ok()?;
    let outer = p.l3l4();
    let inner = if outer.t.proto == PROTO_UDP && p.frag_offset == 0 && vxlan_ports.contains(&outer.t.dport) {
        vxlan_inner(p.segment.get(8..).unwrap_or(&[]))
    } else {
        None
    };
    Some(Headers { outer, inner })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{
        Rng,
        packet::{ipv4_frag, ipv6, tcp_data, udp},
    };

    #[test]
    fn ipv4_udp() {
        let p = ipv4_frag(17, 0, &[], &udp(5353, 53, b"hello"));
        let v = parse(&p).unwrap();
        assert_eq!(v.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((v.sport, v.dport), (5353, 53));
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.ip_id, 0x1234);
        assert_eq!(v.payload, b"hello");
        assert_eq!(v.payload_len, 5);
        assert!(!v.first_fragment);
    }

    #[test]
    fn ipv4_options_and_padding() {
        let mut p = ipv4_frag(17, 0, &[1, 1, 1, 0], &udp(1, 53, b"abc"));
        // Ethernet minimum-frame padding after the IP datagram is not payload.
        p.extend_from_slice(&[0xee; 10]);
        let v = parse(&p).unwrap();
        assert_eq!(v.payload, b"abc");
    }

    #[test]
    fn ipv4_snapped_payload() {
        let p = ipv4_frag(17, 0, &[], &udp(1, 53, &[7u8; 100]));
        let v = parse(&p[..60]).unwrap();
        assert_eq!(v.payload.len(), 60 - 28);
        assert_eq!(v.payload_len, 100);
    }

    #[test]
    fn ipv4_fragments() {
        let p = ipv4_frag(17, 0x2000, &[], &udp(1, 53, b"first"));
        let v = parse(&p).unwrap();
        assert!(v.first_fragment);
        let p = ipv4_frag(17, 0x2000 | 0xb9, &[], b"middle");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
        let p = ipv4_frag(17, 0xb9, &[], b"last");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
    }

    #[test]
    fn ipv4_tcp() {
        let p = ipv4_frag(6, 0x4000, &[], &tcp_data(40000, 53, 0xdead_beef, 0x18, b"xy"));
        let v = parse(&p).unwrap();
        assert_eq!(v.transport, Transport::Tcp);
        assert_eq!(v.tcp_seq, 0xdead_beef);
        assert_eq!(v.tcp_flags, 0x18);
        assert_eq!(v.payload, b"xy");
        assert_eq!(v.payload_len, 2);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[]), Err(PacketError::Truncated(0)));
        assert_eq!(parse(&[0x50; 40]), Err(PacketError::BadVersion(5)));
        let p = ipv4_frag(1, 0, &[], &[8, 0, 0, 0]);
        assert_eq!(parse(&p), Err(PacketError::NotUdpTcp(1)));
        let mut p = ipv4_frag(17, 0, &[], &udp(1, 2, b""));
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(PacketError::Malformed(0)));
        let mut p = ipv4_frag(17, 0, &[], &udp(1, 2, b""));
        p[25] = 3; // UDP length 3 < 8
        assert_eq!(parse(&p), Err(PacketError::Malformed(24)));
        let mut p = ipv4_frag(6, 0, &[], &tcp_data(1, 2, 3, 0, b""));
        p[32] = 0x40; // data offset 4 words
        assert_eq!(parse(&p), Err(PacketError::Malformed(32)));
        // Cut everywhere inside the headers: always an error, never a panic.
        let p = ipv4_frag(6, 0, &[], &tcp_data(1, 2, 3, 0, b""));
        for n in 0..p.len() {
            assert!(matches!(parse(&p[..n]), Err(PacketError::Truncated(_))), "{n}");
        }
    }

    #[test]
    fn ipv6_udp_plain_and_with_extensions() {
        let u = udp(1234, 53, b"q");
        let v6 = ipv6(17, &[], &u);
        let v = parse(&v6).unwrap();
        assert_eq!(v.src, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(v.payload, b"q");
        assert_eq!(v.ip_id, 0);

        // hop-by-hop (8) → dest opts (16) → routing (8) → UDP
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[43, 1, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        let p = ipv6(0, &ext, &u);
        let v = parse(&p).unwrap();
        assert_eq!((v.sport, v.dport, v.payload), (1234, 53, &b"q"[..]));
        assert_eq!(v.payload_len, 1);
        for n in 0..p.len() - u.len() + 8 {
            assert!(parse(&p[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn ipv6_fragments() {
        let u = udp(1234, 53, b"first");
        // first fragment: offset 0, M=1
        let p = ipv6(44, &[17, 0, 0, 1, 0, 0, 0, 9], &u);
        let v = parse(&p).unwrap();
        assert!(v.first_fragment);
        assert_eq!(v.payload, b"first");
        // later fragment: offset 1448/8
        let p = ipv6(44, &[17, 0, 0x05, 0xa8, 0, 0, 0, 9], b"rest");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
        // atomic fragment (offset 0, M=0) is a whole datagram
        let p = ipv6(44, &[17, 0, 0, 0, 0, 0, 0, 9], &u);
        assert!(!parse(&p).unwrap().first_fragment);
    }

    #[test]
    fn ipv6_extension_chain_is_bounded() {
        let mut ext = Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = ipv6(60, &ext, &udp(1, 2, b""));
        assert!(matches!(parse(&p), Err(PacketError::Malformed(_))));
        let p = ipv6(59, &[], &[]);
        assert_eq!(parse(&p), Err(PacketError::NotUdpTcp(59)));
    }

    #[test]
    fn ipv6_tcp() {
        let p = ipv6(6, &[], &tcp_data(53, 40000, 7, 0x11, b"zz"));
        let v = parse(&p).unwrap();
        assert_eq!((v.tcp_seq, v.tcp_flags, v.payload), (7, 0x11, &b"zz"[..]));
    }

    /// What DNS counts and decodes comes from the one parser's flags: a cut
    /// transport header still has its ports for drops but is a defect for
    /// DNS; a non-first fragment has no ports; padding is not in the segment;
    /// TCP's payload starts at its data offset.
    #[test]
    fn one_parser_carries_what_dns_needs() {
        let p = ipv4_frag(17, 0, &[], &udp(5353, 53, b"hello"));
        let cut = read(&p[..25]).expect("addresses are there");
        assert_eq!((cut.ports(), cut.payload_off), ((5353, 53), None));
        assert_eq!(cut.defect, Some(PacketError::Truncated(24)));
        assert_eq!(parse_lax(&p[..25], &[]).expect("lax").outer.t.dport, 53);

        let p = ipv4_frag(17, 0x2000 | 0xb9, &[], b"middle");
        let tail = read(&p).expect("addresses");
        assert_eq!((tail.frag_offset, tail.more_fragments, tail.ports()), (0xb9, true, (0, 0)));
        assert_eq!(tail.defect, Some(PacketError::Fragment));
        let p = ipv4_frag(17, 0x2000, &[], &udp(1, 53, b"first"));
        let first = read(&p).expect("first fragment");
        assert_eq!((first.frag_offset, first.more_fragments, first.defect), (0, true, None));
        let p = ipv6(44, &[17, 0, 0x05, 0xa9, 0, 0, 0, 9], b"rest");
        let tail6 = read(&p).expect("addresses");
        assert_eq!((tail6.frag_offset, tail6.more_fragments, tail6.id), (0x05a8 >> 3, true, 9));

        let mut padded = ipv4_frag(17, 0, &[], &udp(1, 53, b"abc"));
        padded.extend_from_slice(&[0xee; 10]);
        let v = read(&padded).expect("parses");
        assert_eq!((v.segment.len(), v.payload, v.payload_off), (11, &b"abc"[..], Some(8)));

        let p = ipv4_frag(6, 0, &[], &tcp_data(40000, 53, 9, 0x18, b"\x00\x01z"));
        let t = read(&p).expect("parses");
        assert_eq!((t.payload_off, t.payload, t.l3l4().seq, t.l3l4().tcp_len), (Some(24), &b"\x00\x01z"[..], 9, 3));

        let p = ipv4_frag(1, 0, &[], &[8, 0, 0, 0, 0, 7, 0, 1]);
        let icmp = read(&p).expect("parses");
        let l = icmp.l3l4();
        assert_eq!((l.icmp, l.seq, icmp.defect), (0x0800, 0x0007_0001, Some(PacketError::NotUdpTcp(1))));
    }

    /// Where both views have a packet, they read the same fields from it.
    #[test]
    fn lax_and_dns_views_agree() {
        for p in [
            ipv4_frag(17, 0, &[1, 1, 1, 0], &udp(5353, 53, b"q")),
            ipv4_frag(6, 0x4000, &[], &tcp_data(40000, 53, 0xdead_beef, 0x18, b"xy")),
            ipv6(0, &[17, 0, 0, 0, 0, 0, 0, 0], &udp(1234, 53, b"q")),
            ipv6(6, &[], &tcp_data(53, 40000, 7, 0x11, b"zz")),
        ] {
            let v = parse(&p).expect("whole");
            let h = parse_lax(&p, &[]).expect("lax").outer;
            assert_eq!(
                (h.t.src, h.t.dst, h.t.sport, h.t.dport, h.tcp_flags),
                (v.src, v.dst, v.sport, v.dport, v.tcp_flags)
            );
            assert_eq!(
                u32::try_from(v.payload_len).ok().filter(|_| v.transport == Transport::Tcp).unwrap_or(0),
                h.tcp_len
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(Rng::SEED);
        let mut buf = [0u8; 96];
        for i in 0..10_000 {
            for b in &mut buf {
                *b = rng.next() as u8;
            }
            // Bias toward plausible headers so the deeper paths run too.
            buf[0] = if i % 2 == 0 { 0x45 } else { 0x60 };
            let n = (rng.0 as usize) % buf.len();
            let _ = parse(&buf[..n]);
        }
    }

    /// The IPv4/UDP fast path reads every packet it takes exactly as the
    /// general parser does, and leaves the rest to it: valid packets with
    /// one byte of the IP/UDP headers changed (flags, length fields, IHL,
    /// protocol), cut anywhere, with trailing padding.
    #[test]
    fn fast_path_is_the_general_parse() {
        let mut rng = Rng(Rng::SEED ^ 0x0f57);
        let bases = [
            ipv4_frag(17, 0x4000, &[], &udp(40000, 53, &[7u8; 40])),
            ipv4_frag(17, 0, &[], &udp(53, 5353, b"")),
            ipv4_frag(17, 0, &[], &udp(1, 2, &[1u8; 3])),
        ];
        let mut fast = 0;
        for i in 0..30_000u32 {
            let x = rng.next();
            let mut p = bases[i as usize % bases.len()].clone();
            if i % 4 != 0 {
                let at = (x as usize >> 8) % 28;
                p[at] = (x >> 40) as u8;
            }
            if i % 5 == 0 {
                p.extend_from_slice(&[0xee; 6]);
            }
            let cut = if i % 3 == 0 { (x >> 16) as usize % (p.len() + 1) } else { p.len() };
            let p = &p[..cut];
            let general = parse_general(p);
            if let Some(v) = parse_v4_udp(p) {
                fast += 1;
                assert_eq!(Ok(v), general, "{p:02x?}");
            }
            assert_eq!(parse(p), general, "{p:02x?}");
        }
        assert!(fast > 10_000, "the fast path took only {fast}");
        // The committed fuzz seeds: each is packets behind two length bytes.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/packet_parse");
        for e in std::fs::read_dir(&dir).expect("fuzz/seeds/packet_parse") {
            let data = std::fs::read(e.expect("seed").path()).expect("seed bytes");
            assert_eq!(parse(&data), parse_general(&data));
            let mut rest = &data[..];
            while let [a, b, tail @ ..] = rest {
                let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
                let (pkt, next) = tail.split_at(n);
                assert_eq!(parse(pkt), parse_general(pkt), "{pkt:02x?}");
                rest = next;
            }
        }
    }
}
