//! Snapshots (`serde` feature): round trips through JSON and postcard keep every key's
//! meaning, dead keys stay dead, and bad input is an error.
use epoch_slotmap::{DefaultKey, Key, KeyData, SlotMap};
use proptest::prelude::*;

type Map = SlotMap<DefaultKey, String>;

fn key(raw: u64) -> DefaultKey {
    KeyData::from_ffi(raw).into()
}

/// A map with live, replaced, removed-and-reclaimed and removed-but-pending entries, and a
/// released page. Returns the map, its live keys with their values, and its dead keys.
fn eventful_map() -> (Map, Vec<(DefaultKey, String)>, Vec<DefaultKey>) {
    let map = Map::new();
    // Under Miri: small, but the tail still fills page 1 (64 slots) by itself.
    let n = if cfg!(miri) { 20 } else { 2_000 };
    let keys: Vec<DefaultKey> = (0..n).map(|i| map.insert(format!("v{i}"))).collect();
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for (i, &k) in keys.iter().enumerate() {
        match i % 4 {
            0 => dead.push(k),
            1 => {
                map.replace(k, format!("r{i}")).unwrap();
                live.push((k, format!("r{i}")));
            }
            _ => live.push((k, format!("v{i}"))),
        }
    }
    for &k in &dead {
        assert!(map.remove(k));
    }
    map.reclaim();
    // Reuse some vacant slots (so versions above the first are in play) and kill them again.
    for _ in 0..n / 8 {
        let k = map.insert("short-lived".into());
        map.remove(k);
        dead.push(k);
    }
    map.reclaim();
    // A page wholly emptied and released: its keys must stay dead through the watermark.
    let tail: Vec<DefaultKey> = (0..2 * n + 64).map(|i| map.insert(format!("t{i}"))).collect();
    for &k in &tail {
        map.remove(k);
    }
    dead.extend(tail);
    map.reclaim();
    let capacity = map.capacity();
    map.shrink_to_fit();
    assert!(map.capacity() < capacity, "the scenario releases a page");
    // Removed but not reclaimed: absent from the snapshot, its key dead.
    let pending = map.insert("pending".into());
    map.remove(pending);
    dead.push(pending);
    (map, live, dead)
}

fn check_restored(restored: &Map, live: &[(DefaultKey, String)], dead: &[DefaultKey]) {
    assert_eq!(restored.len(), live.len());
    for (k, v) in live {
        assert_eq!(restored.get_cloned(*k).as_ref(), Some(v), "live key {k:?}");
    }
    for &k in dead {
        assert!(!restored.contains_key(k), "dead key {k:?} came back");
    }
    // Fill every vacant slot and grow: no dead key may ever match a new value.
    let extra = if cfg!(miri) { 8 } else { 100 };
    let fresh: Vec<DefaultKey> =
        (0..dead.len() + extra).map(|i| restored.insert(format!("new{i}"))).collect();
    for &k in dead {
        assert!(!restored.contains_key(k), "dead key {k:?} matched a new value");
    }
    for (i, &k) in fresh.iter().enumerate() {
        assert_eq!(restored.get_cloned(k), Some(format!("new{i}")));
    }
    for (k, v) in live {
        assert_eq!(restored.get_cloned(*k).as_ref(), Some(v));
    }
    let stats = restored.stats();
    assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity);
}

#[test]
#[cfg_attr(miri, ignore = "the postcard round trip runs the same engine paths under Miri")]
fn json_round_trip_keeps_keys_and_dead_keys_dead() {
    let (map, live, dead) = eventful_map();
    let json = serde_json::to_string(&map).unwrap();
    let restored: Map = serde_json::from_str(&json).unwrap();
    assert_eq!(restored.capacity(), map.capacity(), "released pages stay released");
    assert_eq!(restored.stats().pending, 0);
    // A restored map serializes to the same snapshot (vacant slots at the same versions,
    // released pages absent, watermarks kept).
    assert_eq!(serde_json::to_string(&restored).unwrap(), json);
    check_restored(&restored, &live, &dead);
}

#[test]
fn postcard_round_trip_keeps_keys_and_dead_keys_dead() {
    let (map, live, dead) = eventful_map();
    let bytes = postcard::to_stdvec(&map).unwrap();
    let restored: Map = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(postcard::to_stdvec(&restored).unwrap(), bytes);
    check_restored(&restored, &live, &dead);
}

