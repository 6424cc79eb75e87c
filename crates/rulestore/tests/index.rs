//! The kind index under concurrency: readers check that every rule a kind scan yields is of
//! that kind and yielded once, and that a guard's kind scans and its scan
//! of all rules agree, while writers add, replace across kinds, push small transactions and
//! delete whole kinds; afterwards the index agrees with the table exactly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use rulestore::{Rule, RuleStore};

#[derive(Debug)]
struct R {
    kind: u8,
    serial: u64,
}

impl Rule for R {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
}

const KINDS: u8 = 4;

fn scaled(n: u64) -> u64 {
    if cfg!(miri) { n / 200 } else { n }
}

#[test]
fn kind_sets_stay_consistent_under_concurrent_writers() {
    let store: RuleStore<R> = RuleStore::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut scans = 0u64;
                while !stop.load(Ordering::Relaxed) || scans == 0 {
                    let rules = store.pin();
                    let mut in_kinds = 0;
                    for kind in 0..KINDS {
                        let mut seen = HashSet::new();
                        for (id, rule) in rules.of_kind(&kind) {
                            assert_eq!(rule.kind, kind, "of_kind yielded a rule of another kind");
                            assert!(seen.insert(id), "of_kind yielded a rule twice");
                            assert!(std::ptr::eq(rules.get(id).unwrap(), rule), "get and of_kind disagree");
                            // The reference stays valid under the guard whatever writers do.
                            assert!(std::hint::black_box(rule.serial) < u64::MAX);
                        }
                        in_kinds += seen.len();
                    }
                    // One snapshot: the kinds add up to all rules.
                    assert_eq!(
                        rules.iter().count(),
                        in_kinds,
                        "a guard's kind scans and its full scan disagree"
                    );
                    scans += 1;
                }
                assert!(scans > 0);
            });
        }
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let store = &store;
                s.spawn(move || {
                    let mut ids = Vec::new();
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1);
                    for serial in 0..scaled(20_000) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let kind = (x % u64::from(KINDS)) as u8;
                        match x % 16 {
                            0..=6 => ids.push(store.add(R { kind, serial })),
                            7..=10 if !ids.is_empty() => {
                                let id = ids[(x >> 8) as usize % ids.len()];
                                // The other writer's remove_kind may have taken it.
                                let _ = store.replace(id, R { kind, serial });
                            }
                            11..=14 if !ids.is_empty() => {
                                let at = (x >> 8) as usize % ids.len();
                                store.remove(ids.swap_remove(at));
                            }
                            15 if serial % 64 == 15 => {
                                store.remove_kind(&kind);
                                ids.retain(|&id| store.pin().get(id).is_some());
                            }
                            15 if !ids.is_empty() => {
                                // A push: move one rule, add two, remove one, at once.
                                let moved = ids[(x >> 8) as usize % ids.len()];
                                let gone = ids.swap_remove((x >> 16) as usize % ids.len());
                                let added = store
                                    .transaction(|tx| {
                                        let _ = tx.replace(moved, R { kind: (kind + 1) % KINDS, serial });
                                        let added = [
                                            tx.add(R { kind, serial }),
                                            tx.add(R { kind: (kind + 2) % KINDS, serial }),
                                        ];
                                        tx.remove(gone);
                                        Ok::<_, ()>(added)
                                    })
                                    .unwrap();
                                ids.extend(added);
                            }
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Quiescent: the index and the table agree exactly.
    let rules = store.pin();
    let mut by_index = 0;
    for kind in 0..KINDS {
        for (id, rule) in rules.of_kind(&kind) {
            assert_eq!(rules.get(id).unwrap().kind, kind);
            assert_eq!(rule.kind, kind);
            by_index += 1;
        }
    }
    assert_eq!(by_index, rules.iter().count());
    assert_eq!(by_index, store.len());
    drop(rules);
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn remove_kind_hides_every_removed_rule_from_later_guards() {
    let store = RuleStore::new();
    let ids: Vec<_> =
        (0..scaled(5000)).map(|serial| store.add(R { kind: (serial % 3) as u8, serial })).collect();
    let old_guard = store.pin();
    let kinds: Vec<(rulestore::RuleId, &R)> =
        ids.iter().map(|&id| (id, old_guard.get(id).unwrap())).collect();
    let of_kind_1 = kinds.iter().filter(|(_, r)| r.kind == 1).count();
    assert_eq!(store.remove_kind(&1), of_kind_1);
    // The older guard keeps its snapshot (every rule); no later lookup finds a removed rule.
    let new_guard = store.pin();
    for &(id, rule) in &kinds {
        assert_eq!(new_guard.get(id).is_some(), rule.kind != 1);
        assert!(std::ptr::eq(old_guard.get(id).unwrap(), rule));
    }
    assert_eq!(old_guard.of_kind(&1).count(), of_kind_1);
    assert_eq!(new_guard.of_kind(&1).count(), 0);
    assert_eq!(new_guard.iter().filter(|(_, r)| r.kind == 1).count(), 0);
    drop(kinds);
    drop((old_guard, new_guard));
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
}
