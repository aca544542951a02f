//! pcapng blocks as the reader meets them: section and interface headers,
//! packets (ktrace's own with their metadata, foreign ones cut to the IP
//! header) and ktrace's custom blocks.

use super::{
    super::{
        KTRACE_PEN, ParseError,
        foreign::{L3, LinkType, l3_offset},
        meta::{decode_custom, decode_iface_meta},
        pcapng::{
            BT_CUSTOM_COPY, BT_CUSTOM_NOCOPY, BT_EPB, BT_IDB, BT_PB, BT_SHB, BT_SPB, BlockHdr, Cur, OPT_COMMENT,
            OPT_CUSTOM_BIN, OPT_CUSTOM_BIN_NOCOPY, OPT_ENDOFOPT, OPT_IF_NAME, OPT_IF_TSOFFSET, OPT_IF_TSRESOL,
            OPT_SHB_USERAPPL, options, pad4,
        },
    },
    Blocks, Facts, Got, MAX_IFACES, Ng, NgIface, Pkt, State, TsRes, account, account_packet,
};
use crate::capture::MAX_BLOCK_LEN;

/// Where a packet block's fixed fields end and its packet starts (EPB and
/// the obsolete PB alike).
const PACKET_AT: usize = 20;

pub(super) fn handle_block(ng: &mut Ng, st: &mut State, h: BlockHdr) -> Result<Option<Got>, ParseError> {
    let le = ng.br.le();
    let body = ng.br.body();
    let at = ng.br.body_start();
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
                fast: false,
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
            iface.fast = iface.link == LinkType::RAW && matches!(iface.res, TsRes::Dec(9)) && iface.offset_s == 0;
            ng.ifaces.push(iface);
            Ok(None)
        }
        BT_EPB | BT_PB => {
            // Every fixed field at once: one bounds check, the same error.
            let Some(f) = body.first_chunk::<PACKET_AT>() else {
                return Err(bad("short packet block"));
            };
            let u32_at = |i: usize| {
                let b = [f[i], f[i + 1], f[i + 2], f[i + 3]];
                if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
            };
            let id = if h.kind == BT_EPB {
                u32_at(0)
            } else {
                let b = [f[0], f[1]];
                u32::from(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
            };
            let ts = (u64::from(u32_at(4)) << 32) | u64::from(u32_at(8));
            let cap = u32_at(12) as usize;
            let orig = u32_at(16);
            if cap > body.len() - PACKET_AT {
                return Err(bad(&format!("captured length {cap} exceeds the block")));
            }
            // Padding cut short leaves no room for an option anyway.
            let opts = body.get(PACKET_AT + pad4(cap)..).unwrap_or_default();
            let pm = packet_option(opts, le).and_then(|v| ng.metas.get(v));
            let iface =
                ng.ifaces.get(id as usize).ok_or_else(|| bad(&format!("packet on undeclared interface {id}")))?;
            let ts_ns = add_offset(iface.res.to_ns(ts), iface.offset_s);
            let data = at + PACKET_AT..at + PACKET_AT + cap;
            Ok(packet(
                st,
                iface,
                id as usize,
                ts_ns,
                body.get(PACKET_AT..PACKET_AT + cap).unwrap_or_default(),
                data,
                orig,
                pm,
            ))
        }
        BT_SPB => {
            let mut c = Cur::new(body, le);
            let orig = c.u32().ok_or_else(|| bad("short simple packet block"))?;
            let iface = ng.ifaces.first().ok_or_else(|| bad("simple packet block without an interface"))?;
            let mut cap = (orig as usize).min(c.rest().len());
            if iface.snaplen != 0 {
                cap = cap.min(iface.snaplen as usize);
            }
            let bytes = c.take(cap).unwrap_or_default();
            // No timestamp in an SPB: keep the previous packet's.
            let ts = st.last_ts;
            Ok(packet(st, iface, 0, ts, bytes, at + 4..at + 4 + cap, orig, None))
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
            Ok(Some(Got::Item(Box::new(account(st, item, true)))))
        }
        _ => {
            st.stats.blocks_skipped += 1;
            Ok(None)
        }
    }
}

