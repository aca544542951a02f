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
//!
//! On a cluster the two views of one lookup differ in their keys: the client
//! asks the kube-dns `ClusterIP` (`10.96.0.10:53`), kube-proxy rewrites the
//! destination to a resolver pod (DNAT), so the resolver sees the query sent
//! to its own address, and its answer is rewritten back to the `ClusterIP`
//! before it reaches the client. Some datapaths also rewrite the source
//! (SNAT, e.g. masquerading cross-node traffic). A sighting whose key waits
//! nowhere is therefore matched against the lookups seen from the other side
//! only: same transport, id, name and type, and the same client address
//! (DNAT), or — when the resolver saw a non-pod source — the only such lookup
//! waiting (SNAT). The joined view is remembered as an alias of the first, so
//! the resolver's answer and any later copies find the one transaction.
//! Two candidates are never guessed between: the sighting stays its own
//! transaction and `ambiguous_views` counts it.

use std::collections::VecDeque;

use super::{
    key::{ByClient, Key, KeySeeds, Loose, NameHashes},
    slots::Slots,
    table::Table,
};
use crate::hash::{PreHashedMap, Seed};

use crate::{
    decode::{DnsEvent, dns::Answer},
    event::{Endpoint, Hook},
};

use crate::analyze::{Observed, Transaction};

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
    /// Client and resolver views of one lookup joined across an address
    /// rewrite (Service DNAT, SNAT).
    pub joined_views: u64,
    /// Views left unjoined because more than one lookup could have been theirs.
    pub ambiguous_views: u64,
}

/// Lookups seen from one side only sharing a [`Loose`] key (and, in the
/// by-client index, a client address): the in-flight slot of the one
/// lookup while there has been exactly one since the group formed (a group
/// that ever held two stays ambiguous until it empties).
#[derive(Clone, Copy, Debug)]
struct Group<K> {
    key: K,
    one: Option<u32>,
    n: u32,
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
    /// The other view's key, once joined across an address rewrite.
    alias: Option<Key>,
}

impl Pending {
    /// Moves the transaction of the pending entry at `p` to the end of
    /// `out` and drops the rest: one copy of the ~430 bytes, straight into
    /// place (moving the entry out by value and pushing its transaction
    /// copied it three times, 164 instructions per query on `hot-cap`).
    ///
    /// # Safety
    /// `p` points to an initialised entry that nothing reads or drops after.
    unsafe fn move_into(p: *mut Self, out: &mut Vec<Transaction>) {
        out.reserve(1);
        let len = out.len();
        // SAFETY: room for one more was reserved; the transaction is moved
        // (read once, never dropped at `p`), the one other owning field is
        // dropped in place, the remaining fields are `Copy`.
        unsafe {
            std::ptr::copy_nonoverlapping(&raw const (*p).tx, out.as_mut_ptr().add(len), 1);
            out.set_len(len + 1);
            std::ptr::drop_in_place(&raw mut (*p).server_answer);
        }
    }
}

/// Query/response pairing state.
#[derive(Debug)]
pub struct Pairer {
    cfg: PairConfig,
    stats: PairStats,
    /// Waiting queries, and completed exchanges (noted with how they were
    /// observed) remembered for the duplicate answers that follow them.
    pending: Slots<Key, Pending, Observed>,
    /// (first seen, sequence, slot), oldest first, for expiry and eviction:
    /// arrivals come in time order, so this queue is the timing wheel with
    /// one bucket. Answered queries are not removed here (that was a B-tree
    /// delete per answer): an entry counts only while its slot holds the
    /// same order, which is checked without a lookup.
    order: VecDeque<(u64, u64, u32)>,
    seq: u64,
    /// Seed of the name hashes in keys (random per run: names come from the network).
    names: Seed,
    /// Seeds of the key hashes.
    keys: KeySeeds,
    /// Name hashes of recent names, by their shared string.
    name_hashes: NameHashes,
    /// A joined view's key → the key its transaction waits under.
    aliases: PreHashedMap<Key, Key>,
    /// One-sided lookups by (loose key, client address): DNAT joins. Only
    /// the lookups of `by_query` groups that have held two (see
    /// [`Self::by_client_one`]).
    by_client: Table<Group<ByClient>>,
    /// One-sided lookups by loose key alone: SNAT joins.
    by_query: Table<Group<Loose>>,
}

impl Default for Pairer {
    fn default() -> Self {
        Self::new(PairConfig::default())
    }
}

/// Where a sighting's key stands: waiting (the slot of its transaction,
/// under its own key or a joined view's, and the side it counts as), or not,
/// with the slot where the key is remembered as answered, if it is.
type Found = Result<(u32, Side), Option<u32>>;

impl Pairer {
    /// Empty pairing table.
    #[must_use]
    pub fn new(cfg: PairConfig) -> Self {
        Self {
            cfg,
            stats: PairStats::default(),
            // The index of the in-flight table is allocated once, at its
            // bound (about 9 bytes per query; the slabs grow to the
            // high-water mark).
            pending: Slots::new(cfg.max_inflight.clamp(1, 1 << 20), MAX_RECENT),
            order: VecDeque::new(),
            seq: 0,
            names: Seed::default(),
            keys: KeySeeds::default(),
            name_hashes: NameHashes::default(),
            aliases: PreHashedMap::default(),
            by_client: Table::default(),
            by_query: Table::default(),
        }
    }

