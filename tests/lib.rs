//! Shared helpers for ktrace's end-to-end tests: privilege checks that fail
//! loudly under `KTRACE_REQUIRE_BPF=1`, running the real `ktrace` binary in
//! the background, and small network-namespace fixtures that clean up after
//! themselves even when a test panics.

#![cfg_attr(
    test,
    allow(
        unused_crate_dependencies,
        reason = "the end-to-end tests' dev-dependencies; this library's unit tests use none"
    )
)]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use xtask::lab::LabGuard;

/// True if this test can load BPF programs. Otherwise prints why on stderr
/// and returns false — or panics when `KTRACE_REQUIRE_BPF=1` (CI), so a
/// machine that cannot run the real thing never passes silently.
#[must_use]
pub fn bpf_available(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let why = if !root {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var("KTRACE_REQUIRE_BPF").as_deref() != Ok("1"),
                "{test}: cannot load BPF ({why}) and KTRACE_REQUIRE_BPF=1"
            );
            eprintln!("SKIP {test}: cannot load BPF here ({why}); set KTRACE_REQUIRE_BPF=1 to make this a failure");
            false
        }
    }
}

/// Panics (under `KTRACE_REQUIRE_BPF=1`) or returns false when a tool is missing.
#[must_use]
pub fn tools_available(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| which(t).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("KTRACE_REQUIRE_BPF").as_deref() != Ok("1"),
        "{test}: missing tools {missing:?} (run cargo xtask setup)"
    );
    eprintln!("SKIP {test}: missing tools {missing:?}");
    false
}

/// True when the lab can run here (root, BPF, the tools it drives); with
/// `KTRACE_REQUIRE_BPF=1` anything missing is a failure, not a skip.
#[must_use]
pub fn lab_can_run(test: &str, tools: &[&str]) -> bool {
    if !bpf_available(test) || !tools_available(test, tools) {
        return false;
    }
    let missing = xtask::lab::missing_prerequisites();
    assert!(
        missing.is_empty() || std::env::var("KTRACE_REQUIRE_BPF").as_deref() != Ok("1"),
        "{test}: lab needs {missing:?}"
    );
    missing.is_empty()
}

/// Finds a program on PATH (and in the usual sbin directories).
#[must_use]
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The `ktrace` binary under test: `$KTRACE_BIN` (set by `cargo xtask test`),
/// else the workspace's release or debug build.
#[must_use]
pub fn ktrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KTRACE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf);
    for p in ["target/release/ktrace", "target/debug/ktrace"] {
        let p = root.join(p);
        if p.is_file() {
            return p;
        }
    }
    panic!("no ktrace binary: run `cargo xtask build` or set KTRACE_BIN");
}

/// Runs a command to completion, panicking with its output on failure.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (cleanup paths).
pub fn sh_quiet(cmd: &mut Command) {
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// `ip` with arguments.
#[expect(clippy::must_use_candidate, reason = "most callers run it for its effect")]
pub fn ip(args: &[&str]) -> String {
    sh(Command::new("ip").args(args))
}

/// A `ktrace` process running in the background.
pub struct Ktrace {
    child: Child,
    stdout: mpsc::Receiver<String>,
    /// stderr lines seen so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The thread copying stderr into `stderr`; it ends at EOF.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Ktrace {
    /// Starts `ktrace ARGS` and waits until it says it is attached (or `ready_timeout`).
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    /// [`Ktrace::start`] with extra environment variables.
    #[must_use]
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(ktrace_bin());
        cmd.args(args).envs(env.iter().copied());
        Self::start_cmd(cmd, args)
    }

    /// [`Ktrace::start_env`] inside network namespace `ns` (`ip netns exec`, same pid).
    #[must_use]
    pub fn start_in_netns(ns: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(ktrace_bin()).args(args).envs(env.iter().copied());
        Self::start_cmd(cmd, args)
    }

    fn start_cmd(mut cmd: Command, args: &[&str]) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ktrace {args:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let se = std::sync::Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains("attached") {
                    let _ = ready_tx.send(());
                }
                eprintln!("[ktrace stderr] {l}");
                if let Ok(mut v) = se.lock() {
                    v.push(l);
                }
            }
        });
        let mut k = Self { child, stdout: rx, stderr, stderr_reader: Some(stderr_reader) };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let st = k.child.try_wait().ok().flatten();
            let _ = k.child.kill();
            panic!(
                "ktrace {args:?} did not attach within 20 s (exit: {st:?}); stderr: {:?}",
                k.stderr.lock().map(|v| v.clone())
            );
        }
        k
    }

    /// The ktrace process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (no cleanup of its own can run), then reap it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT, waits for exit (bounded), returns stdout lines.
    #[must_use]
    pub fn stop(self) -> Vec<String> {
        self.stop_with_stderr().0
    }

    /// [`Ktrace::stop`], also returning every stderr line.
    #[must_use]
    pub fn stop_with_stderr(mut self) -> (Vec<String>, Vec<String>) {
        signal(&self.child, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "ktrace exited with {st}; stderr: {:?}", self.stderr.lock().map(|v| v.clone()));
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ktrace did not exit within 20 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The reader thread ends at EOF; collect everything it read.
        let mut lines = Vec::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            lines.push(l);
        }
        // The process has exited, so its stderr reaches EOF and the reader ends.
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let err = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        (lines, err)
    }
}

