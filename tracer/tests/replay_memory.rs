//! Issue 18: replay memory is bounded by configuration, not by the length of
//! the capture. The same synthetic traffic (`benches/support/synth.rs`: the
//! replay benchmark's mix, four of five exchanges a search-list miss) is
//! written 1× and 10× as long; `ktrace dns -r` replays both in every output
//! mode and the peak resident set (`ru_maxrss` of the child) of the long run
//! must stay within a small margin of the short one's and under the
//! documented bound (docs/memory.md). A size assertion, not
//! a timing one. No root needed.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{path::Path, process::Command, sync::Arc};

use ktrace::capture::{CaptureHeader, CaptureWriter, ClockRef};

/// Exchanges (two DNS messages each) of the short capture.
const SHORT: u64 = 20_000;
/// Simulated time between exchanges (more than the synthetic response delay).
const SPACING_NS: u64 = 200_000;
/// Growth allowed from the short to the 10× capture: allocator arenas and
/// hash tables settle in steps, so a little is noise, not growth.
const MARGIN_KIB: u64 = 24 * 1024;
/// Documented ceiling of a replay with the default limits (docs/memory.md).
const BOUND_KIB: u64 = 512 * 1024;

fn write(path: &Path, exchanges: u64) {
    let clock = ClockRef::now();
    let header = CaptureHeader {
        node: "memory-node".into(),
        ktrace_version: env!("CARGO_PKG_VERSION").into(),
        clock,
        snaplen: 1024,
        compress: false,
    };
    let node: Arc<str> = Arc::from("memory-node");
    let mut w = CaptureWriter::create(path, header).expect("create capture");
    for i in 0..exchanges {
        for rec in synth::exchange_records(i, clock.mono_ns + i * SPACING_NS, &node) {
            w.write_record(&rec, None).expect("write record");
        }
    }
    w.finish().expect("finish capture");
}

/// Peak RSS in KiB of `ktrace dns -r file args…`, output discarded.
fn peak_kib(file: &Path, args: &[&str]) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ktrace"))
        .args(["dns", "-r"])
        .arg(file)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ktrace");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
    assert_eq!(r, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    // Reaped by wait4 already; keeps `Child` from complaining.
    let _ = child.try_wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "ktrace dns -r {args:?} failed: {status}");
    ru.ru_maxrss as u64
}

#[test]
fn replay_peak_memory_does_not_grow_with_capture_length() {
    let dir = std::env::temp_dir().join(format!("ktrace-replay-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let short = dir.join("short.pcapng");
    let long = dir.join("long.pcapng");
    write(&short, SHORT);
    write(&long, SHORT * 10);
    let modes: [&[&str]; 3] = [&["--summary", "-o", "json"], &["-o", "json"], &["--summary"]];
    let mut failures = Vec::new();
    for args in modes {
        let a = peak_kib(&short, args);
        let b = peak_kib(&long, args);
        eprintln!("ktrace dns -r {args:?}: peak RSS {a} KiB (1×) → {b} KiB (10×)");
        if b > a + MARGIN_KIB || b > BOUND_KIB {
            failures.push(format!("{args:?}: {a} KiB → {b} KiB"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "replay memory grew with the capture's length: {failures:?}");
}
