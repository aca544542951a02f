//! Pod, service and node metadata from the Kubernetes API (kube-rs), kept
//! current by list + watch, without ever making the event pipeline wait.
//!
//! [`start_watch`] returns at once: the watchers run as tokio tasks and write
//! into the [`Enricher`]'s index, which lookups read through a short read
//! lock. Attribution fills in as the first lists arrive.
//!
//! Per kind (Pods — only this node's with [`KubeSource::node`] —, Services,
//! Nodes) a task lists (paginated), then watches from the list's
//! `resourceVersion`, re-watching when the server ends a watch, relisting
//! when the version has expired (410 Gone, as an HTTP status or as a watch
//! `ERROR` event), and retrying failures with capped exponential backoff.
//! We drive list/watch ourselves rather than through kube-runtime's
//! `watcher`, because staleness needs to know when a watch is *healthy*
//! (request accepted, bookmarks arriving), not only when an object changes:
//! a quiet cluster is not a stale one.
//!
//! Staleness: metadata is stale when some kind has not been listed yet, or
//! its list/watch requests have been failing, for longer than
//! [`KubeSource::stale_after`]; it recovers on the next successful request.
//!
//! Captures: [`Enricher::poll_snapshot`] gives the current objects as a
//! `kubectl`-style List (trimmed to the fields ktrace reads, plus recently
//! deleted pods with `ktrace.io/deleted-at`), at most once a second and only
//! after a change, for `ktrace record` to store; replay merges those Lists
//! into the same history.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{ListParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use thiserror::Error;

use super::{
    Enricher,
    snapshot::{DELETED_AT, NODE_SCOPE, OBSERVED_AT, PodInfo, node_from_json, service_from_json},
};

/// Where the API server and credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiOrigin {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and
    /// `/var/run/secrets/kubernetes.io/serviceaccount`).
    InCluster,
    /// A kubeconfig file: `path`, else `$KUBECONFIG`, else `~/.kube/config`; `context`, else the current one.
    Kubeconfig {
        /// Explicit file (`--kubeconfig`).
        path: Option<PathBuf>,
        /// Context (`--context`).
        context: Option<String>,
    },
}

