//! `SlotMap`: the public face of the engine.
//!
//! Invariant: every operation is one of the version protocol's transitions (slot.rs), made
//! through the page table (page.rs), the shards' free lists (shared.rs, shard.rs) and
//! retirement (retire.rs);
//! readers go through a [`Guard`]. Methods taking `&mut self` may skip grace periods: an
//! exclusive borrow means no guard exists.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use slotmap::{DefaultKey, Key, KeyData};

use crate::config::{HELP_ROUNDS, PENDING_HIGH_WATER};
use crate::domain::{Domain, DomainGuard};
use crate::guard::Guard;
use crate::iter::{Drain, IterMut, LiveCursor, ValuesMut};
use crate::page::{MAX_SLOTS, locate};
use crate::shard::Shard;
use crate::shared::{Shared, SharedBox};
use crate::slot::{FRESH_VERSION, Retired, Slot};
use crate::sync::{Ordering, yield_now};
use crate::wait::Patience;

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
    /// Values removed or replaced whose drop has not run yet, or whose slot the batch that
    /// dropped them has not handed back yet (under concurrent writes it can briefly count a
    /// slot an insert has already reused).
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

/// The error of [`SlotMap::try_reserve`]: the map's limit leaves too little room.
///
/// ```
/// let map = epoch_slotmap::SlotMap::<_, u8>::with_max_capacity(10);
/// let err = map.try_reserve(11).unwrap_err();
/// assert_eq!(err.to_string(), "cannot make room for 11 more values within the map's slot limit");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveError {
    additional: usize,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot make room for {} more values within the map's slot limit", self.additional)
    }
}

impl std::error::Error for ReserveError {}

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
    pub(crate) domain: Domain,
    _key: PhantomData<fn(K) -> K>,
}

// SAFETY: moving the map moves ownership of its values (hence `V: Send`); deferred drops run
// on whichever thread collects, which is one that pinned this map, so only after the map (and
// its values) could reach that thread.
unsafe impl<K: Key, V: Send> Send for SlotMap<K, V> {}
// SAFETY: `&SlotMap` lets other threads read values by reference (`V: Sync`) and insert,
// remove or drop them on other threads (`V: Send`). All shared state is atomics, slots
// handed over through the version protocol, or the domain (domain/ invariants).
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

    /// An empty map that never holds more than `max` slots: once live values (and slots
    /// retired for good) fill them, [`try_insert`](SlotMap::try_insert) hands the value back.
    /// An insert that finds only slots waiting for their grace period waits for them (see
    /// `try_insert`). Without a limit, the map holds up to about 2^30 slots.
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let acl = SlotMap::with_max_capacity(2);
    /// acl.insert(1);
    /// acl.insert(2);
    /// assert!(acl.try_insert(3).is_err());
    /// ```
    pub fn with_max_capacity(max: usize) -> Self {
        Self::with_max_capacity_and_key(max)
    }
}

impl<K: Key, V> Default for SlotMap<K, V> {
    fn default() -> Self {
        Self::with_key()
    }
}

impl<K: Key, V> SlotMap<K, V> {
    pub(crate) fn build(capacity: usize, max_slots: usize, first_version: u32, domain: Domain) -> Self {
        let map = Self {
            shared: SharedBox::new(Shared::new(
                max_slots.min(MAX_SLOTS),
                (first_version & !1).max(FRESH_VERSION),
            )),
            domain,
            _key: PhantomData,
        };
        let capacity = capacity.min(map.shared.max_slots);
        if capacity > 0 {
            let shard = map.own_shard();
            let (last_page, _) = locate(capacity - 1);
            for page in 0..=last_page {
                map.shared.install_page(page, false, shard);
            }
        }
        map
    }

    /// Pins this thread and returns its shard (made on the thread's first call).
    #[inline(always)]
    fn pin_shard(&self) -> (DomainGuard, &Shard<V>) {
        let (guard, shard) = self.domain.pin_with_shard(|| self.shared.new_shard().cast());
        // SAFETY: this map's domain hands out only pointers that `make` returned, and `make`
        // is always `Shared::new_shard` of this map (the domain belongs to the map): a shard
        // of ours, which lives as long as `self.shared`, which `&self` borrows.
        (guard, unsafe { &*shard.cast::<Shard<V>>() })
    }

