//! Reading agents (the agent source): live streams from node agents, merged by time, handed
//! on as the same [`FileEvent`]s replay produces, so `dns` and `drops` run
//! the same analysis on agents as on captures.
//!
//! Each agent's stream is a ktrace capture (pcapng) read incrementally by
//! the ordinary capture reader on its own thread. Agents send a clock
//! heartbeat every 100 ms; a record is released once every connected agent
//! has reported progress past it (minus a small lag for reordering inside
//! the agent), so records from several nodes reach the analysis in time
//! order, as when replaying their captures together. An agent that goes
//! quiet stops holding the others back after [`STALL`]; a lost connection is
//! retried with backoff and resumes from the last time seen.

use std::{
    cmp::{Ordering as CmpOrdering, Reverse},
    collections::BinaryHeap,
    io::Read,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    client::{ClientAuth, Target, connect},
    proto::SubscribeRequest,
};
use crate::{
    event::Record,
    source::{
        Source, SourceEvent,
        file::{CaptureEvents, FileEvent},
    },
};

/// An agent silent this long no longer holds back the others.
pub const STALL: Duration = Duration::from_secs(2);
/// Most records held for ordering; beyond it the oldest go out early.
const MAX_PENDING: usize = 1_000_000;

/// What the agent source hands its consumer.
#[derive(Debug)]
pub enum AgentEvent {
    /// A record or context from an agent's stream (records in time order across agents).
    File(FileEvent),
    /// A finding computed by an agent (`KIND_FINDINGS`).
    Finding {
        /// Agent.
        agent: String,
        /// The finding's JSON.
        json: String,
    },
    /// Every record up to this wall-clock ns has been delivered.
    Tick(u64),
    /// Connection news (connected, lost, retrying), for stderr.
    Notice(String),
}

