//! Guards: the only way to read a value by reference.
//!
//! Invariant: a `Guard` keeps this thread pinned in its map's domain for as long as it lives,
//! and every reference it hands out borrows the guard. A value or slot unlinked while the
//! guard lives is dropped or recycled only after the guard is gone, so those references
//! never dangle and never show another key's value. A guard is `!Send`: the pin belongs to
//! the thread.

use std::fmt;
use std::iter::FusedIterator;

use slotmap::Key;

use crate::domain::DomainGuard;
use crate::map::{SlotMap, key_of, split};
use crate::slot::Slot;
use crate::sync::{AtomicU64, Ordering};

/// A pinned view of a [`SlotMap`]: lock-free lookups and iteration whose references live as
/// long as the guard.
///
/// Hold one guard across a batch of lookups: pinning costs a fence, a lookup under a held
/// guard costs a few loads.
///
/// ```
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::new();
/// let k = map.insert("rule".to_string());
/// let guard = map.pin();
/// let rule: &String = guard.get(k).unwrap();
/// map.remove(k); // the key dies at once...
/// assert!(guard.get(k).is_none());
/// assert_eq!(rule, "rule"); // ...but what this guard already saw stays valid
/// ```
///
/// A reference cannot outlive its guard:
///
/// ```compile_fail
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::new();
/// let k = map.insert(1);
/// let r = {
///     let guard = map.pin();
///     guard.get(k).unwrap()
/// };
/// println!("{r}");
/// ```
///
/// And a guard cannot cross threads:
///
/// ```compile_fail
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::<_, u32>::new();
/// let guard = map.pin();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "a guard does nothing unless you read through it"]
pub struct Guard<'m, K: Key, V> {
    pub(crate) map: &'m SlotMap<K, V>,
    pub(crate) _pin: DomainGuard,
}

impl<'m, K: Key, V> Guard<'m, K, V> {
    /// The value of `key`, if it is live. Stale, null and garbage keys give `None`.
    ///
    /// A key is checked only against its slot's version, as in `slotmap`: a key of another
    /// map whose index and version happen to be live here reads this map's value (every fresh
    /// map hands out the same first keys). Give each map its own key type
    /// ([`new_key_type!`](crate::new_key_type)) so the compiler keeps keys apart.
    ///
    /// ```
    /// use epoch_slotmap::{Key, KeyData, SlotMap};
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert(7);
    /// let guard = map.pin();
    /// assert_eq!(guard.get(k), Some(&7));
    /// assert_eq!(guard.get(epoch_slotmap::DefaultKey::null()), None);
    /// assert_eq!(guard.get(KeyData::from_ffi(u64::MAX).into()), None);
    /// ```
    #[inline]
    pub fn get(&self, key: K) -> Option<&V> {
        let (index, version) = split(key);
        let ptr = self.map.shared.pages.live_value(index, version)?;
        // SAFETY: `load_live` saw the key's version while this guard pins the domain, so the
        // value behind `ptr` is dropped (and its slot recycled) only after a grace period that
        // waits for this guard (guard.rs invariant); the reference borrows the guard.
        Some(unsafe { &*ptr })
    }

    /// Whether `key` is live.
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert(());
    /// assert!(map.pin().contains_key(k));
    /// map.remove(k);
    /// assert!(!map.pin().contains_key(k));
    /// ```
    #[inline]
    pub fn contains_key(&self, key: K) -> bool {
        self.map.contains_key(key)
    }

    /// Iterates over live entries in index order.
    ///
    /// Weakly consistent: every entry live for the whole iteration is yielded exactly once,
    /// no entry is yielded twice, and entries inserted or removed meanwhile may or may not
    /// be.
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let map = SlotMap::new();
    /// for i in 0..3 {
    ///     map.insert(i);
    /// }
    /// let guard = map.pin();
    /// let sum: i32 = guard.iter().map(|(_, v)| *v).sum();
    /// assert_eq!(sum, 3);
    /// ```
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            guard: self,
            pages_left: None,
            slots: &[],
            words: &[],
            base: 0,
            word: 0,
            bits: 0,
            bits_offset: 0,
        }
    }
}

impl<'m, K: Key, V> Guard<'m, K, V> {
    /// Iterates over the keys of live entries in index order (weakly consistent, as
    /// [`iter`](Self::iter)).
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert("a");
    /// let guard = map.pin();
    /// assert_eq!(guard.keys().collect::<Vec<_>>(), [k]);
    /// ```
    pub fn keys(&self) -> Keys<'_, K, V> {
        Keys(self.iter())
    }

    /// Iterates over the live values in index order (weakly consistent, as
    /// [`iter`](Self::iter)).
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    ///
    /// let map = SlotMap::new();
    /// map.insert(2);
    /// map.insert(3);
    /// assert_eq!(map.pin().values().sum::<i32>(), 5);
    /// ```
    pub fn values(&self) -> Values<'_, K, V> {
        Values(self.iter())
    }
}

impl<'g, K: Key, V> IntoIterator for &'g Guard<'_, K, V> {
    type Item = (K, &'g V);
    type IntoIter = Iter<'g, K, V>;

    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// map.insert(1);
    /// let guard = map.pin();
    /// for (_, v) in &guard {
    ///     assert_eq!(*v, 1);
    /// }
    /// ```
    fn into_iter(self) -> Iter<'g, K, V> {
        self.iter()
    }
}

