//! Criterion benches of the single-threaded workloads: lookups (hit and stale), insert +
//! remove, remove random + insert, and iteration at 100% and 10% occupancy, for ours and the
//! peers the targets name. The report binary covers every workload and contender, the
//! multi-threaded ones included; these give criterion's statistics. `cargo bench -p benches`.
#![allow(missing_docs)]

use benches::{
    ConcurrentSlotMap, Contender, ITER_UNSUPPORTED, Ours, Rng, Rule, ShardedSlab, SlotMapInline, filled,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 100_000;
const BATCH: usize = 256;

fn lookups<C: Contender>(c: &mut Criterion) {
    let (table, keys) = filled::<C>(N);
    let mut group = c.benchmark_group("get_hit");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function(BenchmarkId::new("guard per batch of 256", C::NAME), |b| {
        b.iter(|| keys.chunks(BATCH).map(|chunk| table.read_batch(chunk)).sum::<u64>())
    });
    group.bench_function(BenchmarkId::new("pin per lookup", C::NAME), |b| {
        b.iter(|| keys.iter().map(|&k| table.read(k).unwrap_or(0)).sum::<u64>())
    });
    group.finish();
}

/// Half the keys removed and their slots reused: lookups of the dead half.
fn stale_lookups<C: Contender>(c: &mut Criterion) {
    let (table, keys) = filled::<C>(N);
    let stale = &keys[..N / 2];
    for &k in stale {
        table.remove(k);
    }
    table.quiesce();
    for i in 0..N / 2 {
        table.insert(Rule::new(i as u64));
    }
    // Checked once, untimed (a live rule's checksum is 0, so a sum could not tell).
    assert!(stale.iter().all(|&k| table.read(k).is_none()), "{}: a stale key resolved", C::NAME);
    let mut group = c.benchmark_group("get_stale");
    group.throughput(Throughput::Elements(stale.len() as u64));
    group.bench_function(BenchmarkId::new("guard per batch of 256", C::NAME), |b| {
        b.iter(|| stale.chunks(BATCH).map(|chunk| table.read_batch(chunk)).sum::<u64>())
    });
    group.finish();
}

fn writes<C: Contender>(c: &mut Criterion) {
    let (table, mut live) = filled::<C>(N);
    let mut group = c.benchmark_group("writes (100k live)");
    group.bench_function(BenchmarkId::new("insert + remove", C::NAME), |b| {
        b.iter(|| {
            let k = table.insert(Rule::new(1));
            table.remove(k)
        })
    });
    let mut rng = Rng(0x1234_5678);
    group.bench_function(BenchmarkId::new("remove random + insert", C::NAME), |b| {
        b.iter(|| {
            let at = (rng.next_u64() % live.len() as u64) as usize;
            table.remove(live[at]);
            live[at] = table.insert(Rule::new(at as u64));
        })
    });
    group.finish();
}

/// Iteration over 100k slots, all live and then 10% live (the first 90% of the shuffled keys
/// removed); the throughput is per live value, the unit of the iteration target.
fn iteration<C: Contender>(c: &mut Criterion) {
    if ITER_UNSUPPORTED.contains(&C::NAME) {
        return;
    }
    let (table, keys) = filled::<C>(N);
    let mut group = c.benchmark_group("iter");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function(BenchmarkId::new("100% occupancy", C::NAME), |b| b.iter(|| table.iter_sum()));
    for &k in &keys[..N * 9 / 10] {
        table.remove(k);
    }
    table.quiesce();
    group.throughput(Throughput::Elements((N / 10) as u64));
    group.bench_function(BenchmarkId::new("10% occupancy", C::NAME), |b| b.iter(|| table.iter_sum()));
    group.finish();
}

fn contender<C: Contender>(c: &mut Criterion) {
    lookups::<C>(c);
    stale_lookups::<C>(c);
    writes::<C>(c);
    iteration::<C>(c);
}

fn all(c: &mut Criterion) {
    contender::<Ours>(c);
    contender::<SlotMapInline>(c);
    contender::<ConcurrentSlotMap>(c);
    contender::<ShardedSlab>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = all
}
criterion_main!(benches);
