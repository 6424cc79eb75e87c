//! The iterators that need the map to themselves: [`IterMut`], [`ValuesMut`], [`Drain`] and
//! [`IntoIter`] (the guard's shared iterators live in `guard.rs`).
//!
//! Invariant: each holds the map exclusively (`&mut` or by value), so no thread reads, writes
//! or releases anything while it runs: every load here may be Relaxed, the occupancy bits are
//! exact (a bit is set exactly for a live slot once every retirement has run, which the
//! constructors ensure), and the number of live values at the start is the exact length.
//! They visit live slots only, by their occupancy bits, so a sparse map costs one load per
//! 64 slots, not one per slot.

use std::fmt;
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use slotmap::Key;

use crate::map::{SlotMap, key_of};
use crate::page::{PAGES, PageTable, locate_page, page_start};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::slot::{INLINE_PENDING, NIL, Retired, Slot};
use crate::sync::Ordering;

/// A walk of the live slots of a map, by occupancy bits. Holds no borrow, so an owning
/// iterator can keep one beside the map it owns, and `retain` one across pins. With the map
/// held exclusively the bits are exact; otherwise they are hints (the caller checks each
/// slot's version) and every call must be pinned (occupancy words go with their page).
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveCursor {
    /// Clears each occupancy word as it loads it (a plain store): for the iterators that take
    /// every live slot out of an exclusively held map.
    taking: bool,
    /// Pages still to visit (bit `p` = page `p`); `None` before the first call.
    pages_left: Option<u32>,
    page: usize,
    /// The next occupancy word of `page` to load, and how many it has.
    word: usize,
    words: usize,
    /// Bits of the current word not yet visited, and the index of its bit 0.
    bits: u64,
    base: usize,
}

impl LiveCursor {
    /// A cursor that clears each word it loads (see `taking`). Exclusive access only.
    pub(crate) fn taking() -> Self {
        Self { taking: true, ..Self::default() }
    }

    /// The index of the next live slot, in index order (see the type's comment).
    pub(crate) fn next_index<V>(&mut self, pages: &PageTable<V>) -> Option<usize> {
        loop {
            if self.bits != 0 {
                let index = self.base + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return Some(index);
            }
            if self.word < self.words
                && let Some(words) = pages.occupancy(self.page)
            {
                // Relaxed: exact under exclusive access (module invariant); a hint otherwise.
                self.bits = words[self.word].load(Ordering::Relaxed);
                if self.taking && self.bits != 0 {
                    // Relaxed: exclusive access; every slot of these bits is taken out below.
                    words[self.word].store(0, Ordering::Relaxed);
                }
                self.base = page_start(self.page) + self.word * 64;
                self.word += 1;
                continue;
            }
            let left = self.pages_left.get_or_insert_with(|| pages.present_pages());
            if *left == 0 {
                return None;
            }
            self.page = left.trailing_zeros() as usize;
            *left &= *left - 1;
            self.word = 0;
            self.words = pages.occupancy(self.page).map_or(0, <[_]>::len);
        }
    }
}

/// The value of live slot `index` of an exclusively held map, with its key.
fn live<K: Key, V>(shared: &Shared<V>, index: usize) -> (K, &Slot<V>, *mut V) {
    let slot = shared.slot(index as u32);
    // Relaxed: the map is held exclusively (module invariant).
    let version = slot.version.load(Ordering::Relaxed);
    debug_assert!(version & 1 == 1, "an occupancy bit is set only for a live slot");
    // Relaxed: as above. A live slot's value word is never null (slot.rs).
    let ptr = slot.value.load(Ordering::Relaxed);
    (key_of(index as u32, version), slot, ptr)
}

/// Iterator over the live entries of a map with mutable references; see
/// [`SlotMap::iter_mut`].
///
/// ```
/// let mut map = epoch_slotmap::SlotMap::new();
/// map.insert(1);
/// let mut iter: epoch_slotmap::IterMut<'_, _, i32> = map.iter_mut();
/// assert_eq!(iter.len(), 1);
/// *iter.next().unwrap().1 += 1;
/// ```
pub struct IterMut<'a, K: Key, V> {
    shared: &'a Shared<V>,
    cursor: LiveCursor,
    left: usize,
    _map: PhantomData<&'a mut SlotMap<K, V>>,
}

impl<'a, K: Key, V> IterMut<'a, K, V> {
    pub(crate) fn new(map: &'a mut SlotMap<K, V>) -> Self {
        map.settle_exclusive();
        let left = map.shared.pages.occupied_count();
        Self { shared: &map.shared, cursor: LiveCursor::default(), left, _map: PhantomData }
    }
}

