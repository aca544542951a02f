//! Loading and attaching the kernel programs, reading the ring buffer, probing hooks.
//!
//! The DNS capture runs on `cgroup_skb` programs attached to the cgroup2 root
//! (kernel >= 4.10; links since 5.7), so it sees every socket in every network
//! namespace with no per-interface setup. Attachments are BPF links owned by
//! this process: they vanish when it exits, even on SIGKILL, so nothing is
//! ever left behind.

pub mod btf;
pub mod dedupe;
pub mod doctor;
pub mod fold;
// Not `log`: that would shadow the `log` crate's macros in this module.
pub mod klog;
pub mod programs;
pub mod raw;
pub mod rings;
pub mod tc;

use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramType},
    sys::{BpfHelper, is_helper_supported},
};
use thiserror::Error;
use tracer_common::{KernelOffsets, MAP_LOST, MAP_RINGS, MAP_STATS, PORTS_MAX, SNAP_LEN, STATS_LEN, pid_source};

/// The eBPF object built by `build.rs`, embedded so `ktrace` is one file.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
/// The same programs with their kernel debug logs compiled in (the
/// `bpf-log` feature of tracer-ebpf), loaded instead of [`OBJECT`] only with
/// `--bpf-log` (see [`klog`]).
pub static OBJECT_LOG: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-log"));

/// Errors from loading or attaching the kernel side.
#[derive(Debug, Error)]
pub enum BpfError {
    /// The binary was built with `AYA_BUILD_SKIP=1` and carries no programs.
    #[error("this ktrace binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild with bpf-linker installed")]
    NoObject,
    /// Loading the object failed (verifier, permissions, missing BTF).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("map {name}: {reason}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// No cgroup2 hierarchy could be found or mounted.
    #[error("cgroup2: {0}")]
    Cgroup(String),
    /// I/O.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// How to set up the DNS capture.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// UDP/TCP ports whose traffic is captured (at most `PORTS_MAX`).
    pub ports: Vec<u16>,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// cgroup2 directory to attach to; None = find (or mount) the root.
    pub cgroup: Option<PathBuf>,
    /// Also trace kernel drops (`skb:kfree_skb`) and TCP connection events.
    pub drops: bool,
    /// Interfaces (in this network namespace) whose traffic is fingerprinted with tc (TCX).
    pub underlay: Vec<String>,
    /// Ring fill level (bytes) at which a submission wakes the reader; None =
    /// a quarter of the ring (the reader drains on its timer below that).
    /// `Some(0)` wakes it for every event (the benchmark's comparison mode).
    pub wakeup_bytes: Option<u64>,
    /// Most bytes of each DNS packet the kernel copies (`record --snaplen`);
    /// 0 = `SNAP_LEN`, what the DNS decoder reads.
    pub snaplen: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            ports: vec![53],
            ring_bytes: 16 << 20,
            cgroup: None,
            drops: false,
            underlay: Vec::new(),
            wakeup_bytes: None,
            snaplen: 0,
        }
    }
}

/// The tracepoints behind connection events, and the global holding each one's field offsets.
pub(crate) const CONN_TRACEPOINTS: [(&str, &str, &str, &str); 4] = [
    ("conn_set_state", "sock", "inet_sock_set_state", "TP_SET_STATE"),
    ("conn_recv_reset", "tcp", "tcp_receive_reset", "TP_RECV_RESET"),
    ("conn_send_reset", "tcp", "tcp_send_reset", "TP_SEND_RESET"),
    ("conn_retransmit", "tcp", "tcp_retransmit_skb", "TP_RETRANSMIT"),
];

/// Field offsets of a tracepoint, from its tracefs `format` file.
pub fn tracepoint_fields(category: &str, name: &str) -> Result<tracer_common::TpFields, String> {
    let mut last = String::new();
    for base in ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"] {
        let p = format!("{base}/{category}/{name}/format");
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(parse_format(&text)),
            Err(e) => last = format!("{p}: {e}"),
        }
    }
    Err(last)
}

