//! Versioned cells: what each slot of the store's two tables holds, and how a guard finds the
//! version its snapshot sees.
//!
//! Invariant (the commit protocol, `Transaction::commit`; writers are serialised): commit `c`
//! 1. *installs* each new version `N` (born `c`, `N.older` = the version `O` it replaces) as
//!    its cell's head, a Release store, before
//! 2. *publishing* `c` (`committed = c`, SeqCst), and only then
//! 3. *retires* every replaced `O` (the commit's [`Garbage`], inside the grace probe it
//!    retires through the index table).
//!
//! A cell a commit inserts starts with a version born in that commit and no older one, and a
//! commit installs at most one version per cell. Every version is owned by exactly one of:
//! its cell's head, or (once replaced) its commit's garbage.
//!
//! A guard pins the tables, then reads `committed` as its snapshot `v` (SeqCst), then loads
//! heads (Acquire, pairing with the install's Release, so a version is seen whole, with its
//! `older` link). What it may dereference, and why it is alive:
//! - the head `X` it loads: if a later commit `c2` replaces `X`, the guard read a `committed`
//!   below `c2` (a guard that read `c2` loads `c2`'s head or a later one: the install happened
//!   before the publication it read), so it pinned before `X`'s retirement, which follows the
//!   publication of `c2`, in the reclaimer's order; an epoch reclaimer frees a retired value
//!   only once every guard pinned before the retirement is gone. A removed rule's head (a
//!   tombstone) stays until the sweep frees its slot through the engine, which protects it.
//! - `X.older`, only when `X.born > v`: replaced by `X` in commit `X.born` and retired after
//!   that commit was published, which the guard had not read: it pinned before the
//!   retirement. The same holds down the chain.
//!
//! Hence the `older` links a guard can no longer follow (every guard's snapshot is at least
//! the version's `born`) are left dangling but unused.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::sync::{AtomicPtr, Ordering};

/// What every version starts with: a tombstone is only this.
#[repr(C)]
struct Header {
    /// The commit that made this version visible, with [`TOMBSTONE`] set for a removal.
    stamp: u64,
    /// The version this one replaced in its cell, or null. Followed only by guards whose
    /// snapshot is older than this version.
    older: *const Header,
}

/// The bit of [`Header::stamp`] that marks a removal (a bare header, no value). Commit numbers
/// stay below it (`RuleStore::transaction` checks).
pub(crate) const TOMBSTONE: u64 = 1 << 63;

impl Header {
    fn born(&self) -> u64 {
        self.stamp & !TOMBSTONE
    }
    fn is_tombstone(&self) -> bool {
        self.stamp & TOMBSTONE != 0
    }
}

/// A version with a value; `repr(C)` so a pointer to it is a pointer to its header.
#[repr(C)]
struct Version<T> {
    header: Header,
    value: T,
}

/// Allocates a version born in `born` that replaced `older`: a bare header when `value` is
/// `None` (a tombstone).
fn allocate<T>(born: u64, older: *const Header, value: Option<T>) -> NonNull<Header> {
    debug_assert!(born < TOMBSTONE);
    match value {
        Some(value) => {
            NonNull::from(Box::leak(Box::new(Version { header: Header { stamp: born, older }, value })))
                .cast()
        }
        None => NonNull::from(Box::leak(Box::new(Header { stamp: born | TOMBSTONE, older }))),
    }
}

/// The value of the version at `header`.
///
/// # Safety
/// `header` points to a live version allocated by [`allocate`], for `T`, and stays alive for
/// `'a`.
unsafe fn value<'a, T>(header: NonNull<Header>) -> Option<&'a T> {
    // SAFETY: alive for `'a` (the caller); its header is its first field.
    let is_tombstone = unsafe { header.as_ref() }.is_tombstone();
    // SAFETY: not a tombstone, so `allocate` made it a whole `Version<T>` (same address,
    // `repr(C)`), and the pointer keeps that allocation's provenance.
    (!is_tombstone).then(|| unsafe { &header.cast::<Version<T>>().as_ref().value })
}

/// The owner of one version (any but a cell's head): a replaced version in a commit's garbage,
/// or a value taken back from a cell nobody else has seen.
pub(crate) struct Owned<T> {
    header: NonNull<Header>,
    _owns: PhantomData<Box<Version<T>>>,
}

// SAFETY: owns its version like a `Box<Version<T>>` does (the `older` pointer inside is never
// dereferenced through an `Owned`).
unsafe impl<T: Send> Send for Owned<T> {}
// SAFETY: shared access gives nothing but the pointer's identity.
unsafe impl<T: Sync> Sync for Owned<T> {}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        let raw = self.header.as_ptr();
        // SAFETY: from `allocate`, owned by `self` alone (module header): freed with the type
        // it was allocated as, which the tombstone bit tells.
        unsafe {
            if (*raw).is_tombstone() {
                drop(Box::from_raw(raw));
            } else {
                drop(Box::from_raw(raw.cast::<Version<T>>()));
            }
        }
    }
}

