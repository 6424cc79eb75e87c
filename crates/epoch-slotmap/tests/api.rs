//! Behaviour of every public operation, single-threaded, plus bad input.

mod common;

use common::{Ledger, Tracked, scaled};
use epoch_slotmap::{DefaultKey, Key, KeyData, SlotMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

#[test]
fn insert_get_remove_roundtrip() {
    let map = SlotMap::new();
    let a = map.insert(1);
    let b = map.insert(2);
    assert_ne!(a, b);
    assert_eq!(map.len(), 2);
    let guard = map.pin();
    assert_eq!(guard.get(a), Some(&1));
    assert_eq!(guard.get(b), Some(&2));
    drop(guard);
    assert!(map.remove(a));
    assert!(!map.remove(a));
    assert_eq!(map.get_cloned(a), None);
    assert!(!map.contains_key(a));
    assert_eq!(map.get_cloned(b), Some(2));
    assert_eq!(map.len(), 1);
}

#[test]
fn stale_key_never_reaches_the_next_occupant() {
    let map = SlotMap::new();
    let old = map.insert("old");
    map.remove(old);
    map.reclaim();
    // The slot is recycled: the next insert reuses the index with a new version.
    let new = map.insert("new");
    assert_eq!(old.data().as_ffi() as u32, new.data().as_ffi() as u32, "slot reused");
    assert_ne!(old, new);
    assert_eq!(map.get_cloned(old), None);
    assert!(!map.contains_key(old));
    assert!(!map.remove(old));
    assert_eq!(map.replace(old, "x"), Err("x"));
    assert!(!map.update(old, |v| v));
    assert_eq!(map.take(old), None);
    assert_eq!(map.get_cloned(new), Some("new"));
}

#[test]
fn null_and_garbage_keys_are_rejected_and_foreign_keys_are_checked_only_by_version() {
    let map = SlotMap::new();
    let other = SlotMap::new();
    let live = map.insert(5u32);
    let foreign = other.insert(6u32);
    let foreign_vacant = other.insert(7u32);
    let null = DefaultKey::null();
    let guard = map.pin();
    assert_eq!(guard.get(null), None);
    assert!(!map.contains_key(null));
    assert!(!map.remove(null));
    // Documented (as slotmap's): a key is only checked against its slot's version, so a key of
    // another map whose (index, version) is live here reads this map's value. Both maps handed
    // out index 0, version 3 first.
    assert_eq!(foreign, live);
    assert_eq!(guard.get(foreign), Some(&5));
    // The same key bits with a version this slot has not reached, or at a vacant index: None.
    assert_eq!(guard.get(foreign_vacant), None);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..scaled(100_000) {
        // xorshift: arbitrary 64-bit keys, including huge indexes and every version.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k: DefaultKey = KeyData::from_ffi(x).into();
        let expected = k == live;
        assert_eq!(guard.get(k).is_some(), expected);
        assert_eq!(map.contains_key(k), expected);
    }
    drop(guard);
    for raw in [0, u64::MAX, u64::from(u32::MAX), 1 << 32, (3 << 32) | 0x3FFF_FFFF] {
        let k: DefaultKey = KeyData::from_ffi(raw).into();
        if k == live {
            continue;
        }
        assert!(!map.remove(k));
        assert_eq!(map.take(k), None);
        assert_eq!(map.replace(k, 1), Err(1));
        assert!(!map.update(k, |v| *v));
    }
    assert_eq!(map.get_cloned(live), Some(5));
}

#[test]
fn replace_and_update_keep_the_key() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert(Tracked::new(1, &ledger));
    assert!(map.replace(k, Tracked::new(2, &ledger)).is_ok());
    assert_eq!(map.pin().get(k).unwrap().id, 2);
    assert!(map.update(k, |t| Tracked::new(t.id + 1, &ledger)));
    assert!(map.update(k, |t| Tracked::new(t.id + 1, &ledger)));
    assert_eq!(map.pin().get(k).unwrap().id, 4);
    assert_eq!(map.len(), 1);
    map.reclaim();
    assert_eq!(map.stats().pending, 0);
    assert_eq!(ledger.live(), 1, "the three replaced values were dropped");
    assert!(map.remove(k));
    map.reclaim();
    assert_eq!(ledger.live(), 0);
    // The slot whose inline value was replaced is recycled cleanly.
    let k2 = map.insert(Tracked::new(9, &ledger));
    assert_eq!(map.pin().get(k2).unwrap().id, 9);
    drop(map);
    assert_eq!(ledger.live(), 0);
    assert_eq!(ledger.double_drops.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn take_returns_the_value_and_kills_the_key() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert(Tracked::new(1, &ledger));
    let replaced = map.insert(Tracked::new(2, &ledger));
    map.replace(replaced, Tracked::new(3, &ledger)).ok().unwrap();
    let v = map.take(k).unwrap();
    assert_eq!(v.id, 1);
    assert!(v.is_alive());
    assert_eq!(map.take(replaced).unwrap().id, 3);
    assert!(map.is_empty());
    assert!(!map.contains_key(k));
    drop(v);
    map.reclaim();
    assert_eq!(ledger.live(), 0);
}

#[test]
fn take_and_reclaim_with_own_guard_do_not_deadlock() {
    let map = SlotMap::new();
    let k = map.insert(1);
    let j = map.insert(2);
    let guard = map.pin();
    // take would wait for this very guard: it declines and leaves the map unchanged.
    assert_eq!(map.take(k), None);
    assert!(map.contains_key(k));
    assert!(map.remove(j));
    // reclaim schedules and returns without waiting.
    map.reclaim();
    assert_eq!(guard.get(k), Some(&1));
    drop(guard);
    map.reclaim();
    assert_eq!(map.stats().pending, 0);
    assert_eq!(map.take(k), Some(1));
}

#[test]
fn retain_clear_and_counts() {
    let map = SlotMap::new();
    let keys: Vec<_> = (0..100).map(|i| map.insert(i)).collect();
    assert_eq!(map.retain(|_, v| v % 3 == 0), 66);
    assert_eq!(map.len(), 34);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(map.contains_key(*k), i % 3 == 0);
    }
    map.clear();
    assert!(map.is_empty());
    map.reclaim();
    let stats = map.stats();
    assert_eq!(stats.len, 0);
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.retired, 0);
    assert_eq!(stats.vacant, stats.capacity);
}

