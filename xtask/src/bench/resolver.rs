//! Section 2: dnsperf against dnsmasq (and unbound) with ktrace off,
//! `ktrace dns` on, `ktrace record` on and `tcpdump -w` on, at saturation
//! and at 50 % of the untraced maximum, in interleaved rounds.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};

use super::stats::{median, num, percentile, ratio_cell, ratios, summary};
use super::{Ctx, Server, load, start_server, sys};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    KtraceDns,
    /// `ktrace --sched-idle dns`: yields the CPU to the workload, catches up when the ring backs up.
    KtraceDnsIdle,
    /// `ktrace --sched-idle --no-catch-up dns`: never competes, loses events under saturation.
    KtraceDnsIdleStrict,
    KtraceRecord,
    Tcpdump,
}

const N_MODES: usize = 6;
const MODES: [Mode; N_MODES] =
    [Mode::Off, Mode::KtraceDns, Mode::KtraceDnsIdle, Mode::KtraceDnsIdleStrict, Mode::KtraceRecord, Mode::Tcpdump];
/// Index of [`Mode::KtraceDnsIdle`] in [`MODES`].
const IDLE: usize = 2;
/// Index of [`Mode::KtraceDnsIdleStrict`] in [`MODES`].
const STRICT: usize = 3;

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::KtraceDns => "`ktrace dns -o json > /dev/null`",
            Self::KtraceDnsIdle => "`ktrace --sched-idle dns -o json > /dev/null`",
            Self::KtraceDnsIdleStrict => "`ktrace --sched-idle --no-catch-up dns -o json > /dev/null`",
            Self::KtraceRecord => "`ktrace record -w FILE`",
            Self::Tcpdump => "`tcpdump -w FILE` (server veth)",
        }
    }
}

/// One dnsperf run with one mode.
#[derive(Clone, Debug, Default)]
struct Sample {
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    /// server + dnsperf + tracer CPU µs per completed query.
    cpu_us: f64,
    /// Tracer CPU µs per completed query.
    tracer_us: f64,
    /// Whole-machine busy CPU µs per completed query.
    system_us: f64,
    lost: u64,
    /// Ring-buffer events the tracer read and lost (`ktrace dns` modes only).
    events: Option<(u64, u64)>,
}

/// Starts the tracer of `mode` (None for off) and waits until it is attached.
fn start_tracer(ctx: &Ctx, mode: Mode) -> Result<Option<sys::Proc>> {
    let err = ctx.work.join("tracer.err");
    let p = match mode {
        Mode::Off => return Ok(None),
        Mode::KtraceDns | Mode::KtraceDnsIdle | Mode::KtraceDnsIdleStrict => {
            let mut c = sys::pinned(None, &ctx.bin);
            if mode != Mode::KtraceDns {
                c.arg("--sched-idle");
            }
            if mode == Mode::KtraceDnsIdleStrict {
                c.arg("--no-catch-up");
            }
            c.args(["dns", "-o", "json"]);
            let mut p = sys::Proc::spawn("ktrace dns", c, None, &err)?;
            p.wait_stderr("attached", Duration::from_secs(20))?;
            p
        }
        Mode::KtraceRecord => {
            let mut c = sys::pinned(None, &ctx.bin);
            c.arg("record").arg("-w").arg(ctx.work.join("rec.pcapng"));
            let mut p = sys::Proc::spawn("ktrace record", c, None, &err)?;
            p.wait_stderr("attached", Duration::from_secs(20))?;
            p
        }
        Mode::Tcpdump => {
            let mut c = sys::in_netns(sys::SRV_NS, None, "tcpdump");
            c.args(["-n", "-Z", "root", "-i", sys::SRV_DEV, "-w"]).arg(ctx.work.join("td.pcap"));
            let mut p = sys::Proc::spawn("tcpdump", c, None, &err)?;
            p.wait_stderr("listening on", Duration::from_secs(20))?;
            p
        }
    };
    Ok(Some(p))
}

