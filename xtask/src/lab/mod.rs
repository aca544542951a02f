//! The lab: a two-node mini-cluster in network namespaces.
//!
//! To the kernel it looks like a small Kubernetes cluster with flannel's
//! VXLAN backend: a fabric namespace with a bridge (the cloud network), two
//! node namespaces with an underlay veth, a VXLAN device and a pod bridge, and
//! one namespace plus one cgroup2 directory per pod. kube-dns runs dnsmasq,
//! the backend runs `python3 -m http.server`, and an upstream resolver host
//! on the fabric can be blackholed. Faults are nftables tables or DNS records
//! ([`Fault`]). Nothing in the lab is connected to the host's namespace, so
//! no lab packet can leave the machine.
//!
//! Needs root, iproute2, nftables, dnsmasq, python3 and procps (`sysctl`);
//! see [`missing_prerequisites`]. Diagram and addresses: `docs/lab.md`.
//!
//! ```no_run
//! use xtask::lab::{LabGuard, LabOptions};
//! let lab = LabGuard::up(&LabOptions::default())?;
//! let out = lab.pod_command("critical-app", "client", "getent")
//!     .args(["hosts", "backend.critical-app.svc.cluster.local"])
//!     .output()?;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod snapshot;
mod sys;
pub mod topology;

use std::{
    fmt::Write as _,
    fs, io,
    net::Ipv4Addr,
    ops::{Deref, DerefMut},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub use topology::{
    BACKEND, BACKEND_PORT, CLIENT, CLUSTER_DOMAIN, Fault, KUBE_DNS, KUBE_DNS_CLUSTER_IP, LOCK_PATH, NODES, NodeSpec,
    PODS, PREFIX, PodSpec, REFUSED_PORT, STATE_DIR, UPSTREAM_IP, UnknownFault,
};
use topology::{
    CGROUP_PARENT, CGROUP2_ROOT, FABRIC_BRIDGE, FABRIC_NETNS, OVERLAY_PREFIX_LEN, POD_BRIDGE, POD_MTU, POD_PREFIX_LEN,
    UNDERLAY_DEV, UNDERLAY_PREFIX_LEN, UPSTREAM_FABRIC_PORT, UPSTREAM_NETNS, VXLAN_DEV, VXLAN_ID, VXLAN_PORT,
};

/// How long a server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test may wait for another lab to be torn down.
const LOCK_TIMEOUT: Duration = Duration::from_mins(10);

/// How to bring the lab up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Faults to inject; the default is `[UpstreamBlackhole]`, as in the
    /// incident.
    pub faults: Vec<Fault>,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self { faults: vec![Fault::UpstreamBlackhole] }
    }
}

impl LabOptions {
    /// No fault at all (the upstream resolver answers).
    #[must_use]
    pub fn healthy() -> Self {
        Self { faults: Vec::new() }
    }

    /// These options plus `fault`.
    #[must_use]
    pub fn with(mut self, fault: Fault) -> Self {
        if !self.faults.contains(&fault) {
            self.faults.push(fault);
        }
        self
    }

    /// Without `fault`.
    #[must_use]
    pub fn without(mut self, fault: Fault) -> Self {
        self.faults.retain(|f| *f != fault);
        self
    }

    /// Parses `--fault NAME[,NAME]` (repeatable), `--no-fault NAME` and
    /// `--no-faults`, starting from the default.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (a.as_str(), None),
            };
            match flag {
                "--fault" | "--no-fault" => {
                    let v = match inline {
                        Some(v) => v,
                        None => it.next().cloned().with_context(|| format!("{flag} needs a fault name"))?,
                    };
                    for name in v.split(',').filter(|s| !s.trim().is_empty()) {
                        let f: Fault = name.parse()?;
                        o = if flag == "--fault" { o.with(f) } else { o.without(f) };
                    }
                }
                "--no-faults" => o.faults.clear(),
                other => bail!("unknown lab option {other:?}"),
            }
        }
        Ok(o)
    }
}

/// A running lab. Cheap to construct: all state lives in the kernel and in
/// [`STATE_DIR`]; dropping it does not tear anything down (see [`LabGuard`]).
#[derive(Clone, Debug)]
pub struct Lab {
    faults: Vec<Fault>,
}

