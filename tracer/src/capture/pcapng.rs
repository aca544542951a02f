//! pcapng building blocks: a block builder for the writer and a streaming,
//! bounded block reader (both endiannesses) for the readers.
//!
//! Reference: draft-ietf-opsawg-pcapng (blocks are `type:u32, total_len:u32,
//! body, total_len:u32`, 32-bit aligned; options are `code:u16, len:u16,
//! value, padding`).

use std::io::{self, Read};

use super::{MAX_BLOCK_LEN, ParseError};

/// Section Header Block (palindromic, so readable before the byte order is known).
pub(crate) const BT_SHB: u32 = 0x0A0D_0D0A;
/// Interface Description Block.
pub(crate) const BT_IDB: u32 = 1;
/// Obsolete Packet Block.
pub(crate) const BT_PB: u32 = 2;
/// Simple Packet Block.
pub(crate) const BT_SPB: u32 = 3;
/// Enhanced Packet Block.
pub(crate) const BT_EPB: u32 = 6;
/// Custom Block that may be copied to new files.
pub(crate) const BT_CUSTOM_COPY: u32 = 0x0000_0BAD;
/// Custom Block that must not be copied to new files.
pub(crate) const BT_CUSTOM_NOCOPY: u32 = 0x4000_0BAD;
/// Byte-order magic of the SHB.
pub(crate) const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

pub(crate) const OPT_ENDOFOPT: u16 = 0;
pub(crate) const OPT_COMMENT: u16 = 1;
/// Custom option, binary, copiable.
pub(crate) const OPT_CUSTOM_BIN: u16 = 2989;
/// Custom option, binary, not copiable.
pub(crate) const OPT_CUSTOM_BIN_NOCOPY: u16 = 19373;
pub(crate) const OPT_SHB_USERAPPL: u16 = 4;
pub(crate) const OPT_IF_NAME: u16 = 2;
pub(crate) const OPT_IF_DESCRIPTION: u16 = 3;
pub(crate) const OPT_IF_TSRESOL: u16 = 9;
pub(crate) const OPT_IF_TSOFFSET: u16 = 14;

/// Rounds up to the next multiple of 4.
pub(crate) fn pad4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// A reusable buffer in which the writer assembles one little-endian block,
/// so each block reaches the file in one `write_all` and no allocation
/// happens once the buffer has grown to the largest block.
#[derive(Default)]
pub(crate) struct BlockBuf {
    pub(crate) b: Vec<u8>,
}

impl BlockBuf {
    pub(crate) fn begin(&mut self, kind: u32) {
        self.b.clear();
        self.u32(kind);
        self.u32(0);
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.b.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.b.extend_from_slice(v);
    }

    pub(crate) fn pad(&mut self) {
        let n = pad4(self.b.len()) - self.b.len();
        self.b.extend_from_slice(&[0u8; 3][..n]);
    }

    /// One option; values longer than 65535 bytes are cut (only free text can be that long).
    pub(crate) fn option(&mut self, code: u16, value: &[u8]) {
        let v = &value[..value.len().min(usize::from(u16::MAX))];
        self.u16(code);
        self.u16(v.len() as u16);
        self.bytes(v);
        self.pad();
    }

    /// An option whose value `f` appends in place (no intermediate buffer).
    /// `f` must not write more than 65535 bytes.
    pub(crate) fn option_with(&mut self, code: u16, f: impl FnOnce(&mut Self)) {
        self.u16(code);
        let len_at = self.b.len();
        self.u16(0);
        let start = self.b.len();
        f(self);
        let len = (self.b.len() - start).min(usize::from(u16::MAX)) as u16;
        self.b[len_at..len_at + 2].copy_from_slice(&len.to_le_bytes());
        self.pad();
    }

    pub(crate) fn end_options(&mut self) {
        self.u16(OPT_ENDOFOPT);
        self.u16(0);
    }

    /// Writes the trailing and leading lengths; returns the finished block.
    pub(crate) fn finish(&mut self) -> &[u8] {
        self.pad();
        let total = (self.b.len() + 4) as u32;
        self.u32(total);
        self.b[4..8].copy_from_slice(&total.to_le_bytes());
        &self.b
    }
}

