//! Drops folded in the kernel: `drop_kfree_skb` counts repeats of a drop key
//! within a window in the per-CPU `DROP_FOLD` table and sends a record only
//! for the first drop of each window, which carries the count of the
//! previous ones (`DropEvent::count`). What is still pending in the table
//! when a run ends is read here, after the last drain, and handed on as
//! records, so `ktrace drops` counts every drop (docs/kernels.md).

use std::sync::Arc;

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use tracer_common::{
    DropEventHead, DropFold, EVENT_VERSION, EventKind, EventTag, FOLD_HEAD, FOLD_NOFOLD_DEVS, FOLD_SLOTS, FoldConfig,
};

use super::{CaptureConfig, Probes, btf::Btf, raw};
use crate::event::Record;

mod direct;

/// The map's name in the object.
const MAP: &str = "DROP_FOLD";

/// How the kernel folds drops (`DROP_FOLD_CFG`). The window is one jiffy
/// (1–10 ms): a drop repeated within it is dated by its key's record, at
/// most a window late. Drops on the underlay devices are never folded: the
/// fabric analysis matches each such packet to its fingerprint. Off with
/// `KTRACE_NO_DROP_FOLD=1`, or when the underlay devices do not fit the
/// list or cannot be resolved. The key's packet bytes are read with direct
/// loads where the kernel takes them ([`direct`]; `btf` and the skb
/// offsets `offs` known), else with probe reads (also with
/// `KTRACE_NO_DROP_DIRECT=1`).
#[must_use]
pub fn config(cfg: &CaptureConfig, btf: Option<&Btf>, offs: Option<&tracer_common::KernelOffsets>) -> FoldConfig {
    let off = FoldConfig::default();
    if !cfg.drops
        || std::env::var_os("KTRACE_NO_DROP_FOLD").is_some_and(|v| v == "1")
        || cfg.underlay.len() > FOLD_NOFOLD_DEVS
    {
        return off;
    }
    let mut c = FoldConfig { window: 1, ..off };
    if let (Some(b), Some(o)) = (btf, offs)
        && std::env::var_os("KTRACE_NO_DROP_DIRECT").is_none_or(|v| v != "1")
        && let Some(id) = b.typedef_id("btf_trace_kfree_skb")
    {
        c.pkt_direct = u32::from(direct::supported(id, o.skb_head, o.skb_network_header));
    }
    for (slot, dev) in c.devs.iter_mut().zip(&cfg.underlay) {
        let Ok(name) = std::ffi::CString::new(dev.as_str()) else { return off };
        // SAFETY: a NUL-terminated name.
        *slot = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if *slot == 0 {
            return off;
        }
    }
    if !cfg.underlay.is_empty() {
        match std::fs::metadata("/proc/self/ns/net") {
            Ok(m) => c.netns_ino = u32::try_from(std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0),
            Err(_) => return off,
        }
    }
    c
}

/// The table, taken from the object when drops are traced.
pub(super) struct DropFolds(PerCpuArray<MapData, DropFold>);

impl DropFolds {
    /// Takes the table out of `ebpf` (None if drops are not traced or the map is missing).
    pub(super) fn take(ebpf: &mut Ebpf, drops: bool) -> Option<Self> {
        if !drops {
            return None;
        }
        let m = ebpf.take_map(MAP)?;
        match PerCpuArray::try_from(m) {
            Ok(a) => Some(Self(a)),
            Err(e) => {
                log::warn!("{MAP}: {e}: drops counted in the kernel at the end of the run are not reported");
                None
            }
        }
    }
}

/// The record a slot's pending count becomes: its key's drop (the packet's
/// first [`FOLD_HEAD`] bytes, what places it in its row), stamped with the
/// time of the key's last record, `count` the pending drops.
fn record_bytes(s: &DropFold) -> Vec<u8> {
    let cap = (s.pkt_len as usize).min(FOLD_HEAD);
    let head = DropEventHead {
        tag: EventTag { kind: EventKind::Drop as u32, version: EVENT_VERSION, flags: 0, ts_ns: s.ts_ns },
        location: s.location,
        reason: s.reason,
        ifindex: s.ifindex,
        netns_ino: s.netns_ino,
        pkt_len: s.pkt_len,
        cap_len: cap as u16,
        pad: 0,
        count: u32::try_from(s.pending).unwrap_or(u32::MAX),
    };
    let mut b = Vec::with_capacity(size_of::<DropEventHead>() + cap);
    // SAFETY: `DropEventHead` is `#[repr(C)]` plain data without padding.
    b.extend_from_slice(unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(&head).cast::<u8>(), size_of::<DropEventHead>())
    });
    b.extend_from_slice(&s.head[..cap]);
    b
}

impl Probes {
    /// Drops the kernel counted and has not sent yet, as records (one per
    /// key and CPU). Call after the last drain: a drop counted after this
    /// read falls after the run, like a record submitted after the last drain.
    #[must_use]
    pub fn folded_drops(&self, node: Option<&Arc<str>>) -> Vec<Record> {
        let Some(DropFolds(t)) = &self.drop_folds else { return Vec::new() };
        let mut out = Vec::new();
        for i in 0..FOLD_SLOTS {
            let Ok(per_cpu) = t.get(&i, 0) else { continue };
            for s in per_cpu.iter().filter(|s| s.pending != 0) {
                match raw::decode(&record_bytes(s), node, &self.decode_ctx) {
                    Ok(r) => out.push(r),
                    Err(e) => log::debug!("pending drop count in slot {i}: {e}"),
                }
            }
        }
        out.sort_by_key(Record::ts_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_slot_becomes_a_drop_record_with_its_count() {
        let mut head = [0u8; FOLD_HEAD];
        head[0] = 0x45;
        let s = DropFold {
            key: [1; 9],
            pending: 41,
            until: 7,
            ts_ns: 1234,
            reason: 2,
            ifindex: 3,
            netns_ino: 4,
            pkt_len: 92,
            location: 0xffff_0000,
            head,
        };
        let Record::Drop(d) = raw::decode(&record_bytes(&s), None, &raw::DecodeCtx::default()).unwrap() else {
            panic!("not a drop")
        };
        assert_eq!((d.count, d.ts_ns, d.reason, d.ifindex, d.netns_ino, d.wire_len), (41, 1234, 2, 3, 4, 92));
        assert_eq!(d.location, 0xffff_0000);
        assert_eq!(&d.data[..], &head[..]);
    }

    #[test]
    fn a_short_packet_keeps_only_its_own_bytes() {
        let s = DropFold {
            key: [0; 9],
            pending: 1,
            until: 0,
            ts_ns: 0,
            reason: 0,
            ifindex: 0,
            netns_ino: 0,
            pkt_len: 20,
            location: 0,
            head: [0; FOLD_HEAD],
        };
        let Record::Drop(d) = raw::decode(&record_bytes(&s), None, &raw::DecodeCtx::default()).unwrap() else {
            panic!("not a drop")
        };
        assert_eq!(d.data.len(), 20);
    }
}