/// Path of the metadata snapshot (`kubectl get pods,services,nodes -A -o json`
/// form) of a running lab.
#[must_use]
pub fn snapshot_path() -> PathBuf {
    Path::new(STATE_DIR).join("snapshot.json")
}

fn state(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(name)
}

/// Tools and privileges the lab needs that this machine lacks (empty when
/// the lab can run). Tests skip, or fail under `KTRACE_REQUIRE_BPF=1`.
#[must_use]
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_owned());
    }
    for tool in ["ip", "nft", "dnsmasq", "python3", "sysctl"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if !Path::new(CGROUP2_ROOT).join("cgroup.procs").exists() {
        missing.push(format!("cgroup2 mounted at {CGROUP2_ROOT}"));
    }
    // kube-proxy's DNAT of a pod's query to a resolver pod on the same
    // bridge needs bridged answers to pass conntrack (as on every node).
    if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        missing.push("the br_netfilter kernel module (`modprobe br_netfilter`)".to_owned());
    }
    missing
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

impl Lab {
    /// Builds the lab, after tearing down any previous one (also a crashed
    /// one). On failure, whatever was built is torn down again.
    ///
    /// Does not take the lab lock; tests should use [`LabGuard::up`].
    pub fn up(opts: &LabOptions) -> Result<Lab> {
        Self::down().context("cleaning up a previous lab")?;
        let mut faults = opts.faults.clone();
        faults.sort();
        faults.dedup();
        let lab = Lab { faults };
        match lab.build() {
            Ok(()) => Ok(lab),
            Err(e) => {
                if let Err(d) = Self::down() {
                    eprintln!("lab: cleanup after failed start also failed: {d:#}");
                }
                Err(e.context(format!("lab up failed (logs were in {STATE_DIR}/logs)")))
            }
        }
    }

    /// The lab that is currently up, from [`STATE_DIR`].
    pub fn attach() -> Result<Lab> {
        let text = fs::read_to_string(state("faults"))
            .with_context(|| format!("no lab is up ({} missing)", state("faults").display()))?;
        let faults = text.lines().filter(|l| !l.is_empty()).map(str::parse).collect::<Result<Vec<Fault>, _>>()?;
        Ok(Lab { faults })
    }

    fn build(&self) -> Result<()> {
        for d in ["", "logs", "www", "etc"] {
            fs::create_dir_all(state(d)).with_context(|| format!("cannot create {}", state(d).display()))?;
        }
        let mut all_netns = vec![FABRIC_NETNS.to_owned(), UPSTREAM_NETNS.to_owned()];
        all_netns.extend(NODES.iter().map(|n| n.netns.to_owned()));
        all_netns.extend(PODS.iter().map(PodSpec::netns));
        for n in &all_netns {
            sys::ip(None, &["netns", "add", n])?;
            // IPv6 off before any interface exists: no router solicitations,
            // MLD or DAD noise on the fabric for the drop tests to explain.
            sys::sysctl(n, &[("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")])?;
            sys::ip(Some(n), &["link", "set", "lo", "up"])?;
        }
        Self::build_fabric()?;
        for n in &NODES {
            build_node(n)?;
        }
        for p in &PODS {
            build_pod(p)?;
        }
        for n in &NODES {
            sys::nft_load(n.netns, &topology::kube_proxy_nft(&self.faults))
                .with_context(|| format!("kube-proxy rules in {}", n.name))?;
        }
        self.start_servers()?;
        for f in &self.faults {
            apply_fault(*f)?;
        }
        self.write_state()
    }

    fn build_fabric() -> Result<()> {
        let f = Some(FABRIC_NETNS);
        sys::ip(f, &["link", "add", FABRIC_BRIDGE, "type", "bridge"])?;
        sys::ip(f, &["link", "set", FABRIC_BRIDGE, "up"])?;
        let ports = NODES.iter().map(|n| (n.fabric_port, n.netns)).chain([(UPSTREAM_FABRIC_PORT, UPSTREAM_NETNS)]);
        for (port, peer_ns) in ports {
            sys::ip(f, &["link", "add", port, "type", "veth", "peer", "name", UNDERLAY_DEV, "netns", peer_ns])?;
            sys::ip(f, &["link", "set", port, "master", FABRIC_BRIDGE, "up"])?;
        }
        let u = Some(UPSTREAM_NETNS);
        sys::ip(u, &["addr", "add", &format!("{UPSTREAM_IP}/{UNDERLAY_PREFIX_LEN}"), "dev", UNDERLAY_DEV])?;
        sys::ip(u, &["link", "set", UNDERLAY_DEV, "up"])?;
        // Replies to kube-dns's forwarded queries: pod traffic to the
        // upstream is not masqueraded (so `fabric-drop-pod-cidr` hits it, as
        // a cloud's source/destination check would).
        for n in &NODES {
            sys::ip(u, &["route", "add", &n.pod_cidr(), "via", &n.underlay_ip.to_string()])?;
        }
        Ok(())
    }

