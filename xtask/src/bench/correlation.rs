//! Section 5: `fabric_loss` correlation and memory per in-flight item.
//! Two node captures (`tracer/examples/bench_fabric.rs`: VXLAN request/reply
//! pairs between a client pod on node-a and a backend on node-b, one reply in
//! `LOSE_EVERY` lost between the nodes) are analysed together by `ktrace drops
//! -r A -r B`; the lost replies must all be found. Memory per in-flight DNS
//! query and per in-flight underlay packet comes from `bench_memory.rs`
//! (a counting allocator around the library's own analysis).

use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx,
    stats::{median, num},
    sys,
};

const LOSE_EVERY: u64 = 1000;

fn json_line(out: &[u8]) -> Result<serde_json::Value> {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().unwrap_or("")).with_context(|| format!("unexpected output: {text}"))
}

fn example(ctx: &Ctx, name: &str) -> std::path::PathBuf {
    ctx.root.join("target/release/examples").join(name)
}

/// One pinned `ktrace drops -r A -r B -o json`: (wall s, CPU s, `fabric_loss` packets found).
fn correlate(ctx: &Ctx, a: &Path, b: &Path) -> Result<(f64, f64, u64)> {
    let out = ctx.work.join("drops.json");
    let mut c = sys::pinned(Some(sys::CPU_SERVER), &ctx.bin);
    c.args(["drops", "-r"]).arg(a).arg("-r").arg(b).args(["-o", "json"]);
    let (ok, cpu, wall) = sys::run_timed(c, &out, Duration::from_mins(15))?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if !ok {
        bail!("ktrace drops -r failed: {}", text.lines().rev().take(3).collect::<Vec<_>>().join(" | "));
    }
    let found = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "fabric_loss")
        .map(|v| v["packets"].as_u64().unwrap_or(0))
        .sum();
    Ok((wall, cpu, found))
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<String> {
    let (exchanges, reps) = if ctx.quick { (100_000u64, 1) } else { (500_000u64, 3) };
    let gen_out = Command::new(example(ctx, "bench_fabric"))
        .arg(&ctx.work)
        .args([exchanges.to_string(), LOSE_EVERY.to_string()])
        .output()
        .context("running bench_fabric")?;
    anyhow::ensure!(gen_out.status.success(), "bench_fabric: {}", String::from_utf8_lossy(&gen_out.stderr));
    let generated = json_line(&gen_out.stdout)?;
    let packets = generated["packets"].as_u64().unwrap_or(0);
    let lost = generated["lost"].as_u64().unwrap_or(0);
    let bytes = generated["bytes"].as_u64().unwrap_or(0);
    let (cap_a, cap_b) = (ctx.work.join("node-a.pcapng"), ctx.work.join("node-b.pcapng"));
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut found = 0;
    for _ in 0..reps {
        let (wall_s, cpu_s, reported) = correlate(ctx, &cap_a, &cap_b)?;
        walls.push(wall_s);
        cpus.push(cpu_s);
        found = reported;
    }
    let _ = std::fs::remove_file(&cap_a);
    let _ = std::fs::remove_file(&cap_b);
    let wall = median(&walls);
    let cpu = median(&cpus);
    let mem_out = Command::new(example(ctx, "bench_memory"))
        .arg(if ctx.quick { "50000" } else { "200000" })
        .output()
        .context("running bench_memory")?;
    anyhow::ensure!(mem_out.status.success(), "bench_memory: {}", String::from_utf8_lossy(&mem_out.stderr));
    let memory = json_line(&mem_out.stdout)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Two synthetic node captures (`tracer/examples/bench_fabric.rs`, written with ktrace's `CaptureWriter`): \
         {exchanges} UDP request/reply exchanges between a client pod on node-a and a backend pod on node-b, \
         VXLAN-encapsulated between the node addresses and seen by the tc programs on each node's underlay \
         (10,000 exchanges/s of capture time); one reply in {LOSE_EVERY} leaves node-b and never reaches node-a. \
         Each capture carries the Kubernetes snapshot and a coverage block, as `ktrace record --underlay` writes \
         them. `ktrace drops -r node-a.pcapng -r node-b.pcapng -o json` runs pinned to one CPU; median of {reps}.\n"
    );
    let _ = writeln!(
        s,
        "| packets (both files) | MB | lost replies | `fabric_loss` packets reported | wall s | CPU s | packets/s (wall) | MB/s (wall) |\n|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| {packets} | {:.0} | {lost} | {found} | {wall:.2} | {cpu:.2} | {} | {:.0} |\n",
        bytes as f64 / 1e6,
        num(packets as f64 / wall.max(1e-6)),
        bytes as f64 / 1e6 / wall.max(1e-6)
    );
    if found != lost {
        let _ = writeln!(s, "**The analysis reported {found} lost packets, not {lost}.**\n");
    }
    let per_q = memory["bytes_per_query"].as_f64().unwrap_or(f64::NAN);
    let per_p = memory["bytes_per_packet"].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "Memory per in-flight item (`tracer/examples/bench_memory.rs`: a counting allocator around {} items \
         pushed into the library's own analysis, none completed): **{per_q:.0} bytes per DNS query** waiting for \
         its answer (decoder + pairing: the transaction being built, its process and pod references, the \
         pairing key in the table and the expiry queue) and **{per_p:.0} bytes per underlay packet** that left \
         one node and is waiting to be seen on the other (fingerprint tables and the packet's headers). At the \
         default caps (65,536 queries, 1,048,576 packets) that bounds the two at ~{:.0} MiB and ~{:.0} MiB.\n",
        memory["n"].as_u64().unwrap_or(0),
        per_q * 65_536.0 / 1_048_576.0,
        per_p * 1_048_576.0 / 1_048_576.0
    );
    ctx.notes.push(format!(
        "`fabric_loss` correlation: {} underlay packets/s on one core ({} of {lost} lost replies found); \
         {per_q:.0} B per in-flight DNS query, {per_p:.0} B per in-flight underlay packet",
        num(packets as f64 / wall.max(1e-6)),
        found
    ));
    Ok(s)
}