/// Parses `field:__u16 sport;\toffset:12;\tsize:2;\tsigned:0;` lines.
#[must_use]
pub fn parse_format(text: &str) -> tracer_common::TpFields {
    let mut f = tracer_common::TpFields::NONE;
    for line in text.lines() {
        let mut name = None;
        let mut off = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(decl) = part.strip_prefix("field:") {
                name = decl
                    .split_whitespace()
                    .last()
                    .map(|n| n.split('[').next().unwrap_or(n).trim_start_matches('*').to_owned());
            } else if let Some(o) = part.strip_prefix("offset:") {
                off = o.trim().parse::<u16>().ok();
            }
        }
        let (Some(name), Some(off)) = (name, off) else { continue };
        let slot = match name.as_str() {
            "skaddr" => &mut f.skaddr,
            "sport" => &mut f.sport,
            "dport" => &mut f.dport,
            "family" => &mut f.family,
            "saddr" => &mut f.saddr,
            "daddr" => &mut f.daddr,
            "saddr_v6" => &mut f.saddr_v6,
            "daddr_v6" => &mut f.daddr_v6,
            "oldstate" => &mut f.oldstate,
            "newstate" => &mut f.newstate,
            "state" => &mut f.state,
            "protocol" => &mut f.protocol,
            _ => continue,
        };
        *slot = off;
    }
    f
}

/// Every kernel program ktrace runs, loaded from one object and attached:
/// the DNS capture (`cgroup_skb`), and on request kernel drops and TCP
/// connection events (tracepoints) and underlay fingerprints (tc), all
/// feeding one ring buffer per CPU. Dropping it detaches everything.
pub struct Probes {
    // Keeps the programs and their links alive.
    ebpf: Ebpf,
    rings: rings::CpuRings,
    lost: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// Where the programs are attached.
    pub cgroup: PathBuf,
    /// Whether kernel offsets from BTF were available (process names, netns inode).
    pub has_offsets: bool,
    /// Whether the kernel gives us netns cookies.
    pub has_netns_cookie: bool,
    /// Where the `cgroup_skb` programs take the sender's pid from (`tracer_common::pid_source`).
    pub pid_source: u32,
    /// Whether the egress program reads the task through BTF pointers (else probe reads).
    pub task_btf: bool,
    /// Whether packets are attributed through their socket's owner (the
    /// socket hooks and socket-local storage), else by a task read per packet.
    pub sock_attr: bool,
    /// What ring-buffer decoding needs (drop reason names).
    pub decode_ctx: raw::DecodeCtx,
    /// Hooks that could not be attached (the features they feed are degraded).
    pub warnings: Vec<String>,
    /// Underlay interfaces and how each is attached (classic tc ones are cleaned up on drop).
    pub underlay: Vec<UnderlayAttach>,
    /// The kernel log reader (`--bpf-log`), else `None`.
    pub kernel_log: Option<klog::KernelLog>,
    drop_folds: Option<fold::DropFolds>,
}

/// Raises `RLIMIT_MEMLOCK` for kernels < 5.11; failing is harmless on newer
/// kernels (memcg accounting) and on machines without `CAP_SYS_RESOURCE`.
pub fn raise_memlock() {
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const r) };
    if ret != 0 {
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed (harmless on kernels >= 5.11)");
    }
}

/// Finds the cgroup2 mount point, mounting one at /run/ktrace/cgroup2 if none exists.
pub fn cgroup2_root() -> Result<PathBuf, BpfError> {
    if let Some(p) = find_cgroup2_mount() {
        return Ok(p);
    }
    let dir = Path::new("/run/ktrace/cgroup2");
    std::fs::create_dir_all(dir)
        .map_err(|e| BpfError::Io { what: format!("creating {}", dir.display()), source: e })?;
    nix::mount::mount(Some("cgroup2"), dir, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>).map_err(
        |e| BpfError::Cgroup(format!("no cgroup2 mounted and mounting one at {} failed: {e}", dir.display())),
    )?;
    Ok(dir.to_path_buf())
}

