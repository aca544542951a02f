//! Pairs queries with responses into [`Transaction`]s.
//!
//! A DNS message can be seen at up to two points on one node: leaving the
//! sender's socket and reaching the receiver's. The side a sighting belongs to
//! follows from the hook and the QR bit:
//!
//! | message  | socket egress | socket ingress |
//! |----------|---------------|----------------|
//! | query    | client side   | server side    |
//! | response | server side   | client side    |
//!
//! Sightings are keyed by (client, server, transport, id, qname, qtype) so the
//! client's and the server's view of one exchange merge into one transaction.
//! Wire (foreign pcap) and tc sightings pair by key alone.

use std::collections::VecDeque;

use crate::hash::FastMap;

use crate::{
    decode::{DnsEvent, dns::Answer},
    event::{Endpoint, Hook, Transport},
};

use super::{Observed, Transaction};

/// How long a completed exchange is remembered to recognise duplicate answers.
const RECENT_WINDOW_NS: u64 = 1_000_000_000;
/// Most completed exchanges remembered for duplicate detection.
const MAX_RECENT: usize = 4096;

/// Pairing configuration.
#[derive(Clone, Copy, Debug)]
pub struct PairConfig {
    /// A query unanswered this long is reported as timed out.
    pub timeout_ns: u64,
    /// Most queries waiting at once; the oldest is evicted (and counted) beyond.
    pub max_inflight: usize,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self { timeout_ns: 10_000_000_000, max_inflight: 65_536 }
    }
}

/// Pairing counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PairStats {
    /// Queries evicted from the full in-flight table (reported as timed out).
    pub evicted: u64,
    /// Responses that matched no query.
    pub unmatched_responses: u64,
    /// Answers seen again shortly after their exchange completed.
    pub duplicate_answers: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    client: Endpoint,
    server: Endpoint,
    transport: Transport,
    id: u16,
    /// Hash of the name in lower case: resolvers randomise the case of
    /// queries (0x20) and servers echo it, but a sloppy one may not. A hash,
    /// not the name: the key sits in the pending map, the expiry order and
    /// the recent-answers window, and a shared string there cost an
    /// allocation, refcounts and compares per message (~8 % of live CPU).
    /// Two names of one client, server, id and type colliding in 64 bits
    /// (seeded per run) is not a practical concern.
    qname: u64,
    qtype: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
    /// Direction unknown (pcap, tc): pair by key alone.
    Wire,
}

#[derive(Debug)]
struct ServerAnswer {
    rcode: u16,
    answers: Vec<Answer>,
}

#[derive(Debug)]
struct Pending {
    tx: Transaction,
    order: (u64, u64),
    client_query_ns: Option<u64>,
    server_query_ns: Option<u64>,
    server_answer: Option<ServerAnswer>,
}

#[derive(Clone, Copy, Debug)]
struct Recent {
    ts_ns: u64,
    observed: Observed,
}

/// Query/response pairing state.
#[derive(Debug, Default)]
pub struct Pairer {
    cfg: PairConfig,
    stats: PairStats,
    pending: FastMap<Key, Pending>,
    /// (first seen, sequence, key), oldest first, for expiry and eviction.
    /// Answered queries are not removed here (that was a B-tree delete per
    /// answer): an entry counts only while `pending` holds the same order.
    order: VecDeque<((u64, u64), Key)>,
    seq: u64,
    recent: FastMap<Key, Recent>,
    recent_order: VecDeque<(u64, Key)>,
    /// Seed of the name hashes in keys (random per run: names come from the network).
    names: foldhash::fast::RandomState,
}

