//! An agent's stream as `ktrace dns --agent` reads it (`agent::reader`):
//! gRPC `SubscribeResponse` messages (protobuf), whose `pcapng` bytes are
//! one capture delivered in arbitrary chunks and read incrementally by
//! `CaptureEvents`, plus findings and progress counters.
//!
//! Input: messages, each preceded by a 2-byte big-endian length.
#![no_main]

use std::{collections::VecDeque, io::Read, path::PathBuf};

use ktrace::{agent::proto::SubscribeResponse, capture::open_reader, source::file::CaptureEvents};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const MAX_EVENTS: usize = 4096;

/// Hands out one message's bytes per `read` at most, as the agent source's
/// channel reader does, so block parsing meets every chunk boundary.
struct Chunks(VecDeque<Vec<u8>>);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(front) = self.0.front_mut() else { return Ok(0) };
        let n = buf.len().min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.drain(..n);
        if front.is_empty() {
            self.0.pop_front();
        }
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut chunks = VecDeque::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (msg, next) = tail.split_at(n);
        rest = next;
        let Ok(m) = SubscribeResponse::decode(msg) else { continue };
        for f in &m.findings {
            let _ = serde_json::from_str::<serde_json::Value>(&f.json);
        }
        if !m.pcapng.is_empty() {
            chunks.push_back(m.pcapng);
        }
    }
    if let Ok(r) = open_reader("agent fuzz", Chunks(chunks)) {
        let mut evs = CaptureEvents::new(PathBuf::from("agent fuzz"), r);
        for _ in evs.by_ref().take(MAX_EVENTS) {}
    }
});
