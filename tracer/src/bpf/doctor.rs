//! `ktrace doctor`: load and attach ktrace's **real** programs, with the
//! globals ktrace itself would set on this kernel ([`super::Globals`]), and
//! report per program whether the verifier accepts it (and why not), which
//! fallback path is active (task reads via BTF loads or probe reads, netns
//! cookie or inode, TCX or classic tc + clsact), and what that means for each
//! command. Stand-in programs are loaded only for hooks no real program uses
//! (kprobe, fentry, raw tracepoint, socket filter: informational). Every
//! attachment is undone before the next starts; tc probes run in a
//! throw-away network namespace, cgroup attaches on an empty child cgroup.

use std::{fs::File, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapType,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, KProbe, LinkOrder, ProgramType,
        RawTracePoint, SchedClassifier, SocketFilter, TcAttachType, TracePoint, tc::TcAttachOptions,
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
    /// The path ktrace takes for it on this kernel (`tcx`, `clsact`,
    /// `task_btf`, `probe_read`, `netns_cookie`, `netns_inode`), if any.
    pub path: Option<String>,
    /// ktrace's real programs this check loaded (empty = a stand-in or no program).
    pub programs: Vec<&'static str>,
}

fn check(name: &'static str, enables: &'static str, required: bool, r: Result<String, String>) -> Check {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check { name, ok, detail, enables, required, path: None, programs: Vec::new() }
}

/// One of ktrace's real programs on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCheck {
    /// Program name in the object (`dns_egress`, `underlay_ingress`, …).
    pub name: &'static str,
    /// Hook it runs on (`cgroup_skb/egress`, `tp_btf/kfree_skb`, `tc/egress`, …).
    pub hook: &'static str,
    /// Whether the verifier accepted it (on some path).
    pub loads: bool,
    /// Whether it attached (None: not tried because it did not load).
    pub attaches: Option<bool>,
    /// Active path for it (see [`Check::path`]).
    pub path: Option<String>,
    /// The verifier's (or kernel's) reason when it did not load, or when the
    /// preferred path was refused and a fallback is used.
    pub reason: Option<String>,
    /// Instructions the verifier processed (the kernel's `verified_insns`, >= 5.16).
    pub verified_insns: Option<u32>,
    /// Commands that need it.
    pub used_by: &'static str,
}

/// What one command can do on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureCheck {
    /// `dns`, `drops`, `record`, `agent`.
    pub command: &'static str,
    /// `yes`, `degraded` or `no`.
    pub works: &'static str,
    /// What is missing or which fallback it runs on.
    pub detail: String,
}

/// Everything `ktrace doctor` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Per hook kind / facility (the original `type: "doctor"` records).
    pub checks: Vec<Check>,
    /// Per real program.
    pub programs: Vec<ProgramCheck>,
    /// Per command.
    pub features: Vec<FeatureCheck>,
    /// Stale ktrace tc state found (and removed) in this network namespace.
    pub tc_cleanup: Option<super::tc::Cleanup>,
    /// Why the sweep for stale tc state failed, if it did.
    pub tc_cleanup_error: Option<String>,
}

/// The useful end of a verifier log: its last lines, minus the statistics.
#[must_use]
pub fn verifier_reason(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("-- END PROG LOAD LOG --")
        })
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    tail.join(" / ")
}

/// A load error as one line: errno and the verifier's reason.
fn load_reason(e: &dyn std::error::Error) -> String {
    // Not the whole chain: its source (the errno) would follow the log again.
    let full = e.to_string();
    if !full.contains("Verifier output:") {
        return err_chain(e);
    }
    match full.split_once("Verifier output:") {
        Some((head, log)) => {
            let head = head.trim().trim_end_matches('.');
            let head = head.strip_prefix("the BPF_PROG_LOAD syscall returned ").unwrap_or(head);
            let r = verifier_reason(log);
            if r.is_empty() { head.to_owned() } else { format!("{head}: {r}") }
        }
        None => full,
    }
}