    /// Feeds one message; completed transactions are appended to `out`.
    /// Copies the name and answers it keeps ([`Self::push_owned`] moves them).
    pub fn push(&mut self, ev: &DnsEvent, out: &mut Vec<Transaction>) {
        self.push_owned(ev.clone(), out);
    }

    /// [`Self::push`] for an event the caller hands over: the query's name
    /// and the answers move into the transaction instead of being copied
    /// (an allocation per string, four or five per exchange).
    pub fn push_owned(&mut self, mut ev: DnsEvent, out: &mut Vec<Transaction>) {
        self.push_ref(&mut ev, out);
    }

    /// [`Self::push_owned`] of an event the caller keeps (and drops after):
    /// what the transaction keeps of it (answers, process, node, pods)
    /// moves out of it, the name is shared, and the ~300-byte event itself
    /// is never moved. Taking the shared strings rather than cloning them
    /// saves an atomic increment here and a decrement in the event's drop
    /// for each.
    pub fn push_ref(&mut self, ev: &mut DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        self.prune_recent(ts);
        let side = match (ev.rec.hook, ev.msg.is_response) {
            (Hook::SocketEgress, false) | (Hook::SocketIngress, true) => Side::Client,
            (Hook::SocketIngress, false) | (Hook::SocketEgress, true) => Side::Server,
            (Hook::Wire | Hook::TcEgress | Hook::TcIngress, _) => Side::Wire,
        };
        let (client, server) = if ev.msg.is_response { (ev.dst, ev.src) } else { (ev.src, ev.dst) };
        let qname = self.name_hashes.get(&self.names, &ev.msg.qname);
        let key = Key::new(&self.keys, client, server, ev.transport, ev.msg.id, qname, ev.msg.qtype);
        if ev.msg.is_response {
            self.response(key, side, ev, out);
        } else {
            self.query(key, side, ev, out);
        }
    }

    /// Where the sighting `key` stands ([`Found`]). A joined view's Wire
    /// sighting counts as the resolver's (the client's view was there
    /// first). The slot, not the key it waits under: copying the key in
    /// and out of four lookups per query showed.
    #[expect(clippy::inline_always, reason = "four calls per query: outlined, the key went through memory each time")]
    #[inline(always)]
    fn waiting_key(&self, key: &Key, side: Side) -> Found {
        let own = self.pending.find(key);
        let recent = match own {
            Some(i) if self.pending.get(i).is_some() => return Ok((i, side)),
            Some(i) => Some(i),
            None => None,
        };
        if self.aliases.is_empty() {
            return Err(recent);
        }
        match self.aliases.get(key).and_then(|k| self.pending.find(k)) {
            Some(i) if self.pending.get(i).is_some() => Ok((i, if side == Side::Wire { Side::Server } else { side })),
            _ => Err(recent),
        }
    }

