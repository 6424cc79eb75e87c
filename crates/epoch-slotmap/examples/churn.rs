//! Readers look rules up while a writer replaces and deletes them; memory stays flat and
//! `reclaim()` brings `pending` to zero.
//!
//! `cargo run --release -p epoch-slotmap --example churn`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use epoch_slotmap::{DefaultKey, SlotMap};

#[derive(Clone)]
#[allow(dead_code)]
struct Rule {
    id: u64,
    prefix: [u8; 32],
    priority: u32,
}

fn main() {
    let rules: SlotMap<DefaultKey, Rule> = SlotMap::new();
    let mut keys: Vec<DefaultKey> =
        (0..10_000).map(|id| rules.insert(Rule { id, prefix: [0; 32], priority: 0 })).collect();
    let stop = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let guard = rules.pin();
                for _ in 0..256 {
                    // Keys of the first pages, most of them stale: both paths get exercised.
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let raw = ((x >> 33) << 32) | ((x >> 8) % 16_384);
                    let k: DefaultKey = epoch_slotmap::KeyData::from_ffi(raw).into();
                    std::hint::black_box(guard.get(k));
                }
                drop(guard);
                lookups.fetch_add(256, Ordering::Relaxed);
            }
        });
        let started = Instant::now();
        let mut next_id = 10_000;
        let mut updates = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            for k in keys.iter_mut().step_by(7) {
                rules.remove(*k);
                *k = rules.insert(Rule { id: next_id, prefix: [1; 32], priority: 1 });
                next_id += 1;
                updates += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let stats = rules.stats();
        println!(
            "updates: {updates}, lookups: {}, live: {}, capacity: {}, pending: {}",
            lookups.load(Ordering::Relaxed),
            stats.len,
            stats.capacity,
            stats.pending
        );
    });
    rules.clear();
    rules.reclaim();
    let stats = rules.stats();
    println!(
        "after clear + reclaim: live {}, pending {}, capacity {}",
        stats.len, stats.pending, stats.capacity
    );
    assert_eq!(stats.pending, 0);
}
