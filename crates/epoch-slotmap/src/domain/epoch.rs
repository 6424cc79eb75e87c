//! The crossbeam-epoch participant registry: one `Collector` per map and the per-thread
//! participants (`LocalHandle`s) that pin it.
//!
//! Invariants:
//! - Every `LocalHandle` of this map's collector lives in the map's `Registry`; the map's
//!   drop drops all of them and then the collector, so crossbeam's global state dies inside
//!   that drop and runs every deferred function still queued. Deferred functions may therefore
//!   point into the map's shared state: it outlives them.
//! - A participant is used by at most one thread at a time: a thread claims it (`state`
//!   FREE -> CLAIMED, Acquire) and gives it back when the thread exits (first flushing its
//!   deferred functions to the global queue, then Release), so every use by the previous
//!   owner happens-before the next owner's, and an idle participant holds no garbage.
//!   `shut_down` closes every participant (waiting out a release in progress) before it
//!   drops the handles.
//! - A thread finds its participant through a thread-local cache keyed by the map's unique id,
//!   so `pin` neither allocates nor registers once the thread has pinned this map before.
//!   Outside loom, `MRU` holds a copy of the cache's first entry (or nothing) so that
//!   repeated pins of one map skip the cache: it names a participant only while that
//!   participant's cache entry exists (it is reset whenever the slow path runs, and by the
//!   entry's drop). It may keep naming a dropped map, whose id no live map can have.
//! - A participant also carries its thread's shard of the map (`shard`, set on the thread's
//!   first write and never changed), so the shard goes wherever the participant goes: one
//!   thread at a time uses it as its own, and a thread that exits hands it to the next claimant
//!   together with its free slots and pending batches.

// loom's `thread_local!` does not accept a `const { }` initialiser, and the same source builds
// under both.
#![allow(clippy::missing_const_for_thread_local)]

use std::cell::RefCell;
use std::sync::Arc;

use crossbeam_epoch::{Collector, Guard as EpochGuard, LocalHandle};

use crate::sync::{AtomicBool, AtomicPtr, AtomicU8, Cell, Ordering, thread_local, yield_now};