impl Drop for Ktrace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses JSON Lines output, panicking on a non-JSON line.
#[must_use]
pub fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Records of one `type`.
#[must_use]
pub fn of_type<'a>(v: &'a [Value], ty: &str) -> Vec<&'a Value> {
    v.iter().filter(|x| x["type"] == ty).collect()
}

/// A pair of network namespaces joined by a veth: a "server" and a "client",
/// with IPv4 and IPv6 addresses that exist only inside them. Removed on drop.
pub struct NetnsPair {
    /// Server namespace name.
    pub server: String,
    /// Client namespace name.
    pub client: String,
    /// Server IPv4 address.
    pub server_v4: &'static str,
    /// Server IPv6 address.
    pub server_v6: &'static str,
    children: Vec<Child>,
}

impl NetnsPair {
    /// Creates `<prefix>-srv` and `<prefix>-cli` (removing leftovers of a crashed run first).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let server = format!("{prefix}-srv");
        let client = format!("{prefix}-cli");
        Self::cleanup(&server, &client);
        let p = Self { server, client, server_v4: "10.253.0.1", server_v6: "fd00:253::1", children: Vec::new() };
        ip(&["netns", "add", &p.server]);
        ip(&["netns", "add", &p.client]);
        let (vs, vc) = (format!("{prefix}-s"), format!("{prefix}-c"));
        ip(&["link", "add", &vs, "netns", &p.server, "type", "veth", "peer", "name", &vc, "netns", &p.client]);
        for (ns, dev, v4, v6) in
            [(&p.server, &vs, "10.253.0.1/24", "fd00:253::1/64"), (&p.client, &vc, "10.253.0.2/24", "fd00:253::2/64")]
        {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let etc = PathBuf::from("/etc/netns").join(&p.client);
        std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/<client>");
        std::fs::write(etc.join("resolv.conf"), "nameserver 10.253.0.1\noptions timeout:1 attempts:1\n")
            .expect("write resolv.conf");
        p
    }

