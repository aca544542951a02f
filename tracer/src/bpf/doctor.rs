//! `ktrace doctor`: load and attach one no-op program of every hook kind for
//! real, and report what works, what does not and why, and what it means for
//! ktrace's features. Every probe detaches before the next one starts.

use std::{fs::File, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapType,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, KProbe, ProgramType, RawTracePoint,
        SchedClassifier, SocketFilter, TcAttachType, TracePoint,
    },
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use serde::Serialize;

use super::{OBJECT, cgroup2_root, raise_memlock};

/// Outcome of one probe.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Hook or facility, e.g. `tp_btf`.
    pub name: &'static str,
    /// Whether it worked.
    pub ok: bool,
    /// Error or detail.
    pub detail: String,
    /// Which ktrace features it enables.
    pub enables: &'static str,
    /// Whether ktrace needs it (false = optional extra).
    pub required: bool,
}

fn check(name: &'static str, enables: &'static str, required: bool, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check { name, ok: true, detail, enables, required },
        Err(detail) => Check { name, ok: false, detail, enables, required },
    }
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Makes sure tracefs is mounted (tracepoint attach needs event ids from it).
pub fn ensure_tracefs() -> Result<(), String> {
    if Path::new("/sys/kernel/tracing/events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("tracefs not mounted and mounting it failed: {e}"))
}

fn load_object() -> Result<Ebpf, String> {
    if OBJECT.is_empty() {
        return Err("binary built without its eBPF object (AYA_BUILD_SKIP)".into());
    }
    raise_memlock();
    EbpfLoader::new().map_max_entries(tracer_common::MAP_EVENTS, 4096).load(OBJECT).map_err(|e| err_chain(&e))
}

macro_rules! prog {
    ($ebpf:expr, $name:literal, $ty:ty) => {{
        let p: &mut $ty = $ebpf
            .program_mut($name)
            .ok_or_else(|| format!("{} missing from object", $name))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err_chain(&e))?;
        p
    }};
}

/// Loads ktrace's real `dns_egress` with `TASK_BTF` set (as `DnsCapture`
/// first tries), without attaching it: the verifier's answer is the result.
fn task_btf() -> Result<String, String> {
    let offsets = super::kernel_offsets().ok_or("no BTF offsets")?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(tracer_common::MAP_EVENTS, 4096)
        .override_global("OFFSETS", &offsets, true)
        .override_global("TASK_BTF", &1u32, true)
        .load(OBJECT)
        .map_err(|e| err_chain(&e))?;
    let p = prog!(ebpf, "dns_egress", CgroupSkb);
    p.load().map_err(|e| format!("verifier refused it, ktrace uses probe reads: {}", err_chain(&e)))?;
    Ok("dns_egress reads the task with direct loads".into())
}