fn one(ctx: &mut Ctx, server: &sys::Proc, mode: Mode, secs: u32, qps: Option<u32>, verbose: bool) -> Result<Sample> {
    let mut tracer = start_tracer(ctx, mode)?;
    let srv0 = sys::pid_cpu(server.pid()).unwrap_or(0.0);
    let tr0 = tracer.as_ref().and_then(|t| sys::pid_cpu(t.pid())).unwrap_or(0.0);
    let sys0 = sys::system_busy_secs().unwrap_or(0.0);
    let r = load::dnsperf(&ctx.work, &ctx.work.join("queries.txt"), secs, qps, verbose)?;
    let sys1 = sys::system_busy_secs().unwrap_or(0.0);
    let srv1 = sys::pid_cpu(server.pid()).unwrap_or(0.0);
    let tr1 = tracer.as_ref().and_then(|t| sys::pid_cpu(t.pid())).unwrap_or(0.0);
    let mut events = None;
    if let Some(t) = tracer.as_mut() {
        t.stop(Duration::from_secs(10));
        if matches!(mode, Mode::KtraceDns | Mode::KtraceDnsIdle | Mode::KtraceDnsIdleStrict) {
            events = parse_stopped(&t.stderr());
        }
        if mode == Mode::KtraceRecord {
            // "ktrace record: wrote N records to FILE …" (cli/record.rs).
            let written = t
                .stderr()
                .lines()
                .find_map(|l| l.strip_prefix("ktrace record: wrote ")?.split(' ').next()?.parse::<u64>().ok());
            let size = std::fs::metadata(ctx.work.join("rec.pcapng")).map_or(0, |m| m.len());
            if let Some(n) = written.filter(|n| *n > 0) {
                ctx.live_record_bytes = Some((size, n));
            }
        }
    }
    let n = r.completed.max(1) as f64;
    let lat_us: Vec<f64> = r.latencies.iter().map(|l| l * 1e6).collect();
    Ok(Sample {
        qps: r.qps,
        p50_us: percentile(&lat_us, 50.0),
        p99_us: percentile(&lat_us, 99.0),
        cpu_us: (srv1 - srv0 + tr1 - tr0 + r.cpu) / n * 1e6,
        tracer_us: (tr1 - tr0) / n * 1e6,
        system_us: (sys1 - sys0) / n * 1e6,
        lost: r.lost,
        events,
    })
}

/// (read, lost) from `ktrace dns`'s exit line
/// "ktrace: stopped: N events read, M lost in the kernel …".
fn parse_stopped(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().rev().find(|l| l.starts_with("ktrace: stopped: "))?;
    let rest = line.strip_prefix("ktrace: stopped: ")?;
    let (read, rest) = rest.split_once(" events read, ")?;
    let lost = rest.split_whitespace().next()?;
    Some((read.parse().ok()?, lost.parse().ok()?))
}

/// Interleaved rounds: each round runs every mode once, in an order rotated by the round number.
fn rounds(
    ctx: &mut Ctx,
    server: &sys::Proc,
    rounds: usize,
    secs: u32,
    qps: Option<u32>,
    verbose: bool,
) -> Result<Vec<[Sample; N_MODES]>> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut row: [Sample; N_MODES] = Default::default();
        for k in 0..MODES.len() {
            let i = (k + r) % MODES.len();
            eprintln!(
                "[bench]   round {}/{rounds}: {:?} at {}",
                r + 1,
                MODES[i],
                qps.map_or("saturation".into(), |q| format!("{q} qps"))
            );
            row[i] = one(ctx, server, MODES[i], secs, qps, verbose)?;
        }
        out.push(row);
    }
    Ok(out)
}

fn col(rs: &[[Sample; N_MODES]], i: usize, f: fn(&Sample) -> f64) -> Vec<f64> {
    rs.iter().map(|r| f(&r[i])).collect()
}

/// "; MODE RATIO, LOSS % of events LOST" for both `--sched-idle` modes: the
/// median per-round ratio of `f` to the untraced run's, shown by `show`.
fn idle_modes(rs: &[[Sample; N_MODES]], f: fn(&Sample) -> f64, show: impl Fn(f64) -> String, lost: &str) -> String {
    [(IDLE, "`--sched-idle`"), (STRICT, "`--sched-idle --no-catch-up`")]
        .into_iter()
        .filter_map(|(i, label)| {
            let (m, _, _) = summary(&ratios(&col(rs, i, f), &col(rs, 0, f)))?;
            Some(format!("; {label} {}, {:.1} % of events {lost}", show(m), idle_loss(rs, i).unwrap_or(f64::NAN)))
        })
        .collect()
}

