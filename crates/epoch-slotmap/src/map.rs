//! `SlotMap`: the public face of the engine.
//!
//! Invariant: every operation is one of the version protocol's transitions (slot.rs), made
//! through the page table (page.rs), the free list (free_list.rs) and retirement (retire.rs);
//! readers go through a [`Guard`]. Methods taking `&mut self` may skip grace periods: an
//! exclusive borrow means no guard exists.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use slotmap::{DefaultKey, Key, KeyData};

use crate::domain::Domain;
use crate::growth::Grow;
use crate::guard::Guard;
use crate::page::{MAX_SLOTS, locate};
use crate::retire::{Shared, SharedBox};
use crate::slot::{FRESH_VERSION, Retired, Slot};
use crate::sync::{Ordering, yield_now};

/// Above this many pending values, writers help reclaim (see `run_batches`): six batches of
/// 128. A constant, not six times `BATCH`: under loom and Miri batches are 2 retirements, and a
/// high-water mark of 12 there would send every writer into its help rounds (yields and
/// collects) all the time: the shrink stress test under Miri had not finished after 10 minutes.
const PENDING_HIGH_WATER: usize = 768;
/// How many rounds of help a writer gives at most per batch.
const HELP_ROUNDS: usize = 64;

/// Index and version of a key.
#[inline(always)]
pub(crate) fn split<K: Key>(key: K) -> (u32, u32) {
    let ffi = key.data().as_ffi();
    (ffi as u32, (ffi >> 32) as u32)
}

/// The key of slot `index` at `version` (odd).
#[inline(always)]
pub(crate) fn key_of<K: Key>(index: u32, version: u32) -> K {
    KeyData::from_ffi((u64::from(version) << 32) | u64::from(index)).into()
}

/// A snapshot of a map's counters; see [`SlotMap::stats`].
///
/// Under concurrent writes the fields are read one after another, not atomically together.
///
/// ```
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::new();
/// let k = map.insert(1);
/// map.remove(k);
/// map.reclaim();
/// let stats = map.stats();
/// assert_eq!((stats.len, stats.pending), (0, 0));
/// assert!(stats.capacity >= 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Live values.
    pub len: usize,
    /// Slots allocated (in pages).
    pub capacity: usize,
    /// Slots ready for an insert without allocating.
    pub vacant: usize,
    /// Slots retired for good because their version would have wrapped.
    pub retired: usize,
    /// Values removed or replaced whose drop has not run yet.
    pub pending: usize,
}

/// The error of [`SlotMap::try_insert`] when the map is full; it carries the value back.
///
/// ```
/// use epoch_slotmap::{DefaultKey, SlotMap};
///
/// let map = SlotMap::<DefaultKey, String>::with_max_capacity(1);
/// map.insert("a".into());
/// let err = map.try_insert("b".into()).unwrap_err();
/// assert_eq!(err.to_string(), "slot map is full");
/// assert_eq!(err.into_inner(), "b");
/// ```
pub struct InsertError<V>(V);

impl<V> InsertError<V> {
    /// The value that was not inserted.
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map = SlotMap::<DefaultKey, u8>::with_max_capacity(0);
    /// assert_eq!(map.try_insert(9).unwrap_err().into_inner(), 9);
    /// ```
    pub fn into_inner(self) -> V {
        self.0
    }
}

impl<V> fmt::Debug for InsertError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError").finish_non_exhaustive()
    }
}

impl<V> fmt::Display for InsertError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("slot map is full")
    }
}

impl<V> std::error::Error for InsertError<V> {}

/// A concurrent generational slot map with lock-free reads and epoch-based reclamation.
///
/// Values live inline in slots; a key is `(index, version)`. Removing a value kills its key
/// at once; the value is dropped, and its slot recycled, once no [`Guard`] that could see it
/// is left. Read with [`pin`](Self::pin); write through `&self` from any thread.
///
/// ```
/// use epoch_slotmap::SlotMap;
///
/// let rules = SlotMap::new();
/// let allow = rules.insert("allow 10.0.0.0/8");
/// let deny = rules.insert("deny all");
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let guard = rules.pin();
///         assert_eq!(guard.get(deny), Some(&"deny all"));
///     });
///     s.spawn(|| assert!(rules.remove(allow)));
/// });
/// rules.reclaim(); // the removed value has been dropped when this returns
/// assert_eq!(rules.stats().pending, 0);
/// ```
pub struct SlotMap<K: Key, V> {
    pub(crate) shared: SharedBox<V>,
    domain: Domain,
    _key: PhantomData<fn(K) -> K>,
}

