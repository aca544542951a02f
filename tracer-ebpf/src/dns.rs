//! DNS capture: `dns_egress` / `dns_ingress` (`cgroup_skb` at the cgroup2
//! root) copy packets to or from a configured DNS port into the ring.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use tracer_common::{
    EventHeader, EventKind, PACKET_EVENT_HDR_LEN, PORTS_MAX, PacketEvent, SNAP_LEN, Stat, flags, hook,
};

use crate::{
    BPF_RB_NO_WAKEUP, DNS_PORTS, EVENTS, IPPROTO_TCP, IPPROTO_UDP, USE_NETNS_COOKIE, bounded_len, bump, count_lost,
    init_header, set, task::fill_task, wake_flag,
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

/// Reads `T` at `off` of a packet range the caller has bounds-checked.
///
/// # Safety
/// `data + off + size_of::<T>()` must be at most `data_end`, checked by the
/// caller in a form the verifier tracks (one `data + N > data_end` test:
/// LLVM turns a `+ 1` check into `data >= data_end`, which it does not).
#[inline(always)]
unsafe fn at<T: Copy>(data: usize, off: usize) -> T {
    // SAFETY: see the function's contract.
    unsafe { core::ptr::read_unaligned((data + off) as *const T) }
}

/// The common case without a single helper call: IPv4 without options or
/// IPv6 without extension headers, read directly from the packet's linear
/// head (`cgroup_skb` programs may read packet data). Returns (IP version, L4
/// protocol, source port, destination port), ports in host order; `None`
/// sends the packet down the general path (options, extension headers,
/// headers outside the linear head, packets under 24 bytes).
#[inline(always)]
fn ports_direct(skb: *mut aya_ebpf::bindings::__sk_buff) -> Option<(u8, u8, u16, u16)> {
    // SAFETY: reading our own context's fields.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + 24 > end {
        return None;
    }
    // SAFETY: 24 bytes checked above.
    let b0: u8 = unsafe { at(data, 0) };
    if b0 == 0x45 {
        // SAFETY: within the 24 bytes checked above.
        let (frag, proto, ports) = unsafe { (at::<u16>(data, 6), at::<u8>(data, 9), at::<u32>(data, 20)) };
        if u16::from_be(frag) & 0x1fff != 0 {
            // A later fragment: no ports, never DNS to us.
            return Some((4, 0, 0, 0));
        }
        return Some((4, proto, u16::from_be(ports as u16), u16::from_be((ports >> 16) as u16)));
    }
    if b0 >> 4 == 6 {
        if data + 44 > end {
            return None;
        }
        // SAFETY: 44 bytes checked above.
        let (next, ports) = unsafe { (at::<u8>(data, 6), at::<u32>(data, 40)) };
        if next == IPPROTO_UDP || next == IPPROTO_TCP {
            return Some((6, next, u16::from_be(ports as u16), u16::from_be((ports >> 16) as u16)));
        }
    }
    None
}

/// Most bytes of a DNS packet copied into its record (1..=`SNAP_LEN`), set by
/// userspace at load time: `SNAP_LEN` when the decoder reads the messages
/// (it walks answers, authority and additional records for the EDNS rcode,
/// so a response is needed whole), `record --snaplen` when recording.
#[unsafe(no_mangle)]
static DNS_SNAP: u32 = SNAP_LEN as u32;

/// A packet record as it is reserved in the ring: the fields of
/// [`tracer_common::PacketEvent`] before `data`, then room for `N` bytes of
/// packet. The packet is loaded straight into the reservation (one copy, no
/// per-CPU scratch), and a small packet takes a small slot: the ring's
/// reservation size must be a constant, so there is one size class per power
/// of two from 128 to `SNAP_LEN` (`cap_len` says how much of `data` is valid;
/// userspace ignores the rest).
#[repr(C)]
struct PacketSlot<const N: usize> {
    hdr: EventHeader,
    netns_cookie: u64,
    netns_ino: u32,
    ifindex: u32,
    pkt_len: u32,
    cap_len: u16,
    hook: u8,
    ip_version: u8,
    data: [u8; N],
}

const _: () = assert!(core::mem::offset_of!(PacketSlot<128>, data) == PACKET_EVENT_HDR_LEN);
const _: () = assert!(core::mem::size_of::<PacketSlot<SNAP_LEN>>() == core::mem::size_of::<PacketEvent>());

/// Reserves a `PacketSlot<N>`, fills it and loads the first `n` (1..=N) bytes
/// of the packet into it.
#[inline(always)]
fn emit<const N: usize>(ctx: &SkBuffContext, which: u8, ver: u8, n: usize, truncated: bool) {
    let Some(mut entry) = EVENTS.reserve::<PacketSlot<N>>(0) else {
        count_lost();
        return;
    };
    // SAFETY: the reservation is ours until it is submitted or discarded, and
    // every field userspace reads is written below (ring memory is not zeroed).
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let skb = ctx.skb.skb;
    init_header(&mut ev.hdr, EventKind::DnsPacket);
    if truncated {
        ev.hdr.flags |= flags::TRUNCATED;
    }
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
    // SAFETY: reading the context's fields.
    unsafe {
        ev.ifindex = (*skb).ifindex;
        ev.pkt_len = (*skb).len;
    }
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
    let n = bounded_len(n, N);
    // SAFETY: n is in 1..=N, the size of ev.data.
    let r = unsafe { bpf_skb_load_bytes(skb.cast(), 0, ev.data.as_mut_ptr().cast(), n as u32) };
    if r != 0 {
        bump(Stat::LoadError);
        entry.discard(BPF_RB_NO_WAKEUP);
        return;
    }
    ev.cap_len = n as u16;
    entry.submit(wake_flag());
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
    let len = ctx.len() as usize;
    // SAFETY: reading a loader-written global.
    let snap = unsafe { read_volatile(&raw const DNS_SNAP) } as usize;
    let snap = if snap == 0 || snap > SNAP_LEN { SNAP_LEN } else { snap };
    let (n, truncated) = if len > snap { (snap, true) } else { (len, false) };
    if n == 0 {
        return 1;
    }
    if n <= 128 {
        emit::<128>(ctx, which, ver, n, truncated);
    } else if n <= 256 {
        emit::<256>(ctx, which, ver, n, truncated);
    } else if n <= 512 {
        emit::<512>(ctx, which, ver, n, truncated);
    } else {
        emit::<SNAP_LEN>(ctx, which, ver, n, truncated);
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
