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
//! VM: the interrupt it raises exits to the hypervisor). A normal-priority
//! thread sleeps in `epoll` on the ring's fd, edge-triggered, so it wakes
//! only on those forced wakeups (not on every event) and is scheduled at once
//! even when every CPU is busy, which an idle thread is not.
//!
//! A boost lasts [`HOLD`] after the last forced wakeup. Ending it as soon as
//! the reader caught up (the fullest ring under an eighth) was tried and
//! reverted: at saturation the idle reader then starved between boosts and
//! the kernel dropped 30k-324k of ~1.2M events per 3 s `dns-hotpath.sh` run
//! (none with the hold), and its half-load latency gain did not repeat. The
//! exit line says how often and how long the threads were raised
//! ("raised to normal priority N time(s) to catch up (M ms in all)").

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

/// State shared by the booster thread and the source that reports it.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// Written with `stop`, so the booster sleeps until the ring or the
    /// stop wakes it: it woke every 100 ms only to look at `stop` (10 of an
    /// idle agent's ~35 switches-in per second). None (no eventfd): it does so again.
    wake: Option<nix::sys::eventfd::EventFd>,
    boosts: AtomicU64,
    /// Nanoseconds spent boosted, over the finished boosts.
    boosted_ns: AtomicU64,
    /// Since when the threads are boosted; the lock also orders changes of policy.
    since: std::sync::Mutex<Option<Instant>>,
}

impl Shared {
    /// With an eventfd to stop the booster at once.
    fn with_wake() -> Self {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| log::debug!("booster stop eventfd: {e}; polling instead"))
            .ok();
        Self { wake, ..Self::default() }
    }

    /// Tells the booster to stop, waking it.
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = &self.wake {
            let _ = w.write(1);
        }
    }

    /// Raises the threads unless they are already raised.
    fn boost(&self, now: Instant, apply: &dyn Fn(libc::c_int)) {
        let mut since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if since.is_none() {
            apply(libc::SCHED_OTHER);
            *since = Some(now);
            self.boosts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lowers the threads back to idle if they are raised.
    fn unboost(&self, apply: &dyn Fn(libc::c_int)) {
        let mut since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = since.take() {
            apply(libc::SCHED_IDLE);
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.boosted_ns.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

/// While live: the booster thread (with catch-up), and whether the process
/// goes back to normal priority when it is dropped (the default policy,
/// which idles only while the ring is read).
#[derive(Debug)]
pub struct IdleBooster {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared::with_wake());
        let s = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("ktrace-boost".into())
            .spawn(move || {
                if let Err(e) = run(ring_fd, &s) {
                    log::warn!("idle priority: no boost when the ring backs up ({e}); events may be lost");
                }
            })
            .map_err(|e| log::warn!("idle priority: no booster thread ({e}); events may be lost"))
            .ok();
        Some(Self { shared, handle, restore: true })
    }

    /// Times the threads were raised to normal priority.
    #[must_use]
    pub fn boosts(&self) -> u64 {
        self.shared.boosts.load(Ordering::Relaxed)
    }

    /// Time spent raised, over finished boosts.
    #[must_use]
    pub fn boosted(&self) -> Duration {
        Duration::from_nanos(self.shared.boosted_ns.load(Ordering::Relaxed))
    }
}

impl Drop for IdleBooster {
    fn drop(&mut self) {
        self.shared.request_stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(t) = *self.shared.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.boosted_ns.fetch_add(ns, Ordering::Relaxed);
        }
        // What follows the live run (closing findings, detaching, a
        // subscriber's grace period) should not wait behind a busy workload.
        if self.restore {
            set_all(libc::SCHED_OTHER, 0);
        }
    }
}

fn run(ring_fd: RawFd, shared: &Shared) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    // Created under SCHED_IDLE like every thread of the process: leave it.
    set_policy(0, libc::SCHED_OTHER)?;
    watch(ring_fd, shared, &|policy| set_all(policy, me))
}

/// [`watch`]'s epoll tokens.
const RING: u64 = 0;
const STOP: u64 = 1;

/// The booster's loop: `apply(SCHED_OTHER)` on a wakeup of `ring_fd` (the
/// kernel's forced wakeup of a backed-up ring), `apply(SCHED_IDLE)` once
/// [`HOLD`] passed without another.
fn watch(ring_fd: RawFd, shared: &Shared, apply: &dyn Fn(libc::c_int)) -> std::io::Result<()> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    // An `OwnedFd` inside: closed on every return.
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // SAFETY: the caller keeps the ring's fd open for the booster's lifetime
    // (see `start_if_idle`), which this borrow does not outlive.
    let ring = unsafe { std::os::fd::BorrowedFd::borrow_raw(ring_fd) };
    ep.add(ring, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, RING))?;
    if let Some(w) = &shared.wake {
        ep.add(w, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
    }
    let mut boosted_until: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut out = [EpollEvent::empty(); 2];
        // Short while boosted (to give the CPU back soon after a burst);
        // otherwise until the ring or the stop wakes it (without the stop's
        // eventfd, every 100 ms to look at `stop`).
        let timeout = match (boosted_until, &shared.wake) {
            (Some(_), _) => EpollTimeout::from(20u8),
            (None, Some(_)) => EpollTimeout::NONE,
            (None, None) => EpollTimeout::from(100u8),
        };
        let n = match ep.wait(&mut out, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if out[..n].iter().any(|e| e.data() == RING) {
            shared.boost(now, apply);
            boosted_until = Some(now + HOLD);
        } else if boosted_until.is_some_and(|t| now >= t) {
            shared.unboost(apply);
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

    /// One raise however many wakeups,
    /// one return to idle, the time in between counted once.
    #[test]
    fn a_boost_ends_once_and_counts_its_time() {
        let shared = Shared::default();
        let applied = Mutex::new(Vec::new());
        let apply = |p| applied.lock().unwrap().push(p);
        shared.boost(Instant::now(), &apply);
        shared.boost(Instant::now(), &apply);
        assert!(shared.since.lock().unwrap().is_some());
        std::thread::sleep(Duration::from_millis(2));
        shared.unboost(&apply);
        shared.unboost(&apply);
        assert!(shared.since.lock().unwrap().is_none());
        assert_eq!(*applied.lock().unwrap(), vec![libc::SCHED_OTHER, libc::SCHED_IDLE]);
        assert_eq!(shared.boosts.load(Ordering::Relaxed), 1);
        assert!(shared.boosted_ns.load(Ordering::Relaxed) >= 2_000_000);
    }

    /// The catch-up path on an eventfd standing in for the ring: a wakeup
    /// boosts once however many follow within the hold time, and the policy
    /// goes back to idle after it.
    #[test]
    fn a_wakeup_boosts_then_the_hold_time_ends_it() {
        let efd = nix::sys::eventfd::EventFd::new().expect("eventfd");
        let fd = efd.as_fd().as_raw_fd();
        let shared = Arc::new(Shared::with_wake());
        assert!(shared.wake.is_some());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (Arc::clone(&shared), Arc::clone(&applied));
        let t = std::thread::spawn(move || {
            watch(fd, &s, &|p| a.lock().unwrap().push(p)).expect("watch");
        });
        let boosts = &shared.boosts;
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
        // Stopped at once by the eventfd, idle or not (no timeout to wait for).
        wait_for("the return to idle", &|| applied.lock().unwrap().len() == 4);
        shared.request_stop();
        wait_for("the stop", &|| t.is_finished());
        t.join().expect("watch thread");
        drop(efd);
    }
}