/// Ring events (lost, generated) by the tracer of mode index `i`, summed over
/// rounds; `None` for modes that are not `ktrace dns`.
fn events_lost(rs: &[[Sample; N_MODES]], i: usize) -> Option<(u64, u64)> {
    let got: Vec<(u64, u64)> = rs.iter().filter_map(|r| r[i].events).collect();
    if got.is_empty() {
        return None;
    }
    let lost: u64 = got.iter().map(|e| e.1).sum();
    Some((lost, got.iter().map(|e| e.0).sum::<u64>() + lost))
}

/// "lost of generated (share)", for the `ktrace dns` modes.
fn events_cell(rs: &[[Sample; N_MODES]], i: usize) -> String {
    events_lost(rs, i).map_or_else(
        || "—".into(),
        |(lost, all)| format!("{lost} of {all} ({:.1} %)", lost as f64 * 100.0 / all.max(1) as f64),
    )
}

/// Share of ring events lost by the tracer of mode index `i` over all rounds.
fn idle_loss(rs: &[[Sample; N_MODES]], i: usize) -> Option<f64> {
    events_lost(rs, i).filter(|&(_, all)| all > 0).map(|(lost, all)| lost as f64 * 100.0 / all as f64)
}

fn table(rs: &[[Sample; N_MODES]], latency: bool) -> String {
    let mut s = String::new();
    if latency {
        let _ = writeln!(
            s,
            "| mode | qps | p50 µs | p99 µs | p50 ratio | p99 ratio | CPU µs/query | CPU ratio | tracer CPU µs/query | machine CPU µs/query | lost | ktrace events lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
    } else {
        let _ = writeln!(
            s,
            "| mode | qps | qps ratio | CPU µs/query | CPU ratio | tracer CPU µs/query | machine CPU µs/query | lost | ktrace events lost |\n|---|---|---|---|---|---|---|---|---|"
        );
    }
    let off = |f: fn(&Sample) -> f64| col(rs, 0, f);
    for (i, m) in MODES.iter().enumerate() {
        let c = |f: fn(&Sample) -> f64| col(rs, i, f);
        let lost: u64 = rs.iter().map(|r| r[i].lost).sum();
        let ev = events_cell(rs, i);
        let cpu_ratio = if i == 0 { "1".into() } else { ratio_cell(&ratios(&c(|x| x.cpu_us), &off(|x| x.cpu_us))) };
        if latency {
            let p50r = if i == 0 { "1".into() } else { ratio_cell(&ratios(&c(|x| x.p50_us), &off(|x| x.p50_us))) };
            let p99r = if i == 0 { "1".into() } else { ratio_cell(&ratios(&c(|x| x.p99_us), &off(|x| x.p99_us))) };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {p50r} | {p99r} | {} | {cpu_ratio} | {} | {} | {lost} | {ev} |",
                m.label(),
                num(median(&c(|x| x.qps))),
                num(median(&c(|x| x.p50_us))),
                num(median(&c(|x| x.p99_us))),
                num(median(&c(|x| x.cpu_us))),
                num(median(&c(|x| x.tracer_us))),
                num(median(&c(|x| x.system_us))),
            );
        } else {
            let qr = if i == 0 { "1".into() } else { ratio_cell(&ratios(&c(|x| x.qps), &off(|x| x.qps))) };
            let _ = writeln!(
                s,
                "| {} | {} | {qr} | {} | {cpu_ratio} | {} | {} | {lost} | {ev} |",
                m.label(),
                num(median(&c(|x| x.qps))),
                num(median(&c(|x| x.cpu_us))),
                num(median(&c(|x| x.tracer_us))),
                num(median(&c(|x| x.system_us))),
            );
        }
    }
    s.push('\n');
    s
}

