//! The capture reader (`capture::open_reader`: ktrace and foreign pcapng,
//! classic pcap, zstd/gzip) on any bytes, read the way replay reads it
//! (`source::file::CaptureEvents`: clock conversion, headers, Kubernetes
//! snapshots, net state, coverage blocks).
#![no_main]

use std::{io::Cursor, path::PathBuf};

use ktrace::{
    capture::{Item, open_reader},
    source::file::CaptureEvents,
};
use libfuzzer_sys::fuzz_target;

/// Items read per input. Every block takes at least 12 input bytes, but a
/// compressed input can expand a lot: the bound keeps one run short.
const MAX_ITEMS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The reader as such, with its statistics.
    if let Ok(mut r) = open_reader("fuzz.pcapng", Cursor::new(data.to_vec())) {
        for item in r.by_ref().take(MAX_ITEMS) {
            if let Ok(Item::Record(rec)) = item {
                let _ = rec.ts_ns();
            }
        }
        let _ = (r.stats(), r.truncated(), r.interface_names().len(), r.header().is_some());
    }
    // And as replay reads it.
    if let Ok(r) = open_reader("fuzz.pcapng", Cursor::new(data.to_vec())) {
        let mut evs = CaptureEvents::new(PathBuf::from("fuzz.pcapng"), r);
        for _ in evs.by_ref().take(MAX_ITEMS) {}
    }
});
