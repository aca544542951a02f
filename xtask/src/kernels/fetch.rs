//! Debian kernel packages: the newest of a series in the apt index,
//! downloaded with `apt-get download` and unpacked with `dpkg -x` under
//! `target/kernels/` (never installed as the host's kernel), both cached.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A kernel series of the matrix and how its package is named.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Series {
    /// Column label in KERNELS.md: `6.1`, `6.12`.
    pub(crate) label: &'static str,
    /// Package name prefix, e.g. `linux-image-6.1.0-`.
    prefix: &'static str,
    /// What follows the number, e.g. `-amd64`.
    suffix: &'static str,
}

/// The Debian kernels the matrix boots: bookworm's 6.1 and its 6.12 backport.
pub(crate) const SERIES: [Series; 2] = [
    Series { label: "6.1", prefix: "linux-image-6.1.0-", suffix: "-amd64" },
    Series { label: "6.12", prefix: "linux-image-6.12.", suffix: "+deb12-amd64" },
];

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    /// Series label.
    pub(crate) label: &'static str,
    /// Package name, e.g. `linux-image-6.1.0-57-amd64`.
    pub(crate) package: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-57-amd64`.
    pub(crate) release: String,
    /// `boot/vmlinuz-*`.
    pub(crate) vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub(crate) modules: PathBuf,
}

fn apt_names(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("apt-cache").args(["pkgnames", prefix]).output().context("running apt-cache pkgnames")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

/// The number between prefix and suffix, if `name` is exactly such a package.
fn abi_number(s: Series, name: &str) -> Option<u32> {
    name.strip_prefix(s.prefix)?.strip_suffix(s.suffix)?.parse().ok()
}

/// The newest package of `s` in the apt index (`apt-get update` first if none is listed).
pub(crate) fn newest(s: Series) -> anyhow::Result<String> {
    let pick =
        |names: &[String]| names.iter().filter_map(|n| abi_number(s, n).map(|v| (v, n.clone()))).max().map(|(_, n)| n);
    if let Some(n) = pick(&apt_names(s.prefix)?) {
        return Ok(n);
    }
    eprintln!("[kernels] no {}*{} in the apt index: apt-get update", s.prefix, s.suffix);
    crate::run({
        let mut c = Command::new("apt-get");
        c.args(["update", "-q"]);
        c
    })?;
    pick(&apt_names(s.prefix)?).with_context(|| format!("no package {}N{} in the apt index", s.prefix, s.suffix))
}

/// Downloads (once) and unpacks (once) `package` under `cache`.
pub(crate) fn fetch(s: Series, package: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let find_deb = || -> Option<PathBuf> {
        fs::read_dir(&debs).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name().and_then(|f| f.to_str()).is_some_and(|f| {
                f.strip_prefix(package).is_some_and(|rest| rest.starts_with('_'))
                    && Path::new(f).extension().is_some_and(|e| e.eq_ignore_ascii_case("deb"))
            })
        })
    };
    let deb = if let Some(d) = find_deb() {
        d
    } else {
        eprintln!("[kernels] apt-get download {package}");
        let mut c = Command::new("apt-get");
        c.args(["download", "-q", package]).current_dir(&debs);
        crate::run(c)?;
        find_deb().with_context(|| format!("apt-get download {package} left no .deb in {}", debs.display()))?
    };
    let dir = cache.join(package);
    let boot = dir.join("boot");
    if !boot.is_dir() {
        let tmp = cache.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        let mut c = Command::new("dpkg");
        c.arg("-x").arg(&deb).arg(&tmp);
        crate::run(c)?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    }
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_owned();
    let modules = dir.join("lib/modules").join(&release);
    if !modules.is_dir() {
        bail!("{} has no modules for {release}", dir.display());
    }
    Ok(Kernel { label: s.label, package: package.to_owned(), release, vmlinuz, modules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_numbers() {
        assert_eq!(abi_number(SERIES[0], "linux-image-6.1.0-57-amd64"), Some(57));
        assert_eq!(abi_number(SERIES[0], "linux-image-6.1.0-57-rt-amd64"), None);
        assert_eq!(abi_number(SERIES[0], "linux-image-6.1.0-57-amd64-dbg"), None);
        assert_eq!(abi_number(SERIES[1], "linux-image-6.12.118+deb12-amd64"), Some(118));
        assert_eq!(abi_number(SERIES[1], "linux-image-6.12.118+deb12-cloud-amd64"), None);
    }
}
