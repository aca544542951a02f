//! ktrace's own encodings inside pcapng: custom block payloads (records that
//! are not packets, and context), the per-packet custom option and the
//! per-interface custom option. All little-endian; see `docs/capture-format.md`.

use std::{collections::BTreeMap, sync::Arc};

use super::{
    CaptureHeader, ClockRef, Item,
    pcapng::{BlockBuf, Cur},
};
use crate::event::{Hook, PacketInfo, PacketRecord, Process, Record, ResolvConfEvidence};

/// Record types of ktrace custom blocks (the `u16` after the PEN).
pub mod record_type {
    /// [`super::MetaBlock::Header`]: JSON [`crate::capture::CaptureHeader`].
    pub const HEADER: u16 = 1;
    /// [`super::MetaBlock::ClockRef`]: binary `mono_ns:u64, wall_ns:u64`.
    pub const CLOCK_REF: u16 = 2;
    /// [`crate::event::Record::Lost`]: binary `ts_ns:u64, count:u64, has_node:u8, node_len:u16, node`.
    pub const LOST: u16 = 3;
    /// [`crate::event::Record::ResolvConf`]: JSON [`crate::event::ResolvConfEvidence`].
    pub const RESOLV_CONF: u16 = 4;
    /// [`super::MetaBlock::KubeSnapshot`]: the caller's JSON text, verbatim.
    pub const KUBE_SNAPSHOT: u16 = 5;
    /// [`super::MetaBlock::NetState`]: JSON object of name → text.
    pub const NETSTATE: u16 = 6;
    /// [`super::MetaBlock::Counters`]: JSON object of name → u64.
    pub const COUNTERS: u16 = 7;
    /// [`super::MetaBlock::Custom`]: binary `name_len:u16, name, data`.
    pub const CUSTOM: u16 = 8;
    /// [`crate::event::Record::Drop`]: JSON `DropWire` (see docs/capture-format.md).
    pub const DROP: u16 = 9;
    /// [`crate::event::Record::Conn`]: JSON `ConnWire`.
    pub const CONN: u16 = 10;
}

