//! The live source: drains the kernel's per-CPU ring buffers in batches (on
//! a 10 ms timer (the agent's: 50 ms, 10 ms at busy rates, 250 ms while
//! nobody subscribes and the rings fill slowly), or when the
//! kernel forces a wakeup at a fill threshold),
//! merged oldest first (`bpf::rings`), adds host evidence (resolv.conf of
//! each querying process), and reports kernel losses.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    bpf::{Probes, dedupe},
    enrich::host::HostEvidence,
    event::{Hook, Record},
};

use super::monotonic_ns;

/// What the live source hands its consumer.
#[derive(Debug)]
pub enum LiveEvent {
    /// A record, in timestamp order across the per-CPU rings.
    Record(Record),
    /// A timer tick with the current monotonic time: time to expire state.
    Tick(u64),
}

/// Why the live loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
    /// The consumer asked to stop.
    Consumer,
}

/// Counters of the live source.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveStats {
    /// Ring-buffer items read.
    pub items: u64,
    /// Items that could not be decoded (counted, not dropped silently).
    pub bad_items: u64,
    /// Batches drained.
    pub batches: u64,
    /// Times `--sched-idle` raised ktrace to normal priority because the ring backed up.
    pub boosts: u64,
    /// Time spent raised, all boosts together.
    pub boosted: Duration,
}

/// Live capture driver.
pub struct LiveSource {
    cap: Probes,
    host: HostEvidence,
    node: Option<Arc<str>>,
    lost_reported: u64,
    /// Counters.
    pub stats: LiveStats,
    /// Only keep packets whose netns inode (egress) is one of these; empty = all.
    pub netns_scope: Vec<u32>,
    /// Only keep packets whose cgroup id is one of these; empty = all.
    pub cgroup_scope: Vec<u64>,
    scoped_socks: std::collections::HashSet<u64>,
    /// Turns the kernel's reference items back into packets (`bpf::dedupe`).
    dedupe: dedupe::Resolver,
    /// How often the rings are drained and a [`LiveEvent::Tick`] is handed
    /// on when the kernel does not force a wakeup ([`TICK`] unless set).
    pub tick: Duration,
    /// The drain interval while records come at [`BUSY_RATE`] or more
    /// (None: always [`Self::tick`]).
    pub busy_tick: Option<Duration>,
    /// A longer drain interval for while nobody waits for records soon.
    pub quiet: Option<QuietTick>,
}

/// A drain interval longer than [`LiveSource::tick`], for while `now` says
/// nobody waits for records soon (the agent without subscribers: only its
/// metrics read them) and the fullest ring, at the pace of the last
/// interval, would stay under [`QUIET_FILL_PART`] of its size until then.
/// Fewer, larger batches: a wakeup and a batch's cold start cost about as
/// much as a few hundred records.
pub struct QuietTick {
    /// The interval.
    pub tick: Duration,
    /// Whether nobody waits now (asked at each tick).
    pub now: Box<dyn Fn() -> bool>,
}

/// A quiet interval may let the fullest ring fill up to this part of its
/// size: half the quarter at which the kernel forces a wakeup (and the
/// reader is raised to normal priority to catch up).
pub const QUIET_FILL_PART: u64 = 8;

/// The next drain interval, after `dt` in which `items` records came and
/// the fullest ring filled up to `fill` of its `ring_bytes` between drains.
fn next_period(
    tick: Duration,
    busy: Option<Duration>,
    quiet: Option<Duration>,
    items: u64,
    fill: u64,
    ring_bytes: u64,
    dt: Duration,
) -> Duration {
    let dt_us = u64::try_from(dt.as_micros()).unwrap_or(u64::MAX).max(1);
    if let Some(b) = busy
        && items.saturating_mul(1_000_000) / dt_us >= BUSY_RATE
    {
        return b;
    }
    if let Some(q) = quiet {
        let q_us = u64::try_from(q.as_micros()).unwrap_or(u64::MAX);
        if u128::from(fill) * u128::from(q_us) / u128::from(dt_us) <= u128::from(ring_bytes / QUIET_FILL_PART) {
            return q;
        }
    }
    tick
}

