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
        let addrs = outer_addrs(&p.data);
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

/// A packet's outer addresses, as `decode::packet::parse_lax` gives them
/// (lax: a packet cut after its addresses still names its pods), read in
/// place where the header is plain: the full parse was an eighth of the
/// agent's encoding.
fn outer_addrs(d: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let v4 = |a: &[u8]| IpAddr::from(<[u8; 4]>::try_from(a).unwrap_or_default());
    let v6 = |a: &[u8]| IpAddr::from(<[u8; 16]>::try_from(a).unwrap_or_default());
    match d.first().map(|b| b >> 4) {
        // A whole IPv4 header with a valid length parses whatever follows.
        Some(4) if d.len() >= 20 && d[0] & 0x0f >= 5 => Some((v4(&d[12..16]), v4(&d[16..20]))),
        // IPv6 without extension headers (the parser walks those, and may refuse a cut one).
        Some(6) if d.len() >= 40 && !matches!(d[6], 0 | 43 | 44 | 51 | 60) => Some((v6(&d[8..24]), v6(&d[24..40]))),
        _ => crate::decode::packet::parse_lax(d, &[]).map(|h| (h.outer.t.src, h.outer.t.dst)),
    }
}

/// Size of the buffers entries' bytes are cut from: one allocation per
/// chunk instead of one per record. A full chunk is retired; once the last
/// entry cut from it left the history (entries leave in order) and no live
/// subscriber holds one, it is reused, so a full history recycles its
/// memory instead of returning it to the allocator and faulting fresh pages
/// in for every new chunk.
const ARENA_CHUNK: usize = 64 * 1024;

/// Arena bytes kept in the cache ahead of the next record: about two
/// records' blocks (see [`Encoder::prefetch_arena`]).
const PREFETCH_AHEAD: usize = 640;

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
    /// The arena's address up to which lines were prefetched.
    prefetched: usize,
    /// Entries not yet handed to the hub (see [`Encoder::flush`]).
    pending: Vec<Entry>,
    /// Records the writer refused (a block over the format's size limit).
    pub errors: u64,
}

