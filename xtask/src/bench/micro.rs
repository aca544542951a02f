//! Section 5: `cargo bench -p tracer --bench hot_paths` (divan), its table
//! copied into the report, plus ratios between the DNS decoders.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Ctx;

/// Nanoseconds in a divan time cell ("13.2 µs").
fn cell_ns(cell: &str) -> Option<f64> {
    let mut it = cell.split_whitespace();
    let v: f64 = it.next()?.parse().ok()?;
    let mul = match it.next()? {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(v * mul)
}

/// Median time of the benchmark whose row contains `name`.
fn median_ns(table: &str, name: &str) -> Option<f64> {
    let line = table.lines().find(|l| l.contains(name))?;
    let parts: Vec<&str> = line.split('│').collect();
    cell_ns(parts.get(2)?.trim())
}

/// Compiles the micro-benchmarks (before anything is measured) and returns
/// the benchmark executable, so sources edited later cannot trigger a
/// compile in the middle of the run.
pub(crate) fn build(root: &std::path::Path) -> Result<std::path::PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["bench", "-p", "tracer", "--bench", "hot_paths", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo bench --no-run")?;
    if !out.status.success() {
        bail!("compiling the micro-benchmarks failed: {}", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.pointer("/target/name").and_then(serde_json::Value::as_str) == Some("hot_paths"))
        .find_map(|v| v.get("executable").and_then(serde_json::Value::as_str).map(std::path::PathBuf::from))
        .context("cargo did not name the hot_paths executable")
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<String> {
    let Some(exe) = ctx.micro_bin.clone() else { bail!("the micro-benchmarks were not built") };
    let mut cmd = Command::new(exe);
    cmd.current_dir(&ctx.root).arg("--bench");
    if ctx.quick {
        cmd.args(["--sample-count", "20"]);
    }
    let out = ctx.work.join("micro.out");
    let file = std::fs::File::create(&out)?;
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::inherit()).spawn().context("cargo bench")?;
    // Bounded: compiling the benchmarks on a fresh machine takes minutes.
    let deadline = Instant::now() + Duration::from_mins(20);
    let st = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cargo bench did not finish within 20 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if !st.success() {
        bail!("cargo bench failed ({st}): {}", text.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    let mut table = String::new();
    for l in
        text.lines().filter(|l| l.contains('│') || l.starts_with("hot_paths") || l.contains("├─") || l.contains("╰─"))
    {
        table.push_str(l);
        table.push('\n');
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`cargo bench -p tracer --bench hot_paths`{} (divan; source `tracer/benches/hot_paths.rs`). Each \
         iteration processes 1000 messages or packets of the replay mix; divan's throughput rows give items/s.\n\n```\n{table}```\n",
        if ctx.quick { " `-- --sample-count 20`" } else { "" }
    );
    let k = median_ns(&table, "dns_decode_ktrace");
    let m = median_ns(&table, "dns_decode_minimal");
    let sd = median_ns(&table, "dns_decode_simple_dns");
    if let (Some(k), Some(m)) = (k, m) {
        let _ = writeln!(
            s,
            "ktrace's decoder: {:.0} ns/message, {:.1}× the minimal header+question parse ({:.0} ns/message){}. \
             The gap is what the full decoder does beyond the question: allocating the qname `String` and \
             rendering answers (names are not yet interned bytes on the hot path).\n",
            k / 1000.0,
            k / m,
            m / 1000.0,
            sd.map_or(String::new(), |sd| format!(
                "; `simple-dns` takes {:.0} ns/message ({:.1}× ktrace's)",
                sd / 1000.0,
                sd / k
            )),
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_divan_cells() {
        assert_eq!(cell_ns("13.2 µs"), Some(13_200.0));
        assert_eq!(cell_ns("800 ns"), Some(800.0));
        assert_eq!(cell_ns("x"), None);
        let t = "├─ dns_decode_ktrace (1000 msgs)   12 µs      │ 20 µs         │ 13 µs         │ 13.2 µs       │ 100     │ 100\n";
        assert_eq!(median_ns(t, "dns_decode_ktrace"), Some(13_000.0));
        assert_eq!(median_ns(t, "nope"), None);
    }
}
