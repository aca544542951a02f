//! [`CaptureWriter`]: ktrace records and context → pcapng (optionally zstd).

use std::{
    fmt::Write as _,
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
};

use bytes::BufMut;

use super::{
    CaptureError, CaptureHeader, ClockRef, KTRACE_PEN, MetaBlock, SCHEMA_VERSION,
    foreign::LinkType,
    meta::{self, encode_iface_meta, encode_packet_meta, hook_name},
    pcapng::{
        BT_CUSTOM_COPY, BT_EPB, BT_IDB, BT_SHB, BYTE_ORDER_MAGIC, BlockBuf, OPT_COMMENT, OPT_CUSTOM_BIN,
        OPT_IF_DESCRIPTION, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_SHB_USERAPPL, pad4,
    },
};
use crate::{
    event::{Hook, PacketRecord, Process, Record},
    hash::FastMap,
};

/// zstd level of compressed captures. 9, not the usual 3: on ktrace's
/// records it makes 13.8 instead of 16.2 bytes per DNS message, at about
/// 50 MB/s (≈ 200k DNS messages/s) per core, on the writer's own thread.
pub const ZSTD_LEVEL: i32 = 9;

/// Counters of a writer, for the `record` summary and the size benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Packets written.
    pub packets: u64,
    /// Non-packet records written (lost, resolv.conf).
    pub records: u64,
    /// Meta blocks written (header included).
    pub meta_blocks: u64,
    /// Interfaces declared.
    pub interfaces: u32,
    /// pcapng bytes produced (before compression).
    pub bytes: u64,
}

enum Sink {
    Plain(BufWriter<File>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
    /// Blocks for a stream (the agent), taken with [`CaptureWriter::take_bytes`].
    Memory(Vec<u8>),
}

impl Sink {
    fn out(&mut self) -> &mut dyn Write {
        match self {
            Self::Plain(w) => w,
            Self::Zstd(w) => w,
            Self::Memory(v) => v,
        }
    }

