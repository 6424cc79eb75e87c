//! One slot: a version, a link word, a value pointer and the inline value.
//!
//! Invariant (the version protocol): a slot's `version` is odd exactly while it holds a live
//! value, and a key `(index, v)` is live exactly while `version == v`. Versions only grow: an
//! insert moves `2n -> 2n+1`, a remove `2n+1 -> 2n+2`, so a key, once dead, never matches
//! again. The remove from `u32::MAX` wraps to 0 and the slot is retired for good (it is never
//! put back on the free list, see `retire.rs`). Version 0 means exactly that: fresh slots start
//! at `FRESH_VERSION` (2) or above, so a snapshot can tell a retired slot from a fresh one.
//!
//! While the slot is live, `value` points either at the slot's own inline storage (the value
//! `insert` wrote) or at a boxed [`Retired`] node holding a replacement (`replace`/`update`).
//! Whatever `value` points at stays valid until a grace period after it stopped being
//! reachable; only then is it dropped and the slot recycled.

use std::mem::MaybeUninit;

use crate::sync::{AtomicPtr, AtomicU32, Cell, Ordering};

/// The version of a slot that was never used (the first key of a slot has version 3). 0 is
/// kept for retired slots.
pub(crate) const FRESH_VERSION: u32 = 2;
/// End of a chain of slot links (free list, removed stacks). Indexes stay below it.
pub(crate) const NIL: u32 = 0x3FFF_FFFF;
/// The link bits of `Slot::aux`.
pub(crate) const LINK_MASK: u32 = 0x3FFF_FFFF;
/// `Slot::aux` flag: the inline value was replaced and its deferred drop has not run yet.
pub(crate) const INLINE_PENDING: u32 = 1 << 31;
/// `Slot::aux` flag: the slot's own recycling ran while `INLINE_PENDING` was still set, so
/// whoever clears `INLINE_PENDING` finishes the recycling.
pub(crate) const RECYCLE_WAITING: u32 = 1 << 30;

/// A slot of a page. 16 bytes of bookkeeping before the value (for values aligned to 8 or
/// less).
#[repr(C)]
pub(crate) struct Slot<V> {
    /// Odd = occupied. See the module invariant.
    pub(crate) version: AtomicU32,
    /// Low 30 bits: link to the next slot in the free list or in a removed stack.
    /// High 2 bits: `INLINE_PENDING`, `RECYCLE_WAITING`.
    pub(crate) aux: AtomicU32,
    /// Where the live value is: the inline storage, a boxed replacement, or null when none.
    pub(crate) value: AtomicPtr<V>,
    /// Inline storage for the value `insert` wrote.
    inline: Cell<MaybeUninit<V>>,
}

impl<V> Slot<V> {
    pub(crate) fn new(version: u32) -> Self {
        Self {
            version: AtomicU32::new(version),
            aux: AtomicU32::new(NIL),
            value: AtomicPtr::new(std::ptr::null_mut()),
            inline: Cell::new(MaybeUninit::uninit()),
        }
    }

    /// The address of the inline storage, for writing into it.
    #[inline(always)]
    pub(crate) fn inline_mut(&self) -> *mut V {
        self.inline.ptr_mut().cast::<V>()
    }

    /// Whether `ptr`, a value pointer this slot held, is the slot's inline storage (rather
    /// than a boxed node). An exact comparison of addresses: a range check on the slot's
    /// bytes would misjudge a zero-sized value, whose storage ends the slot. (Under loom,
    /// taking the storage's address is a tracked read, so a recycler asking this while a
    /// note's runner drops the inline value in another thread is reported as a race
    /// although it reads nothing; see docs/loom.md.)
    #[inline(always)]
    pub(crate) fn holds_inline(&self, ptr: *const V) -> bool {
        std::ptr::eq(ptr, self.inline.ptr().cast::<V>())
    }

    /// The reader's check: the value of key version `version`, if that key is live.
    ///
    /// The caller must be pinned in the map's domain for the returned pointer to stay
    /// dereferenceable (see `read` in `map.rs`).
    #[inline(always)]
    pub(crate) fn load_live(&self, version: u32) -> Option<*const V> {
        // An even version names a vacant slot: no key of ours has one (slotmap's `KeyData`
        // forces odd versions, but do not rely on another crate for memory safety).
        if version & 1 == 0 && !crate::mutant::active("no_version_check") {
            return None;
        }
        // Acquire pairs with the Release store of `version` in `insert` (which publishes
        // the inline value and the `value` pointer written before it).
        if self.version.load(Ordering::Acquire) != version && !crate::mutant::active("no_version_check") {
            return None;
        }
        // Acquire pairs with the Release CAS in `replace`/`update` that published a boxed
        // replacement, so its contents are visible.
        let ptr = self.value.load(Ordering::Acquire);
        // The value word of a live slot is never null: `insert` stores it before the Release
        // store that makes the version live (the Acquire load above saw that store, or a later
        // one), `replace`/`update` only put node pointers in, and it goes back to null only in
        // `take_value_word`, on a dead slot whose grace period has passed (which our pin
        // holds back) or under `&mut`. Telling the compiler spares the reader a test.
        debug_assert!(!ptr.is_null(), "a live slot's value word is null");
        // SAFETY: the invariant just stated.
        unsafe { std::hint::assert_unchecked(!ptr.is_null()) };
        Some(ptr.cast_const())
    }
}

impl<V> Slot<V> {
    /// The slot's version and, if that version is live, its value, read consistently (the
    /// version again if the slot changed between the two loads).
    ///
    /// The caller is pinned in the slot's map while it holds the value (a snapshot or a clone
    /// through a guard).
    pub(crate) fn read_whole(&self) -> (u32, Option<&V>) {
        loop {
            // Acquire pairs with insert's Release version store (the value is published by it).
            let version = self.version.load(Ordering::Acquire);
            if version & 1 == 0 {
                return (version, None);
            }
            if let Some(ptr) = self.load_live(version) {
                // SAFETY: the version was live while the caller pins the domain, so the value
                // cannot be dropped before the pin goes, and the reference borrows the slot,
                // which the caller's pin keeps (as in `Guard::get`).
                return (version, Some(unsafe { &*ptr }));
            }
            // The slot changed between the two loads: read it again.
        }
    }
}

/// A value that lives outside its slot: a replacement written by `replace`/`update`, or (with
/// `inline_of` set and `value` uninitialised) the note that slot `inline_of`'s inline value
/// was replaced and must be dropped after a grace period.
///
/// `value` is the first field of a `repr(C)` struct, so a `*mut V` to it is also a pointer to
/// the node; the slot's `value` pointer is stored as that `*mut V`.
#[repr(C)]
pub(crate) struct Retired<V> {
    pub(crate) value: MaybeUninit<V>,
    /// Next node in the replaced stack or in a batch (written before the node is published).
    pub(crate) next: *mut Retired<V>,
    /// `NIL`, or the slot whose inline value this node stands for.
    pub(crate) inline_of: u32,
}

impl<V> Retired<V> {
    /// A heap node holding `value`; the returned pointer is also a `*mut V` to the value.
    pub(crate) fn boxed(value: V) -> *mut Retired<V> {
        Box::into_raw(Box::new(Retired {
            value: MaybeUninit::new(value),
            next: std::ptr::null_mut(),
            inline_of: NIL,
        }))
    }

    /// A heap node standing for slot `index`'s replaced inline value.
    pub(crate) fn inline_note(index: u32) -> *mut Retired<V> {
        Box::into_raw(Box::new(Retired {
            value: MaybeUninit::uninit(),
            next: std::ptr::null_mut(),
            inline_of: index,
        }))
    }
}
