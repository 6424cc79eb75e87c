//! The reclamation domain: one crossbeam-epoch `Collector` per map, and the per-thread
//! participants that pin it.
//!
//! Invariants:
//! - Every `LocalHandle` of this map's collector lives in the map's `Registry`; the map's
//!   drop drops all of them and then the collector, so crossbeam's global state dies inside
//!   that drop and runs every deferred function still queued. Deferred functions may therefore
//!   point into the map's shared state: it outlives them.
//! - A participant is used by at most one thread at a time: a thread claims it (`in_use`
//!   false -> true, Acquire) and gives it back when the thread exits (Release), so every use by
//!   the previous owner happens-before the next owner's.
//! - A thread finds its participant through a thread-local cache keyed by the map's unique id,
//!   so `pin` neither allocates nor registers once the thread has pinned this map before.

use std::cell::RefCell;
use std::sync::Arc;

use crossbeam_epoch::{Collector, Guard as EpochGuard, LocalHandle};

use crate::sync::{AtomicBool, AtomicPtr, Cell, Ordering, thread_local};

/// Source of map ids; ids are never reused, so a stale cache entry never matches a live map.
/// (A plain std atomic: it orders nothing, so loom need not see it.)
static NEXT_DOMAIN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct Participant {
    /// `Some` until the map is dropped. Used only by the thread that holds `in_use`.
    handle: Cell<Option<LocalHandle>>,
    in_use: AtomicBool,
    /// Next participant of the registry (immutable once published).
    next: *mut Participant,
}

/// All participants of one map. Shared by the map and by the thread-local cache entries that
/// point into it, so a cache entry never dangles even after the map is gone.
struct Registry {
    head: AtomicPtr<Participant>,
    /// Set when the map is dropped; cache entries of closed registries are pruned.
    closed: AtomicBool,
}

// SAFETY: `Participant::handle` (a `LocalHandle`, which is !Send/!Sync) is only touched by the
// thread that claimed the participant through `in_use` (module invariant), or by the map's
// drop when no thread can be using it (no guard borrows the map any more, and pin needs the
// map). Everything else is atomics or immutable after publication.
unsafe impl Send for Registry {}
// SAFETY: as for `Send`.
unsafe impl Sync for Registry {}

impl Drop for Registry {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, every other access happened-before (Arc's drop synchronises).
        let mut node = self.head.load(Ordering::Relaxed);
        while !node.is_null() {
            // SAFETY: nodes come from `Box::into_raw` in `claim` and are freed only here, once.
            let boxed = unsafe { Box::from_raw(node) };
            node = boxed.next;
        }
    }
}

struct CacheEntry {
    domain: u64,
    participant: *const Participant,
    /// Keeps `participant` alive for as long as this entry exists.
    _registry: Arc<Registry>,
}

impl Drop for CacheEntry {
    fn drop(&mut self) {
        // SAFETY: `_registry` keeps the participant's memory alive (nodes are freed only in
        // `Registry::drop`).
        let participant = unsafe { &*self.participant };
        // Release pairs with the Acquire CAS in `claim`: this thread's uses of the handle
        // happen-before the next claimant's.
        participant.in_use.store(false, Ordering::Release);
    }
}

thread_local! {
    /// Most recently used first.
    static CACHE: RefCell<Vec<CacheEntry>> = const { RefCell::new(Vec::new()) };
}

/// A map's reclamation domain.
pub(crate) struct Domain {
    id: u64,
    collector: Option<Collector>,
    registry: Arc<Registry>,
}

