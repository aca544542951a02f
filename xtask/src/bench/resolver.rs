//! Section 2: dnsperf against dnsmasq (and unbound) with ktrace off,
//! `ktrace dns` (JSON, `--summary`, `--sched-normal`), `ktrace agent` (metrics
//! scraped), `ktrace record` and `tcpdump -w` on, at saturation and at 50 %
//! of the untraced maximum, in interleaved rounds; then the agent alone at
//! 10k DNS messages/s (CPU and memory over the run).

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx, Server, load, start_server,
    stats::{median, num, percentile, ratio_cell, ratios, summary},
    sys,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    KtraceDns,
    /// `ktrace dns --summary -o json`: per-pod and per-resolver statistics only.
    KtraceDnsSummary,
    /// `ktrace agent` with its metrics endpoint scraped every second.
    KtraceAgent,
    /// `ktrace --sched-normal dns`: normal priority throughout (the default
    /// is idle priority with catch-up since issue 18; this shows what it saves).
    KtraceDnsIdle,
    KtraceRecord,
    Tcpdump,
}

// `--no-catch-up` had a mode here until it was retired (a no-op since
// issue 18: its only gain was throughput bought by losing events).
const N_MODES: usize = 7;
const MODES: [Mode; N_MODES] = [
    Mode::Off,
    Mode::KtraceDns,
    Mode::KtraceDnsSummary,
    Mode::KtraceAgent,
    Mode::KtraceDnsIdle,
    Mode::KtraceRecord,
    Mode::Tcpdump,
];
/// Index of [`Mode::KtraceDns`] in [`MODES`].
const DNS: usize = 1;
/// Index of [`Mode::KtraceDnsSummary`] in [`MODES`].
const SUMMARY: usize = 2;
/// Index of [`Mode::KtraceAgent`] in [`MODES`].
const AGENT: usize = 3;
/// Index of [`Mode::KtraceDnsIdle`] in [`MODES`].
const IDLE: usize = 4;
/// Index of [`Mode::Tcpdump`] in [`MODES`].
const TCPDUMP: usize = 6;

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::KtraceDns => "`ktrace dns -o json > /dev/null`",
            Self::KtraceDnsSummary => "`ktrace dns --summary -o json > /dev/null`",
            Self::KtraceAgent => "`ktrace agent --metrics …` (scraped every second)",
            Self::KtraceDnsIdle => "`ktrace --sched-normal dns -o json > /dev/null`",
            Self::KtraceRecord => "`ktrace record -w FILE`",
            Self::Tcpdump => "`tcpdump -w FILE` (server veth)",
        }
    }

    /// `ktrace dns` runs whose exit line gives events read and lost.
    fn is_dns(self) -> bool {
        matches!(self, Self::KtraceDns | Self::KtraceDnsSummary | Self::KtraceDnsIdle)
    }
}

/// The modes of a run: `--quick` leaves out the `--sched-normal` mode
/// (the full run keeps them, to show whether they still help).
fn active_modes(quick: bool) -> Vec<usize> {
    (0..N_MODES).filter(|&i| !quick || MODES[i] != Mode::KtraceDnsIdle).collect()
}

/// One dnsperf run with one mode.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// False for modes this run left out (their figures are NaN).
    ran: bool,
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
    /// Events the agent lost in the kernel (its `ktrace_lost_events_total{where="kernel"}`).
    agent_lost: Option<u64>,
}

