//! [`CaptureWriter`]: ktrace records and context → pcapng (optionally zstd).

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
};

use super::{
    CaptureError, CaptureHeader, ClockRef, KTRACE_PEN, MetaBlock, SCHEMA_VERSION,
    foreign::LinkType,
    meta::{self, encode_iface_meta, encode_packet_meta, hook_name},
    pcapng::{
        BT_CUSTOM_COPY, BT_EPB, BT_IDB, BT_SHB, BYTE_ORDER_MAGIC, BlockBuf, OPT_COMMENT, OPT_CUSTOM_BIN,
        OPT_IF_DESCRIPTION, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_SHB_USERAPPL,
    },
};
use crate::event::{PacketRecord, Record};

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
    comment: String,
    ifaces: HashMap<(u64, u32), Vec<Iface>>,
    node: String,
    clock: ClockRef,
    snaplen: u32,
    stats: WriterStats,
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
            comment: String::with_capacity(256),
            ifaces: HashMap::new(),
            node: header.node.clone(),
            clock: header.clock,
            snaplen: header.snaplen,
            stats: WriterStats::default(),
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

    /// Writes a custom block with `record type, version, body`.
    fn write_custom(&mut self, body: &[u8], rt: u16, version: u16) -> Result<(), CaptureError> {
        let b = &mut self.blk;
        // Copiable: the context (node, clocks, netstate) stays true for any
        // subset of the packets, so a file cut with editcap should keep it.
        b.begin(BT_CUSTOM_COPY);
        b.u32(KTRACE_PEN);
        b.u16(rt);
        b.u16(version);
        b.u32(body.len() as u32);
        b.bytes(body);
        self.emit()
    }

    /// Writes context. A [`MetaBlock::ClockRef`] also becomes the reference
    /// for the wall-clock timestamps of the packets that follow.
    pub fn write_meta(&mut self, m: &MetaBlock) -> Result<(), CaptureError> {
        if let MetaBlock::ClockRef(c) = m {
            self.clock = *c;
        }
        let mut body = Vec::new();
        let (rt, v) = meta::encode_meta(m, &mut body);
        self.check_len(body.len())?;
        self.write_custom(&body, rt, v)?;
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
        match rec {
            Record::Packet(p) => self.write_packet(p, iface_hint),
            other => {
                let mut body = Vec::new();
                if let Some((rt, v)) = meta::encode_record(other, &mut body) {
                    self.check_len(body.len())?;
                    self.write_custom(&body, rt, v)?;
                    self.stats.records += 1;
                }
                Ok(())
            }
        }
    }

    fn iface_id(&mut self, p: &PacketRecord, hint: Option<&str>) -> Result<u32, CaptureError> {
        let key = (p.netns_cookie, p.netns_ino);
        if let Some(list) = self.ifaces.get(&key)
            && let Some(i) = list.iter().find(|i| i.node.as_deref() == p.node.as_deref() && i.hint.as_deref() == hint)
        {
            return Ok(i.id);
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
        self.emit()?;
        self.stats.interfaces += 1;
        self.ifaces.entry(key).or_default().push(Iface { node: p.node.clone(), hint: hint.map(Box::from), id });
        Ok(id)
    }

    fn write_packet(&mut self, p: &PacketRecord, hint: Option<&str>) -> Result<(), CaptureError> {
        let id = self.iface_id(p, hint)?;
        let cap = if self.snaplen == 0 { p.data.len() } else { p.data.len().min(self.snaplen as usize) };
        let cap = cap.min(super::MAX_BLOCK_LEN as usize - 4096);
        let data = &p.data[..cap];
        let wall = self.clock.to_wall(p.ts_ns);
        self.comment.clear();
        if let Some(pr) = &p.process {
            let _ = write!(self.comment, "pid={} tid={} comm={} thread={} ", pr.pid, pr.tid, pr.comm, pr.thread);
        }
        // The interface name already says node and netns; keep the comment short.
        let _ = write!(self.comment, "hook={} cgroup={}", hook_name(p.hook), p.cgroup_id);
        if p.ifindex != 0 {
            let _ = write!(self.comment, " ifindex={}", p.ifindex);
        }
        let b = &mut self.blk;
        b.begin(BT_EPB);
        b.u32(id);
        b.u32((wall >> 32) as u32);
        b.u32(wall as u32);
        b.u32(cap as u32);
        // Wireshark flags captured > original as malformed; the exact value is in the option.
        b.u32(p.wire_len.max(cap as u32));
        b.bytes(data);
        b.pad();
        b.option(OPT_COMMENT, self.comment.as_bytes());
        b.option_with(OPT_CUSTOM_BIN, |b| {
            b.u32(KTRACE_PEN);
            encode_packet_meta(p, b);
        });
        b.end_options();
        self.emit()?;
        self.stats.packets += 1;
        Ok(())
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
