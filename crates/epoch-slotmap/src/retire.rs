//! Retirement: where removed slots and replaced values wait for their grace period.
//!
//! Invariants:
//! - A removed slot goes onto one of the map-wide *removed stacks* (which one: a hash of its
//!   index) right after the CAS that made its version even; a replaced value (a
//!   boxed node, or a note for a replaced inline value) goes onto the *replaced stack* right
//!   after the swap that unlinked it. Nothing is dropped or recycled from there directly.
//! - A *batch* takes all the stacks whole (a swap each), is deferred to the domain as one
//!   function and flushed to crossbeam's global queue at once, so no retired value ever waits
//!   in one thread's private bag: any thread that collects (and `reclaim`) can run it. Every
//!   unlink in a batch happened before the batch was deferred, so when it runs no reader can
//!   still see any of it.
//! - A slot whose inline value was replaced has two drops ahead of it (the inline value's, from
//!   its note; the current value's, from its removal) that may run in either order. The slot
//!   is pushed on the free list by whichever finishes second (`INLINE_PENDING` /
//!   `RECYCLE_WAITING` in `Slot::aux`), so it is never reused while a drop for it is queued.
//! - When a batch's grace period has passed, crossbeam runs its deferred function, which only
//!   moves the batch onto the *ripe stack* (one CAS) so no thread stays pinned while values
//!   are dropped: a pinned thread holds the epoch back for everyone. Writers and `reclaim` run
//!   ripe batches right after they unpin.
//! - Each batch is counted in `in_flight[parity of the generation it registered in]` until it
//!   has run; `reclaim` advances the generation and waits for the old parity to drain.
//!
//! The stacks are push + take-all only, which is ABA-safe without tags: a push only needs the
//! head it links to be the head it replaces, whatever happened in between.
//!
//! Why several removed stacks: in a map that has lived a while, removed slots lie scattered
//! over its pages, and the batch runner finds each next slot of a chain in the slot before it
//! (a dependent load, a cache miss each). Walking `REMOVED_STACKS` chains in turn keeps that
//! many of those loads in flight at once.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::domain::{Domain, DomainGuard};
use crate::free_list::FreeList;
use crate::page::PageTable;
use crate::slot::{INLINE_PENDING, LINK_MASK, NIL, RECYCLE_WAITING, Retired, Slot};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, CachePadded, Mutex, Ordering};

/// Retirements per batch. Small under loom and Miri so models and tests cross batches.
pub(crate) const BATCH: usize = if cfg!(loom) {
    2
} else if cfg!(miri) {
    4
} else {
    128
};
/// Removed stacks (see the header). One under loom, whose models then explore the same
/// atomics as with a single stack; two under Miri, whose tests then walk two chains side by
/// side (of up to 2 slots each).
pub(crate) const REMOVED_STACKS: usize = if cfg!(loom) {
    1
} else if cfg!(miri) {
    2
} else {
    4
};
/// A push that brings its removed stack to a multiple of this makes a batch due: the stacks
/// share `BATCH`.
const STACK_SHARE: usize = BATCH / REMOVED_STACKS;
const _: () = assert!(STACK_SHARE >= 1 && BATCH.is_multiple_of(REMOVED_STACKS));

/// The removed stack of slot `index`: a multiplicative hash of the index, so that removals
/// that follow a stride (every second or fourth slot, say) still spread over the stacks.
#[inline(always)]
fn removed_stack_of(index: u32) -> usize {
    let hashed = index.wrapping_mul(0x9E37_79B9);
    ((u64::from(hashed) * REMOVED_STACKS as u64) >> 32) as usize
}

/// Counters only writers and the batch runner update; readers never touch this cache line.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) capacity: AtomicUsize,
    /// Pages released by `shrink_to_fit` whose memory is not freed yet.
    pub(crate) pages_releasing: AtomicUsize,
    pub(crate) removes_retired: AtomicUsize,
    pub(crate) removes_done: AtomicUsize,
    pub(crate) replaces_retired: AtomicUsize,
    pub(crate) replaces_done: AtomicUsize,
    pub(crate) retired_slots: AtomicUsize,
}

