//! The agent's record hub: every record the node's programs produce is
//! encoded once as pcapng blocks, kept in a bounded history for late
//! subscribers and broadcast to live ones.
//!
//! A subscriber's stream is a valid ktrace capture: the *context* (section
//! header, node header, every interface declared so far, the latest
//! Kubernetes snapshot, network state, resolv.conf evidence) comes first,
//! then the history it asked for, then live entries. Registering for live
//! entries and copying context and history happen under one lock, so nothing
//! is missed or sent twice.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::enrich::PodRef;

/// What an entry carries, for subscribers' kind filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Context every reader needs (metadata, lost counters): always sent.
    Context,
    /// The n-th interface declaration: always sent, and re-sent to a
    /// subscriber that skipped it by lagging (its packets refer to it).
    Interface(u32),
    /// A DNS packet.
    Dns,
    /// A kernel drop or an underlay fingerprint.
    Drops,
    /// A TCP connection event.
    Conn,
    /// Clock heartbeat + coverage: live only, never kept in history.
    Heartbeat,
    /// A DNS finding (JSON, not pcapng).
    Finding,
}

/// Where a context entry goes in the context sent to new subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSlot {
    /// Appended (interface declarations: packets refer to them by index).
    Append,
    /// Replaces the previous Kubernetes snapshot.
    Snapshot,
    /// Replaces the previous network state.
    NetState,
    /// resolv.conf evidence: the newest [`Hub::MAX_RESOLV`] are kept.
    ResolvConf,
    /// Sent live and kept in history, not in the context (lost counters).
    None,
}

/// One encoded record (or finding). Cheap to clone (reference counts):
/// the history keeps entries by value and each live subscriber clones its
/// own, so publishing allocates nothing per entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Wall-clock ns.
    pub ts_ns: u64,
    /// What it is.
    pub kind: EntryKind,
    /// Pods involved (local, source, destination), for pod-scoped subscribers.
    pub pods: Pods,
    /// pcapng blocks, or a finding's JSON.
    pub bytes: Bytes,
}

/// The pods of an entry: shared between the entries of one flow (the
/// encoder's pod cache hands out the same set), none for most non-packets.
pub type Pods = Option<Arc<[PodRef]>>;

impl Entry {
    /// The entry's pods (empty when none is known).
    #[must_use]
    pub fn pods(&self) -> &[PodRef] {
        self.pods.as_deref().unwrap_or_default()
    }
}

/// What a new subscriber starts from.
pub struct Subscription {
    /// pcapng blocks: section header, node header, interfaces, metadata.
    pub context: Vec<Bytes>,
    /// History entries at or after the requested time, oldest first.
    pub history: Vec<Entry>,
    /// Live entries from here on.
    pub live: broadcast::Receiver<Entry>,
    /// Interface declarations included in `context`.
    pub ifaces: u32,
}

struct Inner {
    head: Bytes,
    ifaces: Vec<Bytes>,
    snapshot: Option<Bytes>,
    netstate: Option<Bytes>,
    resolv: VecDeque<Bytes>,
    history: VecDeque<Entry>,
    history_bytes: usize,
    max_bytes: usize,
}

/// Counters, readable without the lock.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Entries published.
    pub published: AtomicU64,
    /// History entries evicted (the oldest, to stay under the byte bound).
    pub evicted: AtomicU64,
    /// Entries that live subscribers missed by reading too slowly.
    pub subscriber_dropped: AtomicU64,
}

/// The hub. Memory: history ≤ `max_bytes` (+ per-entry overhead), broadcast
/// ≤ [`Hub::LIVE_CAPACITY`] entries, context bounded by interface count
/// (one per pod network namespace) and [`Hub::MAX_RESOLV`].
pub struct Hub {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Entry>,
    /// Counters.
    pub stats: HubStats,
}

/// Bookkeeping overhead counted per history entry, so that a flood of tiny
/// entries is bounded too: the entry itself in the history's ring (64 bytes,
/// which grows by doubling) and the arena chunk's tail it may leave unused.
const ENTRY_OVERHEAD: usize = 96;

impl Hub {
    /// Live entries buffered per subscriber before it starts missing them.
    pub const LIVE_CAPACITY: usize = 16_384;
    /// resolv.conf evidence blocks kept for new subscribers.
    pub const MAX_RESOLV: usize = 1024;
    /// Interface declarations kept (one per pod network namespace seen).
    pub const MAX_IFACES: usize = 65_536;

