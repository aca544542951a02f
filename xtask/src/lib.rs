//! ktrace's developer tasks as a library, so end-to-end tests can reuse them.

pub mod image;
pub mod lab;
