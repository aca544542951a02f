//! `--bpf-log` (issue 16): the kernel programs' aya-log records reach
//! ktrace's log output under the target `bpf`; without the flag no reader
//! starts and no kernel line appears (the programs' log statements are
//! removed at load time: docs/kernels.md).

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::time::Duration;

use ktrace_e2e::{Ktrace, NetnsPair, bpf_available, tools_available};

/// A refused TCP connect from the client namespace (nothing listens on
/// port 9): a `SYN_SENT` state change in the client, an RST back.
fn refused_connects(net: &NetnsPair) {
    for _ in 0..3 {
        let _ = net
            .exec(&net.client, "curl")
            .args(["-s", "--max-time", "2", "http://10.253.0.1:9/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    // The log reader drains every 100 ms; ktrace flushes it again on exit.
    std::thread::sleep(Duration::from_millis(300));
}

/// Runs `ktrace [extra] drops` around refused connects; returns its stderr.
fn stderr_of(extra: &[&str]) -> Vec<String> {
    let net = NetnsPair::new("ktbl");
    let mut args = extra.to_vec();
    args.extend(["drops", "-o", "json", "--duration", "60s"]);
    // -vv alone prints debug records; the per-event kernel lines are trace.
    let kt = Ktrace::start_env(&args, &[("RUST_LOG", "debug,bpf=trace")]);
    refused_connects(&net);
    let (_, err) = kt.stop_with_stderr();
    drop(net);
    err
}

fn kernel_lines(err: &[String]) -> Vec<&String> {
    err.iter().filter(|l| l.contains(" bpf]")).collect()
}

#[test]
fn bpf_log_delivers_kernel_lines_and_is_off_without_the_flag() {
    if !bpf_available("bpf_log") || !tools_available("bpf_log", &["curl", "ip"]) {
        return;
    }
    let on = stderr_of(&["-vv", "--bpf-log"]);
    assert!(
        on.iter().any(|l| l.contains("kernel log: reading")),
        "--bpf-log did not start the kernel log reader; stderr: {on:#?}"
    );
    let lines = kernel_lines(&on);
    assert!(
        lines.iter().any(|l| l.contains("conn event") && l.contains("port") && l.contains("-> 9")),
        "no kernel log line for the refused connect to port 9; kernel lines: {lines:#?}"
    );

    let off = stderr_of(&["-vv"]);
    assert!(
        !off.iter().any(|l| l.contains("kernel log: reading")),
        "the kernel log reader started without --bpf-log; stderr: {off:#?}"
    );
    assert!(kernel_lines(&off).is_empty(), "kernel log lines without --bpf-log: {:#?}", kernel_lines(&off));
}