/// Most entries queued before they go to the hub whatever the time: the
/// daemon flushes at each 10 ms tick, which is a few hundred entries at
/// 20k records/s; a flood hands them over in batches this size.
const MAX_PENDING: usize = 256;

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
            prefetched: 0,
            pending: Vec::with_capacity(MAX_PENDING),
            errors: 0,
        };
        (enc, head)
    }

    /// Sizes the pool of retired chunks for a history of `bytes` (chunks
    /// beyond it are freed once unused), and fills it now with the chunks a
    /// full history takes, their pages touched: a daemon fills its history
    /// anyway, and faulting fresh pages in while records arrive was the
    /// agent's largest cost at 10k DNS messages/s (`clear_page_erms` 24 % of
    /// its samples in a 10 s run, the first 10 s being the fill). The
    /// resident memory this takes at start is what a full history holds.
    pub fn recycle_for(&mut self, history_bytes: usize) {
        self.max_retired = history_bytes / ARENA_CHUNK + 8;
        let page = 4096;
        while self.retired.len() < history_bytes / ARENA_CHUNK {
            let mut c = BytesMut::with_capacity(ARENA_CHUNK);
            for b in c.spare_capacity_mut().iter_mut().step_by(page) {
                b.write(0);
            }
            self.chunks += 1;
            self.retired.push_back(c);
        }
    }

    /// Makes room for `need` more bytes in the arena, moving to a fresh or
    /// reused chunk if the current one cannot hold them. A block that turns
    /// out larger than `need` still fits (the arena then grows into an
    /// allocation of its own), so `need` only has to be right usually.
    fn room(&mut self, need: usize) {
        if self.arena.capacity() - self.arena.len() < need {
            // The first arena is the empty `BytesMut::new()`: never a chunk to
            // reuse (kept in the pool, it would block the reuse of every other).
            let allocated = self.arena.capacity() > 0;
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

    /// Encodes one live record (monotonic time) and hands it to the hub
    /// with whatever was queued before it.
    pub fn record(&mut self, rec: &Record, enr: &Enricher, hub: &Hub) {
        self.queue_record(rec, enr, hub);
        self.flush(hub);
    }

    /// Encodes one live record (monotonic time) and queues it for the hub
    /// (see [`Encoder::flush`]): the agent's loop, which flushes per tick.
    pub fn queue_record(&mut self, rec: &Record, enr: &Enricher, hub: &Hub) {
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
            self.flush(hub);
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
            self.flush(hub);
            let decl = self.arena.split_to(iface);
            hub.context(wall, ContextSlot::Append, Bytes::copy_from_slice(&decl));
        }
        let bytes = self.arena.split().freeze();
        self.queue(Entry { ts_ns: wall, kind, pods, bytes }, hub);
        self.prefetch_arena();
    }

    /// Brings the arena's next [`PREFETCH_AHEAD`] bytes into the cache
    /// while the record's analysis runs, so that the next record is written
    /// to owned lines: written cold, the `lock` increment of the reference
    /// count in `split` waited for every store's miss (94 % of `split_to`'s
    /// samples on that instruction, 7 % of the agent's at 10k DNS
    /// messages/s). Lines already asked for are not asked again.
    fn prefetch_arena(&mut self) {
        let spare = self.arena.spare_capacity_mut();
        let start = spare.as_ptr() as usize;
        let end = start + spare.len().min(PREFETCH_AHEAD);
        let from = if (start..end).contains(&self.prefetched) { self.prefetched } else { start };
        if from < end {
            super::prefetch(from as *const u8, end - from);
            self.prefetched = end;
        }
    }

    /// Queues an entry for the hub, after the records encoded so far (the
    /// agent's findings go this way, so they stay behind the packets that
    /// made them).
    pub fn queue(&mut self, e: Entry, hub: &Hub) {
        self.pending.push(e);
        if self.pending.len() >= MAX_PENDING {
            self.flush(hub);
        }
    }

    /// Hands the queued entries to the hub, in order. Context goes to the
    /// hub at once, so the queue is flushed before it: a subscriber sees
    /// everything in the order it was encoded.
    pub fn flush(&mut self, hub: &Hub) {
        hub.publish_all(&mut self.pending);
    }

    /// Encodes context (Kubernetes snapshot, network state) into its slot.
    pub fn meta(&mut self, m: &MetaBlock, hub: &Hub) {
        self.flush(hub);
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
            self.pending.push(Entry { ts_ns: now.wall_ns, kind: EntryKind::Heartbeat, pods: None, bytes });
        }
        self.flush(hub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{
        Rng,
        packet::{ipv4_frag, ipv4_udp, ipv6, udp},
    };

    /// The addresses read in place are the parser's, on whole, cut and
    /// mangled IPv4 and IPv6 packets (extension headers included).
    #[test]
    fn outer_addresses_are_the_parsers() {
        let l4 = udp(40_000, 53, &[1; 30]);
        let bases = [
            ipv4_udp([10, 0, 0, 1].into(), 1, [10, 0, 0, 2].into(), 53, &[0; 12]),
            ipv4_frag(17, 0, &[1, 1, 1, 0], &l4),
            ipv4_frag(6, 0x2000, &[], &l4),
            ipv6(17, &[], &l4),
            ipv6(0, &[17, 0, 1, 4, 0, 0, 0, 0], &l4),
            ipv6(44, &[17, 0, 0, 1, 0, 0, 0, 9], &l4),
            ipv6(60, &[17, 9], &[]),
            vec![0x45],
            Vec::new(),
        ];
        let mut rng = Rng(0xadd5);
        for (i, base) in bases.iter().enumerate() {
            for n in 0..400 {
                let mut d = base.clone();
                if n > 0 {
                    for _ in 0..rng.below(3) {
                        if !d.is_empty() {
                            let at = rng.below(d.len().min(48));
                            d[at] = rng.next() as u8;
                        }
                    }
                    d.truncate(rng.below(d.len() + 1));
                }
                let want = crate::decode::packet::parse_lax(&d, &[]).map(|h| (h.outer.t.src, h.outer.t.dst));
                assert_eq!(outer_addrs(&d), want, "packet {i}, variant {n}: {d:02x?}");
            }
        }
    }

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
            enc.queue_record(&Record::Packet(PacketRecord::bare(i, Hook::SocketEgress, pkt.clone())), &enr, &hub);
        }
        enc.flush(&hub);
        let (entries, bytes, _) = hub.history_size();
        assert!(bytes <= history, "{bytes} bytes of history");
        assert!(entries > 1000 && (entries as u64) < n, "{entries} entries kept");
        let bound = (history / ARENA_CHUNK) as u64 + 3;
        assert!(enc.chunks <= bound, "{} chunks allocated for {n} records (bound {bound})", enc.chunks);
        assert!(enc.retired.len() <= enc.max_retired);
    }
}
