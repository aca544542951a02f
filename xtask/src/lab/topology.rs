//! The lab's fixed topology: names, addresses, pods, services and faults.
//!
//! Everything here is plain data so it can be unit-tested without root and
//! read by tests that need an address. See `docs/lab.md` for the diagram.

use std::{
    fmt::{self, Write as _},
    net::Ipv4Addr,
    path::PathBuf,
    str::FromStr,
};

/// Prefix of every network namespace and `/etc/netns` directory the lab
/// creates; cleanup deletes everything that starts with it.
pub const PREFIX: &str = "kt-";
/// Where the lab keeps its snapshot, pid list, configs and logs.
pub const STATE_DIR: &str = "/run/ktrace-lab";
/// File lock serialising labs (one lab per machine at a time).
pub const LOCK_PATH: &str = "/run/ktrace-lab.lock";
/// Mount point of the cgroup2 hierarchy on these machines (hybrid mode).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";
/// Parent cgroup of all pod cgroups, directly under [`CGROUP2_ROOT`].
pub const CGROUP_PARENT: &str = "ktrace-lab";

/// The fabric ("the cloud network") namespace holding the underlay bridge.
pub const FABRIC_NETNS: &str = "kt-fabric";
/// Bridge inside [`FABRIC_NETNS`] joining the nodes and the upstream host.
pub const FABRIC_BRIDGE: &str = "br0";
/// The upstream resolver host (the "8.8.8.8 that never answers").
pub const UPSTREAM_NETNS: &str = "kt-upstream";
/// Underlay address of the upstream resolver host.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 53);
/// Fabric-side veth of the upstream host.
pub const UPSTREAM_FABRIC_PORT: &str = "ul-upstream";
/// Underlay prefix length (192.168.77.0/24).
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// Overlay (VXLAN) prefix length (10.244.255.0/24).
pub const OVERLAY_PREFIX_LEN: u8 = 24;
/// Pod CIDR prefix length per node.
pub const POD_PREFIX_LEN: u8 = 24;
/// The cluster-wide pod network, used by the `fabric-drop-pod-cidr` fault.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// VXLAN network identifier (flannel uses 1).
pub const VXLAN_ID: u32 = 1;
/// VXLAN UDP destination port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN device name in each node (as flannel names it).
pub const VXLAN_DEV: &str = "flannel.1";
/// Pod bridge in each node.
pub const POD_BRIDGE: &str = "cni0";
/// Underlay interface name inside nodes and the upstream host.
pub const UNDERLAY_DEV: &str = "eth0";
/// MTU of pod veths: the underlay's 1500 minus VXLAN's 50 bytes.
pub const POD_MTU: u16 = 1450;
/// Cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Port the backend's HTTP server listens on.
pub const BACKEND_PORT: u16 = 8080;
/// Port of the `refused` service: it targets the backend pod on a port where
/// nothing listens (a Service `targetPort` mismatch), so connects get a RST.
pub const REFUSED_PORT: u16 = 8081;
/// The kube-dns Service `ClusterIP` (kubeadm's default: the tenth address of
/// the service CIDR). Pods ask it; each node's kube-proxy table rewrites it
/// to a resolver pod (see [`kube_proxy_nft`]).
pub const KUBE_DNS_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The cluster's service CIDR (no route anywhere: only DNAT gives it meaning).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// nftables table holding each node's kube-proxy rules.
pub const KUBE_PROXY_TABLE: &str = "kt_kube_proxy";
/// resolv.conf options of the cluster-DNS pods; `timeout:2 attempts:1` keeps
/// the blackholed `.localdomain` lookups to 2 s each.
pub const RESOLV_OPTIONS: &str = "ndots:5 timeout:2 attempts:1";