    /// This thread's shard.
    pub(crate) fn own_shard(&self) -> &Shard<V> {
        self.pin_shard().1
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
        Self::build(0, MAX_SLOTS, 0, Domain::new())
    }

    /// An empty map with a custom key type and room for `capacity` values up front.
    ///
    /// ```
    /// epoch_slotmap::new_key_type! { struct RouteId; }
    /// let routes = epoch_slotmap::SlotMap::<RouteId, u8>::with_capacity_and_key(64);
    /// assert!(routes.capacity() >= 64);
    /// ```
    pub fn with_capacity_and_key(capacity: usize) -> Self {
        Self::build(capacity, MAX_SLOTS, 0, Domain::new())
    }

    /// An empty map with a custom key type that never holds more than `max` slots (see
    /// [`SlotMap::with_max_capacity`]).
    ///
    /// ```
    /// epoch_slotmap::new_key_type! { struct FlagId; }
    /// let flags = epoch_slotmap::SlotMap::<FlagId, bool>::with_max_capacity_and_key(1);
    /// flags.insert(true);
    /// assert!(flags.try_insert(false).is_err());
    /// ```
    pub fn with_max_capacity_and_key(max: usize) -> Self {
        Self::build(0, max, 0, Domain::new())
    }

    /// Loom support: a map on the minimal grace-period reclaimer instead of crossbeam-epoch,
    /// so a model can explore the slot protocol without crossbeam's state space. Not part of
    /// the stable API.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer() -> Self {
        Self::build(0, MAX_SLOTS, 0, Domain::new_grace())
    }

    /// Loom support: `with_grace_reclaimer` with a slot limit.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer_and_max_capacity(max: usize) -> Self {
        Self::build(0, max, 0, Domain::new_grace())
    }

    /// Loom support: `with_grace_reclaimer` with fresh slots starting at version `first`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer_and_first_version(first: u32) -> Self {
        Self::build(0, MAX_SLOTS, first, Domain::new_grace())
    }

    /// Test support: a map whose fresh slots start at version `first` (rounded down to
    /// even, at least 2), to reach the version limit quickly. Not part of the stable API.
    #[doc(hidden)]
    pub fn with_first_version(first: u32) -> Self {
        Self::build(0, MAX_SLOTS, first, Domain::new())
    }

    /// A vacant slot this caller now owns exclusively: its index, the slot, and the caller's
    /// shard. `None` when the map is at its limit and no slot is vacant now.
    #[inline(always)]
    fn alloc_slot(&self) -> Option<(u32, &Slot<V>, &Shard<V>)> {
        let (pin, shard) = self.pin_shard();
        // Pinned: a pop reads a slot whose page `shrink_to_fit` may release.
        if let Some((index, slot)) = shard.free.pop(&self.shared.pages) {
            return Some((index, slot, shard));
        }
        let (index, slot) = self.shared.alloc_slow(&self.domain, shard, pin)?;
        Some((index, slot, shard))
    }

    /// `alloc_slot`, and at the map's limit, a wait for the slots still in their grace period.
    #[inline(always)]
    fn alloc_slot_or_wait(&self) -> Option<(u32, &Slot<V>, &Shard<V>)> {
        self.alloc_slot().or_else(|| self.alloc_slot_at_limit())
    }

    /// The map is at its limit with no vacant slot: wait until everything removed before now
    /// has been recycled (the grace period of every guard other threads hold now), then look
    /// again. Without waiting when this thread holds a guard (it would wait for itself): then
    /// only what no guard can see is recycled.
    #[cold]
    #[inline(never)]
    fn alloc_slot_at_limit(&self) -> Option<(u32, &Slot<V>, &Shard<V>)> {
        // Mutant for the loom suite: report the map full without waiting.
        if crate::mutant::active("limit_without_wait") {
            return None;
        }
        if self.domain.is_pinned_here() {
            self.try_reclaim();
        } else {
            let _serial = self.shared.reclaim_lock.lock();
            let mut patience = Patience::new(self, "an insert at the map's limit", None);
            self.shared.reclaim_wait(&self.domain, || self.collect(), || patience.keep_waiting());
        }
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
    /// A map with a limit ([`with_max_capacity`](SlotMap::with_max_capacity)) is full only when
    /// live values and slots retired for good fill it. When the only free slots are still in
    /// their grace period (removed, with a guard that may see them), `try_insert` waits for
    /// them, as [`reclaim`](Self::reclaim) does, and so blocks while another thread holds such a
    /// guard. It fails without waiting, because waiting cannot help, when the calling thread
    /// holds a guard of this map itself: then only what no guard can see is recycled first.
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map = SlotMap::<DefaultKey, _>::with_max_capacity(1);
    /// assert!(map.try_insert('a').is_ok());
    /// assert_eq!(map.try_insert('b').unwrap_err().into_inner(), 'b');
    /// ```
    pub fn try_insert(&self, value: V) -> Result<K, InsertError<V>> {
        let Some((index, slot, shard)) = self.alloc_slot_or_wait() else {
            return Err(InsertError(value));
        };
        Ok(self.publish(index, slot, shard, |_| value))
    }

    /// Inserts the value `f` makes from its own key.
    ///
    /// If `f` panics, the slot goes back to this thread's free list and the map is unchanged.
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
        let Some((index, slot, shard)) = self.alloc_slot_or_wait() else {
            panic!("epoch_slotmap::SlotMap::insert_with_key: the map is full");
        };
        self.publish(index, slot, shard, f)
    }

    /// Inserts the value `f` makes from its own key, unless `f` fails: then its error is
    /// returned, the slot goes back and the key never comes alive.
    ///
    /// # Panics
    /// If the map is full, like [`insert`](Self::insert).
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map = SlotMap::new();
    /// let k = map.try_insert_with_key::<_, ()>(|k: DefaultKey| Ok((k, 20))).unwrap();
    /// assert_eq!(map.get_cloned(k), Some((k, 20)));
    /// assert_eq!(map.try_insert_with_key(|_| Err::<(DefaultKey, i32), _>("no")), Err("no"));
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn try_insert_with_key<F, E>(&self, f: F) -> Result<K, E>
    where
        F: FnOnce(K) -> Result<V, E>,
    {
        let Some((index, slot, shard)) = self.alloc_slot_or_wait() else {
            panic!("epoch_slotmap::SlotMap::try_insert_with_key: the map is full");
        };
        self.try_publish(index, slot, shard, f)
    }

    /// Makes room for `additional` more values without allocating: installs pages until at
    /// least that many slots are vacant (`stats().vacant`), onto this thread's free lists.
    /// Under concurrent writes the room may be taken by other threads' inserts.
    ///
    /// # Panics
    /// If the map's limit leaves too little room ([`try_reserve`](Self::try_reserve) returns
    /// the error instead).
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert("foo");
    /// map.reserve(32);
    /// assert!(map.capacity() >= 33);
    /// ```
    pub fn reserve(&self, additional: usize) {
        if let Err(e) = self.try_reserve(additional) {
            panic!("epoch_slotmap::SlotMap::reserve: {e}");
        }
    }

    /// [`reserve`](Self::reserve), or a [`ReserveError`] if the map's limit leaves too little
    /// room (the pages that fit are installed).
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let map = SlotMap::<_, u64>::with_max_capacity(100);
    /// assert!(map.try_reserve(50).is_ok());
    /// assert!(map.capacity() >= 50);
    /// assert!(map.try_reserve(101).is_err());
    /// ```
    pub fn try_reserve(&self, additional: usize) -> Result<(), ReserveError> {
        let shard = self.own_shard();
        loop {
            if self.stats().vacant >= additional {
                return Ok(());
            }
            if !self.shared.install_next_page(shard) {
                return Err(ReserveError { additional });
            }
        }
    }

    /// Applies `f` to the value of `key`, if it is live: a one-shot read that pins for the
    /// caller (no guard to hold). For several lookups, [`pin`](Self::pin) once and use the
    /// guard.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(String::from("route"));
    /// assert_eq!(map.get_with(k, |v| v.len()), Some(5));
    /// ```
    #[inline]
    pub fn get_with<R>(&self, key: K, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.pin().get(key).map(f)
    }

    /// Mutable references to the values of `N` keys at once, if every key is live and no
    /// two are the same; `None` otherwise. No pin: `&mut` excludes readers.
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// let a = map.insert("butter");
    /// let b = map.insert("apples");
    /// assert!(map.get_disjoint_mut([a, a]).is_none());
    /// let [x, y] = map.get_disjoint_mut([a, b]).unwrap();
    /// std::mem::swap(x, y);
    /// assert_eq!(map.get_cloned(a), Some("apples"));
    /// ```
    pub fn get_disjoint_mut<const N: usize>(&mut self, keys: [K; N]) -> Option<[&mut V; N]> {
        let mut ptrs = [std::ptr::null_mut::<V>(); N];
        for (i, key) in keys.iter().enumerate() {
            let (index, version) = split(*key);
            let ptr = self.shared.pages.slot(index)?.load_live(version)?.cast_mut();
            if ptrs[..i].contains(&ptr) {
                return None;
            }
            ptrs[i] = ptr;
        }
        // SAFETY: every key is live, `&mut self` excludes every other access, and the
        // pointers are pairwise distinct (checked above): the references are unique.
        Some(ptrs.map(|p| unsafe { &mut *p }))
    }

    /// Writes the value into `slot`, which is slot `index` and owned by the caller, and makes
    /// its key live.
    #[inline(always)]
    fn publish(&self, index: u32, slot: &Slot<V>, shard: &Shard<V>, f: impl FnOnce(K) -> V) -> K {
        match self.try_publish(index, slot, shard, |key| Ok::<V, std::convert::Infallible>(f(key))) {
            Ok(key) => key,
        }
    }

    /// `publish`, unless `f` fails: then the slot goes back (as when `f` panics) and its key
    /// never comes alive.
    #[inline(always)]
    fn try_publish<E>(
        &self,
        index: u32,
        slot: &Slot<V>,
        shard: &Shard<V>,
        f: impl FnOnce(K) -> Result<V, E>,
    ) -> Result<K, E> {
        // Relaxed: the slot is ours (popped from a free list, or fresh).
        let version = slot.version.load(Ordering::Relaxed).wrapping_add(1);
        let key = key_of(index, version);

        /// Gives the slot back if `f` panics or fails.
        struct GiveBack<'a, V> {
            shared: &'a Shared<V>,
            shard: &'a Shard<V>,
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
                self.shared.recycle(self.shard, self.index);
            }
        }
        let give_back = GiveBack { shared: &self.shared, shard, index };
        let value = f(key)?;
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
        let publish =
            if crate::mutant::active("relaxed_publish") { Ordering::Relaxed } else { Ordering::Release };
        slot.version.store(version, publish);
        Ok(key)
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
        let Some((slot, shard)) = self.unlink(index, version) else {
            return false;
        };
        if shard.retire_removed(index, slot) {
            self.run_batches(shard);
        }
        true
    }

    /// Takes what this thread retired into a batch, then (unpinned) runs its batches that are
    /// ripe.
    pub(crate) fn run_batches(&self, shard: &Shard<V>) {
        self.shared.take_batch(shard, &self.domain, &self.domain.pin());
        self.after_batch(shard);
    }

    /// After this thread took a batch (unpinned): runs its ripe batches, and helps
    /// reclamation when its shard's pending values pile up.
    fn after_batch(&self, shard: &Shard<V>) {
        self.domain.settle();
        self.shared.run_ripe(shard);
        // Back-pressure: when retirements outrun reclamation (another thread was descheduled
        // while pinned, say), help for a bounded number of rounds. Yielding lets that thread
        // run and unpin; the bound keeps this lock-free.
        // Not while this thread is pinned itself (a caller removing under its own guard): the
        // epoch cannot pass it, so the rounds could not help.
        for _ in 0..HELP_ROUNDS {
            if shard.pending() <= PENDING_HIGH_WATER || self.domain.is_pinned_here() {
                break;
            }
            yield_now();
            self.domain.collect();
            self.shared.run_ripe(shard);
        }
    }

    /// Lets the epoch advance past this thread and runs what has ripened, on every shard.
    pub(crate) fn collect(&self) {
        self.domain.collect();
        self.shared.run_all_ripe();
    }

    /// The remove transition: version `v` (odd) to `v + 1`. Exactly one caller wins, and
    /// gets the slot, which it owns from then on (so its page stays after the pin), and its
    /// own shard.
    #[inline(always)]
    pub(crate) fn unlink(&self, index: u32, version: u32) -> Option<(&Slot<V>, &Shard<V>)> {
        // Pinned: a stale key's page may be released by `shrink_to_fit`. Once the CAS below
        // succeeds the slot is ours (not vacant), so its page stays.
        let (_pin, shard) = self.pin_shard();
        Some((self.unlink_pinned(index, version)?, shard))
    }

    /// `unlink` for a caller that is pinned already.
    #[inline(always)]
    fn unlink_pinned(&self, index: u32, version: u32) -> Option<&Slot<V>> {
        let slot = self.shared.pages.slot_by_bias(index)?;
        if version & 1 == 0 {
            return None;
        }
        let next =
            if crate::mutant::active("remove_keeps_version") { version } else { version.wrapping_add(1) };
        // AcqRel: Acquire pairs with insert's Release (the slot's contents are ours to hand
        // to retirement); Release orders the kill before the retirement push.
        if slot.version.compare_exchange(version, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return None;
        }
        self.shared.pages.set_occupied(index, false);
        Some(slot)
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
        let (guard, shard) = self.pin_shard();
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
        let due = self.shared.retire_replaced(shard, index, old);
        drop(guard);
        if due {
            self.run_batches(shard);
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
        let (guard, shard) = self.pin_shard();
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
                    let due = self.shared.retire_replaced(shard, index, old);
                    drop(guard);
                    if due {
                        self.run_batches(shard);
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
    /// It visits live slots by their occupancy bits, 256 at a time under one pin, and lets the
    /// removed values' batches run between those runs, so `pending` stays bounded however
    /// many it removes, and no guard is held across the whole walk.
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
        /// Live slots visited under one pin.
        const RUN: usize = 256;
        /// One run of `retain` under one pin. The slots it removes are retired together as one
        /// batch (no link RMW or stack CAS per slot) and their occupancy bits are cleared one
        /// word at a time, when the run ends, or when `f` panics (the drop).
        struct Run<'m, K: Key, V> {
            map: &'m SlotMap<K, V>,
            shard: &'m Shard<V>,
            removed: Vec<u32>,
            clear: Option<(usize, usize, u64)>,
            // Dropped after `drop` below has run: the flush is pinned.
            pin: DomainGuard,
        }
        impl<K: Key, V> Drop for Run<'_, K, V> {
            fn drop(&mut self) {
                if let Some((page, word, mask)) = self.clear.take() {
                    self.map.shared.pages.clear_occupied(page, word, mask);
                }
                if !self.removed.is_empty() {
                    let removed = std::mem::take(&mut self.removed);
                    self.map.shared.take_batch_with(self.shard, &self.map.domain, &self.pin, removed);
                }
            }
        }
        let mut cursor = LiveCursor::default();
        let mut removed = 0;
        loop {
            let (pin, shard) = self.pin_shard();
            let mut run = Run { map: self, shard, removed: Vec::new(), clear: None, pin };
            let mut done = true;
            for _ in 0..RUN {
                // Pinned: the cursor reads occupancy words, which go with their page.
                let Some(index) = cursor.next_index(&self.shared.pages) else {
                    done = true;
                    break;
                };
                done = false;
                let index32 = index as u32;
                let Some(slot) = self.shared.pages.slot_by_bias(index32) else { continue };
                // Acquire pairs with insert's Release version store. The bit was a hint.
                let version = slot.version.load(Ordering::Acquire);
                let Some(ptr) = slot.load_live(version) else { continue };
                // SAFETY: read pinned after seeing the key live (as `Guard::get`); the
                // reference does not outlive this iteration.
                if f(key_of(index32, version), unsafe { &*ptr }) {
                    continue;
                }
                // The remove transition, as in `unlink`. AcqRel: as there.
                let next = if crate::mutant::active("remove_keeps_version") {
                    version
                } else {
                    version.wrapping_add(1)
                };
                if slot.version.compare_exchange(version, next, Ordering::AcqRel, Ordering::Relaxed).is_err()
                {
                    continue;
                }
                removed += 1;
                run.removed.push(index32);
                let (page, offset) = locate(index);
                let (word, bit) = (offset / 64, 1u64 << (offset % 64));
                match &mut run.clear {
                    Some((p, w, mask)) if (*p, *w) == (page, word) => *mask |= bit,
                    clear => {
                        if let Some((p, w, mask)) = clear.replace((page, word, bit)) {
                            self.shared.pages.clear_occupied(p, w, mask);
                        }
                    }
                }
            }
            drop(run);
            // Unpinned, so the help rounds can let the epoch pass this thread.
            self.after_batch(shard);
            if done {
                return removed;
            }
        }
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

    /// Number of live values: a count of the occupancy bits (no counter is shared by
    /// writers). Cost: a pin and one load per 64 slots of capacity; no allocation, no wait.
    /// Lock-free; under concurrent writes, a value inserted or removed meanwhile may or may not
    /// be counted.
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

    /// Number of slots allocated. Cost: one load.
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

    /// Bytes of slot pages the map holds now (values inline in them included; memory values
    /// own behind pointers, and boxed replacements, not). Cost: a pin and a look at each of
    /// the 25 page-table entries.
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

    /// A snapshot of the map's counters. Cost: what [`len`](Self::len) costs, plus a few
    /// loads per thread that ever wrote to the map (each has its own counters); no
    /// allocation, no wait.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert("x");
    /// assert_eq!(map.stats().len, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        let len = self.len();
        // Relaxed: a statistic.
        let capacity = self.shared.counters.capacity.load(Ordering::Relaxed);
        let retired = self.shared.retired_slots();
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

    /// Iterates over live entries with mutable references, in index order (its length is
    /// exact: `&mut` excludes every other thread).
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
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        IterMut::new(self)
    }

    /// Iterates over live values mutably, in index order.
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// map.values_mut().for_each(|v| *v += 1);
    /// assert_eq!(map.get_cloned(k), Some(2));
    /// ```
    pub fn values_mut(&mut self) -> ValuesMut<'_, K, V> {
        ValuesMut(IterMut::new(self))
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
    pub fn drain(&mut self) -> Drain<'_, K, V> {
        Drain::new(self)
    }

    /// Runs every retirement that can run now (`&mut`: no guard exists), so that the
    /// occupancy bits are exact for the exclusive iterators.
    pub(crate) fn settle_exclusive(&mut self) {
        // SAFETY: `&mut self`: no guard exists, nothing retired can be seen.
        unsafe { self.shared.run_retired_now() };
        self.shared.run_all_ripe();
    }
}

