//! NXDOMAIN storms: one client producing NXDOMAINs for search-suffixed
//! names at a high rate.

use std::hash::BuildHasher as _;

use super::{
    Analyzer, Arc, Finding, IpAddr, NameCount, NxdomainStorm, PodRef, PreHashedMap, RCODE_NXDOMAIN, Seed, Transaction,
    VecDeque, ends_with_label, ms, secs,
};

/// Most names listed as top offenders of an NXDOMAIN storm.
pub(super) const STORM_TOP: usize = 5;

/// Who an NXDOMAIN storm is counted for: the client pod, else its address
/// (kept as values: formatting them for every NXDOMAIN was a measurable cost).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum StormKey {
    Pod(PodRef),
    Ip(IpAddr),
}

impl std::fmt::Display for StormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pod(p) => p.fmt(f),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A [`StormKey`] with its seeded hash, which the storms map uses as is:
/// hashing a pod's strings per NXDOMAIN was most of counting one (~240
/// instructions in the map's `entry`, callgrind, busy recording).
#[derive(Clone, Debug)]
pub(super) struct HashedStormKey {
    key: StormKey,
    h: u64,
}

impl PartialEq for HashedStormKey {
    fn eq(&self, o: &Self) -> bool {
        self.h == o.h && self.key == o.key
    }
}

impl Eq for HashedStormKey {}

impl std::hash::Hash for HashedStormKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.h);
    }
}

/// Recent pods' [`HashedStormKey`]s, direct-mapped by the address of the
/// pod's name (the enricher hands out clones of one `PodRef` per pod): a
/// pod is hashed once, not per NXDOMAIN. A hit is compared in full.
#[derive(Debug, Default)]
pub(super) struct StormKeys {
    slots: Vec<Option<HashedStormKey>>,
    /// The last client without a pod.
    ip: Option<HashedStormKey>,
}

impl StormKeys {
    const SLOTS: usize = 1024;

    /// The key of `tx`'s client, borrowed (a clone took the pod's
    /// reference count up and down again per NXDOMAIN).
    fn key(&mut self, seed: &Seed, tx: &Transaction) -> Option<&HashedStormKey> {
        let Some(p) = &tx.client_pod else {
            // The same client as the last one without a pod: not hashed again.
            let ip = tx.client.ip;
            if !matches!(&self.ip, Some(HashedStormKey { key: StormKey::Ip(last), .. }) if *last == ip) {
                let key = StormKey::Ip(ip);
                self.ip = Some(HashedStormKey { h: seed.hash_one(&key), key });
            }
            return self.ip.as_ref();
        };
        let addr = Arc::as_ptr(&p.name).cast::<u8>() as usize as u64;
        let slot = ((addr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - Self::SLOTS.trailing_zeros())) as usize;
        if self.slots.is_empty() {
            self.slots = vec![None; Self::SLOTS];
        }
        let s = self.slots.get_mut(slot)?;
        if !matches!(s, Some(k) if matches!(&k.key, StormKey::Pod(q) if q == p)) {
            let key = StormKey::Pod(p.clone());
            *s = Some(HashedStormKey { h: seed.hash_one(&key), key });
        }
        s.as_ref()
    }
}

#[derive(Debug, Default)]
pub(super) struct StormState {
    /// (start, name hash [`super::Att::nh`], name) in start order.
    pub(super) events: VecDeque<(u64, u64, Arc<str>)>,
    pub(super) quiet_until: u64,
}

impl Analyzer {
    /// Forgets clients whose storm window has long passed.
    pub(super) fn expire_storms(&mut self, now: u64, keep_ns: u64) {
        self.storms.retain(|_, s| s.events.back().is_some_and(|(ts, ..)| ts.saturating_add(keep_ns) >= now));
    }

