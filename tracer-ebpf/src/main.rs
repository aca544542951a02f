//! ktrace's kernel programs.
//!
//! * `dns_egress` / `dns_ingress`: cgroup_skb programs attached at the cgroup2
//!   root. They see every packet sent or received by a socket in any network
//!   namespace (forwarded packets have no socket and are not seen, so a
//!   message is observed once when it leaves its sender and once when it
//!   reaches its receiver). Packets to or from a configured DNS port are copied
//!   (IP header on, up to `SNAP_LEN` bytes) into the `EVENTS` ring buffer.
//! * `probe_*`: no-op programs `ktrace doctor` loads to find out which hook
//!   kinds this kernel allows.
//!
//! The programs never block or alter traffic: cgroup_skb returns 1 (allow).
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task, bpf_get_netns_cookie, bpf_probe_read_kernel,
            bpf_ringbuf_output, bpf_skb_cgroup_id, bpf_skb_load_bytes,
        },
    },
    macros::{
        btf_tracepoint, cgroup_skb, classifier, fentry, kprobe, map, raw_tracepoint,
        socket_filter, tracepoint,
    },
    maps::{PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, SkBuffContext,
        TcContext, TracePointContext,
    },
};
use tracer_common::{
    EVENT_VERSION, EventKind, KernelOffsets, PACKET_EVENT_HDR_LEN, PORTS_MAX, PacketEvent,
    SNAP_LEN, STATS_LEN, Stat, flags, hook,
};

/// Ring buffer size; userspace may override it at load time.
const RING_BYTES: u32 = 16 << 20;

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// Per-CPU scratch space: a `PacketEvent` is too large for the 512-byte stack.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<PacketEvent> = PerCpuArray::with_max_entries(1, 0);

