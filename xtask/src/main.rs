//! `cargo xtask …`: set-up, build, tests, the lab and the demo.

mod bench;
mod demo;
mod fuzz;
mod kernels;
mod release;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
// The library's (lab errors); the binary uses it through `xtask::lab`.
use clap::{Parser, Subcommand};
use thiserror as _;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "ktrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, rust-src, bpf-linker).
    Setup,
    /// Set up, then build the `ktrace` binary (release) with its embedded eBPF object.
    Build,
    /// Set up, build, and run every test: unit tests, root end-to-end tests, the kernel
    /// matrix (`kernels --check`), 20 s of fuzzing per target, and the container image run.
    /// `KTRACE_SKIP_KERNELS=1`, `KTRACE_SKIP_FUZZ=1`, `KTRACE_SKIP_IMAGE=1` skip (and count) a stage.
    Test {
        /// Extra arguments for the end-to-end test run (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build, bring the lab up, show the slow-DNS incident explained, bring it down.
    Demo,
    /// The two-node lab cluster in network namespaces.
    /// `lab up [--fault NAME]... [--no-fault NAME]... [--no-faults]`, `lab down`, `lab status`,
    /// `lab exec NAMESPACE/POD -- PROGRAM ...`. Faults: upstream-blackhole (default on),
    /// fabric-drop-vxlan, fabric-drop-pod-cidr, node-drop, refused.
    Lab {
        /// The lab command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the container image: ktrace static (musl) `FROM scratch` with buildah, tagged
    /// localhost/ktrace:VERSION and exported to target/image/ktrace-VERSION.oci.tar.
    Image,
    /// Build the release archive target/dist/ktrace-VERSION-x86_64-linux-musl.tar.gz (binary,
    /// kubectl plugin link, completions, man pages, deploy/, SHA256SUMS) and its krew manifest.
    Dist,
    /// Run clippy the three ways the workspace needs (userspace, eBPF on host, eBPF for BPF).
    Lint,
    /// Set up, build the fuzz targets (cargo-fuzz, pinned nightly) and run each for
    /// `--seconds`; fails on any crash, with the reproducer saved under fuzz/artifacts/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Only this target (repeatable); default: all.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Regenerate the committed seeds (fuzz/seeds/) first.
        #[arg(long)]
        write_seeds: bool,
    },
    /// Set up, build, and measure ktrace's overhead, pipeline, replay speed and hot paths;
    /// writes BENCHMARKS.md (root; about 12 minutes, `--quick` about 2).
    Bench {
        /// Fewer pairs, shorter runs and smaller files (indicative only).
        #[arg(long)]
        quick: bool,
    },
    /// Set up, build, and run ktrace's checks on Debian's 6.1 and 6.12 kernels under qemu
    /// and on the host kernel; writes KERNELS.md (root; about 7 minutes, `--check` compares instead).
    Kernels(kernels::Opts),
}

/// The workspace root (xtask/ is one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("[xtask] {cmd:?}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Builds `target/release/ktrace` and returns its path.
fn build() -> anyhow::Result<PathBuf> {
    build_with(&[])
}

/// [`build`] plus other targets of the tracer package in the same cargo run:
/// examples unify dev-dependency features, so building them separately
/// would compile the whole dependency tree a second time.
fn build_with(extra: &[&str]) -> anyhow::Result<PathBuf> {
    setup::setup()?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "tracer", "--bin", "ktrace"]).args(extra);
    run(c)?;
    Ok(root().join("target/release/ktrace"))
}

