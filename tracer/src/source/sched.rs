//! Idle priority without losing events (the default of live tracing):
//! ktrace's threads run under `SCHED_IDLE` (they only get CPU time the
//! workload leaves idle) until the ring buffer backs up, then run at normal
//! priority until they caught up. `--sched-normal` opts out.
//!
//! `--sched-idle` (idle from the start, replays included) and `--no-catch-up`
//! (never raised) are retired: accepted, hidden, no effect but a deprecation
//! notice. Measured side by side after issue 18's lean-path work
//! (`xtask/scripts/dns-hotpath.sh`, 5 interleaved rounds, `dns -o json`):
//! `--sched-idle` gave the default's saturation qps (0.79 of untraced for
//! both) and half-load latency within the run's noise; `--no-catch-up`'s
//! only gain, 0.87 instead of 0.79 of untraced qps at saturation, came from
//! losing 31 % of the events, and at half load it lost none and was within
//! the noise of the default. A replay at idle priority is `chrt -i 0 ktrace …`.
//!
//! Why it is the default: on a node whose CPUs the workload keeps busy, a
//! normal-priority reader that wakes every 10 ms and then decodes a batch
//! for a few milliseconds takes the resolver's core for that long (wakeup
//! preemption); every answer behind it waits. That runqueue wait, not the
//! kernel programs (they run in the packet path either way) nor the wakeups
//! themselves, is what multiplied the resolver's p50 (BENCHMARKS.md section 2,
//! and `xtask/scripts/dns-hotpath.sh`'s resolver runqueue wait per query).
//! An idle-class thread never preempts a normal one, so the same work moves
//! into the gaps.
//!
//! The trigger is the kernel's own: programs submit with `BPF_RB_NO_WAKEUP`
//! and force a wakeup once `WAKEUP_BYTES` (a quarter of the ring) wait; while
//! the backlog stays above that, only the record crossing each further 64 KiB
//! forces one again (a wakeup per record cost the programs ~4 µs each on this
//! VM: the interrupt it raises exits to the hypervisor). A normal-priority thread sleeps in `epoll` on the ring's fd, edge-triggered,
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

/// Set by [`idle_when_live`]: live sources put the process under `SCHED_IDLE`
/// when they start reading the ring, and back to normal when they stop.
static IDLE_WHEN_LIVE: AtomicBool = AtomicBool::new(false);

/// Which scheduling policy the process asked for (`--sched-normal` or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `--sched-normal`: normal priority throughout.
    Normal,
    /// The default: `SCHED_IDLE` while a live source reads the ring buffer,
    /// raised to normal priority while the ring backs up (replays, doctor and
    /// clients of an agent stay at normal priority).
    IdleWhenLive,
}

impl Policy {
    /// Applies the policy: `IdleWhenLive` is remembered for live sources.
    ///
    /// # Errors
    /// None today; kept for policies that set the scheduler at once.
    pub fn apply(self) -> std::io::Result<()> {
        match self {
            Self::Normal => IDLE_WHEN_LIVE.store(false, Ordering::Relaxed),
            Self::IdleWhenLive => idle_when_live(),
        }
        Ok(())
    }
}

/// The default: live sources run the process under `SCHED_IDLE` while they
/// read the ring buffer (see [`IdleBooster::start_if_idle`]).
pub fn idle_when_live() {
    IDLE_WHEN_LIVE.store(true, Ordering::Relaxed);
}

/// The scheduling policy of thread `tid` (0: this thread), e.g. `libc::SCHED_IDLE`.
///
/// # Errors
/// If the thread does not exist.
pub fn policy_of(tid: libc::pid_t) -> std::io::Result<libc::c_int> {
    // SAFETY: sched_getscheduler only reads the thread's policy.
    let p = unsafe { libc::sched_getscheduler(tid) };
    if p < 0 { Err(std::io::Error::last_os_error()) } else { Ok(p) }
}

/// While live: the booster thread (with catch-up), and whether the process
/// goes back to normal priority when it is dropped (the default policy,
/// which idles only while the ring is read).
#[derive(Debug)]
pub struct IdleBooster {
    stop: Arc<AtomicBool>,
    boosts: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    restore: bool,
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
    /// Called by live sources when they start reading the ring: under the
    /// default policy puts every thread of the process under `SCHED_IDLE`
    /// (until the returned value is dropped) and starts the booster.
    /// `ring_fd` is the ring buffer map's fd; it must outlive the booster.
    #[must_use]
    pub fn start_if_idle(ring_fd: RawFd) -> Option<Self> {
        if !IDLE_WHEN_LIVE.load(Ordering::Relaxed) {
            return None;
        }
        set_all(libc::SCHED_IDLE, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let boosts = Arc::new(AtomicU64::new(0));
        let (s, b) = (Arc::clone(&stop), Arc::clone(&boosts));
        let handle = std::thread::Builder::new()
            .name("ktrace-boost".into())
            .spawn(move || {
                if let Err(e) = run(ring_fd, &s, &b) {
                    log::warn!("idle priority: no boost when the ring backs up ({e}); events may be lost");
                }
            })
            .map_err(|e| log::warn!("idle priority: no booster thread ({e}); events may be lost"))
            .ok();
        Some(Self { stop, boosts, handle, restore: true })
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
        // What follows the live run (closing findings, detaching, a
        // subscriber's grace period) should not wait behind a busy workload.
        if self.restore {
            set_all(libc::SCHED_OTHER, 0);
        }
    }
}

fn run(ring_fd: RawFd, stop: &AtomicBool, boosts: &AtomicU64) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    // Created under SCHED_IDLE like every thread of the process: leave it.
    set_policy(0, libc::SCHED_OTHER)?;
    watch(ring_fd, stop, boosts, &|policy| set_all(policy, me))
}

