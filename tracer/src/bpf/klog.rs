//! Kernel debug logs (`ktrace -vv --bpf-log`): the programs' aya-log records
//! (`tracer-ebpf/src/log.rs`), printed through `log` under the target `bpf`.
//!
//! Off unless `--bpf-log` is given. Then the default object is loaded, which
//! has no log statements and no log ring, and no reader is started. With
//! it, the object built with the `bpf-log` feature ([`super::OBJECT_LOG`]) is
//! loaded instead: its programs write records at or below the `log` crate's
//! maximum level (the kernel skips the others: `AYA_LOG_LEVEL`), and
//! [`KernelLog`] prints them. docs/kernels.md has both objects' instruction
//! counts.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        atomic::{AtomicU8, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use aya::{Ebpf, EbpfLoader};

use super::raw::DecodeCtx;

/// The ring aya-log's kernel side writes into (its map name).
pub const MAP_LOGS: &str = "AYA_LOGS";
/// The log ring's size when logging is on (aya-log's own default).
const RING_BYTES_ON: u32 = 128 << 10;
/// How often the reader drains the log ring.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// The kernel's log level as aya-log numbers it (0 off, 1 error … 5 trace),
/// which is also `log::LevelFilter`'s order.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Turns kernel logging on for programs loaded from now on, writing records
/// up to `max` (pass `log::max_level()`, what the logger will print).
/// `LevelFilter::Off` leaves it off.
pub fn enable(max: log::LevelFilter) {
    LEVEL.store(level_number(max), Ordering::Relaxed);
}

/// Whether programs loaded now carry their log statements.
#[must_use]
pub fn enabled() -> bool {
    LEVEL.load(Ordering::Relaxed) != 0
}

fn level_number(max: log::LevelFilter) -> u8 {
    match max {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

/// The load-time globals behind kernel logging, worked out once per load.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Switch {
    /// Whether the logging object is loaded (else the default one, and
    /// nothing below is set: those globals and the ring are not in it).
    on: bool,
    /// `AYA_LOG_LEVEL`: the most verbose level the kernel writes.
    level: u8,
    /// `DROP_REASON_MAX`: core drop reasons at or above it are logged as unknown.
    drop_reason_max: u32,
    /// `AYA_LOGS`' size in bytes (logging object only).
    ring_bytes: u32,
}

impl Switch {
    /// The values for the current [`enable`] state; `ctx` has the kernel's drop reasons.
    pub(crate) fn new(ctx: &DecodeCtx) -> Self {
        Self::with_level(LEVEL.load(Ordering::Relaxed), ctx, page_size())
    }

    fn with_level(level: u8, ctx: &DecodeCtx, page: u32) -> Self {
        // Core reasons are below 2^16 (higher bits name a subsystem);
        // without BTF nothing is known, so nothing is called out of range.
        let drop_reason_max =
            ctx.reason_names.keys().filter(|r| *r >> 16 == 0).max().map_or(u32::MAX, |m| m.saturating_add(1));
        Self {
            on: level != 0,
            level,
            drop_reason_max,
            ring_bytes: if level == 0 { page } else { RING_BYTES_ON.max(page) },
        }
    }

    /// The object to load: the logging one when logging is on.
    pub(crate) fn object(&self) -> &'static [u8] {
        if self.on { super::OBJECT_LOG } else { super::OBJECT }
    }

    /// Sets the logging object's globals (each must exist: the object and
    /// this code are one build); nothing for the default object.
    pub(crate) fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        if !self.on {
            return;
        }
        loader
            .override_global("AYA_LOG_LEVEL", &self.level, true)
            .override_global("DROP_REASON_MAX", &self.drop_reason_max, true)
            .map_max_entries(MAP_LOGS, self.ring_bytes);
    }
}

fn page_size() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(4096)
}

