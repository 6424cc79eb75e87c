//! The store against a sequential model (`HashMap<RuleId, R>`), over random operation
//! sequences, including stale ids.
use std::collections::HashMap;

use proptest::prelude::*;
use rulestore::{Rule, RuleId, RuleStore};

#[derive(Debug, Clone, PartialEq)]
struct R {
    kind: u8,
    tag: u32,
}

impl Rule for R {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u32),
    Remove(usize),
    RemoveKind(u8),
    Replace(usize, u8, u32),
    Get(usize),
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, any::<u32>()).prop_map(|(k, t)| Op::Add(k, t)),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (0u8..4).prop_map(Op::RemoveKind),
        3 => (any::<usize>(), 0u8..4, any::<u32>()).prop_map(|(i, k, t)| Op::Replace(i, k, t)),
        2 => any::<usize>().prop_map(Op::Get),
        1 => Just(Op::Reclaim),
    ]
}

proptest! {
    // Under Miri: fewer cases, and no failure file (Miri's isolation has no file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 8 } else { ProptestConfig::default().cases },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_a_hashmap(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 200 })) {
        let store = RuleStore::new();
        let mut model: HashMap<RuleId, R> = HashMap::new();
        // Every id ever issued, so removed (stale) ids are exercised too.
        let mut issued: Vec<RuleId> = Vec::new();
        for op in ops {
            let pick = |i: usize| (!issued.is_empty()).then(|| issued[i % issued.len()]);
            match op {
                Op::Add(kind, tag) => {
                    let id = store.add(R { kind, tag });
                    prop_assert!(model.insert(id, R { kind, tag }).is_none(), "id reissued");
                    issued.push(id);
                }
                Op::Remove(i) => if let Some(id) = pick(i) {
                    prop_assert_eq!(store.remove(id), model.remove(&id).is_some());
                },
                Op::RemoveKind(kind) => {
                    let before = model.len();
                    model.retain(|_, r| r.kind != kind);
                    prop_assert_eq!(store.remove_kind(&kind), before - model.len());
                }
                Op::Replace(i, kind, tag) => if let Some(id) = pick(i) {
                    let expected = model.contains_key(&id);
                    let result = store.replace(id, R { kind, tag });
                    prop_assert_eq!(result.is_ok(), expected);
                    if expected { model.insert(id, R { kind, tag }); }
                    else { prop_assert_eq!(result.unwrap_err(), R { kind, tag }); }
                },
                Op::Get(i) => if let Some(id) = pick(i) {
                    let rules = store.pin();
                    prop_assert_eq!(rules.get(id), model.get(&id));
                },
                Op::Reclaim => {
                    store.reclaim();
                    prop_assert_eq!(store.stats().pending, 0);
                }
            }
            prop_assert_eq!(store.len(), model.len());
        }
        let rules = store.pin();
        for kind in 0..4u8 {
            let mut got: Vec<_> = rules.of_kind(&kind).map(|(id, r)| (id, r.clone())).collect();
            let mut want: Vec<_> = model.iter().filter(|(_, r)| r.kind == kind).map(|(id, r)| (*id, r.clone())).collect();
            got.sort_by_key(|(id, _)| *id);
            want.sort_by_key(|(id, _)| *id);
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(rules.iter().count(), model.len());
        let first = rules.find(|r| r.tag % 2 == 0).map(|(id, _)| id);
        prop_assert_eq!(first.is_some(), model.values().any(|r| r.tag % 2 == 0));
    }
}
