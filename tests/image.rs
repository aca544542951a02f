//! The container image, run: `cargo xtask image` builds
//! `target/image/ktrace-VERSION.oci.tar`; this test loads that archive into
//! a buildah storage of its own, runs the image with what the `DaemonSet`
//! grants (capabilities `BPF`, `PERFMON`, `NET_ADMIN`, `SYS_PTRACE` on top of
//! buildah's default set; the host's BTF, tracefs and cgroup tree mounted read-only;
//! the host's PID and network namespaces; seccomp unconfined), and checks `ktrace doctor` and a
//! live DNS transaction seen from inside it.
//!
//! Root and BPF, under the host lock; built only with `--features image`:
//! `cargo xtask image && cargo test -p ktrace-e2e --features image --test image`.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use ktrace_e2e::{NetnsPair, bpf_available, json_lines, of_type, tools_available};
use xtask::image::{archive_path, buildah, image_dir, image_ref};

/// The `DaemonSet`'s capabilities (deploy/daemonset.yaml; tests/manifests.rs checks that list).
const CAPS: &str = "CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_PTRACE";
const CONTAINER: &str = "ktrace-image-test";

/// A buildah storage with the archive loaded and a working container of the image.
struct Image {
    storage: PathBuf,
}

impl Image {
    fn load() -> Self {
        let archive = archive_path();
        assert!(archive.is_file(), "{} is missing: run `cargo xtask image` first", archive.display());
        eprintln!(
            "image archive {}: {:.1} MiB",
            archive.display(),
            std::fs::metadata(&archive).map_or(0, |m| m.len()) as f64 / 1_048_576.0
        );
        let storage = image_dir().join("test-storage");
        let img = Self { storage };
        img.cleanup();
        let pulled = img.buildah(&["pull", "--quiet", &format!("oci-archive:{}", archive.display())]);
        assert!(!pulled.trim().is_empty(), "pull gave no image id");
        let images = img.buildah(&["images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}"]);
        eprintln!("loaded: {images}");
        assert!(images.contains(&image_ref()), "the archive holds {}: {images}", image_ref());
        // The DaemonSet's `seccompProfile: Unconfined`: default profiles allow
        // bpf() only with SYS_ADMIN (map creation fails with EPERM). buildah
        // 1.28 takes it when the container is made, not at `run`.
        img.buildah(&["from", "--security-opt", "seccomp=unconfined", "--name", CONTAINER, &image_ref()]);
        img
    }

    fn buildah(&self, args: &[&str]) -> String {
        let out = buildah(&self.storage).args(args).output().unwrap_or_else(|e| panic!("buildah {args:?}: {e}"));
        assert!(
            out.status.success(),
            "buildah {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `buildah run` of `ktrace ARGS` in the image, as the `DaemonSet` runs it.
    fn run(&self, args: &[&str]) -> Command {
        let mut c = buildah(&self.storage);
        // buildah 1.28 with `--cap-drop all` before `--cap-add` leaves bpf()
        // refused (EPERM) even with CAP_BPF added: the run keeps buildah's
        // default set instead (CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETUID, …,
        // none of which allows bpf(), perf or netlink admin) plus the DaemonSet's.
        c.args(["run", "--isolation", "chroot", "--cap-add", CAPS]);
        for m in ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"] {
            c.args(["-v", &format!("{m}:{m}:ro")]);
        }
        c.args([CONTAINER, "--", "ktrace"]).args(args);
        c
    }

    fn cleanup(&self) {
        let _ = buildah(&self.storage).args(["rm", CONTAINER]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = buildah(&self.storage).args(["rmi", "--all", "--force"]).stdout(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn can_run(test: &str) -> bool {
    bpf_available(test) && tools_available(test, &["buildah", "dnsmasq", "dig", "ip"])
}

#[test]
fn image_runs_doctor_and_sees_dns_live() {
    if !can_run("image_runs_doctor_and_sees_dns_live") {
        return;
    }
    let t0 = Instant::now();
    let img = Image::load();
    eprintln!("loaded in {:.1?}", t0.elapsed());

    let doctor = img.run(&["doctor"]).output().expect("buildah run doctor");
    let text = String::from_utf8_lossy(&doctor.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&doctor.stderr));
    assert!(text.contains(&format!("ktrace {}", xtask::image::VERSION)), "{text}");
    for hook in ["btf", "ring_buffer", "cgroup_skb", "tracepoint"] {
        assert!(
            text.lines().any(|l| l.split_whitespace().take(2).eq([hook, "yes"])),
            "{hook} must work in the image with the DaemonSet's capabilities: {text}"
        );
    }
    // Known: doctor probes TCX in a temporary netns (unshare needs
    // SYS_ADMIN, which the DaemonSet does not grant); the agent itself
    // attaches TCX on the node's own underlay with NET_ADMIN.
    if !doctor.status.success() {
        let missing = text.lines().find(|l| l.starts_with("MISSING")).unwrap_or_default();
        assert_eq!(missing, "MISSING required hooks: tc — the features they enable will not work.", "{text}");
        assert!(text.contains("unshare(CLONE_NEWNET): EPERM"), "{text}");
    }

    let mut net = NetnsPair::new("kti");
    net.start_dnsmasq();
    let mut kt = img
        .run(&["dns", "-o", "json", "--duration", "10s", "--no-kube-api", "--node-name", "image-test"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("buildah run dns");
    let (ready_tx, ready_rx) = mpsc::channel();
    let err = kt.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[image stderr] {l}");
            if l.contains("attached") {
                let _ = ready_tx.send(());
            }
            lines.push(l);
        }
        lines
    });
    let out = kt.stdout.take().expect("stdout");
    let out_reader =
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<String>>());
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = kt.kill();
        let _ = kt.wait();
        panic!("ktrace dns in the image did not attach within 30 s: {:?}", err_reader.join());
    }
    let dig = net
        .exec(&net.client.clone(), "dig")
        .args(["+tries=1", "+time=2", "@10.253.0.1", "example.test", "A"])
        .output()
        .expect("dig");
    assert!(String::from_utf8_lossy(&dig.stdout).contains("10.1.2.3"), "dig: {dig:?}");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = kt.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = kt.kill();
            let _ = kt.wait();
            panic!("ktrace dns in the image did not stop after --duration");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines = out_reader.join().expect("stdout reader");
    let err = err_reader.join().expect("stderr reader");
    assert!(status.success(), "ktrace dns in the image: {status}; {err:?}");
    let v = json_lines(&lines);
    let tx = of_type(&v, "dns")
        .into_iter()
        .find(|t| t["qname"] == "example.test" && t["server"].as_str().is_some_and(|s| s.contains("10.253.0.1")))
        .unwrap_or_else(|| panic!("no example.test transaction seen from the image: {lines:#?}"));
    assert_eq!(tx["rcode"], "NOERROR", "{tx}");
    assert_eq!(tx["comm"], "dig", "process attribution from inside the image: {tx}");
    assert_eq!(tx["node"], "image-test", "{tx}");
    eprintln!("image test took {:.1?}", t0.elapsed());
}
