//! The metadata index behind [`super::Enricher`]: current pods, services and
//! nodes, plus who owned each pod IP when (validity intervals), so an event
//! is attributed to the pod that had the address at the event's time even
//! after that pod was deleted and its IP handed to another.
//!
//! Times are Unix ns (`i128`). A pod's interval on an IP starts at its
//! `creationTimestamp` (the earliest it can have had the IP; unknown → since
//! forever) but never before the previous owner let go, and ends when ktrace
//! saw the pod deleted or its IP change, or when a newer pod claimed the IP.
//! Memory is bounded: [`MAX_OWNERS_PER_IP`] intervals per IP, [`MAX_CLOSED`]
//! closed intervals in all, [`MAX_GONE`] deleted pods remembered.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use super::{
    PodRef, ServiceRef,
    snapshot::{PodInfo, Snapshot},
};
// Looked up per DNS message (cgroup, netns, both addresses): SipHash on the
// pod keys was most of enriching a busy node's messages.
use crate::hash::{FastMap as HashMap, FastSet as HashSet};

/// Start of an interval whose beginning is unknown (object listed without a creation time).
pub(crate) const SINCE_EVER: i128 = i128::MIN;
/// End of an interval still open.
pub(crate) const OPEN: i128 = i128::MAX;
/// Intervals kept per IP (the newest; the oldest closed ones go first).
pub(crate) const MAX_OWNERS_PER_IP: usize = 8;
/// Closed intervals kept in all.
pub(crate) const MAX_CLOSED: usize = 65_536;
/// Deleted pods whose cgroup/netns/container keys still resolve (late events).
pub(crate) const MAX_GONE: usize = 4096;
/// Old container ids remembered per pod (restarts give new ids).
const MAX_CONTAINERS_PER_POD: usize = 16;

/// A service by (namespace, name).
type SvcKey = (Arc<str>, Arc<str>);

#[derive(Clone, Debug)]
struct Owner {
    key: Arc<str>,
    pod: PodRef,
    from: i128,
    until: i128,
}

#[derive(Clone, Debug)]
struct PodEntry {
    pod: PodRef,
    ips: Vec<IpAddr>,
    netns: Option<u32>,
    cgroup: Option<u64>,
    containers: Vec<Box<str>>,
    dns: bool,
}

/// Pods, services and nodes with IP ownership history.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pods: HashMap<Arc<str>, PodEntry>,
    gone: HashMap<Arc<str>, PodEntry>,
    gone_order: VecDeque<Arc<str>>,
    by_ip: HashMap<IpAddr, Vec<Owner>>,
    closed: VecDeque<(IpAddr, Arc<str>, i128)>,
    by_netns: HashMap<u32, Arc<str>>,
    by_cgroup: HashMap<u64, Arc<str>>,
    by_container: HashMap<Box<str>, Arc<str>>,
    nodes: HashMap<IpAddr, Arc<str>>,
    node_addrs: HashMap<Arc<str>, Vec<IpAddr>>,
    services: HashMap<IpAddr, ServiceRef>,
    service_ips: HashMap<SvcKey, (Vec<IpAddr>, bool)>,
    dns_services: HashSet<IpAddr>,
}

fn key_of(p: &PodInfo) -> Arc<str> {
    if p.uid.is_empty() { format!("{}/{}", p.pod.namespace, p.pod.name).into() } else { p.uid.as_str().into() }
}

