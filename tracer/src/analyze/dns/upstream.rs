//! Upstream timeouts: a resolver forwarded a client's query to an upstream
//! that did not answer (or answered SERVFAIL), and the client waited.

use super::{
    Analyzer, Arc, Att, Bounded, ClientKey, Endpoint, Finding, ForwardedUpstream, IpAddr, MAX_CHAIN_ATTEMPTS,
    PARALLEL_NS, Party, PodRef, PreHashedMap, RCODE_SERVFAIL, Transaction, UpstreamTimeout, VecDeque, ms, qtype_name,
    secs, settled_at, times, union_len,
};
use crate::event::Process;

/// Most client queries remembered per name and resolver.
pub(super) const MAX_PER_NAME: usize = 32;

/// A client query as the resolver received it: what correlating a forward
/// with it and reporting it read, not the whole transaction (every query
/// is remembered, and sharing each transaction was an allocation per query).
#[derive(Clone, Debug)]
pub(super) struct ClientQuery {
    /// Hash of the lower-case name ([`Att::nh`]).
    pub(super) nh: u64,
    pub(super) ts: u64,
    pub(super) end: Option<u64>,
    pub(super) id: u16,
    pub(super) qtype: u16,
    pub(super) client_port: u16,
    pub(super) who: Arc<Parties>,
}

impl ClientQuery {
    /// The client's key: its parties', the same for every query of a
    /// client (one shared reference per query, not two: cloning the key
    /// too cost two more atomic updates per transaction).
    pub(super) fn key(&self) -> &ClientKey {
        &self.who.key
    }

    fn client(&self) -> Endpoint {
        Endpoint { ip: self.key().ip(), port: self.client_port }
    }
}

/// Who took part in a client query besides the client's address: the same
/// for a client's consecutive queries to a resolver, so shared by them.
#[derive(Debug)]
pub(super) struct Parties {
    /// The client they are of.
    pub(super) key: ClientKey,
    pub(super) server: Endpoint,
    pub(super) process: Option<Process>,
    pub(super) server_pod: Option<PodRef>,
    pub(super) server_process: Option<Process>,
}

impl Parties {
    fn of(tx: &Transaction, key: &ClientKey) -> Self {
        Self {
            key: key.clone(),
            server: tx.server,
            process: tx.process.clone(),
            server_pod: tx.server_pod.clone(),
            server_process: tx.server_process.clone(),
        }
    }

    /// Whether these are `tx`'s parties, comparing the shared strings by
    /// address only (a false "no" only costs a new entry).
    fn are_of(&self, tx: &Transaction) -> bool {
        fn same_proc(a: Option<&Process>, b: Option<&Process>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.pid == b.pid
                        && a.tid == b.tid
                        && Arc::ptr_eq(&a.comm, &b.comm)
                        && Arc::ptr_eq(&a.thread, &b.thread)
                }
                _ => false,
            }
        }
        let same_pod = match (&self.server_pod, &tx.server_pod) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.namespace, &b.namespace)
                    && Arc::ptr_eq(&a.name, &b.name)
                    && match (&a.node, &b.node) {
                        (None, None) => true,
                        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                        _ => false,
                    }
            }
            _ => false,
        };
        self.server == tx.server
            && same_pod
            && same_proc(self.process.as_ref(), tx.process.as_ref())
            && same_proc(self.server_process.as_ref(), tx.server_process.as_ref())
    }
}

/// A client's recent queries to one resolver.
#[derive(Debug, Default)]
pub(super) struct ClientQueries {
    /// (start, name hash), in start order (to see when it gave up waiting
    /// and moved on).
    pub(super) qs: VecDeque<(u64, u64)>,
    /// The parties of its last query.
    who: Option<Arc<Parties>>,
}