/// A node: a network namespace with an underlay veth, a VXLAN device and a
/// pod bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Kubernetes node name (`node-a`).
    pub name: &'static str,
    /// Network namespace (`kt-node-a`).
    pub netns: &'static str,
    /// Address on the underlay (the node's `InternalIP`).
    pub underlay_ip: Ipv4Addr,
    /// Address of the VXLAN device on the overlay /24.
    pub overlay_ip: Ipv4Addr,
    /// First address of the node's pod CIDR (a /24).
    pub pod_cidr_base: Ipv4Addr,
    /// Address of `cni0`, the pods' default gateway.
    pub bridge_ip: Ipv4Addr,
    /// Name of the node's veth inside the fabric namespace.
    pub fabric_port: &'static str,
}

impl NodeSpec {
    /// The pod CIDR as text, `10.244.1.0/24`.
    #[must_use]
    pub fn pod_cidr(&self) -> String {
        format!("{}/{POD_PREFIX_LEN}", self.pod_cidr_base)
    }
}

/// The two nodes.
pub const NODES: [NodeSpec; 2] = [
    NodeSpec {
        name: "node-a",
        netns: "kt-node-a",
        underlay_ip: Ipv4Addr::new(192, 168, 77, 10),
        overlay_ip: Ipv4Addr::new(10, 244, 255, 1),
        pod_cidr_base: Ipv4Addr::new(10, 244, 1, 0),
        bridge_ip: Ipv4Addr::new(10, 244, 1, 1),
        fabric_port: "ul-node-a",
    },
    NodeSpec {
        name: "node-b",
        netns: "kt-node-b",
        underlay_ip: Ipv4Addr::new(192, 168, 77, 11),
        overlay_ip: Ipv4Addr::new(10, 244, 255, 2),
        pod_cidr_base: Ipv4Addr::new(10, 244, 2, 0),
        bridge_ip: Ipv4Addr::new(10, 244, 2, 1),
        fabric_port: "ul-node-b",
    },
];

/// Which resolv.conf a pod gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodDns {
    /// `dnsPolicy: ClusterFirst`: search list of the namespace, kube-dns.
    ClusterFirst,
    /// `dnsPolicy: Default`: the node's resolver, i.e. the upstream host.
    Default,
}

/// A pod: a network namespace with a veth to its node's `cni0`, and a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Pod name.
    pub name: &'static str,
    /// Node name ([`NodeSpec::name`]).
    pub node: &'static str,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Node-side veth name (≤ 15 bytes).
    pub host_veth: &'static str,
    /// Container name in the snapshot.
    pub container: &'static str,
    /// Container image in the snapshot.
    pub image: &'static str,
    /// Pod labels.
    pub labels: &'static [(&'static str, &'static str)],
    /// DNS policy.
    pub dns: PodDns,
}

impl PodSpec {
    /// The pod's network namespace name (`kt-<namespace>-<pod>`).
    #[must_use]
    pub fn netns(&self) -> String {
        pod_netns(self.namespace, self.name)
    }

    /// The pod's cgroup path relative to the cgroup2 root, in the form of the
    /// `0::` line of `/proc/<pid>/cgroup` (`/ktrace-lab/<namespace>_<pod>`).
    #[must_use]
    pub fn cgroup(&self) -> String {
        pod_cgroup(self.namespace, self.name)
    }

    /// Absolute path of the pod's cgroup directory.
    #[must_use]
    pub fn cgroup_dir(&self) -> PathBuf {
        pod_cgroup_dir(self.namespace, self.name)
    }

    /// The node spec this pod runs on.
    #[must_use]
    pub fn node_spec(&self) -> Option<&'static NodeSpec> {
        node(self.node)
    }

    /// Content of the pod's `/etc/resolv.conf`.
    #[must_use]
    pub fn resolv_conf(&self) -> String {
        match self.dns {
            PodDns::ClusterFirst => format!(
                "search {ns}.svc.{d} svc.{d} {d} localdomain\nnameserver {dns}\noptions {RESOLV_OPTIONS}\n",
                ns = self.namespace,
                d = CLUSTER_DOMAIN,
                dns = KUBE_DNS_CLUSTER_IP,
            ),
            PodDns::Default => format!("nameserver {UPSTREAM_IP}\n"),
        }
    }

    /// Content of the pod's `/etc/hosts` (as kubelet writes it).
    #[must_use]
    pub fn hosts(&self) -> String {
        format!("127.0.0.1\tlocalhost\n{}\t{}\n", self.ip, self.name)
    }
}

