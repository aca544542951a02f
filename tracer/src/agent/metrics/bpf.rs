//! Run statistics of ktrace's BPF programs, as the kernel keeps them.

use std::{collections::BTreeMap, os::fd::OwnedFd};

/// Kernel limit of a BPF object name, NUL included (`BPF_OBJ_NAME_LEN`).
const BPF_OBJ_NAME_LEN: usize = 16;

/// Run statistics of one BPF program (only nonzero while [`enable_bpf_stats`] is held).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStat {
    /// Program name (the full function name, not the kernel's 15-byte one).
    pub name: String,
    /// Times it ran.
    pub run_count: u64,
    /// Total time it ran, in ns.
    pub run_time_ns: u64,
}

/// Turns on kernel-wide BPF run statistics (`BPF_ENABLE_STATS`, Linux 5.8+)
/// for as long as the returned descriptor is open. None when not permitted
/// or not supported; statistics then stay zero.
#[must_use]
pub fn enable_bpf_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::debug!("BPF run statistics unavailable: {e}");
            None
        }
    }
}

/// Run statistics of the loaded BPF programs named in `names`, summed per
/// name (the kernel keeps only the first 15 bytes of a name; programs of
/// other processes with the same name are included). Empty when the
/// programs cannot be listed (no `CAP_SYS_ADMIN`).
#[must_use]
pub fn bpf_program_stats(names: &[&str]) -> Vec<ProgramStat> {
    let mut out: BTreeMap<&str, ProgramStat> = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                log::debug!("listing BPF programs: {e}");
                continue;
            }
        };
        let kernel = info.name();
        let Some(name) = names.iter().find(|n| kernel_name_matches(n, kernel)) else { continue };
        let s = out.entry(name).or_insert_with(|| ProgramStat { name: (*name).to_owned(), ..ProgramStat::default() });
        s.run_count = s.run_count.saturating_add(info.run_count());
        s.run_time_ns = s.run_time_ns.saturating_add(u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX));
    }
    out.into_values().collect()
}

pub(super) fn kernel_name_matches(full: &str, kernel: &[u8]) -> bool {
    let b = full.as_bytes();
    !kernel.is_empty() && kernel == &b[..b.len().min(BPF_OBJ_NAME_LEN - 1)]
}
