//! Issue 18 (replay on both cores): `ktrace dns -r` prints the same bytes
//! on one thread and on two, in every output mode, on every fixture capture
//! (fan-out, forwarded upstream queries, two nodes merged, stored
//! Kubernetes snapshots, TCP, fragments, compressed files) and on a
//! generated capture large enough that two threads are the default.
//! `KTRACE_REPLAY_THREADS` forces the choice. An equality assertion, not a
//! timing one. No root needed; run it in release
//! (`cargo test -p tracer --release --test replay_threads`, ~15–30 s).

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use ktrace::{
    capture::{CaptureHeader, CaptureWriter, ClockRef},
    pipeline::TWO_THREADS_FROM_BYTES,
};

/// Exchanges of the generated capture: ~490 bytes each, so above
/// [`TWO_THREADS_FROM_BYTES`] (asserted).
const EXCHANGES: u64 = 80_000;
/// Simulated time between exchanges (more than the synthetic response delay).
const SPACING_NS: u64 = 200_000;

/// Output modes compared.
const MODES: [&[&str]; 4] = [&["-o", "json"], &["--summary", "-o", "json"], &[], &["--summary"]];

fn write(path: &Path, exchanges: u64, compress: bool) {
    let clock = ClockRef::now();
    let header = CaptureHeader {
        node: "threads-node".into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 1024,
        compress,
    };
    let node: Arc<str> = Arc::from("threads-node");
    let mut w = CaptureWriter::create(path, header).expect("create capture");
    for i in 0..exchanges {
        for rec in synth::exchange_records(i, clock.mono_ns + i * SPACING_NS, &node) {
            w.write_record(&rec, None).expect("write record");
        }
    }
    w.finish().expect("finish capture");
}

/// stdout and stderr of `ktrace dns -r files… args…` with `KTRACE_REPLAY_THREADS=threads`
/// (`None`: unset, the default choice), run in `dir` with bare names.
fn dns(dir: &Path, files: &[&str], args: &[&str], threads: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ktrace"));
    c.current_dir(dir).arg("dns");
    for f in files {
        c.args(["-r", f]);
    }
    c.args(args);
    match threads {
        Some(t) => c.env("KTRACE_REPLAY_THREADS", t),
        None => c.env_remove("KTRACE_REPLAY_THREADS"),
    };
    let out = c.output().expect("run ktrace");
    assert!(out.status.success(), "ktrace dns -r {files:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
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
    for args in MODES {
        let one = dns(dir, files, args, Some("1"));
        let two = dns(dir, files, args, Some("2"));
        if one != two {
            failures.push(format!("{files:?} {args:?}: one thread and two differ"));
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
    for args in MODES {
        if dns(&dir, &["big.pcapng"], args, None) != dns(&dir, &["big.pcapng"], args, Some("1")) {
            failures.push(format!("big.pcapng {args:?}: the default and one thread differ"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
}