    fn start_servers(&self) -> Result<()> {
        // Upstream resolver host (not a pod: no cgroup).
        let conf = state("etc/upstream-dnsmasq.conf");
        write(
            &conf,
            &topology::upstream_conf(
                &state("logs/upstream-queries.log").to_string_lossy(),
                &state("upstream-dnsmasq.pid").to_string_lossy(),
            ),
        )?;
        let mut c = sys::netns_command(UPSTREAM_NETNS, "dnsmasq");
        c.arg(format!("--conf-file={}", conf.display()));
        let pid = sys::spawn_logged(&mut c, &state("logs/upstream.log"))?;
        record_pid("upstream/dnsmasq", pid)?;
        sys::wait_listening(pid, UPSTREAM_IP, 53, false, READY_TIMEOUT)?;

        // kube-dns.
        write(&state("etc/kube-dns.hosts"), &topology::dns_hosts(&self.faults))?;
        let conf = state("etc/kube-dns-dnsmasq.conf");
        write(
            &conf,
            &topology::kube_dns_conf(
                &state("etc/kube-dns.hosts").to_string_lossy(),
                &state("logs/kube-dns-queries.log").to_string_lossy(),
                &state("kube-dns-dnsmasq.pid").to_string_lossy(),
            ),
        )?;
        let mut c = self.pod_command(KUBE_DNS.namespace, KUBE_DNS.name, "dnsmasq");
        c.arg(format!("--conf-file={}", conf.display()));
        let pid = sys::spawn_logged(&mut c, &state("logs/kube-dns.log"))?;
        record_pid("kube-system/kube-dns", pid)?;
        sys::wait_listening(pid, KUBE_DNS.ip, 53, false, READY_TIMEOUT)?;

        // Backend HTTP server.
        write(&state("www/index.html"), "hello from critical-app/backend\n")?;
        let mut c = self.pod_command(BACKEND.namespace, BACKEND.name, "python3");
        c.args(["-m", "http.server", &BACKEND_PORT.to_string(), "--bind", &BACKEND.ip.to_string()])
            .arg("--directory")
            .arg(state("www"));
        let pid = sys::spawn_logged(&mut c, &state("logs/backend.log"))?;
        record_pid("critical-app/backend", pid)?;
        sys::wait_listening(pid, BACKEND.ip, BACKEND_PORT, true, READY_TIMEOUT)
    }

    fn write_state(&self) -> Result<()> {
        let mut faults = String::new();
        for f in &self.faults {
            let _ = writeln!(faults, "{f}");
        }
        write(&state("faults"), &faults)?;
        let snap = snapshot::snapshot(&self.faults, &LiveIds);
        let text = serde_json::to_string_pretty(&snap).context("serialising the snapshot")?;
        write(&snapshot_path(), &text)
    }

