//! The store against a sequential model over random operation sequences: single operations
//! and transactions (committed, failed or panicking) are applied to a `BTreeMap` model, and
//! every guard pinned along the way is checked, at every later step, against the model state
//! of the version it pinned: `get`, `iter`, `of_kind` and `find`, in the documented order.
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use rulestore::{Rule, RuleId, RuleStore, RulesGuard};

#[derive(Debug, Clone, PartialEq)]
struct R {
    kind: u8,
    priority: i8,
    tag: u32,
}

impl Rule for R {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
    fn priority(&self) -> i64 {
        self.priority.into()
    }
}

/// The model: id -> (place in the order rules were added, rule).
type Model = BTreeMap<RuleId, (u64, R)>;

#[derive(Debug, Clone)]
enum Op {
    Add(u8, i8, u32),
    Remove(usize),
    RemoveKind(u8),
    Replace(usize, u8, i8, u32),
}

#[derive(Debug, Clone)]
enum Step {
    One(Op),
    /// A transaction of these operations, ending in a commit, an `Err`, or a panic.
    Tx(Vec<Op>, End),
    Pin,
    Unpin(usize),
    Reclaim,
}

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Fail,
    Panic,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, -2i8..3, any::<u32>()).prop_map(|(k, p, t)| Op::Add(k, p, t)),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (0u8..4).prop_map(Op::RemoveKind),
        3 => (any::<usize>(), 0u8..4, -2i8..3, any::<u32>()).prop_map(|(i, k, p, t)| Op::Replace(i, k, p, t)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => op().prop_map(Step::One),
        3 => (proptest::collection::vec(op(), 0..8), prop_oneof![4 => Just(End::Commit), 1 => Just(End::Fail), 1 => Just(End::Panic)])
            .prop_map(|(ops, end)| Step::Tx(ops, end)),
        2 => Just(Step::Pin),
        1 => any::<usize>().prop_map(Step::Unpin),
        1 => Just(Step::Reclaim),
    ]
}

/// What one operation does to the model (and to the order counter), and what the store's
/// method must return: `Some(n)` for counts, `Some(1/0)` for booleans.
fn apply(
    model: &mut Model,
    next_order: &mut u64,
    issued: &[RuleId],
    op: &Op,
    new_id: Option<RuleId>,
) -> usize {
    let pick = |i: usize| (!issued.is_empty()).then(|| issued[i % issued.len()]);
    match *op {
        Op::Add(kind, priority, tag) => {
            model.insert(new_id.expect("the store's id"), (*next_order, R { kind, priority, tag }));
            *next_order += 1;
            1
        }
        Op::Remove(i) => pick(i).is_some_and(|id| model.remove(&id).is_some()).into(),
        Op::RemoveKind(kind) => {
            let before = model.len();
            model.retain(|_, (_, r)| r.kind != kind);
            before - model.len()
        }
        Op::Replace(i, kind, priority, tag) => match pick(i).and_then(|id| model.get_mut(&id)) {
            Some(entry) => {
                entry.1 = R { kind, priority, tag };
                1
            }
            None => 0,
        },
    }
}

/// The model's rules in the documented order: priority descending, then oldest first.
fn ordered(model: &Model, kind: Option<u8>) -> Vec<(RuleId, R)> {
    let mut rules: Vec<_> = model
        .iter()
        .filter(|(_, (_, r))| kind.is_none_or(|k| r.kind == k))
        .map(|(id, (order, r))| (-i64::from(r.priority), *order, *id, r.clone()))
        .collect();
    rules.sort_by_key(|(p, o, _, _)| (*p, *o));
    rules.into_iter().map(|(_, _, id, r)| (id, r)).collect()
}

fn check(
    guard: &RulesGuard<'_, R>,
    version: u64,
    model: &Model,
    issued: &[RuleId],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(guard.version(), version);
    for &id in issued {
        prop_assert_eq!(guard.get(id), model.get(&id).map(|(_, r)| r));
    }
    let all: Vec<_> = guard.iter().map(|(id, r)| (id, r.clone())).collect();
    prop_assert_eq!(&all, &ordered(model, None));
    for kind in 0..4u8 {
        let got: Vec<_> = guard.of_kind(&kind).map(|(id, r)| (id, r.clone())).collect();
        prop_assert_eq!(got, ordered(model, Some(kind)));
    }
    let first = guard.find(|r| r.tag % 2 == 0).map(|(id, _)| id);
    prop_assert_eq!(first, all.iter().find(|(_, r)| r.tag % 2 == 0).map(|(id, _)| *id));
    Ok(())
}

