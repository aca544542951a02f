//! What is kept of an API object: only the fields ktrace reads (and
//! `kubectl` users expect to see), keyed by `namespace/name`.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::shared::Kind;
use crate::enrich::snapshot::PodInfo;

/// Keeps only what ktrace reads (and `kubectl` users expect to see).
pub(super) fn trim(kind: Kind, full: &Value) -> Value {
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
pub(super) fn resolve_host_keys(v: &mut Value, cgroup_root: &Path) {
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

pub(super) fn obj_key(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    format!("{}/{}", s("/metadata/namespace"), s("/metadata/name"))
}

pub(super) fn pod_info(v: &Value) -> Option<PodInfo> {
    PodInfo::from_json(v, &mut |n| n.into())
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
}