/// Source of map ids; ids are never reused, so a stale cache entry never matches a live map.
/// (A plain std atomic: it orders nothing, so loom need not see it.)
static NEXT_DOMAIN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct Participant {
    /// `Some` until the map is dropped. Used only by the thread that claimed it (`state`).
    handle: Cell<Option<LocalHandle>>,
    /// The map's shard of whichever thread has claimed this participant (type-erased: the
    /// domain does not know the value type), null until that thread's first write. Used only
    /// by the thread that claimed it, like `handle`.
    shard: Cell<*const ()>,
    /// Pins since the participant's bag was last flushed (see `Claimed::pin`). Used only by the
    /// thread that claimed it, like `handle`; not a loom location (it orders nothing).
    pins: std::cell::Cell<u32>,
    /// `FREE`, `CLAIMED`, `RELEASING` (its last claimant is flushing it) or `CLOSED`.
    state: AtomicU8,
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
// thread that claimed the participant through `state` (module invariant), or by the map's
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

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const RELEASING: u8 = 2;
const CLOSED: u8 = 3;

impl Drop for CacheEntry {
    fn drop(&mut self) {
        // First of all: the fast path must not reach a participant this thread gives back.
        forget_mru(Some(self.domain));
        // SAFETY: `_registry` keeps the participant's memory alive (nodes are freed only in
        // `Registry::drop`).
        let participant = unsafe { &*self.participant };
        // Acquire pairs with the Release store in `claim`'s registration / the last release;
        // failure means `shut_down` closed the participant (the map is gone): nothing to do.
        if participant
            .state
            .compare_exchange(CLAIMED, RELEASING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        // SAFETY: RELEASING excludes `shut_down` (it waits) and other claimants, and we are
        // the thread that claimed it.
        let handle = unsafe { &*participant.handle.ptr() }.as_ref();
        if handle.is_some_and(LocalHandle::is_pinned) {
            // A guard outlives this entry (a thread-local destroyed after the cache, or a
            // forgotten guard) and still uses the handle: handing it to another thread would
            // race on its pin count. Keep it claimed for good.
            // Release: pairs with `shut_down`'s Acquire CAS.
            participant.state.store(CLAIMED, Ordering::Release);
            return;
        }
        // Hand this thread's deferred functions (crossbeam defers the queue nodes it frees
        // into the local bag) to the global queue, so an idle participant holds no garbage.
        // Memory hygiene only, not needed for safety: skipped under loom, where it would add
        // crossbeam's whole collection path to every model thread's exit.
        if let Some(handle) = handle.filter(|_| !cfg!(loom)) {
            handle.pin().flush();
        }
        // Release pairs with the Acquire CAS in `claim`: this thread's uses of the handle
        // happen-before the next claimant's (and `shut_down`'s).
        participant.state.store(FREE, Ordering::Release);
    }
}

// No `const { }` initialiser: loom's `thread_local!` does not accept one.
thread_local! {
    /// Most recently used first.
    static CACHE: RefCell<Vec<CacheEntry>> = RefCell::new(Vec::new());
}

// The fast path of `with_participant`: a copy of the cache's first entry (map id 0 = none).
// Thread-private, no destructor, so reading it is one thread-local load; absent under loom,
// where the cache is the only path (this is the one thread-local `sync.rs` does not provide).
#[cfg(not(loom))]
std::thread_local! {
    static MRU: std::cell::Cell<(u64, *const Participant)> =
        const { std::cell::Cell::new((0, std::ptr::null())) };
}

/// The handle and shard cell of a participant this thread has claimed.
///
/// # Safety
/// The node is alive and claimed by the calling thread (so no other thread touches its
/// cells), and its map lives (so `shut_down`, which takes the handle under `&mut`, has not
/// run): the references are used only while both hold.
#[inline(always)]
unsafe fn claimed_parts<'a>(participant: *const Participant) -> Claimed<'a> {
    // SAFETY: the caller's contract: the node is alive.
    let participant = unsafe { &*participant };
    // SAFETY: the caller's contract: only this thread touches the cell, and nothing takes
    // the handle while the map lives.
    let handle = unsafe { &*participant.handle.ptr() };
    Claimed {
        handle: handle.as_ref().expect("participant of a live map has a handle"),
        shard: &participant.shard,
        pins: &participant.pins,
    }
}

/// The parts of a participant the thread that claimed it uses.
struct Claimed<'a> {
    handle: &'a LocalHandle,
    shard: &'a Cell<*const ()>,
    pins: &'a std::cell::Cell<u32>,
}

impl Claimed<'_> {
    /// Pins, and every `FLUSH_EVERY_PINS` pins flushes the participant's bag. A thread that
    /// only reads defers nothing of its own, but each queue node of deferred functions its
    /// collections pop is freed through its bag (crossbeam defers the node), and a bag goes
    /// to the global queue only when full: without the flush, every reader thread would keep
    /// up to a bag's worth of popped nodes (about 2 KiB each) per map.
    ///
    /// The Release fence first: outside x86 (and under Miri) crossbeam pins with a relaxed
    /// store of the epoch followed by a SeqCst fence, and a relaxed store does not carry the
    /// Release of the previous unpin (a release sequence holds only read-modify-writes). A
    /// collector that reads this pin's epoch, then issues its Acquire fence (`try_advance`),
    /// would not be ordered after this thread's previous critical section, and could free
    /// what that section read without a happens-before edge. The fence pairs with that
    /// Acquire fence through the epoch store that follows it. On x86 it emits no instruction.
    #[inline(always)]
    fn pin(&self) -> EpochGuard {
        #[cfg(not(loom))]
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let guard = self.handle.pin();
        let pins = self.pins.get().wrapping_add(1);
        self.pins.set(pins);
        if pins.is_multiple_of(crate::config::FLUSH_EVERY_PINS) {
            guard.flush();
        }
        guard
    }
}

/// Forgets the fast-path entry of map `domain`, if it is the one (`None`: whatever it is).
#[inline]
fn forget_mru(domain: Option<u64>) {
    #[cfg(not(loom))]
    // A const thread-local without a destructor is accessible for the thread's whole life.
    MRU.with(|mru| {
        if domain.is_none_or(|id| mru.get().0 == id) {
            mru.set((0, std::ptr::null()));
        }
    });
    #[cfg(loom)]
    let _ = domain;
}

