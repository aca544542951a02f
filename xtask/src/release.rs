//! `cargo xtask image` and `cargo xtask dist`: the container image and the
//! release archive, both around the same static (musl) binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};
use xtask::image::{
    IMAGE_NAME, MUSL_TARGET, VERSION, archive_path, buildah, elf_needs_interpreter, image_dir, image_ref, musl_binary,
};

use crate::{cargo, root, run, setup};

/// Builds the static binary and checks it needs no dynamic loader.
pub(crate) fn build_static() -> anyhow::Result<PathBuf> {
    setup::setup()?;
    let mut c = cargo();
    c.args(["build", "--release", "--target", MUSL_TARGET, "-p", "tracer", "--bin", "ktrace"]);
    let t = std::time::Instant::now();
    run(c)?;
    let bin = musl_binary();
    ensure!(
        !elf_needs_interpreter(&bin)?,
        "{} asks for a dynamic loader: it would not run FROM scratch",
        bin.display()
    );
    eprintln!("[xtask] static binary {} ({}) in {:.0?}", bin.display(), size(&bin), t.elapsed());
    Ok(bin)
}

/// Copies the binary without its symbol tables (binutils `strip`): 24 → 19
/// MiB, the image's compressed layer 8.9 → 7.6 MiB. The embedded eBPF
/// object is data and stays whole.
fn copy_stripped(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let mut strip = Command::new("strip");
    strip.arg(to);
    run(strip).context("stripping the staged binary (binutils)")
}

fn size(p: &Path) -> String {
    std::fs::metadata(p).map_or_else(|e| e.to_string(), |m| format!("{:.1} MiB", m.len() as f64 / 1_048_576.0))
}

/// `cargo xtask image`: the OCI image `localhost/ktrace:VERSION`, exported
/// to `target/image/ktrace-VERSION.oci.tar`.
pub(crate) fn image() -> anyhow::Result<()> {
    let bin = build_static()?;
    let dir = image_dir();
    let ctx = dir.join("context");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx).with_context(|| format!("creating {}", ctx.display()))?;
    copy_stripped(&bin, &ctx.join("ktrace"))?;
    let storage = dir.join("storage");
    let t = std::time::Instant::now();
    let mut bud = buildah(&storage);
    bud.args(["bud", "--isolation", "chroot", "--layers=false", "--timestamp", "0"])
        .arg("-f")
        .arg(root().join("Containerfile"))
        .args(["--build-arg", &format!("VERSION={VERSION}"), "-t", &image_ref()])
        .arg(&ctx);
    run(bud)?;
    let archive = archive_path();
    let _ = std::fs::remove_file(&archive);
    let mut push = buildah(&storage);
    push.args(["push", "--quiet", &image_ref()]).arg(format!("oci-archive:{}:{}", archive.display(), image_ref()));
    run(push)?;
    eprintln!(
        "[xtask] image {} ({IMAGE_NAME}) built in {:.0?}: {} ({})\n[xtask] load it: `podman load -i {0}` / \
         `ctr -n k8s.io images import {0}`, or push it to your registry (docs/deploy.md)",
        archive.display(),
        t.elapsed(),
        image_ref(),
        size(&archive),
    );
    Ok(())
}

/// The release archive's directory name.
fn dist_name() -> String {
    format!("ktrace-{VERSION}-x86_64-linux-musl")
}

