//! The per-CPU ring buffers (`RINGS` in the kernel object, an array of ring
//! maps indexed by CPU), read directly through their shared memory and
//! merged into one stream ordered by timestamp.
//!
//! One ring per CPU keeps a ring's reservation lock and producer cache line
//! on one CPU (with one ring for all CPUs, the reservation was a fifth of
//! the DNS programs' in-kernel time). The price is that the kernel's order
//! between CPUs is gone: [`CpuRings::drain`] restores one by merging the
//! rings' heads by `EventHeader::ts_ns` (ties: lower CPU first), and hands a
//! record on only once no other ring can still produce an older one (a
//! watermark per ring, see [`Head::bound`]): a ring with a committed head
//! cannot (its later records are younger), an empty ring can only produce
//! records stamped after this drain started (programs stamp after reserving,
//! minus [`SLACK_NS`] for those that stamp first), and only a ring whose
//! head is still being written holds records back by [`HOLD_NS`]. So a
//! record that caused another one on a second CPU (a query and its
//! response, an egress sighting and its ingress reference) is seen first,
//! and an idle ring holds nothing back. A ring a quarter full is drained
//! whole (loss would be worse than order). Within a ring, records come in
//! reservation order.
//!
//! The reader maps each ring as libbpf does (consumer page read-write, then
//! the producer page and the data area, mapped twice back to back so a
//! record never wraps) and hands records on while they are still in the
//! ring; the consumer position is written once per ring per drain and every
//! 64 KiB within one (each write is a cache line the producing CPU then has
//! to fetch back).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use tracer_common::MAP_RINGS;

use super::BpfError;

/// While a ring's head record is still being written (reserved, not yet
/// submitted), records of other rings younger than this (by `ts_ns`, against
/// the reader's clock) wait for the next drain: longer than a program takes
/// between reserving and submitting.
pub const HOLD_NS: u64 = 2_000_000;

/// How much older than the start of a drain a record reserved after it may
/// be stamped: the DNS and drop programs stamp after reserving (never older),
/// the connection and underlay programs stamp, read the task and then copy
/// into the ring (microseconds, or an interrupt's worth more).
pub const SLACK_NS: u64 = 250_000;

/// Bytes a drain passes in one ring before it gives them back to the
/// kernel: a long drain (up to 64k records) still frees space as it goes,
/// without a write to the shared consumer page per record.
const COMMIT_STEP: u64 = 64 << 10;

/// A ring holding more than this part of its size unread is drained whole,
/// without the hold (the kernel side wakes the reader at a quarter).
const PRESSED_PART: u64 = 4;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HDR_SZ: u64 = 8;

/// One ring's memory.
struct Ring {
    /// Keeps the map (and so its memory) alive.
    _map: OwnedFd,
    consumer: NonNull<AtomicU64>,
    producer: NonNull<AtomicU64>,
    data: NonNull<u8>,
    mask: u64,
    page: usize,
    /// Bytes of data area (a power of two).
    size: usize,
    /// The consumer position: records before it are read (written to the
    /// kernel's page by [`Self::commit`]).
    cons: u64,
    /// The consumer position as last written to the kernel's page.
    committed: u64,
    /// The producer position read at the start of this drain.
    prod: u64,
}

// SAFETY: the mappings are owned by the `Ring` and only touched through `&mut self`.
unsafe impl Send for Ring {}

