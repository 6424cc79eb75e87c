//! Store snapshots (`serde` feature): ids survive, the kind index is rebuilt, the snapshot is
//! point-in-time under concurrent writers, and bad input is an error.
use std::collections::{BTreeMap, BTreeSet};

use rulestore::{Rule, RuleId, RuleStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Acl {
    kind: u8,
    cidr: String,
}

impl Rule for Acl {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
}

fn scaled(n: usize) -> usize {
    if cfg!(miri) { n / 50 } else { n }
}

/// Everything a reader can observe: id -> rule, and kind -> ids.
fn contents(store: &RuleStore<Acl>) -> (BTreeMap<String, Acl>, BTreeMap<u8, BTreeSet<String>>) {
    let rules = store.pin();
    let by_id = rules.iter().map(|(id, r)| (format!("{id:?}"), r.clone())).collect();
    let by_kind = (0..8u8)
        .map(|k| (k, rules.of_kind(&k).map(|(id, _)| format!("{id:?}")).collect::<BTreeSet<_>>()))
        .filter(|(_, ids)| !ids.is_empty())
        .collect();
    (by_id, by_kind)
}

fn busy_store() -> (RuleStore<Acl>, Vec<RuleId>) {
    let store = RuleStore::new();
    let mut dead = Vec::new();
    let ids: Vec<RuleId> = (0..scaled(1_000))
        .map(|i| store.add(Acl { kind: (i % 5) as u8, cidr: format!("10.{i}.0.0/16") }))
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        match i % 7 {
            0 => {
                store.remove(id);
                dead.push(id);
            }
            1 => store.replace(id, Acl { kind: 7, cidr: format!("moved {i}") }).unwrap(),
            _ => {}
        }
    }
    let gone_kind = ids.iter().copied().filter(|&id| store.pin().get(id).is_some_and(|r| r.kind == 4));
    dead.extend(gone_kind.collect::<Vec<_>>());
    store.remove_kind(&4);
    (store, dead)
}

fn check(restored: &RuleStore<Acl>, original: &RuleStore<Acl>, dead: &[RuleId]) {
    assert_eq!(contents(restored), contents(original));
    assert_eq!(restored.len(), original.len());
    for &id in dead {
        assert!(restored.pin().get(id).is_none());
    }
    // The restored store keeps working, index and all.
    let fresh = restored.add(Acl { kind: 4, cidr: "new".into() });
    for &id in dead {
        assert!(restored.pin().get(id).is_none(), "a dead id came back");
    }
    assert_eq!(restored.pin().of_kind(&4).map(|(id, _)| id).collect::<Vec<_>>(), [fresh]);
    let sevens = restored.pin().of_kind(&7).count();
    assert_eq!(restored.remove_kind(&7), sevens);
    assert_eq!(restored.pin().of_kind(&7).count(), 0);
}

#[test]
fn json_and_postcard_round_trips() {
    let (store, dead) = busy_store();
    let json = serde_json::to_string(&store).unwrap();
    check(&serde_json::from_str(&json).unwrap(), &store, &dead);
    let bytes = postcard::to_stdvec(&store).unwrap();
    check(&postcard::from_bytes(&bytes).unwrap(), &store, &dead);
}

#[test]
fn snapshots_are_point_in_time_under_writers() {
    // One writer adds rules numbered 0, 1, 2, ... and removes every third one right after
    // adding it; a point-in-time snapshot holds exactly rules 0..n minus the removed ones,
    // for some n.
    let store = RuleStore::new();
    let snapshots = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..if cfg!(miri) { 60 } else { 20_000 } {
                let id = store.add(Acl { kind: (i % 3) as u8, cidr: i.to_string() });
                if i % 3 == 2 {
                    store.remove(id);
                }
            }
        });
        (0..if cfg!(miri) { 3 } else { 200 }).map(|_| serde_json::to_vec(&store).unwrap()).collect::<Vec<_>>()
    });
    for json in snapshots {
        let restored: RuleStore<Acl> = serde_json::from_slice(&json).unwrap();
        let numbers: BTreeSet<usize> = restored.pin().iter().map(|(_, r)| r.cidr.parse().unwrap()).collect();
        let n = numbers.iter().next_back().map_or(0, |&max| max + 1);
        let expected: BTreeSet<usize> = (0..n).filter(|i| i % 3 != 2).collect();
        assert!(numbers == expected || numbers == (0..n).filter(|i| i % 3 != 2 || *i == n - 1).collect());
        for kind in 0..3u8 {
            let by_kind = restored.pin().of_kind(&kind).count();
            assert_eq!(by_kind, numbers.iter().filter(|&&i| (i % 3) as u8 == kind).count());
        }
    }
}

#[test]
fn bad_snapshots_are_errors() {
    assert!(serde_json::from_str::<RuleStore<Acl>>("{}").is_err());
    // A slot: [version, [order, rule]].
    let slots = (0..32)
        .map(|order| format!(r#"[3,[{order},{{"kind":1,"cidr":"x"}}]]"#))
        .collect::<Vec<_>>()
        .join(",");
    let ok = format!(r#"{{"max_slots":64,"watermarks":[],"pages":[{{"page":0,"slots":[{slots}]}}]}}"#);
    let store: RuleStore<Acl> = serde_json::from_str(&ok).unwrap();
    assert_eq!(store.pin().of_kind(&1).count(), 32);
    let bad_rule = ok.replacen(r#""cidr":"x""#, r#""cidr":7"#, 1);
    assert!(serde_json::from_str::<RuleStore<Acl>>(&bad_rule).is_err());
    let even = ok.replacen("[3,", "[4,", 1);
    assert!(serde_json::from_str::<RuleStore<Acl>>(&even).unwrap_err().to_string().contains("even"));
    let same_place = ok.replacen("[3,[1,", "[3,[0,", 1);
    let err = serde_json::from_str::<RuleStore<Acl>>(&same_place).unwrap_err().to_string();
    assert!(err.contains("same place"), "{err}");
    // A removed rule's slot (null) restores as a dead id.
    let removed = ok.replacen(r#"[3,[0,{"kind":1,"cidr":"x"}]]"#, "[3,null]", 1);
    let store: RuleStore<Acl> = serde_json::from_str(&removed).unwrap();
    assert_eq!((store.len(), store.pin().iter().count()), (31, 31));
}
