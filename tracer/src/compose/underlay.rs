//! `--underlay auto|none|DEV…`: the devices that carry this node's overlay
//! traffic, fingerprinted with tc so `ktrace drops -r a -r b` can tell a
//! fabric that loses packets from a node that drops them.
//!
//! `auto` is what a node's own configuration says: the lower devices of its
//! VXLAN, Geneve and IPIP links (`ip link add … type vxlan … dev eth0`) and
//! the device of its IPv4 default route (where a tunnel without `dev`, or
//! the node's own traffic, goes out). Read from the current network
//! namespace with one rtnetlink dump: no `ip` binary needed in the image.

use std::{io, os::fd::AsRawFd as _};

use anyhow::Context as _;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket};

/// Devices named by `--underlay` values; `auto` expanded, `none` alone means none.
///
/// # Errors
/// `none` combined with other values, or the network namespace's links unreadable.
pub fn resolve(values: &[String]) -> anyhow::Result<Vec<String>> {
    if values.iter().any(|v| v == "none") {
        anyhow::ensure!(values.len() == 1, "--underlay none cannot be combined with devices or auto");
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let devs = if v == "auto" { auto_devices()? } else { vec![v.clone()] };
        for d in devs {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Lower devices of tunnel links, then the default-route device (deduplicated).
///
/// # Errors
/// The rtnetlink dump failed (no `/proc/net/route` is not an error).
pub fn auto_devices() -> anyhow::Result<Vec<String>> {
    let links = dump_links().context("--underlay auto: listing this network namespace's links")?;
    let mut out: Vec<String> = Vec::new();
    for l in &links {
        if !matches!(l.kind.as_deref(), Some("vxlan" | "geneve" | "ipip")) {
            continue;
        }
        if let Some(lower) = l.lower.filter(|i| *i != 0)
            && let Some(dev) = links.iter().find(|x| x.index == lower)
            && !out.contains(&dev.name)
        {
            out.push(dev.name.clone());
        }
    }
    if let Some(dev) = std::fs::read_to_string("/proc/net/route").ok().as_deref().and_then(parse_default_route)
        && !out.contains(&dev)
    {
        out.push(dev);
    }
    Ok(out)
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
#[must_use]
pub fn parse_default_route(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
    })
}

/// The interface of the IPv4 default route of this network namespace.
///
/// # Errors
/// `/proc/net/route` unreadable or without a default route.
pub fn default_route_dev() -> anyhow::Result<String> {
    let t = std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
    parse_default_route(&t).context("--underlay auto: no IPv4 default route; name the device")
}

/// A link as rtnetlink describes it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Link {
    index: u32,
    name: String,
    kind: Option<String>,
    /// The device a tunnel sends its packets through (`dev` of `ip link add`).
    lower: Option<u32>,
}

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
/// `IFLA_VXLAN_LINK`.
const VXLAN_LINK: u16 = 3;
/// `IFLA_IPTUN_LINK`.
const IPTUN_LINK: u16 = 1;
const NLMSG_HDR: usize = 16;
const IFINFO: usize = 16;

/// One `RTM_GETLINK` dump of the current network namespace.
fn dump_links() -> io::Result<Vec<Link>> {
    let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
    let raw = fd.as_raw_fd();
    let mut req = Vec::with_capacity(NLMSG_HDR + IFINFO);
    req.extend_from_slice(&((NLMSG_HDR + IFINFO) as u32).to_ne_bytes());
    req.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0u8; IFINFO]);
    // To the kernel (pid 0): an unbound netlink socket's default peer.
    send(raw, &req, MsgFlags::empty())?;
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: a dump of a namespace with thousands of links is a few hundred reads.
    for _ in 0..10_000 {
        let n = recv(raw, &mut buf, MsgFlags::empty())?;
        if n == 0 {
            break;
        }
        if parse_messages(buf.get(..n).unwrap_or(&[]), &mut links)? {
            return Ok(links);
        }
    }
    Ok(links)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Attributes (type without the nested/byte-order flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = b.get(4..len)?;
        b = b.get(len.next_multiple_of(4).min(b.len())..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

fn c_str(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or(b)).into_owned()
}

/// Parses one read of the dump; true at its end.
fn parse_messages(mut b: &[u8], links: &mut Vec<Link>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0).map_or(0, |l| l as usize);
        let ty = u16_at(b, 4).unwrap_or(0);
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        let body = b.get(NLMSG_HDR..len).unwrap_or(&[]);
        match ty {
            t if t == libc::NLMSG_DONE as u16 => return Ok(true),
            t if t == libc::NLMSG_ERROR as u16 => {
                let errno = body.get(..4).and_then(|x| x.try_into().ok()).map_or(0, i32::from_ne_bytes);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                return Ok(true);
            }
            t if t == libc::RTM_NEWLINK => {
                if let Some(l) = parse_link(body) {
                    links.push(l);
                }
            }
            _ => {}
        }
        b = b.get(len.next_multiple_of(4).min(b.len())..).unwrap_or(&[]);
    }
    Ok(false)
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_at(body, 4)?;
    let mut l = Link { index, ..Link::default() };
    for (ty, p) in attrs(body.get(IFINFO..)?) {
        match ty {
            IFLA_IFNAME => l.name = c_str(p),
            IFLA_LINKINFO => {
                for (t, q) in attrs(p) {
                    match t {
                        IFLA_INFO_KIND => l.kind = Some(c_str(q)),
                        IFLA_INFO_DATA => {
                            let want = match l.kind.as_deref() {
                                Some("vxlan") => VXLAN_LINK,
                                Some("ipip") => IPTUN_LINK,
                                _ => continue,
                            };
                            l.lower = attrs(q).find(|(t, _)| *t == want).and_then(|(_, v)| u32_at(v, 0));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

/// Which nodes' captures hold underlay fingerprints (without them no
/// `fabric_loss` can be found, and an empty report would look like health).
#[derive(Debug, Default)]
pub struct UnderlaySeen {
    /// Every node a capture came from, in order.
    nodes: Vec<String>,
    /// Nodes whose recorder fingerprinted an underlay device.
    with_tc: Vec<String>,
    /// Fingerprint records read.
    pub fingerprints: u64,
}

impl UnderlaySeen {
    /// A capture of `node` (its header).
    pub fn node(&mut self, node: &str) {
        if !self.nodes.iter().any(|n| n == node) {
            self.nodes.push(node.to_owned());
        }
    }
    /// `node`'s recorder covered its span, with tc on its underlay when `tc`.
    pub fn coverage(&mut self, node: &str, tc: bool) {
        self.node(node);
        if tc && !self.with_tc.iter().any(|n| n == node) {
            self.with_tc.push(node.to_owned());
        }
    }
    /// A record read.
    pub fn record(&mut self, r: &crate::event::Record) {
        if let crate::event::Record::Packet(p) = r
            && matches!(p.hook, crate::event::Hook::TcEgress | crate::event::Hook::TcIngress)
        {
            self.fingerprints += 1;
            if let Some(n) = &p.node
                && !self.with_tc.iter().any(|x| **x == **n)
            {
                self.with_tc.push(n.to_string());
            }
        }
    }
    /// Nodes whose captures hold no underlay fingerprints.
    #[must_use]
    pub fn without(&self) -> Vec<&str> {
        self.nodes.iter().filter(|n| !self.with_tc.contains(n)).map(String::as_str).collect()
    }
    /// What to tell the user, if anything is missing.
    #[must_use]
    pub fn warning(&self) -> Option<String> {
        let without = self.without();
        if self.with_tc.is_empty() {
            Some(format!(
                "the captures hold no underlay fingerprints{}: packets lost between nodes (fabric_loss) cannot be found, only kernel drops and failed connections. Record each node again with `ktrace record` (--underlay auto is the default; name the device with --underlay eth0 if auto finds none)",
                if self.nodes.is_empty() { String::new() } else { format!(" ({})", self.nodes.join(", ")) }
            ))
        } else if !without.is_empty() {
            Some(format!(
                "no underlay fingerprints from {}: losses towards or from {} cannot be found; record it again with `ktrace record` (--underlay auto is the default)",
                without.join(", "),
                if without.len() == 1 { "it" } else { "them" }
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn newlink(index: u32, name: &str, kind: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFO];
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        if let Some(k) = kind {
            let mut info = attr(IFLA_INFO_KIND, format!("{k}\0").as_bytes());
            // NLA_F_NESTED set, as the kernel does.
            info.extend(attr(IFLA_INFO_DATA | 0x8000, data));
            body.extend(attr(IFLA_LINKINFO | 0x8000, &info));
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn parses_tunnel_lower_devices() {
        let mut b = newlink(1, "lo", None, &[]);
        b.extend(newlink(2, "eth0", None, &[]));
        let mut vx = attr(1, &42u32.to_ne_bytes());
        vx.extend(attr(VXLAN_LINK, &2u32.to_ne_bytes()));
        b.extend(newlink(3, "flannel.1", Some("vxlan"), &vx));
        b.extend(newlink(4, "tunl0", Some("ipip"), &attr(IPTUN_LINK, &2u32.to_ne_bytes())));
        b.extend(newlink(5, "genev_sys", Some("geneve"), &attr(1, &7u32.to_ne_bytes())));
        let mut links = Vec::new();
        assert!(!parse_messages(&b, &mut links).unwrap());
        assert_eq!(links.len(), 5);
        assert_eq!(links[2], Link { index: 3, name: "flannel.1".into(), kind: Some("vxlan".into()), lower: Some(2) });
        assert_eq!(links[3].lower, Some(2));
        assert_eq!(links[4].lower, None);
        let mut done = Vec::new();
        done.extend_from_slice(&(NLMSG_HDR as u32).to_ne_bytes());
        done.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        done.extend_from_slice(&[0; 10]);
        assert!(parse_messages(&done, &mut links).unwrap());
        // Truncated input stops, never panics.
        for cut in 0..b.len() {
            let mut l = Vec::new();
            let _ = parse_messages(&b[..cut], &mut l);
        }
    }

    #[test]
    fn default_route() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 ens5\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_default_route(t).as_deref(), Some("ens5"));
        assert_eq!(parse_default_route("Iface\n"), None);
    }

    #[test]
    fn none_and_names() {
        assert!(resolve(&["none".into()]).unwrap().is_empty());
        assert!(resolve(&["none".into(), "eth0".into()]).is_err());
        assert_eq!(resolve(&["eth0".into(), "eth0".into(), "eth1".into()]).unwrap(), ["eth0", "eth1"]);
        // This namespace's own links are readable without privileges.
        assert!(auto_devices().is_ok());
    }
}