// SAFETY: moving the map moves ownership of its values (hence `V: Send`); deferred drops run
// on whichever thread collects, which is one that pinned this map, so only after the map (and
// its values) could reach that thread.
unsafe impl<K: Key, V: Send> Send for SlotMap<K, V> {}
// SAFETY: `&SlotMap` lets other threads read values by reference (`V: Sync`) and insert,
// remove or drop them on other threads (`V: Send`). All shared state is atomics, slots
// handed over through the version protocol, or the domain (domain.rs invariants).
unsafe impl<K: Key, V: Send + Sync> Sync for SlotMap<K, V> {}

impl<V> SlotMap<DefaultKey, V> {
    /// An empty map with [`DefaultKey`] keys. Allocates nothing until the first insert.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::<_, u64>::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_key()
    }

    /// An empty map with slot pages for `capacity` values allocated up front.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::<_, u64>::with_capacity(1000);
    /// assert!(map.capacity() >= 1000);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_key(capacity)
    }
}

impl<K: Key, V> Default for SlotMap<K, V> {
    fn default() -> Self {
        Self::with_key()
    }
}

impl<K: Key, V> SlotMap<K, V> {
    pub(crate) fn build(capacity: usize, max_slots: usize, first_version: u32) -> Self {
        let map = Self {
            shared: SharedBox::new(Shared::new(
                max_slots.min(MAX_SLOTS),
                (first_version & !1).max(FRESH_VERSION),
            )),
            domain: Domain::new(),
            _key: PhantomData,
        };
        let capacity = capacity.min(map.shared.max_slots);
        if capacity > 0 {
            let (last_page, _) = locate(capacity - 1);
            // Highest page first, so the lowest slots end up on top of the free list.
            for page in (0..=last_page).rev() {
                map.shared.install_page(page, false);
            }
        }
        map
    }

    /// An empty map with a custom key type (see [`new_key_type!`](crate::new_key_type)).
    ///
    /// ```
    /// epoch_slotmap::new_key_type! { struct RouteId; }
    /// let routes = epoch_slotmap::SlotMap::<RouteId, &str>::with_key();
    /// let id: RouteId = routes.insert("/healthz");
    /// assert_eq!(routes.get_cloned(id), Some("/healthz"));
    /// ```
    pub fn with_key() -> Self {
        Self::build(0, MAX_SLOTS, 0)
    }

    /// An empty map with a custom key type and room for `capacity` values up front.
    ///
    /// ```
    /// epoch_slotmap::new_key_type! { struct RouteId; }
    /// let routes = epoch_slotmap::SlotMap::<RouteId, u8>::with_capacity_and_key(64);
    /// assert!(routes.capacity() >= 64);
    /// ```
    pub fn with_capacity_and_key(capacity: usize) -> Self {
        Self::build(capacity, MAX_SLOTS, 0)
    }

    /// An empty map that never holds more than `max` slots: once they are all in use,
    /// [`try_insert`](Self::try_insert) hands the value back. (Without a limit, the map holds
    /// up to about 2^30 slots.)
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let acl = SlotMap::<DefaultKey, u32>::with_max_capacity(2);
    /// acl.insert(1);
    /// acl.insert(2);
    /// assert!(acl.try_insert(3).is_err());
    /// ```
    pub fn with_max_capacity(max: usize) -> Self {
        Self::build(0, max, 0)
    }

