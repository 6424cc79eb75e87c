//! What the report measures: every workload, as a [`Workload`] with its unit and definition,
//! and the functions that run them for every contender.
//!
//! Invariant: a figure is recorded only under a `Workload` (never under a string), so a
//! workload that is renamed or removed is a compile error where a target or a table uses it.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::*;

use crate::counting_alloc::in_use;

/// Live values in every table.
pub const N: usize = 100_000;
/// Lookups per guard in the "guard per batch" forms.
pub const BATCH: usize = 256;

/// How many samples and how long a window.
pub struct Settings {
    pub samples: usize,
    pub window: Duration,
}

/// The unit of a workload's figures, which says which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    NsPerLookup,
    NsPerPair,
    NsPerValue,
    OpsPerSecond,
    Bytes,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::NsPerLookup => "ns per lookup",
            Unit::NsPerPair => "ns per pair",
            Unit::NsPerValue => "ns per live value",
            Unit::OpsPerSecond => "operations per second",
            Unit::Bytes => "bytes",
        }
    }

    pub fn lower_is_better(self) -> bool {
        self != Unit::OpsPerSecond
    }

    /// How many times better `a` is than `b` (above 1: `a` is better), whatever the unit.
    pub fn advantage(self, a: f64, b: f64) -> f64 {
        if self.lower_is_better() { b / a } else { a / b }
    }
}

/// Every workload of the report (the scaling workload lives in `scale.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    // Measured with the contenders in alternation (what the targets and the decision table
    // use).
    LookupGuard,
    LookupPin,
    LookupStale,
    LookupGuardCold,
    LookupPinCold,
    LookupStaleCold,
    InsertRemove,
    RemoveRandomInsert,
    IterFull,
    IterSparse,
    // Every contender, each timed on its own.
    SoloLookupGuard,
    SoloLookupPin,
    SoloLookupStale,
    SoloInsertRemove,
    SoloRemoveRandomInsert,
    SoloIterFull,
    SoloIterSparse,
    // Two threads.
    MixedPinReads,
    MixedPinWrites,
    MixedGuardReads,
    MixedGuardWrites,
    MixedGuardReadsAlone,
    Readers1,
    Readers2,
    ReadHeavy,
    Exchange,
    // Memory.
    MemoryPerEntry,
    MemoryAfterRemoveAll,
    MemoryAfterQuiesce,
    MemoryAfterShrink,
}

impl Workload {
    pub const ALL: [Workload; 30] = [
        Workload::LookupGuard,
        Workload::LookupPin,
        Workload::LookupStale,
        Workload::InsertRemove,
        Workload::RemoveRandomInsert,
        Workload::IterFull,
        Workload::IterSparse,
        Workload::MixedPinReads,
        Workload::MixedPinWrites,
        Workload::MixedGuardReads,
        Workload::MixedGuardWrites,
        Workload::MixedGuardReadsAlone,
        Workload::Readers1,
        Workload::Readers2,
        Workload::ReadHeavy,
        Workload::Exchange,
        Workload::MemoryPerEntry,
        Workload::MemoryAfterRemoveAll,
        Workload::MemoryAfterQuiesce,
        Workload::MemoryAfterShrink,
        Workload::SoloLookupGuard,
        Workload::SoloLookupPin,
        Workload::SoloLookupStale,
        Workload::SoloInsertRemove,
        Workload::SoloRemoveRandomInsert,
        Workload::SoloIterFull,
        Workload::SoloIterSparse,
        Workload::LookupGuardCold,
        Workload::LookupPinCold,
        Workload::LookupStaleCold,
    ];

