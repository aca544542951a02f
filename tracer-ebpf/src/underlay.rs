//! Underlay fingerprints: `underlay_egress` / `underlay_ingress` (tc/TCX on
//! an interface) copy every IP packet's headers into the ring.

use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, macros::classifier, programs::TcContext};
use network_types::eth::EthHdr;
use tracer_common::{EventKind, PACKET_EVENT_HDR_LEN, Stat, UNDERLAY_SNAP, flags, hook};

use crate::{SCRATCH, bounded_len, bump, count_lost, cpu_ring, init_header, ring_output, set};

/// tc (TCX) on an underlay interface: every IP packet's headers (outer and,
/// for VXLAN, inner), for matching what left one node with what reached another.
#[inline(always)]
fn underlay(ctx: &TcContext, which: u8) -> i32 {
    const TCX_NEXT: i32 = -1;
    // The EtherType alone, not the whole header: one 2-byte load.
    let Ok(proto) = ctx.load::<u16>(core::mem::offset_of!(EthHdr, ether_type)) else { return TCX_NEXT };
    let proto = u16::from_be(proto);
    let ver = match proto {
        0x0800 => 4,
        0x86dd => 6,
        _ => return TCX_NEXT,
    };
    let Some(ev) = SCRATCH.get_ptr_mut(0) else { return TCX_NEXT };
    // SAFETY: per-CPU scratch, ours until we return.
    let ev = unsafe { &mut *ev };
    init_header(&mut ev.hdr, EventKind::DnsPacket);
    set(&mut ev.netns_cookie, 0);
    set(&mut ev.netns_ino, 0);
    // SAFETY: reading the context's own fields.
    ev.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = ctx.len();
    ev.pkt_len = len.saturating_sub(EthHdr::LEN as u32);
    ev.hook = which;
    ev.ip_version = ver;
    let avail = len as usize;
    if avail <= EthHdr::LEN {
        return TCX_NEXT;
    }
    let mut n = avail - EthHdr::LEN;
    if n > UNDERLAY_SNAP {
        n = UNDERLAY_SNAP;
        ev.hdr.flags |= flags::TRUNCATED;
    }
    if n == 0 {
        return TCX_NEXT;
    }
    let n = bounded_len(n, UNDERLAY_SNAP);
    // SAFETY: n in 1..=UNDERLAY_SNAP <= SNAP_LEN, the size of ev.data.
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), EthHdr::LEN as u32, ev.data.as_mut_ptr().cast(), n as u32) } != 0
    {
        crate::log::debug!("underlay: bpf_skb_load_bytes of {} bytes failed (packet {})", n, len);
        bump(Stat::LoadError);
        return TCX_NEXT;
    }
    ev.cap_len = n as u16;
    let size = (PACKET_EVENT_HDR_LEN + n) as u64;
    // SAFETY: `ev` is PACKET_EVENT_HDR_LEN + SNAP_LEN bytes and size is at most that.
    if !unsafe { ring_output(cpu_ring(), core::ptr::from_mut(ev).cast(), size) } {
        count_lost();
    }
    TCX_NEXT
}

/// Underlay egress (TCX).
#[classifier]
fn underlay_egress(ctx: TcContext) -> i32 {
    underlay(&ctx, hook::TC_EGRESS)
}

/// Underlay ingress (TCX).
#[classifier]
fn underlay_ingress(ctx: TcContext) -> i32 {
    underlay(&ctx, hook::TC_INGRESS)
}
