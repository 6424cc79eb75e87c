//! Free lists: tagged Treiber stacks of vacant slot indexes, linked through `Slot::aux`, one
//! per page in each shard.
//!
//! Invariant: a slot is on a free list only when it is vacant, its value has been dropped and
//! no reader can still see it (it got here through a grace period, or was never published),
//! and it is on at most one list: the list of its own page, in one shard. Popping gives the
//! caller exclusive ownership of the slot until it publishes a new version.
//!
//! ABA: a head word packs a 32-bit tag with the index, and every successful push or pop bumps
//! the tag. A pop that read `head = (t, a)` and `a.next = b` can only install `b` if the head
//! is still `(t, a)`; any pop or push in between changed `t`, so a stale `b` (because `a` was
//! popped, reused and pushed back with another successor) is never installed. Reading
//! `a.next` after `a` was popped by someone else is harmless: the link is an atomic, and pops
//! run pinned, so even if `shrink_to_fit` took the list meanwhile and released `a`'s page, the
//! page's memory outlives the pop (its free is deferred through the domain). Pops made under
//! the growth lock need no pin: `shrink_to_fit` takes lists and releases pages only while it
//! holds that lock.
//!
//! `take_all` (used by `shrink_to_fit`) empties a list in one tagged swap: every pop that read
//! the old head then fails its CAS, so the taker owns the whole chain.
//!
//! The `nonempty` hint of a [`PagedFreeList`] has bit `p` set whenever list `p` is non-empty
//! (it may also be set for an empty list). Pushers set the bit with an RMW after their push;
//! a popper that finds list `p` empty clears the bit with an RMW and then looks at the list
//! again, restoring the bit if a push landed: of the pusher's set and the popper's clear, the
//! later one in the word's modification order either leaves the bit set or read the earlier
//! one, which makes the push visible to the popper's second look. So a slot on a list is never
//! hidden from poppers.

use crate::page::{PAGES, PageTable};
use crate::slot::{LINK_MASK, NIL, Slot};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// One tagged stack.
pub(crate) struct FreeList {
    /// `(tag << 32) | index`, index `NIL` when empty.
    head: AtomicU64,
}

/// The tag after a successful push or pop.
#[inline(always)]
fn bump(head: u64) -> u32 {
    // Mutant for the loom suite: a constant tag reopens the ABA window.
    if crate::mutant::active("untagged_free_list") {
        (head >> 32) as u32
    } else {
        ((head >> 32) as u32).wrapping_add(1)
    }
}

#[inline(always)]
fn pack(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

impl FreeList {
    pub(crate) fn new() -> Self {
        Self { head: AtomicU64::new(pack(0, NIL)) }
    }

    /// Pushes the chain `first ..= last`, already linked through `aux` from `first` to
    /// `last`, all of whose slots the caller owns.
    fn push_chain<V>(&self, pages: &PageTable<V>, first: u32, last: u32) {
        let last_slot = pages.slot(last).expect("free-list push of a slot outside every page");
        // Relaxed: the CAS below re-validates the value.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below. Clears the flag bits too: a slot
            // reaches a free list only after both its drops ran (see `retire.rs`).
            last_slot.aux.store(head as u32 & LINK_MASK, Ordering::Relaxed);
            // Release pairs with the Acquire load/CAS in `pop`: the popper sees the links and
            // everything the pusher did to the slots (the values' drops) before reusing them.
            match self.head.compare_exchange_weak(
                head,
                pack(bump(head), first),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Empties the list and returns the index of its first slot (`NIL` if it was empty); the
    /// caller owns the whole chain.
    fn take_all(&self) -> u32 {
        // Acquire pairs with the Release CAS of every push (their links and slot contents);
        // Release is not needed: nothing is published.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            if head as u32 == NIL {
                return NIL;
            }
            // Acquire: as above.
            match self.head.compare_exchange_weak(
                head,
                pack(bump(head), NIL),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return head as u32,
                Err(actual) => head = actual,
            }
        }
    }

    /// Whether the list is empty now (Acquire: a push seen here is visible with its links).
    #[inline(always)]
    fn is_empty(&self) -> bool {
        // Acquire pairs with the Release CAS in `push_chain`.
        self.head.load(Ordering::Acquire) as u32 == NIL
    }

    /// Pops a vacant slot (its index and the slot), or `None` if the list is empty. Call it
    /// pinned or under the growth lock (see the header); the slot is the caller's from then on,
    /// which keeps its page after the pin is gone.
    #[inline(always)]
    fn pop<'p, V>(&self, pages: &'p PageTable<V>) -> Option<(u32, &'p Slot<V>)> {
        // Acquire pairs with the Release CAS in `push_chain`.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = head as u32;
            if index == NIL {
                return None;
            }
            let Some(slot) = pages.slot_by_bias(index) else {
                // `take_all` took the list and the page is going or gone: the head has
                // changed. (Not a page still being installed: its installer sets the biased
                // base before it pushes any slot, and our Acquire load of the head
                // synchronised with that push.)
                // Acquire: as above.
                head = self.head.load(Ordering::Acquire);
                continue;
            };
            // Relaxed: this thread synchronised with the push of `index` through the
            // Acquire above; if `index` was popped and pushed again since, the tag makes the
            // CAS fail and the link is re-read.
            let new = pack(bump(head), slot.aux.load(Ordering::Relaxed) & LINK_MASK);
            // Acquire (both ways): as for the first load.
            match self.head.compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return Some((index, slot)),
                Err(actual) => head = actual,
            }
        }
    }
}