/// Network namespace name of a pod.
#[must_use]
pub fn pod_netns(namespace: &str, pod: &str) -> String {
    format!("{PREFIX}{namespace}-{pod}")
}

/// cgroup of a pod, relative to the cgroup2 root, with a leading `/`.
#[must_use]
pub fn pod_cgroup(namespace: &str, pod: &str) -> String {
    format!("/{CGROUP_PARENT}/{namespace}_{pod}")
}

/// Absolute cgroup directory of a pod.
#[must_use]
pub fn pod_cgroup_dir(namespace: &str, pod: &str) -> PathBuf {
    PathBuf::from(CGROUP2_ROOT).join(CGROUP_PARENT).join(format!("{namespace}_{pod}"))
}

/// kube-system/kube-dns on node-a: dnsmasq, authoritative for `cluster.local`.
pub const KUBE_DNS: PodSpec = PodSpec {
    namespace: "kube-system",
    name: "kube-dns",
    node: "node-a",
    ip: Ipv4Addr::new(10, 244, 1, 10),
    host_veth: "vp-kube-dns",
    container: "dnsmasq",
    image: "ktrace-lab/dnsmasq:2.90",
    labels: &[("k8s-app", "kube-dns")],
    dns: PodDns::Default,
};

/// critical-app/client on node-a: the pod whose lookups are slow.
pub const CLIENT: PodSpec = PodSpec {
    namespace: "critical-app",
    name: "client",
    node: "node-a",
    ip: Ipv4Addr::new(10, 244, 1, 20),
    host_veth: "vp-client",
    container: "client",
    image: "ktrace-lab/client:1",
    labels: &[("app", "client")],
    dns: PodDns::ClusterFirst,
};

/// critical-app/backend on node-b: `python3 -m http.server` on port 8080.
pub const BACKEND: PodSpec = PodSpec {
    namespace: "critical-app",
    name: "backend",
    node: "node-b",
    ip: Ipv4Addr::new(10, 244, 2, 30),
    host_veth: "vp-backend",
    container: "http",
    image: "ktrace-lab/python-http:3",
    labels: &[("app", "backend")],
    dns: PodDns::ClusterFirst,
};

/// All pods.
pub const PODS: [PodSpec; 3] = [KUBE_DNS, CLIENT, BACKEND];

/// A Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name.
    pub name: &'static str,
    /// Port number (port and targetPort are equal).
    pub port: u16,
    /// `UDP` or `TCP`.
    pub protocol: &'static str,
}

/// A Service. kube-dns has a real `ClusterIP`, rewritten to its pods by the
/// nodes' kube-proxy rules; the others use the pod IP as `ClusterIP` (they
/// need no rewriting to be found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Service name.
    pub name: &'static str,
    /// `ClusterIP`.
    pub cluster_ip: Ipv4Addr,
    /// Ports.
    pub ports: &'static [ServicePort],
    /// Selector.
    pub selector: &'static [(&'static str, &'static str)],
    /// Present only when this fault is on.
    pub only_with: Option<Fault>,
}

