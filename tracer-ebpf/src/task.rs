//! The current task: pid/tgid, process and thread names, network namespace.
//! Shared by the families whose hooks may run in the sending process.

use core::ptr::read_volatile;

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_get_current_task, bpf_probe_read_kernel},
};
use tracer_common::{EventHeader, KernelOffsets, flags, pid_source};

use crate::{OFFSETS, PID_SOURCE, TASK_BTF, kread};

/// Fills pid/comm/netns of the current task into a header (tracepoints run in
/// whatever context the kernel was in: the caller decides if that is
/// meaningful). Returns the netns inode (0 = unknown) and the flags to add
/// to the header (`HAS_PROCESS`): the caller stores them, so a header in ring
/// memory is only written, never read back (a read of a ring line that is
/// still on its way stalls the program).
///
/// `in_skb`: called from a `cgroup_skb` program, where `PID_SOURCE` says how
/// to get the pid (`bpf_get_current_pid_tgid` is only allowed there since
/// 6.10); tracepoints always have the helper.
#[inline(always)]
pub(crate) fn fill_task(hdr: &mut EventHeader, in_skb: bool) -> (u32, u16) {
    // SAFETY: loader-written globals.
    let (off, src) = unsafe {
        (
            read_volatile(&raw const OFFSETS),
            if in_skb { read_volatile(&raw const PID_SOURCE) } else { pid_source::HELPER },
        )
    };
    if src == pid_source::HELPER {
        let id = bpf_get_current_pid_tgid();
        hdr.tgid = (id >> 32) as u32;
        hdr.tid = id as u32;
        if hdr.tgid == 0 {
            return (0, 0);
        }
    } else if src != pid_source::TASK {
        return (0, 0);
    }
    // The helper gave a process; the task read may still give one.
    let fl = if src == pid_source::HELPER { flags::HAS_PROCESS } else { 0 };
    if off.valid == 0 {
        crate::log::trace!("task: no BTF offsets, no process names or netns");
        return (0, fl);
    }
    let pid_from_task = src == pid_source::TASK;
    // SAFETY: loader-written global.
    if unsafe { read_volatile(&raw const TASK_BTF) } != 0 {
        // SAFETY: a trusted BTF pointer to the current task; every load below
        // is at an offset userspace took from this kernel's BTF, so the
        // verifier checks it against the field's type and makes it fault-safe.
        return unsafe { fill_task_btf(hdr, &off, pid_from_task, fl) };
    }
    // SAFETY: helper without arguments; probe reads at BTF offsets.
    unsafe {
        let task = bpf_get_current_task();
        if task == 0 {
            crate::log::debug!("task: bpf_get_current_task returned NULL");
            return (0, fl);
        }
        let mut fl = fl;
        if pid_from_task {
            hdr.tid = kread::<u32>(task, off.task_pid).unwrap_or(0);
            hdr.tgid = kread::<u32>(task, off.task_tgid).unwrap_or(0);
            if hdr.tgid == 0 {
                return (0, 0);
            }
            fl |= flags::HAS_PROCESS;
        }
        let _ = bpf_probe_read_kernel(
            hdr.thread_comm.as_mut_ptr().cast(),
            16,
            (task + u64::from(off.task_comm)) as *const _,
        );
        if let Some(leader) = kread::<u64>(task, off.task_group_leader) {
            let _ = bpf_probe_read_kernel(
                hdr.comm.as_mut_ptr().cast(),
                16,
                (leader + u64::from(off.task_comm)) as *const _,
            );
        }
        if let Some(nsproxy) = kread::<u64>(task, off.task_nsproxy)
            && nsproxy != 0
            && let Some(net) = kread::<u64>(nsproxy, off.nsproxy_net_ns)
            && let Some(ino) = kread::<u32>(net, off.net_ns_inum)
        {
            return (ino, fl);
        }
        (0, fl)
    }
}

/// [`fill_task`] with direct loads through BTF pointers.
///
/// # Safety
/// `off` must hold this kernel's BTF offsets (the verifier rejects the
/// program otherwise, which userspace handles by loading it with `TASK_BTF` 0).
#[inline(always)]
unsafe fn fill_task_btf(hdr: &mut EventHeader, off: &KernelOffsets, pid_from_task: bool, fl: u16) -> (u32, u16) {
    // SAFETY: see the function's contract; loads through BTF pointers are
    // rewritten by the verifier into exception-table loads (a NULL or bad
    // pointer reads as zero).
    unsafe {
        let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf() as usize;
        let mut fl = fl;
        if pid_from_task {
            hdr.tid = read_volatile((task + off.task_pid as usize) as *const u32);
            hdr.tgid = read_volatile((task + off.task_tgid as usize) as *const u32);
            if hdr.tgid == 0 {
                return (0, 0);
            }
            fl |= flags::HAS_PROCESS;
        }
        hdr.thread_comm = read_volatile((task + off.task_comm as usize) as *const [u8; 16]);
        let leader: usize = read_volatile((task + off.task_group_leader as usize) as *const usize);
        hdr.comm = read_volatile((leader + off.task_comm as usize) as *const [u8; 16]);
        let nsproxy: usize = read_volatile((task + off.task_nsproxy as usize) as *const usize);
        if nsproxy == 0 {
            return (0, fl);
        }
        let net: usize = read_volatile((nsproxy + off.nsproxy_net_ns as usize) as *const usize);
        if net == 0 {
            return (0, fl);
        }
        (read_volatile((net + off.net_ns_inum as usize) as *const u32), fl)
    }
}