    pub fn title(self) -> &'static str {
        use Workload::*;
        match self {
            LookupGuard => "lookups, a guard per 256",
            LookupPin => "lookups, a pin per lookup",
            LookupStale => "lookups of dead keys, a guard per 256",
            LookupGuardCold => "lookups, a guard per 256, cold cache",
            LookupPinCold => "lookups, a pin per lookup, cold cache",
            LookupStaleCold => "lookups of dead keys, a guard per 256, cold cache",
            InsertRemove => "insert + remove",
            RemoveRandomInsert => "remove random + insert",
            IterFull => "iteration, 100% occupancy",
            IterSparse => "iteration, 10% occupancy",
            SoloLookupGuard => "every contender: lookups, a guard per 256",
            SoloLookupPin => "every contender: lookups, a pin per lookup",
            SoloLookupStale => "every contender: lookups of dead keys, a guard per 256",
            SoloInsertRemove => "every contender: insert + remove",
            SoloRemoveRandomInsert => "every contender: remove random + insert",
            SoloIterFull => "every contender: iteration, 100% occupancy",
            SoloIterSparse => "every contender: iteration, 10% occupancy",
            MixedPinReads => "reads beside a writer, a pin per lookup",
            MixedPinWrites => "the writer beside a reader (pin per lookup)",
            MixedGuardReads => "reads beside a writer, a guard per 256",
            MixedGuardWrites => "the writer beside a reader (guard per 256)",
            MixedGuardReadsAlone => "the same reads alone, a guard per 256",
            Readers1 => "reads, 1 reader, a guard per 256",
            Readers2 => "reads, 2 readers, a guard per 256",
            ReadHeavy => "ReadHeavy (98% reads), 2 threads",
            Exchange => "Exchange (10% reads), 2 threads",
            MemoryPerEntry => "memory per live entry",
            MemoryAfterRemoveAll => "memory kept after removing everything",
            MemoryAfterQuiesce => {
                "memory kept after removing everything and the contender's own quiescence step"
            }
            MemoryAfterShrink => "memory kept after removing everything, reclaim() and shrink_to_fit()",
        }
    }

    /// One line: what one operation of the workload is.
    pub fn definition(self) -> &'static str {
        use Workload::*;
        match self {
            LookupGuard | SoloLookupGuard => {
                "a lookup of a live key among 100 000, one guard (or lock) per batch of 256 lookups"
            }
            LookupPin | SoloLookupPin => {
                "a lookup of a live key among 100 000, with its own pin (or lock, or guard)"
            }
            LookupStale | SoloLookupStale => {
                "a lookup of a dead key (half the table removed, its slots reused), one guard per batch of 256"
            }
            LookupGuardCold | LookupPinCold | LookupStaleCold => {
                "the first pass of each round, right after the other contenders' passes evicted this table"
            }
            InsertRemove | SoloInsertRemove => {
                "insert a value and remove it again, in a table of 100 000 live values"
            }
            RemoveRandomInsert | SoloRemoveRandomInsert => {
                "remove a random live value and insert a new one, in a table of 100 000"
            }
            IterFull | SoloIterFull => "visit one live value, iterating over a full table of 100 000",
            IterSparse | SoloIterSparse => {
                "visit one live value, iterating over a table of 100 000 slots with 10% live"
            }
            MixedPinReads | MixedGuardReads => {
                "one reader thread's random lookups while one writer thread replaces random values"
            }
            MixedPinWrites | MixedGuardWrites => {
                "one writer thread's replaces while one reader thread looks up"
            }
            MixedGuardReadsAlone => "the same reader on the same table, right after, with no writer",
            Readers1 | Readers2 => "lookups of live keys summed over the reader threads, no writer",
            ReadHeavy => {
                "two threads, each operation a read (98%), insert (1%) or remove (1%) on its own keys"
            }
            Exchange => {
                "two threads, each operation a read (10%), insert (40%), remove (40%) or replace (10%)"
            }
            MemoryPerEntry => {
                "bytes the allocator holds for the table, divided by 100 000 live 64-byte values"
            }
            MemoryAfterRemoveAll => "bytes still held after removing all 100 000, with nothing else called",
            MemoryAfterQuiesce => {
                "bytes still held after removing all 100 000 and calling the contender's own step (named in the table)"
            }
            MemoryAfterShrink => "bytes still held after removing all 100 000, reclaim() and shrink_to_fit()",
        }
    }

    pub fn unit(self) -> Unit {
        use Workload::*;
        match self {
            LookupGuard | LookupPin | LookupStale | LookupGuardCold | LookupPinCold | LookupStaleCold
            | SoloLookupGuard | SoloLookupPin | SoloLookupStale => Unit::NsPerLookup,
            InsertRemove | RemoveRandomInsert | SoloInsertRemove | SoloRemoveRandomInsert => Unit::NsPerPair,
            IterFull | IterSparse | SoloIterFull | SoloIterSparse => Unit::NsPerValue,
            MixedPinReads | MixedPinWrites | MixedGuardReads | MixedGuardWrites | MixedGuardReadsAlone
            | Readers1 | Readers2 | ReadHeavy | Exchange => Unit::OpsPerSecond,
            MemoryPerEntry | MemoryAfterRemoveAll | MemoryAfterQuiesce | MemoryAfterShrink => Unit::Bytes,
        }
    }
}

