//! Growth and release of pages: the only code that installs or unpublishes a page.
//!
//! Invariants:
//! - A slot is handed out only through a free list. A page is installed whole, under the growth
//!   lock, when an insert finds no vacant slot anywhere (`Shared::grow`: the lowest missing
//!   page first, so released pages are reused before the table grows); the installer owns all
//!   of its slots, keeps one if it asked to, and pushes the rest onto its own shard's list for
//!   that page as one chain.
//! - `shrink_to_fit` runs under the map's reclaim lock (one releaser at a time) and visits the
//!   pages from the highest down. A page that has a live value (an occupancy bit) is skipped at
//!   once. For any other page it takes, under the growth lock, that page's free list from every
//!   shard (`PagedFreeList::take_page`, a tagged swap each), so it owns every vacant, recycled
//!   slot of the page. If those are all of the page's usable slots, the page has no live,
//!   pending or retired slot and no slot anyone else can reach for writing; it is unpublished
//!   with its version watermark (`PageTable::release`) and freed through the domain after a
//!   grace period. Otherwise every chain goes back to the shard it came from. It holds a page's
//!   slots for one walk of them, and only slots of a page with no live value: inserts keep
//!   finding the slots of every other page, and none installs a page meanwhile (the lock).
//! - Every access to a slot of a page that might be released is pinned (reads, `unlink`,
//!   `contains_key`, free-list pops), or is to a slot the accessor owns.

use crate::domain::Domain;
use crate::page::{PAGES, page_start};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::slot::{LINK_MASK, NIL};
use crate::sync::{AtomicUsize, Ordering};

impl<V> Shared<V> {
    /// Installs `page` and pushes its usable slots onto `shard`'s free list of that page (all
    /// of them, or all but the first, which is returned, when `keep_first`). `None` if the page
    /// already existed. Called under the growth lock, or on a map no other thread can reach.
    pub(crate) fn install_page(
        &self,
        page: usize,
        keep_first: bool,
        shard: &Shard<V>,
    ) -> Option<Option<u32>> {
        let slots = self.pages.install(page)?;
        let start = page_start(page) as u32;
        let usable = self.pages.len_of(page) as u32;
        // Relaxed: a statistic.
        self.counters.capacity.fetch_add(usable as usize, Ordering::Relaxed);
        let first = if keep_first { start + 1 } else { start };
        let last = start + usable - 1;
        if first <= last {
            for index in first..last {
                // Relaxed: published by the Release CAS of the push.
                slots[(index - start) as usize].aux.store(index + 1, Ordering::Relaxed);
            }
            shard.free.push_chain(&self.pages, page, first, last);
        }
        Some(keep_first.then_some(start))
    }

    /// Installs `page` in a map no other thread can reach yet (restoring a snapshot, cloning) and
    /// returns its slots, all owned by the caller and none on a free list; `None` if the page
    /// exists already.
    pub(crate) fn restore_page(&self, page: usize) -> Option<&[Slot<V>]> {
        let slots = self.pages.install(page)?;
        // Relaxed: a statistic.
        self.counters.capacity.fetch_add(self.pages.len_of(page), Ordering::Relaxed);
        Some(slots)
    }

    /// The work of `SlotMap::shrink_to_fit` (the caller holds the reclaim lock).
    pub(crate) fn release_vacant_pages(&self, domain: &Domain) {
        // Unpinned: nothing here needs the pin but the defers. The pages we look at stay (only
        // we release, under the reclaim lock), and so do the chains we take (they are ours).
        for page in (1..PAGES).rev() {
            if !self.pages.exists(page) || self.pages.any_occupied(page) {
                continue;
            }
            let _growth = self.growth_lock.lock();
            let mut taken = Vec::new();
            let mut vacant = 0;
            for shard in self.shards() {
                let first = shard.free.take_page(page);
                if first == NIL {
                    continue;
                }
                let (mut last, mut count) = (first, 1);
                loop {
                    // Relaxed: `take_page` acquired the chain; nobody else writes these links.
                    let next = self.slot(last).aux.load(Ordering::Relaxed) & LINK_MASK;
                    if next == NIL {
                        break;
                    }
                    (last, count) = (next, count + 1);
                }
                vacant += count;
                taken.push((shard, first, last));
            }
            if vacant == self.pages.len_of(page) {
                self.release_page(domain, page);
            } else if !crate::mutant::active("shrink_keeps_the_slots") {
                // Mutant for the loom suite: the chains are never given back.
                for (shard, first, last) in taken {
                    shard.free.push_chain(&self.pages, page, first, last);
                }
            }
        }
    }

    /// Unpublishes `page`, all of whose slots the caller took off the free lists, and defers
    /// the free of its memory.
    fn release_page(&self, domain: &Domain, page: usize) {
        // SAFETY: we hold the reclaim lock (the only releaser), the page exists, and all of
        // its slots (a page holds only slots below the limit) are in the chains we took, so we
        // own them.
        let memory = unsafe { self.pages.release(page) };
        // Relaxed: a statistic, and the wait in `shrink_to_fit` (paired below).
        self.counters.capacity.fetch_sub(self.pages.len_of(page), Ordering::Relaxed);
        self.counters.pages_releasing.fetch_add(1, Ordering::Relaxed);
        let counter = &self.counters.pages_releasing as *const AtomicUsize as usize;
        let free = move || {
            memory.free();
            // SAFETY: the map's drop shuts the domain down (running every queued function)
            // before it frees `Shared`, which is boxed and never moves.
            let counter = unsafe { &*(counter as *const AtomicUsize) };
            // Release pairs with the Acquire load in `pages_releasing`.
            counter.fetch_sub(1, Ordering::Release);
        };
        // Pinned for the defer: the grace period of the free starts after the release
        // unpublished the page, so it waits for every thread that could have loaded its
        // pointer.
        let guard = domain.pin();
        // SAFETY: the page was unpublished before this defer, so once the grace period passes
        // no reader can still hold its pointer; `free` touches nothing else.
        unsafe { domain.defer(&guard, free) };
    }

    /// Released pages whose memory has not been freed yet.
    pub(crate) fn pages_releasing(&self) -> usize {
        // Acquire pairs with the Release decrement in the deferred free.
        self.counters.pages_releasing.load(Ordering::Acquire)
    }
}
