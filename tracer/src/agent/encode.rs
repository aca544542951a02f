//! Records → hub entries: each record is encoded once, as the pcapng blocks
//! `ktrace record` would write, tagged with its kind and pods.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use bytes::{Bytes, BytesMut};

use super::hub::{ContextSlot, Entry, EntryKind, Hub, Pods};
use crate::{
    capture::{CaptureHeader, CaptureWriter, ClockRef, MetaBlock},
    enrich::{Enricher, PodRef},
    event::{Hook, PacketRecord, Record},
    hash::FastMap,
    source::file::{COVERAGE, Coverage},
};

/// About the most bytes `rec`'s blocks take, an interface declaration
/// included: packet bytes plus headers, options, names and the process's
/// names; other records are small (drops, TCP events).
fn block_bound(rec: &Record, hint: Option<&str>) -> usize {
    match rec {
        Record::Packet(p) => {
            let names = p.process.as_ref().map_or(0, |pr| pr.comm.len() + pr.thread.len());
            let iface = hint.map_or(0, str::len) + p.node.as_deref().map_or(0, str::len);
            p.data.len() + 2 * names + 3 * iface + 512
        }
        _ => 512,
    }
}

/// Most entries of each pod cache before it starts afresh (bounded memory
/// whatever the number of sockets or addresses).
const POD_CACHE_MAX: usize = 4096;

/// A socket owner's pod and its interface hint (`namespace/name`).
type LocalPod = Option<(PodRef, Arc<str>)>;

/// What a flow's packets carry into the hub: their pods, shared by every
/// entry of the flow, and the local pod's interface hint.
#[derive(Clone, Default)]
struct FlowPods {
    pods: Pods,
    hint: Option<Arc<str>>,
}

/// Socket owner (cgroup, netns) and the packet's outer addresses.
type FlowKey = (u64, u32, Option<(IpAddr, IpAddr)>);

/// Pods of recent packets, so that the node's every packet does not repeat
/// the enricher's lookups (a lock, a cgroup path parsed per packet) nor
/// allocate its pod list: one lookup per packet by flow, the enricher's
/// answers by socket owner (cgroup, netns) and by address behind it.
/// Emptied at each heartbeat (every 100 ms), so a pod that comes or goes is
/// seen at most that late.
#[derive(Default)]
struct PodCache {
    flows: FastMap<FlowKey, FlowPods>,
    local: FastMap<(u64, u32), LocalPod>,
    by_ip: FastMap<IpAddr, Option<PodRef>>,
}

impl PodCache {
    fn clear(&mut self) {
        self.flows.clear();
        self.local.clear();
        self.by_ip.clear();
    }

    /// `compose::packet_pods` through the cache: (local, source, destination), and the local pod's hint.
    fn pods(&mut self, enr: &Enricher, p: &PacketRecord) -> FlowPods {
        // Lax: a packet cut after its addresses still names its pods.
        let addrs = crate::decode::packet::parse_lax(&p.data, &[]).map(|h| (h.outer.t.src, h.outer.t.dst));
        let key = (p.cgroup_id, p.netns_ino, addrs);
        if let Some(f) = self.flows.get(&key) {
            return f.clone();
        }
        if self.flows.len() >= POD_CACHE_MAX || self.local.len() >= POD_CACHE_MAX || self.by_ip.len() >= POD_CACHE_MAX {
            self.clear();
        }
        let (local, hint) = self
            .local
            .entry((p.cgroup_id, p.netns_ino))
            .or_insert_with(|| {
                enr.local_pod(p).map(|pod| {
                    let hint = Arc::from(format!("{}/{}", pod.namespace, pod.name));
                    (pod, hint)
                })
            })
            .clone()
            .unzip();
        let (src, dst) = match addrs {
            Some((s, d)) => {
                let mut by_ip = |ip: IpAddr| self.by_ip.entry(ip).or_insert_with(|| enr.pod_by_ip(&ip)).clone();
                (by_ip(s), by_ip(d))
            }
            None => (None, None),
        };
        let set: Vec<PodRef> = [local, src, dst].into_iter().flatten().collect();
        let f = FlowPods { pods: (!set.is_empty()).then(|| Arc::from(set)), hint };
        self.flows.insert(key, f.clone());
        f
    }
}

