//! The calls that wait for other threads' guards: `reclaim`, `take`, `shrink_to_fit`, and their
//! bounded forms.
//!
//! Invariant: a wait never waits for the calling thread's own guard (it would never end): each
//! call checks first, and then either does what needs no wait or says that it could not. Every
//! wait loop asks a [`Patience`] between rounds, which ends the bounded forms at their deadline
//! and, in debug builds, warns once on stderr when a wait passes a few seconds (5 s, or
//! `EPOCH_SLOTMAP_WARN_AFTER_MS`), with the map's
//! `stats()`: one forgotten guard on another thread would otherwise hang the caller silently.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use slotmap::Key;

use crate::map::{SlotMap, split};
use crate::sync::yield_now;

/// How long a debug build waits before it warns that a wait is stuck: 5 s, or the
/// milliseconds in `EPOCH_SLOTMAP_WARN_AFTER_MS` (read once; the warning's own test uses it).
fn warn_after() -> Duration {
    static AFTER: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        std::env::var("EPOCH_SLOTMAP_WARN_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis)
    })
}

/// Whether a wait goes on: its deadline, and its one warning.
pub(crate) struct Patience<'m> {
    what: &'static str,
    deadline: Option<Instant>,
    started: Option<Instant>,
    warned: bool,
    report: Box<dyn Fn() -> String + 'm>,
}

impl<'m> Patience<'m> {
    /// A wait for `what` on `map`, until `timeout` if there is one.
    pub(crate) fn new<K: Key, V>(
        map: &'m SlotMap<K, V>,
        what: &'static str,
        timeout: Option<Duration>,
    ) -> Self {
        // Under loom no time is read: models stay deterministic, and a model never warns.
        let now = (!cfg!(loom) && (timeout.is_some() || cfg!(debug_assertions))).then(Instant::now);
        Self {
            what,
            deadline: timeout.and_then(|t| now.and_then(|n| n.checked_add(t))),
            started: now,
            warned: false,
            report: Box::new(move || format!("{:?}", map.stats())),
        }
    }

    /// Asked between rounds of a wait: false once the deadline has passed.
    pub(crate) fn keep_waiting(&mut self) -> bool {
        let Some(started) = self.started else { return true };
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if cfg!(debug_assertions) && !self.warned && now.duration_since(started) >= warn_after() {
            self.warned = true;
            // `writeln!`, not `eprintln!`: a failing stderr must not panic a wait (in `take`,
            // the key is already dead and the value would be lost with the unwinding).
            let _ = writeln!(
                std::io::stderr(),
                "epoch_slotmap: {} has waited {:.0?} for a guard another thread holds (a guard \
                 held for long, or forgotten with mem::forget, blocks it); the map's stats(): {}",
                self.what,
                now.duration_since(started),
                (self.report)()
            );
        }
        true
    }
}

/// Why [`SlotMap::try_take`] or [`SlotMap::take_timeout`] gave no value.
///
/// ```
/// use epoch_slotmap::{SlotMap, TakeError};
///
/// let map = SlotMap::new();
/// let k = map.insert(1);
/// let guard = map.pin();
/// assert_eq!(map.try_take(k), Err(TakeError::GuardHeld)); // the map is unchanged
/// drop(guard);
/// assert_eq!(map.try_take(k), Ok(1));
/// assert_eq!(map.try_take(k), Err(TakeError::NotLive));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TakeError {
    /// The key was not live (stale, never issued, or null). The map is unchanged.
    NotLive,
    /// The calling thread holds a guard of this map, so the wait for every guard that could
    /// see the value would never end. The map is unchanged: drop the guard and call again.
    GuardHeld,
    /// A guard held by another thread outlived the deadline. The key is dead (as after
    /// `remove`) and the value will be dropped once no guard can see it, like any removed
    /// value.
    TimedOut,
}

impl fmt::Display for TakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TakeError::NotLive => "the key is not live",
            TakeError::GuardHeld => "the calling thread holds a guard of this map",
            TakeError::TimedOut => "a guard another thread holds outlived the deadline",
        })
    }
}

impl std::error::Error for TakeError {}