#[test]
fn retired_slots_stay_retired_and_fresh_slots_stay_usable() {
    let map = SlotMap::<DefaultKey, u32>::with_first_version(u32::MAX - 1);
    let a = map.insert(1); // version u32::MAX, the last
    let b = map.insert(2);
    map.remove(a);
    map.reclaim();
    assert_eq!(map.stats().retired, 1);
    let json = serde_json::to_string(&map).unwrap();
    let restored: SlotMap<DefaultKey, u32> = serde_json::from_str(&json).unwrap();
    assert_eq!(restored.stats().retired, 1);
    assert_eq!(restored.get_cloned(b), Some(2));
    let retired_index = a.data().as_ffi() as u32;
    let capacity = restored.stats().capacity;
    let fresh: Vec<DefaultKey> = (0..capacity - 2).map(|i| restored.insert(i as u32)).collect();
    assert!(fresh.iter().all(|k| k.data().as_ffi() as u32 != retired_index), "a retired slot was reused");
    assert_eq!(restored.capacity(), capacity, "every fresh slot was usable");
    for version in [0u32, 1, 2, u32::MAX] {
        assert!(!restored.contains_key(key((u64::from(version) << 32) | u64::from(retired_index))));
    }
}

#[test]
fn guard_snapshot_and_max_capacity() {
    let map = SlotMap::<DefaultKey, u8>::with_max_capacity(40);
    let keys: Vec<_> = (0..40).map(|i| map.insert(i)).collect();
    let guard = map.pin();
    let bytes = postcard::to_stdvec(&guard).unwrap();
    drop(guard);
    let restored: SlotMap<DefaultKey, u8> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored.capacity(), 40);
    assert_eq!(restored.try_insert(99).unwrap_err().into_inner(), 99, "the limit is kept");
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(restored.get_cloned(k), Some(i as u8));
    }
}

#[test]
fn empty_maps_round_trip() {
    let map = Map::new();
    let json = serde_json::to_string(&map).unwrap();
    let restored: Map = serde_json::from_str(&json).unwrap();
    assert!(restored.is_empty());
    assert_eq!(restored.capacity(), 0);
    let k = restored.insert("x".into());
    assert_eq!(restored.get_cloned(k).as_deref(), Some("x"));
}

