//! ktrace's kernel programs.
//!
//! * `dns_egress` / `dns_ingress`: `cgroup_skb` programs attached at the cgroup2
//!   root. They see every packet sent or received by a socket in any network
//!   namespace (forwarded packets have no socket and are not seen, so a
//!   message is observed once when it leaves its sender and once when it
//!   reaches its receiver). Packets to or from a configured DNS port are copied
//!   (IP header on, up to `SNAP_LEN` bytes) into the `EVENTS` ring buffer.
//! * `probe_*`: no-op programs `ktrace doctor` loads to find out which hook
//!   kinds this kernel allows.
//!
//! The programs never block or alter traffic: `cgroup_skb` returns 1 (allow).
#![no_std]
#![no_main]
#![expect(clippy::inline_always, reason = "eBPF helpers are inlined so each program is one verifier-checked function")]
#![expect(clippy::needless_pass_by_value, reason = "aya's program macros hand every entry point its context by value")]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task, bpf_get_netns_cookie, bpf_probe_read_kernel, bpf_ringbuf_output, bpf_skb_cgroup_id,
            bpf_skb_load_bytes,
        },
    },
    macros::{btf_tracepoint, cgroup_skb, classifier, fentry, kprobe, map, raw_tracepoint, socket_filter, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, SkBuffContext, TcContext,
        TracePointContext,
    },
};
use tracer_common::{
    ConnEvent, DROP_SNAP, DropEvent, EVENT_VERSION, EventHeader, EventKind, KernelOffsets, PACKET_EVENT_HDR_LEN,
    PORTS_MAX, PacketEvent, SNAP_LEN, STATS_LEN, Stat, TpFields, conn_kind, flags, hook, pid_source,
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

#[map(name = "DROP_SCRATCH")]
static DROP_SCRATCH: PerCpuArray<DropEvent> = PerCpuArray::with_max_entries(1, 0);

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
    skb_head: 0,
    skb_network_header: 0,
    skb_len: 0,
    skb_dev: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    sock_state: 0,
    skb_valid: 0,
    task_pid: 0,
    task_tgid: 0,
};
/// Drop reasons that are not drops (`NOT_DROPPED_YET`, `CONSUMED`), from BTF.
#[unsafe(no_mangle)]
static DROP_SKIP: [u32; 2] = [u32::MAX, u32::MAX];
/// Field offsets of the connection tracepoints, from their tracefs format files.
#[unsafe(no_mangle)]
static TP_SET_STATE: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
static TP_RECV_RESET: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
static TP_SEND_RESET: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
static TP_RETRANSMIT: TpFields = TpFields::NONE;
/// Bytes waiting in the ring buffer above which a producer wakes the reader.
/// Below it, events are submitted with `BPF_RB_NO_WAKEUP` and the reader drains
/// them on its timer: one wakeup per event costs ~10x a batched drain.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;
/// Non-zero to read the current task through `bpf_get_current_task_btf` and
/// direct loads (the verifier turns them into fault-safe loads at BTF-checked
/// offsets) instead of one `bpf_probe_read_kernel` call per field (~1.6x
/// cheaper for the whole program in a hot loop: BENCHMARKS.md section 1).
/// Userspace sets it, and falls back to 0 if the verifier refuses.
#[unsafe(no_mangle)]
static TASK_BTF: u32 = 0;
/// Where `cgroup_skb` programs get the sender's pid/tgid (a
/// `tracer_common::pid_source` value): the helper where the kernel allows it
/// there (>= 6.10), else the task's fields. A frozen global, so the verifier
/// never sees the helper call on kernels that refuse it (dead branch).
#[unsafe(no_mangle)]
static PID_SOURCE: u32 = pid_source::HELPER;
/// Non-zero if `bpf_get_netns_cookie` is allowed in `cgroup_skb` (kernel >= 6.15).
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

