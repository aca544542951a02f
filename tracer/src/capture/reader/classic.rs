//! Classic (libpcap) records, streamed or from the mapping.

use super::{
    super::{
        MAX_BLOCK_LEN, ParseError,
        foreign::{L3, l3_offset},
        pcapng::{Cur, io_err, read_body, read_full},
    },
    Classic, ClassicSrc, Pkt, State, account_packet,
    blocks::wire_packet,
};

/// What one classic pcap record gave.
pub(super) enum ClassicNext {
    End,
    Skipped,
    Packet(Pkt),
}

/// Reads the next classic pcap record.
pub(super) fn classic_next(cl: &mut Classic, st: &mut State) -> Result<ClassicNext, ParseError> {
    let start = cl.offset;
    let mut hdr = [0u8; 16];
    let got = match &mut cl.src {
        ClassicSrc::Stream { r, .. } => read_full(r, &mut hdr).map_err(|e| io_err(start, e))?,
        ClassicSrc::Mapped(m) => {
            let n = m.rest().len().min(16);
            hdr[..n].copy_from_slice(&m.rest()[..n]);
            n
        }
    };
    if got == 0 {
        return Ok(ClassicNext::End);
    }
    if got < 16 {
        return Err(ParseError::Truncated(start));
    }
    let mut cur = Cur::new(&hdr, cl.le);
    let (Some(sec), Some(frac), Some(cap), Some(orig)) = (cur.u32(), cur.u32(), cur.u32(), cur.u32()) else {
        return Err(ParseError::Truncated(start));
    };
    if cap > MAX_BLOCK_LEN {
        return Err(ParseError::corrupt(
            start,
            format!("packet record with captured length {cap} (over {MAX_BLOCK_LEN})"),
        ));
    }
    let (data, at): (&[u8], usize) = match &mut cl.src {
        ClassicSrc::Stream { r, buf } => {
            read_body(r, buf, cap as usize, start)?;
            (buf.as_slice(), 0)
        }
        ClassicSrc::Mapped(m) => {
            if m.rest().len() < 16 + cap as usize {
                return Err(ParseError::Truncated(start));
            }
            let at = m.pos();
            m.set_pos(at + 16 + cap as usize);
            (m.data().get(at + 16..at + 16 + cap as usize).unwrap_or_default(), at + 16)
        }
    };
    cl.offset = start + 16 + u64::from(cap);
    let ts_ns = u64::from(sec) * 1_000_000_000 + u64::from(frac) * if cl.nanos { 1 } else { 1000 };
    st.last_ts = ts_ns;
    let off = match l3_offset(cl.link, data) {
        L3::Ip(off) => off,
        L3::NotIp => {
            st.stats.non_ip += 1;
            return Ok(ClassicNext::Skipped);
        }
        L3::UnsupportedLink => {
            st.stats.unsupported_link += 1;
            return Ok(ClassicNext::Skipped);
        }
    };
    let data = at..at + data.len();
    Ok(ClassicNext::Packet(account_packet(st, wire_packet(ts_ns, data, orig, off, None), false)))
}
