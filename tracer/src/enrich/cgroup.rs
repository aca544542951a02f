//! cgroup path → container id and pod uid, and cgroup id → cgroup path.
//!
//! The kernel tells us a socket's cgroup v2 id (`bpf_get_current_cgroup_id`,
//! which is the cgroup directory's inode number). Kubelet and the container
//! runtimes name those directories after the pod uid and the container id,
//! in one of a few well-known layouts:
//!
//! | driver / runtime | example (leaf of the path) |
//! |---|---|
//! | cgroupfs, containerd / Docker shim | `/kubepods/besteffort/pod<uid>/<64 hex>` |
//! | systemd, containerd | `kubepods-burstable-pod<uid with _>.slice/cri-containerd-<64 hex>.scope` |
//! | systemd, CRI-O | `kubepods-pod<uid>.slice/crio-<64 hex>.scope` (and `crio-conmon-…`) |
//! | systemd, Docker (cri-dockerd) | `…/docker-<64 hex>.scope` |
//! | plain Docker, cgroupfs | `/docker/<64 hex>` |
//!
//! cgroup v1 lines (`4:memory:/kubepods/…`) carry the same paths after the
//! second colon. [`parse_cgroup_path`] understands all of them; [`CgroupPaths`]
//! finds the path of a cgroup id by scanning the cgroup2 tree (bounded, cached).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What a cgroup path says about the container that runs in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Pod uid in its API form (`1b4e28ba-2fa1-11d2-883f-0016d3cca427`).
    pub pod_uid: Option<String>,
    /// Container id (64 lowercase hex digits, no runtime prefix).
    pub container_id: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod uid as it appears in a path segment (`pod<uid>` in cgroupfs,
/// `…-pod<uid_with_underscores>.slice` in systemd), in API form.
fn pod_uid_of(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = seg.rfind("pod")?;
    // `kubepods` itself contains "pod": the uid must follow "pod" directly and be uuid-shaped.
    let uid: String = seg.get(at + 3..)?.chars().map(|c| if c == '_' { '-' } else { c }).collect();
    let uuid_shaped = uid.len() == 36
        && uid
            .bytes()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() });
    uuid_shaped.then(|| uid.to_ascii_lowercase())
}

/// A container id in a path segment: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`, or a bare id.
fn container_id_of(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    // conmon is CRI-O's monitor process, not the container.
    if seg.starts_with("crio-conmon-") {
        return None;
    }
    let id = seg.rsplit(['-', ':']).next().unwrap_or(seg);
    is_hex64(id).then(|| id.to_ascii_lowercase())
}

/// Parses a cgroup path (`/kubepods/…`, a systemd slice path, or one line
/// of `/proc/PID/cgroup` in v1 `N:controllers:/path` or v2 `0::/path` form).
#[must_use]
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let path = path.trim();
    // `/proc/PID/cgroup` lines: the path follows the second colon.
    let path = match path.split_once(':') {
        Some((n, rest)) if n.bytes().all(|b| b.is_ascii_digit()) => rest.split_once(':').map_or(rest, |(_, p)| p),
        _ => path,
    };
    let mut info = CgroupInfo::default();
    // Bounded: a path has at most a few dozen segments; ignore absurd input.
    for seg in path.split('/').filter(|s| !s.is_empty()).take(64) {
        if let Some(u) = pod_uid_of(seg) {
            info.pod_uid = Some(u);
        } else if let Some(c) = container_id_of(seg) {
            info.container_id = Some(c);
        }
    }
    info
}

/// Most cgroup directories one scan visits (a node has a few thousand).
const MAX_SCAN: usize = 100_000;
/// Deepest directory a scan descends into.
const MAX_DEPTH: usize = 12;

/// cgroup id → path relative to the cgroup2 root, by scanning the tree's
/// inode numbers. A miss triggers a rescan at most every `min_rescan`, so an
/// unknown id costs one hash lookup most of the time.
#[derive(Debug)]
pub struct CgroupPaths {
    root: PathBuf,
    paths: HashMap<u64, String>,
    scanned: Option<Instant>,
    min_rescan: Duration,
    /// Ids whose path names no pod or container (the node's own services):
    /// parsed once per scan instead of once per packet. At most `paths`' size.
    plain: crate::hash::FastSet<u64>,
}

impl CgroupPaths {
    /// A cache over the cgroup2 hierarchy mounted at `root`.
    #[must_use]
    pub fn new(root: &Path, min_rescan: Duration) -> Self {
        Self {
            root: root.to_owned(),
            paths: HashMap::new(),
            scanned: None,
            min_rescan,
            plain: crate::hash::FastSet::default(),
        }
    }

    /// What the path of cgroup `id` says about its pod and container; None
    /// when the id is unknown or its path names neither.
    pub fn container_info(&mut self, id: u64) -> Option<CgroupInfo> {
        if self.plain.contains(&id) {
            return None;
        }
        let info = parse_cgroup_path(self.path_of(id)?);
        if info.container_id.is_none() && info.pod_uid.is_none() {
            self.plain.insert(id);
            return None;
        }
        Some(info)
    }

