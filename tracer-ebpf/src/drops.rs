//! Kernel drops: `drop_kfree_skb` (`tp_btf` on `skb:kfree_skb`) with the
//! drop reason and the start of the packet; repeats of a drop within a short
//! window are counted in the kernel (`DROP_FOLD`) instead of each sending a
//! record.

use core::{mem::MaybeUninit, ptr::read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_jiffies64, bpf_probe_read_kernel},
    },
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use tracer_common::{
    DROP_SNAP, DropEvent, DropFold, EVENT_VERSION, EventKind, FOLD_HEAD, FOLD_NOFOLD_DEVS, FOLD_SLOTS,
    FOLD_TUNNEL_PORTS, FoldConfig,
};

use crate::{DROP_SKIP, IPPROTO_TCP, IPPROTO_UDP, OFFSETS, Reserved, count_lost, cpu_ring, set, wake_flag};

/// Repeats of a drop key counted per CPU (see [`DropFold`]), in a slot
/// picked by a hash of the key. A slot whose key still has uncounted
/// repeats is not taken over by another key (that drop is sent in full), so
/// every count stays with its key until a record or the end of the run
/// (userspace reads the pending counts after its last drain).
#[map(name = "DROP_FOLD")]
static DROP_FOLD: PerCpuArray<DropFold> = PerCpuArray::with_max_entries(FOLD_SLOTS, 0);

/// Window of a drop key in jiffies (repeats within it are counted, and the
/// first drop after it sends a record carrying the count; 0: every drop
/// sends a record, `KTRACE_NO_DROP_FOLD=1`), and the underlay devices whose
/// drops are always sent. A frozen global: where the window is 0 the
/// verifier never walks the fold code.
#[unsafe(no_mangle)]
static DROP_FOLD_CFG: FoldConfig = FoldConfig { window: 0, netns_ino: 0, devs: [0; FOLD_NOFOLD_DEVS], pkt_direct: 0 };

/// Whether drops on this device are folded: not on an underlay device.
#[inline(always)]
fn foldable_dev(ifindex: u32, netns: u32) -> bool {
    // SAFETY: loader-written global.
    if netns != unsafe { read_volatile(&raw const DROP_FOLD_CFG.netns_ino) } {
        return true;
    }
    let mut i = 0;
    while i < FOLD_NOFOLD_DEVS {
        // SAFETY: as above.
        let d = unsafe { read_volatile(&raw const DROP_FOLD_CFG.devs[i]) };
        if d == 0 {
            return true;
        }
        if d == ifindex {
            return false;
        }
        i += 1;
    }
    true
}

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

/// The device at `dev` (a BTF pointer loaded from the skb) as a key word:
/// its address, made a number by subtracting a fixed address (pointer minus
/// pointer is the one pointer arithmetic the verifier turns into a scalar,
/// for programs allowed to leak pointers: `CAP_PERFMON`, which `tp_btf`
/// needs anyway). A live device has one address, one ifindex and one netns,
/// so it names both without loading either: no `dev` or `net` line on the
/// repeat path. The slot keeps the ifindex and netns it was taken with, and
/// a record checks them (see [`dev_names`]).
#[inline(always)]
fn dev_id(dev: usize) -> u64 {
    (dev as u64).wrapping_sub(&raw const DROP_FOLD_CFG as u64)
}

/// The ifindex and netns inode of the device at `dev` (0, 0 without one).
#[inline(always)]
fn dev_names(dev: usize) -> (u32, u32) {
    if dev == 0 {
        return (0, 0);
    }
    // SAFETY: BTF loads at this kernel's offsets, see `field`; the offsets
    // are loader-written globals.
    unsafe {
        let ifindex: u32 = field(dev, read_volatile(&raw const OFFSETS.dev_ifindex));
        let net: usize = field(dev, read_volatile(&raw const OFFSETS.dev_nd_net));
        let netns = if net != 0 { field(net, read_volatile(&raw const OFFSETS.net_ns_inum)) } else { 0 };
        (ifindex, netns)
    }
}

/// Whether a TCP or UDP packet to `dport` folds: not UDP to a tunnel port,
/// not another protocol.
#[inline(always)]
fn folds(proto: u8, dport: u16) -> bool {
    proto == IPPROTO_TCP || (proto == IPPROTO_UDP && dport != FOLD_TUNNEL_PORTS[0] && dport != FOLD_TUNNEL_PORTS[1])
}