impl Ring {
    fn new(map: OwnedFd, size: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let fd = map.as_raw_fd();
        // SAFETY: mapping a ring map's fd as the kernel lays it out (consumer
        // page at 0, read-write; producer page and twice the data at `page`,
        // read-only); the results are checked.
        let (cons, prod) = unsafe {
            let c = libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
            if c == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                page + 2 * size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                page as libc::off_t,
            );
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                libc::munmap(c, page);
                return Err(e);
            }
            (c, p)
        };
        let consumer = NonNull::new(cons.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        let producer = NonNull::new(prod.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the data area starts one page into the second mapping.
        let data = unsafe { NonNull::new_unchecked(prod.cast::<u8>().add(page)) };
        // SAFETY: a mapped, aligned u64.
        let start = unsafe { consumer.as_ref() }.load(Ordering::Acquire);
        Ok(Self {
            _map: map,
            consumer,
            producer,
            data,
            mask: size as u64 - 1,
            page,
            size,
            cons: start,
            committed: start,
            prod: start,
        })
    }

    /// Reads the producer position: what this drain may read.
    fn refresh(&mut self) {
        // SAFETY: a mapped, aligned u64 the kernel updates.
        self.prod = unsafe { self.producer.as_ref() }.load(Ordering::Acquire);
    }

    /// True if records are waiting (from the last [`Self::refresh`]'s view
    /// and the kernel's current one).
    fn pending(&self) -> bool {
        // SAFETY: as in `refresh`.
        self.cons != unsafe { self.producer.as_ref() }.load(Ordering::Acquire)
    }

    /// The first committed record, skipping discarded ones; None if the ring
    /// is empty up to `prod` or its first record is still being written.
    fn head(&mut self) -> Option<&[u8]> {
        match self.peek() {
            Head::Ready(_) => {
                let off = (self.cons & self.mask) as usize;
                // SAFETY: `peek` found a committed record of `len` bytes at
                // `off` (contiguous thanks to the double mapping).
                Some(unsafe {
                    let len = self.len_at(off) & !DISCARD_BIT;
                    std::slice::from_raw_parts(self.data.as_ptr().add(off + HDR_SZ as usize), len as usize)
                })
            }
            Head::Empty | Head::Busy => None,
        }
    }

    /// The length word of the record at `off`.
    ///
    /// # Safety
    /// `off` must be a record's 8-aligned offset inside the data area.
    #[expect(clippy::cast_ptr_alignment, reason = "record headers are 8-aligned in the page-aligned data area")]
    unsafe fn len_at(&self, off: usize) -> u32 {
        // SAFETY: the caller's contract; the kernel writes the header's u32
        // with release semantics.
        unsafe { (*self.data.as_ptr().add(off).cast::<AtomicU32>()).load(Ordering::Acquire) }
    }

    /// What the ring's next record is, skipping discarded ones: ready (with
    /// its timestamp), still being written, or none up to `prod`.
    fn peek(&mut self) -> Head {
        while self.cons < self.prod {
            let off = (self.cons & self.mask) as usize;
            // SAFETY: `off` is a record's offset inside the data area.
            let len = unsafe { self.len_at(off) };
            if len & BUSY_BIT != 0 {
                return Head::Busy;
            }
            let n = len & !DISCARD_BIT;
            if len & DISCARD_BIT != 0 {
                self.advance(n);
                continue;
            }
            // SAFETY: a committed record of `n` bytes after its header.
            let rec = unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(off + HDR_SZ as usize), n as usize) };
            return Head::Ready(ts_of(rec));
        }
        Head::Empty
    }

    /// Passes the head record (of `len` bytes); the kernel gets its space
    /// back at the next [`Self::commit`].
    fn advance(&mut self, len: u32) {
        self.cons += (u64::from(len) + HDR_SZ + 7) & !7;
    }

    /// Releases every record passed so far to the kernel.
    fn commit(&mut self) {
        if self.committed != self.cons {
            // SAFETY: our own consumer position, in a mapped page.
            unsafe { self.consumer.as_ref() }.store(self.cons, Ordering::Release);
            self.committed = self.cons;
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page);
            libc::munmap(self.producer.as_ptr().cast(), self.page + 2 * self.size);
        }
    }
}

/// `ts_ns` of a record (every record starts with an `EventHeader`); 0 for
/// one too short to have it (handed on at once, and counted as bad there).
fn ts_of(rec: &[u8]) -> u64 {
    rec.get(8..16).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
}

/// A ring's next record, as one drain sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Committed, with this `ts_ns`.
    Ready(u64),
    /// Nothing up to the producer position read at the start of the drain.
    Empty,
    /// Reserved but not yet submitted.
    Busy,
}

impl Head {
    /// The oldest timestamp a record this ring has not handed on yet may
    /// carry, for a drain that started at `now_ns` (read before the rings'
    /// producer positions). Ready: its head's (later records of one ring are
    /// younger). Empty: whatever comes next was reserved after the drain
    /// started, and programs stamp after reserving (or [`SLACK_NS`] before).
    /// Busy: a program is between reserving and submitting ([`HOLD_NS`]).
    fn bound(self, now_ns: u64) -> u64 {
        match self {
            Self::Ready(ts) => ts,
            Self::Empty => now_ns.saturating_sub(SLACK_NS),
            Self::Busy => now_ns.saturating_sub(HOLD_NS),
        }
    }
}

/// The ring to hand on next, if any may go: the oldest ready head (the
/// lowest index on a tie), unless `merge` and another ring may still hand on
/// something older (its [`Head::bound`]).
fn next(heads: &[Head], now_ns: u64, merge: bool) -> Option<usize> {
    let mut best = None;
    let mut best_ts = u64::MAX;
    let mut limit = u64::MAX;
    for (i, h) in heads.iter().enumerate() {
        match *h {
            Head::Ready(t) if best.is_none() || t < best_ts => {
                best = Some(i);
                best_ts = t;
            }
            Head::Ready(_) => {}
            other => limit = limit.min(other.bound(now_ns)),
        }
    }
    best.filter(|_| !merge || best_ts <= limit)
}

