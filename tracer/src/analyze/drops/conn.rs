//! TCP connection failures: a state machine per socket over
//! `inet_sock_set_state`, reset and retransmit events decides how each
//! connection failed ([`ConnFailKind`]); failures are aggregated into
//! [`ConnFail`] rows.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use super::{DropStats, Who, pod_string, who};
use crate::{
    analyze::Detector,
    enrich::{Enricher, PodRef},
    event::{ConnKind, ConnRecord, Endpoint, tcp_state},
    model::drops::{ConnFail, ConnFailKind, ProcessBrief},
};

/// One TCP event of a node, for [`ConnTracker`].
#[derive(Clone, Debug)]
pub struct ConnInput {
    /// Index of the node that observed it.
    pub node: u16,
    /// The event.
    pub rec: ConnRecord,
}

/// One failed connection, as [`ConnTracker`] decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnFailure {
    /// How it failed.
    pub kind: ConnFailKind,
    /// Local endpoint.
    pub src: Endpoint,
    /// Remote endpoint.
    pub dst: Endpoint,
    /// The process that called `connect()`.
    pub process: Option<ProcessBrief>,
    /// Network namespace inode of that process (0 if unknown).
    pub netns: u32,
    /// Index of the observing node.
    pub node: u16,
    /// SYN retransmissions.
    pub syn_retransmits: u32,
    /// When it failed (the connect's start for a pending timeout).
    pub ts_ns: u64,
    /// Still in `SYN_SENT`, with SYN retransmits, when the input ended.
    pub pending: bool,
}

impl ConnFailure {
    fn of(kind: ConnFailKind, s: &Sock, ts_ns: u64, pending: bool) -> Self {
        Self {
            kind,
            src: s.src,
            dst: s.dst,
            process: s.process.clone(),
            netns: s.netns,
            node: s.node,
            syn_retransmits: s.syn_retx,
            ts_ns,
            pending,
        }
    }
}

struct Sock {
    src: Endpoint,
    dst: Endpoint,
    process: Option<ProcessBrief>,
    netns: u32,
    node: u16,
    start_ts: u64,
    state: u8,
    syn_retx: u32,
    reset_in_syn: bool,
    reset_reported: bool,
}

/// The TCP state machine as a [`Detector`]: [`ConnInput`]s in, one
/// [`ConnFailure`] per failed connection out, as soon as it is decided.
pub struct ConnTracker {
    max_sockets: usize,
    socks: HashMap<(u16, u64), Sock>,
    pub(super) socks_q: VecDeque<((u16, u64), u64)>,
    pub(super) stats: DropStats,
}

impl ConnTracker {
    /// Tracks at most `max_sockets` sockets (oldest evicted, counted).
    #[must_use]
    pub fn new(max_sockets: usize) -> Self {
        Self { max_sockets, socks: HashMap::new(), socks_q: VecDeque::new(), stats: DropStats::default() }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> DropStats {
        DropStats { sockets: self.socks.len() as u64, ..self.stats }
    }

    fn sock_insert(&mut self, key: (u16, u64), s: Sock) {
        if !self.socks.contains_key(&key) && self.socks.len() >= self.max_sockets {
            while let Some((k, ts)) = self.socks_q.pop_front() {
                if self.socks.get(&k).is_some_and(|s| s.start_ts == ts) {
                    self.socks.remove(&k);
                    self.stats.sockets_evicted += 1;
                    break;
                }
            }
        }
        self.socks_q.push_back((key, s.start_ts));
        self.socks.insert(key, s);
        if self.socks_q.len() > self.max_sockets.saturating_mul(2) {
            let socks = &self.socks;
            self.socks_q.retain(|(k, ts)| socks.get(k).is_some_and(|s| s.start_ts == *ts));
        }
    }

    fn new_sock(c: &ConnRecord, node: u16, state: u8) -> Sock {
        Sock {
            src: c.src,
            dst: c.dst,
            process: c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.to_string() }),
            netns: c.netns_ino,
            node,
            start_ts: c.ts_ns,
            state,
            syn_retx: 0,
            reset_in_syn: false,
            reset_reported: false,
        }
    }

    /// The tracked socket, created in `state` when the capture missed its start.
    fn sock_mut(&mut self, c: &ConnRecord, node: u16, state: u8) -> Option<&mut Sock> {
        let key = (node, c.sock);
        if !self.socks.contains_key(&key) {
            self.sock_insert(key, Self::new_sock(c, node, state));
        }
        let s = self.socks.get_mut(&key)?;
        // connect() reports SYN_SENT before the source port is chosen.
        if s.src.port == 0 && c.src.port != 0 {
            s.src = c.src;
        }
        if s.process.is_none() {
            s.process = c.process.as_ref().map(|p| ProcessBrief { pid: p.pid, comm: p.comm.to_string() });
        }
        if s.netns == 0 {
            s.netns = c.netns_ino;
        }
        Some(s)
    }

    fn conn(&mut self, c: &ConnRecord, node: u16, out: &mut Vec<ConnFailure>) {
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        self.stats.conn_events += 1;
        let key = (node, c.sock);
        match c.kind {
            ConnKind::State { old: CLOSE, new: SYN_SENT } => {
                self.sock_insert(key, Self::new_sock(c, node, SYN_SENT));
            }
            ConnKind::State { old, new: CLOSE } => {
                if let Some(s) = self.socks.remove(&key)
                    && old == SYN_SENT
                {
                    if s.reset_in_syn {
                        out.push(ConnFailure::of(ConnFailKind::Refused, &s, c.ts_ns, false));
                    } else if s.syn_retx > 0 {
                        out.push(ConnFailure::of(ConnFailKind::Timeout, &s, c.ts_ns, false));
                    } else {
                        self.stats.connects_aborted += 1;
                    }
                }
            }
            ConnKind::State { new, .. } => {
                if let Some(s) = self.socks.get_mut(&key) {
                    s.state = new;
                }
            }
            ConnKind::ResetReceived { state: SYN_SENT } => {
                if let Some(s) = self.sock_mut(c, node, SYN_SENT) {
                    s.reset_in_syn = true;
                }
            }
            ConnKind::ResetReceived { state: ESTABLISHED } => {
                let s = match self.socks.get_mut(&key) {
                    Some(s) if s.reset_reported => return,
                    Some(s) => {
                        s.reset_reported = true;
                        Sock { process: s.process.clone(), ..Self::new_sock(c, node, ESTABLISHED) }
                    }
                    None => Self::new_sock(c, node, ESTABLISHED),
                };
                out.push(ConnFailure::of(ConnFailKind::Reset, &s, c.ts_ns, false));
            }
            ConnKind::Retransmit { state: SYN_SENT } => {
                if let Some(s) = self.sock_mut(c, node, SYN_SENT) {
                    s.syn_retx = s.syn_retx.saturating_add(1);
                }
            }
            ConnKind::ResetReceived { .. } | ConnKind::ResetSent { .. } | ConnKind::Retransmit { .. } => {}
        }
    }
}

