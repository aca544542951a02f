//! Metadata wiring: this node's name, the Kubernetes snapshot or API watch
//! that names pods, resolved for live use.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::enrich::{Enricher, Snapshot};

/// Where pod, node and service metadata comes from (`--node-name`,
/// `--kube-snapshot`, `--kubeconfig`, `--context`, `--metadata-stale-after`,
/// `--no-kube-api`).
#[derive(Clone, Debug, Default)]
pub struct MetaSource {
    /// This node's name; default `$NODE_NAME` (via the flag), else the hostname.
    pub node_name: Option<String>,
    /// A `kubectl get pods,services,nodes -A -o json` file.
    pub kube_snapshot: Option<PathBuf>,
    /// Kubernetes API credentials.
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    pub context: Option<String>,
    /// Report metadata as stale after this long without a successful list/watch.
    pub metadata_stale_after: Duration,
    /// Never contact the Kubernetes API.
    pub no_kube_api: bool,
}

impl MetaSource {
    /// This node's name: `--node-name`, `$NODE_NAME`, else the hostname.
    #[must_use]
    pub fn node(&self) -> Arc<str> {
        if let Some(n) = &self.node_name {
            return n.as_str().into();
        }
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into()).into()
    }

    /// The snapshot named by `--kube-snapshot`, if any.
    pub fn snapshot(&self) -> anyhow::Result<Option<Snapshot>> {
        self.kube_snapshot
            .as_deref()
            .map(|p| Snapshot::load(p).with_context(|| format!("--kube-snapshot {}", p.display())))
            .transpose()
    }

    /// Where live metadata comes from: `--kube-snapshot`, else the Kubernetes
    /// API (explicit `--kubeconfig`/`--context`, in-cluster, `$KUBECONFIG`,
    /// `~/.kube/config`), else nothing. `None` also for `--no-kube-api`.
    #[must_use]
    pub fn kube_origin(&self) -> Option<crate::enrich::kube::ApiOrigin> {
        if self.no_kube_api || self.kube_snapshot.is_some() {
            return None;
        }
        crate::enrich::kube::ApiOrigin::detect(self.kubeconfig.as_deref(), self.context.as_deref())
    }

    /// Live metadata, by wall-clock time of each record and with cgroup paths
    /// resolved under `cgroup_root`: the snapshot (this node's netns/cgroup keys
    /// resolved, returned too for the capture), else a Kubernetes API watch
    /// (started in the background; attribution fills in as it lists, changes
    /// come from [`Enricher::poll_snapshot`]), else none. An API that cannot
    /// be configured is a warning, not an error: events matter more.
    pub fn live_metadata(&self, cgroup_root: &std::path::Path) -> anyhow::Result<(Enricher, Option<Snapshot>)> {
        use crate::enrich::kube::{ApiOrigin, KubeSource, start_watch_thread};
        let live =
            |e: Enricher| e.with_clock_offset(crate::capture::ClockRef::now().offset()).with_cgroup_root(cgroup_root);
        if let Some(mut s) = self.snapshot()? {
            s.resolve_host_keys(cgroup_root);
            return Ok((live(Enricher::from_snapshot(&s)), Some(s)));
        }
        if let Some(origin) = self.kube_origin() {
            let mut src = KubeSource::new(origin.clone());
            src.stale_after = self.metadata_stale_after;
            src.host_keys = Some(cgroup_root.to_owned());
            // In a pod, ktrace is a node agent: its own node's pods suffice.
            if origin == ApiOrigin::InCluster {
                src.node = Some(self.node().to_string());
            }
            match start_watch_thread(src) {
                Ok(h) => {
                    eprintln!(
                        "ktrace: pod metadata from the Kubernetes API ({origin:?}); attribution fills in as it lists"
                    );
                    return Ok((live(h.enricher()), None));
                }
                Err(e) => eprintln!("ktrace: warning: {e}; continuing without Kubernetes metadata"),
            }
        }
        Ok((live(Enricher::empty()), None))
    }
}
