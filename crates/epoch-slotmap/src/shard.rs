//! Shards: the per-thread half of the write path.
//!
//! Invariant: every thread that writes to the map has a shard of its own (it travels with the
//! thread's reclamation participant, so at most one thread uses a shard as its own at a time,
//! and a thread that exits hands it to the next one), and in the steady state a writer touches
//! only its own shard's cache lines:
//! - `free`: vacant slots, one tagged list per page. An insert pops from its own shard; a slot
//!   goes back onto the shard of whoever ran its batch (normally the thread that removed it).
//! - `removed` / `replaced`: what this thread retired and has not put in a batch yet.
//! - `ripe`: this shard's batches whose grace period has passed, pushed by whichever thread
//!   crossbeam ran the deferred function on, taken by the owner.
//! - `generation` / `in_flight`: this shard's batches not yet run, by the parity of the
//!   generation they registered in (see `reclaim` in `retire.rs`).
//! - `counters`: statistics, summed over shards by `stats()`.
//!
//! Every field is an atomic, and other threads do touch them, rarely: an insert that finds its
//! own lists empty pops from another shard (a steal), `reclaim` and a map at its limit take
//! every shard's stacks into batches and run every shard's ripe batches, and `shrink_to_fit`
//! takes a page's list from every shard. So a shard is never owned in the sense of exclusive
//! access; ownership only decides whose cache lines a thread writes in the common case.
//!
//! Shards are created on a thread's first write and live as long as the map (a list that only
//! grows; its nodes never move).

use crate::config::{BATCH, REMOVED_STACKS, STACK_SHARE};
use crate::free_list::PagedFreeList;
use crate::retire::Batch;
use crate::slot::{LINK_MASK, NIL, Retired, Slot};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The removed stack of slot `index`: a multiplicative hash of the index, so that removals
/// that follow a stride (every second or fourth slot, say) still spread over the stacks.
#[inline(always)]
fn removed_stack_of(index: u32) -> usize {
    let hashed = index.wrapping_mul(0x9E37_79B9);
    ((u64::from(hashed) * REMOVED_STACKS as u64) >> 32) as usize
}

/// Statistics of one shard (each updated by whoever does the work on the shard's behalf).
#[derive(Default)]
pub(crate) struct ShardCounters {
    pub(crate) removes_retired: AtomicUsize,
    pub(crate) removes_done: AtomicUsize,
    pub(crate) replaces_retired: AtomicUsize,
    pub(crate) replaces_done: AtomicUsize,
    /// Slots retired for good (their version would have wrapped).
    pub(crate) retired_slots: AtomicUsize,
}

/// One thread's lists (see the module header). Aligned so that two shards never share a
/// cache line (nor the adjacent line the prefetcher pairs with it).
#[repr(align(128))]
pub(crate) struct Shard<V> {
    pub(crate) free: PagedFreeList,
    /// Each `(count << 32) | first index`, `count` = slots on it, so a remover learns from its
    /// own push whether a batch is due.
    removed: [AtomicU64; REMOVED_STACKS],
    replaced: AtomicPtr<Retired<V>>,
    pub(crate) ripe: AtomicPtr<Batch<V>>,
    generation: AtomicUsize,
    in_flight: [AtomicUsize; 2],
    pub(crate) counters: ShardCounters,
    /// The next (older) shard of the map's list; immutable once published.
    pub(crate) next: *const Shard<V>,
}

