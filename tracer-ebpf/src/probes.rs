//! `ktrace doctor`'s feature probes: each program does nothing, loading it
//! is the test of whether this kernel allows the hook kind.

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, classifier, fentry, kprobe, raw_tracepoint, socket_filter, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, SkBuffContext, TcContext,
        TracePointContext,
    },
};

#[tracepoint]
fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "kfree_skb")]
fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[kprobe]
fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "tcp_connect")]
fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[classifier]
fn probe_tc(_ctx: TcContext) -> i32 {
    0 // TC_ACT_OK
}

#[socket_filter]
fn probe_socket_filter(_ctx: SkBuffContext) -> i64 {
    0
}

#[cgroup_skb]
fn probe_cgroup_skb(_ctx: SkBuffContext) -> i32 {
    1
}