impl Detector for ConnTracker {
    type Input = ConnInput;
    type Output = ConnFailure;

    fn push(&mut self, input: ConnInput, out: &mut Vec<ConnFailure>) {
        self.conn(&input.rec, input.node, out);
    }

    fn expire(&mut self, _now_ns: u64, _out: &mut Vec<ConnFailure>) {}

    /// Connects still in `SYN_SENT` with SYN retransmits are pending timeouts.
    fn finish(&mut self, out: &mut Vec<ConnFailure>) {
        let socks: Vec<Sock> = self.socks.drain().map(|(_, s)| s).collect();
        self.socks_q.clear();
        for s in socks {
            if s.state == tcp_state::SYN_SENT && s.syn_retx > 0 {
                out.push(ConnFailure::of(ConnFailKind::Timeout, &s, s.start_ts, true));
            }
        }
    }
}

#[derive(Hash, PartialEq, Eq)]
struct ConnKey {
    kind: ConnFailKind,
    src: Who,
    dst: Endpoint,
    comm: Option<String>,
    pending: bool,
}

struct ConnAgg {
    src: IpAddr,
    dst_pod: Option<PodRef>,
    process: Option<ProcessBrief>,
    count: u64,
    syn_retx: u64,
    node: u16,
    first_ts: u64,
    last_ts: u64,
}

/// Failed connections aggregated by (kind, source pod or address,
/// destination, process name).
pub struct ConnRows {
    enr: Enricher,
    max_rows: usize,
    conns: HashMap<ConnKey, ConnAgg>,
    pub(super) stats: DropStats,
}

impl ConnRows {
    /// At most `max_rows` rows (new keys beyond are counted, not kept).
    #[must_use]
    pub fn new(max_rows: usize, enr: Enricher) -> Self {
        Self { enr, max_rows, conns: HashMap::new(), stats: DropStats::default() }
    }

    /// Adds one failed connection.
    pub fn push(&mut self, f: ConnFailure) {
        let enr = &self.enr;
        let (kind, ts, pending) = (f.kind, f.ts_ns, f.pending);
        let src = enr.pod_by_netns(f.netns).map_or_else(|| who(enr, Some(f.src.ip)), Who::Pod);
        let key = ConnKey { kind, src, dst: f.dst, comm: f.process.as_ref().map(|p| p.comm.clone()), pending };
        let len = self.conns.len();
        match self.conns.get_mut(&key) {
            Some(a) => {
                a.count += 1;
                a.syn_retx += u64::from(f.syn_retransmits);
                a.first_ts = a.first_ts.min(ts);
                a.last_ts = a.last_ts.max(ts);
            }
            None if len < self.max_rows => {
                self.conns.insert(
                    key,
                    ConnAgg {
                        src: f.src.ip,
                        dst_pod: enr.pod_by_ip(&f.dst.ip),
                        process: f.process,
                        count: 1,
                        syn_retx: u64::from(f.syn_retransmits),
                        node: f.node,
                        first_ts: ts,
                        last_ts: ts,
                    },
                );
            }
            None => self.stats.rows_dropped += 1,
        }
    }

    /// The rows, most frequent first (taken out); `name`: a node's name by index.
    pub(super) fn rows(&mut self, name: impl Fn(u16) -> Option<Arc<str>>, out: &mut Vec<ConnFail>) {
        let conns: Vec<(ConnKey, ConnAgg)> = self.conns.drain().collect();
        let start = out.len();
        out.extend(conns.into_iter().map(|(k, a)| ConnFail {
            kind: k.kind,
            src: a.src,
            dst: k.dst,
            src_pod: pod_string(&k.src),
            dst_pod: a.dst_pod.map(|p| p.to_string()),
            process: a.process,
            count: a.count,
            syn_retransmits: a.syn_retx,
            node: name(a.node),
            first_ts_ns: a.first_ts,
            last_ts_ns: a.last_ts,
            pending: k.pending,
        }));
        out[start..].sort_by(|a, b| b.count.cmp(&a.count).then(a.first_ts_ns.cmp(&b.first_ts_ns)));
    }
}
