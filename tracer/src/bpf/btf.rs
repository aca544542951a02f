//! A small, safe reader of the kernel's BTF (BPF Type Format).
//!
//! Rust eBPF has no CO-RE relocations, so the few kernel struct offsets the
//! programs need (see [`tracer_common::KernelOffsets`]) are computed here, in
//! userspace, from the running kernel's `/sys/kernel/btf/vmlinux` (kernels
//! since 5.4 built with `CONFIG_DEBUG_INFO_BTF=y`) and handed to the programs as
//! globals. The same BTF names the kernel's packet drop reasons.
//!
//! Format: <https://www.kernel.org/doc/html/latest/bpf/btf.html>. Parsing
//! walks the type section once, recording where each type starts and indexing
//! structs, unions, enums and typedefs by name; member lists and strings are
//! decoded only when asked for. Every read is bounds-checked: malformed input
//! gives a [`BtfError`] naming the byte offset, never a panic.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use thiserror::Error;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// Bounds recursion through anonymous members and typedef/const chains, so a
/// crafted cycle ends in an error instead of a stack overflow.
const MAX_DEPTH: u32 = 64;

/// Kinds of BTF type (`BTF_KIND_*` in `include/uapi/linux/btf.h`).
mod kind {
    pub(super) const INT: u8 = 1;
    pub(super) const PTR: u8 = 2;
    pub(super) const ARRAY: u8 = 3;
    pub(super) const STRUCT: u8 = 4;
    pub(super) const UNION: u8 = 5;
    pub(super) const ENUM: u8 = 6;
    pub(super) const FWD: u8 = 7;
    pub(super) const TYPEDEF: u8 = 8;
    pub(super) const VOLATILE: u8 = 9;
    pub(super) const CONST: u8 = 10;
    pub(super) const RESTRICT: u8 = 11;
    pub(super) const FUNC: u8 = 12;
    pub(super) const FUNC_PROTO: u8 = 13;
    pub(super) const VAR: u8 = 14;
    pub(super) const DATASEC: u8 = 15;
    pub(super) const FLOAT: u8 = 16;
    pub(super) const DECL_TAG: u8 = 17;
    pub(super) const TYPE_TAG: u8 = 18;
    pub(super) const ENUM64: u8 = 19;
}