    fn cleanup(server: &str, client: &str) {
        for ns in [server, client] {
            sh_quiet(Command::new("ip").args(["netns", "pids", ns]));
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            sh_quiet(Command::new("ip").args(["netns", "del", ns]));
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }

    /// A command run inside a namespace.
    #[must_use]
    pub fn exec(&self, ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }

    /// A Kubernetes Service in front of the resolver: in the client
    /// namespace, UDP to 10.96.0.10:53 is rewritten by an nftables DNAT to dnsmasq's
    /// address, as `kube-proxy` does for the cluster DNS Service.
    pub fn service_dnat(&self) {
        let veth = format!("{}-c", self.client.strip_suffix("-cli").expect("client namespace is <prefix>-cli"));
        ip(&["-n", &self.client, "route", "add", "10.96.0.0/12", "dev", &veth]);
        let rules = "table ip kt_svc {\n  chain out {\n    type nat hook output priority -100;\n    \
                     ip daddr 10.96.0.10 udp dport 53 dnat to 10.253.0.1:53\n  }\n}\n";
        let mut nft = self.exec(&self.client, "nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
        std::io::Write::write_all(nft.stdin.as_mut().expect("stdin"), rules.as_bytes()).expect("nft rules");
        assert!(nft.wait().expect("nft").success(), "nft DNAT rules");
    }

    /// Starts dnsmasq in the server namespace, authoritative for `test`:
    /// `example.test` → 10.1.2.3 / `fd00::123`, anything else under `test` → NXDOMAIN.
    pub fn start_dnsmasq(&mut self) {
        let child = self
            .exec(&self.server.clone(), "dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=10.253.0.1",
                "--listen-address=fd00:253::1",
                "--local=/test/",
                "--address=/example.test/10.1.2.3",
                "--address=/example.test/fd00::123",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        self.children.push(child);
        // Wait until it answers (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = self
                .exec(&self.client.clone(), "dig")
                .args(["+short", "+tries=1", "+time=1", "@10.253.0.1", "example.test"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.1.2.3"));
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not answer within 10 s");
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        Self::cleanup(&self.server, &self.client);
    }
}

/// Sends `sig` to a child of this test (already exited: nothing happens).
pub fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Runs `ktrace ARGS` to completion; its stdout as JSON Lines.
pub fn run_json<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Vec<Value> {
    let out = Command::new(ktrace_bin()).args(args).output().expect("ktrace");
    assert!(out.status.success(), "ktrace {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    json_lines(&lines)
}

/// The findings of `kind` among the records.
#[must_use]
pub fn finding<'a>(v: &'a [Value], kind: &str) -> Vec<&'a Value> {
    of_type(v, "finding").into_iter().filter(|f| f["kind"] == kind).collect()
}

/// A lookup from the lab's backend pod (node-b) to kube-dns (node-a) over
/// UDP: it crosses the fabric in VXLAN.
pub fn dig_from_backend(lab: &LabGuard) {
    let _ = lab
        .pod_command("critical-app", "backend", "dig")
        .args(["+tries=2", "+time=1", "@10.244.1.10", "kube-dns.kube-system.svc.cluster.local"])
        .stdout(Stdio::null())
        .status();
}

/// `ktrace record` inside a lab node's namespace, scoped to that node;
/// killed when dropped.
pub struct Recorder {
    child: Child,
    path: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    /// Starts recording to `$TMP/ktrace-e2e-TAG-NODE.pcapng` and waits (up
    /// to 20 s) until it attached. `underlay`: the `--underlay` arguments
    /// (none: the default, `auto`).
    #[must_use]
    pub fn start(node: &str, snapshot: &str, tag: &str, underlay: &[&str]) -> Self {
        let path = std::env::temp_dir().join(format!("ktrace-e2e-{tag}-{node}.pcapng"));
        let _ = std::fs::remove_file(&path);
        let ns = format!("kt-{node}");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(ktrace_bin())
            .args(["record", "--node-name", node, "--netns-scope", &ns, "--kube-snapshot", snapshot])
            .args(underlay)
            .arg("-w")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start recorder");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[recorder] {l}");
                if l.contains("attached") {
                    let _ = tx.send(());
                }
                if let Ok(mut v) = lines.lock() {
                    v.push(l);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("recorder attached");
        Self { child, path, stderr }
    }

    /// The recorder's "attached" line.
    #[must_use]
    pub fn attached_line(&self) -> String {
        self.stderr
            .lock()
            .map(|v| v.iter().find(|l| l.contains("attached")).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// SIGINT, then waits (up to 10 s) for a clean exit; the capture's path.
    #[must_use]
    pub fn stop(mut self) -> PathBuf {
        signal(&self.child, Signal::SIGINT);
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "recorder exit {st}");
                return self.path.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("recorder did not stop");
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