impl ServiceSpec {
    /// Fully qualified DNS name, `backend.critical-app.svc.cluster.local`.
    #[must_use]
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

/// All services, including fault-only ones (see [`services`]).
pub const SERVICES: [ServiceSpec; 3] = [
    ServiceSpec {
        namespace: "kube-system",
        name: "kube-dns",
        cluster_ip: KUBE_DNS_CLUSTER_IP,
        ports: &[
            ServicePort { name: "dns", port: 53, protocol: "UDP" },
            ServicePort { name: "dns-tcp", port: 53, protocol: "TCP" },
        ],
        selector: &[("k8s-app", "kube-dns")],
        only_with: None,
    },
    ServiceSpec {
        namespace: "critical-app",
        name: "backend",
        cluster_ip: BACKEND.ip,
        ports: &[ServicePort { name: "http", port: BACKEND_PORT, protocol: "TCP" }],
        selector: &[("app", "backend")],
        only_with: None,
    },
    ServiceSpec {
        namespace: "critical-app",
        name: "refused",
        cluster_ip: BACKEND.ip,
        ports: &[ServicePort { name: "http", port: REFUSED_PORT, protocol: "TCP" }],
        selector: &[("app", "backend")],
        only_with: Some(Fault::Refused),
    },
];

/// The services that exist with these faults on.
#[must_use]
pub fn services(faults: &[Fault]) -> Vec<&'static ServiceSpec> {
    SERVICES.iter().filter(|s| s.only_with.is_none_or(|f| faults.contains(&f))).collect()
}

impl ServiceSpec {
    /// The pods the selector picks (the Service's endpoints).
    #[must_use]
    pub fn endpoints(&self) -> Vec<&'static PodSpec> {
        PODS.iter().filter(|p| self.selector.iter().all(|sel| p.labels.contains(sel))).collect()
    }

    /// Whether the `ClusterIP` is a virtual address kube-proxy rewrites.
    #[must_use]
    pub fn is_virtual(&self) -> bool {
        !PODS.iter().any(|p| p.ip == self.cluster_ip)
    }
}

/// The kube-proxy rules of one node (nftables, the shape of kube-proxy's
/// iptables mode): `prerouting` (pod traffic arriving on `cni0`, bridged
/// traffic included via `bridge-nf-call-iptables`) and `output` (the node's
/// own processes) jump to one chain per Service, which DNATs to an endpoint;
/// with several endpoints one is picked at random per connection, like
/// kube-proxy's `statistic mode random`. Conntrack rewrites the answers back.
#[must_use]
pub fn kube_proxy_nft(faults: &[Fault]) -> String {
    let mut svc_chains = String::new();
    let mut jumps = String::new();
    for s in services(faults).into_iter().filter(|s| s.is_virtual()) {
        let eps = s.endpoints();
        if eps.is_empty() {
            continue;
        }
        let chain = format!("svc_{}_{}", s.namespace.replace('-', "_"), s.name.replace('-', "_"));
        // One chain per endpoint (kube-proxy's KUBE-SEP-*), picked at random
        // per connection when there are several (KUBE-SVC-*).
        let mut pick = String::new();
        for (i, ep) in eps.iter().enumerate() {
            let _ = writeln!(svc_chains, "  chain {chain}_ep{i} {{");
            for port in s.ports {
                let proto = port.protocol.to_ascii_lowercase();
                let _ =
                    writeln!(svc_chains, "    meta l4proto {proto} th dport {p} dnat to {}:{p}", ep.ip, p = port.port);
            }
            svc_chains.push_str("  }\n");
        }
        if eps.len() == 1 {
            let _ = writeln!(pick, "    jump {chain}_ep0");
        } else {
            let arms: Vec<String> = (0..eps.len()).map(|i| format!("{i} : jump {chain}_ep{i}")).collect();
            let _ = writeln!(pick, "    numgen random mod {} vmap {{ {} }}", eps.len(), arms.join(", "));
        }
        let _ = write!(svc_chains, "  chain {chain} {{\n{pick}  }}\n");
        for port in s.ports {
            let proto = port.protocol.to_ascii_lowercase();
            let _ = writeln!(jumps, "    ip daddr {} {proto} dport {} jump {chain}", s.cluster_ip, port.port);
        }
    }
    format!(
        "table ip {KUBE_PROXY_TABLE} {{\n{svc_chains}  chain services {{\n{jumps}  }}\n  \
         chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    jump services\n  }}\n  \
         chain output {{\n    type nat hook output priority -100;\n    jump services\n  }}\n}}\n"
    )
}

