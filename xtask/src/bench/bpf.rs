//! What the in-kernel section needs from the `bpf(2)` syscall directly:
//! run-time statistics switched on for as long as a file descriptor lives
//! (`BPF_ENABLE_STATS`: restored by the kernel even if we crash), a no-op
//! `cgroup_skb` program linked at the cgroup2 root (a BPF link: detached when
//! its fd closes, even on SIGKILL), and per-program counters from `bpftool`.

use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `BPF_CGROUP_INET_INGRESS`; egress is 1.
pub(crate) const ATTACH_INGRESS: u32 = 0;
/// `BPF_CGROUP_INET_EGRESS`.
pub(crate) const ATTACH_EGRESS: u32 = 1;
/// Size of the `union bpf_attr` prefix we fill; the rest must be zero.
const ATTR_LEN: usize = 128;

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr prefix of ATTR_LEN bytes
    // that outlives the call; every pointer inside it points into live buffers.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as libc::c_uint) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Run-time statistics on while this lives.
pub(crate) struct StatsOn {
    _fd: OwnedFd,
}

impl StatsOn {
    /// `BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)`.
    pub(crate) fn enable() -> Result<Self> {
        let mut attr = [0u8; ATTR_LEN];
        // type = BPF_STATS_RUN_TIME (0): already zero.
        let fd = bpf(BPF_ENABLE_STATS, &mut attr).context("BPF_ENABLE_STATS")?;
        Ok(Self { _fd: fd })
    }
}

/// A no-op `cgroup_skb` program (`r0 = 1; exit`: let the packet pass) linked
/// at a cgroup; unlinked and unloaded on drop.
pub(crate) struct Noop {
    _link: OwnedFd,
    _prog: OwnedFd,
    /// The name `bpftool` shows.
    pub(crate) name: &'static str,
}

impl Noop {
    /// Loads and links the no-op on `attach_type` ([`ATTACH_INGRESS`] or
    /// [`ATTACH_EGRESS`]) of the cgroup directory `cgroup`.
    pub(crate) fn attach(cgroup: &std::path::Path, attach_type: u32) -> Result<Self> {
        use std::os::fd::AsRawFd as _;
        let name: &'static str = if attach_type == ATTACH_EGRESS { "ktb_noop_egress" } else { "ktb_noop_ingres" };
        // mov64 r0, 1 ; exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; ATTR_LEN];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_SKB.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        let n = name.len().min(15);
        attr[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
        attr[68..72].copy_from_slice(&attach_type.to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading the no-op cgroup_skb program")?;
        let cg = std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        let mut attr = [0u8; ATTR_LEN];
        attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(cg.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
        // flags stay 0: cgroup links always run next to other programs (multi).
        let link = bpf(BPF_LINK_CREATE, &mut attr).context("linking the no-op at the cgroup")?;
        Ok(Self { _link: link, _prog: prog, name })
    }
}

/// One program's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgStats {
    /// Name (15 characters at most: the kernel truncates).
    pub(crate) name: String,
    /// Type as bpftool prints it (`cgroup_skb`, `tracing`, ...).
    pub(crate) kind: String,
    /// Nanoseconds spent running it.
    pub(crate) run_time_ns: u64,
    /// Invocations.
    pub(crate) run_cnt: u64,
}

/// Every loaded program's counters, by id (`bpftool -j prog show`).
pub(crate) fn snapshot() -> Result<BTreeMap<u64, ProgStats>> {
    let out = super::sys::run(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    parse_snapshot(&out)
}

fn parse_snapshot(json: &str) -> Result<BTreeMap<u64, ProgStats>> {
    let v: serde_json::Value = serde_json::from_str(json).context("bpftool JSON")?;
    let Some(list) = v.as_array() else { bail!("bpftool: not a list") };
    let mut m = BTreeMap::new();
    for p in list {
        let Some(id) = p.get("id").and_then(serde_json::Value::as_u64) else { continue };
        let s = |k: &str| p.get(k).and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
        let n = |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        m.insert(
            id,
            ProgStats { name: s("name"), kind: s("type"), run_time_ns: n("run_time_ns"), run_cnt: n("run_cnt") },
        );
    }
    Ok(m)
}

/// Counter growth of the programs in `ids` between two snapshots.
pub(crate) fn delta(
    before: &BTreeMap<u64, ProgStats>,
    after: &BTreeMap<u64, ProgStats>,
    ids: &[u64],
) -> Vec<ProgStats> {
    ids.iter()
        .filter_map(|id| {
            let a = after.get(id)?;
            let b = before.get(id).cloned().unwrap_or_default();
            Some(ProgStats {
                name: a.name.clone(),
                kind: a.kind.clone(),
                run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpftool_json() {
        let j = r#"[{"id":7,"type":"cgroup_skb","name":"dns_egress","run_time_ns":500,"run_cnt":10},
                    {"id":8,"type":"tracing","name":"drop_kfree_skb"},{"name":"no id"}]"#;
        let m = parse_snapshot(j).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&7].run_cnt, 10);
        assert_eq!(m[&8].run_time_ns, 0);
        let mut after = m.clone();
        after.get_mut(&7).unwrap().run_time_ns = 1500;
        after.get_mut(&7).unwrap().run_cnt = 20;
        let d = delta(&m, &after, &[7, 99]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].run_time_ns, d[0].run_cnt), (1000, 10));
        assert!(parse_snapshot("{}").is_err());
    }
}
