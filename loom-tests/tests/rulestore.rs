//! Loom scenarios for the rule store: its snapshots (a guard sees one commit whole: a kind
//! move, a transaction, a replace under a long-held guard) and its kind index.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{Outcomes, Reclaimer, scenario};
use rulestore::{Rule, RuleStore};

#[derive(Debug, PartialEq)]
struct R {
    kind: u8,
    tag: u8,
}

impl Rule for R {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
}

fn store(r: Reclaimer) -> RuleStore<R> {
    match r {
        Reclaimer::Grace => RuleStore::with_grace_reclaimer(),
        Reclaimer::Epoch => RuleStore::new(),
    }
}

/// A store where kinds 1 and 2 each have a rule besides the one that moves (so the move
/// only republishes two member lists), and a writer moving rule `id` from kind 1 to kind 2.
fn moving(r: Reclaimer) -> (Arc<RuleStore<R>>, rulestore::RuleId, thread::JoinHandle<()>) {
    let store = Arc::new(store(r));
    store.add(R { kind: 1, tag: 10 });
    store.add(R { kind: 2, tag: 20 });
    let id = store.add(R { kind: 1, tag: 0 });
    let writer = {
        let store = store.clone();
        thread::spawn(move || assert!(store.replace(id, R { kind: 2, tag: 1 }).is_ok()))
    };
    (store, id, writer)
}

/// Whether `of_kind(kind)` yields rule `id` (checking every rule it yields has that kind).
fn in_kind(rules: &rulestore::RulesGuard<'_, R>, kind: u8, id: rulestore::RuleId) -> bool {
    let mut hits = 0;
    for (i, rule) in rules.of_kind(&kind) {
        assert_eq!(rule.kind, kind, "a rule of another kind");
        hits += usize::from(i == id);
    }
    assert!(hits <= 1, "a rule twice");
    hits == 1
}

fn after_move(store: &RuleStore<R>, id: rulestore::RuleId) {
    let rules = store.pin();
    assert!(!in_kind(&rules, 1, id));
    assert!(in_kind(&rules, 2, id));
    assert_eq!(rules.get(id).map(|r| r.tag), Some(1));
}

// A guard is a snapshot: the moving rule is in exactly one kind, whichever kind is looked at
// first (before snapshots, looking at the new kind first could miss it in both).
static NEVER_BOTH: Outcomes = Outcomes::new();
scenario!(replace_changing_kind_vs_of_kind_never_both, store, NEVER_BOTH => ["old kind", "new kind"], |r: Reclaimer| {
    let (store, id, writer) = moving(r);
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let (new, old) = (in_kind(&rules, 2, id), in_kind(&rules, 1, id));
            assert!(new != old, "in both kinds or in neither");
            assert_eq!(rules.get(id).map(|r| r.kind), Some(if new { 2 } else { 1 }));
            NEVER_BOTH.record(if new { "new kind" } else { "old kind" });
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    after_move(&store, id);
});

static NEVER_NEITHER: Outcomes = Outcomes::new();
scenario!(replace_changing_kind_vs_of_kind_never_neither, store, NEVER_NEITHER => ["old kind", "new kind"], |r: Reclaimer| {
    let (store, id, writer) = moving(r);
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let (old, new) = (in_kind(&rules, 1, id), in_kind(&rules, 2, id));
            assert!(old != new, "in both kinds or in neither");
            NEVER_NEITHER.record(if new { "new kind" } else { "old kind" });
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    after_move(&store, id);
});

static REMOVE_KIND: Outcomes = Outcomes::new();
scenario!(remove_kind_vs_add_of_that_kind, store, REMOVE_KIND => ["add first", "remove first"], |r: Reclaimer| {
    let store = Arc::new(store(r));
    let first = store.add(R { kind: 1, tag: 0 });
    let remover = {
        let store = store.clone();
        thread::spawn(move || store.remove_kind(&1))
    };
    let adder = {
        let store = store.clone();
        thread::spawn(move || store.add(R { kind: 1, tag: 1 }))
    };
    let removed = remover.join().unwrap();
    let second = adder.join().unwrap();
    let rules = store.pin();
    assert!(rules.get(first).is_none());
    match removed {
        2 => {
            REMOVE_KIND.record("add first");
            assert!(rules.get(second).is_none());
            assert_eq!(rules.of_kind(&1).count(), 0);
        }
        1 => {
            REMOVE_KIND.record("remove first");
            assert_eq!(rules.of_kind(&1).map(|(i, _)| i).collect::<Vec<_>>(), [second]);
        }
        n => panic!("remove_kind removed {n}"),
    }
    drop(rules);
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
});

