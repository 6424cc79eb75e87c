//! Transactions and snapshots: a guard sees one commit whole, however many threads push and
//! read (oversubscribed: 4, 16 and 32 threads on however many cores), aborted pushes leave
//! nothing behind, order is by priority then age, and `reclaim` drops every superseded rule.
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rulestore::{Rule, RuleId, RuleStore};

fn scaled(n: usize) -> usize {
    if cfg!(miri) { (n / 100).max(2) } else { n }
}

/// A rule of a numbered push: every push replaces the whole rule set of its kind.
#[derive(Debug)]
struct Pushed {
    kind: u8,
    push: u64,
    priority: i64,
    drops: Option<&'static AtomicUsize>,
}

impl Rule for Pushed {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
    fn priority(&self) -> i64 {
        self.priority
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        if let Some(drops) = self.drops {
            drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

const KINDS: u8 = 3;
const PER_KIND: usize = 5;

/// Writers push whole kinds (remove_kind + PER_KIND adds, tagged with the push number) in
/// transactions; readers check that every guard sees each kind whole (PER_KIND rules, one
/// push), the same answer on every read, and versions that never go back.
fn pushes_are_seen_whole(threads: usize) {
    let store: RuleStore<Pushed> = RuleStore::new();
    let writers = (threads / 4).max(1);
    let readers = threads - writers;
    store
        .transaction(|tx| {
            for kind in 0..KINDS {
                for p in 0..PER_KIND {
                    tx.add(Pushed { kind, push: 0, priority: p as i64, drops: None });
                }
            }
            Ok::<_, ()>(())
        })
        .unwrap();
    let pushes = scaled(400);
    let done = AtomicUsize::new(0);
    let seen_versions = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (store, done) = (&store, &done);
            s.spawn(move || {
                for n in 0..pushes {
                    let kind = ((n + w) % usize::from(KINDS)) as u8;
                    let push = (w * pushes + n + 1) as u64;
                    store
                        .transaction(|tx| {
                            assert_eq!(tx.remove_kind(&kind), PER_KIND);
                            for p in 0..PER_KIND {
                                tx.add(Pushed { kind, push, priority: p as i64, drops: None });
                            }
                            Ok::<_, ()>(())
                        })
                        .unwrap();
                }
                done.fetch_add(1, Ordering::Release);
            });
        }
        for _ in 0..readers {
            let (store, done, seen_versions) = (&store, &done, &seen_versions);
            s.spawn(move || {
                let mut last = 0;
                let mut rounds = 0;
                while done.load(Ordering::Acquire) < writers || rounds < 2 {
                    let rules = store.pin();
                    assert!(rules.version() >= last, "a later guard saw an older commit");
                    last = rules.version();
                    let mut first_read = Vec::new();
                    for read in 0..2 {
                        let mut ids = Vec::new();
                        for kind in 0..KINDS {
                            let of_kind: Vec<(RuleId, &Pushed)> = rules.of_kind(&kind).collect();
                            assert_eq!(of_kind.len(), PER_KIND, "kind {kind} seen partly pushed");
                            let push = of_kind[0].1.push;
                            for (place, (id, rule)) in of_kind.iter().enumerate() {
                                assert_eq!((rule.kind, rule.push), (kind, push), "two pushes in one view");
                                // Priority order: PER_KIND - 1 down to 0.
                                assert_eq!(rule.priority, (PER_KIND - 1 - place) as i64);
                                assert!(std::ptr::eq(rules.get(*id).unwrap(), *rule));
                                ids.push(*id);
                            }
                        }
                        assert_eq!(rules.iter().count(), usize::from(KINDS) * PER_KIND);
                        if read == 0 {
                            first_read = ids;
                        } else {
                            assert_eq!(ids, first_read, "one guard, two answers");
                        }
                    }
                    rounds += 1;
                }
                seen_versions.fetch_max(last as usize, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(store.pin().version(), (1 + writers * pushes) as u64);
    assert_eq!(store.len(), usize::from(KINDS) * PER_KIND);
    assert!(seen_versions.load(Ordering::Relaxed) > 0);
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn pushes_are_seen_whole_with_4_threads() {
    pushes_are_seen_whole(4);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs the 4-thread variant; 16 spinning threads take it minutes")]
fn pushes_are_seen_whole_with_16_threads() {
    pushes_are_seen_whole(16);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs the 4-thread variant; 32 spinning threads take it minutes")]
fn pushes_are_seen_whole_with_32_threads() {
    pushes_are_seen_whole(32);
}

#[test]
fn a_long_guard_keeps_its_snapshot_while_everything_changes() {
    let store = RuleStore::new();
    let ids: Vec<RuleId> = (0..scaled(300))
        .map(|i| store.add(Pushed { kind: (i % 3) as u8, push: 0, priority: 0, drops: None }))
        .collect();
    let old = store.pin();
    let before: Vec<(RuleId, u64)> = old.iter().map(|(id, r)| (id, r.push)).collect();
    for (n, &id) in ids.iter().enumerate() {
        match n % 3 {
            0 => assert!(store.replace(id, Pushed { kind: 2, push: 1, priority: 9, drops: None }).is_ok()),
            1 => assert!(store.remove(id)),
            _ => {
                store.add(Pushed { kind: 0, push: 1, priority: -1, drops: None });
            }
        }
    }
    store.remove_kind(&1);
    // The old guard: the same rules, in the same order, with their old contents.
    assert_eq!(old.iter().map(|(id, r)| (id, r.push)).collect::<Vec<_>>(), before);
    assert_eq!(old.version(), ids.len() as u64);
    for kind in 0..3u8 {
        assert_eq!(old.of_kind(&kind).count(), ids.len() / 3);
    }
    let new = store.pin();
    assert!(new.version() > old.version());
    assert!(new.iter().all(|(_, r)| r.push == 1 || r.kind != 1));
    assert_eq!(new.of_kind(&1).count(), 0);
    drop((old, new));
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn failed_and_panicking_pushes_commit_nothing_and_leave_the_store_usable() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let rule = |kind, push| Pushed { kind, push, priority: 0, drops: Some(&DROPS) };
    let store = RuleStore::new();
    let kept = store.add(rule(0, 0));
    let mut staged = Vec::new();
    let failed: Result<(), &str> = store.transaction(|tx| {
        staged.push(tx.add(rule(1, 1)));
        assert!(tx.remove(kept));
        assert!(tx.replace(staged[0], rule(1, 2)).is_ok());
        Err("rejected")
    });
    assert_eq!(failed, Err("rejected"));
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        store.transaction(|tx| {
            staged.push(tx.add(rule(2, 3)));
            tx.remove_kind(&0);
            panic!("a push that panics");
            #[allow(unreachable_code)]
            Ok::<_, ()>(())
        })
    }));
    assert!(panicked.is_err());
    let rules = store.pin();
    assert_eq!(rules.version(), 1);
    assert_eq!(rules.iter().map(|(id, _)| id).collect::<Vec<_>>(), [kept]);
    for &id in &staged {
        assert!(rules.get(id).is_none(), "a staged id of a failed push is live");
    }
    drop(rules);
    // Still usable, and the staged ids stay dead.
    let after = store.add(rule(1, 4));
    assert!(!staged.contains(&after));
    for &id in &staged {
        assert!(!store.remove(id));
        assert!(store.replace(id, rule(1, 5)).is_err());
    }
    assert_eq!(store.len(), 2);
    store.reclaim();
    // Staged rules (3 of them, one replaced) and the refused replacements were dropped.
    assert_eq!(DROPS.load(Ordering::Relaxed), 3 + staged.len());
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn order_is_priority_then_age_and_replace_keeps_the_place() {
    let store = RuleStore::new();
    let p = |priority| Pushed { kind: 0, push: 0, priority, drops: None };
    let a = store.add(p(1));
    let b = store.add(p(5));
    let c = store.add(p(1));
    let d = store.add(p(1));
    assert_eq!(store.pin().iter().map(|(id, _)| id).collect::<Vec<_>>(), [b, a, c, d]);
    // Same priority: keeps its place. Another priority: moves, still older than later adds.
    store.replace(a, p(1)).unwrap();
    store.replace(d, p(5)).unwrap();
    let e = store.add(p(5));
    assert_eq!(store.pin().iter().map(|(id, _)| id).collect::<Vec<_>>(), [b, d, e, a, c]);
    assert_eq!(store.pin().of_kind(&0).map(|(id, _)| id).collect::<Vec<_>>(), [b, d, e, a, c]);
    assert_eq!(store.pin().find(|r| r.priority == 1).map(|(id, _)| id), Some(a));
}

#[test]
fn reclaim_drops_every_superseded_rule_once_guards_are_gone() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let rule = |push| Pushed { kind: (push % 4) as u8, push, priority: 0, drops: Some(&DROPS) };
    let store = RuleStore::new();
    let n = scaled(2000);
    let ids: Vec<RuleId> = (0..n as u64).map(|i| store.add(rule(i))).collect();
    let guard = store.pin();
    for (i, &id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            store.replace(id, rule(i as u64)).unwrap();
        } else {
            store.remove(id);
        }
    }
    // The guard still reads every original rule: nothing it can see was dropped.
    assert_eq!(guard.iter().count(), n);
    assert_eq!(DROPS.load(Ordering::Relaxed), 0);
    drop(guard);
    store.reclaim();
    assert_eq!(DROPS.load(Ordering::Relaxed), n, "every replaced and removed rule dropped");
    let stats = store.stats();
    assert_eq!((stats.len, stats.pending), (n / 2, 0));
    store.remove_kind(&0);
    store.remove_kind(&2);
    store.reclaim();
    assert_eq!(DROPS.load(Ordering::Relaxed), n + n / 2);
    assert!(store.is_empty());
    assert_eq!(store.stats().pending, 0);
}

#[test]
fn a_full_store_gives_the_rule_back_in_and_out_of_transactions() {
    let store = RuleStore::with_max_capacity(4);
    let p = |push| Pushed { kind: 0, push, priority: 0, drops: None };
    let ids: Vec<RuleId> = (0..4).map(|i| store.try_add(p(i)).unwrap()).collect();
    assert_eq!(store.try_add(p(9)).unwrap_err().push, 9);
    // In a transaction: a staged add holds its slot; the commit cannot fail.
    let back = store
        .transaction(|tx| {
            assert!(tx.remove(ids[0]));
            // The removed rule's slot is still visible to older guards: the store is full.
            Ok::<_, ()>(tx.try_add(p(10)).err().map(|r| r.push))
        })
        .unwrap();
    assert_eq!(back, Some(10));
    // Once no guard is older than the removal (and something freed it), the slot is free.
    store.reclaim();
    let id = store.try_add(p(11)).expect("the removed rule's slot is reused");
    assert_eq!(store.pin().get(id).map(|r| r.push), Some(11));
    assert_eq!(store.len(), 4);
    // With a guard of our own older than the removal, its slot cannot be freed: the add fails
    // (it never waits, and `reclaim` cannot wait for the calling thread's own guard).
    let guard = store.pin();
    assert!(store.remove(ids[1]));
    assert_eq!(store.try_add(p(12)).unwrap_err().push, 12);
    drop(guard);
    store.reclaim();
    assert!(store.try_add(p(13)).is_ok());
    let panics = catch_unwind(AssertUnwindSafe(|| store.add(p(14))));
    assert!(panics.is_err(), "add panics when full, as documented");
    assert_eq!(store.len(), 4);
}

#[test]
fn removed_rules_slots_are_freed_while_pushes_go_on() {
    // Tombstones are freed as guards move on, without `reclaim`: the table does not grow
    // with the number of removals.
    let store = RuleStore::new();
    let stop = AtomicBool::new(false);
    let (live, pushes) = if cfg!(miri) { (8, 60) } else { (64, 20_000) };
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let rules = store.pin();
                assert!(rules.iter().count() <= live);
            }
        });
        let mut ids: HashSet<RuleId> = HashSet::new();
        for push in 0..pushes {
            if ids.len() == live {
                let victim = *ids.iter().next().unwrap();
                assert!(store.remove(victim));
                ids.remove(&victim);
            }
            ids.insert(store.add(Pushed { kind: (push % 5) as u8, push, priority: 0, drops: None }));
            let stats = store.stats();
            assert!(stats.capacity <= 4096, "capacity grew to {} with {live} live rules", stats.capacity);
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// A rule whose kind and priority change with every call: the logic error `Rule` documents.
struct Fickle(AtomicUsize);

static FICKLE_DROPS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Fickle {
    fn drop(&mut self) {
        FICKLE_DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

impl Rule for Fickle {
    type Kind = usize;
    fn kind(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed) % 3
    }
    fn priority(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed) as i64
    }
}

#[test]
fn a_rule_whose_kind_changes_is_never_a_panic_and_its_removal_still_frees_it() {
    let store = RuleStore::new();
    let ids: Vec<RuleId> = (0..6).map(|n| store.add(Fickle(AtomicUsize::new(n)))).collect();
    for &id in &ids[..3] {
        assert!(store.replace(id, Fickle(AtomicUsize::new(7))).is_ok());
    }
    for kind in 0..3 {
        store.remove_kind(&kind);
    }
    for &id in &ids {
        store.remove(id);
    }
    // Still usable, every id dead, and the views agree that nothing is left to see.
    let id = store.add(Fickle(AtomicUsize::new(0)));
    assert!(store.remove(id));
    let rules = store.pin();
    assert!(ids.iter().all(|&id| rules.get(id).is_none()));
    assert_eq!(rules.iter().count(), 0);
    drop(rules);
    store.reclaim();
    assert_eq!((store.len(), store.stats().pending), (0, 0));
    // Every rule stored (6 adds, 3 replacements, 1 more add) is dropped.
    assert_eq!(FICKLE_DROPS.load(Ordering::Relaxed), 10);
}