impl Index {
    /// Adds or updates a pod seen at `now`; a pod carrying `deleted_ns` is
    /// recorded and then closed at that time.
    pub(crate) fn upsert_pod(&mut self, info: &PodInfo, now: i128) {
        let key = key_of(info);
        let old = self.pods.remove(&key).or_else(|| {
            let g = self.gone.remove(&key);
            if g.is_some() {
                self.gone_order.retain(|k| *k != key);
            }
            g
        });
        let ips: Vec<IpAddr> = if info.host_network { Vec::new() } else { info.ips.clone() };
        let created = info.created_ns.unwrap_or(SINCE_EVER);
        let mut containers: Vec<Box<str>> = info.container_ids.iter().map(|c| c.as_str().into()).collect();
        if let Some(o) = &old {
            for ip in o.ips.iter().filter(|ip| !ips.contains(ip)) {
                self.close(*ip, &key, now);
            }
            for c in &o.containers {
                if !containers.contains(c) && containers.len() < MAX_CONTAINERS_PER_POD {
                    containers.push(c.clone());
                } else if !containers.contains(c) {
                    self.by_container.remove(c);
                }
            }
        }
        for ip in &ips {
            self.open(*ip, &key, &info.pod, created, now);
        }
        if let Some(n) = info.netns_ino {
            self.by_netns.insert(n, Arc::clone(&key));
        }
        if let Some(c) = info.cgroup_id {
            self.by_cgroup.insert(c, Arc::clone(&key));
        }
        for c in &containers {
            self.by_container.insert(c.clone(), Arc::clone(&key));
        }
        let entry = PodEntry {
            pod: info.pod.clone(),
            ips,
            netns: info.netns_ino.or(old.as_ref().and_then(|o| o.netns)),
            cgroup: info.cgroup_id.or(old.as_ref().and_then(|o| o.cgroup)),
            containers,
            dns: info.is_cluster_dns(),
        };
        self.pods.insert(Arc::clone(&key), entry);
        if let Some(t) = info.deleted_ns {
            self.delete_key(&key, t);
        }
    }

    /// A pod is gone (deleted) since `at`.
    pub(crate) fn delete_pod(&mut self, info: &PodInfo, at: i128) {
        self.delete_key(&key_of(info), at);
    }

    fn delete_key(&mut self, key: &Arc<str>, at: i128) {
        let Some(e) = self.pods.remove(key) else { return };
        for ip in &e.ips {
            self.close(*ip, key, at);
        }
        self.gone.insert(Arc::clone(key), e);
        self.gone_order.push_back(Arc::clone(key));
        while self.gone_order.len() > MAX_GONE {
            let Some(k) = self.gone_order.pop_front() else { break };
            if let Some(e) = self.gone.remove(&k) {
                if let Some(n) = e.netns
                    && self.by_netns.get(&n) == Some(&k)
                {
                    self.by_netns.remove(&n);
                }
                if let Some(c) = e.cgroup
                    && self.by_cgroup.get(&c) == Some(&k)
                {
                    self.by_cgroup.remove(&c);
                }
                for c in &e.containers {
                    if self.by_container.get(c) == Some(&k) {
                        self.by_container.remove(c);
                    }
                }
            }
        }
    }

    /// A complete list of pods as of `now` (initial list, relist after a
    /// watch expired, a snapshot): pods missing from it are deleted at `now`.
    /// With `scope_node`, only pods of that node are expected in the list.
    pub(crate) fn replace_pods(&mut self, pods: &[PodInfo], now: i128, scope_node: Option<&str>) {
        let keep: HashSet<Arc<str>> = pods.iter().map(key_of).collect();
        let missing: Vec<Arc<str>> = self
            .pods
            .iter()
            .filter(|(k, e)| !keep.contains(*k) && scope_node.is_none_or(|n| e.pod.node.as_deref() == Some(n)))
            .map(|(k, _)| Arc::clone(k))
            .collect();
        for k in missing {
            self.delete_key(&k, now);
        }
        // Pods already deleted (recorded Lists keep them a while) first, in
        // the order they went, so that a live pod that reuses an address
        // starts after the one it replaced ended.
        let mut order: Vec<&PodInfo> = pods.iter().collect();
        order.sort_by_key(|p| p.deleted_ns.map_or((1, 0), |t| (0, t)));
        for p in order {
            self.upsert_pod(p, now);
        }
    }

