//! From syscall events to ktrace's model: the process, fd and container
//! tables sysdig keeps, and what ktrace derives from them (DNS messages as
//! synthesised packets, resolv.conf evidence, connection failures, a pod
//! snapshot).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    ScapStats,
    blocks::{FdEntry, FdEntryKind, L4, ProcEntry},
    events::{Params, ev},
    synth::{self, TCP_PSH_ACK, TCP_SYN},
};
use crate::{
    capture::{Item, MetaBlock},
    event::{ConnKind, ConnRecord, Endpoint, Hook, PacketRecord, Process, Record, ResolvConfEvidence, tcp_state},
};

/// Threads tracked at once: bounds memory on hostile input.
const MAX_THREADS: usize = 1 << 18;
/// Open fds tracked at once (all processes).
const MAX_FDS: usize = 1 << 18;
/// Enter events waiting for their exit.
const MAX_PENDING: usize = 1 << 16;
/// Synthesised TCP streams (sequence numbers) tracked at once.
const MAX_STREAMS: usize = 1 << 16;
/// Containers tracked.
const MAX_CONTAINERS: usize = 1 << 14;
/// Bytes of one resolv.conf kept.
const MAX_RESOLV: usize = 64 * 1024;
/// fds copied from parent to child on fork (more is not a resolver).
const MAX_FORK_FDS: usize = 4096;
/// The DNS port.
const DNS_PORT: u16 = 53;
const EINPROGRESS: i64 = 115;

/// Name shown for a thread the capture says nothing about (as sysdig does).
const UNKNOWN_COMM: &str = "<NA>";

/// A source and destination endpoint, in the direction the data flows.
#[derive(Clone, Copy, Debug)]
struct Tuple {
    src: Endpoint,
    dst: Endpoint,
}

#[derive(Debug)]
struct Thread {
    pid: u64,
    comm: Arc<str>,
    container: Option<Arc<str>>,
}

#[derive(Debug)]
struct ResolvBuf {
    text: Vec<u8>,
    truncated: bool,
    done: bool,
}

#[derive(Debug)]
enum Fd {
    Sock { l4: L4, local: Option<Endpoint>, remote: Option<Endpoint> },
    File { path: Arc<str>, resolv: Option<ResolvBuf> },
    Other,
}

/// What an enter event told us, kept for its exit event.
#[derive(Debug, Default)]
struct Pending {
    etype: u16,
    /// When the enter event happened (connect: when the SYN went out).
    ts: u64,
    fd: Option<i64>,
    tuple: Option<Tuple>,
    addr: Option<Endpoint>,
    path: Option<Vec<u8>>,
    domain: Option<i64>,
    sock_type: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PodKey {
    namespace: String,
    name: String,
}

#[derive(Debug, Default)]
struct Container {
    name: String,
    pod: Option<PodKey>,
    pod_uid: Option<String>,
    cname: Option<String>,
    ip: Option<IpAddr>,
    /// An address its sockets were seen using (stands in for a wildcard-bound
    /// socket's own address, which the syscall does not tell).
    seen_ip: Option<IpAddr>,
}

/// A pod being assembled for the snapshot: uid, IPs, container statuses.
type PodAcc<'a> = (Option<&'a str>, Vec<IpAddr>, Vec<Value>);

/// The event-to-model state machine of one scap file.
pub(super) struct Decoder {
    node: Option<Arc<str>>,
    threads: HashMap<u64, Thread>,
    fds: HashMap<u64, HashMap<i64, Fd>>,
    n_fds: usize,
    pending: HashMap<u64, Pending>,
    containers: HashMap<Arc<str>, Container>,
    pods_dirty: bool,
    tcp_seq: HashMap<(bool, Endpoint, Endpoint), u32>,
    ip_id: u16,
    /// Synthetic socket identities for [`ConnRecord::sock`].
    sock_seq: u64,
    pub(super) stats: ScapStats,
    pub(super) out: VecDeque<Item>,
}

fn tuple(b: Option<&[u8]>) -> Option<Tuple> {
    let b = b?;
    let (&fam, rest) = b.split_first()?;
    match fam {
        2 if rest.len() >= 12 => Some(Tuple {
            src: Endpoint { ip: v4(rest.get(0..4)?)?, port: port(rest, 4)? },
            dst: Endpoint { ip: v4(rest.get(6..10)?)?, port: port(rest, 10)? },
        }),
        10 if rest.len() >= 36 => Some(Tuple {
            src: Endpoint { ip: v6(rest.get(0..16)?)?, port: port(rest, 16)? },
            dst: Endpoint { ip: v6(rest.get(18..34)?)?, port: port(rest, 34)? },
        }),
        _ => None,
    }
}

fn sockaddr(b: Option<&[u8]>) -> Option<Endpoint> {
    let b = b?;
    let (&fam, rest) = b.split_first()?;
    match fam {
        2 => Some(Endpoint { ip: v4(rest.get(0..4)?)?, port: port(rest, 4)? }),
        10 => Some(Endpoint { ip: v6(rest.get(0..16)?)?, port: port(rest, 16)? }),
        _ => None,
    }
}