/// JSON form of a [`crate::event::DropRecord`] (drops are rare next to packets).
#[derive(serde::Serialize, serde::Deserialize)]
struct DropWire {
    ts_ns: u64,
    reason: u32,
    reason_name: String,
    location: u64,
    ifindex: u32,
    netns_ino: u32,
    wire_len: u32,
    data: Vec<u8>,
    node: Option<String>,
    process: Option<Process>,
    /// Drops the record stands for: written only when more than one (folded
    /// in the kernel), so single drops encode as before; absent reads as 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// JSON form of a [`crate::event::ConnRecord`].
#[derive(serde::Serialize, serde::Deserialize)]
struct ConnWire {
    ts_ns: u64,
    kind: crate::event::ConnKind,
    src: crate::event::Endpoint,
    dst: crate::event::Endpoint,
    sock: u64,
    process: Option<Process>,
    netns_ino: u32,
    node: Option<String>,
}

/// Version of every encoding above that this build writes and reads.
const V1: u16 = 1;

/// Context stored in a capture next to the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaBlock {
    /// Who wrote the capture, where, when (first block of each ktrace section).
    Header(CaptureHeader),
    /// A new monotonic ↔ wall clock reference (written periodically: clocks drift).
    ClockRef(ClockRef),
    /// Kubernetes metadata snapshot (pods, IPs, namespaces…): opaque JSON text
    /// from the caller, at start and whenever it changes.
    KubeSnapshot(String),
    /// The node's network state, name → text (`ip -d addr`, `ip route`,
    /// `nft list ruleset`, sysctls…), opaque to the capture layer.
    NetState(BTreeMap<String, String>),
    /// Named counters (lost events per cause, decoder stats…), cumulative.
    Counters(BTreeMap<String, u64>),
    /// Anything else a later feature wants to keep, under its own name.
    Custom {
        /// Who it belongs to (`drops/v1`…).
        name: String,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A ktrace block this build does not know (newer writer): kept so the
    /// caller can say so; never an error.
    Unknown {
        /// Its record type.
        record_type: u16,
        /// Its encoding version.
        version: u16,
        /// Its body.
        body: Vec<u8>,
    },
}

/// Appends the body of a custom block for `m`; returns its record type.
pub(crate) fn encode_meta(m: &MetaBlock, out: &mut Vec<u8>) -> (u16, u16) {
    // serde_json cannot fail on these types (string keys, no floats), so
    // a failure would only lose this one block's body, never the file.
    match m {
        MetaBlock::Header(h) => {
            let _ = serde_json::to_writer(&mut *out, h);
            (record_type::HEADER, V1)
        }
        MetaBlock::ClockRef(c) => {
            out.extend_from_slice(&c.mono_ns.to_le_bytes());
            out.extend_from_slice(&c.wall_ns.to_le_bytes());
            (record_type::CLOCK_REF, V1)
        }
        MetaBlock::KubeSnapshot(s) => {
            out.extend_from_slice(s.as_bytes());
            (record_type::KUBE_SNAPSHOT, V1)
        }
        MetaBlock::NetState(m) => {
            let _ = serde_json::to_writer(&mut *out, m);
            (record_type::NETSTATE, V1)
        }
        MetaBlock::Counters(m) => {
            let _ = serde_json::to_writer(&mut *out, m);
            (record_type::COUNTERS, V1)
        }
        MetaBlock::Custom { name, data } => {
            let name = truncate_str(name, usize::from(u16::MAX));
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            (record_type::CUSTOM, V1)
        }
        MetaBlock::Unknown { record_type, version, body } => {
            out.extend_from_slice(body);
            (*record_type, *version)
        }
    }
}

/// Appends the body of a custom block for a non-packet record.
pub(crate) fn encode_record(r: &Record, out: &mut Vec<u8>) -> Option<(u16, u16)> {
    match r {
        Record::Packet(_) => None,
        Record::Lost { ts_ns, count, node } => {
            out.extend_from_slice(&ts_ns.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            put_opt_str(out, node.as_deref());
            Some((record_type::LOST, V1))
        }
        Record::ResolvConf(e) => {
            let _ = serde_json::to_writer(&mut *out, e);
            Some((record_type::RESOLV_CONF, V1))
        }
        Record::Drop(d) => {
            let w = DropWire {
                ts_ns: d.ts_ns,
                reason: d.reason,
                reason_name: d.reason_name.to_string(),
                location: d.location,
                ifindex: d.ifindex,
                netns_ino: d.netns_ino,
                wire_len: d.wire_len,
                data: d.data.to_vec(),
                node: d.node.as_deref().map(str::to_owned),
                process: d.process.clone(),
                count: d.count,
            };
            let _ = serde_json::to_writer(&mut *out, &w);
            Some((record_type::DROP, V1))
        }
        Record::Conn(c) => {
            let w = ConnWire {
                ts_ns: c.ts_ns,
                kind: c.kind,
                src: c.src,
                dst: c.dst,
                sock: c.sock,
                process: c.process.clone(),
                netns_ino: c.netns_ino,
                node: c.node.as_deref().map(str::to_owned),
            };
            let _ = serde_json::to_writer(&mut *out, &w);
            Some((record_type::CONN, V1))
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    out.push(u8::from(s.is_some()));
    let s = truncate_str(s.unwrap_or(""), usize::from(u16::MAX));
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads what [`put_opt_str`] wrote: `(present, text)`, `None` if malformed.
fn get_opt_str<'a>(c: &mut Cur<'a>) -> Option<(bool, &'a str)> {
    let present = c.u8()? != 0;
    let len = usize::from(c.u16()?);
    let s = std::str::from_utf8(c.take(len)?).ok()?;
    Some((present, s))
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes a ktrace custom block body. `Err` describes what is malformed.
pub(crate) fn decode_custom(rt: u16, version: u16, body: &[u8]) -> Result<Item, String> {
    let unknown = || Item::Meta(MetaBlock::Unknown { record_type: rt, version, body: body.to_vec() });
    if version != V1 {
        return Ok(unknown());
    }
    let json_err = |e: serde_json::Error| format!("record type {rt}: bad JSON: {e}");
    let short = || format!("record type {rt}: body too short ({} bytes)", body.len());
    Ok(match rt {
        record_type::HEADER => Item::Meta(MetaBlock::Header(serde_json::from_slice(body).map_err(json_err)?)),
        record_type::CLOCK_REF => {
            let mut c = Cur::new(body, true);
            let (Some(mono_ns), Some(wall_ns)) = (c.u64(), c.u64()) else {
                return Err(short());
            };
            Item::Meta(MetaBlock::ClockRef(ClockRef { mono_ns, wall_ns }))
        }
        record_type::LOST => {
            let mut c = Cur::new(body, true);
            let (Some(ts_ns), Some(count), Some(node)) = (c.u64(), c.u64(), get_opt_str(&mut c)) else {
                return Err(short());
            };
            Item::Record(Record::Lost { ts_ns, count, node: node.0.then(|| Arc::from(node.1)) })
        }
        record_type::RESOLV_CONF => {
            let e: ResolvConfEvidence = serde_json::from_slice(body).map_err(json_err)?;
            Item::Record(Record::ResolvConf(e))
        }
        record_type::DROP => {
            let w: DropWire = serde_json::from_slice(body).map_err(json_err)?;
            Item::Record(Record::Drop(crate::event::DropRecord {
                ts_ns: w.ts_ns,
                reason: w.reason,
                reason_name: w.reason_name.into(),
                location: w.location,
                ifindex: w.ifindex,
                netns_ino: w.netns_ino,
                wire_len: w.wire_len,
                data: bytes::Bytes::from(w.data),
                node: w.node.map(Arc::from),
                process: w.process,
                count: w.count,
            }))
        }
        record_type::CONN => {
            let w: ConnWire = serde_json::from_slice(body).map_err(json_err)?;
            Item::Record(Record::Conn(crate::event::ConnRecord {
                ts_ns: w.ts_ns,
                kind: w.kind,
                src: w.src,
                dst: w.dst,
                sock: w.sock,
                process: w.process,
                netns_ino: w.netns_ino,
                node: w.node.map(Arc::from),
            }))
        }
        record_type::KUBE_SNAPSHOT => Item::Meta(MetaBlock::KubeSnapshot(
            String::from_utf8(body.to_vec()).map_err(|_| format!("record type {rt}: kube snapshot is not UTF-8"))?,
        )),
        record_type::NETSTATE => Item::Meta(MetaBlock::NetState(serde_json::from_slice(body).map_err(json_err)?)),
        record_type::COUNTERS => Item::Meta(MetaBlock::Counters(serde_json::from_slice(body).map_err(json_err)?)),
        record_type::CUSTOM => {
            let mut c = Cur::new(body, true);
            let Some(len) = c.u16() else {
                return Err(short());
            };
            let Some(name) = c.take(usize::from(len)) else {
                return Err(short());
            };
            let name = std::str::from_utf8(name).map_err(|_| format!("record type {rt}: name is not UTF-8"))?;
            Item::Meta(MetaBlock::Custom { name: name.to_owned(), data: c.rest().to_vec() })
        }
        _ => unknown(),
    })
}

/// Hook as stored: [`Hook::to_raw`], with 0 for [`Hook::Wire`].
pub(crate) fn hook_from_raw(v: u8) -> Option<Hook> {
    if v == 0 { Some(Hook::Wire) } else { Hook::from_raw(v) }
}

/// Name used in EPB comments (the serde name).
pub(crate) fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::SocketEgress => "socket_egress",
        Hook::SocketIngress => "socket_ingress",
        Hook::TcEgress => "tc_egress",
        Hook::TcIngress => "tc_ingress",
        Hook::Wire => "wire",
    }
}

const PKT_HAS_PROCESS: u8 = 1;

/// Appends the per-packet option value after the PEN (version 1):
/// `version:u16, hook:u8, flags:u8, ts_ns:u64, cgroup_id:u64, netns_cookie:u64,
/// netns_ino:u32, ifindex:u32, wire_len:u32` then, if `flags & 1`,
/// `pid:u32, tid:u32, comm_len:u8, comm, thread_len:u8, thread`.
pub(crate) fn encode_packet_meta(p: &PacketRecord, b: &mut BlockBuf) {
    b.u16(V1);
    b.u8(p.hook.to_raw());
    b.u8(if p.process.is_some() { PKT_HAS_PROCESS } else { 0 });
    b.u64(p.ts_ns);
    b.u64(p.cgroup_id);
    b.u64(p.netns_cookie);
    b.u32(p.netns_ino);
    b.u32(p.ifindex);
    b.u32(p.wire_len);
    if let Some(pr) = &p.process {
        b.u32(pr.pid);
        b.u32(pr.tid);
        for s in [&pr.comm, &pr.thread] {
            let s = truncate_str(s, 255);
            b.u8(s.len() as u8);
            b.bytes(s.as_bytes());
        }
    }
}

/// Per-packet metadata decoded from the custom option.
pub(crate) struct PacketMeta {
    pub(crate) ts_ns: u64,
    pub(crate) hook: Hook,
    pub(crate) cgroup_id: u64,
    pub(crate) netns_cookie: u64,
    pub(crate) netns_ino: u32,
    pub(crate) ifindex: u32,
    pub(crate) wire_len: u32,
    pub(crate) process: Option<Process>,
}

/// Process and thread names seen by one reader, shared between the packets
/// that carry them: a name repeats on every packet its process sends, and
/// two fresh `Arc<str>`s per packet were most of the reader's allocations.
/// The last few names are compared byte for byte before the table is
/// hashed: a busy node's packets come from a handful of processes, and the
/// hash lookup was ~220 instructions per packet. Bounded: the table is
/// cleared when full.
#[derive(Default)]
pub(crate) struct Names {
    map: crate::hash::FastMap<Box<[u8]>, Arc<str>>,
    recent: [Option<Named>; Self::RECENT],
    next: usize,
}

/// A name as stored and as shared.
type Named = (Box<[u8]>, Arc<str>);

impl Names {
    /// Most names kept (a node runs far fewer distinct process names).
    const MAX: usize = 4096;
    /// Names compared before hashing.
    const RECENT: usize = 4;

    pub(crate) fn get(&mut self, b: &[u8]) -> Arc<str> {
        for (k, v) in self.recent.iter().flatten() {
            if **k == *b {
                return Arc::clone(v);
            }
        }
        let a = if let Some(a) = self.map.get(b) {
            Arc::clone(a)
        } else {
            let a: Arc<str> = String::from_utf8_lossy(b).into();
            if self.map.len() >= Self::MAX {
                self.map.clear();
            }
            self.map.insert(b.into(), Arc::clone(&a));
            a
        };
        self.recent[self.next] = Some((b.into(), Arc::clone(&a)));
        self.next = (self.next + 1) % Self::RECENT;
        a
    }
}

/// Decodes the per-packet option value (after the PEN), process names made
/// by `name` ([`Names::get`]); `None` if malformed or of an unknown version
/// (the reader then falls back to the EPB fields).
pub(crate) fn decode_packet_meta_with(v: &[u8], name: &mut dyn FnMut(&[u8]) -> Arc<str>) -> Option<PacketMeta> {
    let mut c = Cur::new(v, true);
    if c.u16()? != V1 {
        return None;
    }
    let hook = hook_from_raw(c.u8()?)?;
    let flags = c.u8()?;
    let ts_ns = c.u64()?;
    let cgroup_id = c.u64()?;
    let netns_cookie = c.u64()?;
    let netns_ino = c.u32()?;
    let ifindex = c.u32()?;
    let wire_len = c.u32()?;
    let process = if flags & PKT_HAS_PROCESS != 0 {
        let pid = c.u32()?;
        let tid = c.u32()?;
        let n = usize::from(c.u8()?);
        let comm = c.take(n)?;
        let n = usize::from(c.u8()?);
        let thread = c.take(n)?;
        let comm = name(comm);
        // A single-threaded process's thread is named like the process.
        let thread = if *thread == *comm.as_bytes() { Arc::clone(&comm) } else { name(thread) };
        Some(Process { pid, tid, comm, thread })
    } else {
        None
    };
    Some(PacketMeta { ts_ns, hook, cgroup_id, netns_cookie, netns_ino, ifindex, wire_len, process })
}

/// Decoded per-packet options, by their bytes: the consecutive packets of a
/// socket carry the same option but for its time and wire length, so each
/// distinct option is decoded (and its names looked up) once, not once per
/// packet. Direct-mapped and bounded ([`Self::SLOTS`] entries of at most
/// [`Self::MAX_KEY`] bytes); an entry's facts are what
/// [`decode_packet_meta_with`] gives for its bytes, so a hit decodes exactly
/// as a miss would.
pub(crate) struct MetaCache {
    /// Made on first use: a reader of a small capture does not pay for the table.
    slots: Box<[Option<Box<MetaSlot>>]>,
    names: Names,
}

/// The facts of a packet no one described (foreign captures).
pub(crate) static WIRE_FACTS: PacketInfo = PacketInfo::bare(0, Hook::Wire);

struct MetaSlot {
    /// The option value (after the PEN) last decoded into this slot; empty: unused.
    key: Vec<u8>,
    /// Its facts, `ts_ns`, `wire_len` and `node` left at 0 / `None`.
    facts: PacketInfo,
}

/// Offsets in the version 1 option value (see [`encode_packet_meta`]).
const OFF_TS: usize = 4;
const OFF_WIRE_LEN: usize = 36;
/// Length of the fixed part of the version 1 option value.
const FIXED: usize = 40;

impl Default for MetaCache {
    fn default() -> Self {
        Self { slots: std::iter::repeat_with(|| None).take(Self::SLOTS).collect(), names: Names::default() }
    }
}

impl MetaCache {
    /// Entries (a busy node's recording has a few hundred distinct sockets).
    const SLOTS: usize = 1024;
    /// Longest option kept (a version 1 option with both names at their
    /// 255-byte bound is 560 bytes); longer ones are decoded every time.
    const MAX_KEY: usize = 600;

    /// The per-packet option value `v` (after the PEN) decoded: the slot
    /// holding its facts, its `ts_ns` and `wire_len`; `None` when it is
    /// malformed or of an unknown version.
    #[inline]
    pub(crate) fn get(&mut self, v: &[u8]) -> Option<(usize, u64, u32)> {
        let (Some(head), Some(fixed)) = (v.first_chunk::<4>(), v.first_chunk::<FIXED>()) else {
            return self.decode_uncached(v);
        };
        let word = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().unwrap_or_default());
        let tail = v.get(FIXED..FIXED + 8).map_or(0, |t| u64::from_le_bytes(t.try_into().unwrap_or_default()));
        let h = u64::from(u32::from_le_bytes(*head))
            ^ word(12)
            ^ word(20).rotate_left(21)
            ^ word(28).rotate_left(42)
            ^ tail.rotate_left(11)
            ^ ((v.len() as u64) << 52);
        let i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % Self::SLOTS;
        let ts = u64::from_le_bytes(fixed[OFF_TS..OFF_TS + 8].try_into().unwrap_or_default());
        let wire_len = u32::from_le_bytes(fixed[OFF_WIRE_LEN..FIXED].try_into().unwrap_or_default());
        if let Some(slot) = &self.slots[i]
            && slot.key.len() == v.len()
            && slot.key[..OFF_TS] == fixed[..OFF_TS]
            && slot.key[OFF_TS + 8..OFF_WIRE_LEN] == fixed[OFF_TS + 8..OFF_WIRE_LEN]
            && same(&slot.key[FIXED..], &v[FIXED..])
        {
            return Some((i, ts, wire_len));
        }
        self.decode_into(i, v)
    }

    /// [`Self::get`] of an option not in the cache.
    #[inline(never)]
    fn decode_into(&mut self, i: usize, v: &[u8]) -> Option<(usize, u64, u32)> {
        let m = decode_packet_meta_with(v, &mut |b| self.names.get(b))?;
        if v.len() > Self::MAX_KEY {
            return Some(self.store_uncached(m));
        }
        let slot = self.slot(i);
        slot.key.clear();
        slot.key.extend_from_slice(v);
        slot.facts = facts(m.hook, m.process, m.cgroup_id, m.netns_cookie, m.netns_ino, m.ifindex);
        Some((i, m.ts_ns, m.wire_len))
    }

    /// The facts in slot `i` (as [`Self::get`] returned it).
    pub(crate) fn facts(&self, i: usize) -> &PacketInfo {
        self.slots.get(i).and_then(Option::as_ref).map_or(&WIRE_FACTS, |s| &s.facts)
    }

    /// Slot `i`, made if it was never used.
    fn slot(&mut self, i: usize) -> &mut MetaSlot {
        self.slots[i].get_or_insert_with(|| Box::new(MetaSlot { key: Vec::new(), facts: WIRE_FACTS.clone() }))
    }

    /// Options too short to hash or too long to keep: decoded into the
    /// last slot, which keeps no key (so nothing ever hits it by its bytes).
    fn decode_uncached(&mut self, v: &[u8]) -> Option<(usize, u64, u32)> {
        let m = decode_packet_meta_with(v, &mut |b| self.names.get(b))?;
        Some(self.store_uncached(m))
    }

    fn store_uncached(&mut self, m: PacketMeta) -> (usize, u64, u32) {
        let i = Self::SLOTS - 1;
        let slot = self.slot(i);
        slot.key.clear();
        slot.facts = facts(m.hook, m.process, m.cgroup_id, m.netns_cookie, m.netns_ino, m.ifindex);
        (i, m.ts_ns, m.wire_len)
    }
}

/// `a == b` for slices of the same length, eight bytes at a time (the
/// tail of an option is a few dozen bytes: a call to `bcmp` cost more).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in a8.by_ref().zip(b8.by_ref()) {
        if u64::from_le_bytes(x.try_into().unwrap_or_default()) != u64::from_le_bytes(y.try_into().unwrap_or_default())
        {
            return false;
        }
    }
    a8.remainder().iter().zip(b8.remainder()).all(|(x, y)| x == y) && a.len() == b.len()
}

