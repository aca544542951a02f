//! `--sched-idle` without losing events: ktrace's threads run under
//! `SCHED_IDLE` (they only get CPU time the workload leaves idle) until the
//! ring buffer backs up, then run at normal priority until they caught up.
//!
//! The trigger is the kernel's own: programs submit with `BPF_RB_NO_WAKEUP`
//! and force a wakeup once `WAKEUP_BYTES` (a quarter of the ring) wait. A
//! normal-priority thread sleeps in `epoll` on the ring's fd, edge-triggered,
//! so it wakes only on those forced wakeups (not on every event) and is
//! scheduled at once even when every CPU is busy, which an idle thread is not.

use std::{
    os::fd::RawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long threads stay boosted after the last backlog signal: draining a
/// quarter of the default 16 MiB ring (~30k events at ~1 µs each) takes
/// ~30 ms at full speed, so 100 ms catches up with room to spare and gives
/// the CPU back soon after a burst. Still behind, the next forced wakeup
/// boosts again at once.
const HOLD: Duration = Duration::from_millis(100);

/// Set by [`enter_idle`] with catch-up on: [`IdleBooster::start_if_idle`] starts a booster.
static CATCH_UP: AtomicBool = AtomicBool::new(false);

/// Puts this thread (and the threads it starts later, which inherit the
/// policy) under `SCHED_IDLE`; with `catch_up`, live sources raise them to
/// normal priority while the ring buffer backs up (`--no-catch-up` clears it).
///
/// # Errors
/// If the kernel refuses the policy.
pub fn enter_idle(catch_up: bool) -> std::io::Result<()> {
    set_policy(0, libc::SCHED_IDLE)?;
    CATCH_UP.store(catch_up, Ordering::Relaxed);
    Ok(())
}

/// The booster thread; stops (and leaves every thread idle) when dropped.
#[derive(Debug)]
pub struct IdleBooster {
    stop: Arc<AtomicBool>,
    boosts: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> std::io::Result<()> {
    // Zeroed rather than a literal: musl's sched_param has more fields than
    // glibc's (the static build of the image), and all-zero is priority 0.
    // SAFETY: sched_param is plain integers; all-zero is a valid value.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: `param` is a valid sched_param; a vanished tid is an error, not UB.
    if unsafe { libc::sched_setscheduler(tid, policy, &raw const param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets `policy` on every thread of this process but `except`.
fn set_all(policy: libc::c_int, except: libc::pid_t) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return };
    for e in dir.flatten() {
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok())
            && tid != except
        {
            // A thread that exited in between is fine to miss.
            let _ = set_policy(tid, policy);
        }
    }
}

impl IdleBooster {
    /// Starts the booster if [`enter_idle`] ran with catch-up (`--sched-idle`).
    /// `ring_fd` is the ring buffer map's fd; it must outlive the booster.
    #[must_use]
    pub fn start_if_idle(ring_fd: RawFd) -> Option<Self> {
        if !CATCH_UP.load(Ordering::Relaxed) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let boosts = Arc::new(AtomicU64::new(0));
        let (s, b) = (Arc::clone(&stop), Arc::clone(&boosts));
        let handle = std::thread::Builder::new()
            .name("ktrace-boost".into())
            .spawn(move || {
                if let Err(e) = run(ring_fd, &s, &b) {
                    log::warn!("--sched-idle: no boost when the ring backs up ({e}); events may be lost");
                }
            })
            .ok()?;
        Some(Self { stop, boosts, handle: Some(handle) })
    }

    /// Times the threads were raised to normal priority.
    #[must_use]
    pub fn boosts(&self) -> u64 {
        self.boosts.load(Ordering::Relaxed)
    }
}

impl Drop for IdleBooster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(ring_fd: RawFd, stop: &AtomicBool, boosts: &AtomicU64) -> std::io::Result<()> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    // Created under SCHED_IDLE like every thread of the process: leave it.
    set_policy(0, libc::SCHED_OTHER)?;
    // An `OwnedFd` inside: closed on every return.
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // SAFETY: the caller keeps the ring's fd open for the booster's lifetime
    // (see `start_if_idle`), which this borrow does not outlive.
    let ring = unsafe { std::os::fd::BorrowedFd::borrow_raw(ring_fd) };
    ep.add(ring, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0))?;
    let mut boosted_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut out = [EpollEvent::empty(); 1];
        let n = match ep.wait(&mut out, EpollTimeout::from(20u8)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if n > 0 {
            if boosted_until.is_none() {
                set_all(libc::SCHED_OTHER, me);
                boosts.fetch_add(1, Ordering::Relaxed);
            }
            boosted_until = Some(now + HOLD);
        } else if boosted_until.is_some_and(|t| now >= t) {
            set_all(libc::SCHED_IDLE, me);
            boosted_until = None;
        }
    }
    Ok(())
}