/// Where and how to read.
#[derive(Clone, Debug)]
pub struct AgentSourceConfig {
    /// Agents.
    pub targets: Vec<Target>,
    /// Credentials.
    pub auth: ClientAuth,
    /// What to subscribe to.
    pub request: SubscribeRequest,
    /// Stop after this long (default: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Reordering slack below the slowest agent's heartbeat.
    pub lag: Duration,
    /// This process's own hub, read as one more stream (agent-side correlation).
    pub local: Option<(Arc<crate::agent::hub::Hub>, Arc<str>)>,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct AgentSourceStats {
    /// Records delivered.
    pub records: u64,
    /// (Re)connections made.
    pub connections: u64,
    /// Records an agent reported this client missed (slow reader).
    pub subscriber_dropped: u64,
    /// Records released before every agent caught up (ordering not guaranteed for them).
    pub released_early: u64,
    /// Warnings from the stream readers (truncated streams, unknown blocks).
    pub warnings: Vec<String>,
    /// Agents that refused this client for good (wrong token or certificate).
    pub refused: Vec<String>,
}

enum Msg {
    Event(usize, FileEvent),
    Finding(usize, String),
    Connected(usize),
    Ended(usize, String),
    Dropped(u64),
    ReaderDone(Vec<String>),
    /// Refused for good (credentials): not retried.
    GaveUp(usize, String),
}

/// A byte stream fed by the gRPC task, read by the capture reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

struct Pending {
    ts: u64,
    seq: u64,
    rec: Record,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

#[derive(Clone, Copy)]
struct AgentState {
    connected: bool,
    watermark: u64,
    last_progress: Option<Instant>,
    since: Instant,
}

/// A thread reading one stream's bytes as a capture, sending its events on.
fn spawn_reader(
    idx: usize,
    name: &str,
    out: &SyncSender<Msg>,
) -> Result<(tokio::sync::mpsc::Sender<Bytes>, std::thread::JoinHandle<()>), String> {
    let (btx, brx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let out2 = out.clone();
    let reader_name = PathBuf::from(format!("agent {name}"));
    let reader = std::thread::Builder::new()
        .name("ktrace-agent-rd".into())
        .spawn(move || {
            let r = ChannelReader { rx: brx, cur: Bytes::new() };
            match crate::capture::open_reader(&reader_name, r) {
                Ok(rd) => {
                    let mut evs = CaptureEvents::new(reader_name, rd);
                    for ev in evs.by_ref() {
                        if out2.send(Msg::Event(idx, ev)).is_err() {
                            break;
                        }
                    }
                    let _ = out2.send(Msg::ReaderDone(std::mem::take(&mut evs.warnings)));
                }
                Err(e) => {
                    // The error already names the stream.
                    let _ = out2.send(Msg::ReaderDone(vec![e.to_string()]));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok((btx, reader))
}

/// This process's own hub as one of the streams (an agent correlating its
/// node with its peers): the same bytes a subscriber would get, without a socket.
async fn local_connection(
    idx: usize,
    hub: Arc<crate::agent::hub::Hub>,
    node: Arc<str>,
    req: SubscribeRequest,
    out: SyncSender<Msg>,
    stop: Arc<AtomicBool>,
) {
    use crate::agent::stream::{Kinds, Spec, pump};
    let Ok((btx, reader)) = spawn_reader(idx, "local", &out) else { return };
    let _ = out.send(Msg::Connected(idx));
    let spec = Spec {
        kinds: Kinds::from_request(&req.kinds),
        scope: crate::pipeline::Filter::default(),
        since_ns: req.since_unix_ns,
        history_only: false,
        heartbeat_every: 1,
    };
    let (ctx, mut crx) = tokio::sync::mpsc::channel(16);
    let pumping = tokio::spawn(pump(hub, spec, node, || 0, ctx));
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), crx.recv()).await {
            Err(_) => {}
            Ok(None) => break,
            Ok(Some(c)) => {
                if !c.pcapng.is_empty() && btx.send(Bytes::from(c.pcapng)).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(crx);
    pumping.abort();
    drop(btx);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
}

/// One connection's life: subscribe, pipe bytes to a reader thread, forward findings.
async fn connection(
    idx: usize,
    target: Target,
    auth: ClientAuth,
    mut req: SubscribeRequest,
    out: SyncSender<Msg>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    let name = target.to_string();
    while !stop.load(Ordering::Relaxed) {
        let r = async {
            let mut client = connect(&target, &auth).await.map_err(|e| (e.to_string(), false))?;
            let mut stream = match client.subscribe(req.clone()).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let fatal = matches!(e.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied);
                    return Err((e.message().to_owned(), fatal));
                }
            };
            let _ = out.send(Msg::Connected(idx));
            let (btx, reader) = spawn_reader(idx, &name, &out).map_err(|e| (e, false))?;
            let mut got_any = false;
            let res = loop {
                if stop.load(Ordering::Relaxed) {
                    break Ok(());
                }
                let m = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
                let m = match m {
                    Err(_) => continue,
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => break Err("stream ended".to_owned()),
                    Ok(Err(e)) => break Err(e.message().to_owned()),
                };
                got_any = true;
                if !m.pcapng.is_empty() && btx.send(Bytes::from(m.pcapng)).await.is_err() {
                    break Err("reader stopped".to_owned());
                }
                for f in m.findings {
                    let _ = out.send(Msg::Finding(idx, f.json));
                }
                if let Some(p) = m.progress {
                    if p.watermark_unix_ns > 0 {
                        // A reconnect resumes where this one got to.
                        req.since_unix_ns = p.watermark_unix_ns;
                    }
                    if p.subscriber_dropped > 0 {
                        let _ = out.send(Msg::Dropped(p.subscriber_dropped));
                    }
                }
            };
            drop(btx);
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
            let res = if got_any { res } else { res.and(Err("no data".to_owned())) };
            res.map_err(|e| (e, false))
        }
        .await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let why = match r {
            Ok(()) => "closed".to_owned(),
            Err((e, true)) => {
                let _ = out.send(Msg::GaveUp(idx, e));
                break;
            }
            Err((e, false)) => e,
        };
        let _ = out.send(Msg::Ended(idx, why));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The agents as a [`Source`]: records merged by time, a tick whenever every
/// agent has reported progress, snapshots and coverage as context.
#[derive(Debug)]
pub struct AgentSource {
    /// Where and how to read.
    pub cfg: AgentSourceConfig,
}

impl AgentSource {
    /// [`run`], then the checks every command makes: fails when every agent
    /// refused this client; returns the warnings to show.
    ///
    /// # Errors
    /// No agents, a runtime that cannot start, or every agent refusing.
    pub fn run_events(&mut self, on: impl FnMut(AgentEvent) -> bool) -> anyhow::Result<Vec<String>> {
        let st = run(&self.cfg, on)?;
        anyhow::ensure!(
            st.refused.len() < self.cfg.targets.len(),
            "every agent refused this client: {}",
            st.refused.join("; ")
        );
        let mut warnings = st.warnings;
        if st.subscriber_dropped > 0 {
            warnings.push(format!("{} records missed: this client read too slowly", st.subscriber_dropped));
        }
        Ok(warnings)
    }
}

impl Source for AgentSource {
    fn run(&mut self, on: &mut dyn FnMut(SourceEvent) -> bool) -> anyhow::Result<Vec<String>> {
        self.run_events(|ev| {
            on(match ev {
                AgentEvent::File(f) => f.into(),
                AgentEvent::Finding { agent, json } => SourceEvent::AgentFinding { agent, json },
                AgentEvent::Tick(t) => SourceEvent::Tick(t),
                AgentEvent::Notice(n) => SourceEvent::Notice(n),
            })
        })
    }
}

/// Streams from the agents until `duration`, Ctrl-C, `stop`, or `on` returns false.
pub fn run(cfg: &AgentSourceConfig, on: impl FnMut(AgentEvent) -> bool) -> anyhow::Result<AgentSourceStats> {
    run_until(cfg, &Arc::new(AtomicBool::new(false)), on)
}

/// [`run`], also stopping when `stop_when` becomes true.
pub fn run_until(
    cfg: &AgentSourceConfig,
    stop_when: &Arc<AtomicBool>,
    mut on: impl FnMut(AgentEvent) -> bool,
) -> anyhow::Result<AgentSourceStats> {
    anyhow::ensure!(!cfg.targets.is_empty() || cfg.local.is_some(), "no agents to read from");
    let stop = Arc::clone(stop_when);
    let (tx, rx) = sync_channel::<Msg>(8192);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    for (i, t) in cfg.targets.iter().enumerate() {
        rt.spawn(connection(i, t.clone(), cfg.auth.clone(), cfg.request.clone(), tx.clone(), Arc::clone(&stop)));
    }
    let mut names: Vec<String> = cfg.targets.iter().map(ToString::to_string).collect();
    if let Some((hub, node)) = &cfg.local {
        let i = names.len();
        names.push(format!("local ({node})"));
        rt.spawn(local_connection(
            i,
            Arc::clone(hub),
            Arc::clone(node),
            cfg.request.clone(),
            tx.clone(),
            Arc::clone(&stop),
        ));
    }
    {
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut i), Ok(mut t)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
            stop.store(true, Ordering::Relaxed);
        });
    }
    drop(tx);
    let deadline = cfg.duration.map(|d| Instant::now() + d);
    let stats = merge(&rx, &names, cfg.lag, deadline, &stop, &mut on);
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(stats)
}

fn merge(
    rx: &Receiver<Msg>,
    names: &[String],
    lag: Duration,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    on: &mut impl FnMut(AgentEvent) -> bool,
) -> AgentSourceStats {
    let now = Instant::now();
    let mut st = vec![AgentState { connected: false, watermark: 0, last_progress: None, since: now }; names.len()];
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut stats = AgentSourceStats::default();
    let mut seq = 0u64;
    let mut released = 0u64;
    let lag_ns = lag.as_nanos() as u64;
    'outer: loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => match m {
                Msg::Event(i, FileEvent::Record(r)) => {
                    seq += 1;
                    heap.push(Reverse(Pending { ts: r.ts_ns(), seq, rec: r }));
                    let _ = i;
                }
                Msg::Event(i, ev) => {
                    if let FileEvent::Coverage { to_ns, .. } = &ev {
                        st[i].watermark = st[i].watermark.max(*to_ns);
                        st[i].last_progress = Some(Instant::now());
                    }
                    if !on(AgentEvent::File(ev)) {
                        break;
                    }
                }
                Msg::Finding(i, json) => {
                    if !on(AgentEvent::Finding { agent: names[i].clone(), json }) {
                        break;
                    }
                }
                Msg::Connected(i) => {
                    stats.connections += 1;
                    st[i].connected = true;
                    st[i].since = Instant::now();
                    if !on(AgentEvent::Notice(format!("attached to agent {}", names[i]))) {
                        break;
                    }
                }
                Msg::Ended(i, why) => {
                    st[i].connected = false;
                    if !on(AgentEvent::Notice(format!("agent {}: {why}; retrying", names[i]))) {
                        break;
                    }
                }
                Msg::GaveUp(i, why) => {
                    st[i].connected = false;
                    stats.refused.push(format!("agent {}: {why}", names[i]));
                    if !on(AgentEvent::Notice(format!("agent {}: {why}; not retrying", names[i]))) {
                        break;
                    }
                    if stats.refused.len() == names.len() {
                        break;
                    }
                }
                Msg::Dropped(n) => stats.subscriber_dropped = stats.subscriber_dropped.max(n),
                Msg::ReaderDone(w) => stats.warnings.extend(w),
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Release what every agent that is keeping up has passed.
        let t = Instant::now();
        let holding: Vec<u64> = st
            .iter()
            .filter(|a| {
                a.connected
                    && match a.last_progress {
                        Some(p) => t.duration_since(p) < STALL,
                        None => t.duration_since(a.since) < STALL,
                    }
            })
            .map(|a| if a.last_progress.is_some() { a.watermark } else { 0 })
            .collect();
        let upto = if holding.is_empty() {
            st.iter().map(|a| a.watermark).max().unwrap_or(0)
        } else {
            holding.iter().copied().min().unwrap_or(0)
        }
        .saturating_sub(lag_ns);
        while let Some(Reverse(top)) = heap.peek() {
            let early = heap.len() > MAX_PENDING;
            if top.ts > upto && !early {
                break;
            }
            let Some(Reverse(p)) = heap.pop() else { break };
            stats.released_early += u64::from(early);
            stats.records += 1;
            if !on(AgentEvent::File(FileEvent::Record(p.rec))) {
                break 'outer;
            }
        }
        if upto > released {
            released = upto;
            if !on(AgentEvent::Tick(upto)) {
                break;
            }
        }
    }
    // The end: whatever arrived goes out, in order.
    while let Some(Reverse(p)) = heap.pop() {
        stats.records += 1;
        if !on(AgentEvent::File(FileEvent::Record(p.rec))) {
            break;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(ts: u64) -> Record {
        Record::Lost { ts_ns: ts, count: 1, node: None }
    }

    fn cov(to: u64) -> FileEvent {
        FileEvent::Coverage { node: "n".into(), from_ns: 0, to_ns: to, tc: false }
    }

    #[test]
    fn merges_two_agents_by_watermark() {
        let (tx, rx) = sync_channel(100);
        tx.send(Msg::Connected(0)).unwrap();
        tx.send(Msg::Connected(1)).unwrap();
        tx.send(Msg::Event(0, FileEvent::Record(lost(30)))).unwrap();
        tx.send(Msg::Event(0, cov(40))).unwrap();
        tx.send(Msg::Event(1, FileEvent::Record(lost(10)))).unwrap();
        tx.send(Msg::Event(1, FileEvent::Record(lost(35)))).unwrap();
        tx.send(Msg::Event(1, cov(50))).unwrap();
        drop(tx);
        let mut seen = Vec::new();
        let stop = AtomicBool::new(false);
        let names = vec!["a".to_owned(), "b".to_owned()];
        let st = merge(&rx, &names, Duration::ZERO, None, &stop, &mut |e| {
            if let AgentEvent::File(FileEvent::Record(r)) = e {
                seen.push(r.ts_ns());
            }
            true
        });
        assert_eq!(seen, vec![10, 30, 35]);
        assert_eq!(st.records, 3);
        assert_eq!(st.connections, 2);
    }

    #[test]
    fn channel_reader_concatenates_chunks() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.blocking_send(Bytes::from_static(b"abc")).unwrap();
        tx.blocking_send(Bytes::from_static(b"de")).unwrap();
        drop(tx);
        let mut r = ChannelReader { rx, cur: Bytes::new() };
        let mut s = Vec::new();
        r.read_to_end(&mut s).unwrap();
        assert_eq!(s, b"abcde");
    }
}