impl ClientQueries {
    /// Adds `tx` (name hash `nh`), keeping at most `max`; its parties, shared with the last query's when the same.
    fn note(&mut self, tx: &Transaction, nh: u64, max: usize, key: &ClientKey) -> &Arc<Parties> {
        let qs = &mut self.qs;
        if qs.len() >= max {
            qs.pop_front();
        }
        if qs.back().is_none_or(|(ts, _)| *ts <= tx.ts_ns) {
            qs.push_back((tx.ts_ns, nh));
        } else {
            qs.insert(qs.partition_point(|(ts, _)| *ts <= tx.ts_ns), (tx.ts_ns, nh));
        }
        if self.who.as_ref().is_none_or(|w| !w.are_of(tx)) {
            self.who = Some(Arc::new(Parties::of(tx, key)));
        }
        self.who.get_or_insert_with(|| Arc::new(Parties::of(tx, key)))
    }
}

/// Appends a client query to a name's (at most [`MAX_PER_NAME`], `held`
/// counting them over all names; `oldest` kept at most the start of the
/// first one, see [`ResolverState::oldest`]). When the oldest goes, its entry is
/// reused: a client asking again keeps its parties (and with them its
/// key) without touching their reference count (an atomic increment and
/// decrement per query otherwise).
fn remember(
    qs: &mut VecDeque<ClientQuery>,
    (held, oldest): (&mut usize, &mut u64),
    nh: u64,
    tx: &Transaction,
    who: &Arc<Parties>,
) {
    let q = if qs.len() >= MAX_PER_NAME
        && let Some(mut q) = qs.pop_front()
    {
        // In arrival order, not start order (timed-out queries come late):
        // the next one may have started earlier.
        if let Some(f) = qs.front() {
            *oldest = (*oldest).min(f.ts);
        }
        if !Arc::ptr_eq(&q.who, who) {
            q.who = Arc::clone(who);
        }
        q.nh = nh;
        q.ts = tx.ts_ns;
        q.end = tx.end_ns;
        q.id = tx.id;
        q.qtype = tx.qtype;
        q.client_port = tx.client.port;
        q
    } else {
        *held += 1;
        ClientQuery {
            nh,
            ts: tx.ts_ns,
            end: tx.end_ns,
            id: tx.id,
            qtype: tx.qtype,
            client_port: tx.client.port,
            who: Arc::clone(who),
        }
    };
    qs.push_back(q);
}

