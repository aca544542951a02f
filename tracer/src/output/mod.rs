//! Output sinks: the live table and JSON Lines. Formatters never parse:
//! they render [`crate::analyze::Transaction`]s and findings as given.

pub mod drops;
pub mod fit;
pub mod json;
mod lines;
pub mod records;
pub mod table;
pub mod term;
// Under `tests/`: test-only code, which tests/layers.rs does not count as a
// dependency of `output` (it uses the test kit, which uses `output`).
#[cfg(test)]
#[path = "tests/testgen.rs"]
mod testgen;

pub use crate::time::{Rfc3339, rfc3339};

/// `namespace/name` as a `Display` value.
#[derive(Clone, Copy, Debug)]
pub struct NsName<'a>(pub &'a str, pub &'a str);

impl std::fmt::Display for NsName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// Milliseconds with microsecond precision, for JSON.
#[must_use]
pub fn ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}
