//! Link layers of foreign captures (tcpdump, tshark, dumpcap): where the IP
//! header starts in a frame, so every source hands the decoder L3 packets.

/// The link types ktrace reads (`LINKTYPE_*` from the tcpdump registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: 4-byte address family in the writer's byte order.
    pub const NULL: Self = Self(0);
    /// Ethernet II, with optional 802.1Q / 802.1ad tags.
    pub const ETHERNET: Self = Self(1);
    /// Raw IP as written by some old libpcaps (`DLT_RAW` was 12 or 14).
    pub const RAW_OLD_12: Self = Self(12);
    /// Raw IP as written by some old libpcaps.
    pub const RAW_OLD_14: Self = Self(14);
    /// Raw IP, version from the first nibble (what ktrace writes).
    pub const RAW: Self = Self(101);
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: Self = Self(108);
    /// Linux cooked capture v1 (`tcpdump -i any`), 16-byte header.
    pub const LINUX_SLL: Self = Self(113);
    /// Raw IPv4.
    pub const IPV4: Self = Self(228);
    /// Raw IPv6.
    pub const IPV6: Self = Self(229);
    /// Linux cooked capture v2, 20-byte header.
    pub const LINUX_SLL2: Self = Self(276);
}

/// Where the network layer starts in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L3 {
    /// IPv4 or IPv6 from this offset.
    Ip(usize),
    /// A frame of a supported link type that carries no IP (ARP, LLDP…).
    NotIp,
    /// A link type ktrace does not read.
    UnsupportedLink,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ_OLD: u16 = 0x9100;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn ethertype_at(d: &[u8], at: usize, l3: usize) -> L3 {
    match be16(d, at) {
        Some(ETH_P_IP | ETH_P_IPV6) if l3 <= d.len() => L3::Ip(l3),
        _ => L3::NotIp,
    }
}

/// Only frames whose first nibble says IPv4/IPv6 count as IP on raw links.
fn raw_ip(d: &[u8], at: usize) -> L3 {
    match d.get(at).map(|b| b >> 4) {
        Some(4 | 6) => L3::Ip(at),
        _ => L3::NotIp,
    }
}

/// Finds the IP header of `frame` captured on `link`.
pub(crate) fn l3_offset(link: LinkType, frame: &[u8]) -> L3 {
    match link {
        LinkType::ETHERNET => {
            let mut at = 12;
            // At most two tags (QinQ); a third would be a malformed frame.
            for _ in 0..3 {
                match be16(frame, at) {
                    Some(ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD) => at += 4,
                    _ => break,
                }
            }
            ethertype_at(frame, at, at + 2)
        }
        LinkType::LINUX_SLL => ethertype_at(frame, 14, 16),
        LinkType::LINUX_SLL2 => ethertype_at(frame, 0, 20),
        LinkType::RAW | LinkType::RAW_OLD_12 | LinkType::RAW_OLD_14 | LinkType::IPV4 | LinkType::IPV6 => {
            raw_ip(frame, 0)
        }
        LinkType::NULL | LinkType::LOOP => {
            let Some(b) = frame.get(..4) else {
                return L3::NotIp;
            };
            let b = [b[0], b[1], b[2], b[3]];
            // NULL is in the writer's byte order, which the file does not
            // record; the families are small numbers, so either order is unambiguous.
            let fams = if link == LinkType::LOOP {
                [u32::from_be_bytes(b), u32::from_be_bytes(b)]
            } else {
                [u32::from_le_bytes(b), u32::from_be_bytes(b)]
            };
            if fams.iter().any(|f| matches!(f, 2 | 24 | 28 | 30)) { raw_ip(frame, 4) } else { L3::NotIp }
        }
        _ => L3::UnsupportedLink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x88, 0xa8, 0, 6, 0x08, 0x00, 0x45]);
        assert_eq!(l3_offset(LinkType::ETHERNET, &f), L3::Ip(22));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(l3_offset(LinkType::ETHERNET, &arp), L3::NotIp);
        assert_eq!(l3_offset(LinkType::ETHERNET, &[]), L3::NotIp);
    }

    #[test]
    fn cooked_null_raw() {
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd, 0x60]);
        assert_eq!(l3_offset(LinkType::LINUX_SLL, &sll), L3::Ip(16));
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        assert_eq!(l3_offset(LinkType::LINUX_SLL2, &sll2), L3::Ip(20));
        assert_eq!(l3_offset(LinkType::LINUX_SLL2, &sll2[..19]), L3::NotIp);
        assert_eq!(l3_offset(LinkType::NULL, &[2, 0, 0, 0, 0x45]), L3::Ip(4));
        assert_eq!(l3_offset(LinkType::NULL, &[0, 0, 0, 30, 0x60]), L3::Ip(4));
        assert_eq!(l3_offset(LinkType::NULL, &[7, 0, 0, 0, 0x45]), L3::NotIp);
        assert_eq!(l3_offset(LinkType::RAW, &[0x45]), L3::Ip(0));
        assert_eq!(l3_offset(LinkType::RAW, &[0x15]), L3::NotIp);
        assert_eq!(l3_offset(LinkType(147), &[0x45]), L3::UnsupportedLink);
    }
}
