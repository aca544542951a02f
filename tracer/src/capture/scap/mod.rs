//! sysdig/falco capture files (`.scap`, `sysdig -w`, plain or whole-file
//! gzip) read into ktrace's record model, so the same decode → pair →
//! findings pipeline runs on years-old incident captures.
//!
//! The file is pcapng-like (see `docs/scap.md`): a section header, then
//! machine-info, process-list, fd-list, interface and user blocks, then event
//! blocks. The reader streams it one block at a time (at most
//! [`MAX_SCAP_BLOCK`] bytes), rebuilds the process, fd and container tables
//! sysdig keeps, and turns:
//!
//! * DNS messages sent or received on port 53 into [`Record::Packet`]s with a
//!   synthesised IP + UDP/TCP header (egress with the sending process);
//! * reads of `/etc/resolv.conf` into [`Record::ResolvConf`];
//! * failed connections (`ECONNREFUSED`, `ETIMEDOUT`, `E*UNREACH`) into
//!   `conn_fail/v1` custom meta blocks;
//! * Kubernetes pods named in container metadata into a
//!   [`MetaBlock::KubeSnapshot`] whose `ktrace.io/cgroup-id` annotations match
//!   the synthetic cgroup ids the records carry.
//!
//! Everything skipped is counted in [`ScapStats`].
//!
//! [`Record::Packet`]: crate::event::Record::Packet
//! [`Record::ResolvConf`]: crate::event::Record::ResolvConf
//! [`MetaBlock::KubeSnapshot`]: crate::capture::MetaBlock::KubeSnapshot

mod blocks;
mod events;
mod state;
mod synth;

use std::io::{BufRead, BufReader, Cursor, Read};

use serde::Serialize;

use super::{
    Item, ParseError,
    pcapng::{io_err, read_body, read_full},
};

/// Largest scap block accepted (large event blocks can hold big container
/// JSON); bounds the allocation on hostile input.
pub const MAX_SCAP_BLOCK: u32 = 64 * 1024 * 1024;

const BT_SHB: u32 = 0x0A0D_0D0A;
const SHB_MAGIC: u32 = 0x1A2B_3C4D;
const MI: [u32; 2] = [0x201, 0x8002_ABCD];
const FDL_V1: [u32; 2] = [0x203, 0x8001_ABCD];
const FDL_V2: u32 = 0x218;
const IL: [u32; 3] = [0x205, 0x8011_ABCD, 0x219];
const UL: [u32; 3] = [0x206, 0x8012_ABCD, 0x220];

/// Event block types: (v2 header with nparams, cpuid+flags prefix).
fn event_block(kind: u32) -> Option<(bool, bool)> {
    Some(match kind {
        0x204 | 0x8010_ABCD => (false, false),
        0x208 => (false, true),
        0x216 | 0x221 => (true, false),
        0x217 | 0x222 => (true, true),
        _ => return None,
    })
}

/// Block types only scap uses (what tells a scap file from a pcapng one).
fn is_scap_block(kind: u32) -> bool {
    (0x201..=0x222).contains(&kind) || (kind & 0xFF00_FFFF) == 0x8000_ABCD
}

/// What the scap reader did: reported next to the results, so nothing is
/// skipped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScapStats {
    /// Section header blocks.
    pub sections: u64,
    /// Events read.
    pub events: u64,
    /// Events of types ktrace does not look at (most syscalls).
    pub events_skipped: u64,
    /// Events whose parameters could not be located (counted, skipped).
    pub events_malformed: u64,
    /// Blocks of unknown type, skipped by length.
    pub blocks_unknown: u64,
    /// Process-list or fd-list blocks that were malformed (entries before the fault kept).
    pub blocks_malformed: u64,
    /// Threads from process-list blocks.
    pub threads: u64,
    /// File descriptors from fd-list blocks.
    pub fds: u64,
    /// Containers seen (cgroups or container events).
    pub containers: u64,
    /// DNS messages turned into packets.
    pub dns_messages: u64,
    /// Socket I/O not on port 53.
    pub io_non_dns: u64,
    /// Socket I/O whose endpoints nothing in the capture told.
    pub io_unknown_endpoints: u64,
    /// I/O on fds that are neither sockets nor resolv.conf.
    pub io_other: u64,
    /// Payloads too large for one synthesised packet.
    pub io_too_large: u64,
    /// Sends recorded without parameters (old drivers' `sendmmsg`): their
    /// messages can only come from the receiver's view (`dns_inferred`).
    pub sends_without_data: u64,
    /// Client queries sent with no data in the capture (old drivers record
    /// `sendmmsg` without parameters), synthesised from the resolver's view.
    pub dns_inferred: u64,
    /// Connection failures reported (`conn_fail/v1`).
    pub conn_failures: u64,
    /// resolv.conf contents reported.
    pub resolv_conf: u64,
    /// Kubernetes snapshots emitted.
    pub snapshots: u64,
    /// Entries dropped because a bounded table was full.
    pub table_full: u64,
}

