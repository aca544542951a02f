//! The parts of a transaction's line that only depend on who took part:
//! rendered once per client process and server, then copied.
//!
//! A `dns` line is ~600 bytes, of which the client's cgroup, pod, process,
//! netns and node, the resolver and the server (with its pod, process and
//! Service) are the same for every query a process sends to its resolver;
//! only the answers, the client port, id, latency, name, type, rcode,
//! `resolver_client`, retransmits, flags and time change. Written field by
//! field, the line was ~1,450 instructions (callgrind, hot-cap `-o json`
//! minus `--summary`); the parts that repeat are kept here, per slot, as
//! the bytes between those fields, and a line whose parties match a slot's
//! is its fields interleaved with six copies.

use std::{net::IpAddr, sync::Arc};

use crate::{
    analyze::{Observed, Transaction},
    enrich::PodRef,
    event::{Endpoint, Process},
};

/// Slots, direct-mapped by client process and server: a node's busy
/// clients and their one or two resolvers fit with few collisions.
pub(super) const SLOTS: usize = 256;
/// Longest kept run of repeated bytes (longer ones are written each time).
const MAX_TEXT: usize = 2048;

const _: () = assert!(SLOTS.is_power_of_two());

/// The repeated parts of one line shape, and what they were rendered from.
#[derive(Default)]
pub(super) struct LineSlot {
    key: Option<LineKey>,
    /// The six runs (each its own buffer: copied without working out
    /// where it is).
    runs: [Vec<u8>; 6],
    /// Where the client's `"` is in run 0 (`resolver_client` copies it).
    client_at: usize,
}

/// Everything the runs depend on. Shared strings are compared by address
/// (a clone is held, so an address cannot be reused while kept); a
/// different allocation of the same text is only a miss.
struct LineKey {
    /// [`crate::enrich::Enricher::generation`] (the Service of the server).
    generation: u64,
    stale: bool,
    cgroup_id: u64,
    client_ip: IpAddr,
    client_pod: Option<PodRef>,
    /// The client process: pid, comm, thread (its tid is not written).
    process: Option<(u32, Arc<str>, Arc<str>)>,
    netns: u32,
    node: Option<Arc<str>>,
    observed: Observed,
    resolver: Option<Endpoint>,
    resolver_pod: Option<PodRef>,
    server: Endpoint,
    server_pod: Option<PodRef>,
    server_process: Option<Process>,
}

#[inline(always)]
fn same_str(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[inline(always)]
fn same_pod(a: Option<&PodRef>, b: Option<&PodRef>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            Arc::ptr_eq(&a.name, &b.name)
                && Arc::ptr_eq(&a.namespace, &b.namespace)
                && same_str(a.node.as_ref(), b.node.as_ref())
        }
        (None, None) => true,
        _ => false,
    }
}

#[inline(always)]
fn same_process(a: Option<&Process>, b: Option<&Process>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.pid == b.pid && a.tid == b.tid && Arc::ptr_eq(&a.comm, &b.comm) && Arc::ptr_eq(&a.thread, &b.thread)
        }
        (None, None) => true,
        _ => false,
    }
}

impl LineKey {
    fn of(tx: &Transaction, generation: u64, stale: bool) -> Self {
        Self {
            generation,
            stale,
            cgroup_id: tx.cgroup_id,
            client_ip: tx.client.ip,
            client_pod: tx.client_pod.clone(),
            process: tx.process.as_ref().map(|p| (p.pid, Arc::clone(&p.comm), Arc::clone(&p.thread))),
            netns: tx.netns,
            node: tx.node.clone(),
            observed: tx.observed,
            resolver: tx.resolver,
            resolver_pod: tx.resolver_pod.clone(),
            server: tx.server,
            server_pod: tx.server_pod.clone(),
            server_process: tx.server_process.clone(),
        }
    }

    #[inline]
    fn matches(&self, tx: &Transaction, generation: u64, stale: bool) -> bool {
        self.generation == generation
            && self.cgroup_id == tx.cgroup_id
            && self.client_ip == tx.client.ip
            && self.server == tx.server
            && self.netns == tx.netns
            && self.stale == stale
            && self.observed == tx.observed
            && self.resolver == tx.resolver
            && match (&self.process, &tx.process) {
                (Some((pid, comm, thread)), Some(p)) => {
                    *pid == p.pid && Arc::ptr_eq(comm, &p.comm) && Arc::ptr_eq(thread, &p.thread)
                }
                (None, None) => true,
                _ => false,
            }
            && same_str(self.node.as_ref(), tx.node.as_ref())
            && same_process(self.server_process.as_ref(), tx.server_process.as_ref())
            && same_pod(self.client_pod.as_ref(), tx.client_pod.as_ref())
            && same_pod(self.server_pod.as_ref(), tx.server_pod.as_ref())
            && same_pod(self.resolver_pod.as_ref(), tx.resolver_pod.as_ref())
    }
}

/// The slot for `tx`'s parties (any slot is correct: the key is compared in full).
#[inline]
pub(super) fn slot_of(tx: &Transaction) -> usize {
    let ip = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => u64::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits() as u64,
    };
    let pid = tx.process.as_ref().map_or(0, |p| u64::from(p.pid));
    let mix = (ip(&tx.client.ip) ^ ip(&tx.server.ip).rotate_left(32) ^ pid << 17 ^ tx.cgroup_id.rotate_left(7))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mix >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Where the runs were in a line as written field by field: `runs[k]` is
/// run `k`'s range in the line, `client_at` the client's `"`.
pub(super) struct Marks {
    pub(super) runs: [std::ops::Range<usize>; 6],
    pub(super) client_at: usize,
}

impl LineSlot {
    /// The runs for `tx`, when this slot holds its parties' (and the same
    /// enricher state).
    #[inline]
    pub(super) fn runs_for(&self, tx: &Transaction, generation: u64, stale: bool) -> Option<Runs<'_>> {
        match &self.key {
            Some(k) if k.matches(tx, generation, stale) => Some(&self.runs),
            _ => None,
        }
    }

    /// Where the client's `"` is in run 0.
    pub(super) fn client_at(&self) -> usize {
        self.client_at
    }

    /// Keeps the runs of `line` (as [`Marks`] found them) for `tx`'s parties.
    #[inline(never)]
    pub(super) fn learn(&mut self, tx: &Transaction, generation: u64, stale: bool, line: &[u8], m: &Marks) {
        let len: usize = m.runs.iter().map(std::ops::Range::len).sum();
        if len > MAX_TEXT {
            self.key = None;
            return;
        }
        for (run, r) in self.runs.iter_mut().zip(&m.runs) {
            run.clear();
            run.extend_from_slice(&line[r.clone()]);
        }
        self.client_at = m.client_at - m.runs[0].start;
        self.key = Some(LineKey::of(tx, generation, stale));
    }
}

/// A slot's runs, borrowed for one line.
pub(super) type Runs<'a> = &'a [Vec<u8>; 6];
