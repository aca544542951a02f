//! IPv4/IPv6 + UDP/TCP header parsing of a packet that starts at its IP header.
//!
//! This is what the kernel programs capture (`skb->data` at the network
//! header) and what `LINKTYPE_RAW` captures carry. The parser never allocates
//! and never panics: every read is bounds-checked and the IPv6
//! extension-header walk is bounded.

use std::{
    hash::{BuildHasher, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use thiserror::Error;

use crate::event::Transport;

/// Why a packet could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
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

#[inline]
fn be16(d: &[u8], at: usize) -> Result<u16, PacketError> {
    match d.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(PacketError::Truncated(at)),
    }
}

#[inline]
fn be32(d: &[u8], at: usize) -> Result<u32, PacketError> {
    match d.get(at..at + 4) {
        Some(&[b0, b1, b2, b3]) => Ok(u32::from_be_bytes([b0, b1, b2, b3])),
        _ => Err(PacketError::Truncated(at)),
    }
}

#[inline]
fn byte(d: &[u8], at: usize) -> Result<u8, PacketError> {
    d.get(at).copied().ok_or(PacketError::Truncated(at))
}

#[inline]
fn arr16(d: &[u8], at: usize) -> Result<[u8; 16], PacketError> {
    d.get(at..at + 16).and_then(|s| <[u8; 16]>::try_from(s).ok()).ok_or(PacketError::Truncated(at))
}

/// The network layer: addresses, where the transport header starts and how
/// long the headers say the transport segment is.
struct L3 {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ip_id: u16,
    /// Offset of the transport header in `data`.
    l4_off: usize,
    /// Transport segment length the IP header claims.
    l4_claim: usize,
    first_fragment: bool,
}

/// Parses `data` (IP header first).
///
/// Errors: [`PacketError::Truncated`] when a header is cut, with the offset
/// of the first missing field; [`PacketError::Fragment`] for non-first
/// fragments; [`PacketError::NotUdpTcp`] for other protocols.
pub fn parse(data: &[u8]) -> Result<L4View<'_>, PacketError> {
    let v = byte(data, 0)? >> 4;
    let l3 = match v {
        4 => ipv4(data)?,
        6 => ipv6(data)?,
        _ => return Err(PacketError::BadVersion(v)),
    };
    // The captured segment, clipped to what IP claims (drops link padding).
    let l4_end = data.len().min(l3.l4_off.saturating_add(l3.l4_claim));
    let seg = data.get(l3.l4_off..l4_end).unwrap_or(&[]);
    let off = l3.l4_off;
    match l3.proto {
        PROTO_UDP => {
            let sport = be16(seg, 0).map_err(|_| PacketError::Truncated(off))?;
            let dport = be16(seg, 2).map_err(|_| PacketError::Truncated(off + 2))?;
            let ulen = be16(seg, 4).map_err(|_| PacketError::Truncated(off + 4))? as usize;
            if seg.len() < 8 {
                return Err(PacketError::Truncated(off + seg.len()));
            }
            let payload_len = if ulen == 0 {
                // Jumbograms and UDP GSO leave the length 0: trust IP.
                l3.l4_claim.saturating_sub(8)
            } else if ulen < 8 {
                return Err(PacketError::Malformed(off + 4));
            } else {
                // A first fragment claims the whole datagram here, more than
                // IP carries: payload_len > payload.len() marks it partial.
                ulen - 8
            };
            let body = seg.get(8..).unwrap_or(&[]);
            let payload = body.get(..payload_len.min(body.len())).unwrap_or(body);
            Ok(L4View {
                src: l3.src,
                dst: l3.dst,
                sport,
                dport,
                transport: Transport::Udp,
                ip_id: l3.ip_id,
                tcp_seq: 0,
                tcp_flags: 0,
                payload,
                payload_len,
                first_fragment: l3.first_fragment,
            })
        }
        PROTO_TCP => {
            let sport = be16(seg, 0).map_err(|_| PacketError::Truncated(off))?;
            let dport = be16(seg, 2).map_err(|_| PacketError::Truncated(off + 2))?;
            let seq = be32(seg, 4).map_err(|_| PacketError::Truncated(off + 4))?;
            let doff_byte = byte(seg, 12).map_err(|_| PacketError::Truncated(off + 12))?;
            let flags = byte(seg, 13).map_err(|_| PacketError::Truncated(off + 13))?;
            let doff = usize::from(doff_byte >> 4) * 4;
            if doff < 20 {
                return Err(PacketError::Malformed(off + 12));
            }
            if seg.len() < doff {
                return Err(PacketError::Truncated(off + seg.len()));
            }
            if l3.l4_claim < doff {
                return Err(PacketError::Malformed(off + 12));
            }
            Ok(L4View {
                src: l3.src,
                dst: l3.dst,
                sport,
                dport,
                transport: Transport::Tcp,
                ip_id: l3.ip_id,
                tcp_seq: seq,
                tcp_flags: flags,
                payload: seg.get(doff..).unwrap_or(&[]),
                payload_len: l3.l4_claim - doff,
                first_fragment: l3.first_fragment,
            })
        }
        p => Err(PacketError::NotUdpTcp(p)),
    }
}