impl Pairer {
    /// Empty pairing table.
    #[must_use]
    pub fn new(cfg: PairConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    /// Feeds one message; completed transactions are appended to `out`.
    pub fn push(&mut self, ev: &DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        self.prune_recent(ts);
        let side = match (ev.rec.hook, ev.msg.is_response) {
            (Hook::SocketEgress, false) | (Hook::SocketIngress, true) => Side::Client,
            (Hook::SocketIngress, false) | (Hook::SocketEgress, true) => Side::Server,
            (Hook::Wire | Hook::TcEgress | Hook::TcIngress, _) => Side::Wire,
        };
        let (client, server) = if ev.msg.is_response { (ev.dst, ev.src) } else { (ev.src, ev.dst) };
        let key = Key {
            client,
            server,
            transport: ev.transport,
            id: ev.msg.id,
            qname: name_hash(&self.names, &ev.msg.qname),
            qtype: ev.msg.qtype,
        };
        if ev.msg.is_response {
            self.response(key, side, ev, out);
        } else {
            self.query(key, side, ev, out);
        }
    }

    fn query(&mut self, key: Key, side: Side, ev: &DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        if let Some(p) = self.pending.get_mut(&key) {
            match side {
                Side::Client => {
                    if p.client_query_ns.is_some() {
                        p.tx.retransmits = p.tx.retransmits.saturating_add(1);
                    } else {
                        // The server's sighting came first (clock skew between
                        // hooks): the client's view takes over.
                        p.client_query_ns = Some(ts);
                        p.tx.ts_ns = p.tx.ts_ns.min(ts);
                        fill_client(&mut p.tx, ev);
                        p.tx.observed = Observed::Both;
                    }
                }
                Side::Server => {
                    if p.server_query_ns.is_some() {
                        // A client retransmit was already counted at the client.
                        if p.client_query_ns.is_none() {
                            p.tx.retransmits = p.tx.retransmits.saturating_add(1);
                        }
                    } else {
                        p.server_query_ns = Some(ts);
                        if p.tx.server_pod.is_none() {
                            p.tx.server_pod.clone_from(&ev.dst_pod);
                        }
                        p.tx.observed = Observed::Both;
                    }
                }
                Side::Wire => p.tx.retransmits = p.tx.retransmits.saturating_add(1),
            }
            return;
        }
        // A new exchange re-using a key that completed moments ago is not a duplicate.
        self.recent.remove(&key);
        if self.pending.len() >= self.cfg.max_inflight.max(1) {
            self.evict_oldest(out);
        }
        let mut tx = Transaction {
            ts_ns: ts,
            end_ns: None,
            node: ev.rec.node.clone(),
            netns: 0,
            cgroup_id: 0,
            process: None,
            server_process: None,
            client: key.client,
            server: key.server,
            client_pod: ev.src_pod.clone(),
            server_pod: ev.dst_pod.clone(),
            transport: ev.transport,
            id: ev.msg.id,
            qname: ev.msg.qname.clone(),
            qtype: ev.msg.qtype,
            rcode: None,
            answers: Vec::new(),
            latency_ns: None,
            timed_out: false,
            retransmits: 0,
            duplicate_answers: 0,
            observed: match side {
                Side::Client => Observed::Client,
                Side::Server => Observed::Server,
                Side::Wire => Observed::Wire,
            },
        };
        let (mut client_query_ns, mut server_query_ns) = (None, None);
        match side {
            Side::Client => {
                fill_client(&mut tx, ev);
                client_query_ns = Some(ts);
            }
            Side::Server => server_query_ns = Some(ts),
            Side::Wire => {
                // A pcap taken inside the client's namespace: whatever we know.
                tx.netns = ev.rec.netns_ino;
                tx.cgroup_id = ev.rec.cgroup_id;
                client_query_ns = Some(ts);
            }
        }
        self.seq = self.seq.wrapping_add(1);
        let order = (ts, self.seq);
        self.order.push_back((order, key));
        self.pending.insert(key, Pending { tx, order, client_query_ns, server_query_ns, server_answer: None });
        // Answered entries linger until their timeout passes; keep them from
        // outnumbering the live ones (amortised O(1) per query).
        if self.order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.order.retain(|(o, k)| pending.get(k).is_some_and(|p| p.order == *o));
        }
    }

