//! Containers and Kubernetes pods: ids from cgroups, names from container
//! events (labels, dockershim names), and the pod snapshot.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use serde_json::{Value, json};

use super::Decoder;

/// A pod being assembled for the snapshot: uid, IPs, container statuses.
pub(super) type PodAcc<'a> = (Option<&'a str>, Vec<IpAddr>, Vec<Value>);

/// The container id in a `subsys=path` cgroup list: the first 64-hex-digit
/// path component run (docker, containerd, cri-o all use one), shortened
/// to the 12 characters sysdig and `docker ps` show.
pub(in crate::capture::scap) fn container_id(cgroups: &[u8]) -> Option<String> {
    for entry in cgroups.split(|&c| c == 0) {
        let path = entry.splitn(2, |&c| c == b'=').nth(1).unwrap_or(entry);
        let mut run = 0usize;
        for (i, &c) in path.iter().enumerate() {
            if c.is_ascii_hexdigit() {
                run += 1;
                if run == 64 {
                    let start = i + 1 - 64;
                    let next = path.get(i + 1).copied();
                    if next.is_none_or(|n| !n.is_ascii_hexdigit()) {
                        let id = path.get(start..start + 12)?;
                        return Some(String::from_utf8_lossy(id).to_ascii_lowercase());
                    }
                }
            } else {
                run = 0;
            }
        }
    }
    None
}

/// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`: how dockershim named
/// Kubernetes containers (before Kubernetes 1.5 the container part was
/// `<container>.<hash of its spec>` and the last part a random suffix).
pub(in crate::capture::scap) fn k8s_name(name: &str) -> Option<(String, PodKeyPub, Option<String>)> {
    let name = name.trim_start_matches('/');
    let mut it = name.split('_');
    if it.next()? != "k8s" {
        return None;
    }
    let container = it.next()?;
    let container = container.split_once('.').map_or(container, |(c, _)| c).to_owned();
    let pod = it.next()?.to_owned();
    let namespace = it.next()?.to_owned();
    let uid = it.next().map(str::to_owned);
    if pod.is_empty() || namespace.is_empty() {
        return None;
    }
    Some((container, PodKeyPub { namespace, name: pod }, uid))
}

/// A pod's namespace and name (test-visible form of the internal key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::capture::scap) struct PodKeyPub {
    pub(in crate::capture::scap) namespace: String,
    pub(in crate::capture::scap) name: String,
}