/// A map's crossbeam-epoch domain.
pub(crate) struct EpochDomain {
    id: u64,
    collector: Option<Collector>,
    registry: Arc<Registry>,
}

impl EpochDomain {
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

    /// This thread's participant (its handle, its shard cell and its pin count), claiming or
    /// registering one on the first call.
    #[inline(always)]
    fn with_participant<R>(&self, f: impl FnOnce(&Claimed<'_>) -> R) -> R {
        #[cfg(not(loom))]
        {
            let (id, participant) = MRU.with(std::cell::Cell::get);
            if id == self.id {
                // SAFETY: `MRU` holds this map's id only while this thread's cache entry for
                // the participant exists (module invariant: reset by the slow path below and
                // by the entry's drop), so the node is alive and claimed by this thread, and
                // `&self` proves the map (hence the handle) lives, as in the slow path.
                return f(&unsafe { claimed_parts(participant) });
            }
        }
        self.with_participant_slow(f)
    }

    /// `with_participant` through the cache (and claiming or registering on a miss).
    #[inline(never)]
    fn with_participant_slow<R>(&self, f: impl FnOnce(&Claimed<'_>) -> R) -> R {
        // Whatever it named may be pruned or moved below; it is set again at the end.
        forget_mru(None);
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
            #[cfg(not(loom))]
            MRU.with(|mru| mru.set((self.id, participant)));
            // SAFETY: the entry's registry keeps the node alive; this thread holds the claim,
            // so it is the only one touching `handle` and `shard` (module invariant); the
            // handle is `Some` while the map lives, and `&self` proves the map lives.
            f(&unsafe { claimed_parts(participant) })
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
            if participant.state.compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return CacheEntry { domain: self.id, participant: node, _registry: self.registry.clone() };
            }
            node = participant.next;
        }
        let collector = self.collector.as_ref().expect("the collector lives as long as the map");
        let fresh = Box::into_raw(Box::new(Participant {
            handle: Cell::new(Some(collector.register())),
            shard: Cell::new(std::ptr::null()),
            pins: std::cell::Cell::new(0),
            state: AtomicU8::new(CLAIMED),
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
    #[inline(always)]
    pub(crate) fn pin(&self) -> EpochGuard {
        self.with_participant(|claimed| claimed.pin())
    }

    /// Pins this thread and returns its shard, made by `make` on its first call.
    #[inline(always)]
    pub(crate) fn pin_with_shard(&self, make: impl FnOnce() -> *const ()) -> (EpochGuard, *const ()) {
        self.with_participant(|claimed| {
            // SAFETY: only the thread that claimed the participant touches `shard` (module
            // invariant), and `with_participant` runs on that thread.
            let mut shard = unsafe { *claimed.shard.ptr() };
            if shard.is_null() {
                shard = make();
                // SAFETY: as above.
                unsafe { *claimed.shard.ptr_mut() = shard };
            }
            (claimed.pin(), shard)
        })
    }

    /// Whether this thread currently holds a pin of this domain.
    pub(crate) fn is_pinned_here(&self) -> bool {
        self.with_participant(|claimed| claimed.handle.is_pinned())
    }

    /// Pins, pushes this thread's deferred functions to the global queue and runs what has
    /// expired, then unpins. A fresh pin each call lets the epoch advance past this thread.
    pub(crate) fn collect(&self) {
        self.pin().flush();
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
            // A thread whose cache entry is being dropped may be flushing this handle; wait
            // for it (a flush is short), then close the participant for good.
            loop {
                // Acquire pairs with the Release stores in `CacheEntry::drop`.
                let state = participant.state.load(Ordering::Acquire);
                if state == RELEASING {
                    yield_now();
                    continue;
                }
                // Acquire: as above.
                if participant
                    .state
                    .compare_exchange(state, CLOSED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
            // SAFETY: CLOSED: no cache entry touches the handle again, and no guard is in use
            // (guards borrow the map). A guard forgotten with `mem::forget` leaves the handle's
            // participant pinned: crossbeam then never finalizes it, and the collector it
            // keeps alive is leaked with its queue, whose functions never run.
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
