//! Pairs queries with responses.
// OWNER: analysis helper. Contract below is fixed; fill in the implementation.

use crate::decode::DnsEvent;

use super::Transaction;

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
}

/// Query/response pairing state.
#[derive(Debug, Default)]
pub struct Pairer {
    cfg: PairConfig,
    stats: PairStats,
}

impl Pairer {
    /// Empty pairing table.
    #[must_use]
    pub fn new(cfg: PairConfig) -> Self {
        Self { cfg, stats: PairStats::default() }
    }

    /// Feeds one message; completed transactions are appended to `out`.
    pub fn push(&mut self, ev: &DnsEvent, out: &mut Vec<Transaction>) {
        let _ = (ev, out, self.cfg);
    }

    /// Reports queries older than the timeout at `now_ns` as timed out.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        let _ = (now_ns, out);
    }

    /// End of input: every query still waiting is reported as unanswered.
    pub fn finish(&mut self, out: &mut Vec<Transaction>) {
        let _ = out;
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> PairStats {
        self.stats
    }
}