    /// The path (relative to the root, starting with `/`) of cgroup `id`.
    pub fn path_of(&mut self, id: u64) -> Option<&str> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id) && self.scanned.is_none_or(|t| t.elapsed() >= self.min_rescan) {
            self.rescan();
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Rebuilds the map from the tree (iterative, bounded in depth and count).
    pub fn rescan(&mut self) {
        self.scanned = Some(Instant::now());
        self.paths.clear();
        self.plain.clear();
        let mut stack = vec![(self.root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            if self.paths.len() >= MAX_SCAN {
                break;
            }
            if let Ok(m) = std::fs::metadata(&dir) {
                self.paths.insert(m.ino(), if rel.is_empty() { "/".to_owned() } else { rel.clone() });
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(name) = e.file_name().to_str()
                {
                    stack.push((e.path(), format!("{rel}/{name}"), depth + 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "8f1c5a0e3b9d4c7f2a6e1b0d9c8f7a6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a";
    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn cgroupfs_driver_v1_and_v2() {
        let want = CgroupInfo { pod_uid: Some(UID.into()), container_id: Some(CID.into()) };
        assert_eq!(parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/{CID}")), want);
        assert_eq!(parse_cgroup_path(&format!("/kubepods/pod{UID}/{CID}")), want, "guaranteed QoS has no class dir");
        assert_eq!(parse_cgroup_path(&format!("11:memory:/kubepods/burstable/pod{UID}/{CID}")), want);
        assert_eq!(parse_cgroup_path(&format!("0::/kubepods/besteffort/pod{UID}/{CID}")), want);
        assert_eq!(parse_cgroup_path(&format!("4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}")), want);
    }

    #[test]
    fn systemd_driver_containerd_crio_docker() {
        let u = UID.replace('-', "_");
        let want = CgroupInfo { pod_uid: Some(UID.into()), container_id: Some(CID.into()) };
        let containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse_cgroup_path(&containerd), want);
        let crio = format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{CID}.scope");
        assert_eq!(parse_cgroup_path(&crio), want);
        let docker =
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/docker-{CID}.scope");
        assert_eq!(parse_cgroup_path(&docker), want);
        // Kubernetes-in-Docker (kind) nests the node's tree under its own container.
        let kind = format!(
            "0::/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{}.scope",
            "a".repeat(64)
        );
        assert_eq!(
            parse_cgroup_path(&kind),
            CgroupInfo { pod_uid: Some(UID.into()), container_id: Some("a".repeat(64)) }
        );
    }

    #[test]
    fn plain_docker_and_non_containers() {
        assert_eq!(parse_cgroup_path(&format!("/docker/{CID}")).container_id.as_deref(), Some(CID));
        assert_eq!(parse_cgroup_path(&format!("/system.slice/docker-{CID}.scope")).container_id.as_deref(), Some(CID));
        assert_eq!(parse_cgroup_path("0::/user.slice/user-1000.slice/session-3.scope"), CgroupInfo::default());
        assert_eq!(parse_cgroup_path("/kubepods/besteffort"), CgroupInfo::default());
        assert_eq!(parse_cgroup_path("/kubepods.slice/kubepods-burstable.slice"), CgroupInfo::default());
        // The pod's own slice: uid, no container (pause-less sandboxes, or the pod-level cgroup).
        assert_eq!(parse_cgroup_path(&format!("/kubepods/pod{UID}")).pod_uid.as_deref(), Some(UID));
        let conmon = format!("/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{CID}.scope", UID.replace('-', "_"));
        assert_eq!(parse_cgroup_path(&conmon).container_id, None);
        assert_eq!(parse_cgroup_path(""), CgroupInfo::default());
        assert_eq!(parse_cgroup_path(":::"), CgroupInfo::default());
        assert_eq!(parse_cgroup_path("/podnothex/ghijkl"), CgroupInfo::default());
    }

    #[test]
    fn scans_a_tree_by_inode() {
        let dir = std::env::temp_dir().join(format!("ktrace-cg-{}", std::process::id()));
        let leaf = dir.join("kubepods/besteffort").join(format!("pod{UID}")).join(CID);
        std::fs::create_dir_all(&leaf).unwrap();
        let ino = std::fs::metadata(&leaf).unwrap().ino();
        let mut c = CgroupPaths::new(&dir, Duration::from_hours(1));
        let p = c.path_of(ino).map(str::to_owned);
        assert_eq!(p.as_deref(), Some(format!("/kubepods/besteffort/pod{UID}/{CID}").as_str()));
        assert_eq!(parse_cgroup_path(&p.unwrap_or_default()).container_id.as_deref(), Some(CID));
        // A miss right after a scan does not rescan (rate limit), so a new directory stays unknown.
        let late = dir.join("late");
        std::fs::create_dir_all(&late).unwrap();
        let late_ino = std::fs::metadata(&late).unwrap().ino();
        assert!(c.path_of(late_ino).is_none());
        c.rescan();
        assert_eq!(c.path_of(late_ino), Some("/late"));
        assert!(c.path_of(0).is_none());
        // A plain cgroup is remembered as such; a pod's still parses.
        assert_eq!(c.container_info(ino).and_then(|i| i.container_id).as_deref(), Some(CID));
        assert!(c.container_info(late_ino).is_none());
        assert!(c.plain.contains(&late_ino));
        assert!(c.container_info(late_ino).is_none());
        c.rescan();
        assert!(c.plain.is_empty(), "a rescan forgets what it may have renamed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