#[test]
fn with_capacity_allocates_up_front() {
    let map = SlotMap::<_, u64>::with_capacity(1000);
    let cap = map.capacity();
    assert!(cap >= 1000);
    for i in 0..1000 {
        map.insert(i);
    }
    assert_eq!(map.capacity(), cap, "no page was allocated by the inserts");
    assert_eq!(SlotMap::<DefaultKey, u8>::new().capacity(), 0);
}

#[test]
fn try_insert_gives_the_value_back_when_full() {
    let map = SlotMap::<DefaultKey, String>::with_max_capacity(3);
    let keys: Vec<_> = (0..3).map(|i| map.try_insert(i.to_string()).unwrap()).collect();
    let err = map.try_insert("full".into()).unwrap_err();
    assert_eq!(err.to_string(), "slot map is full");
    assert_eq!(err.into_inner(), "full");
    let caught = catch_unwind(AssertUnwindSafe(|| map.insert("boom".into())));
    assert!(caught.is_err(), "insert on a full map panics with a clear message");
    // Removing frees a slot again (after its grace period, which try_insert drives).
    assert!(map.remove(keys[1]));
    let k = map.try_insert("again".into()).unwrap();
    assert_eq!(map.get_cloned(k).as_deref(), Some("again"));
    assert_eq!(map.len(), 3);
}

#[test]
fn insert_with_key_sees_its_key_and_survives_panics() {
    let map = SlotMap::new();
    let k = map.insert_with_key(|k: DefaultKey| k);
    assert_eq!(map.get_cloned(k), Some(k));
    let before = map.stats();
    let caught = catch_unwind(AssertUnwindSafe(|| map.insert_with_key(|_| -> DefaultKey { panic!("no") })));
    assert!(caught.is_err());
    assert_eq!(map.len(), 1);
    assert_eq!(map.stats().vacant, before.vacant, "the slot went back to the free list");
    let k2 = map.insert_with_key(|k| k);
    assert_eq!(map.get_cloned(k2), Some(k2));
}

#[test]
fn panics_in_update_and_retain_closures_leave_the_map_consistent() {
    let map = SlotMap::new();
    let keys: Vec<_> = (0..10).map(|i| map.insert(i)).collect();
    let caught = catch_unwind(AssertUnwindSafe(|| map.update(keys[0], |_| panic!("update"))));
    assert!(caught.is_err());
    assert_eq!(map.get_cloned(keys[0]), Some(0));
    let mut seen = 0;
    let caught = catch_unwind(AssertUnwindSafe(|| {
        map.retain(|_, _| {
            seen += 1;
            if seen == 5 { panic!("retain") } else { false }
        })
    }));
    assert!(caught.is_err());
    assert_eq!(map.len(), 6, "four removed before the panic");
    map.reclaim();
    let stats = map.stats();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.vacant + stats.len, stats.capacity, "no slot lost");
}

struct PanicOnDrop(u32);
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if self.0 % 2 == 1 {
            panic!("drop of {}", self.0);
        }
    }
}

