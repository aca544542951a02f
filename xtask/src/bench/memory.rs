//! Section 7: memory bounded by configuration, not by input length (issue
//! 18). The same kind of capture at two lengths, one 10× the other, replayed
//! by `ktrace dns -r -o json`, `ktrace dns -r --summary` and `ktrace drops -r`
//! (two node captures): a bounded mode's peak RSS hardly moves. The agent's
//! RSS over a live run comes from section 2.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Ctx, goal, stats::num, sys};

/// Longest a replay may take before it is killed.
const TIMEOUT: Duration = Duration::from_mins(15);
/// Peak RSS on the 10× capture may exceed that on the 1× capture by at most
/// this (MiB): the same margin `tracer/tests/replay_memory.rs` asserts
/// (allocator arenas and hash tables settle in steps).
pub(super) const MAX_GROWTH_MIB: f64 = 24.0;

/// What one run of a child cost: wall and CPU seconds, peak RSS.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cost {
    /// Spawn to exit, seconds.
    pub(super) wall: f64,
    /// User + system CPU seconds (`wait4`).
    pub(super) cpu: f64,
    /// Peak resident set, KiB (`ru_maxrss`).
    pub(super) rss_kib: u64,
}

/// Runs `cmd` to completion, stdin from /dev/null (stdout and stderr as the
/// caller set them): its [`Cost`]. The one place the benchmark reads a
/// child's peak RSS, so sections 4 and 7 measure memory the same way.
pub(super) fn measure(mut cmd: Command, what: &str) -> Result<Cost> {
    let start = Instant::now();
    let child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id() as i32;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut ru) };
        if r == pid {
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                bail!("{what} failed (status {status})");
            }
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            // ru_maxrss is in KiB on Linux.
            return Ok(Cost {
                wall: start.elapsed().as_secs_f64(),
                cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
                rss_kib: ru.ru_maxrss as u64,
            });
        }
        if r < 0 || start.elapsed() > TIMEOUT {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &raw mut status, 0);
            }
            bail!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`measure`] with output discarded: (wall s, peak RSS KiB).
fn peak_rss(mut cmd: Command, what: &str) -> Result<(f64, u64)> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    measure(cmd, what).map(|c| (c.wall, c.rss_kib))
}

fn example(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.root.join("target/release/examples").join(name)
}

/// A DNS capture of `exchanges` query/response pairs (`bench_capture`).
fn dns_capture(ctx: &Ctx, name: &str, exchanges: u64) -> Result<PathBuf> {
    let path = ctx.work.join(name);
    let out = Command::new(example(ctx, "bench_capture"))
        .arg(&path)
        .arg(exchanges.to_string())
        .output()
        .context("running bench_capture")?;
    anyhow::ensure!(out.status.success(), "bench_capture: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(path)
}

/// Two node captures of `exchanges` VXLAN exchanges (`bench_fabric`), in their own directory.
fn fabric_captures(ctx: &Ctx, name: &str, exchanges: u64) -> Result<(PathBuf, PathBuf)> {
    let dir = ctx.work.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = Command::new(example(ctx, "bench_fabric"))
        .arg(&dir)
        .args([exchanges.to_string(), "1000".to_owned()])
        .output()
        .context("running bench_fabric")?;
    anyhow::ensure!(out.status.success(), "bench_fabric: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok((dir.join("node-a.pcapng"), dir.join("node-b.pcapng")))
}

/// A replay mode: (label, arguments, the 1× inputs, the 10× inputs).
type Mode<'a> = (&'static str, &'static [&'static str], [&'a Path; 2], [&'a Path; 2]);

