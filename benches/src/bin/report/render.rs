//! docs/benchmarks.md and its charts, from one run's figures.
//!
//! Invariant: everything here is generated from the run it renders; the only prose is short
//! definitions of what was measured. Explanations of why a figure is what it is are written by
//! hand in docs/benchmarks-notes.md, which this links to.

use std::fmt::Write as _;
use std::path::Path;

use benches::*;

use crate::measure::{Results, Unit, Workload};
use crate::scale;
use crate::targets::Verdict;

/// A figure with a unit-appropriate precision.
pub fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// The contenders that count as "others" beside ours (not ours under another adapter).
fn is_other(who: &str) -> bool {
    who != Ours::NAME && who != OursRemoveInsert::NAME
}

/// One line of the decision table from one workload: ours against the best other contender.
fn decision_line(r: &Results, need: &str, workload: Workload, note: &str) -> String {
    let unit = workload.unit();
    let Some(by) = r.figures.get(&workload) else {
        return format!("| {need} | {} | not measured | | | |\n", unit.label());
    };
    let ours = by.get(Ours::NAME).copied();
    let best = by
        .iter()
        .filter(|(who, _)| is_other(who))
        .max_by(|a, b| unit.advantage(*a.1, *b.1).total_cmp(&1.0))
        .map(|(who, v)| (*who, *v));
    line(need, unit, ours, best, note)
}

fn line(need: &str, unit: Unit, ours: Option<f64>, best: Option<(&str, f64)>, note: &str) -> String {
    match (ours, best) {
        (Some(o), Some((who, b))) if o == 0.0 || b == 0.0 => {
            // No ratio with a zero (a contender that keeps nothing): the figures say it.
            let verdict = if b <= o { format!("**{who}** wins") } else { "**ours**".to_owned() };
            format!(
                "| {need}{note} | {} | {} | {who}: {} | - | {verdict} |\n",
                unit.label(),
                fmt_num(o),
                fmt_num(b)
            )
        }
        (Some(o), Some((who, b))) => {
            let rel = unit.advantage(o, b);
            let verdict = if rel >= 1.0 {
                format!("**ours** ({rel:.2}x {who})")
            } else {
                format!("**{who}** wins: ours {rel:.2}x of it")
            };
            format!(
                "| {need}{note} | {} | {} | {who}: {} | {rel:.2}x | {verdict} |\n",
                unit.label(),
                fmt_num(o),
                fmt_num(b)
            )
        }
        _ => format!("| {need}{note} | {} | n/a | n/a | | a row is missing |\n", unit.label()),
    }
}

/// The decision table: for each shape a service's table sees, ours against the best other
/// contender, as a ratio where above 1 is always better for ours.
pub fn decision_table(r: &Results, scaling: Option<&scale::Results>) -> String {
    let mut md = String::from(
        "| what your service does | unit | epoch-slotmap | best other contender | ours relative to it (above 1: ours is better) | verdict |\n|---|---|---:|---|---:|---|\n",
    );
    use Workload::*;
    md += &decision_line(r, "lookups, a guard held per request", LookupGuard, "");
    md += &decision_line(r, "lookups, a pin per lookup", LookupPin, "");
    md += &decision_line(r, "reads beside a writer (a pin per lookup)", MixedPinReads, "");
    md += &decision_line(r, "read-mostly, 2 threads (ReadHeavy)", ReadHeavy, "");
    md += &decision_line(r, "write-heavy, 2 threads (Exchange)", Exchange, "");
    md += &decision_line(r, "writes alone (insert + remove)", InsertRemove, "");
    md += &decision_line(r, "iteration over a sparse table", IterSparse, "");
    // Memory after deletes: each contender after its own quiescence step; ours after
    // `reclaim` and `shrink_to_fit`.
    let ours_mem = r.get(MemoryAfterShrink, Ours::NAME);
    let best_mem = r
        .figures
        .get(&MemoryAfterQuiesce)
        .and_then(|by| by.iter().filter(|(w, _)| is_other(w)).min_by(|a, b| a.1.total_cmp(b.1)))
        .map(|(w, v)| (*w, *v));
    md += &line(
        "memory kept after deleting everything",
        Unit::Bytes,
        ours_mem,
        best_mem,
        " (ours: reclaim + shrink_to_fit)",
    );
    if let Some(s) = scaling {
        let top = *s.threads.last().unwrap_or(&1);
        for (scenario, need) in [
            (scale::Scenario::Writes, format!("writes on every thread, {top} threads")),
            (scale::Scenario::ReadsPin, format!("reads with a pin per lookup, {top} threads")),
        ] {
            let value = |p: &scale::Point| p.total;
            let ours = s.get(scenario, scale::Who::Ours, top).map(|p| value(&p));
            let best = s.by.iter().find(|(sc, _)| *sc == scenario).and_then(|(_, rows)| {
                rows.iter()
                    // The read-only baselines are floors, not tables a service can use.
                    .filter(|row| {
                        !matches!(row.who, scale::Who::Ours | scale::Who::PinFloor | scale::Who::NoSync)
                    })
                    .filter_map(|row| s.get(scenario, row.who, top).map(|p| (row.who.name(), value(&p))))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
            });
            md +=
                &line(&need, Unit::OpsPerSecond, ours.map(|v| v * 1e6), best.map(|(w, v)| (w, v * 1e6)), "");
        }
    }
    md
}