    fn response(&mut self, key: Key, side: Side, ev: &DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        let Some(p) = self.pending.get_mut(&key) else {
            match self.recent.get(&key) {
                // A Both exchange completes at the client; the server's copy of a
                // later duplicate is the same duplicate, seen earlier: count once.
                Some(r) if side == Side::Server && r.observed == Observed::Both => {}
                Some(_) => self.stats.duplicate_answers += 1,
                None => self.stats.unmatched_responses += 1,
            }
            return;
        };
        let complete = match side {
            Side::Client | Side::Wire => {
                let start = p.client_query_ns.unwrap_or(p.tx.ts_ns);
                p.tx.latency_ns = Some(ts.saturating_sub(start));
                true
            }
            Side::Server => {
                if p.server_answer.is_some() {
                    p.tx.duplicate_answers = p.tx.duplicate_answers.saturating_add(1);
                    return;
                }
                p.server_answer = Some(ServerAnswer { rcode: ev.msg.rcode, answers: ev.msg.answers.clone() });
                if let Some(proc_) = &ev.rec.process {
                    p.tx.server_process = Some(proc_.clone());
                }
                if p.tx.server_pod.is_none() {
                    p.tx.server_pod.clone_from(&ev.src_pod);
                }
                if p.client_query_ns.is_some() {
                    // The client's socket is on this node: its view of the answer
                    // (and its latency) is the one that matters; wait for it.
                    p.tx.observed = Observed::Both;
                    false
                } else {
                    let start = p.server_query_ns.unwrap_or(p.tx.ts_ns);
                    p.tx.latency_ns = Some(ts.saturating_sub(start));
                    true
                }
            }
        };
        if !complete {
            return;
        }
        let Some(p) = self.pending.remove(&key) else { return };
        let mut tx = p.tx;
        tx.end_ns = Some(ts);
        tx.rcode = Some(ev.msg.rcode);
        tx.answers.clone_from(&ev.msg.answers);
        self.remember(key, ts, tx.observed);
        out.push(tx);
    }

    fn remember(&mut self, key: Key, ts: u64, observed: Observed) {
        while self.recent_order.len() >= MAX_RECENT {
            self.pop_recent();
        }
        self.recent_order.push_back((ts, key));
        self.recent.insert(key, Recent { ts_ns: ts, observed });
    }

    fn pop_recent(&mut self) {
        if let Some((ts, key)) = self.recent_order.pop_front()
            && self.recent.get(&key).is_some_and(|r| r.ts_ns == ts)
        {
            self.recent.remove(&key);
        }
    }

    fn prune_recent(&mut self, now: u64) {
        while self.recent_order.front().is_some_and(|(ts, _)| ts.saturating_add(RECENT_WINDOW_NS) < now) {
            self.pop_recent();
        }
    }

    /// Takes the pending query `key` if `order` is still its entry (not
    /// answered, not replaced by a later query with the same key).
    fn take_current(&mut self, order: (u64, u64), key: &Key) -> Option<Pending> {
        if self.pending.get(key).is_some_and(|p| p.order == order) { self.pending.remove(key) } else { None }
    }

    fn evict_oldest(&mut self, out: &mut Vec<Transaction>) {
        while let Some((order, key)) = self.order.pop_front() {
            if let Some(p) = self.take_current(order, &key) {
                self.stats.evicted += 1;
                out.push(timed_out(p));
                return;
            }
        }
    }

    /// Reports queries older than the timeout at `now_ns` as timed out.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        self.prune_recent(now_ns);
        while let Some(((ts, _), _)) = self.order.front() {
            if ts.saturating_add(self.cfg.timeout_ns) > now_ns {
                break;
            }
            let Some((order, key)) = self.order.pop_front() else { break };
            if let Some(p) = self.take_current(order, &key) {
                out.push(timed_out(p));
            }
        }
    }

    /// End of input: every query still waiting is reported as unanswered.
    pub fn finish(&mut self, out: &mut Vec<Transaction>) {
        while let Some((order, key)) = self.order.pop_front() {
            if let Some(p) = self.take_current(order, &key) {
                out.push(timed_out(p));
            }
        }
        self.recent.clear();
        self.recent_order.clear();
    }

    /// Queries waiting for an answer.
    #[must_use]
    pub fn inflight(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> PairStats {
        self.stats
    }
}

/// The client-side facts only the client's egress sighting carries.
fn fill_client(tx: &mut Transaction, ev: &DnsEvent) {
    tx.process.clone_from(&ev.rec.process);
    tx.netns = ev.rec.netns_ino;
    tx.cgroup_id = ev.rec.cgroup_id;
    if ev.rec.node.is_some() {
        tx.node.clone_from(&ev.rec.node);
    }
    if ev.src_pod.is_some() {
        tx.client_pod.clone_from(&ev.src_pod);
    }
}

