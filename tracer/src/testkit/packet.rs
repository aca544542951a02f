//! IP packet builders: packets as the kernel programs capture them
//! (starting at the IP header).

use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 header checksum of `h` (its checksum field zero).
#[must_use]
pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, DF, TTL 64, id 0, header checksum filled in) carrying `l4`.
#[must_use]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_id(src, dst, proto, 0, l4)
}

/// [`ipv4`] with the IP id `id`, as a sender's kernel stamps it (what
/// fabric correlation tells packets apart by).
#[must_use]
pub fn ipv4_id(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = ipv4_checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// A UDP header (checksum 0: none, as IPv4 allows) and its payload.
#[must_use]
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An IPv4 packet 10.0.0.1 → 10.0.0.2 (id 0x1234, TTL 64, checksum left 0)
/// with the flags and fragment offset `frag` and the IP options `opts`,
/// carrying `l4`: the header shapes the parser's tests need.
#[must_use]
pub fn ipv4_frag(proto: u8, frag: u16, opts: &[u8], l4: &[u8]) -> Vec<u8> {
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

/// An IPv6 packet `2001:db8::1` → `2001:db8::2` (hop limit 64) whose first next
/// header is `next`, carrying the extension headers `ext` and then `l4`.
#[must_use]
pub fn ipv6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    p.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets());
    p.extend_from_slice(ext);
    p.extend_from_slice(l4);
    p
}

/// An IPv4/UDP packet (header checksum filled in, UDP checksum 0 as allowed).
#[must_use]
pub fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(src, dst, 17, &udp(sport, dport, payload))
}

/// A TCP header (no options, window 65535, checksum 0) with `flags` (`0x02` SYN, `0x04` RST, …).
#[must_use]
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// A TCP segment with data offset 6 (one 4-byte option of NOPs, so a
/// parser must honour the offset), window 65535, checksum 0, and `payload`.
#[must_use]
pub fn tcp_data(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(24 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x60, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(&[1, 1, 1, 1]);
    t.extend_from_slice(payload);
    t
}

/// `inner` (an IP packet) in VXLAN between two nodes: outer IPv4 (id
/// `outer_id`) / UDP `sport` → 4789, VXLAN header (VNI 1), inner Ethernet
/// (fixed MACs, IPv4), as a node's underlay interface carries it.
#[must_use]
pub fn vxlan(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, outer_id: u16, inner: &[u8]) -> Vec<u8> {
    let mut pl = Vec::with_capacity(22 + inner.len());
    pl.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    pl.extend_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x1e, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x14, 0x08, 0x00]);
    pl.extend_from_slice(inner);
    ipv4_id(src, dst, 17, outer_id, &udp(sport, 4789, &pl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode::packet::parse, event::Transport};

    #[test]
    fn builds_what_the_parser_reads() {
        let p = ipv4_udp(Ipv4Addr::new(10, 0, 0, 1), 40_000, Ipv4Addr::new(10, 0, 0, 2), 53, b"hello");
        assert_eq!(ipv4_checksum(&p[..20]), 0, "a valid header sums to zero");
        let parsed = parse(&p).expect("parses");
        assert_eq!((parsed.sport, parsed.dport, parsed.transport), (40_000, 53, Transport::Udp));
        assert_eq!(parsed.payload, b"hello");
    }
}
