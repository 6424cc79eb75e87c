//! Helpers for the loom model checks of `epoch-slotmap`: tracked values whose liveness lives
//! in a side table of loom atomics, and model runners for the two reclaimers.
//!
//! Run the suite with `loom-tests/run.sh`; built without `--cfg loom` this crate is empty.
#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use epoch_slotmap::{DefaultKey, SlotMap};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Liveness of every tracked value of one execution, keyed by the id the test assigned.
pub struct Side {
    dropped: Vec<AtomicBool>,
    double_drops: AtomicUsize,
}

impl Side {
    pub fn new(ids: usize) -> Arc<Self> {
        Arc::new(Self {
            dropped: (0..ids).map(|_| AtomicBool::new(false)).collect(),
            double_drops: AtomicUsize::new(0),
        })
    }

    /// Whether value `id` has been dropped. Acquire pairs with the Release in `Val::drop`.
    pub fn is_dropped(&self, id: usize) -> bool {
        self.dropped[id].load(Ordering::Acquire)
    }

    /// Asserts every value in `ids` was dropped exactly once and nothing twice.
    pub fn assert_all_dropped(&self, ids: impl IntoIterator<Item = usize>) {
        for id in ids {
            assert!(self.is_dropped(id), "value {id} leaked");
        }
        assert_eq!(self.double_drops.load(Ordering::Acquire), 0, "a value was dropped twice");
    }

    pub fn assert_no_double_drop(&self) {
        assert_eq!(self.double_drops.load(Ordering::Acquire), 0, "a value was dropped twice");
    }
}

/// A value with an id and a payload in a loom cell: an unsynchronised publication or a read
/// racing with the drop's write shows up as a causality violation.
pub struct Val {
    pub id: usize,
    payload: UnsafeCell<usize>,
    side: Arc<Side>,
}

impl Val {
    pub fn new(id: usize, side: &Arc<Side>) -> Self {
        Self { id, payload: UnsafeCell::new(id * 10), side: side.clone() }
    }

    /// Reads the payload through loom's cell (checked) and returns the id it encodes.
    pub fn payload_id(&self) -> usize {
        // SAFETY: the map hands out shared references only; writes happen in `drop`, which
        // loom orders against this read (a race is reported as a causality violation).
        self.payload.with(|p| unsafe { *p }) / 10
    }
}

