//! One subscriber's stream: context, history, then live entries from the
//! [`Hub`], filtered by kind and pods, batched into chunks. Used by the gRPC
//! `Subscribe` call and by on-node recordings alike.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{
    hub::{Entry, EntryKind, Hub},
    proto::Kind,
};
use crate::{
    event::Record,
    pipeline::{Filter, ScopeKeeper},
};

/// A chunk bigger than this is sent without waiting for more entries.
const CHUNK_BYTES: usize = 256 * 1024;

/// Which kinds a subscriber wants.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kinds {
    /// DNS packets and resolv.conf evidence.
    pub dns: bool,
    /// Drops and underlay fingerprints.
    pub drops: bool,
    /// TCP connection events.
    pub conn: bool,
    /// Findings (JSON).
    pub findings: bool,
}

impl Kinds {
    /// From the request's list; empty means everything but findings.
    #[must_use]
    pub fn from_request(kinds: &[i32]) -> Self {
        if kinds.is_empty() {
            return Self { dns: true, drops: true, conn: true, findings: false };
        }
        let mut k = Self::default();
        for x in kinds {
            match Kind::try_from(*x) {
                Ok(Kind::Dns) => k.dns = true,
                Ok(Kind::Drops) => k.drops = true,
                Ok(Kind::Conn) => k.conn = true,
                Ok(Kind::Findings) => k.findings = true,
                // Unknown kinds from a newer client: ignored, not an error.
                Ok(Kind::Unspecified) | Err(_) => {}
            }
        }
        k
    }

    fn wants(self, kind: EntryKind) -> bool {
        match kind {
            EntryKind::Context | EntryKind::Interface(_) | EntryKind::Heartbeat => true,
            EntryKind::Dns => self.dns,
            EntryKind::Drops => self.drops,
            EntryKind::Conn => self.conn,
            EntryKind::Finding => self.findings,
        }
    }
}

/// What a subscriber asked for.
#[derive(Debug)]
pub struct Spec {
    /// Kinds.
    pub kinds: Kinds,
    /// Pod selection (namespace / pod), plus the resolvers those pods query.
    pub scope: Filter,
    /// History from this wall-clock ns (0: none).
    pub since_ns: u64,
    /// Stop after the history.
    pub history_only: bool,
    /// Send every n-th heartbeat (1: all; recordings to disk keep fewer).
    pub heartbeat_every: u32,
}

/// One batch for the subscriber.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Consecutive pcapng bytes.
    pub pcapng: Vec<u8>,
    /// Findings: (wall ns, JSON).
    pub findings: Vec<(u64, String)>,
    /// Set on chunks that end with a heartbeat.
    pub progress: Option<Progress>,
}

/// Counters sent with heartbeats.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Wall ns of the heartbeat.
    pub watermark_ns: u64,
    /// Kernel events lost so far.
    pub kernel_lost: u64,
    /// History evictions so far.
    pub history_evicted: u64,
    /// Entries this subscriber missed.
    pub subscriber_dropped: u64,
}

struct Pump {
    spec: Spec,
    keeper: ScopeKeeper,
    chunk: Chunk,
    heartbeats: u32,
    dropped: u64,
    /// Interface declarations sent so far (packets refer to them by index).
    ifaces: u32,
}

