//! The page table: slots live in pages that double in size and never move.
//!
//! Invariant: page `p` holds `FIRST_PAGE << p` slots; once its pointer is published in the
//! table (a Release CAS from null) it stays valid and at the same address until the map is
//! dropped, so a `&Slot` obtained from it, and a reference to a value inside, stay valid while
//! other threads insert and grow. Index `i` lives in page `floor(log2(i / FIRST_PAGE + 1))`.

use crate::slot::{NIL, Slot};
use crate::sync::{AtomicPtr, Ordering};

/// Slots in the first page: tiny under loom, so a model crosses a page boundary in a few
/// inserts.
#[cfg(loom)]
pub(crate) const FIRST_PAGE_SHIFT: u32 = 1;
#[cfg(not(loom))]
pub(crate) const FIRST_PAGE_SHIFT: u32 = 5;
pub(crate) const FIRST_PAGE: usize = 1 << FIRST_PAGE_SHIFT;
/// Number of pages; the last index they can hold stays below the link sentinel `NIL`.
pub(crate) const PAGES: usize = 25;
/// Total slots the page table can address.
pub(crate) const MAX_SLOTS: usize = FIRST_PAGE * ((1 << PAGES) - 1);
const _: () = assert!(MAX_SLOTS <= NIL as usize);

/// Page number and offset of slot `index` (which must be below `MAX_SLOTS`).
#[inline(always)]
pub(crate) fn locate(index: usize) -> (usize, usize) {
    let n = (index >> FIRST_PAGE_SHIFT) + 1;
    let page = (usize::BITS - 1 - n.leading_zeros()) as usize;
    let base = ((1usize << page) - 1) << FIRST_PAGE_SHIFT;
    (page, index - base)
}

/// Slots in page `page`.
#[inline(always)]
pub(crate) const fn page_len(page: usize) -> usize {
    FIRST_PAGE << page
}

/// Index of the first slot of page `page`.
#[inline(always)]
pub(crate) const fn page_start(page: usize) -> usize {
    ((1usize << page) - 1) << FIRST_PAGE_SHIFT
}

pub(crate) struct PageTable<V> {
    pages: [AtomicPtr<Slot<V>>; PAGES],
    /// Version every fresh slot starts with (even; 0 except in tests near the version limit).
    first_version: u32,
}

impl<V> PageTable<V> {
    pub(crate) fn new(first_version: u32) -> Self {
        Self { pages: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())), first_version }
    }

    /// The slot at `index`, if its page exists. Any `u32` is accepted.
    #[inline(always)]
    pub(crate) fn slot(&self, index: u32) -> Option<&Slot<V>> {
        let index = index as usize;
        if index >= MAX_SLOTS {
            return None;
        }
        let (page, offset) = locate(index);
        // Acquire pairs with the Release CAS in `ensure_page` that published the page, so
        // its initialised slots are visible.
        let base = self.pages[page].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` is a published page of `page_len(page)` slots (module invariant) and
        // `offset < page_len(page)` by `locate`; pages live until the table is dropped, which
        // needs `&mut self`, so the reference cannot outlive the page.
        Some(unsafe { &*base.add(offset) })
    }

    /// The first `len` slots of page `page`, if it exists.
    pub(crate) fn page(&self, page: usize) -> Option<&[Slot<V>]> {
        // Acquire: pairs with the Release CAS in `ensure_page`, as in `slot`.
        let base = self.pages.get(page)?.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: as in `slot`: a published page of `page_len(page)` initialised slots that
        // lives as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(base, page_len(page)) })
    }

    /// Makes sure page `page` exists. Returns how many slots this call added to the map's
    /// capacity (0 if another thread, or an earlier call, installed it).
    pub(crate) fn ensure_page(&self, page: usize) -> usize {
        // Acquire: as in `slot`.
        if !self.pages[page].load(Ordering::Acquire).is_null() {
            return 0;
        }
        let fresh: Box<[Slot<V>]> = (0..page_len(page)).map(|_| Slot::new(self.first_version)).collect();
        let fresh = Box::into_raw(fresh).cast::<Slot<V>>();
        // Release publishes the initialised slots to the Acquire loads in `slot`/`page`;
        // Acquire on failure is not needed: the loser only frees its own allocation.
        match self.pages[page].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => page_len(page),
            Err(_) => {
                // SAFETY: `fresh` came from `Box::into_raw` of a boxed slice of
                // `page_len(page)` slots just above and was never published.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, page_len(page))) });
                0
            }
        }
    }

    /// Pages that exist, in index order, with the index of their first slot.
    pub(crate) fn pages(&self) -> impl Iterator<Item = (usize, &[Slot<V>])> + '_ {
        (0..PAGES).filter_map(move |p| self.page(p).map(|s| (page_start(p), s)))
    }
}

impl<V> Drop for PageTable<V> {
    fn drop(&mut self) {
        for (page, ptr) in self.pages.iter().enumerate() {
            // Relaxed: `&mut self` means every other access happened-before this one.
            let base = ptr.load(Ordering::Relaxed);
            if !base.is_null() {
                // SAFETY: a published page came from `Box::into_raw` of a boxed slice of
                // `page_len(page)` slots in `ensure_page`; we own it exclusively now. Values
                // inside were dropped by the map before the table (slots own no value).
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(base, page_len(page))) });
            }
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