    /// Opens `key`'s interval on `ip` unless it holds it already.
    fn open(&mut self, ip: IpAddr, key: &Arc<str>, pod: &PodRef, created: i128, now: i128) {
        let owners = self.by_ip.entry(ip).or_default();
        if let Some(o) = owners.iter_mut().rev().find(|o| o.until == OPEN && o.key == *key) {
            o.pod = pod.clone();
            return;
        }
        // Never before the previous owner let go of the address.
        let mut from = owners.iter().filter(|o| o.until != OPEN).map(|o| o.until).fold(created, i128::max);
        let mut newly_closed = Vec::new();
        for o in owners.iter_mut().filter(|o| o.until == OPEN) {
            // Two pods claim the address: the newer one wins from its start,
            // or from now when its start says nothing.
            let t = if from > o.from { from } else { now.max(o.from) };
            o.until = t;
            from = from.max(t);
            newly_closed.push((ip, Arc::clone(&o.key), t));
        }
        // Most IPs only ever have one owner: do not let Vec round up to four.
        owners.reserve_exact(1);
        owners.push(Owner { key: Arc::clone(key), pod: pod.clone(), from, until: OPEN });
        owners.sort_by_key(|o| o.from);
        if owners.len() > MAX_OWNERS_PER_IP
            && let Some(i) = owners.iter().position(|o| o.until != OPEN)
        {
            owners.remove(i);
        }
        for c in newly_closed {
            self.push_closed(c);
        }
    }

    fn close(&mut self, ip: IpAddr, key: &Arc<str>, at: i128) {
        let Some(owners) = self.by_ip.get_mut(&ip) else { return };
        let mut closed = None;
        for o in owners.iter_mut().filter(|o| o.until == OPEN && o.key == *key) {
            o.until = at.max(o.from);
            closed = Some(o.until);
        }
        if let Some(t) = closed {
            self.push_closed((ip, Arc::clone(key), t));
        }
    }

