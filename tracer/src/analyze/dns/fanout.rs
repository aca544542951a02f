//! Search-list fan-out: a name resolved (or not) by walking the resolv.conf
//! search list, one failing suffix after another.
//!
//! Transactions arrive in completion order, not start order (see the module
//! above): chains are formed when their answer arrives and kept open until
//! they are complete or settled.

use super::*;

/// Sends closer together than this are one resolver step (A and AAAA in parallel).
pub(super) const PARALLEL_NS: u64 = 50_000_000;
/// Most attempts listed in one finding.
pub(super) const MAX_CHAIN_ATTEMPTS: usize = 64;

#[derive(Debug)]
pub(super) struct Chain {
    pub(super) base: String,
    /// Hash of the base's first label ([`Att::fh`]): every candidate, and
    /// any name that extends the base, starts with that label, so most
    /// attempts are ruled out without comparing names or hashes of
    /// candidates (a `strip_prefix` per open chain per failed attempt was
    /// ~130 instructions per transaction, callgrind).
    pub(super) base_fh: u64,
    /// Every name the resolver would try, in order.
    pub(super) candidates: Vec<String>,
    /// Their hashes ([`Att::nh`]): every transaction of the client is
    /// matched against every open chain's candidates.
    pub(super) cand_h: Vec<u64>,
    /// Index in `candidates` of the one that answered.
    pub(super) answered: usize,
    pub(super) search: Vec<String>,
    pub(super) conf: Option<Arc<Conf>>,
    /// No resolv.conf: the answered name is the literal base and the suffixes
    /// are learnt from the attempts.
    pub(super) inferred_literal: bool,
    /// One try's timeout (`options timeout:`).
    pub(super) try_ns: u64,
    pub(super) window_start: u64,
    pub(super) window_end: u64,
    pub(super) atts: Vec<Att>,
    pub(super) deadline: u64,
    pub(super) last_activity: u64,
}

impl Chain {
    /// Where the name hashed to `nh` is in the walk, up to the answered one.
    pub(super) fn index(&self, nh: u64) -> Option<usize> {
        self.cand_h.iter().take(self.answered + 1).position(|&c| c == nh)
    }

    /// With observed evidence: every candidate up to the answered one has an
    /// attempt of every query type the walk used.
    pub(super) fn complete(&self) -> bool {
        if self.conf.as_ref().is_none_or(|c| c.parsed.is_none()) {
            return false;
        }
        // After a timeout the resolver moves on within one try's timeout; a
        // longer silence means a retry (next nameserver, next attempt) that
        // the pairer has not reported yet.
        let max_gap = self.try_ns.saturating_add(self.try_ns / 2).saturating_add(PARALLEL_NS);
        let gap_explained = self.atts.iter().filter(|e| e.tx.timed_out).all(|e| {
            self.atts
                .iter()
                .map(|b| b.tx.ts_ns)
                .filter(|&t| t > e.tx.ts_ns)
                .min()
                .is_some_and(|t| t - e.tx.ts_ns <= max_gap)
        });
        if !gap_explained {
            return false;
        }
        // A walk uses one or two query types: a list, not a (SipHash) set.
        let mut qtypes: Vec<u16> = Vec::with_capacity(2);
        for a in &self.atts {
            if !qtypes.contains(&a.tx.qtype) {
                qtypes.push(a.tx.qtype);
            }
        }
        self.cand_h
            .iter()
            .take(self.answered + 1)
            .all(|&c| qtypes.iter().all(|qt| self.atts.iter().any(|a| a.nh == c && a.tx.qtype == *qt)))
    }
}

/// A client's attempts not (yet) part of a chain, in start order, with an
/// index of their names so chain formation costs O(candidates), not O(buffer).
/// The indexes count by the names' seeded hashes ([`Att::nh`], [`Att::fh`]):
/// a name is hashed once when first seen, not per buffer operation (and the
/// first label was a `String` allocated per buffered attempt).
#[derive(Debug, Default)]
pub(super) struct Buf {
    pub(super) atts: VecDeque<Att>,
    pub(super) names: PreHashedMap<u64, u32>,
    /// Every name of a walk starts with the base's first label.
    pub(super) first_labels: PreHashedMap<u64, u32>,
}