/// Medians by workload and contender, and each contender's quiescence step.
#[derive(Default)]
pub struct Results {
    pub figures: BTreeMap<Workload, BTreeMap<&'static str, f64>>,
    pub quiesce: BTreeMap<&'static str, &'static str>,
}

impl Results {
    pub fn record(&mut self, workload: Workload, who: &'static str, value: f64) {
        self.figures.entry(workload).or_default().insert(who, value);
    }

    pub fn get(&self, workload: Workload, who: &str) -> Option<f64> {
        self.figures.get(&workload)?.get(who).copied()
    }
}

/// Median ns per op over `samples` runs of `f`, which returns how many ops it did, after
/// `warm` untimed runs (lookups over a table need `warm_passes` before they stop getting
/// faster).
fn ns_per_op_after(s: &Settings, warm: usize, mut f: impl FnMut() -> usize) -> f64 {
    for _ in 0..warm {
        f();
    }
    median(
        (0..s.samples)
            .map(|_| {
                let t = Instant::now();
                let ops = f();
                t.elapsed().as_nanos() as f64 / ops as f64
            })
            .collect(),
    )
}

/// A thread body for [`run_window`]: loops until the flag is set, returns how many ops it did.
type Worker<'a> = Box<dyn FnOnce(&AtomicBool) -> u64 + Send + 'a>;