/// Wakeup flag for a submission: wake the reader only when the ring is filling up.
#[inline(always)]
fn wake_flag() -> u64 {
    // SAFETY: loader-written global.
    let wake = unsafe { read_volatile(&raw const WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

/// Zeroes `words` u64 words at `p`, one volatile store each.
///
/// LLVM turns runs of zero stores and `[0; N]` assignments into a `memset`,
/// which for byte arrays becomes a call to an out-of-line `memset`
/// subprogram: a BPF-to-BPF call with a map-value or stack pointer argument,
/// which 6.1's verifier refuses (`reg type unsupported for arg#0 function
/// memset`). Volatile stores are never merged into one.
///
/// # Safety
/// `p` must be 8-aligned and valid for `words * 8` bytes of writes.
#[inline(always)]
unsafe fn zero_words(p: *mut u8, words: usize) {
    let w = p.cast::<u64>();
    let mut i = 0;
    while i < words {
        // SAFETY: see the function's contract.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
}

/// `n` (already checked to be in `1..=max`, `max` a power of two) in a form
/// every verifier can bound: `((n - 1) & (max - 1)) + 1`, computed on a
/// value LLVM cannot see through (a volatile round trip through the stack).
///
/// Without it LLVM moves the `n > max` check onto the value `n` was derived
/// from (6.1's verifier does not carry the bound across), and 6.1 learns no
/// lower bound from `n != 0` (a zero length is refused for
/// `bpf_skb_load_bytes`); 6.12 and 6.18 follow both.
#[inline(always)]
fn bounded_len(n: usize, max: usize) -> usize {
    let mut slot = n;
    // SAFETY: a local.
    let n = unsafe {
        core::ptr::write_volatile(&raw mut slot, n);
        core::ptr::read_volatile(&raw const slot)
    };
    (n.wrapping_sub(1) & (max - 1)) + 1
}

/// Stores `v` with a volatile store, so LLVM cannot merge it with its
/// neighbours into a `memset` call (see [`zero_words`]).
#[inline(always)]
fn set<T: Copy>(field: &mut T, v: T) {
    // SAFETY: a valid, aligned `&mut`.
    unsafe { core::ptr::from_mut(field).write_volatile(v) };
}

/// Starts an event header in place: kind, version, timestamp, everything else zero.
#[inline(always)]
fn init_header(h: &mut EventHeader, kind: EventKind) {
    // SAFETY: the header is 64 bytes and 8-aligned (asserted in tracer-common).
    unsafe { zero_words(core::ptr::from_mut(h).cast(), core::mem::size_of::<EventHeader>() / 8) };
    h.kind = kind as u32;
    h.version = EVENT_VERSION;
    // SAFETY: helper without arguments.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
}

/// Fills pid/comm/netns of the current task into a header (tracepoints run in
/// whatever context the kernel was in: the caller decides if that is meaningful).
///
/// `in_skb`: called from a `cgroup_skb` program, where `PID_SOURCE` says how
/// to get the pid (`bpf_get_current_pid_tgid` is only allowed there since
/// 6.10); tracepoints always have the helper.
#[inline(always)]
fn fill_task(hdr: &mut EventHeader, in_skb: bool) -> u32 {
    // SAFETY: loader-written globals.
    let (off, src) = unsafe {
        (
            read_volatile(&raw const OFFSETS),
            if in_skb { read_volatile(&raw const PID_SOURCE) } else { pid_source::HELPER },
        )
    };
    if src == pid_source::HELPER {
        let id = bpf_get_current_pid_tgid();
        hdr.tgid = (id >> 32) as u32;
        hdr.tid = id as u32;
        if hdr.tgid == 0 {
            return 0;
        }
        hdr.flags |= flags::HAS_PROCESS;
    } else if src != pid_source::TASK {
        return 0;
    }
    if off.valid == 0 {
        return 0;
    }
    let pid_from_task = src == pid_source::TASK;
    // SAFETY: loader-written global.
    if unsafe { read_volatile(&raw const TASK_BTF) } != 0 {
        // SAFETY: a trusted BTF pointer to the current task; every load below
        // is at an offset userspace took from this kernel's BTF, so the
        // verifier checks it against the field's type and makes it fault-safe.
        return unsafe { fill_task_btf(hdr, &off, pid_from_task) };
    }
    // SAFETY: helper without arguments; probe reads at BTF offsets.
    unsafe {
        let task = bpf_get_current_task();
        if task == 0 {
            return 0;
        }
        if pid_from_task {
            hdr.tid = kread::<u32>(task, off.task_pid).unwrap_or(0);
            hdr.tgid = kread::<u32>(task, off.task_tgid).unwrap_or(0);
            if hdr.tgid == 0 {
                return 0;
            }
            hdr.flags |= flags::HAS_PROCESS;
        }
        let _ = bpf_probe_read_kernel(
            hdr.thread_comm.as_mut_ptr().cast(),
            16,
            (task + u64::from(off.task_comm)) as *const _,
        );
        if let Some(leader) = kread::<u64>(task, off.task_group_leader) {
            let _ = bpf_probe_read_kernel(
                hdr.comm.as_mut_ptr().cast(),
                16,
                (leader + u64::from(off.task_comm)) as *const _,
            );
        }
        if let Some(nsproxy) = kread::<u64>(task, off.task_nsproxy)
            && nsproxy != 0
            && let Some(net) = kread::<u64>(nsproxy, off.nsproxy_net_ns)
            && let Some(ino) = kread::<u32>(net, off.net_ns_inum)
        {
            return ino;
        }
    }
    0
}

/// [`fill_task`] with direct loads through BTF pointers.
///
/// # Safety
/// `off` must hold this kernel's BTF offsets (the verifier rejects the
/// program otherwise, which userspace handles by loading it with `TASK_BTF` 0).
#[inline(always)]
unsafe fn fill_task_btf(hdr: &mut EventHeader, off: &KernelOffsets, pid_from_task: bool) -> u32 {
    // SAFETY: see the function's contract; loads through BTF pointers are
    // rewritten by the verifier into exception-table loads (a NULL or bad
    // pointer reads as zero).
    unsafe {
        let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf() as usize;
        if pid_from_task {
            hdr.tid = read_volatile((task + off.task_pid as usize) as *const u32);
            hdr.tgid = read_volatile((task + off.task_tgid as usize) as *const u32);
            if hdr.tgid == 0 {
                return 0;
            }
            hdr.flags |= flags::HAS_PROCESS;
        }
        hdr.thread_comm = read_volatile((task + off.task_comm as usize) as *const [u8; 16]);
        let leader: usize = read_volatile((task + off.task_group_leader as usize) as *const usize);
        hdr.comm = read_volatile((leader + off.task_comm as usize) as *const [u8; 16]);
        let nsproxy: usize = read_volatile((task + off.task_nsproxy as usize) as *const usize);
        if nsproxy == 0 {
            return 0;
        }
        let net: usize = read_volatile((nsproxy + off.nsproxy_net_ns as usize) as *const usize);
        if net == 0 {
            return 0;
        }
        read_volatile((net + off.net_ns_inum as usize) as *const u32)
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
    let size = (core::mem::size_of::<DropEvent>() - DROP_SNAP + ev.cap_len as usize) as u64;
    let size =
        if size > core::mem::size_of::<DropEvent>() as u64 { core::mem::size_of::<DropEvent>() as u64 } else { size };
    // SAFETY: `ev` is size_of::<DropEvent>() bytes and size is at most that.
    let r = unsafe {
        bpf_ringbuf_output((&raw const EVENTS).cast_mut().cast(), core::ptr::from_mut(ev).cast(), size, wake_flag())
    };
    if r != 0 {
        count_lost();
    }
    0
}

/// Reads a tracepoint field at `off` if present.
#[inline(always)]
fn tp_field<T: Copy + Default>(ctx: &TracePointContext, off: u16) -> T {
    if off == u16::MAX {
        return T::default();
    }
    // SAFETY: offset from the tracepoint's own format description.
    unsafe { ctx.read_at::<T>(off as usize).unwrap_or_default() }
}

#[inline(always)]
fn conn_event(ctx: &TracePointContext, f: &TpFields, what: u8) -> u32 {
    if f.protocol != u16::MAX && tp_field::<u16>(ctx, f.protocol) != u16::from(IPPROTO_TCP) {
        return 0;
    }
    let mut slot = core::mem::MaybeUninit::<ConnEvent>::uninit();
    // SAFETY: the stack slot is 8-aligned and size_of::<ConnEvent>() bytes
    // (a multiple of 8, asserted in tracer-common); all-zero is a valid
    // ConnEvent (integers and byte arrays only).
    let ev = unsafe {
        zero_words(slot.as_mut_ptr().cast(), core::mem::size_of::<ConnEvent>() / 8);
        slot.assume_init_mut()
    };
    init_header(&mut ev.hdr, EventKind::Conn);
    ev.sock = tp_field::<u64>(ctx, f.skaddr);
    ev.what = what;
    ev.family = tp_field::<u16>(ctx, f.family) as u8;
    ev.sport = tp_field::<u16>(ctx, f.sport);
    ev.dport = tp_field::<u16>(ctx, f.dport);
    // SAFETY: saddr and daddr are 16 bytes at 8-aligned offsets (88, 104) of
    // the 8-aligned event; word stores, so no memcpy is emitted.
    unsafe {
        let sa = (&raw mut ev.saddr).cast::<u64>();
        let da = (&raw mut ev.daddr).cast::<u64>();
        if ev.family == 2 {
            sa.cast::<u32>().write_volatile(tp_field::<u32>(ctx, f.saddr));
            da.cast::<u32>().write_volatile(tp_field::<u32>(ctx, f.daddr));
        } else {
            let at = |off: u16, i: u16| if off == u16::MAX { off } else { off + 8 * i };
            sa.write_volatile(tp_field::<u64>(ctx, f.saddr_v6));
            sa.add(1).write_volatile(tp_field::<u64>(ctx, at(f.saddr_v6, 1)));
            da.write_volatile(tp_field::<u64>(ctx, f.daddr_v6));
            da.add(1).write_volatile(tp_field::<u64>(ctx, at(f.daddr_v6, 1)));
        }
    }
    if what == conn_kind::STATE {
        ev.old_state = tp_field::<i32>(ctx, f.oldstate) as u8;
        ev.new_state = tp_field::<i32>(ctx, f.newstate) as u8;
    } else if f.state != u16::MAX {
        ev.old_state = tp_field::<i32>(ctx, f.state) as u8;
    } else {
        // SAFETY: loader-written global; probe read of the socket's state.
        let off = unsafe { read_volatile(&raw const OFFSETS) };
        if off.skb_valid != 0 && ev.sock != 0 {
            // SAFETY: as above.
            ev.old_state = unsafe { kread::<u8>(ev.sock, off.sock_state) }.unwrap_or(0);
        }
    }
    // connect() (CLOSE → SYN_SENT) runs in the connecting process; resets and
    // most retransmits run in softirq, where "current" is whoever was interrupted.
    let process_ctx = what == conn_kind::STATE && ev.new_state == 2;
    if process_ctx {
        ev.netns_ino = fill_task(&mut ev.hdr, false);
    }
    // SAFETY: a plain stack value of its own size.
    let r = unsafe {
        bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            core::ptr::from_mut(ev).cast(),
            core::mem::size_of::<ConnEvent>() as u64,
            wake_flag(),
        )
    };
    if r != 0 {
        count_lost();
    }
    0
}

/// `sock:inet_sock_set_state`: TCP state changes (connect, established, close).
#[tracepoint]
fn conn_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_SET_STATE) };
    conn_event(&ctx, &f, conn_kind::STATE)
}

/// `tcp:tcp_receive_reset`: an RST arrived (refused connect or reset connection).
#[tracepoint]
fn conn_recv_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_RECV_RESET) };
    conn_event(&ctx, &f, conn_kind::RESET_RECEIVED)
}

