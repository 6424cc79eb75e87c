//! The page table: slots live in pages that double in size and never move.
//!
//! Invariant: page `p` holds `FIRST_PAGE << p` slots, or fewer when the map's slot limit
//! (`max_slots`) ends inside it (only slots below the limit are allocated); once its pointer is
//! published in the table (a Release CAS from null) it stays at the same address until it is
//! released, so a reference to a value inside stays valid while other threads insert and grow.
//! A page is released only by `shrink_to_fit`, under the growth lock, when every slot of it is
//! vacant and taken off the free lists; its memory is freed through the reclamation domain, so
//! whoever loaded the page pointer while pinned may keep using it until it unpins. Therefore
//! every access through `slot`, `slot_by_bias` or `page` happens either under a pin of the
//! map's domain, or under the growth lock, or on a slot the caller owns (a slot that is live,
//! retired or popped from a free list keeps its page alive), or by the releaser itself on the
//! free-list chains it took (it alone releases).
//!
//! Occupancy: each page has one bit per slot (`occupied`), set while the slot holds a live
//! value: an inserter sets it before the Release store that makes the version live, a
//! remover clears it after the CAS that killed the version, so a bit can only be set for a
//! slot that is live or on its way in or out, and iteration skips words of vacant slots
//! instead of reading every slot. The bits are a hint: readers still check the version.
//! The occupancy words are published by the page's installer after it won the page (before
//! it hands out any slot) and unpublished and freed with the page.
//!
//! Watermark: when page `p` goes, `watermark[p]` keeps the highest version any of its slots
//! reached (even: vacant); when it is allocated again its slots start there, so no key
//! handed out before the release can match a slot of the new page. Index `i` lives in page
//! `floor(log2(i / FIRST_PAGE + 1))`.

use crate::slot::{NIL, Slot};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

pub(crate) use crate::config::FIRST_PAGE_SHIFT;
/// Slots in the first page (see `config.rs`).
pub(crate) const FIRST_PAGE: usize = 1 << FIRST_PAGE_SHIFT;
/// Number of pages; the last index they can hold stays below the link sentinel `NIL`.
pub(crate) const PAGES: usize = 25;
/// Total slots the page table can address.
pub(crate) const MAX_SLOTS: usize = FIRST_PAGE * ((1 << PAGES) - 1);
const _: () = assert!(MAX_SLOTS <= NIL as usize);

