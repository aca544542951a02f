//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` once (cargo-fuzz
//! on the pinned nightly), runs each for a fixed time from its committed
//! seeds, and fails on any crash with the reproducer's path. FUZZING.md
//! describes the targets and the campaign figures.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run, setup};

/// A target, the longest input it is given, and what it covers.
pub(crate) struct Target {
    pub name: &'static str,
    max_len: u32,
}

/// Every target in `fuzz/fuzz_targets/`, in the order they run.
pub(crate) const TARGETS: &[Target] = &[
    // One DNS message (UDP payload or TCP frame): 64 KiB at most, but
    // nothing past a few hundred bytes reaches new code.
    Target { name: "dns_decode", max_len: 4096 },
    // Packets and short packet sequences.
    Target { name: "packet_parse", max_len: 8192 },
    // Whole captures: room for the fixtures (the largest is 38 KB).
    Target { name: "pcapng_read", max_len: 65_536 },
    Target { name: "scap_read", max_len: 65_536 },
    Target { name: "agent_stream", max_len: 32_768 },
    Target { name: "btf_parse", max_len: 16_384 },
];

/// Memory one input may use (libFuzzer's `-rss_limit_mb`): the readers
/// bound what they allocate; 2 GiB leaves headroom on a 24 GiB machine
/// shared with builds.
const RSS_LIMIT_MB: u32 = 2048;
/// Seconds one input may take before libFuzzer calls it a hang.
const UNIT_TIMEOUT_S: u32 = 10;

/// What `cargo xtask fuzz` was asked.
pub(crate) struct Options {
    pub seconds: u64,
    pub targets: Vec<String>,
    pub write_seeds: bool,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// The built target's binary (cargo-fuzz builds for the host triple, release).
fn binary(name: &str) -> PathBuf {
    fuzz_dir().join("target/x86_64-unknown-linux-gnu/release").join(name)
}

/// `cargo +<nightly> fuzz …` through rustup: `$CARGO` is the stable
/// toolchain's own cargo, which does not understand `+toolchain`.
fn cargo_fuzz() -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(fuzz_dir()).env_remove("RUSTC").env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN");
    // The fuzz targets link the tracer library, not its eBPF object.
    c.env("AYA_BUILD_SKIP", "1");
    c.args(["run", setup::EBPF_TOOLCHAIN, "cargo", "fuzz"]);
    c
}

/// Builds every target once: no sanitizer (the parsers are safe Rust, and
/// `ASan` would halve the executions), debug assertions and overflow checks on
/// (an overflow is a finding, not a silent wrap).
fn build() -> anyhow::Result<()> {
    let mut c = cargo_fuzz();
    c.args(["build", "--sanitizer", "none", "--debug-assertions"]);
    run(c).context("building the fuzz targets")
}

/// Regenerates `fuzz/seeds/`: captures, agent streams, packets, DNS
/// messages and BTF blobs from the tracer's test builders and the pcap
/// fixtures (ignored tests named `write_fuzz_seeds`), plus the scap fixtures as they are.
fn write_seeds() -> anyhow::Result<()> {
    let seeds = fuzz_dir().join("seeds");
    let mut c = cargo();
    c.args(["test", "-p", "tracer", "--lib", "write_fuzz_seeds", "--", "--ignored", "--test-threads=1"]);
    c.env("KTRACE_FUZZ_SEEDS", &seeds);
    run(c)?;
    let scap = root().join("tests/fixtures/scap");
    let out = seeds.join("scap_read");
    std::fs::create_dir_all(&out)?;
    for e in std::fs::read_dir(&scap).with_context(|| format!("reading {}", scap.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "scap") {
            let name = p.file_name().context("fixture name")?;
            std::fs::copy(&p, out.join(name))?;
        }
    }
    eprintln!("[xtask] wrote seeds under {}", seeds.display());
    Ok(())
}

/// One target's run, from libFuzzer's output.
#[derive(Debug, Default)]
struct Outcome {
    execs: u64,
    exec_per_s: u64,
    cov: u64,
    ft: u64,
    corpus_units: u64,
    new_units: u64,
    peak_rss_mb: u64,
    /// The reproducer libFuzzer saved, when the run failed.
    artifact: Option<String>,
    /// Why it failed (libFuzzer's `==…== ERROR:` or panic line).
    error: Option<String>,
    secs: f64,
}

/// The number after `key` in a libFuzzer status line (`cov: 123`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(key).nth(1)?;
    let num: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    num.parse().ok()
}

