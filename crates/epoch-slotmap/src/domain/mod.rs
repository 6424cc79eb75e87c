//! The reclamation domain: the small seam between the map and whatever decides when a grace
//! period has passed. Normally that is one crossbeam-epoch `Collector` per map and the
//! per-thread participants that pin it (`EpochDomain`). Under `cfg(loom)` a map can instead use
//! `GraceDomain`, a minimal reclaimer with two atomics, so loom can explore the slot protocol
//! exhaustively; the same scenarios also run through the crossbeam domain with a bound.
//!
//! What the map relies on, from either: a function deferred under a guard runs only after
//! every guard that existed at the time of the defer is gone; `collect` runs what is safe; the
//! map's drop (`shut_down`) runs everything still deferred. And from either: each thread that
//! writes has a shard of the map (`pin_with_shard`), the same one for as long as the thread
//! keeps its place in the domain, used as its own by one thread at a time.
//!
//! `epoch.rs` is the crossbeam participant registry, `grace.rs` the minimal reclaimer.

mod epoch;
#[cfg(loom)]
mod grace;

use crossbeam_epoch::Guard as EpochGuard;

use crate::config::DRAIN_ROUNDS;
use crate::sync::{AtomicBool, Ordering, yield_now};
use epoch::EpochDomain;

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

    /// Pins this thread and returns its shard: the pointer `make` returned on the thread's
    /// first call (in this domain place: see the module header), type-erased.
    #[inline(always)]
    pub(crate) fn pin_with_shard(&self, make: impl FnOnce() -> *const ()) -> (DomainGuard, *const ()) {
        match &self.kind {
            #[cfg(not(loom))]
            Kind::Epoch(d) => d.pin_with_shard(make),
            #[cfg(loom)]
            Kind::Epoch(d) => {
                let (guard, shard) = d.pin_with_shard(make);
                (DomainGuard::Epoch(guard), shard)
            }
            #[cfg(loom)]
            Kind::Grace(d) => {
                let (guard, shard) = d.pin_with_shard(make);
                (DomainGuard::Grace(guard), shard)
            }
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
                for _ in 0..DRAIN_ROUNDS {
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

    /// Blocks until every guard of this domain that existed when the call started is gone, or
    /// until `keep_waiting` says to stop (it is asked between rounds). Returns whether the
    /// guards are gone. The caller must not be pinned here (it would wait for itself).
    pub(crate) fn synchronize(&self, mut keep_waiting: impl FnMut() -> bool) -> bool {
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
            if !keep_waiting() {
                return false;
            }
            yield_now();
        }
        true
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
