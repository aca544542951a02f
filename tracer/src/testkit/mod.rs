//! What tests share (dev-only: compiled for the tracer's own tests, and for
//! other crates' tests with the `testkit` feature): the vendored fixtures,
//! packet and DNS builders, a collecting sink, and a strict reader of the
//! metrics exposition.

pub mod dns;
pub mod exposition;
pub mod packet;

use std::path::PathBuf;

use crate::{
    analyze::{Finding, Transaction},
    pipeline::{Context, RunStats, Sink},
};

/// A sink that keeps every transaction and finding the pipeline hands it.
#[derive(Debug, Default)]
pub struct Collect {
    /// Transactions, in the order they completed.
    pub txs: Vec<Transaction>,
    /// Findings, in the order they were made.
    pub findings: Vec<Finding>,
}

impl Sink for Collect {
    fn transaction(&mut self, _ctx: &Context, tx: &Transaction) {
        self.txs.push(tx.clone());
    }
    fn finding(&mut self, _ctx: &Context, f: &Finding) {
        self.findings.push(f.clone());
    }
    fn finish(&mut self, _ctx: &Context, _stats: &RunStats) {}
}

/// The repository's `tests/fixtures/` (pcap and scap files from other
/// projects' test suites; licences in its README).
#[must_use]
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A vendored fixture, e.g. `fixture("pcap/tcpdump__dns_tcp.pcap")`.
///
/// # Panics
/// When it is missing: a fixture is part of the repository, and a test that
/// cannot find it must fail, not skip.
#[must_use]
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures_dir().join(rel);
    assert!(p.exists(), "fixture {} is missing (it is vendored in the repository)", p.display());
    p
}

/// Every file in a fixture folder (`pcap`, `scap`) with the given extension, sorted.
///
/// # Panics
/// When the folder is missing or holds no such file.
#[must_use]
pub fn fixtures(dir: &str, ext: &str) -> Vec<PathBuf> {
    let d = fixture(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("reading {}: {e}", d.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .{ext} fixtures in {}", d.display());
    v
}