/// Records per second from which a source with a `busy_tick` drains on it.
pub const BUSY_RATE: u64 = 80_000;

/// The default drain interval: short enough that `ktrace dns` shows rows as
/// they happen, long enough that the wakeups cost little beside the records.
pub const TICK: Duration = Duration::from_millis(10);

impl LiveSource {
    /// Wraps an attached capture.
    #[must_use]
    pub fn new(cap: Probes, node: Option<Arc<str>>) -> Self {
        Self {
            cap,
            host: HostEvidence::new(),
            node,
            lost_reported: 0,
            stats: LiveStats::default(),
            netns_scope: Vec::new(),
            cgroup_scope: Vec::new(),
            scoped_socks: std::collections::HashSet::new(),
            dedupe: dedupe::Resolver::default(),
            tick: TICK,
            busy_tick: None,
            quiet: None,
        }
    }

    /// One-payload-per-message counters: the resolver's and the kernel's.
    #[must_use]
    pub fn dedupe_stats(&self) -> dedupe::DedupeStats {
        dedupe::DedupeStats {
            refs: self.dedupe.stats.refs,
            unresolved: self.dedupe.stats.unresolved,
            ..self.cap.dedupe_stats()
        }
    }

    /// Scopes this source to a node: the given network namespaces plus the
    /// namespaces and cgroups of the pods the snapshot places on `node` (a
    /// per-node recorder in the lab, where every node shares one kernel).
    pub fn scope_to_node(&mut self, netns: &[u32], snap: Option<&crate::enrich::Snapshot>, node: &str) {
        self.netns_scope.extend_from_slice(netns);
        if self.netns_scope.is_empty() {
            return;
        }
        for p in snap.into_iter().flat_map(|s| s.pods.iter()).filter(|p| p.pod.node.as_deref() == Some(node)) {
            self.netns_scope.extend(p.netns_ino);
            self.cgroup_scope.extend(p.cgroup_id);
        }
    }

    /// The attached capture (for counters).
    #[must_use]
    pub fn capture(&self) -> &Probes {
        &self.cap
    }

    /// Reads what the ring holds; with `check_lost` (every tenth batch and
    /// the last one) also the kernel's lost counter, a syscall that cost
    /// more than the batch itself at a few thousand events per second.
    /// `last`: the run's final drain (nothing is held back for ordering).
    fn drain(&mut self, check_lost: bool, last: bool, on: &mut impl FnMut(LiveEvent) -> bool) -> bool {
        self.stats.batches += 1;
        let Self { cap, host, node, stats, netns_scope, cgroup_scope, scoped_socks, dedupe, .. } = self;
        let mut scope = Scope { netns: netns_scope, cgroups: cgroup_scope, socks: scoped_socks };
        let mut go_on = true;
        {
            let (rings, ctx) = cap.rings_and_ctx();
            // Each item is decoded and handed on while it is still in its
            // ring: no batch of owned records in between (that was a copy of
            // every record and a vector up to 64k long per wakeup). Bounded
            // so a flood cannot starve timers and signals.
            rings.drain(monotonic_ns(), last, 65_536, |item| {
                let r = dedupe.decode(item, node.as_ref(), ctx);
                stats.items += 1;
                let rec = match r {
                    Ok(Some(rec)) => rec,
                    // A sighting whose payload is gone: lost, and reported so.
                    Ok(None) => Record::Lost { ts_ns: monotonic_ns(), count: 1, node: node.clone() },
                    Err(e) => {
                        stats.bad_items += 1;
                        log::debug!("undecodable ring item: {e}");
                        return true;
                    }
                };
                if !scope.keeps(&rec) {
                    return true;
                }
                if let Record::Packet(p) = &rec
                    && p.hook == Hook::SocketEgress
                    && let Some(proc_) = &p.process
                    && let Some(ev) = host.resolv_conf_once(proc_.pid, p.netns_ino, p.ts_ns)
                    && !on(LiveEvent::Record(Record::ResolvConf(ev)))
                {
                    go_on = false;
                    return false;
                }
                go_on = on(LiveEvent::Record(rec));
                go_on
            });
        }
        if !go_on {
            return false;
        }
        if !check_lost && !self.stats.batches.is_multiple_of(10) {
            return true;
        }
        let lost = self.cap.lost();
        if lost > self.lost_reported {
            let count = lost - self.lost_reported;
            self.lost_reported = lost;
            if !on(LiveEvent::Record(Record::Lost { ts_ns: monotonic_ns(), count, node: self.node.clone() })) {
                return false;
            }
        }
        true
    }