/// The in-cluster service account token.
const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl ApiOrigin {
    /// Picks the source, in this order: an explicit `--kubeconfig`/`--context`;
    /// the in-cluster service account; `$KUBECONFIG`; `~/.kube/config`; none.
    #[must_use]
    pub fn detect(kubeconfig: Option<&Path>, context: Option<&str>) -> Option<Self> {
        let from_file = |path: Option<&Path>| ApiOrigin::Kubeconfig {
            path: path.map(Path::to_owned),
            context: context.map(str::to_owned),
        };
        if kubeconfig.is_some() || context.is_some() {
            return Some(from_file(kubeconfig));
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()) && Path::new(SA_TOKEN).exists() {
            return Some(Self::InCluster);
        }
        if std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) {
            return Some(from_file(None));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from)?;
        home.join(".kube/config").is_file().then(|| from_file(None))
    }
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct KubeSource {
    /// API server and credentials.
    pub origin: ApiOrigin,
    /// Only pods of this node (`spec.nodeName` field selector): a node agent's view.
    pub node: Option<String>,
    /// Metadata is reported stale after this long without a successful list/watch.
    pub stale_after: Duration,
    /// Live on a node: resolve the `ktrace.io/netns` and `ktrace.io/cgroup`
    /// annotations (the lab's) to inode and cgroup id under this cgroup2 root.
    pub host_keys: Option<PathBuf>,
    /// Server-side watch timeout; a watch is renewed after it.
    pub watch_timeout: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl KubeSource {
    /// Defaults: all pods, stale after 60 s, watches renewed every 290 s, retries at most 10 s apart.
    #[must_use]
    pub fn new(origin: ApiOrigin) -> Self {
        Self {
            origin,
            node: None,
            stale_after: Duration::from_mins(1),
            host_keys: None,
            watch_timeout: Duration::from_secs(290),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why the watcher could not start (later API trouble is not an error: it makes metadata stale).
#[derive(Debug, Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {}: {source}", path.as_deref().map_or_else(|| "($KUBECONFIG or ~/.kube/config)".into(), |p| p.display().to_string()))]
    Kubeconfig {
        /// File, if given explicitly.
        path: Option<PathBuf>,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster service account could not be used.
    #[error("in-cluster config ({SA_TOKEN}): {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built (TLS material, proxy settings).
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The background thread or its runtime could not start.
    #[error("starting the Kubernetes watcher thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Kinds watched; index into per-kind state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pod = 0,
    Service = 1,
    Node = 2,
}

const KINDS: usize = 3;
/// Deleted pods kept in recorded Lists (so replay knows when they ended).
const DELETED_KEEP: Duration = Duration::from_mins(2);
const DELETED_MAX: usize = 1024;
/// Pages of a list (500 objects each): bounds a runaway `continue` loop.
const MAX_PAGES: usize = 10_000;
/// A list request that takes longer than this is abandoned and retried.
const LIST_TIMEOUT: Duration = Duration::from_mins(1);
/// Snapshots for captures, at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
const NEVER: u64 = u64::MAX;

#[derive(Debug, Default)]
struct Objects {
    /// Trimmed JSON per kind, by `namespace/name`.
    live: [BTreeMap<String, Box<str>>; KINDS],
    /// Deleted pods, with `ktrace.io/deleted-at`.
    deleted: VecDeque<(Instant, Box<str>)>,
}

#[derive(Debug)]
struct KindHealth {
    synced: AtomicBool,
    /// ms since `started` of the first failure in the current run of failures; `NEVER` when healthy.
    failing_since: AtomicU64,
}

/// State shared by the watch tasks and every [`Enricher`] clone.
#[derive(Debug)]
pub(crate) struct WatchShared {
    started: Instant,
    stale_after: Duration,
    scope_node: Option<String>,
    health: [KindHealth; KINDS],
    objects: Mutex<Objects>,
    generation: AtomicU64,
    /// (generation returned last, when).
    polled: Mutex<(u64, Option<Instant>)>,
    last_error: Mutex<Option<String>>,
}

/// Keeps the watch tasks alive while any [`Enricher`] clone holds it.
#[derive(Debug)]
pub(crate) struct WatchLink {
    pub(crate) shared: Arc<WatchShared>,
    tasks: Vec<tokio::task::AbortHandle>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for WatchLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the sender ends the background thread's runtime, if any.
        drop(self.stop.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_wall_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl WatchShared {
    fn new(stale_after: Duration, scope_node: Option<String>) -> Self {
        let h = || KindHealth { synced: AtomicBool::new(false), failing_since: AtomicU64::new(NEVER) };
        Self {
            started: Instant::now(),
            stale_after,
            scope_node,
            health: [h(), h(), h()],
            objects: Mutex::new(Objects::default()),
            generation: AtomicU64::new(0),
            polled: Mutex::new((0, None)),
            last_error: Mutex::new(None),
        }
    }

    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn ok(&self, k: Kind) {
        self.health[k as usize].failing_since.store(NEVER, Ordering::Relaxed);
    }

    fn synced(&self, k: Kind) {
        self.health[k as usize].synced.store(true, Ordering::Relaxed);
        self.ok(k);
    }

    fn fail(&self, k: Kind, what: &str, e: &dyn std::fmt::Display) {
        let h = &self.health[k as usize];
        let first = h.failing_since.compare_exchange(NEVER, self.ms(), Ordering::Relaxed, Ordering::Relaxed).is_ok();
        let msg = format!("{k:?} {what}: {e}");
        if first {
            log::warn!("kubernetes API: {msg} (retrying; attribution uses the last known state)");
        } else {
            log::debug!("kubernetes API: {msg}");
        }
        *lock(&self.last_error) = Some(msg);
    }

    /// See the module documentation.
    pub(crate) fn stale(&self) -> bool {
        let now = self.ms();
        let limit = self.stale_after.as_millis() as u64;
        self.health.iter().any(|h| {
            let since = h.failing_since.load(Ordering::Relaxed);
            (!h.synced.load(Ordering::Relaxed) && now >= limit)
                || (since != NEVER && now.saturating_sub(since) >= limit)
        })
    }

    fn all_synced(&self) -> bool {
        self.health.iter().all(|h| h.synced.load(Ordering::Relaxed))
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The List, if it changed since the last call and that call is a second old.
    pub(crate) fn poll_snapshot(&self) -> Option<String> {
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let mut p = lock(&self.polled);
            if generation == 0 || p.0 == generation || p.1.is_some_and(|t| t.elapsed() < SNAPSHOT_EVERY) {
                return None;
            }
            *p = (generation, Some(Instant::now()));
        }
        Some(self.list_json())
    }

    /// The current objects as a `kubectl get pods,services,nodes -o json` List.
    pub(crate) fn list_json(&self) -> String {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(""));
        meta.insert(OBSERVED_AT.into(), json!(crate::time::rfc3339(now_wall_ns())));
        if let Some(n) = &self.scope_node {
            meta.insert(NODE_SCOPE.into(), json!(n));
        }
        let mut out =
            format!("{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{},\"items\":[", Value::Object(meta));
        let mut o = lock(&self.objects);
        while o.deleted.front().is_some_and(|(t, _)| t.elapsed() > DELETED_KEEP) {
            o.deleted.pop_front();
        }
        let mut first = true;
        for item in o.live.iter().flat_map(BTreeMap::values).chain(o.deleted.iter().map(|(_, j)| j)) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(item);
        }
        out.push_str("]}");
        out
    }
}

/// A running watch: the live [`Enricher`] and its status. Dropping the
/// handle and every enricher clone stops the watch.
#[derive(Clone, Debug)]
pub struct KubeHandle {
    enricher: Enricher,
}

impl KubeHandle {
    /// The live view (a cheap handle; clones see every update).
    #[must_use]
    pub fn enricher(&self) -> Enricher {
        self.enricher.clone()
    }

    fn shared(&self) -> Option<&WatchShared> {
        self.enricher.watch.as_deref().map(|l| &*l.shared)
    }

    /// See [`Enricher::stale`].
    #[must_use]
    pub fn stale(&self) -> bool {
        self.enricher.stale()
    }

    /// Pods, services and nodes have each been listed at least once.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.shared().is_some_and(WatchShared::all_synced)
    }

    /// The most recent API error, for status lines.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.shared().and_then(|s| lock(&s.last_error).clone())
    }

    /// See [`Enricher::poll_snapshot`].
    #[must_use]
    pub fn poll_snapshot(&self) -> Option<String> {
        self.enricher.poll_snapshot()
    }

    /// The current List, unthrottled.
    #[must_use]
    pub fn list_json(&self) -> Option<String> {
        self.shared().map(WatchShared::list_json)
    }
}

async fn load_config(origin: &ApiOrigin) -> Result<kube::Config, KubeError> {
    let mut cfg = match origin {
        ApiOrigin::InCluster => kube::Config::incluster().map_err(KubeError::InCluster)?,
        ApiOrigin::Kubeconfig { path, context } => {
            let opts = KubeConfigOptions { context: context.clone(), ..KubeConfigOptions::default() };
            let err = |source| KubeError::Kubeconfig { path: path.clone(), source };
            match path {
                Some(p) => {
                    let kc = Kubeconfig::read_from(p).map_err(err)?;
                    kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(err)?
                }
                None => kube::Config::from_kubeconfig(&opts).await.map_err(err)?,
            }
        }
    };
    // An unreachable server must fail a request quickly so staleness shows.
    cfg.connect_timeout = Some(Duration::from_secs(5));
    Ok(cfg)
}

/// A running agent pod found through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPod {
    /// Pod name.
    pub name: String,
    /// Its IP (the node's, with hostNetwork).
    pub ip: String,
    /// Its node.
    pub node: Option<String>,
}

/// Lists the running agent pods of `namespace` matching `selector`
/// (`ktrace dns --agents`): Kubernetes schedules the agents, the API finds them.
pub async fn discover_agents(origin: &ApiOrigin, namespace: &str, selector: &str) -> Result<Vec<AgentPod>, KubeError> {
    let cfg = load_config(origin).await?;
    let client = Client::try_from(cfg).map_err(KubeError::Client)?;
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default().labels(selector)).await.map_err(KubeError::Client)?;
    let mut out = Vec::new();
    for p in list.items {
        let status = p.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let Some(ip) = status.and_then(|s| s.pod_ip.clone()) else { continue };
        if running {
            out.push(AgentPod { name: p.name_any(), ip, node: p.spec.as_ref().and_then(|s| s.node_name.clone()) });
        }
    }
    Ok(out)
}