fn parse_output(text: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in text.lines() {
        if line.starts_with('#') && line.contains("cov: ") {
            o.cov = field(line, "cov: ").unwrap_or(o.cov);
            o.ft = field(line, "ft: ").unwrap_or(o.ft);
            o.corpus_units = field(line, "corp: ").unwrap_or(o.corpus_units);
        }
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units: ") {
            o.execs = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec: ") {
            o.exec_per_s = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("stat::new_units_added: ") {
            o.new_units = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("stat::peak_rss_mb: ") {
            o.peak_rss_mb = v.trim().parse().unwrap_or(0);
        }
        if let Some(p) = line.split("Test unit written to ").nth(1) {
            o.artifact = Some(p.trim().to_owned());
        }
        if o.error.is_none()
            && (line.contains("== ERROR: libFuzzer")
                || line.contains("panicked at")
                || line.contains("ERROR: libFuzzer"))
        {
            o.error = Some(line.trim().to_owned());
        }
    }
    o
}

/// Runs one built target for `seconds` over its corpus (fuzz/corpus/NAME,
/// grown by the run, gitignored) and committed seeds (fuzz/seeds/NAME).
fn run_target(t: &Target, seconds: u64) -> anyhow::Result<Outcome> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(t.name);
    let seeds = dir.join("seeds").join(t.name);
    let artifacts = dir.join("artifacts").join(t.name);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = artifacts.join("last-run.log");
    let mut c = Command::new(binary(t.name));
    c.current_dir(&dir)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={}", t.max_len))
        .arg(format!("-timeout={UNIT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .arg(&corpus);
    if seeds.is_dir() {
        c.arg(&seeds);
    }
    let log_file = std::fs::File::create(&log)?;
    c.stdout(Stdio::null()).stderr(log_file);
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("running {} (built?)", binary(t.name).display()))?;
    // libFuzzer stops itself after -max_total_time; the margin covers
    // loading the corpus and a last slow input (-timeout).
    let deadline = Duration::from_secs(seconds + 120);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            child.wait()?;
            bail!("{} did not stop within {deadline:?}; log {}", t.name, log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut o = parse_output(&text);
    o.secs = start.elapsed().as_secs_f64();
    if !status.success() && o.error.is_none() {
        o.error = Some(format!("exited with {status}; log {}", log.display()));
    }
    if status.success() {
        o.error = None;
        o.artifact = None;
    }
    Ok(o)
}

fn selected(names: &[String]) -> anyhow::Result<Vec<&'static Target>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            TARGETS.iter().find(|t| t.name == n).with_context(|| {
                let all: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
                format!("unknown fuzz target {n:?} (targets: {})", all.join(", "))
            })
        })
        .collect()
}

/// `cargo xtask fuzz`.
pub(crate) fn main(opts: &Options) -> anyhow::Result<()> {
    let targets = selected(&opts.targets)?;
    setup::setup()?;
    if opts.write_seeds {
        write_seeds()?;
    }
    let t0 = Instant::now();
    build()?;
    let build_s = t0.elapsed().as_secs_f64();
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for t in targets {
        eprintln!("[xtask] fuzzing {} for {} s", t.name, opts.seconds);
        let o = run_target(t, opts.seconds)?;
        if let Some(err) = &o.error {
            eprintln!("[xtask] {} FAILED: {err}", t.name);
            match &o.artifact {
                Some(a) => eprintln!("[xtask] reproducer: {a}\n[xtask] replay: {} {a}", binary(t.name).display()),
                None => eprintln!(
                    "[xtask] no reproducer saved; see {}/artifacts/{}/last-run.log",
                    fuzz_dir().display(),
                    t.name
                ),
            }
            failed.push(t.name);
        }
        rows.push((t.name, o));
    }
    println!(
        "\n{:<14} {:>10} {:>8} {:>6} {:>7} {:>7} {:>6} {:>7}  result",
        "target", "execs", "exec/s", "cov", "ft", "corpus", "new", "rss MB"
    );
    for (name, o) in &rows {
        println!(
            "{name:<14} {:>10} {:>8} {:>6} {:>7} {:>7} {:>6} {:>7}  {}",
            o.execs,
            o.exec_per_s,
            o.cov,
            o.ft,
            o.corpus_units,
            o.new_units,
            o.peak_rss_mb,
            if o.error.is_some() { "CRASH" } else { "ok" }
        );
    }
    let run_s: f64 = rows.iter().map(|(_, o)| o.secs).sum();
    println!("build {build_s:.0} s, fuzzing {run_s:.0} s ({} targets × {} s)", rows.len(), opts.seconds);
    if !failed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (reproducers under {})",
            failed.join(", "),
            Path::new("fuzz/artifacts").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_status_and_final_stats() {
        let text = "\
INFO: Seed: 1
#2\tINITED cov: 120 ft: 130 corp: 5/1024b exec/s: 0 rss: 30Mb
#4096\tpulse  cov: 150 ft: 210 corp: 9/2Kb lim: 4 exec/s: 2048 rss: 31Mb
#9000\tDONE   cov: 161 ft: 230 corp: 12/3Kb lim: 8 exec/s: 4500 rss: 32Mb
stat::number_of_executed_units: 9000
stat::average_exec_per_sec:     4500
stat::new_units_added:          7
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              32
";
        let o = parse_output(text);
        assert_eq!(
            (o.execs, o.exec_per_s, o.cov, o.ft, o.corpus_units, o.new_units, o.peak_rss_mb),
            (9000, 4500, 161, 230, 12, 7, 32)
        );
        assert!(o.error.is_none() && o.artifact.is_none());
    }

    #[test]
    fn finds_the_panic_and_the_reproducer() {
        let text = "\
thread '<unnamed>' panicked at tracer/src/decode/dns.rs:10:5:
index out of bounds
==1234== ERROR: libFuzzer: deadly signal
artifact_prefix='fuzz/artifacts/dns_decode/'; Test unit written to fuzz/artifacts/dns_decode/crash-abc
";
        let o = parse_output(text);
        assert_eq!(o.artifact.as_deref(), Some("fuzz/artifacts/dns_decode/crash-abc"));
        assert!(o.error.as_deref().is_some_and(|e| e.contains("panicked at")), "{:?}", o.error);
    }

    #[test]
    fn every_target_has_a_source_file_and_seeds() {
        for t in TARGETS {
            let src = fuzz_dir().join("fuzz_targets").join(format!("{}.rs", t.name));
            assert!(src.is_file(), "{} missing", src.display());
            let seeds = fuzz_dir().join("seeds").join(t.name);
            let n = std::fs::read_dir(&seeds).map_or(0, Iterator::count);
            assert!(n > 0, "no seeds in {}", seeds.display());
        }
    }
}
