//! Findings: search-list fan-out, upstream timeouts, NXDOMAIN storms.
// OWNER: analysis helper. Contract below is fixed; fill in the implementation.

use serde::Serialize;

use crate::event::ResolvConfEvidence;

use super::Transaction;

/// Something ktrace can explain.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Placeholder until the analysis lands.
    SearchFanout {},
}

/// Turns transactions into findings.
#[derive(Debug, Default)]
pub struct Analyzer {}

impl Analyzer {
    /// Empty analyzer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what a process's resolver was configured with.
    pub fn resolv_conf(&mut self, ev: &ResolvConfEvidence) {
        let _ = ev;
    }

    /// Feeds a transaction (in completion order).
    pub fn push(&mut self, tx: &Transaction, out: &mut Vec<Finding>) {
        let _ = (tx, out);
    }

    /// Emits findings whose chains ended before `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        let _ = (now_ns, out);
    }

    /// End of input: emit everything pending.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let _ = out;
    }
}
