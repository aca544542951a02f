//! Pod/node/service metadata from a `kubectl get pods,services,nodes -A -o json`
//! snapshot (a Kubernetes `List`), used when no API server is reachable and
//! stored verbatim in captures so replay attributes exactly as live did.

use serde_json::Value;
use std::{collections::HashMap, net::IpAddr, path::Path, sync::Arc};
use thiserror::Error;

use super::PodRef;

/// Why a snapshot could not be used.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Unreadable file.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{path}: not JSON: {source}")]
    Json {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but not a List/Pod/Node/Service document.
    #[error("{0}: expected a Kubernetes List (kubectl get pods,services,nodes -A -o json)")]
    NotAList(String),
}

/// A pod as far as ktrace cares.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Name and place.
    pub pod: PodRef,
    /// metadata.uid.
    pub uid: String,
    /// status.podIPs.
    pub ips: Vec<IpAddr>,
    /// spec.hostNetwork: its IP is the node's and identifies nothing.
    pub host_network: bool,
    /// Container ids without runtime prefix (`containerd://`).
    pub container_ids: Vec<String>,
    /// `ktrace.io/netns` annotation: named network namespace (lab, or a CNI that names them).
    pub netns_name: Option<String>,
    /// `ktrace.io/cgroup` annotation: cgroup path relative to the cgroup2 root.
    pub cgroup_path: Option<String>,
    /// Network namespace inode, resolved on the node (`ktrace.io/netns-ino` in captures).
    pub netns_ino: Option<u32>,
    /// cgroup v2 id, resolved on the node (`ktrace.io/cgroup-id` in captures).
    pub cgroup_id: Option<u64>,
    /// metadata.labels.
    pub labels: Vec<(String, String)>,
    /// metadata.creationTimestamp (Unix ns): the earliest its IPs can be its own.
    pub created_ns: Option<i128>,
    /// `ktrace.io/deleted-at` (Unix ns): when ktrace saw it deleted.
    pub deleted_ns: Option<i128>,
}

/// A service: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

/// Everything a snapshot tells.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Pods.
    pub pods: Vec<PodInfo>,
    /// Node name → its addresses (`InternalIP`, `ExternalIP`).
    pub nodes: Vec<(Arc<str>, Vec<IpAddr>)>,
    /// Service cluster IPs.
    pub services: HashMap<IpAddr, ServiceRef>,
    /// Cluster IPs of the cluster DNS service (`kube-dns` / `CoreDNS`).
    pub dns_services: std::collections::HashSet<IpAddr>,
    /// When the List was taken (`metadata["ktrace.io/observed-at"]`, written by ktrace's watcher).
    pub taken_at_ns: Option<i128>,
    /// The List holds only this node's pods (`metadata["ktrace.io/node-scope"]`): a
    /// pod of another node missing from it is not deleted.
    pub scope_node: Option<String>,
    /// The document as loaded, to store in captures.
    pub raw: String,
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::to_owned)
}

fn ips_of(v: &Value) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = v
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get("ip")?.as_str()?.parse().ok())
        .collect();
    if let Some(ip) = v.pointer("/status/podIP").and_then(Value::as_str).and_then(|s| s.parse().ok())
        && !out.contains(&ip)
    {
        out.push(ip);
    }
    out
}

/// RFC 3339 time (`2026-05-01T10:00:00Z`) as Unix ns; `None` if absent or malformed.
#[must_use]
pub fn parse_time_ns(s: &str) -> Option<i128> {
    s.parse::<jiff::Timestamp>().ok().map(jiff::Timestamp::as_nanosecond)
}

/// Annotation ktrace adds to pods it saw deleted, kept for a while in the
/// Lists it records: when the pod's IP stopped being its own.
pub const DELETED_AT: &str = "ktrace.io/deleted-at";
/// Field ktrace adds to a List's `metadata`: when the List was taken.
pub const OBSERVED_AT: &str = "ktrace.io/observed-at";
/// Field ktrace adds to a List's `metadata`: it holds only this node's pods.
pub const NODE_SCOPE: &str = "ktrace.io/node-scope";

fn labels_of(v: &Value) -> Vec<(String, String)> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_owned())))
        .collect()
}

