//! Enrichment: who is behind an address, a network namespace, a cgroup or a pid.
//!
//! Sources of pod metadata, in order of preference: the Kubernetes API
//! ([`kube`]: in-cluster service account or a kubeconfig), a `kubectl get
//! pods,services,nodes -A -o json` snapshot ([`snapshot`]), none. Keys:
//! pod IP (with history, so a reused IP is attributed by time), cgroup id
//! and path ([`cgroup`]), netns inode, service cluster IP, node address.
//! Process-side evidence (netns of a pid, resolv.conf a process used) comes
//! from [`host`].

pub mod cgroup;
pub mod host;
mod index;
pub mod kube;
pub mod snapshot;

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError, RwLock, RwLockReadGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{decode::DnsEvent, event::Hook};

pub use crate::model::PodRef;
pub use snapshot::{ServiceRef, Snapshot};

/// Answers "which pod is this?" for addresses, network namespaces and cgroups.
///
/// A cheap handle: clones share the same metadata, which a Kubernetes watcher
/// ([`kube::start_watch`]) may update at any time; lookups take a read lock
/// for a few hash lookups and never wait on the network.
///
/// Time: [`Self::enrich`] attributes addresses by the event's time, converted
/// to wall clock with [`Self::with_clock_offset`] (live records carry
/// monotonic times; replayed ones are wall clock already, offset 0).
#[derive(Clone, Debug, Default)]
pub struct Enricher {
    index: Arc<RwLock<index::Index>>,
    clock_offset_ns: i128,
    /// Newest event time seen (wall ns): when a snapshot without its own time applies in replay.
    last_seen: Arc<AtomicI64>,
    cgroups: Option<Arc<Mutex<cgroup::CgroupPaths>>>,
    watch: Option<Arc<kube::WatchLink>>,
    /// Whether the index can name any pod by address, netns or cgroup
    /// (kept by [`Self::write`]): without, a message is not looked up at
    /// all (a foreign capture's replay has no metadata; the lock and four
    /// lookups were most of enriching each message).
    names_pods: Arc<AtomicBool>,
    /// See [`Self::generation`].
    generation: Arc<Generation>,
}