/// Starts watching on the current tokio runtime and returns at once.
pub async fn start_watch(cfg: KubeSource) -> Result<KubeHandle, KubeError> {
    let config = load_config(&cfg.origin).await?;
    let client = Client::try_from(config).map_err(KubeError::Client)?;
    let shared = Arc::new(WatchShared::new(cfg.stale_after, cfg.node.clone()));
    let enricher = Enricher::default();
    let ctx = Arc::new(Ctx { enricher: enricher.clone(), shared: Arc::clone(&shared), cfg });
    let pod_fields = ctx.cfg.node.as_ref().map(|n| format!("spec.nodeName={n}"));
    let tasks = vec![
        tokio::spawn(run_kind::<Pod>(Api::all(client.clone()), Kind::Pod, pod_fields, Arc::clone(&ctx))).abort_handle(),
        tokio::spawn(run_kind::<Service>(Api::all(client.clone()), Kind::Service, None, Arc::clone(&ctx)))
            .abort_handle(),
        tokio::spawn(run_kind::<Node>(Api::all(client), Kind::Node, None, ctx)).abort_handle(),
    ];
    let link = Arc::new(WatchLink { shared, tasks, stop: Mutex::new(None) });
    Ok(KubeHandle { enricher: enricher.with_watch(link) })
}

