//! Retirement: where removed slots and replaced values wait for their grace period.
//!
//! Invariants:
//! - A removed slot goes onto a removed stack of the remover's shard right after the CAS that
//!   made its version even; a replaced value (a boxed node, or a note for a replaced inline
//!   value) goes onto the replacer's replaced stack right after the swap that unlinked it.
//!   Nothing is dropped or recycled from there directly.
//! - A *batch* takes one shard's stacks whole (a swap each), is deferred to the domain as one
//!   function and flushed to crossbeam's global queue at once, so no retired value ever waits
//!   in one thread's private bag: any thread that collects (and `reclaim`) can run it. Every
//!   unlink in a batch happened before the batch was deferred, so when it runs no reader can
//!   still see any of it.
//! - A slot whose inline value was replaced has two drops ahead of it (the inline value's, from
//!   its note; the current value's, from its removal) that may run in either order, in batches
//!   of different shards. The slot is pushed on a free list by whichever finishes second
//!   (`INLINE_PENDING` / `RECYCLE_WAITING` in `Slot::aux`), so it is never reused while a drop
//!   for it is queued.
//! - When a batch's grace period has passed, crossbeam runs its deferred function, which only
//!   moves the batch onto its shard's *ripe stack* (one CAS) so no thread stays pinned while
//!   values are dropped: a pinned thread holds the epoch back for everyone. The shard's owner
//!   (and `reclaim`, and an insert that found no vacant slot anywhere) runs ripe batches
//!   unpinned, and the slots go back onto that shard's free lists: a thread's removals feed
//!   its own inserts, without touching another thread's cache lines.
//! - Each batch is counted in its shard's `in_flight[parity of the generation it registered
//!   in]` until it has run; `reclaim` takes every shard's stacks into batches, advances every
//!   shard's generation and waits for each old parity to drain.
//!
//! The stacks are push + take-all only, which is ABA-safe without tags: a push only needs the
//! head it links to be the head it replaces, whatever happened in between.
//!
//! Why several removed stacks per shard: in a map that has lived a while, removed slots lie
//! scattered over its pages, and the batch runner finds each next slot of a chain in the slot
//! before it (a dependent load, a cache miss each). Walking `REMOVED_STACKS` chains in turn
//! keeps that many of those loads in flight at once.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::config::REMOVED_STACKS;
use crate::domain::{Domain, DomainGuard};
use crate::page::{PAGES, locate_page};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::slot::{INLINE_PENDING, LINK_MASK, NIL, RECYCLE_WAITING, Retired, Slot};
use crate::sync::{Ordering, yield_now};

/// A batch taken off one shard's retire stacks, waiting for (then past) its grace period.
pub(crate) struct Batch<V> {
    slots: [u32; REMOVED_STACKS],
    /// Removed slots retired in bulk (`retain`), listed here instead of on a stack.
    bulk: Vec<u32>,
    nodes: *mut Retired<V>,
    parity: usize,
    pub(crate) next: *mut Batch<V>,
}

impl<V> Shared<V> {
    /// Queues `old`, the value pointer slot `index` held before a replace/update swapped it
    /// out, on `shard`. Returns true when a batch is due.
    pub(crate) fn retire_replaced(&self, shard: &Shard<V>, index: u32, old: *mut V) -> bool {
        let slot = self.slot(index);
        let node = if slot.holds_inline(old) {
            // AcqRel: ordered with the RECYCLE_WAITING handshake in `drops_done`. (That the
            // batch runner sees this bit at all comes from our pin: see `run_batch`.)
            slot.aux.fetch_or(INLINE_PENDING, Ordering::AcqRel);
            Retired::<V>::inline_note(index)
        } else {
            old.cast::<Retired<V>>()
        };
        // `node` is unreachable by anyone else: a note is fresh, and a boxed value was
        // unlinked by the caller's swap/CAS, which only one thread can win.
        shard.retire_replaced(node)
    }

    /// Takes everything `shard` retired so far into one batch, defers it and flushes it to the
    /// global queue.
    pub(crate) fn take_batch(&self, shard: &Shard<V>, domain: &Domain, guard: &DomainGuard) {
        self.take_batch_with(shard, domain, guard, Vec::new());
    }