/// Tells whether a stream that starts with a section header block is a scap
/// file: its byte-order magic is little-endian and the next block is of a
/// scap-only type. Returns the stream rewound (what was read is replayed).
pub(crate) fn sniff(mut src: Box<dyn Read + Send>) -> Result<(bool, Box<dyn Read + Send>), ParseError> {
    let mut hdr = [0u8; 8];
    let n = read_full(&mut src, &mut hdr).map_err(|e| io_err(0, e))?;
    let mut prefix = hdr.get(..n).unwrap_or_default().to_vec();
    let len = events::le32(&hdr, 4).unwrap_or(0);
    let mut scap = false;
    if n == 8 && events::le32(&hdr, 0) == Some(BT_SHB) && (28..=MAX_SCAP_BLOCK).contains(&len) {
        let mut rest = Vec::new();
        let want = u64::from(len) - 8 + 4;
        (&mut src).take(want).read_to_end(&mut rest).map_err(|e| io_err(0, e))?;
        let magic = events::le32(&rest, 0);
        let next = events::le32(&rest, len as usize - 8);
        scap = magic == Some(SHB_MAGIC) && next.is_some_and(is_scap_block);
        prefix.extend_from_slice(&rest);
    }
    Ok((scap, Box::new(Cursor::new(prefix).chain(src))))
}

/// A scap file being read: [`Item`]s in file order, one block in memory.
pub(crate) struct ScapSource {
    r: BufReader<Box<dyn Read + Send>>,
    offset: u64,
    body: Vec<u8>,
    dec: state::Decoder,
    done: bool,
}

impl ScapSource {
    pub(crate) fn new(src: Box<dyn Read + Send>) -> Self {
        Self {
            r: BufReader::with_capacity(256 * 1024, src),
            offset: 0,
            body: Vec::new(),
            dec: state::Decoder::new(),
            done: false,
        }
    }