/// Runs `workers` on their own threads for about one `window`, all released by one barrier,
/// and returns each worker's ops per second over the time it measured itself (from the
/// barrier to its last op), so that thread start-up and join never count as running time.
fn run_window(window: Duration, workers: Vec<Worker<'_>>) -> Vec<f64> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(workers.len() + 1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = workers
            .into_iter()
            .map(|work| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let ops = work(stop);
                    ops as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        barrier.wait();
        // The measurement window (the workers time themselves; this only bounds the run).
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// The single-threaded workloads of one contender, timed on its own (the `Solo*` rows).
pub fn single<C: Contender>(s: &Settings, r: &mut Results) {
    let who = C::NAME;
    let (c, keys) = filled::<C>(N);
    let per_batch = ns_per_op_after(s, warm_passes(keys.len()), || {
        std::hint::black_box(keys.chunks(BATCH).map(|b| c.read_batch(b)).sum::<u64>());
        keys.len()
    });
    r.record(Workload::SoloLookupGuard, who, per_batch);
    let per_pin = ns_per_op_after(s, warm_passes(keys.len()), || {
        std::hint::black_box(keys.iter().map(|&k| c.read(k).unwrap_or(0)).sum::<u64>());
        keys.len()
    });
    r.record(Workload::SoloLookupPin, who, per_pin);
    iteration(s, r, &c, Workload::SoloIterFull);
    if !C::WRITES {
        return;
    }
    // Stale keys: half removed and their slots reused.
    let stale: Vec<u64> = keys[..N / 2].to_vec();
    for &k in &stale {
        c.remove(k);
    }
    c.quiesce();
    let mut live: Vec<u64> = keys[N / 2..].to_vec();
    live.extend((0..N / 2).map(|i| c.insert(Rule::new(i as u64))));
    // Checked once, untimed: the timed loop's sum cannot tell (a live rule's checksum is 0).
    assert!(stale.iter().all(|&k| c.read(k).is_none()), "{who}: a stale key resolved");
    let stale_ns = ns_per_op_after(s, warm_passes(stale.len()), || {
        std::hint::black_box(stale.chunks(BATCH).map(|b| c.read_batch(b)).sum::<u64>());
        stale.len()
    });
    r.record(Workload::SoloLookupStale, who, stale_ns);
    let pair = ns_per_op_after(s, 1, || {
        for i in 0..N / 4 {
            let k = c.insert(Rule::new(i as u64));
            c.remove(k);
        }
        N / 4
    });
    r.record(Workload::SoloInsertRemove, who, pair);
    let mut rng = Rng(0x1234_5678);
    let random = ns_per_op_after(s, 1, || {
        for i in 0..N / 4 {
            let at = (rng.next_u64() % live.len() as u64) as usize;
            c.remove(live[at]);
            live[at] = c.insert(Rule::new(i as u64));
        }
        N / 4
    });
    r.record(Workload::SoloRemoveRandomInsert, who, random);
    drop(c);
    // 10% occupancy: fill 100k, remove 90%.
    let (c, keys) = filled::<C>(N);
    for &k in &keys[..N * 9 / 10] {
        c.remove(k);
    }
    c.quiesce();
    iteration(s, r, &c, Workload::SoloIterSparse);
}

fn iteration<C: Contender>(s: &Settings, r: &mut Results, c: &C, workload: Workload) {
    if ITER_UNSUPPORTED.contains(&C::NAME) {
        return;
    }
    let count = if workload == Workload::SoloIterSparse { N / 10 } else { N };
    let ns = ns_per_op_after(s, 1, || {
        std::hint::black_box(c.iter_sum());
        count
    });
    r.record(workload, C::NAME, ns);
}

/// The memory rows of one contender: per live entry, after removing everything, after its own
/// quiescence step (and for ours, after `shrink_to_fit`). Measured before any other workload
/// has left garbage in a collector that a later count could see freed.
pub fn memory<C: Contender>(r: &mut Results) {
    if MEMORY_UNCOUNTED.contains(&C::NAME) {
        return;
    }
    let c = C::new();
    let mut keys: Vec<u64> = Vec::with_capacity(N);
    // Counted from here, so the key vector itself is not attributed to the contender.
    let keys_bytes = in_use();
    for i in 0..N {
        keys.push(c.insert(Rule::new(i as u64)));
    }
    let full = in_use() - keys_bytes;
    r.record(Workload::MemoryPerEntry, C::NAME, full as f64 / N as f64);
    for &k in &keys {
        c.remove(k);
    }
    r.record(Workload::MemoryAfterRemoveAll, C::NAME, (in_use() - keys_bytes) as f64);
    c.quiesce();
    r.quiesce.insert(C::NAME, C::QUIESCE);
    r.record(Workload::MemoryAfterQuiesce, C::NAME, (in_use() - keys_bytes) as f64);
    drop(c);
}

/// Ours after removing everything, `reclaim` and `shrink_to_fit`: every byte the map still
/// holds (its first page, its shards, its collector's bookkeeping).
pub fn memory_after_shrink(r: &mut Results) {
    let c = Ours::new();
    let mut keys: Vec<u64> = Vec::with_capacity(N);
    let base = in_use();
    for i in 0..N {
        keys.push(c.insert(Rule::new(i as u64)));
    }
    for &k in &keys {
        c.remove(k);
    }
    c.0.reclaim();
    c.0.shrink_to_fit();
    r.record(Workload::MemoryAfterShrink, Ours::NAME, (in_use() - base) as f64);
}

/// One sample of a mixed workload: reads/s and writes/s with the writer running, then (when
/// the rig measures it) reads/s of the same reader alone on the same table.
type MixedSampler = Box<dyn FnMut() -> MixedSample>;

struct MixedSample {
    reads: f64,
    writes: f64,
    reads_alone: Option<f64>,
}

/// A filled contender and its shared key table, ready to give samples of reader and writer
/// throughput with one writer replacing at full speed, and (with `batch`) of the same reader
/// right after on the same table with no writer: the baseline for "reader with writer". The
/// same table, so that the comparison holds the table's state (a key-keeping `replace` leaves
/// its values boxed) and its memory placement fixed and varies only the writer.
fn mixed_rig<C: Contender + Send + Sync + 'static>(
    s: &Settings,
    batch: bool,
) -> (&'static str, MixedSampler) {
    let (c, keys) = filled::<C>(N);
    let set = KeySet::new(&keys);
    let window = s.window;
    let sample = move || {
        let reader = || -> Worker<'_> {
            Box::new(|stop| {
                let mut rng = Rng(99);
                let mut n = 0u64;
                let mut buf = [0u64; BATCH];
                while !stop.load(Ordering::Relaxed) {
                    for b in buf.iter_mut() {
                        *b = set.get((rng.next_u64() % N as u64) as usize);
                    }
                    if batch {
                        std::hint::black_box(c.read_batch(&buf));
                    } else {
                        for &k in &buf {
                            std::hint::black_box(c.read(k));
                        }
                    }
                    n += BATCH as u64;
                }
                n
            })
        };
        let writer: Worker<'_> = Box::new(|stop| {
            let mut rng = Rng(77);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = (rng.next_u64() % N as u64) as usize;
                let old = set.get(i);
                let k = c.replace(old, Rule::new(n));
                // Only a changed key is stored: rewriting an unchanged one would make the
                // reader miss on the key table for nothing.
                if k != old {
                    set.set(i, k);
                }
                n += 1;
            }
            n
        });
        let rates = run_window(window, vec![reader(), writer]);
        let reads_alone = batch.then(|| run_window(window, vec![reader()])[0]);
        MixedSample { reads: rates[0], writes: rates[1], reads_alone }
    };
    (C::NAME, Box::new(sample))
}

