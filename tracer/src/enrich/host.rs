//! Host-side evidence, live only: which named network namespace an inode is,
//! the netns of a pid, and the resolv.conf a process really sees. The
//! results are turned into records so captures carry them to replay.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::event::ResolvConfEvidence;

/// Most processes whose resolv.conf we remember (evidence is per process).
const MAX_PIDS: usize = 16_384;

/// Caches of host lookups, refreshed lazily and rate-limited.
#[derive(Debug)]
pub struct HostEvidence {
    netns_names: HashMap<u32, String>,
    scanned: Option<Instant>,
    /// (pid, netns) pairs already read: one process may have threads in
    /// several network namespaces, and alternating between them must not
    /// re-read the file on every packet.
    seen_pids: crate::hash::FastSet<(u32, u32)>,
    /// The pair asked about last: a busy client sends packet after packet.
    last_seen: (u32, u32),
    proc_root: PathBuf,
}

impl Default for HostEvidence {
    fn default() -> Self {
        Self::new()
    }
}

impl HostEvidence {
    /// Empty caches.
    #[must_use]
    pub fn new() -> Self {
        Self {
            netns_names: HashMap::new(),
            scanned: None,
            seen_pids: crate::hash::FastSet::default(),
            last_seen: (0, 0),
            proc_root: "/proc".into(),
        }
    }

    /// Name under /run/netns of a network namespace inode, if it has one.
    pub fn netns_name(&mut self, ino: u32) -> Option<String> {
        if ino == 0 {
            return None;
        }
        if let Some(n) = self.netns_names.get(&ino) {
            return Some(n.clone());
        }
        // Namespaces appear while we run (tests, the lab): rescan, but at most every 200 ms.
        if self.scanned.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
            self.scanned = Some(Instant::now());
            if let Ok(rd) = std::fs::read_dir("/run/netns") {
                for e in rd.flatten() {
                    if let (Ok(m), Some(name)) = (e.metadata(), e.file_name().to_str())
                        && let Ok(i) = u32::try_from(m.ino())
                    {
                        self.netns_names.insert(i, name.to_owned());
                    }
                }
            }
        }
        self.netns_names.get(&ino).cloned()
    }

    /// Network namespace inode of a process, 0 if it is gone.
    #[must_use]
    pub fn netns_of_pid(&self, pid: u32) -> u32 {
        std::fs::metadata(self.proc_root.join(pid.to_string()).join("ns/net"))
            .ok()
            .and_then(|m| u32::try_from(m.ino()).ok())
            .unwrap_or(0)
    }

    /// The first time a process sends a DNS query, reads the resolv.conf it
    /// sees: through its own root (`/proc/PID/root/etc/resolv.conf`, which
    /// honours its mount namespace and `ip netns exec` bind mounts), else the
    /// file `ip netns exec` would mount for its named netns, else says why not.
    pub fn resolv_conf_once(&mut self, pid: u32, netns_ino: u32, ts_ns: u64) -> Option<ResolvConfEvidence> {
        if pid == 0 || self.last_seen == (pid, netns_ino) {
            return None;
        }
        if self.seen_pids.contains(&(pid, netns_ino)) {
            self.last_seen = (pid, netns_ino);
            return None;
        }
        if self.seen_pids.len() >= MAX_PIDS {
            self.seen_pids.clear();
        }
        self.seen_pids.insert((pid, netns_ino));
        self.last_seen = (pid, netns_ino);
        let via_proc = self.proc_root.join(pid.to_string()).join("root/etc/resolv.conf");
        let mut errors = Vec::new();
        match read_small(&via_proc) {
            Ok(text) => {
                return Some(ResolvConfEvidence {
                    ts_ns,
                    pid,
                    netns_ino,
                    path: via_proc.display().to_string(),
                    text: Some(text),
                    error: None,
                });
            }
            Err(e) => errors.push(format!("{}: {e}", via_proc.display())),
        }
        if let Some(name) = self.netns_name(netns_ino) {
            let p = Path::new("/etc/netns").join(&name).join("resolv.conf");
            match read_small(&p) {
                Ok(text) => {
                    return Some(ResolvConfEvidence {
                        ts_ns,
                        pid,
                        netns_ino,
                        path: p.display().to_string(),
                        text: Some(text),
                        error: None,
                    });
                }
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            }
        }
        Some(ResolvConfEvidence {
            ts_ns,
            pid,
            netns_ino,
            path: String::new(),
            text: None,
            error: Some(format!("could not read the resolv.conf of pid {pid} (process gone?): {}", errors.join("; "))),
        })
    }
}

/// Reads a config file, refusing anything unreasonably large.
fn read_small(p: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(p)?;
    let mut s = String::new();
    f.take(64 * 1024).read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_resolv_conf_once() {
        let mut h = HostEvidence::new();
        let me = std::process::id();
        let ino = h.netns_of_pid(me);
        assert_ne!(ino, 0);
        let ev = h.resolv_conf_once(me, ino, 1).expect("first time yields evidence");
        assert!(ev.text.is_some() || ev.error.is_some());
        assert!(h.resolv_conf_once(me, ino, 2).is_none(), "second time is cached");
    }

    #[test]
    fn threads_in_two_netns_read_once_each() {
        // A process whose threads sit in two network namespaces used to
        // evict its own cache entry on every packet (one open() per event).
        let mut h = HostEvidence::new();
        let me = std::process::id();
        let ino = h.netns_of_pid(me);
        assert!(h.resolv_conf_once(me, ino, 1).is_some());
        assert!(h.resolv_conf_once(me, ino.wrapping_add(1), 2).is_some());
        for t in 3..10 {
            assert!(h.resolv_conf_once(me, ino, t).is_none());
            assert!(h.resolv_conf_once(me, ino.wrapping_add(1), t).is_none());
        }
    }

    #[test]
    fn missing_process_says_why() {
        let mut h = HostEvidence::new();
        let ev = h.resolv_conf_once(u32::MAX - 1, 0, 1).unwrap();
        assert!(ev.text.is_none());
        assert!(ev.error.unwrap().contains("could not read"));
    }
}
