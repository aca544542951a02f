//! Builds the eBPF object (tracer-ebpf) twice with aya-build and leaves both
//! in `OUT_DIR`, from where `src/bpf/mod.rs` embeds them into the `ktrace`
//! binary: `tracer`, the default, without kernel logs, and `tracer-log`, with
//! the `bpf-log` feature (aya-log statements), loaded only with `--bpf-log`.
//! Two objects rather than one with its logs switched off at load time: the
//! switch's residue cost the default programs up to 22 % more instructions
//! (docs/kernels.md). Both builds share one target directory, so the second
//! reuses every dependency the first compiled.
//!
//! With `AYA_BUILD_SKIP=1` (machines without bpf-linker, e.g. for
//! unprivileged unit tests) empty stubs are written instead; loading one at
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
        for file in [OBJECT, OBJECT_LOG] {
            fs::write(out_dir.join(file), []).context("writing stub eBPF object")?;
        }
        return Ok(());
    }
    let root = cargo_metadata_root()?.join("tracer-ebpf");
    let root_dir = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-env-changed=KTRACE_EBPF_TOOLCHAIN");
    let toolchain = env::var("KTRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    // aya-build names its output after the binary (`tracer`): the logging
    // build goes first and is renamed, the default one keeps the name.
    for (file, features) in [(OBJECT_LOG, &["bpf-log"][..]), (OBJECT, &[][..])] {
        let ebpf = aya_build::Package { name: "tracer-ebpf", root_dir, features, ..Default::default() };
        aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))?;
        if file != OBJECT {
            fs::rename(out_dir.join(OBJECT), out_dir.join(file))
                .with_context(|| format!("naming the {file} object"))?;
        }
    }
    Ok(())
}

/// The default object's file name in `OUT_DIR` (the eBPF binary's name).
const OBJECT: &str = "tracer";
/// The object with the `bpf-log` feature.
const OBJECT_LOG: &str = "tracer-log";

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