impl<V> Shard<V> {
    pub(crate) fn new() -> Self {
        Self {
            free: PagedFreeList::new(),
            removed: std::array::from_fn(|_| AtomicU64::new(u64::from(NIL))),
            replaced: AtomicPtr::new(std::ptr::null_mut()),
            ripe: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicUsize::new(0),
            in_flight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            counters: ShardCounters::default(),
            next: std::ptr::null(),
        }
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
                // `BATCH - REMOVED_STACKS` wait (plus pushes that race with a take); a batch
                // holds at most `BATCH - REMOVED_STACKS + 1` removals from one trigger.
                Ok(_) => return (count + 1).is_multiple_of(STACK_SHARE),
                Err(actual) => head = actual,
            }
        }
    }

    /// Queues `node` (a boxed replaced value, or a note for a replaced inline value), which
    /// nobody else can reach. Returns true when a batch is due.
    pub(crate) fn retire_replaced(&self, node: *mut Retired<V>) -> bool {
        // Relaxed: re-validated by the CAS.
        let mut head = self.replaced.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is unreachable by anyone else until the CAS publishes it (the
            // caller's contract).
            unsafe { (*node).next = head };
            // Release pairs with the Acquire swap in `take_replaced`.
            match self.replaced.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => head = actual,
            }
        }
        // Relaxed: a statistic and a trigger.
        (self.counters.replaces_retired.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(BATCH)
    }

    /// Whether nothing waits on this shard's retire stacks (a relaxed look: what it misses
    /// was pushed after the look began, or taken by a taker that registered its batch).
    #[inline]
    pub(crate) fn nothing_retired(&self) -> bool {
        // Relaxed: a push that happened before the caller's call is seen (coherence); see
        // `Shared::take_batch`.
        self.removed.iter().all(|stack| stack.load(Ordering::Relaxed) as u32 == NIL)
            && self.replaced.load(Ordering::Relaxed).is_null()
    }

    /// Takes the removed stacks whole and returns their first indexes (`NIL` for an empty
    /// one), counting their slots as retired.
    pub(crate) fn take_removed(&self) -> [u32; REMOVED_STACKS] {
        let mut total = 0;
        let heads = std::array::from_fn(|stack| {
            // Relaxed first: an empty stack needs no swap (and costs no write).
            if self.removed[stack].load(Ordering::Relaxed) as u32 == NIL {
                return NIL;
            }
            // Acquire pairs with the Release CASes of the pushes: links are visible.
            let head = self.removed[stack].swap(u64::from(NIL), Ordering::Acquire);
            total += (head >> 32) as usize;
            head as u32
        });
        // Relaxed: a statistic (see `removing`).
        self.counters.removes_retired.fetch_add(total, Ordering::Relaxed);
        heads
    }

    /// Takes the replaced stack whole.
    pub(crate) fn take_replaced(&self) -> *mut Retired<V> {
        // Relaxed first: as in `take_removed`.
        if self.replaced.load(Ordering::Relaxed).is_null() {
            return std::ptr::null_mut();
        }
        // Acquire pairs with the Release CAS in `retire_replaced`: the nodes are visible.
        self.replaced.swap(std::ptr::null_mut(), Ordering::Acquire)
    }

    /// Counts a new batch of this shard in the current generation's parity and returns that
    /// parity.
    pub(crate) fn register_batch(&self) -> usize {
        loop {
            // A Dekker pair with `advance_generation` + `in_flight`, made of read-modify-writes
            // so it holds with AcqRel alone: of the two RMWs on `generation` (our re-read,
            // reclaim's bump) the later reads from the earlier. Either our re-read sees the new
            // generation (and we retry in it), or the bump synchronises with our re-read, so
            // reclaim's RMW read of `in_flight` comes after our increment. (Loom treats SeqCst
            // accesses as AcqRel, so this matters there.) Both words are this shard's own, so
            // the pair costs its owner no shared cache line.
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

    /// A batch of this shard registered in `parity` has run (or was empty).
    pub(crate) fn batch_done(&self, parity: usize) {
        // AcqRel: Release makes the batch's drops visible to `reclaim`, whose RMW read of
        // `in_flight` reads from this decrement (or a later one).
        self.in_flight[parity].fetch_sub(1, Ordering::AcqRel);
    }

    /// Advances the generation and returns the parity `reclaim` must wait to drain.
    pub(crate) fn advance_generation(&self) -> usize {
        // AcqRel: see `register_batch`.
        self.generation.fetch_add(1, Ordering::AcqRel) & 1
    }

    /// The parity of the generation before the current one: what the last `reclaim` waited
    /// for. Only reclaimers change the generation, under the reclaim lock the caller holds.
    pub(crate) fn previous_parity(&self) -> usize {
        // Relaxed: the caller holds the reclaim lock, which orders every advance.
        (self.generation.load(Ordering::Relaxed) & 1) ^ 1
    }

    /// Batches of that parity not yet run.
    pub(crate) fn in_flight(&self, parity: usize) -> usize {
        // An RMW read with AcqRel: see `register_batch` and `batch_done`.
        self.in_flight[parity].fetch_add(0, Ordering::AcqRel)
    }

    /// Removed slots on this shard's stacks or in its batches not run yet (a statistic).
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

    /// Values removed or replaced on this shard whose drop has not run yet, or whose slot the
    /// batch that dropped them has not handed back yet.
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
