//! The line buffer the JSON and record sinks share: lines are built by hand
//! in one reused buffer and written with one `write` per pipeline tick (10
//! ms live), or sooner when the buffer passes [`LineOut::FLUSH_AT`], so
//! pipes still see events promptly without a write per line.

use std::io::Write;

use super::json::JsonCache;

/// A writer, the line being built and the field writers' cache.
pub(crate) struct LineOut<W: Write> {
    out: W,
    /// Lines not yet written; the next one is appended.
    pub(crate) buf: Vec<u8>,
    pub(crate) cache: JsonCache,
    /// A write failed (closed pipe, `| head`): nothing more is written,
    /// and the run ends on its own rather than panicking.
    failed: bool,
}

impl<W: Write> LineOut<W> {
    /// Buffered bytes that trigger a write before the next tick.
    pub(crate) const FLUSH_AT: usize = 64 * 1024;

    pub(crate) fn new(out: W) -> Self {
        Self { out, buf: Vec::with_capacity(Self::FLUSH_AT + 4096), cache: JsonCache::new(), failed: false }
    }

    /// Appends `v` as one JSON line (the rare records: findings, counters).
    pub(crate) fn value(&mut self, v: &serde_json::Value) {
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.end_line();
    }

    /// Ends the line appended to [`Self::buf`].
    #[inline]
    pub(crate) fn end_line(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= Self::FLUSH_AT {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if !self.failed && !self.buf.is_empty() {
            self.failed = self.out.write_all(&self.buf).is_err();
        }
        self.buf.clear();
    }

    /// Writes what is buffered and flushes the writer.
    pub(crate) fn flush(&mut self) {
        self.write_out();
        if !self.failed {
            self.failed = self.out.flush().is_err();
        }
    }
}

impl<W: Write> Drop for LineOut<W> {
    fn drop(&mut self) {
        self.flush();
    }
}
