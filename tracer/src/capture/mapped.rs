//! Capture files read in place from a memory mapping: blocks are parsed
//! where they lie and packets handed on as [`Bytes`] slices of the mapping
//! (a reference count, no copy and no allocation per record).
//!
//! Memory stays bounded whatever the file's length: pages behind the read
//! position are given back to the kernel every [`RELEASE_EVERY`] bytes
//! (`MADV_DONTNEED`; a packet still held by the analysis faults its page back
//! in from the page cache), so the mapping adds at most about
//! `2 × RELEASE_EVERY` (8 MiB) to the resident set.

use std::{fs::File, sync::Arc};

use bytes::Bytes;
use memmap2::{Advice, Mmap, UncheckedAdvice};

/// How far the read position moves before the pages behind it are released.
pub(crate) const RELEASE_EVERY: usize = 4 << 20;
/// Release boundaries are aligned to this (a multiple of any page size Linux uses).
const ALIGN: usize = 64 << 10;

/// Owner of the mapping inside every [`Bytes`] handed out.
struct Owner(Arc<Mmap>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A file mapped read-only, with a read position.
pub(crate) struct Mapped {
    map: Arc<Mmap>,
    bytes: Bytes,
    pos: usize,
    released: usize,
}

impl Mapped {
    /// Maps a regular, non-empty file; `None` for anything else (pipes,
    /// character devices, empty files) or when mapping fails: those are read
    /// as a stream.
    pub(crate) fn new(f: &File) -> Option<Self> {
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() == 0 || usize::try_from(meta.len()).is_err() {
            return None;
        }
        // SAFETY: the mapping is read-only. A capture truncated by another
        // process while it is replayed would fault (SIGBUS) on the missing
        // pages; ktrace never truncates a capture in place (`record` writes a
        // new file), which is the same assumption every mmap-based pcap
        // reader (libpcap's `pcap_open_offline` excepted) makes.
        let map = unsafe { Mmap::map(f) }.ok()?;
        // Best effort: read-ahead suits a front-to-back reader.
        let _ = map.advise(Advice::Sequential);
        let map = Arc::new(map);
        let bytes = Bytes::from_owner(Owner(Arc::clone(&map)));
        Some(Self { map, bytes, pos: 0, released: 0 })
    }

    /// The whole file.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole file, shared.
    #[inline]
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Read position.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes from the read position on.
    #[inline]
    pub(crate) fn rest(&self) -> &[u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Moves the read position to `pos`, releasing the pages far behind it.
    #[inline]
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.bytes.len());
        if self.pos - self.released >= RELEASE_EVERY {
            self.release();
        }
    }

    /// Gives the pages far behind the read position back.
    #[cold]
    fn release(&mut self) {
        let end = self.pos & !(ALIGN - 1);
        // SAFETY: a read-only file mapping: dropped pages are read back
        // from the file on the next access, so every `Bytes` into them
        // stays valid and unchanged.
        let _ =
            unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, self.released, end - self.released) };
        self.released = end;
    }
}
