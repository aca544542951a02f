//! ktrace's developer tasks as a library, so end-to-end tests can reuse them.

pub mod image;
pub mod lab;

// Dependencies of the `cargo xtask` binary only (flags; ELF reading in
// `kernels`; the raw `bpf(2)` and `wait4(2)` calls in `bench`).
use clap as _;
use libc as _;
use object as _;
