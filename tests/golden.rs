//! Golden outputs (issue 18, "nothing lost on the way"): the JSON that
//! `ktrace dns -r`, `ktrace drops -r` and `ktrace replay -r` print for every fixture capture and
//! for a recording of the lab must stay byte for byte what the binary of
//! 2026-12-06 (commit 46ac352, before the #16/#18 refactoring) printed.
//!
//! Needs no root: `KTRACE_BIN=target/release/ktrace cargo test -p ktrace-e2e --test golden`.
//! On a mismatch the test prints a unified diff per case and fails; every
//! case runs before it fails, so one run shows all differences.
//! `KTRACE_GOLDEN_UPDATE=1` rewrites the expected files instead (only with a
//! reason stated in the commit: a difference is a behaviour change).
//!
//! Inputs: the pcap and scap fixtures (vendored under `tests/fixtures/`,
//! else `../shared/fixtures/`; a missing one fails), ktrace's own captures
//! (`tests/golden/captures/`: the fuzz seeds of the pcapng reader, frozen
//! here, and `lab-node-{a,b}.pcapng`, made by `tests/golden/record-lab.sh`).
//! Each command runs in the directory of its inputs with bare file names,
//! so warnings that name a file do not depend on where the checkout is.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use ktrace_e2e::ktrace_bin;

/// pcap fixtures (`fixtures/pcap/`).
const PCAP: [&str; 7] = [
    "tcpdump__dns-badcookie.pcap",
    "tcpdump__dns-zlip-1.pcap",
    "tcpdump__dns_tcp.pcap",
    "tcpdump__edns-opts.pcap",
    "zeek__dns-edns-ecs.pcap",
    "zeek__dns_long-connection.pcap",
    "zeek__ipv6-fragmented-dns.pcap",
];

/// scap fixtures (`fixtures/scap/`).
const SCAP: [&str; 4] = [
    "falcolibs-curl_google.scap",
    "falcolibs-curl_google_comments.scap",
    "falcolibs-single_ipv6_conn.scap",
    "falcolibs-test_ipv6_client.scap",
];

/// ktrace's own captures in `tests/golden/captures/`.
const CAPTURES: [&str; 6] = [
    "ktrace-sample.pcapng",
    // The fuzz seed, zstd-compressed by the writer.
    "ktrace-sample.pcapng.zst",
    // Compressed twice (an error path: "not a … capture after zstd decompression").
    "ktrace-sample-double-zstd.pcapng.zst",
    "ktrace-drops-conn.pcapng",
    "lab-node-a.pcapng",
    "lab-node-b.pcapng",
];

/// The lab recording: both nodes' captures of one run, read together.
const LAB: [&str; 2] = ["lab-node-a.pcapng", "lab-node-b.pcapng"];

/// Each command run on each input: (name in the expected file's name, arguments after `-r FILE…`).
const COMMANDS: [(&str, &[&str]); 6] = [
    ("dns", &["dns", "-o", "json"]),
    ("dns-summary", &["dns", "-o", "json", "--summary"]),
    ("drops", &["drops", "-o", "json"]),
    ("drops-all", &["drops", "-o", "json", "--all"]),
    // `ktrace replay` lists every record; its writers were rewritten by hand
    // (#18), so its JSON and its table are frozen too (from 362fbe4, the last
    // tree with the serde writers).
    ("replay", &["replay", "-o", "json"]),
    ("replay-table", &["replay"]),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

/// A fixture of `../shared/fixtures/KIND/` (or its vendored copy in the repository).
fn fixture(kind: &str, name: &str) -> PathBuf {
    let root = root();
    let candidates = [
        root.join("tests/fixtures").join(kind).join(name),
        root.join("fixtures").join(kind).join(name),
        root.join("../shared/fixtures").join(kind).join(name),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("fixture {kind}/{name} is missing (looked at {candidates:#?}); golden comparison needs every fixture")
    })
}