/// Bounds-checked reader over a byte slice in a given byte order.
pub(crate) struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    le: bool,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(b: &'a [u8], le: bool) -> Self {
        Self { b, pos: 0, le }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.arr::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let a = self.arr()?;
        Some(if self.le { u16::from_le_bytes(a) } else { u16::from_be_bytes(a) })
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let a = self.arr()?;
        Some(if self.le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let a = self.arr()?;
        Some(if self.le { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) })
    }
}

/// Iterates the options of a block body (from their start), stopping at
/// `opt_endofopt`, at the end of the body, or at the first malformed option
/// (Wireshark also keeps what came before a bad option).
pub(crate) fn options(b: &[u8], le: bool) -> Options<'_> {
    Options { c: Cur::new(b, le), done: false }
}

pub(crate) struct Options<'a> {
    c: Cur<'a>,
    done: bool,
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = (|| {
            let code = self.c.u16()?;
            let len = usize::from(self.c.u16()?);
            if code == OPT_ENDOFOPT {
                return None;
            }
            let v = self.c.take(len)?;
            // Padding may be missing after the last option of a sloppy writer.
            let _ = self.c.take(pad4(len) - len);
            Some((code, v))
        })();
        if item.is_none() {
            self.done = true;
        }
        item
    }
}

/// Header of a block just read by [`BlockReader::next_block`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockHdr {
    /// Block type.
    pub(crate) kind: u32,
    /// Offset of the block's first byte in the stream.
    pub(crate) start: u64,
}

/// Streams pcapng blocks: one block body at a time in a reused buffer.
pub(crate) struct BlockReader<R> {
    r: R,
    /// Offset of the next unread byte.
    offset: u64,
    /// Body of the last block (after type and length, before the trailing length).
    pub(crate) body: Vec<u8>,
    /// Byte order of the current section.
    pub(crate) le: bool,
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Maps a read error at `start`: a decompressor hitting the end of a cut
/// stream reports `UnexpectedEof`, which is truncation, not an I/O failure.
pub(crate) fn io_err(start: u64, e: io::Error) -> ParseError {
    if e.kind() == io::ErrorKind::UnexpectedEof { ParseError::Truncated(start) } else { ParseError::Io(start, e) }
}

/// Reads exactly `n` bytes into `buf` (cleared first), growing it only as data
/// arrives so a hostile length on a short file does not allocate `n` up front.
pub(crate) fn read_body(r: &mut impl Read, buf: &mut Vec<u8>, n: usize, start: u64) -> Result<(), ParseError> {
    buf.clear();
    let got = r.take(n as u64).read_to_end(buf).map_err(|e| io_err(start, e))?;
    if got < n {
        return Err(ParseError::Truncated(start));
    }
    Ok(())
}

impl<R: Read> BlockReader<R> {
    pub(crate) fn new(r: R) -> Self {
        Self { r, offset: 0, body: Vec::new(), le: true }
    }