/// [`start_watch`] on a background thread with its own runtime, for callers
/// without one (or whose runtime is single-threaded and busy with the ring buffer).
pub fn start_watch_thread(cfg: KubeSource) -> Result<KubeHandle, KubeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("ktrace-kube".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(KubeError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let r = start_watch(cfg).await;
                let ok = r.is_ok();
                let _ = tx.send(r);
                if ok {
                    // Until the last enricher clone drops the sender.
                    let _ = stop_rx.await;
                }
            });
        })
        .map_err(KubeError::Runtime)?;
    let h = rx.recv().map_err(|_| KubeError::Runtime(std::io::Error::other("watcher thread exited early")))??;
    if let Some(l) = &h.enricher.watch {
        *lock(&l.stop) = Some(stop_tx);
    }
    Ok(h)
}

struct Ctx {
    enricher: Enricher,
    shared: Arc<WatchShared>,
    cfg: KubeSource,
}

/// Capped exponential backoff with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self { next: Duration::from_millis(250), max }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 25% jitter so that many agents do not retry in lockstep.
        let jitter = u64::from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
        d + Duration::from_millis(jitter % (d.as_millis() as u64 / 4 + 1))
    }
}

/// Keeps only what ktrace reads (and `kubectl` users expect to see).
fn trim(kind: Kind, full: &Value) -> Value {
    let pick = |v: Option<&Value>, keys: &[&str]| -> Value {
        let mut m = Map::new();
        if let Some(o) = v.and_then(Value::as_object) {
            for k in keys {
                if let Some(x) = o.get(*k) {
                    m.insert((*k).to_owned(), x.clone());
                }
            }
        }
        Value::Object(m)
    };
    let meta = full.get("metadata");
    let mut m = pick(meta, &["namespace", "name", "uid", "labels", "creationTimestamp", "deletionTimestamp"]);
    let ann: Map<String, Value> = meta
        .and_then(|x| x.get("annotations"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("ktrace.io/") || k.starts_with("flannel.alpha.coreos.com/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !ann.is_empty()
        && let Some(o) = m.as_object_mut()
    {
        o.insert("annotations".into(), Value::Object(ann));
    }
    let (kind_name, spec, status) = match kind {
        Kind::Pod => {
            let mut st = pick(full.get("status"), &["phase", "podIP", "podIPs", "hostIP", "hostIPs"]);
            let cs: Vec<Value> = full
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| pick(Some(c), &["name", "containerID"]))
                .collect();
            if let Some(o) = st.as_object_mut() {
                o.insert("containerStatuses".into(), Value::Array(cs));
            }
            ("Pod", pick(full.get("spec"), &["nodeName", "hostNetwork", "dnsPolicy", "dnsConfig"]), st)
        }
        Kind::Service => (
            "Service",
            pick(full.get("spec"), &["type", "clusterIP", "clusterIPs", "ports", "selector"]),
            Value::Object(Map::new()),
        ),
        Kind::Node => {
            ("Node", pick(full.get("spec"), &["podCIDR", "podCIDRs"]), pick(full.get("status"), &["addresses"]))
        }
    };
    json!({"apiVersion": "v1", "kind": kind_name, "metadata": m, "spec": spec, "status": status})
}

/// The lab's pods name their netns and cgroup: resolve them on this host, as
/// [`super::Snapshot::resolve_host_keys`] does for snapshot files.
fn resolve_host_keys(v: &mut Value, cgroup_root: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let Some(ann) = v.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else { return };
    let mut add = Vec::new();
    if !ann.contains_key("ktrace.io/netns-ino")
        && let Some(n) = ann.get("ktrace.io/netns").and_then(Value::as_str)
        && !n.contains('/')
        && let Ok(m) = std::fs::metadata(Path::new("/run/netns").join(n))
    {
        add.push(("ktrace.io/netns-ino", m.ino().to_string()));
    }
    if !ann.contains_key("ktrace.io/cgroup-id")
        && let Some(c) = ann.get("ktrace.io/cgroup").and_then(Value::as_str)
        && !c.contains("..")
        && let Ok(m) = std::fs::metadata(cgroup_root.join(c.trim_start_matches('/')))
    {
        add.push(("ktrace.io/cgroup-id", m.ino().to_string()));
    }
    for (k, x) in add {
        ann.insert(k.into(), Value::String(x));
    }
}

fn obj_key(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    format!("{}/{}", s("/metadata/namespace"), s("/metadata/name"))
}

fn pod_info(v: &Value) -> Option<PodInfo> {
    PodInfo::from_json(v, &mut |n| n.into())
}

impl Ctx {
    fn prepare<K: Serialize>(&self, kind: Kind, obj: &K) -> Option<Value> {
        let full = serde_json::to_value(obj).ok()?;
        let mut v = trim(kind, &full);
        if kind == Kind::Pod
            && let Some(root) = &self.cfg.host_keys
        {
            resolve_host_keys(&mut v, root);
        }
        Some(v)
    }

    fn store(&self, kind: Kind, v: &Value) {
        lock(&self.shared.objects).live[kind as usize].insert(obj_key(v), v.to_string().into());
    }

    fn apply(&self, kind: Kind, v: &Value) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                if let Some(p) = pod_info(v) {
                    self.enricher.write(|ix| ix.upsert_pod(&p, now));
                }
            }
            Kind::Service => {
                if let Some((r, ips, dns)) = service_from_json(v) {
                    self.enricher.write(|ix| ix.upsert_service(&r, &ips, dns));
                }
            }
            Kind::Node => {
                if let Some((n, addrs)) = node_from_json(v) {
                    self.enricher.write(|ix| ix.upsert_node(&n.into(), &addrs));
                }
            }
        }
        self.store(kind, v);
        self.shared.changed();
    }

    fn delete(&self, kind: Kind, v: &Value) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                if let Some(p) = pod_info(v) {
                    self.enricher.write(|ix| ix.delete_pod(&p, now));
                }
            }
            Kind::Service => {
                if let Some((r, _, _)) = service_from_json(v) {
                    self.enricher.write(|ix| ix.delete_service(&r));
                }
            }
            Kind::Node => {
                if let Some((n, _)) = node_from_json(v) {
                    self.enricher.write(|ix| ix.delete_node(&n));
                }
            }
        }
        let mut o = lock(&self.shared.objects);
        let old = o.live[kind as usize].remove(&obj_key(v));
        if kind == Kind::Pod {
            remember_deleted(&mut o, old.as_deref(), v, now);
        }
        drop(o);
        self.shared.changed();
    }

    /// A complete list: replaces the kind's objects.
    fn replace(&self, kind: Kind, items: &[Value]) {
        let now = now_wall_ns();
        match kind {
            Kind::Pod => {
                let pods: Vec<PodInfo> = items.iter().filter_map(pod_info).collect();
                self.enricher.write(|ix| ix.replace_pods(&pods, now, self.cfg.node.as_deref()));
            }
            Kind::Service => {
                let list: Vec<_> = items.iter().filter_map(service_from_json).collect();
                self.enricher.write(|ix| ix.replace_services(&list));
            }
            Kind::Node => {
                let list: Vec<_> = items.iter().filter_map(node_from_json).map(|(n, a)| (n.into(), a)).collect();
                self.enricher.write(|ix| ix.replace_nodes(&list));
            }
        }
        let fresh: BTreeMap<String, Box<str>> = items.iter().map(|v| (obj_key(v), v.to_string().into())).collect();
        let mut o = lock(&self.shared.objects);
        let old = std::mem::replace(&mut o.live[kind as usize], fresh);
        if kind == Kind::Pod {
            for (k, j) in old {
                if !o.live[Kind::Pod as usize].contains_key(&k)
                    && let Ok(v) = serde_json::from_str::<Value>(&j)
                {
                    remember_deleted(&mut o, None, &v, now);
                }
            }
        }
        drop(o);
        self.shared.changed();
    }
}

