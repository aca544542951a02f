//! ktrace's capture file: pcapng with packets as Enhanced Packet Blocks and
//! everything else in Custom Blocks (see `docs/capture-format.md`), plus
//! readers for foreign pcap/pcapng files.
//!
//! * [`CaptureWriter`]: records [`Record`]s and [`MetaBlock`]s to a
//!   (optionally zstd-compressed) pcapng file that Wireshark and tshark open.
//! * [`open`]: reads a ktrace capture, a pcapng or classic pcap written by
//!   tcpdump/tshark, plain, zstd- or gzip-compressed, as a stream of [`Item`]s.
//! * [`merge_by_time`]: several nodes' captures merged into one time-ordered
//!   stream (`-r a -r b`).
//!
//! Readers never panic on hostile input, never allocate more than one block
//! (at most [`MAX_BLOCK_LEN`]) and always make progress; a truncated file yields
//! everything up to the last complete block, then [`CaptureError::Truncated`].

mod foreign;
mod mapped;
mod meta;
mod pcapng;
mod reader;
pub mod scap;
mod writer;

use std::{path::Path, sync::Arc};

use nix::time::ClockId;
use serde::{Deserialize, Serialize};

use crate::event::Record;

pub use foreign::LinkType;
pub use meta::{MetaBlock, record_type};
pub use reader::{
    CaptureReader, Format, MergeByTime, Next, ReaderStats, merge_by_time, open, open_counted, open_reader,
};
pub use writer::{CaptureWriter, WriterStats, ZSTD_LEVEL, byte_sink, open_private, record_block};

/// Private Enterprise Number tagging ktrace's pcapng custom blocks and options.
///
/// 32473 is the number IANA reserves for documentation (RFC 5612); it keeps
/// ktrace's blocks apart from anyone else's without registering a number.
pub const KTRACE_PEN: u32 = 32473;

/// Version of the capture schema this build writes (see `docs/capture-format.md`).
///
/// Bumped when a block's encoding changes incompatibly; each custom record
/// also carries its own version so readers can skip what they do not know.
pub const SCHEMA_VERSION: u16 = 1;

/// Largest block a reader accepts: bounds the allocation for hostile input.
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;

/// Reference point between the observing node's `CLOCK_MONOTONIC` and the wall
/// clock, recorded at start and periodically, so packets (stamped with the
/// monotonic clock in the kernel) can be shown and merged in wall-clock time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockRef {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// Wall clock (`CLOCK_REALTIME`) nanoseconds since the Unix epoch at the same instant.
    pub wall_ns: u64,
}

impl ClockRef {
    /// Reads both clocks now (back to back; the gap is well under a microsecond).
    #[must_use]
    pub fn now() -> Self {
        let mono_ns = clock_ns(ClockId::CLOCK_MONOTONIC);
        let wall_ns = clock_ns(ClockId::CLOCK_REALTIME);
        Self { mono_ns, wall_ns }
    }

    /// Converts a monotonic timestamp to wall-clock nanoseconds with this reference.
    #[must_use]
    pub fn to_wall(&self, mono_ns: u64) -> u64 {
        // `mono_ns + wall - mono`, clamped to `u64`, without 128-bit
        // arithmetic (this runs once per replayed record).
        if self.wall_ns >= self.mono_ns {
            mono_ns.saturating_add(self.wall_ns - self.mono_ns)
        } else {
            mono_ns.saturating_sub(self.mono_ns - self.wall_ns)
        }
    }

    /// Converts a wall-clock timestamp back to this node's monotonic clock.
    #[must_use]
    pub fn to_mono(&self, wall_ns: u64) -> u64 {
        let v = i128::from(wall_ns) - self.offset();
        v.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// `wall - mono`, in nanoseconds.
    #[must_use]
    pub fn offset(&self) -> i128 {
        i128::from(self.wall_ns) - i128::from(self.mono_ns)
    }
}

fn clock_ns(clock: ClockId) -> u64 {
    let Ok(ts) = nix::time::clock_gettime(clock) else { return 0 };
    (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64)
}

/// What a ktrace capture says about itself: the first custom block of every
/// section, written by [`CaptureWriter::create`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// Name of the node that recorded (`--node-name`, `$NODE_NAME` or the hostname).
    pub node: String,
    /// ktrace version that wrote the file (`env!("CARGO_PKG_VERSION")`).
    pub ktrace_version: String,
    /// Monotonic ↔ wall clock at the start of the capture.
    pub clock: ClockRef,
    /// Bytes kept per packet (0: no limit).
    pub snaplen: u32,
    /// Whether the writer was asked to compress (whole-stream zstd).
    #[serde(default)]
    pub compress: bool,
}

/// One thing read from a capture, in file order.
#[derive(Clone, Debug)]
pub enum Item {
    /// A packet, lost-event counter or resolv.conf evidence.
    Record(Record),
    /// Context that is not a record (node identity, clocks, kube snapshot, netstate…).
    Meta(MetaBlock),
}

/// Errors of capture reading and writing. Every error found in a file names
/// the file and the byte offset (in the decompressed stream for compressed files).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or created.
    #[error("{}: {source}", path.display())]
    Open {
        /// File.
        path: Arc<Path>,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("{}: I/O error at byte {offset}: {source}", path.display())]
    Io {
        /// File.
        path: Arc<Path>,
        /// Offset where it happened.
        offset: u64,
        /// Cause.
        source: std::io::Error,
    },
    /// The file ends in the middle of a block (recorder killed, copy cut short).
    /// Everything before `offset` was read; this is a warning, not a failure.
    #[error(
        "{}: capture truncated: the block at byte {offset} is incomplete; everything before it was read",
        path.display()
    )]
    Truncated {
        /// File.
        path: Arc<Path>,
        /// Start of the incomplete block (= end of the last complete one).
        offset: u64,
    },
    /// The file is malformed.
    #[error("{}: corrupt capture at byte {offset}: {what}", path.display())]
    Corrupt {
        /// File.
        path: Arc<Path>,
        /// Start of the offending block or record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A recognised format that ktrace does not read (yet), or an unknown one.
    #[error("{}: {what}", path.display())]
    Unsupported {
        /// File.
        path: Arc<Path>,
        /// Which format, and what to do instead.
        what: String,
    },
}

impl CaptureError {
    /// True for [`CaptureError::Truncated`]: the caller should warn and go on
    /// with what was read.
    #[must_use]
    pub fn is_truncation(&self) -> bool {
        matches!(self, Self::Truncated { .. })
    }

    /// Byte offset in the (decompressed) file, when the error has one.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Io { offset, .. } | Self::Truncated { offset, .. } | Self::Corrupt { offset, .. } => Some(*offset),
            Self::Open { .. } | Self::Unsupported { .. } => None,
        }
    }
}

/// Error found while parsing, before the file name is attached.
#[derive(Debug)]
pub(crate) enum ParseError {
    Truncated(u64),
    Corrupt(u64, String),
    Io(u64, std::io::Error),
    Unsupported(String),
}

impl ParseError {
    pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        Self::Corrupt(offset, what.into())
    }

    pub(crate) fn with_path(self, path: &Arc<Path>) -> CaptureError {
        let path = Arc::clone(path);
        match self {
            Self::Truncated(offset) => CaptureError::Truncated { path, offset },
            Self::Corrupt(offset, what) => CaptureError::Corrupt { path, offset, what },
            Self::Io(offset, source) => CaptureError::Io { path, offset, source },
            Self::Unsupported(what) => CaptureError::Unsupported { path, what },
        }
    }
}

#[cfg(test)]
mod tests;