    /// Tears the lab down: kills every process in a lab namespace or lab
    /// cgroup, deletes the `kt-` namespaces (and with them every veth,
    /// bridge and VXLAN device), `/etc/netns/kt-*`, the cgroups and
    /// [`STATE_DIR`]. Idempotent; works after a crash; every wait is bounded.
    /// Fails only if something could not be removed.
    pub fn down() -> Result<()> {
        let cg_parent = Path::new(CGROUP2_ROOT).join(CGROUP_PARENT);
        let netns = sys::lab_netns();
        let mut pids = sys::pids_in_netns(&netns);
        pids.extend(sys::pids_in_cgroup_tree(&cg_parent));
        pids.sort_unstable();
        pids.dedup();
        sys::kill_and_wait(&pids, Duration::from_secs(1));
        sys::reap_children();

        let mut problems = Vec::new();
        for n in &netns {
            if let Err(e) = sys::ip(None, &["netns", "del", n]) {
                problems.push(format!("{e:#}"));
            }
        }
        if let Ok(d) = fs::read_dir("/etc/netns") {
            for e in d.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().starts_with(PREFIX)
                    && let Err(err) = fs::remove_dir_all(e.path())
                    && err.kind() != io::ErrorKind::NotFound
                {
                    problems.push(format!("cannot remove {}: {err}", e.path().display()));
                }
            }
        }
        if let Err(e) = sys::remove_cgroup_tree(&cg_parent) {
            problems.push(format!("{e:#}"));
        }
        if let Err(e) = fs::remove_dir_all(STATE_DIR)
            && e.kind() != io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {STATE_DIR}: {e}"));
        }
        let left = sys::lab_netns();
        if !left.is_empty() {
            problems.push(format!("namespaces left: {}", left.join(" ")));
        }
        if problems.is_empty() { Ok(()) } else { bail!("lab down: {}", problems.join("; ")) }
    }

    /// A human-readable summary: namespaces, processes, faults, addresses.
    #[must_use]
    pub fn status() -> String {
        let mut s = String::new();
        let netns = sys::lab_netns();
        if netns.is_empty() && !Path::new(STATE_DIR).exists() {
            return "lab is down\n".to_owned();
        }
        let _ = writeln!(s, "namespaces: {}", if netns.is_empty() { "(none)".to_owned() } else { netns.join(" ") });
        match Lab::attach() {
            Ok(lab) => {
                let f: Vec<&str> = lab.faults.iter().map(|f| f.name()).collect();
                let _ = writeln!(s, "faults: {}", if f.is_empty() { "(none)".to_owned() } else { f.join(", ") });
            }
            Err(e) => {
                let _ = writeln!(s, "state: {e:#}");
            }
        }
        for line in fs::read_to_string(state("pids")).unwrap_or_default().lines() {
            if let Some((name, pid)) = line.split_once(' ') {
                let up = pid.parse::<i32>().is_ok_and(sys::alive);
                let _ = writeln!(s, "process {name}: pid {pid} {}", if up { "running" } else { "NOT RUNNING" });
            }
        }
        for n in &NODES {
            let _ = writeln!(
                s,
                "node {} (netns {}): underlay {} overlay {} pods {}",
                n.name,
                n.netns,
                n.underlay_ip,
                n.overlay_ip,
                n.pod_cidr()
            );
        }
        for p in &PODS {
            let _ = writeln!(
                s,
                "pod {}/{} on {}: {} (netns {}, cgroup {})",
                p.namespace,
                p.name,
                p.node,
                p.ip,
                p.netns(),
                p.cgroup()
            );
        }
        let _ = writeln!(
            s,
            "service kube-system/kube-dns: {KUBE_DNS_CLUSTER_IP}:53 → {}:53 (kube-proxy DNAT, table ip {} in each node)",
            KUBE_DNS.ip,
            topology::KUBE_PROXY_TABLE
        );
        let _ = writeln!(s, "upstream resolver: {UPSTREAM_IP} (netns {UPSTREAM_NETNS})");
        let _ = writeln!(s, "snapshot: {}", snapshot_path().display());
        s
    }

    /// Faults currently on.
    #[must_use]
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Whether `fault` is on.
    #[must_use]
    pub fn has_fault(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// Path of the metadata snapshot.
    #[must_use]
    pub fn snapshot_path(&self) -> PathBuf {
        snapshot_path()
    }

    /// The lab's state directory (snapshot, pids, configs, `logs/`).
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_DIR)
    }

    /// Every pod.
    #[must_use]
    pub fn pods(&self) -> &'static [PodSpec] {
        &PODS
    }

    /// A pod by namespace and name.
    #[must_use]
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&'static PodSpec> {
        topology::pod(namespace, name)
    }

    /// Every node.
    #[must_use]
    pub fn nodes(&self) -> &'static [NodeSpec] {
        &NODES
    }

    /// A node by name (`node-a`).
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&'static NodeSpec> {
        topology::node(name)
    }

    /// The kube-dns pod's address (where kube-proxy sends the Service's traffic).
    #[must_use]
    pub fn kube_dns_ip(&self) -> Ipv4Addr {
        KUBE_DNS.ip
    }

    /// The kube-dns Service `ClusterIP`, the `nameserver` of every
    /// `ClusterFirst` pod.
    #[must_use]
    pub fn kube_dns_service_ip(&self) -> Ipv4Addr {
        KUBE_DNS_CLUSTER_IP
    }

    /// The backend pod's address.
    #[must_use]
    pub fn backend_ip(&self) -> Ipv4Addr {
        BACKEND.ip
    }

    /// A command running `program` inside a pod: in the pod's network
    /// namespace (with its `/etc/resolv.conf` and `/etc/hosts`, through
    /// `ip netns exec`) and in the pod's cgroup, entered before exec. Add
    /// arguments with `.args(..)`. For an unknown pod, spawning fails.
    #[must_use]
    pub fn pod_command(&self, namespace: &str, pod: &str, program: &str) -> Command {
        let mut c = sys::netns_command(&topology::pod_netns(namespace, pod), program);
        sys::enter_cgroup_before_exec(&mut c, &topology::pod_cgroup_dir(namespace, pod));
        c
    }

    /// A command running `program` in a node's network namespace (e.g. a
    /// per-node ktrace recorder). For an unknown node, spawning fails.
    #[must_use]
    pub fn node_command(&self, node: &str, program: &str) -> Command {
        sys::netns_command(&format!("{PREFIX}{node}"), program)
    }

    /// Turns a fault on or off on the running lab (nftables table, or the
    /// `refused` DNS record and service), and rewrites the snapshot.
    pub fn set_fault(&mut self, fault: Fault, on: bool) -> Result<()> {
        if on == self.has_fault(fault) {
            return Ok(());
        }
        if on {
            apply_fault(fault)?;
            self.faults.push(fault);
            self.faults.sort();
        } else {
            if let Some(n) = fault.nft() {
                sys::ip(None, &["netns", "exec", n.netns, "nft", "delete", "table", n.family, &n.table])?;
            }
            self.faults.retain(|f| *f != fault);
        }
        if fault == Fault::Refused {
            write(&state("etc/kube-dns.hosts"), &topology::dns_hosts(&self.faults))?;
            // dnsmasq re-reads addn-hosts files on SIGHUP.
            let pid = fs::read_to_string(state("kube-dns-dnsmasq.pid")).context("kube-dns pid file")?;
            let pid: i32 = pid.trim().parse().context("kube-dns pid file")?;
            if pid > 1 {
                let hup = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP);
                hup.map_err(io::Error::from).with_context(|| format!("cannot signal kube-dns (pid {pid})"))?;
            }
        }
        self.write_state()
    }
}