/// Runs every probe. Needs root; without it every probe reports the permission error.
#[must_use]
pub fn run() -> Vec<Check> {
    let mut out = Vec::new();
    let btf = aya::Btf::from_sys_fs();
    out.push(check(
        "btf",
        "process names (thread-group leader), netns inodes, drop-reason names; tp_btf/fentry",
        true,
        match (&btf, super::btf::Btf::from_sys_fs().and_then(|b| super::btf::kernel_offsets(&b))) {
            (Ok(_), Ok(o)) => Ok(format!(
                "/sys/kernel/btf/vmlinux: task_struct.comm at {}, group_leader at {}",
                o.task_comm, o.task_group_leader
            )),
            (Err(e), _) => Err(err_chain(e)),
            (_, Err(e)) => Err(format!("offsets: {e}")),
        },
    ));
    out.push(check(
        "ring_buffer",
        "event transport to userspace (all features)",
        true,
        match is_map_supported(MapType::RingBuf) {
            Ok(true) => Ok("BPF_MAP_TYPE_RINGBUF".into()),
            Ok(false) => Err("not supported (kernel < 5.8)".into()),
            Err(e) => Err(err_chain(&e)),
        },
    ));
    let mut ebpf = match load_object() {
        Ok(e) => e,
        Err(e) => {
            out.push(check("object", "everything", true, Err(e)));
            return out;
        }
    };
    let tracefs = ensure_tracefs();
    out.push(check(
        "cgroup_skb",
        "ktrace dns / record: DNS from every network namespace (cgroup2 root)",
        true,
        (|| {
            let root = cgroup2_root().map_err(|e| e.to_string())?;
            let cg = File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            let p = prog!(ebpf, "probe_cgroup_skb", CgroupSkb);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p
                .attach(cg.as_fd(), CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
                .map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok(format!("attached at {}", root.display()))
        })(),
    ));
    out.push(check(
        "netns_cookie",
        "network namespace of received packets (ingress side)",
        false,
        match is_helper_supported(ProgramType::CgroupSkb, BpfHelper::BPF_FUNC_get_netns_cookie) {
            Ok(true) => Ok("bpf_get_netns_cookie in cgroup_skb".into()),
            Ok(false) => Err("bpf_get_netns_cookie not allowed in cgroup_skb (kernel < 6.15?)".into()),
            Err(e) => Err(err_chain(&e)),
        },
    ));
    out.push(check(
        "task_btf",
        "cheaper process/netns reads on egress (bpf_get_current_task_btf + BTF-checked loads; else probe reads)",
        false,
        task_btf(),
    ));
    out.push(check(
        "tracepoint",
        "ktrace drops: failed connections (sock:inet_sock_set_state, tcp:tcp_retransmit_skb)",
        true,
        (|| {
            tracefs.clone()?;
            let p = prog!(ebpf, "probe_tracepoint", TracePoint);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p.attach("sched", "sched_process_fork").map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("sched:sched_process_fork".into())
        })(),
    ));
    out.push(check(
        "tp_btf",
        "ktrace drops: kernel drop reasons (skb:kfree_skb with skb_drop_reason)",
        true,
        (|| {
            let btf = btf.as_ref().map_err(|e| err_chain(e))?;
            let p = prog!(ebpf, "probe_tp_btf", BtfTracePoint);
            p.load("kfree_skb", btf).map_err(|e| err_chain(&e))?;
            let id = p.attach().map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("kfree_skb".into())
        })(),
    ));
    out.push(check(
        "raw_tracepoint",
        "fallback for tp_btf on kernels without BTF",
        false,
        (|| {
            let p = prog!(ebpf, "probe_raw_tracepoint", RawTracePoint);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p.attach("sched_process_exit").map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("sched_process_exit".into())
        })(),
    ));
    out.push(check(
        "tc",
        "ktrace drops: underlay fingerprints for fabric_loss (TCX, no qdisc needed)",
        true,
        probe_tc(&mut ebpf),
    ));
    out.push(check(
        "socket_filter",
        "optional: capture on one socket",
        false,
        (|| {
            let p = prog!(ebpf, "probe_socket_filter", SocketFilter);
            p.load().map_err(|e| err_chain(&e))?;
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            p.attach(&sock).map_err(|e| err_chain(&e))?;
            SocketFilter::detach(&sock).map_err(|e| err_chain(&e))?;
            Ok("attached to a UDP socket".into())
        })(),
    ));
    out.push(check(
        "kprobe",
        "optional extra only: ktrace never requires kprobes",
        false,
        (|| {
            let p = prog!(ebpf, "probe_kprobe", KProbe);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p.attach("tcp_connect", 0).map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("tcp_connect".into())
        })(),
    ));
    out.push(check(
        "fentry",
        "optional extra only: ktrace never requires fentry/fexit",
        false,
        (|| {
            let btf = btf.as_ref().map_err(|e| err_chain(e))?;
            let p = prog!(ebpf, "probe_fentry", FEntry);
            p.load("tcp_connect", btf).map_err(|e| err_chain(&e))?;
            let id = p.attach().map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("tcp_connect".into())
        })(),
    ));
    out
}

/// Attaches the tc probe to `lo` inside a throw-away network namespace, so
/// the host's interfaces are never touched.
fn probe_tc(ebpf: &mut Ebpf) -> Result<String, String> {
    let p = prog!(ebpf, "probe_tc", SchedClassifier);
    p.load().map_err(|e| err_chain(&e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<String, String> {
            // The unshare affects only this thread, which ends right after.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let id = p.attach("lo", TcAttachType::Ingress).map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("TCX ingress on lo in a temporary netns".into())
        })
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
    })
}
