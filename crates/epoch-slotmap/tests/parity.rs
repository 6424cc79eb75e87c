//! What a slotmap user reaches for: the methods and iterator types of `slotmap::SlotMap` that
//! make sense concurrently, with the traits slotmap's have.
mod common;

use std::collections::HashSet;
use std::fmt::Debug;
use std::iter::FusedIterator;

use common::{Ledger, Tracked, scaled};
use epoch_slotmap::{DefaultKey, Key, SlotMap};

fn exact_fused_debug<I: ExactSizeIterator + FusedIterator + Debug>(i: I) -> I {
    i
}

fn fused_clone_debug<I: FusedIterator + Clone + Debug>(i: I) -> I {
    i
}

#[test]
fn iterator_types_can_be_named_and_have_slotmaps_traits() {
    let mut map: SlotMap<DefaultKey, u32> = (0..100).collect();
    let removed: Vec<DefaultKey> = map.pin().keys().filter(|k| k.data().as_ffi() % 3 == 0).collect();
    for k in &removed {
        map.remove(*k);
    }
    let live = 100 - removed.len();
    {
        let guard = map.pin();
        let iter: epoch_slotmap::Iter<'_, DefaultKey, u32> = fused_clone_debug(guard.iter());
        let copy = iter.clone();
        assert_eq!(iter.count(), live);
        assert_eq!(copy.count(), live, "a clone walks on independently");
        let keys: epoch_slotmap::Keys<'_, DefaultKey, u32> = fused_clone_debug(guard.keys());
        let values: epoch_slotmap::Values<'_, DefaultKey, u32> = fused_clone_debug(guard.values());
        assert_eq!(keys.count(), values.count());
        let mut done = guard.iter();
        for _ in done.by_ref() {}
        assert!(done.next().is_none() && done.next().is_none(), "fused");
    }
    {
        let mut iter_mut: epoch_slotmap::IterMut<'_, DefaultKey, u32> = exact_fused_debug(map.iter_mut());
        assert_eq!(iter_mut.len(), live);
        iter_mut.next();
        assert_eq!(iter_mut.len(), live - 1);
    }
    let values_mut: epoch_slotmap::ValuesMut<'_, DefaultKey, u32> = exact_fused_debug(map.values_mut());
    assert_eq!(values_mut.len(), live);
    let drain: epoch_slotmap::Drain<'_, DefaultKey, u32> = exact_fused_debug(map.drain());
    assert_eq!(drain.len(), live);
    assert_eq!(drain.count(), live);
    assert!(map.is_empty());
    map.extend(0..10);
    let into: epoch_slotmap::IntoIter<DefaultKey, u32> = exact_fused_debug(map.into_iter());
    assert_eq!(into.len(), 10);
}