/// A free list per page, with a hint of which are non-empty (see the header). Poppers take
/// from the lowest page first, so the low pages fill up and high ones drain, where
/// `shrink_to_fit` can give them back.
pub(crate) struct PagedFreeList {
    lists: [FreeList; PAGES],
    /// Bit `p` set while list `p` may be non-empty (see the header).
    nonempty: AtomicU32,
}

impl PagedFreeList {
    pub(crate) fn new() -> Self {
        Self { lists: std::array::from_fn(|_| FreeList::new()), nonempty: AtomicU32::new(0) }
    }

    /// Pushes the chain `first ..= last` of slots of page `page`, already linked through
    /// `aux` from `first` to `last`, all of whose slots the caller owns.
    pub(crate) fn push_chain<V>(&self, pages: &PageTable<V>, page: usize, first: u32, last: u32) {
        self.lists[page].push_chain(pages, first, last);
        // AcqRel: the hint handshake of the header (after the push, always an RMW).
        self.nonempty.fetch_or(1 << page, Ordering::AcqRel);
    }

    /// Pushes slot `index` of page `page`, which the caller owns.
    pub(crate) fn push<V>(&self, pages: &PageTable<V>, page: usize, index: u32) {
        self.push_chain(pages, page, index, index);
    }

    /// Empties list `page` and returns its first slot (`NIL` if empty); the caller owns the
    /// chain. The hint is left alone (a set bit over an empty list is allowed).
    pub(crate) fn take_page(&self, page: usize) -> u32 {
        self.lists[page].take_all()
    }

    /// Pops a vacant slot from the lowest non-empty page, or `None` if every list is empty.
    /// Call it pinned or under the growth lock (see `FreeList::pop`).
    #[inline(always)]
    pub(crate) fn pop<'p, V>(&self, pages: &'p PageTable<V>) -> Option<(u32, &'p Slot<V>)> {
        // Acquire pairs with the pushers' AcqRel `fetch_or` (after their push).
        let mut hint = self.nonempty.load(Ordering::Acquire);
        while hint != 0 {
            let page = hint.trailing_zeros() as usize;
            // SAFETY: `hint` has bits only below `PAGES` (pushers set bit `page < PAGES`).
            let list = unsafe { self.lists.get_unchecked(page) };
            if let Some(popped) = list.pop(pages) {
                return Some(popped);
            }
            hint = self.mark_empty(page);
        }
        None
    }

    /// List `page` was found empty: clears its bit, then looks again (see the header).
    /// Returns the hint to continue with.
    #[cold]
    fn mark_empty(&self, page: usize) -> u32 {
        let bit = 1u32 << page;
        // AcqRel: the handshake of the header; Acquire reads from a pusher's `fetch_or` that
        // came before ours, which makes its push visible to the look below.
        let hint = self.nonempty.fetch_and(!bit, Ordering::AcqRel) & !bit;
        // Mutant for the loom suite: clear the bit without looking again.
        if !crate::mutant::active("hint_without_recheck") && !self.lists[page].is_empty() {
            // AcqRel: as above.
            return self.nonempty.fetch_or(bit, Ordering::AcqRel) | bit;
        }
        hint
    }
}