impl<T> Owned<T> {
    /// The value, moved out (`None` for a tombstone).
    fn into_value(self) -> Option<T> {
        let raw = self.header.as_ptr();
        std::mem::forget(self);
        // SAFETY: ownership moves out of the forgotten `self` (as in `Drop`).
        unsafe {
            if (*raw).is_tombstone() {
                drop(Box::from_raw(raw));
                None
            } else {
                Some(Box::from_raw(raw.cast::<Version<T>>()).value)
            }
        }
    }
}

/// A cell: the head of a chain of versions, newest first. What a slot of the store's tables
/// holds; the engine keeps it in place (a commit changes the head, never the slot's value).
pub(crate) struct Versioned<T> {
    head: AtomicPtr<Header>,
    _owns: PhantomData<Box<Version<T>>>,
}

// SAFETY: the cell owns its head version like a `Box`; a version moves between threads (made
// by a writer, dropped where the reclaimer runs), hence `T: Send`.
unsafe impl<T: Send> Send for Versioned<T> {}
// SAFETY: shared access hands out `&T` to readers (`T: Sync`) and lets the writer install
// versions made on its thread (`T: Send`).
unsafe impl<T: Send + Sync> Sync for Versioned<T> {}

impl<T> Drop for Versioned<T> {
    fn drop(&mut self) {
        // Acquire: pairs with `install`'s Release (the engine's drop also follows every
        // install through its own happens-before edges).
        let head = self.head.load(Ordering::Acquire);
        // SAFETY: the head is owned by the cell (module header); the older versions belong to
        // garbage.
        drop(Owned::<T> { header: unsafe { NonNull::new_unchecked(head) }, _owns: PhantomData });
    }
}

impl<T> Versioned<T> {
    /// A cell whose first version is born in commit `born` (`None`: a removed rule's slot, in
    /// a restored snapshot).
    pub(crate) fn new(born: u64, value: Option<T>) -> Self {
        Self { head: AtomicPtr::new(allocate(born, ptr::null(), value).as_ptr()), _owns: PhantomData }
    }

    fn head(&self) -> NonNull<Header> {
        // Acquire: pairs with `install`'s Release, so the version is seen whole.
        let head = self.head.load(Ordering::Acquire);
        // SAFETY: a cell's head is never null (`new`, `install`).
        unsafe { NonNull::new_unchecked(head) }
    }

    /// The newest version's value: what the writer sees (writers are serialised, and a
    /// commit installs before the next one starts).
    pub(crate) fn newest(&self) -> Option<&T> {
        // SAFETY: the head lives as long as the cell, or until a writer replaces it and
        // retires it; the caller is the writer, or holds it off (the writer lock).
        unsafe { value(self.head()) }
    }

    /// Step 1 of a commit: makes a version born in `born` holding `value` (`None`: a removal)
    /// the head, and returns the replaced head, which the commit must retire after
    /// publishing `born` (see the module header).
    ///
    /// Only the writer installs (under its lock), at most once per cell and commit.
    pub(crate) fn install(&self, born: u64, value: Option<T>) -> Owned<T> {
        let old = self.head();
        // SAFETY: the writer's own head, alive while it holds the lock.
        debug_assert!(unsafe { old.as_ref() }.born() < born, "installed twice in one commit");
        let new = allocate(born, old.as_ptr().cast_const(), value);
        // Release: pairs with the Acquire loads of `head`, so a guard that loads `new` sees it
        // (and the versions it links to) whole.
        self.head.store(new.as_ptr(), Ordering::Release);
        Owned { header: old, _owns: PhantomData }
    }

    /// The value in a cell nobody else has seen (an add that found the store full).
    pub(crate) fn into_value(self) -> Option<T> {
        let head = self.head();
        std::mem::forget(self);
        Owned::<T> { header: head, _owns: PhantomData }.into_value()
    }

    /// The value snapshot `v` sees in this cell.
    ///
    /// # Safety
    /// `self` was read from its slot under a guard of its table, and the caller holds a guard
    /// of the index table (through which replaced versions are retired), both still alive and
    /// pinned before `v` was loaded from the store's `committed` (SeqCst); the cell's versions
    /// follow the commit protocol of the module header.
    pub(crate) unsafe fn at(&self, v: u64) -> Option<&T> {
        let mut version = self.head();
        loop {
            // SAFETY: kept alive by the caller's guard (module header, first and second items).
            let header = unsafe { version.as_ref() };
            if header.born() <= v {
                // SAFETY: as just above, for the guard's lifetime, which bounds `&self`.
                return unsafe { value(version) };
            }
            version = NonNull::new(header.older.cast_mut())?;
        }
    }
}