#[allow(clippy::unnecessary_wraps, reason = "every section has the same signature")]
pub(crate) fn run(ctx: &mut Ctx) -> Result<String> {
    let (n, secs) = if ctx.quick { (3, 2) } else { (7, 3) };
    let mut servers = vec![Server::Dnsmasq];
    if !ctx.quick && sys::version("unbound", &["-V"]) != "not installed" {
        servers.push(Server::Unbound);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dnsperf (`-c 4 -q 200`, {secs} s per run, UDP) in `ktb-cli` on CPU 0 against the resolver in `ktb-srv` on \
         CPU 1, answering every name of a local zone itself (no upstream). {n} rounds × 6 modes, interleaved \
         (order rotated each round); ratios are per round against that round's \"off\" run. Saturation: as \
         many queries as the server answers. 50 %: `-Q` at half the median untraced saturation qps, with `-v` so \
         p50/p99 come from every query's latency (dnsperf itself only prints average and stddev). \
         \"machine CPU\" is all busy time of both CPUs (`/proc/stat`) per query, which includes other work on \
         the machine.\n"
    );
    for server in servers {
        if let Err(e) = one_server(ctx, &mut s, server, n, secs) {
            eprintln!("[bench] {}: {e:#}", server.name());
            let _ = writeln!(s, "### {}\n\nnot measured: {e:#}\n", server.name());
        }
    }
    let _ = writeln!(
        s,
        "`--sched-idle` runs ktrace's userspace under `SCHED_IDLE`: it only gets CPU time the resolver and \
         dnsperf leave idle, and when the ring buffer backs up (a quarter full, the kernel's forced wakeup) a \
         normal-priority thread raises it to normal priority for 100 ms to catch up. Whatever still does not \
         fit in the ring is dropped by the kernel and counted (\"ktrace events lost\", never silent). The \
         default runs at normal priority throughout. `--no-catch-up` keeps it idle regardless: it never \
         competes with the workload, and loses (and counts) what it cannot keep up with.\n\n\
         Reading the tables: on two cores every tracer's userspace CPU (\"tracer CPU µs/query\") is taken from \
         the resolver or from dnsperf, so throughput at saturation falls roughly with it; `tcpdump -w` pays \
         mostly in the kernel (AF_PACKET copies, counted in the server's and dnsperf's system time). With \
         `ktrace dns`, each query is 4 ring events (query and response, each at both sockets) decoded, \
         paired and printed as JSON; section 3 gives the cost per event and the closing note where it goes.\n"
    );
    if ctx.quick {
        let _ = writeln!(s, "unbound: not run in `--quick` (the full run includes it when `unbound` is installed).\n");
    }
    Ok(s)
}

fn one_server(ctx: &mut Ctx, s: &mut String, server: Server, n: usize, secs: u32) -> Result<()> {
    let proc_ = start_server(server, &ctx.work)?;
    // Warm-up: first queries pay for page faults and caches.
    load::dnsperf(&ctx.work, &ctx.work.join("queries.txt"), 1, None, false)?;
    let sat = rounds(ctx, &proc_, n, secs, None, false)?;
    let max = median(&col(&sat, 0, |x| x.qps));
    if !max.is_finite() || max < 100.0 {
        bail!("{}: untraced saturation is only {max:.0} qps", server.name());
    }
    let half = (max / 2.0) as u32;
    let lat = rounds(ctx, &proc_, n, secs, Some(half), true)?;
    let _ = writeln!(s, "### {} at saturation\n\n{}", server.name(), table(&sat, false));
    let _ = writeln!(s, "### {} at 50 % of the untraced maximum ({half} qps)\n\n{}", server.name(), table(&lat, true));
    if server == Server::Dnsmasq {
        let qr = ratios(&col(&sat, 1, |x| x.qps), &col(&sat, 0, |x| x.qps));
        if let Some((m, lo, hi)) = summary(&qr) {
            let idle = idle_modes(&sat, |x| x.qps, |m| format!("{:.1} %", m * 100.0), "lost (counted)");
            ctx.target(
                "Resolver throughput with `ktrace dns` ≥ 97 % of untraced at saturation (dnsmasq)",
                format!("{:.1} % [{:.1}–{:.1}], zero loss{idle}", m * 100.0, lo * 100.0, hi * 100.0),
                Some(m >= 0.97),
            );
        }
        let pr = ratios(&col(&lat, 1, |x| x.p99_us), &col(&lat, 0, |x| x.p99_us));
        if let Some((m, lo, hi)) = summary(&pr) {
            let idle = idle_modes(&lat, |x| x.p99_us, |m| format!("{:+.1} %", (m - 1.0) * 100.0), "lost");
            ctx.target(
                "p99 latency at 50 % load within +5 % with `ktrace dns` (dnsmasq)",
                format!("{:+.1} % [{:+.1}–{:+.1}]{idle}", (m - 1.0) * 100.0, (lo - 1.0) * 100.0, (hi - 1.0) * 100.0),
                Some(m <= 1.05),
            );
        }
    }
    Ok(())
}