/// The full tables: every workload with its unit, direction and definition; within a table,
/// best first, and each contender's figure relative to ours (above 1: better than ours).
pub fn tables(r: &Results) -> String {
    let mut md = String::new();
    for workload in Workload::ALL {
        let Some(by) = r.figures.get(&workload) else { continue };
        let unit = workload.unit();
        if workload == Workload::SoloLookupGuard {
            md += "\n### Every contender, each timed on its own\n\nThe tables above measure the \
                   contenders the targets name side by side, round after round; the ones below \
                   time each contender on its own, seconds apart, on a machine whose speed moves \
                   by 2-3x within a minute: use them for the contenders missing above, and \
                   compare across them loosely.\n";
        }
        if workload == Workload::LookupGuardCold {
            md += "\n### Cold cache\n\nThe first pass of each round of the side-by-side lookups, \
                   right after the other contenders' passes evicted this table: every lookup \
                   waits on memory. No target uses them.\n";
        }
        let direction = if unit.lower_is_better() { "lower is better" } else { "higher is better" };
        let _ = writeln!(
            md,
            "\n#### {}\n\n{}; {direction}. One operation: {}.\n",
            workload.title(),
            unit.label(),
            workload.definition()
        );
        let quiesce = workload == Workload::MemoryAfterQuiesce;
        let _ = writeln!(
            md,
            "| contender | {} |{} relative to epoch-slotmap (above 1: better) |\n|---|---:|{}---:|",
            unit.label(),
            if quiesce { " its quiescence step |" } else { "" },
            if quiesce { "---|" } else { "" }
        );
        let ours = by.get(Ours::NAME).copied();
        let mut rows: Vec<(&&str, &f64)> = by.iter().collect();
        rows.sort_by(|a, b| if unit.lower_is_better() { a.1.total_cmp(b.1) } else { b.1.total_cmp(a.1) });
        for (who, v) in rows {
            let rel = ours.map_or(String::new(), |o| format!("{:.2}x", unit.advantage(*v, o)));
            let step = if quiesce {
                format!(" `{}` |", r.quiesce.get(*who).copied().unwrap_or("?"))
            } else {
                String::new()
            };
            let _ = writeln!(md, "| {who} | {} |{step} {rel} |", fmt_num(*v));
        }
    }
    md
}

/// The bar charts: (workload, file); each drawn into `dir`.
pub const CHARTS: [(Workload, &str); 5] = [
    (Workload::SoloLookupGuard, "bench-get-hit-guard.svg"),
    (Workload::SoloLookupPin, "bench-get-hit-pin.svg"),
    (Workload::SoloInsertRemove, "bench-insert-remove.svg"),
    (Workload::MixedPinReads, "bench-mixed-reads.svg"),
    (Workload::MemoryPerEntry, "bench-memory.svg"),
];

/// One bar chart of a workload, ours in red, best at the top.
pub fn chart(r: &Results, workload: Workload, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let Some(by) = r.figures.get(&workload) else { return Ok(()) };
    let unit = workload.unit();
    let mut rows: Vec<_> = by.iter().map(|(w, v)| (*w, *v)).collect();
    // Worst first: plotters draws the first row at the bottom.
    rows.sort_by(|a, b| if unit.lower_is_better() { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
    let root = SVGBackend::new(path, (800, 70 + 28 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max) * 1.15;
    let title = format!(
        "{} ({}, {})",
        workload.title(),
        unit.label(),
        if unit.lower_is_better() { "lower is better" } else { "higher is better" }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..max, 0..rows.len())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|i| rows.get(*i).map_or(String::new(), |r| r.0.to_string()))
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (who, v))| {
        let color = if *who == Ours::NAME { RED } else { BLUE };
        Rectangle::new([(0.0, i), (*v, i + 1)], color.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}

/// The targets as a list.
pub fn targets(verdicts: &[Verdict]) -> String {
    verdicts.iter().map(|v| format!("- {}\n", v.line())).collect()
}

/// The machine, in one line.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores available, {rustc}")
}