fn find_cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: ... mount_point ... - fstype source opts
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Reads kernel struct offsets from BTF; None (with a log line) if unavailable.
#[must_use]
pub fn kernel_offsets() -> Option<KernelOffsets> {
    match btf::Btf::from_sys_fs().and_then(|b| btf::kernel_offsets(&b)) {
        Ok(o) => Some(o),
        Err(e) => {
            log::warn!("no kernel BTF offsets ({e}): process names and netns inodes will be missing");
            None
        }
    }
}

/// What the running kernel lets the `cgroup_skb` programs call, probed once
/// before loading them and written into their frozen globals: the verifier
/// then never explores the branches that need what this kernel lacks.
#[derive(Clone, Copy, Debug)]
pub struct KernelFit {
    /// `tracer_common::pid_source` for the `cgroup_skb` programs.
    pub pid_source: u32,
    /// `bpf_get_netns_cookie` is allowed in `cgroup_skb`.
    pub netns_cookie: bool,
    /// `bpf_get_current_pid_tgid` is allowed in `cgroup_skb` (6.10).
    pub pid_tgid_helper: bool,
    /// `bpf_get_current_task` is allowed in `cgroup_skb`.
    pub current_task_helper: bool,
    /// `bpf_get_current_task_btf` is allowed in `cgroup_skb`.
    pub current_task_btf_helper: bool,
}

impl KernelFit {
    /// Probes the helpers `cgroup_skb` may call here. `have_offsets`: the
    /// task offsets from BTF are known (reading pid/tgid from the task needs them).
    ///
    /// `KTRACE_PID_FROM_TASK=1` forces the pre-6.10 path (pid/tgid read from
    /// the task) on any kernel, so it is tested where the helper exists too.
    #[must_use]
    pub fn probe(have_offsets: bool) -> Self {
        let helper = |h| is_helper_supported(ProgramType::CgroupSkb, h).unwrap_or(false);
        let force_task = std::env::var_os("KTRACE_PID_FROM_TASK").is_some_and(|v| v == "1");
        let pid_tgid_helper = helper(BpfHelper::BPF_FUNC_get_current_pid_tgid);
        let current_task_helper = helper(BpfHelper::BPF_FUNC_get_current_task);
        let pid_source = if !force_task && pid_tgid_helper {
            pid_source::HELPER
        } else if have_offsets && current_task_helper {
            pid_source::TASK
        } else {
            pid_source::NONE
        };
        Self {
            pid_source,
            netns_cookie: helper(BpfHelper::BPF_FUNC_get_netns_cookie),
            pid_tgid_helper,
            current_task_helper,
            current_task_btf_helper: helper(BpfHelper::BPF_FUNC_get_current_task_btf),
        }
    }

    /// How the sender's pid is found: `bpf_get_current_pid_tgid`,
    /// `task_struct` (pid/tgid read from `bpf_get_current_task` at BTF
    /// offsets) or `none`.
    #[must_use]
    pub fn pid_source_name(&self) -> &'static str {
        match self.pid_source {
            pid_source::HELPER => "bpf_get_current_pid_tgid",
            pid_source::TASK => "task_struct",
            _ => "none",
        }
    }
}

/// The programs' global values, worked out once from the running kernel
/// (BTF offsets, tracefs formats, helper support). Shared by the capture and
/// `ktrace doctor`, so doctor verifies exactly the programs ktrace loads.
pub struct Globals {
    ports: [u16; PORTS_MAX as usize],
    offsets: KernelOffsets,
    /// Whether kernel offsets from BTF were available (process names, netns inode).
    pub has_offsets: bool,
    drop_skip: [u32; 2],
    tp_fields: Vec<tracer_common::TpFields>,
    /// Whether the kernel gives `cgroup_skb` programs netns cookies (else the netns inode is read).
    pub has_netns_cookie: bool,
    /// What `cgroup_skb` may call here (pid source, netns cookie).
    pub fit: KernelFit,
    wake: u64,
    /// Bytes of each CPU's ring.
    ring_bytes: u32,
    /// Rings: one per possible CPU.
    cpus: u32,
    dns_snap: u32,
    drop_fold: tracer_common::FoldConfig,
    /// Kernel BTF as ktrace's own reader parsed it.
    pub btf_info: Option<btf::Btf>,
    /// What ring-buffer decoding needs (drop reason names).
    pub decode_ctx: raw::DecodeCtx,
    /// Degradations found while working the values out.
    pub warnings: Vec<String>,
}

