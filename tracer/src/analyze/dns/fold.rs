//! Walks the condensing stage will only count: told to it as a small
//! [`FastWalk`] instead of a full [`SearchFanout`] finding.
//!
//! Most walks of a busy node are fast (answered within `--slow`, no timeout
//! or SERVFAIL): the condenser adds them to per-(pod, base name) counts and
//! never shows them. Building their finding (an attempt list with three
//! strings per attempt) and taking it apart again was ~9,000 instructions
//! per walk, 8 % of replaying the benchmark's capture (callgrind).

use super::{Analyzer, Arc, Att, Finding, RCODE_SERVFAIL, fanout::Chain, ms, union_len};
use crate::analyze::condense::FastWalk;

/// What [`Analyzer::fold_chain`] decided.
enum Fold {
    /// Not a walk (no failed attempt): nothing to report.
    None,
    /// A fast walk, to be counted.
    Fast(FastWalk),
    /// Reported in full.
    Full,
}

impl Analyzer {
    /// Reports a walk: in full, or, when the condenser will only count it
    /// (`fold_fast_ns`), as a [`FastWalk`] in [`Self::fast_walks_mut`]
    /// placed before the finding `out` gets next.
    pub(super) fn emit_chain(&mut self, mut ch: Chain, out: &mut Vec<Finding>) {
        match self.fold_chain(&mut ch) {
            Fold::None => {}
            Fold::Fast(w) => self.fast_walks.push((out.len(), w)),
            Fold::Full => out.extend(self.report_chain(ch).map(Finding::SearchFanout)),
        }
    }

    /// The walks folded and not yet handed on, each with its place among the
    /// findings the same calls wrote: `(i, walk)` comes before `out[i]`
    /// (the condenser must see them in the order they were found).
    pub fn fast_walks_mut(&mut self) -> &mut Vec<(usize, FastWalk)> {
        &mut self.fast_walks
    }

    /// Whether folded walks wait in [`Self::fast_walks_mut`].
    #[must_use]
    pub fn has_fast_walks(&self) -> bool {
        !self.fast_walks.is_empty()
    }

    /// What [`Self::report_chain`] and the condenser's `walk_is_slow` would
    /// decide, from the attempts themselves (the same sums, in the same
    /// order, so the numbers are the finding's to the bit).
    fn fold_chain(&self, ch: &mut Chain) -> Fold {
        let Some(slow_ns) = self.cfg.fold_fast_ns else { return Fold::Full };
        ch.atts.sort_by_key(|a| a.tx.ts_ns);
        let (Some(first), Some(answered)) = (ch.atts.first(), ch.candidates.get(ch.answered)) else {
            return Fold::None;
        };
        let is_ok = |a: &&Att| *a.lname == **answered;
        let failed = ch.atts.iter().filter(|a| !is_ok(a)).count();
        if failed == 0 {
            return Fold::None;
        }
        if ch.atts.iter().any(|a| a.tx.timed_out || a.tx.rcode == Some(RCODE_SERVFAIL)) {
            return Fold::Full;
        }
        let start = first.tx.ts_ns;
        let final_att = ch.atts.iter().filter(is_ok).find(|a| !a.failed()).or_else(|| ch.atts.iter().find(is_ok));
        let end = ch
            .atts
            .iter()
            .filter(is_ok)
            .filter_map(|a| a.tx.end_ns)
            .max()
            .or_else(|| final_att.and_then(|a| a.tx.end_ns))
            .unwrap_or(start);
        let total = end.saturating_sub(start);
        if ms(total) * 1e6 >= slow_ns as f64 {
            return Fold::Full;
        }
        let ok_time = union_len(ch.atts.iter().filter(is_ok).map(|a| (a.tx.ts_ns, a.tx.end_ns.unwrap_or(a.tx.ts_ns))));
        let wasted = total.saturating_sub(ok_time);
        // The finding's attempts other than `answered_by`: the failed ones
        // when a name answered, else all of them.
        let extra = if final_att.is_some_and(|a| !a.failed()) { failed } else { ch.atts.len() };
        let w = FastWalk {
            ts_ns: start,
            pod: first.tx.client_pod.as_ref().map(ToString::to_string),
            client_ip: first.tx.client.ip,
            server: first.tx.server,
            base_name: String::new(),
            comm: ch.atts.iter().find_map(|a| a.tx.process.as_ref().map(|p| Arc::clone(&p.comm))),
            extra: extra as u64,
            wasted_ms: ms(wasted),
        };
        Fold::Fast(FastWalk { base_name: std::mem::take(&mut ch.base), ..w })
    }
}