impl Domain {
    pub(crate) fn new() -> Self {
        Self {
            id: NEXT_DOMAIN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            collector: Some(Collector::new()),
            registry: Arc::new(Registry {
                head: AtomicPtr::new(std::ptr::null_mut()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// This thread's participant, claiming or registering one on the first call.
    #[inline]
    fn with_participant<R>(&self, f: impl FnOnce(&LocalHandle) -> R) -> R {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let position = match cache.iter().position(|e| e.domain == self.id) {
                Some(p) => p,
                None => {
                    // Relaxed: a hint; a missed close only delays pruning to the next miss.
                    cache.retain(|e| !e._registry.closed.load(Ordering::Relaxed));
                    cache.push(self.claim());
                    cache.len() - 1
                }
            };
            if position != 0 {
                cache.swap(0, position);
            }
            let participant = cache[0].participant;
            drop(cache);
            // SAFETY: the entry's registry keeps the node alive; this thread holds `in_use`,
            // so it is the only one touching `handle` (module invariant); the handle is
            // `Some` while the map lives, and `&self` proves the map lives.
            let handle = unsafe { (*(*participant).handle.ptr()).as_ref() };
            f(handle.expect("participant of a live map has a handle"))
        })
    }

    #[cold]
    fn claim(&self) -> CacheEntry {
        // Acquire pairs with the Release CAS publishing each node below.
        let mut node = self.registry.head.load(Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: published nodes live until the registry is dropped; we hold an Arc.
            let participant = unsafe { &*node };
            // Acquire pairs with the Release store in `CacheEntry::drop` of the last owner.
            if participant.in_use.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return CacheEntry { domain: self.id, participant: node, _registry: self.registry.clone() };
            }
            node = participant.next;
        }
        let collector = self.collector.as_ref().expect("the collector lives as long as the map");
        let fresh = Box::into_raw(Box::new(Participant {
            handle: Cell::new(Some(collector.register())),
            in_use: AtomicBool::new(true),
            next: std::ptr::null_mut(),
        }));
        // Relaxed: re-validated by the CAS.
        let mut head = self.registry.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `fresh` is ours until the CAS publishes it.
            unsafe { (*fresh).next = head };
            // Release publishes the node's contents to the Acquire walk above.
            match self.registry.head.compare_exchange_weak(head, fresh, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => head = actual,
            }
        }
        CacheEntry { domain: self.id, participant: fresh, _registry: self.registry.clone() }
    }

    /// Pins this thread in the domain.
    #[inline]
    pub(crate) fn pin(&self) -> EpochGuard {
        self.with_participant(|h| h.pin())
    }

    /// Whether this thread currently holds a pin of this domain.
    pub(crate) fn is_pinned_here(&self) -> bool {
        self.with_participant(|h| h.is_pinned())
    }

    /// Pins, pushes this thread's deferred functions to the global queue and runs what has
    /// expired, then unpins. A fresh pin each call lets the epoch advance past this thread.
    pub(crate) fn collect(&self) {
        self.pin().flush();
    }

    /// Blocks until every guard of this domain that existed when the call started is gone.
    /// The caller must not be pinned here (it would wait for itself).
    pub(crate) fn synchronize(&self) {
        let done = Arc::new(AtomicBool::new(false));
        {
            let guard = self.pin();
            let flag = done.clone();
            // SeqCst: read by the loop below; nothing else is ordered by it beyond the
            // epoch's own synchronisation.
            guard.defer(move || flag.store(true, Ordering::SeqCst));
            guard.flush();
        }
        // SeqCst: pairs with the store in the deferred function.
        while !done.load(Ordering::SeqCst) {
            crate::sync::yield_now();
            self.collect();
        }
    }

    /// Drops every participant's handle and then the collector, which runs every deferred
    /// function still queued. Needs `&mut`: no thread can be pinned.
    pub(crate) fn shut_down(&mut self) {
        // Relaxed: `&mut self` (the map is being dropped) orders every earlier access.
        let mut node = self.registry.head.load(Ordering::Relaxed);
        while !node.is_null() {
            // SAFETY: live node (we hold the registry); no thread uses the handle now: every
            // guard borrowed the map, and pin needs the map (module invariant).
            let participant = unsafe { &*node };
            // SAFETY: as above, exclusive access to the handle cell.
            drop(unsafe { (*participant.handle.ptr_mut()).take() });
            node = participant.next;
        }
        drop(self.collector.take());
        // Relaxed: only a pruning hint for other threads' caches.
        self.registry.closed.store(true, Ordering::Relaxed);
        // Forget this thread's cache entry for the map right away.
        let _ = CACHE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                cache.retain(|e| e.domain != self.id);
            }
        });
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("id", &self.id).finish_non_exhaustive()
    }
}
