//! The container image (`cargo xtask image`): ktrace built for musl (a
//! static binary), put `FROM scratch` by the `Containerfile` with Debian's
//! buildah, and exported as an OCI archive under `target/image/`.
//!
//! buildah runs with `--storage-driver vfs --isolation chroot` (what works
//! on these machines: no overlay mounts, no user namespaces) and its own
//! storage under `target/image/`, so it never touches, or depends on, the
//! machine's `/var/lib/containers`. The end-to-end test
//! (`tests/image.rs`) loads the archive into a storage of its own.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The rustup target of the static binary.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The image's name; `deploy/daemonset.yaml` refers to `IMAGE_NAME:VERSION`
/// (tests/manifests.rs checks it), a user's registry replaces it with
/// kustomize's `images:` (docs/deploy.md).
pub const IMAGE_NAME: &str = "localhost/ktrace";

/// The version the image is tagged with: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `localhost/ktrace:VERSION`.
#[must_use]
pub fn image_ref() -> String {
    format!("{IMAGE_NAME}:{VERSION}")
}

/// The workspace root.
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `target/image`: build context, buildah storage, the archive.
#[must_use]
pub fn image_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from).join("image")
}

/// The exported OCI archive: `target/image/ktrace-VERSION.oci.tar`.
#[must_use]
pub fn archive_path() -> PathBuf {
    image_dir().join(format!("ktrace-{VERSION}.oci.tar"))
}

/// The static binary cargo builds for [`MUSL_TARGET`].
#[must_use]
pub fn musl_binary() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join(MUSL_TARGET)
        .join("release/ktrace")
}

/// `buildah` with vfs storage under `storage` (its own, not the machine's).
#[must_use]
pub fn buildah(storage: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs"]);
    c
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader):
/// a static binary must not, or it cannot run `FROM scratch`.
pub fn elf_needs_interpreter(path: &Path) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        bail!("{}: not a little-endian 64-bit ELF file", path.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > b.len() {
            bail!("{}: program header {i} past the end of the file", path.display());
        }
        if u32_at(o) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_have_an_interpreter() {
        // Whatever runs this test is a dynamic glibc program (cargo's test harness).
        let me = std::env::current_exe().unwrap();
        assert!(elf_needs_interpreter(&me).unwrap());
        let not_elf = std::env::temp_dir().join(format!("xtask-not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(elf_needs_interpreter(&not_elf).is_err());
        let _ = std::fs::remove_file(not_elf);
    }

    #[test]
    fn names_agree() {
        assert_eq!(image_ref(), format!("localhost/ktrace:{VERSION}"));
        assert!(archive_path().ends_with(format!("image/ktrace-{VERSION}.oci.tar")));
    }
}