    fn push_closed(&mut self, c: (IpAddr, Arc<str>, i128)) {
        self.closed.push_back(c);
        while self.closed.len() > MAX_CLOSED {
            let Some((ip, key, until)) = self.closed.pop_front() else { break };
            if let Some(owners) = self.by_ip.get_mut(&ip) {
                owners.retain(|o| !(o.key == key && o.until == until));
                if owners.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    /// Replaces the services.
    pub(crate) fn replace_services(&mut self, list: &[(ServiceRef, Vec<IpAddr>, bool)]) {
        self.services.clear();
        self.service_ips.clear();
        self.dns_services.clear();
        for (r, ips, dns) in list {
            self.upsert_service(r, ips, *dns);
        }
    }

    /// Adds or updates a service.
    pub(crate) fn upsert_service(&mut self, r: &ServiceRef, ips: &[IpAddr], dns: bool) {
        self.delete_service(r);
        for ip in ips {
            self.services.insert(*ip, r.clone());
            if dns {
                self.dns_services.insert(*ip);
            }
        }
        self.service_ips.insert((Arc::clone(&r.namespace), Arc::clone(&r.name)), (ips.to_vec(), dns));
    }

    /// Removes a service.
    pub(crate) fn delete_service(&mut self, r: &ServiceRef) {
        if let Some((ips, _)) = self.service_ips.remove(&(Arc::clone(&r.namespace), Arc::clone(&r.name))) {
            for ip in ips {
                if self.services.get(&ip) == Some(r) {
                    self.services.remove(&ip);
                    self.dns_services.remove(&ip);
                }
            }
        }
    }

    /// Replaces the nodes.
    pub(crate) fn replace_nodes(&mut self, list: &[(Arc<str>, Vec<IpAddr>)]) {
        self.nodes.clear();
        self.node_addrs.clear();
        for (n, a) in list {
            self.upsert_node(n, a);
        }
    }

    /// Adds or updates a node.
    pub(crate) fn upsert_node(&mut self, name: &Arc<str>, addrs: &[IpAddr]) {
        self.delete_node(name);
        for a in addrs {
            self.nodes.insert(*a, Arc::clone(name));
        }
        self.node_addrs.insert(Arc::clone(name), addrs.to_vec());
    }

    /// Removes a node.
    pub(crate) fn delete_node(&mut self, name: &str) {
        if let Some(addrs) = self.node_addrs.remove(name) {
            for a in addrs {
                if self.nodes.get(&a).is_some_and(|n| &**n == name) {
                    self.nodes.remove(&a);
                }
            }
        }
    }

    /// Merges a complete snapshot taken at `at`.
    pub(crate) fn apply_snapshot(&mut self, s: &Snapshot, at: i128) {
        self.replace_pods(&s.pods, at, s.scope_node.as_deref());
        let mut by_svc: HashMap<SvcKey, (ServiceRef, Vec<IpAddr>, bool)> = HashMap::default();
        for (ip, r) in &s.services {
            let e = by_svc
                .entry((Arc::clone(&r.namespace), Arc::clone(&r.name)))
                .or_insert_with(|| (r.clone(), Vec::new(), false));
            e.1.push(*ip);
            e.2 |= s.dns_services.contains(ip);
        }
        let list: Vec<_> = by_svc.into_values().collect();
        self.replace_services(&list);
        self.replace_nodes(&s.nodes);
    }

    fn entry(&self, key: &Arc<str>) -> Option<&PodEntry> {
        self.pods.get(key).or_else(|| self.gone.get(key))
    }

    /// The pod that had `ip` at `t`.
    pub(crate) fn pod_by_ip_at(&self, ip: &IpAddr, t: i128) -> Option<PodRef> {
        self.by_ip.get(ip)?.iter().rev().find(|o| o.from <= t && t < o.until).map(|o| o.pod.clone())
    }

    /// The pod that has `ip` now.
    pub(crate) fn pod_by_ip(&self, ip: &IpAddr) -> Option<PodRef> {
        self.by_ip.get(ip)?.iter().rev().find(|o| o.until == OPEN).map(|o| o.pod.clone())
    }

    pub(crate) fn pod_by_netns(&self, ino: u32) -> Option<PodRef> {
        self.by_netns.get(&ino).and_then(|k| self.entry(k)).map(|e| e.pod.clone())
    }

    pub(crate) fn pod_by_cgroup(&self, id: u64) -> Option<PodRef> {
        self.by_cgroup.get(&id).and_then(|k| self.entry(k)).map(|e| e.pod.clone())
    }

    pub(crate) fn pod_by_container(&self, id: &str) -> Option<PodRef> {
        self.by_container.get(id).and_then(|k| self.entry(k)).map(|e| e.pod.clone())
    }

    pub(crate) fn pod_by_uid(&self, uid: &str) -> Option<PodRef> {
        let k: Arc<str> = uid.into();
        self.entry(&k).map(|e| e.pod.clone())
    }

    /// The pod a cgroup path names: by container id, else by pod uid.
    pub(crate) fn key_for(&self, info: &super::cgroup::CgroupInfo) -> Option<Arc<str>> {
        if let Some(k) = info.container_id.as_deref().and_then(|c| self.by_container.get(c)) {
            return Some(Arc::clone(k));
        }
        let k: Arc<str> = info.pod_uid.as_deref()?.into();
        self.entry(&k).is_some().then_some(k)
    }

    /// A pod (current or recently deleted) by index key.
    pub(crate) fn pod_of_key(&self, key: &Arc<str>) -> Option<PodRef> {
        self.entry(key).map(|e| e.pod.clone())
    }

    /// Whether the netns of the pod `key` identifies it: not for hostNetwork
    /// pods (their netns is the node's) nor pods without an IP yet.
    pub(crate) fn netns_identifies(&self, key: &Arc<str>, ino: u32) -> bool {
        self.pods.get(key).is_some_and(|e| !e.ips.is_empty() && e.netns != Some(ino))
    }

    /// Learns a netns inode of a pod found by cgroup (see [`Self::netns_identifies`]).
    pub(crate) fn learn_netns(&mut self, ino: u32, key: &Arc<str>) {
        if let Some(e) = self.pods.get_mut(key)
            && !e.ips.is_empty()
        {
            e.netns = Some(ino);
            self.by_netns.insert(ino, Arc::clone(key));
        }
    }

    pub(crate) fn node_by_ip(&self, ip: &IpAddr) -> Option<Arc<str>> {
        self.nodes.get(ip).cloned()
    }

    pub(crate) fn node_addresses(&self, name: &str) -> Vec<IpAddr> {
        let mut v = self.node_addrs.get(name).cloned().unwrap_or_default();
        v.sort_unstable();
        v
    }

    pub(crate) fn service_by_ip(&self, ip: &IpAddr) -> Option<ServiceRef> {
        self.services.get(ip).cloned()
    }

    /// The cluster DNS service's IP, or (services without kube-proxy, as in
    /// the lab, or a client that queries the pods directly) a DNS pod's IP.
    pub(crate) fn is_cluster_dns(&self, ip: &IpAddr) -> bool {
        self.dns_services.contains(ip)
            || self
                .by_ip
                .get(ip)
                .and_then(|o| o.iter().rev().find(|o| o.until == OPEN))
                .and_then(|o| self.pods.get(&o.key))
                .is_some_and(|e| e.dns)
    }

    /// Whether any pod can be found by address, netns or cgroup (what
    /// [`super::Enricher::enrich`] looks up).
    pub(crate) fn names_pods(&self) -> bool {
        !(self.by_ip.is_empty() && self.by_netns.is_empty() && self.by_cgroup.is_empty())
    }

    /// Counts, for status lines and tests: (pods, services, nodes).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.pods.len(), self.service_ips.len(), self.node_addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ip: &str, created: Option<i128>) -> PodInfo {
        PodInfo {
            pod: PodRef::new("ns", name, Some("node-a".into())),
            uid: uid.into(),
            ips: vec![ip.parse().unwrap()],
            host_network: false,
            container_ids: vec![format!("{uid:0>64}")],
            netns_name: None,
            cgroup_path: None,
            netns_ino: None,
            cgroup_id: Some(uid.len() as u64 * 1000 + u64::from(name.as_bytes()[0])),
            labels: Vec::new(),
            created_ns: created,
            deleted_ns: None,
        }
    }

    fn name_at(ix: &Index, ip: &str, t: i128) -> Option<String> {
        ix.pod_by_ip_at(&ip.parse().unwrap(), t).map(|p| p.name.to_string())
    }

    #[test]
    fn ip_reuse_keeps_each_owner_in_its_interval() {
        let mut ix = Index::default();
        ix.upsert_pod(&pod("u1", "old", "10.0.0.5", Some(100)), 150);
        assert_eq!(name_at(&ix, "10.0.0.5", 120).as_deref(), Some("old"));
        assert_eq!(name_at(&ix, "10.0.0.5", 50), None, "before creation nobody had it");
        ix.delete_pod(&pod("u1", "old", "10.0.0.5", Some(100)), 300);
        // The new pod was created before the old one was seen deleted: it cannot have had the IP before.
        ix.upsert_pod(&pod("u2", "new", "10.0.0.5", Some(250)), 400);
        assert_eq!(name_at(&ix, "10.0.0.5", 299).as_deref(), Some("old"));
        assert_eq!(name_at(&ix, "10.0.0.5", 300).as_deref(), Some("new"));
        assert_eq!(name_at(&ix, "10.0.0.5", 10_000).as_deref(), Some("new"));
        assert_eq!(ix.pod_by_ip(&"10.0.0.5".parse().unwrap()).unwrap().name.as_ref(), "new");
        // The deleted pod's keys still resolve for late events.
        assert_eq!(ix.pod_by_container(&format!("{:0>64}", "u1")).unwrap().name.as_ref(), "old");
        assert_eq!(ix.pod_by_uid("u1").unwrap().name.as_ref(), "old");
    }

    #[test]
    fn a_newer_claimant_closes_an_open_owner() {
        let mut ix = Index::default();
        ix.upsert_pod(&pod("u1", "a", "10.0.0.6", None), 100);
        // No delete seen (e.g. missed while the API was away): the newer pod wins from its creation.
        ix.upsert_pod(&pod("u2", "b", "10.0.0.6", Some(500)), 600);
        assert_eq!(name_at(&ix, "10.0.0.6", 0).as_deref(), Some("a"));
        assert_eq!(name_at(&ix, "10.0.0.6", 499).as_deref(), Some("a"));
        assert_eq!(name_at(&ix, "10.0.0.6", 500).as_deref(), Some("b"));
        // Neither has a creation time: switch when seen.
        ix.upsert_pod(&pod("u3", "c", "10.0.0.7", None), 100);
        ix.upsert_pod(&pod("u4", "d", "10.0.0.7", None), 700);
        assert_eq!(name_at(&ix, "10.0.0.7", 699).as_deref(), Some("c"));
        assert_eq!(name_at(&ix, "10.0.0.7", 700).as_deref(), Some("d"));
    }

    #[test]
    fn relist_deletes_missing_pods_and_ip_changes_close() {
        let mut ix = Index::default();
        ix.replace_pods(&[pod("u1", "a", "10.0.0.1", None), pod("u2", "b", "10.0.0.2", None)], 10, None);
        ix.replace_pods(&[pod("u2", "b", "10.0.0.3", None)], 20, None);
        assert_eq!(name_at(&ix, "10.0.0.1", 15).as_deref(), Some("a"));
        assert_eq!(name_at(&ix, "10.0.0.1", 25), None);
        assert_eq!(name_at(&ix, "10.0.0.2", 19).as_deref(), Some("b"));
        assert_eq!(name_at(&ix, "10.0.0.2", 21), None);
        assert_eq!(name_at(&ix, "10.0.0.3", 21).as_deref(), Some("b"));
        assert_eq!(ix.counts().0, 1);
        // A scoped list (one node's pods) leaves other nodes' pods alone.
        let mut other = pod("u9", "z", "10.0.9.9", None);
        other.pod = PodRef::new("ns", "z", Some("node-b".into()));
        ix.upsert_pod(&other, 30);
        ix.replace_pods(&[], 40, Some("node-a"));
        assert_eq!(ix.counts().0, 1);
        assert!(ix.pod_by_ip(&"10.0.9.9".parse().unwrap()).is_some());
    }

    #[test]
    fn history_is_bounded() {
        let mut ix = Index::default();
        for i in 0..100i128 {
            let uid = format!("u{i}");
            let p = pod(&uid, "p", "10.0.0.9", Some(i * 10));
            ix.upsert_pod(&p, i * 10);
            ix.delete_pod(&p, i * 10 + 5);
        }
        assert!(ix.by_ip[&"10.0.0.9".parse().unwrap()].len() <= MAX_OWNERS_PER_IP);
        assert_eq!(name_at(&ix, "10.0.0.9", 992).as_deref(), Some("p"));
        assert_eq!(name_at(&ix, "10.0.0.9", 997), None);
        assert!(ix.gone.len() <= MAX_GONE);
    }

    #[test]
    fn host_network_pods_are_not_found_by_ip_and_dns_is_recognised() {
        let mut ix = Index::default();
        let mut h = pod("u1", "kube-proxy", "192.168.77.10", None);
        h.host_network = true;
        ix.upsert_pod(&h, 0);
        assert!(ix.pod_by_ip(&"192.168.77.10".parse().unwrap()).is_none());
        assert!(!ix.netns_identifies(&"u1".into(), 5), "a hostNetwork pod's netns is the node's");
        assert!(ix.netns_identifies(&"u2".into(), 5) || ix.pod_by_uid("u2").is_none());
        let mut d = pod("u2", "coredns-1", "10.0.0.53", None);
        d.labels.push(("k8s-app".into(), "kube-dns".into()));
        ix.upsert_pod(&d, 0);
        let svc = ServiceRef { namespace: "kube-system".into(), name: "kube-dns".into() };
        ix.upsert_service(&svc, &["10.96.0.10".parse().unwrap()], true);
        assert!(ix.is_cluster_dns(&"10.96.0.10".parse().unwrap()));
        assert!(ix.is_cluster_dns(&"10.0.0.53".parse().unwrap()));
        assert!(!ix.is_cluster_dns(&"10.0.0.1".parse().unwrap()));
        ix.delete_service(&svc);
        assert!(!ix.is_cluster_dns(&"10.96.0.10".parse().unwrap()));
        assert!(ix.service_by_ip(&"10.96.0.10".parse().unwrap()).is_none());
    }
}
