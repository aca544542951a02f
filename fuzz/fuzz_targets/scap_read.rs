//! The scap reader (`capture::open_reader`) on any bytes: once as given,
//! once after a valid scap section header and machine-info block, so the
//! fuzzer spends its time in the block, process/fd list and event parsers.
#![no_main]

use std::io::Cursor;

use ktrace::capture::{Item, open_reader};
use libfuzzer_sys::fuzz_target;

fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len()).div_ceil(4) * 4;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + len - 12 - body.len(), 0);
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn with_header(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 256);
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 2, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut out, 0x0A0D_0D0A, &shb);
    block(&mut out, 0x201, &[0u8; 180]);
    out.extend_from_slice(data);
    out
}

fuzz_target!(|data: &[u8]| {
    for input in [data.to_vec(), with_header(data)] {
        if let Ok(mut r) = open_reader("fuzz.scap", Cursor::new(input)) {
            // Every item carries at least one byte of input: the bound is generous.
            for item in r.by_ref().take(data.len() + 16) {
                if let Ok(Item::Record(rec)) = item {
                    let _ = rec.ts_ns();
                }
            }
            let _ = r.scap_stats();
        }
    }
});