    /// `take_batch`, with `bulk`: slots whose removal the caller won (their versions made
    /// even and occupancy bits cleared) and retires here, instead of through the stacks.
    pub(crate) fn take_batch_with(
        &self,
        shard: &Shard<V>,
        domain: &Domain,
        guard: &DomainGuard,
        bulk: Vec<u32>,
    ) {
        // Nothing to take: no batch to register either. A retirement that happened before this
        // call is seen by the look (coherence), unless a concurrent take swapped it away, and
        // that taker registered its batch first (which `reclaim` then waits for).
        if bulk.is_empty() && shard.nothing_retired() {
            return;
        }
        let parity = shard.register_batch();
        let slots = shard.take_removed();
        let nodes = shard.take_replaced();
        if slots == [NIL; REMOVED_STACKS] && nodes.is_null() && bulk.is_empty() {
            shard.batch_done(parity);
            return;
        }
        // Relaxed: a statistic (see `Shard::removing`).
        shard.counters.removes_retired.fetch_add(bulk.len(), Ordering::Relaxed);
        let batch = Box::into_raw(Box::new(Batch { slots, bulk, nodes, parity, next: std::ptr::null_mut() }));
        if crate::mutant::active("free_at_once") {
            // Mutant for the loom suite: no grace period at all.
            push_ripe(shard, batch);
            return;
        }
        let (shard, batch) = (shard as *const Shard<V> as usize, batch as usize);
        let ripen = move || {
            // SAFETY: the map's drop shuts the domain down (running every queued function)
            // before it frees its shards, which are boxed and never move (see `shared.rs`).
            push_ripe(unsafe { &*(shard as *const Shard<V>) }, batch as *mut Batch<V>);
        };
        // SAFETY: `ripen` may execute on another thread; it only CASes the shard's ripe stack
        // (an atomic) and hands over a batch record nobody else references. It runs after a
        // grace period that began after every unlink in the batch (they precede this defer).
        unsafe { domain.defer(guard, ripen) };
    }

    /// Takes every shard's retirements into batches (each shard's own batch).
    pub(crate) fn seal_all(&self, domain: &Domain) {
        let guard = domain.pin();
        for shard in self.shards() {
            self.take_batch(shard, domain, &guard);
        }
        drop(guard);
        domain.settle();
    }

    /// Runs every batch of `shard` whose grace period has passed. Returns whether there was
    /// any. Call it unpinned if you can.
    pub(crate) fn run_ripe(&self, shard: &Shard<V>) -> bool {
        // Relaxed first: the common case is an empty stack.
        if shard.ripe.load(Ordering::Relaxed).is_null() {
            return false;
        }
        // Acquire pairs with the Release CAS in `push_ripe`.
        let mut batch = shard.ripe.swap(std::ptr::null_mut(), Ordering::Acquire);
        let any = !batch.is_null();
        while !batch.is_null() {
            // SAFETY: records come from `Box::into_raw` in `take_batch`, and the swap above
            // made this chain ours alone.
            let record = unsafe { Box::from_raw(batch) };
            batch = record.next;
            // SAFETY: the record is ripe: its grace period has passed; it runs once (we own it).
            unsafe { self.run_batch(shard, record.slots, &record.bulk, record.nodes, record.parity) };
        }
        any
    }

    /// Runs the ripe batches of every shard (those of threads that are idle or gone too).
    pub(crate) fn run_all_ripe(&self) {
        for shard in self.shards() {
            self.run_ripe(shard);
        }
    }

    /// Returns once everything retired on any shard before the call has been dropped and its
    /// slot recycled, bar a slot still waiting for a note a racing replace queued after the
    /// seal (true), or when `keep_waiting` says to stop first (false; what is left is
    /// dropped later, as any retirement). The caller holds the reclaim lock and is not pinned.
    pub(crate) fn reclaim_wait(
        &self,
        domain: &Domain,
        collect: impl Fn(),
        mut keep_waiting: impl FnMut() -> bool,
    ) -> bool {
        let mut drain = |waits: &[(&Shard<V>, usize)]| {
            for &(shard, parity) in waits {
                while shard.in_flight(parity) != 0 {
                    collect();
                    if shard.in_flight(parity) == 0 {
                        break;
                    }
                    if !keep_waiting() {
                        return false;
                    }
                    yield_now();
                }
            }
            true
        };
        // A reclaim that gave up at its deadline left batches in the parity it was waiting
        // for, which is the parity the advance below makes current again: wait for those
        // first, or they would be counted with the batches registered after the advance and
        // never waited for. (Nothing registers in that parity until the advance.) Relaxed:
        // the flag is read and written only under the reclaim lock, which orders it.
        if self.reclaim_gave_up.load(Ordering::Relaxed) {
            let leftovers: Vec<(&Shard<V>, usize)> =
                self.shards().map(|shard| (shard, shard.previous_parity())).collect();
            if !drain(&leftovers) {
                return false;
            }
            self.reclaim_gave_up.store(false, Ordering::Relaxed);
        }
        // Take before advancing: what this takes registers in the generation being retired.
        self.seal_all(domain);
        let waits: Vec<(&Shard<V>, usize)> =
            self.shards().map(|shard| (shard, shard.advance_generation())).collect();
        if crate::mutant::active("reclaim_without_wait") {
            return true;
        }
        let done = drain(&waits);
        if !done {
            // Relaxed: see above.
            self.reclaim_gave_up.store(true, Ordering::Relaxed);
        }
        done
    }