impl Val {
    /// Writes the payload (through loom's cell): a reader that can still see the value races
    /// with this write and loom reports it.
    pub fn poke(&mut self) {
        self.payload.with_mut(|p| {
            // SAFETY: `&mut self`.
            unsafe { *p += 0 }
        });
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        // A write, so a reader racing with the drop is caught by loom.
        self.payload.with_mut(|p| {
            // SAFETY: `&mut self`.
            unsafe { *p = usize::MAX }
        });
        // Release pairs with `Side::is_dropped`.
        if self.side.dropped[self.id].swap(true, Ordering::AcqRel) {
            self.side.double_drops.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Reads a value a guard returned, as value `id` (identified from the key, or from its
/// recorded address): the side table must say `id` is alive *before* the value is
/// dereferenced, so a bug is reported instead of reading freed memory. Returns `id`.
pub fn read_as(side: &Side, value: *const Val, id: usize) -> usize {
    assert!(!side.is_dropped(id), "value {id} was dropped while a guard could see it");
    // SAFETY: the side table says value `id` is alive, and the guard the caller holds keeps
    // it so (that is what is being checked).
    let value = unsafe { &*value };
    assert_eq!(value.id, id, "a key returned another key's value");
    assert_eq!(value.payload_id(), id, "torn or unpublished value");
    id
}

/// A reader's whole turn: pins `map`, looks `key` up and, if it is live, reads it as value
/// `id` (see [`read_as`]). Returns whether it saw the value.
pub fn pinned_read(map: &SlotMap<DefaultKey, Val>, side: &Side, key: DefaultKey, id: usize) -> bool {
    let guard = map.pin();
    match guard.get(key) {
        Some(v) => {
            read_as(side, v, id);
            true
        }
        None => false,
    }
}

/// The two reclaimers a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaimer {
    /// The minimal grace-period reclaimer, explored with no preemption bound.
    Grace,
    /// The real crossbeam-epoch domain, explored with preemption bound 2.
    Epoch,
}

impl Reclaimer {
    pub fn map<V>(self) -> SlotMap<DefaultKey, V> {
        match self {
            Reclaimer::Grace => SlotMap::with_grace_reclaimer(),
            Reclaimer::Epoch => SlotMap::new(),
        }
    }

    pub fn map_with_max_capacity<V>(self, max: usize) -> SlotMap<DefaultKey, V> {
        match self {
            Reclaimer::Grace => SlotMap::with_grace_reclaimer_and_max_capacity(max),
            Reclaimer::Epoch => SlotMap::with_max_capacity(max),
        }
    }

    pub fn map_with_first_version<V>(self, first: u32) -> SlotMap<DefaultKey, V> {
        match self {
            Reclaimer::Grace => SlotMap::with_grace_reclaimer_and_first_version(first),
            Reclaimer::Epoch => SlotMap::with_first_version(first),
        }
    }
}

/// Outcomes seen across all executions of one model.
pub struct Outcomes(StdMutex<BTreeSet<String>>);

impl Default for Outcomes {
    fn default() -> Self {
        Self::new()
    }
}

impl Outcomes {
    pub const fn new() -> Self {
        Self(StdMutex::new(BTreeSet::new()))
    }
    /// Forgets what earlier models recorded.
    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
    pub fn record(&self, outcome: impl Into<String>) {
        self.0.lock().unwrap().insert(outcome.into());
    }
    /// Asserts that every outcome in `expected` was reached at least once.
    pub fn assert_reached(&self, expected: &[&str]) {
        let seen = self.0.lock().unwrap();
        for e in expected {
            assert!(seen.contains(*e), "outcome {e:?} never reached; saw {seen:?}");
        }
    }
}

/// Executions of the model currently running (reported when it ends, or fails).
static EXECUTIONS: StdAtomicUsize = StdAtomicUsize::new(0);

struct Report(&'static str, Reclaimer, std::time::Instant);

impl Drop for Report {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() { "FAILED" } else { "ok" };
        // Parsed by mutants.sh and quoted in docs/loom.md.
        println!(
            "loom-report scenario={} reclaimer={:?} executions={} seconds={:.1} result={outcome}",
            self.0,
            self.1,
            EXECUTIONS.load(StdOrdering::SeqCst),
            self.2.elapsed().as_secs_f64()
        );
    }
}

/// How many threads a scenario spawns: two-thread scenarios are explored exhaustively on the
/// grace-period reclaimer; three-thread ones at preemption bound 2 (unbounded, the state
/// space is out of reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actors {
    Two,
    /// Two threads whose operations go deep into crossbeam (writers that pin for every
    /// insert and remove, run batches and collect; a shrink waiting for its page free):
    /// exhaustive on the grace reclaimer, bound 1 on crossbeam (bound 2 took 15-200 s each,
    /// over the CI budget; `LOOM_MAX_PREEMPTIONS=2` runs it).
    TwoHeavy,
    /// `TwoHeavy` with an iterator on one side: the iterator's occupancy-word loads against
    /// the remover's bit clears multiply the interleavings. Exhaustive on grace took 1.9M
    /// executions (197 s, all ok); CI runs it at bound 6 on grace (177k executions, ~19 s)
    /// and bound 1 on crossbeam.
    TwoScan,
    Three,
    /// Two threads that both go deep into the write path (growth under the lock, batches, a
    /// full `reclaim` with its waits), whose exhaustive run on the grace reclaimer takes more
    /// than CI should spend (over 5 minutes, or 1.6M executions): that preemption bound on
    /// the grace reclaimer (each scenario says why its bound is enough), bound 1 on crossbeam.
    Bound(usize),
    /// The rule store's scenarios: a writer through the store's mutex and both of its maps
    /// against a reader scanning two kinds. Not the slot protocol (that is checked
    /// exhaustively above); bound 3 on the grace reclaimer, 1 on crossbeam.
    Store,
}

/// Runs `f` under loom: exhaustively (no preemption bound) for `Grace` with two actors, at
/// bound 3 with three, at bound 2 (three actors: 1) for `Epoch` (crossbeam's internals
/// explode beyond).
/// `LOOM_MAX_PREEMPTIONS` overrides all of them.
pub fn model(
    name: &'static str,
    reclaimer: Reclaimer,
    actors: Actors,
    f: impl Fn(Reclaimer) + Sync + Send + 'static,
) {
    EXECUTIONS.store(0, StdOrdering::SeqCst);
    let _report = Report(name, reclaimer, std::time::Instant::now());
    let mut builder = loom::model::Builder::new();
    // crossbeam-epoch's collection loops take many branches with three threads.
    builder.max_branches = 20_000;
    if std::env::var("LOOM_MAX_PREEMPTIONS").is_err() {
        builder.preemption_bound = match (reclaimer, actors) {
            (Reclaimer::Grace, Actors::Two | Actors::TwoHeavy) => None,
            (Reclaimer::Grace, Actors::Store) => Some(3),
            (Reclaimer::Grace, Actors::Three) => Some(2),
            (Reclaimer::Grace, Actors::Bound(n)) => Some(n),
            (Reclaimer::Grace, Actors::TwoScan) => Some(6),
            (Reclaimer::Epoch, Actors::Two) => Some(2),
            (
                Reclaimer::Epoch,
                Actors::Three | Actors::TwoHeavy | Actors::TwoScan | Actors::Bound(_) | Actors::Store,
            ) => Some(1),
        };
    }
    builder.check(move || {
        EXECUTIONS.fetch_add(1, StdOrdering::SeqCst);
        f(reclaimer)
    });
}

/// Declares one scenario twice: `<name>::grace` and `<name>::epoch` (see [`model`] for the
/// bounds). With `OUTCOMES => [..]`, each run also asserts that every listed outcome was
/// reached; `three_actors` marks a scenario with three threads, `heavy` one whose two
/// threads go deep into crossbeam.
#[macro_export]
macro_rules! scenario {
    ($name:ident, $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::Two), (), $body);
    };
    ($name:ident, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::Two), ($outcomes, [$($expected),*]), $body);
    };
    // Three threads through crossbeam-epoch did not finish in 5 minutes even at bound 1, so
    // three-actor scenarios run on the grace reclaimer only (at bound 2).
    ($name:ident, three_actors, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn grace() {
                $crate::scenario!(@run $name, Grace, ($crate::Actors::Three), ($outcomes, [$($expected),*]), $body);
            }
        }
    };
    ($name:ident, store, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::Store), ($outcomes, [$($expected),*]), $body);
    };
    ($name:ident, bound $n:literal, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::Bound($n)), ($outcomes, [$($expected),*]), $body);
    };
    ($name:ident, heavy, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::TwoHeavy), ($outcomes, [$($expected),*]), $body);
    };
    ($name:ident, scan, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::TwoScan), ($outcomes, [$($expected),*]), $body);
    };
    // Two actors with more interleavings than an exhaustive grace run should spend CI time on
    // (`replace_vs_remove`: 1.1M executions, 131 s, all ok when run exhaustively by hand):
    // bounded as `scan` is.
    ($name:ident, bounded, $outcomes:ident => [$($expected:expr),* $(,)?], $body:expr) => {
        $crate::scenario!(@emit $name, ($crate::Actors::TwoScan), ($outcomes, [$($expected),*]), $body);
    };
    (@emit $name:ident, $actors:tt, $check:tt, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn grace() {
                $crate::scenario!(@run $name, Grace, $actors, $check, $body);
            }
            #[test]
            fn epoch() {
                $crate::scenario!(@run $name, Epoch, $actors, $check, $body);
            }
        }
    };
    (@run $name:ident, $reclaimer:ident, $actors:tt, (), $body:expr) => {
        $crate::model(
            concat!(stringify!($name), "::", stringify!($reclaimer)),
            $crate::Reclaimer::$reclaimer,
            $actors,
            $body,
        );
    };
    (@run $name:ident, $reclaimer:ident, $actors:tt, ($outcomes:ident, [$($expected:expr),*]), $body:expr) => {
        $outcomes.reset();
        $crate::scenario!(@run $name, $reclaimer, $actors, (), $body);
        $outcomes.assert_reached(&[$($expected),*]);
    };
}