/// Looks a node up by name (`node-a`).
#[must_use]
pub fn node(name: &str) -> Option<&'static NodeSpec> {
    NODES.iter().find(|n| n.name == name)
}

/// Looks a pod up by namespace and name.
#[must_use]
pub fn pod(namespace: &str, name: &str) -> Option<&'static PodSpec> {
    PODS.iter().find(|p| p.namespace == namespace && p.name == name)
}

/// The kube-dns `addn-hosts` file: one A record per service and per pod
/// (`10-244-1-20.critical-app.pod.cluster.local`, as `CoreDNS` serves them).
#[must_use]
pub fn dns_hosts(faults: &[Fault]) -> String {
    let mut out = String::new();
    for s in services(faults) {
        let _ = writeln!(out, "{}\t{}", s.cluster_ip, s.fqdn());
    }
    for p in &PODS {
        let dashed = p.ip.to_string().replace('.', "-");
        let _ = writeln!(out, "{}\t{dashed}.{}.pod.{CLUSTER_DOMAIN}", p.ip, p.namespace);
    }
    out
}

/// dnsmasq configuration of kube-dns.
#[must_use]
pub fn kube_dns_conf(hosts_file: &str, log_file: &str, pid_file: &str) -> String {
    // local=/cluster.local/ makes dnsmasq authoritative (NXDOMAIN, NODATA for
    // AAAA) for the cluster domain; everything else, `.localdomain` included,
    // is forwarded to the upstream. No cache, so every run of a test or demo
    // sees the same forwarded queries.
    format!(
        "no-resolv\nno-hosts\nkeep-in-foreground\nuser=root\nbind-interfaces\n\
         listen-address={ip}\nport=53\nlocal=/{CLUSTER_DOMAIN}/\naddn-hosts={hosts_file}\n\
         server={UPSTREAM_IP}\ncache-size=0\nno-negcache\nlog-queries\n\
         log-facility={log_file}\npid-file={pid_file}\n",
        ip = KUBE_DNS.ip,
    )
}

/// Name the upstream resolver answers when it is not blackholed.
pub const UPSTREAM_TEST_NAME: &str = "upstream.lab.test";

/// dnsmasq configuration of the upstream resolver: `NXDOMAIN` for
/// `*.localdomain`, an A record for [`UPSTREAM_TEST_NAME`], `REFUSED` else.
#[must_use]
pub fn upstream_conf(log_file: &str, pid_file: &str) -> String {
    format!(
        "no-resolv\nno-hosts\nkeep-in-foreground\nuser=root\nbind-interfaces\n\
         listen-address={UPSTREAM_IP}\nport=53\nlocal=/localdomain/\n\
         address=/{UPSTREAM_TEST_NAME}/{UPSTREAM_IP}\ncache-size=0\nlog-queries\n\
         log-facility={log_file}\npid-file={pid_file}\n"
    )
}

