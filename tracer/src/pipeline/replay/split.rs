//! The hand-over between a two-threaded replay's threads, and where
//! `ktrace dns -r` splits its work.
//!
//! `ktrace dns -r` starts split after decoding (pods named and messages
//! paired on the sink's thread) and measures the first batches: when the
//! sink's thread is the limit and pairing there costs enough that the
//! reading thread can take it without becoming the limit itself, the
//! pairer crosses to the reading thread once, at a batch boundary, and the
//! split is after pairing from then on. Which side is the limit depends on
//! the capture (callgrind per thread, instructions sink / reading):
//!
//! | capture | after decoding | after pairing | measured, then crossed |
//! |---|---|---|---|
//! | bench synthetic mix (100k messages), `-o json` | 535M / 133M | 371M / 303M | 393M / 282M |
//! | bench synthetic mix, `--summary` | 470M / 135M | 306M / 303M | 326M / 286M |
//! | hot-cap (dnsperf → dnsmasq), `-o json` | 627M / 382M | 281M / 778M | stays after decoding |
//! | hot-cap, `--summary` | 503M / 381M | 151M / 776M | stays after decoding |
//!
//! Measured per record in CPU time over 16 batches after 4 of warm-up (hot-cap,
//! `-o json`: reading 250 ns, sink 474 ns of which pairing 212 ns: crossing
//! would gain 2 %, so it stays; the synthetic mix: 372 / 1596 / 431 ns).
//!
//! The output is the same whichever thread pairs, and whenever the pairer
//! crosses: everything still reaches the sink in file order.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender},
    },
    time::{Duration, Instant},
};

use super::Batch;

/// This thread's CPU time (a system call, so once per batch, never per
/// operation): unlike a clock on the wall, it does not count the time
/// other work held the CPU, which on a busy machine is most of it.
pub(super) fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Longest single pairing step counted: one that took longer was
/// interrupted (a message is named and paired in about a microsecond).
const MAX_STEP: Duration = Duration::from_micros(50);

/// Adds the time since `t` to `acc`, unless it was interrupted.
#[inline]
pub(super) fn add_step(acc: &mut u64, t: Instant) {
    let d = t.elapsed();
    if d < MAX_STEP {
        *acc += u64::try_from(d.as_nanos()).unwrap_or(0);
    }
}

/// Batches the sink's thread handles before it measures (start-up:
/// cold caches, tables growing).
const WARM_BATCHES: u64 = 4;
/// Batches measured before the split is decided.
const SAMPLE_BATCHES: u64 = 16;

/// What the two threads share about the split.
#[derive(Default)]
pub(super) struct Balance {
    /// Set by the sink's thread: the reading thread takes the pairer at its
    /// next full batch.
    offered: AtomicBool,
    /// The reading thread's CPU time, in ns.
    read_busy_ns: AtomicU64,
    /// Records the reading thread has read.
    read_records: AtomicU64,
    /// Tests: offer the pairer after this many batches, whatever they cost.
    pub(super) force_after: Option<u64>,
}

impl Balance {
    pub(super) fn new(force_after: Option<u64>) -> Self {
        Self { force_after, ..Self::default() }
    }

    /// Whether the sink's thread offered the pairer.
    #[inline]
    pub(super) fn offered(&self) -> bool {
        self.offered.load(Ordering::Relaxed)
    }
}

/// The sink thread's measurements while it pairs.
#[derive(Default)]
pub(super) struct Sampler {
    batches: u64,
    /// The reading thread's (busy ns, records) when measuring began.
    read_from: (u64, u64),
    sink_ns: u64,
    /// Of `sink_ns`, naming pods and pairing.
    pub(super) pair_ns: u64,
    records: u64,
    done: bool,
}

impl Sampler {
    /// Whether the split is decided.
    #[inline]
    pub(super) fn done(&self) -> bool {
        self.done
    }

    /// Whether the next batch is to be measured (pairing timed per operation).
    #[inline]
    pub(super) fn measuring(&self) -> bool {
        !self.done && self.batches >= WARM_BATCHES
    }

    /// A batch of `records` the sink's thread handled in `took` (CPU time): offers
    /// the pairer when the measurements say so.
    pub(super) fn batch(&mut self, b: &Balance, records: u64, took: Duration) {
        if self.done {
            return;
        }
        self.batches += 1;
        if let Some(n) = b.force_after {
            if self.batches >= n {
                self.offer(b);
            }
            return;
        }
        let read = || (b.read_busy_ns.load(Ordering::Relaxed), b.read_records.load(Ordering::Relaxed));
        if self.batches <= WARM_BATCHES {
            if self.batches == WARM_BATCHES {
                self.read_from = read();
            }
            return;
        }
        self.sink_ns += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.records += records;
        if self.batches < WARM_BATCHES + SAMPLE_BATCHES {
            return;
        }
        self.done = true;
        let (busy, recs) = read();
        let (busy, recs) = (busy.saturating_sub(self.read_from.0), recs.saturating_sub(self.read_from.1));
        if recs == 0 || self.records == 0 {
            return;
        }
        // Per record, in ns (as f64: ratios of sums of a few ms).
        let reading = busy as f64 / recs as f64;
        let sink = self.sink_ns as f64 / self.records as f64;
        let pair = self.pair_ns as f64 / self.records as f64;
        // Crosses when the slower side gets at least 10 % faster.
        let now = reading.max(sink);
        let after = (reading + pair).max(sink - pair);
        if after < 0.9 * now {
            self.offer(b);
        }
    }

    fn offer(&mut self, b: &Balance) {
        self.done = true;
        b.offered.store(true, Ordering::Relaxed);
    }
}

/// The reading thread's end of the hand-over: the batch being filled,
/// sent when it holds `batch_ops` operations and replaced by one the sink's
/// thread gave back.
pub(super) struct BatchSender<'a> {
    pub(super) batch: Batch,
    full: &'a SyncSender<Batch>,
    free: &'a Receiver<Batch>,
    batch_ops: usize,
    /// False once the sink's thread is gone (it failed): the rest is read
    /// without work, the error comes from there.
    pub(super) alive: bool,
    balance: &'a Balance,
    records: u64,
}

impl<'a> BatchSender<'a> {
    pub(super) fn new(
        full: &'a SyncSender<Batch>,
        free: &'a Receiver<Batch>,
        batch_ops: usize,
        balance: &'a Balance,
    ) -> Self {
        Self { batch: Batch::default(), full, free, batch_ops, alive: true, balance, records: 0 }
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.alive && self.batch.ops.len() >= self.batch_ops
    }

    #[inline]
    pub(super) fn send_if_full(&mut self) {
        if self.is_full() {
            self.send();
        }
    }

    #[inline(never)]
    pub(super) fn send(&mut self) {
        let next = self.free.try_recv().unwrap_or_default();
        self.records += self.batch.records;
        // Only while the split may still change.
        if !self.balance.offered() {
            let busy = thread_cpu();
            self.balance.read_busy_ns.store(u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            self.balance.read_records.store(self.records, Ordering::Relaxed);
        }
        self.alive = self.full.send(std::mem::replace(&mut self.batch, next)).is_ok();
    }

    /// Sends the batch and waits until the sink's thread has handled it.
    pub(super) fn barrier(&mut self, ack: &Receiver<()>) {
        self.send();
        self.alive = self.alive && ack.recv().is_ok();
    }

    /// Sends what is left.
    pub(super) fn finish(mut self) {
        if self.alive {
            self.send();
        }
    }
}
