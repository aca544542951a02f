//! [`open`]: one streaming reader for ktrace captures and foreign pcap/pcapng,
//! plain or compressed, and [`merge_by_time`] for several of them.

use std::{
    fs::File,
    io::{BufReader, Cursor, Read},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

use super::{
    CaptureError, CaptureHeader, ClockRef, Item, MetaBlock, ParseError,
    foreign::LinkType,
    mapped::Mapped,
    meta::{IfaceMeta, MetaCache, WIRE_FACTS},
    pcapng::{BlockHdr, BlockReader, Cur, io_err, next_mapped_block, read_full},
};
use crate::event::{PacketRef, Record};

mod blocks;
mod classic;
mod counting;
mod merge;

use blocks::{fast_packet, handle_block};
use classic::{ClassicNext, classic_next};
pub use merge::{MergeByTime, merge_by_time};

type Src = Box<dyn Read + Send>;

/// Read buffer: large enough that per-block reads rarely reach the kernel.
const BUF_CAP: usize = 256 * 1024;
/// More interfaces than any sane capture has; bounds the table on hostile input.
const MAX_IFACES: usize = 1 << 16;

/// What kind of file a reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// pcapng written by ktrace (packets carry ktrace's metadata).
    Ktrace,
    /// pcapng written by another tool.
    Pcapng,
    /// Classic libpcap format.
    Pcap,
    /// sysdig/falco scap capture, read through [`super::scap`].
    Scap,
}

/// What a reader did with the file so far: reported next to the results,
/// so nothing is skipped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    /// Packets returned.
    pub packets: u64,
    /// Non-packet records returned (lost, resolv.conf).
    pub records: u64,
    /// Meta blocks returned.
    pub meta: u64,
    /// Frames skipped because they carry no IP (ARP, LLDP…).
    pub non_ip: u64,
    /// Frames skipped because ktrace does not read their link type.
    pub unsupported_link: u64,
    /// Blocks skipped (statistics, name resolution, other tools' custom blocks…).
    pub blocks_skipped: u64,
    /// Bytes consumed (of the decompressed stream).
    pub bytes: u64,
}

/// Timestamp resolution of a pcapng interface.
#[derive(Clone, Copy)]
enum TsRes {
    /// 10^-n s.
    Dec(u8),
    /// 2^-n s.
    Bin(u8),
}

impl TsRes {
    fn from_opt(v: u8) -> Self {
        if v & 0x80 == 0 { Self::Dec(v) } else { Self::Bin(v & 0x7f) }
    }

