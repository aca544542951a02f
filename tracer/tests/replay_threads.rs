//! Issue 18 (replay on both cores): `ktrace dns -r`, `ktrace replay -r` and
//! `ktrace drops -r` print the same bytes on one thread and on two, in
//! every output mode, on every fixture capture
//! (fan-out, forwarded upstream queries, two nodes merged, stored
//! Kubernetes snapshots, TCP, fragments, compressed files) and on a
//! generated capture large enough that two threads are the default.
//! `KTRACE_REPLAY_THREADS` forces the choice. An equality assertion, not a
//! timing one. No root needed; run it in release
//! (`cargo test -p tracer --release --test replay_threads`, ~45 s).

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use ktrace::pipeline::TWO_THREADS_FROM_BYTES;

/// Exchanges of the generated capture: ~490 bytes each, so above
/// [`TWO_THREADS_FROM_BYTES`] (asserted).
const EXCHANGES: u64 = 80_000;

/// Commands and output modes compared.
const MODES: [(&str, &[&str]); 8] = [
    ("dns", &["-o", "json"]),
    ("dns", &["--summary", "-o", "json"]),
    ("dns", &[]),
    ("dns", &["--summary"]),
    ("replay", &["-o", "json"]),
    ("replay", &[]),
    ("drops", &["-o", "json"]),
    ("drops", &["--all"]),
];

fn write(path: &Path, exchanges: u64, compress: bool) {
    synth::write_capture(path, exchanges, compress, "threads-node").expect("write capture");
}

/// stdout and stderr of `ktrace CMD -r files… args…` with `KTRACE_REPLAY_THREADS=threads`
/// (`None`: unset, the default choice), run in `dir` with bare names.
fn run(dir: &Path, cmd: &str, files: &[&str], args: &[&str], threads: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ktrace"));
    c.current_dir(dir).arg(cmd);
    for f in files {
        c.args(["-r", f]);
    }
    c.args(args);
    match threads {
        Some(t) => c.env("KTRACE_REPLAY_THREADS", t),
        None => c.env_remove("KTRACE_REPLAY_THREADS"),
    };
    let out = c.output().expect("run ktrace");
    assert!(out.status.success(), "ktrace {cmd} -r {files:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, out.stderr)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The shared pcap fixtures (vendored copy first, as the golden test does).
fn pcap_dir() -> PathBuf {
    let vendored = root().join("tests/fixtures/pcap");
    if vendored.is_dir() { vendored } else { root().join("../shared/fixtures/pcap") }
}

fn compare(dir: &Path, files: &[&str], failures: &mut Vec<String>) {
    for (cmd, args) in MODES {
        let one = run(dir, cmd, files, args, Some("1"));
        let two = run(dir, cmd, files, args, Some("2"));
        if one != two {
            failures.push(format!("{cmd} {files:?} {args:?}: one thread and two differ"));
        }
    }
}

#[test]
fn two_threads_print_what_one_prints() {
    let mut failures = Vec::new();
    let captures = root().join("tests/golden/captures");
    for files in [
        &["lab-node-a.pcapng", "lab-node-b.pcapng"][..],
        &["lab-node-a.pcapng"],
        &["lab-node-b.pcapng"],
        &["ktrace-sample.pcapng"],
        &["ktrace-sample.pcapng.zst"],
        &["ktrace-drops-conn.pcapng"],
    ] {
        compare(&captures, files, &mut failures);
    }
    let pcaps = pcap_dir();
    let mut names: Vec<String> = std::fs::read_dir(&pcaps)
        .expect("pcap fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e.eq_ignore_ascii_case("pcap")))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "pcap fixtures missing in {}", pcaps.display());
    for n in &names {
        compare(&pcaps, &[n], &mut failures);
    }

    let dir = std::env::temp_dir().join(format!("ktrace-replay-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    write(&dir.join("big.pcapng"), EXCHANGES, false);
    write(&dir.join("big.pcapng.zst"), EXCHANGES, true);
    let size = std::fs::metadata(dir.join("big.pcapng")).expect("capture").len();
    assert!(size >= TWO_THREADS_FROM_BYTES, "the generated capture ({size} bytes) is too small to get two threads");
    compare(&dir, &["big.pcapng"], &mut failures);
    compare(&dir, &["big.pcapng.zst"], &mut failures);
    // The default (two threads on a multi-core machine) prints the same.
    for (cmd, args) in MODES {
        if run(&dir, cmd, &["big.pcapng"], args, None) != run(&dir, cmd, &["big.pcapng"], args, Some("1")) {
            failures.push(format!("{cmd} big.pcapng {args:?}: the default and one thread differ"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
}
