//! Builds the eBPF object (tracer-ebpf) with aya-build and leaves it in
//! `OUT_DIR`, from where `src/bpf/mod.rs` embeds it into the `ktrace` binary.
//!
//! With `AYA_BUILD_SKIP=1` (machines without bpf-linker, e.g. for
//! unprivileged unit tests) an empty stub is written instead; loading it at
//! run time fails with a clear error.
//!
//! It also compiles the agent's gRPC API (`proto/`) with protox, a pure-Rust
//! protobuf compiler, so a build needs no `protoc`.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
// A build-dependency only so that cargo reruns this script when the kernel
// programs change (see the `[build-dependencies]` note in Cargo.toml).
use tracer_ebpf as _;

/// The nightly that builds the eBPF crate: its LLVM (22) must match
/// bpf-linker's; a newer nightly's bitcode fails to link with "Invalid
/// record". `cargo xtask setup` installs it; `KTRACE_EBPF_TOOLCHAIN` overrides.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-15";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    compile_protos()?;
    if skip {
        fs::write(out_dir.join("tracer"), []).context("writing stub eBPF object")?;
        return Ok(());
    }
    let root = cargo_metadata_root()?.join("tracer-ebpf");
    let ebpf = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
        ..Default::default()
    };
    println!("cargo:rerun-if-env-changed=KTRACE_EBPF_TOOLCHAIN");
    let toolchain = env::var("KTRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))
}

/// The workspace root: tracer/ is one level below it.
fn cargo_metadata_root() -> anyhow::Result<PathBuf> {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?);
    manifest.parent().map(PathBuf::from).ok_or_else(|| anyhow!("tracer/ has no parent"))
}

fn compile_protos() -> anyhow::Result<()> {
    let proto_dir = cargo_metadata_root()?.join("proto");
    let file = proto_dir.join("ktrace/agent/v1/agent.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_dir]).map_err(|e| anyhow!("compiling {}: {e}", file.display()))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .context("generating the agent gRPC code")
}
