//! `Clone`: a copy of what one guard sees.
//!
//! Invariant: every key means in the copy what it meant in the original when its slot was
//! read. Each slot is read once under one guard (version, then value, read again if the slot
//! changed in between, as a snapshot does), and the copy gets the same page layout: live slots
//! keep their versions and get a clone of their value, vacant slots keep their versions (stale
//! keys stay stale), retired slots stay retired, and every page's version watermark is copied
//! (read around the page pointer, as a snapshot reads it), so a key that was dead cannot come
//! alive in the copy. Values removed but not yet reclaimed are not copied: their slots are
//! vacant in the copy. Writes running meanwhile may or may not be in the copy.

use slotmap::Key;

use crate::domain::Domain;
use crate::map::SlotMap;
use crate::page::{PAGES, locate_page, page_start};
use crate::slot::NIL;
use crate::sync::Ordering;

impl<K: Key, V: Clone> Clone for SlotMap<K, V> {
    /// A copy of what one guard sees, in which every key means what it meant in this map
    /// (values removed and not yet reclaimed are left out; their keys are dead in both).
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let gone = map.insert("old".to_string());
    /// let kept = map.insert("kept".to_string());
    /// map.remove(gone);
    /// let copy = map.clone();
    /// assert_eq!(copy.get_cloned(kept).as_deref(), Some("kept"));
    /// assert_eq!(copy.get_cloned(gone), None); // dead keys stay dead
    /// assert_ne!(copy.insert("new".to_string()), gone);
    /// ```
    fn clone(&self) -> Self {
        let guard = self.pin();
        let from = &*self.shared;
        let copy = SlotMap::<K, V>::build(0, from.max_slots, from.pages.first_version(), Domain::new());
        let to = &*copy.shared;
        let shard = copy.own_shard();
        let mut retired = 0;
        for page in 0..PAGES {
            // As a snapshot reads them (snapshot.rs): the watermark before the page pointer,
            // and again after it if the page is absent (it may have been released just now).
            let before = from.pages.watermark(page);
            let Some(slots) = from.pages.page(page) else {
                to.pages.set_watermark(page, from.pages.watermark(page));
                continue;
            };
            to.pages.set_watermark(page, before);
            let fresh = to.restore_page(page).expect("a fresh map has no pages");
            let (mut first, mut last) = (NIL, NIL);
            for (offset, (slot, target)) in slots.iter().zip(fresh).enumerate().rev() {
                let index = (page_start(page) + offset) as u32;
                let (version, value) = slot.read_whole();
                // Relaxed (every store into the copy): nobody else can reach it until it is
                // returned, and whoever receives it synchronises with this thread.
                target.version.store(version, Ordering::Relaxed);
                match value {
                    Some(value) => {
                        // SAFETY: `restore_page` just allocated this slot in a map no other
                        // thread can reach, and it is on no free list: it is ours, and empty.
                        unsafe { target.inline_mut().write(value.clone()) };
                        target.value.store(target.inline_mut(), Ordering::Relaxed);
                        to.pages.set_occupied(index, true);
                    }
                    None if version == 0 => retired += 1,
                    None => {
                        // Vacant: onto the copy's free list of this page, lowest index on top
                        // (the walk runs from the top of the page down).
                        target.aux.store(first, Ordering::Relaxed);
                        if last == NIL {
                            last = index;
                        }
                        first = index;
                    }
                }
            }
            if first != NIL {
                debug_assert_eq!(locate_page(first as usize), page);
                shard.free.push_chain(&to.pages, page, first, last);
            }
        }
        // Relaxed: a statistic of a map nobody else can reach yet.
        shard.counters.retired_slots.fetch_add(retired, Ordering::Relaxed);
        drop(guard);
        copy
    }
}