fn build_node(n: &NodeSpec) -> Result<()> {
    let ns = Some(n.netns);
    let peer = NODES.iter().find(|p| p.name != n.name).context("the lab has two nodes")?;
    sys::sysctl(
        n.netns,
        &[("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")],
    )?;
    // What kube-proxy requires of a node: bridged pod-to-pod packets go
    // through netfilter, so a resolver pod's answer to a client on the same
    // bridge is un-DNATed back to the Service address.
    sys::sysctl(n.netns, &[("net.bridge.bridge-nf-call-iptables", "1")])?;
    sys::ip(ns, &["addr", "add", &format!("{}/{UNDERLAY_PREFIX_LEN}", n.underlay_ip), "dev", UNDERLAY_DEV])?;
    sys::ip(ns, &["link", "set", UNDERLAY_DEV, "up"])?;
    let (id, port, local, remote) =
        (VXLAN_ID.to_string(), VXLAN_PORT.to_string(), n.underlay_ip.to_string(), peer.underlay_ip.to_string());
    sys::ip(
        ns,
        &[
            "link",
            "add",
            VXLAN_DEV,
            "type",
            "vxlan",
            "id",
            &id,
            "dstport",
            &port,
            "local",
            &local,
            "remote",
            &remote,
            "dev",
            UNDERLAY_DEV,
        ],
    )?;
    // Like flannel: a fixed MAC per node's VXLAN device and a permanent
    // neighbour entry for the peer, so no ARP crosses the overlay. (With ARP,
    // a fabric that drops VXLAN would only ever drop ARP requests, and the
    // node would fail neighbour resolution instead of sending pod packets.)
    sys::ip(ns, &["link", "set", VXLAN_DEV, "address", &vxlan_mac(n.overlay_ip)])?;
    sys::ip(ns, &["addr", "add", &format!("{}/{OVERLAY_PREFIX_LEN}", n.overlay_ip), "dev", VXLAN_DEV])?;
    sys::ip(ns, &["link", "set", VXLAN_DEV, "up"])?;
    sys::ip(
        ns,
        &[
            "neigh",
            "replace",
            &peer.overlay_ip.to_string(),
            "lladdr",
            &vxlan_mac(peer.overlay_ip),
            "dev",
            VXLAN_DEV,
            "nud",
            "permanent",
        ],
    )?;
    sys::ip(ns, &["link", "add", POD_BRIDGE, "type", "bridge"])?;
    sys::ip(ns, &["addr", "add", &format!("{}/{POD_PREFIX_LEN}", n.bridge_ip), "dev", POD_BRIDGE])?;
    sys::ip(ns, &["link", "set", POD_BRIDGE, "up"])?;
    sys::ip(ns, &["route", "add", &peer.pod_cidr(), "via", &peer.overlay_ip.to_string(), "dev", VXLAN_DEV])?;
    Ok(())
}

