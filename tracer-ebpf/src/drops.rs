//! Kernel drops: `drop_kfree_skb` (`tp_btf` on `skb:kfree_skb`) with the
//! drop reason and the start of the packet.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_ringbuf_output},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{DROP_SNAP, DropEvent, EventKind};

use crate::{DROP_SCRATCH, DROP_SKIP, EVENTS, OFFSETS, count_lost, init_header, kread, set, wake_flag};

/// `skb:kfree_skb` (`tp_btf)`: the kernel dropped a packet, and says why.
#[btf_tracepoint(function = "kfree_skb")]
fn drop_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u64 = ctx.arg(2);
    let reason = reason as u32;
    // SAFETY: loader-written globals.
    let (skip, off) = unsafe { (read_volatile(&raw const DROP_SKIP), read_volatile(&raw const OFFSETS)) };
    if reason == skip[0] || reason == skip[1] || off.skb_valid == 0 || skb == 0 {
        return 0;
    }
    #[cfg(feature = "bpf-log")]
    {
        // SAFETY: loader-written global.
        let max = unsafe { read_volatile(&raw const crate::DROP_REASON_MAX) };
        if reason >= max {
            crate::log::debug!("drop reason {} outside the kernel's enum (max {})", reason, max);
        }
    }
    let Some(ev) = DROP_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch, ours until we return.
    let ev = unsafe { &mut *ev };
    init_header(&mut ev.hdr, EventKind::Drop);
    ev.location = location;
    ev.reason = reason;
    set(&mut ev.ifindex, 0);
    set(&mut ev.netns_ino, 0);
    set(&mut ev.pkt_len, 0);
    set(&mut ev.cap_len, 0);
    // SAFETY: probe reads at BTF-derived offsets of live kernel objects.
    unsafe {
        ev.pkt_len = kread::<u32>(skb, off.skb_len).unwrap_or(0);
        if let Some(dev) = kread::<u64>(skb, off.skb_dev)
            && dev != 0
        {
            ev.ifindex = kread::<u32>(dev, off.dev_ifindex).unwrap_or(0);
            if let Some(net) = kread::<u64>(dev, off.dev_nd_net)
                && net != 0
            {
                ev.netns_ino = kread::<u32>(net, off.net_ns_inum).unwrap_or(0);
            }
        }
        let head = kread::<u64>(skb, off.skb_head).unwrap_or(0);
        let nh = kread::<u16>(skb, off.skb_network_header).unwrap_or(u16::MAX);
        // u16::MAX: network header not set (e.g. dropped before L3 parsing).
        if head != 0 && nh != u16::MAX {
            let n = if (ev.pkt_len as usize) < DROP_SNAP { ev.pkt_len as usize } else { DROP_SNAP };
            if n > 0
                && bpf_probe_read_kernel(ev.data.as_mut_ptr().cast(), n as u32, (head + u64::from(nh)) as *const _) == 0
            {
                ev.cap_len = n as u16;
            }
        }
    }
    let size = (size_of::<DropEvent>() - DROP_SNAP + ev.cap_len as usize) as u64;
    let size = if size > size_of::<DropEvent>() as u64 { size_of::<DropEvent>() as u64 } else { size };
    // SAFETY: `ev` is size_of::<DropEvent>() bytes and size is at most that.
    let r = unsafe {
        bpf_ringbuf_output((&raw const EVENTS).cast_mut().cast(), core::ptr::from_mut(ev).cast(), size, wake_flag())
    };
    if r != 0 {
        count_lost();
    }
    0
}