/// `cargo xtask dist`: `target/dist/ktrace-VERSION-x86_64-linux-musl.tar.gz`
/// with the static binary, the kubectl plugin link, shell completions, man
/// pages, `deploy/` and `SHA256SUMS`; next to it the archive's `.sha256`
/// and the filled-in krew manifest. Checks what it wrote before it returns.
pub(crate) fn dist() -> anyhow::Result<()> {
    let bin = build_static()?;
    let out = image_dir().with_file_name("dist");
    let name = dist_name();
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(stage.join("completions"))?;
    let exe = stage.join("ktrace");
    copy_stripped(&bin, &exe)?;
    std::os::unix::fs::symlink("ktrace", stage.join("kubectl-ktrace"))?;
    for (shell, file) in [("bash", "ktrace.bash"), ("zsh", "_ktrace"), ("fish", "ktrace.fish")] {
        let o = Command::new(&exe).args(["completions", shell]).output()?;
        ensure!(o.status.success() && !o.stdout.is_empty(), "ktrace completions {shell} failed");
        std::fs::write(stage.join("completions").join(file), o.stdout)?;
    }
    let mut man = Command::new(&exe);
    man.args(["man", "--out-dir"]).arg(stage.join("man/man1"));
    run(man)?;
    copy_tree(&root().join("deploy"), &stage.join("deploy"))?;
    for f in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        let p = root().join(f);
        if p.is_file() {
            std::fs::copy(&p, stage.join(f))?;
        }
    }
    // Checksums of every file inside, verifiable after unpacking (`sha256sum -c SHA256SUMS`).
    let mut files = Vec::new();
    list_files(&stage, &stage, &mut files)?;
    files.sort();
    let mut sums = Command::new("sha256sum");
    sums.current_dir(&stage).args(&files);
    let o = sums.output().context("running sha256sum")?;
    ensure!(o.status.success(), "sha256sum failed");
    std::fs::write(stage.join("SHA256SUMS"), o.stdout)?;

    let tarball = out.join(format!("{name}.tar.gz"));
    let mut tar = Command::new("tar");
    tar.current_dir(&out)
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-I", "gzip -n", "-cf"])
        .arg(&tarball)
        .arg(&name);
    run(tar)?;
    let o = Command::new("sha256sum").current_dir(&out).arg(tarball.file_name().unwrap_or_default()).output()?;
    ensure!(o.status.success(), "sha256sum of the archive failed");
    std::fs::write(out.join(format!("{name}.tar.gz.sha256")), &o.stdout)?;
    let sha = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    let krew = krew_manifest(&std::fs::read_to_string(root().join("packaging/krew/ktrace.yaml"))?, &sha);
    std::fs::write(out.join("ktrace.krew.yaml"), krew)?;
    verify_dist(&out, &name)?;
    eprintln!("[xtask] {} ({}), sha256 {sha}", tarball.display(), size(&tarball));
    Ok(())
}

/// The krew manifest with version, archive address and checksum filled in.
pub(crate) fn krew_manifest(template: &str, sha256: &str) -> String {
    let home = "https://example.invalid/ktrace";
    template
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{{URI}}", &format!("{home}/releases/download/v{VERSION}/{}.tar.gz", dist_name()))
        .replace("{{HOMEPAGE}}", home)
        .replace("{{SHA256}}", sha256)
        .replace("{{VERSION}}", VERSION)
        + "\n"
}

/// Unpacks the archive into a scratch directory and checks it the way a
/// user would use it: checksums, `ktrace --version`, the plugin link.
fn verify_dist(out: &Path, name: &str) -> anyhow::Result<()> {
    let check = out.join("check");
    let _ = std::fs::remove_dir_all(&check);
    std::fs::create_dir_all(&check)?;
    let mut untar = Command::new("tar");
    untar.arg("-xzf").arg(out.join(format!("{name}.tar.gz"))).arg("-C").arg(&check);
    run(untar)?;
    let dir = check.join(name);
    let mut sums = Command::new("sha256sum");
    sums.current_dir(&dir).args(["--quiet", "-c", "SHA256SUMS"]);
    run(sums)?;
    for must in ["ktrace", "kubectl-ktrace", "completions/ktrace.bash", "man/man1/ktrace.1", "deploy/daemonset.yaml"] {
        ensure!(dir.join(must).exists(), "{name}.tar.gz lacks {must}");
    }
    let o = Command::new(dir.join("kubectl-ktrace")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&o.stdout);
    ensure!(help.contains("kubectl ktrace"), "kubectl-ktrace --help does not speak as the plugin: {help}");
    let _ = std::fs::remove_dir_all(&check);
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            list_files(base, &e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path().strip_prefix(base)?.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krew_manifest_is_filled_in() {
        let t = std::fs::read_to_string(root().join("packaging/krew/ktrace.yaml")).unwrap();
        let m = krew_manifest(&t, "ab12");
        assert!(!m.contains("{{"), "{m}");
        assert!(m.contains("sha256: ab12"));
        assert!(m.contains(&format!("version: v{VERSION}")));
        assert!(m.contains(&format!("{}.tar.gz", dist_name())));
        assert!(m.contains("bin: ktrace"));
        assert!(m.starts_with("apiVersion: krew.googlecontainertools.github.com/v1alpha2"), "{m}");
    }
}
