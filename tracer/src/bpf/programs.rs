//! Loads every kernel program ktrace uses, exactly as the live commands do
//! (same frozen globals, same fallbacks), without attaching anything, and
//! reports per program whether the verifier took it and what it cost: the
//! instruction count after verification and the verifier's processed
//! instructions (`bpf_prog_info.verified_insns`, the figure `veristat`
//! prints). `cargo xtask kernels` records these per kernel in KERNELS.md.
//!
//! `ktrace doctor` can call [`report`] to say per program what will work.

use aya::{
    Ebpf,
    programs::{BtfTracePoint, CgroupSkb, SchedClassifier, TracePoint},
};
use serde::Serialize;

use super::{CaptureConfig, Globals, OBJECT, raise_memlock};

/// One program's load result.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramReport {
    /// Program name in the object, e.g. `dns_egress`.
    pub name: &'static str,
    /// Program type (`cgroup_skb`, `cgroup_sock`, `cgroup_sock_addr`, `tp_btf`, `tracepoint`, `tc`).
    pub kind: &'static str,
    /// Whether the verifier accepted it.
    pub loaded: bool,
    /// Instructions after verification (`xlated_prog_len / 8`).
    pub insns: Option<u32>,
    /// Instructions the verifier processed (`verified_insns`, kernel >= 5.16).
    pub processed: Option<u32>,
    /// The load error (last lines of the verifier log), if it failed.
    pub error: Option<String>,
}

/// The load-time choices made for this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct FitReport {
    /// Where `cgroup_skb` takes the sender's pid from.
    pub pid_source: &'static str,
    /// Whether `dns_egress` reads the task through BTF pointers (else probe reads).
    pub task_btf: bool,
    /// Whether `bpf_get_netns_cookie` is used in `cgroup_skb`.
    pub netns_cookie: bool,
    /// Helpers the kernel allows in `cgroup_skb`, as probed (name → allowed).
    pub cgroup_skb_helpers: std::collections::BTreeMap<&'static str, bool>,
}

/// Every real program and how to load it.
const PROGRAMS: [(&str, &str); 14] = [
    ("dns_egress", "cgroup_skb"),
    ("dns_ingress", "cgroup_skb"),
    ("dns_sock_create", "cgroup_sock"),
    ("dns_connect4", "cgroup_sock_addr"),
    ("dns_connect6", "cgroup_sock_addr"),
    ("dns_sendmsg4", "cgroup_sock_addr"),
    ("dns_sendmsg6", "cgroup_sock_addr"),
    ("drop_kfree_skb", "tp_btf"),
    ("conn_set_state", "tracepoint"),
    ("conn_recv_reset", "tracepoint"),
    ("conn_send_reset", "tracepoint"),
    ("conn_retransmit", "tracepoint"),
    ("underlay_egress", "tc"),
    ("underlay_ingress", "tc"),
];

fn err_text(e: &dyn std::error::Error) -> String {
    // aya's verifier errors carry the whole log in their Debug form; its
    // last lines say what was refused.
    let full = format!("{e:?}");
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    if let Some(i) = full.find("verifier log") {
        let log = full[i..].replace("\\n", "\n");
        let tail: Vec<&str> = log.lines().rev().filter(|l| !l.trim().is_empty()).take(4).collect();
        s.push_str(": ");
        s.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
    }
    s
}

fn load_one(ebpf: &mut Ebpf, name: &str, kind: &str, btf: Option<&aya::Btf>) -> Result<(), String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("{name} missing from the object"))?;
    let conv = |e: aya::programs::ProgramError| err_text(&e);
    match kind {
        "cgroup_skb" => {
            let p: &mut CgroupSkb = prog.try_into().map_err(conv)?;
            p.load().map_err(conv)
        }
        "tp_btf" => {
            let btf = btf.ok_or("no kernel BTF")?;
            let p: &mut BtfTracePoint = prog.try_into().map_err(conv)?;
            p.load("kfree_skb", btf).map_err(conv)
        }
        "tracepoint" => {
            let p: &mut TracePoint = prog.try_into().map_err(conv)?;
            p.load().map_err(conv)
        }
        "cgroup_sock" => {
            let p: &mut aya::programs::CgroupSock = prog.try_into().map_err(conv)?;
            p.load().map_err(conv)
        }
        "cgroup_sock_addr" => {
            let p: &mut aya::programs::CgroupSockAddr = prog.try_into().map_err(conv)?;
            p.load().map_err(conv)
        }
        _ => {
            let p: &mut SchedClassifier = prog.try_into().map_err(conv)?;
            p.load().map_err(conv)
        }
    }
}