/// The mixed workloads, every contender in alternation sample by sample (after one untimed
/// sample each: a fresh table's first sample is a transient), with a pin per lookup and
/// with a guard per 256 (whose rigs also measure their reader alone).
pub fn mixed(s: &Settings, r: &mut Results) {
    macro_rules! rigs {
        ($batch:expr; $($c:ty),*) => { vec![$( mixed_rig::<$c>(s, $batch) ),*] }
    }
    for batch in [false, true] {
        let mut rigs = rigs!(batch; Ours, StdRwLockSlotMap, ParkingLotSlotMap, ShardedSlab, DashMap,
            Papaya, SccHashIndex, ConcurrentSlotMap, OursRemoveInsert);
        let (reads_row, writes_row) = if batch {
            (Workload::MixedGuardReads, Workload::MixedGuardWrites)
        } else {
            (Workload::MixedPinReads, Workload::MixedPinWrites)
        };
        let mut samples: BTreeMap<(Workload, &'static str), Vec<f64>> = BTreeMap::new();
        for (_, sample) in rigs.iter_mut() {
            sample();
        }
        for _ in 0..s.samples {
            for (who, sample) in rigs.iter_mut() {
                let MixedSample { reads, writes, reads_alone } = sample();
                samples.entry((reads_row, *who)).or_default().push(reads);
                samples.entry((writes_row, *who)).or_default().push(writes);
                if let Some(alone) = reads_alone {
                    samples.entry((Workload::MixedGuardReadsAlone, *who)).or_default().push(alone);
                }
            }
        }
        for ((workload, who), v) in samples {
            r.record(workload, who, median(v));
        }
    }
}

/// Reads/s of one and of two reader threads with no writer, guard per batch; the two counts
/// alternate sample by sample (their ratio is a target).
fn readers_only<C: Contender + Send + Sync + 'static>(s: &Settings, r: &mut Results) {
    let (c, keys) = filled::<C>(N);
    let mut totals: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..s.samples {
        for readers in 1..=2 {
            let workers = (0..readers)
                .map(|t| {
                    let (c, keys) = (&c, &keys);
                    Box::new(move |stop: &AtomicBool| {
                        let mut n = 0u64;
                        let mut i = t * 997;
                        while !stop.load(Ordering::Relaxed) {
                            let start = i % (N - BATCH);
                            std::hint::black_box(c.read_batch(&keys[start..start + BATCH]));
                            n += BATCH as u64;
                            i += BATCH * 31;
                        }
                        n
                    }) as Worker<'_>
                })
                .collect();
            totals[readers - 1].push(run_window(s.window, workers).iter().sum());
        }
    }
    let [one, two] = totals;
    r.record(Workload::Readers1, C::NAME, median(one));
    r.record(Workload::Readers2, C::NAME, median(two));
}

