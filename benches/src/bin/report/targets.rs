//! The targets the issues set, checked against one run.
//!
//! Invariant: a target names its rows as [`Workload`]s and contenders; a row that is missing
//! (a workload that did not run, a contender renamed) makes the target fail, never vanish.

use benches::*;

use crate::measure::{Results, Workload};

/// How a target compares its two figures.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// `lhs / rhs <= x`.
    RatioAtMost(f64),
    /// `lhs / rhs >= x`.
    RatioAtLeast(f64),
    /// `lhs <= rhs + x`.
    AtMostPlus(f64),
}

/// A row of the results: a workload and a contender.
pub type Row = (Workload, &'static str);

/// One target: `lhs` against `rhs`, within `bound`, for the issue's `reason`.
pub struct Target {
    pub name: String,
    /// The reason, in a short phrase.
    pub reason: &'static str,
    pub lhs: Row,
    pub rhs: Row,
    pub bound: Bound,
}

/// A target checked against a run.
pub struct Verdict {
    pub target: Target,
    /// The compared value (the ratio, or `lhs` for `AtMostPlus`), `None` when a row is missing.
    pub value: Option<f64>,
    pub pass: bool,
}

impl Verdict {
    /// One line: the target, the figure, the threshold, the reason.
    pub fn line(&self) -> String {
        let t = &self.target;
        let verdict = if self.pass { "pass" } else { "FAIL" };
        let (shown, threshold) = match (t.bound, self.value) {
            (_, None) => ("row missing".to_owned(), threshold_text(t.bound)),
            (Bound::AtMostPlus(_), Some(v)) => (format!("{v:.1}"), threshold_text(t.bound)),
            (Bound::RatioAtMost(x) | Bound::RatioAtLeast(x), Some(v)) => {
                // Three decimals where two would round a ratio onto the threshold.
                let digits = if (v - x).abs() < 0.005 { 3 } else { 2 };
                (format!("{v:.digits$}x"), threshold_text(t.bound))
            }
        };
        format!("[{verdict}] {}: {shown} (target {threshold}; {})", t.name, t.reason)
    }
}

fn threshold_text(bound: Bound) -> String {
    match bound {
        Bound::RatioAtMost(x) => format!("<= {x}x"),
        Bound::RatioAtLeast(x) => format!(">= {x}x"),
        Bound::AtMostPlus(x) => format!("<= the other + {x}"),
    }
}

/// The benches issue's targets (and, for ours replacing by remove + insert, the same mixed
/// targets like-for-like with the peers' adapters).
pub fn all() -> Vec<Target> {
    use Workload::*;
    let ours = Ours::NAME;
    let csm = ConcurrentSlotMap::NAME;
    let sm = SlotMapInline::NAME;
    let slab = ShardedSlab::NAME;
    let rw = StdRwLockSlotMap::NAME;
    let t = |name: &str, reason, lhs, rhs, bound| Target { name: name.to_owned(), reason, lhs, rhs, bound };
    let mut out = vec![
        t(
            "lookup under a held guard vs slotmap::get",
            "values inline: a guarded lookup near slotmap's",
            (LookupGuard, ours),
            (LookupGuard, sm),
            Bound::RatioAtMost(1.3),
        ),
        t(
            "pin + lookup vs concurrent-slotmap",
            "a one-off read no dearer than the closest peer's",
            (LookupPin, ours),
            (LookupPin, csm),
            Bound::RatioAtMost(1.2),
        ),
        t(
            "stale lookup under a guard vs slotmap",
            "dead keys rejected cheaply",
            (LookupStale, ours),
            (LookupStale, sm),
            Bound::RatioAtMost(2.0),
        ),
        t(
            "insert + remove vs concurrent-slotmap",
            "writes no dearer than the closest peer's",
            (InsertRemove, ours),
            (InsertRemove, csm),
            Bound::RatioAtMost(1.0),
        ),
        t(
            "insert + remove vs sharded-slab",
            "writes at half a slab's cost",
            (InsertRemove, ours),
            (InsertRemove, slab),
            Bound::RatioAtMost(0.5),
        ),
        t(
            "remove random + insert vs sharded-slab",
            "churn no dearer than a slab's",
            (RemoveRandomInsert, ours),
            (RemoveRandomInsert, slab),
            Bound::RatioAtMost(1.0),
        ),
    ];
    for (prefix, who) in
        [("", ours), ("like-for-like (ours replacing by remove + insert): ", OursRemoveInsert::NAME)]
    {
        let mixed: [(&str, &'static str, Row, Row, Bound); 6] = [
            (
                "reader beside a writer, pin per lookup, vs concurrent-slotmap",
                "readers never wait for writers",
                (MixedPinReads, who),
                (MixedPinReads, csm),
                Bound::RatioAtLeast(1.0),
            ),
            (
                "writer beside a reader, pin per lookup, vs concurrent-slotmap",
                "writers never wait for readers",
                (MixedPinWrites, who),
                (MixedPinWrites, csm),
                Bound::RatioAtLeast(1.0),
            ),
            (
                "reader beside a writer, pin per lookup, vs std RwLock<SlotMap>",
                "the point of going lock-free",
                (MixedPinReads, who),
                (MixedPinReads, rw),
                Bound::RatioAtLeast(2.5),
            ),
            (
                "reader beside a writer, guard per 256, vs sharded-slab",
                "a held guard makes reads nearly free",
                (MixedGuardReads, who),
                (MixedGuardReads, slab),
                Bound::RatioAtLeast(5.0),
            ),
            (
                "writer beside a reader, guard per 256, vs concurrent-slotmap",
                "long guards do not slow writers",
                (MixedGuardWrites, who),
                (MixedGuardWrites, csm),
                Bound::RatioAtLeast(1.0),
            ),
            (
                "reader with a writer vs alone, guard per 256",
                "a writer barely slows readers",
                (MixedGuardReads, who),
                (MixedGuardReadsAlone, who),
                Bound::RatioAtLeast(0.8),
            ),
        ];
        out.extend(
            mixed.into_iter().map(|(name, reason, lhs, rhs, bound)| {
                t(&format!("{prefix}{name}"), reason, lhs, rhs, bound)
            }),
        );
    }
    out.extend([
        t(
            "two readers vs one",
            "reads scale with readers",
            (Readers2, ours),
            (Readers1, ours),
            Bound::RatioAtLeast(1.8),
        ),
        t(
            "iteration per live value at 10% vs 100% occupancy",
            "a sparse table iterates at the cost of its live values",
            (IterSparse, ours),
            (IterFull, ours),
            Bound::RatioAtMost(3.0),
        ),
        t(
            "bytes per live entry vs slotmap",
            "16 bytes of bookkeeping per slot at most",
            (MemoryPerEntry, ours),
            (MemoryPerEntry, sm),
            Bound::AtMostPlus(16.0),
        ),
    ]);
    out
}

/// Every target against `r`.
pub fn check(r: &Results) -> Vec<Verdict> {
    all()
        .into_iter()
        .map(|target| {
            let lhs = r.get(target.lhs.0, target.lhs.1);
            let rhs = r.get(target.rhs.0, target.rhs.1);
            let (value, pass) = match (lhs, rhs, target.bound) {
                (Some(a), Some(b), Bound::RatioAtMost(x)) => (Some(a / b), a / b <= x),
                (Some(a), Some(b), Bound::RatioAtLeast(x)) => (Some(a / b), a / b >= x),
                (Some(a), Some(b), Bound::AtMostPlus(x)) => (Some(a), a <= b + x),
                _ => (None, false),
            };
            Verdict { target, value, pass }
        })
        .collect()
}