/// Size of the buffers entries' bytes are cut from: one allocation per
/// chunk instead of one per record. A full chunk is retired; once the last
/// entry cut from it left the history (entries leave in order) and no live
/// subscriber holds one, it is reused, so a full history recycles its
/// memory instead of returning it to the allocator and faulting fresh pages
/// in for every new chunk.
const ARENA_CHUNK: usize = 64 * 1024;

/// Encodes records for the hub.
pub struct Encoder {
    writer: CaptureWriter,
    clock: ClockRef,
    node: Arc<str>,
    start_mono: u64,
    underlay: Vec<String>,
    pods: PodCache,
    /// The current chunk entries' bytes are cut from.
    arena: BytesMut,
    /// Full chunks, oldest first, until reused.
    retired: VecDeque<BytesMut>,
    /// Most retired chunks kept: the history's bound in chunks, and a few.
    max_retired: usize,
    /// Chunks allocated so far (not reused).
    chunks: u64,
    /// Records the writer refused (a block over the format's size limit).
    pub errors: u64,
}

impl Encoder {
    /// An encoder for `node`; returns it and the stream head (section header
    /// + node header) every subscriber starts with.
    #[must_use]
    pub fn new(node: Arc<str>, underlay: Vec<String>, snaplen: u32) -> (Self, Bytes) {
        let clock = ClockRef::now();
        let header = CaptureHeader {
            node: node.to_string(),
            ktrace_version: env!("CARGO_PKG_VERSION").to_owned(),
            clock,
            snaplen,
            compress: false,
        };
        let mut writer = CaptureWriter::in_memory(header);
        let head = Bytes::from(writer.take_bytes());
        let enc = Self {
            writer,
            clock,
            node,
            start_mono: clock.mono_ns,
            underlay,
            pods: PodCache::default(),
            arena: BytesMut::new(),
            retired: VecDeque::new(),
            max_retired: 64,
            chunks: 0,
            errors: 0,
        };
        (enc, head)
    }

    /// Sizes the pool of retired chunks for a history of `bytes` (chunks
    /// beyond it are freed once unused).
    pub fn recycle_for(&mut self, history_bytes: usize) {
        self.max_retired = history_bytes / ARENA_CHUNK + 8;
    }

    /// Makes room for `need` more bytes in the arena, moving to a fresh or
    /// reused chunk if the current one cannot hold them. A block that turns
    /// out larger than `need` still fits (the arena then grows into an
    /// allocation of its own), so `need` only has to be right usually.
    fn room(&mut self, need: usize) {
        if self.arena.capacity() - self.arena.len() < need {
            // The first arena is the empty `BytesMut::new()`: never a chunk to
            // reuse (kept in the pool, it would block the reuse of every other).
            let allocated = self.chunks > 0;
            let next = self.next_chunk(need);
            let full = std::mem::replace(&mut self.arena, next);
            if allocated && self.retired.len() < self.max_retired {
                self.retired.push_back(full);
            }
        }
    }

    /// The oldest retired chunk if nothing refers to it any more, else a new one.
    fn next_chunk(&mut self, need: usize) -> BytesMut {
        if need <= ARENA_CHUNK
            && let Some(old) = self.retired.front_mut()
            // Succeeds only when this handle is the chunk's last reference
            // (then it moves back to the chunk's start, without copying).
            && old.try_reclaim(ARENA_CHUNK)
            && let Some(c) = self.retired.pop_front()
        {
            return c;
        }
        self.chunks += 1;
        BytesMut::with_capacity(ARENA_CHUNK.max(need))
    }

