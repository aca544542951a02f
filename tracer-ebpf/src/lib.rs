//! Empty library target: lets `tracer` depend on this crate so that cargo
//! rebuilds the embedded eBPF object when the kernel programs change.
#![no_std]

// The dependencies are the kernel programs' (the binary, `src/main.rs`).
use aya_ebpf as _;
#[cfg(feature = "bpf-log")]
use aya_log_ebpf as _;
use network_types as _;
use tracer_common as _;
