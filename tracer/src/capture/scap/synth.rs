//! Synthesised IP + UDP/TCP headers around a payload seen at a socket, so
//! that [`crate::decode`] parses scap-derived messages exactly like packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::event::Endpoint;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// TCP flags used here.
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_PSH_ACK: u8 = 0x18;

/// Both ends as IPv4 when they are IPv4 or IPv4-mapped IPv6 (an unspecified
/// address goes along with a v4 peer), so v4 traffic seen through a dual-stack
/// socket pairs with plain v4 traffic.
fn as_v4(a: IpAddr, b: IpAddr) -> Option<(Ipv4Addr, Ipv4Addr)> {
    fn one(x: IpAddr) -> (Option<Ipv4Addr>, bool) {
        match x {
            IpAddr::V4(v) => (Some(v), false),
            IpAddr::V6(v) if v.is_unspecified() => (Some(Ipv4Addr::UNSPECIFIED), true),
            IpAddr::V6(v) => (v.to_ipv4_mapped(), false),
        }
    }
    let ((x, xu), (y, yu)) = (one(a), one(b));
    if xu && yu {
        return None;
    }
    Some((x?, y?))
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A packet from the IP header on: `captured` is what the capture kept of a
/// `full_len`-byte payload. `tcp` is `(seq, flags)` for TCP, `None` for UDP.
/// Returns the bytes and the length on the wire; `None` when the payload
/// does not fit in one IP packet.
pub(super) fn packet(
    src: Endpoint,
    dst: Endpoint,
    tcp: Option<(u32, u8)>,
    captured: &[u8],
    full_len: usize,
    ip_id: u16,
) -> Option<(Vec<u8>, u32)> {
    let captured = captured.get(..full_len.min(captured.len())).unwrap_or(captured);
    let l4_len = if tcp.is_some() { 20 } else { 8 };
    let seg_len = l4_len + full_len;
    let proto = if tcp.is_some() { PROTO_TCP } else { PROTO_UDP };
    let mut p = Vec::with_capacity(40 + l4_len + captured.len());
    let wire;
    if let Some((s4, d4)) = as_v4(src.ip, dst.ip) {
        let total = u16::try_from(20 + seg_len).ok()?;
        wire = u32::from(total);
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&s4.octets());
        p.extend_from_slice(&d4.octets());
        let c = ipv4_checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let plen = u16::try_from(seg_len).ok()?;
        wire = 40 + u32::from(plen);
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&plen.to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&v6(src.ip).octets());
        p.extend_from_slice(&v6(dst.ip).octets());
    }
    p.extend_from_slice(&src.port.to_be_bytes());
    p.extend_from_slice(&dst.port.to_be_bytes());
    match tcp {
        None => {
            let ulen = u16::try_from(seg_len).ok()?;
            p.extend_from_slice(&ulen.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        Some((seq, flags)) => {
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    p.extend_from_slice(captured);
    Some((p, wire))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::packet;

    fn ep(s: &str) -> Endpoint {
        let sa: std::net::SocketAddr = s.parse().unwrap();
        Endpoint { ip: sa.ip(), port: sa.port() }
    }

    #[test]
    fn udp_v4_and_mapped_parse_back() {
        let (p, wire) = packet(ep("[::ffff:10.0.0.1]:5000"), ep("10.96.0.10:53"), None, b"abcd", 4, 7).unwrap();
        assert_eq!(wire, 20 + 8 + 4);
        let v = packet::parse(&p).unwrap();
        assert_eq!(v.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((v.sport, v.dport), (5000, 53));
        assert_eq!(v.payload, b"abcd");
        assert_eq!(ipv4_checksum(&p[..20]), 0);
    }

    #[test]
    fn truncated_payload_is_partial_and_tcp_v6_parses() {
        let (p, wire) = packet(ep("[2001:db8::1]:40000"), ep("[2001:db8::2]:53"), None, b"ab", 10, 0).unwrap();
        assert_eq!(wire, 40 + 8 + 10);
        let v = packet::parse(&p).unwrap();
        assert_eq!((v.payload.len(), v.payload_len), (2, 10));
        let (p, _) =
            packet(ep("[2001:db8::1]:40000"), ep("[2001:db8::2]:53"), Some((9, TCP_PSH_ACK)), b"xyz", 3, 0).unwrap();
        let v = packet::parse(&p).unwrap();
        assert_eq!((v.tcp_seq, v.tcp_flags, v.payload), (9, TCP_PSH_ACK, &b"xyz"[..]));
        assert!(packet(ep("1.1.1.1:1"), ep("2.2.2.2:53"), None, b"", 70_000, 0).is_none());
    }
}
