//! Sources of records: the kernel ring buffer (live) or capture files (replay).
//! Both hand the pipeline the same [`crate::event::Record`]s.

pub mod agent;
pub mod file;
pub mod live;
pub mod sched;

pub use crate::capture::ClockRef;

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer; the clock ids used are always supported.
    unsafe { libc::clock_gettime(id, &raw mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns.
#[must_use]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}