pub(crate) fn err_chain(e: &dyn std::error::Error) -> String {
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
    EbpfLoader::new().load(OBJECT).map_err(|e| err_chain(&e))
}

macro_rules! prog {
    ($ebpf:expr, $name:expr, $ty:ty) => {{
        let p: &mut $ty = $ebpf
            .program_mut($name)
            .ok_or_else(|| format!("{} missing from object", $name))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err_chain(&e))?;
        p
    }};
}

fn verified(p: &impl InfoProgram) -> Option<u32> {
    p.verified().ok().flatten()
}

/// The one thing doctor needs from every program type: its kernel info.
trait InfoProgram {
    fn verified(&self) -> Result<Option<u32>, aya::programs::ProgramError>;
}

macro_rules! info_program {
    ($($t:ty),*) => {$(
        impl InfoProgram for $t {
            fn verified(&self) -> Result<Option<u32>, aya::programs::ProgramError> {
                Ok(self.info()?.verified_instruction_count())
            }
        }
    )*};
}
info_program!(CgroupSkb, BtfTracePoint, TracePoint, SchedClassifier);

const USED_DNS: &str = "dns, drops, record, agent";
const USED_DROPS: &str = "drops, record --drops, agent";
const USED_UNDERLAY: &str = "drops/record/agent --underlay";