/// Every CPU's ring, and one epoll fd that is readable when any has data.
pub struct CpuRings {
    rings: Vec<Ring>,
    epoll: OwnedFd,
    /// Each ring's next record.
    heads: Vec<Head>,
    /// The most unread bytes one ring held at the start of a drain since
    /// [`Self::take_fill_peak`] (how fast the fullest ring fills between drains).
    fill_peak: u64,
}

impl CpuRings {
    /// Wraps ring maps the caller created and put into the kernel's array
    /// (`maps[i]` is CPU `i`'s), each `size` bytes.
    ///
    /// # Errors
    /// mmap or epoll failures.
    pub fn new(maps: Vec<OwnedFd>, size: usize) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut rings = Vec::with_capacity(maps.len());
        for (i, m) in maps.into_iter().enumerate() {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
            // SAFETY: valid fds and event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, m.as_raw_fd(), &raw mut ev) } != 0 {
                return Err(io::Error::last_os_error());
            }
            rings.push(Ring::new(m, size)?);
        }
        let heads = vec![Head::Empty; rings.len()];
        Ok(Self { rings, epoll, heads, fill_peak: 0 })
    }

    /// An fd that polls readable while any ring has data: an epoll fd with
    /// every ring in it, level-triggered (its ready list is never consumed:
    /// polling it re-checks each ring, and a ring's wakeup still reaches
    /// whoever polls it).
    #[must_use]
    pub fn poll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Number of rings (CPUs).
    #[must_use]
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// True without rings.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Bytes of one ring's data area (every ring has the same size).
    #[must_use]
    pub fn ring_bytes(&self) -> usize {
        self.rings.first().map_or(0, |r| r.size)
    }

    /// The most unread bytes one ring held at the start of a drain since
    /// the last call (then starts afresh).
    pub fn take_fill_peak(&mut self) -> u64 {
        std::mem::take(&mut self.fill_peak)
    }

    /// True if any ring has records waiting.
    #[must_use]
    pub fn pending(&self) -> bool {
        self.rings.iter().any(Ring::pending)
    }

    /// Hands at most `max` records to `f`, oldest first across rings, each
    /// while it is still in its ring, and releases them afterwards. With
    /// several rings, a record waits for a later drain while another ring may
    /// still hand on an older one (see [`Head::bound`]; `now_ns` is the
    /// monotonic clock read before this call), unless `all` (the last drain
    /// of a run). Stops early when `f` returns false (that record is
    /// released). Returns the number of records handed on.
    pub fn drain(&mut self, now_ns: u64, all: bool, max: usize, mut f: impl FnMut(&[u8]) -> bool) -> usize {
        let mut pressed = false;
        for (r, h) in self.rings.iter_mut().zip(self.heads.iter_mut()) {
            r.refresh();
            self.fill_peak = self.fill_peak.max(r.prod - r.cons);
            pressed |= r.prod - r.cons >= (r.size as u64) / PRESSED_PART;
            *h = r.peek();
        }
        // A ring this full would lose records while others wait: at millions
        // of records per second the wait fills most of a ring. Not losing
        // them beats their order across CPUs.
        let merge = !(all || pressed || self.rings.len() <= 1);
        let mut n = 0;
        while n < max {
            let Some(best) = next(&self.heads, now_ns, merge) else { break };
            let ring = &mut self.rings[best];
            let Some(rec) = ring.head() else {
                self.heads[best] = Head::Empty;
                continue;
            };
            let len = rec.len() as u32;
            let go_on = f(rec);
            ring.advance(len);
            if ring.cons - ring.committed >= COMMIT_STEP {
                ring.commit();
            }
            n += 1;
            self.heads[best] = ring.peek();
            if !go_on {
                break;
            }
        }
        for r in &mut self.rings {
            r.commit();
        }
        n
    }
}