    /// Encodes one live record (monotonic time) and hands it to the hub.
    pub fn record(&mut self, rec: &Record, enr: &Enricher, hub: &Hub) {
        let wall = self.clock.to_wall(rec.ts_ns());
        let (kind, pods, hint) = match rec {
            Record::Packet(p) => {
                let FlowPods { pods, hint } = self.pods.pods(enr, p);
                let kind =
                    if matches!(p.hook, Hook::TcEgress | Hook::TcIngress) { EntryKind::Drops } else { EntryKind::Dns };
                (kind, pods, hint)
            }
            Record::Drop(_) => (EntryKind::Drops, None, None),
            Record::Conn(_) => (EntryKind::Conn, None, None),
            Record::Lost { .. } | Record::ResolvConf(_) => (EntryKind::Context, None, None),
        };
        // Context stays for the agent's lifetime: its own allocation, so it
        // never pins an arena chunk.
        if matches!(rec, Record::ResolvConf(_) | Record::Lost { .. }) {
            if let Err(e) = self.writer.write_record(rec, None) {
                self.errors += 1;
                log::debug!("record not encodable: {e}");
                let _ = self.writer.take_bytes();
                return;
            }
            let slot = if matches!(rec, Record::ResolvConf(_)) { ContextSlot::ResolvConf } else { ContextSlot::None };
            hub.context(wall, slot, Bytes::from(self.writer.take_bytes()));
            return;
        }
        // Encoded straight into the arena: one copy of the block, no allocation.
        self.room(block_bound(rec, hint.as_deref()));
        let iface = match self.writer.append_record(rec, hint.as_deref(), &mut self.arena) {
            Ok(n) => n,
            Err(e) => {
                self.errors += 1;
                log::debug!("record not encodable: {e}");
                self.arena.clear();
                return;
            }
        };
        // An interface declaration comes first when the record is the first
        // of its interface: context, in its own allocation.
        if iface > 0 {
            let decl = self.arena.split_to(iface);
            hub.context(wall, ContextSlot::Append, Bytes::copy_from_slice(&decl));
        }
        let bytes = self.arena.split().freeze();
        hub.publish(Entry { ts_ns: wall, kind, pods, bytes });
    }

    /// Encodes context (Kubernetes snapshot, network state) into its slot.
    pub fn meta(&mut self, m: &MetaBlock, hub: &Hub) {
        let slot = match m {
            MetaBlock::KubeSnapshot(_) => ContextSlot::Snapshot,
            MetaBlock::NetState(_) => ContextSlot::NetState,
            _ => ContextSlot::None,
        };
        if let Err(e) = self.writer.write_meta(m) {
            self.errors += 1;
            log::warn!("context block not encodable: {e}");
            let _ = self.writer.take_bytes();
            return;
        }
        hub.context(crate::source::realtime_ns(), slot, Bytes::from(self.writer.take_bytes()));
    }

    /// A heartbeat: a fresh clock reference (readers convert later records
    /// with it, and take its wall time as "complete up to here") plus the
    /// coverage so far (this node was observing, with or without tc).
    pub fn heartbeat(&mut self, hub: &Hub) {
        self.pods.clear();
        let now = ClockRef::now();
        self.clock = now;
        let cov = Coverage {
            node: self.node.to_string(),
            start_mono_ns: self.start_mono,
            end_mono_ns: now.mono_ns,
            underlay: self.underlay.clone(),
        };
        let data = serde_json::to_vec(&cov).unwrap_or_default();
        self.room(data.len() + 256);
        let ok = self.writer.append_meta(&MetaBlock::ClockRef(now), &mut self.arena).is_ok()
            && self.writer.append_meta(&MetaBlock::Custom { name: COVERAGE.into(), data }, &mut self.arena).is_ok();
        let bytes = self.arena.split().freeze();
        if ok {
            hub.publish(Entry { ts_ns: now.wall_ns, kind: EntryKind::Heartbeat, pods: None, bytes });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::packet::ipv4_udp;

    /// A full history recycles its arena chunks: however many records pass,
    /// the chunks allocated stay at what the history bound holds.
    #[test]
    fn a_full_history_reuses_its_chunks() {
        let history = 1 << 20;
        let (mut enc, head) = Encoder::new(Arc::from("n"), Vec::new(), 1024);
        enc.recycle_for(history);
        let hub = Hub::new(head, history);
        let enr = Enricher::empty();
        let pkt = Bytes::from(ipv4_udp([10, 0, 0, 1].into(), 40_000, [10, 0, 0, 2].into(), 53, &[0u8; 40]));
        let n = 50_000u64;
        for i in 0..n {
            enc.record(&Record::Packet(PacketRecord::bare(i, Hook::SocketEgress, pkt.clone())), &enr, &hub);
        }
        let (entries, bytes, _) = hub.history_size();
        assert!(bytes <= history, "{bytes} bytes of history");
        assert!(entries > 1000 && (entries as u64) < n, "{entries} entries kept");
        let bound = (history / ARENA_CHUNK) as u64 + 3;
        assert!(enc.chunks <= bound, "{} chunks allocated for {n} records (bound {bound})", enc.chunks);
        assert!(enc.retired.len() <= enc.max_retired);
    }
}