impl Pump {
    fn add(&mut self, e: &Entry, hub: &Hub, kernel_lost: u64) {
        if !self.spec.kinds.wants(e.kind) {
            return;
        }
        match e.kind {
            EntryKind::Finding => {
                self.chunk.findings.push((e.ts_ns, String::from_utf8_lossy(&e.bytes).into_owned()));
            }
            EntryKind::Heartbeat => {
                self.heartbeats = self.heartbeats.wrapping_add(1);
                if self.heartbeats.is_multiple_of(self.spec.heartbeat_every.max(1)) {
                    self.chunk.pcapng.extend_from_slice(&e.bytes);
                    self.chunk.progress = Some(Progress {
                        watermark_ns: e.ts_ns,
                        kernel_lost,
                        history_evicted: hub.stats.evicted.load(Ordering::Relaxed),
                        subscriber_dropped: self.dropped,
                    });
                }
            }
            EntryKind::Context => self.chunk.pcapng.extend_from_slice(&e.bytes),
            EntryKind::Interface(i) => {
                // Already sent when catching up after a lag.
                if i >= self.ifaces {
                    self.ifaces = i + 1;
                    self.chunk.pcapng.extend_from_slice(&e.bytes);
                }
            }
            EntryKind::Dns | EntryKind::Drops | EntryKind::Conn => {
                // Pod-less entries (drops, connection events) are kept, as `record` does.
                if e.pods().is_empty() || self.keeper.keep(&e.pods().iter().collect::<Vec<_>>()) {
                    self.chunk.pcapng.extend_from_slice(&e.bytes);
                }
            }
        }
    }

    fn lagged(&mut self, n: u64, hub: &Hub, node: &Arc<str>) {
        // Interfaces declared among the skipped entries: later packets need them.
        for b in hub.ifaces_from(self.ifaces) {
            self.ifaces += 1;
            self.chunk.pcapng.extend_from_slice(&b);
        }
        self.dropped += n;
        hub.stats.subscriber_dropped.fetch_add(n, Ordering::Relaxed);
        // In-band, so a reader counts the gap exactly where it happened.
        let lost = Record::Lost { ts_ns: crate::source::monotonic_ns(), count: n, node: Some(Arc::clone(node)) };
        if let Some(b) = crate::capture::record_block(&lost) {
            self.chunk.pcapng.extend_from_slice(&b);
        }
    }

    fn take(&mut self) -> Option<Chunk> {
        let c = std::mem::take(&mut self.chunk);
        (!c.pcapng.is_empty() || !c.findings.is_empty() || c.progress.is_some()).then_some(c)
    }
}

/// Streams `spec` from `hub` into `tx` until the receiver goes away, the hub
/// closes, or (with `history_only`) the history is sent. `kernel_lost`
/// reads the node's kernel loss counter for progress reports.
pub async fn pump(
    hub: Arc<Hub>,
    spec: Spec,
    node: Arc<str>,
    kernel_lost: impl Fn() -> u64,
    tx: mpsc::Sender<Chunk>,
) -> u64 {
    let mut sub = hub.subscribe(spec.since_ns);
    let keeper = ScopeKeeper::new(spec.scope.clone());
    let mut p = Pump { spec, keeper, chunk: Chunk::default(), heartbeats: 0, dropped: 0, ifaces: sub.ifaces };
    for b in &sub.context {
        p.chunk.pcapng.extend_from_slice(b);
    }
    for e in std::mem::take(&mut sub.history) {
        p.add(&e, &hub, 0);
        if p.chunk.pcapng.len() >= CHUNK_BYTES
            && let Some(c) = p.take()
            && tx.send(c).await.is_err()
        {
            return p.dropped;
        }
    }
    if let Some(c) = p.take()
        && tx.send(c).await.is_err()
    {
        return p.dropped;
    }
    if p.spec.history_only {
        return p.dropped;
    }
    loop {
        // Wait for one entry, then take whatever else is ready: one chunk
        // per burst, not one message per packet.
        match sub.live.recv().await {
            Ok(e) => p.add(&e, &hub, kernel_lost()),
            Err(RecvError::Lagged(n)) => p.lagged(n, &hub, &node),
            Err(RecvError::Closed) => break,
        }
        while p.chunk.pcapng.len() < CHUNK_BYTES {
            match sub.live.try_recv() {
                Ok(e) => p.add(&e, &hub, kernel_lost()),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => p.lagged(n, &hub, &node),
                Err(_) => break,
            }
        }
        if let Some(c) = p.take()
            && tx.send(c).await.is_err()
        {
            break;
        }
    }
    if let Some(c) = p.take() {
        let _ = tx.send(c).await;
    }
    p.dropped
}