// A transaction removes a rule and adds two (one in another kind): a reader sees all of it or
// none of it, through every lookup, with the matching version.
static TX_WHOLE: Outcomes = Outcomes::new();
scenario!(transaction_vs_reader_never_partial, store, TX_WHOLE => ["before", "after"], |r: Reclaimer| {
    let store = Arc::new(store(r));
    let old = store.add(R { kind: 1, tag: 0 });
    let writer = {
        let store = store.clone();
        thread::spawn(move || {
            store
                .transaction(|tx| {
                    assert!(tx.remove(old));
                    tx.add(R { kind: 1, tag: 1 });
                    tx.add(R { kind: 2, tag: 2 });
                    Ok::<_, ()>(())
                })
                .unwrap();
        })
    };
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let kind1: Vec<u8> = rules.of_kind(&1).map(|(_, r)| r.tag).collect();
            let kind2: Vec<u8> = rules.of_kind(&2).map(|(_, r)| r.tag).collect();
            let all: Vec<u8> = rules.iter().map(|(_, r)| r.tag).collect();
            let old_seen = rules.get(old).is_some();
            match rules.version() {
                1 => {
                    assert!(old_seen && kind1 == [0] && kind2.is_empty() && all == [0], "partial: {kind1:?} {kind2:?}");
                    TX_WHOLE.record("before");
                }
                2 => {
                    assert!(!old_seen && kind1 == [1] && kind2 == [2] && all == [1, 2], "partial: {kind1:?} {kind2:?}");
                    TX_WHOLE.record("after");
                }
                v => panic!("version {v}"),
            }
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
    assert_eq!(store.len(), 2);
});

// A guard held across a replace keeps reading the rule it saw first (the old version stays
// alive and reachable for it), and a guard pinned after sees the new one.
static LONG_GUARD: Outcomes = Outcomes::new();
scenario!(replace_vs_long_held_guard, store, LONG_GUARD => ["old kept", "new from the start"], |r: Reclaimer| {
    let store = Arc::new(store(r));
    let id = store.add(R { kind: 1, tag: 0 });
    let writer = {
        let store = store.clone();
        thread::spawn(move || assert!(store.replace(id, R { kind: 2, tag: 1 }).is_ok()))
    };
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let first = rules.get(id).map(|r| r.tag);
            thread::yield_now();
            let again = rules.get(id).map(|r| r.tag);
            let by_kind: Vec<u8> = rules.of_kind(&first.map_or(0, |t| t + 1)).map(|(_, r)| r.tag).collect();
            assert_eq!(first, again, "one guard, two versions");
            assert_eq!(by_kind, first.into_iter().collect::<Vec<_>>());
            LONG_GUARD.record(if first == Some(0) { "old kept" } else { "new from the start" });
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    assert_eq!(store.pin().get(id).map(|r| r.tag), Some(1));
    store.reclaim();
    assert_eq!(store.stats().pending, 0);
});

// A removal followed by `reclaim` (which frees the removed rule's slot once every older guard
// is gone) against a guard that looks the rule up twice: the guard's answer never changes,
// though the slot may be freed while it looks. On the grace reclaimer only (bound 3): on
// crossbeam, `reclaim`'s waits ran past the suite's per-scenario limit at bound 1.
static REMOVED_AND_FREED: Outcomes = Outcomes::new();
#[test]
fn remove_and_reclaim_vs_reader() {
    REMOVED_AND_FREED.reset();
    loom_tests::model("remove_and_reclaim_vs_reader", Reclaimer::Grace, loom_tests::Actors::Store, |r| {
        let store = Arc::new(store(r));
        let id = store.add(R { kind: 1, tag: 0 });
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                assert!(store.remove(id));
                store.reclaim();
            })
        };
        let reader = {
            let store = store.clone();
            thread::spawn(move || {
                let rules = store.pin();
                let first = rules.get(id).map(|r| r.tag);
                thread::yield_now();
                assert_eq!(rules.get(id).map(|r| r.tag), first, "one guard, two answers");
                assert_eq!(rules.of_kind(&1).count(), usize::from(first.is_some()));
                REMOVED_AND_FREED.record(if first.is_some() { "seen" } else { "gone" });
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert!(store.pin().get(id).is_none());
        assert_eq!(store.stats().pending, 0, "reclaim freed the slot and everything superseded");
    });
    REMOVED_AND_FREED.assert_reached(&["seen", "gone"]);
}