    fn finish(self) -> io::Result<()> {
        let mut w = match self {
            Self::Plain(w) => w,
            Self::Zstd(z) => z.finish()?,
            Self::Memory(_) => return Ok(()),
        };
        w.flush()?;
        w.into_inner().map_err(io::IntoInnerError::into_error)?.sync_data()
    }
}

/// One interface already declared: looked up per packet without allocating.
struct Iface {
    node: Option<Arc<str>>,
    hint: Option<Box<str>>,
    id: u32,
}

/// What follows a packet's data in its block (the comment, the ktrace
/// option, the end of options) for one recent (socket owner, process,
/// interface): the same for every packet of a socket but its time and wire
/// length, which are stamped into the kept bytes. Built by
/// [`Tail::new`] the way every block was built before, so the bytes are the
/// same; a packet whose identity matches a kept tail skips the comment's
/// digits, the option encoding and the interface lookup.
struct Tail {
    hook: Hook,
    cgroup_id: u64,
    netns_cookie: u64,
    netns_ino: u32,
    ifindex: u32,
    process: Option<Process>,
    node: Option<Arc<str>>,
    hint: Option<Box<str>>,
    /// The interface the packets are declared on.
    iface: u32,
    bytes: Vec<u8>,
    /// Where the packet's time and wire length sit in `bytes`.
    ts_at: usize,
}

/// A packet's block, but for its data and tail (kept in the writer).
struct PacketParts {
    /// Bytes of an interface declaration written before it.
    iface_bytes: usize,
    head: [u8; 28],
    /// Packet bytes in the block.
    cap: usize,
    /// Its tail in [`CaptureWriter::tails`].
    slot: usize,
    total: usize,
    /// The block's trailing length.
    end: [u8; 4],
}

/// Tails kept (direct-mapped: a node's busy sockets are few, and a
/// collision only costs a rebuild).
const TAILS: usize = 64;

/// Offsets in the ktrace packet option (from the option's code): code and
/// length, the PEN, version/hook/flags, then the time; the wire length
/// follows the time, the cgroup, the netns cookie, inode and ifindex.
const OPT_TS_AT: usize = 4 + 4 + 4;
const TS_TO_WIRE_LEN: usize = 8 + 8 + 8 + 4 + 4;

impl Tail {
    fn slot(p: &PacketRecord) -> usize {
        let tid = p.process.as_ref().map_or(0, |pr| pr.tid);
        let k =
            p.cgroup_id ^ u64::from(p.netns_ino).rotate_left(17) ^ (u64::from(tid) << 40) ^ u64::from(p.hook.to_raw());
        (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % TAILS
    }

    fn new(p: &PacketRecord, hint: Option<&str>, iface: u32) -> Self {
        let mut b = BlockBuf::default();
        // Written in place, without `fmt`; the comment is far below an
        // option's 65535 bytes.
        b.option_with(OPT_COMMENT, |b| {
            if let Some(pr) = &p.process {
                b.bytes(b"pid=");
                put_dec(b, pr.pid.into());
                b.bytes(b" tid=");
                put_dec(b, pr.tid.into());
                b.bytes(b" comm=");
                b.bytes(pr.comm.as_bytes());
                b.bytes(b" thread=");
                b.bytes(pr.thread.as_bytes());
                b.bytes(b" ");
            }
            // The interface name already says node and netns; keep the comment short.
            b.bytes(b"hook=");
            b.bytes(hook_name(p.hook).as_bytes());
            b.bytes(b" cgroup=");
            put_dec(b, p.cgroup_id);
            if p.ifindex != 0 {
                b.bytes(b" ifindex=");
                put_dec(b, p.ifindex.into());
            }
        });
        let ts_at = b.b.len() + OPT_TS_AT;
        b.option_with(OPT_CUSTOM_BIN, |b| {
            b.u32(KTRACE_PEN);
            encode_packet_meta(p, b);
        });
        b.end_options();
        debug_assert_eq!(b.b[ts_at..ts_at + 8], p.ts_ns.to_le_bytes());
        debug_assert_eq!(b.b[ts_at + TS_TO_WIRE_LEN..ts_at + TS_TO_WIRE_LEN + 4], p.wire_len.to_le_bytes());
        Self {
            hook: p.hook,
            cgroup_id: p.cgroup_id,
            netns_cookie: p.netns_cookie,
            netns_ino: p.netns_ino,
            ifindex: p.ifindex,
            process: p.process.clone(),
            node: p.node.clone(),
            hint: hint.map(Box::from),
            iface,
            bytes: b.b,
            ts_at,
        }
    }

    /// Whether `p`'s tail and interface are this one's (all but its time and length).
    fn is_for(&self, p: &PacketRecord, hint: Option<&str>) -> bool {
        fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
            Arc::ptr_eq(a, b) || **a == **b
        }
        self.cgroup_id == p.cgroup_id
            && self.netns_ino == p.netns_ino
            && self.netns_cookie == p.netns_cookie
            && self.ifindex == p.ifindex
            && self.hook == p.hook
            && match (&self.process, &p.process) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.pid == b.pid && a.tid == b.tid && same(&a.comm, &b.comm) && same(&a.thread, &b.thread)
                }
                _ => false,
            }
            && match (&self.node, &p.node) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            }
            && self.hint.as_deref() == hint
    }

    /// Puts `p`'s time and wire length into the tail's bytes.
    fn stamp(&mut self, p: &PacketRecord) {
        let w = self.ts_at + TS_TO_WIRE_LEN;
        self.bytes[self.ts_at..self.ts_at + 8].copy_from_slice(&p.ts_ns.to_le_bytes());
        self.bytes[w..w + 4].copy_from_slice(&p.wire_len.to_le_bytes());
    }
}

/// Writes a ktrace capture: pcapng, little-endian, Wireshark-readable.
///
/// Packets become Enhanced Packet Blocks on one interface per
/// (node, network namespace, interface-name hint); everything else becomes
/// ktrace custom blocks. Buffered; [`CaptureWriter::finish`] flushes and
/// closes (dropping the writer does the same, ignoring errors).
pub struct CaptureWriter {
    sink: Option<Sink>,
    path: Arc<Path>,
    blk: BlockBuf,
    /// A non-packet record's body, reused.
    body: Vec<u8>,
    ifaces: FastMap<(u64, u32), Vec<Iface>>,
    node: String,
    clock: ClockRef,
    snaplen: u32,
    stats: WriterStats,
    /// Recent packets' tails, by [`Tail::slot`].
    tails: Box<[Option<Tail>]>,
}

impl CaptureWriter {
    /// Creates (truncates) `path` and writes the section header and the
    /// [`MetaBlock::Header`]. The stream is zstd-compressed when
    /// `header.compress` is set or the file name ends in `.zst`.
    pub fn create(path: impl AsRef<Path>, header: CaptureHeader) -> Result<Self, CaptureError> {
        Self::create_with(path, header, false)
    }

    /// Like [`CaptureWriter::create`], for a daemon writing where others may
    /// have write access: the file must not exist yet, is never reached
    /// through a symlink, and is readable by its owner only (DNS names are
    /// sensitive).
    pub fn create_private(path: impl AsRef<Path>, header: CaptureHeader) -> Result<Self, CaptureError> {
        Self::create_with(path, header, true)
    }

