//! The guest's root file system: an uncompressed initramfs (the kernel
//! unpacks it without running a decompressor, which under TCG is seconds)
//! with busybox, the release `ktrace`, the tools the scenario runs and their
//! libraries (as `ldd` lists them), the kernel modules the scenario needs
//! from the unpacked package with their dependencies, and an `/init` that
//! mounts what ktrace expects, loads the modules, runs the scenario and
//! powers off.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::fetch::Kernel;

/// The tools the scenario runs (all from Debian packages `cargo xtask setup` installs).
const TOOLS: [&str; 6] =
    ["/usr/sbin/ip", "/usr/sbin/tc", "/usr/sbin/nft", "/usr/sbin/dnsmasq", "/usr/bin/dig", "/usr/sbin/bpftool"];

/// Modules the scenario needs where the Debian config has them as modules:
/// `veth` (the namespace pair), `nf_tables` (the drop), `sch_ingress` + `cls_bpf`
/// (classic tc with clsact where TCX is missing). Dependencies are added
/// from each module's `.modinfo`.
const MODULES: [&str; 4] = ["veth", "nf_tables", "sch_ingress", "cls_bpf"];

/// Busybox applets the scenario and `/init` use. Not `ip`/`tc`: iproute2's
/// are needed, and the scenario calls them by path.
const APPLETS: [&str; 30] = [
    "sh", "mount", "mkdir", "cat", "grep", "awk", "sleep", "kill", "timeout", "mktemp", "rm", "tr", "printf", "echo",
    "insmod", "poweroff", "dmesg", "uname", "wait", "true", "false", "test", "[", "ls", "sed", "nc", "chmod", "ps",
    "head", "env",
];

/// Builds `out` (an uncompressed newc cpio) for `kernel`, with `ktrace` and the scenario.
pub(crate) fn build(kernel: &Kernel, ktrace: &Path, scenario: &str, out: &Path) -> anyhow::Result<()> {
    let stage = out.with_extension("d");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "root", "lib/modules"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    copy_file(busybox, &stage.join("bin/busybox"))?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(a))
            .with_context(|| format!("linking applet {a}"))?;
    }
    let mut libs = BTreeSet::new();
    for tool in TOOLS.iter().map(PathBuf::from).chain([ktrace.to_path_buf()]) {
        if !tool.is_file() {
            bail!("{} is missing (cargo xtask setup installs it)", tool.display());
        }
        libs.extend(ldd(&tool)?);
    }
    for t in TOOLS {
        copy_file(Path::new(t), &stage.join(t.trim_start_matches('/')))?;
    }
    copy_file(ktrace, &stage.join("usr/bin/ktrace"))?;
    for l in &libs {
        copy_file(l, &stage.join(l.strip_prefix("/").unwrap_or(l)))?;
    }
    // dnsmasq -u root looks the user up; glibc >= 2.34 has nss_files built in.
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(stage.join("etc/group"), "root:x:0:\n")?;
    fs::write(stage.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    let order = module_order(&kernel.modules, &MODULES)?;
    for (name, path) in &order {
        let dst = stage.join("lib/modules").join(format!("{name}.ko"));
        fs::write(&dst, module_bytes(path)?).with_context(|| format!("writing {}", dst.display()))?;
    }
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    fs::write(stage.join("scenario.sh"), scenario)?;
    let init = stage.join("init");
    fs::write(&init, init_script(&names))?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet > \"$OUT\"")
        .env("OUT", out)
        .current_dir(&stage)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("cpio failed for {}", stage.display());
    }
    fs::remove_dir_all(&stage)?;
    Ok(())
}