impl<'a, K: Key, V> Iterator for IterMut<'a, K, V> {
    type Item = (K, &'a mut V);

    fn next(&mut self) -> Option<(K, &'a mut V)> {
        let index = self.cursor.next_index(&self.shared.pages)?;
        self.left -= 1;
        let (key, _, ptr) = live(self.shared, index);
        // SAFETY: the map is borrowed mutably for 'a, and each live slot is visited once, so
        // the reference is unique; the value is live (module invariant).
        Some((key, unsafe { &mut *ptr }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K: Key, V> ExactSizeIterator for IterMut<'_, K, V> {}
impl<K: Key, V> FusedIterator for IterMut<'_, K, V> {}

impl<K: Key, V> fmt::Debug for IterMut<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IterMut").field("left", &self.left).finish_non_exhaustive()
    }
}

/// Iterator over the live values of a map, mutably; see [`SlotMap::values_mut`].
///
/// ```
/// let mut map = epoch_slotmap::SlotMap::new();
/// map.insert(1);
/// let values: epoch_slotmap::ValuesMut<'_, _, i32> = map.values_mut();
/// assert_eq!(values.len(), 1);
/// ```
pub struct ValuesMut<'a, K: Key, V>(pub(crate) IterMut<'a, K, V>);

impl<'a, K: Key, V> Iterator for ValuesMut<'a, K, V> {
    type Item = &'a mut V;

    fn next(&mut self) -> Option<&'a mut V> {
        self.0.next().map(|(_, v)| v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K: Key, V> ExactSizeIterator for ValuesMut<'_, K, V> {}
impl<K: Key, V> FusedIterator for ValuesMut<'_, K, V> {}

impl<K: Key, V> fmt::Debug for ValuesMut<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValuesMut").field(&self.0).finish()
    }
}

/// Recycled slots of one page, linked through `aux`, pushed onto a free list at once.
#[derive(Clone, Copy)]
struct Chain {
    first: u32,
    last: u32,
}

/// Takes live slot `index` out of an exclusively held map whose cursor (`LiveCursor::taking`)
/// already cleared its occupancy bit: its key dies (version made even) and its value is moved
/// out. With `recycle`, the slot joins the chains to push onto that shard (or is counted there
/// as retired for good); without, the map is going away.
fn take_live<K: Key, V>(
    shared: &Shared<V>,
    index: usize,
    recycle: Option<(&Shard<V>, &mut [Chain; PAGES])>,
) -> (K, V) {
    let slot = shared.slot(index as u32);
    // Relaxed (every access): the map is held exclusively (module invariant).
    let version = slot.version.load(Ordering::Relaxed);
    debug_assert!(version & 1 == 1, "an occupancy bit is set only for a live slot");
    let dead = version.wrapping_add(1);
    slot.version.store(dead, Ordering::Relaxed);
    let ptr = slot.value.load(Ordering::Relaxed);
    slot.value.store(std::ptr::null_mut(), Ordering::Relaxed);
    let value = if slot.holds_inline(ptr) {
        // SAFETY: a live slot's inline value, taken once (the value word is null now), with
        // the map held exclusively.
        unsafe { ptr.read() }
    } else {
        // SAFETY: any other value pointer is a boxed `Retired` node from `Retired::boxed`,
        // owned by the slot until now (the value word is null now).
        let node = unsafe { Box::from_raw(ptr.cast::<Retired<V>>()) };
        // SAFETY: a boxed value node holds an initialised value.
        unsafe { node.value.assume_init_read() }
    };
    if let Some((shard, chains)) = recycle {
        let aux = slot.aux.load(Ordering::Relaxed);
        if dead == 0 {
            // Relaxed: a statistic.
            shard.counters.retired_slots.fetch_add(1, Ordering::Relaxed);
        } else if aux & INLINE_PENDING == 0 || shared.drops_done(index as u32) {
            // (Otherwise a note for a replaced inline value still waits in crossbeam's queue:
            // exclusive access runs what is on the stacks, not what was already deferred, and
            // that note's runner recycles the slot.)
            let chain = &mut chains[locate_page(index)];
            // Relaxed: published by the Release push of the chain.
            slot.aux.store(chain.first, Ordering::Relaxed);
            if chain.last == NIL {
                chain.last = index as u32;
            }
            chain.first = index as u32;
        }
    }
    (key_of(index as u32, version), value)
}

/// Pushes `chains` onto `shard`'s free lists and empties them.
fn push_chains<V>(shared: &Shared<V>, shard: &Shard<V>, chains: &mut [Chain; PAGES]) {
    for (page, chain) in chains.iter_mut().enumerate() {
        if chain.first != NIL {
            shard.free.push_chain(&shared.pages, page, chain.first, chain.last);
            *chain = Chain { first: NIL, last: NIL };
        }
    }
}

/// Removes every entry of a map and yields it; see [`SlotMap::drain`]. Entries it does not
/// reach (it was dropped early) are removed and dropped too.
///
/// ```
/// let mut map = epoch_slotmap::SlotMap::new();
/// map.insert('x');
/// let drain: epoch_slotmap::Drain<'_, _, char> = map.drain();
/// assert_eq!(drain.len(), 1);
/// ```
pub struct Drain<'a, K: Key, V> {
    map: &'a mut SlotMap<K, V>,
    shard: *const Shard<V>,
    cursor: LiveCursor,
    left: usize,
    chains: [Chain; PAGES],
}

impl<'a, K: Key, V> Drain<'a, K, V> {
    pub(crate) fn new(map: &'a mut SlotMap<K, V>) -> Self {
        map.settle_exclusive();
        let left = map.shared.pages.occupied_count();
        let shard: *const Shard<V> = map.own_shard();
        Self {
            map,
            shard,
            cursor: LiveCursor::taking(),
            left,
            chains: [Chain { first: NIL, last: NIL }; PAGES],
        }
    }
}

impl<K: Key, V> Iterator for Drain<'_, K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        let Some(index) = self.cursor.next_index(&self.map.shared.pages) else {
            // SAFETY: the shard is the map's (`own_shard`), alive as long as the map.
            push_chains(&self.map.shared, unsafe { &*self.shard }, &mut self.chains);
            return None;
        };
        self.left -= 1;
        // SAFETY: the shard is the map's (`own_shard`), alive as long as the map.
        let shard = unsafe { &*self.shard };
        Some(take_live(&self.map.shared, index, Some((shard, &mut self.chains))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K: Key, V> ExactSizeIterator for Drain<'_, K, V> {}
impl<K: Key, V> FusedIterator for Drain<'_, K, V> {}

impl<K: Key, V> Drop for Drain<'_, K, V> {
    fn drop(&mut self) {
        // The walk must end (`next` pushes the drained slots back when it does, and the cursor
        // has cleared the current word's bits already), even if a value's `Drop` panics.
        drop_rest(self);
    }
}

/// Drops every entry `entries` still yields, containing panics in their `Drop` until the
/// iterator is exhausted, then re-raises the first (as the map's own drop does).
fn drop_rest<T>(entries: &mut impl Iterator<Item = T>) {
    let mut first_panic = None;
    for entry in entries {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(entry))) {
            match first_panic {
                None => first_panic = Some(panic),
                Some(_) => crate::retire::drop_payload(panic),
            }
        }
    }
    if let Some(panic) = first_panic {
        resume_unwind(panic);
    }
}

