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
    capture::{self, CaptureReader, ClockRef, Item, MetaBlock, Next},
    enrich::Snapshot,
    event::{PacketRef, Record},
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

/// What replay hands a consumer that takes packets where they lie
/// ([`replay_ref`]).
#[derive(Debug)]
pub enum FileRef<'a> {
    /// A packet, `ts_ns` in wall-clock ns, valid until the next event.
    Packet(PacketRef<'a>),
    /// Anything else (and packets of scap captures, which are made, not found).
    Event(FileEvent),
}

impl FileRef<'_> {
    /// The owned event ([`PacketRef::to_record`] for a packet).
    #[must_use]
    pub fn into_owned(self) -> FileEvent {
        match self {
            Self::Packet(p) => FileEvent::Record(Record::Packet(p.to_record())),
            Self::Event(e) => e,
        }
    }
}

/// One capture being read, converted to wall-clock records.
struct Stream {
    reader: CaptureReader,
    ctx: StreamCtx,
    done: bool,
    /// Return as soon as context is queued (live agent streams: a heartbeat
    /// must not wait for the next record).
    yield_meta: bool,
}

/// What a stream learnt from its capture's context.
struct StreamCtx {
    path: PathBuf,
    clock: Option<ClockRef>,
    node: Option<Arc<str>>,
    start: u64,
}

impl Stream {
    fn new(path: PathBuf, reader: CaptureReader, yield_meta: bool) -> Self {
        Self { reader, ctx: StreamCtx { path, clock: None, node: None, start: 0 }, done: false, yield_meta }
    }
}

/// A record as a stream hands it on.
enum Rec<'a> {
    Packet(PacketRef<'a>),
    Record(Record),
}

impl Rec<'_> {
    fn into_record(self) -> Record {
        match self {
            Self::Packet(p) => Record::Packet(p.to_record()),
            Self::Record(r) => r,
        }
    }
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
    /// Next record, owned; context found on the way is queued in `meta`.
    fn next(&mut self, warnings: &mut Vec<String>, meta: &mut Vec<FileEvent>) -> Option<Record> {
        self.next_with(warnings, meta, |r, _| r.into_record())
    }

    /// Next record, handed to `f` with the context queued before it (a
    /// packet as it lies: see [`FileRef`]); records converted to wall time
    /// and stamped with the node.
    fn next_with<R>(
        &mut self,
        warnings: &mut Vec<String>,
        meta: &mut Vec<FileEvent>,
        f: impl FnOnce(Rec<'_>, &mut Vec<FileEvent>) -> R,
    ) -> Option<R> {
        let Self { reader, ctx, done, yield_meta } = self;
        while !*done {
            if *yield_meta && !meta.is_empty() {
                return None;
            }
            match reader.next_ref() {
                None => *done = true,
                Some(Err(e)) => {
                    *done = true;
                    let what = if e.is_truncation() {
                        "truncated capture, replayed up to the last complete block"
                    } else {
                        "stopped reading"
                    };
                    warnings.push(format!("{}: {what}: {e}", ctx.path.display()));
                }
                Some(Ok(Next::Packet(mut p))) => {
                    // As `StreamCtx::record` does for an owned packet.
                    if let Some(c) = ctx.clock {
                        p.ts_ns = c.to_wall(p.ts_ns);
                    }
                    if p.node.is_none() {
                        p.node = ctx.node.as_ref();
                    }
                    return Some(f(Rec::Packet(p), meta));
                }
                Some(Ok(Next::Item(Item::Record(mut r)))) => {
                    ctx.record(&mut r);
                    return Some(f(Rec::Record(r), meta));
                }
                Some(Ok(Next::Item(Item::Meta(m)))) => ctx.meta(m, warnings, meta),
            }
        }
        None
    }
}

impl StreamCtx {
    /// Takes in a capture's context.
    fn meta(&mut self, m: MetaBlock, warnings: &mut Vec<String>, meta: &mut Vec<FileEvent>) {
        match m {
            MetaBlock::Header(h) => {
                self.clock = Some(h.clock);
                self.node = Some(h.node.as_str().into());
                self.start = h.clock.wall_ns;
                meta.push(FileEvent::Header { path: self.path.clone(), node: h.node, version: h.ktrace_version });
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
            MetaBlock::Custom { name, data } if name == COVERAGE => match serde_json::from_slice::<Coverage>(&data) {
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
            },
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
        }
    }

    /// An owned record converted to wall time and stamped with the node.
    fn record(&self, r: &mut Record) {
        // ktrace captures store monotonic times plus a clock reference;
        // foreign captures have wall-clock times only.
        let clock = self.clock;
        // Cloned only where missing (ktrace packets carry their interface's
        // node already): two atomics per record saved.
        let node = || self.node.clone();
        match r {
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
pub fn replay(paths: &[PathBuf], mut on: impl FnMut(FileEvent)) -> anyhow::Result<Vec<String>> {
    replay_ref(paths, None, |ev| on(ev.into_owned()))
}

/// [`replay`], counting the bytes read into `progress`.
pub fn replay_with_progress(
    paths: &[PathBuf],
    progress: &Progress,
    mut on: impl FnMut(FileEvent),
) -> anyhow::Result<Vec<String>> {
    replay_ref(paths, Some(progress), |ev| on(ev.into_owned()))
}

/// [`replay`] (counting the bytes read into `progress`, if any) for a
/// consumer that is done with each packet before the next event: packets
/// are handed on where they lie in the file, not made into records (no
/// copy, no shared handle, no move of a record per packet).
pub fn replay_ref(
    paths: &[PathBuf],
    progress: Option<&Progress>,
    mut on: impl FnMut(FileRef<'_>),
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
        streams.push(Stream::new(p.clone(), reader, false));
    }
    let mut warnings = Vec::new();
    let mut meta = Vec::new();
    if let [s] = &mut streams[..] {
        // One capture (the usual case): nothing to merge, so no heap and
        // no parking of records, and packets are seen where they lie.
        loop {
            // ktrace's packet blocks (nearly every block of its captures)
            // straight from the reader: no item to match, no closure.
            if !s.done
                && let Some(mut p) = s.reader.next_fast()
            {
                // As `Stream::next_with` does for every packet.
                if let Some(c) = s.ctx.clock {
                    p.ts_ns = c.to_wall(p.ts_ns);
                }
                if p.node.is_none() {
                    p.node = s.ctx.node.as_ref();
                }
                on(FileRef::Packet(p));
                continue;
            }
            let next = s.next_with(&mut warnings, &mut meta, |r, meta| {
                if !meta.is_empty() {
                    meta.drain(..).for_each(|e| on(FileRef::Event(e)));
                }
                match r {
                    Rec::Packet(p) => on(FileRef::Packet(p)),
                    Rec::Record(r) => on(FileRef::Event(FileEvent::Record(r))),
                }
            });
            if !meta.is_empty() {
                meta.drain(..).for_each(|e| on(FileRef::Event(e)));
            }
            if next.is_none() {
                return Ok(warnings);
            }
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
    meta.drain(..).for_each(|e| on(FileRef::Event(e)));
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(rec) = heads[i].take() else { continue };
        on(FileRef::Event(FileEvent::Record(rec)));
        let next = streams[i].next(&mut warnings, &mut meta);
        meta.drain(..).for_each(|e| on(FileRef::Event(e)));
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
            stream: Stream::new(name, reader, true),
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