/// Node names compared by their shared allocation first (the decoder
/// hands out one per node), by text only when they differ.
fn same_node(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

#[derive(Debug, Default)]
pub(super) struct ResolverState {
    /// Per client: its recent queries to this resolver.
    pub(super) clients: PreHashedMap<ClientKey, ClientQueries>,
    /// Per name (by [`Att::nh`], a seeded hash already: not hashed again):
    /// recent client queries (to correlate forwards).
    pub(super) by_name: Bounded<u64, VecDeque<ClientQuery>, std::hash::BuildHasherDefault<crate::hash::Passthrough>>,
    /// Client queries in `by_name`, over all names.
    pub(super) held: usize,
    pub(super) last_ts: u64,
    /// At most the start of the first query of every list (`clients`, in
    /// start order, and `by_name`, in arrival order), which is all the scan looks at:
    /// while it is recent enough, the periodic scan has nothing to forget
    /// and skips this resolver (walking every name's queries per scan was
    /// ~44,000 instructions with 2,500 names, callgrind).
    pub(super) oldest: u64,
}

impl ResolverState {
    /// Forgets the queries of the oldest names until one more fits in `cap`
    /// (or a new name fits in `names`); returns how many were forgotten and
    /// whether any name was.
    fn make_room(&mut self, cap: usize, new_name: bool, names: usize) -> (u64, bool) {
        let (mut forgot, mut removed) = (0, false);
        while self.held >= cap.max(1) || (new_name && self.by_name.order.len() >= names.max(1)) {
            let Some(old) = self.by_name.order.pop_front() else { break };
            if let Some(qs) = self.by_name.map.remove(&old) {
                self.held -= qs.len();
                forgot += qs.len() as u64;
                removed = true;
            }
        }
        (forgot, removed)
    }
}

/// The resolvers' states by server address, in a list indexed by a small
/// number: a node's transactions go to one or two resolvers, so the last
/// one looked up is kept and most transactions find theirs by comparing
/// an address instead of hashing it.
#[derive(Debug, Default)]
pub(super) struct Resolvers {
    list: Vec<(IpAddr, ResolverState)>,
    index: crate::hash::FastMap<IpAddr, usize>,
    last: Option<(IpAddr, usize)>,
}

impl Resolvers {
    pub(super) fn get(&self, ip: &IpAddr) -> Option<&ResolverState> {
        self.index.get(ip).and_then(|&i| self.list.get(i)).map(|(_, r)| r)
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &ResolverState> {
        self.list.iter().map(|(_, r)| r)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut ResolverState> {
        self.list.iter_mut().map(|(_, r)| r)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&ResolverState) -> bool) {
        let before = self.list.len();
        self.list.retain(|(_, r)| keep(r));
        if self.list.len() != before {
            self.index.clear();
            self.index.extend(self.list.iter().enumerate().map(|(i, (ip, _))| (*ip, i)));
            self.last = None;
        }
    }

    /// The state of `ip`, new if it fits in `max` resolvers.
    fn tracked(&mut self, ip: IpAddr, max: usize) -> Option<&mut ResolverState> {
        let i = match self.last {
            Some((l, i)) if l == ip => i,
            _ => {
                let i = match self.index.get(&ip) {
                    Some(&i) => i,
                    None if self.list.len() >= max.max(1) => return None,
                    None => {
                        self.list.push((ip, ResolverState::default()));
                        self.index.insert(ip, self.list.len() - 1);
                        self.list.len() - 1
                    }
                };
                self.last = Some((ip, i));
                i
            }
        };
        self.list.get_mut(i).map(|(_, r)| r)
    }
}

#[derive(Debug)]
pub(super) struct UpGroup {
    pub(super) resolver_ip: IpAddr,
    pub(super) upstream: Endpoint,
    pub(super) lname: String,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    pub(super) attempts: u32,
    pub(super) servfail: u32,
    pub(super) qtypes: Vec<u16>,
    pub(super) forwarder: Arc<Transaction>,
    /// Client queries that waited (deduplicated by client, id, qtype, start).
    pub(super) waiting: Vec<ClientQuery>,
}

impl Analyzer {
    /// Checks the failed transactions every client query before which is now known.
    pub(super) fn settle_forwards(&mut self, now: u64) {
        while self.pending_fwd.front().is_some_and(|a| settled_at(&self.cfg, a.tx.ts_ns) <= now) {
            if let Some(a) = self.pending_fwd.pop_front() {
                self.check_upstream(&a);
            }
        }
    }

    /// Reports the forward groups that can no longer grow; forgets old queries.
    pub(super) fn expire_upstream(&mut self, now: u64, keep_ns: u64, out: &mut Vec<Finding>) {
        // A forward joins a group if it started within one pairing timeout of
        // the group's last forward, and reaches us (timed out) one more
        // timeout later: only then can the group be complete. Settling any
        // earlier splits one wait into two findings that count it twice.
        let settle = self.cfg.pair_timeout_ns.saturating_mul(2).saturating_add(self.cfg.grace_ns);
        let (done, open): (Vec<UpGroup>, Vec<UpGroup>) =
            std::mem::take(&mut self.upstream).into_iter().partition(|g| g.last_ts.saturating_add(settle) <= now);
        self.upstream = open;
        for g in done {
            out.push(Finding::UpstreamTimeout(self.report_upstream(g)));
        }
        for r in self.resolvers.values_mut() {
            // Nothing is old enough to go (and no list is empty: each is
            // made with a query, and only this scan takes the last one).
            if r.oldest.saturating_add(keep_ns) >= now {
                continue;
            }
            let mut oldest = u64::MAX;
            r.clients.retain(|_, c| {
                while c.qs.front().is_some_and(|(ts, _)| ts.saturating_add(keep_ns) < now) {
                    c.qs.pop_front();
                }
                oldest = oldest.min(c.qs.front().map_or(u64::MAX, |(ts, _)| *ts));
                !c.qs.is_empty()
            });
            r.by_name.retain(|_, qs| {
                while qs.front().is_some_and(|q| q.ts.saturating_add(keep_ns) < now) {
                    qs.pop_front();
                }
                oldest = oldest.min(qs.front().map_or(u64::MAX, |q| q.ts));
                !qs.is_empty()
            });
            r.held = r.by_name.map.values().map(VecDeque::len).sum();
            r.oldest = oldest;
        }
        self.resolvers.retain(|r| !r.clients.is_empty() || r.last_ts.saturating_add(keep_ns) >= now);
    }

    /// Remembers client queries per resolver (server IP).
    pub(super) fn track_resolver(&mut self, tx: &Transaction, nh: u64, key: &ClientKey) {
        let ip = tx.server.ip;
        let cap = self.cfg.max_evidence;
        let last = &mut self.last_resolver;
        if let Some(p) = &tx.server_pod
            && last.pod.as_ref().is_none_or(|(lp, lip)| *lip != ip || lp != p)
        {
            self.resolver_pods.insert(p.clone(), ip, cap);
            last.pod = Some((p.clone(), ip));
        }
        if let Some(r) = tx.resolver
            && r.ip != ip
            && last.addr != Some((r.ip, ip))
        {
            self.resolver_addrs.insert(r.ip, ip, cap);
            last.addr = Some((r.ip, ip));
        }
        if let Some(p) = &tx.server_process
            && last.pid.as_ref().is_none_or(|((pid, node), lip)| {
                *lip != ip || *pid != p.pid || !same_node(node.as_ref(), tx.node.as_ref())
            })
        {
            self.resolver_pids.insert((p.pid, tx.node.clone()), ip, cap);
            last.pid = Some(((p.pid, tx.node.clone()), ip));
        }
        let Some(r) = self.resolvers.tracked(ip, self.cfg.max_clients) else { return };
        r.last_ts = r.last_ts.max(tx.ts_ns);
        r.oldest = r.oldest.min(tx.ts_ns);
        let max_attempts = self.cfg.max_attempts_per_client.max(1);
        // One lookup when the client is known (looked up before inserting:
        // an entry would take a clone of the key).
        let unknown;
        let who = if let Some(c) = r.clients.get_mut(key) {
            c.note(tx, nh, max_attempts, key)
        } else if r.clients.len() < self.cfg.max_clients.max(1) {
            r.clients.entry(key.clone()).or_default().note(tx, nh, max_attempts, key)
        } else {
            unknown = Arc::new(Parties::of(tx, key));
            &unknown
        };
        // Bounded by count over all names (not only names × per name): a
        // busy resolver's queries of the last `keep_ns` would be ~50 s of
        // traffic. A known name with room to spare (nearly every query) is
        // one lookup; otherwise room is made first.
        let cap = self.cfg.max_queries_per_resolver;
        if r.held < cap.max(1)
            && let Some(qs) = r.by_name.map.get_mut(&nh)
        {
            remember(qs, (&mut r.held, &mut r.oldest), nh, tx, who);
            return;
        }
        let who = Arc::clone(who);
        let new_name = !r.by_name.map.contains_key(&nh);
        let (forgot, removed) = r.make_room(cap, new_name, self.cfg.max_evidence);
        self.stats.resolver_queries_evicted += forgot;
        let qs = if new_name || removed {
            r.by_name.get_or_insert(&nh, self.cfg.max_evidence)
        } else {
            r.by_name.map.get_mut(&nh)
        };
        if let Some(qs) = qs {
            remember(qs, (&mut r.held, &mut r.oldest), nh, tx, &who);
        }
    }

    /// The resolver (by its service IP) that sent `tx`, if `tx` is a forward.
    pub(super) fn forwarder_of(&self, tx: &Transaction) -> Option<IpAddr> {
        if self.resolvers.get(&tx.client.ip).is_some_and(|r| r.clients.keys().any(|k| k.ip() != tx.client.ip)) {
            return Some(tx.client.ip);
        }
        if let Some(ip) = tx.client_pod.as_ref().and_then(|p| self.resolver_pods.get(p)) {
            return Some(*ip);
        }
        if let Some(ip) = self.resolver_addrs.get(&tx.client.ip) {
            return Some(*ip);
        }
        tx.process.as_ref().and_then(|p| self.resolver_pids.get(&(p.pid, tx.node.clone()))).copied()
    }

    /// Where `lname` was forwarded, from correlated or still pending forwards.
    pub(super) fn forwarded_for(&self, lname: &str) -> Option<ForwardedUpstream> {
        if let Some(f) = self.forwarded.get(&lname.to_owned()) {
            return Some(f.clone());
        }
        self.pending_fwd.iter().filter(|u| *u.lname == *lname).find_map(|u| {
            let rip = self.forwarder_of(&u.tx)?;
            Some(ForwardedUpstream {
                qname: u.lname.to_string(),
                resolver: rip.to_string(),
                upstream: u.tx.server.to_string(),
            })
        })
    }

    pub(super) fn check_upstream(&mut self, att: &Att) {
        let u = &att.tx;
        if !(u.timed_out || u.rcode == Some(RCODE_SERVFAIL)) {
            return;
        }
        let Some(rip) = self.forwarder_of(u) else { return };
        let Some(r) = self.resolvers.get(&rip) else { return };
        let lo = u.ts_ns.saturating_sub(self.cfg.pair_timeout_ns);
        // A client query the forward served: same name, still waiting when it was sent.
        let waiting: Vec<ClientQuery> = r
            .by_name
            .get(&att.nh)
            .into_iter()
            .flatten()
            .filter(|q| q.key().ip() != u.client.ip)
            .filter(|q| q.ts >= lo && q.ts <= u.ts_ns.saturating_add(PARALLEL_NS))
            .filter(|q| q.end.is_none_or(|e| e >= u.ts_ns))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return;
        }
        let resolver_addr = waiting.first().map_or_else(|| rip.to_string(), |q| q.who.server.to_string());
        self.forwarded.insert(
            att.lname.to_string(),
            ForwardedUpstream { qname: att.lname.to_string(), resolver: resolver_addr, upstream: u.server.to_string() },
            self.cfg.max_evidence,
        );
        let group = self.upstream.iter_mut().find(|g| {
            g.resolver_ip == rip
                && g.upstream == u.server
                && *g.lname == *att.lname
                && u.ts_ns <= g.last_ts.saturating_add(self.cfg.pair_timeout_ns)
        });
        let n = 1 + u.retransmits;
        let sf = u32::from(u.rcode == Some(RCODE_SERVFAIL));
        if let Some(g) = group {
            g.attempts = g.attempts.saturating_add(n);
            g.servfail += sf;
            g.first_ts = g.first_ts.min(u.ts_ns);
            g.last_ts = g.last_ts.max(u.ts_ns);
            if !g.qtypes.contains(&u.qtype) {
                g.qtypes.push(u.qtype);
            }
            for q in waiting {
                let dup =
                    g.waiting.iter().any(|w| w.key() == q.key() && w.ts == q.ts && w.id == q.id && w.qtype == q.qtype);
                if !dup && g.waiting.len() < MAX_CHAIN_ATTEMPTS {
                    g.waiting.push(q);
                }
            }
        } else {
            if self.upstream.len() >= self.cfg.max_clients.max(1) {
                return;
            }
            let mut waiting = waiting;
            waiting.truncate(MAX_CHAIN_ATTEMPTS);
            self.upstream.push(UpGroup {
                resolver_ip: rip,
                upstream: u.server,
                lname: att.lname.to_string(),
                first_ts: u.ts_ns,
                last_ts: u.ts_ns,
                attempts: n,
                servfail: sf,
                qtypes: vec![u.qtype],
                forwarder: u.clone(),
                waiting,
            });
        }
    }

    pub(super) fn report_upstream(&self, g: UpGroup) -> UpstreamTimeout {
        let r = self.resolvers.get(&g.resolver_ip);
        // How long each client waited: until the answer, or until the same
        // client moved on to another name (it gave up), or the pairing timeout.
        let wait_end = |q: &ClientQuery| -> u64 {
            if let Some(e) = q.end {
                return e;
            }
            let next = r
                .and_then(|r| r.clients.get(q.key()))
                .and_then(|c| c.qs.iter().filter(|(ts, n)| *ts > q.ts && *n != q.nh).map(|(ts, _)| *ts).min());
            next.unwrap_or_else(|| q.ts.saturating_add(self.cfg.pair_timeout_ns))
        };
        let waited = union_len(g.waiting.iter().map(|q| (q.ts, wait_end(q))));
        let first = g.waiting.iter().min_by_key(|q| q.ts);
        let resolver = Party {
            pod: first
                .and_then(|q| q.who.server_pod.as_ref())
                .or(g.forwarder.client_pod.as_ref())
                .map(ToString::to_string),
            process: first.and_then(|q| q.who.server_process.clone()).or_else(|| g.forwarder.process.clone()),
            address: first.map_or_else(|| g.resolver_ip.to_string(), |q| q.who.server.to_string()),
        };
        let client = Party {
            pod: first.and_then(|q| q.key().pod()).map(ToString::to_string),
            process: first.and_then(|q| q.who.process.clone()),
            address: first.map_or_else(String::new, |q| q.client().to_string()),
        };
        let tail = g.lname.rsplit('.').next().unwrap_or(&g.lname).to_owned();
        let advice = vec![
            format!(
                "The upstream {} does not answer for {}: fix or replace it, or stop sending it such names.",
                g.upstream, g.lname
            ),
            format!(
                "Answer *.{tail} locally so it fails fast: in CoreDNS add a server block `{tail}:53 {{ template ANY ANY {{ rcode NXDOMAIN }} }}` (or a stub domain / forward to a server that answers; dnsmasq: `local=/{tail}/`)."
            ),
            format!(
                "If *.{tail} comes from a search suffix, remove `{tail}` from the node's /etc/resolv.conf that kubelet copies into pods (or point kubelet --resolv-conf at a file without it)."
            ),
        ];
        let who = resolver.pod.clone().unwrap_or_else(|| resolver.address.clone());
        let fails = if g.servfail == g.attempts {
            "answered SERVFAIL".to_owned()
        } else if g.servfail == 0 {
            "never answered".to_owned()
        } else {
            format!("never answered or SERVFAILed ({} SERVFAIL)", g.servfail)
        };
        let cause = format!(
            "{who} forwarded {} to the upstream {} {}, which {fails}; {} client quer{} waited {:.1} s",
            g.lname,
            g.upstream,
            times(g.attempts),
            g.waiting.len(),
            if g.waiting.len() == 1 { "y" } else { "ies" },
            secs(waited)
        );
        UpstreamTimeout {
            cause,
            ts_ns: g.first_ts,
            node: g.forwarder.node.clone(),
            resolver,
            upstream: g.upstream.to_string(),
            qname: g.lname,
            qtypes: g.qtypes.into_iter().map(qtype_name).collect(),
            attempts: g.attempts,
            servfail: g.servfail,
            waited_ms: ms(waited),
            client,
            client_queries: g.waiting.len() as u32,
            advice,
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::{super::AnalyzerConfig, Analyzer, VecDeque};
    use crate::analyze::pairing::test_util::{MS, tx};

    /// A resolver's table holds at most `max_queries_per_resolver` client
    /// queries over all names; every query is either held or counted as evicted.
    #[test]
    fn resolver_tables_stay_within_their_query_bound() {
        let cfg = AnalyzerConfig { max_queries_per_resolver: 100, ..AnalyzerConfig::default() };
        let mut an = Analyzer::with_config(cfg);
        let mut out = Vec::new();
        for i in 0..1000u64 {
            let name = format!("n{}.example", i % 300);
            an.push(&tx(i * MS, "10.0.1.5:40000", "10.0.2.53:53", &name, 1, Some((3, MS, 0))), &mut out);
        }
        let held: usize = an.resolvers.values().map(|r| r.held).sum();
        let real: usize = an.resolvers.values().map(|r| r.by_name.map.values().map(VecDeque::len).sum::<usize>()).sum();
        assert_eq!(held, real, "the count matches the table");
        assert!(held <= 100 && held > 50, "{held}");
        assert_eq!(an.stats().resolver_queries_evicted + held as u64, 1000);
    }
}