    /// Loom support: a map on the minimal grace-period reclaimer instead of crossbeam-epoch,
    /// so a model can explore the slot protocol without crossbeam's state space. Not part of
    /// the stable API.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer() -> Self {
        let mut map = Self::build(0, MAX_SLOTS, 0);
        map.domain = Domain::new_grace();
        map
    }

    /// Loom support: `with_grace_reclaimer` with fresh slots starting at version `first`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer_and_first_version(first: u32) -> Self {
        let mut map = Self::build(0, MAX_SLOTS, first);
        map.domain = Domain::new_grace();
        map
    }

    /// Test support: a map whose fresh slots start at version `first` (rounded down to
    /// even, at least 2), to reach the version limit quickly. Not part of the stable API.
    #[doc(hidden)]
    pub fn with_first_version(first: u32) -> Self {
        Self::build(0, MAX_SLOTS, first)
    }

    /// A vacant slot this caller now owns exclusively: its index and the slot.
    #[inline(always)]
    fn alloc_slot(&self) -> Option<(u32, &Slot<V>)> {
        {
            // Pinned: the pop reads a slot whose page `shrink_to_fit` may release.
            let _pin = self.domain.pin();
            if let Some(popped) = self.shared.free.pop(&self.shared.pages) {
                return Some(popped);
            }
        }
        self.alloc_slot_by_growing()
    }

    /// `alloc_slot` once the free list was found empty: install a page, or pop again after
    /// losing the race to install one.
    #[inline(never)]
    fn alloc_slot_by_growing(&self) -> Option<(u32, &Slot<V>)> {
        loop {
            match self.shared.grow() {
                Grow::Installed(index) => return Some((index, self.shared.slot(index))),
                // Another thread installed that page: its slots are on the free list (or
                // about to be, or already taken); pop again.
                Grow::Lost => {}
                Grow::Full => return None,
            }
            // Pinned: as in `alloc_slot`.
            let _pin = self.domain.pin();
            if let Some(popped) = self.shared.free.pop(&self.shared.pages) {
                return Some(popped);
            }
        }
    }

    /// `alloc_slot`, and when the map is at its limit, one non-blocking attempt to recycle
    /// what is pending.
    #[inline(always)]
    fn alloc_slot_or_collect(&self) -> Option<(u32, &Slot<V>)> {
        // No shortcut on `pending() == 0`: that statistic can read low while a batch is
        // being taken, and a map at its limit must not report "full" with slots in flight.
        self.alloc_slot().or_else(|| self.alloc_slot_after_collecting())
    }

    /// The map is at its limit: recycle what is pending, then try once more.
    #[cold]
    #[inline(never)]
    fn alloc_slot_after_collecting(&self) -> Option<(u32, &Slot<V>)> {
        self.try_reclaim();
        self.alloc_slot()
    }

    /// Inserts a value and returns its key. Lock-free; allocates only when a new page is
    /// needed.
    ///
    /// # Panics
    /// If the map is full (about 2^30 slots, or the limit of
    /// [`with_max_capacity`](Self::with_max_capacity)); use
    /// [`try_insert`](Self::try_insert) to get the value back instead.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert("v");
    /// assert_eq!(map.get_cloned(k), Some("v"));
    /// ```
    pub fn insert(&self, value: V) -> K {
        match self.try_insert(value) {
            Ok(key) => key,
            Err(_) => panic!("epoch_slotmap::SlotMap::insert: the map is full"),
        }
    }

    /// Inserts a value, or gives it back in an [`InsertError`] if the map is full.
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map = SlotMap::<DefaultKey, _>::with_max_capacity(1);
    /// assert!(map.try_insert('a').is_ok());
    /// assert_eq!(map.try_insert('b').unwrap_err().into_inner(), 'b');
    /// ```
    pub fn try_insert(&self, value: V) -> Result<K, InsertError<V>> {
        let Some((index, slot)) = self.alloc_slot_or_collect() else {
            return Err(InsertError(value));
        };
        Ok(self.publish(index, slot, |_| value))
    }

    /// Inserts the value `f` makes from its own key.
    ///
    /// If `f` panics, the slot goes back to the free list and the map is unchanged.
    ///
    /// # Panics
    /// If the map is full, like [`insert`](Self::insert).
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert_with_key(|k: DefaultKey| format!("rule {k:?}"));
    /// assert_eq!(map.get_cloned(k), Some(format!("rule {k:?}")));
    /// ```
    pub fn insert_with_key(&self, f: impl FnOnce(K) -> V) -> K {
        let Some((index, slot)) = self.alloc_slot_or_collect() else {
            panic!("epoch_slotmap::SlotMap::insert_with_key: the map is full");
        };
        self.publish(index, slot, f)
    }

    /// Writes the value into `slot`, which is slot `index` and owned by the caller, and makes
    /// its key live.
    #[inline(always)]
    fn publish(&self, index: u32, slot: &Slot<V>, f: impl FnOnce(K) -> V) -> K {
        // Relaxed: the slot is ours (popped from the free list, or fresh).
        let version = slot.version.load(Ordering::Relaxed).wrapping_add(1);
        let key = key_of(index, version);

        /// Gives the slot back if `f` panics.
        struct GiveBack<'a, V> {
            shared: &'a Shared<V>,
            index: u32,
        }
        impl<V> Drop for GiveBack<'_, V> {
            fn drop(&mut self) {
                // The slot was never published, so no reader saw it; but `f` saw its key and
                // may have kept it. Skip that version so the key never comes alive.
                let slot = self.shared.slot(self.index);
                // Relaxed: the slot is still ours; the push below publishes the store.
                let skipped = slot.version.load(Ordering::Relaxed).wrapping_add(2);
                slot.version.store(skipped, Ordering::Relaxed);
                self.shared.recycle(self.index);
            }
        }
        let give_back = GiveBack { shared: &self.shared, index };
        let value = f(key);
        std::mem::forget(give_back);

        // SAFETY: the slot is exclusively ours (free-list invariant, or a fresh index handed
        // out once); its inline storage holds no value (dropped before it was recycled).
        unsafe { slot.inline_mut().write(value) };
        // Relaxed: published by the Release version store below.
        slot.value.store(slot.inline_mut(), Ordering::Relaxed);
        // Before the key is live, so the remover's clear (after its CAS) comes after it.
        self.shared.pages.set_occupied(index, true);
        // Release pairs with the Acquire version loads of readers and removers.
        // (Mutant for the loom suite: Relaxed publication.)
        let publish = if cfg!(epoch_slotmap_mutant = "relaxed_publish") {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        slot.version.store(version, publish);
        key
    }

    /// Pins this thread and returns a [`Guard`] to read through. Lock-free; after the first
    /// call on a thread it neither allocates nor registers.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let a = map.insert(1);
    /// let b = map.insert(2);
    /// let guard = map.pin(); // one pin for a batch of lookups
    /// assert_eq!(guard.get(a).unwrap() + guard.get(b).unwrap(), 3);
    /// ```
    #[inline]
    pub fn pin(&self) -> Guard<'_, K, V> {
        Guard { map: self, _pin: self.domain.pin() }
    }

    /// Whether `key` is live. Lock-free (it pins internally).
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// assert!(map.contains_key(k));
    /// ```
    #[inline]
    pub fn contains_key(&self, key: K) -> bool {
        let (index, version) = split(key);
        // Pinned: the slot's page may be released by `shrink_to_fit` if the key is stale.
        let _pin = self.domain.pin();
        match self.shared.pages.slot(index) {
            // Acquire pairs with insert's Release version store.
            Some(slot) => slot.version.load(Ordering::Acquire) == version,
            None => false,
        }
    }

    /// A clone of the value of `key`, if it is live.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(vec![1, 2]);
    /// assert_eq!(map.get_cloned(k), Some(vec![1, 2]));
    /// ```
    pub fn get_cloned(&self, key: K) -> Option<V>
    where
        V: Clone,
    {
        self.pin().get(key).cloned()
    }

    /// Removes the value of `key`: the key is dead when this returns, the value is dropped
    /// once no guard can see it. Returns whether `key` was live. Lock-free.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// assert!(map.remove(k));
    /// assert!(!map.remove(k));
    /// ```
    pub fn remove(&self, key: K) -> bool {
        let (index, version) = split(key);
        let Some(slot) = self.unlink(index, version) else {
            return false;
        };
        if self.shared.retire_removed(index, slot) {
            self.run_batches();
        }
        true
    }

    /// Takes what is retired into a batch, then (unpinned) runs the batches that are ripe.
    fn run_batches(&self) {
        self.shared.take_batch(&self.domain, &self.domain.pin());
        self.domain.settle();
        self.shared.run_ripe();
        // Back-pressure: when retirements outrun reclamation (another thread was descheduled
        // while pinned, say), help for a bounded number of rounds. Yielding lets that thread
        // run and unpin; the bound keeps this lock-free.
        for _ in 0..HELP_ROUNDS {
            if self.shared.pending() <= PENDING_HIGH_WATER {
                break;
            }
            yield_now();
            self.collect();
        }
    }

    /// Lets the epoch advance past this thread and runs what has ripened.
    fn collect(&self) {
        self.domain.collect();
        self.shared.run_ripe();
    }

    /// The remove transition: version `v` (odd) to `v + 1`. Exactly one caller wins, and
    /// gets the slot, which it owns from then on (so its page stays after the pin).
    #[inline(always)]
    fn unlink(&self, index: u32, version: u32) -> Option<&Slot<V>> {
        // Pinned: a stale key's page may be released by `shrink_to_fit`. Once the CAS below
        // succeeds the slot is ours (not vacant), so its page stays.
        let _pin = self.domain.pin();
        let slot = self.shared.pages.slot_by_bias(index)?;
        if version & 1 == 0 {
            return None;
        }
        let next = if cfg!(epoch_slotmap_mutant = "remove_keeps_version") {
            version
        } else {
            version.wrapping_add(1)
        };
        // AcqRel: Acquire pairs with insert's Release (the slot's contents are ours to hand
        // to retirement); Release orders the kill before the retirement push.
        if slot.version.compare_exchange(version, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return None;
        }
        self.shared.pages.set_occupied(index, false);
        Some(slot)
    }

    /// Removes the value of `key` and returns it, once no guard can see it any more: this
    /// waits for guards other threads hold.
    ///
    /// If the calling thread itself holds a guard of this map, waiting would never end: then
    /// `take` leaves the map unchanged and returns `None`. Drop your guards first.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(String::from("owned"));
    /// assert_eq!(map.take(k), Some(String::from("owned")));
    /// assert_eq!(map.take(k), None);
    /// ```
    pub fn take(&self, key: K) -> Option<V> {
        if self.domain.is_pinned_here() {
            return None;
        }
        let (index, version) = split(key);
        self.unlink(index, version)?;
        if !cfg!(epoch_slotmap_mutant = "take_without_wait") {
            self.domain.synchronize();
        }
        // SAFETY: we won the remove transition and a grace period has passed: no reader can
        // see the value, and no one else retires this slot.
        let value = unsafe { self.shared.drop_current(index) };
        self.shared.finish_drop(index);
        value
    }

    /// Replaces the value of `key`, keeping the key. Readers see the old value or the new
    /// one, whole. Returns the value back if `key` is not live. Lock-free.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// assert_eq!(map.replace(k, 2), Ok(()));
    /// assert_eq!(map.get_cloned(k), Some(2));
    /// map.remove(k);
    /// assert_eq!(map.replace(k, 3), Err(3));
    /// ```
    pub fn replace(&self, key: K, value: V) -> Result<(), V> {
        let (index, version) = split(key);
        let guard = self.domain.pin();
        let Some(slot) = self.shared.pages.slot_by_bias(index) else {
            return Err(value);
        };
        // Acquire pairs with insert's Release version store.
        if version & 1 == 0 || slot.version.load(Ordering::Acquire) != version {
            return Err(value);
        }
        let node = Retired::boxed(value).cast::<V>();
        // AcqRel: Release publishes the new node to readers' Acquire loads; Acquire sees the
        // old value's pointer as published. While we are pinned after seeing the version
        // live, the slot cannot be recycled, so the old pointer belongs to this key.
        let old = slot.value.swap(node, Ordering::AcqRel);
        let due = self.shared.retire_replaced(index, old);
        drop(guard);
        if due {
            self.run_batches();
        }
        Ok(())
    }

    /// Replaces the value of `key` with `f(&old)`, read-copy-update style: `f` may run again
    /// if another writer replaced the value meanwhile, so no update is lost. Returns whether
    /// `key` was live. A panic in `f` leaves the map unchanged.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let hits = map.insert(0u64);
    /// assert!(map.update(hits, |n| n + 1));
    /// assert_eq!(map.get_cloned(hits), Some(1));
    /// ```
    pub fn update(&self, key: K, mut f: impl FnMut(&V) -> V) -> bool {
        let (index, version) = split(key);
        let guard = self.domain.pin();
        let Some(slot) = self.shared.pages.slot_by_bias(index) else {
            return false;
        };
        loop {
            let Some(current) = slot.load_live(version) else {
                return false;
            };
            // SAFETY: read while pinned after seeing the key live (guard.rs invariant).
            let node = Retired::boxed(f(unsafe { &*current })).cast::<V>();
            // AcqRel: as in `replace`; Acquire on failure to read the newer pointer.
            match slot.value.compare_exchange(current.cast_mut(), node, Ordering::AcqRel, Ordering::Acquire) {
                Ok(old) => {
                    let due = self.shared.retire_replaced(index, old);
                    drop(guard);
                    if due {
                        self.run_batches();
                    }
                    return true;
                }
                Err(_) => {
                    // SAFETY: the node was never published; we own it.
                    let node = unsafe { Box::from_raw(node.cast::<Retired<V>>()) };
                    // SAFETY: `Retired::boxed` initialised the value.
                    drop(unsafe { node.value.assume_init_read() });
                }
            }
        }
    }

    /// Removes every entry for which `f` returns false; returns how many it removed.
    /// Concurrent inserts may or may not be visited. A panic in `f` leaves the map
    /// consistent (entries already removed stay removed).
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// for i in 0..10 {
    ///     map.insert(i);
    /// }
    /// assert_eq!(map.retain(|_, v| v % 2 == 0), 5);
    /// assert_eq!(map.len(), 5);
    /// ```
    pub fn retain(&self, mut f: impl FnMut(K, &V) -> bool) -> usize {
        let guard = self.pin();
        let mut removed = 0;
        for (key, value) in guard.iter() {
            if !f(key, value) && self.remove(key) {
                removed += 1;
            }
        }
        removed
    }

    /// Removes every entry.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert(1);
    /// map.clear();
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    /// Number of live values: a count of the occupancy bits, one load per 64 slots (no
    /// counter is shared by writers). Lock-free; under concurrent writes, a value inserted
    /// or removed meanwhile may or may not be counted.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert(1);
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        // Pinned: a page's occupancy words are freed with the page.
        let _pin = self.domain.pin();
        self.shared.pages.occupied_count()
    }

    /// Whether the map has no live values.
    ///
    /// ```
    /// assert!(epoch_slotmap::SlotMap::<_, ()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots allocated.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::<_, ()>::new();
    /// assert_eq!(map.capacity(), 0);
    /// map.insert(());
    /// assert!(map.capacity() >= 1);
    /// ```
    pub fn capacity(&self) -> usize {
        // Relaxed: a statistic.
        self.shared.counters.capacity.load(Ordering::Relaxed)
    }

    /// Returns once every value removed or replaced before the call has been dropped (and
    /// its slot recycled), waiting for guards other threads hold.
    ///
    /// If the calling thread itself holds a guard of this map, waiting could never end:
    /// then `reclaim` only starts the reclamation of everything retired so far (what no guard
    /// can see is dropped) and returns without waiting.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// for i in 0..100 {
    ///     let k = map.insert(i);
    ///     map.remove(k);
    /// }
    /// map.reclaim();
    /// assert_eq!(map.stats().pending, 0);
    /// ```
    pub fn reclaim(&self) {
        if self.domain.is_pinned_here() {
            self.run_batches();
            self.collect();
            return;
        }
        let _serial = self.shared.reclaim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.run_batches();
        let parity = self.shared.advance_generation();
        if cfg!(epoch_slotmap_mutant = "reclaim_without_wait") {
            return;
        }
        while self.shared.in_flight(parity) != 0 {
            self.collect();
            if self.shared.in_flight(parity) == 0 {
                break;
            }
            yield_now();
        }
        self.domain.drain();
    }

    /// Starts reclaiming everything retired so far and runs what no guard can see any more,
    /// without blocking. Returns how many values are still pending.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// map.remove(k);
    /// let still_pending = map.try_reclaim();
    /// assert!(still_pending <= 1);
    /// ```
    pub fn try_reclaim(&self) -> usize {
        self.run_batches();
        self.collect();
        self.collect();
        self.shared.pending()
    }

    /// Gives back the memory of every page whose slots are all vacant (the first page
    /// stays); `stats().capacity` drops by the slots released. Runs concurrently with readers and writers; readers stay lock-free.
    ///
    /// Only vacant slots count: call [`reclaim`](Self::reclaim) first so that removed
    /// values waiting for their grace period are recycled. A released page's memory is freed
    /// through the map's reclamation domain; like `reclaim`, this waits until that has
    /// happened, unless the calling thread holds a guard of this map (then the memory goes
    /// once that guard and every other older one is gone). Keys into a released page stay
    /// dead: when the page is allocated again, its versions start above every version it
    /// handed out before.
    ///
    /// Inserts racing with `shrink_to_fit` find the free list empty for a moment and may
    /// allocate a page.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let keys: Vec<_> = (0..100_000).map(|i| map.insert(i)).collect();
    /// for &k in &keys {
    ///     map.remove(k);
    /// }
    /// map.reclaim();
    /// let before = map.allocated_bytes();
    /// map.shrink_to_fit();
    /// assert!(map.allocated_bytes() < before / 1000);
    /// assert!(keys.iter().all(|&k| !map.contains_key(k)));
    /// let k = map.insert(7); // the map grows again as needed
    /// assert_eq!(map.get_cloned(k), Some(7));
    /// ```
    pub fn shrink_to_fit(&self) {
        {
            let _serial = self.shared.reclaim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.shared.release_vacant_pages(&self.domain);
        }
        if self.domain.is_pinned_here() {
            return;
        }
        while self.shared.pages_releasing() != 0 {
            self.collect();
            if self.shared.pages_releasing() == 0 {
                break;
            }
            yield_now();
        }
    }

    /// Bytes of slot pages the map holds now (values inline in them included; memory values
    /// own behind pointers, and boxed replacements, not).
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::<_, u64>::with_capacity(1000);
    /// assert!(map.allocated_bytes() >= 1000 * 24);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        // Pinned: a page may be released meanwhile.
        let _pin = self.domain.pin();
        self.shared.pages.allocated_bytes()
    }

    /// A snapshot of the map's counters.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert("x");
    /// assert_eq!(map.stats().len, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let len = self.len();
        // Relaxed: statistics.
        let capacity = c.capacity.load(Ordering::Relaxed);
        let retired = c.retired_slots.load(Ordering::Relaxed);
        let pending = self.shared.pending();
        let removing = self.shared.removing();
        let vacant = capacity.saturating_sub(len + retired + removing);
        Stats { len, capacity, vacant, retired, pending }
    }

    /// A mutable reference to the value of `key`, if live. No pin: `&mut` excludes readers.
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// *map.get_mut(k).unwrap() += 1;
    /// assert_eq!(map.get_cloned(k), Some(2));
    /// ```
    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let (index, version) = split(key);
        let ptr = self.shared.pages.slot(index)?.load_live(version)?;
        // SAFETY: the key is live and `&mut self` excludes every other access to the value.
        Some(unsafe { &mut *ptr.cast_mut() })
    }

    /// Iterates over live entries with mutable references.
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// map.insert(1);
    /// map.insert(2);
    /// for (_, v) in map.iter_mut() {
    ///     *v *= 10;
    /// }
    /// let mut values: Vec<_> = map.pin().iter().map(|(_, v)| *v).collect();
    /// values.sort();
    /// assert_eq!(values, [10, 20]);
    /// ```
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        let shared: &Shared<V> = &self.shared;
        shared
            .pages
            .pages()
            .flat_map(|(start, slots)| slots.iter().enumerate().map(move |(i, s)| (start + i, s)))
            .filter_map(|(index, slot)| {
                // Relaxed: `&mut self` orders every earlier write.
                let version = slot.version.load(Ordering::Relaxed);
                if version & 1 == 0 {
                    return None;
                }
                let ptr = slot.load_live(version)?;
                // SAFETY: `&mut self` is exclusive and each slot is visited once, so the
                // references are unique.
                Some((key_of(index as u32, version), unsafe { &mut *ptr.cast_mut() }))
            })
    }

    /// Removes every entry and yields it. Entries the iterator does not reach (it was dropped
    /// early) are removed and dropped too. Keys stay dead afterwards.
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert('x');
    /// assert_eq!(map.drain().collect::<Vec<_>>(), [(k, 'x')]);
    /// assert!(map.is_empty() && !map.contains_key(k));
    /// ```
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> {
        let end = self.fresh_end();
        Drain { map: self, next: 0, end }
    }

    /// One past the highest slot index of an existing page (`&mut self`: no page can go).
    fn fresh_end(&self) -> usize {
        self.shared.pages.end()
    }

    /// Takes the value out of slot `index` if it is live (exclusive access).
    fn take_at(&mut self, index: usize) -> Option<(K, V)> {
        let slot = self.shared.pages.slot(index as u32)?;
        // Relaxed: `&mut self`.
        let version = slot.version.load(Ordering::Relaxed);
        if version & 1 == 0 {
            return None;
        }
        // Relaxed: `&mut self`.
        slot.version.store(version.wrapping_add(1), Ordering::Relaxed);
        self.shared.pages.set_occupied(index as u32, false);
        // SAFETY: the version is even now and `&mut self` excludes readers.
        let value = unsafe { self.shared.drop_current(index as u32) }?;
        self.shared.finish_drop(index as u32);
        Some((key_of(index as u32, version), value))
    }
}