/// The booster's loop: `apply(SCHED_OTHER)` on a wakeup of `ring_fd` (the
/// kernel's forced wakeup of a backed-up ring), `apply(SCHED_IDLE)` once
/// [`HOLD`] passed without another.
fn watch(ring_fd: RawFd, stop: &AtomicBool, boosts: &AtomicU64, apply: &dyn Fn(libc::c_int)) -> std::io::Result<()> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    // An `OwnedFd` inside: closed on every return.
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // SAFETY: the caller keeps the ring's fd open for the booster's lifetime
    // (see `start_if_idle`), which this borrow does not outlive.
    let ring = unsafe { std::os::fd::BorrowedFd::borrow_raw(ring_fd) };
    ep.add(ring, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0))?;
    let mut boosted_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut out = [EpollEvent::empty(); 1];
        // Short while boosted (to give the CPU back soon after a burst),
        // longer otherwise: a wakeup every 100 ms only to look at `stop`.
        let timeout = if boosted_until.is_some() { 20u8 } else { 100u8 };
        let n = match ep.wait(&mut out, EpollTimeout::from(timeout)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if n > 0 {
            if boosted_until.is_none() {
                apply(libc::SCHED_OTHER);
                boosts.fetch_add(1, Ordering::Relaxed);
            }
            boosted_until = Some(now + HOLD);
        } else if boosted_until.is_some_and(|t| now >= t) {
            apply(libc::SCHED_IDLE);
            boosted_until = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        os::fd::{AsFd as _, AsRawFd as _},
        sync::{Arc, Mutex},
    };

    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn policy(args: &[&str]) -> Result<Policy, clap::Error> {
        Cli::try_parse_from(std::iter::once("ktrace").chain(args.iter().copied())).map(|c| c.global.sched_policy())
    }

    #[test]
    fn idle_when_live_is_the_default_and_flags_choose_otherwise() {
        assert_eq!(policy(&["dns"]).unwrap(), Policy::IdleWhenLive);
        assert_eq!(policy(&["record", "-w", "x.pcapng", "--sched-normal"]).unwrap(), Policy::Normal);
        // Retired flags: still accepted (scripts keep working), no effect.
        assert_eq!(policy(&["--no-catch-up", "dns"]).unwrap(), Policy::IdleWhenLive);
        assert_eq!(policy(&["--sched-idle", "dns"]).unwrap(), Policy::IdleWhenLive);
        assert_eq!(policy(&["agent", "--sched-idle", "--no-catch-up"]).unwrap(), Policy::IdleWhenLive);
        assert_eq!(policy(&["--sched-normal", "--sched-idle", "dns"]).unwrap(), Policy::Normal);
        let cli = |args: &[&str]| Cli::try_parse_from(std::iter::once("ktrace").chain(args.iter().copied())).unwrap();
        assert!(cli(&["--sched-idle", "dns"]).global.retired_sched_flags().is_some_and(|n| n.contains("--sched-idle")));
        assert!(
            cli(&["dns", "--no-catch-up"]).global.retired_sched_flags().is_some_and(|n| n.contains("--no-catch-up"))
        );
        assert!(cli(&["dns"]).global.retired_sched_flags().is_none());
    }

    /// The catch-up path on an eventfd standing in for the ring: a wakeup
    /// boosts once however many follow within the hold time, and the policy
    /// goes back to idle after it.
    #[test]
    fn a_wakeup_boosts_then_the_hold_time_ends_it() {
        let efd = nix::sys::eventfd::EventFd::new().expect("eventfd");
        let fd = efd.as_fd().as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let boosts = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (s, b, a) = (Arc::clone(&stop), Arc::clone(&boosts), Arc::clone(&applied));
        let t = std::thread::spawn(move || {
            watch(fd, &s, &b, &|p| a.lock().unwrap().push(p)).expect("watch");
        });
        let wait_for = |what: &str, f: &dyn Fn() -> bool| {
            for _ in 0..500 {
                if f() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("timed out waiting for {what}: {:?}", applied.lock().unwrap());
        };
        for _ in 0..3 {
            efd.write(1).expect("eventfd write");
            std::thread::sleep(Duration::from_millis(5));
        }
        wait_for("the boost", &|| boosts.load(Ordering::Relaxed) == 1);
        wait_for("the return to idle", &|| applied.lock().unwrap().len() == 2);
        assert_eq!(*applied.lock().unwrap(), vec![libc::SCHED_OTHER, libc::SCHED_IDLE]);
        assert_eq!(boosts.load(Ordering::Relaxed), 1, "wakeups within the hold time boost once");
        efd.write(1).expect("eventfd write");
        wait_for("the second boost", &|| boosts.load(Ordering::Relaxed) == 2);
        stop.store(true, Ordering::Relaxed);
        t.join().expect("watch thread");
        drop(efd);
    }
}