    /// Runs until `duration` elapses, a signal arrives, or `on` returns false.
    pub async fn run(
        &mut self,
        duration: Option<Duration>,
        mut on: impl FnMut(LiveEvent) -> bool,
    ) -> std::io::Result<StopReason> {
        // SAFETY: the ring buffer's fd stays open for as long as `fd` lives:
        // both are owned by this call frame / `self.cap`, and `fd` is dropped first.
        let fd = unsafe { AsyncFd::register(self.cap.rings().poll_fd()) }.map_err(|e| e.into_parts().1)?;
        let booster = super::sched::IdleBooster::start_if_idle(self.cap.rings().poll_fd());
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // A signal that came between attaching and here was caught by
        // `hold_stop_signals`: stop now, as if it had come a moment later.
        let early = STOP_REQUESTED.load(Ordering::Relaxed);
        let mut period = self.tick;
        let mut last_tick = tokio::time::Instant::now();
        let mut items_at_tick = self.stats.items;
        let tick = tokio::time::sleep(period);
        tokio::pin!(tick);
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let sleep = tokio::time::sleep_until(
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_hours(8760)),
        );
        tokio::pin!(sleep);
        let reason = loop {
            if early {
                break StopReason::Signal;
            }
            tokio::select! {
                _ = sigint.recv() => break StopReason::Signal,
                _ = sigterm.recv() => break StopReason::Signal,
                () = &mut sleep, if deadline.is_some() => break StopReason::Duration,
                r = fd.readable() => {
                    let mut guard = r?;
                    guard.clear_ready();
                    if !self.drain(false, false, &mut on) { break StopReason::Consumer; }
                }
                () = &mut tick => {
                    if !self.drain(false, false, &mut on) { break StopReason::Consumer; }
                    if !on(LiveEvent::Tick(monotonic_ns())) { break StopReason::Consumer; }
                    let now = tokio::time::Instant::now();
                    let rings = self.cap.rings();
                    let (fill, ring_bytes) = (rings.take_fill_peak(), rings.ring_bytes() as u64);
                    let quiet = self.quiet.as_ref().filter(|q| (q.now)()).map(|q| q.tick);
                    let items = self.stats.items - items_at_tick;
                    period =
                        next_period(self.tick, self.busy_tick, quiet, items, fill, ring_bytes, now.duration_since(last_tick));
                    last_tick = now;
                    items_at_tick = self.stats.items;
                    tick.as_mut().reset(now + period);
                }
            }
        };
        // Whatever the kernel already produced belongs to the run.
        self.drain(true, true, &mut |e| {
            on(e);
            true
        });
        // And so do the drops it counted but had not sent yet (bpf::fold).
        let folded = self.cap.folded_drops(self.node.as_ref());
        let Self { netns_scope, cgroup_scope, scoped_socks, .. } = self;
        let mut scope = Scope { netns: netns_scope, cgroups: cgroup_scope, socks: scoped_socks };
        for rec in folded.into_iter().filter(|r| scope.keeps(r)) {
            on(LiveEvent::Record(rec));
        }
        if let Some(b) = booster {
            self.stats.boosts = b.boosts();
            self.stats.boosted = b.boosted();
        }
        Ok(reason)
    }
}

