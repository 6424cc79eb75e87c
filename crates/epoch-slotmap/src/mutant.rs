//! Deliberate bugs, for proving that the loom suite catches them (`loom-tests/mutants.sh`).
//!
//! Invariant: in every build without `--cfg epoch_slotmap_mutants`, [`active`] is the
//! constant `false`, so each mutant site compiles to the correct code alone. With that cfg,
//! one build carries every mutant and the environment variable `EPOCH_SLOTMAP_MUTANT` picks
//! the one that is on for the whole process, so the script builds once, not once per mutant.

/// Whether the deliberate bug `name` is on in this process.
#[cfg(not(epoch_slotmap_mutants))]
#[inline(always)]
pub(crate) const fn active(_name: &str) -> bool {
    false
}

/// Whether the deliberate bug `name` is on in this process (`EPOCH_SLOTMAP_MUTANT=name`).
#[cfg(epoch_slotmap_mutants)]
pub(crate) fn active(name: &str) -> bool {
    // std's OnceLock, not a loom primitive: the choice is fixed before any model runs, and
    // reading it is not an interleaving loom should explore.
    static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| std::env::var("EPOCH_SLOTMAP_MUTANT").ok()).as_deref() == Some(name)
}