    fn to_ns(self, ts: u64) -> u64 {
        match self {
            // ktrace's own resolution, and tcpdump's: no 128-bit arithmetic.
            Self::Dec(9) => return ts,
            Self::Dec(6) => return ts.saturating_mul(1000),
            _ => {}
        }
        let ts = u128::from(ts);
        let ns = match self {
            Self::Dec(n) if n <= 9 => ts * 10u128.pow(9 - u32::from(n)),
            Self::Dec(n) if n - 9 <= 38 => ts / 10u128.pow(u32::from(n) - 9),
            Self::Dec(_) => 0,
            Self::Bin(n) => (ts * 1_000_000_000) >> n,
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

struct NgIface {
    link: LinkType,
    snaplen: u32,
    res: TsRes,
    offset_s: i64,
    kt: Option<IfaceMeta>,
    name: Option<String>,
    /// Raw IP stamped in nanoseconds without offset, as ktrace writes its
    /// interfaces: its packets can take [`blocks::fast_packet`] (one test
    /// per packet instead of three).
    fast: bool,
}

/// Where pcapng blocks come from: a stream copied block by block into a
/// reused buffer (compressed files, pipes), or a mapped file parsed in place.
enum Blocks {
    Stream(BlockReader<BufReader<Src>>),
    Mapped { m: Mapped, le: bool, body: std::ops::Range<usize> },
}

impl Blocks {
    fn next_block(&mut self) -> Result<Option<BlockHdr>, ParseError> {
        match self {
            Self::Stream(br) => br.next_block(),
            Self::Mapped { m, le, body } => Ok(next_mapped_block(m, le)?.map(|(h, r)| {
                *body = r;
                h
            })),
        }
    }

    fn offset(&self) -> u64 {
        match self {
            Self::Stream(br) => br.offset(),
            Self::Mapped { m, .. } => m.pos() as u64,
        }
    }

    fn le(&self) -> bool {
        match self {
            Self::Stream(br) => br.le,
            Self::Mapped { le, .. } => *le,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Self::Stream(br) => br.body.as_slice(),
            Self::Mapped { m, body, .. } => m.data().get(body.clone()).unwrap_or_default(),
        }
    }

    /// Where [`Self::body`] starts in [`Self::source`].
    fn body_start(&self) -> usize {
        match self {
            Self::Stream(_) => 0,
            Self::Mapped { body, .. } => body.start,
        }
    }

    /// What packets found in the current block lie in (positions as
    /// [`Pkt::data`]), and its owner when it can be shared.
    fn source(&self) -> (&[u8], Option<&Bytes>) {
        match self {
            Self::Stream(br) => (br.body.as_slice(), None),
            Self::Mapped { m, .. } => (m.data(), Some(m.bytes())),
        }
    }
}

/// Whose facts a packet has.
#[derive(Clone, Copy)]
enum Facts {
    /// None but its bytes (foreign captures).
    Wire,
    /// ktrace's, decoded into this slot of the reader's [`MetaCache`].
    Cached(usize),
}

/// A packet the parsers found, by position rather than by reference, so
/// that the reader is free again when it is looked at
/// ([`CaptureReader::view`]).
struct Pkt {
    ts_ns: u64,
    wire_len: u32,
    facts: Facts,
    /// The bytes, in [`Blocks::source`] (pcapng) or [`ClassicSrc::source`].
    data: std::ops::Range<usize>,
    /// The pcapng interface whose ktrace option names the node.
    iface: Option<usize>,
}

/// What reading one block or record gave (an item boxed: they are rare
/// next to packets, and this is moved several times per read).
enum Got {
    Item(Box<Item>),
    Packet(Pkt),
}

/// One thing read by [`CaptureReader::next_ref`]: a packet where it lies,
/// or any other item.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet, valid until the reader moves on.
    Packet(PacketRef<'a>),
    /// Anything else (and packets of scap captures, which are made, not found).
    Item(Item),
}

impl Next<'_> {
    /// The owned item ([`PacketRef::to_record`] for a packet).
    #[must_use]
    pub fn into_item(self) -> Item {
        match self {
            Self::Packet(p) => Item::Record(Record::Packet(p.to_record())),
            Self::Item(i) => i,
        }
    }
}

struct Ng {
    br: Blocks,
    ifaces: Vec<NgIface>,
    metas: MetaCache,
}

enum ClassicSrc {
    Stream { r: BufReader<Src>, buf: Vec<u8> },
    Mapped(Mapped),
}

impl ClassicSrc {
    /// What the last record's packet lies in, and its owner when it can be shared.
    fn source(&self) -> (&[u8], Option<&Bytes>) {
        match self {
            Self::Stream { buf, .. } => (buf.as_slice(), None),
            Self::Mapped(m) => (m.data(), Some(m.bytes())),
        }
    }
}

struct Classic {
    src: ClassicSrc,
    offset: u64,
    le: bool,
    nanos: bool,
    link: LinkType,
}

#[expect(clippy::large_enum_variant, reason = "one per open file; pcapng, the common case, is the large one")]
enum Kind {
    Ng(Ng),
    Classic(Classic),
    Scap(Box<super::scap::ScapSource>),
}

/// Reader state shared by both formats.
struct State {
    format: Format,
    header: Option<CaptureHeader>,
    userappl: Option<String>,
    clock: Option<ClockRef>,
    stats: ReaderStats,
    wall_clock: bool,
    last_ts: u64,
}

/// A capture being read: an iterator of `Result<Item, CaptureError>` in file
/// order, streaming (one block in memory at a time).
///
/// After the first error the iterator ends. [`CaptureError::Truncated`] is a
/// warning: everything before it was returned; [`CaptureReader::truncated`]
/// also reports it afterwards.
pub struct CaptureReader {
    path: Arc<Path>,
    kind: Kind,
    st: State,
    compression: Option<&'static str>,
    pending: Option<Result<Got, ParseError>>,
    done: bool,
    truncated: Option<u64>,
    /// Mapped files: file bytes read, added to a shared progress counter.
    progress: Option<(Arc<AtomicU64>, u64)>,
}

/// Opens a capture file: ktrace or foreign pcapng, classic pcap (either byte
/// order, µs or ns), or a sysdig/falco scap file (see [`super::scap`]), each
/// possibly zstd- or gzip-compressed. For a ktrace capture,
/// [`CaptureReader::header`] is available on return.
///
/// Errors: the file cannot be read, is not a capture, or its first block is malformed.
pub fn open(path: impl AsRef<Path>) -> Result<CaptureReader, CaptureError> {
    open_counted(path, None)
}

/// [`open`], adding the file bytes read to `progress` as reading goes on
/// (compressed files count their compressed bytes).
///
/// Plain pcapng and pcap files are memory-mapped and read in place; other
/// files (compressed, scap, pipes) are streamed.
pub fn open_counted(path: impl AsRef<Path>, progress: Option<Arc<AtomicU64>>) -> Result<CaptureReader, CaptureError> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|source| CaptureError::Open { path: Arc::from(path), source })?;
    if let Some(m) = Mapped::new(&f) {
        let name: Arc<Path> = Arc::from(path);
        let mapped = match m.data().get(..4) {
            Some([0x0A, 0x0D, 0x0D, 0x0A]) => {
                // scap shares pcapng's section header: that one is streamed.
                let probe: Src = Box::new(Cursor::new(m.bytes().clone()));
                match super::scap::sniff(probe) {
                    Ok((false, _)) => {
                        Some(CaptureReader::new_ng(name, Blocks::Mapped { m, le: true, body: 0..0 }, None))
                    }
                    _ => None,
                }
            }
            Some(
                [0xD4, 0xC3, 0xB2, 0xA1]
                | [0xA1, 0xB2, 0xC3, 0xD4]
                | [0x4D, 0x3C, 0xB2, 0xA1]
                | [0xA1, 0xB2, 0x3C, 0x4D],
            ) => Some(CaptureReader::new_classic_mapped(name, m)),
            _ => None,
        };
        if let Some(r) = mapped {
            let mut r = r?;
            r.progress = progress.map(|p| (p, 0));
            r.report_progress(false);
            return Ok(r);
        }
    }
    match progress {
        None => open_reader(path, f),
        Some(read) => open_reader(path, counting::Counting { inner: f, read }),
    }
}

