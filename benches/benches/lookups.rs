//! Criterion benches of the lookup paths (the report binary covers every workload; these
//! give criterion's statistics for the hottest ones). `cargo bench -p benches`.
#![allow(missing_docs)]

use benches::{ConcurrentSlotMap, Contender, Ours, ShardedSlab, SlotMapInline, filled};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 100_000;

fn lookups<C: Contender>(c: &mut Criterion) {
    let (table, keys) = filled::<C>(N);
    let mut group = c.benchmark_group("get_hit");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function(BenchmarkId::new("guard per batch of 256", C::NAME), |b| {
        b.iter(|| keys.chunks(256).map(|chunk| table.read_batch(chunk)).sum::<u64>())
    });
    group.bench_function(BenchmarkId::new("pin per lookup", C::NAME), |b| {
        b.iter(|| keys.iter().map(|&k| table.read(k).unwrap_or(0)).sum::<u64>())
    });
    group.finish();
}

fn insert_remove<C: Contender>(c: &mut Criterion) {
    let (table, _keys) = filled::<C>(N);
    c.bench_function(&format!("insert + remove/{}", C::NAME), |b| {
        b.iter(|| {
            let k = table.insert(benches::Rule::new(1));
            table.remove(k)
        })
    });
}

fn all(c: &mut Criterion) {
    lookups::<Ours>(c);
    lookups::<SlotMapInline>(c);
    lookups::<ConcurrentSlotMap>(c);
    lookups::<ShardedSlab>(c);
    insert_remove::<Ours>(c);
    insert_remove::<ConcurrentSlotMap>(c);
    insert_remove::<ShardedSlab>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = all
}
criterion_main!(benches);