#[test]
fn panicking_drops_lose_no_slot() {
    let map = SlotMap::new();
    // Every replacement panics when it is dropped, and Miri unwinds slowly.
    let n = if cfg!(miri) { 40 } else { 200 };
    let keys: Vec<_> = (0..n).map(|i| map.insert(PanicOnDrop(i * 2))).collect();
    for (i, k) in keys.iter().enumerate() {
        map.replace(*k, PanicOnDrop(i as u32 * 2 + 1)).ok().unwrap();
    }
    for k in &keys {
        assert!(map.remove(*k));
    }
    map.reclaim();
    let stats = map.stats();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.len, 0);
    assert_eq!(stats.vacant, stats.capacity, "every slot came back");
    for i in 0..n {
        map.insert(PanicOnDrop(i * 2));
    }
    assert_eq!(map.stats().capacity, stats.capacity, "recycled slots were reused");
    map.clear();
    map.reclaim();
    // A panicking drop while the map itself is dropped surfaces after every value is gone.
    let map = SlotMap::new();
    map.insert(PanicOnDrop(1));
    let caught = catch_unwind(AssertUnwindSafe(move || drop(map)));
    assert!(caught.is_err());
}

#[test]
fn a_drain_dropped_early_finishes_its_walk_when_drops_panic() {
    let mut map = SlotMap::new();
    let n = if cfg!(miri) { 20 } else { 200 };
    // Odd values panic when dropped: the leftovers of the drain include many.
    let keys: Vec<_> = (0..n).map(|i| map.insert(PanicOnDrop(i))).collect();
    let capacity = map.capacity();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let mut drain = map.drain();
        assert_eq!(drain.next().map(|(_, v)| v.0), Some(0));
        drop(drain);
    }));
    assert!(caught.is_err(), "the first panic reaches the caller");
    assert_eq!(map.len(), 0);
    assert_eq!(map.pin().iter().count(), 0);
    assert!(keys.iter().all(|&k| !map.contains_key(k)), "no entry stayed readable");
    let stats = map.stats();
    assert_eq!(stats.vacant, stats.capacity, "every drained slot came back");
    for i in 0..n {
        map.insert(PanicOnDrop(i * 2));
    }
    assert_eq!(map.capacity(), capacity, "and is reused");
}

#[test]
fn dropping_the_map_drops_every_value() {
    let ledger = Ledger::new();
    {
        let map = SlotMap::new();
        let keys: Vec<_> = (0..scaled(1000) as u64).map(|i| map.insert(Tracked::new(i, &ledger))).collect();
        for k in keys.iter().step_by(2) {
            map.remove(*k);
        }
        for k in keys.iter().skip(1).step_by(4) {
            map.replace(*k, Tracked::new(0, &ledger)).ok().unwrap();
        }
        assert!(ledger.live() > 0);
    }
    assert_eq!(ledger.live(), 0);
    assert_eq!(ledger.double_drops.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn dropping_the_map_while_another_thread_cached_its_participant() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let keys: Vec<_> = (0..100).map(|i| map.insert(Tracked::new(i, &ledger))).collect();
    let (removed_tx, removed_rx) = std::sync::mpsc::channel();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let worker = {
        let map = &map;
        let keys = keys.clone();
        // SAFETY-free trick: the thread only borrows the map until it signals.
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                for k in &keys {
                    assert!(map.remove(*k));
                }
                assert!(map.pin().iter().next().is_none());
                removed_tx.send(()).unwrap();
            });
            h.join().unwrap();
        });
        std::thread::spawn(move || {
            // A second thread that pinned another map and outlives the drop.
            let other = SlotMap::new();
            let k = other.insert(1);
            assert!(other.remove(k));
            dropped_rx.recv().unwrap();
        })
    };
    removed_rx.recv().unwrap();
    drop(map);
    assert_eq!(ledger.live(), 0, "values retired by another thread were dropped with the map");
    dropped_tx.send(()).unwrap();
    worker.join().unwrap();
}

#[test]
fn drain_into_iter_get_mut_iter_mut() {
    let mut map = SlotMap::new();
    let keys: Vec<_> = (0..50).map(|i| map.insert(i)).collect();
    *map.get_mut(keys[3]).unwrap() = 300;
    for (_, v) in map.iter_mut() {
        *v += 1;
    }
    assert_eq!(map.get_cloned(keys[3]), Some(301));
    let mut drained: Vec<_> = map.drain().take(10).collect();
    assert_eq!(drained.len(), 10);
    assert!(map.is_empty(), "dropping the drain removes the rest");
    assert!(keys.iter().all(|k| !map.contains_key(*k)));
    drained.sort();
    let k = map.insert(7);
    assert!(keys.iter().all(|old| *old != k));
    let all: Vec<_> = map.into_iter().collect();
    assert_eq!(all, [(k, 7)]);
}