    /// Drops everything in a batch of `shard` and recycles its slots onto `shard`.
    ///
    /// # Safety
    /// No reader may still see any value or slot of the batch (a grace period passed since
    /// the batch was taken, or the map is exclusively borrowed), and the chains come from one
    /// `take_batch` of `shard` (its swaps), run once.
    pub(crate) unsafe fn run_batch(
        &self,
        shard: &Shard<V>,
        slots: [u32; REMOVED_STACKS],
        bulk: &[u32],
        nodes: *mut Retired<V>,
        parity: usize,
    ) {
        // Every value is dropped and counted before any slot of the batch goes back to a free
        // list: in this order `pending` never counts a value twice because its slot was
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
        // all run joins its page's local chain, which goes onto the shard's free list of that
        // page in one CAS at the end; a slot whose inline value's note has not run yet (the
        // slot was replaced, then removed, and the note sits in this batch, a later one, or
        // one running now) waits for the handshake after pass 3.
        let mut removed = 0;
        let mut retired_slots = 0;
        let mut chains = [Chain { first: NIL, last: NIL }; PAGES];
        let mut waiting = Vec::new();
        let mut heads = slots;
        // A round takes one step of every chain not yet ended. (Ending on a flag: testing
        // `heads != [NIL; REMOVED_STACKS]` instead made a probe's insert + remove pairs about
        // 8% slower.)
        loop {
            let mut any = false;
            for index in &mut heads {
                if *index == NIL {
                    continue;
                }
                any = true;
                // SAFETY: removed before this batch was taken (the batch's contract).
                *index = unsafe { self.retire_slot(*index, &mut chains, &mut waiting, &mut retired_slots) }
                    & LINK_MASK;
                removed += 1;
            }
            if !any {
                break;
            }
        }
        for &index in bulk {
            // SAFETY: as above; its link bits are not read.
            unsafe { self.retire_slot(index, &mut chains, &mut waiting, &mut retired_slots) };
            removed += 1;
        }
        // Pass 3: free the nodes; a note clears INLINE_PENDING (recycling its slot if the
        // slot's removal ran first, in an earlier batch); then the chains and the waiting slots.
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
                    self.recycle(shard, retired.inline_of);
                }
            }
        }
        for (page, chain) in chains.iter().enumerate() {
            if chain.first != NIL {
                shard.free.push_chain(&self.pages, page, chain.first, chain.last);
            }
        }
        for index in waiting {
            self.finish_drop(shard, index);
        }
        // Counted done only now, after every slot of the batch is back on a list (or waits
        // for a note, itself pending): between a slot's drop above and its push, it is on no
        // list, and the memory bound (docs/design.md) counts it as pending. So `pending` can
        // briefly count a slot that an insert has already reused, never miss one that is in
        // neither place. Relaxed: statistics; `reclaim` synchronises through `in_flight`.
        let counters = &shard.counters;
        counters.replaces_done.fetch_add(replaced, Ordering::Relaxed);
        counters.removes_done.fetch_add(removed, Ordering::Relaxed);
        if retired_slots != 0 {
            counters.retired_slots.fetch_add(retired_slots, Ordering::Relaxed);
        }
        shard.batch_done(parity);
    }

    /// Pass 2 of `run_batch` for one removed slot: drops its value, and puts it on its page's
    /// local chain, or among the `waiting` (its inline value's note has not run yet), or counts
    /// it retired for good. Returns the slot's `aux` word as it was (its link, for a chain).
    ///
    /// # Safety
    /// The slot was removed before the batch was taken, and the batch's grace period has
    /// passed (or the map is exclusively borrowed).
    #[inline(always)]
    unsafe fn retire_slot(
        &self,
        index: u32,
        chains: &mut [Chain; PAGES],
        waiting: &mut Vec<u32>,
        retired_slots: &mut usize,
    ) -> u32 {
        let slot = self.slot(index);
        // Acquire pairs with the AcqRel `fetch_and` of the note's runner: a clear
        // INLINE_PENDING means the inline value's drop happened before. Only a
        // `replace`/`update` that saw the key live sets the bit, while still pinned, and
        // the grace period since the slot died waited for that pin (or the map is
        // borrowed mutably): a clear bit stays clear, and nobody else writes `aux` now.
        // The link bits came with the chain (the Acquire swap that took it, then the
        // ripe stack's Release/Acquire pair); only we rewrite them, below.
        let aux = slot.aux.load(Ordering::Acquire);
        // SAFETY: the caller's contract: nobody can see its value now.
        unsafe { self.drop_current_in_place(slot) };
        if aux & INLINE_PENDING != 0 {
            waiting.push(index);
        // Relaxed: this thread (or one it synchronised with) made the version even.
        } else if slot.version.load(Ordering::Relaxed) == 0 {
            *retired_slots += 1;
        } else {
            let chain = &mut chains[locate_page(index as usize)];
            // Relaxed: published by the Release CAS of the push. Clears the flag bits.
            slot.aux.store(chain.first, Ordering::Relaxed);
            if chain.last == NIL {
                chain.last = index;
            }
            chain.first = index;
        }
        aux
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
    pub(crate) fn drops_done(&self, index: u32) -> bool {
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

    /// After the current value of a dead slot is gone: recycle it onto `shard` now, or leave
    /// that to its pending inline note.
    pub(crate) fn finish_drop(&self, shard: &Shard<V>, index: u32) {
        if self.drops_done(index) {
            self.recycle(shard, index);
        }
    }

    /// Puts a dead slot whose drops have all run back on `shard`'s free list of its page, or
    /// retires it if its version wrapped.
    pub(crate) fn recycle(&self, shard: &Shard<V>, index: u32) {
        // Relaxed: this thread (or one it synchronised with) made the version even.
        if self.slot(index).version.load(Ordering::Relaxed) == 0 {
            // Relaxed: a statistic.
            shard.counters.retired_slots.fetch_add(1, Ordering::Relaxed);
        } else {
            shard.free.push(&self.pages, locate_page(index as usize), index);
        }
    }

    /// Runs whatever sits on every shard's retire stacks right now, without a grace period.
    ///
    /// # Safety
    /// No reader can see anything retired (the map is exclusively borrowed).
    pub(crate) unsafe fn run_retired_now(&self) {
        for shard in self.shards() {
            let parity = shard.register_batch();
            let slots = shard.take_removed();
            let nodes = shard.take_replaced();
            // SAFETY: the caller guarantees no reader; the chains come from these swaps.
            unsafe { self.run_batch(shard, slots, &[], nodes, parity) };
        }
    }

    /// Removed slots on the removed stacks or in a batch not run yet (a statistic).
    pub(crate) fn removing(&self) -> usize {
        self.shards().map(Shard::removing).sum()
    }

    /// Values removed or replaced whose drop has not run yet (a statistic).
    pub(crate) fn pending(&self) -> usize {
        self.shards().map(Shard::pending).sum()
    }

    /// Slots retired for good (a statistic).
    pub(crate) fn retired_slots(&self) -> usize {
        // Relaxed: statistics.
        self.shards().map(|shard| shard.counters.retired_slots.load(Ordering::Relaxed)).sum()
    }
}

/// Moves a batch whose grace period has passed onto its shard's ripe stack.
fn push_ripe<V>(shard: &Shard<V>, batch: *mut Batch<V>) {
    // Relaxed: re-validated by the CAS.
    let mut head = shard.ripe.load(Ordering::Relaxed);
    loop {
        // SAFETY: the record is ours until the CAS publishes it.
        unsafe { (*batch).next = head };
        // Release pairs with the Acquire swap in `run_ripe`.
        match shard.ripe.compare_exchange_weak(head, batch, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => head = actual,
        }
    }
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

/// A chain of recycled slots of one page linked through `aux`, pushed onto a free list at once.
#[derive(Clone, Copy)]
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