impl Globals {
    /// Works out every global for `cfg` on this kernel.
    #[must_use]
    pub fn new(cfg: &CaptureConfig) -> Self {
        let mut ports = [0u16; PORTS_MAX as usize];
        for (slot, p) in ports.iter_mut().zip(cfg.ports.iter()) {
            *slot = *p;
        }
        let btf_info = btf::Btf::from_sys_fs().ok();
        let offsets = kernel_offsets();
        let has_offsets = offsets.is_some();
        let offsets = offsets.unwrap_or_default();
        let mut warnings = Vec::new();
        let mut decode_ctx = raw::DecodeCtx::default();
        let mut drop_skip = [u32::MAX; 2];
        if let Some(b) = &btf_info {
            for (v, n) in b.drop_reason_names() {
                match n.as_str() {
                    "NOT_DROPPED_YET" => drop_skip[0] = v,
                    "CONSUMED" => drop_skip[1] = v,
                    _ => {}
                }
                decode_ctx.reason_names.insert(v, n.into());
            }
        }
        let mut tp_fields = Vec::new();
        if cfg.drops {
            if let Err(e) = doctor::ensure_tracefs() {
                warnings.push(e);
            }
            for (_, cat, name, _) in CONN_TRACEPOINTS {
                tp_fields.push(tracepoint_fields(cat, name).unwrap_or_else(|e| {
                    warnings.push(format!("tracepoint {cat}:{name}: {e}"));
                    tracer_common::TpFields::NONE
                }));
            }
        }
        let fit = KernelFit::probe(has_offsets);
        let has_netns_cookie = fit.netns_cookie;
        // Wake the reader early only when a quarter of the ring is full; below
        // that it drains on its timer (batched: ~10x cheaper per event).
        // `ring_bytes` is shared by the per-CPU rings.
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let ring_each = rings::per_ring_bytes(cfg.ring_bytes, cpus);
        let wake: u64 = cfg.wakeup_bytes.unwrap_or(u64::from(ring_each / 4));
        Self {
            ports,
            offsets,
            has_offsets,
            drop_skip,
            tp_fields,
            has_netns_cookie,
            fit,
            wake,
            drop_fold: fold::config(cfg, btf_info.as_ref(), has_offsets.then_some(&offsets)),
            dns_snap: if cfg.snaplen == 0 { SNAP_LEN as u32 } else { cfg.snaplen.min(SNAP_LEN as u32) },
            ring_bytes: ring_each,
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            btf_info,
            decode_ctx,
            warnings,
        }
    }

    /// Loads the object with these globals (programs not yet loaded into the
    /// kernel), the `cgroup_skb` programs reading the task per packet.
    pub fn load(&self, task_btf: u32) -> Result<Ebpf, BpfError> {
        self.load_with(task_btf, 0)
    }