    pub(super) fn count_storm(&mut self, tx: &Transaction, lname: &Arc<str>, nh: u64, out: &mut Vec<Finding>) {
        if tx.rcode != Some(RCODE_NXDOMAIN) {
            return;
        }
        let conf = self.conf_for(tx);
        let suffixed = match conf.and_then(|c| c.parsed.as_ref()) {
            Some(c) => c.search.iter().any(|s| ends_with_label(lname, s)),
            None if self.known_suffixes.map.is_empty() => true,
            None => self.known_suffixes.map.keys().any(|s| ends_with_label(lname, s)),
        };
        if !suffixed {
            return;
        }
        let Some(hkey) = self.storm_keys.key(&self.names.seed, tx) else { return };
        let storms = &mut self.storms;
        let window = self.cfg.storm_window_ns.max(1);
        let threshold = (u64::from(self.cfg.storm_per_sec) * window / 1_000_000_000).max(1);
        let cap = usize::try_from(threshold).unwrap_or(usize::MAX).saturating_mul(2).min(100_000);
        let ts = tx.ts_ns;
        // A known client is one lookup, without handing its key over.
        let full = storms.len() >= self.cfg.max_clients.max(1);
        let s = match storms.get_mut(hkey) {
            Some(s) => s,
            None if full => return,
            None => storms.entry(hkey.clone()).or_default(),
        };
        let key = &hkey.key;
        if s.events.len() >= cap {
            s.events.pop_front();
        }
        if s.events.back().is_none_or(|(t, ..)| *t <= ts) {
            s.events.push_back((ts, nh, Arc::clone(lname)));
        } else {
            s.events.insert(s.events.partition_point(|(t, ..)| *t <= ts), (ts, nh, Arc::clone(lname)));
        }
        let newest = s.events.back().map_or(ts, |(t, ..)| *t);
        while s.events.front().is_some_and(|(t, ..)| t.saturating_add(window) < newest) {
            s.events.pop_front();
        }
        if (s.events.len() as u64) < threshold || newest < s.quiet_until {
            return;
        }
        // Counted by the names' hashes, as the fan-out buffers index them:
        // hashing each name's text again was a third of a storm finding
        // (~230 instructions per event, callgrind, synthetic bench capture).
        let mut counts: PreHashedMap<u64, (&str, u32)> =
            PreHashedMap::with_capacity_and_hasher(s.events.len(), std::hash::BuildHasherDefault::default());
        for (_, h, n) in &s.events {
            counts.entry(*h).or_insert((&**n, 0)).1 += 1;
        }
        // Names are distinct, so the order is total and the first few are
        // one answer: kept in one pass, most names compared with the last
        // kept one only (a selection over all of them compared most names
        // several times, ~22,000 instructions per finding of 200 names).
        let order = |a: &(&str, u32), b: &(&str, u32)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        let mut top: Vec<(&str, u32)> = Vec::with_capacity(STORM_TOP + 1);
        for e in counts.into_values() {
            if top.len() < STORM_TOP || top.last().is_some_and(|l| order(&e, l).is_lt()) {
                let at = top.partition_point(|x| order(x, &e).is_lt());
                top.insert(at, e);
                top.truncate(STORM_TOP);
            }
        }
        let top: Vec<NameCount> = top.into_iter().map(|(q, count)| NameCount { qname: q.to_owned(), count }).collect();
        let n = s.events.len() as u32;
        let span = s.events.front().map_or(window, |(t, ..)| newest.saturating_sub(*t)).max(1_000_000_000);
        let rate = f64::from(n) / (span as f64 / 1e9);
        let cause = format!(
            "{key} got {n} NXDOMAIN answers for search-suffixed names in {:.1} s ({rate:.1}/s), most for {}",
            secs(span),
            top.first().map_or("?", |t| t.qname.as_str())
        );
        out.push(Finding::NxdomainStorm(NxdomainStorm {
            cause,
            ts_ns: newest,
            pod: match key {
                StormKey::Pod(p) => Some(p.to_string()),
                StormKey::Ip(_) => None,
            },
            client: key.to_string(),
            nxdomain: n,
            window_ms: ms(span),
            rate_per_s: rate,
            top_names: top,
            advice: vec![
                "Each short name costs one NXDOMAIN per search suffix (ndots:5): use fully-qualified names with a trailing dot in the application's configuration.".to_owned(),
                "Lower ndots for this pod: spec.dnsConfig.options: [{name: ndots, value: \"2\"}].".to_owned(),
                "Cache negative answers close to the client (NodeLocal DNSCache) to spare the cluster DNS.".to_owned(),
            ],
        }));
        s.quiet_until = newest.saturating_add(window);
        s.events.clear();
    }
}