/// Like [`open`], for any byte stream (stdin, a test buffer); `name` is used in errors.
pub fn open_reader(name: impl AsRef<Path>, r: impl Read + Send + 'static) -> Result<CaptureReader, CaptureError> {
    let path: Arc<Path> = Arc::from(name.as_ref());
    let mut src: Src = Box::new(r);
    let mut compression = None;
    // Compression inside compression is refused after two layers.
    for _ in 0..3 {
        let mut magic = [0u8; 4];
        let n = read_full(&mut src, &mut magic).map_err(|e| io_err(0, e).with_path(&path))?;
        src = Box::new(Cursor::new(magic[..n].to_vec()).chain(src));
        match &magic[..n] {
            [0x28, 0xB5, 0x2F, 0xFD] if compression.is_none() => {
                let d = zstd::Decoder::new(src).map_err(|e| io_err(0, e).with_path(&path))?;
                src = Box::new(d);
                compression = Some("zstd");
            }
            [0x1F, 0x8B, ..] if compression.is_none() => {
                src = Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(src)));
                compression = Some("gzip");
            }
            [0x0A, 0x0D, 0x0D, 0x0A] => {
                // scap shares pcapng's section header; its next block tells them apart.
                let (is_scap, s) = super::scap::sniff(src).map_err(|e| e.with_path(&path))?;
                if is_scap {
                    return Ok(CaptureReader::new_scap(path, s, compression));
                }
                let br = Blocks::Stream(BlockReader::new(BufReader::with_capacity(BUF_CAP, s)));
                return CaptureReader::new_ng(path, br, compression);
            }
            [0xD4, 0xC3, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0xC3, 0xD4]
            | [0x4D, 0x3C, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0x3C, 0x4D] => {
                return CaptureReader::new_classic(path, src, compression);
            }
            [] => return Err(ParseError::corrupt(0, "empty file: not a capture").with_path(&path)),
            m if m.len() < 4 => {
                return Err(ParseError::corrupt(0, "file too short to be a capture").with_path(&path));
            }
            m => {
                return Err(ParseError::Unsupported(format!(
                    "not a pcap, pcapng or ktrace capture (starts with {m:02x?}{})",
                    compression.map(|c| format!(" after {c} decompression")).unwrap_or_default()
                ))
                .with_path(&path));
            }
        }
    }
    Err(ParseError::Unsupported("nested compression is not supported".into()).with_path(&path))
}

fn new_state(format: Format) -> State {
    State {
        format,
        header: None,
        userappl: None,
        clock: None,
        stats: ReaderStats::default(),
        wall_clock: false,
        last_ts: 0,
    }
}