    /// [`Self::load`], with `sock_attr` non-zero when the `cgroup_skb`
    /// programs look the packet's socket owner up first ([`SOCK_PROGRAMS`]).
    pub fn load_with(&self, task_btf: u32, sock_attr: u32) -> Result<Ebpf, BpfError> {
        let use_cookie: u32 = u32::from(self.has_netns_cookie);
        let klog = klog::Switch::new(&self.decode_ctx);
        // One payload per DNS message (see `dedupe`). Opt-in: the LRU insert
        // on every egress message costs more in the kernel (≈2.5× `dns_egress`
        // on real packets) than the 18 % of ring bytes it saves, and userspace
        // rebuilds full records either way (see docs/kernels.md).
        let dedupe: u32 = u32::from(
            std::env::var_os("KTRACE_DEDUPE").is_some_and(|v| v == "1")
                && std::env::var_os("KTRACE_NO_DEDUPE").is_none_or(|v| v != "1"),
        );
        let mut loader = EbpfLoader::new();
        klog.apply(&mut loader);
        loader
            .override_global("DNS_PORTS", &self.ports[..], true)
            .override_global("DNS_SNAP", &self.dns_snap, true)
            .override_global("SOCK_ATTR", &sock_attr, true)
            .override_global("DEDUPE", &dedupe, true)
            .override_global("OFFSETS", &self.offsets, true)
            .override_global("TASK_BTF", &task_btf, true)
            .override_global("PID_SOURCE", &self.fit.pid_source, true)
            .override_global("WAKEUP_BYTES", &self.wake, true)
            .override_global("USE_NETNS_COOKIE", &use_cookie, true)
            .override_global("DROP_SKIP", &self.drop_skip[..], true)
            .override_global("DROP_FOLD_CFG", &self.drop_fold, true)
            .map_max_entries(MAP_RINGS, self.cpus);
        for ((_, _, _, global), f) in CONN_TRACEPOINTS.iter().zip(self.tp_fields.iter()) {
            loader.override_global(global, f, true);
        }
        Ok(loader.load(klog.object())?)
    }

