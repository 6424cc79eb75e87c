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
    /// (domain id, guards this thread holds in it, this thread's shard of the map or null).
    static PINS: RefCell<Vec<(u64, usize, *const ())>> = RefCell::new(Vec::new());
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
                None => p.push((self.id, 1, std::ptr::null())),
            }
        });
        // AcqRel: Acquire reads from a collect's CAS (so this guard sees what was
        // unlinked before that collect's functions were deferred).
        self.active.fetch_add(1, Ordering::AcqRel);
        GraceGuard { domain: self }
    }

    /// Pins this thread and returns its shard, made by `make` on its first call.
    pub(crate) fn pin_with_shard(&self, make: impl FnOnce() -> *const ()) -> (GraceGuard, *const ()) {
        let guard = self.pin();
        let known =
            PINS.with(|p| p.borrow().iter().find(|e| e.0 == self.id).map_or(std::ptr::null(), |e| e.2));
        if !known.is_null() {
            return (guard, known);
        }
        let shard = make();
        PINS.with(|p| {
            if let Some(e) = p.borrow_mut().iter_mut().find(|e| e.0 == self.id) {
                e.2 = shard;
            }
        });
        (guard, shard)
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