/// Keeps a deleted pod, stamped with when it went, for recorded Lists.
fn remember_deleted(o: &mut Objects, old: Option<&str>, v: &Value, at: i128) {
    let mut v = old.and_then(|j| serde_json::from_str::<Value>(j).ok()).unwrap_or_else(|| v.clone());
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(DELETED_AT.into(), json!(crate::time::rfc3339(at)));
        }
    }
    o.deleted.push_back((Instant::now(), v.to_string().into()));
    while o.deleted.len() > DELETED_MAX {
        o.deleted.pop_front();
    }
}

/// Lists every page.
async fn list_all<K>(api: &Api<K>, fields: Option<&str>) -> Result<(Vec<K>, String), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut lp = ListParams::default().limit(500);
        if let Some(f) = fields {
            lp = lp.fields(f);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        items.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((items, page.metadata.resource_version.unwrap_or_default()));
        }
    }
    Ok((items, String::new()))
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// List, then watch, forever (until aborted); see the module documentation.
async fn run_kind<K>(api: Api<K>, kind: Kind, fields: Option<String>, ctx: Arc<Ctx>)
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + 'static,
{
    let mut backoff = Backoff::new(ctx.cfg.max_backoff);
    // Idle limit: the server ends a watch at its timeout; silence well past it means a dead peer.
    let idle = ctx.cfg.watch_timeout + Duration::from_secs(30);
    loop {
        let listed = tokio::time::timeout(LIST_TIMEOUT, list_all(&api, fields.as_deref())).await;
        let (items, mut rv) = match listed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                ctx.shared.fail(kind, "list", &e);
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
            Err(_) => {
                ctx.shared.fail(kind, "list", &"timed out");
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
        };
        let values: Vec<Value> = items.iter().filter_map(|o| ctx.prepare(kind, o)).collect();
        ctx.replace(kind, &values);
        ctx.shared.synced(kind);
        backoff.reset();
        // Watch until the version expires (then relist).
        loop {
            let mut wp = WatchParams::default().timeout(ctx.cfg.watch_timeout.as_secs().clamp(1, 3600) as u32);
            if let Some(f) = &fields {
                wp = wp.fields(f);
            }
            let stream = match api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) if is_gone(&e) => break,
                Err(e) => {
                    ctx.shared.fail(kind, "watch", &e);
                    tokio::time::sleep(backoff.step()).await;
                    continue;
                }
            };
            ctx.shared.ok(kind);
            let opened = Instant::now();
            let mut events = 0u64;
            let mut relist = false;
            let mut failed = false;
            let mut stream = std::pin::pin!(stream);
            loop {
                let item = match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(i)) => i,
                    Ok(None) => break,
                    Err(_) => {
                        ctx.shared.fail(kind, "watch", &"no data from the server (idle timeout)");
                        failed = true;
                        break;
                    }
                };
                events += 1;
                match item {
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        if let Some(v) = ctx.prepare(kind, &o) {
                            ctx.apply(kind, &v);
                        }
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Deleted(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        if let Some(v) = ctx.prepare(kind, &o) {
                            ctx.delete(kind, &v);
                        }
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                        ctx.shared.ok(kind);
                    }
                    Ok(WatchEvent::Error(s)) if s.code == 410 => {
                        relist = true;
                        break;
                    }
                    Ok(WatchEvent::Error(s)) => {
                        ctx.shared.fail(kind, "watch", &format!("{} ({})", s.message, s.code));
                        failed = true;
                        break;
                    }
                    Err(e) if is_gone(&e) => {
                        relist = true;
                        break;
                    }
                    Err(e) => {
                        ctx.shared.fail(kind, "watch", &e);
                        failed = true;
                        break;
                    }
                }
            }
            if relist {
                break;
            }
            // A watch that ends at once and empty is a server in trouble, not a timeout: do not spin.
            if failed || (events == 0 && opened.elapsed() < Duration::from_secs(1)) {
                tokio::time::sleep(backoff.step()).await;
            } else {
                backoff.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_pods_to_what_ktrace_reads() {
        let full = json!({"apiVersion":"v1","kind":"Pod",
            "metadata":{"namespace":"a","name":"p","uid":"u","creationTimestamp":"2026-01-01T00:00:00Z",
                "managedFields":[{"big":"x"}],"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{...}","ktrace.io/netns":"n"}},
            "spec":{"nodeName":"node-a","containers":[{"name":"c","image":"i"}]},
            "status":{"podIP":"10.0.0.1","conditions":[{}],"containerStatuses":[{"name":"c","containerID":"containerd://ab","image":"i"}]}});
        let t = trim(Kind::Pod, &full);
        assert!(t["metadata"].get("managedFields").is_none());
        assert_eq!(t["metadata"]["annotations"].as_object().map(Map::len), Some(1));
        assert!(t["status"].get("conditions").is_none());
        assert_eq!(t["status"]["containerStatuses"][0], json!({"name":"c","containerID":"containerd://ab"}));
        let p = pod_info(&t).unwrap();
        assert_eq!(p.container_ids, vec!["ab"]);
        assert_eq!(p.created_ns, Some(1_767_225_600_000_000_000));
        assert_eq!(obj_key(&t), "a/p");
    }

    #[test]
    fn staleness_follows_failures() {
        let s = WatchShared::new(Duration::ZERO, None);
        assert!(s.stale(), "never listed");
        for k in [Kind::Pod, Kind::Service, Kind::Node] {
            s.synced(k);
        }
        assert!(!s.stale());
        s.fail(Kind::Service, "watch", &"refused");
        assert!(s.stale());
        s.ok(Kind::Service);
        assert!(!s.stale());
        let slow = WatchShared::new(Duration::from_hours(1), None);
        slow.fail(Kind::Pod, "list", &"refused");
        assert!(!slow.stale(), "not before stale_after");
    }

    #[test]
    fn snapshots_are_throttled_lists() {
        let s = WatchShared::new(Duration::from_mins(1), Some("node-a".into()));
        assert!(s.poll_snapshot().is_none(), "nothing yet");
        lock(&s.objects).live[0]
            .insert("a/p".into(), r#"{"kind":"Pod","metadata":{"namespace":"a","name":"p"}}"#.into());
        s.changed();
        let l = s.poll_snapshot().unwrap();
        let snap = crate::enrich::Snapshot::parse(&l, "t").unwrap();
        assert_eq!(snap.pods.len(), 1);
        assert_eq!(snap.scope_node.as_deref(), Some("node-a"));
        assert!(snap.taken_at_ns.is_some());
        s.changed();
        assert!(s.poll_snapshot().is_none(), "within a second of the last");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let steps: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(steps[0] >= Duration::from_millis(250) && steps[0] < Duration::from_millis(320));
        assert!(steps.iter().all(|d| *d <= Duration::from_millis(2500)));
        b.reset();
        assert!(b.step() < Duration::from_millis(320));
    }

    #[test]
    fn origin_detection_prefers_explicit_kubeconfig() {
        let o = ApiOrigin::detect(Some(Path::new("/x")), Some("ctx"));
        assert_eq!(o, Some(ApiOrigin::Kubeconfig { path: Some("/x".into()), context: Some("ctx".into()) }));
    }
}
