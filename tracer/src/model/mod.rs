//! The typed values the stages pass on: who (pods, processes), what happened
//! (DNS transactions) and what it means (findings). Sources and decoders
//! produce them, detectors consume and produce them, sinks render them.
//!
//! This module depends only on [`crate::event`] (the raw records and the
//! endpoints, transports and processes they carry), so every stage can use
//! it without an import cycle.

pub mod drops;
pub mod finding;
pub mod pod;
pub mod rr;
pub mod transaction;

/// The process behind a packet arrives with the kernel's record, so it is
/// defined with the records ([`crate::event`]) and named here with the rest.
pub use crate::event::Process;
pub use finding::{
    Attempt, FanoutGroup, FanoutSummary, Finding, ForwardedUpstream, NameCount, NxdomainStorm, Party, PodCount,
    Repeated, SearchFanout, UpstreamTimeout,
};
pub use pod::{PodFields, PodRef};
pub use rr::RType;
pub use transaction::{Answer, Observed, Transaction};