/// A stable, non-zero 64-bit id standing in for a cgroup id (FNV-1a, top bit
/// set so it never collides with a real cgroup inode number).
pub(in crate::capture::scap) fn synthetic_cgroup_id(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PodKey {
    pub(super) namespace: String,
    pub(super) name: String,
}

#[derive(Debug, Default)]
pub(super) struct Container {
    pub(super) name: String,
    pub(super) pod: Option<PodKey>,
    pub(super) pod_uid: Option<String>,
    pub(super) cname: Option<String>,
    pub(super) ip: Option<IpAddr>,
    /// An address its sockets were seen using (stands in for a wildcard-bound
    /// socket's own address, which the syscall does not tell).
    pub(super) seen_ip: Option<IpAddr>,
}

impl Decoder {
    /// The cgroup id records of `container` carry: one per pod when the pod
    /// is known (so all its containers attribute to it), else per container.
    pub(super) fn cgroup_id(&self, container: Option<&Arc<str>>) -> u64 {
        let Some(c) = container else { return 0 };
        match self.containers.get(c).and_then(|x| x.pod.as_ref()) {
            Some(p) => synthetic_cgroup_id(&format!("pod:{}/{}", p.namespace, p.name)),
            None => synthetic_cgroup_id(&format!("container:{c}")),
        }
    }

    /// A Kubernetes `List` of the pods seen in container metadata, each
    /// annotated with the synthetic cgroup id its records carry.
    pub(super) fn snapshot(&self) -> String {
        let mut pods: BTreeMap<&PodKey, PodAcc<'_>> = BTreeMap::new();
        let mut ids: Vec<_> = self.containers.iter().collect();
        ids.sort_by(|a, b| a.0.cmp(b.0));
        // Kubernetes app containers share the pause container's network, so
        // their metadata has no IP: the address their sockets used stands in,
        // unless several pods used it (host network).
        let ip_of = |c: &Container| c.ip.filter(|i| !i.is_unspecified()).or(c.seen_ip);
        let mut claims: HashMap<IpAddr, &PodKey> = HashMap::new();
        let mut shared: Vec<IpAddr> = Vec::new();
        for c in self.containers.values() {
            if let (Some(p), Some(ip)) = (&c.pod, ip_of(c))
                && claims.insert(ip, p).is_some_and(|q| q != p)
            {
                shared.push(ip);
            }
        }
        for (id, c) in ids {
            let Some(p) = &c.pod else { continue };
            let e = pods.entry(p).or_default();
            if e.0.is_none() {
                e.0 = c.pod_uid.as_deref();
            }
            if let Some(ip) = ip_of(c)
                && !shared.contains(&ip)
                && !e.1.contains(&ip)
            {
                e.1.push(ip);
            }
            e.2.push(json!({
                "name": c.cname.as_deref().unwrap_or(&c.name),
                "containerID": format!("docker://{id}"),
            }));
        }
        let items: Vec<Value> = pods
            .into_iter()
            .map(|(p, (uid, ips, statuses))| {
                let cg = synthetic_cgroup_id(&format!("pod:{}/{}", p.namespace, p.name));
                let mut status = json!({ "containerStatuses": statuses });
                if let Some(first) = ips.first() {
                    status["podIP"] = json!(first.to_string());
                    status["podIPs"] = ips.iter().map(|i| json!({ "ip": i.to_string() })).collect();
                }
                let mut spec = json!({});
                if let Some(n) = &self.node {
                    spec["nodeName"] = json!(&**n);
                }
                json!({
                    "kind": "Pod",
                    "metadata": {
                        "namespace": p.namespace,
                        "name": p.name,
                        "uid": uid.unwrap_or_default(),
                        "annotations": { "ktrace.io/cgroup-id": cg.to_string() },
                    },
                    "spec": spec,
                    "status": status,
                })
            })
            .collect();
        json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
    }

    pub(super) fn container_meta(&mut self, id: &str, name: &str, labels: Option<&Value>, ip: Option<IpAddr>) {
        let short: String = id.chars().take(12).collect::<String>().to_ascii_lowercase();
        if short.is_empty() {
            return;
        }
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_owned);
        let from_name = k8s_name(name);
        let pod = match (label("io.kubernetes.pod.namespace"), label("io.kubernetes.pod.name")) {
            (Some(namespace), Some(name)) => Some(PodKey { namespace, name }),
            _ => from_name.as_ref().map(|(_, p, _)| PodKey { namespace: p.namespace.clone(), name: p.name.clone() }),
        };
        let uid = label("io.kubernetes.pod.uid").or_else(|| from_name.as_ref().and_then(|x| x.2.clone()));
        let cname = label("io.kubernetes.container.name").or_else(|| from_name.as_ref().map(|x| x.0.clone()));
        let Some(key) = self.container_of(&short) else { return };
        let Some(c) = self.containers.get_mut(&key) else { return };
        name.trim_start_matches('/').clone_into(&mut c.name);
        if pod.is_some() && c.pod != pod {
            c.pod = pod;
            self.pods_dirty = true;
        }
        if uid.is_some() {
            c.pod_uid = uid;
        }
        c.cname = cname;
        if ip.is_some() && c.ip != ip {
            c.ip = ip;
            if c.pod.is_some() {
                self.pods_dirty = true;
            }
        }
    }

    pub(super) fn container_json(&mut self, j: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(j) else {
            self.stats.events_malformed += 1;
            return;
        };
        let c = v.get("container").unwrap_or(&v);
        let Some(id) = c.get("id").and_then(Value::as_str) else { return };
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let ip = match c.get("ip") {
            Some(Value::String(s)) => s.parse().ok(),
            // Old sysdig wrote the IPv4 address as a host-order integer.
            Some(Value::Number(n)) => {
                n.as_u64().and_then(|x| u32::try_from(x).ok()).map(|x| IpAddr::V4(Ipv4Addr::from(x)))
            }
            _ => None,
        };
        self.container_meta(id, name, c.get("labels"), ip);
    }
}