/// A node's scope (see [`LiveSource::scope_to_node`]), borrowed apart from
/// the ring so records can be checked while the ring is being read.
struct Scope<'a> {
    netns: &'a [u32],
    cgroups: &'a [u64],
    socks: &'a mut std::collections::HashSet<u64>,
}

impl Scope<'_> {
    /// With a netns scope (a recorder per lab node), keeps only what happened
    /// in those namespaces: sockets by their task's netns (egress) or cgroup,
    /// drops by their device's netns, connection events by the connecting
    /// task's netns (later softirq events of a socket follow its connect).
    fn keeps(&mut self, rec: &Record) -> bool {
        if self.netns.is_empty() {
            return true;
        }
        match rec {
            Record::Packet(p) => match p.hook {
                // tc programs are attached to this node's own devices.
                Hook::TcEgress | Hook::TcIngress => true,
                _ => self.netns.contains(&p.netns_ino) || self.cgroups.contains(&p.cgroup_id),
            },
            Record::Drop(d) => self.netns.contains(&d.netns_ino),
            Record::Conn(c) => {
                if c.netns_ino != 0 {
                    let ok = self.netns.contains(&c.netns_ino);
                    if ok && self.socks.len() < 65_536 {
                        self.socks.insert(c.sock);
                    }
                    ok
                } else {
                    self.socks.contains(&c.sock)
                }
            }
            _ => true,
        }
    }
}

/// Set by the handler `hold_stop_signals` installs.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// Catches SIGINT and SIGTERM from now on instead of dying of them, until
/// [`LiveSource::run`] registers its own handlers (which then see the
/// signal). Call it before attaching programs: a signal between "attached"
/// and the run loop (a user's quick Ctrl-C, a test's stop) must still end the
/// run through the normal path, which detaches netlink tc filters — those
/// outlive a process killed by the signal's default action.
pub fn hold_stop_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(SigHandler::Handler(note_stop), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // tokio's signal registration later chains to it.
        if let Err(e) = unsafe { sigaction(sig, &act) } {
            log::warn!("catching {sig} before the run: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const RING: u64 = 8 << 20;

    #[test]
    fn the_interval_follows_rate_and_fill() {
        let (tick, busy, quiet) = (50 * MS, Some(10 * MS), Some(250 * MS));
        // 20k records/s, 300 KiB per ring per 50 ms: quiet would fill 1.5 MiB, over an eighth of 8 MiB.
        assert_eq!(next_period(tick, busy, quiet, 1_000, 300 << 10, RING, 50 * MS), tick);
        // 200 KiB per 50 ms: 1 MiB in 250 ms, an eighth: quiet.
        assert_eq!(next_period(tick, busy, quiet, 1_000, 200 << 10, RING, 50 * MS), 250 * MS);
        // Busy rates win over quiet, whatever the fill.
        assert_eq!(next_period(tick, busy, quiet, 4_000, 0, RING, 50 * MS), 10 * MS);
        // Nobody quiet, or no busy interval: the tick, as before.
        assert_eq!(next_period(tick, busy, None, 1_000, 0, RING, 50 * MS), tick);
        assert_eq!(next_period(tick, None, None, 1 << 30, 0, RING, 50 * MS), tick);
        // After a quiet interval, the fill is over that interval's length.
        assert_eq!(next_period(tick, busy, quiet, 5_000, 1 << 20, RING, 250 * MS), 250 * MS);
        assert_eq!(next_period(tick, busy, quiet, 5_000, (1 << 20) + 1, RING, 250 * MS), tick);
        // A zero interval does not divide by zero.
        assert_eq!(next_period(tick, busy, quiet, 0, 0, RING, Duration::ZERO), 250 * MS);
    }
}