/// Owns the map's `Shared` through a raw pointer: deferred functions hold pointers into it,
/// and moving a `Box` would (under Stacked Borrows) invalidate them; moving this does not.
pub(crate) struct SharedBox<V>(std::ptr::NonNull<Shared<V>>);

impl<V> SharedBox<V> {
    pub(crate) fn new(shared: Shared<V>) -> Self {
        Self(std::ptr::NonNull::from(Box::leak(Box::new(shared))))
    }
}

impl<V> std::ops::Deref for SharedBox<V> {
    type Target = Shared<V>;
    #[inline(always)]
    fn deref(&self) -> &Shared<V> {
        // SAFETY: allocated in `new` and freed only in `drop`, which needs `&mut self`.
        unsafe { self.0.as_ref() }
    }
}

impl<V> Drop for SharedBox<V> {
    fn drop(&mut self) {
        // SAFETY: from `Box::leak` in `new`; freed once, here. The map's drop has run every
        // deferred function that pointed into it (it shuts the domain down first).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The map's state that deferred functions point into; boxed so it never moves.
pub(crate) struct Shared<V> {
    pub(crate) pages: PageTable<V>,
    pub(crate) max_slots: usize,
    pub(crate) free: CachePadded<FreeList>,
    pub(crate) counters: CachePadded<Counters>,
    /// The removed stacks: each `(count << 32) | first index`, `count` = slots on it, so a
    /// remover learns from its own push whether a batch is due (no shared counter per
    /// remove). Slot `i` goes onto stack `removed_stack_of(i)` (see the header).
    removed: CachePadded<[AtomicU64; REMOVED_STACKS]>,
    replaced: CachePadded<AtomicPtr<Retired<V>>>,
    ripe: CachePadded<AtomicPtr<Batch<V>>>,
    generation: AtomicUsize,
    in_flight: [AtomicUsize; 2],
    pub(crate) reclaim_lock: Mutex<()>,
}

impl<V> Shared<V> {
    pub(crate) fn new(max_slots: usize, first_version: u32) -> Self {
        Self {
            pages: PageTable::new(max_slots, first_version),
            max_slots,
            free: CachePadded(FreeList::new()),
            counters: CachePadded(Counters::default()),
            removed: CachePadded(std::array::from_fn(|_| AtomicU64::new(u64::from(NIL)))),
            replaced: CachePadded(AtomicPtr::new(std::ptr::null_mut())),
            ripe: CachePadded(AtomicPtr::new(std::ptr::null_mut())),
            generation: AtomicUsize::new(0),
            in_flight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            reclaim_lock: Mutex::new(()),
        }
    }

    #[inline(always)]
    pub(crate) fn slot(&self, index: u32) -> &Slot<V> {
        self.pages.slot_by_bias(index).expect("an owned slot's index lies in an installed page")
    }

    /// Queues `slot`, which is slot `index` and whose version the caller just made even, for
    /// recycling. Returns true when a batch is due.
    #[inline(always)]
    pub(crate) fn retire_removed(&self, index: u32, slot: &Slot<V>) -> bool {
        let removed = &self.removed[removed_stack_of(index)];
        // Relaxed: re-validated by the CAS.
        let mut head = removed.load(Ordering::Relaxed);
        loop {
            let (count, first) = ((head >> 32) as usize, head as u32);
            // Relaxed: published by the Release CAS below. An RMW, because a note for this
            // slot may clear INLINE_PENDING concurrently.
            let _ = slot
                .aux
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |aux| Some((aux & !LINK_MASK) | first));
            let new = ((count as u64 + 1) << 32) | u64::from(index);
            // Release pairs with the Acquire swap in `take_removed`.
            match removed.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
                // A batching trigger; `reclaim` does not rely on it. Until a push makes a batch
                // due, every stack holds fewer than `STACK_SHARE` slots, so at most
                // `BATCH - REMOVED_STACKS` wait (plus pushes that race with the take); a batch
                // holds at most `BATCH - REMOVED_STACKS + 1` removals from one trigger. When
                // the removed indexes crowd onto one stack, batches come as often as every
                // `STACK_SHARE` removals.
                Ok(_) => return (count + 1).is_multiple_of(STACK_SHARE),
                Err(actual) => head = actual,
            }
        }
    }