fn init_script(modules: &[&str]) -> String {
    format!(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
dmesg -n 1
OUT=/dev/ttyS1
printf '@@KT note boot %s\n' "$(cat /proc/uptime)" >> $OUT
for m in {modules}; do
    insmod /lib/modules/$m.ko || printf '@@KT note insmod_failed %s\n' $m >> $OUT
done
/usr/sbin/ip link set lo up
KT=/usr/bin/ktrace OUT=$OUT P=kt BB=/bin/busybox IP=/usr/sbin/ip TC=/usr/sbin/tc sh /scenario.sh
printf '@@KT note uptime %s\n@@KT exit\n' "$(cat /proc/uptime)" >> $OUT
poweroff -f
"#,
        modules = modules.join(" ")
    )
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p)?;
    }
    // fs::copy follows symlinks: the guest gets the file under the name ldd gave.
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The shared libraries `ldd` resolves for `bin`, and its loader.
fn ldd(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    if !out.status.success() {
        // Static binaries: "not a dynamic executable".
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line.split_once("=>").map_or(line, |(_, r)| r).split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
    }
    Ok(libs)
}

/// A module's bytes, decompressed if it is `.ko.xz` (6.12's packages).
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(path).output().context("running xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", path.display());
        }
        return Ok(out.stdout);
    }
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `.modinfo` of a module: its `depends=` names and its `softdep=pre:` names.
fn module_deps(bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).context("parsing the module as ELF")?;
    let sec = file.section_by_name(".modinfo").context("no .modinfo section")?;
    let data = sec.data().context(".modinfo data")?;
    let mut deps = Vec::new();
    let mut soft = Vec::new();
    for kv in data.split(|b| *b == 0) {
        let kv = String::from_utf8_lossy(kv);
        if let Some(d) = kv.strip_prefix("depends=") {
            deps.extend(d.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        } else if let Some(d) = kv.strip_prefix("softdep=") {
            // "pre: a b post: c": only what must be there first.
            let mut pre = false;
            for w in d.split_whitespace() {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => soft.push(name.to_owned()),
                    _ => {}
                }
            }
        }
    }
    Ok((deps, soft))
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module under `dir` by (normalised) name.
fn module_index(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut idx = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str())
                && let Some(name) = f.strip_suffix(".ko").or_else(|| f.strip_suffix(".ko.xz"))
            {
                idx.insert(norm(name), p.clone());
            }
        }
    }
    Ok(idx)
}

/// `wanted` and their dependencies, dependencies first. A soft dependency
/// that names a crypto algorithm (`crc32c`) rather than a module is
/// resolved to its generic implementation (`crc32c_generic`).
#[expect(clippy::items_after_statements, reason = "the recursive helper reads best next to its only caller")]
fn module_order(dir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let idx = module_index(dir)?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |n: &str| {
        builtin.lines().any(|l| l.rsplit('/').next().and_then(|f| f.strip_suffix(".ko")).is_some_and(|f| norm(f) == n))
    };
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        name: &str,
        idx: &BTreeMap<String, PathBuf>,
        is_builtin: &dyn Fn(&str) -> bool,
        order: &mut Vec<(String, PathBuf)>,
        visiting: &mut BTreeSet<String>,
        soft: bool,
    ) -> anyhow::Result<()> {
        let mut n = norm(name);
        if order.iter().any(|(o, _)| *o == n) || !visiting.insert(n.clone()) {
            return Ok(());
        }
        if !idx.contains_key(&n) && soft && idx.contains_key(&format!("{n}_generic")) {
            n = format!("{n}_generic");
        }
        let Some(path) = idx.get(&n) else {
            if is_builtin(&n) || soft {
                return Ok(());
            }
            bail!("module {name} is neither in the package nor built in");
        };
        let (hard, softdeps) =
            module_deps(&module_bytes(path)?).with_context(|| format!("module {}", path.display()))?;
        for d in softdeps {
            visit(&d, idx, is_builtin, order, visiting, true)?;
        }
        for d in hard {
            visit(&d, idx, is_builtin, order, visiting, false)?;
        }
        order.push((n, path.clone()));
        Ok(())
    }
    for w in wanted {
        visit(w, &idx, &is_builtin, &mut order, &mut visiting, false)?;
    }
    Ok(order)
}
