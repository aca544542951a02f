//! DNS capture: `dns_egress` / `dns_ingress` (`cgroup_skb` at the cgroup2
//! root) copy packets to or from a configured DNS port into the ring.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_ringbuf_output, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use tracer_common::{EventKind, PACKET_EVENT_HDR_LEN, PORTS_MAX, SNAP_LEN, Stat, flags, hook};

use crate::{
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, DNS_PORTS, EVENTS, IPPROTO_TCP, IPPROTO_UDP, SCRATCH,
    USE_NETNS_COOKIE, WAKEUP_BYTES, bounded_len, bump, count_lost, init_header, set, task::fill_task,
};

#[inline(always)]
fn load<T: Copy>(ctx: &SkBuffContext, off: u32) -> Option<T> {
    ctx.load::<T>(off as usize).ok()
}

#[inline(always)]
fn port_wanted(port: u16) -> bool {
    let mut i = 0;
    while i < PORTS_MAX as usize {
        // SAFETY: reading a global the loader may have rewritten.
        let p = unsafe { read_volatile(&raw const DNS_PORTS[i]) };
        if p == 0 {
            return false;
        }
        if p == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Finds the L4 header: returns (ip version, L4 protocol, L4 offset), or None
/// for anything that is not a first-fragment UDP/TCP packet.
#[inline(always)]
fn l4_of(ctx: &SkBuffContext) -> Option<(u8, u8, u32)> {
    let b0: u8 = load(ctx, 0)?;
    match b0 >> 4 {
        4 => {
            let ihl = u32::from(b0 & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let frag: u16 = u16::from_be(load(ctx, 6)?);
            if frag & 0x1fff != 0 {
                return None; // later fragment: no ports
            }
            let proto: u8 = load(ctx, 9)?;
            Some((4, proto, ihl))
        }
        6 => {
            let mut next: u8 = load(ctx, 6)?;
            let mut off = 40u32;
            // Hop-by-hop, routing, destination options and fragment headers; two at most.
            let mut n = 0;
            while n < 2 {
                match next {
                    0 | 43 | 60 => {
                        let nh: u8 = load(ctx, off)?;
                        let len: u8 = load(ctx, off + 1)?;
                        next = nh;
                        off += (u32::from(len) + 1) * 8;
                    }
                    44 => {
                        let nh: u8 = load(ctx, off)?;
                        let fo: u16 = u16::from_be(load(ctx, off + 2)?);
                        if fo & 0xfff8 != 0 {
                            return None;
                        }
                        next = nh;
                        off += 8;
                    }
                    _ => break,
                }
                n += 1;
            }
            Some((6, next, off))
        }
        _ => None,
    }
}

/// The common case without a single helper call: IPv4 without options or
/// IPv6 without extension headers, read directly from the packet's linear
/// head (`cgroup_skb` programs may read packet data). Returns (IP version, L4
/// protocol, source port, destination port), ports in host order; `None`
/// sends the packet down the general path (options, extension headers,
/// headers outside the linear head, packets under 28 bytes).
#[inline(always)]
fn ports_direct(skb: *mut aya_ebpf::bindings::__sk_buff) -> Option<(u8, u8, u16, u16)> {
    // SAFETY: reading our own context's fields.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // Whole headers, so that the references below cover valid bytes: every
    // UDP or TCP packet is at least this long.
    if data + Ipv4Hdr::LEN + UdpHdr::LEN > end {
        return None;
    }
    // SAFETY: 28 bytes checked above (one `data + N > data_end` test, the
    // form the verifier tracks: LLVM turns a `+ 1` check into `data >=
    // data_end`, which it does not): an IPv4 header without options and the
    // first eight bytes of a UDP or TCP header. network-types'
    // headers are byte arrays (alignment 1), so any address is fine.
    let ip4 = unsafe { &*(data as *const Ipv4Hdr) };
    if ip4.vihl == 0x45 {
        if ip4.frag_offset() != 0 {
            // A later fragment: no ports, never DNS to us.
            return Some((4, 0, 0, 0));
        }
        // SAFETY: as above; UDP and TCP both start with the two ports.
        let l4 = unsafe { &*((data + Ipv4Hdr::LEN) as *const UdpHdr) };
        return Some((4, ip4.proto, l4.src_port(), l4.dst_port()));
    }
    if ip4.vihl >> 4 == 6 {
        if data + Ipv6Hdr::LEN + UdpHdr::LEN > end {
            return None;
        }
        // SAFETY: 48 bytes checked above.
        let (ip6, l4) = unsafe { (&*(data as *const Ipv6Hdr), &*((data + Ipv6Hdr::LEN) as *const UdpHdr)) };
        let next = ip6.next_hdr;
        if next == IPPROTO_UDP || next == IPPROTO_TCP {
            return Some((6, next, l4.src_port(), l4.dst_port()));
        }
    }
    None
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, which: u8) -> i32 {
    // No per-packet counter here: most packets are not DNS, and the kernel's
    // own run count (bpf_stats) says how many were seen.
    let (ver, proto, sport, dport) = if let Some(v) = ports_direct(ctx.skb.skb) {
        v
    } else {
        let Some((ver, proto, l4)) = l4_of(ctx) else {
            return 1;
        };
        if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
            return 1;
        }
        // Both ports in one load: one helper result to check. With two,
        // LLVM tested the first result after the second call from a stack
        // copy, which 6.1's verifier does not tie to the register it checked
        // (it then explores an impossible path and refuses the program).
        let Some(ports) = load::<u32>(ctx, l4) else {
            bump(Stat::ParseError);
            return 1;
        };
        (ver, proto, u16::from_be(ports as u16), u16::from_be((ports >> 16) as u16))
    };
    if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
        return 1;
    }
    if !port_wanted(sport) && !port_wanted(dport) {
        return 1;
    }
    bump(Stat::Matched);
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: the per-CPU scratch slot is ours until this program returns.
    let ev = unsafe { &mut *ev };
    let skb = ctx.skb.skb;
    let len = ctx.len();
    init_header(&mut ev.hdr, EventKind::DnsPacket);
    // SAFETY: helper on our own context.
    ev.hdr.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    set(&mut ev.netns_ino, 0);
    set(&mut ev.netns_cookie, 0);
    // SAFETY: reading a loader-written global.
    if unsafe { read_volatile(&raw const USE_NETNS_COOKIE) } != 0 {
        // SAFETY: helper on our own context.
        ev.netns_cookie = unsafe { bpf_get_netns_cookie(skb.cast()) };
        ev.hdr.flags |= flags::HAS_NETNS_COOKIE;
    }
    // SAFETY: reading the context's ifindex field.
    ev.ifindex = unsafe { (*skb).ifindex };
    ev.pkt_len = len;
    ev.hook = which;
    ev.ip_version = ver;
    // Egress of a socket runs in the sending task (UDP sendmsg, TCP send).
    if which == hook::CGROUP_EGRESS {
        let ino = fill_task(&mut ev.hdr, true);
        if ino != 0 {
            ev.netns_ino = ino;
            ev.hdr.flags |= flags::HAS_NETNS_INO;
        }
    }
    let mut n = len as usize;
    if n > SNAP_LEN {
        n = SNAP_LEN;
        ev.hdr.flags |= flags::TRUNCATED;
    }
    if n == 0 {
        return 1;
    }
    let n = bounded_len(n, SNAP_LEN);
    // SAFETY: n is in 1..=SNAP_LEN, the size of ev.data.
    let r = unsafe { bpf_skb_load_bytes(skb.cast(), 0, ev.data.as_mut_ptr().cast(), n as u32) };
    if r != 0 {
        bump(Stat::LoadError);
        return 1;
    }
    ev.cap_len = n as u16;
    // SAFETY: loader-written global; the ring buffer map.
    let wake = unsafe { read_volatile(&raw const WAKEUP_BYTES) };
    let fl = if EVENTS.query(BPF_RB_AVAIL_DATA) >= wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    let size = (PACKET_EVENT_HDR_LEN + n) as u64;
    // SAFETY: `ev` is PACKET_EVENT_HDR_LEN + SNAP_LEN bytes and size is at most that.
    let r =
        unsafe { bpf_ringbuf_output((&raw const EVENTS).cast_mut().cast(), core::ptr::from_mut(ev).cast(), size, fl) };
    if r != 0 {
        count_lost();
    }
    1
}

/// Every packet leaving a socket in any cgroup (attach at the cgroup2 root).
#[cgroup_skb]
fn dns_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, hook::CGROUP_EGRESS)
}

/// Every packet delivered to a socket in any cgroup (attach at the cgroup2 root).
#[cgroup_skb]
fn dns_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, hook::CGROUP_INGRESS)
}
