//! The typed values every stage passes on and every sink renders.

pub mod drops;