/// A value no other index and no other version of this one had: taken
/// from one counter for the whole process.
#[derive(Debug)]
struct Generation(AtomicU64);

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Generation {
    fn next() -> u64 {
        GENERATIONS.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Generation {
    fn default() -> Self {
        Self(AtomicU64::new(Self::next()))
    }
}

/// How often an unknown cgroup id may trigger a rescan of the cgroup tree.
const CGROUP_RESCAN: Duration = Duration::from_millis(500);

impl Enricher {
    /// No metadata: pod fields stay empty, addresses and processes still show.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Indexes a snapshot.
    #[must_use]
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let e = Self::default();
        e.write(|ix| ix.apply_snapshot(s, s.taken_at_ns.unwrap_or(index::SINCE_EVER)));
        e
    }

    /// Merges a later snapshot (replay: each `KubeSnapshot` block of a capture)
    /// into the history instead of replacing it: pods missing from it end at
    /// its time (its `ktrace.io/observed-at`, else the newest event seen), so
    /// events keep the pod that had the address when they happened.
    pub fn apply_snapshot(&self, s: &Snapshot) {
        let at = s.taken_at_ns.unwrap_or_else(|| i128::from(self.last_seen.load(Ordering::Relaxed)));
        self.write(|ix| ix.apply_snapshot(s, at));
    }

    /// Live records: wall-clock ns minus monotonic ns on this node
    /// (`ClockRef::now().offset()`); replayed records are wall clock (0).
    #[must_use]
    pub fn with_clock_offset(mut self, offset_ns: i128) -> Self {
        self.clock_offset_ns = offset_ns;
        self
    }

    /// Live only: resolve cgroup ids through the cgroup2 tree mounted at `root`
    /// (cgroup path → container id / pod uid), for pods without a
    /// `ktrace.io/cgroup-id` annotation, i.e. every real cluster's.
    #[must_use]
    pub fn with_cgroup_root(mut self, root: &Path) -> Self {
        self.cgroups = Some(Arc::new(Mutex::new(cgroup::CgroupPaths::new(root, CGROUP_RESCAN))));
        self
    }

    pub(crate) fn with_watch(mut self, w: Arc<kube::WatchLink>) -> Self {
        self.watch = Some(w);
        self
    }

    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut index::Index) -> R) -> R {
        let mut ix = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut ix);
        self.names_pods.store(ix.names_pods(), Ordering::Release);
        // Under the lock, after the change: whoever reads the new value
        // then finds the change in the index.
        self.generation.0.store(Generation::next(), Ordering::Release);
        r
    }

    /// Changes whenever the index (pods, services, nodes) may answer
    /// differently, and differs between enrichers that share no index: an
    /// answer cached with it (the JSON writer's `server_service`) is reused
    /// only while it is equal. Resolution through the cgroup tree
    /// ([`Self::with_cgroup_root`]) is not covered.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.0.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, index::Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wall-clock ns of a record timestamp.
    #[must_use]
    pub fn wall_ns(&self, ts_ns: u64) -> i128 {
        i128::from(ts_ns) + self.clock_offset_ns
    }

    /// True when the metadata comes from the Kubernetes API and has not been
    /// refreshed for longer than `--metadata-stale-after` (API unreachable,
    /// watches failing): lookups still answer from the last known state.
    #[must_use]
    pub fn stale(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.shared.stale())
    }

    /// Watching the API: the current metadata as a `kubectl`-style List, when it
    /// changed since the last call and at most once a second (for `ktrace
    /// record` to store as a `KubeSnapshot` block). `None` otherwise.
    #[must_use]
    pub fn poll_snapshot(&self) -> Option<String> {
        self.watch.as_ref().and_then(|w| w.shared.poll_snapshot())
    }

    /// Pods, services and nodes known.
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        self.read().counts()
    }

    /// The pod that owns the socket a packet was observed at: cgroup id
    /// (annotation, else the cgroup's path → container id / pod uid), then
    /// netns. ([`Self::enrich`] does the same under its own lock.)
    #[must_use]
    pub fn local_pod(&self, rec: &impl crate::event::SocketIds) -> Option<PodRef> {
        {
            let ix = self.read();
            if let Some(p) = ix.pod_by_cgroup(rec.cgroup_id()) {
                return Some(p);
            }
            if self.cgroups.is_none() {
                return ix.pod_by_netns(rec.netns_ino());
            }
        }
        self.pod_by_cgroup_path(rec.cgroup_id(), rec.netns_ino()).or_else(|| self.read().pod_by_netns(rec.netns_ino()))
    }

    fn pod_by_cgroup_path(&self, id: u64, netns_ino: u32) -> Option<PodRef> {
        let info = {
            let mut c = self.cgroups.as_ref()?.lock().unwrap_or_else(PoisonError::into_inner);
            c.container_info(id)?
        };
        if info.container_id.is_none() && info.pod_uid.is_none() {
            return None;
        }
        let (key, pod, learn) = {
            let ix = self.read();
            let key = ix.key_for(&info)?;
            let learn = netns_ino != 0 && ix.netns_identifies(&key, netns_ino);
            let pod = ix.pod_of_key(&key)?;
            (key, pod, learn)
        };
        if learn {
            // The pod's netns now names it too (its other processes, packets seen outside any socket).
            self.write(|ix| ix.learn_netns(netns_ino, &key));
        }
        Some(pod)
    }

    /// The pod that has this IP now (not hostNetwork pods: their IP is the node's).
    #[must_use]
    pub fn pod_by_ip(&self, ip: &IpAddr) -> Option<PodRef> {
        self.read().pod_by_ip(ip)
    }

    /// The pod that had this IP at `wall_ns` (Unix ns): right across deletions and IP reuse.
    #[must_use]
    pub fn pod_by_ip_at(&self, ip: &IpAddr, wall_ns: i128) -> Option<PodRef> {
        self.read().pod_by_ip_at(ip, wall_ns)
    }

    /// The pod of a network namespace inode.
    #[must_use]
    pub fn pod_by_netns(&self, ino: u32) -> Option<PodRef> {
        self.read().pod_by_netns(ino)
    }

    /// The pod with this uid (current, or deleted recently).
    #[must_use]
    pub fn pod_by_uid(&self, uid: &str) -> Option<PodRef> {
        self.read().pod_by_uid(uid)
    }

    /// The pod running this container (id without `containerd://`).
    #[must_use]
    pub fn pod_by_container_id(&self, id: &str) -> Option<PodRef> {
        self.read().pod_by_container(id)
    }

    /// The node that has this address.
    #[must_use]
    pub fn node_by_ip(&self, ip: &IpAddr) -> Option<Arc<str>> {
        self.read().node_by_ip(ip)
    }

    /// Every address the metadata gives the node named `name` (`InternalIP`,
    /// `ExternalIP`), sorted; empty when the node is unknown.
    #[must_use]
    pub fn node_addresses(&self, name: &str) -> Vec<IpAddr> {
        self.read().node_addresses(name)
    }

    /// The service with this cluster IP.
    #[must_use]
    pub fn service_by_ip(&self, ip: &IpAddr) -> Option<ServiceRef> {
        self.read().service_by_ip(ip)
    }

    /// Whether `ip` is the cluster DNS: the `kube-system/kube-dns` service (or
    /// one labelled `k8s-app=kube-dns`, as `CoreDNS` installs keep), or one of its pods.
    #[must_use]
    pub fn is_cluster_dns(&self, ip: &IpAddr) -> bool {
        self.read().is_cluster_dns(ip)
    }

    /// Fills `src_pod`/`dst_pod`: the observing socket's own side by cgroup or
    /// netns (exact even for hostNetwork-free loopback traffic), the other side
    /// by IP as owned at the event's time.
    ///
    /// Inlined up to the lookups: without metadata (a foreign capture, a
    /// node without API access) it is a few loads and stores, and the call
    /// with its frame was most of its ~50 instructions per message.
    #[inline]
    pub fn enrich(&self, ev: &mut DnsEvent) {
        let t = self.wall_ns(ev.rec.ts_ns);
        let seen = i64::try_from(t).unwrap_or(i64::MAX);
        // One thread enriches (the pipeline's, or a replay's reading
        // thread): a load and a store instead of a locked read-modify-write
        // per message. A lost race would only date a time-less snapshot a
        // message earlier.
        if seen > self.last_seen.load(Ordering::Relaxed) {
            self.last_seen.store(seen, Ordering::Relaxed);
        }
        if self.cgroups.is_none() && !self.names_pods.load(Ordering::Acquire) {
            // What every lookup below would answer.
            ev.src_pod = None;
            ev.dst_pod = None;
            return;
        }
        self.enrich_by_lookup(ev, t);
    }

    #[inline(never)]
    fn enrich_by_lookup(&self, ev: &mut DnsEvent, t: i128) {
        // One read lock for the whole message where the cgroup path is not needed.
        let mut ix = self.read();
        let local = match ix.pod_by_cgroup(ev.rec.cgroup_id) {
            Some(p) => Some(p),
            None if self.cgroups.is_none() => ix.pod_by_netns(ev.rec.netns_ino),
            None => {
                drop(ix);
                let p = self
                    .pod_by_cgroup_path(ev.rec.cgroup_id, ev.rec.netns_ino)
                    .or_else(|| self.read().pod_by_netns(ev.rec.netns_ino));
                ix = self.read();
                p
            }
        };
        let by_ip = |ip: &IpAddr| ix.pod_by_ip_at(ip, t);
        match ev.rec.hook {
            Hook::SocketEgress | Hook::TcEgress => {
                ev.src_pod = local.or_else(|| by_ip(&ev.src.ip));
                ev.dst_pod = by_ip(&ev.dst.ip);
            }
            Hook::SocketIngress | Hook::TcIngress => {
                ev.src_pod = by_ip(&ev.src.ip);
                ev.dst_pod = local.or_else(|| by_ip(&ev.dst.ip));
            }
            Hook::Wire => {
                ev.src_pod = by_ip(&ev.src.ip);
                ev.dst_pod = by_ip(&ev.dst.ip);
            }
        }
    }
}
