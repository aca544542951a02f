//! Pods: who a packet, transaction or finding belongs to.

use std::{ops::Deref, sync::Arc};

use serde::Serialize;

/// A pod, as shown in every event: `namespace/name` on `node`.
///
/// A shared handle: every message, transaction and finding of a pod names
/// it, so one pointer (8 bytes, one reference count to clone) stands for
/// the three names (48 bytes, three counts). Its fields read through it
/// (`pod.namespace`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PodRef(Arc<PodFields>);

/// What a [`PodRef`] names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PodFields {
    /// Kubernetes namespace.
    pub namespace: Arc<str>,
    /// Pod name.
    pub name: Arc<str>,
    /// Node the pod runs on, if known.
    pub node: Option<Arc<str>>,
}

impl PodRef {
    /// The pod `namespace/name` on `node`.
    #[must_use]
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>, node: Option<Arc<str>>) -> Self {
        Self(Arc::new(PodFields { namespace: namespace.into(), name: name.into(), node }))
    }
}

impl Deref for PodRef {
    type Target = PodFields;

    fn deref(&self) -> &PodFields {
        &self.0
    }
}

impl std::fmt::Debug for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRef")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("node", &self.node)
            .finish()
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_one_pointer_and_serializes_as_its_fields() {
        assert_eq!(size_of::<Option<PodRef>>(), 8);
        let p = PodRef::new("kube-system", "coredns-0", Some("n1".into()));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"namespace":"kube-system","name":"coredns-0","node":"n1"}"#);
        assert_eq!(p.to_string(), "kube-system/coredns-0");
        assert_eq!(p, PodRef::new("kube-system", "coredns-0", Some("n1".into())));
    }
}