impl CaptureReader {
    fn new_ng(path: Arc<Path>, br: Blocks, compression: Option<&'static str>) -> Result<Self, CaptureError> {
        let mut ng = Ng { br, ifaces: Vec::new(), metas: MetaCache::default() };
        let mut st = new_state(Format::Pcapng);
        let first = ng.br.next_block().map_err(|e| e.with_path(&path))?;
        let Some(h) = first else {
            return Err(ParseError::corrupt(0, "empty file").with_path(&path));
        };
        handle_block(&mut ng, &mut st, h).map_err(|e| e.with_path(&path))?;
        // sysdig's scap shares pcapng's section header; its next block
        // (machine info, process list…) is in the 0x200 range pcapng never uses.
        let pending = match ng.br.next_block() {
            Ok(Some(h)) if (0x200..0x300).contains(&h.kind) => {
                return Err(ParseError::Unsupported(
                    "this is a sysdig/falco scap capture: ktrace does not read scap files yet \
                     (record with `ktrace record -w FILE` or tcpdump instead)"
                        .into(),
                )
                .with_path(&path));
            }
            Ok(Some(h)) => handle_block(&mut ng, &mut st, h).transpose(),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        };
        Ok(Self { path, kind: Kind::Ng(ng), st, compression, pending, done: false, truncated: None, progress: None })
    }

    fn new_scap(path: Arc<Path>, src: Src, compression: Option<&'static str>) -> Self {
        let kind = Kind::Scap(Box::new(super::scap::ScapSource::new(src)));
        Self {
            path,
            kind,
            st: new_state(Format::Scap),
            compression,
            pending: None,
            done: false,
            truncated: None,
            progress: None,
        }
    }

    fn new_classic(path: Arc<Path>, src: Src, compression: Option<&'static str>) -> Result<Self, CaptureError> {
        let mut r = BufReader::with_capacity(BUF_CAP, src);
        let mut h = [0u8; 24];
        let n = read_full(&mut r, &mut h).map_err(|e| io_err(0, e).with_path(&path))?;
        Self::classic(path, &h[..n], ClassicSrc::Stream { r, buf: Vec::new() }, compression)
    }

    fn new_classic_mapped(path: Arc<Path>, mut m: Mapped) -> Result<Self, CaptureError> {
        let h = m.data().get(..24).unwrap_or(m.data()).to_vec();
        m.set_pos(24);
        Self::classic(path, &h, ClassicSrc::Mapped(m), None)
    }

    fn classic(
        path: Arc<Path>,
        h: &[u8],
        src: ClassicSrc,
        compression: Option<&'static str>,
    ) -> Result<Self, CaptureError> {
        if h.len() < 24 {
            return Err(ParseError::Truncated(0).with_path(&path));
        }
        let (le, nanos) = match [h[0], h[1], h[2], h[3]] {
            [0xD4, 0xC3, 0xB2, 0xA1] => (true, false),
            [0x4D, 0x3C, 0xB2, 0xA1] => (true, true),
            [0xA1, 0xB2, 0x3C, 0x4D] => (false, true),
            _ => (false, false),
        };
        let mut c = Cur::new(&h[4..], le);
        let major = c.u16().unwrap_or(0);
        let _minor = c.u16();
        let _ = c.take(12);
        let link = c.u32().unwrap_or(0) & 0xFFFF;
        if major != 2 {
            return Err(ParseError::Unsupported(format!("pcap version {major} (only 2.x exists)")).with_path(&path));
        }
        let mut st = new_state(Format::Pcap);
        st.stats.bytes = 24;
        Ok(Self {
            path,
            kind: Kind::Classic(Classic { src, offset: 24, le, nanos, link: LinkType(link) }),
            st,
            compression,
            pending: None,
            done: false,
            truncated: None,
            progress: None,
        })
    }

    /// The file's name as given to [`open`].
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file is.
    #[must_use]
    pub fn format(&self) -> Format {
        self.st.format
    }

