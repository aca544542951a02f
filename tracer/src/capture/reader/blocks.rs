//! pcapng blocks as the reader meets them: section and interface headers,
//! packets (ktrace's own with their metadata, foreign ones cut to the IP
//! header) and ktrace's custom blocks.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    super::{
        Item, KTRACE_PEN, ParseError,
        foreign::{L3, LinkType, l3_offset},
        mapped::Mapped,
        meta::{PacketMeta, decode_custom, decode_iface_meta, decode_packet_meta_with},
        pcapng::{
            BT_CUSTOM_COPY, BT_CUSTOM_NOCOPY, BT_EPB, BT_IDB, BT_PB, BT_SHB, BT_SPB, BlockHdr, Cur, OPT_CUSTOM_BIN,
            OPT_CUSTOM_BIN_NOCOPY, OPT_ENDOFOPT, OPT_IF_NAME, OPT_IF_TSOFFSET, OPT_IF_TSRESOL, OPT_SHB_USERAPPL,
            options, pad4,
        },
    },
    Blocks, MAX_IFACES, Ng, NgIface, State, TsRes, account, share,
};
use crate::event::{Hook, PacketRecord, Record};

pub(super) fn handle_block(ng: &mut Ng, st: &mut State, h: BlockHdr) -> Result<Option<Item>, ParseError> {
    let le = ng.br.le();
    let body = ng.br.body();
    let mapped = match &ng.br {
        Blocks::Mapped { m, .. } => Some(m),
        Blocks::Stream(_) => None,
    };
    let bad = |what: &str| ParseError::corrupt(h.start, format!("block type {:#x}: {what}", h.kind));
    match h.kind {
        BT_SHB => {
            let mut c = Cur::new(body, le);
            let _bom = c.u32();
            let major = c.u16().ok_or_else(|| bad("short section header"))?;
            let minor = c.u16().ok_or_else(|| bad("short section header"))?;
            let _section_len = c.u64().ok_or_else(|| bad("short section header"))?;
            if major != 1 {
                return Err(ParseError::Unsupported(format!(
                    "pcapng version {major}.{minor} at byte {} (only 1.x exists)",
                    h.start
                )));
            }
            st.userappl = options(c.rest(), le)
                .find(|(code, _)| *code == OPT_SHB_USERAPPL)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            ng.ifaces.clear();
            Ok(None)
        }
        BT_IDB => {
            if ng.ifaces.len() >= MAX_IFACES {
                return Err(bad("too many interfaces in one section"));
            }
            let mut c = Cur::new(body, le);
            let link = c.u16().ok_or_else(|| bad("short interface block"))?;
            let _reserved = c.u16();
            let snaplen = c.u32().ok_or_else(|| bad("short interface block"))?;
            let mut iface = NgIface {
                link: LinkType(u32::from(link)),
                snaplen,
                res: TsRes::Dec(6),
                offset_s: 0,
                kt: None,
                name: None,
            };
            for (code, v) in options(c.rest(), le) {
                match code {
                    OPT_IF_NAME => iface.name = Some(String::from_utf8_lossy(v).into_owned()),
                    OPT_IF_TSRESOL => {
                        if let Some(&r) = v.first() {
                            iface.res = TsRes::from_opt(r);
                        }
                    }
                    OPT_IF_TSOFFSET => {
                        if let Some(o) = Cur::new(v, le).u64() {
                            iface.offset_s = o as i64;
                        }
                    }
                    OPT_CUSTOM_BIN | OPT_CUSTOM_BIN_NOCOPY => {
                        if let Some(m) = ktrace_value(v, le).and_then(decode_iface_meta) {
                            iface.kt = Some(m);
                        }
                    }
                    _ => {}
                }
            }
            ng.ifaces.push(iface);
            Ok(None)
        }
        BT_EPB | BT_PB => {
            let mut c = Cur::new(body, le);
            let short = || bad("short packet block");
            let (id, ts) = if h.kind == BT_EPB {
                let id = c.u32().ok_or_else(short)?;
                let hi = c.u32().ok_or_else(short)?;
                let lo = c.u32().ok_or_else(short)?;
                (id, (u64::from(hi) << 32) | u64::from(lo))
            } else {
                let id = c.u16().ok_or_else(short)?;
                let _drops = c.u16();
                let hi = c.u32().ok_or_else(short)?;
                let lo = c.u32().ok_or_else(short)?;
                (u32::from(id), (u64::from(hi) << 32) | u64::from(lo))
            };
            let cap = c.u32().ok_or_else(short)? as usize;
            let orig = c.u32().ok_or_else(short)?;
            let data = c.take(cap).ok_or_else(|| bad(&format!("captured length {cap} exceeds the block")))?;
            let _ = c.take(pad4(cap) - cap);
            let pm = packet_option(c.rest(), le).and_then(|v| decode_packet_meta_with(v, &mut |b| ng.names.get(b)));
            let iface =
                ng.ifaces.get(id as usize).ok_or_else(|| bad(&format!("packet on undeclared interface {id}")))?;
            let ts_ns = add_offset(iface.res.to_ns(ts), iface.offset_s);
            Ok(packet(st, iface, ts_ns, data, mapped, orig, pm))
        }
        BT_SPB => {
            let mut c = Cur::new(body, le);
            let orig = c.u32().ok_or_else(|| bad("short simple packet block"))?;
            let iface = ng.ifaces.first().ok_or_else(|| bad("simple packet block without an interface"))?;
            let mut cap = (orig as usize).min(c.rest().len());
            if iface.snaplen != 0 {
                cap = cap.min(iface.snaplen as usize);
            }
            let data = c.take(cap).unwrap_or_default();
            // No timestamp in an SPB: keep the previous packet's.
            let ts = st.last_ts;
            Ok(packet(st, iface, ts, data, mapped, orig, None))
        }
        BT_CUSTOM_COPY | BT_CUSTOM_NOCOPY => {
            let mut c = Cur::new(body, le);
            if c.u32() != Some(KTRACE_PEN) {
                st.stats.blocks_skipped += 1;
                return Ok(None);
            }
            // ktrace's own encoding is little-endian whatever the section's order.
            let mut c = Cur::new(c.rest(), true);
            let short = || bad("short ktrace custom block");
            let rt = c.u16().ok_or_else(short)?;
            let ver = c.u16().ok_or_else(short)?;
            let len = c.u32().ok_or_else(short)? as usize;
            let b = c.take(len).ok_or_else(short)?;
            let item = decode_custom(rt, ver, b).map_err(|e| bad(&e))?;
            Ok(Some(account(st, item, true)))
        }
        _ => {
            st.stats.blocks_skipped += 1;
            Ok(None)
        }
    }
}

