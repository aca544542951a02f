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

mod shared;
mod trim;
mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{
    Api, Client, ResourceExt as _,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use thiserror::Error;

pub(crate) use shared::WatchLink;
use shared::{Kind, WatchShared, lock};
use watch::{Ctx, run_kind};

use super::Enricher;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_detection_prefers_explicit_kubeconfig() {
        let o = ApiOrigin::detect(Some(Path::new("/x")), Some("ctx"));
        assert_eq!(o, Some(ApiOrigin::Kubeconfig { path: Some("/x".into()), context: Some("ctx".into()) }));
    }
}