/// conc-map-bench style mix at 2 threads: (read, insert, remove, update) percentages.
fn mix<C: Contender + Send + Sync + 'static>(
    s: &Settings,
    r: &mut Results,
    workload: Workload,
    mix: [u64; 4],
) {
    let (c, keys) = filled::<C>(N);
    let mut totals = Vec::new();
    for _ in 0..s.samples {
        let workers = (0..2)
            .map(|t| {
                let c = &c;
                let mut mine: Vec<u64> = keys.iter().skip(t).step_by(2).copied().collect();
                Box::new(move |stop: &AtomicBool| {
                    let mut rng = Rng(5 + t as u64);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let roll = rng.next_u64() % 100;
                            let at = (rng.next_u64() % mine.len() as u64) as usize;
                            if roll < mix[0] {
                                std::hint::black_box(c.read(mine[at]));
                            } else if roll < mix[0] + mix[1] {
                                mine.push(c.insert(Rule::new(n)));
                            } else if roll < mix[0] + mix[1] + mix[2] {
                                if mine.len() > 1000 {
                                    c.remove(mine.swap_remove(at));
                                }
                            } else {
                                mine[at] = c.replace(mine[at], Rule::new(n));
                            }
                        }
                        n += 64;
                    }
                    n
                }) as Worker<'_>
            })
            .collect();
        totals.push(run_window(s.window, workers).iter().sum());
    }
    r.record(workload, C::NAME, median(totals));
}

/// The two-thread workloads of one contender.
pub fn multi<C: Contender + Send + Sync + 'static>(s: &Settings, r: &mut Results) {
    readers_only::<C>(s, r);
    mix::<C>(s, r, Workload::ReadHeavy, [98, 1, 1, 0]);
    mix::<C>(s, r, Workload::Exchange, [10, 40, 40, 10]);
}

/// Rounds of `interleaved_lookups`: a round is, for each of seven (workload, contender) pairs,
/// two passes over 50k keys and `WARM_LOOKUPS` untimed lookups, about 40 ms, so many rounds
/// are cheap, and their median shrugs off the bursts of a shared machine that a few rounds
/// cannot.
pub fn lookup_rounds(s: &Settings) -> usize {
    s.samples * 30
}

/// Rounds of `interleaved_writes` (about 17 ms each: three rigs).
pub fn write_rounds(s: &Settings) -> usize {
    s.samples * 9
}

/// Rounds of `interleaved_iteration` (about 30 ms each: three contenders at two occupancies).
pub fn iteration_rounds(s: &Settings) -> usize {
    s.samples * 9
}

/// One lookup measurement of `interleaved_lookups`: (workload, its cold row, contender, batch
/// of lookups, keys).
type LookupRun<'a> = (Workload, Workload, &'static str, &'a dyn Fn(&[u64]) -> u64, &'a [u64]);

