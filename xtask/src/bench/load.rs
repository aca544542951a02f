//! Load generators: dnsperf (resolver benchmarks) and an in-process UDP
//! flood with an echoing sink (event-pipeline and in-kernel sections), both
//! only between the benchmark's own namespaces, bounded in count and time.

use std::{
    fmt::Write as _,
    fs,
    net::{SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::sys::{self, CLI_NS, CPU_LOAD, CPU_SERVER, SRV_IP, SRV_NS};

/// Names the resolvers answer locally (no upstream exists).
pub(crate) const ZONE: &str = "bench.test";
/// Distinct names in the dnsperf input.
const NAMES: usize = 200;

/// Writes the dnsperf input file (A queries for names in [`ZONE`]).
pub(crate) fn write_queries(path: &Path) -> Result<()> {
    let mut s = String::new();
    for i in 0..NAMES {
        let _ = writeln!(s, "host{i}.{ZONE} A");
    }
    fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// One dnsperf run's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dnsperf {
    /// Queries per second dnsperf reports.
    pub(crate) qps: f64,
    /// Completed queries.
    pub(crate) completed: u64,
    /// Lost (timed-out) queries.
    pub(crate) lost: u64,
    /// Per-query latencies in seconds (only with `verbose`).
    pub(crate) latencies: Vec<f64>,
    /// Average latency in seconds, as dnsperf prints it.
    pub(crate) avg_latency: f64,
    /// dnsperf's own user+sys CPU seconds.
    pub(crate) cpu: f64,
}

/// Runs dnsperf from [`CLI_NS`] on [`CPU_LOAD`] against the server for `secs`
/// seconds, at most `max_qps` (None: as fast as the server answers).
/// `verbose` asks for a line per query (exact percentiles).
pub(crate) fn dnsperf(work: &Path, queries: &Path, secs: u32, max_qps: Option<u32>, verbose: bool) -> Result<Dnsperf> {
    let mut c = sys::in_netns(CLI_NS, Some(CPU_LOAD), "dnsperf");
    c.args(["-s", &SRV_IP.to_string(), "-d"]).arg(queries).args([
        "-l",
        &secs.to_string(),
        "-c",
        "4",
        "-q",
        "200",
        "-t",
        "2",
    ]);
    if let Some(q) = max_qps {
        c.args(["-Q", &q.to_string()]);
    }
    if verbose {
        c.arg("-v");
    }
    let out = work.join("dnsperf.out");
    let (ok, cpu, _) = sys::run_timed(c, &out, Duration::from_secs(u64::from(secs) + 20))?;
    let text = fs::read_to_string(&out).unwrap_or_default();
    if !ok {
        bail!("dnsperf failed: {}", text.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    let mut r = parse_dnsperf(&text);
    r.cpu = cpu;
    if r.completed == 0 {
        bail!("dnsperf completed no query: {}", text.lines().rev().take(8).collect::<Vec<_>>().join(" | "));
    }
    Ok(r)
}

fn parse_dnsperf(text: &str) -> Dnsperf {
    let mut r = Dnsperf::default();
    let num =
        |l: &str| l.split(':').nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok());
    for l in text.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("> ") {
            // "> NOERROR host1.bench.test A 0.000154"
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                r.latencies.push(v);
            }
        } else if t.starts_with("Queries per second:") {
            r.qps = num(t).unwrap_or(0.0);
        } else if t.starts_with("Queries completed:") {
            r.completed = num(t).unwrap_or(0.0) as u64;
        } else if t.starts_with("Queries lost:") {
            r.lost = num(t).unwrap_or(0.0) as u64;
        } else if t.starts_with("Average Latency (s):") {
            r.avg_latency = num(t).unwrap_or(0.0);
        }
    }
    r
}

/// Counters of one flood: every packet that reached a socket hook.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flood {
    /// Queries sent by the client (socket egress events).
    pub(crate) sent: u64,
    /// Queries the sink read.
    pub(crate) sink_received: u64,
    /// Queries dropped at the sink's full socket buffer (their ingress hook ran).
    pub(crate) sink_rcvbuf_drops: u64,
    /// Responses the sink sent (egress events).
    pub(crate) replies_sent: u64,
    /// Responses the client read.
    pub(crate) client_received: u64,
    /// Responses dropped at the client's full socket buffer.
    pub(crate) client_rcvbuf_drops: u64,
    /// Wall seconds of sending.
    pub(crate) secs: f64,
    /// CPU seconds of the client thread and the sink thread.
    pub(crate) cpu: f64,
}

impl Flood {
    /// Socket-hook invocations this flood caused (each one a ring-buffer event
    /// when the port is traced).
    pub(crate) fn hook_events(&self) -> u64 {
        self.sent
            + self.sink_received
            + self.sink_rcvbuf_drops
            + self.replies_sent
            + self.client_received
            + self.client_rcvbuf_drops
    }

    /// DNS messages that left a socket (queries + responses).
    pub(crate) fn messages(&self) -> u64 {
        self.sent + self.replies_sent
    }
}