/// `tcp:tcp_send_reset`: this host sent an RST.
#[tracepoint]
fn conn_send_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_SEND_RESET) };
    conn_event(&ctx, &f, conn_kind::RESET_SENT)
}

/// `tcp:tcp_retransmit_skb`: a segment (in `SYN_SENT`: a SYN) was retransmitted.
#[tracepoint]
fn conn_retransmit(ctx: TracePointContext) -> u32 {
    // SAFETY: loader-written global.
    let f = unsafe { read_volatile(&raw const TP_RETRANSMIT) };
    conn_event(&ctx, &f, conn_kind::RETRANSMIT)
}

/// tc (TCX) on an underlay interface: every IP packet's headers (outer and,
/// for VXLAN, inner), for matching what left one node with what reached another.
#[inline(always)]
fn underlay(ctx: &TcContext, which: u8) -> i32 {
    const TCX_NEXT: i32 = -1;
    let Ok(proto) = ctx.load::<u16>(12) else { return TCX_NEXT };
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
    ev.pkt_len = len.saturating_sub(14);
    ev.hook = which;
    ev.ip_version = ver;
    let avail = len as usize;
    if avail <= 14 {
        return TCX_NEXT;
    }
    let mut n = avail - 14;
    if n > DROP_SNAP {
        n = DROP_SNAP;
        ev.hdr.flags |= flags::TRUNCATED;
    }
    if n == 0 {
        return TCX_NEXT;
    }
    let n = bounded_len(n, DROP_SNAP);
    // SAFETY: n in 1..=DROP_SNAP <= SNAP_LEN, the size of ev.data.
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 14, ev.data.as_mut_ptr().cast(), n as u32) } != 0 {
        bump(Stat::LoadError);
        return TCX_NEXT;
    }
    ev.cap_len = n as u16;
    let size = (PACKET_EVENT_HDR_LEN + n) as u64;
    // SAFETY: `ev` is PACKET_EVENT_HDR_LEN + SNAP_LEN bytes and size is at most that.
    let r = unsafe {
        bpf_ringbuf_output((&raw const EVENTS).cast_mut().cast(), core::ptr::from_mut(ev).cast(), size, wake_flag())
    };
    if r != 0 {
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
