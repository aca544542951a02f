//! The replay source: one or more captures (ktrace pcapng, foreign
//! pcap/pcapng), each converted to wall-clock time with its own node's clock
//! reference, merged by time, streamed (never loaded whole).
//!
//! Every record comes out with `ts_ns` in wall-clock ns, so captures from
//! several nodes (each with its own monotonic clock) can be merged and paired.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    capture::{self, CaptureReader, ClockRef, Item, MetaBlock},
    enrich::Snapshot,
    event::Record,
};

/// What replay hands its consumer.
#[derive(Debug)]
pub enum FileEvent {
    /// A record, `ts_ns` in wall-clock ns.
    Record(Record),
    /// Kubernetes metadata stored in a capture (boxed: it is large and
    /// rare, and every record moves through this enum).
    Snapshot(Box<Snapshot>),
    /// A capture's header: who recorded it.
    Header {
        /// File.
        path: PathBuf,
        /// Node that recorded it.
        node: String,
        /// ktrace version that wrote it.
        version: String,
    },
    /// A recorder was observing `node` over this wall-clock span (from its
    /// header, clock heartbeats and its final coverage block).
    Coverage {
        /// Node.
        node: String,
        /// Start, wall ns.
        from_ns: u64,
        /// End, wall ns.
        to_ns: u64,
        /// Whether underlay devices were fingerprinted with tc.
        tc: bool,
    },
    /// A node's network state at the start of its capture.
    NetState {
        /// Node.
        node: String,
        /// name → text.
        state: BTreeMap<String, String>,
    },
}

/// One capture being read, converted to wall-clock records.
struct Stream {
    path: PathBuf,
    reader: CaptureReader,
    clock: Option<ClockRef>,
    node: Option<Arc<str>>,
    start: u64,
    done: bool,
    /// Return as soon as context is queued (live agent streams: a heartbeat
    /// must not wait for the next record).
    yield_meta: bool,
}

/// Name of the custom block a recorder writes last: what it observed, when.
pub const COVERAGE: &str = "coverage/v1";

/// Body of the [`COVERAGE`] block (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Coverage {
    /// Node recorded.
    pub node: String,
    /// Recording start, monotonic ns of that node.
    pub start_mono_ns: u64,
    /// Recording end, monotonic ns of that node.
    pub end_mono_ns: u64,
    /// Underlay devices fingerprinted with tc.
    pub underlay: Vec<String>,
}

impl Stream {
    /// Next item; records converted to wall time and stamped with the node.
    fn next(&mut self, warnings: &mut Vec<String>, meta: &mut Vec<FileEvent>) -> Option<Record> {
        while !self.done {
            if self.yield_meta && !meta.is_empty() {
                return None;
            }
            match self.reader.next() {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    let what = if e.is_truncation() {
                        "truncated capture, replayed up to the last complete block"
                    } else {
                        "stopped reading"
                    };
                    warnings.push(format!("{}: {what}: {e}", self.path.display()));
                }
                Some(Ok(Item::Meta(m))) => match m {
                    MetaBlock::Header(h) => {
                        self.clock = Some(h.clock);
                        self.node = Some(h.node.as_str().into());
                        self.start = h.clock.wall_ns;
                        meta.push(FileEvent::Header {
                            path: self.path.clone(),
                            node: h.node,
                            version: h.ktrace_version,
                        });
                    }
                    MetaBlock::ClockRef(c) => {
                        self.clock = Some(c);
                        if let Some(n) = &self.node {
                            meta.push(FileEvent::Coverage {
                                node: n.to_string(),
                                from_ns: self.start,
                                to_ns: c.wall_ns,
                                tc: false,
                            });
                        }
                    }
                    MetaBlock::Custom { name, data } if name == COVERAGE => {
                        match serde_json::from_slice::<Coverage>(&data) {
                            Ok(c) => {
                                let clock = self.clock.unwrap_or_default();
                                meta.push(FileEvent::Coverage {
                                    node: c.node,
                                    from_ns: clock.to_wall(c.start_mono_ns),
                                    to_ns: clock.to_wall(c.end_mono_ns),
                                    tc: !c.underlay.is_empty(),
                                });
                            }
                            Err(e) => warnings.push(format!("{}: bad coverage block: {e}", self.path.display())),
                        }
                    }
                    MetaBlock::KubeSnapshot(text) => match Snapshot::parse(&text, &self.path.display().to_string()) {
                        Ok(s) => meta.push(FileEvent::Snapshot(Box::new(s))),
                        Err(e) => warnings.push(format!("{}: kube snapshot unusable: {e}", self.path.display())),
                    },
                    MetaBlock::NetState(state) => {
                        meta.push(FileEvent::NetState { node: self.node.as_deref().unwrap_or("?").to_owned(), state });
                    }
                    MetaBlock::Unknown { record_type, version, .. } => {
                        warnings.push(format!(
                            "{}: skipped unknown ktrace block {record_type} v{version} (newer writer?)",
                            self.path.display()
                        ));
                    }
                    _ => {}
                },
                Some(Ok(Item::Record(mut r))) => {
                    // ktrace captures store monotonic times plus a clock
                    // reference; foreign captures have wall-clock times only.
                    let clock = self.clock;
                    // Cloned only where missing (ktrace packets carry their
                    // interface's node already): two atomics per record saved.
                    let node = || self.node.clone();
                    match &mut r {
                        Record::Packet(p) => {
                            if let Some(c) = clock {
                                p.ts_ns = c.to_wall(p.ts_ns);
                            }
                            if p.node.is_none() {
                                p.node = node();
                            }
                        }
                        Record::Lost { ts_ns, node: n, .. } => {
                            if let Some(c) = clock {
                                *ts_ns = c.to_wall(*ts_ns);
                            }
                            if n.is_none() {
                                *n = node();
                            }
                        }
                        Record::ResolvConf(e) => {
                            if let Some(c) = clock {
                                e.ts_ns = c.to_wall(e.ts_ns);
                            }
                        }
                        Record::Drop(d) => {
                            if let Some(c) = clock {
                                d.ts_ns = c.to_wall(d.ts_ns);
                            }
                            if d.node.is_none() {
                                d.node = node();
                            }
                        }
                        Record::Conn(x) => {
                            if let Some(c) = clock {
                                x.ts_ns = c.to_wall(x.ts_ns);
                            }
                            if x.node.is_none() {
                                x.node = node();
                            }
                        }
                    }
                    return Some(r);
                }
            }
        }
        None
    }
}

