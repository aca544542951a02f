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
//! 6. micro-benchmarks of the pure-Rust hot paths ([`micro`]);
//! 7. memory on a 10× longer capture ([`memory`]).
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
mod memory;
mod micro;
mod pipeline;
mod replay;
mod resolver;
mod stats;
mod sys;

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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

/// The targets of issue 18 (lean event path), in the order the table shows
/// them. Sections report against these exact texts ([`Ctx::target`]); a goal
/// no section reported shows as "not measured", so the table always lists
/// all of them.
pub(crate) mod goal {
    pub(crate) const QPS: &str =
        "Resolver qps at saturation, ratio to untraced ≥ `tcpdump -w`'s ratio in the same run (goal 0.97; dnsmasq)";
    pub(crate) const LATENCY: &str =
        "p50 / p99 at 50 % load, ratio to untraced ≤ 1.2× / ≤ 1.5× (`ktrace dns -o json`, dnsmasq)";
    pub(crate) const CPU_JSON: &str = "Tracer CPU per query (4 messages) ≤ 1 µs with `ktrace dns -o json`";
    pub(crate) const CPU_LEAN: &str = "Tracer CPU per query ≤ 0.5 µs with `ktrace dns --summary` and `ktrace agent`";
    pub(crate) const KERNEL_DNS: &str = "In-kernel cost per DNS packet ≤ 300 ns, egress and ingress";
    pub(crate) const KERNEL_FAST: &str = "Non-DNS fast path ≤ 1.3× a no-op program on the same hook";
    pub(crate) const AGENT_CPU: &str = "`ktrace agent` CPU at 10k DNS messages/s with metrics on ≤ 2 % of one core";
    pub(crate) const REPLAY_SUMMARY: &str = "Replay ≥ 2M DNS messages/s per core with `ktrace dns -r --summary`";
    pub(crate) const REPLAY_JSON: &str = "Replay ≥ 1M DNS messages/s per core with `ktrace dns -r -o json`";
    pub(crate) const REPLAY_TSHARK: &str = "Replay ≥ 30× tshark extracting the same fields";
    pub(crate) const ZERO_LOSS: &str =
        "Zero loss up to ≥ 100k DNS messages/s, and generated = delivered + lost exactly at every rate";
    pub(crate) const MEMORY: &str = "Memory bounded by configuration, not by capture length or run time";

    /// Every goal of issue 18, in table order.
    pub(crate) const ALL: [&str; 12] = [
        QPS,
        LATENCY,
        CPU_JSON,
        CPU_LEAN,
        KERNEL_DNS,
        KERNEL_FAST,
        AGENT_CPU,
        REPLAY_SUMMARY,
        REPLAY_JSON,
        REPLAY_TSHARK,
        ZERO_LOSS,
        MEMORY,
    ];

