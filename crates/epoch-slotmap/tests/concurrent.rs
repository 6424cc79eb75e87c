//! Multi-threaded behaviour: guards, reclamation and drop accounting under contention.

mod common;

use common::{Ledger, Tracked, scaled};
use epoch_slotmap::{DefaultKey, SlotMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};

#[test]
fn reclaim_waits_for_a_guard_held_by_another_thread() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert(Tracked::new(1, &ledger));
    let reclaimed = AtomicBool::new(false);
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (removed_tx, removed_rx) = mpsc::channel::<()>();
    let (map, ledger, reclaimed) = (&map, &ledger, &reclaimed);
    std::thread::scope(|s| {
        s.spawn(move || {
            let guard = map.pin();
            let value = guard.get(k).unwrap();
            pinned_tx.send(()).unwrap();
            removed_rx.recv().unwrap();
            // reclaim is running on another thread: it must not finish while we hold the guard.
            for _ in 0..10_000 {
                assert!(!reclaimed.load(Ordering::SeqCst), "reclaim returned under a live guard");
                assert!(value.is_alive(), "value dropped under a live guard");
                std::thread::yield_now();
            }
            drop(guard);
        });
        pinned_rx.recv().unwrap();
        assert!(map.remove(k));
        s.spawn(move || {
            map.reclaim();
            reclaimed.store(true, Ordering::SeqCst);
            assert_eq!(ledger.live(), 0, "reclaim returned before the value was dropped");
        });
        removed_tx.send(()).unwrap();
    });
    assert!(reclaimed.load(Ordering::SeqCst));
    assert_eq!(map.stats().pending, 0);
}

#[test]
fn take_waits_for_a_guard_held_by_another_thread() {
    let map = SlotMap::new();
    let ledger = Ledger::new();
    let k = map.insert(Tracked::new(7, &ledger));
    let taken = AtomicBool::new(false);
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (map_ref, taken_ref) = (&map, &taken);
    std::thread::scope(|s| {
        s.spawn(move || {
            let (map, taken) = (map_ref, taken_ref);
            let guard = map.pin();
            let value = guard.get(k).unwrap();
            pinned_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            for _ in 0..10_000 {
                assert!(!taken.load(Ordering::SeqCst), "take returned under a live guard");
                assert!(value.is_alive());
                std::thread::yield_now();
            }
        });
        pinned_rx.recv().unwrap();
        s.spawn(move || {
            let v = map_ref.take(k).unwrap();
            taken_ref.store(true, Ordering::SeqCst);
            assert_eq!(v.id, 7);
        });
        go_tx.send(()).unwrap();
    });
    assert!(taken.load(Ordering::SeqCst));
    assert_eq!(ledger.live(), 0);
}