/// Page number of slot `index` (which must be below `MAX_SLOTS`).
#[inline(always)]
pub(crate) fn locate_page(index: usize) -> usize {
    let n = (index >> FIRST_PAGE_SHIFT) + 1;
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// Page number and offset of slot `index` (which must be below `MAX_SLOTS`).
#[inline(always)]
pub(crate) fn locate(index: usize) -> (usize, usize) {
    let page = locate_page(index);
    (page, index - page_start(page))
}

/// Slots in page `page`.
#[inline(always)]
pub(crate) const fn page_len(page: usize) -> usize {
    FIRST_PAGE << page
}

/// Slots of page `page` below a limit of `max_slots` (what the page holds in such a map).
#[inline(always)]
pub(crate) const fn page_len_below(page: usize, max_slots: usize) -> usize {
    let len = page_len(page);
    let room = max_slots.saturating_sub(page_start(page));
    if len < room { len } else { room }
}

/// Index of the first slot of page `page`.
#[inline(always)]
pub(crate) const fn page_start(page: usize) -> usize {
    ((1usize << page) - 1) << FIRST_PAGE_SHIFT
}

/// Occupancy words for `len` slots.
#[inline(always)]
const fn words(len: usize) -> usize {
    len.div_ceil(64)
}

pub(crate) struct PageTable<V> {
    pages: [AtomicPtr<Slot<V>>; PAGES],
    /// Per page, `words(len_of(page))` occupancy words (see the header); null while the
    /// page is absent or its installer has not published them yet.
    occupied: [AtomicPtr<AtomicU64>; PAGES],
    /// No slot index reaches this (at most `MAX_SLOTS`); the last page is cut there.
    max_slots: usize,
    /// Readers' view of page `p`: the address of slot index 0 if page `p` started there
    /// (`base - page_start(p)` slots, computed with wrapping arithmetic), plus one byte so
    /// that it is never null; null while the page is absent. With it the readers' path
    /// turns a key's index into a slot address with one multiply-add, without the offset
    /// arithmetic of `locate`. Set by the installer after everything else, cleared by the
    /// releaser first.
    biased: [AtomicPtr<u8>; PAGES],
    /// Bit `p` set while page `p` is published with its occupancy words (set by `install`
    /// after both, cleared by `release` before either goes), so iteration visits only the
    /// pages that exist instead of loading all `PAGES` pointers.
    present: AtomicU32,
    /// Per page, the highest version it ever handed out, rounded up to even (see the header).
    watermark: [AtomicU32; PAGES],
    /// Version every fresh slot starts with (even, `FRESH_VERSION` except in tests near the
    /// version limit).
    first_version: u32,
}

impl<V> PageTable<V> {
    pub(crate) fn new(max_slots: usize, first_version: u32) -> Self {
        Self {
            pages: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            occupied: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            biased: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            present: AtomicU32::new(0),
            max_slots: max_slots.min(MAX_SLOTS),
            watermark: std::array::from_fn(|_| AtomicU32::new(0)),
            first_version,
        }
    }

    /// Slots page `page` holds when it exists: all of them, or those below the limit.
    #[inline(always)]
    pub(crate) fn len_of(&self, page: usize) -> usize {
        page_len_below(page, self.max_slots)
    }

    /// The slot at `index`, if its page exists. Any `u32` is accepted.
    #[inline(always)]
    pub(crate) fn slot(&self, index: u32) -> Option<&Slot<V>> {
        let index = index as usize;
        if index >= self.max_slots {
            return None;
        }
        let (page, offset) = locate(index);
        // Acquire pairs with the Release CAS in `install` that published the page, so
        // its initialised slots are visible.
        let base = self.pages[page].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` is a published page of `len_of(page)` slots (module invariant) and
        // `offset < len_of(page)`: `locate` gives `offset < page_len(page)`, and
        // `page_start(page) + offset = index < max_slots`. A page's memory is freed only by the table's
        // drop (`&mut self`) or, after `release`, through the domain once every pin that could
        // have loaded `base` is gone; callers are pinned or own a slot of the page (module
        // header), so the reference cannot outlive the memory.
        Some(unsafe { &*base.add(offset) })
    }

    /// The value of key `(index, version)` if that key is live: the readers' path. Any
    /// `u32`s are accepted.
    ///
    /// The caller must be pinned in the map's domain (see `Slot::load_live`).
    #[inline(always)]
    pub(crate) fn live_value(&self, index: u32, version: u32) -> Option<*const V> {
        self.slot_by_bias(index)?.load_live(version)
    }

    /// The slot at `index`, if its page is installed: as `slot`, but through the page's
    /// biased base (one multiply-add instead of `locate`'s offset arithmetic), for the hot
    /// paths. Any `u32` is accepted. `None` also while the page's installer has not finished
    /// (it stores the base last) or once its releaser has started (it clears the base first).
    /// In either state nobody holds a live key into the page (stale keys get `None`, as they
    /// should), and its only owner is that installer or releaser, which does not call this
    /// until the base is stored (the installer's own first slot) or at all (the releaser).
    #[inline(always)]
    pub(crate) fn slot_by_bias(&self, index: u32) -> Option<&Slot<V>> {
        let index = index as usize;
        if index >= self.max_slots {
            return None;
        }
        let page = locate_page(index);
        // SAFETY: `index < max_slots <= MAX_SLOTS`, so `page < PAGES`.
        let biased = unsafe { self.biased.get_unchecked(page) };
        // Acquire pairs with the Release store in `install`, as for the page pointer in
        // `slot`: the page's slots are initialised.
        let biased = biased.load(Ordering::Acquire);
        if biased.is_null() {
            return None;
        }
        // (Multiplies wrap: on 32-bit targets the byte offset of a restored map's cut high
        // page can exceed the address space; the sum still lands in the page.)
        // `biased + index * size - 1` is `base + offset * size`: inside the page, because
        // `offset < len_of(page)` (as in `slot`). Wrapping arithmetic on the pointer keeps
        // its provenance (the page's allocation).
        let slot = biased
            .wrapping_add(index.wrapping_mul(std::mem::size_of::<Slot<V>>()).wrapping_sub(1))
            .cast::<Slot<V>>();
        // SAFETY: the address lies inside the page's allocation (above), so it is not null.
        // (Wrapping arithmetic hides that from the compiler, which would otherwise test the
        // `Option` built here on every lookup.)
        unsafe { std::hint::assert_unchecked(!slot.is_null()) };
        // SAFETY: as in `slot`: a slot of a published page, which the caller's pin or owned
        // slot keeps alive; the address is the one `slot` computes (see above).
        Some(unsafe { &*slot })
    }

    /// The occupancy words of page `page`, if it exists and its installer published them.
    /// The caller is pinned or owns a slot of the page, as for `page`.
    #[inline(always)]
    pub(crate) fn occupancy(&self, page: usize) -> Option<&[AtomicU64]> {
        // Acquire pairs with the Release store in `install` (the words are zeroed).
        let bits = self.occupied.get(page)?.load(Ordering::Acquire);
        if bits.is_null() {
            return None;
        }
        // SAFETY: published by `install` from a boxed slice of `words(len_of(page))` words;
        // freed with the page (after a grace period, or by the table's drop), so the
        // caller's pin or slot keeps it alive as it keeps the page (module header).
        Some(unsafe { std::slice::from_raw_parts(bits, words(self.len_of(page))) })
    }

    /// Sets (`live`) or clears the occupancy bit of slot `index`, whose page exists and
    /// which the caller owns (it is about to publish it, or has just killed its version).
    /// `index` is below the map's slot limit, as every owned slot's is (the page table hands
    /// out no other): the word indexed below relies on it.
    #[inline(always)]
    pub(crate) fn set_occupied(&self, index: u32, live: bool) {
        assert!((index as usize) < self.max_slots, "an owned slot lies below the slot limit");
        let (page, offset) = locate(index as usize);
        // Acquire pairs with the Release store in `install`, as in `occupancy`.
        let bits = self.occupied[page].load(Ordering::Acquire);
        assert!(!bits.is_null(), "the page of an owned slot has occupancy words");
        // SAFETY: the words are published (checked above) and hold `words(len_of(page))`
        // words (see `occupancy`), and `offset < len_of(page)`: `locate` gives
        // `offset < page_len(page)` and `page_start(page) + offset = index < max_slots`
        // (asserted above), as in `slot`; so word `offset / 64` is one of them. The caller
        // owns the slot, which keeps the page and its words alive (module header).
        let word = unsafe { &*bits.add(offset / 64) };
        let bit = 1u64 << (offset % 64);
        // Relaxed: a hint ordered by the version protocol: the set comes before the Release
        // store that makes the slot live, the clear after the CAS that killed it, and a
        // slot is reused only through the free list (happens-after the clear).
        if live {
            word.fetch_or(bit, Ordering::Relaxed);
        } else {
            word.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Clears the occupancy bits `mask` of word `word` of page `page`, whose slots the caller
    /// has just killed (their versions made even) while pinned: `set_occupied(.., false)` for
    /// several slots of one word in one RMW.
    pub(crate) fn clear_occupied(&self, page: usize, word: usize, mask: u64) {
        // Acquire pairs with the Release store in `install`, as in `occupancy`.
        let bits = self.occupied[page].load(Ordering::Acquire);
        assert!(!bits.is_null() && word < words(self.len_of(page)), "the killed slots' page has that word");
        // SAFETY: the words are published (checked above) and hold `words(len_of(page))` words,
        // of which `word` is one (checked above); the caller's pin keeps the page, as the
        // killed slots (not vacant) do.
        let word = unsafe { &*bits.add(word) };
        // Relaxed: as in `set_occupied` (after the CASes that killed the slots, before the
        // slots can be reused).
        word.fetch_and(!mask, Ordering::Relaxed);
    }

    /// Whether any occupancy bit of page `page` is set (a hint: a page without live values
    /// reads false unless an insert into it is under way). The caller is pinned, or is the
    /// releaser (only it removes pages).
    pub(crate) fn any_occupied(&self, page: usize) -> bool {
        // Relaxed: a hint; whoever acts on it checks the slots themselves.
        self.occupancy(page).is_some_and(|words| words.iter().any(|w| w.load(Ordering::Relaxed) != 0))
    }

    /// How many occupancy bits are set: the number of live values (a statistic; words are
    /// read one after another). The caller is pinned.
    pub(crate) fn occupied_count(&self) -> usize {
        let mut present = self.present_pages();
        let mut count = 0;
        while present != 0 {
            let page = present.trailing_zeros() as usize;
            present &= present - 1;
            // Relaxed: a statistic.
            let words = self.occupancy(page).unwrap_or(&[]);
            count += words.iter().map(|w| w.load(Ordering::Relaxed).count_ones() as usize).sum::<usize>();
        }
        count
    }

    /// Bit `p` set for each page `p` that was published with its occupancy words (a hint:
    /// callers still load the page). A page installed before the caller synchronised with its
    /// installer is in the set.
    #[inline]
    pub(crate) fn present_pages(&self) -> u32 {
        // Acquire pairs with the Release `fetch_or` in `install`.
        self.present.load(Ordering::Acquire)
    }

    /// Whether page `page` exists (no dereference).
    pub(crate) fn exists(&self, page: usize) -> bool {
        // Relaxed: only a hint for growth; `install` re-checks with its CAS.
        !self.pages[page].load(Ordering::Relaxed).is_null()
    }

    /// The first `len` slots of page `page`, if it exists.
    pub(crate) fn page(&self, page: usize) -> Option<&[Slot<V>]> {
        // Acquire: pairs with the Release CAS in `install`, as in `slot`.
        let base = self.pages.get(page)?.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: as in `slot`: a published page of `len_of(page)` initialised slots, kept
        // alive by the caller's pin (or `&mut`) per the module header.
        Some(unsafe { std::slice::from_raw_parts(base, self.len_of(page)) })
    }

    /// Installs page `page` if it does not exist. Returns its slots if this call installed
    /// it (the caller then owns every slot of it until it hands them out), `None` if the page
    /// already existed or another thread installed it first.
    pub(crate) fn install(&self, page: usize) -> Option<&[Slot<V>]> {
        // Acquire: as in `slot`.
        if !self.pages[page].load(Ordering::Acquire).is_null() {
            return None;
        }
        // Relaxed: only a hint; the version is re-read after the publishing CAS below.
        let start = self.start_version(page, Ordering::Relaxed);
        let len = self.len_of(page);
        let fresh: Box<[Slot<V>]> = (0..len).map(|_| Slot::new(start)).collect();
        let fresh = Box::into_raw(fresh).cast::<Slot<V>>();
        // Release publishes the initialised slots to the Acquire loads in `slot`/`page`.
        // Acquire: if the page was released before, the null we replace was stored by
        // `release` (Release), so the watermark it raised is visible to the load below.
        match self.pages[page].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // SAFETY: just published from `Box::into_raw` of `len` slots; it cannot be
                // released before we hand its slots out (they are on no free list).
                let slots = unsafe { std::slice::from_raw_parts(fresh, len) };
                // Relaxed: ordered by the AcqRel CAS above (see its comment).
                let start_now = self.start_version(page, Ordering::Relaxed);
                if start_now != start {
                    // The page was released after our first read. Our slots are vacant (even
                    // versions, which no key matches) and nobody can pop them yet, so raising
                    // their versions now is enough; the free-list push publishes the stores.
                    for slot in slots {
                        // Relaxed: published by the Release push that hands the slot out.
                        slot.version.store(start_now, Ordering::Relaxed);
                    }
                }
                // The page is ours to set up until we hand out a slot: publish its occupancy
                // words (all clear). Release pairs with the Acquire load in `occupancy`.
                let bits: Box<[AtomicU64]> = (0..words(len)).map(|_| AtomicU64::new(0)).collect();
                self.occupied[page].store(Box::into_raw(bits).cast::<AtomicU64>(), Ordering::Release);
                // Release pairs with the Acquire load in `present_pages`.
                self.present.fetch_or(1 << page, Ordering::Release);
                // Last, once the slots hold their final versions. Release pairs with the
                // Acquire load in `slot_by_bias`.
                let biased = fresh
                    .cast::<u8>()
                    .wrapping_sub(page_start(page).wrapping_mul(std::mem::size_of::<Slot<V>>()))
                    .wrapping_add(1);
                self.biased[page].store(biased, Ordering::Release);
                Some(slots)
            }
            Err(_) => {
                // SAFETY: `fresh` came from `Box::into_raw` of a boxed slice of `len` slots
                // just above and was never published.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, len)) });
                None
            }
        }
    }

    /// The watermark of page `page` (see the module header).
    pub(crate) fn watermark(&self, page: usize) -> u32 {
        // Acquire: a released page's watermark was stored before the Release swap that
        // unpublished it; a caller that saw the page absent (Acquire) sees the watermark.
        self.watermark[page].load(Ordering::Acquire)
    }

    /// Sets the watermark of page `page` in a map no other thread can reach yet (restoring a
    /// snapshot); `install` starts the page's slots there.
    pub(crate) fn set_watermark(&self, page: usize, version: u32) {
        // Relaxed: the map is not shared yet; whoever receives it synchronises with us.
        self.watermark[page].store(version, Ordering::Relaxed);
    }

    /// The version every fresh slot starts with when no watermark says more.
    pub(crate) fn first_version(&self) -> u32 {
        self.first_version
    }

    /// The version fresh slots of `page` start with.
    fn start_version(&self, page: usize, order: Ordering) -> u32 {
        self.first_version.max(self.watermark[page].load(order))
    }

    /// Unpublishes page `page` and returns its memory, to be freed after a grace period.
    ///
    /// # Safety
    /// The caller is the only thread releasing pages (it holds the map's reclaim lock), the
    /// page exists and every slot of it is vacant and owned by the caller (taken off the free
    /// list), so no thread will write to it again.
    pub(crate) unsafe fn release(&self, page: usize) -> ReleasedPage {
        let slots = self.page(page).expect("released page exists");
        let high = slots.iter().map(|slot| slot.version.load(Ordering::Relaxed)).max().unwrap_or(0);
        // Relaxed: published by the Release swap below, which `install` acquires.
        // (Mutant for the loom suite: forget the watermark.)
        if !crate::mutant::active("shrink_without_watermark") {
            self.watermark[page].fetch_max(high.next_multiple_of(2), Ordering::Relaxed);
        }
        // Release pairs with the Acquire load in `slot_by_bias`: a free-list pop that read
        // a head into this page before our `take_page` and now loads this null synchronises
        // with the `take_page`, so its reload of the head sees the new head instead of
        // spinning on the old one (loom may serve a stale head to an unsynchronised reload
        // indefinitely). Readers that still load the old base were pinned before the
        // deferred free that `shrink_to_fit` queues after this (its grace period waits for
        // them), so the memory outlives them.
        self.biased[page].store(std::ptr::null_mut(), Ordering::Release);
        // Relaxed: as for the base, the old bits stay valid for pinned iterators; a
        // re-install's stores come after this through the page pointer's Release swap below
        // and its AcqRel CAS.
        self.present.fetch_and(!(1 << page), Ordering::Relaxed);
        // Relaxed: the caller owns the page; the Release swap below publishes the null.
        let bits = self.occupied[page].swap(std::ptr::null_mut(), Ordering::Relaxed);
        // Release: see above. Acquire is not needed: the caller owns the page.
        let base = self.pages[page].swap(std::ptr::null_mut(), Ordering::Release);
        ReleasedPage {
            base: base as usize,
            bits: bits as usize,
            len: self.len_of(page),
            free: free_slots::<V>,
        }
    }

    /// Bytes of the pages that exist now (slots and occupancy words).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.pages().map(|(_, slots)| std::mem::size_of_val(slots) + words(slots.len()) * 8).sum()
    }

    /// Pages that exist, in index order, with the index of their first slot.
    pub(crate) fn pages(&self) -> impl Iterator<Item = (usize, &[Slot<V>])> + '_ {
        (0..PAGES).filter_map(move |p| self.page(p).map(|s| (page_start(p), s)))
    }
}

/// The memory of a released page: its address, its length and the function that frees it,
/// as plain data (no `V` in the type), so a deferred function can own it whatever `V` is.
pub(crate) struct ReleasedPage {
    base: usize,
    bits: usize,
    len: usize,
    free: unsafe fn(usize, usize),
}

impl ReleasedPage {
    /// Frees the page.
    pub(crate) fn free(self) {
        // SAFETY: built by `release` with the matching `free_slots::<V>`; consumed once.
        unsafe { (self.free)(self.base, self.len) };
        // SAFETY: from `Box::into_raw` of `words(len)` words in `install`, unpublished by
        // `release`; consumed once.
        unsafe { free_bits(self.bits as *mut AtomicU64, self.len) };
    }
}

/// Frees the occupancy words of a page of `len` slots (nothing if `bits` is null).
///
/// # Safety
/// `bits` is null or came from `Box::into_raw` in `install` for a page of `len` slots, and
/// no thread can reach it any more.
unsafe fn free_bits(bits: *mut AtomicU64, len: usize) {
    if !bits.is_null() {
        // SAFETY: see the function's contract.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(bits, words(len))) });
    }
}

/// Frees `len` slots at `base`.
///
/// # Safety
/// `base` came from `Box::into_raw` of a boxed slice of `len` `Slot<V>` in `install`, was
/// unpublished by `release`, no thread can still reach it, and its slots hold no value.
unsafe fn free_slots<V>(base: usize, len: usize) {
    // SAFETY: see the function's contract.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(base as *mut Slot<V>, len)) });
}

impl<V> Drop for PageTable<V> {
    fn drop(&mut self) {
        for (page, ptr) in self.pages.iter().enumerate() {
            // Relaxed: `&mut self` means every other access happened-before this one.
            let base = ptr.load(Ordering::Relaxed);
            if !base.is_null() {
                // SAFETY: a published page came from `Box::into_raw` of a boxed slice of
                // `len_of(page)` slots in `install`; we own it exclusively now. Values inside
                // were dropped by the map before the table (slots own no value).
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(base, self.len_of(page))) });
            }
            // Relaxed: `&mut self`, as above.
            let bits = self.occupied[page].load(Ordering::Relaxed);
            // SAFETY: published by `install` for this page (or null); we own it now.
            unsafe { free_bits(bits, self.len_of(page)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_every_index_once() {
        let mut expected = (0usize, 0usize);
        for index in 0..(FIRST_PAGE * 40) {
            assert_eq!(locate(index), expected, "index {index}");
            expected.1 += 1;
            if expected.1 == page_len(expected.0) {
                expected = (expected.0 + 1, 0);
            }
        }
        let (last_page, last_offset) = locate(MAX_SLOTS - 1);
        assert_eq!((last_page, last_offset), (PAGES - 1, page_len(PAGES - 1) - 1));
        assert_eq!(page_start(last_page) + last_offset, MAX_SLOTS - 1);
    }
}
