//! Bulk operations beside slotmap's: `retain` keeping half, then `clear`; `drain`; dropping
//! the map; for 100k and 1M 64-byte values (with drop glue, so every drop runs). Ours includes
//! the `reclaim` that drops what `retain` and `clear` removed (slotmap drops at once).
//! Each iteration builds its map outside the timing (`iter_batched`). `cargo bench -p benches
//! --bench bulk`.
#![allow(missing_docs)]

use std::time::Duration;

use benches::Rule;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use epoch_slotmap::DefaultKey;

/// A rule with drop glue, as a service's values have (a `String`, an `Arc`): every bulk
/// operation must run each drop. The box is there for its drop only.
struct Owned(Rule, #[allow(dead_code)] Box<u64>);

fn owned(i: u64) -> Owned {
    Owned(Rule::new(i), Box::new(i))
}

fn ours(n: usize) -> epoch_slotmap::SlotMap<DefaultKey, Owned> {
    let map = epoch_slotmap::SlotMap::new();
    for i in 0..n as u64 {
        map.insert(owned(i));
    }
    map
}

fn theirs(n: usize) -> slotmap::SlotMap<DefaultKey, Owned> {
    let mut map = slotmap::SlotMap::new();
    for i in 0..n as u64 {
        map.insert(owned(i));
    }
    map
}

fn bulk(c: &mut Criterion) {
    for n in [100_000usize, 1_000_000] {
        let mut group = c.benchmark_group(format!("bulk {n}"));
        group.throughput(Throughput::Elements(n as u64));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500));
        group.bench_function(BenchmarkId::new("retain half + clear", "slotmap"), |b| {
            b.iter_batched(
                || theirs(n),
                |mut map| {
                    map.retain(|_, v| v.0.id % 2 == 0);
                    map.clear();
                    map
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("retain half + clear + reclaim", "epoch-slotmap"), |b| {
            b.iter_batched(
                || ours(n),
                |map| {
                    map.retain(|_, v| v.0.id % 2 == 0);
                    map.clear();
                    map.reclaim();
                    map
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("drain", "slotmap"), |b| {
            b.iter_batched(|| theirs(n), |mut map| map.drain().count(), BatchSize::PerIteration)
        });
        group.bench_function(BenchmarkId::new("drain", "epoch-slotmap"), |b| {
            b.iter_batched(|| ours(n), |mut map| map.drain().count(), BatchSize::PerIteration)
        });
        group.bench_function(BenchmarkId::new("drop", "slotmap"), |b| {
            b.iter_batched(|| theirs(n), drop, BatchSize::PerIteration)
        });
        group.bench_function(BenchmarkId::new("drop", "epoch-slotmap"), |b| {
            b.iter_batched(|| ours(n), drop, BatchSize::PerIteration)
        });
        group.finish();
    }
}

criterion_group!(benches, bulk);
criterion_main!(benches);
