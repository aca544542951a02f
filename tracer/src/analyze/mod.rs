//! Analysis: pairing DNS queries with responses into [`Transaction`]s, then
//! explaining them ([`dns`]) and summarising ([`summary`]).

pub mod condense;
pub mod detector;
pub mod dns;
pub mod drops;
pub mod resolvconf;
pub mod summary;

pub use crate::model::{Observed, Transaction};
pub use detector::Detector;
/// The DNS detectors' old home; kept so existing paths compile.
pub use dns as findings;
pub use dns::{
    Analyzer, Finding,
    pairing::{self, Pairer},
};
