//! Opt-in kernel debug logs (`ktrace -vv --bpf-log`), written with aya-log
//! into its own ring (`AYA_LOGS`) and printed by userspace through `log`.
//!
//! Every statement sits behind [`BPF_LOG`], a frozen `.rodata` global that
//! userspace sets at load time: with it 0 (the default) the verifier knows
//! the branch is dead, never walks the log code and removes it, so the
//! programs the kernel runs are the ones without logging (docs/kernels.md
//! has the instruction counts with and without).

use core::ptr::read_volatile;

/// Non-zero when `--bpf-log` was given; set at load time, frozen.
#[unsafe(no_mangle)]
pub(crate) static BPF_LOG: u32 = 0;

/// Whether kernel logging is on (a constant to the verifier).
#[inline(always)]
pub(crate) fn enabled() -> bool {
    // SAFETY: loader-written global.
    unsafe { read_volatile(&raw const BPF_LOG) != 0 }
}

/// `aya_log_ebpf::debug!` behind [`BPF_LOG`]. The target is short: aya-log
/// writes it, the module path and the file name into every record, each
/// byte an instruction or so.
macro_rules! debug {
    ($($arg:tt)+) => {
        if $crate::log::enabled() {
            ::core::hint::cold_path();
            ::aya_log_ebpf::debug!(&(), target: "bpf", $($arg)+);
        }
    };
}

/// [`debug!`] at trace level, for what can happen once per packet.
macro_rules! trace {
    ($($arg:tt)+) => {
        if $crate::log::enabled() {
            ::core::hint::cold_path();
            ::aya_log_ebpf::trace!(&(), target: "bpf", $($arg)+);
        }
    };
}

pub(crate) use debug;
pub(crate) use trace;