impl Buf {
    pub(super) fn len(&self) -> usize {
        self.atts.len()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.atts.is_empty()
    }
    pub(super) fn get(&self, i: usize) -> Option<&Att> {
        self.atts.get(i)
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = &Att> {
        self.atts.iter()
    }
    /// Whether a buffered attempt has the name hashed to `nh`.
    pub(super) fn has_name(&self, nh: u64) -> bool {
        self.names.contains_key(&nh)
    }
    /// Buffered attempts whose name's first label hashes to `fh`.
    pub(super) fn same_first_label(&self, fh: u64) -> u32 {
        self.first_labels.get(&fh).copied().unwrap_or(0)
    }
    pub(super) fn insert(&mut self, att: Att) {
        *self.names.entry(att.nh).or_default() += 1;
        *self.first_labels.entry(att.fh).or_default() += 1;
        // Nearly always the newest: appended (`insert` at the end went
        // through its general case, ~50 instructions more per attempt).
        if self.atts.back().is_none_or(|a| a.tx.ts_ns <= att.tx.ts_ns) {
            self.atts.push_back(att);
        } else {
            let pos = self.atts.partition_point(|a| a.tx.ts_ns <= att.tx.ts_ns);
            self.atts.insert(pos, att);
        }
    }
    fn forget(&mut self, a: &Att) {
        for (map, h) in [(&mut self.names, a.nh), (&mut self.first_labels, a.fh)] {
            if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(h) {
                *e.get_mut() = e.get().saturating_sub(1);
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
    pub(super) fn remove(&mut self, i: usize) -> Option<Att> {
        let a = self.atts.remove(i)?;
        self.forget(&a);
        Some(a)
    }
    pub(super) fn pop_front(&mut self) -> Option<Att> {
        self.remove(0)
    }
    pub(super) fn front_ts(&self) -> Option<u64> {
        self.atts.front().map(|a| a.tx.ts_ns)
    }
}

#[derive(Debug, Default)]
pub(super) struct ClientState {
    pub(super) buf: Buf,
    pub(super) chains: Vec<Chain>,
    pub(super) last_ts: u64,
}

impl Analyzer {
    /// Reports the walks that can no longer grow; forgets idle clients.
    pub(super) fn expire_chains(&mut self, now: u64, keep_ns: u64, out: &mut Vec<Finding>) {
        let mut ready = Vec::new();
        for st in self.clients.values_mut() {
            let grace = self.cfg.grace_ns;
            // The times first: `complete` walks every attempt, and most
            // open chains are still in their grace time. In place: most
            // scans report nothing.
            let mut k = 0;
            while let Some(c) = st.chains.get(k) {
                if now >= c.deadline || (now >= c.last_activity.saturating_add(grace) && c.complete()) {
                    ready.push(st.chains.remove(k));
                } else {
                    k += 1;
                }
            }
            // Walks that no name answered: once their last candidate has
            // settled, every attempt before it is known.
            let mut i = 0;
            while let Some(l) = st.buf.get(i) {
                if settled_at(&self.cfg, l.tx.ts_ns) > now {
                    break;
                }
                let maybe_end = !l.checked && st.buf.same_first_label(l.fh) > 1 && {
                    let prefix = format!("{}.", l.lname);
                    st.buf.iter().any(|a| a.lname.starts_with(&prefix))
                };
                if let Some(a) = st.buf.atts.get_mut(i) {
                    a.checked = true;
                }
                let Some(term) = maybe_end.then(|| st.buf.get(i).cloned()).flatten() else {
                    i += 1;
                    continue;
                };
                let conf = lookup_conf(&self.by_pid, &self.by_netns, &term.tx);
                if let Some(ch) = form_chain(&self.cfg, &self.names, conf, &term, &mut st.buf, true) {
                    let pos = st.buf.atts.iter().position(|a| a.tx == term.tx);
                    if let Some(pos) = pos {
                        st.buf.remove(pos);
                    }
                    ready.push(ch);
                    i = 0;
                } else {
                    i += 1;
                }
            }
            while st.buf.front_ts().is_some_and(|ts| ts.saturating_add(keep_ns) < now) {
                st.buf.pop_front();
            }
        }
        self.clients
            .retain(|_, st| !(st.chains.is_empty() && st.buf.is_empty() && st.last_ts.saturating_add(keep_ns) < now));
        // Clients are visited in hash order, which is seeded per run: report
        // in walk order so a replay prints the same lines every time.
        ready.sort_by_cached_key(|c| {
            (c.atts.iter().map(|a| a.tx.ts_ns).min().unwrap_or(c.window_start), c.base.clone())
        });
        for c in ready {
            self.emit_chain(c, out);
        }
    }

    pub(super) fn fanout<T: TxIn>(&mut self, att: NewAtt<T>, key: &ClientKey, out: &mut Vec<Finding>) {
        // Looked up only when full: `entry` below is the one lookup otherwise.
        if self.clients.len() >= self.cfg.max_clients.max(1) && !self.clients.contains_key(key) {
            self.evict_client(out);
        }
        // A known client (nearly every transaction) is found without
        // handing its key over: `entry` took it and dropped it again (~40
        // instructions more per transaction, callgrind); the limits are
        // borrowed, not copied.
        let cfg = &self.cfg;
        let st = match self.clients.get_mut(key) {
            Some(st) => st,
            None => self.clients.entry(key.clone()).or_default(),
        };
        let t = att.tx();
        let ts = t.ts_ns;
        st.last_ts = st.last_ts.max(ts);
        let att_failed = failed(t);
        for ch in &mut st.chains {
            // Every candidate of a walk, and every name the branches below
            // take, starts with the base's first label: an attempt with
            // another one is no part of it (per open chain, a hash compare
            // instead of a search of the candidates; ~16 open chains per
            // client on the benchmark capture).
            if att.fh != ch.base_fh {
                continue;
            }
            if ch.index(att.nh).is_some()
                && (ch.window_start..=ch.window_end).contains(&ts)
                && may_join(&ch.atts, &att.lname, t.qtype, ts, ch.try_ns, t.timed_out)
            {
                ch.deadline = ch.deadline.max(settled_at(cfg, ts));
                ch.last_activity = self.now;
                if ch.atts.len() < MAX_CHAIN_ATTEMPTS {
                    ch.atts.push(att.keep());
                }
                return;
            }
            // Without resolv.conf the search list is only known from the
            // attempts: a late timed-out `base.suffix` adds a suffix.
            if ch.inferred_literal
                && att_failed
                && (ch.window_start..=ch.window_end).contains(&ts)
                && ch.candidates.len() < MAX_CHAIN_ATTEMPTS
                && let Some(s) = att.lname.strip_prefix(ch.base.as_str()).and_then(|s| s.strip_prefix('.'))
                && !s.is_empty()
            {
                ch.search.push(s.to_owned());
                ch.candidates.insert(ch.answered, att.lname.to_string());
                ch.cand_h.insert(ch.answered, att.nh);
                ch.answered += 1;
                ch.deadline = ch.deadline.max(settled_at(cfg, ts));
                ch.last_activity = self.now;
                ch.atts.push(att.keep());
                return;
            }
        }
        if att_failed {
            if st.buf.len() >= cfg.max_attempts_per_client.max(1) {
                st.buf.pop_front();
                self.stats.attempts_dropped += 1;
            }
            // Keep the buffer in start order: timed-out attempts arrive late.
            st.buf.insert(att.keep());
            return;
        }
        // Every walk's names start with the answered name's first label:
        // with none buffered no walk ends here, and the answer is not kept
        // (what `form_chain` would find, without sharing the transaction).
        if st.buf.same_first_label(att.fh) == 0 {
            return;
        }
        let att = att.keep();
        let conf = lookup_conf(&self.by_pid, &self.by_netns, &att.tx);
        let Some(mut chain) = form_chain(cfg, &self.names, conf, &att, &mut st.buf, false) else { return };
        chain.last_activity = self.now;
        st.chains.push(chain);
        if st.chains.len() > cfg.max_chains_per_client.max(1) {
            let oldest = st.chains.remove(0);
            self.stats.chains_evicted += 1;
            self.emit_chain(oldest, out);
        }
    }

    pub(super) fn evict_client(&mut self, out: &mut Vec<Finding>) {
        let Some(oldest) = self.clients.iter().min_by_key(|(_, s)| s.last_ts).map(|(k, _)| k.clone()) else {
            return;
        };
        self.stats.clients_evicted += 1;
        if let Some(st) = self.clients.remove(&oldest) {
            for c in st.chains {
                self.emit_chain(c, out);
            }
        }
    }

    pub(super) fn report_chain(&self, mut ch: Chain) -> Option<SearchFanout> {
        ch.atts.sort_by_key(|a| a.tx.ts_ns);
        let first = ch.atts.first()?;
        let start = first.tx.ts_ns;
        let answered_name = ch.candidates.get(ch.answered)?.clone();
        let ok: Vec<&Att> = ch.atts.iter().filter(|a| *a.lname == *answered_name).collect();
        let failed: Vec<&Att> = ch.atts.iter().filter(|a| *a.lname != *answered_name).collect();
        if failed.is_empty() {
            return None;
        }
        let final_att = ok.iter().find(|a| !a.failed()).or(ok.first()).copied();
        let end = ok
            .iter()
            .filter_map(|a| a.tx.end_ns)
            .max()
            .or_else(|| final_att.and_then(|a| a.tx.end_ns))
            .unwrap_or(start);
        let total = end.saturating_sub(start);
        let ok_time = union_len(ok.iter().map(|a| (a.tx.ts_ns, a.tx.end_ns.unwrap_or(a.tx.ts_ns))));
        let wasted = total.saturating_sub(ok_time);

        let conf = ch.conf.as_ref().and_then(|c| c.parsed.as_ref());
        let attempts = ch
            .atts
            .iter()
            .map(|a| Attempt {
                qname: a.lname.to_string(),
                qtype: qtype_name(a.tx.qtype),
                rcode: a.tx.rcode.map(rcode_name),
                latency_ms: a.tx.latency_ns.map(ms),
                timed_out: a.tx.timed_out,
                start_ms: ms(a.tx.ts_ns.saturating_sub(start)),
                retransmits: a.tx.retransmits,
            })
            .collect();
        // What the condensing stage reads of a walk; the rest is filled in
        // below, unless it will only count this one.
        let mut sf = SearchFanout {
            ts_ns: start,
            node: first.tx.node.clone(),
            pod: first.tx.client_pod.as_ref().map(ToString::to_string),
            process: ch.atts.iter().find_map(|a| a.tx.process.clone()),
            client: first.tx.client,
            server: first.tx.server,
            base_name: ch.base.clone(),
            attempts,
            answered_by: final_att.filter(|a| !a.failed()).map(|a| a.lname.to_string()),
            answers: Vec::new(),
            total_ms: ms(total),
            wasted_ms: ms(wasted),
            ndots: conf.map(|c| c.ndots),
            search: Vec::new(),
            nameservers: Vec::new(),
            options: Vec::new(),
            resolv_conf_source: if conf.is_some() { "observed" } else { "inferred" },
            resolv_conf_path: None,
            resolv_conf_error: None,
            timed_out_suffixes: Vec::new(),
            forwarded_upstream: Vec::new(),
            cause: String::new(),
            advice: Vec::new(),
        };
        // A fast walk is only counted by the condensing stage: its cause,
        // advice and upstream lookups would be formatted for nothing
        // (most of a busy node's walks).
        if self.cfg.fold_fast_ns.is_some_and(|slow_ns| !crate::analyze::condense::walk_is_slow(&sf, slow_ns)) {
            return Some(sf);
        }
        let per_try_ns = conf.map_or(5_000_000_000, |c| u64::from(c.timeout_s) * 1_000_000_000);
        // A timed-out attempt cost the client the time until it moved on to
        // another candidate.
        let effective_end = |a: &Att| -> u64 {
            a.tx.end_ns.unwrap_or_else(|| {
                ch.atts
                    .iter()
                    .filter(|b| b.lname != a.lname && b.tx.ts_ns > a.tx.ts_ns)
                    .map(|b| b.tx.ts_ns)
                    .min()
                    .unwrap_or_else(|| a.tx.ts_ns.saturating_add(per_try_ns).min(end.max(a.tx.ts_ns)))
            })
        };
        let suffix_of = |lname: &str| -> String {
            lname.strip_prefix(ch.base.as_str()).and_then(|s| s.strip_prefix('.')).unwrap_or(lname).to_owned()
        };
        // (suffix, timeouts, cost) in walk order.
        let mut slow: Vec<(String, u32, u64)> = Vec::new();
        for a in failed.iter().filter(|a| a.tx.timed_out) {
            let s = suffix_of(&a.lname);
            if !slow.iter().any(|(x, _, _)| *x == s) {
                let mine: Vec<&&Att> = failed.iter().filter(|b| b.lname == a.lname).collect();
                let n = mine.iter().filter(|b| b.tx.timed_out).count() as u32;
                let cost = union_len(mine.iter().map(|b| (b.tx.ts_ns, effective_end(b))));
                slow.push((s, n, cost));
            }
        }
        let forwarded_upstream: Vec<ForwardedUpstream> = failed
            .iter()
            .filter(|a| a.tx.timed_out || a.tx.rcode == Some(RCODE_SERVFAIL))
            .filter_map(|a| self.forwarded_for(&a.lname))
            .fold(Vec::new(), |mut v, f| {
                if !v.contains(&f) {
                    v.push(f);
                }
                v
            });

        let literal = ch.answered + 1 == ch.candidates.len() && answered_name == ch.base;
        let tried: Vec<String> = {
            let mut v: Vec<String> = Vec::new();
            for a in &failed {
                let s = suffix_of(&a.lname);
                if !v.contains(&s) {
                    v.push(s);
                }
            }
            v
        };
        let d = dots(&ch.base);
        let mut cause = match conf {
            Some(c) if dots(&ch.base) < usize::from(c.ndots) => format!(
                "{} has {d} dot{} < ndots:{}, so the resolver tried {} search suffix{} first",
                ch.base,
                plural(d),
                c.ndots,
                tried.len(),
                if tried.len() == 1 { "" } else { "es" }
            ),
            Some(_) => format!("{} was tried literally, then with {} search suffixes", ch.base, tried.len()),
            None => format!(
                "{} has {d} dot{}, fewer than the resolver's ndots (resolv.conf not seen; inferred from the queries), so {} search suffix{} were tried first",
                ch.base,
                plural(d),
                tried.len(),
                if tried.len() == 1 { "" } else { "es" }
            ),
        };
        if final_att.is_none_or(Att::failed) {
            let rc = final_att.and_then(|a| a.tx.rcode).map_or_else(|| "no answer".to_owned(), rcode_name);
            let _ = write!(cause, "; no name answered (the literal {answered_name} got {rc})");
        } else if !literal {
            let _ = write!(cause, "; {answered_name} answered");
        }
        for (s, n, cost) in &slow {
            let fwd = forwarded_upstream
                .iter()
                .find(|f| f.qname.ends_with(&format!(".{s}")))
                .map_or(String::new(), |f| format!(" was forwarded upstream to {} and", f.upstream));
            let _ =
                write!(cause, "; *.{s}{fwd} timed out {} ({:.1} s of {:.1} s)", times(*n), secs(*cost), secs(total));
        }
        let advice = fanout_advice(&ch, conf, literal, &answered_name, &slow);
        let search = conf.map_or_else(|| ch.search.clone(), |c| c.search.clone());
        let src = ch.conf.as_deref();
        sf.answers = final_att.map(|a| a.tx.answers.clone()).unwrap_or_default();
        sf.search = search;
        sf.nameservers = conf.map(|c| c.nameservers.clone()).unwrap_or_default();
        sf.options = conf.map(|c| c.options.clone()).unwrap_or_default();
        sf.resolv_conf_path = src.map(|c| c.path.clone());
        sf.resolv_conf_error = src.and_then(|c| c.error.clone());
        sf.timed_out_suffixes = slow.iter().map(|(s, _, _)| s.clone()).collect();
        sf.forwarded_upstream = forwarded_upstream;
        sf.cause = cause;
        sf.advice = advice;
        Some(sf)
    }
}

/// glibc's default `options timeout:` (5 s).
pub(super) const DEFAULT_TRY_NS: u64 = 5_000_000_000;

/// Whether `a` may join a walk's attempts: a second query for the same name
/// and type only when it retries one that timed out (glibc `attempts:` on a
/// new socket, or the next nameserver) soon after; otherwise it is a new lookup.
pub(super) fn may_join(atts: &[Att], lname: &str, qtype: u16, ts: u64, try_ns: u64, timed_out: bool) -> bool {
    atts.iter().filter(|e| *e.lname == *lname && e.tx.qtype == qtype).all(|e| {
        // (start, timed out) of the earlier and the later of the two.
        let (first, second) =
            if e.tx.ts_ns <= ts { ((e.tx.ts_ns, e.tx.timed_out), ts) } else { ((ts, timed_out), e.tx.ts_ns) };
        first.1 && second > first.0 && second - first.0 <= try_ns.saturating_mul(2)
    })
}

/// Finds the walk that `term` (a NOERROR answer with data) ends, taking its
/// earlier attempts out of `buf`.
///
/// With `literal_only`, `term` (unanswered) must be the last candidate of the
/// walk of its own name: the walk was exhausted.
pub(super) fn form_chain(
    cfg: &AnalyzerConfig,
    names: &Names,
    conf: Option<Arc<Conf>>,
    term: &Att,
    buf: &mut Buf,
    literal_only: bool,
) -> Option<Chain> {
    let q = &*term.lname;
    let rc = conf.as_ref().and_then(|c| c.parsed.as_ref()).filter(|c| !c.search.is_empty());
    let try_ns = rc.map_or(DEFAULT_TRY_NS, |c| u64::from(c.timeout_s) * 1_000_000_000);
    let (base, candidates, answered, search, per_try_ns) = if let Some(rc) = rc {
        // Every candidate of every base starts with `q`'s first label: with
        // none of those buffered, no walk can end here (the common case).
        if buf.same_first_label(term.fh) == 0 {
            return None;
        }
        let bases =
            std::iter::once(q).chain(rc.search.iter().filter(|_| !literal_only).filter_map(|s| {
                q.strip_suffix(s.as_str()).and_then(|p| p.strip_suffix('.')).filter(|p| !p.is_empty())
            }));
        // Each base's walk is scanned in one scratch string; only the best
        // one's candidates are built (a `format!` per candidate per base was
        // most of the cost of a fan-out-heavy capture).
        let mut scratch = String::new();
        let mut best: Option<(usize, &str, usize)> = None;
        for b in bases {
            let Some((idx, n, matches)) = scan_walk(rc, b, q, names, buf, &mut scratch) else { continue };
            if literal_only && idx + 1 != n {
                continue;
            }
            if best.as_ref().is_none_or(|(m, ..)| matches > *m) {
                best = Some((matches, b, idx));
            }
        }
        let (matches, b, idx) = best?;
        if matches == 0 {
            return None;
        }
        let (b, cands) = (b.to_owned(), rc.candidates(b));
        let per_try = u64::from(rc.timeout_s) * u64::from(rc.attempts) * 1_000_000_000;
        (b, cands, idx, rc.search.clone(), per_try)
    } else {
        infer_chain(q, term.fh, term.tx.ts_ns, buf, literal_only)?
    };
    // A walk is at most every candidate, tried per query type, twice (A then AAAA).
    let span = per_try_ns.saturating_mul(2 * candidates.len() as u64).saturating_add(1_000_000_000);
    let cand_h: Vec<u64> = candidates.iter().map(|c| names.hash(c)).collect();
    let window_start = term.tx.ts_ns.saturating_sub(span);
    let window_end = term.tx.ts_ns.saturating_add(span);
    // Sized for the walk (one attempt per candidate): growing it from one was a reallocation per chain.
    let mut atts: Vec<Att> = Vec::with_capacity(answered + 2);
    atts.push(term.clone());
    // Newest first, so a repeated earlier lookup of the same name stays behind.
    let mut i = buf.len();
    while i > 0 {
        i -= 1;
        let Some(a) = buf.get(i) else { break };
        let wanted = cand_h.iter().take(answered + 1).any(|&c| c == a.nh)
            && (window_start..=window_end).contains(&a.tx.ts_ns)
            && may_join(&atts, &a.lname, a.tx.qtype, a.tx.ts_ns, try_ns, a.tx.timed_out);
        if wanted && let Some(a) = buf.remove(i) {
            atts.push(a);
        }
    }
    let deadline = atts.iter().map(|a| settled_at(cfg, a.tx.ts_ns)).max().unwrap_or(0);
    let inferred_literal = rc.is_none() && *base == *term.lname;
    Some(Chain {
        inferred_literal,
        try_ns,
        base_fh: names.hash(first_label(&base)),
        base,
        candidates,
        cand_h,
        answered,
        search,
        conf,
        window_start,
        window_end,
        atts,
        deadline,
        last_activity: 0,
    })
}

/// Where `q` is in the walk of `base` (the first candidate equal to it),
/// the walk's length, and how many candidates before `q` have a buffered
/// attempt: what [`ResolvConf::candidates`] followed by a search would
/// give, without building the candidates.
fn scan_walk(
    rc: &ResolvConf,
    base: &str,
    q: &str,
    names: &Names,
    buf: &Buf,
    scratch: &mut String,
) -> Option<(usize, usize, usize)> {
    let n = rc.search.len() + 1;
    let literal_first = dots(base) >= usize::from(rc.ndots);
    let mut matches = 0;
    for k in 0..n {
        let suffix = match (literal_first, k) {
            (true, 0) => None,
            (true, k) => rc.search.get(k - 1),
            (false, k) => rc.search.get(k),
        };
        scratch.clear();
        scratch.push_str(base);
        if let Some(s) = suffix {
            scratch.push('.');
            scratch.push_str(s);
        }
        if scratch == q {
            return Some((k, n, matches));
        }
        if buf.has_name(names.hash(scratch)) {
            matches += 1;
        }
    }
    None
}

pub(super) type Inferred = (String, Vec<String>, usize, Vec<String>, u64);

/// Without resolv.conf: the answered name is the literal base and the failed
/// names are `base.suffix`; or the answered name is `prefix.suffix` after
/// failed `prefix.other-suffix` names whose suffixes end with its suffix
/// (Kubernetes search lists nest: `ns.svc.cluster.local`, `svc.cluster.local`).
pub(super) fn infer_chain(q: &str, q_fh: u64, ts: u64, buf: &Buf, literal_only: bool) -> Option<Inferred> {
    if buf.same_first_label(q_fh) == 0 {
        return None;
    }
    let lo = ts.saturating_sub(60_000_000_000);
    // Both searches below need a name sharing `q`'s first label (a
    // `q.suffix`, or a whole-label common prefix): comparing the labels'
    // hashes first skips the string work for the rest of the buffer.
    let recent = || buf.iter().filter(|a| a.fh == q_fh && a.tx.ts_ns >= lo && a.tx.ts_ns <= ts);
    let mut suffixes: Vec<String> = Vec::new();
    for a in recent() {
        if let Some(s) = a.lname.strip_prefix(q).and_then(|s| s.strip_prefix('.'))
            && !s.is_empty()
            && !suffixes.iter().any(|x| x == s)
        {
            suffixes.push(s.to_owned());
        }
    }
    if !suffixes.is_empty() {
        let mut cands: Vec<String> = Vec::with_capacity(suffixes.len() + 1);
        cands.extend(suffixes.iter().map(|s| dotted(q, s)));
        cands.push(q.to_owned());
        let idx = cands.len() - 1;
        return Some((q.to_owned(), cands, idx, suffixes, DEFAULT_TRY_NS));
    }
    if literal_only {
        return None;
    }
    let mut best: Option<(String, Vec<String>)> = None;
    // Cheap filter first: a shared prefix starts with the whole first label.
    let first = q.find('.').and_then(|i| q.get(..=i)).unwrap_or(q);
    for a in recent().filter(|a| a.lname.starts_with(first)) {
        let p = common_label_prefix(&a.lname, q);
        if p.is_empty() || p == q || p == &*a.lname {
            continue;
        }
        let (Some(sf), Some(sq)) = (a.lname.get(p.len() + 1..), q.get(p.len() + 1..)) else {
            continue;
        };
        if !ends_with_label(sf, sq) || sf == sq {
            continue;
        }
        match &mut best {
            Some((bp, v)) if bp == p => {
                if !v.iter().any(|x| x == sf) {
                    v.push(sf.to_owned());
                }
            }
            Some((bp, v)) if v.len() < 2 && p.len() > bp.len() => best = Some((p.to_owned(), vec![sf.to_owned()])),
            Some(_) => {}
            None => best = Some((p.to_owned(), vec![sf.to_owned()])),
        }
    }
    let (p, mut suffixes) = best?;
    let sq = q.get(p.len() + 1..)?.to_owned();
    let mut cands: Vec<String> = Vec::with_capacity(suffixes.len() + 1);
    cands.extend(suffixes.iter().map(|s| dotted(&p, s)));
    cands.push(q.to_owned());
    suffixes.push(sq);
    let idx = cands.len() - 1;
    Some((p, cands, idx, suffixes, DEFAULT_TRY_NS))
}

/// `name.suffix`, allocated once (`format!` was ~800 instructions a
/// candidate, most of forming a chain without resolv.conf, callgrind).
fn dotted(name: &str, suffix: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1 + suffix.len());
    s.push_str(name);
    s.push('.');
    s.push_str(suffix);
    s
}

/// `a` of `a.b.c`.
pub(super) fn first_label(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// `a.b.c` and `a.b.d` → `a.b` (whole labels only).
pub(super) fn common_label_prefix<'a>(x: &'a str, y: &str) -> &'a str {
    let mut len = 0;
    let mut xs = x.split('.');
    let mut ys = y.split('.');
    while let (Some(a), Some(b)) = (xs.next(), ys.next()) {
        if a != b {
            break;
        }
        len += a.len() + 1;
    }
    x.get(..len.saturating_sub(1)).unwrap_or("")
}

/// `name` is `suffix` or ends with `.suffix`.
pub(super) fn ends_with_label(name: &str, suffix: &str) -> bool {
    name == suffix || name.strip_suffix(suffix).is_some_and(|p| p.ends_with('.'))
}

pub(super) fn fanout_advice(
    ch: &Chain,
    conf: Option<&ResolvConf>,
    literal: bool,
    answered: &str,
    slow: &[(String, u32, u64)],
) -> Vec<String> {
    let mut advice = Vec::new();
    let fqdn = if literal { ch.base.as_str() } else { answered };
    let n = ch.candidates.iter().take(ch.answered + 1).count();
    advice.push(format!(
        "Use the fully-qualified name with a trailing dot, `{fqdn}.`, in the application's configuration: one query per record type instead of {n}."
    ));
    let d = dots(&ch.base);
    if literal && d > 0 {
        let v = d.min(2);
        advice.push(format!(
            "Lower ndots for this pod so names with {v}+ dots are tried as-is first:\n  spec:\n    dnsConfig:\n      options:\n      - name: ndots\n        value: \"{v}\""
        ));
    }
    let cluster = conf.and_then(ResolvConf::cluster_domain).unwrap_or("cluster.local");
    let foreign: Vec<&String> = ch
        .search
        .iter()
        .filter(|s| !ends_with_label(s, cluster))
        .filter(|s| slow.iter().any(|(x, _, _)| x == *s) || conf.is_some())
        .collect();
    for s in foreign {
        advice.push(format!(
            "Remove `{s}` from the search line of the node's /etc/resolv.conf, which kubelet copies into pods (or start kubelet with --resolv-conf pointing at a file without it)."
        ));
        advice.push(format!(
            "Make the cluster DNS answer *.{s} itself so it fails fast: CoreDNS `{s}:53 {{ template ANY ANY {{ rcode NXDOMAIN }} }}`, or a stub domain / forward to a server that answers."
        ));
    }
    advice
}
