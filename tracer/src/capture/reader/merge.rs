//! Several captures merged by wall-clock time.

use super::{
    super::{CaptureError, Item},
    CaptureReader,
};

/// Several captures merged into one stream ordered by wall-clock time; see [`merge_by_time`].
pub struct MergeByTime {
    heads: Vec<Head>,
}

struct Head {
    r: CaptureReader,
    item: Option<Result<Item, CaptureError>>,
    key: u64,
    done: bool,
}

/// Merges captures (one per node, typically) by record time: a k-way merge
/// that assumes each capture is in time order, as ktrace and tcpdump write them.
///
/// Every reader is switched to wall-clock timestamps
/// ([`CaptureReader::set_wall_clock`]), since monotonic clocks of different
/// nodes do not compare. Items come out as `(index of the reader, item)`;
/// meta blocks and errors come out as soon as they are reached (they sort
/// at their reader's last record time). A reader that fails stops alone.
#[must_use]
pub fn merge_by_time(readers: Vec<CaptureReader>) -> MergeByTime {
    MergeByTime {
        heads: readers
            .into_iter()
            .map(|mut r| {
                r.set_wall_clock(true);
                Head { r, item: None, key: 0, done: false }
            })
            .collect(),
    }
}

impl MergeByTime {
    /// The readers, for their headers and stats.
    #[must_use]
    pub fn readers(&self) -> Vec<&CaptureReader> {
        self.heads.iter().map(|h| &h.r).collect()
    }
}

impl Iterator for MergeByTime {
    type Item = (usize, Result<Item, CaptureError>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(u64, usize)> = None;
        for (i, h) in self.heads.iter_mut().enumerate() {
            if h.item.is_none() && !h.done {
                match h.r.next() {
                    None => h.done = true,
                    Some(it) => {
                        if let Ok(Item::Record(r)) = &it {
                            h.key = r.ts_ns();
                        }
                        h.item = Some(it);
                    }
                }
            }
            if h.item.is_some() && best.is_none_or(|(k, _)| h.key < k) {
                best = Some((h.key, i));
            }
        }
        let (_, i) = best?;
        let item = self.heads.get_mut(i)?.item.take()?;
        Some((i, item))
    }
}
