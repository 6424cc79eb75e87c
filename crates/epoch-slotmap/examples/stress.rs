//! Long randomized stress with invariant checks.
//!
//! `cargo run --release -p epoch-slotmap --example stress -- --seconds 20 [--threads N] [--ops N]`
//!
//! N threads (default: cores x 2) run random insert / get / remove / replace / update /
//! retain / iter / take / shrink_to_fit on one map. Values record the key they were inserted
//! under and a generation stamp. Prints one line per second (operations per second, `len`,
//! `pending`, `capacity`). Checked continuously: a key never returns a value inserted under
//! another key; a value is never seen after `take` returned it; after every operation, the
//! map's capacity stays within the documented memory bound (docs/design.md, "The memory
//! bound": 4 (L + P + T) + FIRST_PAGE, with L + P the values created and not yet dropped, or
//! `len() + stats().pending` where that is more, whose peak every thread tracks); every second completes at least 1% of the first
//! second's operations. At the end: every value was dropped exactly once (a drop ledger),
//! `len()` equals the ledger's live count, and `reclaim()` brings `pending` to 0. Exits
//! non-zero on any violation.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use epoch_slotmap::{DefaultKey, Key, KeyData, SlotMap};

#[derive(Default)]
struct Ledger {
    created: AtomicUsize,
    dropped: AtomicUsize,
    double_drops: AtomicUsize,
    violations: AtomicUsize,
    /// The peak of `created - dropped` seen by any thread (values live or pending, plus
    /// replaced values pending, which hold no slot: an over-estimate of the slots in use).
    peak_outstanding: AtomicUsize,
    /// The highest capacity seen, and the bound it was checked against then.
    peak_capacity: AtomicUsize,
}

/// Slots in the first page (the map's smallest growth step).
const FIRST_PAGE: usize = 32;

/// The documented memory bound for `outstanding` values (live + pending) and `threads`
/// threads: 4 (L + P + T) + FIRST_PAGE. Each thread's one operation in flight, not yet
/// counted in the peak, adds a value at most: 2T in all.
fn capacity_bound(outstanding: usize, threads: usize) -> usize {
    4 * (outstanding + 2 * threads) + FIRST_PAGE
}

impl Ledger {
    /// Records the current outstanding count into the peak, then checks `capacity`. The
    /// ledger misses slots whose values a running batch has dropped but not yet handed back
    /// (pending for the bound): only when the ledger's figure is not enough does the check
    /// read `len() + stats().pending` as well (stats walk every shard: not on every operation).
    fn check_capacity(&self, map: &SlotMap<DefaultKey, Value>, capacity: usize, threads: usize) {
        let outstanding =
            self.created.load(Ordering::SeqCst).saturating_sub(self.dropped.load(Ordering::SeqCst));
        let mut peak = self.peak_outstanding.fetch_max(outstanding, Ordering::Relaxed).max(outstanding);
        self.peak_capacity.fetch_max(capacity, Ordering::Relaxed);
        if capacity > capacity_bound(peak, threads) {
            let stats = map.stats();
            let in_use = stats.len + stats.pending;
            peak = self.peak_outstanding.fetch_max(in_use, Ordering::Relaxed).max(in_use);
        }
        if capacity > capacity_bound(peak, threads) {
            violation(
                self,
                &format!(
                    "capacity {capacity} above the bound {} for a peak of {peak} values and {threads} threads",
                    capacity_bound(peak, threads)
                ),
            );
        }
    }
}

struct Value {
    key: u64,
    stamp: u64,
    alive: AtomicBool,
    taken: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
}