/// The VXLAN device MAC of a node: `0a:58:` + its overlay address (flannel's scheme).
fn vxlan_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn build_pod(p: &PodSpec) -> Result<()> {
    let node = p.node_spec().with_context(|| format!("pod {} has no node", p.name))?;
    let netns = p.netns();
    let mtu = POD_MTU.to_string();
    let ns = Some(node.netns);
    sys::ip(
        ns,
        &[
            "link",
            "add",
            p.host_veth,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            &netns,
        ],
    )?;
    sys::ip(ns, &["link", "set", p.host_veth, "master", POD_BRIDGE, "up"])?;
    let pns = Some(netns.as_str());
    sys::ip(pns, &["addr", "add", &format!("{}/{POD_PREFIX_LEN}", p.ip), "dev", "eth0"])?;
    sys::ip(pns, &["link", "set", "eth0", "up"])?;
    sys::ip(pns, &["route", "add", "default", "via", &node.bridge_ip.to_string()])?;
    let etc = Path::new("/etc/netns").join(&netns);
    fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
    write(&etc.join("resolv.conf"), &p.resolv_conf())?;
    write(&etc.join("hosts"), &p.hosts())?;
    let cg = p.cgroup_dir();
    fs::create_dir_all(&cg).with_context(|| format!("cannot create cgroup {}", cg.display()))
}

fn apply_fault(f: Fault) -> Result<()> {
    if let Some(n) = f.nft() {
        sys::nft_load(n.netns, &n.ruleset).with_context(|| format!("fault {f}"))?;
    }
    // `refused` is a DNS record and a service, written with the state.
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn record_pid(name: &str, pid: u32) -> Result<()> {
    use std::io::Write as _;
    let path = state("pids");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{name} {pid}").with_context(|| format!("cannot write {}", path.display()))
}

/// Kernel ids from the live system for the snapshot's annotations.
struct LiveIds;

impl snapshot::KernelIds for LiveIds {
    fn netns_ino(&self, netns: &str) -> Option<u64> {
        fs::metadata(Path::new("/run/netns").join(netns)).ok().map(|m| m.ino())
    }
    fn cgroup_id(&self, cgroup: &str) -> Option<u64> {
        let rel = cgroup.trim_start_matches('/');
        fs::metadata(Path::new(CGROUP2_ROOT).join(rel)).ok().map(|m| m.ino())
    }
}

/// An exclusive lock on [`LOCK_PATH`] (flock), so only one lab exists at a
/// time across threads and processes. Released on drop.
#[derive(Debug)]
pub struct LabLock {
    _file: fs::File,
}

impl LabLock {
    /// Waits (bounded, 10 min) for the lock.
    pub fn acquire() -> Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .with_context(|| format!("cannot open {LOCK_PATH}"))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(err)) => return Err(err).with_context(|| format!("flock {LOCK_PATH}")),
            }
            if Instant::now() >= deadline {
                bail!("another lab held {LOCK_PATH} for {LOCK_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A lab that holds [`LabLock`] and is torn down when dropped (also when a
/// test panics). Derefs to [`Lab`].
#[derive(Debug)]
pub struct LabGuard {
    lab: Lab,
    _lock: LabLock,
}

impl LabGuard {
    /// Takes the lab lock, then [`Lab::up`].
    pub fn up(opts: &LabOptions) -> Result<Self> {
        let lock = LabLock::acquire()?;
        let lab = Lab::up(opts)?;
        Ok(Self { lab, _lock: lock })
    }
}

impl Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down() {
            eprintln!("lab: teardown failed: {e:#}");
        }
    }
}

