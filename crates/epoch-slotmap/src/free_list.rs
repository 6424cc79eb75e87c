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
//! `a.next` after `a` was popped by someone else is harmless: the link is an atomic and pages
//! never move or go away while the map lives.

use crate::page::PageTable;
use crate::slot::{LINK_MASK, NIL};
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

    /// Pops a vacant slot, or `None` if the list is empty.
    pub(crate) fn pop<V>(&self, pages: &PageTable<V>) -> Option<u32> {
        // Acquire pairs with the Release CAS in `push`.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = head as u32;
            if index == NIL {
                return None;
            }
            let slot = pages.slot(index)?;
            // Relaxed: this thread synchronised with the push of `index` through the
            // Acquire above; if `index` was popped and pushed again since, the tag makes the
            // CAS fail and the link is re-read.
            let new = pack(bump(head), slot.aux.load(Ordering::Relaxed) & LINK_MASK);
            // Acquire (both ways): as for the first load.
            match self.head.compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return Some(index),
                Err(actual) => head = actual,
            }
        }
    }
}
