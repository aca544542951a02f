//! Enrichment: who is behind an address, a network namespace, a cgroup or a pid.
//!
//! Sources of pod metadata: a `kubectl get pods,services,nodes -A -o json`
//! snapshot ([`snapshot`]), later the Kubernetes API. Process-side evidence
//! (netns of a pid, resolv.conf a process used) comes from [`host`].

pub mod host;
pub mod snapshot;

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

use std::{collections::HashMap, net::IpAddr};

use crate::{
    decode::DnsEvent,
    event::{Hook, PacketRecord},
};

pub use snapshot::{ServiceRef, Snapshot};

/// Answers "which pod is this?" for addresses, network namespaces and cgroups.
#[derive(Debug, Default)]
pub struct Enricher {
    by_ip: HashMap<IpAddr, PodRef>,
    by_netns: HashMap<u32, PodRef>,
    by_cgroup: HashMap<u64, PodRef>,
    nodes: HashMap<IpAddr, Arc<str>>,
    services: HashMap<IpAddr, ServiceRef>,
}

impl Enricher {
    /// No metadata: pod fields stay empty, addresses and processes still show.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Indexes a snapshot.
    #[must_use]
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let mut e = Self::default();
        for p in &s.pods {
            if !p.host_network {
                for ip in &p.ips {
                    e.by_ip.insert(*ip, p.pod.clone());
                }
            }
            if let Some(i) = p.netns_ino {
                e.by_netns.insert(i, p.pod.clone());
            }
            if let Some(c) = p.cgroup_id {
                e.by_cgroup.insert(c, p.pod.clone());
            }
        }
        for (name, addrs) in &s.nodes {
            for a in addrs {
                e.nodes.insert(*a, name.clone());
            }
        }
        e.services.clone_from(&s.services);
        e
    }

    /// The pod that owns the socket a packet was observed at (cgroup, then netns).
    #[must_use]
    pub fn local_pod(&self, rec: &PacketRecord) -> Option<PodRef> {
        self.by_cgroup.get(&rec.cgroup_id).or_else(|| self.by_netns.get(&rec.netns_ino)).cloned()
    }

    /// The pod that has this IP (not hostNetwork pods: their IP is the node's).
    #[must_use]
    pub fn pod_by_ip(&self, ip: &IpAddr) -> Option<PodRef> {
        self.by_ip.get(ip).cloned()
    }

    /// The pod of a network namespace inode.
    #[must_use]
    pub fn pod_by_netns(&self, ino: u32) -> Option<PodRef> {
        self.by_netns.get(&ino).cloned()
    }

    /// The node that has this address.
    #[must_use]
    pub fn node_by_ip(&self, ip: &IpAddr) -> Option<Arc<str>> {
        self.nodes.get(ip).cloned()
    }

    /// Every address the metadata gives the node named `name` (`InternalIP`,
    /// `ExternalIP`), sorted; empty when the node is unknown.
    #[must_use]
    pub fn node_addresses(&self, name: &str) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.nodes.iter().filter(|(_, n)| &***n == name).map(|(a, _)| *a).collect();
        v.sort_unstable();
        v
    }

    /// The service with this cluster IP.
    #[must_use]
    pub fn service_by_ip(&self, ip: &IpAddr) -> Option<ServiceRef> {
        self.services.get(ip).cloned()
    }

    /// Fills `src_pod`/`dst_pod`: the observing socket's own side by cgroup or
    /// netns (exact even for hostNetwork-free loopback traffic), the other side by IP.
    pub fn enrich(&self, ev: &mut DnsEvent) {
        let local = self.local_pod(&ev.rec);
        match ev.rec.hook {
            Hook::SocketEgress | Hook::TcEgress => {
                ev.src_pod = local.or_else(|| self.pod_by_ip(&ev.src.ip));
                ev.dst_pod = self.pod_by_ip(&ev.dst.ip);
            }
            Hook::SocketIngress | Hook::TcIngress => {
                ev.src_pod = self.pod_by_ip(&ev.src.ip);
                ev.dst_pod = local.or_else(|| self.pod_by_ip(&ev.dst.ip));
            }
            Hook::Wire => {
                ev.src_pod = self.pod_by_ip(&ev.src.ip);
                ev.dst_pod = self.pod_by_ip(&ev.dst.ip);
            }
        }
    }
}
