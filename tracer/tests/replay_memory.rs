//! Issue 18: replay memory is bounded by configuration, not by the length of
//! the capture. The same synthetic traffic (`benches/support/synth.rs`: the
//! replay benchmark's mix, four of five exchanges a search-list miss) is
//! written 1× and 10× as long; `ktrace dns -r` replays both in every output
//! mode, `ktrace replay -r` and `ktrace drops -r` too, each on one thread
//! and on two, and the peak resident set (`ru_maxrss` of the child) of the long run
//! must stay within a small margin of the short one's and under the
//! documented bound (docs/memory.md). A size assertion, not
//! a timing one. No root needed.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../benches/support/synth.rs"]
mod synth;

use std::{path::Path, process::Command};

/// Exchanges (two DNS messages each) of the short capture.
const SHORT: u64 = 20_000;
/// Growth allowed from the short to the 10× capture: allocator arenas and
/// hash tables settle in steps, so a little is noise, not growth.
const MARGIN_KIB: u64 = 24 * 1024;
/// Documented ceiling of a replay with the default limits (docs/memory.md).
const BOUND_KIB: u64 = 512 * 1024;

fn write(path: &Path, exchanges: u64) {
    synth::write_capture(path, exchanges, false, "memory-node").expect("write capture");
}

/// Peak RSS in KiB of `ktrace CMD -r file args…` on `threads` threads, output discarded.
fn peak_kib(cmd: &str, file: &Path, args: &[&str], threads: &str) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ktrace"))
        .args([cmd, "-r"])
        .arg(file)
        .args(args)
        .env("KTRACE_REPLAY_THREADS", threads)
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
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "ktrace {cmd} -r {args:?} failed: {status}");
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
    let modes: [(&str, &[&str]); 5] = [
        ("dns", &["--summary", "-o", "json"]),
        ("dns", &["-o", "json"]),
        ("dns", &["--summary"]),
        ("replay", &["-o", "json"]),
        ("drops", &["-o", "json"]),
    ];
    let mut failures = Vec::new();
    for (cmd, args) in modes {
        for threads in ["1", "2"] {
            let a = peak_kib(cmd, &short, args, threads);
            let b = peak_kib(cmd, &long, args, threads);
            eprintln!("ktrace {cmd} -r {args:?}, {threads} thread(s): peak RSS {a} KiB (1×) → {b} KiB (10×)");
            if b > a + MARGIN_KIB || b > BOUND_KIB {
                failures.push(format!("{cmd} {args:?} on {threads} thread(s): {a} KiB → {b} KiB"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "replay memory grew with the capture's length: {failures:?}");
}
