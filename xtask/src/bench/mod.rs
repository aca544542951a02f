//! `cargo xtask bench [--quick]`: measures ktrace's cost and speed next to
//! the tools people use today and writes `BENCHMARKS.md`.
//!
//! Every figure is a ratio or a paired comparison from one run on one machine
//! (see the method section the report starts with). Sections:
//! 1. in-kernel cost per BPF program invocation ([`kernel`]);
//! 2. traced vs untraced resolvers under dnsperf ([`resolver`]);
//! 3. the event pipeline: loss-free rate, CPU and memory, and the ring buffer
//!    alone in both consumer modes ([`pipeline`]);
//! 4. replay speed and capture size ([`replay`]);
//! 5. `fabric_loss` correlation and memory per in-flight item ([`correlation`]);
//! 6. micro-benchmarks of the pure-Rust hot paths ([`micro`]).
//!
//! `KTRACE_BENCH_SECTIONS=1,3` runs only those sections (while working on one).
//!
//! Traffic only flows between two namespaces this command creates
//! ([`sys::BenchNet`]); every loop is bounded; namespaces, processes, BPF
//! links and the statistics switch are released on drop, also on failure.

mod bpf;
mod correlation;
mod kernel;
mod load;
mod micro;
mod pipeline;
mod replay;
mod resolver;
mod stats;
mod sys;

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// One of the targets and what this run measured for it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The target, as the issue states it.
    pub(crate) what: String,
    /// What was measured.
    pub(crate) measured: String,
    /// Met (Some(true)), missed (Some(false)) or not measured (None).
    pub(crate) met: Option<bool>,
}

/// State shared by the sections.
pub(crate) struct Ctx {
    /// The release `ktrace` binary.
    pub(crate) bin: PathBuf,
    /// Workspace root.
    pub(crate) root: PathBuf,
    /// Scratch directory (captures, outputs), removed at the end.
    pub(crate) work: PathBuf,
    /// `--quick`: fewer pairs, shorter runs, smaller files.
    pub(crate) quick: bool,
    /// Targets checked so far.
    pub(crate) targets: Vec<Target>,
    /// Bytes per record of a live `ktrace record` capture (from section 2).
    pub(crate) live_record_bytes: Option<(u64, u64)>,
    /// The compiled micro-benchmark executable.
    pub(crate) micro_bin: Option<PathBuf>,
    /// Findings for the closing note (costs found by profiling and timing).
    pub(crate) notes: Vec<String>,
}

impl Ctx {
    pub(crate) fn target(&mut self, what: &str, measured: String, met: Option<bool>) {
        self.targets.push(Target { what: what.to_owned(), measured, met });
    }
}

/// Which resolver a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Server {
    Dnsmasq,
    Unbound,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Dnsmasq => "dnsmasq",
            Self::Unbound => "unbound",
        }
    }
}

/// Starts a resolver in the server namespace on the server CPU, answering
/// every name under [`load::ZONE`] itself, and waits until it listens.
pub(crate) fn start_server(server: Server, work: &Path) -> Result<sys::Proc> {
    let ip = sys::SRV_IP.to_string();
    let mut cmd = sys::in_netns(sys::SRV_NS, Some(sys::CPU_SERVER), server.name());
    match server {
        Server::Dnsmasq => {
            cmd.args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--cache-size=0",
                "--log-facility=/dev/null",
                "--user=root",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--local=/{}/", load::ZONE))
            .arg(format!("--address=/{}/10.0.0.1", load::ZONE));
        }
        Server::Unbound => {
            let conf = work.join("unbound.conf");
            let text = format!(
                "server:\n  interface: {ip}\n  port: 53\n  access-control: 10.213.0.0/24 allow\n  do-daemonize: no\n  \
                 chroot: \"\"\n  username: \"\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  \
                 num-threads: 1\n  do-ip6: no\n  module-config: \"iterator\"\n  \
                 local-zone: \"{z}.\" redirect\n  local-data: \"{z}. A 10.0.0.1\"\nremote-control:\n  control-enable: no\n",
                z = load::ZONE
            );
            fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
            cmd.arg("-d").arg("-c").arg(&conf);
        }
    }
    let mut p = sys::Proc::spawn(server.name(), cmd, None, &work.join(format!("{}.err", server.name())))?;
    wait_udp_listener(&mut p, sys::SRV_IP, 53, Duration::from_secs(10))?;
    Ok(p)
}

