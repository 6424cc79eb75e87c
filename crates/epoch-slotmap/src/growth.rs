//! Growth and release of pages: the only code that installs or unpublishes a page.
//!
//! Invariants:
//! - A slot is handed out only through the free list. A page is installed whole when an
//!   insert finds the free list empty (the lowest missing page first, so released pages are
//!   reused before the table grows); the installer owns all of its slots, keeps one if it
//!   asked to, and pushes the rest as one chain.
//! - `shrink_to_fit` runs under the map's reclaim lock (one releaser at a time). It takes the
//!   whole free list (`FreeList::take_all`), so it owns every vacant, recycled slot; a page
//!   all of whose usable slots are in that chain has no live, pending or retired slot and no
//!   slot anyone else can reach for writing. Such a page (never page 0) is unpublished with
//!   its version watermark (`PageTable::release`) and freed through the domain after a grace
//!   period; the rest of the chain goes back on the free list.
//! - Every access to a slot of a page that might be released is pinned (reads, `unlink`,
//!   `contains_key`, free-list pops), or is to a slot the accessor owns.

use crate::domain::Domain;
use crate::page::{PAGES, locate, page_start};
use crate::retire::Shared;
#[cfg(feature = "serde")]
use crate::slot::Slot;
use crate::slot::{LINK_MASK, NIL};
use crate::sync::{AtomicUsize, Ordering};

/// What `Shared::grow` did.
pub(crate) enum Grow {
    /// Installed a page; the caller owns this slot of it.
    Installed(u32),
    /// Another thread installed the page first.
    Lost,
    /// Every page the limit allows exists.
    Full,
}

impl<V> Shared<V> {
    /// Installs the lowest missing page and keeps its first slot for the caller.
    pub(crate) fn grow(&self) -> Grow {
        let Some(page) = (0..PAGES).find(|&p| self.pages.len_of(p) > 0 && !self.pages.exists(p)) else {
            return Grow::Full;
        };
        match self.install_page(page, true) {
            Some(index) => Grow::Installed(index),
            None => Grow::Lost,
        }
    }

    /// Installs `page` and pushes its usable slots on the free list (all of them, or all but
    /// the first, which is returned, when `keep_first`). `None` if the page already existed.
    pub(crate) fn install_page(&self, page: usize, keep_first: bool) -> Option<u32> {
        let slots = self.pages.install(page)?;
        let start = page_start(page) as u32;
        let usable = self.pages.len_of(page) as u32;
        // Relaxed: a statistic.
        self.counters.capacity.fetch_add(usable as usize, Ordering::Relaxed);
        let first = if keep_first { start + 1 } else { start };
        let last = start + usable - 1;
        if first <= last {
            for index in first..last {
                // Relaxed: published by the Release CAS in `push_chain`.
                slots[(index - start) as usize].aux.store(index + 1, Ordering::Relaxed);
            }
            self.free.push_chain(&self.pages, first, last);
        }
        keep_first.then_some(start)
    }

    /// Installs `page` in a map no other thread can reach yet (restoring a snapshot) and
    /// returns its slots, all owned by the caller and none on the free list; `None` if the
    /// page exists already.
    #[cfg(feature = "serde")]
    pub(crate) fn restore_page(&self, page: usize) -> Option<&[Slot<V>]> {
        let slots = self.pages.install(page)?;
        // Relaxed: a statistic.
        self.counters.capacity.fetch_add(self.pages.len_of(page), Ordering::Relaxed);
        Some(slots)
    }

    /// The work of `SlotMap::shrink_to_fit` (the caller holds the reclaim lock).
    pub(crate) fn release_vacant_pages(&self, domain: &Domain) {
        // Unpinned while it walks and sorts the free list (which takes time in proportion to
        // its length): a pin held that long would stop every other thread's reclamation, so
        // a thread churning inserts and removes meanwhile would find the free list empty and
        // grow the map, page after doubling page (the stress test in tests/shrink.rs saw
        // this with 256-slot batches). Nothing here needs the pin: the chain `take_all` gives
        // us is ours, so its pages stay (only we release, under the reclaim lock).
        let mut vacant = Vec::new();
        let mut per_page = [0usize; PAGES];
        let mut index = self.free.take_all();
        while index != NIL {
            vacant.push(index);
            per_page[locate(index as usize).0] += 1;
            // Relaxed: `take_all` acquired the chain; nobody else writes these links now.
            index = self.slot(index).aux.load(Ordering::Relaxed) & LINK_MASK;
        }
        let releasable: Vec<usize> =
            (1..PAGES).filter(|&p| self.pages.exists(p) && per_page[p] == self.pages.len_of(p)).collect();
        // Pinned for the defers only (and only when there is one): the grace period of each
        // page's free starts after its release unpublished it, so it waits for every thread
        // that could have loaded the page pointer.
        if !releasable.is_empty() {
            let guard = domain.pin();
            for &page in &releasable {
                // SAFETY: we hold the reclaim lock (the only releaser), the page exists, and all
                // of its slots (a page holds only slots below the limit) are in the chain we
                // took, so we own them.
                let memory = unsafe { self.pages.release(page) };
                // Relaxed: a statistic, and the wait in `shrink_to_fit` (paired below).
                self.counters.capacity.fetch_sub(self.pages.len_of(page), Ordering::Relaxed);
                self.counters.pages_releasing.fetch_add(1, Ordering::Relaxed);
                let counter = &self.counters.pages_releasing as *const AtomicUsize as usize;
                let free = move || {
                    memory.free();
                    // SAFETY: the map's drop shuts the domain down (running every queued
                    // function) before it frees `Shared`, which is boxed and never moves.
                    let counter = unsafe { &*(counter as *const AtomicUsize) };
                    // Release pairs with the Acquire load in `pages_releasing`.
                    counter.fetch_sub(1, Ordering::Release);
                };
                // SAFETY: the page was unpublished before this defer, so once the grace period
                // passes no reader can still hold its pointer; `free` touches nothing else.
                unsafe { domain.defer(&guard, free) };
            }
        }
        // The rest goes back, lowest index on top.
        vacant.retain(|&index| !releasable.contains(&locate(index as usize).0));
        vacant.sort_unstable();
        if let (Some(&first), Some(&last)) = (vacant.first(), vacant.last()) {
            for pair in vacant.windows(2) {
                // Relaxed: published by the Release CAS in `push_chain`.
                self.slot(pair[0]).aux.store(pair[1], Ordering::Relaxed);
            }
            self.free.push_chain(&self.pages, first, last);
        }
    }

    /// Released pages whose memory has not been freed yet.
    pub(crate) fn pages_releasing(&self) -> usize {
        // Acquire pairs with the Release decrement in the deferred free.
        self.counters.pages_releasing.load(Ordering::Acquire)
    }
}
