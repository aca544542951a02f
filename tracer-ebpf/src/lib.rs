//! Empty library target: lets `tracer` depend on this crate so that cargo
//! rebuilds the embedded eBPF object when the kernel programs change.
#![no_std]