/// How far a replay has read through its files (bytes as stored: compressed
/// files count their compressed bytes), for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    read: Arc<std::sync::atomic::AtomicU64>,
    total: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Bytes read so far and the files' total size.
    #[must_use]
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.read.load(Relaxed), self.total.load(Relaxed))
    }
}

/// Replays `paths` merged by wall-clock time, calling `on` for every event.
/// Returns warnings (truncated files, unknown blocks) for the caller to show.
pub fn replay(paths: &[PathBuf], on: impl FnMut(FileEvent)) -> anyhow::Result<Vec<String>> {
    replay_inner(paths, None, on)
}

/// [`replay`], counting the bytes read into `progress`.
pub fn replay_with_progress(
    paths: &[PathBuf],
    progress: &Progress,
    on: impl FnMut(FileEvent),
) -> anyhow::Result<Vec<String>> {
    replay_inner(paths, Some(progress), on)
}

fn replay_inner(
    paths: &[PathBuf],
    progress: Option<&Progress>,
    mut on: impl FnMut(FileEvent),
) -> anyhow::Result<Vec<String>> {
    let mut streams = Vec::with_capacity(paths.len());
    for p in paths {
        let reader = match progress {
            None => open(p)?,
            Some(pr) => {
                let len = std::fs::metadata(p).map_or(0, |m| m.len());
                pr.total.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                capture::open_counted(p, Some(Arc::clone(&pr.read)))
                    .with_context(|| format!("opening capture {}", p.display()))?
            }
        };
        streams.push(Stream {
            path: p.clone(),
            reader,
            clock: None,
            node: None,
            start: 0,
            done: false,
            yield_meta: false,
        });
    }
    let mut warnings = Vec::new();
    let mut meta = Vec::new();
    if let [s] = &mut streams[..] {
        // One capture (the usual case): nothing to merge, so no heap and
        // no parking of records.
        loop {
            let next = s.next(&mut warnings, &mut meta);
            if !meta.is_empty() {
                meta.drain(..).for_each(&mut on);
            }
            let Some(r) = next else { return Ok(warnings) };
            on(FileEvent::Record(r));
        }
    }
    // Heap of (time, stream index, seq) over each stream's next record; a
    // stream's metadata is delivered before its next record.
    let mut heads: Vec<Option<Record>> = Vec::with_capacity(streams.len());
    let mut heap = BinaryHeap::new();
    for (i, s) in streams.iter_mut().enumerate() {
        let r = s.next(&mut warnings, &mut meta);
        if let Some(r) = &r {
            heap.push(Reverse((r.ts_ns(), i)));
        }
        heads.push(r);
    }
    meta.drain(..).for_each(&mut on);
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(rec) = heads[i].take() else { continue };
        on(FileEvent::Record(rec));
        let next = streams[i].next(&mut warnings, &mut meta);
        meta.drain(..).for_each(&mut on);
        if let Some(r) = &next {
            heap.push(Reverse((r.ts_ns(), i)));
        }
        heads[i] = next;
    }
    Ok(warnings)
}

fn open(p: &Path) -> anyhow::Result<CaptureReader> {
    capture::open(p).with_context(|| format!("opening capture {}", p.display()))
}

/// The events of one capture read from any byte source (an agent's stream),
/// in stream order: a record's context comes before the record.
pub struct CaptureEvents {
    stream: Stream,
    pending: std::collections::VecDeque<FileEvent>,
    meta: Vec<FileEvent>,
    /// Truncation and unknown-block notes so far.
    pub warnings: Vec<String>,
}

impl CaptureEvents {
    /// Events of `reader`, named `name` in warnings.
    #[must_use]
    pub fn new(name: PathBuf, reader: CaptureReader) -> Self {
        Self {
            stream: Stream { path: name, reader, clock: None, node: None, start: 0, done: false, yield_meta: true },
            pending: std::collections::VecDeque::new(),
            meta: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Iterator for CaptureEvents {
    type Item = FileEvent;
    fn next(&mut self) -> Option<FileEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.stream.done {
                return None;
            }
            let rec = self.stream.next(&mut self.warnings, &mut self.meta);
            self.pending.extend(self.meta.drain(..));
            if let Some(r) = rec {
                self.pending.push_back(FileEvent::Record(r));
            }
        }
    }
}