impl PodInfo {
    /// A pod object (`kind` is not checked); `None` without namespace and name.
    #[must_use]
    pub fn from_json(it: &Value, intern: &mut dyn FnMut(String) -> Arc<str>) -> Option<Self> {
        let (Some(ns), Some(name)) = (s(it, &["metadata", "namespace"]), s(it, &["metadata", "name"])) else {
            return None;
        };
        let node = s(it, &["spec", "nodeName"]).map(&mut *intern);
        let container_ids = it
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("containerID")?.as_str())
            .map(|id| id.rsplit("://").next().unwrap_or(id).to_owned())
            .filter(|id| !id.is_empty())
            .collect();
        let ann = |k: &str| {
            it.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str).map(str::to_owned)
        };
        Some(PodInfo {
            pod: PodRef::new(ns, name, node),
            uid: s(it, &["metadata", "uid"]).unwrap_or_default(),
            ips: ips_of(it),
            host_network: it.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false),
            container_ids,
            netns_name: ann("ktrace.io/netns"),
            cgroup_path: ann("ktrace.io/cgroup"),
            netns_ino: ann("ktrace.io/netns-ino").and_then(|v| v.parse().ok()),
            cgroup_id: ann("ktrace.io/cgroup-id").and_then(|v| v.parse().ok()),
            labels: labels_of(it),
            created_ns: s(it, &["metadata", "creationTimestamp"]).as_deref().and_then(parse_time_ns),
            deleted_ns: ann(DELETED_AT).as_deref().and_then(parse_time_ns),
        })
    }

    /// Whether this is a cluster DNS server pod (`k8s-app=kube-dns`, which `CoreDNS` keeps).
    #[must_use]
    pub fn is_cluster_dns(&self) -> bool {
        self.labels.iter().any(|(k, v)| k == "k8s-app" && v == "kube-dns")
    }
}

/// A node object: its name and addresses (`InternalIP`, `ExternalIP`).
#[must_use]
pub fn node_from_json(it: &Value) -> Option<(String, Vec<IpAddr>)> {
    let name = s(it, &["metadata", "name"])?;
    let addrs = it
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| matches!(a.get("type").and_then(Value::as_str), Some("InternalIP" | "ExternalIP")))
        .filter_map(|a| a.get("address")?.as_str()?.parse().ok())
        .collect();
    Some((name, addrs))
}

/// A service object: who it is, its cluster IPs, and whether it is the
/// cluster DNS service (`kube-system/kube-dns`, or labelled `k8s-app=kube-dns`).
#[must_use]
pub fn service_from_json(it: &Value) -> Option<(ServiceRef, Vec<IpAddr>, bool)> {
    let (Some(ns), Some(name)) = (s(it, &["metadata", "namespace"]), s(it, &["metadata", "name"])) else {
        return None;
    };
    let mut ips: Vec<IpAddr> = it
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str()?.parse().ok())
        .collect();
    if let Some(ip) = s(it, &["spec", "clusterIP"]).and_then(|x| x.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let dns = (ns == "kube-system" && name == "kube-dns")
        || labels_of(it).iter().any(|(k, v)| k == "k8s-app" && v == "kube-dns");
    Some((ServiceRef { namespace: ns.into(), name: name.into() }, ips, dns))
}

