//! The one place that decides where atomics, cells, locks and thread-locals come from.
//!
//! Invariant: no other module names `std::sync::atomic`, `std::cell::UnsafeCell`,
//! `std::thread_local!` or `loom` directly, except `domain/epoch.rs`'s `MRU`: a thread-private copy
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
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize},
    thread::yield_now,
    thread_local,
};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize},
    thread::yield_now,
    thread_local,
};

/// A lock for the map's rare serialised paths (installing and releasing pages, `reclaim`):
/// std's or loom's `Mutex`, taken even when poisoned (it guards `()`, and what it serialises
/// is left consistent by every panic point).
///
/// Under loom, mind that loom's `Mutex` wraps a std `Mutex` and that all model threads run
/// on one OS thread: a panic unwinding in one model thread poisons a lock that another model
/// thread releases meanwhile, and loom's own `lock` then panics. A scenario that panics on
/// purpose must leave the other threads no reason to take a lock (see the loom suite's
/// panicking-insert scenario).
#[derive(Debug, Default)]
pub(crate) struct Lock {
    #[cfg(not(loom))]
    inner: std::sync::Mutex<()>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<()>,
}

/// Holds a [`Lock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub(crate) struct LockGuard<'a> {
    #[cfg(not(loom))]
    _inner: std::sync::MutexGuard<'a, ()>,
    #[cfg(loom)]
    _inner: loom::sync::MutexGuard<'a, ()>,
}

impl Lock {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Blocks until this thread holds the lock.
    pub(crate) fn lock(&self) -> LockGuard<'_> {
        LockGuard { _inner: self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) }
    }
}

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
