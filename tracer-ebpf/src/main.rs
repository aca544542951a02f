//! ktrace's kernel programs, one file per probe family:
//!
//! * [`dns`]: `dns_egress` / `dns_ingress`, `cgroup_skb` programs attached at
//!   the cgroup2 root. They see every packet sent or received by a socket in
//!   any network namespace (forwarded packets have no socket and are not seen,
//!   so a message is observed once when it leaves its sender and once when it
//!   reaches its receiver). Packets to or from a configured DNS port are copied
//!   (IP header on, up to `SNAP_LEN` bytes) into this CPU's ring (`RINGS`).
//! * [`drops`]: `drop_kfree_skb` (`tp_btf`), packets the kernel dropped and why.
//! * [`conn`]: `conn_*` (tracepoints), TCP state changes, resets, retransmits.
//! * [`underlay`]: `underlay_egress` / `underlay_ingress` (tc/TCX), headers of
//!   every packet on an underlay interface.
//! * [`probes`]: `probe_*`, no-op programs `ktrace doctor` loads to find out
//!   which hook kinds this kernel allows.
//! * [`task`]: the current task's pid/comm/netns, shared by the families.
//!
//! This file holds what they share: the maps, the frozen globals userspace
//! writes at load time, the event-writing helpers, the licence and the panic
//! handler. The programs never block or alter traffic: `cgroup_skb` returns 1
//! (allow), tc returns `TCX_NEXT`.
#![no_std]
#![no_main]
#![expect(clippy::inline_always, reason = "eBPF helpers are inlined so each program is one verifier-checked function")]
#![expect(clippy::needless_pass_by_value, reason = "aya's program macros hand every entry point its context by value")]

mod conn;
mod dns;
mod drops;
mod log;
mod probes;
mod task;
mod underlay;

// This package's empty library (src/lib.rs): there for cargo's rebuild tracking only.
use tracer_ebpf as _;

use core::ptr::read_volatile;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::__sk_buff,
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_ringbuf_discard, bpf_ringbuf_output,
            bpf_ringbuf_query, bpf_ringbuf_reserve, bpf_ringbuf_submit,
        },
    },
    macros::{btf_map, map},
    maps::PerCpuArray,
};
use tracer_common::{
    EVENT_VERSION, EventHeader, EventKind, KernelOffsets, PORTS_MAX, PacketEvent, STATS_LEN, Stat, TpFields, pid_source,
};

/// One ring buffer per CPU, indexed by CPU number: a program reserves in
/// the ring of the CPU it runs on, so the ring's spinlock and producer
/// cache line are never shared between CPUs (with one ring for all, the
/// reservation was about a fifth of the DNS programs' time). Userspace sizes
/// the array to the possible CPUs, creates the rings (any size: the kernel
/// checks an inner ring's type and flags against this template, not its
/// size) and merges them by timestamp. The inner definition is the template
/// the kernel checks them against.
#[btf_map]
pub(crate) static RINGS: ArrayOfMaps<RingBuf<u8, 4096>, 1> = ArrayOfMaps::new();

#[map(name = "LOST")]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// Per-CPU scratch space: a `PacketEvent` is too large for the 512-byte stack
/// (the underlay programs, which copy with `bpf_ringbuf_output`).
#[map(name = "SCRATCH")]
pub(crate) static SCRATCH: PerCpuArray<PacketEvent> = PerCpuArray::with_max_entries(1, 0);

// Read-only globals, set by userspace at load time (`EbpfLoader::set_global`).
// A zero port ends the list.
#[unsafe(no_mangle)]
pub(crate) static DNS_PORTS: [u16; PORTS_MAX as usize] = [53, 0, 0, 0, 0, 0, 0, 0];
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
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
pub(crate) static DROP_SKIP: [u32; 2] = [u32::MAX, u32::MAX];
/// `SKB_DROP_REASON_MAX` from BTF: reasons at or above it are logged (`--bpf-log`).
#[cfg(feature = "bpf-log")]
#[unsafe(no_mangle)]
pub(crate) static DROP_REASON_MAX: u32 = u32::MAX;
/// Field offsets of the connection tracepoints, from their tracefs format files.
#[unsafe(no_mangle)]
pub(crate) static TP_SET_STATE: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
pub(crate) static TP_RECV_RESET: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
pub(crate) static TP_SEND_RESET: TpFields = TpFields::NONE;
#[unsafe(no_mangle)]
pub(crate) static TP_RETRANSMIT: TpFields = TpFields::NONE;
/// Bytes waiting in the ring buffer above which a producer wakes the reader.
/// Below it, events are submitted with `BPF_RB_NO_WAKEUP` and the reader drains
/// them on its timer: one wakeup per event costs ~10x a batched drain.
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u64 = 1 << 20;
/// Non-zero to read the current task through `bpf_get_current_task_btf` and
/// direct loads (the verifier turns them into fault-safe loads at BTF-checked
/// offsets) instead of one `bpf_probe_read_kernel` call per field (~1.6x
/// cheaper for the whole program in a hot loop: BENCHMARKS.md section 1).
/// Userspace sets it, and falls back to 0 if the verifier refuses.
#[unsafe(no_mangle)]
pub(crate) static TASK_BTF: u32 = 0;
/// Where `cgroup_skb` programs get the sender's pid/tgid (a
/// `tracer_common::pid_source` value): the helper where the kernel allows it
/// there (>= 6.10), else the task's fields. A frozen global, so the verifier
/// never sees the helper call on kernels that refuse it (dead branch).
#[unsafe(no_mangle)]
pub(crate) static PID_SOURCE: u32 = pid_source::HELPER;
/// Non-zero if `bpf_get_netns_cookie` is allowed in `cgroup_skb` (kernel >= 6.15).
#[unsafe(no_mangle)]
pub(crate) static USE_NETNS_COOKIE: u32 = 0;

pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;
pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;
pub(crate) const BPF_RB_AVAIL_DATA: u64 = 0;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// This CPU's ring, as the `struct bpf_map *` the ring helpers take; null
/// if userspace created none for this CPU (the event is then lost, and
/// counted). Programs run with migration disabled, so the CPU stays the
/// same until they return.
#[inline(always)]
pub(crate) fn cpu_ring() -> *mut c_void {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match RINGS.get(cpu) {
        Some(r) => core::ptr::from_ref(r).cast_mut().cast(),
        None => core::ptr::null_mut(),
    }
}

/// A reservation of a `T` in a ring; submitted or discarded exactly once.
pub(crate) struct Reserved<T> {
    ptr: *mut T,
}

impl<T> Reserved<T> {
    /// Reserves `size_of::<T>()` bytes in `ring` (from [`cpu_ring`]).
    #[inline(always)]
    pub(crate) fn new(ring: *mut c_void) -> Option<Self> {
        if ring.is_null() {
            return None;
        }
        // SAFETY: `ring` is a ring map pointer from `RINGS`; the size is a constant.
        let ptr = unsafe { bpf_ringbuf_reserve(ring, size_of::<T>() as u64, 0) }.cast::<T>();
        if ptr.is_null() { None } else { Some(Self { ptr }) }
    }

    /// The reserved record. Ring memory is not zeroed: every field
    /// userspace reads must be written.
    #[inline(always)]
    #[expect(clippy::mut_from_ref, reason = "the reservation is exclusively ours until submitted")]
    pub(crate) fn get(&self) -> &mut T {
        // SAFETY: a live reservation of a `T`, 8-aligned by the kernel.
        unsafe { &mut *self.ptr }
    }

    #[inline(always)]
    pub(crate) fn submit(self, flags: u64) {
        // SAFETY: a live reservation, consumed here.
        unsafe { bpf_ringbuf_submit(self.ptr.cast(), flags) };
    }

    #[inline(always)]
    pub(crate) fn discard(self, flags: u64) {
        // SAFETY: a live reservation, consumed here.
        unsafe { bpf_ringbuf_discard(self.ptr.cast(), flags) };
    }
}

/// Copies `size` bytes at `data` into `ring` (null: lost); false if lost.
///
/// # Safety
/// `data` must be valid for `size` bytes of reads.
#[inline(always)]
pub(crate) unsafe fn ring_output(ring: *mut c_void, data: *mut c_void, size: u64) -> bool {
    // SAFETY: the caller's contract; `ring` is from `RINGS`.
    !ring.is_null() && unsafe { bpf_ringbuf_output(ring, data, size, wake_flag_every(ring, size)) } == 0
}