/// 24 bytes at `src` (little-endian words): three direct loads where the
/// verifier types packet bytes as read-only untrusted memory (`direct`,
/// 6.17+: each load a fault-safe `PROBE_MEM` load, a bad address reads as
/// zero, which no key accepts), else a probe read. The helper writes all of
/// `dst` either way (zeros on failure), so no zeroing first.
#[inline(always)]
fn read24(src: u64, direct: bool) -> Option<[u64; 3]> {
    if direct {
        // SAFETY: `direct` only where the verifier turns these into
        // fault-safe loads (see above). Not aligned: the IP header sits at
        // 2 mod 4 behind the Ethernet header; BPF loads of any alignment are
        // fine on the JITs' targets (x86-64, arm64), the verifier enforces
        // alignment only with `BPF_F_STRICT_ALIGNMENT`.
        return Some(unsafe {
            [
                read_volatile(src as *const u64),
                read_volatile((src + 8) as *const u64),
                read_volatile((src + 16) as *const u64),
            ]
        });
    }
    let mut h = MaybeUninit::<[u64; 3]>::uninit();
    // SAFETY: a probe read into our stack buffer, 24 bytes, which it fills
    // on success and zeroes on failure.
    unsafe {
        if bpf_probe_read_kernel(h.as_mut_ptr().cast(), 24, src as *const _) != 0 {
            return None;
        }
        Some(h.assume_init())
    }
}

/// Fills `k[3..]` with the packet part of the fold key of a drop whose
/// network header is at `pkt`, and returns the key's length in words: 6
/// (IPv4: its header and the ports, 24 bytes, one [`read24`]) or 9 (IPv6:
/// 48 bytes, two), 0 when the drop is not folded. What changes from packet
/// to packet is left out (IPv4 id and checksum; nothing after the ports).
/// Not folded: anything `ktrace drops` might place by more than that (IPv4
/// options or fragments, IPv6 extension headers, protocols other than TCP
/// and UDP, UDP to a tunnel port).
#[inline(always)]
fn fold_key(pkt: u64, k: &mut [u64; 9], direct: bool) -> usize {
    let Some(h) = read24(pkt, direct) else { return 0 };
    let b0 = h[0] & 0xff;
    if b0 == 0x45 {
        // Fragment offset (bytes 6-7, 13 bits): a later fragment has no ports.
        let frag = (((h[0] >> 48) & 0x1f) << 8) | ((h[0] >> 56) & 0xff);
        let proto = ((h[1] >> 8) & 0xff) as u8;
        let dport = ((((h[2] >> 48) & 0xff) << 8) | ((h[2] >> 56) & 0xff)) as u16;
        if frag != 0 || !folds(proto, dport) {
            return 0;
        }
        k[3] = h[0] & !0x0000_ffff_0000_0000; // id
        k[4] = h[1] & !0xffff_0000; // checksum
        k[5] = h[2]; // destination address, ports
        return 6;
    }
    if b0 & 0xf0 != 0x60 {
        return 0;
    }
    let proto = ((h[0] >> 48) & 0xff) as u8;
    let Some(t) = read24(pkt + 24, direct) else { return 0 };
    let dport = ((((t[2] >> 16) & 0xff) << 8) | ((t[2] >> 24) & 0xff)) as u16;
    if !folds(proto, dport) {
        return 0;
    }
    k[3] = h[0];
    k[4] = h[1];
    k[5] = h[2];
    k[6] = t[0];
    k[7] = t[1];
    k[8] = t[2] & 0xffff_ffff; // ports
    9
}

