//! Sources of records: the kernel ring buffer (live), capture files (pcap,
//! pcapng, scap; replay) and node agents' streams. Each is a [`Source`]: it
//! hands the one [`crate::pipeline::Pipeline`] the same
//! [`crate::event::Record`]s, in time order, and says when time passes.

pub mod file;
pub mod live;
pub mod sched;

use std::{path::PathBuf, sync::Arc, time::Duration};

use nix::time::{ClockId, clock_gettime};

pub use crate::capture::ClockRef;
use crate::event::Record;

/// What a [`Source`] hands its consumer.
#[derive(Debug)]
pub enum SourceEvent {
    /// A record, in time order.
    Record(Record),
    /// Every record up to this time (the records' clock) has been handed
    /// over: the pipeline may expire what waits for an answer.
    Tick(u64),
    /// Context stored with the records: Kubernetes metadata, capture
    /// headers, coverage, network state (never [`file::FileEvent::Record`]).
    Context(file::FileEvent),
    /// A finding an agent computed itself.
    AgentFinding {
        /// Agent.
        agent: String,
        /// The finding's JSON.
        json: String,
    },
    /// News for the user (an agent connected, lost, retrying).
    Notice(String),
}

impl From<file::FileEvent> for SourceEvent {
    fn from(ev: file::FileEvent) -> Self {
        match ev {
            file::FileEvent::Record(r) => Self::Record(r),
            other => Self::Context(other),
        }
    }
}

/// Records in, in time order, from anywhere: the kernel, files or agents.
pub trait Source {
    /// Hands every event to `on` until the source ends, the run is stopped
    /// (duration, Ctrl-C) or `on` returns false. Returns warnings for the
    /// run's stats (truncated files, agents that dropped records).
    ///
    /// # Errors
    /// When the source cannot be read at all (a file that does not open,
    /// every agent refusing this client, the ring buffer failing).
    fn run(&mut self, on: &mut dyn FnMut(SourceEvent) -> bool) -> anyhow::Result<Vec<String>>;
}

/// Captures (ktrace pcapng, foreign pcap/pcapng, sysdig scap) merged by
/// wall-clock time. Each record is followed by a [`SourceEvent::Tick`] at
/// its time: in a file, nothing older can still arrive. Files are read to
/// the end (`on` returning false is ignored: the run's totals cover them whole).
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    /// Bytes read so far, for a progress line.
    pub progress: Arc<file::Progress>,
}

impl FileSource {
    /// The captures at `paths`.
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, progress: Arc::default() }
    }

    /// [`Source::run`] for a consumer that is done with each packet before
    /// the next event: packets come as they lie in the files
    /// ([`file::replay_ref`]), not made into records; and there are no
    /// [`SourceEvent::Tick`]s: time passes to each record's time after it,
    /// which the consumer does itself.
    ///
    /// # Errors
    /// When a capture cannot be read at all.
    pub fn run_ref(&mut self, on: impl FnMut(file::FileRef<'_>)) -> anyhow::Result<Vec<String>> {
        file::replay_ref(&self.paths, Some(&self.progress), on)
    }

    /// Total size of the captures, `None` when one is not a regular file
    /// (a pipe, a device): what decides whether a replay is worth two threads.
    #[must_use]
    pub fn total_bytes(&self) -> Option<u64> {
        self.paths.iter().map(|p| std::fs::metadata(p).ok().filter(std::fs::Metadata::is_file).map(|m| m.len())).sum()
    }
}

impl Source for FileSource {
    fn run(&mut self, on: &mut dyn FnMut(SourceEvent) -> bool) -> anyhow::Result<Vec<String>> {
        self.run_ref(|ev| {
            let r = match ev {
                file::FileRef::Packet(p) => Record::Packet(p.to_record()),
                file::FileRef::Event(file::FileEvent::Record(r)) => r,
                file::FileRef::Event(other) => {
                    on(SourceEvent::Context(other));
                    return;
                }
            };
            let ts = r.ts_ns();
            on(SourceEvent::Record(r));
            on(SourceEvent::Tick(ts));
        })
    }
}

/// The kernel ring buffer, read until `duration`, Ctrl-C or the consumer
/// stops; ticks every 10 ms with the monotonic time.
pub struct LiveRun {
    /// The attached source (its counters stay readable after the run).
    pub source: live::LiveSource,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Why the last run ended.
    pub stopped: Option<live::StopReason>,
}

impl LiveRun {
    /// Reads `source` for `duration` (`None`: until Ctrl-C).
    #[must_use]
    pub fn new(source: live::LiveSource, duration: Option<Duration>) -> Self {
        Self { source, duration, stopped: None }
    }
}

impl Source for LiveRun {
    fn run(&mut self, on: &mut dyn FnMut(SourceEvent) -> bool) -> anyhow::Result<Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let reason = rt.block_on(self.source.run(self.duration, |ev| match ev {
            live::LiveEvent::Record(r) => on(SourceEvent::Record(r)),
            live::LiveEvent::Tick(now) => on(SourceEvent::Tick(now)),
        }))?;
        self.stopped = Some(reason);
        Ok(Vec::new())
    }
}

fn clock_ns(id: ClockId) -> u64 {
    // The clock ids used are always supported; 0 if not.
    clock_gettime(id)
        .map_or(0, |ts| (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64))
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns.
#[must_use]
pub fn realtime_ns() -> u64 {
    clock_ns(ClockId::CLOCK_REALTIME)
}