/// Prints the kernel's log records until dropped (a thread drains the ring).
pub struct KernelLog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl KernelLog {
    /// Starts the reader for `ebpf`'s log ring if logging is on (else `None`,
    /// and the ring stays unread: nothing writes to it).
    ///
    /// # Errors
    /// If the log ring is missing or the thread cannot start.
    pub fn start(ebpf: &mut Ebpf) -> Result<Option<Self>, super::BpfError> {
        if !enabled() {
            return Ok(None);
        }
        let mut logger = aya_log::EbpfLogger::init(ebpf)
            .map_err(|e| super::BpfError::Map { name: MAP_LOGS, reason: e.to_string() })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("ktrace-bpf-log".into())
            .spawn(move || {
                loop {
                    // aya-log panics on a record it cannot parse (only a
                    // kernel object from another aya-log version writes
                    // one): stop reading instead of taking ktrace down.
                    if catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
                        log::warn!("kernel log: unreadable record; no more kernel log lines");
                        return;
                    }
                    match stopped.recv_timeout(DRAIN_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Stopped: print what is left, then end.
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                            let _ = catch_unwind(AssertUnwindSafe(|| logger.flush()));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| super::BpfError::Io { what: "starting the kernel log reader".into(), source: e })?;
        log::debug!("kernel log: reading the programs' log records ({MAP_LOGS}, --bpf-log)");
        Ok(Some(Self { stop: Some(stop), thread: Some(thread) }))
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the `.text` function at `offset` of the eBPF object writes
/// aya-log records (it references `AYA_LOGS`): the log statements LLVM
/// outlines. `programs.rs`' object check allows calls to these in the
/// logging object and nothing else (the default object has none).
#[cfg(test)]
pub(crate) fn is_log_writer(file: &object::File<'_>, offset: u64) -> bool {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};
    let Some(text) = file.section_by_name(".text") else { return false };
    let Some(func) = file.symbols().find(|s| {
        s.kind() == SymbolKind::Text
            && s.section_index() == Some(text.index())
            && (s.address()..s.address() + s.size()).contains(&offset)
    }) else {
        return false;
    };
    let range = func.address()..func.address() + func.size();
    text.relocations().any(|(at, r)| {
        range.contains(&at)
            && matches!(r.target(), RelocationTarget::Symbol(i)
                if file.symbol_by_index(i).ok().and_then(|s| s.name().ok()) == Some(MAP_LOGS))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(reasons: &[u32]) -> DecodeCtx {
        let mut c = DecodeCtx::default();
        for r in reasons {
            c.reason_names.insert(*r, format!("R{r}").into());
        }
        c
    }

    #[test]
    fn off_by_default_shrinks_the_ring_and_zeroes_the_switch() {
        let s = Switch::with_level(0, &ctx(&[0, 1, 2, 3]), 4096);
        assert_eq!(s, Switch { on: false, level: 0, drop_reason_max: 4, ring_bytes: 4096 });
        assert!(std::ptr::eq(s.object(), super::super::OBJECT));
    }

    #[test]
    fn on_sets_the_level_and_aya_logs_default_ring() {
        let s = Switch::with_level(level_number(log::LevelFilter::Debug), &ctx(&[2, 0x30001]), 4096);
        // Subsystem reasons (high bits) do not move the core range.
        assert_eq!(s, Switch { on: true, level: 4, drop_reason_max: 3, ring_bytes: 128 << 10 });
        assert!(std::ptr::eq(s.object(), super::super::OBJECT_LOG));
        assert_eq!(Switch::with_level(5, &ctx(&[]), 1 << 20).ring_bytes, 1 << 20, "at least a page");
        assert_eq!(Switch::with_level(5, &ctx(&[]), 4096).drop_reason_max, u32::MAX, "no BTF: nothing is unknown");
    }

    #[test]
    fn level_numbers_are_aya_logs() {
        use aya_log::Level;
        for (f, l) in [
            (log::LevelFilter::Error, Level::Error),
            (log::LevelFilter::Warn, Level::Warn),
            (log::LevelFilter::Info, Level::Info),
            (log::LevelFilter::Debug, Level::Debug),
            (log::LevelFilter::Trace, Level::Trace),
        ] {
            assert_eq!(level_number(f), l as u8, "{f}");
        }
        assert_eq!(level_number(log::LevelFilter::Off), 0);
    }
}
