//! The one place that decides where atomics, cells, locks and thread-locals come from.
//!
//! Invariant: no other module names `std::sync::atomic`, `std::cell::UnsafeCell`,
//! `std::thread_local!` or `loom` directly, except `domain.rs`'s `MRU`: a thread-private copy
//! of a cache entry that shares no memory between threads and does not exist under loom. Under
//! `--cfg loom` everything here is loom's, so a loom model (ours in `loom-tests/`, or a
//! downstream crate's) sees every access the map makes.

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "epoch-slotmap: `--cfg loom` needs `--cfg crossbeam_loom` too, or loom cannot see \
     crossbeam-epoch's synchronisation. Use RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\"."
);
#[cfg(all(crossbeam_loom, not(loom)))]
compile_error!(
    "epoch-slotmap: `--cfg crossbeam_loom` without `--cfg loom` mixes loom and std atomics. \
     Use RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\"."
);

#[cfg(loom)]
pub(crate) use loom::{
    sync::Mutex,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize},
    thread::yield_now,
    thread_local,
};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::{
    sync::Mutex,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize},
    thread::yield_now,
    thread_local,
};

/// Interior-mutable storage whose raw accesses loom can check.
///
/// `ptr_mut`/`ptr` hand out the address of the contents; under loom each call is recorded
/// as a write/read access at that moment, which is where a missing happens-before edge shows
/// up as a causality violation.
#[derive(Debug)]
pub(crate) struct Cell<T> {
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))]
    inner: std::cell::UnsafeCell<T>,
}

impl<T> Cell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(value),
            #[cfg(not(loom))]
            inner: std::cell::UnsafeCell::new(value),
        }
    }

    /// The address of the contents, for writing.
    #[inline(always)]
    pub(crate) fn ptr_mut(&self) -> *mut T {
        #[cfg(loom)]
        return self.inner.with_mut(|p| p);
        #[cfg(not(loom))]
        return self.inner.get();
    }

    /// The address of the contents, for reading.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> *const T {
        #[cfg(loom)]
        return self.inner.with(|p| p);
        #[cfg(not(loom))]
        return self.inner.get();
    }
}

/// Keeps a value on its own cache line (and the adjacent-line prefetcher's pair), so counters
/// that writers update never share a line with what readers load.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
