//! Thin wrappers over `ip`, `nft`, `sysctl`, `/proc` and cgroupfs.

use std::{
    collections::HashSet,
    ffi::CString,
    fs,
    io::{self, Write as _},
    net::Ipv4Addr,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _, process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    fcntl::{OFlag, open},
    sys::{
        signal::{Signal, kill},
        stat::Mode,
    },
    unistd::{Pid, write},
};

use super::topology::PREFIX;

/// How long one `ip`/`nft`/`sysctl` invocation may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound on `/proc` entries scanned, so a runaway pid space cannot
/// make cleanup loop for long.
const MAX_PROC_ENTRIES: usize = 1_000_000;

/// Long-running lab processes started by this process, so `down` can reap
/// them instead of leaving zombies (which would look alive to `/proc` scans).
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// `program arg…` for messages.
pub(crate) fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion (bounded by [`CMD_TIMEOUT`]) and returns
/// its stdout; fails with the command line and stderr if it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    run_stdin(cmd, None)
}

/// [`run`] with `input` written to the command's stdin.
pub(crate) fn run_stdin(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let line = cmd_line(cmd);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{line}`"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).with_context(|| format!("writing stdin of `{line}`"))?;
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(CMD_TIMEOUT) else {
        signal(pid as i32, Some(Signal::SIGKILL));
        bail!("`{line}` did not finish within {CMD_TIMEOUT:?}");
    };
    let out = out.with_context(|| format!("waiting for `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n <netns> <args>` (or plain `ip <args>` without a namespace).
pub(crate) fn ip(netns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    if let Some(n) = netns {
        c.args(["-n", n]);
    }
    run(c.args(args))
}

/// `ip netns exec <netns> <program>`, not yet run.
pub(crate) fn netns_command(netns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, program]);
    c
}

/// Sets sysctls inside a namespace.
pub(crate) fn sysctl(netns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let mut c = netns_command(netns, "sysctl");
    c.arg("-qw");
    for (k, v) in settings {
        c.arg(format!("{k}={v}"));
    }
    run(&mut c).map(drop)
}

/// Loads an nftables ruleset inside a namespace.
pub(crate) fn nft_load(netns: &str, ruleset: &str) -> Result<()> {
    let mut c = netns_command(netns, "nft");
    c.args(["-f", "-"]);
    run_stdin(&mut c, Some(ruleset)).map(drop)
}

/// Makes a command move itself into `cgroup_dir` before it execs, so the
/// very first instruction of the program already runs in the pod's cgroup.
pub(crate) fn enter_cgroup_before_exec(cmd: &mut Command, cgroup_dir: &Path) {
    let procs = cgroup_dir.join("cgroup.procs");
    // Built before fork: only async-signal-safe calls run in the child.
    let path = CString::new(procs.as_os_str().as_bytes()).ok();
    let hook = move || -> io::Result<()> {
        let Some(path) = path.as_ref() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cgroup path has a NUL byte"));
        };
        // open/write/close on a NUL-terminated path and a static buffer
        // (nix passes a `CStr` through without allocating) are
        // async-signal-safe; "0" means "the writing process".
        let fd = open(path.as_c_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        if write(&fd, b"0")? == 1 { Ok(()) } else { Err(io::ErrorKind::WriteZero.into()) }
    };
    // SAFETY: the hook allocates nothing and calls only async-signal-safe
    // functions (see above).
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Starts a long-running process with stdout/stderr appended to `log`,
/// remembers it for [`reap_children`], and returns its pid.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<u32> {
    let line = cmd_line(cmd);
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("cannot dup log {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().with_context(|| format!("cannot start `{line}`"))?;
    let pid = child.id();
    if let Ok(mut v) = CHILDREN.lock() {
        v.push(child);
    }
    Ok(pid)
}

/// Reaps exited children started by [`spawn_logged`].
pub(crate) fn reap_children() {
    if let Ok(mut v) = CHILDREN.lock() {
        v.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }
}

/// Whether a child started by [`spawn_logged`] has already exited; returns
/// its exit status text if so.
pub(crate) fn child_exited(pid: u32) -> Option<String> {
    let mut v = CHILDREN.lock().ok()?;
    let c = v.iter_mut().find(|c| c.id() == pid)?;
    match c.try_wait() {
        Ok(Some(st)) => Some(st.to_string()),
        _ => None,
    }
}

/// `kill(2)`; `None` only checks the process exists.
fn signal(pid: i32, sig: Option<Signal>) {
    if pid > 1 && pid != std::process::id() as i32 {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Alive and not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may contain one).
        Ok(s) => s.rfind(')').and_then(|i| s.get(i + 2..i + 3)).is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// SIGTERM, wait up to `grace`, SIGKILL, wait up to 2 s more.
pub(crate) fn kill_and_wait(pids: &[i32], grace: Duration) {
    let me = std::process::id() as i32;
    let pids: Vec<i32> = pids.iter().copied().filter(|&p| p > 1 && p != me).collect();
    for &p in &pids {
        signal(p, Some(Signal::SIGTERM));
    }
    for (sig, wait) in [(Some(Signal::SIGKILL), grace), (None, Duration::from_secs(2))] {
        let deadline = Instant::now() + wait;
        loop {
            reap_children();
            if !pids.iter().any(|&p| alive(p)) {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if sig.is_some() {
            for &p in pids.iter().filter(|&&p| alive(p)) {
                signal(p, sig);
            }
        }
    }
}

/// Names of the lab's network namespaces (those with [`PREFIX`]).
pub(crate) fn lab_netns() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Pids of every process whose network namespace is one of `netns`.
pub(crate) fn pids_in_netns(netns: &[String]) -> Vec<i32> {
    let ids: HashSet<(u64, u64)> = netns
        .iter()
        .filter_map(|n| fs::metadata(Path::new("/run/netns").join(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        // An unmounted leftover file is a plain tmpfs file, not an nsfs inode;
        // matching it would be harmless but pointless.
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .take(MAX_PROC_ENTRIES)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| ids.contains(&(m.dev(), m.ino()))))
        .collect()
}

/// Pids listed in `cgroup.procs` of every cgroup under `dir` (recursively,
/// bounded depth).
pub(crate) fn pids_in_cgroup_tree(dir: &Path) -> Vec<i32> {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<i32>) {
        if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if depth == 0 {
            return;
        }
        if let Ok(d) = fs::read_dir(dir) {
            for e in d.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), depth - 1, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 4, &mut out);
    out
}

/// Removes a cgroup tree bottom-up, retrying briefly while exiting tasks
/// leave it.
pub(crate) fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    fn children(dir: &Path) -> Vec<std::path::PathBuf> {
        fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
            })
            .unwrap_or_default()
    }
    fn remove(dir: &Path, depth: u32) -> io::Result<()> {
        if depth > 0 {
            for c in children(dir) {
                remove(&c, depth - 1)?;
            }
        }
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match remove(dir, 4) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("cannot remove cgroup {}", dir.display()));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The `/proc/net/{tcp,udp}` form of an IPv4 address and port.
fn proc_net_addr(ip: Ipv4Addr, port: u16) -> String {
    format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
}

/// Whether a `/proc/net/tcp` (`tcp = true`, state LISTEN) or
/// `/proc/net/udp` table has a socket bound to `ip:port` (or the wildcard).
pub(crate) fn proc_net_has_listener(table: &str, ip: Ipv4Addr, port: u16, tcp: bool) -> bool {
    let want = [proc_net_addr(ip, port), proc_net_addr(Ipv4Addr::UNSPECIFIED, port)];
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let (Some(_sl), Some(local), Some(_rem), Some(st)) = (f.next(), f.next(), f.next(), f.next()) else {
            return false;
        };
        want.iter().any(|w| w.eq_ignore_ascii_case(local)) && (!tcp || st == "0A")
    })
}

/// Waits until process `pid` (or anything in its netns) listens on
/// `ip:port`, up to `timeout`; fails early if the process exited.
pub(crate) fn wait_listening(pid: u32, ip: Ipv4Addr, port: u16, tcp: bool, timeout: Duration) -> Result<()> {
    let file = format!("/proc/{pid}/net/{}", if tcp { "tcp" } else { "udp" });
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = fs::read_to_string(&file)
            && proc_net_has_listener(&t, ip, port, tcp)
        {
            return Ok(());
        }
        if let Some(st) = child_exited(pid) {
            bail!("process {pid} exited ({st}) before listening on {ip}:{port}");
        }
        if Instant::now() >= deadline {
            bail!("process {pid} does not listen on {ip}:{port} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                   0: 1E02F40A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n";
        assert!(proc_net_has_listener(tcp, Ipv4Addr::new(10, 244, 2, 30), 8080, true));
        assert!(!proc_net_has_listener(tcp, Ipv4Addr::new(10, 244, 2, 30), 8081, true));
        let est = tcp.replace(" 0A ", " 01 ");
        assert!(!proc_net_has_listener(&est, Ipv4Addr::new(10, 244, 2, 30), 8080, true));
        let udp = "  sl  local_address rem_address   st\n  1: 00000000:0035 00000000:0000 07 0\n";
        assert!(proc_net_has_listener(udp, Ipv4Addr::new(10, 244, 1, 10), 53, false));
        assert!(!proc_net_has_listener("", Ipv4Addr::LOCALHOST, 53, false));
        assert!(!proc_net_has_listener("header\ngarbage\n", Ipv4Addr::LOCALHOST, 53, false));
    }

    #[test]
    fn formats_command_lines() {
        let mut c = Command::new("ip");
        c.args(["-n", "kt-x", "link"]);
        assert_eq!(cmd_line(&c), "ip -n kt-x link");
    }

    #[test]
    fn never_signals_itself_or_init() {
        // Would kill the test runner if the guard were missing.
        kill_and_wait(&[std::process::id() as i32, 1, 0, -1], Duration::from_millis(10));
    }

    #[test]
    fn run_reports_failures() {
        assert!(run(&mut Command::new("false")).is_err());
        assert_eq!(run(Command::new("echo").arg("hi")).ok().as_deref(), Some("hi\n"));
        assert_eq!(run_stdin(&mut Command::new("cat"), Some("x")).ok().as_deref(), Some("x"));
    }
}