#[test]
fn drain_keeps_keys_dead_and_reuses_the_slots() {
    let ledger = Ledger::new();
    let mut map = SlotMap::new();
    let n = if cfg!(miri) { 40 } else { 500 };
    let keys: Vec<DefaultKey> = (0..n).map(|i| map.insert(Tracked::new(i, &ledger))).collect();
    // A replaced inline value leaves a note waiting for its grace period: drain must not
    // reuse its slot before the note has run.
    map.replace(keys[7], Tracked::new(1000, &ledger)).unwrap();
    let capacity = map.capacity();
    let mut drained: Vec<u64> = map.drain().map(|(_, v)| v.id).collect();
    drained.sort_unstable();
    assert_eq!(drained.len(), n as usize);
    assert!(drained.contains(&1000) && !drained.contains(&7));
    assert!(keys.iter().all(|&k| !map.contains_key(k)));
    let again: Vec<DefaultKey> = (0..n).map(|i| map.insert(Tracked::new(i, &ledger))).collect();
    assert_eq!(map.capacity(), capacity, "the drained slots were reused");
    assert!(again.iter().all(|k| !keys.contains(k)));
    drop(map);
    assert_eq!(ledger.live(), 0);
    assert_eq!(ledger.double_drops.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn partial_drain_removes_everything() {
    let ledger = Ledger::new();
    let mut map = SlotMap::new();
    for i in 0..100 {
        map.insert(Tracked::new(i, &ledger));
    }
    let first = map.drain().next().map(|(_, v)| v.id);
    assert_eq!(first, Some(0));
    assert!(map.is_empty());
    assert_eq!(ledger.live(), 0);
}

#[test]
fn try_insert_with_key_gives_the_slot_back_on_error() {
    let map = SlotMap::new();
    let before = map.stats();
    let failed: Result<DefaultKey, &str> = map.try_insert_with_key(|_| Err("no"));
    assert_eq!(failed, Err("no"));
    let mut seen = None;
    let k = map.try_insert_with_key::<_, ()>(|k| {
        seen = Some(k);
        Ok(1)
    });
    assert_eq!(k.ok(), seen);
    assert_eq!(map.len(), 1);
    assert_eq!(map.capacity(), before.capacity.max(32));
}

#[test]
fn reserve_installs_pages_up_front() {
    let map = SlotMap::new();
    map.insert(0u8);
    let n = if cfg!(miri) { 200 } else { 10_000 };
    map.reserve(n);
    let stats = map.stats();
    assert!(stats.vacant >= n, "{stats:?}");
    let capacity = stats.capacity;
    for i in 0..n {
        map.insert((i % 256) as u8);
    }
    assert_eq!(map.capacity(), capacity, "no page was installed after the reservation");
    let limited = SlotMap::<DefaultKey, u8>::with_max_capacity(100);
    assert!(limited.try_reserve(100).is_ok());
    assert!(limited.try_reserve(101).is_err());
}

#[test]
fn get_disjoint_mut_checks_liveness_and_distinctness() {
    let mut map = SlotMap::new();
    let a = map.insert(1);
    let b = map.insert(2);
    let c = map.insert(3);
    map.remove(c);
    assert!(map.get_disjoint_mut([a, b, c]).is_none());
    assert!(map.get_disjoint_mut([a, a]).is_none());
    let [x, y] = map.get_disjoint_mut([a, b]).unwrap();
    std::mem::swap(x, y);
    assert_eq!((map.get_cloned(a), map.get_cloned(b)), (Some(2), Some(1)));
}

#[test]
fn clone_keeps_every_key_meaning_the_same() {
    let map = SlotMap::new();
    // Pages of 32, 64, 128, 256...: removing the first two thirds empties at least one page
    // after the first, which shrink_to_fit releases.
    let n = if cfg!(miri) { 300 } else { 3000 };
    let keys: Vec<DefaultKey> = (0..n as i32).map(|i| map.insert(i)).collect();
    // Dead keys of every kind: removed and reclaimed, removed and pending, in a released page.
    let (removed, pending) = (n * 2 / 3, n / 30);
    for &k in &keys[..removed] {
        map.remove(k);
    }
    map.reclaim();
    let capacity = map.capacity();
    map.shrink_to_fit();
    assert!(map.capacity() < capacity, "a page was released");
    for &k in &keys[removed..removed + pending] {
        map.remove(k);
    }
    let replaced = n * 5 / 6;
    map.replace(keys[replaced], -1).unwrap();
    let copy = map.clone();
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(copy.get_cloned(k), map.get_cloned(k), "key {i}");
    }
    assert_eq!(copy.get_cloned(keys[replaced]), Some(-1));
    assert_eq!(copy.len(), n - removed - pending);
    // New keys of the copy never revive an old one.
    let fresh: HashSet<DefaultKey> = (0..n as i32 * 5 / 3).map(|i| copy.insert(i)).collect();
    assert!(keys.iter().all(|k| !fresh.contains(k)));
}

#[test]
fn clone_of_a_map_being_written() {
    let map = SlotMap::new();
    let stable: Vec<DefaultKey> = (0..if cfg!(miri) { 40 } else { 1000 }).map(|i| map.insert(i)).collect();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..scaled(20_000) as i32 {
                let k = map.insert(-i);
                map.remove(k);
            }
        });
        while !writer.is_finished() {
            let copy = map.clone();
            for (i, &k) in stable.iter().enumerate() {
                assert_eq!(copy.get_cloned(k), Some(i as i32));
            }
            assert!(copy.pin().values().all(|&v| v >= 0 || v > -20_000));
        }
    });
}

#[test]
fn extend_from_iterator_get_with_and_default_key_constructors() {
    let map: SlotMap<DefaultKey, String> = ["a", "b"].into_iter().map(String::from).collect();
    let keys: Vec<DefaultKey> = map.pin().keys().collect();
    assert_eq!(map.get_with(keys[1], |v| v.clone()), Some("b".to_owned()));
    assert_eq!(map.get_with(DefaultKey::null(), |v| v.len()), None);
    let mut map = map;
    map.extend(["c".to_owned()]);
    assert_eq!(map.len(), 3);
    // Infers `DefaultKey`, as `new` and `with_capacity` do.
    let limited = SlotMap::with_max_capacity(1);
    limited.insert(1u8);
    assert_eq!(limited.try_insert(2).unwrap_err().into_inner(), 2);
}

#[test]
fn owning_iterators_dropped_early_drop_everything() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    for i in 0..if cfg!(miri) { 80 } else { 300 } {
        map.insert(Tracked::new(i, &ledger));
    }
    let mut into = map.into_iter();
    assert_eq!(into.next().map(|(_, v)| v.id), Some(0));
    drop(into);
    assert_eq!(ledger.live(), 0, "the values after the first, in its word and beyond, were dropped");
    assert_eq!(ledger.double_drops.load(std::sync::atomic::Ordering::SeqCst), 0);
}
