//! Builds the eBPF object (tracer-ebpf) with aya-build and leaves it in
//! `OUT_DIR`, from where `src/bpf/mod.rs` embeds it into the `ktrace` binary.
//!
//! With `AYA_BUILD_SKIP=1` (machines without bpf-linker, e.g. for
//! unprivileged unit tests) an empty stub is written instead; loading it at
//! run time fails with a clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
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
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}

/// The workspace root: tracer/ is one level below it.
fn cargo_metadata_root() -> anyhow::Result<PathBuf> {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?);
    manifest.parent().map(PathBuf::from).ok_or_else(|| anyhow!("tracer/ has no parent"))
}