    /// A writer whose blocks accumulate in memory (see [`CaptureWriter::take_bytes`]).
    #[must_use]
    pub fn in_memory(header: CaptureHeader) -> Self {
        let mut w = Self::new(Arc::from(Path::new("<stream>")), Sink::Memory(Vec::with_capacity(4096)), &header);
        // Writing to a Vec cannot fail, and the header is far below the block limit.
        let _ = w.write_shb(&header.ktrace_version);
        let _ = w.write_meta(&MetaBlock::Header(CaptureHeader { compress: false, ..header }));
        w
    }

    /// The bytes written since the last call (in-memory writers; empty otherwise).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        match self.sink.as_mut() {
            // An exact-size copy: history entries hold these bytes for a
            // long time, so they must not pin a larger buffer.
            Some(Sink::Memory(v)) => {
                let out = v.as_slice().to_vec();
                v.clear();
                out
            }
            _ => Vec::new(),
        }
    }

    fn new(path: Arc<Path>, sink: Sink, header: &CaptureHeader) -> Self {
        Self {
            sink: Some(sink),
            path,
            blk: BlockBuf::default(),
            body: Vec::with_capacity(256),
            ifaces: FastMap::default(),
            node: header.node.clone(),
            clock: header.clock,
            snaplen: header.snaplen,
            stats: WriterStats::default(),
            tails: (0..TAILS).map(|_| None).collect(),
        }
    }

    fn create_with(path: impl AsRef<Path>, header: CaptureHeader, private: bool) -> Result<Self, CaptureError> {
        let path: Arc<Path> = Arc::from(path.as_ref());
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        let file = if private {
            open_private(&path)
        } else {
            opts.create(true).truncate(true);
            opts.open(&path)
        }
        .map_err(|source| CaptureError::Open { path: Arc::clone(&path), source })?;
        let compress = header.compress || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zst"));
        let buf = BufWriter::with_capacity(256 * 1024, file);
        let sink = if compress {
            let enc = zstd::Encoder::new(buf, ZSTD_LEVEL).map_err(|source| CaptureError::Io {
                path: Arc::clone(&path),
                offset: 0,
                source,
            })?;
            Sink::Zstd(enc)
        } else {
            Sink::Plain(buf)
        };
        let mut w = Self::new(path, sink, &header);
        w.write_shb(&header.ktrace_version)?;
        let header = CaptureHeader { compress, ..header };
        w.write_meta(&MetaBlock::Header(header))?;
        Ok(w)
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Emits the block in `blk`: into `out` when given (one copy, no
    /// allocation once `out` has room), else to the sink.
    fn emit_to(&mut self, out: Option<&mut dyn BufMut>) -> Result<(), CaptureError> {
        let Some(out) = out else { return self.emit() };
        let block = self.blk.finish();
        out.put_slice(block);
        self.stats.bytes += block.len() as u64;
        Ok(())
    }

    fn emit(&mut self) -> Result<(), CaptureError> {
        let offset = self.stats.bytes;
        let Some(sink) = self.sink.as_mut() else {
            return Err(CaptureError::Io {
                path: Arc::clone(&self.path),
                offset,
                source: io::Error::other("capture writer already finished"),
            });
        };
        let block = self.blk.finish();
        sink.out().write_all(block).map_err(|source| CaptureError::Io {
            path: Arc::clone(&self.path),
            offset,
            source,
        })?;
        self.stats.bytes += block.len() as u64;
        Ok(())
    }

    /// Writes the complete block in `blk` (lengths already in place, its
    /// `len` bytes already counted) to the sink.
    fn emit_block(&mut self, len: usize) -> Result<(), CaptureError> {
        let offset = self.stats.bytes - len as u64;
        let path = &self.path;
        let io = |source| CaptureError::Io { path: Arc::clone(path), offset, source };
        let Some(sink) = self.sink.as_mut() else {
            return Err(io(io::Error::other("capture writer already finished")));
        };
        sink.out().write_all(&self.blk.b).map_err(io)
    }

    fn write_shb(&mut self, version: &str) -> Result<(), CaptureError> {
        let b = &mut self.blk;
        b.begin(BT_SHB);
        b.u32(BYTE_ORDER_MAGIC);
        b.u16(1);
        b.u16(0);
        // Section length unknown: we stream.
        b.u64(u64::MAX);
        let appl = format!("ktrace {version} (capture schema {SCHEMA_VERSION})");
        b.option(OPT_SHB_USERAPPL, appl.as_bytes());
        b.end_options();
        self.emit()
    }

    /// Builds a custom block with `record type, version, body`.
    fn build_custom(b: &mut BlockBuf, body: &[u8], rt: u16, version: u16) {
        // Copiable: the context (node, clocks, netstate) stays true for any
        // subset of the packets, so a file cut with editcap should keep it.
        b.begin(BT_CUSTOM_COPY);
        b.u32(KTRACE_PEN);
        b.u16(rt);
        b.u16(version);
        b.u32(body.len() as u32);
        b.bytes(body);
    }

    /// Writes context. A [`MetaBlock::ClockRef`] also becomes the reference
    /// for the wall-clock timestamps of the packets that follow.
    pub fn write_meta(&mut self, m: &MetaBlock) -> Result<(), CaptureError> {
        self.put_meta(m, None)
    }

    /// Like [`CaptureWriter::write_meta`], appending the block to `out`
    /// instead of the writer's own output (a stream that keeps its blocks).
    pub fn append_meta(&mut self, m: &MetaBlock, out: &mut impl BufMut) -> Result<(), CaptureError> {
        self.put_meta(m, Some(out))
    }

    fn put_meta(&mut self, m: &MetaBlock, out: Option<&mut dyn BufMut>) -> Result<(), CaptureError> {
        if let MetaBlock::ClockRef(c) = m {
            self.clock = *c;
        }
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let (rt, v) = meta::encode_meta(m, &mut body);
        let r = self.check_len(body.len()).map(|()| Self::build_custom(&mut self.blk, &body, rt, v));
        self.body = body;
        r?;
        self.emit_to(out)?;
        self.stats.meta_blocks += 1;
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), CaptureError> {
        // Readers refuse blocks over MAX_BLOCK_LEN; refuse to write one.
        if len > super::MAX_BLOCK_LEN as usize - 64 {
            return Err(CaptureError::Io {
                path: Arc::clone(&self.path),
                offset: self.stats.bytes,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("block of {len} bytes exceeds the capture format's 16 MiB limit"),
                ),
            });
        }
        Ok(())
    }

    /// Writes one record. `iface_hint` names the packet's interface in
    /// Wireshark (`node/<hint>`, e.g. the pod as `critical-app/client`);
    /// without it the interface is `node/netns:<inode>`. Interfaces are keyed
    /// by (node, netns cookie, netns inode, hint): pass the same hint for a
    /// namespace every time, or it gets one interface per hint.
    pub fn write_record(&mut self, rec: &Record, iface_hint: Option<&str>) -> Result<(), CaptureError> {
        self.put_record(rec, iface_hint, None).map(drop)
    }

    /// Like [`CaptureWriter::write_record`], appending the record's blocks to
    /// the caller's `out` (e.g. a reused buffer whose records a stream keeps)
    /// instead of the writer's own output: the same bytes, each copied once
    /// into `out`, without allocating once `out` has room. Returns how many
    /// of the appended bytes, at the start, declare a new interface (0 unless
    /// the record is the first of its interface); the record's own block
    /// follows them.
    pub fn append_record(
        &mut self,
        rec: &Record,
        iface_hint: Option<&str>,
        out: &mut impl BufMut,
    ) -> Result<usize, CaptureError> {
        if let Record::Packet(p) = rec {
            // Monomorphic: the pieces go into `out` without a call through `dyn` each.
            let parts = self.packet_parts(p, iface_hint, Some(&mut *out))?;
            for piece in self.pieces(p, &parts) {
                out.put_slice(piece);
            }
            return Ok(parts.iface_bytes);
        }
        self.put_record(rec, iface_hint, Some(out))
    }

    fn put_record(
        &mut self,
        rec: &Record,
        iface_hint: Option<&str>,
        out: Option<&mut dyn BufMut>,
    ) -> Result<usize, CaptureError> {
        match rec {
            Record::Packet(p) => self.write_packet(p, iface_hint, out),
            other => {
                let mut body = std::mem::take(&mut self.body);
                body.clear();
                let r = match meta::encode_record(other, &mut body) {
                    Some((rt, v)) => self.check_len(body.len()).map(|()| {
                        Self::build_custom(&mut self.blk, &body, rt, v);
                        true
                    }),
                    None => Ok(false),
                };
                self.body = body;
                if r? {
                    self.emit_to(out)?;
                    self.stats.records += 1;
                }
                Ok(0)
            }
        }
    }

    /// The interface of `p`, declared first (into `out`, or the sink) if new;
    /// returns its id and the bytes of the declaration.
    fn iface_id(
        &mut self,
        p: &PacketRecord,
        hint: Option<&str>,
        out: Option<&mut dyn BufMut>,
    ) -> Result<(u32, usize), CaptureError> {
        let key = (p.netns_cookie, p.netns_ino);
        if let Some(list) = self.ifaces.get(&key)
            && let Some(i) = list.iter().find(|i| i.node.as_deref() == p.node.as_deref() && i.hint.as_deref() == hint)
        {
            return Ok((i.id, 0));
        }
        let id = self.stats.interfaces;
        let node_name = p.node.as_deref().unwrap_or(&self.node);
        let mut name = String::new();
        let _ = match (hint, p.netns_ino, p.netns_cookie) {
            (Some(h), _, _) => write!(name, "{node_name}/{h}"),
            (None, ino, _) if ino != 0 => write!(name, "{node_name}/netns:{ino}"),
            (None, 0, cookie) if cookie != 0 => write!(name, "{node_name}/netns-cookie:{cookie}"),
            _ => write!(name, "{node_name}/unknown-netns"),
        };
        let desc = format!(
            "ktrace hooks on node {node_name}, network namespace inode {} cookie {}",
            p.netns_ino, p.netns_cookie
        );
        let snaplen = self.snaplen;
        let b = &mut self.blk;
        b.begin(BT_IDB);
        b.u16(LinkType::RAW.0 as u16);
        b.u16(0);
        b.u32(snaplen);
        b.option(OPT_IF_NAME, name.as_bytes());
        b.option(OPT_IF_DESCRIPTION, desc.as_bytes());
        b.option(OPT_IF_TSRESOL, &[9]);
        b.option_with(OPT_CUSTOM_BIN, |b| {
            b.u32(KTRACE_PEN);
            encode_iface_meta(p.node.as_deref(), p.netns_cookie, p.netns_ino, hint, b);
        });
        b.end_options();
        let before = self.stats.bytes;
        self.emit_to(out)?;
        self.stats.interfaces += 1;
        self.ifaces.entry(key).or_default().push(Iface { node: p.node.clone(), hint: hint.map(Box::from), id });
        Ok((id, (self.stats.bytes - before) as usize))
    }

    /// Everything of `p`'s block but its writing: the interface declared
    /// (into `out`, or the sink) if new, the tail found or built and stamped.
    fn packet_parts(
        &mut self,
        p: &PacketRecord,
        hint: Option<&str>,
        out: Option<&mut dyn BufMut>,
    ) -> Result<PacketParts, CaptureError> {
        let slot = Tail::slot(p);
        let hit = self.tails[slot].as_ref().is_some_and(|t| t.is_for(p, hint));
        let mut iface_bytes = 0;
        if !hit {
            let (id, n) = self.iface_id(p, hint, out)?;
            iface_bytes = n;
            self.tails[slot] = Some(Tail::new(p, hint, id));
        }
        let Some(tail) = self.tails[slot].as_mut() else { unreachable!("just filled") };
        tail.stamp(p);
        let cap = if self.snaplen == 0 { p.data.len() } else { p.data.len().min(self.snaplen as usize) };
        let cap = cap.min(super::MAX_BLOCK_LEN as usize - 4096);
        let total = 28 + pad4(cap) + tail.bytes.len() + 4;
        let wall = self.clock.to_wall(p.ts_ns);
        let mut head = [0u8; 28];
        for (i, v) in [
            BT_EPB,
            total as u32,
            tail.iface,
            (wall >> 32) as u32,
            wall as u32,
            cap as u32,
            // Wireshark flags captured > original as malformed; the exact value is in the option.
            p.wire_len.max(cap as u32),
        ]
        .into_iter()
        .enumerate()
        {
            head[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        self.stats.bytes += total as u64;
        self.stats.packets += 1;
        Ok(PacketParts { iface_bytes, head, cap, slot, total, end: (total as u32).to_le_bytes() })
    }

    /// The block's pieces in order: header, data, padding, tail, length.
    fn pieces<'a>(&'a self, p: &'a PacketRecord, parts: &'a PacketParts) -> [&'a [u8]; 5] {
        let tail = self.tails[parts.slot].as_ref().map_or(&[][..], |t| &t.bytes);
        let pad = &[0u8; 3][..pad4(parts.cap) - parts.cap];
        [&parts.head, &p.data[..parts.cap], pad, tail, &parts.end]
    }

    fn write_packet(
        &mut self,
        p: &PacketRecord,
        hint: Option<&str>,
        mut out: Option<&mut dyn BufMut>,
    ) -> Result<usize, CaptureError> {
        let parts = self.packet_parts(p, hint, out.as_mut().map(|o| &mut **o as &mut dyn BufMut))?;
        if let Some(out) = out {
            for piece in self.pieces(p, &parts) {
                out.put_slice(piece);
            }
        } else {
            let mut b = std::mem::take(&mut self.blk.b);
            b.clear();
            for piece in self.pieces(p, &parts) {
                b.extend_from_slice(piece);
            }
            self.blk.b = b;
            self.emit_block(parts.total)?;
        }
        Ok(parts.iface_bytes)
    }

    /// Pushes buffered data to the file (a zstd stream ends its current block,
    /// so a recorder killed later still leaves everything up to here readable).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        let offset = self.stats.bytes;
        if let Some(s) = self.sink.as_mut() {
            s.out().flush().map_err(|source| CaptureError::Io { path: Arc::clone(&self.path), offset, source })?;
        }
        Ok(())
    }

    /// Flushes, ends the zstd frame and syncs the file.
    pub fn finish(mut self) -> Result<WriterStats, CaptureError> {
        self.close()?;
        Ok(self.stats)
    }

    fn close(&mut self) -> Result<(), CaptureError> {
        if let Some(s) = self.sink.take() {
            s.finish().map_err(|source| CaptureError::Io {
                path: Arc::clone(&self.path),
                offset: self.stats.bytes,
                source,
            })?;
        }
        Ok(())
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("closing capture: {e}");
        }
    }
}