fn timed_out(p: Pending) -> Transaction {
    let mut tx = p.tx;
    tx.timed_out = true;
    tx.latency_ns = None;
    tx.end_ns = None;
    // The server answered but the answer never reached the client's socket
    // (dropped on the way, or the client gave up and closed it): the client
    // experienced a timeout, and the rcode shows what it would have received.
    if let Some(sa) = p.server_answer {
        tx.rcode = Some(sa.rcode);
        tx.answers = sa.answers;
    }
    tx
}

/// Constructors of synthetic events and transactions for tests in `analyze`.
#[cfg(test)]
pub(crate) mod test_util {
    use std::{net::IpAddr, sync::Arc};

    use bytes::Bytes;

    use crate::{
        analyze::{Observed, Transaction},
        decode::{DnsEvent, DnsMessage, dns::Answer},
        enrich::PodRef,
        event::{Endpoint, Hook, PacketRecord, Process, Transport},
    };

    pub(crate) const MS: u64 = 1_000_000;

    pub(crate) fn ep(s: &str) -> Endpoint {
        let (ip, port) = s.rsplit_once(':').unwrap();
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port: port.parse().unwrap() }
    }

    pub(crate) fn pod(ns: &str, name: &str) -> PodRef {
        PodRef { namespace: Arc::from(ns), name: Arc::from(name), node: None }
    }

    pub(crate) fn process(pid: u32, comm: &str) -> Process {
        Process { pid, tid: pid, comm: comm.into(), thread: comm.into() }
    }

    pub(crate) fn answer_a(name: &str) -> Answer {
        Answer { name: name.to_owned(), rtype: "A".to_owned(), ttl: 30, data: "10.0.0.7".into() }
    }

    /// One DNS message seen at `hook`, from `src` to `dst`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn event(
        ts_ns: u64,
        hook: Hook,
        src: &str,
        dst: &str,
        id: u16,
        qname: &str,
        qtype: u16,
        response: Option<(u16, usize)>,
    ) -> DnsEvent {
        let (is_response, rcode, n) = response.map_or((false, 0, 0), |(r, n)| (true, r, n));
        let answers = (0..n).map(|_| answer_a(qname)).collect::<Vec<_>>();
        DnsEvent {
            rec: Arc::new(PacketRecord::bare(ts_ns, hook, Bytes::new())),
            src: ep(src),
            dst: ep(dst),
            transport: Transport::Udp,
            msg: DnsMessage {
                id,
                is_response,
                opcode: 0,
                rcode,
                truncated: false,
                recursion_desired: true,
                qname: qname.to_owned(),
                qtype,
                ancount: answers.len() as u16,
                answers,
            },
            partial: false,
            src_pod: None,
            dst_pod: None,
        }
    }

    /// Sets the record's process, netns and cgroup.
    pub(crate) fn with_proc(mut ev: DnsEvent, p: Process, netns: u32) -> DnsEvent {
        let rec = Arc::make_mut(&mut ev.rec);
        rec.process = Some(p);
        rec.netns_ino = netns;
        rec.cgroup_id = u64::from(netns) + 1000;
        ev
    }

    /// A finished client-side transaction (as the pairer emits it).
    pub(crate) fn tx(
        ts_ns: u64,
        client: &str,
        server: &str,
        qname: &str,
        qtype: u16,
        outcome: Option<(u16, u64, usize)>,
    ) -> Transaction {
        let (rcode, end, latency, answers) = match outcome {
            Some((rcode, lat, n)) => {
                (Some(rcode), Some(ts_ns + lat), Some(lat), (0..n).map(|_| answer_a(qname)).collect())
            }
            None => (None, None, None, Vec::new()),
        };
        Transaction {
            ts_ns,
            end_ns: end,
            node: None,
            netns: 4_026_532_000,
            cgroup_id: 7,
            process: Some(process(4242, "getent")),
            server_process: None,
            client: ep(client),
            server: ep(server),
            client_pod: Some(pod("critical-app", "client")),
            server_pod: None,
            transport: Transport::Udp,
            id: 1,
            qname: qname.to_owned(),
            qtype,
            rcode,
            answers,
            latency_ns: latency,
            timed_out: outcome.is_none(),
            retransmits: 0,
            duplicate_answers: 0,
            observed: Observed::Client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{test_util::*, *};

    const C: &str = "10.0.1.5:40000";
    const S: &str = "10.96.0.10:53";
    const Q: &str = "backend.critical-app.svc.cluster.local";

    fn run(evs: &[DnsEvent], cfg: PairConfig) -> (Vec<Transaction>, Pairer) {
        let mut p = Pairer::new(cfg);
        let mut out = Vec::new();
        for ev in evs {
            p.push(ev, &mut out);
        }
        (out, p)
    }

    #[test]
    fn client_and_server_on_one_node_merge() {
        let mut q = with_proc(event(0, Hook::SocketEgress, C, S, 7, Q, 1, None), process(10, "curl"), 99);
        q.src_pod = Some(pod("critical-app", "client"));
        let mut si = event(MS / 10, Hook::SocketIngress, C, S, 7, Q, 1, None);
        si.dst_pod = Some(pod("kube-system", "kube-dns"));
        let se = with_proc(
            event(2 * MS, Hook::SocketEgress, S, C, 7, &Q.to_uppercase(), 1, Some((0, 1))),
            process(20, "dnsmasq"),
            55,
        );
        let ci = event(3 * MS, Hook::SocketIngress, S, C, 7, Q, 1, Some((0, 1)));
        let (out, p) = run(&[q, si, se.clone()], PairConfig::default());
        assert!(out.is_empty(), "a Both exchange completes at the client");
        let (out, p) = {
            let mut p = p;
            let mut out = Vec::new();
            p.push(&ci, &mut out);
            (out, p)
        };
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.observed, Observed::Both);
        assert_eq!(t.latency_ns, Some(3 * MS));
        assert_eq!(t.process.as_ref().map(|p| p.pid), Some(10));
        assert_eq!(t.server_process.as_ref().map(|p| p.comm.as_ref()), Some("dnsmasq"));
        assert_eq!(t.server_pod.as_ref().map(ToString::to_string).as_deref(), Some("kube-system/kube-dns"));
        assert_eq!(t.client_pod.as_ref().map(ToString::to_string).as_deref(), Some("critical-app/client"));
        assert_eq!((t.netns, t.rcode, t.answers.len(), t.timed_out), (99, Some(0), 1, false));
        assert_eq!(p.stats(), PairStats::default());
        assert_eq!(p.inflight(), 0);
    }

    #[test]
    fn server_only_completes_at_server_egress() {
        let evs = [
            event(0, Hook::SocketIngress, C, S, 1, Q, 28, None),
            with_proc(event(5 * MS, Hook::SocketEgress, S, C, 1, Q, 28, Some((3, 0))), process(20, "coredns"), 5),
        ];
        let (out, _) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].observed, Observed::Server);
        assert_eq!(out[0].latency_ns, Some(5 * MS));
        assert_eq!(out[0].rcode, Some(3));
        assert!(out[0].process.is_none());
        assert_eq!(out[0].server_process.as_ref().map(|p| p.pid), Some(20));
    }

    #[test]
    fn client_only_and_wire() {
        let evs = [
            event(0, Hook::SocketEgress, C, S, 1, Q, 1, None),
            event(MS, Hook::Wire, "10.0.0.1:5000", "8.8.8.8:53", 9, "a.example", 1, None),
            event(4 * MS, Hook::SocketIngress, S, C, 1, Q, 1, Some((0, 1))),
            event(6 * MS, Hook::Wire, "8.8.8.8:53", "10.0.0.1:5000", 9, "A.EXAMPLE", 1, Some((0, 1))),
        ];
        let (out, _) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].observed, out[0].latency_ns), (Observed::Client, Some(4 * MS)));
        assert_eq!((out[1].observed, out[1].latency_ns), (Observed::Wire, Some(5 * MS)));
    }

    #[test]
    fn retransmit_keeps_first_timestamp() {
        let evs = [
            event(0, Hook::SocketEgress, C, S, 1, Q, 1, None),
            event(MS / 2, Hook::SocketIngress, C, S, 1, Q, 1, None),
            event(1000 * MS, Hook::SocketEgress, C, S, 1, Q, 1, None),
            event(1000 * MS + 1, Hook::SocketIngress, C, S, 1, Q, 1, None),
            event(1001 * MS, Hook::SocketIngress, S, C, 1, Q, 1, Some((0, 1))),
        ];
        let (out, _) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].retransmits, 1);
        assert_eq!(out[0].ts_ns, 0);
        assert_eq!(out[0].latency_ns, Some(1001 * MS));
    }

    #[test]
    fn duplicate_and_unmatched_answers_are_counted() {
        let evs = [
            event(0, Hook::SocketEgress, C, S, 1, Q, 1, None),
            event(MS, Hook::SocketIngress, S, C, 1, Q, 1, Some((0, 1))),
            event(2 * MS, Hook::SocketIngress, S, C, 1, Q, 1, Some((0, 1))),
            event(3 * MS, Hook::SocketIngress, S, C, 2, Q, 1, Some((0, 1))),
            // Long after the window the same answer is unmatched.
            event(5000 * MS, Hook::SocketIngress, S, C, 1, Q, 1, Some((0, 1))),
        ];
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1);
        assert_eq!(p.stats().duplicate_answers, 1);
        assert_eq!(p.stats().unmatched_responses, 2);
    }

    #[test]
    fn both_sides_server_answer_lost_reports_timeout_with_server_rcode() {
        let evs = [
            event(0, Hook::SocketEgress, C, S, 1, Q, 1, None),
            event(1, Hook::SocketIngress, C, S, 1, Q, 1, None),
            event(MS, Hook::SocketEgress, S, C, 1, Q, 1, Some((2, 0))),
        ];
        let (out, mut p) = run(&evs, PairConfig::default());
        assert!(out.is_empty());
        let mut out = Vec::new();
        p.expire(9_999 * MS, &mut out);
        assert!(out.is_empty());
        p.expire(10_000 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].timed_out);
        assert_eq!((out[0].rcode, out[0].latency_ns), (Some(2), None));
    }

    #[test]
    fn timeout_order_finish_and_eviction() {
        let cfg = PairConfig { timeout_ns: 2000 * MS, max_inflight: 2 };
        let evs = [
            event(0, Hook::SocketEgress, C, S, 1, "a.x", 1, None),
            event(MS, Hook::SocketEgress, C, S, 2, "b.x", 1, None),
            event(2 * MS, Hook::SocketIngress, S, C, 2, "b.x", 1, Some((0, 1))),
            event(3 * MS, Hook::SocketEgress, C, S, 3, "c.x", 1, None),
            event(4 * MS, Hook::SocketEgress, C, S, 4, "d.x", 1, None),
        ];
        let (out, mut p) = run(&evs, cfg);
        // b answered first; a evicted when d arrived (table full with a and c).
        assert_eq!(out.iter().map(|t| t.qname.as_str()).collect::<Vec<_>>(), ["b.x", "a.x"]);
        assert!(out[1].timed_out && out[1].rcode.is_none());
        assert_eq!(p.stats().evicted, 1);
        let mut out = Vec::new();
        p.expire(2003 * MS, &mut out);
        assert_eq!(out.iter().map(|t| t.qname.as_str()).collect::<Vec<_>>(), ["c.x"]);
        p.finish(&mut out);
        assert_eq!(out.iter().map(|t| t.qname.as_str()).collect::<Vec<_>>(), ["c.x", "d.x"]);
        assert!(out.iter().all(|t| t.timed_out && t.latency_ns.is_none()));
        assert_eq!(p.inflight(), 0);
    }

    #[test]
    fn zero_inflight_limit_does_not_loop() {
        let cfg = PairConfig { timeout_ns: 1, max_inflight: 0 };
        let (out, p) = run(
            &[event(0, Hook::SocketEgress, C, S, 1, "a", 1, None), event(1, Hook::SocketEgress, C, S, 2, "b", 1, None)],
            cfg,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(p.inflight(), 1);
    }
}

/// Hash of `name` in ASCII lower case, without allocating.
fn name_hash(state: &foldhash::fast::RandomState, name: &str) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = state.build_hasher();
    let mut buf = [0u8; 64];
    for chunk in name.as_bytes().chunks(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.copy_from_slice(chunk);
        b.make_ascii_lowercase();
        h.write(b);
    }
    h.finish()
}