impl<K: Key, V> SlotMap<K, V> {
    /// Removes the value of `key` and returns it, once no guard can see it any more: this
    /// waits for guards other threads hold.
    ///
    /// Returns `None` when `key` is not live, and also, leaving the map unchanged, when the
    /// calling thread itself holds a guard of this map (the wait would never end): use
    /// [`try_take`](Self::try_take) to tell the two apart.
    ///
    /// # Blocking
    /// Waits as long as another thread holds a guard that existed when the key died; a guard
    /// forgotten with `mem::forget` makes it wait forever. Debug builds print a warning after
    /// a few seconds of waiting. [`take_timeout`](Self::take_timeout) bounds the wait.
    ///
    /// ```
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(String::from("owned"));
    /// assert_eq!(map.take(k), Some(String::from("owned")));
    /// assert_eq!(map.take(k), None);
    /// ```
    pub fn take(&self, key: K) -> Option<V> {
        self.try_take(key).ok()
    }

    /// [`take`](Self::take), saying why it gave no value: [`TakeError::NotLive`], or
    /// [`TakeError::GuardHeld`] when the calling thread holds a guard of this map (the map is
    /// then unchanged). Blocks as `take` does.
    ///
    /// ```
    /// use epoch_slotmap::{SlotMap, TakeError};
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert("v");
    /// {
    ///     let _guard = map.pin();
    ///     assert_eq!(map.try_take(k), Err(TakeError::GuardHeld));
    /// }
    /// assert_eq!(map.try_take(k), Ok("v"));
    /// ```
    pub fn try_take(&self, key: K) -> Result<V, TakeError> {
        self.take_within(key, None)
    }

    /// [`try_take`](Self::try_take) that waits at most `timeout` for other threads' guards.
    /// On [`TakeError::TimedOut`] the key is dead and the value is dropped later, once no guard
    /// can see it, as after `remove`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use epoch_slotmap::{SlotMap, TakeError};
    ///
    /// let map = SlotMap::new();
    /// let k = map.insert(5);
    /// assert_eq!(map.take_timeout(k, Duration::from_secs(1)), Ok(5));
    /// assert_eq!(map.take_timeout(k, Duration::from_secs(1)), Err(TakeError::NotLive));
    /// ```
    pub fn take_timeout(&self, key: K, timeout: Duration) -> Result<V, TakeError> {
        self.take_within(key, Some(timeout))
    }

    fn take_within(&self, key: K, timeout: Option<Duration>) -> Result<V, TakeError> {
        if self.domain.is_pinned_here() {
            return if self.contains_key(key) { Err(TakeError::GuardHeld) } else { Err(TakeError::NotLive) };
        }
        let (index, version) = split(key);
        let (slot, shard) = self.unlink(index, version).ok_or(TakeError::NotLive)?;
        if !crate::mutant::active("take_without_wait") {
            let mut patience = Patience::new(self, "take", timeout);
            if !self.domain.synchronize(|| patience.keep_waiting()) {
                // The key is dead; the value goes the way of any removed value.
                if shard.retire_removed(index, slot) {
                    self.run_batches(shard);
                }
                return Err(TakeError::TimedOut);
            }
        }
        // SAFETY: we won the remove transition and a grace period has passed: no reader can
        // see the value, and no one else retires this slot.
        let value = unsafe { self.shared.drop_current(index) };
        self.shared.finish_drop(shard, index);
        // A live slot's value word is never null (slot.rs).
        value.ok_or(TakeError::NotLive)
    }

