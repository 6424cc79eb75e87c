//! The reclamation domain: the small seam between the map and whatever decides when a grace
//! period has passed. Normally that is one crossbeam-epoch `Collector` per map and the
//! per-thread participants that pin it (`EpochDomain`). Under `cfg(loom)` a map can instead use
//! `GraceDomain`, a minimal reclaimer with two atomics, so loom can explore the slot protocol
//! exhaustively; the same scenarios also run through the crossbeam domain with a bound.
//!
//! What the map relies on, from either: a function deferred under a guard runs only after
//! every guard that existed at the time of the defer is gone; `collect` runs what is safe; the
//! map's drop (`shut_down`) runs everything still deferred.
//!
//! Invariants of `EpochDomain`:
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

    /// This thread's participant, claiming or registering one on the first call.
    #[inline(always)]
    fn with_participant<R>(&self, f: impl FnOnce(&LocalHandle) -> R) -> R {
        #[cfg(not(loom))]
        {
            let (id, participant) = MRU.with(std::cell::Cell::get);
            if id == self.id {
                // SAFETY: `MRU` holds this map's id only while this thread's cache entry for
                // the participant exists (module invariant: reset by the slow path below and
                // by the entry's drop), so the node is alive and claimed by this thread, and
                // `&self` proves the map (hence the handle) lives, as in the slow path.
                let handle = unsafe { (*(*participant).handle.ptr()).as_ref() };
                return f(handle.expect("participant of a live map has a handle"));
            }
        }
        self.with_participant_slow(f)
    }

    /// `with_participant` through the cache (and claiming or registering on a miss).
    #[inline(never)]
    fn with_participant_slow<R>(&self, f: impl FnOnce(&LocalHandle) -> R) -> R {
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
            if participant.state.compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return CacheEntry { domain: self.id, participant: node, _registry: self.registry.clone() };
            }
            node = participant.next;
        }
        let collector = self.collector.as_ref().expect("the collector lives as long as the map");
        let fresh = Box::into_raw(Box::new(Participant {
            handle: Cell::new(Some(collector.register())),
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
            // SAFETY: CLOSED: no cache entry touches the handle again, and no guard exists.
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

/// What a guard of the domain holds.
#[cfg(not(loom))]
pub(crate) type DomainGuard = EpochGuard;

/// What a guard of the domain holds.
#[cfg(loom)]
pub(crate) enum DomainGuard {
    Epoch(#[allow(dead_code)] EpochGuard),
    Grace(#[allow(dead_code)] grace::GraceGuard),
}

enum Kind {
    Epoch(EpochDomain),
    #[cfg(loom)]
    Grace(grace::GraceDomain),
}

/// A map's reclamation domain (see the module header).
pub(crate) struct Domain {
    kind: Kind,
}

impl Domain {
    pub(crate) fn new() -> Self {
        Self { kind: Kind::Epoch(EpochDomain::new()) }
    }

    /// The minimal grace-period reclaimer, for exhaustive loom runs.
    #[cfg(loom)]
    pub(crate) fn new_grace() -> Self {
        Self { kind: Kind::Grace(grace::GraceDomain::new()) }
    }

    /// Pins this thread.
    #[inline(always)]
    pub(crate) fn pin(&self) -> DomainGuard {
        match &self.kind {
            #[cfg(not(loom))]
            Kind::Epoch(d) => d.pin(),
            #[cfg(loom)]
            Kind::Epoch(d) => DomainGuard::Epoch(d.pin()),
            #[cfg(loom)]
            Kind::Grace(d) => DomainGuard::Grace(d.pin()),
        }
    }

    /// Whether this thread holds a guard of this domain.
    pub(crate) fn is_pinned_here(&self) -> bool {
        match &self.kind {
            Kind::Epoch(d) => d.is_pinned_here(),
            #[cfg(loom)]
            Kind::Grace(d) => d.is_pinned_here(),
        }
    }

    /// Defers `f` until every guard that exists now is gone, and makes it runnable by any
    /// thread that collects (crossbeam: flushes it to the global queue at once).
    ///
    /// # Safety
    /// `f` may run on another thread (or during `shut_down`); the caller guarantees that is
    /// sound for what it touches.
    pub(crate) unsafe fn defer(&self, guard: &DomainGuard, f: impl FnOnce() + 'static) {
        match (&self.kind, guard) {
            #[cfg(not(loom))]
            (Kind::Epoch(_), guard) => {
                // SAFETY: forwarded from the caller.
                unsafe { guard.defer_unchecked(f) };
                guard.flush();
            }
            #[cfg(loom)]
            (Kind::Epoch(_), DomainGuard::Epoch(guard)) => {
                // SAFETY: forwarded from the caller.
                unsafe { guard.defer_unchecked(f) };
                guard.flush();
            }
            #[cfg(loom)]
            (Kind::Grace(d), DomainGuard::Grace(_)) => d.defer(Box::new(f)),
            #[cfg(loom)]
            _ => unreachable!("a guard of another domain kind"),
        }
    }

    /// Pushes crossbeam's own leftovers through: popping a bag from the global queue defers
    /// the free of its queue node into the popper's local bag, so after `reclaim` a few
    /// kilobytes of nodes would sit there until the bag next fills. Flush rounds free all but
    /// the last round's node.
    pub(crate) fn drain(&self) {
        match &self.kind {
            Kind::Epoch(d) => {
                // Memory hygiene only (see above): not explored under loom.
                // Each round advances the epoch once and pops at most 8 of crossbeam's bags;
                // 64 rounds (~1 µs each when idle) empty a queue that threads exiting under
                // load filled with their flushed bags.
                for _ in 0..if cfg!(loom) { 0 } else { 64 } {
                    d.collect();
                }
            }
            #[cfg(loom)]
            Kind::Grace(_) => {}
        }
    }

    /// Runs what is safe to run. Call it unpinned, or the epoch cannot pass this thread.
    pub(crate) fn collect(&self) {
        match &self.kind {
            Kind::Epoch(d) => d.collect(),
            #[cfg(loom)]
            Kind::Grace(d) => d.collect(),
        }
    }

    /// After a `defer` under a guard that is gone now: runs what became safe, where the
    /// domain did not already do that while flushing.
    pub(crate) fn settle(&self) {
        match &self.kind {
            Kind::Epoch(_) => {}
            #[cfg(loom)]
            Kind::Grace(d) => d.collect(),
        }
    }

    /// Blocks until every guard of this domain that existed when the call started is gone.
    /// The caller must not be pinned here (it would wait for itself).
    pub(crate) fn synchronize(&self) {
        let done = std::sync::Arc::new(AtomicBool::new(false));
        {
            let guard = self.pin();
            let flag = done.clone();
            // SAFETY: the function only stores to an atomic it owns a reference count of.
            // Release pairs with the Acquire load below.
            unsafe { self.defer(&guard, move || flag.store(true, Ordering::Release)) };
        }
        // Acquire pairs with the Release store in the deferred function.
        while !done.load(Ordering::Acquire) {
            self.collect();
            if done.load(Ordering::Acquire) {
                break;
            }
            yield_now();
        }
    }

    /// Runs everything still deferred. Needs `&mut`: no thread can be pinned.
    pub(crate) fn shut_down(&mut self) {
        match &mut self.kind {
            Kind::Epoch(d) => d.shut_down(),
            #[cfg(loom)]
            Kind::Grace(d) => d.shut_down(),
        }
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").finish_non_exhaustive()
    }
}

#[cfg(loom)]
mod grace {
    //! The minimal grace-period reclaimer: a count of active guards and a stack of deferred
    //! functions. `collect` takes the whole stack, then checks with a CAS `0 -> 0` on the
    //! count that no guard is active at that instant: every guard that existed when a
    //! function was deferred is then gone (its Release decrement is read by the CAS), and
    //! every later guard's increment reads from the CAS, so it sees every unlink made before
    //! the defer. If guards are active, the functions go back on the stack.

    use std::cell::RefCell;

    use crate::sync::{AtomicPtr, AtomicUsize, Ordering, thread_local};

    struct Deferred {
        f: Box<dyn FnOnce()>,
        next: *mut Deferred,
    }

    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    thread_local! {
        /// (domain id, guards this thread holds in it).
        static PINS: RefCell<Vec<(u64, usize)>> = RefCell::new(Vec::new());
    }

    pub(crate) struct GraceDomain {
        id: u64,
        active: AtomicUsize,
        deferred: AtomicPtr<Deferred>,
    }

    pub(crate) struct GraceGuard {
        domain: *const GraceDomain,
    }

    impl Drop for GraceGuard {
        fn drop(&mut self) {
            // SAFETY: a guard never outlives its map (guards borrow it), hence its domain.
            let domain = unsafe { &*self.domain };
            PINS.with(|p| {
                let mut p = p.borrow_mut();
                let entry = p.iter_mut().find(|e| e.0 == domain.id).expect("pinned here");
                entry.1 -= 1;
            });
            // Release: this guard's reads happen-before a collect whose CAS reads the count.
            domain.active.fetch_sub(1, Ordering::Release);
        }
    }

    impl GraceDomain {
        pub(crate) fn new() -> Self {
            Self {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                active: AtomicUsize::new(0),
                deferred: AtomicPtr::new(std::ptr::null_mut()),
            }
        }

        pub(crate) fn pin(&self) -> GraceGuard {
            PINS.with(|p| {
                let mut p = p.borrow_mut();
                match p.iter_mut().find(|e| e.0 == self.id) {
                    Some(e) => e.1 += 1,
                    None => p.push((self.id, 1)),
                }
            });
            // AcqRel: Acquire reads from a collect's CAS (so this guard sees what was
            // unlinked before that collect's functions were deferred).
            self.active.fetch_add(1, Ordering::AcqRel);
            GraceGuard { domain: self }
        }

        pub(crate) fn is_pinned_here(&self) -> bool {
            PINS.with(|p| p.borrow().iter().any(|e| e.0 == self.id && e.1 > 0))
        }

        pub(crate) fn defer(&self, f: Box<dyn FnOnce()>) {
            let node = Box::into_raw(Box::new(Deferred { f, next: std::ptr::null_mut() }));
            self.push_chain(node, node);
        }

        fn push_chain(&self, first: *mut Deferred, last: *mut Deferred) {
            // Relaxed: re-validated by the CAS.
            let mut head = self.deferred.load(Ordering::Relaxed);
            loop {
                // SAFETY: the chain is ours until the CAS publishes it.
                unsafe { (*last).next = head };
                // Release pairs with the Acquire swap in `collect`.
                match self.deferred.compare_exchange(head, first, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) => head = actual,
                }
            }
        }

        pub(crate) fn collect(&self) {
            // Acquire pairs with the Release CAS in `push_chain`: the functions, and what was
            // unlinked before they were deferred, are visible.
            let taken = self.deferred.swap(std::ptr::null_mut(), Ordering::Acquire);
            if taken.is_null() {
                return;
            }
            // AcqRel: Acquire reads every finished guard's Release decrement; Release is read
            // by every later guard's increment (see the module header).
            if self.active.compare_exchange(0, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // SAFETY: the chain came from the swap, so it is ours; run each node once.
                unsafe { run_chain(taken) };
            } else {
                let mut last = taken;
                loop {
                    // SAFETY: the chain is ours (from the swap); its nodes are live.
                    let next = unsafe { (*last).next };
                    if next.is_null() {
                        break;
                    }
                    last = next;
                }
                self.push_chain(taken, last);
            }
        }

        pub(crate) fn shut_down(&mut self) {
            // Relaxed: `&mut self`.
            let taken = self.deferred.swap(std::ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: the chain is ours; no guard exists (`&mut`).
            unsafe { run_chain(taken) };
        }
    }

    /// # Safety
    /// The chain is exclusively the caller's.
    unsafe fn run_chain(mut node: *mut Deferred) {
        while !node.is_null() {
            // SAFETY: nodes come from `Box::into_raw` in `defer`, owned by the caller.
            let boxed = unsafe { Box::from_raw(node) };
            node = boxed.next;
            (boxed.f)();
        }
    }

    impl Drop for GraceDomain {
        fn drop(&mut self) {
            self.shut_down();
        }
    }
}
