//! What the programs need to read the current task (and the `sk_buff`,
//! `net_device` and `sock` fields the other families read): offsets from BTF,
//! written into frozen globals at load time.

/// Offsets into kernel structures, read from BTF in userspace at load time
/// and written into the program's read-only globals (Rust eBPF has no CO-RE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `offsetof(struct task_struct, group_leader)`.
    pub task_group_leader: u32,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm: u32,
    /// `offsetof(struct task_struct, nsproxy)`.
    pub task_nsproxy: u32,
    /// `offsetof(struct nsproxy, net_ns)`.
    pub nsproxy_net_ns: u32,
    /// `offsetof(struct net, ns) + offsetof(struct ns_common, inum)`.
    pub net_ns_inum: u32,
    /// Non-zero when the offsets above are valid.
    pub valid: u32,
    /// `offsetof(struct sk_buff, head)`.
    pub skb_head: u32,
    /// `offsetof(struct sk_buff, network_header)` (u16).
    pub skb_network_header: u32,
    /// `offsetof(struct sk_buff, len)` (u32).
    pub skb_len: u32,
    /// `offsetof(struct sk_buff, dev)`.
    pub skb_dev: u32,
    /// `offsetof(struct net_device, ifindex)` (int).
    pub dev_ifindex: u32,
    /// `offsetof(struct net_device, nd_net)` (`possible_net_t`: one `struct net *`).
    pub dev_nd_net: u32,
    /// `offsetof(struct sock, __sk_common.skc_state)` (u8).
    pub sock_state: u32,
    /// Non-zero when the `sk_buff/net_device/sock` offsets are valid.
    pub skb_valid: u32,
    /// `offsetof(struct task_struct, pid)` (`pid_t`): the thread id, read from
    /// the task where `bpf_get_current_pid_tgid` is not allowed (`cgroup_skb`
    /// before 6.10). 0 = unknown.
    pub task_pid: u32,
    /// `offsetof(struct task_struct, tgid)` (`pid_t`). 0 = unknown.
    pub task_tgid: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 64);

/// Where the `cgroup_skb` programs take the sender's pid/tgid from (the
/// `PID_SOURCE` global, chosen by userspace at load time).
pub mod pid_source {
    /// `bpf_get_current_pid_tgid` (allowed in `cgroup_skb` since 6.10).
    pub const HELPER: u32 = 0;
    /// `task_struct.pid`/`.tgid` of `bpf_get_current_task` at BTF offsets.
    pub const TASK: u32 = 1;
    /// Neither is available: no process attribution on egress.
    pub const NONE: u32 = 2;
}
