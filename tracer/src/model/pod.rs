//! Pods: who a packet, transaction or finding belongs to.

use std::sync::Arc;

use serde::Serialize;

/// A pod, as shown in every event: `namespace/name` on `node`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PodRef {
    /// Kubernetes namespace.
    pub namespace: Arc<str>,
    /// Pod name.
    pub name: Arc<str>,
    /// Node the pod runs on, if known.
    pub node: Option<Arc<str>>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