fn ipv4(data: &[u8]) -> Result<L3, PacketError> {
    if data.len() < 20 {
        return Err(PacketError::Truncated(data.len()));
    }
    let ihl = usize::from(byte(data, 0)? & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::Malformed(0));
    }
    if data.len() < ihl {
        return Err(PacketError::Truncated(data.len()));
    }
    let total = usize::from(be16(data, 2)?);
    let total = if total == 0 {
        // TSO/BIG TCP super-packets seen before segmentation carry 0.
        data.len()
    } else if total < ihl {
        return Err(PacketError::Malformed(2));
    } else {
        total
    };
    let ip_id = be16(data, 4)?;
    let frag = be16(data, 6)?;
    if frag & 0x1fff != 0 {
        return Err(PacketError::Fragment);
    }
    let s: [u8; 4] = data.get(12..16).and_then(|s| s.try_into().ok()).ok_or(PacketError::Truncated(12))?;
    let d: [u8; 4] = data.get(16..20).and_then(|s| s.try_into().ok()).ok_or(PacketError::Truncated(16))?;
    Ok(L3 {
        src: IpAddr::V4(Ipv4Addr::from(s)),
        dst: IpAddr::V4(Ipv4Addr::from(d)),
        proto: byte(data, 9)?,
        ip_id,
        l4_off: ihl,
        l4_claim: total - ihl,
        first_fragment: frag & 0x2000 != 0,
    })
}

fn ipv6(data: &[u8]) -> Result<L3, PacketError> {
    if data.len() < 40 {
        return Err(PacketError::Truncated(data.len()));
    }
    let plen = usize::from(be16(data, 4)?);
    // 0 means a jumbogram or a BIG TCP super-packet: use what we have.
    let ip_end = if plen == 0 { data.len() } else { 40 + plen };
    let mut next = byte(data, 6)?;
    let src = IpAddr::V6(Ipv6Addr::from(arr16(data, 8)?));
    let dst = IpAddr::V6(Ipv6Addr::from(arr16(data, 24)?));
    let mut off = 40usize;
    let mut first_fragment = false;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match next {
            // hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => (usize::from(byte(data, off + 1)?) + 1) * 8,
            // fragment: fixed 8 bytes.
            44 => {
                let fo = be16(data, off + 2)?;
                if fo & 0xfff8 != 0 {
                    return Err(PacketError::Fragment);
                }
                first_fragment = fo & 1 != 0;
                8
            }
            // authentication header: (len + 2) * 4 bytes.
            51 => (usize::from(byte(data, off + 1)?) + 2) * 4,
            _ => {
                if ip_end < off {
                    return Err(PacketError::Malformed(4));
                }
                return Ok(L3 { src, dst, proto: next, ip_id: 0, l4_off: off, l4_claim: ip_end - off, first_fragment });
            }
        };
        next = byte(data, off)?;
        off += len;
        if data.len() < off {
            return Err(PacketError::Truncated(data.len()));
        }
    }
    Err(PacketError::Malformed(off))
}

// ---------------------------------------------------------------------------
// The lax parser: drops, fabric correlation and the agent's attribution.

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

