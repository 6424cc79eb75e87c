//! A global allocator that counts the bytes in use, shared by the benchmark report, the rule
//! store's service example and the engine's memory test (each includes this file with
//! `#[path]` and installs it with `#[global_allocator]`).
//!
//! Invariant: every call is forwarded to `System` unchanged; the count is the sum of the sizes
//! of the live allocations of the whole process (Relaxed: a statistic read between phases).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The allocator: `#[global_allocator] static GLOBAL: Counting = Counting;`.
pub struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes allocated and not yet freed, in the whole process.
pub fn in_use() -> isize {
    IN_USE.load(Ordering::Relaxed)
}
