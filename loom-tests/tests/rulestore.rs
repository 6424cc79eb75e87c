//! Loom scenarios for the rule store's kind index.
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

// The move is one-way. Looking at the new kind first and then the old, a rule seen in both
// would have moved back; looking at the old kind first and then the new, a rule seen in
// neither was in no kind at some moment.
static NEVER_BOTH: Outcomes = Outcomes::new();
scenario!(replace_changing_kind_vs_of_kind_never_both, store, NEVER_BOTH => ["old kind", "new kind", "none yet"], |r: Reclaimer| {
    let (store, id, writer) = moving(r);
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let (new, old) = (in_kind(&rules, 2, id), in_kind(&rules, 1, id));
            assert!(!(new && old), "in both kinds");
            // "none yet": new kind looked at before the move, old kind after it.
            NEVER_BOTH.record(if new { "new kind" } else if old { "old kind" } else { "none yet" });
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    after_move(&store, id);
});

static NEVER_NEITHER: Outcomes = Outcomes::new();
scenario!(replace_changing_kind_vs_of_kind_never_neither, store, NEVER_NEITHER => ["old kind", "new kind", "both in turn"], |r: Reclaimer| {
    let (store, id, writer) = moving(r);
    let reader = {
        let store = store.clone();
        thread::spawn(move || {
            let rules = store.pin();
            let (old, new) = (in_kind(&rules, 1, id), in_kind(&rules, 2, id));
            assert!(old || new, "in neither kind");
            NEVER_NEITHER.record(match (old, new) {
                (true, true) => "both in turn",
                (true, false) => "old kind",
                _ => "new kind",
            });
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