/// The slot of key `k` (`n` words): the words xored, then one multiply,
/// whose top bits depend on every bit of the product's input (a collision
/// only sends a drop in full, so a cheap hash is enough).
#[inline(always)]
fn slot_of(k: &[u64; 9], n: usize) -> u32 {
    let mut x = k[0] ^ k[1] ^ k[2] ^ k[3] ^ k[4] ^ k[5];
    if n == 9 {
        x ^= k[6] ^ k[7] ^ k[8];
    }
    ((x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u32) & (FOLD_SLOTS - 1)
}

/// Whether slot `s` holds key `k` (`n` words). A 6-word IPv4 key never
/// matches a 9-word IPv6 one: their first packet byte differs.
#[inline(always)]
fn same_key(s: &DropFold, k: &[u64; 9], n: usize) -> bool {
    let same = s.key[0] == k[0]
        && s.key[1] == k[1]
        && s.key[2] == k[2]
        && s.key[3] == k[3]
        && s.key[4] == k[4]
        && s.key[5] == k[5];
    same && (n == 6 || (s.key[6] == k[6] && s.key[7] == k[7] && s.key[8] == k[8]))
}

/// `skb:kfree_skb` (`tp_btf)`: the kernel dropped a packet, and says why.
///
/// `tp_btf` arguments are trusted BTF pointers, so the skb and its device
/// are read with direct loads (one helper call fewer per field), and the
/// record is written straight into its ring reservation (no per-CPU scratch
/// and second copy). The packet bytes, behind a plain `unsigned char *`,
/// need `bpf_probe_read_kernel`, except the fold key's where the verifier
/// allows direct loads (`DROP_FOLD_CFG.pkt_direct`, 6.17+). The record is a 48-byte head and the
/// packet (no process header: drops happen in softirq), written in order and
/// never read back (its lines are on their way to this CPU); only the
/// offsets it uses are loaded from `OFFSETS`.
///
/// With folding on (`DROP_FOLD_CFG`), a repeat of a key within its
/// window costs a 24-byte packet read (IPv4; three loads where direct,
/// else a helper call), a hash, a per-CPU slot and a `jiffies` read
/// (inlined): no clock, no ring reservation, no record.
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
    // SAFETY: BTF loads at this kernel's offsets (`skb_valid`), see `field`;
    // the offsets are loader-written globals.
    let (pkt_len, dev, pkt) = unsafe {
        let pkt_len: u32 = field(skb, read_volatile(&raw const OFFSETS.skb_len));
        let dev: usize = field(skb, read_volatile(&raw const OFFSETS.skb_dev));
        let head: u64 = field(skb, read_volatile(&raw const OFFSETS.skb_head));
        let nh: u16 = field(skb, read_volatile(&raw const OFFSETS.skb_network_header));
        // u16::MAX: network header not set (e.g. dropped before L3 parsing).
        let pkt = if head != 0 && nh != u16::MAX { head + u64::from(nh) } else { 0 };
        (pkt_len, dev, pkt)
    };
    // SAFETY: loader-written global.
    let window = unsafe { read_volatile(&raw const DROP_FOLD_CFG.window) };
    // The slot this drop's key owns (a record sent now carries its pending
    // count), or null: not foldable, or the slot holds another key's count.
    let mut slot: *mut DropFold = core::ptr::null_mut();
    let mut now_j = 0u64;
    // The device's ifindex and netns, read only where a record or a slot
    // needs them (a repeat does not: its key names the device by address).
    let (ifindex, netns);
    if window != 0 && pkt != 0 {
        let mut k = [location, u64::from(reason) | (u64::from(pkt_len) << 32), dev_id(dev), 0, 0, 0, 0, 0, 0];
        // SAFETY: loader-written global.
        let direct = unsafe { read_volatile(&raw const DROP_FOLD_CFG.pkt_direct) } != 0;
        let n = fold_key(pkt, &mut k, direct);
        if n != 0
            && let Some(s) = DROP_FOLD.get_ptr_mut(slot_of(&k, n))
        {
            // SAFETY: helper without arguments (inlined by the verifier).
            now_j = unsafe { bpf_jiffies64() };
            // SAFETY: this CPU's slot, valid until the program returns; no
            // other writer runs on this CPU meanwhile (tracing programs do not nest).
            let s = unsafe { &mut *s };
            let same = same_key(s, &k, n);
            if same && now_j < s.until {
                s.pending += 1;
                return 0;
            }
            (ifindex, netns) = dev_names(dev);
            // The device still has the slot's ifindex and netns (not moved
            // to another netns, not freed and its memory reused since).
            if same && s.ifindex == ifindex && s.netns_ino == netns {
                slot = s;
            } else if s.pending == 0 && foldable_dev(ifindex, netns) {
                // Take the slot over: the key and what a pending count read
                // at the end needs to become a record.
                let mut i = 0;
                while i < 9 {
                    set(&mut s.key[i], k[i]);
                    i += 1;
                }
                // SAFETY: a probe read into the slot's `head` (FOLD_HEAD bytes);
                // on failure the kernel zeroes it.
                unsafe { bpf_probe_read_kernel(s.head.as_mut_ptr().cast(), FOLD_HEAD as u32, pkt as *const _) };
                set(&mut s.location, location);
                set(&mut s.reason, reason);
                set(&mut s.ifindex, ifindex);
                set(&mut s.netns_ino, netns);
                set(&mut s.pkt_len, pkt_len);
                set(&mut s.until, 0);
                slot = s;
            }
        } else {
            (ifindex, netns) = dev_names(dev);
        }
    } else {
        (ifindex, netns) = dev_names(dev);
    }
    let ring = cpu_ring();
    let Some(entry) = Reserved::<DropEvent>::new(ring) else {
        if slot.is_null() {
            count_lost();
        } else {
            // Counted, not lost: it goes out with the key's next record.
            // SAFETY: as above.
            unsafe {
                let s = &mut *slot;
                if s.until == 0 {
                    // A slot just taken over: its pending drops date from now.
                    s.ts_ns = bpf_ktime_get_ns();
                    s.until = now_j + window;
                }
                s.pending += 1;
            }
        }
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
    ev.ifindex = ifindex;
    ev.netns_ino = netns;
    ev.pkt_len = pkt_len;
    let mut count = 1u32;
    if !slot.is_null() {
        // SAFETY: as above.
        unsafe {
            let s = &mut *slot;
            let p = s.pending;
            count = if p >= u64::from(u32::MAX) { u32::MAX } else { p as u32 + 1 };
            s.pending = 0;
            s.until = now_j + window;
            s.ts_ns = ts;
        }
    }
    ev.count = count;
    let mut cap = 0u16;
    if pkt != 0 {
        let n = if (pkt_len as usize) < DROP_SNAP { pkt_len as usize } else { DROP_SNAP };
        // SAFETY: a probe read of at most DROP_SNAP bytes into the record's `data`.
        if n > 0 && unsafe { bpf_probe_read_kernel(ev.data.as_mut_ptr().cast(), n as u32, pkt as *const _) } == 0 {
            cap = n as u16;
        }
    }
    set(&mut ev.cap_len, cap);
    entry.submit(wake_flag(ring, size_of::<DropEvent>() as u64, ts));
    0
}
