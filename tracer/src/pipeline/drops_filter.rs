//! `--node`, `--ns` and `--pod` on the drops stage's typed results.

use crate::{
    model::drops::{DropFinding, DropOutput},
    pipeline::Filter,
};

impl Filter {
    /// Whether a drops result is shown: with `--node`, it happened on (or
    /// between) that node; with `--ns`/`--pod`, it names a matching pod.
    #[must_use]
    pub fn drop_output(&self, r: &DropOutput) -> bool {
        match r {
            DropOutput::Drop(d) => self.drop_matches(
                &[d.node.as_deref()],
                &[d.src_pod.as_deref(), d.dst_pod.as_deref(), d.netns_pod.as_deref()],
            ),
            DropOutput::Conn(c) => {
                self.drop_matches(&[c.node.as_deref()], &[c.src_pod.as_deref(), c.dst_pod.as_deref()])
            }
            DropOutput::Finding(f) => self.drop_finding(f),
        }
    }

    /// Whether a fabric finding is shown (see [`Self::drop_output`]).
    #[must_use]
    pub fn drop_finding(&self, f: &DropFinding) -> bool {
        self.drop_matches(&f.nodes(), &f.pods())
    }

    fn drop_matches(&self, nodes: &[Option<&str>], pods: &[Option<&str>]) -> bool {
        if let Some(n) = &self.node
            && !nodes.contains(&Some(n.as_str()))
        {
            return false;
        }
        if self.namespace.is_some() || self.pod.is_some() {
            return pods.iter().flatten().any(|p| self.pod_string_matches(p));
        }
        true
    }

    /// Whether a `namespace/name` string matches `--ns` and `--pod`.
    fn pod_string_matches(&self, pod: &str) -> bool {
        let Some((ns, name)) = pod.split_once('/') else { return false };
        let ok_ns = self.namespace.as_deref().is_none_or(|w| w == ns);
        let ok_pod = self.pod.as_deref().is_none_or(|w| match w.split_once('/') {
            Some((a, b)) => a == ns && b == name,
            None => w == name,
        });
        ok_ns && ok_pod
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{
        event::Endpoint,
        model::drops::{ConnFail, ConnFailKind, DropOutput},
        pipeline::Filter,
    };

    fn conn(node: &str, src_pod: Option<&str>) -> DropOutput {
        DropOutput::Conn(ConnFail {
            kind: ConnFailKind::Refused,
            src: "10.0.0.1".parse().unwrap(),
            dst: Endpoint { ip: "10.0.0.2".parse().unwrap(), port: 80 },
            src_pod: src_pod.map(str::to_owned),
            dst_pod: None,
            process: None,
            count: 1,
            syn_retransmits: 0,
            node: Some(Arc::from(node)),
            first_ts_ns: 0,
            last_ts_ns: 0,
            pending: false,
        })
    }

    #[test]
    fn node_namespace_and_pod_select_typed_results() {
        let f = |node: Option<&str>, ns: Option<&str>, pod: Option<&str>| Filter {
            node: node.map(str::to_owned),
            namespace: ns.map(str::to_owned),
            pod: pod.map(str::to_owned),
            ..Filter::default()
        };
        let r = conn("node-a", Some("shop/web-1"));
        assert!(f(None, None, None).drop_output(&r));
        assert!(f(Some("node-a"), None, None).drop_output(&r));
        assert!(!f(Some("node-b"), None, None).drop_output(&r));
        assert!(f(None, Some("shop"), None).drop_output(&r));
        assert!(!f(None, Some("other"), None).drop_output(&r));
        assert!(f(None, None, Some("web-1")).drop_output(&r));
        assert!(f(None, None, Some("shop/web-1")).drop_output(&r));
        assert!(!f(None, None, Some("other/web-1")).drop_output(&r));
        assert!(!f(Some("node-b"), Some("shop"), None).drop_output(&r));
        // No pod named: a pod selection hides it.
        assert!(!f(None, Some("shop"), None).drop_output(&conn("node-a", None)));
    }
}