/// Polls `/proc/<pid>/net/udp` (the process's namespace) for a socket on ip:port.
fn wait_udp_listener(p: &mut sys::Proc, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<()> {
    let o = ip.octets();
    let want = format!("{:02X}{:02X}{:02X}{:02X}:{port:04X}", o[3], o[2], o[1], o[0]);
    let deadline = Instant::now() + timeout;
    loop {
        let t = fs::read_to_string(format!("/proc/{}/net/udp", p.pid())).unwrap_or_default();
        if t.lines().any(|l| l.split_whitespace().nth(1) == Some(want.as_str())) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {ip}:{port} within {timeout:?}: {}", p.name, p.stderr().trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The machine table: what the numbers were measured on.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or_else(|| "?".into(), |k| format!("{:.1} GiB", k as f64 / 1_048_576.0));
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let mut s = String::new();
    let _ = writeln!(s, "| what | value |\n|---|---|");
    let _ = writeln!(s, "| CPUs (nproc) | {nproc} |");
    let _ = writeln!(s, "| model name | {model} |");
    let _ = writeln!(s, "| kernel | {kernel} |");
    let _ = writeln!(s, "| memory | {mem} |");
    let _ = writeln!(s, "| load average at start (1/5/15 min) | {load} |");
    for (name, prog, args) in [
        ("dnsperf", "dnsperf", &["-h"][..]),
        ("dnsmasq", "dnsmasq", &["--version"][..]),
        ("unbound", "unbound", &["-V"][..]),
        ("tcpdump", "tcpdump", &["--version"][..]),
        ("tshark", "tshark", &["--version"][..]),
    ] {
        let _ = writeln!(s, "| {name} | {} |", sys::version(prog, args));
    }
    s
}

/// BPF programs attached at the cgroup2 root before we start: another
/// tracer running would make "untraced" runs traced.
fn foreign_programs() -> Vec<String> {
    bpf::snapshot()
        .map(|m| m.values().filter(|p| p.kind == "cgroup_skb").map(|p| p.name.clone()).collect())
        .unwrap_or_default()
}

fn section(out: &mut String, title: &str, ctx: &mut Ctx, f: fn(&mut Ctx) -> Result<String>) {
    if let Ok(only) = std::env::var("KTRACE_BENCH_SECTIONS")
        && !only.split(',').any(|n| title.starts_with(&format!("{}.", n.trim())))
    {
        return;
    }
    eprintln!("[bench] == {title}");
    let start = Instant::now();
    let _ = writeln!(out, "## {title}\n");
    match f(ctx) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            eprintln!("[bench] {title}: {e:#}");
            let _ = writeln!(out, "**Not measured in this run**: {e:#}\n");
        }
    }
    let _ = writeln!(out, "_Section time: {:.0} s._\n", start.elapsed().as_secs_f64());
}