    /// Targets from before issue 18 that its goals replace. A section that
    /// still reports one gets it listed under the table as superseded, not in it.
    pub(crate) const SUPERSEDED: [&str; 7] = [
        "Resolver throughput with `ktrace dns` ≥ 97 % of untraced at saturation (dnsmasq)",
        "p99 latency at 50 % load within +5 % with `ktrace dns` (dnsmasq)",
        "Each BPF program ≤ 2× a no-op on its hook",
        "< 150 ns per non-DNS packet",
        "Zero lost events up to ≥ 100k DNS messages/s",
        "Replay ≥ 5M events/s per core",
        "Replay ≥ 100× tshark on the same summary",
    ];
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
    /// `VmRSS` (KiB) of each agent run at 10k DNS messages/s, at half time and at the end (section 2).
    pub(crate) agent_rss_kib: Vec<(u64, u64)>,
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
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench needs root (BPF programs, network namespaces)");
    }
    // Looked up on PATH, not run: `dnsmasq -h` (no-hosts) started a daemon
    // in the host's namespace that outlived the bench.
    let on_path = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    for tool in ["ip", "taskset", "dnsperf", "dnsmasq", "bpftool"] {
        if !on_path(tool) {
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
        agent_rss_kib: Vec::new(),
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
    section(&mut body, "7. Memory bounded by configuration", &mut ctx, memory::run);

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
            "**This is a `--quick` run**: 3 interleaved pairs instead of 7, shorter runs, dnsmasq only, no \
             `--sched-normal` mode, smaller replay files and fewer micro-benchmark samples. Treat its ratios as \
             indicative; `cargo xtask bench` (about 25 minutes) is the full run.\n"
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
    let (rows, _) = table_rows(&ctx.targets);
    let met = rows.iter().filter(|t| t.met == Some(true)).count();
    let missed = rows.iter().filter(|t| t.met == Some(false)).count();
    let open = rows.iter().filter(|t| t.met.is_none()).count();
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

/// The table's rows: issue 18's goals in order (a placeholder for each one
/// no section reported), then the other targets in the order reported; and
/// apart, the superseded targets some section still reported.
fn table_rows(targets: &[Target]) -> (Vec<Target>, Vec<Target>) {
    let mut rows = Vec::new();
    for g in goal::ALL {
        let found: Vec<&Target> = targets.iter().filter(|t| t.what == g).collect();
        if found.is_empty() {
            rows.push(Target {
                what: g.to_owned(),
                measured: "not reported by any section in this run".into(),
                met: None,
            });
        }
        rows.extend(found.into_iter().cloned());
    }
    let superseded: Vec<Target> =
        targets.iter().filter(|t| goal::SUPERSEDED.contains(&t.what.as_str())).cloned().collect();
    rows.extend(
        targets
            .iter()
            .filter(|t| !goal::ALL.contains(&t.what.as_str()) && !goal::SUPERSEDED.contains(&t.what.as_str()))
            .cloned(),
    );
    (rows, superseded)
}

fn verdict(t: &Target) -> &'static str {
    match t.met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn targets_table(targets: &[Target]) -> String {
    let (rows, superseded) = table_rows(targets);
    let mut s = String::from(
        "## Targets\n\nIssue 18's targets first (each measured side by side in this run; see the sections), then the \
         other standing targets.\n\n| target | measured | verdict |\n|---|---|---|\n",
    );
    for t in &rows {
        let _ = writeln!(s, "| {} | {} | {} |", t.what, t.measured, verdict(t));
    }
    s.push('\n');
    if !superseded.is_empty() {
        s.push_str("Targets from before issue 18 that the rows above replace, still reported by a section:\n\n");
        for t in &superseded {
            let _ = writeln!(s, "* {}: {} ({})", t.what, t.measured, verdict(t));
        }
        s.push('\n');
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(what: &str, met: Option<bool>) -> Target {
        Target { what: what.to_owned(), measured: "x".into(), met }
    }

    #[test]
    fn table_lists_every_goal_first_and_superseded_targets_apart() {
        let targets = vec![
            t("Capture ≤ 15 bytes per DNS message with zstd", Some(true)),
            t(goal::MEMORY, Some(false)),
            t(goal::SUPERSEDED[5], Some(false)),
            t(goal::QPS, Some(true)),
        ];
        let (rows, superseded) = table_rows(&targets);
        assert_eq!(rows.len(), goal::ALL.len() + 1);
        for (row, g) in rows.iter().zip(goal::ALL) {
            assert_eq!(row.what, g);
        }
        assert_eq!(rows[0].met, Some(true));
        assert_eq!(rows[1].met, None, "a goal no section reported is not measured");
        assert_eq!(rows.last().map(|r| r.what.as_str()), Some("Capture ≤ 15 bytes per DNS message with zstd"));
        assert_eq!(superseded.len(), 1);
        let md = targets_table(&targets);
        assert!(md.contains("not reported by any section") && md.contains(goal::SUPERSEDED[5]));
    }
}