    /// Bytes consumed (of the decompressed stream).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> ScapStats {
        self.dec.stats
    }

    /// The next item; `Ok(None)` at the end of the file.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>, ParseError> {
        loop {
            if let Some(item) = self.dec.out.pop_front() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            if let Some((kind, start)) = self.next_block()? {
                self.block(kind, start)?;
            } else {
                self.done = true;
                self.dec.finish();
            }
        }
    }

    /// Reads one block into `body`: `(type, start offset)`.
    fn next_block(&mut self) -> Result<Option<(u32, u64)>, ParseError> {
        let start = self.offset;
        let mut hdr = [0u8; 8];
        // Out of the read buffer when it is there (nearly always), as the body below.
        let n = if let Some(h) = self.r.buffer().first_chunk::<8>() {
            hdr = *h;
            self.r.consume(8);
            8
        } else {
            read_full(&mut self.r, &mut hdr).map_err(|e| io_err(start, e))?
        };
        if n == 0 {
            return Ok(None);
        }
        let (Some(kind), Some(len)) = (events::le32(&hdr, 0), events::le32(&hdr, 4)) else {
            return Err(ParseError::Truncated(start));
        };
        if n < 8 {
            return Err(ParseError::Truncated(start));
        }
        if len < 12 {
            return Err(ParseError::corrupt(start, format!("scap block type {kind:#x} with length {len} (under 12)")));
        }
        if len > MAX_SCAP_BLOCK {
            return Err(ParseError::corrupt(
                start,
                format!("scap block type {kind:#x} with length {len} (over {MAX_SCAP_BLOCK})"),
            ));
        }
        let want = len as usize - 8;
        // Most blocks are events of a few dozen bytes, already in the read
        // buffer: copied out directly. `read_body`'s `read_to_end` (which
        // grows the buffer only as data arrives, for hostile lengths) was
        // 26 % of a scap replay's instructions.
        if let Some(b) = self.r.buffer().get(..want) {
            self.body.clear();
            self.body.extend_from_slice(b);
            self.r.consume(want);
        } else {
            read_body(&mut self.r, &mut self.body, want, start)?;
        }
        let (body_len, trailer) = (len as usize - 12, events::le32(&self.body, len as usize - 12));
        if trailer != Some(len) {
            return Err(ParseError::corrupt(
                start,
                format!("scap block type {kind:#x}: trailing length {trailer:?} differs from {len}"),
            ));
        }
        self.body.truncate(body_len);
        self.offset = start + u64::from(len);
        Ok(Some((kind, start)))
    }

    fn block(&mut self, kind: u32, start: u64) -> Result<(), ParseError> {
        let body = self.body.as_slice();
        if kind == BT_SHB {
            let magic = events::le32(body, 0);
            let major = events::le16(body, 4);
            if magic != Some(SHB_MAGIC) {
                return Err(ParseError::corrupt(start, "scap section header: not little-endian (byte-order magic)"));
            }
            if major != Some(1) {
                return Err(ParseError::Unsupported(format!(
                    "scap major version {major:?} at byte {start} (only 1 exists)"
                )));
            }
            // The rest (section length, pcapng options) carries nothing ktrace needs.
            self.dec.stats.sections += 1;
            return Ok(());
        }
        if let Some((v2, flags)) = event_block(kind) {
            self.dec.stats.events += 1;
            let skip = if flags { 6 } else { 2 };
            let ev = body.get(skip..).unwrap_or_default();
            let Some(h) = events::header(ev) else {
                self.dec.stats.events_malformed += 1;
                return Ok(());
            };
            let Some(ev) = ev.get(..h.len as usize).filter(|_| h.len as usize >= events::HDR_V1) else {
                self.dec.stats.events_malformed += 1;
                return Ok(());
            };
            if events::max_params(h.etype).is_none() {
                self.dec.stats.events_skipped += 1;
                return Ok(());
            }
            match events::params(ev, h.etype, v2) {
                Ok(p) => self.dec.event(h.ts, h.tid, h.etype, &p),
                Err(e) => {
                    log::debug!("scap event type {} at byte {start}: {e:?}", h.etype);
                    self.dec.stats.events_malformed += 1;
                }
            }
            return Ok(());
        }
        if let Some(v) = blocks::proclist_version(kind) {
            let dec = &mut self.dec;
            if blocks::proclist(body, v, |e| dec.proc_entry(&e)) {
                self.dec.stats.blocks_malformed += 1;
            }
            return Ok(());
        }
        if FDL_V1.contains(&kind) || kind == FDL_V2 {
            let dec = &mut self.dec;
            if blocks::fdlist(body, kind == FDL_V2, |tid, e| dec.fd_entry(tid, e)) {
                self.dec.stats.blocks_malformed += 1;
            }
            return Ok(());
        }
        if MI.contains(&kind) {
            // num_cpus u32, memory u64, max_pid u64, then the NUL-terminated
            // hostname (its buffer was shorter in old versions).
            let h = body.get(20..).unwrap_or_default();
            let h = h.get(..256).unwrap_or(h);
            let h = h.split(|&c| c == 0).next().unwrap_or_default();
            self.dec.set_node(&String::from_utf8_lossy(h));
            return Ok(());
        }
        if IL.contains(&kind) || UL.contains(&kind) {
            return Ok(());
        }
        self.dec.stats.blocks_unknown += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
