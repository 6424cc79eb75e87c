//! Versioned cells: what each slot of the store's two tables holds, and how a guard finds the
//! version its snapshot sees.
//!
//! Invariant (the commit protocol, `RuleStore::commit`; writers are serialised): commit `c`
//! 1. *stages* each replacing version `N` (born `c`) on the version `O` it replaces:
//!    `O.newer = N`, a Release store, before
//! 2. *publishing* `c` (`committed = c`, SeqCst), and only then
//! 3. *installs* `N` in the slot, which retires `O` to the engine; `N.older` is `O`.
//!
//! A version born in a commit that was never published (an aborted transaction's adds) is
//! never staged on another version, and its slot is removed before the next commit.
//!
//! A guard pins the tables, then reads `committed` as its snapshot `v` (SeqCst), then reads
//! slots. What it may dereference, and why it is alive:
//! - the slot's current version `X`: the engine guard keeps it.
//! - `X.older`, only when `X.born > v`: `X.older` was retired when `X` was installed, after
//!   `X.born` was published. A guard that read a `committed` older than `X.born` has pinned
//!   before that retirement in the reclaimer's order (an epoch reclaimer frees a retired value
//!   only once every guard that could have read the state before its retirement is gone, and
//!   the old `committed` is such state), so it keeps `X.older`. The same holds down the chain.
//! - `X.newer` (its `born` always, the rest only when `born <= v`): until it is installed the
//!   writer owns it and does not free it. Once installed, it is retired either at a later
//!   commit `c2`, after `c2` was published (a guard that still reads `X` from the slot read a
//!   `committed` below `c2`, so it keeps `X.newer` as above), or, for a tombstone, by the
//!   sweep that frees the slot. The guard read `X` from the slot before `X.newer` was
//!   installed (coherence), and the install happens before the sweep's retirement, so the
//!   guard's pin precedes that retirement in the reclaimer's order and it keeps `X.newer`.
//!
//! Hence a guard never follows more than one `newer` link (a guard that read `committed >= c2`
//! finds `X.newer` or a later version in the slot, because the install of commit `c` happened
//! before `c2` was published), and the `older`/`newer` pointers a guard can no longer follow
//! are left dangling but unused.

use std::ptr::{self, NonNull};

use crate::sync::{AtomicPtr, Ordering};

/// One version of a cell's value.
pub(crate) struct Version<T> {
    /// The commit that made this version visible.
    born: u64,
    /// The version this one replaced in its slot (retired when this one was installed), or
    /// null. Followed only by guards whose snapshot is older than `born`.
    older: *const Version<T>,
    /// The version that replaces this one, staged just before its commit was published; null
    /// while none is.
    newer: AtomicPtr<Version<T>>,
    /// The value; `None` for a removal (a tombstone).
    payload: Option<T>,
}

/// The owner of a boxed [`Version`]: what a slot holds. A raw pointer rather than a `Box`, so
/// the `older`/`newer` pointers other versions keep to it stay valid when it moves into and
/// out of the engine (a `Box` asserts unique access when it moves).
pub(crate) struct VersionPtr<T>(NonNull<Version<T>>);

// SAFETY: a `VersionPtr` owns its `Version` like a `Box` does; the raw pointers inside are only
// dereferenced under the protocol above, and point to versions of the same `T`.
unsafe impl<T: Send> Send for VersionPtr<T> {}
// SAFETY: shared access hands out `&T` (hence `T: Sync`) and loads of the atomic `newer`.
unsafe impl<T: Sync> Sync for VersionPtr<T> {}

impl<T> Drop for VersionPtr<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `boxed`, and this is its one owner.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl<T> VersionPtr<T> {
    /// A version born in commit `born`, replacing nothing.
    pub(crate) fn new(born: u64, payload: Option<T>) -> Self {
        Self::boxed(Version { born, older: ptr::null(), newer: AtomicPtr::new(ptr::null_mut()), payload })
    }

    /// A version born in commit `born` that will replace `older` (see [`stage`](Self::stage)).
    pub(crate) fn replacing(born: u64, older: &VersionPtr<T>, payload: Option<T>) -> Self {
        Self::boxed(Version {
            born,
            older: older.0.as_ptr(),
            newer: AtomicPtr::new(ptr::null_mut()),
            payload,
        })
    }

    fn boxed(version: Version<T>) -> Self {
        Self(NonNull::from(Box::leak(Box::new(version))))
    }

    fn version(&self) -> &Version<T> {
        // SAFETY: owned by `self` (see `Drop`), so alive while `self` is borrowed.
        unsafe { self.0.as_ref() }
    }

    /// The newest version's value: what the writer sees (writers are serialised and every
    /// commit is installed before the next one starts).
    pub(crate) fn newest(&self) -> Option<&T> {
        self.version().payload.as_ref()
    }

    /// Takes the value back out of a version nobody else has seen.
    pub(crate) fn into_payload(self) -> Option<T> {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        // SAFETY: from `Box::leak` in `boxed`; ownership moves out of the forgotten `self`.
        unsafe { Box::from_raw(raw) }.payload
    }

    /// Step 1 of a commit: makes `newer` findable from `self` (the slot's current version)
    /// before the commit is published.
    ///
    /// The writer must then publish `newer`'s commit and install `newer` in this slot without
    /// dropping it in between (see the module header).
    pub(crate) fn stage(&self, newer: &VersionPtr<T>) {
        // Relaxed: only the writer (under its lock) stores `newer`.
        debug_assert!(self.version().newer.load(Ordering::Relaxed).is_null(), "staged twice");
        debug_assert!(newer.version().older == self.0.as_ptr().cast_const());
        // Release: pairs with the Acquire load in `at`, so a guard that finds `newer` sees it
        // whole.
        self.version().newer.store(newer.0.as_ptr(), Ordering::Release);
    }

    /// The value snapshot `v` sees in this slot, `self` being the slot's current version.
    ///
    /// # Safety
    /// `self` was read from its slot under an engine guard that is still alive and was pinned
    /// before `v` was loaded from the store's `committed` (SeqCst), and the slot's versions
    /// follow the commit protocol of the module header.
    pub(crate) unsafe fn at(&self, v: u64) -> Option<&T> {
        let mut version = self.version();
        if version.born > v {
            loop {
                if version.older.is_null() {
                    return None;
                }
                // SAFETY: `version.born > v`, so `older` is kept alive by the caller's guard
                // (module header, second item).
                version = unsafe { &*version.older };
                if version.born <= v {
                    break;
                }
            }
        } else {
            // Acquire: pairs with the Release store in `stage`.
            let newer = version.newer.load(Ordering::Acquire);
            // SAFETY: a staged version is alive while the slot (or a guard of this snapshot
            // age) can reach its predecessor (module header, third item); `born` is read only.
            if !newer.is_null() && unsafe { (*newer).born } <= v {
                // SAFETY: as just above.
                version = unsafe { &*newer };
            }
        }
        version.payload.as_ref()
    }
}