/// Creates one ring of `bytes` per CPU and puts each into the object's
/// `RINGS` array at its CPU's index.
pub(super) fn make(ebpf: &aya::Ebpf, bytes: u32, cpus: u32) -> Result<CpuRings, BpfError> {
    let name = MAP_RINGS;
    let err = |what: &str, e: io::Error| BpfError::Map { name, reason: format!("{what}: {e}") };
    let outer = match ebpf.map(name) {
        Some(aya::maps::Map::ArrayOfMaps(m)) => m.fd().as_fd(),
        _ => return Err(BpfError::Map { name, reason: "missing from object, or not an array of maps".into() }),
    };
    let mut fds = Vec::with_capacity(cpus as usize);
    for cpu in 0..cpus {
        let fd = create(bytes).map_err(|e| err(&format!("creating a {bytes}-byte ring"), e))?;
        install(outer, cpu, &fd).map_err(|e| err(&format!("installing CPU {cpu}'s ring"), e))?;
        fds.push(fd);
    }
    CpuRings::new(fds, bytes as usize).map_err(|e| err("mapping the rings", e))
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// Size of the `union bpf_attr` prefix passed (the rest is zero).
const ATTR_LEN: usize = 128;

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr prefix that outlives the call;
    // any pointer in it points into live buffers.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as libc::c_uint) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Creates a ring map of `size` bytes (a power of two, a multiple of the
/// page size) named `ktrace_ring`.
///
/// # Errors
/// The kernel refused it.
pub fn create(size: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_LEN];
    attr[0..4].copy_from_slice(&BPF_MAP_TYPE_RINGBUF.to_ne_bytes());
    // key_size, value_size 0
    attr[12..16].copy_from_slice(&size.to_ne_bytes());
    let name = b"ktrace_ring";
    attr[28..28 + name.len()].copy_from_slice(name);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Puts `ring` at `index` of the array of maps `outer`.
///
/// # Errors
/// The kernel refused it (an index out of range, a ring the array's
/// template does not match).
pub fn install(outer: std::os::fd::BorrowedFd<'_>, index: u32, ring: &OwnedFd) -> io::Result<()> {
    let key = index;
    let value: u32 = ring.as_raw_fd() as u32;
    let mut attr = [0u8; ATTR_LEN];
    attr[0..4].copy_from_slice(&(outer.as_raw_fd() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(&raw const key as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(&raw const value as u64).to_ne_bytes());
    // flags BPF_ANY (0)
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Bytes per ring when `total` is shared by `cpus` rings: a power of two,
/// at least 256 KiB (a burst on one CPU must fit) and at most `total`.
#[must_use]
pub fn per_ring_bytes(total: u32, cpus: usize) -> u32 {
    let share = (u64::from(total) / cpus.max(1) as u64).max(256 << 10);
    let p = if share.is_power_of_two() { share } else { share.next_power_of_two() / 2 };
    u32::try_from(p).unwrap_or(1 << 30).min(total.max(256 << 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_split_the_total() {
        assert_eq!(per_ring_bytes(16 << 20, 2), 8 << 20);
        assert_eq!(per_ring_bytes(16 << 20, 3), 4 << 20);
        assert_eq!(per_ring_bytes(16 << 20, 1), 16 << 20);
        assert_eq!(per_ring_bytes(16 << 20, 256), 256 << 10);
        assert_eq!(per_ring_bytes(64 << 10, 2), 256 << 10);
    }

    #[test]
    fn the_oldest_ready_head_goes_first_ties_to_the_lower_ring() {
        let h = [Head::Ready(30), Head::Ready(10), Head::Ready(10)];
        assert_eq!(next(&h, 1_000_000_000, true), Some(1));
        assert_eq!(next(&[Head::Empty, Head::Empty], 1_000_000_000, true), None);
    }

    #[test]
    fn an_idle_ring_holds_back_only_the_last_slack() {
        let now = 1_000_000_000;
        // Another ring is empty: it can only produce records stamped after
        // the drain started (less the slack), so anything older goes now.
        let h = [Head::Ready(now - SLACK_NS), Head::Empty];
        assert_eq!(next(&h, now, true), Some(0));
        let h = [Head::Ready(now - SLACK_NS + 1), Head::Empty];
        assert_eq!(next(&h, now, true), None, "younger than the slack waits while merging");
        assert_eq!(next(&h, now, false), Some(0), "not merging (one ring, last drain, a full ring): no wait");
        // Long idle: nothing older than the slack is held, whatever the
        // idle ring last handed on.
        let h = [Head::Ready(now - 3 * HOLD_NS), Head::Empty, Head::Empty];
        assert_eq!(next(&h, now, true), Some(0));
    }

    #[test]
    fn a_ring_being_written_holds_back_by_the_hold() {
        let now = 1_000_000_000;
        let h = [Head::Busy, Head::Ready(now - HOLD_NS + 1)];
        assert_eq!(next(&h, now, true), None);
        let h = [Head::Busy, Head::Ready(now - HOLD_NS)];
        assert_eq!(next(&h, now, true), Some(1));
    }

    #[test]
    fn a_ready_head_holds_back_younger_records_of_other_rings() {
        // Ring 0's head is older: it goes first; ring 1's waits for it.
        let now = 1_000_000_000;
        let h = [Head::Ready(now - 10), Head::Ready(now - 20)];
        assert_eq!(next(&h, now, true), Some(1));
        let h = [Head::Ready(now - 10), Head::Ready(now - 5)];
        assert_eq!(next(&h, now, true), Some(0));
    }

    #[test]
    fn short_records_have_no_timestamp() {
        assert_eq!(ts_of(&[0; 8]), 0);
        let mut r = [0u8; 16];
        r[8..].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(ts_of(&r), 42);
    }
}
