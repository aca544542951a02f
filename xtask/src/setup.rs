//! `cargo xtask setup`: installs what a fresh machine lacks, idempotently,
//! saying what it does. Every other xtask that builds or runs ktrace calls it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Debian packages ktrace's build, lab, tests and benchmarks use.
pub(crate) const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links eBPF objects with LLVM 22"),
    ("libpolly-22-dev", "bpf-linker (LLVM 22 link dependency)"),
    ("zlib1g-dev", "bpf-linker"),
    ("libzstd-dev", "bpf-linker"),
    ("iproute2", "the lab: network namespaces, veth, VXLAN"),
    ("nftables", "the lab: fault injection (drops)"),
    ("dnsmasq-base", "the lab: cluster DNS and upstream resolvers"),
    ("bind9-dnsutils", "tests: dig"),
    ("curl", "the lab: pod-to-pod HTTP"),
    ("python3", "the lab: backend HTTP server"),
    ("tcpdump", "benchmarks: reference capture"),
    ("dnsperf", "benchmarks: resolver load generator"),
    ("tshark", "tests: cross-check captures"),
    ("procps", "tests: process inspection"),
    ("bpftool", "tests: check nothing stays attached"),
    ("unbound", "benchmarks: second resolver"),
    ("valgrind", "benchmarks: callgrind profile of replay"),
    ("prometheus", "tests: promtool checks the agent's /metrics"),
    ("g++", "fuzzing: libfuzzer-sys compiles libFuzzer (C++)"),
    ("sysdig", "benchmarks: `sysdig -r` next to `ktrace dns -r` (replay only, no kernel module)"),
    ("qemu-system-x86", "kernel matrix: boots Debian's 6.1 and 6.12 kernels (TCG)"),
    ("busybox-static", "kernel matrix: the guests' shell and tools; nc in the scenario"),
    ("cpio", "kernel matrix: packs the guests' initramfs"),
    ("xz-utils", "kernel matrix: unpacks 6.12's .ko.xz modules"),
    ("util-linux", "kernel matrix: flock around the host run"),
    ("musl-tools", "cargo xtask image/dist: the static binary (musl-gcc for the C dependencies)"),
    ("buildah", "cargo xtask image: builds the OCI image; tests/image.rs runs it"),
    ("binutils", "cargo xtask image/dist: strip the static binary"),
];

/// The nightly that builds the eBPF crate. Pinned: its LLVM must be the one
/// bpf-linker links against (22). Newer nightlies (LLVM 23, from about
/// 2026-08) write bitcode LLVM 22 rejects with "Invalid record". Keep in
/// step with `EBPF_TOOLCHAIN` in tracer/build.rs.
pub(crate) const EBPF_TOOLCHAIN: &str = "nightly-2026-06-15";

/// The bpf-linker version known to work with LLVM 22 and rustc 1.95.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz for `cargo xtask fuzz` (run on [`EBPF_TOOLCHAIN`], whose
/// libFuzzer support it needs; the tool itself builds on stable).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn say(msg: &str) {
    eprintln!("[setup] {msg}");
}

fn have_pkg(p: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", p])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Whether we are root (installing packages and loading BPF both need it).
#[must_use]
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain([cargo_bin_dir()]).map(|d| d.join(prog)).find(|p| p.is_file())
}

/// Installs missing Debian packages, the nightly rust-src component and bpf-linker.
pub(crate) fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().map(|(p, _)| *p).filter(|p| !have_pkg(p)).collect();
    if missing.is_empty() {
        say("Debian packages: all present");
    } else {
        if !is_root() {
            bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root");
        }
        for (p, why) in PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
            say(&format!("will install {p}: {why}"));
        }
        run(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update")?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get install")?;
    }

    let has_src = Command::new("rustup")
        .args(["component", "list", "--toolchain", EBPF_TOOLCHAIN, "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")));
    if has_src {
        say(&format!("{EBPF_TOOLCHAIN} rust-src: present"));
    } else {
        say(&format!("installing {EBPF_TOOLCHAIN} with rust-src (eBPF builds core with -Z build-std)"));
        run(Command::new("rustup").args(["toolchain", "install", EBPF_TOOLCHAIN, "--profile", "minimal"]))?;
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", EBPF_TOOLCHAIN]))?;
    }

    let has_musl = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == xtask::image::MUSL_TARGET));
    if has_musl {
        say(&format!("rust target {}: present", xtask::image::MUSL_TARGET));
    } else {
        say(&format!("adding rust target {} (the static binary of the image)", xtask::image::MUSL_TARGET));
        run(Command::new("rustup").args(["target", "add", xtask::image::MUSL_TARGET]))?;
    }

    if which("bpf-linker").is_some() {
        say("bpf-linker: present");
    } else {
        say(&format!("installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes, once)"));
        let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path))
        .context("cargo install bpf-linker")?;
    }
    let fuzz_ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if fuzz_ok {
        say("cargo-fuzz: present");
    } else {
        say(&format!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo xtask fuzz; about a minute, once)"));
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"]))
            .context("cargo install cargo-fuzz")?;
    }
    // build.rs runs `bpf-linker` by name: make sure child cargo processes find it.
    let bin = cargo_bin_dir();
    let path = std::env::var("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        // SAFETY: single-threaded at this point (xtask does setup first).
        unsafe { std::env::set_var("PATH", format!("{}:{path}", bin.display())) };
    }
    Ok(())
}