/// A DNS query for `host<i>.bench.test A`.
fn query(i: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&((i & 0xffff) as u16).to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let host = format!("host{}", i % 200);
    for l in [host.as_str(), "bench", "test"] {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// Sends UDP from [`CLI_NS`] to `port` on the server, `rate` packets/s
/// (None: as fast as possible), for `secs` seconds or `max_packets` packets.
/// With `echo`, a sink in [`SRV_NS`] answers each as a DNS response (QR set);
/// without, the sink just reads. With `sink` false nothing listens (every
/// packet is dropped by the kernel: `NO_SOCKET`).
pub(crate) fn flood(
    port: u16,
    rate: Option<u64>,
    secs: f64,
    max_packets: u64,
    echo: bool,
    sink: bool,
) -> Result<Flood> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let sink_thread = sink.then(|| {
        let stop = Arc::clone(&stop);
        thread::spawn(move || -> Result<(u64, u64, u64, f64)> {
            let setup = (|| -> Result<UdpSocket> {
                sys::enter_netns(SRV_NS)?;
                sys::pin_thread(CPU_SERVER);
                let s = UdpSocket::bind(SocketAddrV4::new(SRV_IP, port)).context("binding the sink")?;
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(s)
            })();
            let s = match setup {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let drops0 = sys::udp_rcvbuf_errors();
            let cpu0 = sys::thread_cpu().unwrap_or(0.0);
            let (mut got, mut replied) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            // Bounded: the sender stops by count or time, then sets `stop`;
            // the socket is drained until a read times out.
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        got += 1;
                        if echo && n >= 12 {
                            buf[2] |= 0x80;
                            if s.send_to(&buf[..n], from).is_ok() {
                                replied += 1;
                            }
                        }
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            let cpu = sys::thread_cpu().unwrap_or(0.0) - cpu0;
            Ok((got, replied, sys::udp_rcvbuf_errors().saturating_sub(drops0), cpu))
        })
    });
    if sink_thread.is_some() {
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the flood sink did not start"),
        }
    }
    let client = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || -> Result<(u64, u64, u64, f64, f64)> {
            sys::enter_netns(CLI_NS)?;
            sys::pin_thread(CPU_LOAD);
            let s = UdpSocket::bind(SocketAddrV4::new(sys::CLI_IP, 0)).context("binding the flood client")?;
            s.set_nonblocking(true)?;
            let to = SocketAddrV4::new(SRV_IP, port);
            let drops0 = sys::udp_rcvbuf_errors();
            let cpu0 = sys::thread_cpu().unwrap_or(0.0);
            let msgs: Vec<Vec<u8>> = (0..256).map(query).collect();
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs);
            let (mut sent, mut got) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            while sent < max_packets {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if let Some(r) = rate {
                    // Pace in small bursts: sleep until the schedule catches up.
                    let due = (now - start).as_secs_f64() * r as f64;
                    if sent as f64 >= due {
                        thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                }
                let m = &msgs[(sent % 256) as usize];
                match s.send_to(m, to) {
                    Ok(_) => sent += 1,
                    // ENOBUFS / EAGAIN: the queue is full, try again.
                    Err(_) => thread::yield_now(),
                }
                while s.recv_from(&mut buf).is_ok() {
                    got += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            // Late responses still count: read for a moment after the last send.
            let tail = Instant::now() + Duration::from_millis(300);
            while Instant::now() < tail {
                match s.recv_from(&mut buf) {
                    Ok(_) => got += 1,
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            let cpu = sys::thread_cpu().unwrap_or(0.0) - cpu0;
            stop.store(true, Ordering::Relaxed);
            Ok((sent, got, sys::udp_rcvbuf_errors().saturating_sub(drops0), secs, cpu))
        })
    };
    let c = client.join();
    stop.store(true, Ordering::Relaxed);
    let (sent, client_received, client_rcvbuf_drops, secs, ccpu) =
        c.map_err(|_| anyhow::anyhow!("flood client panicked"))??;
    let (sink_received, replies_sent, sink_rcvbuf_drops, scpu) = match sink_thread {
        Some(t) => t.join().map_err(|_| anyhow::anyhow!("flood sink panicked"))??,
        None => (0, 0, 0, 0.0),
    };
    Ok(Flood {
        sent,
        sink_received,
        sink_rcvbuf_drops,
        replies_sent,
        client_received,
        client_rcvbuf_drops,
        secs,
        cpu: ccpu + scpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsperf_output() {
        let t = "[Status] Sending queries\n> NOERROR host1.bench.test A 0.000154\n> NOERROR host2.bench.test A 0.000079\n\
                 Statistics:\n\n  Queries sent:         3000\n  Queries completed:    2990 (99.67%)\n  Queries lost:         10 (0.33%)\n\
                 Queries per second:   2994.011976\n  Average Latency (s):  0.000110 (min 0.000037, max 0.000573)\n";
        let r = parse_dnsperf(t);
        assert_eq!(r.completed, 2990);
        assert_eq!(r.lost, 10);
        assert!((r.qps - 2_994.011_976).abs() < 1e-6);
        assert!((r.avg_latency - 0.000_11).abs() < 1e-9);
        assert_eq!(r.latencies, vec![0.000_154, 0.000_079]);
    }

    #[test]
    fn queries_are_dns() {
        let q = query(5);
        assert_eq!(&q[..2], &[0, 5]);
        assert_eq!(q.len(), 12 + 1 + 5 + 1 + 5 + 1 + 4 + 1 + 4);
    }
}