/// Loads every program (nothing is attached) and reports each one.
/// Needs root (`CAP_BPF` + `CAP_PERFMON`); errors are per program.
pub fn report() -> Result<(FitReport, Vec<ProgramReport>), super::BpfError> {
    if OBJECT.is_empty() {
        return Err(super::BpfError::NoObject);
    }
    raise_memlock();
    let g = Globals::new(&CaptureConfig { drops: true, ring_bytes: 1 << 16, ..CaptureConfig::default() });
    let (mut ebpf, task_btf) = match g.load_capture() {
        Ok((e, btf, _)) => (e, btf),
        // The capture programs are refused either way: report that per
        // program and still try the others.
        Err(_) => (g.load(0)?, false),
    };
    let btf = aya::Btf::from_sys_fs().ok();
    let mut out = Vec::new();
    for (name, kind) in PROGRAMS {
        let already = ebpf.program(name).is_some_and(|p| p.fd().is_ok());
        let r = if already { Ok(()) } else { load_one(&mut ebpf, name, kind, btf.as_ref()) };
        let info = ebpf.program(name).and_then(|p| p.info().ok());
        out.push(ProgramReport {
            name,
            kind,
            loaded: r.is_ok(),
            insns: info.as_ref().and_then(aya::programs::ProgramInfo::size_translated).map(|b| b / 8),
            processed: info.as_ref().and_then(aya::programs::ProgramInfo::verified_instruction_count),
            error: r.err(),
        });
    }
    let f = g.fit;
    let fit = FitReport {
        pid_source: f.pid_source_name(),
        task_btf,
        netns_cookie: f.netns_cookie,
        cgroup_skb_helpers: [
            ("bpf_get_current_pid_tgid", f.pid_tgid_helper),
            ("bpf_get_current_task", f.current_task_helper),
            ("bpf_get_current_task_btf", f.current_task_btf_helper),
            ("bpf_get_netns_cookie", f.netns_cookie),
        ]
        .into_iter()
        .collect(),
    };
    Ok((fit, out))
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind};

    use super::super::{OBJECT, OBJECT_LOG};

    /// Names the compiler uses for out-of-line memory routines.
    const MEM_ROUTINES: [&str; 5] = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];

    /// `call` with `src_reg = BPF_PSEUDO_CALL`: a BPF-to-BPF call.
    fn is_pseudo_call(insn: &[u8]) -> bool {
        insn[0] == 0x85 && insn[1] >> 4 == 1
    }

    /// 6.1's verifier refuses a map-value pointer passed to a global
    /// subprogram (`reg type unsupported for arg#0 function memset#63`), so
    /// no program may call an out-of-line memset/memcpy (LLVM emits one for
    /// large or variable-size zeroing and copies). Zero and copy with
    /// explicit stores instead. Every program is also one function: any
    /// BPF-to-BPF call is listed, so an outlined helper cannot slip in —
    /// except, in the logging object (`--bpf-log`), calls into aya-log's
    /// record writers, which LLVM outlines (`klog::is_log_writer`). Both
    /// embedded objects are checked.
    #[test]
    fn no_program_calls_out_of_line_memory_routines() {
        check_object("default", OBJECT);
        check_object("bpf-log", OBJECT_LOG);
    }

    /// The default object has no trace of aya-log: no log ring, no level
    /// global, no record writer (what the `bpf-log` feature adds).
    #[test]
    fn default_object_has_no_logging_and_the_log_object_has() {
        if OBJECT.is_empty() || OBJECT_LOG.is_empty() {
            return;
        }
        let names = |obj: &[u8]| -> Vec<String> {
            let file = object::File::parse(obj).expect("the embedded eBPF object parses as ELF");
            file.symbols().filter_map(|s| s.name().ok().map(str::to_owned)).collect()
        };
        let (plain, log) = (names(OBJECT), names(OBJECT_LOG));
        for sym in ["AYA_LOGS", "AYA_LOG_LEVEL", "DROP_REASON_MAX"] {
            assert!(!plain.iter().any(|n| n == sym), "{sym} in the default object");
            assert!(log.iter().any(|n| n == sym), "{sym} missing from the bpf-log object");
        }
    }

    fn check_object(what: &str, obj: &[u8]) {
        if obj.is_empty() {
            assert!(
                std::env::var("KTRACE_REQUIRE_BPF").as_deref() != Ok("1"),
                "built without the eBPF object (AYA_BUILD_SKIP) and KTRACE_REQUIRE_BPF=1"
            );
            eprintln!("skipped: built without the eBPF object (AYA_BUILD_SKIP)");
            return;
        }
        let file = object::File::parse(obj).expect("the embedded eBPF object parses as ELF");
        // compiler_builtins' memset & co. sit unused in .text; only a call
        // to them ends up in a loaded program.
        let mut bad = Vec::new();
        let mut calls = Vec::new();
        for sec in file.sections().filter(|s| s.kind() == SectionKind::Text && s.name() != Ok(".text")) {
            let sec_name = sec.name().unwrap_or("?").to_owned();
            let data = sec.data().expect("section data");
            let relocs: Vec<(u64, String)> = sec
                .relocations()
                .filter_map(|(off, r)| match r.target() {
                    RelocationTarget::Symbol(i) => {
                        Some((off, file.symbol_by_index(i).ok()?.name().unwrap_or("?").to_owned()))
                    }
                    _ => None,
                })
                .collect();
            for (i, insn) in data.chunks_exact(8).enumerate() {
                if !is_pseudo_call(insn) {
                    continue;
                }
                let at = (i * 8) as u64;
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                // A relocated call targets `.text` (its section symbol has no name).
                if relocs.iter().any(|(o, _)| *o == at)
                    && super::super::klog::is_log_writer(&file, (i64::from(imm) + 1).unsigned_abs() * 8)
                {
                    continue;
                }
                let target = relocs.iter().find(|(o, _)| *o == at).map_or_else(
                    || {
                        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                        format!("{sec_name}+{}", (i as i64 + 1 + i64::from(imm)) * 8)
                    },
                    |(_, n)| n.clone(),
                );
                calls.push(format!("{sec_name} @{at}: call {target}"));
            }
        }
        for c in &calls {
            if MEM_ROUTINES.iter().any(|m| c.contains(m)) {
                bad.push(c.clone());
            }
        }
        assert!(bad.is_empty(), "out-of-line memory routines in the {what} eBPF object:\n{}", bad.join("\n"));
        assert!(
            calls.is_empty(),
            "BPF-to-BPF calls in the {what} object (every program should be one function):\n{}",
            calls.join("\n")
        );
    }
}