/// Writers churn (insert/remove/replace/update/take/retain) while readers hold guards and check
/// that everything they see is alive and belongs to the key they looked up.
#[test]
fn stress_values_dropped_exactly_once_and_never_under_a_guard() {
    let ledger = Ledger::new();
    let map: SlotMap<DefaultKey, Tracked> = SlotMap::new();
    let threads = 4;
    let ops = scaled(40_000);
    let barrier = Barrier::new(threads);
    let violations = AtomicUsize::new(0);
    let next_id = AtomicUsize::new(1);
    // Each key's value carries the id it was inserted with in `ids`: a key never returns a
    // value inserted under another key.
    let shared_keys: Arc<std::sync::Mutex<Vec<(DefaultKey, u64)>>> = Arc::default();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (map, ledger, barrier, violations, next_id, shared_keys) =
                (&map, &ledger, &barrier, &violations, &next_id, shared_keys.clone());
            s.spawn(move || {
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((t as u64 + 1) * 0x9E37_79B9);
                let mut mine: Vec<(DefaultKey, u64)> = Vec::new();
                barrier.wait();
                for _ in 0..ops {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let id = next_id.fetch_add(1, Ordering::Relaxed) as u64;
                    match rng % 16 {
                        0..=4 => {
                            let k = map.insert(Tracked::new(id, ledger));
                            mine.push((k, id));
                            if mine.len().is_multiple_of(16) {
                                shared_keys.lock().unwrap().push((k, id));
                            }
                        }
                        5..=7 if !mine.is_empty() => {
                            let (k, _) = mine.swap_remove(rng as usize % mine.len());
                            if !map.remove(k) {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        8 if !mine.is_empty() => {
                            let i = rng as usize % mine.len();
                            let (k, _) = mine[i];
                            if map.replace(k, Tracked::new(id, ledger)).is_err() {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                            mine[i].1 = id;
                        }
                        9 if !mine.is_empty() => {
                            let i = rng as usize % mine.len();
                            let (k, old) = mine[i];
                            let ok = map.update(k, |v| {
                                if v.id != old {
                                    violations.fetch_add(1, Ordering::Relaxed);
                                }
                                Tracked::new(id, ledger)
                            });
                            if !ok {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                            mine[i].1 = id;
                        }
                        10 if !mine.is_empty() => {
                            let (k, expect) = mine.swap_remove(rng as usize % mine.len());
                            match map.take(k) {
                                Some(v) if v.id == expect && v.is_alive() => {}
                                _ => {
                                    violations.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        11 if rng % 64 == 11 => {
                            // retain over everyone's entries, removing nothing but checking all.
                            map.retain(|_, v| {
                                if !v.is_alive() {
                                    violations.fetch_add(1, Ordering::Relaxed);
                                }
                                true
                            });
                        }
                        _ => {
                            // Read: my own keys must show my own values; shared keys (possibly
                            // removed by their owner) show their value or nothing.
                            let guard = map.pin();
                            for (k, id) in mine.iter().take(8) {
                                match guard.get(*k) {
                                    Some(v) if v.id == *id && v.is_alive() => {}
                                    _ => {
                                        violations.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            let sample: Vec<_> =
                                shared_keys.lock().unwrap().iter().rev().take(8).copied().collect();
                            for (k, id) in sample {
                                if let Some(v) = guard.get(k) {
                                    // Replaced values carry newer ids, never a smaller one.
                                    if v.id < id || !v.is_alive() {
                                        violations.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            for (_, v) in guard.iter().take(32) {
                                if !v.is_alive() {
                                    violations.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    assert_eq!(violations.load(Ordering::SeqCst), 0);
    map.reclaim();
    let stats = map.stats();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.len, map.pin().iter().count());
    assert_eq!(ledger.live(), stats.len, "every removed or replaced value was dropped once");
    assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity, "no slot lost");
    drop(map);
    assert_eq!(ledger.live(), 0);
    assert_eq!(ledger.double_drops.load(Ordering::SeqCst), 0);
}

/// Concurrent remove of the same key: exactly one wins; concurrent updates lose nothing.
#[test]
fn racing_removes_and_updates() {
    let rounds = scaled(2_000);
    let map = SlotMap::new();
    for _ in 0..rounds {
        let k = map.insert(0u64);
        let wins = AtomicUsize::new(0);
        let updated = Barrier::new(2);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..10 {
                        assert!(map.update(k, |v| v + 1));
                    }
                    updated.wait();
                    if map.remove(k) {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1);
    }
    let counter = map.insert(0u64);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..scaled(5_000) {
                    assert!(map.update(counter, |v| v + 1));
                }
            });
        }
    });
    assert_eq!(map.get_cloned(counter), Some(2 * scaled(5_000) as u64));
}

/// Steady churn on two threads with no guard held: `pending` stays bounded without reclaim.
///
/// The 1024 bound is deterministic for one thread (see `api.rs`). With two, a thread that is
/// descheduled inside the map's short internal pin holds the epoch back until it runs again
/// (this is a VM: its vCPUs get stolen); writers then help for a bounded number of rounds
/// instead of blocking. Measured peaks, release, 2 x 1M ops, 128-slot batches: median
/// 1736-3107, max 8215 over 2 x 20 runs (docs/design.md).
/// This checks memory stays flat, with room for such stalls; without reclamation the peak
/// would be the whole 200k.
#[test]
fn pending_stays_bounded_without_reclaim() {
    let map = SlotMap::new();
    let max_pending = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..scaled(100_000) {
                    let k = map.insert([i as u64; 8]);
                    assert!(map.remove(k));
                    max_pending.fetch_max(map.stats().pending, Ordering::Relaxed);
                }
            });
        }
    });
    let peak = max_pending.load(Ordering::SeqCst);
    assert!(peak <= 16 * 1024, "pending peaked at {peak}");
    assert!(map.capacity() <= 32 * 1024, "capacity {}", map.capacity());
}

/// References obtained under a guard stay valid while other threads insert and grow the map.
#[test]
fn growth_never_moves_values() {
    let map = SlotMap::new();
    let first = map.insert(String::from("first"));
    let guard = map.pin();
    let r = guard.get(first).unwrap();
    let addr = r as *const String;
    std::thread::scope(|s| {
        for t in 0..2 {
            let map = &map;
            s.spawn(move || {
                for i in 0..scaled(50_000) {
                    map.insert(format!("{t}-{i}"));
                }
            });
        }
    });
    assert_eq!(r, "first");
    assert_eq!(guard.get(first).unwrap() as *const String, addr);
    assert_eq!(map.len(), 1 + 2 * scaled(50_000));
    assert_eq!(guard.iter().count(), map.len());
}