impl<K: Key, V> Extend<V> for SlotMap<K, V> {
    /// Inserts every value (their keys: see [`Guard::keys`](crate::Guard::keys)).
    ///
    /// ```
    /// let mut map = epoch_slotmap::SlotMap::new();
    /// map.extend([1, 2, 3]);
    /// assert_eq!(map.len(), 3);
    /// ```
    fn extend<I: IntoIterator<Item = V>>(&mut self, values: I) {
        for value in values {
            self.insert(value);
        }
    }
}

impl<K: Key, V> FromIterator<V> for SlotMap<K, V> {
    /// A map of these values, inserted in order (their keys: see
    /// [`Guard::keys`](crate::Guard::keys)).
    ///
    /// ```
    /// use epoch_slotmap::{DefaultKey, SlotMap};
    ///
    /// let map: SlotMap<DefaultKey, _> = ["a", "b"].into_iter().collect();
    /// assert_eq!(map.pin().values().copied().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    fn from_iter<I: IntoIterator<Item = V>>(values: I) -> Self {
        let mut map = Self::with_key();
        map.extend(values);
        map
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
        // Runs every function still queued in crossbeam (domain/ invariant), which moves
        // every batch still waiting onto the ripe stack; then run them.
        self.domain.shut_down();
        self.shared.run_all_ripe();
        let mut first_panic = None;
        // Every retired value has been dropped above, so a set occupancy bit is exactly a live
        // value: visit those only. (Even for values without drop glue: a replaced value lives
        // in a boxed node that must be freed.)
        let mut cursor = crate::iter::LiveCursor::default();
        while let Some(index) = cursor.next_index(&self.shared.pages) {
            // SAFETY: a live slot's value, and `&mut self` excludes readers.
            if let Some(value) = unsafe { self.shared.drop_current(index as u32) }
                && let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(value)))
            {
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
}