fn facts(
    hook: Hook,
    process: Option<Process>,
    cgroup_id: u64,
    netns_cookie: u64,
    netns_ino: u32,
    ifindex: u32,
) -> PacketInfo {
    PacketInfo { ts_ns: 0, hook, process, cgroup_id, netns_cookie, netns_ino, ifindex, wire_len: 0, node: None }
}

/// What ktrace knows about one of its interfaces (one per node × netns × hint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IfaceMeta {
    pub(crate) node: Option<Arc<str>>,
    pub(crate) netns_cookie: u64,
    pub(crate) netns_ino: u32,
    pub(crate) hint: Option<String>,
}

/// Appends the IDB option value after the PEN (version 1):
/// `version:u16, netns_cookie:u64, netns_ino:u32, has_node:u8, node_len:u16,
/// node, has_hint:u8, hint_len:u16, hint`.
pub(crate) fn encode_iface_meta(
    node: Option<&str>,
    netns_cookie: u64,
    netns_ino: u32,
    hint: Option<&str>,
    b: &mut BlockBuf,
) {
    b.u16(V1);
    b.u64(netns_cookie);
    b.u32(netns_ino);
    for s in [node, hint] {
        b.u8(u8::from(s.is_some()));
        // Both strings share one option of at most 65535 bytes.
        let s = truncate_str(s.unwrap_or(""), 30_000);
        b.u16(s.len() as u16);
        b.bytes(s.as_bytes());
    }
}

pub(crate) fn decode_iface_meta(v: &[u8]) -> Option<IfaceMeta> {
    let mut c = Cur::new(v, true);
    if c.u16()? != V1 {
        return None;
    }
    let netns_cookie = c.u64()?;
    let netns_ino = c.u32()?;
    let node = get_opt_str(&mut c)?;
    let hint = get_opt_str(&mut c)?;
    Some(IfaceMeta {
        node: node.0.then(|| Arc::from(node.1)),
        netns_cookie,
        netns_ino,
        hint: hint.0.then(|| hint.1.to_owned()),
    })
}