    /// A hub whose context starts with `head` (section header + node header)
    /// and whose history holds at most `max_bytes`.
    #[must_use]
    pub fn new(head: Bytes, max_bytes: usize) -> Self {
        let (live, _) = broadcast::channel(Self::LIVE_CAPACITY);
        // Sized for a full history of typical entries (a DNS packet's blocks
        // and overhead are ~300 bytes) and touched now, as the encoder's
        // arena is: no doubling (a copy of the ring each time) nor fresh
        // pages faulted in while the history fills; smaller entries still
        // grow it.
        let mut history = VecDeque::with_capacity(max_bytes / 256);
        let blank = Entry { ts_ns: 0, kind: EntryKind::Context, pods: None, bytes: Bytes::new() };
        history.resize(history.capacity(), blank);
        history.clear();
        Self {
            inner: Mutex::new(Inner {
                head,
                ifaces: Vec::new(),
                snapshot: None,
                netstate: None,
                resolv: VecDeque::new(),
                history,
                history_bytes: 0,
                max_bytes,
            }),
            live,
            stats: HubStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single push/pop): keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds context: kept for new subscribers (per `slot`) and sent to live ones.
    pub fn context(&self, ts_ns: u64, slot: ContextSlot, bytes: Bytes) {
        let mut g = self.lock();
        let kind = match slot {
            ContextSlot::Append => EntryKind::Interface(g.ifaces.len() as u32),
            _ => EntryKind::Context,
        };
        let e = Entry { ts_ns, kind, pods: None, bytes: bytes.clone() };
        match slot {
            ContextSlot::Append => {
                if g.ifaces.len() < Self::MAX_IFACES {
                    g.ifaces.push(bytes);
                }
            }
            ContextSlot::Snapshot => g.snapshot = Some(bytes),
            ContextSlot::NetState => g.netstate = Some(bytes),
            ContextSlot::ResolvConf => {
                if g.resolv.len() >= Self::MAX_RESOLV {
                    g.resolv.pop_front();
                }
                g.resolv.push_back(bytes);
            }
            ContextSlot::None => Self::remember(&mut g, &self.stats, e.clone()),
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.live.send(e);
    }

    /// Publishes an entry: kept in history (unless a heartbeat) and broadcast.
    pub fn publish(&self, e: Entry) {
        let mut g = self.lock();
        // Subscribers register under the same lock: none now means none
        // misses this entry, and the usual case (nobody streaming) skips the
        // broadcast's own lock and the clone.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(e.clone());
        }
        if e.kind != EntryKind::Heartbeat {
            Self::remember(&mut g, &self.stats, e);
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes a batch (emptying `entries`), in order, as [`Hub::publish`]
    /// would one by one, under one lock: the agent queues a wakeup's entries
    /// and hands them over together (the lock, the subscriber count and the
    /// counter were otherwise taken per record).
    pub fn publish_all(&self, entries: &mut Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let n = entries.len() as u64;
        let mut g = self.lock();
        let live = self.live.receiver_count() > 0;
        let mut evicted = 0;
        for e in entries.drain(..) {
            if live {
                let _ = self.live.send(e.clone());
            }
            if e.kind != EntryKind::Heartbeat {
                evicted += Self::keep(&mut g, e);
            }
        }
        drop(g);
        self.stats.evicted.fetch_add(evicted, Ordering::Relaxed);
        self.stats.published.fetch_add(n, Ordering::Relaxed);
    }

    /// Memory an entry holds, as counted against the history bound (pod
    /// sets are shared between the entries of a flow; counting them in full
    /// for each entry overestimates).
    fn cost(e: &Entry) -> usize {
        e.bytes.len() + ENTRY_OVERHEAD + size_of_val(e.pods())
    }

    fn remember(g: &mut Inner, stats: &HubStats, e: Entry) {
        let evicted = Self::keep(g, e);
        stats.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Adds `e` to the history; returns how many old entries it evicted.
    fn keep(g: &mut Inner, e: Entry) -> u64 {
        g.history_bytes += Self::cost(&e);
        g.history.push_back(e);
        let mut evicted = 0;
        while g.history_bytes > g.max_bytes {
            let Some(old) = g.history.pop_front() else { break };
            g.history_bytes -= Self::cost(&old);
            evicted += 1;
        }
        evicted
    }

    /// Starts a subscription: context, history since `since_ns` (wall clock;
    /// 0 = none), and live entries.
    pub fn subscribe(&self, since_ns: u64) -> Subscription {
        let g = self.lock();
        let mut context = Vec::with_capacity(4 + g.ifaces.len() + g.resolv.len());
        context.push(g.head.clone());
        context.extend(g.ifaces.iter().cloned());
        context.extend(g.snapshot.iter().cloned());
        context.extend(g.netstate.iter().cloned());
        context.extend(g.resolv.iter().cloned());
        let history = if since_ns == 0 {
            Vec::new()
        } else {
            let start = g.history.partition_point(|e| e.ts_ns < since_ns);
            g.history.range(start..).cloned().collect()
        };
        let live = self.live.subscribe();
        let ifaces = g.ifaces.len() as u32;
        drop(g);
        Subscription { context, history, live, ifaces }
    }

    /// Interface declarations from the `from`-th on (for a subscriber that lagged).
    #[must_use]
    pub fn ifaces_from(&self, from: u32) -> Vec<Bytes> {
        self.lock().ifaces.iter().skip(from as usize).cloned().collect()
    }

    /// History size: (entries, bytes, oldest wall ns).
    #[must_use]
    pub fn history_size(&self) -> (usize, usize, u64) {
        let g = self.lock();
        (g.history.len(), g.history_bytes, g.history.front().map_or(0, |e| e.ts_ns))
    }

    /// Live subscribers right now.
    #[must_use]
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, bytes, _) = self.history_size();
        f.debug_struct("Hub").field("history_records", &n).field("history_bytes", &bytes).finish_non_exhaustive()
    }
}

/// Splits concatenated pcapng blocks (little-endian, as ktrace writes them)
/// into `(block type, block bytes)`. A malformed tail is returned as one
/// block of type 0 rather than lost.
#[must_use]
pub fn split_blocks(buf: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let rest = &buf[at..];
        let len = rest
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
            .filter(|&l| l >= 12 && l <= rest.len());
        let Some(len) = len else {
            out.push((0, rest));
            break;
        };
        let ty = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        out.push((ty, &rest[..len]));
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64, n: usize) -> Entry {
        Entry { ts_ns: ts, kind: EntryKind::Dns, pods: None, bytes: Bytes::from(vec![0u8; n]) }
    }

    #[test]
    fn history_is_bounded_and_counted() {
        let hub = Hub::new(Bytes::from_static(b"head"), 10 * (100 + ENTRY_OVERHEAD));
        for i in 0..100 {
            hub.publish(entry(i, 100));
        }
        let (n, bytes, oldest) = hub.history_size();
        assert_eq!(n, 10);
        assert!(bytes <= 10 * (100 + ENTRY_OVERHEAD));
        assert_eq!(oldest, 90);
        assert_eq!(hub.stats.evicted.load(Ordering::Relaxed), 90);
    }

    #[test]
    fn subscribe_gets_context_history_then_live_without_gaps() {
        let hub = Hub::new(Bytes::from_static(b"head"), 1 << 20);
        hub.context(1, ContextSlot::Append, Bytes::from_static(b"idb0"));
        hub.context(2, ContextSlot::Snapshot, Bytes::from_static(b"snap1"));
        hub.context(3, ContextSlot::Snapshot, Bytes::from_static(b"snap2"));
        for i in 10..20 {
            hub.publish(entry(i, 1));
        }
        let mut sub = hub.subscribe(15);
        assert_eq!(
            sub.context,
            vec![Bytes::from_static(b"head"), Bytes::from_static(b"idb0"), Bytes::from_static(b"snap2")]
        );
        assert_eq!(sub.history.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), vec![15, 16, 17, 18, 19]);
        hub.publish(entry(20, 1));
        assert_eq!(sub.live.try_recv().unwrap().ts_ns, 20);
        let none = hub.subscribe(0);
        assert!(none.history.is_empty());
    }