/// A small valid snapshot to tamper with: one page of 32 slots.
fn page_zero(slots: &str) -> String {
    format!(r#"{{"max_slots":1000,"watermarks":[],"pages":[{{"page":0,"slots":[{slots}]}}]}}"#)
}

fn vacant_slots(n: usize) -> String {
    vec!["[2]"; n].join(",")
}

fn rejected(json: &str) -> String {
    match serde_json::from_str::<Map>(json) {
        Ok(map) => panic!("accepted {json}: {map:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn hostile_snapshots_are_clean_errors() {
    let ok = page_zero(&vacant_slots(32));
    assert!(serde_json::from_str::<Map>(&ok).is_ok());

    let occupied = page_zero(&format!(r#"[3,"x"],{}"#, vacant_slots(31)));
    assert_eq!(serde_json::from_str::<Map>(&occupied).unwrap().len(), 1);
    let even_occupied = page_zero(&format!(r#"[4,"x"],{}"#, vacant_slots(31)));
    assert!(rejected(&even_occupied).contains("[even version] or [odd version, value]"));
    let odd_vacant = page_zero(&format!("[5],{}", vacant_slots(31)));
    assert!(rejected(&odd_vacant).contains("[even version] or [odd version, value]"));
    let odd_null = page_zero(&format!("[5,null],{}", vacant_slots(31)));
    assert!(rejected(&odd_null).contains("expected a string"));
    let extra = page_zero(&format!(r#"[5,"x",1],{}"#, vacant_slots(31)));
    assert!(rejected(&extra).contains("invalid length"));
    assert!(rejected(&page_zero(&vacant_slots(31))).contains("31 slots"));
    assert!(rejected(&page_zero(&vacant_slots(33))).contains("33 slots"));

    let page = |p: u32, n: usize| format!(r#"{{"page":{p},"slots":[{}]}}"#, vacant_slots(n));
    let pages =
        |list: &[String]| format!(r#"{{"max_slots":1000,"watermarks":[],"pages":[{}]}}"#, list.join(","));
    assert!(rejected(&pages(&[page(0, 32), page(0, 32)])).contains("listed twice"));
    assert!(rejected(&pages(&[page(1, 64), page(0, 32)])).contains("out of order"));
    assert!(rejected(&pages(&[page(25, 32)])).contains("out of range"));
    assert!(rejected(&pages(&[page(u32::MAX, 32)])).contains("out of range"));
    // Page 5 starts at slot 992; with max_slots 1000 it has 8 usable slots, page 6 none.
    let cut = serde_json::from_str::<Map>(&pages(&[page(5, 8)])).unwrap();
    assert_eq!(cut.capacity(), 8);
    assert!(rejected(&pages(&[page(5, 32)])).contains("32 slots, 8 expected"));
    assert!(rejected(&pages(&[page(6, 0)])).contains("out of range"));

    let big = r#"{"max_slots":4294967295,"watermarks":[],"pages":[]}"#;
    assert!(rejected(big).contains("max_slots"));
    let odd_mark = r#"{"max_slots":10,"watermarks":[3],"pages":[]}"#;
    assert!(rejected(odd_mark).contains("odd watermark"));
    let many_marks = format!(r#"{{"max_slots":10,"watermarks":[{}],"pages":[]}}"#, vec!["0"; 26].join(","));
    assert!(rejected(&many_marks).contains("26 watermarks"));
    let below = format!(
        r#"{{"max_slots":1000,"watermarks":[8],"pages":[{{"page":0,"slots":[[6],{}]}}]}}"#,
        vec!["[8]"; 31].join(",")
    );
    assert!(rejected(&below).contains("below its page's watermark"));
    rejected(r#"{"max_slots":10,"watermarks":[],"pages":[],"extra":1}"#);
    rejected(r#"{"max_slots":10,"pages":[]}"#);
    rejected(r#"{"max_slots":10,"watermarks":[],"pages":[{"page":0,"slots":[[1]]}]}"#);
    rejected(r#"{"max_slots":10,"watermarks":[],"pages":[{"page":0,"slots":[[]]}]}"#);
    rejected("[]");
    rejected("");
}

#[test]
fn a_small_snapshot_never_allocates_a_large_page() {
    // The last page of a map with a limit holds only the slots below the limit, so claiming
    // the top page costs what the input lists: here one slot, not 2^29.
    let top = r#"{"max_slots":536870881,"watermarks":[],"pages":[{"page":24,"slots":[[2]]}]}"#;
    let map: Map = serde_json::from_str(top).unwrap();
    assert_eq!(map.capacity(), 1);
    assert!(map.allocated_bytes() < 1024, "{} bytes", map.allocated_bytes());
    let k = map.insert("one".into());
    assert_eq!(map.get_cloned(k).as_deref(), Some("one"));
    // Lower pages are allocated as the map grows, as in any map.
    map.insert("two".into());
    assert_eq!(map.capacity(), 33);
    // The same holds for maps built with a limit.
    let limited = SlotMap::<DefaultKey, u8>::with_max_capacity(33);
    for i in 0..33 {
        limited.insert(i);
    }
    // 33 slots of 24 bytes, and one occupancy word per page.
    assert_eq!(limited.allocated_bytes(), 33 * (16 + 8) + 2 * 8, "page 1 holds its one usable slot");
}

#[test]
fn values_that_serialize_as_null_round_trip() {
    let units = SlotMap::<DefaultKey, ()>::new();
    let a = units.insert(());
    let options = SlotMap::<DefaultKey, Option<u8>>::new();
    let none = options.insert(None);
    let some = options.insert(Some(1));
    let units: SlotMap<DefaultKey, ()> =
        serde_json::from_str(&serde_json::to_string(&units).unwrap()).unwrap();
    assert_eq!(units.get_cloned(a), Some(()));
    let json = serde_json::to_string(&options).unwrap();
    let options: SlotMap<DefaultKey, Option<u8>> = serde_json::from_str(&json).unwrap();
    assert_eq!((options.get_cloned(none), options.get_cloned(some)), (Some(None), Some(Some(1))));
}

#[test]
fn snapshots_racing_with_shrink_keep_dead_keys_dead() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    // A writer fills pages, empties them and releases them, over and over; it publishes each
    // round's keys once they are dead. Every key published before a snapshot started must
    // stay dead in the restored map, however much is inserted into it.
    let map = SlotMap::<DefaultKey, u32>::new();
    let dead: Mutex<Vec<DefaultKey>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let rounds = if cfg!(miri) { 2 } else { 200 };
    let per_round = if cfg!(miri) { 40 } else { 300 };
    let snapshots = std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..rounds {
                let keys: Vec<_> = (0..per_round).map(|i| map.insert(round * 1000 + i)).collect();
                keys.iter().for_each(|&k| assert!(map.remove(k)));
                map.reclaim();
                map.shrink_to_fit();
                dead.lock().unwrap().extend(keys);
            }
            done.store(true, Ordering::Release);
        });
        let mut snapshots = Vec::new();
        while !done.load(Ordering::Acquire) || snapshots.is_empty() {
            let known_dead = dead.lock().unwrap().len();
            snapshots.push((known_dead, postcard::to_stdvec(&map).unwrap()));
        }
        snapshots
    });
    let dead = dead.into_inner().unwrap();
    let step = (snapshots.len() / if cfg!(miri) { 2 } else { 50 }).max(1);
    for (known_dead, bytes) in snapshots.iter().step_by(step) {
        let restored: SlotMap<DefaultKey, u32> = postcard::from_bytes(bytes).unwrap();
        for _ in 0..per_round * 2 {
            restored.insert(u32::MAX);
        }
        for &k in &dead[..*known_dead] {
            assert!(!restored.contains_key(k), "key {k:?}, dead before the snapshot, came back");
        }
    }
}

#[test]
fn binary_lengths_are_not_trusted() {
    // postcard: max_slots, then a watermark count claiming 2^63 entries with none following.
    let mut bytes = postcard::to_stdvec(&10u32).unwrap();
    bytes.extend(postcard::to_stdvec(&(1u64 << 63)).unwrap());
    assert!(postcard::from_bytes::<Map>(&bytes).is_err());
    // A page claiming 2^40 slots, with only one present.
    let mut bytes = postcard::to_stdvec(&(1000u32, Vec::<u32>::new(), 1u8, 0u32)).unwrap();
    bytes.extend(postcard::to_stdvec(&(1u64 << 40)).unwrap());
    bytes.extend(postcard::to_stdvec(&[2u32]).unwrap());
    assert!(postcard::from_bytes::<Map>(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes never panic; whatever is accepted is a consistent map.
    #[test]
    fn garbage_postcard_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(map) = postcard::from_bytes::<SlotMap<DefaultKey, u16>>(&bytes) {
            let stats = map.stats();
            prop_assert_eq!(map.pin().iter().count(), stats.len);
            prop_assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity);
        }
    }

    /// Flipping bytes of a real snapshot gives an error or a consistent map, never a panic.
    #[test]
    fn tampered_snapshots_are_errors_or_consistent(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let map = SlotMap::<DefaultKey, u16>::new();
        for i in 0..40u16 {
            let k = map.insert(i);
            if i % 3 == 0 {
                map.remove(k);
            }
        }
        let mut bytes = postcard::to_stdvec(&map).unwrap();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte | 1;
        }
        if let Ok(restored) = postcard::from_bytes::<SlotMap<DefaultKey, u16>>(&bytes) {
            let stats = restored.stats();
            prop_assert_eq!(restored.pin().iter().count(), stats.len);
            prop_assert_eq!(stats.len + stats.vacant + stats.retired, stats.capacity);
            for _ in 0..stats.vacant + 40 {
                restored.insert(0);
            }
        }
    }
}

#[test]
fn snapshot_while_writers_run_is_consistent() {
    // Values carry their own key: a snapshot taken under concurrent inserts and removes must
    // restore every value under the key it was stored with.
    let map = SlotMap::<DefaultKey, u64>::new();
    let rounds = if cfg!(miri) { 24 } else { 20_000 };
    let snapshots = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut mine = Vec::new();
                for i in 0..rounds {
                    mine.push(map.insert_with_key(|k| k.data().as_ffi()));
                    if i % 2 == 1 {
                        map.remove(mine.swap_remove(i % mine.len()));
                    }
                }
            });
        }
        (0..if cfg!(miri) { 2 } else { 20 }).map(|_| serde_json::to_vec(&map).unwrap()).collect::<Vec<_>>()
    });
    for json in snapshots {
        let restored: SlotMap<DefaultKey, u64> = serde_json::from_slice(&json).unwrap();
        let mut n = 0;
        for (k, &v) in restored.pin().iter() {
            assert_eq!(k.data().as_ffi(), v, "a value restored under another key");
            n += 1;
        }
        assert_eq!(n, restored.len());
    }
}
