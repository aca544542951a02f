//! DNS capture: `dns_egress` / `dns_ingress` (`cgroup_skb` at the cgroup2
//! root) copy packets to or from a configured DNS port into the ring.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_get_netns_cookie, bpf_get_smp_processor_id,
            bpf_sk_storage_get, bpf_skb_cgroup_id, bpf_skb_load_bytes,
        },
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockAddrContext, SockContext},
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use tracer_common::{
    DEDUPE_ENTRIES, DedupeKey, EventHeader, EventKind, PACKET_EVENT_HDR_LEN, PORTS_MAX, PacketEvent, PacketRefEvent,
    REF_HEAD_LEN, SNAP_LEN, Stat, flags, hook, pid_source,
};

use crate::{
    BPF_RB_NO_WAKEUP, DNS_PORTS, IPPROTO_TCP, IPPROTO_UDP, OFFSETS, PID_SOURCE, Reserved, TASK_BTF, USE_NETNS_COOKIE,
    bounded_len, bump, count_lost, cpu_ring, init_header, kread, set, task::fill_task, wake_flag, zero_words,
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
fn ports_direct(skb: *mut __sk_buff) -> Option<(u8, u8, u16, u16)> {
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
    seq: u64,
    data: [u8; N],
}

const _: () = assert!(core::mem::offset_of!(PacketSlot<128>, data) == PACKET_EVENT_HDR_LEN);
const _: () = assert!(size_of::<PacketSlot<SNAP_LEN>>() == size_of::<PacketEvent>());
const _: () = assert!(size_of::<PacketSlot<REF_HEAD_LEN>>() == size_of::<PacketRefEvent>());

/// The egress sightings of DNS messages, by [`DedupeKey`]: the `seq` of the
/// ring record carrying each one's payload. Written at egress after that
/// record's reservation, so a reference to it is always later in ring order.
#[map(name = "DNS_DEDUPE")]
static DNS_DEDUPE: LruHashMap<DedupeKey, u64> = LruHashMap::with_max_entries(DEDUPE_ENTRIES, 0);

/// Per-CPU counter behind the egress records' `seq` (the CPU number in the top 16 bits).
#[map(name = "DNS_SEQ")]
static DNS_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero: one payload per DNS message (egress sightings remembered,
/// ingress sightings of a remembered message sent as a `PacketRefEvent`).
/// A frozen global (`KTRACE_NO_DEDUPE=1` sets it to 0): where it is 0 the
/// verifier never sees the map calls.
#[unsafe(no_mangle)]
static DEDUPE: u32 = 1;

/// A new, never-zero sequence number for an egress record (0 if the counter is missing).
#[inline(always)]
fn next_seq() -> u64 {
    let Some(c) = DNS_SEQ.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU; helper without arguments.
    unsafe {
        *c += 1;
        (u64::from(bpf_get_smp_processor_id()) << 48) | (*c & 0xffff_ffff_ffff)
    }
}

/// Reads `N` bytes at packet address `p` as one integer (byte by byte: no
/// alignment assumed).
#[inline(always)]
unsafe fn rd<T: Copy>(p: usize) -> T {
    // SAFETY: the caller checked the bytes are inside the packet.
    unsafe { (p as *const T).read_unaligned() }
}

/// The key of a UDP DNS message for [`DNS_DEDUPE`] and the length of its IP
/// and UDP headers, read directly from the packet's linear head (IPv4
/// without options, IPv6 without extension headers, at least a DNS id and
/// flags after the UDP header); None for anything else (sent in full).
#[inline(always)]
fn dedupe_key(skb: *mut __sk_buff, ver: u8) -> Option<(DedupeKey, usize)> {
    // SAFETY: reading our own context's fields.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let mut key = DedupeKey { addr: [0; 4], port: 0, id: 0, len: 0, proto: IPPROTO_UDP, qr: 0 };
    let hl = if ver == 4 {
        if data + Ipv4Hdr::LEN + UdpHdr::LEN + 4 > end {
            return None;
        }
        // SAFETY: 32 bytes checked above.
        unsafe {
            if rd::<u8>(data) != 0x45 || rd::<u8>(data + 9) != IPPROTO_UDP {
                return None;
            }
            let qr = rd::<u8>(data + 30) >> 7;
            // The client side: a query's source, a response's destination.
            let (a, p) = if qr == 0 { (data + 12, data + 20) } else { (data + 16, data + 22) };
            key.addr[0] = rd::<u32>(a);
            key.port = rd::<u16>(p);
            key.id = rd::<u16>(data + 28);
            key.len = rd::<u16>(data + 24);
            key.qr = qr;
        }
        Ipv4Hdr::LEN + UdpHdr::LEN
    } else {
        if data + Ipv6Hdr::LEN + UdpHdr::LEN + 4 > end {
            return None;
        }
        // SAFETY: 52 bytes checked above.
        unsafe {
            if rd::<u8>(data + 6) != IPPROTO_UDP {
                return None;
            }
            let qr = rd::<u8>(data + 50) >> 7;
            let (a, p) = if qr == 0 { (data + 8, data + 40) } else { (data + 24, data + 42) };
            key.addr[0] = rd::<u32>(a);
            key.addr[1] = rd::<u32>(a + 4);
            key.addr[2] = rd::<u32>(a + 8);
            key.addr[3] = rd::<u32>(a + 12);
            key.port = rd::<u16>(p);
            key.id = rd::<u16>(data + 48);
            key.len = rd::<u16>(data + 44);
            key.qr = qr;
        }
        Ipv6Hdr::LEN + UdpHdr::LEN
    };
    Some((key, hl))
}

/// What a record is: a full sighting (`seq` 0, or the sequence number it
/// gets and the key it is remembered under) or a reference (`seq` of the
/// egress record it refers to).
#[derive(Clone, Copy)]
enum Emit<'a> {
    Full(Option<&'a DedupeKey>),
    Ref(u64),
}

/// Reserves a `PacketSlot<N>`, fills it and loads the first `n` (1..=N) bytes
/// of the packet into it.
#[inline(always)]
fn emit<const N: usize>(ctx: &SkBuffContext, which: u8, ver: u8, udp: bool, n: usize, truncated: bool, what: Emit) {
    let ring = cpu_ring();
    let Some(entry) = Reserved::<PacketSlot<N>>::new(ring) else {
        count_lost();
        return;
    };
    // Every field userspace reads is written below (ring memory is not
    // zeroed), and nothing is read back from it: the record's lines may
    // still be on their way to this CPU (the ring's memory is cold on a
    // quiet CPU), and a store waits for them in the store buffer where a
    // load (`flags |= …`) stalled the program. The flags are collected in
    // `fl` and stored once.
    let ev = entry.get();
    let skb = ctx.skb.skb;
    let kind = if let Emit::Ref(_) = what { EventKind::DnsPacketRef } else { EventKind::DnsPacket };
    let ts = init_header(&mut ev.hdr, kind);
    let mut fl = if truncated { flags::TRUNCATED } else { 0 };
    // The socket's owner where the socket hooks recorded one: on egress the
    // sender, on ingress the receiver.
    // SAFETY: reading a loader-written global.
    let owner = if unsafe { read_volatile(&raw const SOCK_ATTR) } != 0 {
        sock_owner(skb, which == hook::CGROUP_EGRESS && udp)
    } else {
        core::ptr::null_mut()
    };
    let (cgroup_id, cookie) = socket_ids(skb, owner);
    ev.hdr.cgroup_id = cgroup_id;
    set(&mut ev.netns_cookie, cookie);
    if cookie != 0 {
        fl |= flags::HAS_NETNS_COOKIE;
    }
    // SAFETY: reading the context's fields.
    unsafe {
        ev.ifindex = (*skb).ifindex;
        ev.pkt_len = (*skb).len;
    }
    ev.hook = which;
    ev.ip_version = ver;
    // Without an owner, on egress, the current task (egress of a socket
    // runs in the sending task: UDP sendmsg, TCP send).
    let by_sock = if owner.is_null() { 0 } else { owner_into(owner, &mut ev.hdr) };
    let mut ino = 0;
    if by_sock != 0 {
        fl |= by_sock;
        // SAFETY: the socket's storage (non-null), valid until this program returns.
        ino = unsafe { (*owner).netns_ino };
    } else if which == hook::CGROUP_EGRESS {
        let (i, f) = fill_task(&mut ev.hdr, true);
        ino = i;
        fl |= f;
    }
    set(&mut ev.netns_ino, ino);
    if ino != 0 {
        fl |= flags::HAS_NETNS_INO;
    }
    ev.hdr.flags = fl;
    let n = bounded_len(n, N);
    // SAFETY: n is in 1..=N, the size of ev.data.
    let r = unsafe { bpf_skb_load_bytes(skb.cast(), 0, ev.data.as_mut_ptr().cast(), n as u32) };
    if r != 0 {
        bump(Stat::LoadError);
        entry.discard(BPF_RB_NO_WAKEUP);
        return;
    }
    ev.cap_len = n as u16;
    match what {
        Emit::Ref(seq) => set(&mut ev.seq, seq),
        Emit::Full(None) => set(&mut ev.seq, 0),
        Emit::Full(Some(key)) => {
            let seq = next_seq();
            // After the reservation, so whatever refers to this record comes
            // later in ring order; before the submission, so it is never read
            // before it is remembered (no reference can be missed for that).
            if seq != 0 && DNS_DEDUPE.insert(key, seq, 0).is_ok() {
                set(&mut ev.seq, seq);
            } else {
                bump(Stat::DedupeStoreError);
                set(&mut ev.seq, 0);
            }
        }
    }
    entry.submit(wake_flag(ring, size_of::<PacketSlot<N>>() as u64, ts));
}

/// Who a socket belongs to: written when the socket is created
/// (`cgroup/sock_create`), refreshed when it connects or sends to a DNS port
/// (`cgroup/connect4|6`, `cgroup/sendmsg4|6`), and read by the `cgroup_skb`
/// programs through the packet's socket, so the task is read once per socket
/// instead of once per packet, and ingress knows its receiver.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SockOwner {
    /// tid, tgid, comm, thread comm and the `HAS_PROCESS` flag, in the
    /// header's own layout (filled by `fill_task`); `cgroup_id` is the
    /// socket's, cached by the `cgroup_skb` programs (0 = not yet);
    /// the other fields are unused.
    hdr: EventHeader,
    /// Network namespace inode of the task that created the socket (0 = unknown).
    netns_ino: u32,
    pad: u32,
    /// The socket's network namespace cookie, cached by the `cgroup_skb`
    /// programs (0 = not yet, or the kernel gives none).
    netns_cookie: u64,
}

/// Socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`), a BTF-defined map as
/// the kernel requires. `BPF_F_CLONE`: a socket accepted from a listener
/// inherits the listener's owner (a TCP server's connections).
#[repr(C)]
pub(crate) struct SockStorage {
    r#type: *const [i32; 24], // BPF_MAP_TYPE_SK_STORAGE
    key: *const i32,
    value: *const SockOwner,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; 1 | 512], // BPF_F_NO_PREALLOC | BPF_F_CLONE
}
// SAFETY: placeholder pointers for the loader; never dereferenced.
unsafe impl Sync for SockStorage {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_OWNER")]
static SOCK_OWNER: SockStorage = SockStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// Non-zero when the socket hooks are loaded and attached: the `cgroup_skb`
/// programs then look the owner up in `SOCK_OWNER` before reading the task.
/// A frozen global: where it is 0, the verifier never sees the map calls.
#[unsafe(no_mangle)]
static SOCK_ATTR: u32 = 0;

#[inline(always)]
fn owner_map() -> *mut core::ffi::c_void {
    (&raw const SOCK_OWNER).cast_mut().cast()
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const BPF_SK_STORAGE_GET_F_CREATE: u64 = 1;

/// The storage of socket `sk` (a `struct bpf_sock *` the verifier knows as
/// a socket, or a `cgroup_sock` context), created if `create`; null if none.
#[inline(always)]
fn owner_of(sk: *mut core::ffi::c_void, create: bool) -> *mut SockOwner {
    let fl = if create { BPF_SK_STORAGE_GET_F_CREATE } else { 0 };
    // SAFETY: the helper checks the socket (a full socket, else NULL).
    unsafe { bpf_sk_storage_get(owner_map(), sk, core::ptr::null_mut(), fl) }.cast()
}

/// (Re)writes the owner from the current task.
#[inline(always)]
fn fill_owner(o: &mut SockOwner) {
    // SAFETY: the header is 64 bytes and 8-aligned.
    unsafe { zero_words(core::ptr::from_mut(&mut o.hdr).cast(), size_of::<EventHeader>() / 8) };
    let (ino, fl) = fill_task(&mut o.hdr, true);
    o.hdr.flags = fl;
    set(&mut o.netns_ino, ino);
    set(&mut o.netns_cookie, 0);
}

/// The current thread id, as cheaply as this kernel allows (0 = unknown).
#[inline(always)]
fn current_tid() -> u32 {
    // SAFETY: loader-written globals.
    let (src, btf, off) = unsafe {
        (read_volatile(&raw const PID_SOURCE), read_volatile(&raw const TASK_BTF), read_volatile(&raw const OFFSETS))
    };
    if src == pid_source::HELPER {
        return bpf_get_current_pid_tgid() as u32;
    }
    if src != pid_source::TASK || off.valid == 0 {
        return 0;
    }
    if btf != 0 {
        // SAFETY: a BTF load at this kernel's offset (see `fill_task_btf`).
        return unsafe {
            let task = bpf_get_current_task_btf() as usize;
            read_volatile((task + off.task_pid as usize) as *const u32)
        };
    }
    // SAFETY: probe read at a BTF offset.
    unsafe { kread::<u32>(bpf_get_current_task(), off.task_pid) }.unwrap_or(0)
}

/// A socket is created: record its owner (inet UDP and TCP sockets only).
#[cgroup_sock(sock_create)]
fn dns_sock_create(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: reading our own context's fields.
    let (family, proto) = unsafe { ((*sk).family, (*sk).protocol) };
    if (family != AF_INET && family != AF_INET6) || (proto != u32::from(IPPROTO_UDP) && proto != u32::from(IPPROTO_TCP))
    {
        return 1;
    }
    let o = owner_of(sk.cast(), true);
    if !o.is_null() {
        // SAFETY: the socket's storage, valid until this program returns.
        fill_owner(unsafe { &mut *o });
    }
    1
}

/// A socket connects or sends to an address: if that is a DNS port, make
/// sure its owner is the current thread (sockets from before ktrace started
/// have none; a socket may have changed hands since it was created).
#[inline(always)]
fn refresh(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: reading our own context's fields.
    let (port, sk) = unsafe { ((*sa).user_port, (*sa).__bindgen_anon_1.sk) };
    if !port_wanted(u16::from_be(port as u16)) {
        return 1;
    }
    let o = owner_of(sk.cast(), true);
    if o.is_null() {
        return 1;
    }
    // SAFETY: the socket's storage, valid until this program returns.
    let o = unsafe { &mut *o };
    let tid = current_tid();
    if tid == 0 || o.hdr.tid != tid {
        fill_owner(o);
    }
    1
}

#[cgroup_sock_addr(connect4)]
fn dns_connect4(ctx: SockAddrContext) -> i32 {
    refresh(&ctx)
}

#[cgroup_sock_addr(connect6)]
fn dns_connect6(ctx: SockAddrContext) -> i32 {
    refresh(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
fn dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    refresh(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
fn dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    refresh(&ctx)
}

/// The owner record of the packet's socket; null if the packet has no
/// full socket or the socket has none. `create`: on a miss, record the
/// current task as the owner (UDP egress, which always runs in the sending
/// thread).
#[inline(always)]
fn sock_owner(skb: *mut __sk_buff, create: bool) -> *mut SockOwner {
    // SAFETY: reading our own context's field.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return core::ptr::null_mut();
    }
    let o = owner_of(sk.cast(), false);
    if !o.is_null() || !create {
        return o;
    }
    let o = owner_of(sk.cast(), true);
    if !o.is_null() {
        // SAFETY: the socket's storage, valid until this program returns.
        fill_owner(unsafe { &mut *o });
    }
    o
}

/// The packet socket's cgroup id and network namespace cookie (0: none).
/// Both are fixed for a socket's life (an accepted socket shares its
/// listener's), so they are kept in its owner record (`hdr.cgroup_id`,
/// `netns_cookie`; 0 = not yet known, which neither ever is) and the
/// helpers run once per socket instead of once per packet: they chase
/// cold pointers (socket → cgroup → kernfs node, socket → netns) and were
/// ~15 % of a DNS packet's in-kernel time.
#[inline(always)]
fn socket_ids(skb: *mut __sk_buff, owner: *mut SockOwner) -> (u64, u64) {
    // SAFETY: reading a loader-written global.
    let want_cookie = unsafe { read_volatile(&raw const USE_NETNS_COOKIE) } != 0;
    let (mut cg, mut cookie) = (0, 0);
    if !owner.is_null() {
        // SAFETY: the socket's storage, valid until this program returns.
        // Another CPU may be rewriting it (`fill_owner` zeroes it first): a
        // torn read gives 0, which is then looked up again.
        unsafe {
            cg = read_volatile(&raw const (*owner).hdr.cgroup_id);
            cookie = read_volatile(&raw const (*owner).netns_cookie);
        }
    }
    if cg == 0 {
        // SAFETY: helper on our own context.
        cg = unsafe { bpf_skb_cgroup_id(skb) };
        if !owner.is_null() {
            // SAFETY: as above.
            unsafe { (&raw mut (*owner).hdr.cgroup_id).write_volatile(cg) };
        }
    }
    if !want_cookie {
        return (cg, 0);
    }
    if cookie == 0 {
        // SAFETY: helper on our own context.
        cookie = unsafe { bpf_get_netns_cookie(skb.cast()) };
        if !owner.is_null() {
            // SAFETY: as above.
            unsafe { (&raw mut (*owner).netns_cookie).write_volatile(cookie) };
        }
    }
    (cg, cookie)
}

/// Copies a socket's owner into `ev`'s header and returns the flags it
/// brings (`HAS_PROCESS`); 0 if it has no process (then the caller reads the
/// task, as without the socket hooks).
#[inline(always)]
fn owner_into(o: *mut SockOwner, hdr: &mut EventHeader) -> u16 {
    // SAFETY: the socket's storage (non-null), valid until this program returns.
    let o = unsafe { &*o };
    if o.hdr.flags & flags::HAS_PROCESS == 0 {
        return 0;
    }
    // Word copies: LLVM would turn a 16-byte array copy into a memcpy call.
    // SAFETY: both headers are 8-aligned and 64 bytes; words 2..8 are tid/tgid, cgroup (skipped), comm, thread comm.
    unsafe {
        let src = core::ptr::from_ref(&o.hdr).cast::<u64>();
        let dst = core::ptr::from_mut(hdr).cast::<u64>();
        dst.add(2).write_volatile(src.add(2).read_volatile());
        let mut i = 4;
        while i < 8 {
            dst.add(i).write_volatile(src.add(i).read_volatile());
            i += 1;
        }
    }
    flags::HAS_PROCESS
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
    // No `Stat::Matched` count either: a per-CPU counter's line was a cache
    // miss on every DNS packet (~8 % of `dns_egress`), and the ring's own
    // record count says the same.
    let udp = proto == IPPROTO_UDP;
    let len = ctx.len() as usize;
    // SAFETY: reading a loader-written global.
    let snap = unsafe { read_volatile(&raw const DNS_SNAP) } as usize;
    let snap = if snap == 0 || snap > SNAP_LEN { SNAP_LEN } else { snap };
    let (n, truncated) = if len > snap { (snap, true) } else { (len, false) };
    if n == 0 {
        return 1;
    }
    // One payload per message: the egress sighting is remembered, and an
    // ingress sighting of a remembered message refers to it.
    // SAFETY: reading a loader-written global.
    let key = if udp && unsafe { read_volatile(&raw const DEDUPE) } != 0 { dedupe_key(ctx.skb.skb, ver) } else { None };
    let mut remember = None;
    if let Some((key, hl)) = &key {
        if which == hook::CGROUP_EGRESS {
            remember = Some(key);
        } else if let Some(seq) = DNS_DEDUPE.get_ptr(key) {
            // SAFETY: a value of the map, valid until this program returns.
            let seq = unsafe { *seq };
            bump(Stat::DedupeRef);
            // IPv4 and UDP headers take a 32-byte slot, IPv6 ones a 64-byte one.
            if *hl <= 32 {
                emit::<32>(ctx, which, ver, udp, *hl, false, Emit::Ref(seq));
            } else {
                emit::<REF_HEAD_LEN>(ctx, which, ver, udp, *hl, false, Emit::Ref(seq));
            }
            return 1;
        } else {
            bump(Stat::DedupeMiss);
        }
    }
    let what = Emit::Full(remember);
    if n <= 128 {
        emit::<128>(ctx, which, ver, udp, n, truncated, what);
    } else if n <= 256 {
        emit::<256>(ctx, which, ver, udp, n, truncated, what);
    } else if n <= 512 {
        emit::<512>(ctx, which, ver, udp, n, truncated, what);
    } else {
        emit::<SNAP_LEN>(ctx, which, ver, udp, n, truncated, what);
    }
    1
}

/// Every packet leaving a socket in any cgroup (attach at the cgroup2 root).
#[cgroup_skb]
#[inline(always)]
fn dns_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, hook::CGROUP_EGRESS)
}

/// Every packet delivered to a socket in any cgroup (attach at the cgroup2 root).
#[cgroup_skb]
#[inline(always)]
fn dns_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, hook::CGROUP_INGRESS)
}