/// Runs the benchmarks with the release binary `bin` and writes `BENCHMARKS.md` in `root`.
pub(crate) fn run(bin: &Path, root: &Path, quick: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench needs root (BPF programs, network namespaces)");
    }
    for tool in ["ip", "taskset", "dnsperf", "dnsmasq", "bpftool"] {
        if sys::version(tool, &["-h"]) == "not installed" {
            bail!("`{tool}` is missing: run `cargo xtask setup`");
        }
    }
    // Compile everything first: a compiler running during a measurement would skew it.
    replay::build_generator(root)?;
    let micro_bin = micro::build(root)?;
    let started = Instant::now();
    // Labs and end-to-end tests load ktrace too: wait for them to finish.
    let _lock = xtask::lab::LabLock::acquire()?;
    let work = std::env::temp_dir().join("ktrace-bench");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let foreign = foreign_programs();
    let mut ctx = Ctx {
        bin: bin.to_owned(),
        root: root.to_owned(),
        work: work.clone(),
        quick,
        targets: Vec::new(),
        live_record_bytes: None,
        notes: Vec::new(),
        micro_bin: Some(micro_bin),
    };
    let machine = machine();
    let mut body = String::new();
    {
        let _net = sys::BenchNet::up()?;
        load::write_queries(&work.join("queries.txt"))?;
        section(&mut body, "1. In-kernel cost per BPF program invocation", &mut ctx, kernel::run);
        section(&mut body, "2. Traced vs untraced DNS resolvers", &mut ctx, resolver::run);
        section(&mut body, "3. Event pipeline", &mut ctx, pipeline::run);
    }
    section(&mut body, "4. Replay and capture size", &mut ctx, replay::run);
    section(&mut body, "5. Correlation and memory per in-flight item", &mut ctx, correlation::run);
    section(&mut body, "6. Micro-benchmarks (pure-Rust hot paths)", &mut ctx, micro::run);

    let mut md = String::new();
    let _ = writeln!(md, "# ktrace benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `cargo xtask bench{}` in {:.0} s of measurement (after building). Do not edit by hand: \
         re-run the command.\n",
        if quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64()
    );
    if quick {
        let _ = writeln!(
            md,
            "**This is a `--quick` run**: 3 interleaved pairs instead of 7, shorter runs, dnsmasq only, smaller \
             replay files and fewer micro-benchmark samples. Treat its ratios as indicative; `cargo xtask bench` \
             (about 12 minutes) is the full run.\n"
        );
    }
    md.push_str(METHOD);
    let _ = writeln!(md, "\n## Machine\n\n{machine}");
    if foreign.is_empty() {
        let _ = writeln!(md, "No other cgroup_skb program was attached when the run started.\n");
    } else {
        let _ = writeln!(
            md,
            "**Warning**: cgroup_skb programs of another process were attached when the run started ({}); \
             \"untraced\" runs were not fully untraced.\n",
            foreign.join(", ")
        );
    }
    md.push_str(&targets_table(&ctx.targets));
    md.push_str(&body);
    md.push_str(&closing(&ctx));
    let path = root.join("BENCHMARKS.md");
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    let _ = fs::remove_dir_all(&work);
    eprintln!("[bench] wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn closing(ctx: &Ctx) -> String {
    let met = ctx.targets.iter().filter(|t| t.met == Some(true)).count();
    let missed = ctx.targets.iter().filter(|t| t.met == Some(false)).count();
    let open = ctx.targets.iter().filter(|t| t.met.is_none()).count();
    let mut s = format!(
        "## Closing note\n\nTargets: {met} met, {missed} missed, {open} not measured (table at the top).\n\n\
         Costs found by profiling and timing, largest first:\n\n"
    );
    if ctx.notes.is_empty() {
        s.push_str("* (no profile in this run)\n");
    }
    for n in &ctx.notes {
        let _ = writeln!(s, "* {n}");
    }
    s.push('\n');
    s
}

fn targets_table(targets: &[Target]) -> String {
    let mut s = String::from("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    for t in targets {
        let v = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {v} |", t.what, t.measured);
    }
    s.push('\n');
    s
}

const METHOD: &str = "## Method

* **Pairs, not single runs.** Run-to-run noise on these machines is ±10–20 %, and other engineers compile on
  the same two cores, so every traced figure is divided by an untraced (or no-op) figure measured right
  next to it in the same run. Resolver rounds interleave the modes (off, `ktrace dns`, `ktrace record`,
  `tcpdump -w`), rotating their order each round; each cell reports the **median pair ratio [min–max]**.
* **Pinning.** The load generator runs on CPU 0 and the server on CPU 1 (`taskset`); tracers are not
  pinned (on two cores they share a CPU with one of them either way, as on a busy node).
* **CPU from /proc.** CPU time is user+system of each process (`/proc/<pid>/stat` before/after the load
  window; `wait4` rusage for processes that exit), not throughput alone. \"CPU µs/query\" is server +
  load generator + tracer; the tracer's share is also given alone.
* **Network.** All traffic flows between two network namespaces this command creates (`ktb-cli`
  10.213.0.1 ↔ `ktb-srv` 10.213.0.2, a veth pair not connected to anything); they are deleted at the end,
  also on failure. Every load is bounded in packets and seconds.
";