/// The lookup targets' three contenders measured in alternation, round by round, so that the
/// machine's slow swings (other tenants) hit all of them alike; medians over the rounds. Each
/// (workload, contender) turn is a cold pass (after the others' passes), untimed ones until the
/// table is warm (`warm_passes`) and a timed steady one.
pub fn interleaved_lookups(s: &Settings, r: &mut Results) {
    let (ours, ours_keys) = filled::<Ours>(N);
    let (sm, sm_keys) = filled::<SlotMapInline>(N);
    let (csm, csm_keys) = filled::<ConcurrentSlotMap>(N);
    // Stale keys, as in `single`: half removed, their slots reused.
    let stale = |c: &dyn Fn(u64) -> bool, keys: &[u64]| -> Vec<u64> {
        keys[..N / 2].iter().copied().filter(|&k| c(k)).collect()
    };
    let ours_stale = stale(&|k| ours.remove(k), &ours_keys);
    let sm_stale = stale(&|k| sm.remove(k), &sm_keys);
    ours.quiesce();
    for i in 0..N / 2 {
        ours.insert(Rule::new(i as u64));
        sm.insert(Rule::new(i as u64));
    }
    // Checked once, untimed, as in `single`.
    assert!(ours_stale.iter().all(|&k| ours.read(k).is_none()), "ours: a stale key resolved");
    assert!(sm_stale.iter().all(|&k| sm.read(k).is_none()), "slotmap: a stale key resolved");
    let ours_live = &ours_keys[N / 2..];
    let sm_live = &sm_keys[N / 2..];
    let csm_live = &csm_keys[N / 2..];
    let pass = |c: &dyn Fn(&[u64]) -> u64, keys: &[u64]| timed_pass(keys, BATCH, c);
    let ours_batch = |b: &[u64]| ours.read_batch(b);
    let sm_batch = |b: &[u64]| sm.read_batch(b);
    let csm_batch = |b: &[u64]| csm.read_batch(b);
    let ours_pin = |b: &[u64]| b.iter().map(|&k| ours.read(k).unwrap_or(0)).sum();
    let csm_pin = |b: &[u64]| b.iter().map(|&k| csm.read(k).unwrap_or(0)).sum();
    use Workload::*;
    let runs: [LookupRun<'_>; 7] = [
        (LookupGuard, LookupGuardCold, Ours::NAME, &ours_batch, ours_live),
        (LookupGuard, LookupGuardCold, SlotMapInline::NAME, &sm_batch, sm_live),
        (LookupGuard, LookupGuardCold, ConcurrentSlotMap::NAME, &csm_batch, csm_live),
        (LookupPin, LookupPinCold, Ours::NAME, &ours_pin, ours_live),
        (LookupPin, LookupPinCold, ConcurrentSlotMap::NAME, &csm_pin, csm_live),
        (LookupStale, LookupStaleCold, Ours::NAME, &ours_batch, &ours_stale),
        (LookupStale, LookupStaleCold, SlotMapInline::NAME, &sm_batch, &sm_stale),
    ];
    let mut samples: BTreeMap<(Workload, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..lookup_rounds(s) {
        for (workload, cold, who, c, keys) in runs {
            samples.entry((cold, who)).or_default().push(pass(c, keys));
            for _ in 0..warm_passes(keys.len()) {
                pass(c, keys);
            }
            samples.entry((workload, who)).or_default().push(pass(c, keys));
        }
    }
    for ((workload, who), v) in samples {
        r.record(workload, who, median(v));
    }
}

/// One sample of the write workloads: (insert + remove, remove random + insert), ns per pair.
type WriteSampler = Box<dyn FnMut() -> (f64, f64)>;

fn write_rig<C: Contender + 'static>() -> (&'static str, WriteSampler) {
    let (c, mut live) = filled::<C>(N);
    let mut rng = Rng(5);
    let sample = move || {
        let t = Instant::now();
        for i in 0..N / 4 {
            let k = c.insert(Rule::new(i as u64));
            c.remove(k);
        }
        let pair = t.elapsed().as_nanos() as f64 / (N / 4) as f64;
        let t = Instant::now();
        for i in 0..N / 4 {
            let at = (rng.next_u64() % live.len() as u64) as usize;
            c.remove(live[at]);
            live[at] = c.insert(Rule::new(i as u64));
        }
        (pair, t.elapsed().as_nanos() as f64 / (N / 4) as f64)
    };
    (C::NAME, Box::new(sample))
}