/// Pass/fail totals over several `cargo test` runs.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test …`, echoing its output and adding up its `test result:` lines.
fn run_tests(mut cmd: Command, t: &mut Totals) -> anyhow::Result<bool> {
    use std::io::BufRead as _;
    eprintln!("[xtask] {cmd:?}");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let num = |key: &str| {
                    rest.split(';').find_map(|p| {
                        p.trim().strip_suffix(key).and_then(|n| {
                            n.trim().trim_start_matches("ok.").trim_start_matches("FAILED.").trim().parse::<u64>().ok()
                        })
                    })
                };
                t.passed += num("passed").unwrap_or(0);
                t.failed += num("failed").unwrap_or(0);
                t.ignored += num("ignored").unwrap_or(0);
            }
        }
    }
    Ok(child.wait()?.success())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let bin = build()?;
    let mut totals = Totals::default();
    let mut unit = cargo();
    // --lib --bins --tests: no doctests (there are none, and an empty doctest
    // run would end the log on "0 passed").
    unit.args([
        "test",
        "--no-fail-fast",
        "-p",
        "tracer-common",
        "-p",
        "tracer",
        "-p",
        "xtask",
        "--lib",
        "--bins",
        "--tests",
    ]);
    let mut ok = run_tests(unit, &mut totals)?;
    if setup::is_root() {
        let mut e2e = cargo();
        e2e.args(["test", "--no-fail-fast", "-p", "ktrace-e2e", "--tests", "--"]).arg("--test-threads=1").args(extra);
        e2e.env("KTRACE_BIN", &bin);
        ok &= run_tests(e2e, &mut totals)?;
        // The kernel matrix (Debian 6.1 and 6.12 in qemu, and this host's
        // kernel) and a short fuzz run of every parser: each counts as one
        // test here, their own output lists the checks and targets.
        if std::env::var("KTRACE_SKIP_KERNELS").as_deref() == Ok("1") {
            eprintln!("[xtask] KTRACE_SKIP_KERNELS=1: kernel matrix skipped");
            totals.ignored += 1;
        } else {
            let opts = kernels::Opts { check: true, ..kernels::Opts::default() };
            stage("kernel matrix", kernels::run(&bin, &root(), &opts), &mut totals);
        }
        if std::env::var("KTRACE_SKIP_FUZZ").as_deref() == Ok("1") {
            eprintln!("[xtask] KTRACE_SKIP_FUZZ=1: fuzzing skipped");
            totals.ignored += 1;
        } else {
            let opts = fuzz::Options { seconds: 20, targets: Vec::new(), write_seeds: false };
            stage("fuzz (20 s per target)", fuzz::main(&opts), &mut totals);
        }
        // The container image: built from the static (musl) binary, then run
        // with the DaemonSet's capabilities (tests/image.rs).
        if std::env::var("KTRACE_SKIP_IMAGE").as_deref() == Ok("1") {
            eprintln!("[xtask] KTRACE_SKIP_IMAGE=1: image test skipped");
            totals.ignored += 1;
        } else {
            match release::image() {
                Ok(()) => {
                    let mut img = cargo();
                    img.args(["test", "-p", "ktrace-e2e", "--features", "image", "--test", "image", "--"])
                        .arg("--test-threads=1");
                    img.env("KTRACE_BIN", &bin);
                    ok &= run_tests(img, &mut totals)?;
                }
                Err(e) => stage("container image build", Err(e), &mut totals),
            }
        }
    } else if std::env::var("KTRACE_REQUIRE_BPF").as_deref() == Ok("1") {
        bail!("end-to-end tests need root to load BPF programs and KTRACE_REQUIRE_BPF=1 is set");
    } else {
        eprintln!("[xtask] not root: skipping the end-to-end tests (they load BPF programs)");
    }
    println!("\nktrace: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !ok || totals.failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}

/// Counts one xtask stage of the test run as a passed or failed test.
fn stage(name: &str, r: anyhow::Result<()>, t: &mut Totals) {
    match r {
        Ok(()) => {
            println!("[xtask] {name}: ok");
            t.passed += 1;
        }
        Err(e) => {
            println!("[xtask] {name}: FAILED: {e:#}");
            t.failed += 1;
        }
    }
}

fn lint() -> anyhow::Result<()> {
    setup::setup()?;
    let mut user = cargo();
    user.args(["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets", "--", "-D", "warnings"]);
    run(user)?;
    // setup installs the pinned nightly minimal (no clippy, no rustfmt); adding them is a no-op once present.
    let mut comp = Command::new("rustup");
    comp.args(["component", "add", "clippy", "rustfmt", "--toolchain", setup::EBPF_TOOLCHAIN]);
    run(comp)?;
    // rustfmt.toml asks for `imports_granularity`, which only a nightly rustfmt applies.
    let mut fmt = Command::new("rustup");
    fmt.env_remove("RUSTC").env_remove("CARGO").args([
        "run",
        setup::EBPF_TOOLCHAIN,
        "cargo",
        "fmt",
        "--all",
        "--",
        "--check",
    ]);
    run(fmt)?;
    // `$CARGO` is the toolchain's own cargo, which does not understand
    // `+toolchain`: go through rustup for the pinned nightly.
    // Twice: ktrace embeds the default object and the `bpf-log` one, whose
    // log statements only exist with the feature.
    for features in [&[][..], &["--features", "bpf-log"][..]] {
        let mut ebpf = Command::new("rustup");
        ebpf.current_dir(root().join("tracer-ebpf"))
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .args([
                "run",
                setup::EBPF_TOOLCHAIN,
                "cargo",
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Zbuild-std=core",
            ])
            .args(features)
            .args(["--", "-D", "warnings"]);
        run(ebpf)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build().map(|p| eprintln!("[xtask] built {}", p.display())),
        Cmd::Test { args } => test(&args),
        Cmd::Demo => {
            let bin = build()?;
            demo::run(&bin)
        }
        Cmd::Lab { args } => xtask::lab::lab_main(&args),
        Cmd::Lint => lint(),
        Cmd::Fuzz { seconds, targets, write_seeds } => fuzz::main(&fuzz::Options { seconds, targets, write_seeds }),
        Cmd::Kernels(opts) => {
            let bin = build()?;
            kernels::run(&bin, &root(), &opts)
        }
        Cmd::Image => release::image(),
        Cmd::Dist => release::dist(),
        Cmd::Bench { quick } => {
            let bin = build_with(&[
                "--example",
                "bench_capture",
                "--example",
                "ring_bench",
                "--example",
                "bench_fabric",
                "--example",
                "bench_memory",
                "--example",
                "noop_tp_btf",
            ])?;
            bench::run(&bin, &root(), quick)
        }
    }
}