const USAGE: &str = "usage: lab up [--fault NAME]... [--no-fault NAME]... [--no-faults]
       lab down | status | snapshot
       lab exec NAMESPACE/POD -- PROGRAM [ARGS]...
       lab node-exec NODE -- PROGRAM [ARGS]...
faults: upstream-blackhole (default on), fabric-drop-vxlan, fabric-drop-pod-cidr, node-drop, refused";

/// `cargo xtask lab …`: `args` are the words after `lab`.
pub fn lab_main(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "up" => {
            let opts = LabOptions::from_args(rest).with_context(|| USAGE.to_owned())?;
            let missing = missing_prerequisites();
            if !missing.is_empty() {
                bail!("the lab needs: {}", missing.join(", "));
            }
            let _lock = LabLock::acquire()?;
            let t = Instant::now();
            Lab::up(&opts)?;
            println!("lab up in {:.1} s\n{}", t.elapsed().as_secs_f64(), Lab::status());
            Ok(())
        }
        "down" => {
            let _lock = LabLock::acquire()?;
            Lab::down()?;
            println!("lab down");
            Ok(())
        }
        "status" => {
            print!("{}", Lab::status());
            Ok(())
        }
        "snapshot" => {
            println!("{}", snapshot_path().display());
            Ok(())
        }
        "exec" | "node-exec" => {
            let (target, tail) = rest.split_first().with_context(|| USAGE.to_owned())?;
            let tail = tail.strip_prefix(&["--".to_owned()]).unwrap_or(tail);
            let (program, pargs) = tail.split_first().with_context(|| USAGE.to_owned())?;
            let lab = Lab::attach()?;
            let mut c = if cmd == "exec" {
                let (ns, pod) = target.split_once('/').with_context(|| format!("{target:?} is not NAMESPACE/POD"))?;
                lab.pod(ns, pod).with_context(|| format!("no pod {target} in the lab"))?;
                lab.pod_command(ns, pod, program)
            } else {
                lab.node(target).with_context(|| format!("no node {target} in the lab"))?;
                lab.node_command(target, program)
            };
            let st = c.args(pargs).status().with_context(|| format!("cannot run {program}"))?;
            if st.success() {
                Ok(())
            } else {
                // Mirror the program's exit status, as `kubectl exec` does, so
                // scripts can test it without an error report on top.
                use std::os::unix::process::ExitStatusExt as _;
                std::process::exit(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            }
        }
        _ => bail!("{USAGE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_faults() {
        assert_eq!(LabOptions::from_args(&[]).ok(), Some(LabOptions::default()));
        let o = LabOptions::from_args(&args("--fault node-drop --fault=refused,fabric-drop-vxlan")).ok();
        assert_eq!(
            o.map(|o| o.faults),
            Some(vec![Fault::UpstreamBlackhole, Fault::NodeDrop, Fault::Refused, Fault::FabricDropVxlan])
        );
        let o = LabOptions::from_args(&args("--no-fault upstream-blackhole")).ok();
        assert_eq!(o, Some(LabOptions::healthy()));
        let o = LabOptions::from_args(&args("--no-faults --fault node-drop")).ok();
        assert_eq!(o.map(|o| o.faults), Some(vec![Fault::NodeDrop]));
        assert!(LabOptions::from_args(&args("--fault bogus")).is_err());
        assert!(LabOptions::from_args(&args("--fault")).is_err());
        assert!(LabOptions::from_args(&args("--what")).is_err());
    }

    #[test]
    fn pod_command_goes_through_ip_netns_exec() {
        let lab = Lab { faults: Vec::new() };
        let c = lab.pod_command("critical-app", "client", "getent");
        assert_eq!(sys::cmd_line(&c), "ip netns exec kt-critical-app-client getent");
        let c = lab.node_command("node-b", "ktrace");
        assert_eq!(sys::cmd_line(&c), "ip netns exec kt-node-b ktrace");
    }

    #[test]
    fn lab_main_rejects_bad_usage() {
        assert!(lab_main(&[]).is_err());
        assert!(lab_main(&args("frobnicate")).is_err());
    }
}