/// The write targets' three contenders measured in alternation, as `interleaved_lookups`
/// does for the lookups.
pub fn interleaved_writes(s: &Settings, r: &mut Results) {
    let mut rigs = [write_rig::<Ours>(), write_rig::<ConcurrentSlotMap>(), write_rig::<ShardedSlab>()];
    let mut samples: BTreeMap<(Workload, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..write_rounds(s) {
        for (who, sample) in rigs.iter_mut() {
            let (pair, random) = sample();
            samples.entry((Workload::InsertRemove, *who)).or_default().push(pair);
            samples.entry((Workload::RemoveRandomInsert, *who)).or_default().push(random);
        }
    }
    for ((workload, who), v) in samples {
        r.record(workload, who, median(v));
    }
}

/// Live values one sample of `interleaved_iteration` visits: a pass over a 10% table is too
/// short to time on its own on a shared machine.
const ITER_VALUES_PER_SAMPLE: usize = 1_000_000;

/// The iteration target's two occupancies measured in alternation, with concurrent-slotmap's
/// and slotmap's (the floor), as `interleaved_lookups` does for the lookups; each sample is
/// passes over `ITER_VALUES_PER_SAMPLE` live values after one untimed pass.
pub fn interleaved_iteration(s: &Settings, r: &mut Results) {
    /// (row, contender, passes per sample, one pass returning its sum)
    type IterRun = (Workload, &'static str, usize, Box<dyn Fn() -> u64>);
    fn occupancies<C: Contender + 'static>() -> [IterRun; 2] {
        let (full, _) = filled::<C>(N);
        let (sparse, keys) = filled::<C>(N);
        for &k in &keys[..N * 9 / 10] {
            sparse.remove(k);
        }
        sparse.quiesce();
        [
            (Workload::IterFull, C::NAME, ITER_VALUES_PER_SAMPLE / N, Box::new(move || full.iter_sum())),
            (
                Workload::IterSparse,
                C::NAME,
                ITER_VALUES_PER_SAMPLE / (N / 10),
                Box::new(move || sparse.iter_sum()),
            ),
        ]
    }
    let mut tables: Vec<IterRun> = Vec::new();
    tables.extend(occupancies::<Ours>());
    tables.extend(occupancies::<ConcurrentSlotMap>());
    tables.extend(occupancies::<SlotMapInline>());
    let mut samples: BTreeMap<(Workload, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..iteration_rounds(s) {
        for (row, who, passes, pass) in &tables {
            std::hint::black_box(pass());
            let t = Instant::now();
            for _ in 0..*passes {
                std::hint::black_box(pass());
            }
            let ns = t.elapsed().as_nanos() as f64 / ITER_VALUES_PER_SAMPLE as f64;
            samples.entry((*row, who)).or_default().push(ns);
        }
    }
    for ((row, who), v) in samples {
        r.record(row, who, median(v));
    }
}

/// The arc-swap snapshot's lookups (a read-only contender: no writes at this size).
pub fn arc_swap_reads(s: &Settings, r: &mut Results) {
    let (c, mut keys) = ArcSwapSnapshot::bulk(N as u64);
    Rng(3).shuffle(&mut keys);
    let per_batch = ns_per_op_after(s, warm_passes(keys.len()), || {
        std::hint::black_box(keys.chunks(BATCH).map(|b| c.read_batch(b)).sum::<u64>());
        keys.len()
    });
    r.record(Workload::SoloLookupGuard, ArcSwapSnapshot::NAME, per_batch);
    let per_pin = ns_per_op_after(s, warm_passes(keys.len()), || {
        std::hint::black_box(keys.iter().map(|&k| c.read(k).unwrap_or(0)).sum::<u64>());
        keys.len()
    });
    r.record(Workload::SoloLookupPin, ArcSwapSnapshot::NAME, per_pin);
}