/// Starts the tracer of `mode` (None for off) and waits until it is attached.
fn start_tracer(ctx: &Ctx, mode: Mode) -> Result<Option<sys::Proc>> {
    let err = ctx.work.join("tracer.err");
    let p = match mode {
        Mode::Off => return Ok(None),
        Mode::KtraceDns | Mode::KtraceDnsSummary | Mode::KtraceDnsIdle => {
            let mut c = sys::pinned(None, &ctx.bin);
            if mode == Mode::KtraceDnsIdle {
                c.arg("--sched-normal");
            }
            c.args(["dns", "-o", "json"]);
            if mode == Mode::KtraceDnsSummary {
                c.arg("--summary");
            }
            let mut p = sys::Proc::spawn("ktrace dns", c, None, &err)?;
            p.wait_stderr("attached", Duration::from_secs(20))?;
            p
        }
        Mode::KtraceAgent => start_agent(ctx)?.0,
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

/// A free TCP port on loopback for the agent's metrics listener.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Starts `ktrace agent` with metrics on a loopback port and its gRPC socket
/// and captures under the scratch directory; returns it and the metrics port.
fn start_agent(ctx: &Ctx) -> Result<(sys::Proc, u16)> {
    let port = free_port()?;
    let dir = ctx.work.join("agent");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut c = sys::pinned(None, &ctx.bin);
    c.args(["--no-kube-api", "agent", "--grace", "0s", "--metrics"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--listen")
        .arg(format!("unix:{}", dir.join("agent.sock").display()))
        .arg("--capture-dir")
        .arg(dir.join("captures"));
    let mut p = sys::Proc::spawn("ktrace agent", c, None, &ctx.work.join("agent.err"))?;
    p.wait_stderr("attached", Duration::from_secs(20))?;
    Ok((p, port))
}

/// `GET /metrics` on loopback (HTTP/1.0: the server closes after the body).
fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Kernel-side lost events in a metrics exposition.
fn kernel_lost(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("ktrace_lost_events_total{") && l.contains("where=\"kernel\""))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Scrapes the agent's metrics every second, as Prometheus would (more
/// often than its usual 15–30 s: the scrape's cost counts as the agent's).
struct Scraper {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Bounded: the run that owns it lasts seconds; stop ends it within 50 ms.
            for _ in 0..3600 {
                for _ in 0..20 {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = scrape(port);
            }
        });
        Self { port, stop, thread: Some(thread) }
    }

    /// Stops scraping; the agent's kernel-side lost events from a last scrape.
    fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        scrape(self.port).as_deref().and_then(kernel_lost)
    }
}

fn one(ctx: &mut Ctx, server: &sys::Proc, mode: Mode, secs: u32, qps: Option<u32>, verbose: bool) -> Result<Sample> {
    let (mut tracer, scraper) = if mode == Mode::KtraceAgent {
        let (p, port) = start_agent(ctx)?;
        (Some(p), Some(Scraper::start(port)))
    } else {
        (start_tracer(ctx, mode)?, None)
    };
    let srv0 = sys::pid_cpu(server.pid()).unwrap_or(0.0);
    let tr0 = tracer.as_ref().and_then(|t| sys::pid_cpu(t.pid())).unwrap_or(0.0);
    let sys0 = sys::system_busy_secs().unwrap_or(0.0);
    let r = load::dnsperf(&ctx.work, &ctx.work.join("queries.txt"), secs, qps, verbose)?;
    let sys1 = sys::system_busy_secs().unwrap_or(0.0);
    let srv1 = sys::pid_cpu(server.pid()).unwrap_or(0.0);
    let tr1 = tracer.as_ref().and_then(|t| sys::pid_cpu(t.pid())).unwrap_or(0.0);
    let mut events = None;
    let agent_lost = scraper.and_then(Scraper::finish);
    if let Some(t) = tracer.as_mut() {
        t.stop(Duration::from_secs(10));
        if mode.is_dns() {
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
        ran: true,
        qps: r.qps,
        p50_us: percentile(&lat_us, 50.0),
        p99_us: percentile(&lat_us, 99.0),
        cpu_us: (srv1 - srv0 + tr1 - tr0 + r.cpu) / n * 1e6,
        tracer_us: (tr1 - tr0) / n * 1e6,
        system_us: (sys1 - sys0) / n * 1e6,
        lost: r.lost,
        events,
        agent_lost,
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
    let active = active_modes(ctx.quick);
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut row: [Sample; N_MODES] = Default::default();
        for k in 0..active.len() {
            let i = active[(k + r) % active.len()];
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
    rs.iter().map(|r| if r[i].ran { f(&r[i]) } else { f64::NAN }).collect()
}

/// Whether mode index `i` ran in any round.
fn ran(rs: &[[Sample; N_MODES]], i: usize) -> bool {
    rs.iter().any(|r| r[i].ran)
}

/// "; MODE RATIO, LOSS % of events LOST" for the `--sched-normal` mode: the
/// median per-round ratio of `f` to the untraced run's, shown by `show`.
fn idle_modes(rs: &[[Sample; N_MODES]], f: fn(&Sample) -> f64, show: impl Fn(f64) -> String, lost: &str) -> String {
    [(IDLE, "`--sched-normal`")]
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
    let agent: Vec<u64> = rs.iter().filter_map(|r| r[i].agent_lost).collect();
    if !agent.is_empty() {
        return format!("{} lost (agent metrics)", agent.iter().sum::<u64>());
    }
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
        if !ran(rs, i) {
            continue;
        }
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
         CPU 1, answering every name of a local zone itself (no upstream). {n} rounds × {} modes, interleaved \
         (order rotated each round); ratios are per round against that round's \"off\" run. Saturation: as \
         many queries as the server answers. 50 %: `-Q` at half the median untraced saturation qps, with `-v` so \
         p50/p99 come from every query's latency (dnsperf itself only prints average and stddev). \
         \"machine CPU\" is all busy time of both CPUs (`/proc/stat`) per query, which includes other work on \
         the machine.{}\n",
        active_modes(ctx.quick).len(),
        if ctx.quick { " `--quick` leaves out the `--sched-normal` mode." } else { "" }
    );
    for server in servers {
        if let Err(e) = one_server(ctx, &mut s, server, n, secs) {
            eprintln!("[bench] {}: {e:#}", server.name());
            let _ = writeln!(s, "### {}\n\nnot measured: {e:#}\n", server.name());
        }
    }
    let _ = writeln!(
        s,
        "By default live ktrace runs its userspace under `SCHED_IDLE`: it only gets CPU time the resolver and \
         dnsperf leave idle, and when the ring buffer backs up (a quarter full, the kernel's forced wakeup) a \
         normal-priority thread raises it to normal priority for 100 ms to catch up. Whatever still does not \
         fit in the ring is dropped by the kernel and counted (\"ktrace events lost\", never silent). \
         `--sched-normal` runs at normal priority throughout (the default before issue 18).\n\n\
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
        issue18_targets(ctx, &sat, &lat);
        let (runs, half_secs) = if ctx.quick { (3, 2) } else { (5, 5) };
        match agent_rounds(ctx, runs, half_secs) {
            Ok(text) => s.push_str(&text),
            Err(e) => {
                eprintln!("[bench] agent at 10k DNS messages/s: {e:#}");
                let _ = writeln!(s, "### `ktrace agent` at 10k DNS messages/s\n\nnot measured: {e:#}\n");
            }
        }
    }
    Ok(())
}

/// "0.580 [0.502–0.731]" of `f`'s per-round ratio to the untraced run, for mode index `i`.
fn ratio_of(rs: &[[Sample; N_MODES]], i: usize, f: fn(&Sample) -> f64) -> Option<(f64, String)> {
    let r = ratios(&col(rs, i, f), &col(rs, 0, f));
    summary(&r).map(|(m, _, _)| (m, ratio_cell(&r)))
}

/// Issue 18's resolver targets from the dnsmasq rounds.
fn issue18_targets(ctx: &mut Ctx, sat: &[[Sample; N_MODES]], lat: &[[Sample; N_MODES]]) {
    use super::goal;
    let qps = |x: &Sample| x.qps;
    match (ratio_of(sat, DNS, qps), ratio_of(sat, TCPDUMP, qps)) {
        (Some((k, kc)), Some((t, tc))) => {
            let mut m = format!("`ktrace dns -o json` {kc} vs `tcpdump -w` {tc}");
            for (i, label) in [(SUMMARY, "`--summary`"), (AGENT, "agent")] {
                if let Some((_, c)) = ratio_of(sat, i, qps) {
                    let _ = write!(m, "; {label} {c}");
                }
            }
            let _ = write!(m, "{}", idle_modes(sat, qps, |x| format!("{x:.3}"), "lost (counted)"));
            let _ = write!(m, "; goal 0.97 {}", if k >= 0.97 { "reached" } else { "not reached" });
            ctx.target(goal::QPS, m, Some(k >= t));
        }
        _ => ctx.target(goal::QPS, "no pair of runs".into(), None),
    }
    match (ratio_of(lat, DNS, |x| x.p50_us), ratio_of(lat, DNS, |x| x.p99_us)) {
        (Some((p50, c50)), Some((p99, c99))) => {
            let mut m = format!("p50 {c50}, p99 {c99}");
            for (i, label) in [(SUMMARY, "`--summary`"), (AGENT, "agent"), (TCPDUMP, "`tcpdump -w`")] {
                if let (Some((_, a)), Some((_, b))) = (ratio_of(lat, i, |x| x.p50_us), ratio_of(lat, i, |x| x.p99_us)) {
                    let _ = write!(m, "; {label} {a} / {b}");
                }
            }
            let _ = write!(m, "{}", idle_modes(lat, |x| x.p99_us, |x| format!("p99 {x:.3}"), "lost"));
            ctx.target(goal::LATENCY, m, Some(p50 <= 1.2 && p99 <= 1.5));
        }
        _ => ctx.target(goal::LATENCY, "no pair of runs".into(), None),
    }
    // Tracer CPU per completed query, at saturation and at half load (the
    // larger of the two decides: at saturation a tracer that falls behind
    // looks cheaper than it is).
    let cpu = |i: usize| {
        let (a, b) = (median(&col(sat, i, |x| x.tracer_us)), median(&col(lat, i, |x| x.tracer_us)));
        (a.max(b), format!("{} µs at saturation, {} µs at 50 %", num(a), num(b)))
    };
    let (json, json_cell) = cpu(DNS);
    if json.is_finite() {
        ctx.target(goal::CPU_JSON, json_cell, Some(json <= 1.0));
    } else {
        ctx.target(goal::CPU_JSON, "no run".into(), None);
    }
    let (summ, summ_cell) = cpu(SUMMARY);
    let (agent, agent_cell) = cpu(AGENT);
    if summ.is_finite() && agent.is_finite() {
        ctx.target(
            goal::CPU_LEAN,
            format!("`--summary` {summ_cell}; agent {agent_cell}"),
            Some(summ <= 0.5 && agent <= 0.5),
        );
    } else {
        ctx.target(goal::CPU_LEAN, "no run".into(), None);
    }
}

/// One agent run at 5k queries/s (10k DNS messages/s: query and response).
struct AgentRun {
    /// Agent CPU (user+sys) as % of one core over the load.
    cpu_pct: f64,
    /// DNS messages per second dnsperf completed (2 per query).
    msgs_per_sec: f64,
    /// `VmRSS` at half time and at the end, `VmHWM` at the end (KiB).
    rss_mid_kib: u64,
    rss_end_kib: u64,
    hwm_kib: u64,
    /// Kernel-side lost events (metrics).
    lost: Option<u64>,
}

/// The agent alone at 10k DNS messages/s with its metrics scraped every
/// second: CPU share of one core, and memory at half time and at the end.
fn agent_rounds(ctx: &mut Ctx, n: usize, half_secs: u32) -> Result<String> {
    let queries = ctx.work.join("queries.txt");
    let mut runs = Vec::new();
    for r in 0..n {
        eprintln!("[bench]   agent at 10k DNS messages/s, run {}/{n}", r + 1);
        let (mut p, port) = start_agent(ctx)?;
        let scraper = Scraper::start(port);
        let c0 = sys::pid_oncpu_secs(p.pid()).unwrap_or(0.0);
        let t0 = Instant::now();
        let a = load::dnsperf(&ctx.work, &queries, half_secs, Some(5000), false)?;
        let (rss_mid_kib, _) = sys::rss_kib(p.pid()).unwrap_or((0, 0));
        let b = load::dnsperf(&ctx.work, &queries, half_secs, Some(5000), false)?;
        let c1 = sys::pid_oncpu_secs(p.pid()).unwrap_or(0.0);
        let wall = t0.elapsed().as_secs_f64();
        let (rss_end_kib, hwm_kib) = sys::rss_kib(p.pid()).unwrap_or((0, 0));
        let lost = scraper.finish();
        p.stop(Duration::from_secs(10));
        runs.push(AgentRun {
            cpu_pct: (c1 - c0) / wall.max(1e-3) * 100.0,
            msgs_per_sec: 2.0 * (a.completed + b.completed) as f64 / f64::from(2 * half_secs),
            rss_mid_kib,
            rss_end_kib,
            hwm_kib,
            lost,
        });
    }
    let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_pct).collect();
    let rate = median(&runs.iter().map(|r| r.msgs_per_sec).collect::<Vec<_>>());
    let lost: u64 = runs.iter().filter_map(|r| r.lost).sum();
    let mib = |k: u64| k as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### `ktrace agent` at 10k DNS messages/s\n\n`ktrace agent --metrics 127.0.0.1:PORT` (default history \
         32 MiB, ring 16 MiB; `/metrics` scraped every second) while dnsperf sends 5,000 queries/s to dnsmasq \
         (each query and its response: 10,000 DNS messages/s, 20,000 socket-hook events/s), {n} runs of \
         2 × {half_secs} s. CPU is the agent's on-CPU time (all its threads, from `/proc/PID/task/*/schedstat` in ns; \
         `stat`'s clock ticks were 0.25 % of a core wide on a quick run) over the load's wall time.\n\n\
         | run | DNS messages/s | agent CPU % of one core | RSS MiB at half time | RSS MiB at the end | peak RSS MiB | kernel events lost |\n|---|---|---|---|---|---|---|"
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} |",
            i + 1,
            num(r.msgs_per_sec),
            r.cpu_pct,
            mib(r.rss_mid_kib),
            mib(r.rss_end_kib),
            mib(r.hwm_kib),
            r.lost.map_or("—".into(), |l| l.to_string())
        );
    }
    s.push('\n');
    match summary(&cpu) {
        Some((m, lo, hi)) => ctx.target(
            super::goal::AGENT_CPU,
            format!(
                "{m:.2} % [{lo:.2}–{hi:.2}] at {} msgs/s, {lost} events lost; peak RSS {:.1} MiB",
                num(rate),
                mib(runs.iter().map(|r| r.hwm_kib).max().unwrap_or(0))
            ),
            Some(m <= 2.0 && lost == 0),
        ),
        None => ctx.target(super::goal::AGENT_CPU, "no run".into(), None),
    }
    ctx.agent_rss_kib = runs.iter().map(|r| (r.rss_mid_kib, r.rss_end_kib)).collect();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lost_from_the_exposition() {
        let text = "# HELP ktrace_lost_events_total Events lost\n\
                    ktrace_lost_events_total{node=\"n\",where=\"history\"} 7\n\
                    ktrace_lost_events_total{node=\"n\",where=\"kernel\"} 12\n";
        assert_eq!(kernel_lost(text), Some(12));
        assert_eq!(kernel_lost("ktrace_up 1\n"), None);
    }

    #[test]
    fn quick_leaves_out_the_sched_idle_modes() {
        assert_eq!(active_modes(false).len(), N_MODES);
        let quick = active_modes(true);
        assert!(!quick.contains(&IDLE));
        assert!([DNS, SUMMARY, AGENT, TCPDUMP].iter().all(|i| quick.contains(i)));
        assert_eq!(MODES[DNS], Mode::KtraceDns);
        assert_eq!(MODES[SUMMARY], Mode::KtraceDnsSummary);
        assert_eq!(MODES[AGENT], Mode::KtraceAgent);
        assert_eq!(MODES[TCPDUMP], Mode::Tcpdump);
    }
}
