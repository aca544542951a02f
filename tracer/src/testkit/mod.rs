//! What tests share (dev-only: compiled for the tracer's own tests, and for
//! other crates' tests with the `testkit` feature): the vendored fixtures,
//! packet and DNS builders, a collecting sink, a strict reader of the
//! metrics exposition, and the old JSON walkers the typed code is checked against.

pub mod alloc;
pub mod dns;
pub mod exposition;
pub mod packet;
pub mod walk;

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;

use crate::{
    analyze::{Finding, Transaction},
    event::{Hook, PacketRecord, Record},
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

/// Deterministic xorshift64 for the hostile-input loops: the same seed gives
/// the same bytes on every run, so a failing case can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The seed most of the tests use.
    pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The next value (xorshift 13/7/17).
    #[expect(clippy::should_implement_trait, reason = "an endless generator, not an iterator")]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A packet as a tc or cgroup program on `node` reports it: ifindex 2, no
/// process, socket or namespace, the whole packet captured.
#[must_use]
pub fn packet_record(ts_ns: u64, node: &Arc<str>, hook: Hook, data: &[u8]) -> Record {
    Record::Packet(PacketRecord {
        ifindex: 2,
        node: Some(Arc::clone(node)),
        ..PacketRecord::bare(ts_ns, hook, Bytes::copy_from_slice(data))
    })
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
