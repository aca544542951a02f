//! The lab's "cluster" as a `kubectl get pods,services,endpoints,nodes -A -o json` List.
//!
//! Besides the standard fields, pods and nodes carry annotations that map the
//! kernel's view back to them: `ktrace.io/netns` (netns name under
//! `/run/netns`), `ktrace.io/netns-ino` (its inode, the kernel's netns inum),
//! `ktrace.io/cgroup` (path relative to the cgroup2 root, as in the `0::` line
//! of `/proc/<pid>/cgroup`) and `ktrace.io/cgroup-id` (the cgroup directory's
//! inode, what `bpf_get_current_cgroup_id()` returns).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::topology::{
    Fault, NODES, NodeSpec, PODS, PodDns, PodSpec, RESOLV_OPTIONS, ServiceSpec, VXLAN_DEV, services,
};

/// Kernel identifiers looked up on the live system; `None` when unknown
/// (e.g. in unit tests).
pub(crate) trait KernelIds {
    /// Inode of `/run/netns/<name>`.
    fn netns_ino(&self, netns: &str) -> Option<u64>;
    /// Inode of the cgroup2 directory `<root><cgroup>`.
    fn cgroup_id(&self, cgroup: &str) -> Option<u64>;
}

/// No kernel lookups (unit tests).
#[cfg(test)]
pub(crate) struct NoIds;

#[cfg(test)]
impl KernelIds for NoIds {
    fn netns_ino(&self, _: &str) -> Option<u64> {
        None
    }
    fn cgroup_id(&self, _: &str) -> Option<u64> {
        None
    }
}

/// FNV-1a, enough to derive stable fake uids and container ids.
fn fnv64(seed: u64, data: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable UUID-shaped uid for an object.
fn fake_uid(kind: &str, key: &str) -> String {
    let seed = format!("{kind}/{key}");
    let a = fnv64(1, &seed);
    let b = fnv64(2, &seed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// A stable 64-hex-digit container id.
fn fake_container_id(key: &str) -> String {
    let mut s = String::with_capacity(64);
    for i in 1..=4 {
        let _ = write!(s, "{:016x}", fnv64(i, key));
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
}

fn pod_json(p: &PodSpec, node: &NodeSpec, ids: &dyn KernelIds) -> Value {
    let key = format!("{}/{}", p.namespace, p.name);
    let netns = p.netns();
    let cgroup = p.cgroup();
    let mut ann = Map::new();
    ann.insert("ktrace.io/netns".into(), json!(netns));
    ann.insert("ktrace.io/cgroup".into(), json!(cgroup));
    if let Some(ino) = ids.netns_ino(&netns) {
        ann.insert("ktrace.io/netns-ino".into(), json!(ino.to_string()));
    }
    if let Some(id) = ids.cgroup_id(&cgroup) {
        ann.insert("ktrace.io/cgroup-id".into(), json!(id.to_string()));
    }
    let mut spec = json!({
        "nodeName": p.node,
        "hostNetwork": false,
        "containers": [{"name": p.container, "image": p.image}],
    });
    match p.dns {
        PodDns::ClusterFirst => {
            // ClusterFirst yields `<ns>.svc.cluster.local svc.cluster.local
            // cluster.local`; the node's `localdomain` and the shortened
            // timeouts come through dnsConfig, as they would on a real node.
            spec["dnsPolicy"] = json!("ClusterFirst");
            let options: Vec<Value> = RESOLV_OPTIONS
                .split_whitespace()
                .map(|o| match o.split_once(':') {
                    Some((n, v)) => json!({"name": n, "value": v}),
                    None => json!({"name": o}),
                })
                .collect();
            spec["dnsConfig"] = json!({"searches": ["localdomain"], "options": options});
        }
        PodDns::Default => spec["dnsPolicy"] = json!("Default"),
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": p.namespace,
            "name": p.name,
            "uid": fake_uid("Pod", &key),
            "labels": labels(p.labels),
            "annotations": ann,
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "hostIP": node.underlay_ip.to_string(),
            "hostIPs": [{"ip": node.underlay_ip.to_string()}],
            "podIP": p.ip.to_string(),
            "podIPs": [{"ip": p.ip.to_string()}],
            "containerStatuses": [{
                "name": p.container,
                "image": p.image,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "containerID": format!("containerd://{}", fake_container_id(&key)),
            }],
        },
    })
}

fn node_json(n: &NodeSpec, ids: &dyn KernelIds) -> Value {
    let mut ann = Map::new();
    ann.insert("ktrace.io/netns".into(), json!(n.netns));
    if let Some(ino) = ids.netns_ino(n.netns) {
        ann.insert("ktrace.io/netns-ino".into(), json!(ino.to_string()));
    }
    // What flannel itself records: peers are told this address.
    ann.insert("flannel.alpha.coreos.com/backend-type".into(), json!("vxlan"));
    ann.insert("flannel.alpha.coreos.com/public-ip".into(), json!(n.underlay_ip.to_string()));
    ann.insert("ktrace.io/vxlan-dev".into(), json!(VXLAN_DEV));
    ann.insert("ktrace.io/overlay-ip".into(), json!(n.overlay_ip.to_string()));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "uid": fake_uid("Node", n.name),
            "labels": {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux"},
            "annotations": ann,
        },
        "spec": {"podCIDR": n.pod_cidr(), "podCIDRs": [n.pod_cidr()]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": n.underlay_ip.to_string()},
                {"type": "Hostname", "address": n.name},
            ],
        },
    })
}