#[test]
fn guard_iter_yields_each_live_entry_once() {
    let map = SlotMap::new();
    let keys: Vec<_> = (0..500).map(|i| map.insert(i)).collect();
    for k in keys.iter().step_by(7) {
        map.remove(*k);
    }
    let guard = map.pin();
    let seen: Vec<_> = guard.iter().collect();
    assert_eq!(seen.len(), map.len());
    let mut ids: Vec<_> = seen.iter().map(|(_, v)| **v).collect();
    ids.dedup();
    assert_eq!(ids.len(), seen.len());
    for (k, v) in seen {
        assert_eq!(guard.get(k), Some(v));
    }
}

#[test]
fn versions_retire_at_the_limit() {
    let map = SlotMap::<DefaultKey, i32>::with_first_version(u32::MAX - 3);
    // Versions of slot 0: MAX-3 (vacant) -> MAX-2 -> MAX-1 -> MAX -> wraps: retired.
    let a = map.insert(1);
    map.remove(a);
    map.reclaim();
    let b = map.insert(2);
    assert_eq!(b.data().as_ffi() as u32, a.data().as_ffi() as u32);
    assert_eq!((b.data().as_ffi() >> 32) as u32, u32::MAX);
    map.remove(b);
    map.reclaim();
    assert_eq!(map.stats().retired, 1);
    let c = map.insert(3);
    assert_ne!(c.data().as_ffi() as u32, a.data().as_ffi() as u32, "a retired slot is never reused");
    for k in [a, b] {
        assert!(!map.contains_key(k));
        assert_eq!(map.get_cloned(k), None);
    }
    // Every key shape of the retired slot is dead.
    for version in [0u32, 1, 2, u32::MAX - 1, u32::MAX] {
        let k: DefaultKey =
            KeyData::from_ffi((u64::from(version) << 32) | (a.data().as_ffi() & 0xFFFF_FFFF)).into();
        assert!(!map.contains_key(k));
    }
    let stats = map.stats();
    assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity);
}

#[test]
fn churn_with_a_small_live_set_keeps_memory_flat() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let mut live = std::collections::VecDeque::new();
    let mut max_pending = 0;
    let mut capacity_after_warmup = 0;
    for i in 0..scaled(200_000) as u64 {
        live.push_back(map.insert(Tracked::new(i, &ledger)));
        if live.len() > 10 {
            assert!(map.remove(live.pop_front().unwrap()));
        }
        max_pending = max_pending.max(map.stats().pending);
        if i == 10_000 {
            capacity_after_warmup = map.capacity();
        }
    }
    assert!(max_pending <= 1024, "pending peaked at {max_pending}");
    if !cfg!(miri) {
        assert_eq!(map.capacity(), capacity_after_warmup, "capacity stopped growing");
        assert!(map.capacity() <= 4096, "capacity {}", map.capacity());
    }
    assert!(ledger.live() <= 10 + max_pending);
}

#[test]
fn debug_default_and_stats() {
    let map: SlotMap<DefaultKey, i32> = SlotMap::default();
    let k = map.insert(4);
    assert!(format!("{map:?}").contains(": 4"));
    assert!(format!("{:?}", map.pin()).contains("Guard"));
    let stats = map.stats();
    assert_eq!(stats.len, 1);
    assert_eq!(stats.len + stats.vacant, stats.capacity);
    assert!(map.remove(k));
    assert!(map.try_reclaim() <= 1);
}

#[test]
fn custom_keys_and_secondary_map_interop() {
    epoch_slotmap::new_key_type! { struct RuleId; }
    let map = SlotMap::<RuleId, &str>::with_key();
    let mut names = slotmap::SecondaryMap::new();
    let a = map.insert("a");
    names.insert(a, "rule a");
    assert!(map.remove(a));
    map.reclaim();
    let b = map.insert("b");
    // b reuses a's slot; the secondary map must not confuse them.
    assert_eq!(a.data().as_ffi() as u32, b.data().as_ffi() as u32);
    assert_eq!(names.get(b), None);
    assert_eq!(names.get(a), Some(&"rule a"));
    names.insert(b, "rule b");
    assert_eq!(names.get(a), None, "inserting the newer key evicts the stale one");
    assert_eq!(names.get(b), Some(&"rule b"));
}

#[test]
fn dropping_the_map_frees_replaced_values_without_drop_glue() {
    // A replaced value lives in a boxed node even when the value type has no drop glue: the
    // map's drop must free it (Miri and valgrind report the leak otherwise; here the counting
    // is done by a value type with drop glue in a box beside it).
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert((0u64, Tracked::new(0, &ledger)));
    for i in 1..10 {
        map.replace(k, (i, Tracked::new(i, &ledger))).unwrap();
    }
    let plain = SlotMap::new();
    let p = plain.insert(0u64);
    for i in 1..10 {
        plain.replace(p, i).unwrap();
    }
    drop(plain);
    drop(map);
    assert_eq!(ledger.live(), 0);
}