struct Drain<'a, K: Key, V> {
    map: &'a mut SlotMap<K, V>,
    next: usize,
    end: usize,
}

impl<K: Key, V> Iterator for Drain<'_, K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        while self.next < self.end {
            let index = self.next;
            self.next += 1;
            if let Some(entry) = self.map.take_at(index) {
                return Some(entry);
            }
        }
        None
    }
}

impl<K: Key, V> Drop for Drain<'_, K, V> {
    fn drop(&mut self) {
        for entry in self.by_ref() {
            drop(entry);
        }
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
    next: usize,
    end: usize,
}

impl<K: Key, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        while self.next < self.end {
            let index = self.next;
            self.next += 1;
            if let Some(entry) = self.map.take_at(index) {
                return Some(entry);
            }
        }
        None
    }
}

impl<K: Key, V> fmt::Debug for IntoIter<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter").field("next", &self.next).field("end", &self.end).finish()
    }
}

impl<K: Key, V> IntoIterator for SlotMap<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    fn into_iter(self) -> IntoIter<K, V> {
        let end = self.fresh_end();
        IntoIter { map: self, next: 0, end }
    }
}

impl<K: Key, V: fmt::Debug> fmt::Debug for SlotMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = self.pin();
        f.debug_map().entries(guard.iter()).finish()
    }
}

impl<K: Key, V> Drop for SlotMap<K, V> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no guard exists, nothing retired can be seen.
        unsafe { self.shared.run_retired_now() };
        // Runs every function still queued in crossbeam (domain.rs invariant), which moves
        // every batch still waiting onto the ripe stack; then run them.
        self.domain.shut_down();
        self.shared.run_ripe();
        let mut first_panic = None;
        let end = self.fresh_end();
        for (start, slots) in self.shared.pages.pages() {
            for index in start..start + slots.len() {
                if index >= end {
                    break;
                }
                // SAFETY: every retired value has been dropped above, so a non-null pointer
                // is a live value, and `&mut self` excludes readers.
                if let Some(value) = unsafe { self.shared.drop_current(index as u32) }
                    && let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(value)))
                {
                    match first_panic {
                        None => first_panic = Some(panic),
                        Some(_) => crate::retire::drop_payload(panic),
                    }
                }
            }
        }
        if let Some(panic) = first_panic {
            resume_unwind(panic);
        }
    }
}