/// Errors from reading or querying BTF. Offsets are bytes from the start of the blob.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("reading BTF from {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The blob ends (or a section ends) before a structure it declares.
    #[error("BTF truncated at byte {offset}: need {need} bytes, only {have} available")]
    Truncated {
        /// Where the structure starts.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left in the blob or section.
        have: usize,
    },
    /// The first two bytes are not the BTF magic.
    #[error("not BTF at byte 0: magic {magic:#06x} (big-endian BTF is not supported)")]
    BadMagic {
        /// The magic read as little-endian.
        magic: u16,
    },
    /// A header field is inconsistent.
    #[error("bad BTF header at byte {offset}: {reason}")]
    BadHeader {
        /// Offset of the field.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A type record has an unknown kind.
    #[error("BTF type {id} at byte {offset}: unknown kind {kind}")]
    UnknownKind {
        /// Type id.
        id: u32,
        /// Offset of the record.
        offset: usize,
        /// The kind.
        kind: u8,
    },
    /// A string offset is outside the string section, unterminated or not UTF-8.
    #[error("bad BTF string at string offset {name_off} (byte {offset}): {reason}")]
    BadString {
        /// Offset within the string section.
        name_off: u32,
        /// Absolute offset it points to.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A type id refers past the last type.
    #[error("BTF type id {id} out of range (referenced at byte {offset}; {count} types)")]
    BadTypeId {
        /// The id.
        id: u32,
        /// Where it was referenced.
        offset: usize,
        /// Number of types in the blob.
        count: usize,
    },
    /// No struct/union/enum of that name.
    #[error("no {what} named {name} in BTF")]
    TypeNotFound {
        /// What was looked for ("struct", "enum").
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The member path is empty.
    #[error("empty member path for struct {struct_name}")]
    EmptyPath {
        /// The struct.
        struct_name: String,
    },
    /// A member of the path does not exist.
    #[error("struct {struct_name} has no member {path}")]
    MemberNotFound {
        /// The outer struct.
        struct_name: String,
        /// The path up to the missing member, dotted.
        path: String,
    },
    /// A member of the path is a bitfield, so it has no byte offset.
    #[error("member {path} of struct {struct_name} is a bitfield (bit offset {bit_offset})")]
    Bitfield {
        /// The outer struct.
        struct_name: String,
        /// The path up to the bitfield, dotted.
        path: String,
        /// Its bit offset from the start of the outer struct.
        bit_offset: u64,
    },
    /// An intermediate member of the path is not a struct or union.
    #[error("member {path} of struct {struct_name} is not a struct or union (BTF type {id})")]
    NotAStruct {
        /// The outer struct.
        struct_name: String,
        /// The path up to that member, dotted.
        path: String,
        /// Its type id.
        id: u32,
    },
    /// A chain of typedefs/qualifiers or anonymous members is too deep (or a cycle).
    #[error("BTF type {id} at byte {offset}: type chain deeper than {MAX_DEPTH}")]
    TooDeep {
        /// Where the chain was cut.
        id: u32,
        /// Offset of that type's record.
        offset: usize,
    },
    /// The offset does not fit in 32 bits.
    #[error("offset of {path} in struct {struct_name} does not fit in 32 bits")]
    Overflow {
        /// The outer struct.
        struct_name: String,
        /// The path, dotted.
        path: String,
    },
}

/// One type record: where it is and its fixed 12-byte header.
#[derive(Clone, Copy, Debug)]
struct TypeRec {
    /// Absolute offset of the `btf_type`; kind-specific data follows at +12.
    offset: usize,
    name_off: u32,
    info: u32,
    size_or_type: u32,
}

impl TypeRec {
    fn kind(self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }
    fn vlen(self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(self) -> bool {
        self.info >> 31 != 0
    }
    fn data(self) -> usize {
        self.offset + TYPE_LEN
    }
}

/// A member found by [`Btf::find_member`]: its position relative to the
/// struct searched and its type.
#[derive(Clone, Copy, Debug)]
struct MemberHit {
    bit_offset: u64,
    bitfield_size: u32,
    type_id: u32,
    /// Byte offset of the member record's type field, for errors.
    at: usize,
}

/// Drop-reason names, built once on first use.
#[derive(Debug, Default)]
struct DropReasons {
    names: BTreeMap<u32, String>,
    subsys: BTreeMap<u16, String>,
}

/// Parsed BTF: the blob, where each type starts, and a name index.
#[derive(Debug)]
pub struct Btf {
    data: Vec<u8>,
    /// `types[id - 1]` is type `id` (id 0 is `void`).
    types: Vec<TypeRec>,
    str_start: usize,
    str_end: usize,
    /// Named structs, unions, enums, enum64s and typedefs → their ids.
    by_name: HashMap<String, Vec<u32>>,
    drop_reasons: OnceLock<DropReasons>,
}

fn read_u16(data: &[u8], offset: usize) -> Result<u16, BtfError> {
    let b = offset.checked_add(2).and_then(|end| data.get(offset..end)).ok_or(BtfError::Truncated {
        offset,
        need: 2,
        have: data.len().saturating_sub(offset),
    })?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(data: &[u8], offset: usize) -> Result<u32, BtfError> {
    let b = offset.checked_add(4).and_then(|end| data.get(offset..end)).ok_or(BtfError::Truncated {
        offset,
        need: 4,
        have: data.len().saturating_sub(offset),
    })?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_len(rec: TypeRec, id: u32) -> Result<usize, BtfError> {
    Ok(match rec.kind() {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => rec.vlen() * 12,
        kind::ENUM | kind::FUNC_PROTO => rec.vlen() * 8,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        k => {
            return Err(BtfError::UnknownKind { id, offset: rec.offset, kind: k });
        }
    })
}

/// Byte range `[start, start + len)` of a section that begins `off` bytes
/// after the header, checked against the blob.
fn section(total: usize, hdr_len: usize, off: u32, len: u32, field: usize) -> Result<(usize, usize), BtfError> {
    let start = hdr_len.checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(s), Some(e)) if e <= total => Ok((s, e)),
        _ => Err(BtfError::BadHeader {
            offset: field,
            reason: format!("section at {off}+{len} after a {hdr_len}-byte header ends past the {total}-byte blob"),
        }),
    }
}

impl Btf {
    /// Reads and parses the running kernel's BTF from [`VMLINUX_BTF`].
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a raw BTF file (not an ELF `.BTF` section).
    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io { path: path.to_path_buf(), source })?;
        Self::parse(data)
    }

    /// Parses a raw, little-endian BTF blob.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = read_u16(&data, 0)?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic { magic });
        }
        let version = *data.get(2).ok_or(BtfError::Truncated { offset: 2, need: 1, have: 0 })?;
        if version != 1 {
            return Err(BtfError::BadHeader { offset: 2, reason: format!("unsupported version {version}") });
        }
        let hdr_len = read_u32(&data, 4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(BtfError::BadHeader {
                offset: 4,
                reason: format!("header length {hdr_len} outside {HEADER_LEN}..={}", data.len()),
            });
        }
        let (type_start, type_end) = section(data.len(), hdr_len, read_u32(&data, 8)?, read_u32(&data, 12)?, 8)?;
        let (str_start, str_end) = section(data.len(), hdr_len, read_u32(&data, 16)?, read_u32(&data, 20)?, 16)?;

        let mut types = Vec::with_capacity((type_end - type_start) / TYPE_LEN);
        let mut pos = type_start;
        while pos < type_end {
            let id = u32::try_from(types.len() + 1)
                .map_err(|_| BtfError::BadHeader { offset: 12, reason: "more than 2^32 types".into() })?;
            let have = type_end - pos;
            if have < TYPE_LEN {
                return Err(BtfError::Truncated { offset: pos, need: TYPE_LEN, have });
            }
            let rec = TypeRec {
                offset: pos,
                name_off: read_u32(&data, pos)?,
                info: read_u32(&data, pos + 4)?,
                size_or_type: read_u32(&data, pos + 8)?,
            };
            let need = TYPE_LEN + extra_len(rec, id)?;
            if have < need {
                return Err(BtfError::Truncated { offset: pos, need, have });
            }
            types.push(rec);
            pos += need;
        }

        let mut btf = Self { data, types, str_start, str_end, by_name: HashMap::new(), drop_reasons: OnceLock::new() };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, rec) in btf.types.iter().enumerate() {
            if rec.name_off == 0
                || !matches!(rec.kind(), kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::TYPEDEF)
            {
                continue;
            }
            let name = btf.str_at(rec.name_off)?;
            // Ids fit in u32: checked while walking the type section.
            by_name.entry(name.to_owned()).or_default().push((i + 1) as u32);
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    /// Number of types (the largest valid type id).
    #[must_use]
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// The id of the typedef `name` (e.g. `btf_trace_kfree_skb`, what a
    /// `tp_btf` program on `kfree_skb` attaches to), if the kernel has one.
    #[must_use]
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        let ids = self.by_name.get(name)?;
        ids.iter().copied().find(|&id| self.types.get(id as usize - 1).is_some_and(|r| r.kind() == kind::TYPEDEF))
    }

    /// The NUL-terminated string at `name_off` in the string section.
    fn str_at(&self, name_off: u32) -> Result<&str, BtfError> {
        let offset = self.str_start.saturating_add(name_off as usize);
        let bad = |reason| BtfError::BadString { name_off, offset, reason };
        let strs = self.data.get(self.str_start..self.str_end).unwrap_or_default();
        let Some(rest) = strs.get(name_off as usize..).filter(|r| !r.is_empty()) else {
            // Offset 0 is the empty name, even in a blob without strings.
            return if name_off == 0 { Ok("") } else { Err(bad("past the end of the string section")) };
        };
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| bad("not NUL-terminated"))?;
        std::str::from_utf8(&rest[..len]).map_err(|_| bad("not UTF-8"))
    }

    fn rec(&self, id: u32, referenced_at: usize) -> Result<TypeRec, BtfError> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize)).copied().ok_or(BtfError::BadTypeId {
            id,
            offset: referenced_at,
            count: self.types.len(),
        })
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags)
    /// to the underlying type; returns its id (0 for `void`).
    fn resolve(&self, mut id: u32, referenced_at: usize) -> Result<u32, BtfError> {
        let mut at = referenced_at;
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let rec = self.rec(id, at)?;
            match rec.kind() {
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                    at = rec.offset + 8;
                    id = rec.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep { id, offset: at })
    }

    fn is_composite(&self, id: u32) -> bool {
        self.rec(id, 0).is_ok_and(|r| matches!(r.kind(), kind::STRUCT | kind::UNION))
    }

    /// Ids of the structs/unions called `name`, typedefs to them included.
    fn composites_named(&self, name: &str) -> Vec<u32> {
        let Some(ids) = self.by_name.get(name) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = ids.iter().copied().filter(|&id| self.is_composite(id)).collect();
        for &id in ids {
            if let Ok(r) = self.resolve(id, 0)
                && r != id
                && self.is_composite(r)
                && !out.contains(&r)
            {
                out.push(r);
            }
        }
        out
    }

    /// Searches the members of struct/union `id` for `name`, descending into
    /// anonymous struct/union members (C requires names to be unique across them).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Result<Option<MemberHit>, BtfError> {
        let rec = self.rec(id, 0)?;
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id, offset: rec.offset });
        }
        for i in 0..rec.vlen() {
            let m = rec.data() + i * 12;
            let m_name = self.str_at(read_u32(&self.data, m)?)?;
            let m_type = read_u32(&self.data, m + 4)?;
            let raw = read_u32(&self.data, m + 8)?;
            let (bit_offset, bitfield_size) =
                if rec.kind_flag() { (u64::from(raw & 0x00ff_ffff), raw >> 24) } else { (u64::from(raw), 0) };
            if m_name == name {
                return Ok(Some(MemberHit { bit_offset, bitfield_size, type_id: m_type, at: m + 4 }));
            }
            if m_name.is_empty() {
                let inner = self.resolve(m_type, m + 4)?;
                if self.is_composite(inner)
                    && let Some(hit) = self.find_member(inner, name, depth + 1)?
                {
                    return Ok(Some(MemberHit { bit_offset: bit_offset + hit.bit_offset, ..hit }));
                }
            }
        }
        Ok(None)
    }

    /// Whether a member is a bitfield in the pre-`kind_flag` encoding, where
    /// the bit size lives in its INT type rather than in the member.
    fn is_int_bitfield(&self, type_id: u32, at: usize) -> Result<bool, BtfError> {
        let id = self.resolve(type_id, at)?;
        if id == 0 {
            return Ok(false);
        }
        let rec = self.rec(id, 0)?;
        if rec.kind() != kind::INT {
            return Ok(false);
        }
        let enc = read_u32(&self.data, rec.data())?;
        let bits = enc & 0xff;
        let bit_off = (enc >> 16) & 0xff;
        Ok(bit_off != 0 || u64::from(bits) != u64::from(rec.size_or_type) * 8)
    }

    /// Byte offset of a member of struct (or union) `struct_name`, following
    /// `path` through embedded structs: `("net", &["ns", "inum"])` is
    /// `offsetof(struct net, ns.inum)`. Members inside anonymous structs and
    /// unions are found as in C; intermediate members may be behind typedefs
    /// and qualifiers, but not pointers. Fails if the member is a bitfield.
    pub fn member_offset(&self, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        if path.is_empty() {
            return Err(BtfError::EmptyPath { struct_name: struct_name.to_owned() });
        }
        let candidates = self.composites_named(struct_name);
        let mut first_err = None;
        for id in candidates {
            match self.member_offset_in(id, struct_name, path) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| BtfError::TypeNotFound { what: "struct", name: struct_name.to_owned() }))
    }

    fn member_offset_in(&self, mut id: u32, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let dotted = |n: usize| path.iter().take(n).copied().collect::<Vec<_>>().join(".");
        let mut bits: u64 = 0;
        for (i, seg) in path.iter().enumerate() {
            let Some(hit) = self.find_member(id, seg, 0)? else {
                return Err(BtfError::MemberNotFound { struct_name: struct_name.to_owned(), path: dotted(i + 1) });
            };
            bits = bits.saturating_add(hit.bit_offset);
            if hit.bitfield_size != 0 || !bits.is_multiple_of(8) || self.is_int_bitfield(hit.type_id, hit.at)? {
                return Err(BtfError::Bitfield {
                    struct_name: struct_name.to_owned(),
                    path: dotted(i + 1),
                    bit_offset: bits,
                });
            }
            if i + 1 < path.len() {
                let next = self.resolve(hit.type_id, hit.at)?;
                if !self.is_composite(next) {
                    return Err(BtfError::NotAStruct {
                        struct_name: struct_name.to_owned(),
                        path: dotted(i + 1),
                        id: hit.type_id,
                    });
                }
                id = next;
            }
        }
        u32::try_from(bits / 8)
            .map_err(|_| BtfError::Overflow { struct_name: struct_name.to_owned(), path: dotted(path.len()) })
    }

    /// Direct members of struct or union `name` as (name, bit offset), in
    /// declaration order; anonymous members have an empty name. For
    /// diagnostics (`ktrace doctor`) and tests.
    pub fn struct_members(&self, name: &str) -> Result<Vec<(String, u32)>, BtfError> {
        let id = *self
            .composites_named(name)
            .first()
            .ok_or_else(|| BtfError::TypeNotFound { what: "struct", name: name.to_owned() })?;
        let rec = self.rec(id, 0)?;
        let mut out = Vec::with_capacity(rec.vlen());
        for i in 0..rec.vlen() {
            let m = rec.data() + i * 12;
            let raw = read_u32(&self.data, m + 8)?;
            let bits = if rec.kind_flag() { raw & 0x00ff_ffff } else { raw };
            out.push((self.str_at(read_u32(&self.data, m)?)?.to_owned(), bits));
        }
        Ok(out)
    }

    /// Size in bytes of struct or union `name`.
    pub fn type_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = *self
            .composites_named(name)
            .first()
            .ok_or_else(|| BtfError::TypeNotFound { what: "struct", name: name.to_owned() })?;
        Ok(self.rec(id, 0)?.size_or_type)
    }

    /// Enumerators of enum `enum_name` (`ENUM` or `ENUM64`) in declaration order.
    ///
    /// Values are read as signed when the enum's `kind_flag` says so (set
    /// since kernel 6.0), unsigned otherwise; unsigned 64-bit values above
    /// `i64::MAX` wrap.
    pub fn enum_values(&self, enum_name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let not_found = || BtfError::TypeNotFound { what: "enum", name: enum_name.to_owned() };
        let ids = self.by_name.get(enum_name).ok_or_else(not_found)?;
        let rec = ids
            .iter()
            .filter_map(|&id| self.rec(id, 0).ok())
            .find(|r| matches!(r.kind(), kind::ENUM | kind::ENUM64))
            .ok_or_else(not_found)?;
        self.enumerators(rec)
    }

    fn enumerators(&self, rec: TypeRec) -> Result<Vec<(String, i64)>, BtfError> {
        let signed = rec.kind_flag();
        let mut out = Vec::with_capacity(rec.vlen());
        for i in 0..rec.vlen() {
            if rec.kind() == kind::ENUM64 {
                let e = rec.data() + i * 12;
                let name = self.str_at(read_u32(&self.data, e)?)?;
                let v = u64::from(read_u32(&self.data, e + 4)?) | (u64::from(read_u32(&self.data, e + 8)?) << 32);
                out.push((name.to_owned(), v as i64));
            } else {
                let e = rec.data() + i * 8;
                let name = self.str_at(read_u32(&self.data, e)?)?;
                let v = read_u32(&self.data, e + 4)?;
                let v = if signed { i64::from(v as i32) } else { i64::from(v) };
                out.push((name.to_owned(), v));
            }
        }
        Ok(out)
    }

    fn drop_reasons(&self) -> &DropReasons {
        self.drop_reasons.get_or_init(|| self.build_drop_reasons())
    }

    /// Reads `enum skb_drop_reason`, `enum skb_drop_reason_subsys` (6.4+) and
    /// any subsystem `*_drop_reason` enums present, whose values already carry
    /// the subsystem in their high 16 bits (e.g. `ovs_drop_reason`,
    /// `mac80211_drop_reason`; usually in module BTF, so often absent here).
    fn build_drop_reasons(&self) -> DropReasons {
        let mut out = DropReasons::default();
        let usable = |name: &str| !name.starts_with("__") && !name.ends_with("_MAX") && !name.ends_with("_NUM");
        for (name, v) in self.enum_values("skb_drop_reason").unwrap_or_default() {
            // The enum also holds SKB_DROP_REASON_SUBSYS_MASK (0xffff0000).
            let Ok(v) = u32::try_from(v) else { continue };
            if v >> 16 != 0 || !usable(&name) {
                continue;
            }
            let short = name.strip_prefix("SKB_DROP_REASON_").or_else(|| name.strip_prefix("SKB_")).unwrap_or(&name);
            out.names.entry(v).or_insert_with(|| short.to_owned());
        }
        for (name, v) in self.enum_values("skb_drop_reason_subsys").unwrap_or_default() {
            let Ok(v) = u16::try_from(v) else { continue };
            if v == 0 || !usable(&name) {
                continue;
            }
            let short = name.strip_prefix("SKB_DROP_REASON_SUBSYS_").unwrap_or(&name);
            out.subsys.insert(v, short.to_owned());
        }
        let subsys_enums = self
            .by_name
            .iter()
            .filter(|(n, _)| n.ends_with("_drop_reason") && n.as_str() != "skb_drop_reason")
            .flat_map(|(_, ids)| ids.iter().copied());
        for id in subsys_enums {
            let Ok(rec) = self.rec(id, 0) else { continue };
            if !matches!(rec.kind(), kind::ENUM | kind::ENUM64) {
                continue;
            }
            for (name, v) in self.enumerators(rec).unwrap_or_default() {
                // Only values tagged with a non-core subsystem are drop reasons
                // (mac80211 mixes in RX_CONTINUE/RX_QUEUED = 1/0).
                match u32::try_from(v) {
                    Ok(v) if v >> 16 != 0 && usable(&name) => {
                        out.names.entry(v).or_insert(name);
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Known drop-reason names by value: core reasons without their
    /// `SKB_DROP_REASON_` prefix (`NOT_SPECIFIED`, `NETFILTER_DROP`, and
    /// `NOT_DROPPED_YET`/`CONSUMED` without `SKB_`), plus subsystem reasons
    /// (`subsys << 16 | code`) under their own enum names. Empty if this BTF
    /// has no `enum skb_drop_reason` (kernels < 5.17).
    #[must_use]
    pub fn drop_reason_names(&self) -> BTreeMap<u32, String> {
        self.drop_reasons().names.clone()
    }

    /// Name of a `kfree_skb` drop reason; never fails. Unknown reasons of a
    /// known subsystem read `<SUBSYS>_<code>` (e.g. `OPENVSWITCH_7`), of an
    /// unknown one `SUBSYS<n>_<code>`, and unknown core reasons `REASON_<n>`.
    #[must_use]
    pub fn drop_reason_name(&self, reason: u32) -> String {
        let table = self.drop_reasons();
        if let Some(n) = table.names.get(&reason) {
            return n.clone();
        }
        let (subsys, code) = ((reason >> 16) as u16, reason & 0xffff);
        match (subsys, table.subsys.get(&subsys)) {
            (0, _) => format!("REASON_{code}"),
            (_, Some(s)) => format!("{s}_{code}"),
            (s, None) => format!("SUBSYS{s}_{code}"),
        }
    }
}

/// Offsets the eBPF programs need, from `btf` (normally the running kernel's).
///
/// `net_ns_inum` is `offsetof(struct net, ns) + offsetof(struct ns_common, inum)`.
pub fn kernel_offsets(btf: &Btf) -> Result<tracer_common::KernelOffsets, BtfError> {
    Ok(tracer_common::KernelOffsets {
        task_group_leader: btf.member_offset("task_struct", &["group_leader"])?,
        task_comm: btf.member_offset("task_struct", &["comm"])?,
        task_nsproxy: btf.member_offset("task_struct", &["nsproxy"])?,
        nsproxy_net_ns: btf.member_offset("nsproxy", &["net_ns"])?,
        net_ns_inum: btf.member_offset("net", &["ns", "inum"])?,
        task_pid: btf.member_offset("task_struct", &["pid"])?,
        task_tgid: btf.member_offset("task_struct", &["tgid"])?,
        valid: 1,
        ..skb_offsets(btf).unwrap_or_default()
    })
}

/// The `sk_buff` / `net_device` / sock offsets the drop and connection programs
/// need; a kernel whose layout we cannot read simply gets no drop details.
fn skb_offsets(btf: &Btf) -> Result<tracer_common::KernelOffsets, BtfError> {
    Ok(tracer_common::KernelOffsets {
        skb_head: btf.member_offset("sk_buff", &["head"])?,
        skb_network_header: btf.member_offset("sk_buff", &["network_header"])?,
        skb_len: btf.member_offset("sk_buff", &["len"])?,
        skb_dev: btf.member_offset("sk_buff", &["dev"])?,
        dev_ifindex: btf.member_offset("net_device", &["ifindex"])?,
        dev_nd_net: btf.member_offset("net_device", &["nd_net"])?,
        sock_state: btf.member_offset("sock", &["__sk_common", "skc_state"])?,
        skb_valid: 1,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds little-endian BTF blobs by hand.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strs: Vec<u8>,
        count: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self { strs: vec![0], ..Self::default() }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(name.as_bytes());
            self.strs.push(0);
            off
        }

        fn words(&mut self, w: &[u32]) {
            for v in w {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
        }

        /// Adds a type header; returns its id.
        fn ty(&mut self, name: &str, kind: u8, vlen: u32, kind_flag: bool, size_or_type: u32) -> u32 {
            let n = self.s(name);
            let info = vlen | (u32::from(kind) << 24) | (u32::from(kind_flag) << 31);
            self.words(&[n, info, size_or_type]);
            self.count += 1;
            self.count
        }

        fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            let id = self.ty(name, kind::INT, 0, false, size);
            self.words(&[bits]);
            id
        }

        /// Members are (name, type, offset word as stored).
        fn composite(&mut self, k: u8, name: &str, size: u32, kind_flag: bool, members: &[(&str, u32, u32)]) -> u32 {
            let id = self.ty(name, k, members.len() as u32, kind_flag, size);
            for &(m, t, off) in members {
                let n = self.s(m);
                self.words(&[n, t, off]);
            }
            id
        }

        fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> u32 {
            let id = self.ty(name, kind::ENUM, vals.len() as u32, signed, 4);
            for &(m, v) in vals {
                let n = self.s(m);
                self.words(&[n, v as u32]);
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let tl = self.types.len() as u32;
            for w in [HEADER_LEN as u32, 0, tl, tl, self.strs.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    /// A blob with one type of every kind and the shapes the kernel uses.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4, (1 << 24) | 32); // 1
        let my_int = b.ty("my_int", kind::TYPEDEF, 0, false, int); // 2
        let inner = b.composite(kind::STRUCT, "inner", 8, false, &[("a", int, 0), ("b", int, 32)]); // 3
        let inner_t = b.ty("inner_t", kind::TYPEDEF, 0, false, inner); // 4
        let const_inner = b.ty("", kind::CONST, 0, false, inner_t); // 5
        let anon_union = b.composite(kind::UNION, "", 8, false, &[("u1", int, 0), ("nested", const_inner, 0)]); // 6
        let anon_struct = b.composite(kind::STRUCT, "", 8, false, &[("pad", int, 0), ("deep", my_int, 32)]); // 7
        let outer = b.composite(
            kind::STRUCT,
            "outer",
            32,
            true,
            &[("first", my_int, 0), ("", anon_union, 64), ("", anon_struct, 128), ("flag", int, (3 << 24) | 0xe3)],
        ); // 8
        b.enum32("color", true, &[("RED", 0), ("GREEN", 1), ("NEG", -5)]); // 9
        let e64 = b.ty("big", kind::ENUM64, 2, false, 8); // 10
        let (small, large) = (b.s("SMALL"), b.s("LARGE"));
        b.words(&[small, 1, 0, large, 2, 1]);
        let ptr = b.ty("", kind::PTR, 0, false, outer); // 11
        let proto = b.ty("", kind::FUNC_PROTO, 1, false, int); // 12
        b.words(&[0, ptr]);
        b.ty("f", kind::FUNC, 1, false, proto); // 13
        b.ty("", kind::ARRAY, 0, false, 0); // 14
        b.words(&[int, int, 4]);
        let var = b.ty("v", kind::VAR, 0, false, int); // 15
        b.words(&[1]);
        b.ty(".data", kind::DATASEC, 1, false, 8); // 16
        b.words(&[var, 0, 4]);
        b.ty("fwd_s", kind::FWD, 0, false, 0); // 17
        b.ty("", kind::VOLATILE, 0, false, int); // 18
        b.ty("", kind::RESTRICT, 0, false, ptr); // 19
        b.ty("float", kind::FLOAT, 0, false, 4); // 20
        b.ty("tag", kind::DECL_TAG, 0, false, outer); // 21
        b.words(&[u32::MAX]);
        b.ty("tt", kind::TYPE_TAG, 0, false, int); // 22
        b.enum32(
            "skb_drop_reason",
            false,
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_CONSUMED", 1),
                ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
                ("SKB_DROP_REASON_NETFILTER_DROP", 3),
                ("SKB_DROP_REASON_MAX", 4),
                ("SKB_DROP_REASON_SUBSYS_MASK", 0xffff_0000_u32 as i32),
            ],
        ); // 23
        b.enum32(
            "skb_drop_reason_subsys",
            false,
            &[
                ("SKB_DROP_REASON_SUBSYS_CORE", 0),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE", 1),
                ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
                ("SKB_DROP_REASON_SUBSYS_NUM", 4),
            ],
        ); // 24
        b.enum32("ovs_drop_reason", false, &[("__OVS_DROP_REASON", 0x30000), ("OVS_DROP_LAST_ACTION", 0x30001)]); // 25
        let bf_int = b.int("bf_int", 4, 3); // 26: old-style 3-bit bitfield
        b.composite(kind::STRUCT, "oldbf", 4, false, &[("x", bf_int, 0)]); // 27
        b.ty("outer_t", kind::TYPEDEF, 0, false, e64); // 28: typedef to a non-struct
        b.build()
    }

    #[test]
    fn parses_every_kind() {
        let btf = Btf::parse(sample()).expect("sample parses");
        assert_eq!(btf.type_count(), 28);
        let kinds: Vec<u8> = btf.types.iter().map(|t| t.kind()).collect();
        for k in 1..=19 {
            assert!(kinds.contains(&k), "kind {k} missing from the sample");
        }
    }

    #[test]
    fn member_offsets_through_anonymous_members_and_typedefs() {
        let btf = Btf::parse(sample()).expect("sample parses");
        assert_eq!(btf.member_offset("outer", &["first"]).expect("first"), 0);
        assert_eq!(btf.member_offset("outer", &["u1"]).expect("u1"), 8);
        assert_eq!(btf.member_offset("outer", &["nested"]).expect("nested"), 8);
        // Through the anonymous union, then the const typedef'd struct.
        assert_eq!(btf.member_offset("outer", &["nested", "b"]).expect("nested.b"), 12);
        assert_eq!(btf.member_offset("outer", &["deep"]).expect("deep"), 20);
        assert_eq!(btf.member_offset("inner_t", &["b"]).expect("typedef'd struct"), 4);
        assert_eq!(btf.type_size("outer").expect("size"), 32);
        assert_eq!(btf.type_size("inner_t").expect("size"), 8);
    }

    #[test]
    fn member_offset_errors() {
        let btf = Btf::parse(sample()).expect("sample parses");
        let err = btf.member_offset("outer", &["flag"]).expect_err("bitfield");
        assert!(matches!(err, BtfError::Bitfield { bit_offset: 0xe3, .. }), "{err}");
        let err = btf.member_offset("oldbf", &["x"]).expect_err("old-style bitfield");
        assert!(matches!(err, BtfError::Bitfield { .. }), "{err}");
        let err = btf.member_offset("outer", &["nested", "zz"]).expect_err("missing");
        assert!(matches!(&err, BtfError::MemberNotFound { path, .. } if path == "nested.zz"), "{err}");
        let err = btf.member_offset("outer", &["first", "a"]).expect_err("int is not a struct");
        assert!(matches!(err, BtfError::NotAStruct { .. }), "{err}");
        let err = btf.member_offset("nope", &["a"]).expect_err("no struct");
        assert!(matches!(err, BtfError::TypeNotFound { .. }), "{err}");
        assert!(matches!(btf.member_offset("outer_t", &["a"]), Err(BtfError::TypeNotFound { .. })));
        assert!(matches!(btf.member_offset("outer", &[]), Err(BtfError::EmptyPath { .. })));
        // Enums and fwds are not structs.
        assert!(btf.member_offset("color", &["RED"]).is_err());
        assert!(btf.type_size("fwd_s").is_err());
    }

    #[test]
    fn enums_signed_unsigned_and_64_bit() {
        let btf = Btf::parse(sample()).expect("sample parses");
        let color = btf.enum_values("color").expect("color");
        assert_eq!(color, vec![("RED".into(), 0), ("GREEN".into(), 1), ("NEG".into(), -5)]);
        let big = btf.enum_values("big").expect("big");
        assert_eq!(big, vec![("SMALL".into(), 1), ("LARGE".into(), 0x1_0000_0002)]);
        assert!(matches!(btf.enum_values("outer"), Err(BtfError::TypeNotFound { .. })));
        assert!(matches!(btf.enum_values("missing"), Err(BtfError::TypeNotFound { .. })));
    }

    #[test]
    fn drop_reason_names_and_fallbacks() {
        let btf = Btf::parse(sample()).expect("sample parses");
        let names = btf.drop_reason_names();
        assert_eq!(names.get(&0).map(String::as_str), Some("NOT_DROPPED_YET"));
        assert_eq!(names.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
        assert_eq!(names.get(&3).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(names.get(&0x30001).map(String::as_str), Some("OVS_DROP_LAST_ACTION"));
        assert!(!names.contains_key(&4), "MAX is not a reason");
        assert!(!names.contains_key(&0xffff_0000), "nor is the subsystem mask");
        assert!(!names.contains_key(&0x30000), "__ sentinels are skipped");
        assert_eq!(btf.drop_reason_name(3), "NETFILTER_DROP");
        assert_eq!(btf.drop_reason_name(99), "REASON_99");
        assert_eq!(btf.drop_reason_name(0x30007), "OPENVSWITCH_7");
        assert_eq!(btf.drop_reason_name(0x10002), "MAC80211_UNUSABLE_2");
        assert_eq!(btf.drop_reason_name(0x90002), "SUBSYS9_2");
    }

    #[test]
    fn truncated_blobs_are_errors_at_every_length() {
        let full = sample();
        for len in 0..full.len() {
            assert!(Btf::parse(full[..len].to_vec()).is_err(), "prefix of {len} bytes parsed");
        }
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let full = sample();
        // Every byte flipped to a few values: no panics, whatever the result,
        // and every query still terminates.
        for i in 0..full.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = full.clone();
                bad[i] = v;
                if let Ok(btf) = Btf::parse(bad) {
                    let _ = btf.member_offset("outer", &["nested", "b"]);
                    let _ = btf.enum_values("big");
                    let _ = btf.drop_reason_name(0x30001);
                    let _ = btf.type_size("inner_t");
                }
            }
        }
    }

    fn set_u32(blob: &mut [u8], at: usize, v: u32) {
        blob[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn header_errors() {
        let full = sample();
        let mut b = full.clone();
        b[0] = 0;
        assert!(matches!(Btf::parse(b), Err(BtfError::BadMagic { .. })));
        let mut b = full.clone();
        b[2] = 2;
        assert!(matches!(Btf::parse(b), Err(BtfError::BadHeader { offset: 2, .. })));
        let mut b = full.clone();
        set_u32(&mut b, 4, 8); // hdr_len too small
        assert!(matches!(Btf::parse(b), Err(BtfError::BadHeader { offset: 4, .. })));
        let mut b = full.clone();
        set_u32(&mut b, 8, u32::MAX); // type_off out of range, overflowing
        assert!(matches!(Btf::parse(b), Err(BtfError::BadHeader { offset: 8, .. })));
        let mut b = full.clone();
        set_u32(&mut b, 16, full.len() as u32); // str_off out of range
        assert!(matches!(Btf::parse(b), Err(BtfError::BadHeader { offset: 16, .. })));
        let mut b = full.clone();
        set_u32(&mut b, 20, u32::MAX); // str_len out of range
        assert!(matches!(Btf::parse(b), Err(BtfError::BadHeader { offset: 16, .. })));
    }

    #[test]
    fn type_section_errors_name_the_byte() {
        let full = sample();
        // Type 1 claims kind 20.
        let mut b = full.clone();
        set_u32(&mut b, HEADER_LEN + 4, 20 << 24);
        let err = Btf::parse(b).expect_err("unknown kind");
        assert!(matches!(err, BtfError::UnknownKind { id: 1, offset: HEADER_LEN, kind: 20 }), "{err}");
        assert!(err.to_string().contains("byte 24"), "{err}");
        // The type section cut mid-record (strings shifted accordingly).
        let mut b = full.clone();
        let tl = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        set_u32(&mut b, 12, tl - 4);
        assert!(matches!(Btf::parse(b), Err(BtfError::Truncated { .. })));
        // A struct name past the string section (type 3, after 16 + 12 bytes).
        let mut b = full;
        set_u32(&mut b, HEADER_LEN + 28, 0x00ff_ffff);
        assert!(matches!(Btf::parse(b), Err(BtfError::BadString { .. })));
    }

    #[test]
    fn typedef_cycles_and_bad_ids_are_errors() {
        let mut b = Builder::new();
        let a = b.ty("a_t", kind::TYPEDEF, 0, false, 2); // 1 → 2
        b.ty("b_t", kind::TYPEDEF, 0, false, a); // 2 → 1
        b.composite(kind::STRUCT, "s", 8, false, &[("x", 1, 0), ("y", 99, 32), ("", 1, 0)]); // 3
        let btf = Btf::parse(b.build()).expect("parses");
        let err = btf.member_offset("s", &["x", "z"]).expect_err("cycle");
        assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
        let err = btf.member_offset("s", &["y", "z"]).expect_err("bad id");
        // Named by the byte of member y's type field, in the type section.
        assert!(matches!(err, BtfError::BadTypeId { id: 99, offset, .. } if offset > HEADER_LEN), "{err}");
        // Searching through the anonymous member hits the cycle too.
        let err = btf.member_offset("s", &["w"]).expect_err("cycle");
        assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn typedef_ids_by_name_and_kind() {
        let mut b = Builder::new();
        let int = b.int("int", 4, (1 << 24) | 32); // 1
        b.ty("btf_trace_kfree_skb", kind::TYPEDEF, 0, false, int); // 2
        b.composite(kind::STRUCT, "sk_buff", 8, false, &[("len", int, 0)]); // 3
        let btf = Btf::parse(b.build()).expect("parses");
        assert_eq!(btf.typedef_id("btf_trace_kfree_skb"), Some(2));
        assert_eq!(btf.typedef_id("sk_buff"), None, "a struct, not a typedef");
        assert_eq!(btf.typedef_id("btf_trace_nothing"), None);
    }

    /// The types ktrace reads from a kernel, shaped as in the kernel (anonymous
    /// unions in `sk_buff`, `sock_common` nested in `sock`, `ns_common` in
    /// `net`, the drop-reason enums); offsets as on 6.18. A seed for the BTF
    /// fuzz target that reaches every query `kernel_offsets` makes.
    fn kernel_shaped() -> Vec<u8> {
        let mut b = Builder::new();
        let u8t = b.int("unsigned char", 1, 8); // 1
        let u16t = b.int("short unsigned int", 2, 16); // 2
        let uint = b.int("unsigned int", 4, 32); // 3
        let int = b.int("int", 4, (1 << 24) | 32); // 4
        let char_t = b.int("char", 1, 8); // 5
        let comm = b.ty("", kind::ARRAY, 0, false, 0); // 6
        b.words(&[char_t, int, 16]);
        let fwd_net = b.ty("net", kind::FWD, 0, false, 0); // 7
        let p_net = b.ty("", kind::PTR, 0, false, fwd_net); // 8
        let ns_common = b.composite(kind::STRUCT, "ns_common", 24, false, &[("stashed", uint, 0), ("inum", uint, 128)]); // 9
        b.composite(kind::STRUCT, "net", 256, false, &[("passive", uint, 0), ("ns", ns_common, 1024)]); // 10
        let nsproxy = b.composite(kind::STRUCT, "nsproxy", 56, false, &[("count", int, 0), ("net_ns", p_net, 320)]); // 11
        let p_nsproxy = b.ty("", kind::PTR, 0, false, nsproxy); // 12
        let fwd_task = b.ty("task_struct", kind::FWD, 0, false, 0); // 13
        let p_task = b.ty("", kind::PTR, 0, false, fwd_task); // 14
        b.composite(
            kind::STRUCT,
            "task_struct",
            9856,
            false,
            &[
                ("__state", uint, 0),
                ("pid", int, 20_032),
                ("tgid", int, 20_064),
                ("group_leader", p_task, 20_480),
                ("comm", comm, 24_704),
                ("nsproxy", p_nsproxy, 25_216),
            ],
        ); // 15
        let possible_net_t = b.composite(kind::STRUCT, "", 8, false, &[("net", p_net, 0)]); // 16
        let net_device = b.composite(
            kind::STRUCT,
            "net_device",
            2432,
            false,
            &[("flags", uint, 0), ("ifindex", int, 1792), ("nd_net", possible_net_t, 2048)],
        ); // 17
        let p_dev = b.ty("", kind::PTR, 0, false, net_device); // 18
        let dev_union = b.composite(kind::UNION, "", 8, false, &[("dev", p_dev, 0), ("dev_scratch", uint, 0)]); // 19
        let p_u8 = b.ty("", kind::PTR, 0, false, u8t); // 20
        let hdrs = b.composite(
            kind::STRUCT,
            "",
            6,
            false,
            &[("transport_header", u16t, 0), ("network_header", u16t, 16), ("mac_header", u16t, 32)],
        ); // 21
        let hdrs_union = b.composite(kind::UNION, "", 6, false, &[("", hdrs, 0), ("headers", hdrs, 0)]); // 22
        b.composite(
            kind::STRUCT,
            "sk_buff",
            232,
            false,
            &[("", dev_union, 128), ("len", uint, 896), ("", hdrs_union, 1440), ("head", p_u8, 1600)],
        ); // 23
        let sock_common =
            b.composite(kind::STRUCT, "sock_common", 136, false, &[("skc_family", u16t, 128), ("skc_state", u8t, 144)]); // 24
        b.composite(kind::STRUCT, "sock", 760, false, &[("__sk_common", sock_common, 0)]); // 25
        b.enum32(
            "skb_drop_reason",
            false,
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_CONSUMED", 1),
                ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
                ("SKB_DROP_REASON_NO_SOCKET", 3),
                ("SKB_DROP_REASON_NETFILTER_DROP", 8),
                ("SKB_DROP_REASON_MAX", 9),
                ("SKB_DROP_REASON_SUBSYS_MASK", 0xffff_0000_u32 as i32),
            ],
        ); // 26
        b.enum32(
            "skb_drop_reason_subsys",
            false,
            &[
                ("SKB_DROP_REASON_SUBSYS_CORE", 0),
                ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
                ("SKB_DROP_REASON_SUBSYS_NUM", 4),
            ],
        ); // 27
        b.enum32("ovs_drop_reason", false, &[("OVS_DROP_LAST_ACTION", 0x30001)]); // 28
        b.build()
    }

    #[test]
    fn kernel_shaped_blob_gives_every_offset() {
        let btf = Btf::parse(kernel_shaped()).expect("kernel-shaped blob parses");
        let off = kernel_offsets(&btf).expect("kernel offsets");
        assert_eq!((off.valid, off.skb_valid), (1, 1));
        assert_eq!((off.task_group_leader, off.task_comm, off.task_nsproxy), (2560, 3088, 3152));
        assert_eq!((off.nsproxy_net_ns, off.net_ns_inum), (40, 144));
        assert_eq!((off.task_pid, off.task_tgid), (2504, 2508));
        assert_eq!((off.skb_dev, off.skb_len, off.skb_network_header, off.skb_head), (16, 112, 182, 200));
        assert_eq!((off.dev_ifindex, off.dev_nd_net, off.sock_state), (224, 256, 18));
        assert_eq!(btf.drop_reason_name(8), "NETFILTER_DROP");
        assert_eq!(btf.drop_reason_name(0x30001), "OVS_DROP_LAST_ACTION");
    }

    /// Writes the BTF fuzz target's seeds (`fuzz/seeds/btf_parse/`, committed).
    #[test]
    #[ignore = "writes fuzz seeds; run by `cargo xtask fuzz --write-seeds`"]
    fn write_fuzz_seeds() {
        let root = PathBuf::from(std::env::var_os("KTRACE_FUZZ_SEEDS").expect("KTRACE_FUZZ_SEEDS names fuzz/seeds"));
        let dir = root.join("btf_parse");
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join("every-kind.btf"), sample()).expect("write seed");
        std::fs::write(dir.join("kernel-shaped.btf"), kernel_shaped()).expect("write seed");
    }

    /// The running kernel's BTF, or None (said on stderr) where there is none.
    fn vmlinux() -> Option<Btf> {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping: {VMLINUX_BTF} does not exist on this machine");
            return None;
        }
        let start = std::time::Instant::now();
        let btf = Btf::from_sys_fs().expect("vmlinux BTF parses");
        eprintln!("parsed {VMLINUX_BTF}: {} types in {:?}", btf.type_count(), start.elapsed());
        Some(btf)
    }

    #[test]
    fn vmlinux_kernel_offsets_are_sane() {
        let Some(btf) = vmlinux() else { return };
        let task = btf.type_size("task_struct").expect("task_struct");
        let off = kernel_offsets(&btf).expect("kernel offsets");
        eprintln!("task_struct is {task} bytes; {off:?}");
        assert_eq!(off.valid, 1);
        for o in [off.task_comm, off.task_group_leader, off.task_nsproxy, off.task_pid, off.task_tgid] {
            assert!(o > 0 && o + 8 <= task, "offset {o} outside task_struct ({task} bytes)");
        }
        // pid_t pid; pid_t tgid; next to each other in every kernel since 2.6.
        assert_eq!(off.task_tgid, off.task_pid + 4);
        assert!(off.nsproxy_net_ns < btf.type_size("nsproxy").expect("nsproxy"));
        assert!(off.net_ns_inum < btf.type_size("net").expect("net"));
    }

    #[test]
    fn vmlinux_drop_reasons() {
        let Some(btf) = vmlinux() else { return };
        let Ok(vals) = btf.enum_values("skb_drop_reason") else {
            eprintln!("skipping: this kernel has no enum skb_drop_reason (< 5.17)");
            return;
        };
        let get = |n: &str| vals.iter().find(|(k, _)| k == n).map(|&(_, v)| v);
        let not_specified = get("SKB_DROP_REASON_NOT_SPECIFIED").expect("NOT_SPECIFIED");
        let netfilter = get("SKB_DROP_REASON_NETFILTER_DROP").expect("NETFILTER_DROP");
        eprintln!("NOT_SPECIFIED={not_specified} NETFILTER_DROP={netfilter}, {} reasons", vals.len());
        assert_eq!(btf.drop_reason_name(not_specified as u32), "NOT_SPECIFIED");
        assert_eq!(btf.drop_reason_name(netfilter as u32), "NETFILTER_DROP");
        let names = btf.drop_reason_names();
        assert!(names.keys().all(|&k| k >> 16 == 0 || btf.drop_reasons().subsys.contains_key(&((k >> 16) as u16))));
        eprintln!("{} named drop reasons; subsystems {:?}", names.len(), btf.drop_reasons().subsys);
    }
}