    /// Offset of the next unread byte (= end of the last complete block).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next block into `self.body`. `Ok(None)` at a clean end of file.
    pub(crate) fn next_block(&mut self) -> Result<Option<BlockHdr>, ParseError> {
        let start = self.offset;
        let mut hdr = [0u8; 12];
        let n = read_full(&mut self.r, &mut hdr[..8]).map_err(|e| io_err(start, e))?;
        if n == 0 {
            return Ok(None);
        }
        if n < 8 {
            return Err(ParseError::Truncated(start));
        }
        let raw_kind = [hdr[0], hdr[1], hdr[2], hdr[3]];
        let raw_len = [hdr[4], hdr[5], hdr[6], hdr[7]];
        let mut already = 0usize;
        if u32::from_le_bytes(raw_kind) == BT_SHB {
            // The byte order of a section is only known from its SHB's magic.
            let m = read_full(&mut self.r, &mut hdr[8..12]).map_err(|e| io_err(start, e))?;
            if m < 4 {
                return Err(ParseError::Truncated(start));
            }
            let bom = [hdr[8], hdr[9], hdr[10], hdr[11]];
            self.le = if u32::from_le_bytes(bom) == BYTE_ORDER_MAGIC {
                true
            } else if u32::from_be_bytes(bom) == BYTE_ORDER_MAGIC {
                false
            } else {
                return Err(ParseError::corrupt(start, format!("section header with bad byte-order magic {bom:02x?}")));
            };
            already = 4;
        }
        let (kind, len) = kind_and_len(self.le, raw_kind, raw_len, start)?;
        let body_len = len as usize - 12;
        read_body(&mut self.r, &mut self.body, body_len - already, start)?;
        if already > 0 {
            self.body.splice(0..0, hdr[8..12].iter().copied());
        }
        let mut trailer = [0u8; 4];
        let m = read_full(&mut self.r, &mut trailer).map_err(|e| io_err(start, e))?;
        if m < 4 {
            return Err(ParseError::Truncated(start));
        }
        let tlen = if self.le { u32::from_le_bytes(trailer) } else { u32::from_be_bytes(trailer) };
        if tlen != len {
            return Err(ParseError::corrupt(
                start,
                format!("block type {kind:#x}: trailing length {tlen} differs from leading length {len}"),
            ));
        }
        self.offset = start + u64::from(len);
        Ok(Some(BlockHdr { kind, start }))
    }
}

/// [`BlockReader::next_block`] for a mapped file: the same checks in the
/// same order (so the same errors at the same offsets), the body returned as
/// a range of the mapping instead of copied. Advances `m` past the block.
pub(crate) fn next_mapped_block(
    m: &mut super::mapped::Mapped,
    le: &mut bool,
) -> Result<Option<(BlockHdr, std::ops::Range<usize>)>, ParseError> {
    let start = m.pos();
    let start64 = start as u64;
    let rest = m.rest();
    if rest.is_empty() {
        return Ok(None);
    }
    let Some(hdr) = rest.get(..8) else {
        return Err(ParseError::Truncated(start64));
    };
    let raw_kind = [hdr[0], hdr[1], hdr[2], hdr[3]];
    let raw_len = [hdr[4], hdr[5], hdr[6], hdr[7]];
    if u32::from_le_bytes(raw_kind) == BT_SHB {
        let Some(b) = rest.get(8..12) else {
            return Err(ParseError::Truncated(start64));
        };
        let bom = [b[0], b[1], b[2], b[3]];
        *le = if u32::from_le_bytes(bom) == BYTE_ORDER_MAGIC {
            true
        } else if u32::from_be_bytes(bom) == BYTE_ORDER_MAGIC {
            false
        } else {
            return Err(ParseError::corrupt(start64, format!("section header with bad byte-order magic {bom:02x?}")));
        };
    }
    let (kind, len) = kind_and_len(*le, raw_kind, raw_len, start64)?;
    let len_us = len as usize;
    let Some(trailer) = rest.get(len_us - 4..len_us) else {
        return Err(ParseError::Truncated(start64));
    };
    let trailer = [trailer[0], trailer[1], trailer[2], trailer[3]];
    let tlen = if *le { u32::from_le_bytes(trailer) } else { u32::from_be_bytes(trailer) };
    if tlen != len {
        return Err(ParseError::corrupt(
            start64,
            format!("block type {kind:#x}: trailing length {tlen} differs from leading length {len}"),
        ));
    }
    m.set_pos(start + len_us);
    Ok(Some((BlockHdr { kind, start: start64 }, start + 8..start + len_us - 4)))
}

/// A block's type and total length in the section's byte order, with the
/// length checked the same way for streamed and mapped reading.
fn kind_and_len(le: bool, raw_kind: [u8; 4], raw_len: [u8; 4], start: u64) -> Result<(u32, u32), ParseError> {
    let (kind, len) = if le {
        (u32::from_le_bytes(raw_kind), u32::from_le_bytes(raw_len))
    } else {
        (u32::from_be_bytes(raw_kind), u32::from_be_bytes(raw_len))
    };
    let min = if kind == BT_SHB { 28 } else { 12 };
    if len < min || len % 4 != 0 || len > MAX_BLOCK_LEN {
        return Err(ParseError::corrupt(
            start,
            format!(
                "block type {kind:#x} has invalid length {len} (must be a multiple of 4 between {min} and {MAX_BLOCK_LEN})"
            ),
        ));
    }
    Ok((kind, len))
}
