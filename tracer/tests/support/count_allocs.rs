//! A global allocator that counts allocation calls, for the tests that
//! bound allocations per query (`#[path]`-included: each test binary gets
//! its own counter).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicU64, Ordering},
};

/// Allocation calls (`alloc` and `realloc`) since the start.
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Allocation calls so far.
pub(crate) fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

struct CountCalls;

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for CountCalls {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: CountCalls = CountCalls;
