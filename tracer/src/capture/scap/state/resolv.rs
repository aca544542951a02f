//! resolv.conf reads turned into evidence.

use super::{Decoder, Fd, MAX_RESOLV};
use crate::event::{Record, ResolvConfEvidence};

#[derive(Debug)]
pub(super) struct ResolvBuf {
    pub(super) text: Vec<u8>,
    pub(super) truncated: bool,
    pub(super) done: bool,
}

impl Decoder {
    pub(super) fn flush_resolv(&mut self, ts: u64, pid: u64, fd: i64) {
        let Some(Fd::File { path, resolv: Some(buf) }) = self.fds.get_mut(&pid).and_then(|t| t.get_mut(&fd)) else {
            return;
        };
        if buf.done || buf.text.is_empty() {
            return;
        }
        buf.done = true;
        let mut text = String::from_utf8_lossy(&buf.text).into_owned();
        let error = if buf.truncated {
            // A cut line could read as a wrong setting: keep whole lines only.
            text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
            Some("the capture kept only the start of this file (sysdig snaplen); later lines are missing".to_owned())
        } else {
            None
        };
        let ev = ResolvConfEvidence {
            ts_ns: ts,
            pid: pid as u32,
            netns_ino: 0,
            path: path.to_string(),
            // No whole line kept is no evidence of the settings: an empty text
            // would read as a file with none (ndots:1, no search list).
            text: (!text.is_empty()).then_some(text),
            error,
        };
        self.stats.resolv_conf += 1;
        self.push_record(Record::ResolvConf(ev));
    }

    pub(super) fn resolv_read(&mut self, ts: u64, pid: u64, fd: i64, res: i64, data: &[u8]) {
        if res == 0 {
            self.flush_resolv(ts, pid, fd);
            return;
        }
        if res < 0 {
            return;
        }
        if let Some(Fd::File { resolv: Some(buf), .. }) = self.fds.get_mut(&pid).and_then(|t| t.get_mut(&fd)) {
            let room = MAX_RESOLV.saturating_sub(buf.text.len());
            let keep = data.get(..room.min(data.len())).unwrap_or_default();
            buf.text.extend_from_slice(keep);
            if (data.len() as u64) < res as u64 || keep.len() < data.len() {
                buf.truncated = true;
            }
        }
    }
}