fn service_json(s: &ServiceSpec) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "targetPort": p.port, "protocol": p.protocol}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "namespace": s.namespace,
            "name": s.name,
            "uid": fake_uid("Service", &format!("{}/{}", s.namespace, s.name)),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": s.cluster_ip.to_string(),
            "clusterIPs": [s.cluster_ip.to_string()],
            "ports": ports,
            "selector": labels(s.selector),
        },
    })
}

/// The Service's `Endpoints` (as `kubectl get endpoints -o json` prints
/// them): the pods its selector picks, with their node and a `targetRef`.
fn endpoints_json(s: &ServiceSpec) -> Value {
    let addresses: Vec<Value> = s
        .endpoints()
        .into_iter()
        .map(|p| {
            json!({
                "ip": p.ip.to_string(),
                "nodeName": p.node,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": p.namespace,
                    "name": p.name,
                    "uid": fake_uid("Pod", &format!("{}/{}", p.namespace, p.name)),
                },
            })
        })
        .collect();
    let ports: Vec<Value> =
        s.ports.iter().map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol})).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "namespace": s.namespace,
            "name": s.name,
            "uid": fake_uid("Endpoints", &format!("{}/{}", s.namespace, s.name)),
        },
        "subsets": [{"addresses": addresses, "ports": ports}],
    })
}

/// The snapshot List for these faults.
pub(crate) fn snapshot(faults: &[Fault], ids: &dyn KernelIds) -> Value {
    let mut items = Vec::new();
    for p in &PODS {
        if let Some(n) = p.node_spec() {
            items.push(pod_json(p, n, ids));
        }
    }
    items.extend(services(faults).into_iter().map(service_json));
    items.extend(services(faults).into_iter().map(endpoints_json));
    items.extend(NODES.iter().map(|n| node_json(n, ids)));
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedIds;
    impl KernelIds for FixedIds {
        fn netns_ino(&self, _: &str) -> Option<u64> {
            Some(4_026_532_000)
        }
        fn cgroup_id(&self, _: &str) -> Option<u64> {
            Some(1234)
        }
    }

    fn find<'a>(v: &'a Value, kind: &str, name: &str) -> &'a Value {
        v["items"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["kind"] == kind && i["metadata"]["name"] == name))
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn pods_carry_kubectl_fields_and_ktrace_annotations() {
        let v = snapshot(&[Fault::UpstreamBlackhole], &FixedIds);
        assert_eq!(v["kind"], "List");
        let c = find(&v, "Pod", "client");
        assert_eq!(c["metadata"]["namespace"], "critical-app");
        assert_eq!(c["spec"]["nodeName"], "node-a");
        assert_eq!(c["status"]["podIP"], "10.244.1.20");
        assert_eq!(c["status"]["hostIP"], "192.168.77.10");
        assert_eq!(c["metadata"]["annotations"]["ktrace.io/netns"], "kt-critical-app-client");
        assert_eq!(c["metadata"]["annotations"]["ktrace.io/cgroup"], "/ktrace-lab/critical-app_client");
        assert_eq!(c["metadata"]["annotations"]["ktrace.io/cgroup-id"], "1234");
        let cid = c["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or("");
        let hex = cid.strip_prefix("containerd://").unwrap_or("");
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c["spec"]["dnsConfig"]["options"][0]["name"], "ndots");
        assert_eq!(find(&v, "Pod", "kube-dns")["spec"]["dnsPolicy"], "Default");
    }

    #[test]
    fn nodes_and_services() {
        let v = snapshot(&[], &NoIds);
        let b = find(&v, "Node", "node-b");
        assert_eq!(b["spec"]["podCIDR"], "10.244.2.0/24");
        assert_eq!(b["status"]["addresses"][0]["address"], "192.168.77.11");
        assert!(b["metadata"]["annotations"].get("ktrace.io/netns-ino").is_none());
        assert_eq!(find(&v, "Service", "kube-dns")["spec"]["clusterIP"], "10.96.0.10");
        let ep = find(&v, "Endpoints", "kube-dns");
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.244.1.10");
        assert_eq!(ep["subsets"][0]["addresses"][0]["nodeName"], "node-a");
        assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["name"], "kube-dns");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 53);
        assert_eq!(find(&v, "Service", "refused"), &Value::Null);
        let with = snapshot(&[Fault::Refused], &NoIds);
        assert_eq!(find(&with, "Service", "refused")["spec"]["ports"][0]["port"], 8081);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(fake_uid("Pod", "a/b"), fake_uid("Pod", "a/b"));
        assert_ne!(fake_uid("Pod", "a/b"), fake_uid("Pod", "a/c"));
        assert_eq!(fake_uid("Pod", "a/b").len(), 36);
        assert_ne!(fake_container_id("x"), fake_container_id("y"));
    }
}
