//! A counting allocator, for measurements of heap bytes per item (bench
//! examples, memory tests). A binary installs it with
//! `#[global_allocator] static A: Counting = Counting;` and reads [`live`]
//! before and after building what it measures.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

/// Live heap bytes (allocated minus freed) through [`Counting`].
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting the bytes it hands out and takes back.
#[derive(Debug)]
pub struct Counting;

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `System.alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `dealloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

/// Heap bytes live now (0 when [`Counting`] is not the global allocator).
#[must_use]
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}