    /// `Some("zstd")` or `Some("gzip")` for a compressed file.
    #[must_use]
    pub fn compression(&self) -> Option<&'static str> {
        self.compression
    }

    /// The ktrace header (first section's), `None` for foreign captures.
    #[must_use]
    pub fn header(&self) -> Option<&CaptureHeader> {
        self.st.header.as_ref()
    }

    /// The pcapng `shb_userappl` of the current section (which tool wrote it).
    #[must_use]
    pub fn user_application(&self) -> Option<&str> {
        self.st.userappl.as_deref()
    }

    /// The clock reference in force at the current position (ktrace captures).
    #[must_use]
    pub fn clock(&self) -> Option<ClockRef> {
        self.st.clock
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> ReaderStats {
        self.st.stats
    }

    /// Where the file was cut, once the reader has reached the cut.
    #[must_use]
    pub fn truncated(&self) -> Option<u64> {
        self.truncated
    }

    /// Names of the pcapng interfaces of the current section
    /// (`node-a/critical-app/client`), by interface id.
    #[must_use]
    pub fn interface_names(&self) -> Vec<Option<&str>> {
        match &self.kind {
            Kind::Ng(ng) => ng.ifaces.iter().map(|i| i.name.as_deref()).collect(),
            Kind::Classic(_) | Kind::Scap(_) => Vec::new(),
        }
    }

    /// What the scap reader derived and skipped so far (`None` for other formats).
    #[must_use]
    pub fn scap_stats(&self) -> Option<super::scap::ScapStats> {
        match &self.kind {
            Kind::Scap(s) => Some(s.stats()),
            _ => None,
        }
    }

    /// With `true`, records of ktrace captures come out with `ts_ns` on the
    /// wall clock (through the capture's clock references) instead of the
    /// node's monotonic clock, so that several nodes compare. Foreign
    /// captures are on the wall clock already.
    pub fn set_wall_clock(&mut self, on: bool) {
        self.st.wall_clock = on;
    }

    fn read_item(&mut self) -> Result<Option<Got>, ParseError> {
        match &mut self.kind {
            Kind::Ng(ng) => loop {
                let Some(h) = ng.br.next_block()? else {
                    return Ok(None);
                };
                self.st.stats.bytes = ng.br.offset();
                if let Some(item) = handle_block(ng, &mut self.st, h)? {
                    return Ok(Some(item));
                }
            },
            Kind::Classic(cl) => loop {
                let next = classic_next(cl, &mut self.st)?;
                self.st.stats.bytes = cl.offset;
                match next {
                    ClassicNext::End => return Ok(None),
                    ClassicNext::Skipped => {}
                    ClassicNext::Packet(p) => return Ok(Some(Got::Packet(p))),
                }
            },
            Kind::Scap(sc) => {
                let next = sc.next_item();
                self.st.stats.bytes = sc.offset();
                self.st.stats.blocks_skipped = sc.stats().blocks_unknown;
                // scap timestamps are wall-clock already: no clock conversion.
                Ok(next?.map(|item| Got::Item(Box::new(account(&mut self.st, item, false)))))
            }
        }
    }

    /// Adds the mapped bytes read since the last report to the progress
    /// counter: every 64 KiB (an atomic add per record would show), and at the end.
    fn report_progress(&mut self, end: bool) {
        let pos = match &self.kind {
            Kind::Ng(Ng { br: Blocks::Mapped { m, .. }, .. })
            | Kind::Classic(Classic { src: ClassicSrc::Mapped(m), .. }) => {
                if end {
                    m.data().len() as u64
                } else {
                    m.pos() as u64
                }
            }
            _ => return,
        };
        if let Some((counter, reported)) = &mut self.progress
            && (end || pos >= *reported + (64 << 10))
        {
            counter.fetch_add(pos.saturating_sub(*reported), Ordering::Relaxed);
            *reported = pos.max(*reported);
        }
    }

    fn deliver(&mut self, r: Result<Option<Got>, ParseError>) -> Option<Result<Got, CaptureError>> {
        match r {
            Ok(Some(got)) => Some(Ok(got)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                if let ParseError::Truncated(off) = e {
                    self.truncated = Some(off);
                }
                Some(Err(e.with_path(&self.path)))
            }
        }
    }
}