/// A fault the lab can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The upstream resolver drops every DNS query (nftables input drop).
    UpstreamBlackhole,
    /// The fabric drops VXLAN (UDP 4789) sent by node-b (a security group).
    FabricDropVxlan,
    /// The fabric drops packets whose outer source, or VXLAN inner source, is
    /// a pod address (the cloud's source/destination check).
    FabricDropPodCidr,
    /// node-b drops forwarded TCP to the backend pod's port 8080 (nftables
    /// forward chain: a `NETFILTER_DROP` kernel drop).
    NodeDrop,
    /// Adds service `critical-app/refused` → backend pod IP port 8081, where
    /// nothing listens (connects are refused with a RST).
    Refused,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 5] =
        [Fault::UpstreamBlackhole, Fault::FabricDropVxlan, Fault::FabricDropPodCidr, Fault::NodeDrop, Fault::Refused];

    /// The name used on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::UpstreamBlackhole => "upstream-blackhole",
            Fault::FabricDropVxlan => "fabric-drop-vxlan",
            Fault::FabricDropPodCidr => "fabric-drop-pod-cidr",
            Fault::NodeDrop => "node-drop",
            Fault::Refused => "refused",
        }
    }

    /// The nftables table implementing the fault: (netns, family, table name,
    /// full ruleset text for `nft -f`). `None` for faults that are not
    /// nftables rules.
    #[must_use]
    pub fn nft(self) -> Option<NftFault> {
        let table = format!("kt_{}", self.name().replace('-', "_"));
        let (netns, family, chain) = match self {
            Fault::UpstreamBlackhole => (
                UPSTREAM_NETNS,
                "inet",
                "  chain input {\n    type filter hook input priority 0;\n    \
                 udp dport 53 drop\n    tcp dport 53 drop\n  }\n"
                    .to_owned(),
            ),
            Fault::FabricDropVxlan => (
                FABRIC_NETNS,
                "bridge",
                format!(
                    "  chain c {{\n    type filter hook forward priority 0;\n    \
                     ip saddr {} udp dport {VXLAN_PORT} drop\n  }}\n",
                    NODES[1].underlay_ip
                ),
            ),
            Fault::FabricDropPodCidr => (
                FABRIC_NETNS,
                "bridge",
                // The inner IPv4 source of a VXLAN packet starts 62 bytes
                // (496 bits) after the outer IP header: outer IP 20 + UDP 8 +
                // VXLAN 8 + inner Ethernet 14 + 12. 0x0af4 is 10.244.
                format!(
                    "  chain c {{\n    type filter hook forward priority 0;\n    \
                     ip saddr {CLUSTER_CIDR} drop\n    \
                     udp dport {VXLAN_PORT} @nh,496,16 0x0af4 drop\n  }}\n"
                ),
            ),
            Fault::NodeDrop => (
                NODES[1].netns,
                "inet",
                format!(
                    "  chain forward {{\n    type filter hook forward priority 0;\n    \
                     ip daddr {} tcp dport {BACKEND_PORT} drop\n  }}\n",
                    BACKEND.ip
                ),
            ),
            Fault::Refused => return None,
        };
        let ruleset = format!("table {family} {table} {{\n{chain}}}\n");
        Some(NftFault { netns, family, table, ruleset })
    }
}

