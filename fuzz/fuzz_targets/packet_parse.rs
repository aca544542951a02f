//! `packet::parse` on any bytes, and the whole decoder (UDP + TCP
//! reassembly) on a packet sequence cut out of the input.
#![no_main]

use std::sync::Arc;

use ktrace::{
    decode::{DnsDecoder, packet},
    event::{Hook, PacketRecord},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = packet::parse(data) {
        assert!(v.payload.len() <= data.len());
    }
    // Two length bytes before each packet: a sequence for the TCP tables.
    let mut dec = DnsDecoder::with_max_streams(4);
    let mut out = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        dec.push(
            Arc::new(PacketRecord::bare(0, Hook::Wire, bytes::Bytes::copy_from_slice(pkt))),
            &mut out,
        );
        rest = next;
    }
});
