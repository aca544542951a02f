//! The packet parser on any bytes, through each view of it: the UDP/TCP view
//! DNS uses (`decode::packet::parse`), the lax header fields drops use
//! (`decode::packet::parse_lax`, with and without VXLAN) — which must agree
//! where both have a packet — and the whole DNS decoder (UDP + TCP
//! reassembly) on a packet sequence cut out of the input.
#![no_main]

use std::sync::Arc;

use ktrace::{
    decode::{DnsDecoder, packet},
    event::{Hook, PacketRecord},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lax = packet::parse_lax(data, &[]);
    if let Ok(v) = packet::parse(data) {
        assert!(v.payload.len() <= data.len());
        let t = lax.expect("a whole UDP/TCP packet has lax headers").outer.t;
        assert_eq!((t.src, t.dst, t.sport, t.dport), (v.src, v.dst, v.sport, v.dport));
    }
    let _ = packet::parse_lax(data, &[4789, 8472]).map(|h| *h.innermost());
    // Two length bytes before each packet: a sequence for the TCP tables.
    let mut dec = DnsDecoder::with_max_streams(4);
    let mut out = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        let _ = packet::parse_lax(pkt, &[4789]).map(|h| h.inner.is_some());
        dec.push(Arc::new(PacketRecord::bare(0, Hook::Wire, bytes::Bytes::copy_from_slice(pkt))), &mut out);
        rest = next;
    }
});