/// The value of the first ktrace custom option among a packet block's
/// options: what `options(..).filter(custom).find_map(ktrace_value)` finds,
/// without the iterator adapters (this runs once per packet).
fn packet_option(mut b: &[u8], le: bool) -> Option<&[u8]> {
    loop {
        let (h, rest) = b.split_first_chunk::<4>()?;
        let (code, len) = if le {
            (u16::from_le_bytes([h[0], h[1]]), u16::from_le_bytes([h[2], h[3]]))
        } else {
            (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]]))
        };
        if code == OPT_ENDOFOPT {
            return None;
        }
        let len = usize::from(len);
        let v = rest.get(..len)?;
        if matches!(code, OPT_CUSTOM_BIN | OPT_CUSTOM_BIN_NOCOPY)
            && let Some(k) = ktrace_value(v, le)
        {
            return Some(k);
        }
        // Padding missing after the last option: nothing more fits anyway.
        b = rest.get(pad4(len)..).unwrap_or_default();
    }
}

/// Value of a ktrace custom option, after its PEN.
fn ktrace_value(v: &[u8], le: bool) -> Option<&[u8]> {
    let mut c = Cur::new(v, le);
    (c.u32()? == KTRACE_PEN).then(|| c.rest())
}

fn add_offset(ts_ns: u64, offset_s: i64) -> u64 {
    let v = i128::from(ts_ns) + i128::from(offset_s) * 1_000_000_000;
    v.clamp(0, i128::from(u64::MAX)) as u64
}

fn packet(
    st: &mut State,
    iface: &NgIface,
    wire_ts: u64,
    data: &[u8],
    mapped: Option<&Mapped>,
    orig: u32,
    pm: Option<PacketMeta>,
) -> Option<Item> {
    let node = iface.kt.as_ref().and_then(|k| k.node.clone());
    if let Some(m) = pm
        && iface.link == LinkType::RAW
    {
        let rec = PacketRecord {
            ts_ns: m.ts_ns,
            hook: m.hook,
            process: m.process,
            cgroup_id: m.cgroup_id,
            netns_cookie: m.netns_cookie,
            netns_ino: m.netns_ino,
            ifindex: m.ifindex,
            wire_len: m.wire_len,
            data: share(mapped, data),
            node,
        };
        st.last_ts = wire_ts;
        return Some(account(st, Item::Record(Record::Packet(rec)), true));
    }
    st.last_ts = wire_ts;
    let off = match l3_offset(iface.link, data) {
        L3::Ip(off) => off,
        L3::NotIp => {
            st.stats.non_ip += 1;
            return None;
        }
        L3::UnsupportedLink => {
            st.stats.unsupported_link += 1;
            return None;
        }
    };
    let rec = wire_record(wire_ts, share(mapped, data.get(off..).unwrap_or_default()), orig, off, node);
    Some(account(st, Item::Record(Record::Packet(rec)), false))
}

pub(super) fn wire_record(ts_ns: u64, l3: Bytes, orig: u32, link_hdr: usize, node: Option<Arc<str>>) -> PacketRecord {
    let l3_len = l3.len() as u32;
    let mut r = PacketRecord::bare(ts_ns, Hook::Wire, l3);
    // On the wire from the IP header on, like `data`, so `wire_len >
    // data.len()` means exactly "cut by the snap length".
    r.wire_len = orig.saturating_sub(link_hdr as u32).max(l3_len);
    r.node = node;
    r
}