impl<K: Key, V> fmt::Debug for Drain<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").field("left", &self.left).finish_non_exhaustive()
    }
}

/// The owning iterator of a [`SlotMap`]: yields every live entry.
///
/// ```
/// let map = epoch_slotmap::SlotMap::new();
/// let k = map.insert(5);
/// let entries: Vec<_> = map.into_iter().collect();
/// assert_eq!(entries, [(k, 5)]);
/// ```
pub struct IntoIter<K: Key, V> {
    map: SlotMap<K, V>,
    cursor: LiveCursor,
    left: usize,
}

impl<K: Key, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        let index = self.cursor.next_index(&self.map.shared.pages)?;
        self.left -= 1;
        Some(take_live(&self.map.shared, index, None))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K: Key, V> Drop for IntoIter<K, V> {
    fn drop(&mut self) {
        // The cursor clears a word's bits before it yields their slots: finish the walk, even
        // past a panicking `Drop`, or the map's drop (which visits set bits) would miss the rest
        // of the current word.
        drop_rest(self);
    }
}

impl<K: Key, V> ExactSizeIterator for IntoIter<K, V> {}
impl<K: Key, V> FusedIterator for IntoIter<K, V> {}

impl<K: Key, V> fmt::Debug for IntoIter<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter").field("left", &self.left).finish_non_exhaustive()
    }
}

impl<K: Key, V> IntoIterator for SlotMap<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    fn into_iter(mut self) -> IntoIter<K, V> {
        self.settle_exclusive();
        let left = self.shared.pages.occupied_count();
        IntoIter { map: self, cursor: LiveCursor::taking(), left }
    }
}

impl<'a, K: Key, V> IntoIterator for &'a mut SlotMap<K, V> {
    type Item = (K, &'a mut V);
    type IntoIter = IterMut<'a, K, V>;

    fn into_iter(self) -> IterMut<'a, K, V> {
        IterMut::new(self)
    }
}