// Read-only globals, set by userspace at load time (`EbpfLoader::set_global`).
// A zero port ends the list.
#[unsafe(no_mangle)]
static DNS_PORTS: [u16; PORTS_MAX as usize] = [53, 0, 0, 0, 0, 0, 0, 0];
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_group_leader: 0,
    task_comm: 0,
    task_nsproxy: 0,
    nsproxy_net_ns: 0,
    net_ns_inum: 0,
    valid: 0,
};
/// Bytes waiting in the ring buffer above which a producer wakes the reader.
/// Below it, events are submitted with `BPF_RB_NO_WAKEUP` and the reader drains
/// them on its timer: one wakeup per event costs ~10x a batched drain.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;
/// Non-zero if `bpf_get_netns_cookie` is allowed in cgroup_skb (kernel >= 6.15).
#[unsafe(no_mangle)]
static USE_NETNS_COOKIE: u32 = 0;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
fn bump(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn count_lost() {
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn load<T: Copy>(ctx: &SkBuffContext, off: u32) -> Option<T> {
    ctx.load::<T>(off as usize).ok()
}

#[inline(always)]
fn port_wanted(port: u16) -> bool {
    let mut i = 0;
    while i < PORTS_MAX as usize {
        // SAFETY: reading a global the loader may have rewritten.
        let p = unsafe { read_volatile(&DNS_PORTS[i]) };
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

/// Reads `size_of::<T>()` bytes at `base + off` in kernel memory.
#[inline(always)]
unsafe fn kread<T: Copy + Default>(base: u64, off: u32) -> Option<T> {
    let mut v = T::default();
    // SAFETY: bpf_probe_read_kernel validates the address and fails cleanly.
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            core::mem::size_of::<T>() as u32,
            (base + u64::from(off)) as *const _,
        )
    };
    if r == 0 { Some(v) } else { None }
}

/// Fills pid, comm and netns inode from the current task (egress only).
#[inline(always)]
fn fill_process(ev: &mut PacketEvent) {
    let id = bpf_get_current_pid_tgid();
    ev.hdr.tgid = (id >> 32) as u32;
    ev.hdr.tid = id as u32;
    if ev.hdr.tgid == 0 {
        return; // idle/softirq on the swapper: no process
    }
    ev.hdr.flags |= flags::HAS_PROCESS;
    // SAFETY: reading the globals written by the loader.
    let off = unsafe { read_volatile(&OFFSETS) };
    if off.valid == 0 {
        return;
    }
    // SAFETY: helper with no arguments.
    let task = unsafe { bpf_get_current_task() };
    if task == 0 {
        return;
    }
    // SAFETY: probe reads of kernel memory at BTF-derived offsets.
    unsafe {
        let _ = bpf_probe_read_kernel(
            ev.hdr.thread_comm.as_mut_ptr().cast(),
            16,
            (task + u64::from(off.task_comm)) as *const _,
        );
        if let Some(leader) = kread::<u64>(task, off.task_group_leader) {
            let _ = bpf_probe_read_kernel(
                ev.hdr.comm.as_mut_ptr().cast(),
                16,
                (leader + u64::from(off.task_comm)) as *const _,
            );
        }
        if let Some(nsproxy) = kread::<u64>(task, off.task_nsproxy)
            && nsproxy != 0
            && let Some(net) = kread::<u64>(nsproxy, off.nsproxy_net_ns)
            && let Some(ino) = kread::<u32>(net, off.net_ns_inum)
        {
            ev.netns_ino = ino;
            ev.hdr.flags |= flags::HAS_NETNS_INO;
        }
    }
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, which: u8) -> i32 {
    bump(Stat::Seen);
    let Some((ver, proto, l4)) = l4_of(ctx) else {
        return 1;
    };
    if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
        return 1;
    }
    let (Some(sport), Some(dport)) = (load::<u16>(ctx, l4), load::<u16>(ctx, l4 + 2)) else {
        bump(Stat::ParseError);
        return 1;
    };
    if !port_wanted(u16::from_be(sport)) && !port_wanted(u16::from_be(dport)) {
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
    ev.hdr.kind = EventKind::DnsPacket as u32;
    ev.hdr.version = EVENT_VERSION;
    ev.hdr.flags = 0;
    ev.hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.hdr.tid = 0;
    ev.hdr.tgid = 0;
    ev.hdr.comm = [0; 16];
    ev.hdr.thread_comm = [0; 16];
    // SAFETY: helper on our own context.
    ev.hdr.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    ev.netns_ino = 0;
    ev.netns_cookie = 0;
    // SAFETY: reading a loader-written global.
    if unsafe { read_volatile(&USE_NETNS_COOKIE) } != 0 {
        // SAFETY: helper on our own context.
        ev.netns_cookie = unsafe { bpf_get_netns_cookie(skb.cast()) };
        ev.hdr.flags |= flags::HAS_NETNS_COOKIE;
    }
    // SAFETY: reading the context's ifindex field.
    ev.ifindex = unsafe { (*skb).ifindex };
    ev.pkt_len = len;
    ev.hook = which;
    ev.ip_version = ver;
    if which == hook::CGROUP_EGRESS {
        fill_process(ev);
    }
    let mut n = len as usize;
    if n > SNAP_LEN {
        n = SNAP_LEN;
        ev.hdr.flags |= flags::TRUNCATED;
    }
    if n == 0 {
        return 1;
    }
    // SAFETY: n is in 1..=SNAP_LEN, the size of ev.data.
    let r = unsafe {
        bpf_skb_load_bytes(skb.cast(), 0, ev.data.as_mut_ptr().cast(), n as u32)
    };
    if r != 0 {
        bump(Stat::LoadError);
        return 1;
    }
    ev.cap_len = n as u16;
    // SAFETY: loader-written global; the ring buffer map.
    let wake = unsafe { read_volatile(&WAKEUP_BYTES) };
    let fl = if EVENTS.query(BPF_RB_AVAIL_DATA) >= wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    let size = (PACKET_EVENT_HDR_LEN + n) as u64;
    // SAFETY: `ev` is PACKET_EVENT_HDR_LEN + SNAP_LEN bytes and size is at most that.
    let r = unsafe {
        bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            core::ptr::from_mut(ev).cast(),
            size,
            fl,
        )
    };
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

// ---- `ktrace doctor` probes: each does nothing, loading it is the test. ----

#[tracepoint]
fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "kfree_skb")]
fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[kprobe]
fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "tcp_connect")]
fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[classifier]
fn probe_tc(_ctx: TcContext) -> i32 {
    0 // TC_ACT_OK
}

#[socket_filter]
fn probe_socket_filter(_ctx: SkBuffContext) -> i64 {
    0
}

#[cgroup_skb]
fn probe_cgroup_skb(_ctx: SkBuffContext) -> i32 {
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// `__sk_buff` is only named for the doc link above.
#[allow(dead_code, reason = "type alias keeps the binding import used")]
type _Skb = __sk_buff;
