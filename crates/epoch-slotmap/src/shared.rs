//! The map's shared state, and where an insert finds a slot.
//!
//! Invariant (the memory bound): a page is installed only under `growth_lock`, and only after a
//! look at every shard's free lists, made under that lock, found no vacant slot. Page releases
//! (`shrink_to_fit`) take and give back free lists under the same lock. So when a page is
//! installed, every slot of the existing pages is live, pending (removed or replaced and not
//! yet pushed back by its batch: `Shard::pending` counts it until then), popped by an inserter
//! that has not published it yet, retired for good, or
//! was one of those while the look passed its shard; and the new page is at most as large as
//! all the pages below it plus the first page's size. Hence, with `L` and `P` the peaks of live
//! and pending values, `T` the threads inside the map at once and `R` the slots retired for
//! good: capacity <= 4 (L + P + T) + 2 R + FIRST_PAGE (docs/design.md, "The memory bound"),
//! plus the pages `with_capacity` and `reserve` install up front (`install_next_page`).
//!
//! An insert looks, in order: its own shard's free lists (pinned, no shared cache line), its
//! own shard's ripe batches, every other shard's free lists (a steal), every shard's ripe
//! batches, and then, under the growth lock, everything once more before it installs a page.
//! The shared state that writers do touch in the steady state is read-only: the page table.

use std::marker::PhantomData;

use crate::domain::{Domain, DomainGuard};
use crate::page::{PAGES, PageTable};
use crate::shard::Shard;
use crate::slot::Slot;
use crate::sync::{AtomicBool, AtomicPtr, AtomicUsize, CachePadded, Lock, Ordering};

/// Counters that change only when pages come and go.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) capacity: AtomicUsize,
    /// Pages released by `shrink_to_fit` whose memory is not freed yet.
    pub(crate) pages_releasing: AtomicUsize,
}

/// Owns the map's `Shared` through a raw pointer: deferred functions hold pointers into it,
/// and moving a `Box` would (under Stacked Borrows) invalidate them; moving this does not.
pub(crate) struct SharedBox<V>(std::ptr::NonNull<Shared<V>>);

impl<V> SharedBox<V> {
    pub(crate) fn new(shared: Shared<V>) -> Self {
        Self(std::ptr::NonNull::from(Box::leak(Box::new(shared))))
    }
}

impl<V> std::ops::Deref for SharedBox<V> {
    type Target = Shared<V>;
    #[inline(always)]
    fn deref(&self) -> &Shared<V> {
        // SAFETY: allocated in `new` and freed only in `drop`, which needs `&mut self`.
        unsafe { self.0.as_ref() }
    }
}

impl<V> Drop for SharedBox<V> {
    fn drop(&mut self) {
        // SAFETY: from `Box::leak` in `new`; freed once, here. The map's drop shut the domain
        // down first: every deferred function that pointed into it has run, or can never run
        // (a guard forgotten with `mem::forget` leaves its participant pinned, so the domain's
        // collector is leaked with its queue, never drained; domain/epoch.rs, `shut_down`).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The map's state that deferred functions point into; boxed so it never moves.
pub(crate) struct Shared<V> {
    pub(crate) pages: PageTable<V>,
    pub(crate) max_slots: usize,
    /// Every shard of the map, newest first, linked through `Shard::next`. Push only; the
    /// shards are freed with the map.
    shards: AtomicPtr<Shard<V>>,
    pub(crate) counters: CachePadded<Counters>,
    /// Held to install a page, and by `shrink_to_fit` while it holds a page's free lists.
    pub(crate) growth_lock: Lock,
    /// One reclaimer or releaser at a time (`reclaim`, `shrink_to_fit`).
    pub(crate) reclaim_lock: Lock,
    /// Set by a `reclaim` that gave up at its deadline (read and written under
    /// `reclaim_lock`): the next one first waits for what it left (see `reclaim_wait`).
    pub(crate) reclaim_gave_up: AtomicBool,
}

impl<V> Shared<V> {
    pub(crate) fn new(max_slots: usize, first_version: u32) -> Self {
        Self {
            pages: PageTable::new(max_slots, first_version),
            max_slots,
            shards: AtomicPtr::new(std::ptr::null_mut()),
            counters: CachePadded(Counters::default()),
            growth_lock: Lock::new(),
            reclaim_lock: Lock::new(),
            reclaim_gave_up: AtomicBool::new(false),
        }
    }

    /// The slot at `index`, which the caller owns (so its page exists).
    #[inline(always)]
    pub(crate) fn slot(&self, index: u32) -> &Slot<V> {
        self.pages.slot_by_bias(index).expect("an owned slot's index lies in an installed page")
    }

    /// A new shard, linked into the map's list; it lives as long as the map.
    #[cold]
    pub(crate) fn new_shard(&self) -> *const Shard<V> {
        let shard = Box::into_raw(Box::new(Shard::new()));
        // Relaxed: re-validated by the CAS.
        let mut head = self.shards.load(Ordering::Relaxed);
        loop {
            // SAFETY: `shard` is ours until the CAS publishes it.
            unsafe { (*shard).next = head };
            // Release publishes the shard's initialised fields to the Acquire walk in `shards`.
            match self.shards.compare_exchange_weak(head, shard, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return shard,
                Err(actual) => head = actual,
            }
        }
    }

    /// Every shard that exists now, newest first.
    pub(crate) fn shards(&self) -> impl Iterator<Item = &Shard<V>> + '_ {
        // Acquire pairs with the Release CAS in `new_shard`.
        let head = self.shards.load(Ordering::Acquire);
        Walk { next: head.cast_const(), stop: std::ptr::null(), _shared: PhantomData }
    }

    /// Every shard but `own`: those after it in the list, then those before it, so that
    /// threads looking for a slot to steal start at different victims.
    fn others<'a>(&'a self, own: &'a Shard<V>) -> impl Iterator<Item = &'a Shard<V>> + 'a {
        let own_ptr: *const Shard<V> = own;
        // Acquire pairs with the Release CAS in `new_shard`.
        let head = self.shards.load(Ordering::Acquire).cast_const();
        Walk { next: own.next, stop: std::ptr::null(), _shared: PhantomData }.chain(Walk {
            next: head,
            stop: own_ptr,
            _shared: PhantomData,
        })
    }