#[inline(always)]
pub(crate) fn bump(stat: Stat) {
    if !matches!(stat, Stat::Matched) {
        log::debug!("packet not captured: stat {}", stat as u32);
    }
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_lost() {
    log::debug!("ring buffer full: event lost");
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

/// Reads `size_of::<T>()` bytes at `base + off` in kernel memory.
#[inline(always)]
pub(crate) unsafe fn kread<T: Copy + Default>(base: u64, off: u32) -> Option<T> {
    let mut v = T::default();
    // SAFETY: bpf_probe_read_kernel validates the address and fails cleanly.
    let r = unsafe {
        bpf_probe_read_kernel((&raw mut v).cast(), size_of::<T>() as u32, (base + u64::from(off)) as *const _)
    };
    if r == 0 { Some(v) } else { None }
}

/// Bytes of ring data between two forced wakeups while the ring is backed up.
const WAKE_STEP: u64 = 64 << 10;

/// Wakeup flag for a submission of `size` bytes to `ring`, stamped `ts`:
/// wake the reader only when the ring is filling up (`WAKEUP_BYTES` wait),
/// and then about once per `WAKE_STEP` bytes, not for every record. A
/// forced wakeup queues an `irq_work` whose self-IPI is, in a VM, an MSR
/// write and an exit: per record, about a quarter of the DNS programs' time
/// while a busy reader lagged (perf, `irq_work_queue` under
/// `bpf_ringbuf_submit`), and one wakeup already made the reader runnable.
/// The repeats keep `source::sched`'s catch-up boost coming while the
/// backlog lasts. `WAKEUP_BYTES` 0 wakes for every record.
///
/// The fill level (`bpf_ringbuf_query`) is asked by one record in
/// `1 << SAMPLE_SHIFT`, picked by bits of its timestamp (free: no memory
/// touched, no counter line to miss): `dns_egress` ~5 % faster
/// (docs/kernels.md). A wakeup then comes a few KiB late on average,
/// against a threshold of a quarter of the ring; the reader drains on its
/// timer anyway. Thresholds under `SAMPLE_FROM` ask on every record.
#[inline(always)]
pub(crate) fn wake_flag(ring: *mut c_void, size: u64, ts: u64) -> u64 {
    // SAFETY: loader-written global.
    let wake = unsafe { read_volatile(&raw const WAKEUP_BYTES) };
    if wake == 0 {
        return BPF_RB_FORCE_WAKEUP;
    }
    let sampled = wake >= SAMPLE_FROM;
    if sampled && (ts >> 6) & ((1 << SAMPLE_SHIFT) - 1) != 0 {
        return BPF_RB_NO_WAKEUP;
    }
    wake_at(ring, wake, if sampled { size << SAMPLE_SHIFT } else { size })
}

/// [`wake_flag`] asking the fill level on every record (`bpf_ringbuf_output`
/// callers, whose records are rarer).
#[inline(always)]
pub(crate) fn wake_flag_every(ring: *mut c_void, size: u64) -> u64 {
    // SAFETY: loader-written global.
    let wake = unsafe { read_volatile(&raw const WAKEUP_BYTES) };
    if wake == 0 {
        return BPF_RB_FORCE_WAKEUP;
    }
    wake_at(ring, wake, size)
}

/// Force a wakeup if `ring` holds at least `wake` bytes and its fill level
/// is less than `window` bytes past a multiple of the step (one look in a
/// step's worth of records wakes).
#[inline(always)]
fn wake_at(ring: *mut c_void, wake: u64, window: u64) -> u64 {
    // SAFETY: `ring` is a ring map pointer from `RINGS`.
    let avail = unsafe { bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) };
    if avail < wake {
        return BPF_RB_NO_WAKEUP;
    }
    // A power of two that divides the threshold, so the record crossing
    // the threshold also crosses a step.
    let low = wake & wake.wrapping_neg();
    let step = if low < WAKE_STEP { low } else { WAKE_STEP };
    if avail & (step - 1) < window { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

/// One record in `1 << SAMPLE_SHIFT` asks the ring's fill level.
const SAMPLE_SHIFT: u32 = 4;
/// `WAKEUP_BYTES` from which [`wake_flag`] samples (see there).
const SAMPLE_FROM: u64 = 64 << 10;

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
#[expect(clippy::cast_ptr_alignment, reason = "8-aligned by the function's contract")]
pub(crate) unsafe fn zero_words(p: *mut u8, words: usize) {
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
pub(crate) fn bounded_len(n: usize, max: usize) -> usize {
    let mut slot = n;
    // SAFETY: a local.
    let n = unsafe {
        core::ptr::write_volatile(&raw mut slot, n);
        read_volatile(&raw const slot)
    };
    (n.wrapping_sub(1) & (max - 1)) + 1
}

/// Stores `v` with a volatile store, so LLVM cannot merge it with its
/// neighbours into a `memset` call (see [`zero_words`]).
#[inline(always)]
pub(crate) fn set<T: Copy>(field: &mut T, v: T) {
    // SAFETY: a valid, aligned `&mut`.
    unsafe { core::ptr::from_mut(field).write_volatile(v) };
}

/// Starts an event header in place: kind, version, timestamp, everything
/// else zero. Returns the timestamp (the record is never read back).
#[inline(always)]
pub(crate) fn init_header(h: &mut EventHeader, kind: EventKind) -> u64 {
    // SAFETY: the header is 64 bytes and 8-aligned (asserted in tracer-common).
    unsafe { zero_words(core::ptr::from_mut(h).cast(), size_of::<EventHeader>() / 8) };
    h.kind = kind as u32;
    h.version = EVENT_VERSION;
    // SAFETY: helper without arguments.
    let ts = unsafe { bpf_ktime_get_ns() };
    h.ts_ns = ts;
    ts
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
