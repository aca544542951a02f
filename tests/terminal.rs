//! ktrace on a terminal, through a real pseudo-terminal (`script` from
//! util-linux): tables fitted to the width (`$COLUMNS`, the tty's own size,
//! 120), the full table on pipes and with `-o wide`, colour only on a
//! terminal and never with `NO_COLOR`, the live status line on stderr only
//! when stderr is a terminal, the kubectl plugin by its `argv[0]`, and the
//! completions and man pages. `cargo test -p ktrace-e2e --test terminal`;
//! the status-line tests load BPF (root, under the host lock).

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use ktrace_e2e::{bpf_available, ktrace_bin};

const FIXTURE: &str = "zeek__dns_long-connection.pcap";
/// IPv6 addresses and longer names: what gets shortened.
const FIXTURE_V6: &str = "zeek__ipv6-fragmented-dns.pcap";

fn fixture_named(name: &str) -> PathBuf {
    ktrace::testkit::fixture(&format!("pcap/{name}"))
}

fn fixture() -> PathBuf {
    fixture_named(FIXTURE)
}

/// Runs `sh -c CMD` on a pseudo-terminal (stdin, stdout and stderr all on
/// it); returns everything the terminal received, with `\r\n` as `\n`.
fn on_pty(cmd: &str, env: &[(&str, &str)]) -> String {
    assert!(ktrace_e2e::which("script").is_some(), "`script` (util-linux) runs the pseudo-terminal tests");
    let out = Command::new("script")
        .args(["-qefc", cmd, "/dev/null"])
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("script: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{cmd} failed on the pty: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// `s` without SGR colour sequences.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn table_lines(out: &str) -> Vec<String> {
    let text = plain(out);
    let start = text
        .lines()
        .position(|l| l.contains("QNAME") && l.contains("RCODE"))
        .unwrap_or_else(|| panic!("no table header: {text}"));
    text.lines().skip(start).take_while(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn dns_replay(extra: &str) -> String {
    format!("{} dns -r {} {extra}", ktrace_bin().display(), fixture().display())
}

fn widest(lines: &[String]) -> usize {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn columns_fits_the_table_and_shortens_names_in_the_middle() {
    let out = on_pty(&dns_replay(""), &[("COLUMNS", "100")]);
    let lines = table_lines(&out);
    assert!(lines.len() > 5, "{out}");
    assert!(widest(&lines) <= 100, "wider than COLUMNS=100:\n{}", lines.join("\n"));
    let header = &lines[0];
    for kept in ["POD/NETNS", "QNAME", "RCODE", "LATENCY"] {
        assert!(header.contains(kept), "{kept} dropped: {header}");
    }
    assert!(!header.contains(" ID "), "the query id is the first column to go: {header}");
    // Client and server do not fit: the server is what stays.
    assert!(lines[1].contains("-> 192.168.170.20:53 "), "{}", lines[1]);
    // Narrower still: more columns go, names lose their middle.
    let cmd = format!("{} dns -r {}", ktrace_bin().display(), fixture_named(FIXTURE_V6).display());
    let out = on_pty(&cmd, &[("COLUMNS", "70")]);
    let lines = table_lines(&out);
    assert!(widest(&lines) <= 70, "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains('…')), "long names shortened: {}", lines.join("\n"));
    assert!(lines[0].contains("QNAME") && lines[0].contains("RCODE"));
}

#[test]
fn the_terminals_own_width_without_columns() {
    let out = on_pty(&format!("stty cols 90 rows 40; exec {}", dns_replay("")), &[]);
    let lines = table_lines(&out);
    assert!(widest(&lines) <= 90, "{}", lines.join("\n"));
    assert!(widest(&lines) > 70, "uses the room it has: {}", lines.join("\n"));
    // A terminal that does not say its size: 120.
    let out = on_pty(&format!("stty cols 0 rows 0; exec {}", dns_replay("")), &[]);
    let lines = table_lines(&out);
    assert!(widest(&lines) <= 120 && widest(&lines) > 100, "{}", lines.join("\n"));
}

#[test]
fn pipes_and_wide_get_the_full_table() {
    let piped =
        Command::new(ktrace_bin()).args(["dns", "-r"]).arg(fixture()).env_remove("COLUMNS").output().expect("ktrace");
    assert!(piped.status.success());
    let piped = String::from_utf8(piped.stdout).unwrap();
    assert!(!piped.contains('\x1b'), "no colour on a pipe");
    let lines = table_lines(&piped);
    assert!(widest(&lines) > 200, "full table on a pipe: {}", widest(&lines));
    assert!(!piped.contains('…'));
    // -o wide on a terminal: the same table (colour aside).
    let wide = on_pty(&format!("stty cols 80; exec {}", dns_replay("-o wide")), &[]);
    assert_eq!(table_lines(&wide), lines, "-o wide is the full table");
    // COLUMNS on a pipe fits it.
    let fitted =
        Command::new(ktrace_bin()).args(["dns", "-r"]).arg(fixture()).env("COLUMNS", "80").output().expect("ktrace");
    assert!(widest(&table_lines(&String::from_utf8_lossy(&fitted.stdout))) <= 80);
}

#[test]
fn colour_on_a_terminal_only_and_never_with_no_color() {
    let out = on_pty(&dns_replay(""), &[("COLUMNS", "150")]);
    let nx = out.lines().find(|l| l.contains("NXDOMAIN")).unwrap_or_else(|| panic!("no NXDOMAIN row: {out}"));
    assert!(nx.contains("\x1b[33mNXDOMAIN\x1b[0m"), "NXDOMAIN in colour: {nx:?}");
    assert!(!out.lines().any(|l| l.contains("NOERROR") && l.contains("\x1b[")), "success stays plain");
    let out = on_pty(&dns_replay(""), &[("COLUMNS", "150"), ("NO_COLOR", "1")]);
    assert!(!out.contains("\x1b["), "NO_COLOR: {out:?}");
    // JSON is the same bytes on a terminal as on a pipe.
    let tty = on_pty(&dns_replay("-o json"), &[]);
    let pipe = Command::new(ktrace_bin()).args(["dns", "-o", "json", "-r"]).arg(fixture()).output().unwrap();
    assert_eq!(tty, String::from_utf8(pipe.stdout).unwrap());
}

/// A directory with `kubectl-ktrace` linked to the binary under test.
fn plugin() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ktrace-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("kubectl-ktrace");
    std::os::unix::fs::symlink(ktrace_bin(), &link).unwrap();
    (dir, link)
}

#[test]
fn kubectl_plugin_by_argv0() {
    let (dir, link) = plugin();
    let help = Command::new(&link).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Usage: kubectl ktrace [OPTIONS] <COMMAND>"), "{help}");
    let dns_help = Command::new(&link).args(["dns", "--help"]).output().unwrap();
    let dns_help = String::from_utf8_lossy(&dns_help.stdout);
    assert!(dns_help.contains("Usage: kubectl ktrace dns"), "{dns_help}");
    assert!(dns_help.contains("-n, --ns <NAMESPACE>") && dns_help.contains("[alias: --namespace]"), "{dns_help}");
    let bad = Command::new(&link).args(["dns", "--no-such-flag"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("kubectl ktrace dns"), "{bad:?}");
    // Without a cluster, the default (agents through the API) says so, as the plugin.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let no_api = Command::new(&link)
        .args(["dns", "-n", "critical-app"])
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&no_api.stderr);
    assert!(!no_api.status.success(), "{err}");
    assert!(err.starts_with("kubectl ktrace: ") && err.contains("--agents"), "{err}");
    // -n before the subcommand, as with kubectl; -r reads a capture instead of agents.
    let out = Command::new(&link).args(["-n", "nowhere", "dns", "-r"]).arg(fixture()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 shown"), "the namespace filter applies");
    // The same binary under its own name is plain ktrace.
    let plain = Command::new(ktrace_bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("Usage: ktrace [OPTIONS] <COMMAND>"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(ktrace_bin()).args(["completions", shell]).output().unwrap();
        assert!(o.status.success() && o.stdout.len() > 1000, "{shell}");
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("explain-first") && s.contains("kube-snapshot"), "{shell}");
    }
    // bash itself accepts the script, and completes a subcommand with it.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({} completions bash) && COMP_WORDS=(ktrace dr) && COMP_CWORD=1 && _ktrace ktrace dr ktrace \
             && echo \"${{COMPREPLY[@]}}\"",
            ktrace_bin().display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && words.contains("drops"), "{words} {}", String::from_utf8_lossy(&o.stderr));
    let page = Command::new(ktrace_bin()).arg("man").output().unwrap();
    assert!(page.status.success());
    let dir = std::env::temp_dir().join(format!("ktrace-man-e2e-{}", std::process::id()));
    let o = Command::new(ktrace_bin()).args(["man", "--out-dir"]).arg(&dir).output().unwrap();
    assert!(o.status.success());
    assert!(dir.join("ktrace-dns.1").is_file() && dir.join("ktrace-completions.1").is_file());
    if ktrace_e2e::which("man").is_some() {
        let r = Command::new("man").arg("-l").arg(dir.join("ktrace-dns.1")).env("MANWIDTH", "80").output().unwrap();
        let text = String::from_utf8_lossy(&r.stdout);
        assert!(text.contains("--explain-first"), "man renders the page: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Live runs: the status line on a terminal, every second, and none on a pipe.
#[test]
fn live_status_line_on_a_terminal_only() {
    if !bpf_available("live_status_line_on_a_terminal_only") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ktrace-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.pcapng");
    let cmd = format!("{} record --duration 3s -w {} --no-kube-api", ktrace_bin().display(), file.display());
    let out = on_pty(&cmd, &[]);
    let updates = out.matches("\x1b[2Kktrace record: 0:0").count();
    assert!(updates >= 2, "one status update a second: {out:?}");
    assert!(out.contains(" written · ") && out.contains(" lost"), "{out:?}");
    assert!(out.contains("ktrace record: wrote "), "plain-words summary: {out:?}");
    assert!(!out.contains("WriterStats"), "no debug dump: {out:?}");
    let piped = Command::new(ktrace_bin())
        .args(["record", "--duration", "2s", "--no-kube-api", "-w"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "{err}");
    assert!(!err.contains('\r') && !err.contains("\x1b["), "no status line on a pipe: {err:?}");
    assert!(err.contains("ktrace record: wrote ") && err.contains("Nothing was lost."), "{err}");
    // dns with --duration: elapsed of total, events, findings so far.
    let out = on_pty(&format!("{} dns --duration 3s --no-kube-api", ktrace_bin().display()), &[]);
    assert!(out.contains("ktrace dns: 0:01 of 0:03 · "), "{out:?}");
    assert!(out.contains(" findings") || out.contains(" finding"), "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}