impl<K: Key, V> fmt::Debug for Guard<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// Iterator over a guard's live entries; see [`Guard::iter`].
///
/// `Clone` (a clone goes on from the position of the original) and
/// `FusedIterator`; not `ExactSizeIterator`, because other threads may insert and remove while
/// it runs, so no count is exact (take one under `&mut` with
/// [`SlotMap::iter_mut`](crate::SlotMap::iter_mut)).
///
/// ```
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::new();
/// map.insert('a');
/// let guard = map.pin();
/// let mut iter: epoch_slotmap::Iter<'_, _, char> = guard.iter();
/// assert_eq!(iter.next().map(|(_, v)| *v), Some('a'));
/// assert!(iter.next().is_none());
/// ```
pub struct Iter<'g, K: Key, V> {
    guard: &'g Guard<'g, K, V>,
    /// Pages still to visit (bit `p` = page `p`), from `PageTable::present_pages`; `None`
    /// until the first call to `next`.
    pages_left: Option<u32>,
    slots: &'g [Slot<V>],
    words: &'g [AtomicU64],
    /// Index of the first slot of `slots`.
    base: usize,
    /// The next word of `words` to load.
    word: usize,
    /// Occupied bits of the current word not yet visited, and the offset of its bit 0.
    bits: u64,
    bits_offset: usize,
}

impl<'g, K: Key, V> Iterator for Iter<'g, K, V> {
    type Item = (K, &'g V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while self.bits != 0 {
                let offset = self.bits_offset + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                debug_assert!(offset < self.slots.len());
                // SAFETY: bits are set only at offsets below `len_of(page)` (`set_occupied`
                // sets the bit of `locate`'s offset). `slots` and `words` were loaded for the
                // same page number, so they have the same length even if a release and
                // re-install came between the two loads (the words may then belong to the
                // newer instance; its bits are hints, and the older slots are all vacant).
                let slot = unsafe { self.slots.get_unchecked(offset) };
                // The bit is a hint (page.rs); the version decides. Acquire pairs with
                // insert's Release version store.
                let version = slot.version.load(Ordering::Acquire);
                if version & 1 == 1
                    && let Some(ptr) = slot.load_live(version)
                {
                    // SAFETY: as in `Guard::get`: the version was live while the guard pins
                    // the domain, and the reference borrows the guard.
                    return Some((key_of((self.base + offset) as u32, version), unsafe { &*ptr }));
                }
            }
            if !self.refill() {
                return None;
            }
        }
    }
}

impl<K: Key, V> Iter<'_, K, V> {
    /// Loads the next occupancy word, moving to the next page when this one is done.
    /// `false` when every page has been visited. Out of line: the per-value loop of `next`
    /// stays small enough to inline.
    #[inline(never)]
    fn refill(&mut self) -> bool {
        loop {
            if let Some(word) = self.words.get(self.word) {
                // Relaxed: a hint. A value inserted before the iteration began had its bit
                // set before that (coherence); anything else may or may not be seen.
                self.bits = word.load(Ordering::Relaxed);
                self.bits_offset = self.word * 64;
                self.word += 1;
                return true;
            }
            let pages = &self.guard.map.shared.pages;
            let left = self.pages_left.get_or_insert_with(|| pages.present_pages());
            if *left == 0 {
                return false;
            }
            let page = left.trailing_zeros() as usize;
            *left &= *left - 1;
            if let Some(slots) = pages.page(page)
                && let Some(words) = pages.occupancy(page)
            {
                // No slot of a page is handed out before its words are published, so a page
                // without them has no live slot yet.
                self.slots = slots;
                self.words = words;
                self.base = crate::page::page_start(page);
                self.word = 0;
            }
        }
    }
}

impl<K: Key, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl<K: Key, V> FusedIterator for Iter<'_, K, V> {}

impl<K: Key, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("pages_left", &self.pages_left).field("word", &self.word).finish()
    }
}

/// Iterator over a guard's live keys; see [`Guard::keys`].
///
/// ```
/// let map = epoch_slotmap::SlotMap::new();
/// map.insert(1);
/// let guard = map.pin();
/// let keys: epoch_slotmap::Keys<'_, _, i32> = guard.keys();
/// assert_eq!(keys.count(), 1);
/// ```
pub struct Keys<'g, K: Key, V>(Iter<'g, K, V>);

impl<K: Key, V> Iterator for Keys<'_, K, V> {
    type Item = K;

    fn next(&mut self) -> Option<K> {
        self.0.next().map(|(k, _)| k)
    }
}

impl<K: Key, V> Clone for Keys<'_, K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Key, V> FusedIterator for Keys<'_, K, V> {}

impl<K: Key, V> fmt::Debug for Keys<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keys").field(&self.0).finish()
    }
}

/// Iterator over a guard's live values; see [`Guard::values`].
///
/// ```
/// let map = epoch_slotmap::SlotMap::new();
/// map.insert(1);
/// let guard = map.pin();
/// let values: epoch_slotmap::Values<'_, _, i32> = guard.values();
/// assert_eq!(values.copied().sum::<i32>(), 1);
/// ```
pub struct Values<'g, K: Key, V>(Iter<'g, K, V>);

impl<'g, K: Key, V> Iterator for Values<'g, K, V> {
    type Item = &'g V;

    fn next(&mut self) -> Option<&'g V> {
        self.0.next().map(|(_, v)| v)
    }
}

impl<K: Key, V> Clone for Values<'_, K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Key, V> FusedIterator for Values<'_, K, V> {}

impl<K: Key, V> fmt::Debug for Values<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Values").field(&self.0).finish()
    }
}
