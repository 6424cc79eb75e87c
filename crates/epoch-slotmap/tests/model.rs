//! Differential test: random operation sequences against the sequential `slotmap::SlotMap`.

use epoch_slotmap::{DefaultKey, KeyData, SlotMap};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u32),
    Remove(usize),
    Replace(usize, u32),
    Update(usize),
    Take(usize),
    Get(usize),
    Retain(u32),
    Iter,
    Reclaim,
    GarbageKey(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u32>().prop_map(Op::Insert),
        3 => any::<usize>().prop_map(Op::Remove),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(k, v)| Op::Replace(k, v)),
        2 => any::<usize>().prop_map(Op::Update),
        1 => any::<usize>().prop_map(Op::Take),
        4 => any::<usize>().prop_map(Op::Get),
        1 => (2u32..6).prop_map(Op::Retain),
        1 => Just(Op::Iter),
        1 => Just(Op::Reclaim),
        1 => any::<u64>().prop_map(Op::GarbageKey),
    ]
}

proptest! {
    // Under Miri: fewer cases, and no failure file (Miri's isolation has no file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { ProptestConfig::default().cases },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn behaves_like_slotmap(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 300 })) {
        let ours: SlotMap<DefaultKey, u32> = SlotMap::new();
        let mut oracle: slotmap::SlotMap<slotmap::DefaultKey, u32> = slotmap::SlotMap::new();
        // Every key either side ever returned, paired.
        let mut keys: Vec<(DefaultKey, slotmap::DefaultKey)> = Vec::new();
        for op in ops {
            let pick = |i: usize| keys.get(i % keys.len().max(1)).copied();
            match op {
                Op::Insert(v) => {
                    let k = ours.insert(v);
                    prop_assert!(!keys.iter().any(|(old, _)| *old == k), "a key was handed out twice");
                    keys.push((k, oracle.insert(v)));
                }
                Op::Remove(i) => if let Some((k, o)) = pick(i) {
                    prop_assert_eq!(ours.remove(k), oracle.remove(o).is_some());
                },
                Op::Replace(i, v) => if let Some((k, o)) = pick(i) {
                    let expected = match oracle.get_mut(o) { Some(slot) => { *slot = v; Ok(()) } None => Err(v) };
                    prop_assert_eq!(ours.replace(k, v), expected);
                },
                Op::Update(i) => if let Some((k, o)) = pick(i) {
                    let expected = oracle.get_mut(o).map(|v| *v = v.wrapping_mul(3)).is_some();
                    prop_assert_eq!(ours.update(k, |v| v.wrapping_mul(3)), expected);
                },
                Op::Take(i) => if let Some((k, o)) = pick(i) {
                    prop_assert_eq!(ours.take(k), oracle.remove(o));
                },
                Op::Get(i) => if let Some((k, o)) = pick(i) {
                    let guard = ours.pin();
                    prop_assert_eq!(guard.get(k), oracle.get(o));
                    drop(guard);
                    prop_assert_eq!(ours.contains_key(k), oracle.contains_key(o));
                },
                Op::Retain(m) => {
                    let expected = oracle.len();
                    oracle.retain(|_, v| *v % m != 0);
                    prop_assert_eq!(ours.retain(|_, v| *v % m != 0), expected - oracle.len());
                }
                Op::Iter => {
                    let guard = ours.pin();
                    let mut seen: Vec<u32> = guard.iter().map(|(k, v)| {
                        assert_eq!(guard.get(k), Some(v));
                        *v
                    }).collect();
                    let mut expected: Vec<u32> = oracle.values().copied().collect();
                    seen.sort_unstable();
                    expected.sort_unstable();
                    prop_assert_eq!(seen, expected);
                }
                Op::Reclaim => {
                    ours.reclaim();
                    prop_assert_eq!(ours.stats().pending, 0);
                }
                Op::GarbageKey(raw) => {
                    let k: DefaultKey = KeyData::from_ffi(raw).into();
                    let live = keys.iter().find(|(ours_k, _)| *ours_k == k).map(|(_, o)| oracle.contains_key(*o)).unwrap_or(false);
                    prop_assert_eq!(ours.contains_key(k), live);
                }
            }
            prop_assert_eq!(ours.len(), oracle.len());
        }
        let stats = ours.stats();
        prop_assert_eq!(stats.len, oracle.len());
        ours.reclaim();
        let stats = ours.stats();
        prop_assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity);
    }
}