fn ktrace(ctx: &Ctx, args: &[&str], files: &[&Path]) -> Command {
    let mut c = sys::pinned(Some(sys::CPU_SERVER), &ctx.bin);
    c.arg(args[0]);
    for f in files {
        c.arg("-r").arg(f);
    }
    c.args(&args[1..]);
    c
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<String> {
    let (dns_n, fabric_n) = if ctx.quick { (30_000u64, 10_000u64) } else { (150_000, 50_000) };
    let short = dns_capture(ctx, "mem-1x.pcapng", dns_n)?;
    let long = dns_capture(ctx, "mem-10x.pcapng", dns_n * 10)?;
    let (fa1, fb1) = fabric_captures(ctx, "mem-fabric-1x", fabric_n)?;
    let (fa10, fb10) = fabric_captures(ctx, "mem-fabric-10x", fabric_n * 10)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Each mode replays the same kind of capture at two lengths, the second 10× the first: DNS captures of \
         {dns_n} and {} exchanges (`bench_capture`, four of five exchanges a search-list miss), and two node \
         captures of {fabric_n} and {} VXLAN exchanges with one reply in 1000 lost between the nodes \
         (`bench_fabric`). Peak RSS is `ru_maxrss` from `wait4`; pinned to CPU 1, output to /dev/null. A mode \
         whose memory is bounded by its configuration grows by at most {MAX_GROWTH_MIB} MiB on the longer \
         capture (the margin `tracer/tests/replay_memory.rs` asserts).\n\n\
         | mode | peak RSS MiB (1×) | peak RSS MiB (10×) | 10× ÷ 1× | wall s (10×) |\n|---|---|---|---|---|",
        dns_n * 10,
        fabric_n * 10
    );
    let modes: [Mode<'_>; 3] = [
        ("`ktrace dns -r -o json`", &["dns", "-o", "json"], [&short, &short], [&long, &long]),
        ("`ktrace dns -r --summary -o json`", &["dns", "-o", "json", "--summary"], [&short, &short], [&long, &long]),
        ("`ktrace drops -r A -r B -o json`", &["drops", "-o", "json"], [&fa1, &fb1], [&fa10, &fb10]),
    ];
    let mut cells = Vec::new();
    let mut worst: f64 = 0.0;
    let mut worst_mib: f64 = 0.0;
    for (label, args, one, ten) in modes {
        // The DNS modes read one file: the pair holds it twice only to share the shape.
        let n = if args[0] == "dns" { 1 } else { 2 };
        eprintln!("[bench]   memory: {label}");
        let (_, rss1) = peak_rss(ktrace(ctx, args, &one[..n]), label)?;
        let (wall10, rss10) = peak_rss(ktrace(ctx, args, &ten[..n]), label)?;
        let growth = rss10 as f64 / rss1.max(1) as f64;
        worst = worst.max(growth);
        let mib = |k: u64| k as f64 / 1024.0;
        worst_mib = worst_mib.max(mib(rss10) - mib(rss1));
        let _ = writeln!(s, "| {label} | {:.1} | {:.1} | {growth:.2} | {wall10:.2} |", mib(rss1), mib(rss10));
        cells.push(format!("{label} {:.0}→{:.0} MiB ({growth:.2}×)", mib(rss1), mib(rss10)));
    }
    s.push('\n');
    for p in [&short, &long] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(ctx.work.join("mem-fabric-1x"));
    let _ = std::fs::remove_dir_all(ctx.work.join("mem-fabric-10x"));
    let agent: Vec<f64> = ctx.agent_rss_kib.iter().filter(|(m, _)| *m > 0).map(|&(m, e)| e as f64 / m as f64).collect();
    let agent_cell = super::stats::summary(&agent).map_or_else(
        || "agent: not measured".to_owned(),
        |(m, lo, hi)| {
            format!(
                "agent RSS end ÷ half time {} [{}–{}] (section 2; its history fills up to 32 MiB by design)",
                num(m),
                num(lo),
                num(hi)
            )
        },
    );
    let _ = writeln!(s, "{agent_cell}.\n");
    ctx.target(
        goal::MEMORY,
        format!(
            "peak RSS on a 10× longer capture: {} (worst growth {worst_mib:+.0} MiB, {worst:.2}×); {agent_cell}",
            cells.join(", ")
        ),
        Some(worst_mib <= MAX_GROWTH_MIB),
    );
    Ok(s)
}