fn v4(b: &[u8]) -> Option<IpAddr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(a)))
}

fn v6(b: &[u8]) -> Option<IpAddr> {
    let a: [u8; 16] = b.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(a)))
}

/// Ports in scap parameters are in host (little-endian) order.
fn port(b: &[u8], at: usize) -> Option<u16> {
    super::events::le16(b, at)
}

fn unspecified(e: &Endpoint) -> bool {
    e.ip.is_unspecified() && e.port == 0
}

/// The container id in a `subsys=path` cgroup list: the first 64-hex-digit
/// path component run (docker, containerd, cri-o all use one), shortened
/// to the 12 characters sysdig and `docker ps` show.
pub(super) fn container_id(cgroups: &[u8]) -> Option<String> {
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
/// Kubernetes containers.
pub(super) fn k8s_name(name: &str) -> Option<(String, PodKeyPub, Option<String>)> {
    let name = name.trim_start_matches('/');
    let mut it = name.split('_');
    if it.next()? != "k8s" {
        return None;
    }
    let container = it.next()?.to_owned();
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
pub(super) struct PodKeyPub {
    pub(super) namespace: String,
    pub(super) name: String,
}

/// A stable, non-zero 64-bit id standing in for a cgroup id (FNV-1a, top bit
/// set so it never collides with a real cgroup inode number).
pub(super) fn synthetic_cgroup_id(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

fn basename(exe: &[u8]) -> &[u8] {
    let b = exe.rsplit(|&c| c == b'/').next().unwrap_or(exe);
    // Kernel comm is at most 15 bytes.
    b.get(..15).unwrap_or(b)
}

fn comm_str(b: &[u8]) -> Arc<str> {
    let b = b.split(|&c| c == 0).next().unwrap_or(b);
    if b.is_empty() { UNKNOWN_COMM.into() } else { String::from_utf8_lossy(b).into() }
}

fn l4_of_type(t: i64) -> L4 {
    // SOCK_STREAM = 1, SOCK_DGRAM = 2; flags (NONBLOCK, CLOEXEC) above.
    match t & 0xf {
        1 => L4::Tcp,
        2 => L4::Udp,
        _ => L4::Other,
    }
}

fn fail_kind(errno: i64) -> Option<&'static str> {
    match errno {
        111 => Some("refused"),
        110 => Some("timeout"),
        101 | 113 => Some("unreachable"),
        _ => None,
    }
}

impl Decoder {
    pub(super) fn new() -> Self {
        Self {
            node: None,
            threads: HashMap::new(),
            fds: HashMap::new(),
            n_fds: 0,
            pending: HashMap::new(),
            containers: HashMap::new(),
            pods_dirty: false,
            tcp_seq: HashMap::new(),
            ip_id: 0,
            sock_seq: 0,
            stats: ScapStats::default(),
            out: VecDeque::new(),
        }
    }

    /// The machine-info block's hostname names the node.
    pub(super) fn set_node(&mut self, host: &str) {
        if !host.is_empty() {
            self.node = Some(host.into());
        }
    }

    // ---- tables -------------------------------------------------------

    fn set_thread(&mut self, tid: u64, pid: u64, comm: Arc<str>, container: Option<Arc<str>>) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pid = pid;
            t.comm = comm;
            if container.is_some() {
                t.container = container;
            }
            return;
        }
        if self.threads.len() >= MAX_THREADS {
            self.stats.table_full += 1;
            return;
        }
        self.threads.insert(tid, Thread { pid, comm, container });
    }

    fn pid_of(&self, tid: u64) -> u64 {
        self.threads.get(&tid).map_or(tid, |t| t.pid)
    }

    fn container_of(&mut self, id: &str) -> Option<Arc<str>> {
        if let Some((k, _)) = self.containers.get_key_value(id) {
            return Some(Arc::clone(k));
        }
        if self.containers.len() >= MAX_CONTAINERS {
            self.stats.table_full += 1;
            return None;
        }
        let k: Arc<str> = id.into();
        self.containers.insert(Arc::clone(&k), Container::default());
        self.stats.containers += 1;
        Some(k)
    }

    fn fd_get(&self, pid: u64, fd: i64) -> Option<&Fd> {
        self.fds.get(&pid)?.get(&fd)
    }

    fn fd_set(&mut self, pid: u64, fd: i64, f: Fd) {
        let table = self.fds.entry(pid).or_default();
        if !table.contains_key(&fd) {
            if self.n_fds >= MAX_FDS {
                self.stats.table_full += 1;
                return;
            }
            self.n_fds += 1;
        }
        table.insert(fd, f);
    }

    fn fd_remove(&mut self, pid: u64, fd: i64) -> Option<Fd> {
        let table = self.fds.get_mut(&pid)?;
        let f = table.remove(&fd)?;
        self.n_fds = self.n_fds.saturating_sub(1);
        if table.is_empty() {
            self.fds.remove(&pid);
        }
        Some(f)
    }

    pub(super) fn proc_entry(&mut self, e: &ProcEntry) {
        self.stats.threads += 1;
        let comm = if e.comm.is_empty() { comm_str(basename(&e.exe)) } else { comm_str(&e.comm) };
        let container = container_id(&e.cgroups).and_then(|id| self.container_of(&id));
        self.set_thread(e.tid, e.pid, comm, container);
    }

    pub(super) fn fd_entry(&mut self, tid: u64, e: FdEntry) {
        self.stats.fds += 1;
        let pid = self.pid_of(tid);
        let f = match e.kind {
            FdEntryKind::Inet { l4, local, remote } => Fd::Sock { l4, local: Some(local), remote: Some(remote) },
            FdEntryKind::Listen { l4, local } => Fd::Sock { l4, local: Some(local), remote: None },
            FdEntryKind::File(path) => Fd::File { path: String::from_utf8_lossy(&path).into(), resolv: None },
            FdEntryKind::Other => Fd::Other,
        };
        self.fd_set(pid, e.fd, f);
    }

    // ---- output -------------------------------------------------------

    fn push_record(&mut self, r: Record) {
        if self.pods_dirty {
            self.pods_dirty = false;
            let snap = self.snapshot();
            self.out.push_back(Item::Meta(MetaBlock::KubeSnapshot(snap)));
            self.stats.snapshots += 1;
        }
        self.out.push_back(Item::Record(r));
    }

    /// The cgroup id records of `container` carry: one per pod when the pod
    /// is known (so all its containers attribute to it), else per container.
    fn cgroup_id(&self, container: Option<&Arc<str>>) -> u64 {
        let Some(c) = container else { return 0 };
        match self.containers.get(c).and_then(|x| x.pod.as_ref()) {
            Some(p) => synthetic_cgroup_id(&format!("pod:{}/{}", p.namespace, p.name)),
            None => synthetic_cgroup_id(&format!("container:{c}")),
        }
    }

    /// A Kubernetes `List` of the pods seen in container metadata, each
    /// annotated with the synthetic cgroup id its records carry.
    fn snapshot(&self) -> String {
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

    /// Emits what is left (a snapshot nobody asked for yet).
    pub(super) fn finish(&mut self) {
        if self.pods_dirty {
            self.pods_dirty = false;
            let snap = self.snapshot();
            self.out.push_back(Item::Meta(MetaBlock::KubeSnapshot(snap)));
            self.stats.snapshots += 1;
        }
    }

    // ---- events -------------------------------------------------------

    /// Handles one event whose type [`super::events::max_params`] knows.
    pub(super) fn event(&mut self, ts: u64, tid: u64, etype: u16, p: &Params<'_>) {
        #[allow(clippy::wildcard_imports, reason = "the event table's names")]
        use ev::*;
        match etype {
            OPEN_E | OPENAT_E => {
                let name = if etype == OPEN_E { p.str(0) } else { p.str(1) };
                self.pend(tid, Pending { etype, path: name.map(<[u8]>::to_vec), ..Pending::default() });
            }
            OPEN_X | OPENAT_X | OPENAT_2_X | OPENAT2_X => {
                let pend = self.take_pending(tid, etype);
                let name = match etype {
                    OPEN_X => p.str(1),
                    OPENAT_2_X | OPENAT2_X => p.str(2),
                    _ => None,
                };
                let name = name.map(<[u8]>::to_vec).or(pend.and_then(|x| x.path));
                if let (Some(fd), Some(name)) = (p.int(0).filter(|&f| f >= 0), name) {
                    let resolv = name.ends_with(b"/resolv.conf").then(|| ResolvBuf {
                        text: Vec::new(),
                        truncated: false,
                        done: false,
                    });
                    let path: Arc<str> = String::from_utf8_lossy(&name).into();
                    let pid = self.pid_of(tid);
                    self.fd_set(pid, fd, Fd::File { path, resolv });
                }
            }
            CLOSE_E => self.pend(tid, Pending { etype, fd: p.int(0), ..Pending::default() }),
            CLOSE_X => {
                let pend = self.take_pending(tid, etype);
                let fd = p.int(1).or(pend.and_then(|x| x.fd));
                if let (Some(fd), Some(res)) = (fd, p.int(0))
                    && res >= 0
                {
                    let pid = self.pid_of(tid);
                    self.flush_resolv(ts, pid, fd);
                    if let Some(Fd::Sock { l4: L4::Tcp, local: Some(l), remote: Some(r) }) = self.fd_remove(pid, fd) {
                        self.tcp_seq.remove(&(true, l, r));
                        self.tcp_seq.remove(&(false, r, l));
                    }
                }
            }
            READ_E | WRITE_E | SEND_E | RECV_E | RECVFROM_E | RECVMSG_E | READV_E | WRITEV_E | BIND_E => {
                self.pend(tid, Pending { etype, fd: p.int(0), ..Pending::default() });
            }
            SENDTO_E | SENDMSG_E => {
                self.pend(tid, Pending { etype, fd: p.int(0), tuple: tuple(p.get(2)), ..Pending::default() });
            }
            CONNECT_E => {
                self.pend(tid, Pending { etype, ts, fd: p.int(0), addr: sockaddr(p.get(1)), ..Pending::default() });
            }
            SOCKET_E => {
                self.pend(tid, Pending { etype, domain: p.int(0), sock_type: p.int(1), ..Pending::default() });
            }
            SOCKET_X => {
                let pend = self.take_pending(tid, etype);
                let (domain, st) = match &pend {
                    Some(x) => (x.domain, x.sock_type),
                    None => (p.int(1), p.int(2)),
                };
                if let Some(fd) = p.int(0).filter(|&f| f >= 0) {
                    let pid = self.pid_of(tid);
                    let f = match domain {
                        Some(2 | 10) => Fd::Sock { l4: st.map_or(L4::Other, l4_of_type), local: None, remote: None },
                        _ => Fd::Other,
                    };
                    self.fd_set(pid, fd, f);
                }
            }
            BIND_X => {
                let pend = self.take_pending(tid, etype);
                if p.int(0) == Some(0)
                    && let (Some(fd), Some(addr)) = (pend.and_then(|x| x.fd), sockaddr(p.get(1)))
                {
                    let pid = self.pid_of(tid);
                    self.update_sock(pid, fd, Some(addr), None);
                }
            }
            CONNECT_X => self.connect_exit(ts, tid, etype, p),
            ACCEPT_X | ACCEPT4_X | ACCEPT_5_X | ACCEPT4_5_X => {
                self.pending.remove(&tid);
                if let (Some(fd), Some(t)) = (p.int(0).filter(|&f| f >= 0), tuple(p.get(1))) {
                    let pid = self.pid_of(tid);
                    // accept's tuple is client → server: the peer first.
                    self.fd_set(pid, fd, Fd::Sock { l4: L4::Tcp, local: Some(t.dst), remote: Some(t.src) });
                }
            }
            WRITE_X | SEND_X | WRITEV_X => self.io(ts, tid, etype, true, p.int(0), p.get(1), p.int(2), None),
            SENDTO_X | SENDMSG_X => {
                self.io(ts, tid, etype, true, p.int(0), p.get(1), p.int(2), tuple(p.get(4)));
            }
            SENDMMSG_X => {
                if p.len() >= 5 {
                    self.io(ts, tid, etype, true, p.int(0), p.get(3), p.int(1), tuple(p.get(4)));
                } else {
                    self.stats.events_skipped += 1;
                }
            }
            READ_X | RECV_X => self.io(ts, tid, etype, false, p.int(0), p.get(1), p.int(2), None),
            READV_X => self.io(ts, tid, etype, false, p.int(0), p.get(2), p.int(3), None),
            RECVFROM_X => self.io(ts, tid, etype, false, p.int(0), p.get(1), p.int(3), tuple(p.get(2))),
            RECVMSG_X => self.io(ts, tid, etype, false, p.int(0), p.get(2), p.int(5), tuple(p.get(3))),
            RECVMMSG_X => {
                if p.len() >= 5 {
                    self.io(ts, tid, etype, false, p.int(0), p.get(3), p.int(1), tuple(p.get(4)));
                } else {
                    self.stats.events_skipped += 1;
                }
            }
            CLONE_11_X | CLONE_16_X | FORK_X | VFORK_X | CLONE_17_X | FORK_17_X | VFORK_17_X | CLONE_20_X
            | FORK_20_X | VFORK_20_X | CLONE3_X => self.clone_exit(tid, etype, p),
            EXECVE_8_X | EXECVE_13_X | EXECVE_14_X | EXECVE_15_X | EXECVE_16_X | EXECVE_17_X | EXECVE_18_X
            | EXECVE_19_X | EXECVEAT_X => self.exec_exit(tid, etype, p),
            PROCEXIT_E | PROCEXIT_1_E => {
                self.pending.remove(&tid);
                if let Some(t) = self.threads.remove(&tid)
                    && t.pid == tid
                    && let Some(table) = self.fds.remove(&tid)
                {
                    self.n_fds = self.n_fds.saturating_sub(table.len());
                }
            }
            CONTAINER_E => {
                let id = p.str(0).map(|b| String::from_utf8_lossy(b).into_owned());
                let name = p.str(2).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                if let Some(id) = id {
                    self.container_meta(&id, &name, None, None);
                }
            }
            CONTAINER_JSON_E | CONTAINER_JSON_2_E => {
                if let Some(j) = p.str(0) {
                    self.container_json(j);
                }
            }
            _ => self.stats.events_skipped += 1,
        }
    }

    fn pend(&mut self, tid: u64, p: Pending) {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&tid) {
            // Enter events whose exits never came (threads gone): forget them all.
            self.pending.clear();
            self.stats.table_full += 1;
        }
        self.pending.insert(tid, p);
    }

    /// The enter event of the exit `etype` (always `etype - 1`), if it came.
    fn take_pending(&mut self, tid: u64, etype: u16) -> Option<Pending> {
        let p = self.pending.remove(&tid)?;
        (p.etype.wrapping_add(1) == etype).then_some(p)
    }

    fn update_sock(&mut self, pid: u64, fd: i64, local: Option<Endpoint>, remote: Option<Endpoint>) {
        match self.fds.get_mut(&pid).and_then(|t| t.get_mut(&fd)) {
            Some(Fd::Sock { local: l, remote: r, .. }) => {
                if let Some(x) = local.filter(|e| !unspecified(e)) {
                    *l = Some(x);
                }
                if let Some(x) = remote.filter(|e| !unspecified(e)) {
                    *r = Some(x);
                }
            }
            Some(_) => {}
            None => self.fd_set(pid, fd, Fd::Sock { l4: L4::Other, local, remote }),
        }
    }

    fn connect_exit(&mut self, ts: u64, tid: u64, etype: u16, p: &Params<'_>) {
        let pend = self.take_pending(tid, etype);
        let fd = p.int(2).or(pend.as_ref().and_then(|x| x.fd));
        let addr = sockaddr(p.get(3)).or(pend.as_ref().and_then(|x| x.addr));
        let Some(res) = p.int(0) else { return };
        let t = tuple(p.get(1));
        let pid = self.pid_of(tid);
        if res == 0 || res == -EINPROGRESS {
            if let (Some(fd), Some(t)) = (fd, t) {
                self.update_sock(pid, fd, Some(t.src), Some(t.dst));
                self.learn_ip(tid, t.src.ip);
            }
            return;
        }
        let l4 = fd.and_then(|f| match self.fd_get(pid, f) {
            Some(Fd::Sock { l4, .. }) => Some(*l4),
            _ => None,
        });
        let src = t.map(|t| t.src).filter(|e| !unspecified(e));
        let dst = t.map(|t| t.dst).filter(|e| !unspecified(e)).or(addr);
        if l4 == Some(L4::Tcp) && fail_kind(-res) == Some("refused") {
            let start = pend.as_ref().map_or(ts, |x| x.ts);
            self.tcp_refused(start, ts, tid, src, dst);
            return;
        }
        self.conn_fail(ts, tid, "connect", l4, src, dst, -res);
    }

    /// Remembers an address a thread's container was seen using on its own
    /// end of a socket (not the wildcard, not loopback).
    fn learn_ip(&mut self, tid: u64, ip: IpAddr) {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        if ip.is_unspecified() || ip.is_loopback() {
            return;
        }
        let Some(c) = self.threads.get(&tid).and_then(|t| t.container.clone()) else { return };
        if let Some(c) = self.containers.get_mut(&c)
            && c.seen_ip.is_none()
        {
            // The first one only: the snapshot (pod IPs) should not churn.
            c.seen_ip = Some(ip);
            if c.pod.is_some() && c.ip.is_none_or(|x| x.is_unspecified()) {
                self.pods_dirty = true;
            }
        }
    }

    /// A socket's own address: a wildcard-bound socket's syscalls report
    /// `0.0.0.0`/`::` where the packet carried the pod's address (dnsmasq's
    /// forwards). The container's address (metadata, else seen on its other
    /// sockets) of the peer's family stands in for it.
    fn own_ip(&self, tid: u64, own: IpAddr, peer: IpAddr) -> IpAddr {
        if !own.is_unspecified() {
            return own;
        }
        let Some(c) = self.threads.get(&tid).and_then(|t| t.container.as_ref()).and_then(|c| self.containers.get(c))
        else {
            return own;
        };
        let peer_v4 = match peer {
            IpAddr::V4(_) => true,
            IpAddr::V6(v) => v.to_ipv4_mapped().is_some(),
        };
        [c.ip, c.seen_ip]
            .into_iter()
            .flatten()
            .find(|ip| !ip.is_unspecified() && ip.is_ipv4() == peer_v4 && !peer.is_loopback())
            .unwrap_or(own)
    }

    /// A TCP connect refused (an RST answered the SYN) as the kernel's
    /// tracepoints report it live: `CLOSE → SYN_SENT` when `connect()` started
    /// (in the process), the RST received in `SYN_SENT`, then `SYN_SENT →
    /// CLOSE`, so `ktrace drops` counts it like a live one.
    fn tcp_refused(&mut self, start: u64, ts: u64, tid: u64, src: Option<Endpoint>, dst: Option<Endpoint>) {
        use tcp_state::{CLOSE, SYN_SENT};
        let Some(dst) = dst else {
            // Nothing to report it against.
            self.stats.io_unknown_endpoints += 1;
            return;
        };
        let (pid, comm, thread, _) = self.who(tid);
        let unspec =
            if dst.ip.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
        let src = src.unwrap_or(Endpoint { ip: unspec, port: 0 });
        let src = Endpoint { ip: self.own_ip(tid, src.ip, dst.ip), port: src.port };
        let process = Process { pid: pid as u32, tid: tid as u32, comm, thread };
        self.sock_seq = self.sock_seq.wrapping_add(1);
        // Opaque, never a kernel address (those have the top bits set).
        let sock = self.sock_seq | (1 << 62);
        let rec = |ts_ns, kind, process| ConnRecord {
            ts_ns,
            kind,
            src,
            dst,
            sock,
            process,
            netns_ino: 0,
            node: self.node.clone(),
        };
        let recs = [
            rec(start.min(ts), ConnKind::State { old: CLOSE, new: SYN_SENT }, Some(process.clone())),
            rec(ts, ConnKind::ResetReceived { state: SYN_SENT }, None),
            rec(ts, ConnKind::State { old: SYN_SENT, new: CLOSE }, Some(process)),
        ];
        self.stats.conn_failures += 1;
        for r in recs {
            self.push_record(Record::Conn(r));
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one call per event kind, positions differ")]
    fn conn_fail(
        &mut self,
        ts: u64,
        tid: u64,
        syscall: &str,
        l4: Option<L4>,
        src: Option<Endpoint>,
        dst: Option<Endpoint>,
        errno: i64,
    ) {
        let Some(kind) = fail_kind(errno) else { return };
        let (pid, comm, thread, _) = self.who(tid);
        let transport = match l4 {
            Some(L4::Tcp) => Some("tcp"),
            Some(L4::Udp) => Some("udp"),
            _ => None,
        };
        let data = json!({
            "ts_ns": ts,
            "pid": pid,
            "tid": tid,
            "comm": &*comm,
            "thread": &*thread,
            "syscall": syscall,
            "transport": transport,
            "src": src.map(|e| e.to_string()),
            "dst": dst.map(|e| e.to_string()),
            "errno": errno,
            "kind": kind,
            "node": self.node.as_deref(),
        });
        self.stats.conn_failures += 1;
        self.out.push_back(Item::Meta(MetaBlock::Custom {
            name: "conn_fail/v1".into(),
            data: data.to_string().into_bytes(),
        }));
    }

    /// (pid, leader comm, thread comm, container) of a thread.
    fn who(&self, tid: u64) -> (u64, Arc<str>, Arc<str>, Option<Arc<str>>) {
        match self.threads.get(&tid) {
            Some(t) => {
                let leader = self.threads.get(&t.pid).map_or_else(|| Arc::clone(&t.comm), |l| Arc::clone(&l.comm));
                (t.pid, leader, Arc::clone(&t.comm), t.container.clone())
            }
            None => (tid, UNKNOWN_COMM.into(), UNKNOWN_COMM.into(), None),
        }
    }

    fn clone_exit(&mut self, tid: u64, etype: u16, p: &Params<'_>) {
        #[allow(clippy::wildcard_imports, reason = "the event table's names")]
        use ev::*;
        let Some(res) = p.int(0) else { return };
        let has_comm = !matches!(etype, CLONE_11_X | CLONE_16_X | FORK_X | VFORK_X);
        let has_cgroups = matches!(etype, CLONE_20_X | FORK_20_X | VFORK_20_X | CLONE3_X);
        let comm = match (has_comm, p.str(13)) {
            (true, Some(c)) if !c.is_empty() => comm_str(c),
            _ => comm_str(basename(p.str(1).unwrap_or_default())),
        };
        let container =
            if has_cgroups { p.get(14).and_then(container_id).and_then(|id| self.container_of(&id)) } else { None };
        if res == 0 {
            // The child's side: its own tid and thread-group id.
            let ctid = p.int(3).filter(|&x| x > 0).map_or(tid, |x| x as u64);
            let cpid = p.int(4).filter(|&x| x > 0).map_or(ctid, |x| x as u64);
            let parent = p.int(5).filter(|&x| x > 0).map(|x| x as u64);
            let container = container.or_else(|| parent.and_then(|pt| self.threads.get(&pt)?.container.clone()));
            let new_process = self.threads.get(&ctid).is_none_or(|t| t.pid != cpid) && cpid == ctid;
            self.set_thread(ctid, cpid, comm, container);
            if new_process && let Some(pt) = parent {
                self.copy_fds(self.pid_of(pt), cpid);
            }
        } else if res > 0 {
            let child = res as u64;
            if !self.threads.contains_key(&child) {
                let parent_container = self.threads.get(&tid).and_then(|t| t.container.clone());
                // Until the child's own event says otherwise, assume a new process.
                self.set_thread(child, child, comm, container.or(parent_container));
            }
        }
    }

    fn copy_fds(&mut self, from: u64, to: u64) {
        if from == to {
            return;
        }
        let Some(src) = self.fds.get(&from) else { return };
        if src.len() > MAX_FORK_FDS {
            return;
        }
        let copies: Vec<(i64, Fd)> = src
            .iter()
            .map(|(&fd, f)| match f {
                Fd::Sock { l4, local, remote } => (fd, Fd::Sock { l4: *l4, local: *local, remote: *remote }),
                Fd::File { path, .. } => (fd, Fd::File { path: Arc::clone(path), resolv: None }),
                Fd::Other => (fd, Fd::Other),
            })
            .collect();
        for (fd, f) in copies {
            self.fd_set(to, fd, f);
        }
    }

    fn exec_exit(&mut self, tid: u64, etype: u16, p: &Params<'_>) {
        #[allow(clippy::wildcard_imports, reason = "the event table's names")]
        use ev::*;
        if p.int(0) != Some(0) {
            return;
        }
        let has_comm = !matches!(etype, EXECVE_8_X | EXECVE_13_X | EXECVE_14_X);
        let has_cgroups = !matches!(etype, EXECVE_8_X | EXECVE_13_X | EXECVE_14_X | EXECVE_15_X);
        let comm = match (has_comm, p.str(13)) {
            (true, Some(c)) if !c.is_empty() => comm_str(c),
            _ => comm_str(basename(p.str(1).unwrap_or_default())),
        };
        let container =
            if has_cgroups { p.get(14).and_then(container_id).and_then(|id| self.container_of(&id)) } else { None };
        let pid = p.int(4).filter(|&x| x > 0).map_or_else(|| self.pid_of(tid), |x| x as u64);
        let container = container.or_else(|| self.threads.get(&tid).and_then(|t| t.container.clone()));
        self.set_thread(tid, pid, comm, container);
    }

    fn container_meta(&mut self, id: &str, name: &str, labels: Option<&Value>, ip: Option<IpAddr>) {
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

    fn container_json(&mut self, j: &[u8]) {
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

    fn flush_resolv(&mut self, ts: u64, pid: u64, fd: i64) {
        let Some(Fd::File { path, resolv: Some(buf) }) = self.fds.get_mut(&pid).and_then(|t| t.get_mut(&fd)) else {
            return;
        };
        if buf.done || buf.text.is_empty() {
            return;
        }
        buf.done = true;
        let mut text = String::from_utf8_lossy(&buf.text).into_owned();
        let error = if buf.truncated {
            // A cut line could read as a wrong setting: keep whole lines only.
            text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
            Some("the capture kept only the start of this file (sysdig snaplen); later lines are missing".to_owned())
        } else {
            None
        };
        let ev = ResolvConfEvidence {
            ts_ns: ts,
            pid: pid as u32,
            netns_ino: 0,
            path: path.to_string(),
            // No whole line kept is no evidence of the settings: an empty text
            // would read as a file with none (ndots:1, no search list).
            text: (!text.is_empty()).then_some(text),
            error,
        };
        self.stats.resolv_conf += 1;
        self.push_record(Record::ResolvConf(ev));
    }

    /// A read/write-family exit: DNS on port 53 becomes a packet, resolv.conf
    /// reads become evidence, failures on sockets become `conn_fail`.
    #[expect(clippy::too_many_arguments, reason = "one call per event kind, positions differ")]
    fn io(
        &mut self,
        ts: u64,
        tid: u64,
        etype: u16,
        egress: bool,
        res: Option<i64>,
        data: Option<&[u8]>,
        x_fd: Option<i64>,
        x_tuple: Option<Tuple>,
    ) {
        let pend = self.take_pending(tid, etype);
        let fd = x_fd.or(pend.as_ref().and_then(|x| x.fd));
        let tuple = x_tuple.or(pend.as_ref().and_then(|x| x.tuple));
        let Some(res) = res else { return };
        let pid = self.pid_of(tid);
        let entry = fd.and_then(|f| self.fd_get(pid, f));
        if let (Some(Fd::File { resolv: Some(_), .. }), Some(fd)) = (entry, fd) {
            if !egress {
                self.resolv_read(ts, pid, fd, res, data.unwrap_or_default());
            }
            return;
        }
        let (l4, local, remote) = match entry {
            Some(Fd::Sock { l4, local, remote }) => (Some(*l4), *local, *remote),
            Some(_) => {
                self.stats.io_other += 1;
                return;
            }
            None => (None, None, None),
        };
        if res < 0 {
            if l4.is_some() || tuple.is_some() {
                let (src, dst) = match tuple {
                    Some(t) if egress => (Some(t.src), Some(t.dst)),
                    Some(t) => (Some(t.dst), Some(t.src)),
                    None => (local, remote),
                };
                let name = syscall_name(etype);
                if l4 == Some(L4::Tcp) && fail_kind(-res) == Some("refused") {
                    self.tcp_refused(ts, ts, tid, src.filter(|e| !unspecified(e)), dst.filter(|e| !unspecified(e)));
                    return;
                }
                self.conn_fail(
                    ts,
                    tid,
                    name,
                    l4,
                    src.filter(|e| !unspecified(e)),
                    dst.filter(|e| !unspecified(e)),
                    -res,
                );
            }
            return;
        }
        if res == 0 {
            return;
        }
        // The data flows src → dst; the socket's own end is src on egress.
        let (src, dst) = match tuple {
            Some(t) => {
                let (mut s, mut d) = (t.src, t.dst);
                // An unbound socket's first sendto shows port 0: the fd may know better.
                let own = if egress { &mut s } else { &mut d };
                if own.port == 0
                    && let Some(l) = local
                {
                    *own = l;
                }
                (s, d)
            }
            None => match (local, remote) {
                (Some(l), Some(r)) if egress => (l, r),
                (Some(l), Some(r)) => (r, l),
                _ => {
                    self.stats.io_unknown_endpoints += 1;
                    return;
                }
            },
        };
        if let (Some(fd), Some(t)) = (fd, tuple) {
            // Learn the socket's own address (ephemeral port) from what the kernel reported.
            let own = if egress { t.src } else { t.dst };
            if own.port != 0 {
                self.update_sock(pid, fd, Some(own), None);
            }
        }
        let (src, dst) = {
            let (own, peer) = if egress { (src, dst) } else { (dst, src) };
            self.learn_ip(tid, own.ip);
            let own = Endpoint { ip: self.own_ip(tid, own.ip, peer.ip), port: own.port };
            if egress { (own, peer) } else { (peer, own) }
        };
        if src.port != DNS_PORT && dst.port != DNS_PORT {
            self.stats.io_non_dns += 1;
            return;
        }
        let full = usize::try_from(res).unwrap_or(usize::MAX);
        let data = data.unwrap_or_default();
        let tcp = match l4 {
            Some(L4::Tcp) => {
                let key = (egress, src, dst);
                let seq = if let Some(&s) = self.tcp_seq.get(&key) {
                    s
                } else {
                    if self.tcp_seq.len() >= MAX_STREAMS {
                        self.tcp_seq.clear();
                        self.stats.table_full += 1;
                    }
                    // A stream's first bytes: a SYN first, so the decoder starts in sync.
                    self.emit_packet(ts, tid, egress, src, dst, Some((0, TCP_SYN)), &[], 0);
                    1
                };
                self.tcp_seq.insert(key, seq.wrapping_add(full as u32));
                Some((seq, TCP_PSH_ACK))
            }
            _ => None,
        };
        self.emit_packet(ts, tid, egress, src, dst, tcp, data, full);
    }

    #[expect(clippy::too_many_arguments, reason = "a packet's every field")]
    fn emit_packet(
        &mut self,
        ts: u64,
        tid: u64,
        egress: bool,
        src: Endpoint,
        dst: Endpoint,
        tcp: Option<(u32, u8)>,
        data: &[u8],
        full: usize,
    ) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let Some((bytes, wire_len)) = synth::packet(src, dst, tcp, data, full, self.ip_id) else {
            self.stats.io_too_large += 1;
            return;
        };
        let (pid, comm, thread, container) = self.who(tid);
        let cgroup_id = self.cgroup_id(container.as_ref());
        let process = egress.then_some(Process { pid: pid as u32, tid: tid as u32, comm, thread });
        let rec = PacketRecord {
            ts_ns: ts,
            hook: if egress { Hook::SocketEgress } else { Hook::SocketIngress },
            process,
            cgroup_id,
            netns_cookie: 0,
            netns_ino: 0,
            ifindex: 0,
            wire_len,
            data: Bytes::from(bytes),
            node: self.node.clone(),
        };
        if !data.is_empty() {
            self.stats.dns_messages += 1;
        }
        self.push_record(Record::Packet(rec));
    }

    fn resolv_read(&mut self, ts: u64, pid: u64, fd: i64, res: i64, data: &[u8]) {
        if res == 0 {
            self.flush_resolv(ts, pid, fd);
            return;
        }
        if res < 0 {
            return;
        }
        if let Some(Fd::File { resolv: Some(buf), .. }) = self.fds.get_mut(&pid).and_then(|t| t.get_mut(&fd)) {
            let room = MAX_RESOLV.saturating_sub(buf.text.len());
            let keep = data.get(..room.min(data.len())).unwrap_or_default();
            buf.text.extend_from_slice(keep);
            if (data.len() as u64) < res as u64 || keep.len() < data.len() {
                buf.truncated = true;
            }
        }
    }
}

fn syscall_name(etype: u16) -> &'static str {
    #[allow(clippy::wildcard_imports, reason = "the event table's names")]
    use ev::*;
    match etype {
        WRITE_X => "write",
        SEND_X => "send",
        WRITEV_X => "writev",
        SENDTO_X => "sendto",
        SENDMSG_X => "sendmsg",
        SENDMMSG_X => "sendmmsg",
        READ_X => "read",
        RECV_X => "recv",
        READV_X => "readv",
        RECVFROM_X => "recvfrom",
        RECVMSG_X => "recvmsg",
        RECVMMSG_X => "recvmmsg",
        _ => "?",
    }
}