/// One comparison: a command on a set of inputs from one directory.
struct Case {
    /// Name of the expected file (`out/<name>.json`).
    name: String,
    dir: PathBuf,
    files: Vec<String>,
    args: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let mut inputs: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for f in PCAP {
        inputs.push((f.to_owned(), vec![fixture("pcap", f)]));
    }
    for f in SCAP {
        inputs.push((f.to_owned(), vec![fixture("scap", f)]));
    }
    for f in CAPTURES {
        let p = golden_dir().join("captures").join(f);
        assert!(p.is_file(), "golden capture {} is missing", p.display());
        inputs.push((f.to_owned(), vec![p]));
    }
    inputs.push(("lab-both-nodes".to_owned(), LAB.iter().map(|f| golden_dir().join("captures").join(f)).collect()));
    let mut out = Vec::new();
    for (input, paths) in inputs {
        let dir = paths[0].parent().expect("a file has a directory").to_path_buf();
        assert!(paths.iter().all(|p| p.parent() == Some(dir.as_path())), "inputs of {input} in one directory");
        let files: Vec<String> =
            paths.iter().map(|p| p.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name").to_owned()).collect();
        for (cmd, args) in COMMANDS {
            out.push(Case { name: format!("{input}.{cmd}"), dir: dir.clone(), files: files.clone(), args });
        }
    }
    out
}

/// What a run printed: stdout, then the exit status on a line of its own
/// (a command that starts failing, or stops failing, is a difference too),
/// and for a failed run its stderr.
fn run(case: &Case) -> String {
    let mut c = Command::new(ktrace_bin());
    c.current_dir(&case.dir);
    c.arg(case.args[0]);
    for f in &case.files {
        c.arg("-r").arg(f);
    }
    c.args(&case.args[1..]);
    // Nothing from the environment may reach the output: no node name, no
    // Kubernetes credentials, no terminal.
    for v in ["NODE_NAME", "KUBECONFIG", "KTRACE_AGENT_TOKEN_FILE", "COLUMNS", "NO_COLOR", "CLICOLOR_FORCE"] {
        c.env_remove(v);
    }
    c.env("HOME", &case.dir);
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    let mut s = String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{}: stdout is not UTF-8: {e}", case.name));
    let _ = writeln!(s, "# exit: {}", out.status.code().map_or_else(|| "signal".into(), |c| c.to_string()));
    if !out.status.success() {
        // A failure's message is its output (inputs are named relative to the run's directory).
        for l in String::from_utf8_lossy(&out.stderr).lines() {
            let _ = writeln!(s, "# stderr: {l}");
        }
    }
    s
}

/// `diff -u` of the two texts (diffutils is on every machine this runs on;
/// without it, the first differing line).
fn unified_diff(name: &str, expected: &str, actual: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ktrace-golden-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (exp_path, act_path) = (dir.join(format!("{name}.expected")), dir.join(format!("{name}.actual")));
    let diff = std::fs::write(&exp_path, expected)
        .and_then(|()| std::fs::write(&act_path, actual))
        .and_then(|()| Command::new("diff").arg("-u").arg(&exp_path).arg(&act_path).output());
    let _ = std::fs::remove_dir_all(&dir);
    match diff {
        Ok(o) if !o.stdout.is_empty() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            let (exp_lines, act_lines): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
            let line = exp_lines.iter().zip(&act_lines).take_while(|(x, y)| x == y).count();
            format!(
                "first difference at line {}:\n-{}\n+{}\n",
                line + 1,
                exp_lines.get(line).unwrap_or(&""),
                act_lines.get(line).unwrap_or(&"")
            )
        }
    }
}

#[test]
fn json_of_dns_and_drops_replays_is_byte_identical_to_the_golden_outputs() {
    let update = std::env::var("KTRACE_GOLDEN_UPDATE").as_deref() == Ok("1");
    let out_dir = golden_dir().join("out");
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let actual = run(case);
        let path = out_dir.join(format!("{}.json", case.name));
        if update {
            std::fs::create_dir_all(&out_dir).expect("create tests/golden/out");
            std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (KTRACE_GOLDEN_UPDATE=1 writes it)", path.display()));
        if expected != actual {
            eprintln!("golden mismatch: {}\n{}", case.name, unified_diff(&case.name, &expected, &actual));
            failures.push(case.name.clone());
        }
    }
    // An expected file no case produces is a case that was dropped.
    let names: Vec<String> = cases.iter().map(|c| format!("{}.json", c.name)).collect();
    let stale: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("tests/golden/out")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !names.contains(n))
        .collect();
    assert!(stale.is_empty(), "expected outputs without a case: {stale:?}");
    assert!(
        failures.is_empty(),
        "{} of {} golden outputs differ (diffs above): {failures:?}",
        failures.len(),
        cases.len()
    );
}
