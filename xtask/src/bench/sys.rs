//! Processes, CPU accounting from `/proc`, and the benchmark's own network
//! namespace pair (torn down on drop, also after a failure or a panic).

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sched::{CloneFlags, CpuSet, sched_setaffinity, setns},
    sys::{
        signal::{Signal, kill},
        wait::waitpid,
    },
    unistd::{Pid, SysconfVar, sysconf},
};

/// Client-side namespace (load generators).
pub(crate) const CLI_NS: &str = "ktb-cli";
/// Server-side namespace (resolvers, sinks).
pub(crate) const SRV_NS: &str = "ktb-srv";
/// Veth end in [`CLI_NS`].
const CLI_DEV: &str = "ktb-c";
/// Veth end in [`SRV_NS`] (tcpdump listens here).
pub(crate) const SRV_DEV: &str = "ktb-s";
/// Client address (only inside [`CLI_NS`]).
pub(crate) const CLI_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// Server address (only inside [`SRV_NS`]).
pub(crate) const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
/// CPU of load generators.
pub(crate) const CPU_LOAD: usize = 0;
/// CPU of servers and sinks.
pub(crate) const CPU_SERVER: usize = 1;
/// How long one helper command (`ip`, `bpftool`) may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a short command to completion (bounded) and returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {line}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line} did not finish within {CMD_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{line} failed ({status}): {}", String::from_utf8_lossy(&stderr).trim());
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `taskset -c CPU ip netns exec NS PROGRAM`: every hop execs, so the child's
/// pid is PROGRAM's own (its `/proc/<pid>/stat` is the program's CPU time).
pub(crate) fn in_netns(ns: &str, cpu: Option<usize>, program: &str) -> Command {
    let mut c;
    if let Some(cpu) = cpu {
        c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), "ip", "netns", "exec", ns, program]);
    } else {
        c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
    }
    c
}

/// `taskset -c CPU PROGRAM` (or just PROGRAM).
pub(crate) fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Clock ticks per second of `/proc` CPU times.
fn hz() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(v)) if v > 0 => v as f64,
        _ => 100.0,
    }
}

/// user+system CPU seconds of a process (or of a task: `/proc/<pid>/task/<tid>`).
pub(crate) fn cpu_secs(proc_dir: &Path) -> Option<f64> {
    let s = fs::read_to_string(proc_dir.join("stat")).ok()?;
    // The command name may contain spaces and ')': fields start after the last ')'.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / hz())
}

/// CPU seconds of process `pid`.
pub(crate) fn pid_cpu(pid: u32) -> Option<f64> {
    cpu_secs(&PathBuf::from(format!("/proc/{pid}")))
}

/// On-CPU seconds of every thread of process `pid`, from each task's
/// `schedstat` (nanoseconds). `stat`'s user+system times count whole clock
/// ticks: over the agent's 4 s quick runs one tick is 0.25 % of a core, as
/// wide as the distance to its 2 % target. A thread that exits between two
/// readings takes its time with it; the agent's threads live as long as it.
pub(crate) fn pid_oncpu_secs(pid: u32) -> Option<f64> {
    let mut ns: u64 = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(s) = fs::read_to_string(t.path().join("schedstat")) else { continue };
        ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// CPU seconds of the calling thread.
pub(crate) fn thread_cpu() -> Option<f64> {
    cpu_secs(Path::new("/proc/thread-self"))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Busy CPU seconds of the whole machine so far (all CPUs, `/proc/stat`).
pub(crate) fn system_busy_secs() -> Option<f64> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle) as f64 / hz())
}