    /// Loads the object and its two `cgroup_skb` programs, with direct BTF
    /// task reads if the verifier takes them, else with probe reads, and with
    /// per-socket attribution ([`SOCK_PROGRAMS`] loaded too) where the kernel
    /// takes it, else with the task read per packet. Returns the object,
    /// whether the direct reads are in use and whether the socket programs are.
    pub fn load_capture(&self) -> Result<(Ebpf, bool, bool), BpfError> {
        let load_object = |task_btf: u32, sock_attr: u32| -> Result<Ebpf, BpfError> {
            let mut ebpf = self.load_with(task_btf, sock_attr)?;
            for name in ["dns_egress", "dns_ingress"] {
                let prog: &mut CgroupSkb = ebpf
                    .program_mut(name)
                    .ok_or(BpfError::Map { name, reason: "program missing from object".into() })?
                    .try_into()
                    .map_err(|source| BpfError::Program { name, source })?;
                prog.load().map_err(|source| BpfError::Program { name, source })?;
            }
            if sock_attr != 0 {
                load_sock_programs(&mut ebpf)?;
            }
            Ok(ebpf)
        };
        // Direct BTF loads of the current task need the verifier to accept
        // `bpf_get_current_task_btf` in cgroup_skb (CAP_PERFMON, kernel >= 5.19
        // or so); elsewhere the per-field probe reads still work.
        let want_btf = self.has_offsets && std::env::var_os("KTRACE_NO_TASK_BTF").is_none();
        let want_sock = std::env::var_os("KTRACE_NO_SOCK_ATTR").is_none();
        let mut last = None;
        for (btf, sock) in [(want_btf, want_sock), (want_btf, false), (false, want_sock), (false, false)] {
            if (btf && !want_btf) || (sock && !want_sock) {
                continue;
            }
            match load_object(u32::from(btf), u32::from(sock)) {
                Ok(e) => return Ok((e, btf, sock)),
                Err(e) => {
                    log::info!("capture programs refused with task_btf={btf} sock_attr={sock} ({e}); trying without");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(BpfError::NoObject))
    }
}

/// The socket programs behind per-socket attribution: they record a
/// socket's owner (pid, names, netns) in socket-local storage when it is
/// created and when it connects or sends to a DNS port.
pub const SOCK_PROGRAMS: [&str; 5] =
    ["dns_sock_create", "dns_connect4", "dns_connect6", "dns_sendmsg4", "dns_sendmsg6"];

fn load_sock_programs(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    use aya::programs::{CgroupSock, CgroupSockAddr};
    for name in SOCK_PROGRAMS {
        let p = ebpf.program_mut(name).ok_or(BpfError::Map { name, reason: "program missing from object".into() })?;
        let r = if name == "dns_sock_create" {
            <&mut CgroupSock>::try_from(p).and_then(CgroupSock::load)
        } else {
            <&mut CgroupSockAddr>::try_from(p).and_then(CgroupSockAddr::load)
        };
        match r {
            // Owners are then recorded at connect/sendmsg and at UDP egress only.
            Err(e) if name == "dns_sock_create" => log::info!("dns_sock_create refused: {e}"),
            r => r.map_err(|source| BpfError::Program { name, source })?,
        }
    }
    Ok(())
}

/// Attaches the loaded [`SOCK_PROGRAMS`] to the cgroup.
fn attach_sock_programs(ebpf: &mut Ebpf, cg: &File) -> Result<(), BpfError> {
    use aya::programs::{CgroupSock, CgroupSockAddr};
    for name in SOCK_PROGRAMS {
        let p = ebpf.program_mut(name).ok_or(BpfError::Map { name, reason: "program missing from object".into() })?;
        if p.fd().is_err() {
            continue; // refused at load (see load_sock_programs)
        }
        let r = if name == "dns_sock_create" {
            <&mut CgroupSock>::try_from(p).and_then(|p| p.attach(cg.as_fd(), CgroupAttachMode::Single).map(drop))
        } else {
            <&mut CgroupSockAddr>::try_from(p).and_then(|p| p.attach(cg.as_fd(), CgroupAttachMode::Single).map(drop))
        };
        r.map_err(|source| BpfError::Program { name, source })?;
    }
    Ok(())
}

impl Probes {
    /// Loads the programs `cfg` asks for and attaches them: the DNS capture to
    /// the cgroup2 root, drops and connection events to their tracepoints,
    /// underlay fingerprints to each interface.
    pub fn attach(cfg: &CaptureConfig) -> Result<Self, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        raise_memlock();
        let g = Globals::new(cfg);
        let (mut ebpf, task_btf, mut sock_attr) = g.load_capture()?;
        let has_offsets = g.has_offsets;
        let has_netns_cookie = g.has_netns_cookie;
        let pid_source = g.fit.pid_source;
        let (ring_bytes, cpus) = (g.ring_bytes, g.cpus);
        let Globals { btf_info, decode_ctx, mut warnings, .. } = g;
        let cgroup = match &cfg.cgroup {
            Some(p) => p.clone(),
            None => cgroup2_root()?,
        };
        let cg = File::open(&cgroup)
            .map_err(|e| BpfError::Io { what: format!("opening {}", cgroup.display()), source: e })?;
        // The rings go in before any program is attached: a program finding
        // no ring for its CPU counts its event as lost.
        let rings = rings::make(&ebpf, ring_bytes, cpus)?;
        for (name, ty) in [("dns_egress", CgroupSkbAttachType::Egress), ("dns_ingress", CgroupSkbAttachType::Ingress)] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(BpfError::Map { name, reason: "program missing from object".into() })?
                .try_into()
                .map_err(|source| BpfError::Program { name, source })?;
            // With BPF links (kernel >= 5.7) the kernel rejects attach flags and
            // always allows several programs, so `Single` (flags 0) still
            // coexists with systemd's programs and other ktrace instances.
            prog.attach(cg.as_fd(), ty, CgroupAttachMode::Single)
                .map_err(|source| BpfError::Program { name, source })?;
        }
        if sock_attr && let Err(e) = attach_sock_programs(&mut ebpf, &cg) {
            // The cgroup_skb programs still work: without owners in the
            // sockets' storage they read the task per packet (and record
            // UDP senders' owners themselves).
            warnings.push(format!("socket hooks: {e}: process attribution per packet"));
            sock_attr = false;
        }
        if cfg.drops {
            attach_drops(&mut ebpf, btf_info.is_some(), &mut warnings);
        }
        let mut underlay = Vec::new();
        for dev in &cfg.underlay {
            let u = attach_underlay(&mut ebpf, dev).map_err(|e| BpfError::Cgroup(format!("tc on {dev}: {e}")))?;
            for f in &u.cleanup.removed_filters {
                warnings.push(format!("removed a stale ktrace tc filter (a killed ktrace's): {f}"));
            }
            for q in &u.cleanup.removed_qdiscs {
                warnings.push(format!("removed the clsact qdisc a killed ktrace had created on {q}"));
            }
            for q in &u.cleanup.ambiguous_qdiscs {
                warnings.push(format!(
                    "clsact qdisc on {q}: a ktrace crashed while creating it, so it may not be ktrace's; left in place"
                ));
            }
            log::info!("underlay {dev}: {:?}", u.mode);
            underlay.push(u);
        }
        let kernel_log = klog::KernelLog::start(&mut ebpf)?;
        let lost = take(&mut ebpf, MAP_LOST, PerCpuArray::try_from)?;
        let stats = take(&mut ebpf, MAP_STATS, PerCpuArray::try_from)?;
        let drop_folds = fold::DropFolds::take(&mut ebpf, cfg.drops);
        Ok(Self {
            ebpf,
            rings,
            lost,
            stats,
            cgroup,
            has_offsets,
            has_netns_cookie,
            pid_source,
            task_btf,
            sock_attr,
            decode_ctx,
            warnings,
            underlay,
            kernel_log,
            drop_folds,
        })
    }

