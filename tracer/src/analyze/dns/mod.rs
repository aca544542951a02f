//! DNS analysis: pairing queries with answers into transactions, then the
//! detectors that explain slow or failing lookups.

pub mod pairing;