    /// A vacant slot from another shard's free lists. Call it pinned, or under the growth lock
    /// (see `FreeList::pop`).
    fn steal(&self, own: &Shard<V>) -> Option<(u32, &Slot<V>)> {
        self.others(own).find_map(|shard| shard.free.pop(&self.pages))
    }

    /// `alloc` once `own`'s free lists were found empty under `pin`: recycle, steal, or
    /// install a page. `None` when the map is at its limit with no vacant slot.
    #[inline(never)]
    pub(crate) fn alloc_slow(
        &self,
        domain: &Domain,
        own: &Shard<V>,
        pin: DomainGuard,
    ) -> Option<(u32, &Slot<V>)> {
        // Our own batches whose grace period has passed come first, run unpinned (they drop
        // values); without any, steal under the pin we hold.
        if own.ripe.load(Ordering::Relaxed).is_null() {
            if let Some(popped) = self.steal(own) {
                return Some(popped);
            }
            drop(pin);
        } else {
            drop(pin);
            self.run_ripe(own);
            // Pinned: as for any pop.
            let _pin = domain.pin();
            if let Some(popped) = own.free.pop(&self.pages).or_else(|| self.steal(own)) {
                return Some(popped);
            }
        }
        // What idle threads' batches would give back, then a new page.
        self.run_all_ripe();
        self.grow(own)
    }

    /// Installs the lowest missing page into `own` and keeps its first slot, unless a look at
    /// every free list under the growth lock finds a vacant slot (module invariant). `None`
    /// when every page the limit allows exists and no slot is vacant.
    fn grow(&self, own: &Shard<V>) -> Option<(u32, &Slot<V>)> {
        let _growth = self.growth_lock.lock();
        // Mutant for the loom suite: install without looking again, so two inserters that both
        // found the lists empty install two pages.
        // Unpinned: under the growth lock no page can be released (see `FreeList::pop`).
        if !crate::mutant::active("grow_without_rescan")
            && let Some(popped) = own.free.pop(&self.pages).or_else(|| self.steal(own))
        {
            return Some(popped);
        }
        let page = (0..PAGES).find(|&p| self.pages.len_of(p) > 0 && !self.pages.exists(p))?;
        let index = self
            .install_page(page, true, own)
            .flatten()
            .expect("pages are installed only under the growth lock, and this one keeps a slot");
        Some((index, self.slot(index)))
    }
}

impl<V> Shared<V> {
    /// Installs the lowest missing page onto `own`'s free lists (under the growth lock);
    /// false when every page the limit allows exists.
    pub(crate) fn install_next_page(&self, own: &Shard<V>) -> bool {
        let _growth = self.growth_lock.lock();
        let Some(page) = (0..PAGES).find(|&p| self.pages.len_of(p) > 0 && !self.pages.exists(p)) else {
            return false;
        };
        self.install_page(page, false, own).is_some()
    }
}

/// A walk of the shard list from `next` up to (not including) `stop`.
struct Walk<'a, V> {
    next: *const Shard<V>,
    stop: *const Shard<V>,
    _shared: PhantomData<&'a Shared<V>>,
}

impl<'a, V> Iterator for Walk<'a, V> {
    type Item = &'a Shard<V>;

    fn next(&mut self) -> Option<&'a Shard<V>> {
        if self.next.is_null() || self.next == self.stop {
            return None;
        }
        // SAFETY: shards are published by the Release CAS in `new_shard` (our walk started
        // from an Acquire load of the head, and `next` links are immutable once published)
        // and freed only by `Shared`'s drop, which needs `&mut`; the walk borrows `Shared`.
        let shard = unsafe { &*self.next };
        self.next = shard.next;
        Some(shard)
    }
}

impl<V> Drop for Shared<V> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, every other access happened-before.
        let mut shard = self.shards.load(Ordering::Relaxed);
        while !shard.is_null() {
            // SAFETY: from `Box::into_raw` in `new_shard`, freed once, here; the map ran every
            // batch before dropping `Shared`, and every deferred function either ran or can
            // never run (see `SharedBox::drop`).
            let boxed = unsafe { Box::from_raw(shard) };
            shard = boxed.next.cast_mut();
        }
    }
}