    /// Total events the kernel could not reserve space for, across CPUs.
    #[must_use]
    pub fn lost(&self) -> u64 {
        sum_percpu(&self.lost, 0)
    }

    /// Program counters (see `tracer_common::Stat`), summed across CPUs.
    #[must_use]
    pub fn stats(&self) -> [u64; STATS_LEN as usize] {
        let mut out = [0u64; STATS_LEN as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = sum_percpu(&self.stats, i as u32);
        }
        out
    }

    /// The kernel's one-payload-per-message counters ([`dedupe::DedupeStats`]'s kernel fields).
    #[must_use]
    pub fn dedupe_stats(&self) -> dedupe::DedupeStats {
        let s = self.stats();
        dedupe::DedupeStats {
            kernel_misses: s[tracer_common::Stat::DedupeMiss as usize],
            kernel_store_errors: s[tracer_common::Stat::DedupeStoreError as usize],
            ..dedupe::DedupeStats::default()
        }
    }

    /// A loaded program's file descriptor (for `BPF_PROG_TEST_RUN` in benchmarks).
    #[must_use]
    pub fn program_fd(&self, name: &str) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        Some(self.ebpf.program(name)?.fd().ok()?.as_fd())
    }

    /// The per-CPU rings, to be polled ([`rings::CpuRings::poll_fd`]) and drained.
    pub fn rings(&mut self) -> &mut rings::CpuRings {
        &mut self.rings
    }

    /// The rings and what decoding their records needs, borrowed together.
    pub fn rings_and_ctx(&mut self) -> (&mut rings::CpuRings, &raw::DecodeCtx) {
        (&mut self.rings, &self.decode_ctx)
    }
}

/// Drops (`tp_btf` `kfree_skb`) and TCP connection tracepoints. Each missing
/// hook is a warning: the rest of ktrace still works.
fn attach_drops(ebpf: &mut Ebpf, have_btf: bool, warnings: &mut Vec<String>) {
    use aya::programs::{BtfTracePoint, TracePoint};
    match (have_btf, aya::Btf::from_sys_fs()) {
        (true, Ok(btf)) => {
            let r = (|| -> Result<(), String> {
                let p: &mut BtfTracePoint = ebpf
                    .program_mut("drop_kfree_skb")
                    .ok_or("drop_kfree_skb missing")?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| e.to_string())?;
                p.load("kfree_skb", &btf).map_err(|e| format!("{e:?}"))?;
                p.attach().map_err(|e| e.to_string())?;
                Ok(())
            })();
            if let Err(e) = r {
                warnings.push(format!("skb:kfree_skb (tp_btf): {e}: kernel drop reasons unavailable"));
            }
        }
        _ => warnings.push("no kernel BTF: kernel drop reasons unavailable".into()),
    }
    for (prog, cat, name, _) in CONN_TRACEPOINTS {
        let r = (|| -> Result<(), String> {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or("program missing")?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            p.load().map_err(|e| format!("{e:?}"))?;
            p.attach(cat, name).map_err(|e| e.to_string())?;
            Ok(())
        })();
        if let Err(e) = r {
            warnings.push(format!("{cat}:{name}: {e}: connection failures from it unavailable"));
        }
    }
}