/// A long-running child (resolver, tracer, capture) that is stopped on drop:
/// SIGINT (tracers print their counters), then SIGKILL after a bounded wait.
pub(crate) struct Proc {
    child: Option<Child>,
    /// What it is, for messages.
    pub(crate) name: String,
    /// Where its stderr goes.
    pub(crate) stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout to `stdout` (or /dev/null) and stderr to `stderr_path`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, stdout: Option<&Path>, stderr_path: &Path) -> Result<Self> {
        let out = match stdout {
            Some(p) => Stdio::from(fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
            None => Stdio::null(),
        };
        let err = fs::File::create(stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self { child: Some(child), name: name.to_owned(), stderr_path: stderr_path.to_owned() })
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its stderr so far.
    pub(crate) fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (bounded) until its stderr contains `needle`; fails if it exits first.
    pub(crate) fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("{} exited ({st}) before it was ready: {}", self.name, self.stderr().trim());
            }
            if Instant::now() > deadline {
                bail!("{} not ready after {timeout:?} (no {needle:?} on stderr): {}", self.name, self.stderr().trim());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGINT and waits up to `grace`, then SIGKILL. Returns user+sys
    /// CPU seconds of the whole life of the process (from `wait4`).
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<f64> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        // Our own child, not reaped yet: the pid is still its.
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        let deadline = Instant::now() + grace;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid out-parameter.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: waiting for our own child with valid out-pointers.
            let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut ru) };
            if r == pid {
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return Some(tv(ru.ru_utime) + tv(ru.ru_stime));
            }
            if r < 0 {
                return None;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Runs `cmd` to completion (bounded by `timeout`), stdout to `stdout`;
/// returns (exit success, user+sys CPU seconds from `wait4`, wall seconds).
pub(crate) fn run_timed(mut cmd: Command, stdout: &Path, timeout: Duration) -> Result<(bool, f64, f64)> {
    let out = fs::File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id() as i32;
    let deadline = start + timeout;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut ru) };
        if r == pid {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            return Ok((ok, tv(ru.ru_utime) + tv(ru.ru_stime), start.elapsed().as_secs_f64()));
        }
        if r < 0 {
            bail!("wait4 on {cmd:?}: {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The benchmark's two namespaces joined by a veth. Nothing connects them to
/// the host, so no benchmark packet can leave the machine. Dropping it kills
/// every process left in them and deletes them.
pub(crate) struct BenchNet;

impl BenchNet {
    /// Creates the pair (after removing leftovers of a crashed run).
    pub(crate) fn up() -> Result<Self> {
        Self::down();
        let net = BenchNet;
        let cli = CLI_IP.to_string() + "/24";
        let srv = SRV_IP.to_string() + "/24";
        let steps: [&[&str]; 11] = [
            &["netns", "add", CLI_NS],
            &["netns", "add", SRV_NS],
            &["-n", CLI_NS, "link", "add", CLI_DEV, "type", "veth", "peer", "name", SRV_DEV, "netns", SRV_NS],
            &["-n", CLI_NS, "addr", "add", &cli, "dev", CLI_DEV],
            &["-n", SRV_NS, "addr", "add", &srv, "dev", SRV_DEV],
            &["-n", CLI_NS, "link", "set", CLI_DEV, "up"],
            &["-n", SRV_NS, "link", "set", SRV_DEV, "up"],
            &["-n", CLI_NS, "link", "set", "lo", "up"],
            &["-n", SRV_NS, "link", "set", "lo", "up"],
            // Offloads off: tcpdump and the BPF programs see the same packets either way,
            // but GRO on veth would batch the non-DNS flood differently per run.
            &["-n", CLI_NS, "link", "set", CLI_DEV, "txqueuelen", "10000"],
            &["-n", SRV_NS, "link", "set", SRV_DEV, "txqueuelen", "10000"],
        ];
        for s in steps {
            run(Command::new("ip").args(s))?;
        }
        Ok(net)
    }

    /// Kills what runs in the namespaces and deletes them (idempotent, bounded).
    pub(crate) fn down() {
        for ns in [CLI_NS, SRV_NS] {
            if !Path::new("/run/netns").join(ns).exists() {
                continue;
            }
            let pids = run(Command::new("ip").args(["netns", "pids", ns])).unwrap_or_default();
            for p in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // These processes live in our own namespace.
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let left = run(Command::new("ip").args(["netns", "pids", ns])).unwrap_or_default();
                if left.trim().is_empty() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("[bench] cannot delete netns {ns}: {e:#}");
            }
        }
    }
}

impl Drop for BenchNet {
    fn drop(&mut self) {
        Self::down();
    }
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_thread(cpu: usize) {
    let mut set = CpuSet::new();
    // Pid 0: this thread. A cpu past CPU_SETSIZE leaves it unpinned.
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// Moves the calling thread into the network namespace `/run/netns/<ns>`.
pub(crate) fn enter_netns(ns: &str) -> Result<()> {
    let f = fs::File::open(Path::new("/run/netns").join(ns)).with_context(|| format!("opening netns {ns}"))?;
    // Affects only this thread.
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from).with_context(|| format!("setns {ns}"))
}

/// `RcvbufErrors` of UDP in the calling thread's network namespace.
pub(crate) fn udp_rcvbuf_errors() -> u64 {
    let Ok(f) = fs::File::open("/proc/thread-self/net/snmp") else { return 0 };
    let lines: Vec<String> =
        BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.starts_with("Udp:")).collect();
    let (Some(h), Some(v)) = (lines.first(), lines.get(1)) else { return 0 };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// First line of `program --version`-like output, for the machine table.
pub(crate) fn version(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).stdin(Stdio::null()).output() else {
        return "not installed".into();
    };
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty() && !l.contains("Performance Testing Tool"))
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(pid_cpu(std::process::id()).is_some());
        assert!(pid_oncpu_secs(std::process::id()).is_some_and(|s| s > 0.0));
        assert!(thread_cpu().is_some());
        assert!(system_busy_secs().is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|(rss, hwm)| rss > 0 && hwm >= rss));
    }
}
