//! The thread, process and fd tables sysdig keeps: process and fd lists,
//! clone/execve/procexit, and what each thread is.

use std::sync::Arc;

use super::{
    Decoder, Fd, MAX_CONTAINERS, MAX_FDS, MAX_FORK_FDS, MAX_THREADS, Thread, UNKNOWN_COMM, basename, comm_str,
    k8s::{Container, container_id},
    unspecified,
};
use crate::{
    capture::scap::{
        blocks::{FdEntry, FdEntryKind, L4, ProcEntry},
        events::{Params, ev},
    },
    event::Endpoint,
};

impl Decoder {
    pub(super) fn set_thread(&mut self, tid: u64, pid: u64, comm: Arc<str>, container: Option<Arc<str>>) {
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

    pub(super) fn pid_of(&self, tid: u64) -> u64 {
        self.threads.get(&tid).map_or(tid, |t| t.pid)
    }

    pub(super) fn container_of(&mut self, id: &str) -> Option<Arc<str>> {
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

    pub(super) fn fd_get(&self, pid: u64, fd: i64) -> Option<&Fd> {
        self.fds.get(&pid)?.get(&fd)
    }

    pub(super) fn fd_set(&mut self, pid: u64, fd: i64, f: Fd) {
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

    pub(super) fn fd_remove(&mut self, pid: u64, fd: i64) -> Option<Fd> {
        let table = self.fds.get_mut(&pid)?;
        let f = table.remove(&fd)?;
        self.n_fds = self.n_fds.saturating_sub(1);
        if table.is_empty() {
            self.fds.remove(&pid);
        }
        Some(f)
    }

    pub(in crate::capture::scap) fn proc_entry(&mut self, e: &ProcEntry) {
        self.stats.threads += 1;
        let comm = if e.comm.is_empty() { comm_str(basename(&e.exe)) } else { comm_str(&e.comm) };
        let container = container_id(&e.cgroups).and_then(|id| self.container_of(&id));
        self.set_thread(e.tid, e.pid, comm, container);
    }

    pub(in crate::capture::scap) fn fd_entry(&mut self, tid: u64, e: FdEntry) {
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

    /// (pid, leader comm, thread comm, container) of a thread.
    pub(super) fn who(&self, tid: u64) -> (u64, Arc<str>, Arc<str>, Option<Arc<str>>) {
        match self.threads.get(&tid) {
            Some(t) => {
                let leader = self.threads.get(&t.pid).map_or_else(|| Arc::clone(&t.comm), |l| Arc::clone(&l.comm));
                (t.pid, leader, Arc::clone(&t.comm), t.container.clone())
            }
            None => (tid, UNKNOWN_COMM.into(), UNKNOWN_COMM.into(), None),
        }
    }

    pub(super) fn clone_exit(&mut self, tid: u64, etype: u16, p: &Params<'_>) {
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

    pub(super) fn copy_fds(&mut self, from: u64, to: u64) {
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

    pub(super) fn exec_exit(&mut self, tid: u64, etype: u16, p: &Params<'_>) {
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

    pub(super) fn update_sock(&mut self, pid: u64, fd: i64, local: Option<Endpoint>, remote: Option<Endpoint>) {
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
}