/// How the underlay programs are attached to one interface, and what undoes it.
pub struct UnderlayAttach {
    /// The interface.
    pub dev: String,
    /// TCX or classic tc.
    pub mode: tc::TcMode,
    /// What the stale-state sweep before attaching removed (classic mode).
    pub cleanup: tc::Cleanup,
    // Classic mode: removes our filters (and the qdisc if ktrace created it) on drop.
    _guard: Option<tc::ClsactGuard>,
}

/// Attaches the underlay fingerprint programs to `dev`: TCX where the kernel
/// has it (>= 6.6; links vanish when we exit), else classic tc filters on a
/// clsact qdisc (see [`tc`] for how they are cleaned up, even after a crash).
pub fn attach_underlay(ebpf: &mut Ebpf, dev: &str) -> Result<UnderlayAttach, String> {
    use aya::programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{NlOptions, TcAttachOptions, TcHandle},
    };
    let hooks = [("underlay_egress", TcAttachType::Egress), ("underlay_ingress", TcAttachType::Ingress)];
    for (name, _) in hooks {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        if p.fd().is_err() {
            p.load().map_err(|e| format!("{e:?}"))?;
        }
    }
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(|e| format!("no interface {dev}: {e}"))?;
    let mut tcx_err = None;
    if tc::tcx_wanted() {
        let mut ids = Vec::new();
        for (name, ty) in hooks {
            let p: &mut SchedClassifier =
                ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or("program missing")?;
            match p.attach_with_options(dev, ty, TcAttachOptions::TcxOrder(LinkOrder::default())) {
                Ok(id) => ids.push((name, id)),
                Err(e) => {
                    tcx_err = Some(format!("{e}"));
                    break;
                }
            }
        }
        if tcx_err.is_none() {
            // A stale classic filter from a killed ktrace would fingerprint twice.
            let cleanup = tc::cleanup_stale().unwrap_or_else(|e| {
                log::warn!("sweeping stale ktrace tc filters: {e}");
                tc::Cleanup::default()
            });
            return Ok(UnderlayAttach { dev: dev.into(), mode: tc::TcMode::Tcx, cleanup, _guard: None });
        }
        for (name, id) in ids {
            if let Some(p) = ebpf.program_mut(name).and_then(|p| <&mut SchedClassifier>::try_from(p).ok()) {
                let _ = p.detach(id);
            }
        }
        log::info!(
            "TCX unavailable on {dev} ({}); using classic tc with a clsact qdisc",
            tcx_err.as_deref().unwrap_or("")
        );
    }
    let (mut guard, cleanup) = tc::ClsactGuard::prepare(ifindex).map_err(|e| format!("clsact on {dev}: {e}"))?;
    for ((name, ty), (parent, _)) in hooks.into_iter().zip(tc::HOOKS) {
        let p: &mut SchedClassifier =
            ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or("program missing")?;
        // Recorded before attaching: if the kernel applied it but the answer got lost, drop still removes it.
        guard.attached(parent, name);
        let opts = NlOptions { priority: tc::PRIO, handle: TcHandle::from(guard.handle()), classid: None };
        let id = p
            .attach_with_options(dev, ty, TcAttachOptions::Netlink(opts))
            .map_err(|e| format!("classic tc filter {name} on {dev}: {}", doctor::err_chain(&e)))?;
        // The guard owns removal (it also knows whether the qdisc goes); aya's link would detach on drop too.
        std::mem::forget(p.take_link(id).map_err(|e| e.to_string())?);
    }
    Ok(UnderlayAttach { dev: dev.into(), mode: tc::TcMode::Clsact, cleanup, _guard: Some(guard) })
}

fn sum_percpu(a: &PerCpuArray<MapData, u64>, idx: u32) -> u64 {
    a.get(&idx, 0).map_or(0, |v| v.iter().sum())
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, BpfError> {
    let m = ebpf.take_map(name).ok_or(BpfError::Map { name, reason: "missing from object".into() })?;
    f(m).map_err(|e| BpfError::Map { name, reason: e.to_string() })
}
