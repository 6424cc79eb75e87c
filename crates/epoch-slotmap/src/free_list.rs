//! The free list: a Treiber stack of vacant slot indexes, linked through `Slot::aux`.
//!
//! Invariant: a slot is on the free list only when it is vacant, its value has been dropped
//! and no reader can still see it (it got here through a grace period, or was never
//! published). Popping gives the caller exclusive ownership of the slot until it publishes a
//! new version.
//!
//! ABA: the head word packs a 32-bit tag with the index, and every successful push or pop
//! bumps the tag. A pop that read `head = (t, a)` and `a.next = b` can only install `b` if the
//! head is still `(t, a)`; any pop or push in between changed `t`, so a stale `b` (because `a`
//! was popped, reused and pushed back with another successor) is never installed. Reading
//! `a.next` after `a` was popped by someone else is harmless: the link is an atomic, and pops
//! run pinned, so even if `shrink_to_fit` took the whole list meanwhile and released `a`'s
//! page, the page's memory outlives the pop (its free is deferred through the domain).
//!
//! `take_all` (used by `shrink_to_fit`) empties the list in one tagged swap: every pop that
//! read the old head then fails its CAS, so the taker owns the whole chain.

use crate::page::PageTable;
use crate::slot::{LINK_MASK, NIL, Slot};
use crate::sync::{AtomicU64, Ordering};

pub(crate) struct FreeList {
    /// `(tag << 32) | index`, index `NIL` when empty.
    head: AtomicU64,
}

/// The tag after a successful push or pop.
#[inline(always)]
fn bump(head: u64) -> u32 {
    // Mutant for the loom suite: a constant tag reopens the ABA window.
    if cfg!(epoch_slotmap_mutant = "untagged_free_list") {
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

    /// Pushes slot `index`, which the caller owns exclusively (see the invariant).
    pub(crate) fn push<V>(&self, pages: &PageTable<V>, index: u32) {
        let slot = pages.slot(index).expect("free-list push of a slot outside every page");
        // Relaxed: the CAS below re-validates the value.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below. Clears the flag bits too: a slot
            // reaches the free list only after both its drops ran (see `retire.rs`).
            slot.aux.store(head as u32 & LINK_MASK, Ordering::Relaxed);
            let new = pack(bump(head), index);
            // Release pairs with the Acquire load/CAS in `pop`: the popper sees the link and
            // everything the recycler did to the slot (the value's drop) before reusing it.
            match self.head.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Pushes the chain `first ..= last`, already linked through `aux` from `first` to
    /// `last`, all of whose slots the caller owns.
    pub(crate) fn push_chain<V>(&self, pages: &PageTable<V>, first: u32, last: u32) {
        let last_slot = pages.slot(last).expect("free-list push of a slot outside every page");
        // Relaxed: the CAS below re-validates the value.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below, as in `push`.
            last_slot.aux.store(head as u32 & LINK_MASK, Ordering::Relaxed);
            // Release pairs with the Acquire load/CAS in `pop`, as in `push`.
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
    pub(crate) fn take_all(&self) -> u32 {
        // Acquire pairs with the Release CAS of every push (their links and slot contents);
        // Release is not needed: nothing is published.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
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

    /// Pops a vacant slot (its index and the slot), or `None` if the list is empty. Call it
    /// pinned (see the header); the slot is the caller's from then on, which keeps its page
    /// after the pin is gone.
    #[inline(always)]
    pub(crate) fn pop<'p, V>(&self, pages: &'p PageTable<V>) -> Option<(u32, &'p Slot<V>)> {
        // Acquire pairs with the Release CAS in `push`.
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