    /// Queues `old`, the value pointer slot `index` held before a replace/update swapped it
    /// out. Returns true when a batch is due.
    pub(crate) fn retire_replaced(&self, index: u32, old: *mut V) -> bool {
        let slot = self.slot(index);
        let node = if slot.holds_inline(old) {
            // AcqRel: ordered with the RECYCLE_WAITING handshake in `drops_done`. (That the
            // batch runner sees this bit at all comes from our pin: see `run_batch`.)
            slot.aux.fetch_or(INLINE_PENDING, Ordering::AcqRel);
            Retired::<V>::inline_note(index)
        } else {
            old.cast::<Retired<V>>()
        };
        // Relaxed: re-validated by the CAS.
        let mut head = self.replaced.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is unreachable by anyone else until the CAS publishes it: a note
            // is fresh, and a boxed value was unlinked by the caller's swap/CAS, which only
            // one thread can win.
            unsafe { (*node).next = head };
            // Release pairs with the Acquire swap in `take_batch`.
            match self.replaced.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => head = actual,
            }
        }
        // Relaxed: as in `retire_removed`.
        (self.counters.replaces_retired.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(BATCH)
    }

    /// Counts a new batch in the current generation's parity and returns that parity.
    fn register_batch(&self) -> usize {
        loop {
            // A Dekker pair with `reclaim` (`advance_generation`, then `in_flight`), made of
            // read-modify-writes so it holds with AcqRel alone: of the two RMWs on
            // `generation` (our re-read, reclaim's bump) the later reads from the earlier.
            // Either our re-read sees the new generation (and we retry in it), or the bump
            // synchronises with our re-read, so reclaim's RMW read of `in_flight` comes after
            // our increment. (Loom treats SeqCst accesses as AcqRel, so this matters there.)
            // Relaxed: only a guess, validated by the re-read.
            let generation = self.generation.load(Ordering::Relaxed);
            self.in_flight[generation & 1].fetch_add(1, Ordering::AcqRel);
            if self.generation.fetch_add(0, Ordering::AcqRel) == generation {
                return generation & 1;
            }
            // AcqRel: as above.
            self.in_flight[generation & 1].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes everything retired so far into one batch, defers it and flushes it to the global
    /// queue.
    pub(crate) fn take_batch(&self, domain: &Domain, guard: &DomainGuard) {
        let parity = self.register_batch();
        // Acquire pairs with the Release CASes of the pushes: links and nodes are visible.
        let slots = self.take_removed();
        let nodes = self.replaced.swap(std::ptr::null_mut(), Ordering::Acquire);
        if slots == [NIL; REMOVED_STACKS] && nodes.is_null() {
            // AcqRel: see `register_batch`.
            self.in_flight[parity].fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let batch = Box::into_raw(Box::new(Batch { slots, nodes, parity, next: std::ptr::null_mut() }));
        if cfg!(epoch_slotmap_mutant = "free_at_once") {
            // Mutant for the loom suite: no grace period at all.
            self.push_ripe(batch);
            return;
        }
        let (shared, batch) = (self as *const Shared<V> as usize, batch as usize);
        let ripen = move || {
            // SAFETY: the map's drop shuts the domain down (running every queued function)
            // before it frees `Shared`, which is boxed and never moves (see `domain.rs`).
            unsafe { (*(shared as *const Shared<V>)).push_ripe(batch as *mut Batch<V>) }
        };
        // SAFETY: `ripen` may execute on another thread; it only CASes the ripe stack (an
        // atomic) and hands over a batch record nobody else references. It runs after a grace
        // period that began after every unlink in the batch (they precede this defer).
        unsafe { domain.defer(guard, ripen) };
    }

    /// Moves a batch whose grace period has passed onto the ripe stack.
    fn push_ripe(&self, batch: *mut Batch<V>) {
        // Relaxed: re-validated by the CAS.
        let mut head = self.ripe.load(Ordering::Relaxed);
        loop {
            // SAFETY: the record is ours until the CAS publishes it.
            unsafe { (*batch).next = head };
            // Release pairs with the Acquire swap in `run_ripe`.
            match self.ripe.compare_exchange_weak(head, batch, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Runs every batch whose grace period has passed. Call it unpinned if you can.
    pub(crate) fn run_ripe(&self) {
        // Relaxed first: the common case is an empty stack.
        if self.ripe.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire pairs with the Release CAS in `push_ripe`.
        let mut batch = self.ripe.swap(std::ptr::null_mut(), Ordering::Acquire);
        while !batch.is_null() {
            // SAFETY: records come from `Box::into_raw` in `take_batch`, and the swap above
            // made this chain ours alone.
            let record = unsafe { Box::from_raw(batch) };
            batch = record.next;
            // SAFETY: the record is ripe: its grace period has passed; it runs once (we own it).
            unsafe { self.run_batch(record.slots, record.nodes, record.parity) };
        }
    }

    /// Drops everything in a batch and recycles its slots.
    ///
    /// # Safety
    /// No reader may still see any value or slot of the batch (a grace period passed since
    /// the batch was taken, or the map is exclusively borrowed), and the chains come from one
    /// `take_batch` (its swaps), run once.
    pub(crate) unsafe fn run_batch(
        &self,
        slots: [u32; REMOVED_STACKS],
        nodes: *mut Retired<V>,
        parity: usize,
    ) {
        // Every value is dropped and counted before any slot of the batch goes back to the
        // free list: in this order `pending` never counts a value twice because its slot was
        // already reused. Pass 1: the replaced values (boxed nodes and inline notes).
        let mut replaced = 0;
        let mut node = nodes;
        while !node.is_null() {
            // SAFETY: the node came off the replaced stack in one swap; this batch owns it.
            let retired = unsafe { &mut *node };
            if retired.inline_of == NIL {
                // SAFETY: a boxed value node holds an initialised value nobody can see now;
                // pass 3 frees the node without touching the value again.
                unsafe { drop_in_place_quietly(retired.value.as_mut_ptr()) };
            } else {
                // SAFETY: the note stands for this slot's inline value, which was replaced
                // before the batch was taken and is unreachable now; the slot cannot have been
                // reused, because it is recycled only after pass 3 clears INLINE_PENDING.
                unsafe { drop_in_place_quietly(self.slot(retired.inline_of).inline_mut()) };
            }
            replaced += 1;
            node = retired.next;
        }
        // Pass 2, the removed slots, in one walk of their chains (each step a dependent load,
        // so walking them once matters), one step of each chain in turn so that the loads of
        // different chains overlap (see the header): drop the value; a slot whose drops have
        // all run joins a local chain that goes onto the free list in one CAS at the end; a
        // slot whose inline value's note has not run yet (the slot was replaced, then removed,
        // and the note sits in this batch, a later one, or one running now) waits for the
        // handshake after pass 3.
        let mut removed = 0;
        let mut retired_slots = 0;
        let mut chain = Chain { first: NIL, last: NIL };
        let mut waiting = Vec::new();
        let mut heads = slots;
        // A round takes one step of every chain not yet ended. (Ending on a flag: testing
        // `heads != [NIL; REMOVED_STACKS]` instead made a probe's insert + remove pairs about
        // 8% slower, 2026-11-26.)
        loop {
            let mut any = false;
            for index in &mut heads {
                if *index == NIL {
                    continue;
                }
                any = true;
                let slot = self.slot(*index);
                // Acquire pairs with the AcqRel `fetch_and` of the note's runner: a clear
                // INLINE_PENDING means the inline value's drop happened before. Only a
                // `replace`/`update` that saw the key live sets the bit, while still pinned, and
                // the grace period since the slot died waited for that pin (or the map is
                // borrowed mutably): a clear bit stays clear, and nobody else writes `aux` now.
                // The link bits came with the chain (the Acquire swap that took it, then the
                // ripe stack's Release/Acquire pair); only we rewrite them, below.
                let aux = slot.aux.load(Ordering::Acquire);
                let next = aux & LINK_MASK;
                // SAFETY: removed before this batch was taken; nobody can see its value now.
                unsafe { self.drop_current_in_place(slot) };
                removed += 1;
                if aux & INLINE_PENDING != 0 {
                    waiting.push(*index);
                // Relaxed: this thread (or one it synchronised with) made the version even.
                } else if slot.version.load(Ordering::Relaxed) == 0 {
                    retired_slots += 1;
                } else {
                    // Relaxed: published by the Release CAS of `push_chain`. Clears the flag
                    // bits, as `FreeList::push` does.
                    slot.aux.store(chain.first, Ordering::Relaxed);
                    if chain.last == NIL {
                        chain.last = *index;
                    }
                    chain.first = *index;
                }
                *index = next;
            }
            if !any {
                break;
            }
        }
        // Relaxed: statistics; `reclaim` synchronises through `in_flight` below. Updated
        // before any slot of the batch can be reused, so `pending` never counts a value twice.
        self.counters.replaces_done.fetch_add(replaced, Ordering::Relaxed);
        self.counters.removes_done.fetch_add(removed, Ordering::Relaxed);
        self.counters.retired_slots.fetch_add(retired_slots, Ordering::Relaxed);

        // Pass 3: free the nodes; a note clears INLINE_PENDING (recycling its slot if the
        // slot's removal ran first, in an earlier batch); then the chain and the waiting slots.
        let mut node = nodes;
        while !node.is_null() {
            // SAFETY: as in pass 1; the value inside was dropped there, so only the
            // allocation is freed (`Retired` has no drop glue for `value`).
            let retired = unsafe { Box::from_raw(node) };
            node = retired.next;
            if retired.inline_of != NIL {
                let slot = self.slot(retired.inline_of);
                // AcqRel: the handshake with `drops_done`; Release publishes our drop to the
                // one that recycles, Acquire sees theirs if we recycle.
                let before = slot.aux.fetch_and(!INLINE_PENDING, Ordering::AcqRel);
                if before & RECYCLE_WAITING != 0 {
                    self.recycle(retired.inline_of);
                }
            }
        }
        if chain.first != NIL {
            self.free.push_chain(&self.pages, chain.first, chain.last);
        }
        for index in waiting {
            self.finish_drop(index);
        }
        // AcqRel: Release makes every drop above visible to `reclaim`, whose RMW read of
        // `in_flight` reads from this decrement (or a later one).
        self.in_flight[parity].fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes the value word of a dead slot, leaving null: null, the inline storage's address,
    /// or a boxed node that is now the caller's.
    ///
    /// # Safety
    /// The caller owns the dead slot: its version is even and every thread that could read
    /// or swap its value word (a reader, `replace`, `update`: all of them pinned while they
    /// do) has unpinned since the version went even, or the map is borrowed mutably.
    unsafe fn take_value_word(&self, slot: &Slot<V>) -> *mut V {
        // Acquire pairs with the Release of whoever stored the pointer (insert's version
        // store, replace's swap), so the value's bytes are visible. A load and a store, not a
        // swap: by the safety contract no other thread writes the word any more.
        let ptr = slot.value.load(Ordering::Acquire);
        if !ptr.is_null() {
            // Relaxed: only this thread reads the word until the slot is handed out again,
            // which publishes it (the free list's Release push).
            slot.value.store(std::ptr::null_mut(), Ordering::Relaxed);
        }
        ptr
    }

    /// Moves the current value of a dead slot out and clears its value pointer.
    ///
    /// # Safety
    /// As for `take_value_word`.
    pub(crate) unsafe fn drop_current(&self, index: u32) -> Option<V> {
        let slot = self.slot(index);
        // SAFETY: the caller's contract is `take_value_word`'s.
        let ptr = unsafe { self.take_value_word(slot) };
        if ptr.is_null() {
            None
        } else if slot.holds_inline(ptr) {
            // SAFETY: the inline value is initialised (the pointer said so) and unreachable.
            Some(unsafe { slot.inline_mut().read() })
        } else {
            // SAFETY: any other pointer is a boxed `Retired` node from `Retired::boxed`, now
            // owned by us (`take_value_word`).
            let node = unsafe { Box::from_raw(ptr.cast::<Retired<V>>()) };
            // SAFETY: a boxed value node holds an initialised value.
            Some(unsafe { node.value.assume_init_read() })
        }
    }

    /// Drops the current value of a dead slot where it lies (no move: for a value without
    /// drop glue this touches only the value word) and clears its value pointer.
    ///
    /// # Safety
    /// As for `take_value_word`.
    unsafe fn drop_current_in_place(&self, slot: &Slot<V>) {
        // SAFETY: the caller's contract is `take_value_word`'s.
        let ptr = unsafe { self.take_value_word(slot) };
        if ptr.is_null() {
        } else if slot.holds_inline(ptr) {
            // SAFETY: the inline value is initialised (the pointer said so), unreachable, and
            // never read again: the slot's next value is written over it.
            unsafe { drop_in_place_quietly(slot.inline_mut()) };
        } else {
            // SAFETY: any other pointer is a boxed `Retired` node from `Retired::boxed`, now
            // owned by us (`take_value_word`).
            let mut node = unsafe { Box::from_raw(ptr.cast::<Retired<V>>()) };
            // SAFETY: a boxed value node holds an initialised value; freeing the node below
            // does not drop it again (`MaybeUninit`).
            unsafe { drop_in_place_quietly(node.value.as_mut_ptr()) };
        }
    }

    /// Whether both drops ahead of dead slot `index` have run (see the header), so that its
    /// caller, which ran the current value's, may recycle it; if not, the pending note's
    /// runner recycles it.
    fn drops_done(&self, index: u32) -> bool {
        let aux = &self.slot(index).aux;
        // Acquire pairs with the AcqRel `fetch_and` of the note's runner: a clear bit means
        // the inline value's drop happened before. Only a `replace`/`update` that saw the key
        // live sets the bit, while still pinned, and the caller's grace period (or `&mut`)
        // waited for that pin, so a clear bit stays clear and needs no handshake.
        if aux.load(Ordering::Acquire) & INLINE_PENDING == 0 {
            return true;
        }
        // AcqRel: the handshake with the note in `run_batch`.
        let before = aux.fetch_or(RECYCLE_WAITING, Ordering::AcqRel);
        before & INLINE_PENDING == 0
    }

    /// After the current value of a dead slot is gone: recycle it now, or leave that to its
    /// pending inline note.
    pub(crate) fn finish_drop(&self, index: u32) {
        if self.drops_done(index) {
            self.recycle(index);
        }
    }

    /// Puts a dead slot whose drops have all run back on the free list, or retires it if its
    /// version wrapped.
    pub(crate) fn recycle(&self, index: u32) {
        // Relaxed: this thread (or one it synchronised with) made the version even.
        if self.slot(index).version.load(Ordering::Relaxed) == 0 {
            // Relaxed: a statistic.
            self.counters.retired_slots.fetch_add(1, Ordering::Relaxed);
        } else {
            self.free.push(&self.pages, index);
        }
    }

    /// Runs whatever sits on the retire stacks right now, without a grace period.
    ///
    /// # Safety
    /// No reader can see anything retired (the map is exclusively borrowed).
    pub(crate) unsafe fn run_retired_now(&self) {
        let parity = self.register_batch();
        let slots = self.take_removed();
        let nodes = self.replaced.swap(std::ptr::null_mut(), Ordering::Acquire);
        // SAFETY: the caller guarantees no reader; the chains come from these swaps.
        unsafe { self.run_batch(slots, nodes, parity) };
    }

    /// Takes the removed stacks whole and returns their first indexes (`NIL` for an empty
    /// one), counting their slots as retired.
    fn take_removed(&self) -> [u32; REMOVED_STACKS] {
        let mut total = 0;
        let heads = std::array::from_fn(|stack| {
            // Acquire pairs with the Release CASes of the pushes: links are visible.
            let head = self.removed[stack].swap(u64::from(NIL), Ordering::Acquire);
            total += (head >> 32) as usize;
            head as u32
        });
        // Relaxed: a statistic (see `pending`).
        self.counters.removes_retired.fetch_add(total, Ordering::Relaxed);
        heads
    }

    /// Removed slots on the removed stacks or in a batch not run yet (a statistic).
    pub(crate) fn removing(&self) -> usize {
        let c = &self.counters;
        // Relaxed: statistics, read one after another: a take running between these loads
        // can make the result briefly low (its count left the stack but is not yet added
        // to `removes_retired`) or high (counted on both). Nothing relies on it being exact
        // under concurrency; at quiescence it is.
        let on_stacks: usize =
            self.removed.iter().map(|stack| (stack.load(Ordering::Relaxed) >> 32) as usize).sum();
        let done = c.removes_done.load(Ordering::Relaxed);
        (c.removes_retired.load(Ordering::Relaxed) + on_stacks).saturating_sub(done)
    }

    /// Advances the generation and returns the parity `reclaim` must wait to drain.
    pub(crate) fn advance_generation(&self) -> usize {
        // AcqRel: see `register_batch`.
        self.generation.fetch_add(1, Ordering::AcqRel) & 1
    }

    /// Batches of that parity not yet run.
    pub(crate) fn in_flight(&self, parity: usize) -> usize {
        // An RMW read with AcqRel: see `register_batch` and the end of `run_batch`.
        self.in_flight[parity].fetch_add(0, Ordering::AcqRel)
    }

    /// Values removed or replaced whose drop has not run yet.
    pub(crate) fn pending(&self) -> usize {
        let c = &self.counters;
        // Relaxed: statistics. A batch may drop a replaced value before its retirement is
        // counted, so the difference saturates at 0 instead of going negative.
        let replacing = c
            .replaces_retired
            .load(Ordering::Relaxed)
            .saturating_sub(c.replaces_done.load(Ordering::Relaxed));
        self.removing() + replacing
    }
}

/// A batch taken off the retire stacks, waiting for (then past) its grace period.
struct Batch<V> {
    slots: [u32; REMOVED_STACKS],
    nodes: *mut Retired<V>,
    parity: usize,
    next: *mut Batch<V>,
}

/// Drops the value at `value` in place; a panic in its `Drop` is contained so the batch
/// carries on and no slot is lost (the panic hook has already reported it).
///
/// # Safety
/// `value` points at an initialised value that nothing reads or drops again.
unsafe fn drop_in_place_quietly<V>(value: *mut V) {
    if !std::mem::needs_drop::<V>() {
        return;
    }
    // SAFETY: the caller's contract.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| unsafe { std::ptr::drop_in_place(value) })) {
        drop_payload(payload);
    }
}

/// A chain of recycled slots linked through `aux`, pushed onto the free list at once.
struct Chain {
    first: u32,
    last: u32,
}

/// Drops a panic payload without letting a panic in the payload's own `Drop` unwind further
/// (that second payload is leaked: a panic while dropping a panic while dropping a value).
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
    }
}
