//! Ring-buffer throughput for `cargo xtask bench` (section 3):
//! `ring_bench MODE RATE SECS` with MODE `batched` (ktrace's default: the
//! reader drains on a 10 ms timer, woken early only when a quarter of the
//! ring is full) or `wakeup` (every event wakes the reader), RATE events/s
//! (0 = as fast as the producer can go) for SECS seconds.
//!
//! Real packets cannot reach 1M events/s on these two cores, so the
//! producer is the kernel itself: `BPF_PROG_TEST_RUN` runs ktrace's own
//! `dns_egress` program on a DNS query in a tight in-kernel loop (repeat
//! count), from CPU 0, exactly as the socket hook would — same task walk,
//! packet copy and ring submission. The programs are attached to an empty
//! cgroup this run creates (and removes), so no other traffic is counted.
//! The consumer, pinned to CPU 1, drains and decodes every item as `ktrace`
//! does. Prints one JSON line; produced = delivered + lost is checked.
//!
//! `ring_bench cost ROUNDS 0` instead prints the kernel's mean ns per run of
//! `dns_egress` and `dns_ingress` on the same query (median over rounds).

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    os::fd::{AsRawFd as _, RawFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ktrace::bpf::{CaptureConfig, Probes, cgroup2_root, raw};

/// Most events one run may produce (bounds the run whatever the rate).
const MAX_EVENTS: u64 = 200_000_000;
/// Pacing slot.
const SLOT: Duration = Duration::from_millis(1);

/// `union bpf_attr` for `BPF_PROG_TEST_RUN` (the `test` member).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs the program `repeat` times on `pkt` in the kernel; returns the
/// kernel's mean ns per run.
fn test_run(fd: RawFd, pkt: &[u8], repeat: u32) -> anyhow::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: pkt.len() as u32,
        data_in: pkt.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix of the size passed; data_in
    // points to pkt.len() readable bytes; no output buffers are given.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, std::ptr::from_mut(&mut attr), size_of::<TestRunAttr>() as u32)
    };
    if r != 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    Ok(attr.duration)
}

/// `cost` mode: the kernel's own mean ns per run of `dns_egress` and
/// `dns_ingress` on the query (`BPF_PROG_TEST_RUN` timing, no network stack
/// around it), in rounds of `REPEAT` runs with the ring drained in between so
/// every run takes the batched (no-wakeup) path. Prints the median per program.
fn cost(cap: &mut Probes, pkt: &[u8], rounds: u32) -> anyhow::Result<()> {
    const REPEAT: u32 = 10_000;
    let mut out = Vec::new();
    for name in ["dns_egress", "dns_ingress"] {
        let fd = cap.program_fd(name).with_context(|| format!("{name} not loaded"))?.as_raw_fd();
        let mut ns = Vec::new();
        for _ in 0..rounds {
            ns.push(test_run(fd, pkt, REPEAT)?);
            cap.rings().drain(0, true, usize::MAX, |_| true);
        }
        ns.sort_unstable();
        out.push(format!(
            "\"{name}\":{{\"median_ns\":{},\"min_ns\":{},\"max_ns\":{}}}",
            ns[ns.len() / 2],
            ns[0],
            ns[ns.len() - 1]
        ));
    }
    println!("{{{}}}", out.join(","));
    Ok(())
}

/// Ethernet + IPv4 + UDP + a DNS query for `bench.example A`, to port 53.
fn packet() -> Vec<u8> {
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["bench", "example"] {
        dns.push(l.len() as u8);
        dns.extend_from_slice(l.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    let udp_len = 8 + dns.len();
    let ip_len = 20 + udp_len;
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&[0x08, 0x00]);
    let mut ip =
        vec![0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0, 0, 64, 17, 0, 0, 10, 213, 0, 1, 10, 213, 0, 2];
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&[0xc3, 0x50, 0, 53, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    p.extend_from_slice(&dns);
    p
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Removes the run's cgroup when the run ends (after the capture detached).
struct CgroupDir(PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(rate), Some(secs)) = (args.first(), args.get(1), args.get(2)) else {
        bail!("usage: ring_bench batched|wakeup RATE SECS | ring_bench cost ROUNDS 0");
    };
    let wakeup = match mode.as_str() {
        "batched" | "cost" => false,
        "wakeup" => true,
        m => bail!("unknown mode {m}"),
    };
    let rate: u64 = rate.parse()?;
    let secs: f64 = secs.parse::<f64>()?.clamp(0.1, 60.0);
    let dir = CgroupDir(cgroup2_root()?.join(format!("ktrace-ringbench-{}", std::process::id())));
    std::fs::create_dir(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let cfg = CaptureConfig {
        ports: vec![53],
        cgroup: Some(dir.0.clone()),
        wakeup_bytes: wakeup.then_some(0),
        ..CaptureConfig::default()
    };
    let mut cap = Probes::attach(&cfg).context("attaching ktrace's programs")?;
    let pkt = packet();
    if mode == "cost" {
        pin(0);
        return cost(&mut cap, &pkt, u32::try_from(rate).unwrap_or(u32::MAX).clamp(1, 1000));
    }
    let fd = cap.program_fd("dns_egress").context("dns_egress not loaded")?.as_raw_fd();
    // One trial run: the program must match the packet (else nothing is measured).
    let lost0 = cap.lost();
    let matched0 = cap.stats()[tracer_common::Stat::Matched as usize];
    test_run(fd, &pkt, 1)?;
    let produced = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (produced, done, pkt) = (Arc::clone(&produced), Arc::clone(&done), pkt.clone());
        std::thread::spawn(move || -> anyhow::Result<f64> {
            pin(0);
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            let per_slot = if rate == 0 { 4096 } else { (rate / 1000).max(1) } as u32;
            let mut next = start;
            while Instant::now() < end && produced.load(Ordering::Relaxed) < MAX_EVENTS {
                test_run(fd, &pkt, per_slot)?;
                produced.fetch_add(u64::from(per_slot), Ordering::Relaxed);
                if rate != 0 {
                    next += SLOT;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            }
            let took = start.elapsed().as_secs_f64();
            done.store(true, Ordering::Release);
            Ok(took)
        })
    };
    pin(1);
    let cpu0 = thread_cpu_s();
    let mut delivered = 0u64;
    let mut bad = 0u64;
    let mut wakeups = 0u64;
    let ring_fd = cap.rings().poll_fd();
    loop {
        let finished = done.load(Ordering::Acquire);
        if wakeup {
            let mut p = libc::pollfd { fd: ring_fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&raw mut p, 1, 10) };
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        wakeups += 1;
        let (rings, ctx) = cap.rings_and_ctx();
        rings.drain(0, true, usize::MAX, |item| {
            match raw::decode(item, None, ctx) {
                Ok(_) => delivered += 1,
                Err(_) => bad += 1,
            }
            true
        });
        if finished {
            break;
        }
    }
    let consumer_cpu = thread_cpu_s() - cpu0;
    let took = producer.join().map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let produced = produced.load(Ordering::Relaxed);
    let lost = cap.lost() - lost0;
    let matched = cap.stats()[tracer_common::Stat::Matched as usize] - matched0;
    println!(
        "{{\"mode\":\"{mode}\",\"rate\":{rate},\"secs\":{took:.3},\"produced\":{produced},\"matched\":{matched},\
         \"delivered\":{delivered},\"bad\":{bad},\"lost\":{lost},\"consumer_cpu_s\":{consumer_cpu:.4},\
         \"consumer_loops\":{wakeups}}}"
    );
    drop(cap);
    drop(dir);
    Ok(())
}