impl Value {
    fn new(key: DefaultKey, stamp: u64, ledger: &Arc<Ledger>) -> Self {
        ledger.created.fetch_add(1, Ordering::Relaxed);
        Self {
            key: key.data().as_ffi(),
            stamp,
            alive: AtomicBool::new(true),
            taken: Arc::new(AtomicBool::new(false)),
            ledger: ledger.clone(),
        }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        if self.alive.swap(false, Ordering::AcqRel) {
            self.ledger.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ledger.double_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn violation(ledger: &Ledger, what: &str) {
    if ledger.violations.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("VIOLATION: {what}");
    }
}

/// Checks a value read under `key`.
fn check(ledger: &Ledger, key: DefaultKey, v: &Value) {
    if v.key != key.data().as_ffi() {
        violation(ledger, "a key returned a value inserted under another key");
    }
    if !v.alive.load(Ordering::Acquire) {
        violation(ledger, "a value was visible after its drop");
    }
    if v.taken.load(Ordering::Acquire) {
        violation(ledger, "a value was visible after take() returned it");
    }
}

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() -> ExitCode {
    let mut seconds = 10.0f64;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut max_ops = u64::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--seconds" => seconds = v.parse().expect("--seconds N"),
            "--threads" => threads = v.parse().expect("--threads N"),
            "--ops" => max_ops = v.parse().expect("--ops N"),
            _ => {
                eprintln!("usage: stress [--seconds N] [--threads N] [--ops N]");
                return ExitCode::from(2);
            }
        }
    }
    let ledger = Arc::new(Ledger::default());
    let map: SlotMap<DefaultKey, Value> = SlotMap::new();
    // Keys shared across threads, so lookups hit other threads' values (and stale keys).
    let shared: Vec<AtomicU64> = (0..4096).map(|_| AtomicU64::new(0)).collect();
    let ops = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (map, ledger, shared, ops, stop) = (&map, &ledger, &shared, &ops, &stop);
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1234_5678_9ABC));
                let mut mine: Vec<DefaultKey> = Vec::new();
                let mut local = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let roll = rng.next_u64() % 1000;
                        let slot = (rng.next_u64() % shared.len() as u64) as usize;
                        if roll < 250 || mine.is_empty() {
                            let k = map.insert_with_key(|k| Value::new(k, local, ledger));
                            shared[slot].store(k.data().as_ffi(), Ordering::Relaxed);
                            mine.push(k);
                        } else if roll < 600 {
                            let k: DefaultKey =
                                KeyData::from_ffi(shared[slot].load(Ordering::Relaxed)).into();
                            if let Some(v) = map.pin().get(k) {
                                check(ledger, k, v);
                            }
                        } else if roll < 800 {
                            let at = (rng.next_u64() % mine.len() as u64) as usize;
                            let k = mine.swap_remove(at);
                            if !map.remove(k) {
                                violation(ledger, "a live key of this thread could not be removed");
                            }
                        } else if roll < 880 {
                            let k = mine[(rng.next_u64() % mine.len() as u64) as usize];
                            if map.replace(k, Value::new(k, local, ledger)).is_err() {
                                violation(ledger, "replace of a live key failed");
                            }
                        } else if roll < 960 {
                            let k = mine[(rng.next_u64() % mine.len() as u64) as usize];
                            let ok = map.update(k, |old| {
                                check(ledger, k, old);
                                Value::new(k, old.stamp + 1, ledger)
                            });
                            if !ok {
                                violation(ledger, "update of a live key failed");
                            }
                        } else if roll < 990 {
                            let guard = map.pin();
                            let mut n = 0;
                            for (k, v) in guard.iter() {
                                check(ledger, k, v);
                                n += 1;
                            }
                            std::hint::black_box(n);
                        } else if roll < 998 {
                            let at = (rng.next_u64() % mine.len() as u64) as usize;
                            let k = mine.swap_remove(at);
                            match map.take(k) {
                                Some(v) => {
                                    check(ledger, k, &v);
                                    v.taken.store(true, Ordering::Release);
                                    // Nobody can see it now; dropping it here is the only drop.
                                    drop(v);
                                }
                                None => violation(ledger, "take of a live key returned None"),
                            }
                        } else if roll == 999 && local.is_multiple_of(16) {
                            // Give back wholly vacant pages while everyone else keeps going.
                            map.shrink_to_fit();
                        } else {
                            // retain: drop this thread's values with an odd stamp.
                            let mine_set: std::collections::HashSet<u64> =
                                mine.iter().map(|k| k.data().as_ffi()).collect();
                            map.retain(|k, v| {
                                check(ledger, k, v);
                                !(mine_set.contains(&k.data().as_ffi()) && v.stamp % 2 == 1)
                            });
                            mine.retain(|&k| map.contains_key(k));
                        }
                        local += 1;
                        ledger.check_capacity(map, map.capacity(), threads);
                    }
                    if ops.fetch_add(64, Ordering::Relaxed) + 64 >= max_ops
                        || start.elapsed().as_secs_f64() >= seconds
                    {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                mine.len()
            });
        }
        // The progress line, once a second; a second that completes fewer than 1% of the
        // first second's operations is a violation (the map has stopped making progress).
        let (mut last_ops, mut first_second, mut second) = (0u64, None, 1u32);
        while !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_secs(u64::from(second));
            while !stop.load(Ordering::Relaxed) && Instant::now() < due {
                std::thread::sleep(Duration::from_millis(10));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now_ops = ops.load(Ordering::Relaxed);
            let done = now_ops - last_ops;
            last_ops = now_ops;
            let stats = map.stats();
            println!(
                "t={second:>3}s ops/s={done:>10} len={:>7} pending={:>7} capacity={:>9}",
                stats.len, stats.pending, stats.capacity
            );
            let first = *first_second.get_or_insert(done);
            if done * 100 < first {
                violation(
                    &ledger,
                    &format!(
                        "second {second} completed {done} operations, under 1% of the first second's {first}"
                    ),
                );
            }
            second += 1;
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let total_ops = ops.load(Ordering::Relaxed);
    map.reclaim();
    let pending_ok = map.stats().pending == 0;
    let live_after = ledger.created.load(Ordering::Relaxed) - ledger.dropped.load(Ordering::Relaxed);
    let len_after_ok = map.len() == live_after;
    let len = map.len();
    drop(map);
    let all_dropped = ledger.created.load(Ordering::Relaxed) == ledger.dropped.load(Ordering::Relaxed);
    let double = ledger.double_drops.load(Ordering::Relaxed);
    let violations = ledger.violations.load(Ordering::Relaxed);
    println!(
        "stress: {threads} threads, {elapsed:.1}s, {total_ops} ops ({:.0} ops/s), {} values created",
        total_ops as f64 / elapsed,
        ledger.created.load(Ordering::Relaxed)
    );
    println!(
        "  peak capacity {} slots; peak values live or pending {}; bound at that peak {}",
        ledger.peak_capacity.load(Ordering::Relaxed),
        ledger.peak_outstanding.load(Ordering::Relaxed),
        capacity_bound(ledger.peak_outstanding.load(Ordering::Relaxed), threads)
    );
    let checks = [
        (
            "no key returned another key's value, no value seen after drop or take, capacity within \
             its bound after every operation, no second under 1% of the first",
            violations == 0,
        ),
        ("len() == ledger live count after reclaim (quiescent)", len_after_ok),
        ("pending == 0 after reclaim()", pending_ok),
        ("every value dropped exactly once (map dropped)", all_dropped && double == 0),
    ];
    let mut ok = true;
    for (what, pass) in checks {
        println!("  [{}] {what}", if pass { "ok" } else { "FAILED" });
        ok &= pass;
    }
    println!("  live values at the end: {len}; violations: {violations}; double drops: {double}");
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
