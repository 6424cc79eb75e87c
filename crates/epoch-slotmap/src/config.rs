//! The constants whose values differ under loom or Miri, in one place.
//!
//! Invariant: nothing else in the crate tests `cfg!(loom)` or `cfg!(miri)` to pick a size,
//! a batch length or a threshold. Under loom everything is tiny so that a model crosses page
//! and batch boundaries in a handful of operations; under Miri batches are small so that its
//! scaled-down tests still run batches and their recycling.

/// log2 of the slots in the first page (2 under loom, 32 otherwise).
pub(crate) const FIRST_PAGE_SHIFT: u32 = if cfg!(loom) { 1 } else { 5 };

/// A participant flushes its bag every this many pins (see `domain/epoch.rs`); never under
/// loom, where it would only multiply a model's interleavings.
pub(crate) const FLUSH_EVERY_PINS: u32 = if cfg!(loom) { u32::MAX } else { 1 << 12 };

/// Retirements per batch: a batch is taken when a thread's removed stacks reach this many
/// slots (see `STACK_SHARE`), or its replaced stack this many values.
pub(crate) const BATCH: usize = if cfg!(loom) {
    2
} else if cfg!(miri) {
    4
} else {
    128
};

/// Removed stacks per shard: the batch runner walks their chains side by side, so that many
/// of its dependent loads are in flight at once (see `retire.rs`). One under loom, so the
/// models explore the same atomics as with a single stack; two under Miri, whose tests then
/// walk two chains of up to two slots each.
pub(crate) const REMOVED_STACKS: usize = if cfg!(loom) {
    1
} else if cfg!(miri) {
    2
} else {
    4
};

/// A push that brings its removed stack to a multiple of this makes a batch due: the stacks
/// share `BATCH`.
pub(crate) const STACK_SHARE: usize = BATCH / REMOVED_STACKS;
const _: () = assert!(STACK_SHARE >= 1 && BATCH.is_multiple_of(REMOVED_STACKS));

/// Above this many pending values in its own shard, a writer helps reclamation (yield,
/// collect, run what ripened) for at most `HELP_ROUNDS` rounds per batch. Six batches of
/// 128, and the same under loom and Miri: there, six times their tiny `BATCH` would send
/// every writer into its help rounds all the time.
pub(crate) const PENDING_HIGH_WATER: usize = 768;

/// Rounds of help a writer gives at most per batch (the bound that keeps writes lock-free).
pub(crate) const HELP_ROUNDS: usize = 64;

/// Rounds of `Domain::drain` at the end of `reclaim` (crossbeam's own queue nodes; memory
/// hygiene only, not explored under loom).
pub(crate) const DRAIN_ROUNDS: usize = if cfg!(loom) { 0 } else { 64 };