/// Parses IP + transport header fields; returns them and the UDP payload.
fn parse_l3l4(d: &[u8]) -> Option<(L3L4, &[u8])> {
    let (src, dst, proto, id, l4, nonfirst, claim) = match d.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = d.get(..20)?.try_into().ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // Total length 0 (TSO super-packets): trust the capture.
            let end = if total < ihl { d.len() } else { total.min(d.len()) };
            let frag = u16::from_be_bytes([h[6], h[7]]);
            (
                IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                h[9],
                u16::from_be_bytes([h[4], h[5]]),
                d.get(ihl..end).unwrap_or(&[]),
                frag & 0x1fff != 0,
                total.saturating_sub(ihl),
            )
        }
        6 => {
            let h: &[u8; 40] = d.get(..40)?.try_into().ok()?;
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut t = [0u8; 16];
            t.copy_from_slice(&h[24..40]);
            let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let end = if plen == 0 { d.len() } else { (40 + plen).min(d.len()) };
            let mut next = h[6];
            let mut off = 40usize;
            let mut id = 0u16;
            let mut nonfirst = false;
            // Bounded walk: real stacks send one or two extension headers.
            for _ in 0..8 {
                let len = match next {
                    0 | 43 | 60 => (usize::from(*d.get(off + 1)?) + 1) * 8,
                    44 => {
                        nonfirst = get16(d, off + 2)? & 0xfff8 != 0;
                        id = get16(d, off + 6)?;
                        8
                    }
                    51 => (usize::from(*d.get(off + 1)?) + 2) * 4,
                    _ => break,
                };
                next = *d.get(off)?;
                off += len;
            }
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(t)),
                next,
                id,
                d.get(off..end).unwrap_or(&[]),
                nonfirst,
                (40 + plen).saturating_sub(off),
            )
        }
        _ => return None,
    };
    let mut l =
        L3L4 { t: Tuple { src, dst, proto, sport: 0, dport: 0 }, id, seq: 0, tcp_flags: 0, icmp: 0, tcp_len: 0 };
    let mut payload: &[u8] = &[];
    if !nonfirst {
        match proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                if let (Some(sp), Some(dp)) = (get16(l4, 0), get16(l4, 2)) {
                    l.t.sport = sp;
                    l.t.dport = dp;
                }
                if proto == PROTO_TCP {
                    l.seq = get32(l4, 4).unwrap_or(0);
                    l.tcp_flags = l4.get(13).copied().unwrap_or(0);
                    if let Some(doff) = l4.get(12).map(|b| usize::from(b >> 4) * 4) {
                        l.tcp_len = claim.saturating_sub(doff) as u32;
                    }
                } else if proto == PROTO_UDP {
                    payload = l4.get(8..).unwrap_or(&[]);
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                l.icmp = get16(l4, 0).unwrap_or(0);
                l.seq = get32(l4, 4).unwrap_or(0);
            }
            _ => {}
        }
    }
    Some((l, payload))
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
    parse_l3l4(eth.get(off..)?).map(|(l, _)| l)
}