    /// Returns once every value removed or replaced before the call has been dropped,
    /// waiting for guards other threads hold. A removed value's slot is recycled with it,
    /// except when a replace racing the remove left a value of its own in the slot's queue:
    /// then the slot comes back once that value's grace period has passed too.
    ///
    /// If the calling thread itself holds a guard of this map, waiting could never end:
    /// then `reclaim` only starts the reclamation of everything retired so far (what no guard
    /// can see is dropped) and returns without waiting; [`reclaim_timeout`](Self::reclaim_timeout)
    /// returns `false` then.
    ///
    /// # Blocking
    /// Waits as long as another thread holds a guard that existed when something was
    /// retired; a guard forgotten with `mem::forget` makes it wait forever. Debug builds print
    /// a warning with the map's [`stats`](Self::stats) after a few seconds of waiting.
    /// `reclaim_timeout` bounds the wait.
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
        self.reclaim_within(None);
    }

    /// [`reclaim`](Self::reclaim), waiting at most `timeout`: `true` when everything removed
    /// or replaced before the call has been dropped; `false` when a guard another thread holds
    /// outlived the deadline, or at once when the calling thread holds a guard of this map
    /// (what is left is dropped later, as always; `stats().pending` says how much).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = epoch_slotmap::SlotMap::new();
    /// let k = map.insert(1);
    /// map.remove(k);
    /// assert!(map.reclaim_timeout(Duration::from_secs(1)));
    /// let guard = map.pin();
    /// let k = map.insert(2);
    /// map.remove(k);
    /// assert!(!map.reclaim_timeout(Duration::from_secs(1))); // our own guard: false at once
    /// drop(guard);
    /// assert!(map.reclaim_timeout(Duration::from_secs(1)));
    /// ```
    pub fn reclaim_timeout(&self, timeout: Duration) -> bool {
        self.reclaim_within(Some(timeout))
    }

    fn reclaim_within(&self, timeout: Option<Duration>) -> bool {
        if self.domain.is_pinned_here() {
            self.shared.seal_all(&self.domain);
            self.collect();
            return false;
        }
        let _serial = self.shared.reclaim_lock.lock();
        let mut patience = Patience::new(self, "reclaim", timeout);
        let done = self.shared.reclaim_wait(&self.domain, || self.collect(), || patience.keep_waiting());
        if done {
            self.domain.drain();
        }
        done
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
        self.shared.seal_all(&self.domain);
        self.collect();
        self.collect();
        self.shared.pending()
    }

    /// Gives back the memory of every page whose slots are all vacant (the first page
    /// stays); `stats().capacity` drops by the slots released. Runs concurrently with readers
    /// and writers; readers stay lock-free.
    ///
    /// Only vacant slots count: call [`reclaim`](Self::reclaim) first so that removed
    /// values waiting for their grace period are recycled. A released page's memory is freed
    /// through the map's reclamation domain; this waits until that has happened, unless the
    /// calling thread holds a guard of this map (then the memory goes once that guard and
    /// every other older one is gone, and
    /// [`shrink_to_fit_timeout`](Self::shrink_to_fit_timeout) returns `false`). Keys into a
    /// released page stay dead: when the page is allocated again, its versions start above
    /// every version it handed out before.
    ///
    /// Inserts racing with `shrink_to_fit` keep finding the slots of every page it is not
    /// looking at; one that finds none anywhere waits for it to finish looking at one page
    /// (never for a guard). The capacity stays within the bound of docs/design.md.
    ///
    /// # Blocking
    /// The wait for the memory to be freed lasts as long as another thread holds a guard that
    /// existed when the page went; debug builds warn after a few seconds, and
    /// `shrink_to_fit_timeout` bounds it.
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
        self.shrink_within(None);
    }

    /// [`shrink_to_fit`](Self::shrink_to_fit), waiting at most `timeout` for the released
    /// pages' memory to be freed: `true` once it has been (or when nothing was released);
    /// `false` when a guard another thread holds outlived the deadline, or at once when the
    /// calling thread holds a guard of this map and a released page's memory is still to be
    /// freed (the pages are released either way, and their memory goes once those guards do).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = epoch_slotmap::SlotMap::new();
    /// let keys: Vec<_> = (0..1000).map(|i| map.insert(i)).collect();
    /// keys.iter().for_each(|&k| { map.remove(k); });
    /// map.reclaim();
    /// assert!(map.shrink_to_fit_timeout(Duration::from_secs(1)));
    /// assert_eq!(map.capacity(), 32);
    /// ```
    pub fn shrink_to_fit_timeout(&self, timeout: Duration) -> bool {
        self.shrink_within(Some(timeout))
    }

    fn shrink_within(&self, timeout: Option<Duration>) -> bool {
        {
            let _serial = self.shared.reclaim_lock.lock();
            self.shared.release_vacant_pages(&self.domain);
        }
        if self.domain.is_pinned_here() {
            return self.shared.pages_releasing() == 0;
        }
        let mut patience = Patience::new(self, "shrink_to_fit", timeout);
        while self.shared.pages_releasing() != 0 {
            self.collect();
            if self.shared.pages_releasing() == 0 {
                break;
            }
            if !patience.keep_waiting() {
                return false;
            }
            yield_now();
        }
        true
    }
}