/// Runs every check. Needs root; without it every probe reports the permission error.
#[must_use]
pub fn run() -> Report {
    let mut rep = Report::default();
    let btf = aya::Btf::from_sys_fs();
    rep.checks.push(check(
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
    rep.checks.push(check(
        "ring_buffer",
        "event transport to userspace (all features)",
        true,
        match is_map_supported(MapType::RingBuf) {
            Ok(true) => Ok("BPF_MAP_TYPE_RINGBUF".into()),
            Ok(false) => Err("not supported (kernel < 5.8)".into()),
            Err(e) => Err(err_chain(&e)),
        },
    ));
    if OBJECT.is_empty() {
        rep.checks.push(check(
            "object",
            "everything",
            true,
            Err("binary built without its eBPF object (AYA_BUILD_SKIP)".into()),
        ));
        return rep;
    }
    raise_memlock();
    match super::tc::cleanup_stale() {
        Ok(c) => rep.tc_cleanup = Some(c),
        Err(e) => rep.tc_cleanup_error = Some(format!("{}: {e}", super::tc::STATE_DIR)),
    }
    let tracefs = ensure_tracefs();
    // Exactly the globals `ktrace drops` / `record --drops` would set here.
    let g = super::Globals::new(&super::CaptureConfig { drops: true, ring_bytes: 4096, ..Default::default() });
    real_dns(&g, &mut rep);
    real_drops(&g, btf.as_ref().ok(), &tracefs, &mut rep);
    real_underlay(&g, &mut rep);
    stand_ins(btf.as_ref().ok(), &mut rep);
    features(&g, &mut rep);
    rep
}

/// A cgroup to attach the DNS programs to for the check: an empty child of
/// the cgroup2 root (nothing runs in it, so nothing is observed), else the root.
struct TempCgroup(std::path::PathBuf, bool);

impl TempCgroup {
    fn new() -> Result<Self, String> {
        let root = cgroup2_root().map_err(|e| e.to_string())?;
        let child = root.join(format!("ktrace-doctor-{}", std::process::id()));
        Ok(match std::fs::create_dir(&child) {
            Ok(()) => Self(child, true),
            Err(_) => Self(root, false),
        })
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

/// `dns_egress` / `dns_ingress`: the task-read path (BTF loads, else probe
/// reads) as `Probes` chooses it, the netns path, and a cgroup attach.
fn real_dns(g: &super::Globals, rep: &mut Report) {
    let want_btf = g.has_offsets && std::env::var_os("KTRACE_NO_TASK_BTF").is_none();
    let mut btf_refusal = None;
    let attempt = |task_btf: u32| -> Result<Ebpf, (&'static str, String)> {
        let mut ebpf = g.load(task_btf).map_err(|e| ("dns_egress", err_chain(&e)))?;
        for name in ["dns_egress", "dns_ingress"] {
            let p: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or((name, "missing from object".to_owned()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| (name, err_chain(&e)))?;
            p.load().map_err(|e| (name, load_reason(&e)))?;
        }
        Ok(ebpf)
    };
    let mut result = if want_btf { attempt(1) } else { Err(("dns_egress", String::new())) };
    let mut task_path = "task_btf";
    if let Err((_, why)) = &result {
        if want_btf {
            btf_refusal = Some(why.clone());
        }
        task_path = "probe_read";
        result = attempt(0);
    }
    let netns_path = if g.has_netns_cookie {
        "netns_cookie"
    } else if g.has_offsets {
        "netns_inode"
    } else {
        "none"
    };
    let mut cg_check = check(
        "cgroup_skb",
        "ktrace dns / record: DNS from every network namespace (cgroup2 root)",
        true,
        Ok(String::new()),
    );
    cg_check.programs = vec!["dns_egress", "dns_ingress"];
    match result {
        Ok(mut ebpf) => {
            let attach = (|| -> Result<String, String> {
                let cg = TempCgroup::new()?;
                let f = File::open(&cg.0).map_err(|e| format!("{}: {e}", cg.0.display()))?;
                for (name, ty) in
                    [("dns_egress", CgroupSkbAttachType::Egress), ("dns_ingress", CgroupSkbAttachType::Ingress)]
                {
                    let p = prog!(ebpf, name, CgroupSkb);
                    let id = p
                        .attach(f.as_fd(), ty, CgroupAttachMode::Single)
                        .map_err(|e| format!("{name}: {}", err_chain(&e)))?;
                    p.detach(id).map_err(|e| err_chain(&e))?;
                }
                Ok(format!("real dns_egress + dns_ingress attached at {}", cg.0.display()))
            })();
            for (name, hook) in [("dns_egress", "cgroup_skb/egress"), ("dns_ingress", "cgroup_skb/ingress")] {
                let v = ebpf.program(name).and_then(|p| <&CgroupSkb>::try_from(p).ok()).and_then(verified);
                rep.programs.push(ProgramCheck {
                    name,
                    hook,
                    loads: true,
                    attaches: Some(attach.is_ok()),
                    path: Some(if name == "dns_egress" { task_path } else { netns_path }.to_owned()),
                    reason: if name == "dns_egress" { btf_refusal.clone() } else { None },
                    verified_insns: v,
                    used_by: USED_DNS,
                });
            }
            cg_check.ok = attach.is_ok();
            cg_check.detail = attach.unwrap_or_else(|e| e);
            cg_check.path = Some(format!("{task_path}, {netns_path}"));
        }
        Err((failed, why)) => {
            for (name, hook) in [("dns_egress", "cgroup_skb/egress"), ("dns_ingress", "cgroup_skb/ingress")] {
                rep.programs.push(ProgramCheck {
                    name,
                    hook,
                    loads: name != failed && failed != "dns_egress",
                    attaches: None,
                    path: None,
                    reason: (name == failed).then(|| why.clone()),
                    verified_insns: None,
                    used_by: USED_DNS,
                });
            }
            cg_check.ok = false;
            cg_check.detail = format!("{failed} refused by the verifier: {why}");
        }
    }
    rep.checks.push(cg_check);
    let mut nc = check(
        "netns_cookie",
        "network namespace of received packets (ingress side)",
        false,
        match is_helper_supported(ProgramType::CgroupSkb, BpfHelper::BPF_FUNC_get_netns_cookie) {
            Ok(true) => Ok("bpf_get_netns_cookie in cgroup_skb".into()),
            Ok(false) => Err(format!(
                "bpf_get_netns_cookie not allowed in cgroup_skb (kernel < 6.15?); ktrace uses {netns_path}"
            )),
            Err(e) => Err(err_chain(&e)),
        },
    );
    nc.path = Some(netns_path.into());
    nc.programs = vec!["dns_ingress"];
    rep.checks.push(nc);
    let mut tb = check(
        "task_btf",
        "cheaper process/netns reads on egress (bpf_get_current_task_btf + BTF-checked loads; else probe reads)",
        false,
        if task_path == "task_btf" {
            Ok("dns_egress reads the task with direct loads".into())
        } else if let Some(r) = &btf_refusal {
            Err(format!("verifier refused it, ktrace uses probe reads: {r}"))
        } else {
            Err("not tried (no BTF offsets or KTRACE_NO_TASK_BTF); ktrace uses probe reads".into())
        },
    );
    tb.path = Some(task_path.into());
    tb.programs = vec!["dns_egress"];
    rep.checks.push(tb);
}

/// `drop_kfree_skb` (`tp_btf`) and the `conn_*` tracepoints, attached and detached.
fn real_drops(g: &super::Globals, btf: Option<&aya::Btf>, tracefs: &Result<(), String>, rep: &mut Report) {
    let mut ebpf = match g.load(0) {
        Ok(e) => e,
        Err(e) => {
            rep.checks.push(check("tp_btf", "ktrace drops: kernel drop reasons", true, Err(err_chain(&e))));
            return;
        }
    };
    let res = (|| -> Result<(String, Option<u32>), (bool, String)> {
        let btf = btf.ok_or((false, "no kernel BTF".to_owned()))?;
        let p: &mut BtfTracePoint = ebpf
            .program_mut("drop_kfree_skb")
            .ok_or((false, "missing from object".to_owned()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| (false, err_chain(&e)))?;
        p.load("kfree_skb", btf).map_err(|e| (false, load_reason(&e)))?;
        let v = verified(p);
        let id = p.attach().map_err(|e| (true, err_chain(&e)))?;
        p.detach(id).map_err(|e| (true, err_chain(&e)))?;
        Ok(("real drop_kfree_skb attached to kfree_skb".into(), v))
    })();
    rep.programs.push(ProgramCheck {
        name: "drop_kfree_skb",
        hook: "tp_btf/kfree_skb",
        loads: matches!(res, Ok(_) | Err((true, _))),
        attaches: match &res {
            Ok(_) => Some(true),
            Err((true, _)) => Some(false),
            Err((false, _)) => None,
        },
        path: None,
        reason: res.as_ref().err().map(|(_, e)| e.clone()),
        verified_insns: res.as_ref().ok().and_then(|(_, v)| *v),
        used_by: USED_DROPS,
    });
    let mut chk = check(
        "tp_btf",
        "ktrace drops: kernel drop reasons (skb:kfree_skb with skb_drop_reason)",
        true,
        res.map(|(d, _)| d).map_err(|(_, e)| e),
    );
    chk.programs = vec!["drop_kfree_skb"];
    rep.checks.push(chk);
    let mut failures = Vec::new();
    for (name, cat, tp, _) in super::CONN_TRACEPOINTS {
        let res = (|| -> Result<Option<u32>, (bool, String)> {
            tracefs.clone().map_err(|e| (false, e))?;
            let p: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or((false, "missing from object".to_owned()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| (false, err_chain(&e)))?;
            p.load().map_err(|e| (false, load_reason(&e)))?;
            let v = verified(p);
            let id = p.attach(cat, tp).map_err(|e| (true, err_chain(&e)))?;
            p.detach(id).map_err(|e| (true, err_chain(&e)))?;
            Ok(v)
        })();
        if let Err((_, e)) = &res {
            failures.push(format!("{name} ({cat}:{tp}): {e}"));
        }
        rep.programs.push(ProgramCheck {
            name,
            hook: match name {
                "conn_set_state" => "tracepoint/sock:inet_sock_set_state",
                "conn_recv_reset" => "tracepoint/tcp:tcp_receive_reset",
                "conn_send_reset" => "tracepoint/tcp:tcp_send_reset",
                _ => "tracepoint/tcp:tcp_retransmit_skb",
            },
            loads: matches!(res, Ok(_) | Err((true, _))),
            attaches: match &res {
                Ok(_) => Some(true),
                Err((true, _)) => Some(false),
                Err((false, _)) => None,
            },
            path: None,
            reason: res.as_ref().err().map(|(_, e)| e.clone()),
            verified_insns: res.ok().flatten(),
            used_by: USED_DROPS,
        });
    }
    let mut chk = check(
        "tracepoint",
        "ktrace drops: failed connections (sock:inet_sock_set_state, tcp:tcp_retransmit_skb, resets)",
        true,
        if failures.is_empty() {
            Ok("real conn_* programs attached to their 4 tracepoints".into())
        } else {
            Err(failures.join("; "))
        },
    );
    chk.programs = super::CONN_TRACEPOINTS.iter().map(|(n, ..)| *n).collect();
    rep.checks.push(chk);
}

/// `underlay_egress` / `underlay_ingress`: TCX and classic tc (clsact),
/// each tried on `lo` of a throw-away network namespace.
fn real_underlay(g: &super::Globals, rep: &mut Report) {
    let mut ebpf = match g.load(0) {
        Ok(e) => e,
        Err(e) => {
            rep.checks.push(check("tc", "underlay fingerprints", true, Err(err_chain(&e))));
            return;
        }
    };
    let mut loaded = Vec::new();
    for name in ["underlay_egress", "underlay_ingress"] {
        let r = (|| -> Result<Option<u32>, String> {
            let p = prog!(ebpf, name, SchedClassifier);
            p.load().map_err(|e| load_reason(&e))?;
            Ok(verified(p))
        })();
        loaded.push((name, r));
    }
    let all_loaded = loaded.iter().all(|(_, r)| r.is_ok());
    let (tcx, classic) = if all_loaded {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(Probe, Probe), String> {
                // The unshare affects only this thread, which ends right after.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
                let tcx = probe_tcx(&mut ebpf);
                let classic = super::tc::probe_classic(&mut ebpf, "lo");
                Ok((tcx, classic))
            })
            .join()
            .unwrap_or_else(|_| Err("probe thread panicked".into()))
            .unwrap_or_else(|e| (Err(e.clone()), Err(e)))
        })
    } else {
        (Err("not loaded".into()), Err("not loaded".into()))
    };
    let tcx_wanted = super::tc::tcx_wanted();
    let active = match (&tcx, &classic) {
        (Ok(()), _) if tcx_wanted => Some("tcx"),
        (_, Ok(())) => Some("clsact"),
        _ => None,
    };
    let tcx_note = match (&tcx, tcx_wanted) {
        (_, false) => Some("KTRACE_NO_TCX set: TCX not used".to_owned()),
        (Err(e), true) => Some(format!("TCX: {e}")),
        (Ok(()), true) => None,
    };
    for ((name, r), hook) in loaded.into_iter().zip(["tc/egress", "tc/ingress"]) {
        rep.programs.push(ProgramCheck {
            name,
            hook,
            loads: r.is_ok(),
            attaches: r.is_ok().then_some(active.is_some()),
            path: active.map(str::to_owned),
            reason: match &r {
                Err(e) => Some(e.clone()),
                Ok(_) if active == Some("clsact") => tcx_note.clone(),
                Ok(_) if active.is_none() => classic.clone().err(),
                Ok(_) => None,
            },
            verified_insns: r.ok().flatten(),
            used_by: USED_UNDERLAY,
        });
    }
    let mut c = check(
        "tc",
        "--underlay: fingerprints for fabric_loss (TCX, or classic tc with a clsact qdisc before 6.6)",
        true,
        match (active, &tcx, &classic) {
            (Some("tcx"), _, _) => Ok("real underlay programs attach with TCX (links: nothing outlives ktrace)".into()),
            (Some(_), _, _) => Ok(format!(
                "real underlay programs attach as classic tc filters (prio 0x{:x}) on a clsact qdisc ({}); \
                 removed on exit, or by the next ktrace/doctor after a crash",
                super::tc::PRIO,
                tcx_note.unwrap_or_default()
            )),
            (None, t, c) => Err(format!(
                "TCX: {}; classic tc: {}",
                t.clone().err().unwrap_or_default(),
                c.clone().err().unwrap_or_default()
            )),
        },
    );
    c.path = active.map(str::to_owned);
    c.programs = vec!["underlay_egress", "underlay_ingress"];
    rep.checks.push(c);
}

/// Outcome of attaching (and detaching) on one tc path.
type Probe = Result<(), String>;

fn probe_tcx(ebpf: &mut Ebpf) -> Probe {
    for (name, ty) in [("underlay_egress", TcAttachType::Egress), ("underlay_ingress", TcAttachType::Ingress)] {
        let p = prog!(ebpf, name, SchedClassifier);
        let id = p
            .attach_with_options("lo", ty, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(|e| err_chain(&e))?;
        p.detach(id).map_err(|e| err_chain(&e))?;
    }
    Ok(())
}

/// Hooks no real ktrace program uses: stand-ins, reported for information.
fn stand_ins(btf: Option<&aya::Btf>, rep: &mut Report) {
    let mut ebpf = match load_object() {
        Ok(e) => e,
        Err(e) => {
            rep.checks.push(check("object", "stand-in probes", false, Err(e)));
            return;
        }
    };
    rep.checks.push(check(
        "raw_tracepoint",
        "informational: fallback for tp_btf on kernels without BTF (stand-in program)",
        false,
        (|| {
            let p = prog!(ebpf, "probe_raw_tracepoint", RawTracePoint);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p.attach("sched_process_exit").map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("sched_process_exit".into())
        })(),
    ));
    rep.checks.push(check(
        "socket_filter",
        "informational: capture on one socket (stand-in program)",
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
    rep.checks.push(check(
        "kprobe",
        "informational: ktrace never requires kprobes",
        false,
        (|| {
            let p = prog!(ebpf, "probe_kprobe", KProbe);
            p.load().map_err(|e| err_chain(&e))?;
            let id = p.attach("tcp_connect", 0).map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("tcp_connect".into())
        })(),
    ));
    rep.checks.push(check(
        "fentry",
        "informational: ktrace never requires fentry/fexit",
        false,
        (|| {
            let btf = btf.ok_or("no kernel BTF")?;
            let p = prog!(ebpf, "probe_fentry", FEntry);
            p.load("tcp_connect", btf).map_err(|e| err_chain(&e))?;
            let id = p.attach().map_err(|e| err_chain(&e))?;
            p.detach(id).map_err(|e| err_chain(&e))?;
            Ok("tcp_connect".into())
        })(),
    ));
}

/// What each command can do, from the program results.
fn features(g: &super::Globals, rep: &mut Report) {
    let ok = |name: &str| rep.programs.iter().any(|p| p.name == name && p.loads && p.attaches == Some(true));
    let why = |name: &str| {
        rep.programs
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.reason.clone())
            .unwrap_or_else(|| "not checked".into())
    };
    let dns = ok("dns_egress") && ok("dns_ingress");
    let mut dns_notes = Vec::new();
    if !g.has_offsets {
        dns_notes.push("no BTF offsets: no process names or netns inodes".to_owned());
    }
    if let Some(p) = rep.programs.iter().find(|p| p.name == "dns_egress")
        && let Some(path) = &p.path
    {
        dns_notes.push(format!("task reads: {path}"));
    }
    if let Some(p) = rep.programs.iter().find(|p| p.name == "dns_ingress")
        && let Some(path) = &p.path
    {
        dns_notes.push(format!("netns: {path}"));
    }
    if dns {
        // The same choice the live commands make (socket programs loaded too).
        dns_notes.push(match g.load_capture() {
            Ok((_, _, true)) => {
                "attribution: per socket (sk_storage; cgroup/sock_create, connect4/6, sendmsg4/6)".to_owned()
            }
            Ok(_) => "attribution: per packet (task read at egress; socket hooks refused)".to_owned(),
            Err(e) => format!("attribution: {}", err_chain(&e)),
        });
    }
    let dns_detail = if dns {
        dns_notes.join("; ")
    } else {
        format!(
            "dns_egress/dns_ingress refused: {}",
            if ok("dns_egress") { why("dns_ingress") } else { why("dns_egress") }
        )
    };
    let dns_works = if !dns {
        "no"
    } else if g.has_offsets {
        "yes"
    } else {
        "degraded"
    };
    let reasons = ok("drop_kfree_skb");
    let conns: Vec<&str> = super::CONN_TRACEPOINTS.iter().map(|(n, ..)| *n).filter(|n| !ok(n)).collect();
    let underlay = ok("underlay_egress") && ok("underlay_ingress");
    let tc_path = rep.programs.iter().find(|p| p.name == "underlay_egress").and_then(|p| p.path.clone());
    let mut drop_notes = Vec::new();
    if !reasons {
        drop_notes.push(format!("no kernel drop reasons ({})", why("drop_kfree_skb")));
    }
    if reasons && g.drop_fold.window != 0 {
        let how = if g.drop_fold.pkt_direct != 0 { "direct loads" } else { "probe reads" };
        drop_notes.push(format!("repeats folded (key bytes by {how})"));
    }
    if !conns.is_empty() {
        drop_notes.push(format!("no connection failures from {}", conns.join(", ")));
    }
    drop_notes.push(if underlay {
        format!("--underlay via {}", tc_path.as_deref().unwrap_or("?"))
    } else {
        format!("--underlay unavailable ({})", why("underlay_egress"))
    });
    let drops_works = if !dns {
        "no"
    } else if reasons && conns.is_empty() && underlay {
        "yes"
    } else {
        "degraded"
    };
    let drops_detail = if dns { drop_notes.join("; ") } else { format!("needs the DNS programs too: {dns_detail}") };
    rep.features.push(FeatureCheck { command: "dns", works: dns_works, detail: dns_detail.clone() });
    rep.features.push(FeatureCheck { command: "drops", works: drops_works, detail: drops_detail.clone() });
    rep.features.push(FeatureCheck {
        command: "record",
        works: dns_works,
        detail: format!("{dns_detail}; with --drops/--underlay: {drops_works} ({drops_detail})"),
    });
    rep.features.push(FeatureCheck { command: "agent", works: drops_works, detail: drops_detail });
}

#[cfg(test)]
mod tests {
    use super::verifier_reason;

    #[test]
    fn verifier_reason_is_the_last_lines_without_statistics() {
        let log = "0: R1=ctx() R10=fp0\n1: (85) call bpf_get_current_pid_tgid#14\nunknown func bpf_get_current_pid_tgid#14\n\
                   processed 12 insns (limit 1000000) max_states_per_insn 0 total_states 1\n\
                   verification time 55 usec\nstack depth 0\n";
        assert_eq!(
            verifier_reason(log),
            "1: (85) call bpf_get_current_pid_tgid#14 / unknown func bpf_get_current_pid_tgid#14"
        );
        assert_eq!(verifier_reason(""), "");
        assert_eq!(verifier_reason("only line"), "only line");
    }
}
