//! `cargo xtask …`: set-up, build, tests, the lab and the demo.

mod bench;
mod demo;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

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
    /// Set up, build, and run every test: unit tests, then root end-to-end tests.
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
    /// Run clippy the three ways the workspace needs (userspace, eBPF on host, eBPF for BPF).
    Lint,
    /// Set up, build, and measure ktrace's overhead, pipeline, replay speed and hot paths;
    /// writes BENCHMARKS.md (root; about 12 minutes, `--quick` about 2).
    Bench {
        /// Fewer pairs, shorter runs and smaller files (indicative only).
        #[arg(long)]
        quick: bool,
    },
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
    setup::setup()?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "tracer", "--bin", "ktrace"]);
    run(c)?;
    Ok(root().join("target/release/ktrace"))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let bin = build()?;
    let mut unit = cargo();
    unit.args(["test", "-p", "tracer-common", "-p", "tracer", "-p", "xtask"]);
    run(unit)?;
    if !setup::is_root() {
        if std::env::var("KTRACE_REQUIRE_BPF").as_deref() == Ok("1") {
            bail!("end-to-end tests need root to load BPF programs and KTRACE_REQUIRE_BPF=1 is set");
        }
        eprintln!("[xtask] not root: skipping the end-to-end tests (they load BPF programs)");
        return Ok(());
    }
    let mut e2e = cargo();
    e2e.args(["test", "-p", "ktrace-e2e", "--"]).arg("--test-threads=1").args(extra);
    e2e.env("KTRACE_BIN", &bin);
    run(e2e)
}

fn lint() -> anyhow::Result<()> {
    setup::setup()?;
    let mut user = cargo();
    user.args(["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets", "--", "-D", "warnings"]);
    run(user)?;
    let mut ebpf = cargo();
    ebpf.current_dir(root().join("tracer-ebpf")).args([
        "+nightly",
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Zbuild-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    run(ebpf)
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
        Cmd::Bench { quick } => {
            let bin = build()?;
            bench::run(&bin, &root(), quick)
        }
    }
}