/// Appends `v` in decimal, as `Display` writes it.
fn put_dec(b: &mut BlockBuf, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.bytes(&digits[at..]);
}

/// Creates a capture file the way a daemon must: a new file only, never
/// through a symlink, readable by its owner only (DNS names are sensitive).
pub fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// A buffered writer for pcapng bytes that are already encoded (an agent's
/// stream), zstd-compressed at [`ZSTD_LEVEL`] when asked; the zstd frame is
/// ended when the writer is dropped.
pub fn byte_sink(file: File, compress: bool) -> io::Result<Box<dyn Write + Send>> {
    let buf = BufWriter::with_capacity(256 * 1024, file);
    Ok(if compress { Box::new(zstd::Encoder::new(buf, ZSTD_LEVEL)?.auto_finish()) } else { Box::new(buf) })
}

/// One non-packet record as a standalone custom block, for streams that
/// splice blocks together (the agent tells a slow subscriber what it missed).
#[must_use]
pub fn record_block(rec: &Record) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let (rt, v) = meta::encode_record(rec, &mut body)?;
    let mut b = BlockBuf::default();
    b.begin(BT_CUSTOM_COPY);
    b.u32(KTRACE_PEN);
    b.u16(rt);
    b.u16(v);
    b.u32(body.len() as u32);
    b.bytes(&body);
    Some(b.finish().to_vec())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use bytes::Bytes;

    use super::*;
    use crate::{
        capture::pcapng::{options, pad4},
        event::{DropRecord, Hook, Process},
        testkit::{Rng, packet::ipv4_udp},
    };

    const CLOCK: ClockRef = ClockRef { mono_ns: 1_000_000_000, wall_ns: 1_700_000_000_000_000_000 };

    fn header(snaplen: u32) -> CaptureHeader {
        CaptureHeader {
            node: "node-a".into(),
            ktrace_version: "0.1.0-test".into(),
            clock: CLOCK,
            snaplen,
            compress: false,
        }
    }

    /// Packets over several namespaces, nodes and hints (so interfaces are
    /// declared along the way), every optional field set and unset, extreme
    /// numbers in the comment, and the non-packet records.
    fn records(rng: &mut Rng, n: usize) -> Vec<(Record, Option<&'static str>)> {
        let hints = [None, Some("critical-app/client"), Some("kube-system/coredns-0")];
        let nodes = [None, Some(Arc::<str>::from("node-a")), Some(Arc::<str>::from("node-b"))];
        let hooks = [Hook::SocketEgress, Hook::SocketIngress, Hook::TcEgress, Hook::TcIngress, Hook::Wire];
        let numbers = [0, 1, 9, 10, 99, 100, 4_026_532_001, u64::from(u32::MAX), u64::MAX];
        let mut out = Vec::new();
        for i in 0..n {
            let pick = |r: &mut Rng, k: usize| r.below(k);
            let len = pick(rng, 300);
            let data = ipv4_udp([10, 0, 0, 1].into(), 40_000, [10, 0, 0, 2].into(), 53, &vec![0xA5; len]);
            let mut p =
                PacketRecord::bare(CLOCK.mono_ns + i as u64 * 1000, hooks[pick(rng, hooks.len())], Bytes::from(data));
            p.cgroup_id = numbers[pick(rng, numbers.len())];
            p.netns_ino = [0, 4_026_532_001, 4_026_532_002][pick(rng, 3)];
            p.netns_cookie = [0, 4096, 8192][pick(rng, 3)];
            p.ifindex = numbers[pick(rng, numbers.len())] as u32;
            p.wire_len = p.data.len() as u32 + [0, 1000][pick(rng, 2)];
            p.node = nodes[pick(rng, nodes.len())].clone();
            if pick(rng, 3) > 0 {
                p.process = Some(Process {
                    pid: numbers[pick(rng, numbers.len())] as u32,
                    tid: numbers[pick(rng, numbers.len())] as u32,
                    comm: ["dig", "ünïcode", ""][pick(rng, 3)].into(),
                    thread: ["isc-net-0000", "x"][pick(rng, 2)].into(),
                });
            }
            out.push((Record::Packet(p), hints[pick(rng, hints.len())]));
            if i % 97 == 0 {
                out.push((Record::Lost { ts_ns: CLOCK.mono_ns + i as u64, count: 17, node: nodes[1].clone() }, None));
            }
            if i % 89 == 0 {
                out.push((
                    Record::Drop(DropRecord {
                        ts_ns: CLOCK.mono_ns + i as u64,
                        reason: 2,
                        reason_name: "NETFILTER_DROP".into(),
                        location: 0xffff_ffff_8100_0000,
                        ifindex: 3,
                        netns_ino: 4_026_532_001,
                        wire_len: 60,
                        data: Bytes::from_static(&[0x45, 0, 0, 20]),
                        node: None,
                        process: None,
                        count: 1,
                    }),
                    None,
                ));
            }
        }
        out
    }

    /// Appending into a caller's buffer gives exactly the bytes the writer
    /// writes to its own output, an interface declaration first where one
    /// is new, at every snap length.
    #[test]
    fn appending_gives_the_bytes_writing_gives() {
        let mut rng = Rng(0x005e_ed18);
        let recs = records(&mut rng, 2000);
        for snaplen in [0, 64, 262_144] {
            let mut a = CaptureWriter::in_memory(header(snaplen));
            let mut b = CaptureWriter::in_memory(header(snaplen));
            let mut want = a.take_bytes();
            let mut got = b.take_bytes();
            assert_eq!(want, got);
            let mut buf = Vec::new();
            for (i, (r, hint)) in recs.iter().enumerate() {
                a.write_record(r, *hint).expect("write");
                want.extend_from_slice(&a.take_bytes());
                buf.clear();
                let iface = b.append_record(r, *hint, &mut buf).expect("append");
                assert!(iface == 0 || u32::from_le_bytes(buf[..4].try_into().unwrap()) == BT_IDB, "record {i}");
                assert_ne!(u32::from_le_bytes(buf[iface..iface + 4].try_into().unwrap()), BT_IDB, "record {i}");
                got.extend_from_slice(&buf);
                assert!(b.take_bytes().is_empty(), "appending leaves the writer's own output alone");
                if i % 500 == 0 {
                    let m = MetaBlock::ClockRef(ClockRef { mono_ns: i as u64, wall_ns: 7 });
                    a.write_meta(&m).expect("meta");
                    want.extend_from_slice(&a.take_bytes());
                    b.append_meta(&m, &mut got).expect("meta");
                }
            }
            assert_eq!(want.len(), got.len(), "snaplen {snaplen}");
            assert!(want == got, "snaplen {snaplen}: appended bytes differ");
            assert_eq!(a.stats(), b.stats());
        }
    }

    /// Concatenated blocks, split by their length fields.
    fn split_blocks_le(mut buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while buf.len() >= 12 {
            let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
            out.push(&buf[..len]);
            buf = &buf[len..];
        }
        out
    }

    /// Packets of a few sockets, again and again with new times, lengths and
    /// bytes (what a node's traffic looks like), among the mixed records.
    fn repeating(rng: &mut Rng, n: usize) -> Vec<(Record, Option<&'static str>)> {
        let pool = records(rng, 24);
        let mut out = records(rng, n / 4);
        for i in 0..n {
            let (r, hint) = &pool[rng.below(pool.len())];
            let mut r = r.clone();
            if let Record::Packet(p) = &mut r {
                p.ts_ns = CLOCK.mono_ns + i as u64 * 777;
                let len = rng.below(200);
                p.data = Bytes::from(ipv4_udp([10, 0, 0, 3].into(), 1000, [10, 0, 0, 4].into(), 53, &vec![7; len]));
                p.wire_len = p.data.len() as u32 + [0, 9][rng.below(2)];
                if i % 3 == 0 {
                    // The same names in other allocations still match.
                    if let Some(pr) = &mut p.process {
                        pr.comm = Arc::from(&*pr.comm);
                    }
                    p.node = p.node.as_deref().map(Arc::from);
                }
            }
            let at = rng.below(out.len());
            out.insert(at, (r, *hint));
        }
        out
    }

    /// A packet's block as the writer built it before tails were kept
    /// (field by field into a `BlockBuf`, the comment through `fmt`).
    fn reference_epb(p: &PacketRecord, id: u32, snaplen: u32, clock: ClockRef) -> Vec<u8> {
        let cap = if snaplen == 0 { p.data.len() } else { p.data.len().min(snaplen as usize) };
        let wall = clock.to_wall(p.ts_ns);
        let mut b = BlockBuf::default();
        b.begin(BT_EPB);
        b.u32(id);
        b.u32((wall >> 32) as u32);
        b.u32(wall as u32);
        b.u32(cap as u32);
        b.u32(p.wire_len.max(cap as u32));
        b.bytes(&p.data[..cap]);
        b.pad();
        let mut c = String::new();
        if let Some(pr) = &p.process {
            let _ = write!(c, "pid={} tid={} comm={} thread={} ", pr.pid, pr.tid, pr.comm, pr.thread);
        }
        let _ = write!(c, "hook={} cgroup={}", hook_name(p.hook), p.cgroup_id);
        if p.ifindex != 0 {
            let _ = write!(c, " ifindex={}", p.ifindex);
        }
        b.option(OPT_COMMENT, c.as_bytes());
        b.option_with(OPT_CUSTOM_BIN, |b| {
            b.u32(KTRACE_PEN);
            encode_packet_meta(p, b);
        });
        b.end_options();
        b.finish().to_vec()
    }

    /// A packet whose socket's tail is kept gets the bytes a fresh encoding
    /// (no kept tails: interface looked up, comment and option built) gives.
    #[test]
    fn kept_tails_give_the_bytes_of_a_fresh_encoding() {
        let mut rng = Rng(0x7a11);
        let recs = repeating(&mut rng, 3000);
        for snaplen in [0, 64] {
            let mut kept = CaptureWriter::in_memory(header(snaplen));
            let mut fresh = CaptureWriter::in_memory(header(snaplen));
            let (mut kept_out, mut fresh_out) = (Vec::new(), Vec::new());
            let mut clock = CLOCK;
            for (i, (r, hint)) in recs.iter().enumerate() {
                let (from_kept, from_fresh) = (kept_out.len(), fresh_out.len());
                kept.append_record(r, *hint, &mut kept_out).expect("append");
                fresh.tails.iter_mut().for_each(|t| *t = None);
                fresh.append_record(r, *hint, &mut fresh_out).expect("append");
                assert!(kept_out[from_kept..] == fresh_out[from_fresh..], "record {i} (snaplen {snaplen}) differs");
                if let Record::Packet(p) = r {
                    let epb = split_blocks_le(&kept_out[from_kept..]).pop().expect("a block");
                    let id = u32::from_le_bytes(epb[8..12].try_into().unwrap());
                    assert!(
                        epb == reference_epb(p, id, snaplen, clock),
                        "record {i} (snaplen {snaplen}): not the old bytes"
                    );
                }
                if i % 700 == 0 {
                    clock = ClockRef { mono_ns: i as u64, wall_ns: 1_000_000_007 };
                    let meta = MetaBlock::ClockRef(clock);
                    kept.append_meta(&meta, &mut kept_out).expect("meta");
                    fresh.append_meta(&meta, &mut fresh_out).expect("meta");
                }
            }
            assert_eq!(kept.stats(), fresh.stats());
        }
    }

    /// The packet comment, written without `fmt`, is the text `write!`
    /// made before (so captures are byte-identical to earlier ones).
    #[test]
    fn packet_comment_is_the_formatted_text() {
        let mut rng = Rng(7);
        let mut w = CaptureWriter::in_memory(header(0));
        let _ = w.take_bytes();
        let mut buf = Vec::new();
        for (r, hint) in records(&mut rng, 500) {
            let Record::Packet(p) = &r else { continue };
            buf.clear();
            let iface = w.append_record(&r, hint, &mut buf).expect("append");
            let epb = &buf[iface..];
            let body = &epb[8..epb.len() - 4];
            let cap = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
            let (code, comment) = options(&body[20 + pad4(cap)..], true).next().expect("an option");
            assert_eq!(code, OPT_COMMENT);
            let mut old = String::new();
            if let Some(pr) = &p.process {
                let _ = write!(old, "pid={} tid={} comm={} thread={} ", pr.pid, pr.tid, pr.comm, pr.thread);
            }
            let _ = write!(old, "hook={} cgroup={}", hook_name(p.hook), p.cgroup_id);
            if p.ifindex != 0 {
                let _ = write!(old, " ifindex={}", p.ifindex);
            }
            assert_eq!(std::str::from_utf8(comment).unwrap(), old);
        }
    }
}
