//! Kernel drops: `drop_kfree_skb` (`tp_btf` on `skb:kfree_skb`) with the
//! drop reason and the start of the packet.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{DROP_SNAP, DropEvent, EVENT_VERSION, EventKind};

use crate::{DROP_SKIP, OFFSETS, Reserved, count_lost, cpu_ring, set, wake_flag};

/// A `T` at `base + off` of a kernel object reached through a BTF pointer.
///
/// # Safety
/// `base` must be a BTF pointer the verifier tracks (a `tp_btf` argument or
/// a pointer loaded through one) and `off` a frozen global holding this
/// kernel's offset of a `T` field: the verifier checks the access against
/// the field's type and turns it into a fault-safe load (a bad pointer reads
/// as zero), so no `bpf_probe_read_kernel` call is needed.
#[inline(always)]
unsafe fn field<T: Copy>(base: usize, off: u32) -> T {
    // SAFETY: see the function's contract.
    unsafe { read_volatile((base + off as usize) as *const T) }
}

/// `skb:kfree_skb` (`tp_btf)`: the kernel dropped a packet, and says why.
///
/// `tp_btf` arguments are trusted BTF pointers, so the skb and its device
/// are read with direct loads (one helper call fewer per field), and the
/// record is written straight into its ring reservation (no per-CPU scratch
/// and second copy). Only the packet bytes, behind a plain `unsigned char *`,
/// still need `bpf_probe_read_kernel`. The record is a 48-byte head and the
/// packet (no process header: drops happen in softirq), written in order and
/// never read back (its lines are on their way to this CPU); only the
/// offsets it uses are loaded from `OFFSETS`.
#[btf_tracepoint(function = "kfree_skb")]
fn drop_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: usize = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u64 = ctx.arg(2);
    let reason = reason as u32;
    // SAFETY: loader-written globals.
    let (skip, valid) = unsafe { (read_volatile(&raw const DROP_SKIP), read_volatile(&raw const OFFSETS.skb_valid)) };
    if reason == skip[0] || reason == skip[1] || valid == 0 || skb == 0 {
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
    let ring = cpu_ring();
    let Some(entry) = Reserved::<DropEvent>::new(ring) else {
        count_lost();
        return 0;
    };
    // Every field userspace reads is written below (ring memory is not
    // zeroed; `data` past `cap_len` is never read).
    let ev = entry.get();
    ev.tag.kind = EventKind::Drop as u32;
    ev.tag.version = EVENT_VERSION;
    ev.tag.flags = 0;
    // SAFETY: helper without arguments.
    let ts = unsafe { bpf_ktime_get_ns() };
    ev.tag.ts_ns = ts;
    ev.location = location;
    ev.reason = reason;
    // SAFETY: BTF loads at this kernel's offsets (`skb_valid`), see `field`;
    // the offsets are loader-written globals.
    unsafe {
        let pkt_len: u32 = field(skb, read_volatile(&raw const OFFSETS.skb_len));
        let dev: usize = field(skb, read_volatile(&raw const OFFSETS.skb_dev));
        let (mut ifindex, mut netns) = (0u32, 0u32);
        if dev != 0 {
            ifindex = field(dev, read_volatile(&raw const OFFSETS.dev_ifindex));
            let net: usize = field(dev, read_volatile(&raw const OFFSETS.dev_nd_net));
            if net != 0 {
                netns = field(net, read_volatile(&raw const OFFSETS.net_ns_inum));
            }
        }
        ev.ifindex = ifindex;
        ev.netns_ino = netns;
        ev.pkt_len = pkt_len;
        let head: u64 = field(skb, read_volatile(&raw const OFFSETS.skb_head));
        let nh: u16 = field(skb, read_volatile(&raw const OFFSETS.skb_network_header));
        let mut cap = 0u16;
        // u16::MAX: network header not set (e.g. dropped before L3 parsing).
        if head != 0 && nh != u16::MAX {
            let n = if (pkt_len as usize) < DROP_SNAP { pkt_len as usize } else { DROP_SNAP };
            if n > 0
                && bpf_probe_read_kernel(ev.data.as_mut_ptr().cast(), n as u32, (head + u64::from(nh)) as *const _) == 0
            {
                cap = n as u16;
            }
        }
        set(&mut ev.cap_len, cap);
    }
    entry.submit(wake_flag(ring, size_of::<DropEvent>() as u64, ts));
    0
}
