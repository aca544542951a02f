//! ktrace: an eBPF tracer that explains Kubernetes DNS and networking failures.
//!
//! One pipeline for live tracing and replay, with a different source:
//! [`source`] → [`decode`] → [`enrich`] → [`analyze`] → [`output`] / [`capture`].
//! The kernel side lives in `tracer-ebpf`; [`bpf`] loads and attaches it.

pub mod agent;
pub mod analyze;
pub mod bpf;
pub mod capture;
pub mod cli;
pub mod compose;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod hash;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod source;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

// The `ktrace` binary's (src/main.rs: logging set-up, the allocator); a
// package's dependencies are shared by all its targets.
use env_logger as _;
use mimalloc as _;
// Dev-dependencies of the integration tests and benches, which the unit
// tests are built with too (`ktrace` is this crate with `testkit`).
#[cfg(test)]
use {divan as _, ktrace as _, rcgen as _};