proptest! {
    // Under Miri: fewer cases, and no failure file (Miri's isolation has no file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 6 } else { ProptestConfig::default().cases },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn guards_see_the_model_of_the_version_they_pinned(steps in proptest::collection::vec(step(), 1..if cfg!(miri) { 25 } else { 120 })) {
        let store = RuleStore::new();
        let mut model = Model::new();
        let mut version = 0u64;
        let mut next_order = 0u64;
        // Every id ever issued, so removed (stale) ids are exercised too.
        let mut issued: Vec<RuleId> = Vec::new();
        let mut pinned: Vec<(RulesGuard<'_, R>, u64, Model)> = Vec::new();
        for step in steps {
            match step {
                Step::One(op) => {
                    let got = match op {
                        Op::Add(kind, priority, tag) => {
                            let id = store.add(R { kind, priority, tag });
                            issued.push(id);
                            apply(&mut model, &mut next_order, &issued, &op, Some(id))
                        }
                        Op::Remove(i) => {
                            let id = (!issued.is_empty()).then(|| issued[i % issued.len()]);
                            let got = id.is_some_and(|id| store.remove(id));
                            prop_assert_eq!(usize::from(got), apply(&mut model, &mut next_order, &issued, &op, None));
                            usize::from(got)
                        }
                        Op::RemoveKind(kind) => {
                            let got = store.remove_kind(&kind);
                            prop_assert_eq!(got, apply(&mut model, &mut next_order, &issued, &op, None));
                            got
                        }
                        Op::Replace(i, kind, priority, tag) => {
                            let id = (!issued.is_empty()).then(|| issued[i % issued.len()]);
                            let rule = R { kind, priority, tag };
                            let got = match id {
                                Some(id) => match store.replace(id, rule.clone()) {
                                    Ok(()) => 1,
                                    Err(back) => { prop_assert_eq!(back, rule); 0 }
                                },
                                None => 0,
                            };
                            prop_assert_eq!(got, apply(&mut model, &mut next_order, &issued, &op, None));
                            got
                        }
                    };
                    // A single operation that changed something is one commit.
                    if got > 0 {
                        version += 1;
                    }
                }
                Step::Tx(ops, end) => {
                    let mut staged = model.clone();
                    let mut staged_order = next_order;
                    let mut staged_issued = issued.clone();
                    let mut replaced = false;
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        store.transaction(|tx| {
                            for op in &ops {
                                let got = match *op {
                                    Op::Add(kind, priority, tag) => {
                                        let id = tx.add(R { kind, priority, tag });
                                        staged_issued.push(id);
                                        apply(&mut staged, &mut staged_order, &staged_issued, op, Some(id))
                                    }
                                    Op::Remove(i) => {
                                        let id = (!staged_issued.is_empty()).then(|| staged_issued[i % staged_issued.len()]);
                                        let got = usize::from(id.is_some_and(|id| tx.remove(id)));
                                        assert_eq!(got, apply(&mut staged, &mut staged_order, &staged_issued, op, None));
                                        got
                                    }
                                    Op::RemoveKind(kind) => {
                                        let got = tx.remove_kind(&kind);
                                        assert_eq!(got, apply(&mut staged, &mut staged_order, &staged_issued, op, None));
                                        got
                                    }
                                    Op::Replace(i, kind, priority, tag) => {
                                        let id = (!staged_issued.is_empty()).then(|| staged_issued[i % staged_issued.len()]);
                                        let got = usize::from(id.is_some_and(|id| tx.replace(id, R { kind, priority, tag }).is_ok()));
                                        assert_eq!(got, apply(&mut staged, &mut staged_order, &staged_issued, op, None));
                                        replaced |= got > 0 && id.is_some_and(|id| model.contains_key(&id));
                                        got
                                    }
                                };
                                let _ = got;
                            }
                            match end {
                                End::Commit => Ok(()),
                                End::Fail => Err("fail"),
                                End::Panic => panic!("a push that panics"),
                            }
                        })
                    }));
                    match end {
                        End::Commit => {
                            prop_assert!(matches!(outcome, Ok(Ok(()))));
                            // A commit unless the store is left as it was: no rule of the
                            // model replaced or removed, no added rule kept.
                            let removed = model.keys().any(|id| !staged.contains_key(id));
                            let added = staged.keys().any(|id| !model.contains_key(id));
                            if replaced || removed || added {
                                version += 1;
                            }
                            model = staged;
                        }
                        End::Fail => prop_assert!(matches!(outcome, Ok(Err("fail")))),
                        End::Panic => prop_assert!(outcome.is_err()),
                    }
                    // Ids staged by a failed transaction were never live: keep them as stale
                    // ids to probe.
                    next_order = staged_order;
                    issued = staged_issued;
                }
                Step::Pin => pinned.push((store.pin(), version, model.clone())),
                Step::Unpin(i) => if !pinned.is_empty() {
                    pinned.swap_remove(i % pinned.len());
                },
                Step::Reclaim => {
                    pinned.clear();
                    store.reclaim();
                    prop_assert_eq!(store.stats().pending, 0);
                }
            }
            prop_assert_eq!(store.len(), model.len());
            check(&store.pin(), version, &model, &issued)?;
            for (guard, version, model) in &pinned {
                check(guard, *version, model, &issued)?;
            }
        }
        drop(pinned);
        store.reclaim();
        prop_assert_eq!(store.stats().pending, 0);
        prop_assert_eq!(store.stats().len, model.len());
    }
}
