//! From syscall events to ktrace's model: the process, fd and container
//! tables sysdig keeps, and what ktrace derives from them (DNS messages as
//! synthesised packets, resolv.conf evidence, connection failures, a pod
//! snapshot).
//!
//! Split by responsibility: [`tables`] (threads, fds), [`net`] (socket I/O,
//! DNS packets, connection failures, the resolver/client join), [`resolv`]
//! (resolv.conf evidence), [`k8s`] (containers, pods, the snapshot).

mod k8s;
mod net;
mod resolv;
mod tables;

use std::{collections::VecDeque, sync::Arc};

use k8s::Container;
#[cfg(test)]
pub(super) use k8s::{container_id, k8s_name, synthetic_cgroup_id};
use net::{Tuple, sockaddr, tuple, unspecified};
use resolv::ResolvBuf;

use super::{
    ScapStats,
    blocks::L4,
    events::{Params, ev},
};
use crate::{
    capture::{Item, MetaBlock},
    event::{Endpoint, Record},
    hash::FastMap,
};

/// Threads tracked at once: bounds memory on hostile input.
const MAX_THREADS: usize = 1 << 18;
/// Open fds tracked at once (all processes).
const MAX_FDS: usize = 1 << 18;
/// Threads with enter events waiting for their exit.
const MAX_PENDING: usize = 1 << 16;
/// Enter events of different types one thread may have waiting: a Go
/// runtime thread's `recvmsg` enter is often followed by its other syscalls
/// (EAGAIN `read`s on other fds) before the exit comes.
const MAX_PENDING_PER_THREAD: usize = 8;
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

#[derive(Debug)]
struct Thread {
    pid: u64,
    comm: Arc<str>,
    container: Option<Arc<str>>,
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

/// The event-to-model state machine of one scap file.
pub(super) struct Decoder {
    node: Option<Arc<str>>,
    // foldhash, not SipHash: hashing was 16 % of a scap replay's
    // instructions (these maps are looked up per event).
    threads: FastMap<u64, Thread>,
    fds: FastMap<u64, FastMap<i64, Fd>>,
    n_fds: usize,
    /// Enter events per thread, at most one per type (the latest).
    pending: FastMap<u64, Vec<Pending>>,
    /// Client sockets talking to a DNS server, by their own address.
    clients: net::Clients,
    containers: FastMap<Arc<str>, Container>,
    pods_dirty: bool,
    tcp_seq: FastMap<(bool, Endpoint, Endpoint), u32>,
    ip_id: u16,
    /// Synthetic socket identities for [`ConnRecord::sock`].
    sock_seq: u64,
    pub(super) stats: ScapStats,
    pub(super) out: VecDeque<Item>,
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

impl Decoder {
    pub(super) fn new() -> Self {
        Self {
            node: None,
            threads: FastMap::default(),
            fds: FastMap::default(),
            n_fds: 0,
            pending: FastMap::default(),
            clients: net::Clients::default(),
            containers: FastMap::default(),
            pods_dirty: false,
            tcp_seq: FastMap::default(),
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
                    match self.fd_remove(pid, fd) {
                        Some(Fd::Sock { l4: L4::Tcp, local: Some(l), remote: Some(r) }) => {
                            self.tcp_seq.remove(&(true, l, r));
                            self.tcp_seq.remove(&(false, r, l));
                        }
                        Some(Fd::Sock { local: Some(l), .. }) => self.clients.closed(pid, l),
                        _ => {}
                    }
                }
            }
            READ_E | WRITE_E | SEND_E | RECV_E | RECVFROM_E | RECVMSG_E | READV_E | WRITEV_E | BIND_E | SENDMMSG_E => {
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
                let _ = self.take_pending(tid, etype);
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
                    // Old drivers record no parameters: a send whose messages
                    // only the receiving resolver's view can show.
                    let _ = self.take_pending(tid, etype);
                    self.invisible_send(ts, tid);
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
        let waiting = self.pending.entry(tid).or_default();
        // The latest enter of a type is the one its next exit belongs to.
        waiting.retain(|x| x.etype != p.etype);
        if waiting.len() >= MAX_PENDING_PER_THREAD {
            waiting.remove(0);
        }
        waiting.push(p);
    }

    /// The enter event of the exit `etype` (always `etype - 1`), if it came.
    /// Enter events of other types stay: the thread may still be in them.
    fn take_pending(&mut self, tid: u64, etype: u16) -> Option<Pending> {
        let waiting = self.pending.get_mut(&tid)?;
        let i = waiting.iter().position(|p| p.etype.wrapping_add(1) == etype)?;
        let p = waiting.remove(i);
        if waiting.is_empty() {
            self.pending.remove(&tid);
        }
        Some(p)
    }
}
