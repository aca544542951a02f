//! Opt-in kernel debug logs (`ktrace -vv --bpf-log`), written with aya-log
//! into its own ring (`AYA_LOGS`) and printed by userspace through `log`.
//!
//! The statements exist only in the object built with the `bpf-log` feature,
//! which userspace loads only with `--bpf-log` (tracer/build.rs builds and
//! embeds both objects). In the default object the macros below expand to
//! nothing the compiler keeps and aya-log-ebpf is not linked, so its
//! programs are the ones without logging, instruction for instruction
//! (docs/kernels.md has the counts). A gate on a frozen `.rodata` global
//! left its load and the compiler's different code layout around every
//! statement behind: +0–22 % instructions per program.
//!
//! In the logging object every statement is live; aya-log's own frozen
//! `AYA_LOG_LEVEL` (set to the logger's level at load time) lets the
//! verifier drop the levels nobody prints.

/// `aya_log_ebpf::debug!`. The target is short: aya-log writes it, the
/// module path and the file name into every record, each byte an
/// instruction or so.
#[cfg(feature = "bpf-log")]
macro_rules! debug {
    ($($arg:tt)+) => {{
        ::core::hint::cold_path();
        ::aya_log_ebpf::debug!(&(), target: "bpf", $($arg)+);
    }};
}

/// [`debug!`] at trace level, for what can happen once per packet.
#[cfg(feature = "bpf-log")]
macro_rules! trace {
    ($($arg:tt)+) => {{
        ::core::hint::cold_path();
        ::aya_log_ebpf::trace!(&(), target: "bpf", $($arg)+);
    }};
}

/// Without `bpf-log`: the arguments are only borrowed inside a constant
/// `if false` (so they count as used and nothing is evaluated), which rustc
/// removes before LLVM sees it.
#[cfg(not(feature = "bpf-log"))]
macro_rules! debug {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        if false {
            $(let _ = &$arg;)*
        }
    }};
}

#[cfg(not(feature = "bpf-log"))]
macro_rules! trace {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        if false {
            $(let _ = &$arg;)*
        }
    }};
}

pub(crate) use debug;
pub(crate) use trace;