    /// A batch gives subscribers, history and counters what publishing its
    /// entries one by one gives.
    #[test]
    fn a_batch_is_its_entries_one_by_one() {
        let bound = 10 * (100 + ENTRY_OVERHEAD);
        let (one, all) = (Hub::new(Bytes::new(), bound), Hub::new(Bytes::new(), bound));
        let (mut s1, mut s2) = (one.subscribe(0), all.subscribe(0));
        let mut batch = Vec::new();
        for i in 0..30 {
            let e = if i % 7 == 0 {
                Entry { ts_ns: i, kind: EntryKind::Heartbeat, pods: None, bytes: Bytes::new() }
            } else {
                entry(i, 100)
            };
            one.publish(e.clone());
            batch.push(e);
        }
        all.publish_all(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(one.history_size(), all.history_size());
        let counts = |h: &Hub| (h.stats.published.load(Ordering::Relaxed), h.stats.evicted.load(Ordering::Relaxed));
        assert_eq!(counts(&one), counts(&all));
        for _ in 0..30 {
            let (a, b) = (s1.live.try_recv().unwrap(), s2.live.try_recv().unwrap());
            assert_eq!((a.ts_ns, a.kind, a.bytes), (b.ts_ns, b.kind, b.bytes));
        }
        assert!(s2.live.try_recv().is_err());
    }

    #[test]
    fn heartbeats_are_not_history() {
        let hub = Hub::new(Bytes::new(), 1 << 20);
        hub.publish(Entry { ts_ns: 5, kind: EntryKind::Heartbeat, pods: None, bytes: Bytes::new() });
        assert_eq!(hub.history_size().0, 0);
    }

    #[test]
    fn splits_blocks_and_keeps_a_bad_tail() {
        let mut b = Vec::new();
        for ty in [1u32, 6] {
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&16u32.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&16u32.to_le_bytes());
        }
        b.extend_from_slice(&[9, 9, 9]);
        let v = split_blocks(&b);
        assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 6, 0]);
        assert_eq!(v[2].1, &[9, 9, 9]);
    }
}