impl CaptureReader {
    /// The next item, a packet borrowed where it lies (the mapped file or
    /// the reader's block buffer) instead of made into a [`Record`]: what
    /// [`Iterator::next`] gives, without the copy or the shared handle on
    /// the bytes, for a caller that is done with the packet before it reads on.
    pub fn next_ref(&mut self) -> Option<Result<Next<'_>, CaptureError>> {
        if let Some(p) = self.fast_pkt() {
            return Some(Ok(Next::Packet(self.view(&p))));
        }
        self.next_slow()
    }

    /// The next packet when it is a ktrace packet block of a mapped file
    /// (nearly every block of a ktrace capture), read in place; `None`,
    /// nothing consumed, for anything else ([`Self::next_ref`] reads it).
    #[inline]
    pub fn next_fast(&mut self) -> Option<PacketRef<'_>> {
        let p = self.fast_pkt()?;
        Some(self.view(&p))
    }

    #[inline]
    fn fast_pkt(&mut self) -> Option<Pkt> {
        if self.pending.is_some() || self.done {
            return None;
        }
        let Kind::Ng(ng) = &mut self.kind else {
            return None;
        };
        let p = fast_packet(ng, &mut self.st)?;
        // `report_progress` for a mapped file, whose position is the bytes read.
        if let Some((counter, reported)) = &mut self.progress
            && self.st.stats.bytes >= *reported + (64 << 10)
        {
            counter.fetch_add(self.st.stats.bytes - *reported, Ordering::Relaxed);
            *reported = self.st.stats.bytes;
        }
        Some(p)
    }

    fn next_slow(&mut self) -> Option<Result<Next<'_>, CaptureError>> {
        let got = if let Some(p) = self.pending.take() {
            self.deliver(p.map(Some))
        } else {
            if self.done {
                return None;
            }
            let r = self.read_item();
            let out = self.deliver(r);
            if self.progress.is_some() {
                self.report_progress(self.done);
            }
            out
        };
        Some(got?.map(|g| match g {
            Got::Packet(p) => Next::Packet(self.view(&p)),
            Got::Item(i) => Next::Item(*i),
        }))
    }

    /// The packet at `p`'s position.
    #[inline]
    fn view(&self, p: &Pkt) -> PacketRef<'_> {
        let (src, owner, facts, node) = match &self.kind {
            Kind::Ng(ng) => {
                let (src, owner) = ng.br.source();
                let facts = match p.facts {
                    Facts::Cached(i) => ng.metas.facts(i),
                    Facts::Wire => &WIRE_FACTS,
                };
                let node = p.iface.and_then(|i| ng.ifaces.get(i)).and_then(|i| i.kt.as_ref()?.node.as_ref());
                (src, owner, facts, node)
            }
            Kind::Classic(cl) => {
                let (src, owner) = cl.src.source();
                (src, owner, &WIRE_FACTS, None)
            }
            // scap packets are made as records, never found by position.
            Kind::Scap(_) => (&[][..], None, &WIRE_FACTS, None),
        };
        PacketRef {
            ts_ns: p.ts_ns,
            wire_len: p.wire_len,
            facts,
            node,
            data: src.get(p.data.clone()).unwrap_or_default(),
            owner,
        }
    }
}

impl Iterator for CaptureReader {
    type Item = Result<Item, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_ref()?.map(Next::into_item))
    }
}

impl std::iter::FusedIterator for CaptureReader {}

/// Counts and converts a packet a block or record held.
fn account_packet(st: &mut State, mut p: Pkt, ktrace_ts: bool) -> Pkt {
    if st.wall_clock && ktrace_ts {
        p.ts_ns = st.clock.unwrap_or_default().to_wall(p.ts_ns);
    }
    st.stats.packets += 1;
    p
}

/// Counts and converts what a block produced.
fn account(st: &mut State, item: Item, ktrace_ts: bool) -> Item {
    match item {
        Item::Record(mut r) => {
            if st.wall_clock && ktrace_ts {
                let clock = st.clock.unwrap_or_default();
                match &mut r {
                    Record::Packet(p) => p.ts_ns = clock.to_wall(p.ts_ns),
                    Record::Lost { ts_ns, .. } => *ts_ns = clock.to_wall(*ts_ns),
                    Record::ResolvConf(e) => e.ts_ns = clock.to_wall(e.ts_ns),
                    Record::Drop(d) => d.ts_ns = clock.to_wall(d.ts_ns),
                    Record::Conn(c) => c.ts_ns = clock.to_wall(c.ts_ns),
                }
            }
            if matches!(r, Record::Packet(_)) {
                st.stats.packets += 1;
            } else {
                st.stats.records += 1;
            }
            Item::Record(r)
        }
        Item::Meta(m) => {
            match &m {
                MetaBlock::Header(h) => {
                    st.format = Format::Ktrace;
                    st.clock = Some(h.clock);
                    if st.header.is_none() {
                        st.header = Some(h.clone());
                    }
                }
                MetaBlock::ClockRef(c) => st.clock = Some(*c),
                _ => {}
            }
            st.stats.meta += 1;
            Item::Meta(m)
        }
    }
}