/// An nftables table implementing a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftFault {
    /// Namespace the table lives in.
    pub netns: &'static str,
    /// nftables family (`inet`, `bridge`).
    pub family: &'static str,
    /// Table name (`kt_fabric_drop_vxlan`).
    pub table: String,
    /// Ruleset for `nft -f`.
    pub ruleset: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lab fault {0:?} (known: upstream-blackhole, fabric-drop-vxlan, fabric-drop-pod-cidr, node-drop, refused)"
)]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL.into_iter().find(|f| f.name() == s.trim()).ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz() {
        let mut names = vec![FABRIC_BRIDGE, UPSTREAM_FABRIC_PORT, VXLAN_DEV, POD_BRIDGE, UNDERLAY_DEV];
        names.extend(NODES.iter().map(|n| n.fabric_port));
        names.extend(PODS.iter().map(|p| p.host_veth));
        for n in names {
            assert!(n.len() <= 15, "{n} is longer than 15 bytes");
        }
    }

    #[test]
    fn every_namespace_has_the_prefix() {
        for n in PODS.iter().map(PodSpec::netns).chain(NODES.iter().map(|n| n.netns.to_owned())) {
            assert!(n.starts_with(PREFIX), "{n}");
        }
        assert!(FABRIC_NETNS.starts_with(PREFIX) && UPSTREAM_NETNS.starts_with(PREFIX));
        assert_eq!(CLIENT.netns(), "kt-critical-app-client");
        assert_eq!(CLIENT.cgroup(), "/ktrace-lab/critical-app_client");
    }

    #[test]
    fn pods_live_in_their_node_cidr() {
        for p in &PODS {
            let n = p.node_spec().expect("node exists");
            assert_eq!(p.ip.octets()[..3], n.pod_cidr_base.octets()[..3], "{}", p.name);
        }
    }

    #[test]
    fn client_resolv_conf_has_the_incident_search_list() {
        let r = CLIENT.resolv_conf();
        assert!(r.contains("search critical-app.svc.cluster.local svc.cluster.local cluster.local localdomain\n"));
        assert!(r.contains("nameserver 10.96.0.10\n"), "pods ask the kube-dns ClusterIP: {r}");
        assert!(r.contains("options ndots:5 timeout:2 attempts:1\n"));
        assert_eq!(KUBE_DNS.resolv_conf(), "nameserver 192.168.77.53\n");
    }

    #[test]
    fn kube_proxy_dnats_the_kube_dns_cluster_ip_to_its_pod() {
        let dns = SERVICES.iter().find(|s| s.name == "kube-dns").expect("kube-dns service");
        assert!(dns.is_virtual());
        assert_eq!(dns.endpoints(), [&KUBE_DNS]);
        let backend = SERVICES.iter().find(|s| s.name == "backend").expect("backend service");
        assert!(!backend.is_virtual());
        let r = kube_proxy_nft(&[]);
        assert!(r.starts_with("table ip kt_kube_proxy {\n"), "{r}");
        assert!(r.contains("ip daddr 10.96.0.10 udp dport 53 jump svc_kube_system_kube_dns\n"), "{r}");
        assert!(r.contains("ip daddr 10.96.0.10 tcp dport 53 jump svc_kube_system_kube_dns\n"), "{r}");
        assert!(r.contains("meta l4proto udp th dport 53 dnat to 10.244.1.10:53\n"), "{r}");
        assert!(r.contains("type nat hook prerouting priority dstnat;") && r.contains("type nat hook output"));
        assert!(!r.contains("10.244.2.30"), "only virtual ClusterIPs are rewritten: {r}");
        assert_eq!(r.matches('{').count(), r.matches('}').count(), "{r}");
        assert!(dns_hosts(&[]).contains("10.96.0.10\tkube-dns.kube-system.svc.cluster.local\n"));
    }

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
        }
        assert!("nope".parse::<Fault>().is_err());
    }

    #[test]
    fn refused_service_only_with_its_fault() {
        assert_eq!(services(&[]).len(), 2);
        assert_eq!(services(&[Fault::Refused]).len(), 3);
        assert!(!dns_hosts(&[]).contains("refused."));
        let h = dns_hosts(&[Fault::Refused]);
        assert!(h.contains("10.244.2.30\trefused.critical-app.svc.cluster.local\n"));
        assert!(h.contains("10.244.2.30\tbackend.critical-app.svc.cluster.local\n"));
        assert!(h.contains("10.244.1.20\t10-244-1-20.critical-app.pod.cluster.local\n"));
    }

    #[test]
    fn nft_rulesets_target_the_right_namespace() {
        let v = Fault::FabricDropVxlan.nft().expect("nft fault");
        assert_eq!((v.netns, v.family, v.table.as_str()), ("kt-fabric", "bridge", "kt_fabric_drop_vxlan"));
        assert!(v.ruleset.contains("ip saddr 192.168.77.11 udp dport 4789 drop"));
        let d = Fault::NodeDrop.nft().expect("nft fault");
        assert_eq!(d.netns, "kt-node-b");
        assert!(d.ruleset.contains("ip daddr 10.244.2.30 tcp dport 8080 drop"));
        assert!(Fault::Refused.nft().is_none());
        for n in Fault::ALL.iter().filter_map(|f| f.nft()) {
            assert!(!n.ruleset.contains("{{") && !n.ruleset.contains("}}"), "{}", n.ruleset);
            assert_eq!(n.ruleset.matches('{').count(), n.ruleset.matches('}').count(), "{}", n.ruleset);
            assert!(n.ruleset.starts_with(&format!("table {} {} {{\n", n.family, n.table)));
        }
    }
}
