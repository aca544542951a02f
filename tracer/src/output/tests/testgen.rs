//! Generated values for the writers' differential tests: names that repeat
//! (shared `Arc`s, as the decoder and enricher hand them out) and names that
//! come and go (fresh allocations, freed ones), text that needs escaping,
//! numbers of every width, both address families, times that stay in one
//! second and jump.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use crate::{
    event::{Endpoint, Process},
    model::PodRef,
    testkit::Rng,
};

/// Texts names are drawn from.
const TEXTS: &[&str] = &[
    "",
    "a",
    "vm",
    "dnsperf",
    "dnsmasq",
    "isc-net-0000",
    "kube-system",
    "coredns-0",
    "host0.bench.test",
    "api13.example.com.cluster.local",
    "quote\"d",
    "back\\slash",
    "tab\there",
    "nl\nand\rcr",
    "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
    "é€😀 unicode",
    "ends with a quote\"",
    // 62 bytes: 64 with the quotes, the longest the cache keeps.
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    // 63 bytes: one too long to keep.
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
    // Short, but long once escaped.
    "\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}",
    "a-very-long-name.with.many.labels.that.goes.on.and.on.example.com.cluster.local",
];

/// A source of generated values (deterministic per seed).
pub(crate) struct Gen {
    pub(crate) rng: Rng,
    names: Vec<Arc<str>>,
    ts: u64,
}

impl Gen {
    pub(crate) fn new(seed: u64) -> Self {
        let names = TEXTS.iter().map(|t| Arc::from(*t)).collect();
        Self { rng: Rng(seed), names, ts: 1_795_433_602_000_000_000 }
    }

    pub(crate) fn bool(&mut self, one_in: usize) -> bool {
        self.rng.below(one_in) == 0
    }

    /// A name: usually a shared one; sometimes a fresh allocation of some
    /// text, and sometimes a shared one is replaced (the old one freed).
    pub(crate) fn name(&mut self) -> Arc<str> {
        let i = self.rng.below(self.names.len());
        match self.rng.below(10) {
            0 => {
                let t = TEXTS[self.rng.below(TEXTS.len())];
                let fresh: Arc<str> =
                    if self.bool(2) { Arc::from(t) } else { Arc::from(format!("{t}{}", self.rng.below(1000))) };
                fresh
            }
            1 => {
                let t = TEXTS[self.rng.below(TEXTS.len())];
                self.names[i] = Arc::from(format!("{}{t}", self.rng.below(100)));
                Arc::clone(&self.names[i])
            }
            _ => Arc::clone(&self.names[i]),
        }
    }

    pub(crate) fn opt_name(&mut self) -> Option<Arc<str>> {
        (!self.bool(4)).then(|| self.name())
    }

    /// A number of any width (small ones more often).
    pub(crate) fn num(&mut self) -> u64 {
        let v = self.rng.next();
        match self.rng.below(4) {
            0 => v % 10,
            1 => v % 100_000,
            _ => v >> self.rng.below(64),
        }
    }

    pub(crate) fn u32(&mut self) -> u32 {
        self.num() as u32
    }

    pub(crate) fn u16(&mut self) -> u16 {
        self.num() as u16
    }

    pub(crate) fn endpoint(&mut self) -> Endpoint {
        let port = self.u16();
        let ip = if self.bool(6) {
            let mut seg = [0u16; 8];
            for s in &mut seg {
                *s = if self.bool(2) { 0 } else { self.u16() };
            }
            IpAddr::V6(Ipv6Addr::from(seg))
        } else {
            let mut o = [0u8; 4];
            for x in &mut o {
                *x = match self.rng.below(3) {
                    0 => self.rng.below(10) as u8,
                    1 => 10 + self.rng.below(90) as u8,
                    _ => self.rng.next() as u8,
                };
            }
            IpAddr::V4(Ipv4Addr::from(o))
        };
        Endpoint { ip, port }
    }

    pub(crate) fn pod(&mut self) -> Option<PodRef> {
        (!self.bool(3)).then(|| PodRef::new(self.name(), self.name(), self.opt_name()))
    }

    pub(crate) fn process(&mut self) -> Option<Process> {
        (!self.bool(4)).then(|| {
            let comm = self.name();
            // Usually one thread, named like its process.
            let thread = if self.bool(2) { Arc::clone(&comm) } else { self.name() };
            Process { pid: self.u32(), tid: self.u32(), comm, thread }
        })
    }

    /// Nanoseconds: mostly a little after the previous value (same second),
    /// sometimes seconds, days or years away, sometimes anything at all.
    pub(crate) fn ts(&mut self) -> u64 {
        self.ts = match self.rng.below(20) {
            0 => self.rng.next(),
            1 => self.ts.wrapping_add(self.rng.next() % 100_000_000_000_000),
            2 => self.ts.wrapping_sub(self.rng.next() % 10_000_000_000),
            _ => self.ts.wrapping_add(self.rng.next() % 3_000_000),
        };
        self.ts
    }
}