impl Snapshot {
    /// Loads a snapshot file.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SnapshotError::Io { path: p.clone(), source: e })?;
        Self::parse(&text, &p)
    }

    /// Parses a snapshot document (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, SnapshotError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| SnapshotError::Json { path: origin.into(), source: e })?;
        let items: Vec<&Value> = match doc.get("kind").and_then(Value::as_str) {
            Some("List" | "PodList" | "NodeList" | "ServiceList") => {
                doc.get("items").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
            }
            Some("Pod" | "Node" | "Service") => vec![&doc],
            _ => return Err(SnapshotError::NotAList(origin.into())),
        };
        let mut snap = Snapshot { raw: text.to_owned(), ..Default::default() };
        let list_meta = |k: &str| doc.pointer("/metadata").and_then(|m| m.get(k)).and_then(Value::as_str);
        snap.taken_at_ns = list_meta(OBSERVED_AT).and_then(parse_time_ns);
        snap.scope_node = list_meta(NODE_SCOPE).map(str::to_owned);
        let mut node_names: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |n: String| -> Arc<str> { node_names.entry(n.clone()).or_insert_with(|| n.into()).clone() };
        for it in items {
            match it.get("kind").and_then(Value::as_str) {
                Some("Pod") => snap.pods.extend(PodInfo::from_json(it, &mut intern)),
                Some("Node") => {
                    if let Some((name, addrs)) = node_from_json(it) {
                        snap.nodes.push((intern(name), addrs));
                    }
                }
                Some("Service") => {
                    if let Some((r, ips, dns)) = service_from_json(it) {
                        for ip in ips {
                            if dns {
                                snap.dns_services.insert(ip);
                            }
                            snap.services.insert(ip, r.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(snap)
    }
}

impl Snapshot {
    /// Resolves each pod's named netns and cgroup path to the inode and
    /// cgroup id the kernel reports, on this node (live only), and writes them
    /// into `raw` as annotations so that a capture replays without the host.
    pub fn resolve_host_keys(&mut self, cgroup_root: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        for p in &mut self.pods {
            if p.netns_ino.is_none()
                && let Some(n) = &p.netns_name
                && let Ok(m) = std::fs::metadata(Path::new("/run/netns").join(n))
            {
                p.netns_ino = u32::try_from(m.ino()).ok();
            }
            if p.cgroup_id.is_none()
                && let Some(c) = &p.cgroup_path
                && let Ok(m) = std::fs::metadata(cgroup_root.join(c.trim_start_matches('/')))
            {
                // On cgroup2 the cgroup id is the directory's inode number.
                p.cgroup_id = Some(m.ino());
            }
        }
        let Ok(mut doc) = serde_json::from_str::<Value>(&self.raw) else { return };
        let mut patch = |it: &mut Value| {
            let (Some(ns), Some(name)) = (s(it, &["metadata", "namespace"]), s(it, &["metadata", "name"])) else {
                return;
            };
            let Some(p) = self.pods.iter().find(|p| *p.pod.namespace == *ns && *p.pod.name == *name) else { return };
            let Some(meta) = it.get_mut("metadata").and_then(Value::as_object_mut) else { return };
            let ann = meta.entry("annotations").or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Some(a) = ann.as_object_mut() {
                if let Some(i) = p.netns_ino {
                    a.insert("ktrace.io/netns-ino".into(), Value::String(i.to_string()));
                }
                if let Some(c) = p.cgroup_id {
                    a.insert("ktrace.io/cgroup-id".into(), Value::String(c.to_string()));
                }
            }
        };
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            items.iter_mut().filter(|i| i.get("kind").and_then(Value::as_str) == Some("Pod")).for_each(&mut patch);
        }
        if let Ok(t) = serde_json::to_string(&doc) {
            self.raw = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Pod","metadata":{"namespace":"critical-app","name":"client","uid":"u1",
        "annotations":{"ktrace.io/netns":"kt-critical-app-client","ktrace.io/cgroup":"ktrace-lab/critical-app_client"}},
       "spec":{"nodeName":"node-a","containers":[{"name":"c"}]},
       "status":{"podIP":"10.244.1.10","podIPs":[{"ip":"10.244.1.10"},{"ip":"fd00::10"}],
         "containerStatuses":[{"name":"c","containerID":"containerd://abc123"}]}},
      {"kind":"Pod","metadata":{"namespace":"kube-system","name":"kube-proxy-x"},"spec":{"nodeName":"node-a","hostNetwork":true},
       "status":{"podIP":"192.168.77.10"}},
      {"kind":"Node","metadata":{"name":"node-a"},"status":{"addresses":[{"type":"InternalIP","address":"192.168.77.10"},{"type":"Hostname","address":"node-a"}]}},
      {"kind":"Service","metadata":{"namespace":"kube-system","name":"kube-dns"},"spec":{"clusterIP":"10.96.0.10"}}
    ]}"#;

    #[test]
    fn parses_pods_nodes_services() {
        let s = Snapshot::parse(DOC, "t").unwrap();
        assert_eq!(s.pods.len(), 2);
        let c = &s.pods[0];
        assert_eq!(c.pod.to_string(), "critical-app/client");
        assert_eq!(c.pod.node.as_deref(), Some("node-a"));
        assert_eq!(c.ips.len(), 2);
        assert_eq!(c.container_ids, vec!["abc123"]);
        assert_eq!(c.netns_name.as_deref(), Some("kt-critical-app-client"));
        assert!(s.pods[1].host_network);
        assert_eq!(s.nodes[0].1, vec!["192.168.77.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(&*s.services[&"10.96.0.10".parse::<IpAddr>().unwrap()].name, "kube-dns");
    }

    #[test]
    fn host_keys_survive_in_raw() {
        let mut s = Snapshot::parse(DOC, "t").unwrap();
        s.pods[0].netns_ino = Some(4_026_532_001);
        s.pods[0].cgroup_id = Some(77);
        s.resolve_host_keys(Path::new("/nonexistent"));
        let again = Snapshot::parse(&s.raw, "t").unwrap();
        assert_eq!(again.pods[0].netns_ino, Some(4_026_532_001));
        assert_eq!(again.pods[0].cgroup_id, Some(77));
    }

    #[test]
    fn rejects_non_lists() {
        assert!(matches!(Snapshot::parse("{\"kind\":\"Secret\"}", "t"), Err(SnapshotError::NotAList(_))));
        assert!(matches!(Snapshot::parse("nope", "t"), Err(SnapshotError::Json { .. })));
        let empty = Snapshot::parse("{\"kind\":\"List\",\"items\":[{\"kind\":\"Pod\"}]}", "t").unwrap();
        assert!(empty.pods.is_empty());
    }
}