    fn query(&mut self, key: Key, side: Side, ev: &mut DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        let (found, recent) = match self.waiting_key(&key, side) {
            Ok(f) => (Some(f), None),
            Err(recent) => (self.join(key, side, ev), recent),
        };
        if let Some((i, side)) = found
            && let Some(p) = self.pending.get_mut(i)
        {
            match side {
                Side::Client => {
                    if p.client_query_ns.is_some() {
                        p.tx.retransmits = p.tx.retransmits.saturating_add(1);
                    } else {
                        // The server's sighting came first (clock skew between
                        // hooks or nodes): the client's view takes over.
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
                        note_resolver(&mut p.tx, ev.src, ev.dst, ev.dst_pod.as_ref());
                        if p.tx.server_pod.is_none() {
                            p.tx.server_pod = ev.dst_pod.take();
                        }
                        p.tx.observed = Observed::Both;
                    }
                }
                Side::Wire => p.tx.retransmits = p.tx.retransmits.saturating_add(1),
            }
            return;
        }
        if self.pending.len() >= self.cfg.max_inflight.max(1) {
            self.evict_oldest(out);
        }
        self.seq = self.seq.wrapping_add(1);
        let order = (ts, self.seq);
        // What each side's sighting knows: the client's egress its process
        // (node and pod are the event's), a pcap inside the client's
        // namespace whatever it knows, the resolver's its own addresses.
        let (process, netns, cgroup_id) = match side {
            Side::Client => (ev.rec.process.take(), ev.rec.netns_ino, ev.rec.cgroup_id),
            Side::Wire => (None, ev.rec.netns_ino, ev.rec.cgroup_id),
            Side::Server => (None, 0, 0),
        };
        let at_server = side == Side::Server;
        let (client_query_ns, server_query_ns) = if at_server { (None, Some(ts)) } else { (Some(ts), None) };
        let (client, server) = (ev.src, ev.dst);
        // Everything taken or cloned first, so the entry is written
        // straight into its place rather than assembled and copied in.
        let (node, client_pod, server_pod) = (ev.rec.node.take(), ev.src_pod.take(), ev.dst_pod.take());
        let resolver_pod = if at_server { server_pod.clone() } else { None };
        let qname = std::sync::Arc::clone(&ev.msg.qname);
        let (transport, id, qtype) = (ev.transport, ev.msg.id, ev.msg.qtype);
        // A key answered moments ago waits again in its slot (a new
        // exchange re-using it is not a duplicate).
        self.pending.vacant().write(Pending {
            order,
            client_query_ns,
            server_query_ns,
            server_answer: None,
            alias: None,
            tx: Transaction {
                ts_ns: ts,
                end_ns: None,
                node,
                netns,
                cgroup_id,
                process,
                server_process: None,
                client,
                server,
                client_pod,
                server_pod,
                resolver: at_server.then_some(server),
                resolver_client: at_server.then_some(client),
                resolver_pod,
                transport,
                id,
                qname,
                qtype,
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
            },
        });
        // SAFETY: written just above.
        let i = unsafe { self.pending.insert_written(key, recent) };
        self.index(&key, i);
        self.order.push_back((ts, self.seq, i));
        // Answered entries linger until their timeout passes; keep them from
        // outnumbering the live ones (amortised O(1) per query).
        if self.order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.order.retain(|&(ts, seq, i)| current(pending, (ts, seq), i));
        }
    }

    /// Joins a query sighting whose key waits nowhere to the one lookup seen
    /// only from the other side under different addresses (see the module
    /// docs); returns its slot and the side the sighting counts as.
    fn join(&mut self, key: Key, side: Side, ev: &DnsEvent) -> Option<(u32, Side)> {
        if self.by_query.is_empty() {
            return None;
        }
        let loose = Loose::of(&key);
        // No group of loose key: no by-client group either.
        let q = *self.by_query.at(self.by_query.find(loose.mix(), |g| g.key == loose)?);
        // What the other view looks like: a resolver's sighting joins a
        // client-only lookup and vice versa. A Wire sighting joins an earlier
        // Wire one only when it went to a pod and the earlier one did not (a
        // Service address rewritten to a pod): both could be a client asking
        // two nameservers at once otherwise (musl does).
        let other = |p: &Pending| match side {
            Side::Server => p.tx.observed == Observed::Client,
            Side::Client => p.tx.observed == Observed::Server,
            Side::Wire => p.tx.observed == Observed::Wire && p.tx.server_pod.is_none() && ev.dst_pod.is_some(),
        };
        let mut ambiguous = false;
        let mut pick = None;
        if let Some(one) = self.by_client_one(&key, &q) {
            match one {
                Some(j) => {
                    if self.pending.key(j).is_some_and(|k| !k.same_server(&key))
                        && self.pending.get(j).is_some_and(other)
                    {
                        pick = Some(j);
                    }
                }
                None => ambiguous = true,
            }
        }
        // SNAT: the resolver saw the query from an address that is no pod
        // (the node's, after masquerading). Joined only when it is the one
        // lookup with this id, name and type waiting for its other view.
        let snat_side = match side {
            Side::Server => ev.src_pod.is_none(),
            Side::Client => true,
            Side::Wire => false,
        };
        if pick.is_none() && !ambiguous && snat_side {
            match q.one {
                Some(j) => {
                    let snat_ok = |p: &Pending| side != Side::Client || p.tx.client_pod.is_none();
                    if self.pending.key(j).is_some_and(|k| !k.same_server(&key) && !k.same_client(&key))
                        && self.pending.get(j).is_some_and(|p| other(p) && snat_ok(p))
                    {
                        pick = Some(j);
                    }
                }
                // A client's own new query is no evidence of ambiguity.
                None => ambiguous = side == Side::Server,
            }
        }
        let Some(i) = pick else {
            if ambiguous && side != Side::Client {
                self.stats.ambiguous_views += 1;
            }
            return None;
        };
        let k = self.pending.key(i)?;
        let p = self.pending.get_mut(i)?;
        p.alias = Some(key);
        if side == Side::Client {
            // The resolver's view came first: the lookup is what the client
            // asked; the resolver's addresses move to the resolver fields.
            p.tx.resolver.get_or_insert(p.tx.server);
            p.tx.resolver_client.get_or_insert(p.tx.client);
            if p.tx.resolver_pod.is_none() {
                p.tx.resolver_pod.clone_from(&p.tx.server_pod);
            }
            p.tx.server = key.server();
            p.tx.client = key.client();
        }
        self.aliases.insert(key, k);
        self.stats.joined_views += 1;
        Some((i, if side == Side::Wire { Side::Server } else { side }))
    }

    /// An answer reaching the client from another address than its query
    /// went to: the query was rewritten before the client's own egress hook
    /// saw it (DNAT on the `output` hook: a host-network client asking a
    /// Service, kube-proxy in the client's namespace), and conntrack
    /// rewrote the answer's source back to the Service address the client
    /// asked. Joined when it is the client's only lookup with this id, name
    /// and type; the Service address becomes `server`.
    fn join_answer(&mut self, key: Key, side: Side) -> Option<(u32, Side)> {
        if side != Side::Client || self.by_query.is_empty() {
            return None;
        }
        let loose = Loose::of(&key);
        let q = *self.by_query.at(self.by_query.find(loose.mix(), |g| g.key == loose)?);
        let i = self.by_client_one(&key, &q)??;
        let k = self.pending.key(i)?;
        if k.same_server(&key) {
            return None;
        }
        let p = self.pending.get_mut(i)?;
        if p.client_query_ns.is_none() || p.alias.is_some() {
            return None;
        }
        p.tx.resolver.get_or_insert(p.tx.server);
        p.tx.server = key.server();
        p.alias = Some(key);
        self.aliases.insert(key, k);
        self.stats.joined_views += 1;
        Some((i, side))
    }

    /// The `one` of the by-client group of `key` (whose loose key's group
    /// is `q`), if there is such a group. While `q` has only ever held one
    /// lookup, so has each of its by-client groups, and only that
    /// lookup's exists: those are not stored. Storing them cost an insert
    /// and a removal per query (plus a probe per join attempt) for groups
    /// that on `hot-cap` nearly always stay single.
    #[expect(clippy::option_option, reason = "a group or none, and the group's own `one`, as stored in `Group`")]
    fn by_client_one(&self, key: &Key, q: &Group<Loose>) -> Option<Option<u32>> {
        if let Some(j) = q.one {
            return self.pending.key(j).is_some_and(|k| k.same_client(key)).then_some(Some(j));
        }
        let bk = ByClient::of(key);
        let pos = self.by_client.find(key.by_client_hash(&self.keys), |g| g.key == bk)?;
        Some(self.by_client.at(pos).one)
    }

    /// Adds a new one-sided lookup, in slot `i`, to the join indexes.
    fn index(&mut self, key: &Key, i: u32) {
        let loose = Loose::of(key);
        let (pos, added) =
            self.by_query.find_or_insert(loose.mix(), |g| g.key == loose, || Group { key: loose, one: Some(i), n: 1 });
        if added {
            return;
        }
        let group = self.by_query.at_mut(pos);
        group.n += 1;
        if let Some(j) = group.one.take() {
            // The group holds two for the first time: from now until it
            // empties, its lookups are in the by-client index too, the
            // first one as the only one of its by-client group so far.
            if let Some(jk) = self.pending.key(j) {
                join_group(&mut self.by_client, jk.by_client_hash(&self.keys), ByClient::of(&jk), j);
            }
        }
        join_group(&mut self.by_client, key.by_client_hash(&self.keys), ByClient::of(key), i);
    }

    /// Removes a lookup that stops waiting: its index entries and alias.
    fn forget(&mut self, key: &Key, alias: Option<Key>) {
        let loose = Loose::of(key);
        if let Some(pos) = self.by_query.find(loose.mix(), |g| g.key == loose) {
            let group = self.by_query.at_mut(pos);
            let by_client = group.one.is_none();
            group.n = group.n.saturating_sub(1);
            if group.n == 0 {
                self.by_query.remove_at(pos);
            }
            if by_client {
                leave_group(&mut self.by_client, key.by_client_hash(&self.keys), ByClient::of(key));
            }
        }
        if let Some(a) = alias {
            self.aliases.remove(&a);
        }
    }

    fn response(&mut self, key: Key, side: Side, ev: &mut DnsEvent, out: &mut Vec<Transaction>) {
        let ts = ev.rec.ts_ns;
        let (i, side) = match self.waiting_key(&key, side) {
            Ok(f) => f,
            Err(recent) => {
                if let Some(f) = self.join_answer(key, side) {
                    f
                } else {
                    match recent.and_then(|r| self.pending.recent(r)) {
                        // A Both exchange completes at the client; the server's copy of a
                        // later duplicate is the same duplicate, seen earlier: count once.
                        Some(observed) if side != Side::Client && observed == Observed::Both => {}
                        Some(_) => self.stats.duplicate_answers += 1,
                        None => self.stats.unmatched_responses += 1,
                    }
                    return;
                }
            }
        };
        let Some(p) = self.pending.get_mut(i) else { return };
        // This sighting's answers moved into `server_answer` (a server-side view that completes alone).
        let mut moved = false;
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
                p.server_answer =
                    Some(ServerAnswer { rcode: ev.msg.rcode, answers: std::mem::take(&mut ev.msg.answers) });
                moved = true;
                if ev.rec.process.is_some() {
                    p.tx.server_process = ev.rec.process.take();
                }
                note_resolver(&mut p.tx, ev.dst, ev.src, ev.src_pod.as_ref());
                if p.tx.server_pod.is_none() {
                    p.tx.server_pod = ev.src_pod.take();
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
        // Completed in its slot, then moved out once (the entry is large).
        p.tx.end_ns = Some(ts);
        p.tx.rcode = Some(ev.msg.rcode);
        // The server's copy of the answers when this sighting's own moved
        // there; otherwise this sighting's (when the server saw the answer
        // too, its copy is either equal or, in a rewritten exchange, not
        // what reached the client: either way the client's is right, and
        // comparing the two cost ~90 instructions per query).
        let answers = match p.server_answer.take() {
            Some(sa) if moved => sa.answers,
            _ => std::mem::take(&mut ev.msg.answers),
        };
        // Still the empty list it was made with (nothing to drop): written
        // over rather than assigned, whose outlined drop of a
        // `Vec<Answer>` was ~20 instructions per query.
        if p.tx.answers.capacity() == 0 {
            std::mem::forget(std::mem::replace(&mut p.tx.answers, answers));
        } else {
            p.tx.answers = answers;
        }
        let (alias, observed) = (p.alias, p.tx.observed);
        let Some(pkey) = self.pending.key(i) else { return };
        self.forget(&pkey, alias);
        // The key stays in its slot, remembered; its transaction goes out.
        // SAFETY: the entry is moved out once, by `move_into`.
        self.pending.retire(i, ts, observed, |p| unsafe { Pending::move_into(p, out) });
        if let Some(a) = alias {
            self.pending.remember(a, ts, observed);
        }
    }

    #[inline]
    fn prune_recent(&mut self, now: u64) {
        while self.pending.oldest_recent().saturating_add(RECENT_WINDOW_NS) < now {
            self.pending.pop_recent();
        }
    }

    /// Reports the pending query in slot `i` as timed out if `order` is
    /// still its entry (not answered, the slot not reused by a later
    /// query); true if it did.
    fn time_out(&mut self, order: (u64, u64), i: u32, out: &mut Vec<Transaction>) -> bool {
        if !current(&self.pending, order, i) {
            return false;
        }
        let Some(key) = self.pending.key(i) else { return false };
        let Some(p) = self.pending.get_mut(i) else { return false };
        let alias = p.alias;
        p.tx.timed_out = true;
        p.tx.latency_ns = None;
        p.tx.end_ns = None;
        // The server answered but the answer never reached the client's socket
        // (dropped on the way, or the client gave up and closed it): the client
        // experienced a timeout, and the rcode shows what it would have received.
        if let Some(sa) = p.server_answer.take() {
            p.tx.rcode = Some(sa.rcode);
            p.tx.answers = sa.answers;
        }
        // SAFETY: the entry is moved out once, by `move_into`.
        self.pending.remove_with(i, |p| unsafe { Pending::move_into(p, out) });
        self.forget(&key, alias);
        true
    }

    fn evict_oldest(&mut self, out: &mut Vec<Transaction>) {
        while let Some((ts, seq, i)) = self.order.pop_front() {
            if self.time_out((ts, seq), i, out) {
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// Reports queries older than the timeout at `now_ns` as timed out.
    #[inline]
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        // Replays tick once per record, and nearly always nothing is due:
        // two comparisons, without a call.
        let window = self.pending.oldest_recent().saturating_add(RECENT_WINDOW_NS) < now_ns;
        let timeout = self.order.front().is_some_and(|&(ts, _, _)| ts.saturating_add(self.cfg.timeout_ns) <= now_ns);
        if window || timeout {
            self.expire_due(now_ns, out);
        }
    }

    fn expire_due(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        self.prune_recent(now_ns);
        while let Some((ts, _, _)) = self.order.front() {
            if ts.saturating_add(self.cfg.timeout_ns) > now_ns {
                break;
            }
            let Some((ts, seq, i)) = self.order.pop_front() else { break };
            self.time_out((ts, seq), i, out);
        }
    }

    /// End of input: every query still waiting is reported as unanswered.
    pub fn finish(&mut self, out: &mut Vec<Transaction>) {
        while let Some((ts, seq, i)) = self.order.pop_front() {
            self.time_out((ts, seq), i, out);
        }
        self.pending.clear_recent();
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

/// Whether slot `i` still holds the query queued with `order`.
fn current(pending: &Slots<Key, Pending, Observed>, order: (u64, u64), i: u32) -> bool {
    pending.get(i).is_some_and(|p| p.order == order)
}

/// One more lookup (in slot `i`) under `k`, hashed `h`, in a join index.
fn join_group<K: Copy + Eq>(index: &mut Table<Group<K>>, hash: u64, key: K, slot: u32) {
    let (pos, added) = index.find_or_insert(hash, |g| g.key == key, || Group { key, one: Some(slot), n: 1 });
    if !added {
        let group = index.at_mut(pos);
        group.n += 1;
        group.one = None;
    }
}

/// One fewer lookup under `k` in a join index.
fn leave_group<K: Copy + Eq>(index: &mut Table<Group<K>>, hash: u64, key: K) {
    if let Some(pos) = index.find(hash, |g| g.key == key) {
        let group = index.at_mut(pos);
        group.n = group.n.saturating_sub(1);
        if group.n == 0 {
            index.remove_at(pos);
        }
    }
}

/// The resolver's side of an exchange between `client` and `server` (a
/// sighting at the resolver's socket).
fn note_resolver(tx: &mut Transaction, client: Endpoint, server: Endpoint, pod: Option<&crate::enrich::PodRef>) {
    tx.resolver.get_or_insert(server);
    tx.resolver_client.get_or_insert(client);
    if tx.resolver_pod.is_none() {
        tx.resolver_pod = pod.cloned();
    }
}

/// The client-side facts only the client's egress sighting carries
/// (taken out of it).
fn fill_client(tx: &mut Transaction, ev: &mut DnsEvent) {
    tx.process = ev.rec.process.take();
    tx.netns = ev.rec.netns_ino;
    tx.cgroup_id = ev.rec.cgroup_id;
    if ev.rec.node.is_some() {
        tx.node = ev.rec.node.take();
    }
    if ev.src_pod.is_some() {
        tx.client_pod = ev.src_pod.take();
    }
}

/// Constructors of synthetic events and transactions for tests in `analyze`.
#[cfg(test)]
pub(crate) mod test_util {
    use std::{net::IpAddr, sync::Arc};

    use crate::{
        analyze::{Observed, Transaction},
        decode::{DnsEvent, DnsMessage, dns::Answer},
        enrich::PodRef,
        event::{Endpoint, Hook, PacketInfo, Process, Transport},
    };

    pub(crate) const MS: u64 = 1_000_000;

    pub(crate) fn ep(s: &str) -> Endpoint {
        let (ip, port) = s.rsplit_once(':').unwrap();
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port: port.parse().unwrap() }
    }

    pub(crate) fn pod(ns: &str, name: &str) -> PodRef {
        PodRef::new(Arc::from(ns), Arc::from(name), None)
    }

    pub(crate) fn process(pid: u32, comm: &str) -> Process {
        Process { pid, tid: pid, comm: comm.into(), thread: comm.into() }
    }

    pub(crate) fn answer_a(name: &str) -> Answer {
        Answer { name: name.into(), rtype: crate::model::RType(1), ttl: 30, data: "10.0.0.7".into() }
    }

    /// One DNS message seen at `hook`, from `src` to `dst`.
    #[allow(clippy::too_many_arguments, reason = "a test builder: every field of a DNS sighting, by position")]
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
            rec: PacketInfo::bare(ts_ns, hook),
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
                qname: qname.into(),
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
        let rec = &mut ev.rec;
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
            resolver: None,
            resolver_client: None,
            resolver_pod: None,
            transport: Transport::Udp,
            id: 1,
            qname: qname.into(),
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
        assert_eq!(out.iter().map(|t| &*t.qname).collect::<Vec<_>>(), ["b.x", "a.x"]);
        assert!(out[1].timed_out && out[1].rcode.is_none());
        assert_eq!(p.stats().evicted, 1);
        let mut out = Vec::new();
        p.expire(2003 * MS, &mut out);
        assert_eq!(out.iter().map(|t| &*t.qname).collect::<Vec<_>>(), ["c.x"]);
        p.finish(&mut out);
        assert_eq!(out.iter().map(|t| &*t.qname).collect::<Vec<_>>(), ["c.x", "d.x"]);
        assert!(out.iter().all(|t| t.timed_out && t.latency_ns.is_none()));
        assert_eq!(p.inflight(), 0);
    }

    /// The join indexes hold one entry per waiting query at most: with the
    /// in-flight cap reached, every eviction is counted and they stay
    /// within the cap; answered and evicted lookups leave them.
    #[test]
    fn join_indexes_stay_within_the_inflight_cap() {
        let cfg = PairConfig { timeout_ns: 2000 * MS, max_inflight: 8 };
        let mut p = Pairer::new(cfg);
        let mut out = Vec::new();
        for id in 0..1000u16 {
            let t = u64::from(id) * MS;
            let name = format!("n{}.x", id % 3);
            p.push(&event(t, Hook::SocketEgress, C, S, id, &name, 1, None), &mut out);
            if id % 2 == 0 {
                p.push(&event(t + 1, Hook::SocketIngress, S, C, id, &name, 1, Some((0, 1))), &mut out);
            }
            assert!(p.inflight() <= 8 && p.by_client.len() <= 8 && p.by_query.len() <= 8);
        }
        // 500 answered; of the 500 unanswered, 8 still wait.
        assert_eq!((p.stats().evicted, p.inflight()), (492, 8));
        assert_eq!(out.iter().filter(|t| t.timed_out).count(), 492);
        p.finish(&mut out);
        assert_eq!(out.len(), 1000);
        assert!(p.by_client.is_empty() && p.by_query.is_empty() && p.inflight() == 0);
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

    // ---- Service DNAT / SNAT: one lookup, two addresses ----

    const VIP: &str = "10.96.0.10:53";
    const POD: &str = "10.244.1.10:53";
    const REMOTE_POD: &str = "10.244.2.10:53";

    /// The client's view: C → VIP, answer VIP → C (rewritten back by conntrack).
    fn client_view(t0: u64, c: &str, id: u16, q: &str, answer_at: Option<u64>) -> Vec<DnsEvent> {
        let mut qe = with_proc(event(t0, Hook::SocketEgress, c, VIP, id, q, 1, None), process(10, "getent"), 99);
        qe.src_pod = Some(pod("critical-app", "client"));
        let mut v = vec![qe];
        if let Some(t) = answer_at {
            v.push(event(t, Hook::SocketIngress, VIP, c, id, q, 1, Some((0, 1))));
        }
        v
    }

    /// The resolver's view: `src` → resolver pod, answer resolver pod → `src`.
    fn resolver_view(t0: u64, src: &str, resolver: &str, id: u16, q: &str, answer_at: Option<u64>) -> Vec<DnsEvent> {
        let mut qi = event(t0, Hook::SocketIngress, src, resolver, id, q, 1, None);
        qi.dst_pod = Some(pod("kube-system", "coredns-b"));
        qi.src_pod = src.starts_with("10.244.").then(|| pod("critical-app", "client"));
        let mut v = vec![qi];
        if let Some(t) = answer_at {
            let mut a = with_proc(
                event(t, Hook::SocketEgress, resolver, src, id, q, 1, Some((0, 1))),
                process(20, "coredns"),
                55,
            );
            a.src_pod = Some(pod("kube-system", "coredns-b"));
            v.push(a);
        }
        v
    }

    fn sorted(mut evs: Vec<DnsEvent>) -> Vec<DnsEvent> {
        evs.sort_by_key(|e| e.rec.ts_ns);
        evs
    }

    fn assert_joined(t: &Transaction, client: &str, resolver: &str, resolver_client: &str) {
        assert_eq!(t.observed, Observed::Both, "{t:#?}");
        assert_eq!(t.client, ep(client));
        assert_eq!(t.server, ep(VIP), "the address the client asked");
        assert_eq!(t.resolver, Some(ep(resolver)));
        assert_eq!(t.resolver_client, Some(ep(resolver_client)));
        assert_eq!(t.resolver_pod.as_ref().map(ToString::to_string).as_deref(), Some("kube-system/coredns-b"));
        assert_eq!(t.server_pod.as_ref().map(ToString::to_string).as_deref(), Some("kube-system/coredns-b"));
        assert_eq!(t.client_pod.as_ref().map(ToString::to_string).as_deref(), Some("critical-app/client"));
        assert_eq!(t.process.as_ref().map(|p| p.pid), Some(10));
        assert_eq!(t.server_process.as_ref().map(|p| p.pid), Some(20));
        assert_eq!((t.rcode, t.timed_out, t.netns), (Some(0), false, 99));
    }

    #[test]
    fn dnat_views_join_into_one_transaction() {
        // Client on one node, resolver pod on another: two captures merged by time.
        let evs = sorted(
            [client_view(0, C, 7, Q, Some(4 * MS)), resolver_view(MS, C, REMOTE_POD, 7, Q, Some(3 * MS))].concat(),
        );
        let (out, mut p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1, "one lookup, one transaction: {out:#?}");
        assert_joined(&out[0], C, REMOTE_POD, C);
        assert_eq!(out[0].latency_ns, Some(4 * MS), "latency as the client experienced it");
        let st = p.stats();
        assert_eq!((st.joined_views, st.ambiguous_views, st.unmatched_responses), (1, 0, 0));
        let mut rest = Vec::new();
        p.finish(&mut rest);
        assert!(rest.is_empty() && p.aliases.is_empty() && p.by_client.is_empty() && p.by_query.is_empty());
    }

    #[test]
    fn dnat_join_when_the_resolver_view_comes_first() {
        // Clock skew between two nodes' captures: the resolver's sighting first.
        let mut evs = resolver_view(0, C, REMOTE_POD, 7, Q, None);
        evs.extend(client_view(MS, C, 7, Q, None));
        evs.extend(resolver_view(0, C, REMOTE_POD, 7, Q, Some(2 * MS)).split_off(1));
        evs.extend(client_view(0, C, 7, Q, Some(3 * MS)).split_off(1));
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_joined(&out[0], C, REMOTE_POD, C);
        assert_eq!(out[0].latency_ns, Some(2 * MS));
        assert_eq!(p.stats().joined_views, 1);
    }

    #[test]
    fn snat_views_join_and_late_copies_are_duplicates() {
        // The path masquerades: the resolver sees the node's address.
        let node = "192.168.77.11:61000";
        let mut evs = sorted(
            [client_view(0, C, 7, Q, Some(4 * MS)), resolver_view(MS, node, REMOTE_POD, 7, Q, Some(3 * MS))].concat(),
        );
        // The resolver answers again (a duplicate), after the lookup completed.
        evs.extend(resolver_view(0, node, REMOTE_POD, 7, Q, Some(5 * MS)).split_off(1));
        evs.extend(client_view(0, C, 7, Q, Some(5 * MS + 1)).split_off(1));
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_joined(&out[0], C, REMOTE_POD, node);
        assert_eq!((p.stats().duplicate_answers, p.stats().unmatched_responses), (1, 0));
    }

    #[test]
    fn two_clients_with_one_id_and_name_stay_apart() {
        let c2 = "10.244.1.21:40000";
        // DNAT keeps the client address: each resolver view finds its own client.
        let evs = sorted(
            [
                client_view(0, C, 7, Q, Some(4 * MS)),
                client_view(MS / 2, c2, 7, Q, Some(5 * MS)),
                resolver_view(MS, c2, REMOTE_POD, 7, Q, Some(2 * MS)),
                resolver_view(MS + 1, C, REMOTE_POD, 7, Q, Some(3 * MS)),
            ]
            .concat(),
        );
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 2, "{out:#?}");
        for t in &out {
            assert_eq!(t.resolver_client, Some(t.client), "{t:#?}");
            assert_eq!(t.observed, Observed::Both);
        }
        assert_eq!(p.stats().joined_views, 2);

        // SNAT hides the client address: two candidates, no guess.
        let n1 = "192.168.77.11:61000";
        let n2 = "192.168.77.11:61001";
        let evs = sorted(
            [
                client_view(0, C, 7, Q, Some(4 * MS)),
                client_view(MS / 2, c2, 7, Q, Some(5 * MS)),
                resolver_view(MS, n1, REMOTE_POD, 7, Q, Some(2 * MS)),
                resolver_view(MS + 1, n2, REMOTE_POD, 7, Q, Some(3 * MS)),
            ]
            .concat(),
        );
        let (out, p) = run(&evs, PairConfig::default());
        let clients: Vec<_> = out.iter().filter(|t| t.observed == Observed::Client).collect();
        assert_eq!(clients.len(), 2, "{out:#?}");
        assert!(clients.iter().all(|t| t.resolver.is_none()));
        assert_eq!((p.stats().joined_views, p.stats().ambiguous_views), (0, 2));
    }

    #[test]
    fn a_different_name_or_a_pod_source_is_not_joined() {
        // Same id, other name: two lookups.
        let evs = sorted(
            [client_view(0, C, 7, Q, Some(4 * MS)), resolver_view(MS, C, REMOTE_POD, 7, "other.example", Some(3 * MS))]
                .concat(),
        );
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 2);
        assert_eq!(p.stats().joined_views, 0);
        // Another pod asking the resolver directly is not an SNAT of this client.
        let evs = sorted(
            [
                client_view(0, C, 7, Q, Some(4 * MS)),
                resolver_view(MS, "10.244.2.30:5000", REMOTE_POD, 7, Q, Some(3 * MS)),
            ]
            .concat(),
        );
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 2);
        assert_eq!(p.stats().joined_views, 0);
    }

    #[test]
    fn dnat_timeout_names_the_waiting_client_and_the_resolver() {
        // The resolver got the query and answered SERVFAIL, but nothing reached the client.
        let mut evs = client_view(0, C, 7, Q, None);
        evs.extend(resolver_view(MS, C, POD, 7, Q, None));
        let (out, mut p) = run(&evs, PairConfig::default());
        assert!(out.is_empty());
        let mut out = Vec::new();
        p.finish(&mut out);
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert!(t.timed_out);
        assert_eq!((t.client, t.server, t.resolver), (ep(C), ep(VIP), Some(ep(POD))));
        assert_eq!(t.process.as_ref().map(|p| p.pid), Some(10));
        assert!(p.aliases.is_empty() && p.by_client.is_empty() && p.by_query.is_empty());
    }

    #[test]
    fn answer_from_the_service_address_joins_a_query_rewritten_before_egress() {
        // DNAT on the client's own `output` hook: its egress already shows
        // the pod, the answer comes back from the Service address.
        let mut q = with_proc(event(0, Hook::SocketEgress, C, POD, 7, Q, 1, None), process(10, "getent"), 99);
        q.dst_pod = Some(pod("kube-system", "coredns-b"));
        let evs = [
            q,
            event(MS / 10, Hook::SocketIngress, C, POD, 7, Q, 1, None),
            event(2 * MS, Hook::SocketEgress, POD, C, 7, Q, 1, Some((0, 1))),
            event(3 * MS, Hook::SocketIngress, VIP, C, 7, Q, 1, Some((0, 1))),
        ];
        let (out, mut p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1, "{out:#?}");
        let t = &out[0];
        assert_eq!((t.server, t.resolver, t.timed_out), (ep(VIP), Some(ep(POD)), false));
        assert_eq!((t.latency_ns, t.observed), (Some(3 * MS), Observed::Both));
        assert_eq!((p.stats().joined_views, p.stats().unmatched_responses), (1, 0));
        let mut rest = Vec::new();
        p.finish(&mut rest);
        assert!(rest.is_empty() && p.aliases.is_empty());
        // An answer from elsewhere to a client with two such lookups (musl
        // asking two nameservers with one id) is not guessed.
        let evs = [
            event(0, Hook::SocketEgress, C, POD, 7, Q, 1, None),
            event(1, Hook::SocketEgress, C, REMOTE_POD, 7, Q, 1, None),
            event(3 * MS, Hook::SocketIngress, VIP, C, 7, Q, 1, Some((0, 1))),
        ];
        let (out, p) = run(&evs, PairConfig::default());
        assert!(out.is_empty());
        assert_eq!(p.stats().unmatched_responses, 1);
    }

    #[test]
    fn wire_captures_join_pre_and_post_dnat_copies() {
        // tcpdump on the node bridge: the query before DNAT (to the Service)
        // and after (to the pod), the answer before and after un-DNAT.
        let mut evs = vec![
            event(0, Hook::Wire, C, VIP, 9, Q, 1, None),
            event(10, Hook::Wire, C, POD, 9, Q, 1, None),
            event(2 * MS, Hook::Wire, POD, C, 9, Q, 1, Some((0, 1))),
            event(2 * MS + 10, Hook::Wire, VIP, C, 9, Q, 1, Some((0, 1))),
        ];
        evs[1].dst_pod = Some(pod("kube-system", "coredns-b"));
        evs[2].src_pod = Some(pod("kube-system", "coredns-b"));
        let (out, p) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!((out[0].server, out[0].resolver), (ep(VIP), Some(ep(POD))));
        assert_eq!(out[0].latency_ns, Some(2 * MS + 10));
        assert_eq!(p.stats().joined_views, 1);
        // Without pod knowledge two destinations may be two nameservers (musl): kept apart.
        for e in &mut evs {
            e.src_pod = None;
            e.dst_pod = None;
        }
        let (out, _) = run(&evs, PairConfig::default());
        assert_eq!(out.len(), 2);
    }
}