/// The next block of a mapped capture when it is what a ktrace capture is
/// made of (a little-endian Enhanced Packet Block with a ktrace option, on a
/// raw-IP interface stamped in nanoseconds), read in place with one bounds
/// check per part; `None`, with nothing consumed, for anything else, which
/// [`handle_block`] then reads with every check and error. Gives what
/// `next_block` + [`handle_block`] give for such a block.
#[inline]
pub(super) fn fast_packet(ng: &mut Ng, st: &mut State) -> Option<Pkt> {
    let Blocks::Mapped { m, le: true, body } = &mut ng.br else {
        return None;
    };
    let pos = m.pos();
    let rest = m.rest();
    let hdr = rest.first_chunk::<{ 8 + PACKET_AT }>()?;
    let u32_at = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let len = u32_at(4);
    if u32_at(0) != BT_EPB || len % 4 != 0 || len > MAX_BLOCK_LEN || (len as usize) < 12 + PACKET_AT {
        return None;
    }
    let len = len as usize;
    let block = rest.get(..len)?;
    if block[len - 4..] != hdr[4..8] {
        return None;
    }
    let (id, ts, cap) =
        (u32_at(8) as usize, (u64::from(u32_at(12)) << 32) | u64::from(u32_at(16)), u32_at(20) as usize);
    let packet_end = (8 + PACKET_AT).checked_add(cap)?;
    if packet_end > len - 4 {
        return None;
    }
    if !ng.ifaces.get(id)?.fast {
        return None;
    }
    let mut opts = block.get(8 + PACKET_AT + pad4(cap)..len - 4).unwrap_or_default();
    // ktrace writes the packet's comment first, its own option next: the
    // comment is stepped over here, so the search below finds the option
    // in its first round (two rounds were ~40 instructions per packet).
    if let Some((h, rest)) = opts.split_first_chunk::<4>()
        && u16::from_le_bytes([h[0], h[1]]) == OPT_COMMENT
    {
        opts = rest.get(pad4(usize::from(u16::from_le_bytes([h[2], h[3]])))..).unwrap_or_default();
    }
    let (slot, ts_ns, wire_len) = packet_option(opts, true).and_then(|v| ng.metas.get(v))?;
    *body = pos + 8..pos + len - 4;
    m.set_pos(pos + len);
    st.stats.bytes = (pos + len) as u64;
    st.last_ts = ts;
    let p = Pkt {
        ts_ns,
        wire_len,
        facts: Facts::Cached(slot),
        data: pos + 8 + PACKET_AT..pos + packet_end,
        iface: Some(id),
    };
    Some(account_packet(st, p, true))
}

/// The value of the first ktrace custom option among a packet block's
/// options: what `options(..).filter(custom).find_map(ktrace_value)` finds,
/// without the iterator adapters (this runs once per packet; inlined, so
/// that the fast path's constant byte order folds in).
#[expect(
    clippy::inline_always,
    reason = "measured: not inlined otherwise, and the fast path's byte order is then not folded in"
)]
#[inline(always)]
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
    if offset_s == 0 {
        return ts_ns;
    }
    let v = i128::from(ts_ns) + i128::from(offset_s) * 1_000_000_000;
    v.clamp(0, i128::from(u64::MAX)) as u64
}

/// A packet block's packet: `bytes` are its captured bytes, found at
/// `data` in the reader's source; `pm` is its ktrace option's
/// `(slot, ts_ns, wire_len)` ([`super::MetaCache::get`]).
#[expect(clippy::too_many_arguments, reason = "a block's fields, read once by its parser")]
fn packet(
    st: &mut State,
    iface: &NgIface,
    id: usize,
    wire_ts: u64,
    bytes: &[u8],
    data: std::ops::Range<usize>,
    orig: u32,
    pm: Option<(usize, u64, u32)>,
) -> Option<Got> {
    st.last_ts = wire_ts;
    if let Some((slot, ts_ns, wire_len)) = pm
        && iface.link == LinkType::RAW
    {
        let p = Pkt { ts_ns, wire_len, facts: Facts::Cached(slot), data, iface: Some(id) };
        return Some(Got::Packet(account_packet(st, p, true)));
    }
    let off = match l3_offset(iface.link, bytes) {
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
    Some(Got::Packet(account_packet(st, wire_packet(wire_ts, data, orig, off, Some(id)), false)))
}

/// A foreign packet at `data` (link header included), its IP header
/// `link_hdr` bytes in.
pub(super) fn wire_packet(
    ts_ns: u64,
    data: std::ops::Range<usize>,
    orig: u32,
    link_hdr: usize,
    iface: Option<usize>,
) -> Pkt {
    let l3 = (data.start + link_hdr).min(data.end)..data.end;
    let l3_len = l3.len() as u32;
    // On the wire from the IP header on, like the bytes, so `wire_len >
    // data.len()` means exactly "cut by the snap length".
    let wire_len = orig.saturating_sub(link_hdr as u32).max(l3_len);
    Pkt { ts_ns, wire_len, facts: Facts::Wire, data: l3, iface }
}