/// The lax parser: IP and transport header fields of a packet that starts
/// at its IP header, and of the packet inside it when it is VXLAN to one of
/// `vxlan_ports`. Unlike [`parse`] it accepts any protocol (addresses only)
/// and cut headers (fields missing are 0): kernel drops carry at most 128
/// bytes, so a VXLAN packet's inner TCP options are often cut. `None` only
/// when not even the IP header is there.
#[must_use]
pub fn parse_lax(data: &[u8], vxlan_ports: &[u16]) -> Option<Headers> {
    let (outer, payload) = parse_l3l4(data)?;
    let inner =
        if outer.t.proto == PROTO_UDP && vxlan_ports.contains(&outer.t.dport) { vxlan_inner(payload) } else { None };
    Some(Headers { outer, inner })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an IPv4 header (no options unless `opts`) + `l4`.
    pub(crate) fn ipv4_pkt(proto: u8, frag: u16, opts: &[u8], l4: &[u8]) -> Vec<u8> {
        let ihl = 20 + opts.len();
        let total = (ihl + l4.len()) as u16;
        let mut p = vec![0x40 | (ihl / 4) as u8, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&0x1234u16.to_be_bytes());
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(opts);
        p.extend_from_slice(l4);
        p
    }

    pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    pub(crate) fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        // data offset 6 words: one 4-byte option (NOP padding) to exercise doff.
        t.extend_from_slice(&[0x60, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(&[1, 1, 1, 1]);
        t.extend_from_slice(payload);
        t
    }

    fn ipv6_pkt(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn ipv4_udp() {
        let p = ipv4_pkt(17, 0, &[], &udp(5353, 53, b"hello"));
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
        let mut p = ipv4_pkt(17, 0, &[1, 1, 1, 0], &udp(1, 53, b"abc"));
        // Ethernet minimum-frame padding after the IP datagram is not payload.
        p.extend_from_slice(&[0xee; 10]);
        let v = parse(&p).unwrap();
        assert_eq!(v.payload, b"abc");
    }

    #[test]
    fn ipv4_snapped_payload() {
        let p = ipv4_pkt(17, 0, &[], &udp(1, 53, &[7u8; 100]));
        let v = parse(&p[..60]).unwrap();
        assert_eq!(v.payload.len(), 60 - 28);
        assert_eq!(v.payload_len, 100);
    }

    #[test]
    fn ipv4_fragments() {
        let p = ipv4_pkt(17, 0x2000, &[], &udp(1, 53, b"first"));
        let v = parse(&p).unwrap();
        assert!(v.first_fragment);
        let p = ipv4_pkt(17, 0x2000 | 0xb9, &[], b"middle");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
        let p = ipv4_pkt(17, 0xb9, &[], b"last");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
    }

    #[test]
    fn ipv4_tcp() {
        let p = ipv4_pkt(6, 0x4000, &[], &tcp(40000, 53, 0xdead_beef, 0x18, b"xy"));
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
        let p = ipv4_pkt(1, 0, &[], &[8, 0, 0, 0]);
        assert_eq!(parse(&p), Err(PacketError::NotUdpTcp(1)));
        let mut p = ipv4_pkt(17, 0, &[], &udp(1, 2, b""));
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(PacketError::Malformed(0)));
        let mut p = ipv4_pkt(17, 0, &[], &udp(1, 2, b""));
        p[25] = 3; // UDP length 3 < 8
        assert_eq!(parse(&p), Err(PacketError::Malformed(24)));
        let mut p = ipv4_pkt(6, 0, &[], &tcp(1, 2, 3, 0, b""));
        p[32] = 0x40; // data offset 4 words
        assert_eq!(parse(&p), Err(PacketError::Malformed(32)));
        // Cut everywhere inside the headers: always an error, never a panic.
        let p = ipv4_pkt(6, 0, &[], &tcp(1, 2, 3, 0, b""));
        for n in 0..p.len() {
            assert!(matches!(parse(&p[..n]), Err(PacketError::Truncated(_))), "{n}");
        }
    }

    #[test]
    fn ipv6_udp_plain_and_with_extensions() {
        let u = udp(1234, 53, b"q");
        let v6 = ipv6_pkt(17, &[], &u);
        let v = parse(&v6).unwrap();
        assert_eq!(v.src, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(v.payload, b"q");
        assert_eq!(v.ip_id, 0);

        // hop-by-hop (8) → dest opts (16) → routing (8) → UDP
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[43, 1, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        let p = ipv6_pkt(0, &ext, &u);
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
        let p = ipv6_pkt(44, &[17, 0, 0, 1, 0, 0, 0, 9], &u);
        let v = parse(&p).unwrap();
        assert!(v.first_fragment);
        assert_eq!(v.payload, b"first");
        // later fragment: offset 1448/8
        let p = ipv6_pkt(44, &[17, 0, 0x05, 0xa8, 0, 0, 0, 9], b"rest");
        assert_eq!(parse(&p), Err(PacketError::Fragment));
        // atomic fragment (offset 0, M=0) is a whole datagram
        let p = ipv6_pkt(44, &[17, 0, 0, 0, 0, 0, 0, 9], &u);
        assert!(!parse(&p).unwrap().first_fragment);
    }

    #[test]
    fn ipv6_extension_chain_is_bounded() {
        let mut ext = Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = ipv6_pkt(60, &ext, &udp(1, 2, b""));
        assert!(matches!(parse(&p), Err(PacketError::Malformed(_))));
        let p = ipv6_pkt(59, &[], &[]);
        assert_eq!(parse(&p), Err(PacketError::NotUdpTcp(59)));
    }

    #[test]
    fn ipv6_tcp() {
        let p = ipv6_pkt(6, &[], &tcp(53, 40000, 7, 0x11, b"zz"));
        let v = parse(&p).unwrap();
        assert_eq!((v.tcp_seq, v.tcp_flags, v.payload), (7, 0x11, &b"zz"[..]));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 96];
        for i in 0..10_000 {
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Bias toward plausible headers so the deeper paths run too.
            buf[0] = if i % 2 == 0 { 0x45 } else { 0x60 };
            let n = (x as usize) % buf.len();
            let _ = parse(&buf[..n]);
        }
    }
}
