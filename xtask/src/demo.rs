//! `cargo xtask demo`: the README's first command. Brings the lab up, traces
//! DNS in the `critical-app` namespace while the client pod resolves and
//! fetches its backend, and lets ktrace explain the slow resolution.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use xtask::lab::{LabGuard, LabOptions, missing_prerequisites};

const BACKEND: &str = "backend.critical-app.svc.cluster.local";

fn show(title: &str, cmd: &mut Command) {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output();
    let secs = t.elapsed().as_secs_f64();
    match out {
        Ok(o) => {
            println!(
                "[demo] {title}: {} ({secs:.1} s)",
                String::from_utf8_lossy(&o.stdout).trim().replace('\n', " | ")
            );
        }
        Err(e) => println!("[demo] {title}: failed to run: {e}"),
    }
}

/// Runs the demo with the `ktrace` binary at `bin`.
pub(crate) fn run(bin: &Path) -> anyhow::Result<()> {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        bail!("the lab needs: {}", missing.join(", "));
    }
    println!(
        "[demo] bringing the lab up: 2 nodes joined by VXLAN, kube-dns forwarding to an upstream that never answers"
    );
    let lab = LabGuard::up(&LabOptions::default()).context("lab up")?;
    let snapshot = lab.snapshot_path();
    println!("[demo] starting: ktrace dns --ns critical-app --kube-snapshot {}", snapshot.display());
    let mut kt = Command::new(bin)
        .args(["dns", "--explain-first", "--timeout", "3s", "--ns", "critical-app", "--kube-snapshot"])
        .arg(&snapshot)
        .args(["--duration", "60s"])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // Attaching takes ~100 ms; leave room on a loaded machine.
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "[demo] client pod runs: getent hosts {BACKEND}   (resolv.conf: nameserver 10.96.0.10 = the kube-dns Service, \
         DNATed by the node's kube-proxy rules to the kube-dns pod; ndots:5, 4 search suffixes, one is localdomain)"
    );
    show("getent", lab.pod_command("critical-app", "client", "getent").args(["hosts", BACKEND]));
    show(
        "curl",
        lab.pod_command("critical-app", "client", "curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "HTTP %{http_code}, name lookup %{time_namelookup} s, total %{time_total} s",
            "--max-time",
            "20",
            &format!("http://{BACKEND}:8080/"),
        ]),
    );
    // The backend pod runs on node-b: its lookup crosses nodes (VXLAN) to
    // the kube-dns pod on node-a, and is still one transaction.
    show(
        "backend (node-b) → kube-dns Service → kube-dns pod (node-a)",
        lab.pod_command("critical-app", "backend", "getent").args(["ahostsv4", &format!("{BACKEND}.")]),
    );
    std::thread::sleep(Duration::from_millis(500));
    // SIGINT: ktrace reports queries still waiting as unanswered and prints its diagnosis.
    let _ = kill(Pid::from_raw(kt.id() as i32), Signal::SIGINT);
    let st = kt.wait()?;
    drop(lab);
    println!("[demo] lab down. ktrace exited with {st}.");
    Ok(())
}
