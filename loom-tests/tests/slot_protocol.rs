//! Loom scenarios for the slot protocol: versions, value publication, deferred recycling, the
//! free list and pages. Each runs twice: on the minimal grace-period reclaimer with no
//! preemption bound (exhaustive), and on the crossbeam-epoch domain at bound 2.
#![cfg(loom)]

use epoch_slotmap::{DefaultKey, Key, SlotMap};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use loom_tests::{Outcomes, Reclaimer, Side, Val, pinned_read, read_as, scenario};

type Map = SlotMap<DefaultKey, Val>;

fn index(k: DefaultKey) -> u32 {
    k.data().as_ffi() as u32
}

static GET_VS_REMOVE: Outcomes = Outcomes::new();
scenario!(get_vs_remove, heavy, GET_VS_REMOVE => ["hit", "miss"], |r: Reclaimer| {
    let side = Side::new(2);
    let map: Arc<Map> = Arc::new(r.map());
    let k0 = map.insert(Val::new(0, &side));
    let k1 = map.insert(Val::new(1, &side));
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            match guard.get(k0) {
                Some(v) => {
                    read_as(&side, v, 0);
                    GET_VS_REMOVE.record("hit");
                }
                None => GET_VS_REMOVE.record("miss"),
            }
        })
    };
    let remover = {
        let map = map.clone();
        // Two removes fill a batch (2 under loom), so recycling runs concurrently.
        thread::spawn(move || {
            assert!(map.remove(k0));
            assert!(map.remove(k1));
        })
    };
    reader.join().unwrap();
    remover.join().unwrap();
    map.reclaim();
    side.assert_all_dropped([0, 1]);
    assert_eq!(map.stats().pending, 0);
});

static REMOVE_VS_REMOVE: Outcomes = Outcomes::new();
scenario!(remove_vs_remove, REMOVE_VS_REMOVE => ["thread 0 won", "thread 1 won"], |r: Reclaimer| {
    let side = Side::new(1);
    let map: Arc<Map> = Arc::new(r.map());
    let k = map.insert(Val::new(0, &side));
    let wins = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (map, wins) = (map.clone(), wins.clone());
            thread::spawn(move || {
                if map.remove(k) {
                    wins.fetch_add(1, Ordering::Relaxed);
                    REMOVE_VS_REMOVE.record(format!("thread {t} won"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(wins.load(Ordering::Relaxed), 1, "exactly one remove wins");
    map.reclaim();
    side.assert_all_dropped([0]);
});

static STALE_KEY: Outcomes = Outcomes::new();
scenario!(stale_key_after_reuse, heavy, STALE_KEY => ["slot reused", "fresh slot", "old value", "none"], |r: Reclaimer| {
    let side = Side::new(3);
    let map: Arc<Map> = Arc::new(r.map());
    let old = map.insert(Val::new(0, &side));
    let filler = map.insert(Val::new(1, &side));
    let writer = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            assert!(map.remove(old));
            assert!(map.remove(filler));
            map.try_reclaim();
            let new = map.insert(Val::new(2, &side));
            STALE_KEY.record(if index(new) == index(old) || index(new) == index(filler) {
                "slot reused"
            } else {
                "fresh slot"
            });
        })
    };
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            // The stale key may show its own value (before the remove) or nothing, never
            // the slot's next occupant.
            match guard.get(old) {
                Some(v) => {
                    read_as(&side, v, 0);
                    STALE_KEY.record("old value");
                }
                None => STALE_KEY.record("none"),
            }
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    assert!(map.pin().get(old).is_none());
    drop(map);
    side.assert_all_dropped([0, 1, 2]);
});

static REPLACE_VS_GET: Outcomes = Outcomes::new();
scenario!(replace_vs_get, heavy, REPLACE_VS_GET => ["old", "new"], |r: Reclaimer| {
    let side = Side::new(2);
    let map: Arc<Map> = Arc::new(r.map());
    let k = map.insert(Val::new(0, &side));
    // The address of the inline value tells old from new without dereferencing.
    let inline = map.pin().get(k).map(|v| v as *const Val as usize).unwrap();
    let writer = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            assert!(map.replace(k, Val::new(1, &side)).is_ok());
            map.try_reclaim();
        })
    };
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            let v = guard.get(k).expect("the key stays live across a replace");
            let id = if v as *const Val as usize == inline { 0 } else { 1 };
            read_as(&side, v, id);
            REPLACE_VS_GET.record(if id == 0 { "old" } else { "new" });
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    map.reclaim();
    side.assert_all_dropped([0]);
    drop(map);
    side.assert_all_dropped([0, 1]);
});

static REPLACE_VS_REMOVE: Outcomes = Outcomes::new();
scenario!(replace_vs_remove, bounded, REPLACE_VS_REMOVE => ["replaced", "refused"], |r: Reclaimer| {
    // A replace of the inline value racing the remove of the same key: the slot then has two
    // drops queued (the inline value's note and the current value's), possibly in different
    // batches, and must be recycled exactly once, after both (the INLINE_PENDING /
    // RECYCLE_WAITING handshake, and the batch runner's shortcut when the note has run).
    let side = Side::new(6);
    let map: Arc<Map> = Arc::new(r.map());
    let k = map.insert(Val::new(0, &side));
    let filler = map.insert(Val::new(1, &side));
    let replacer = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let outcome = if map.replace(k, Val::new(2, &side)).is_ok() { "replaced" } else { "refused" };
            REPLACE_VS_REMOVE.record(outcome);
        })
    };
    let remover = {
        let map = map.clone();
        // Two removes fill a batch (2 under loom): the note lands in it or in a later one.
        thread::spawn(move || {
            assert!(map.remove(k));
            assert!(map.remove(filler));
        })
    };
    replacer.join().unwrap();
    remover.join().unwrap();
    map.reclaim();
    side.assert_all_dropped([0, 1, 2]);
    assert_eq!(map.stats().pending, 0);
    // A slot recycled twice would sit on the free list twice and be handed out twice: the
    // first of its two keys would then read as dead.
    let fresh: Vec<DefaultKey> = (3..6).map(|i| map.insert(Val::new(i, &side))).collect();
    for &f in &fresh {
        assert!(map.pin().get(f).is_some(), "a recycled slot was handed out twice");
    }
    drop(map);
    side.assert_all_dropped(0..6);
});

static UPDATE_VS_UPDATE: Outcomes = Outcomes::new();
scenario!(update_vs_update, heavy, UPDATE_VS_UPDATE => ["retried", "no retry"], |r: Reclaimer| {
    let map: Arc<SlotMap<DefaultKey, usize>> = Arc::new(r.map());
    let k = map.insert(0);
    let calls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (map, calls) = (map.clone(), calls.clone());
            thread::spawn(move || {
                assert!(map.update(k, |v| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    v + 1
                }));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(map.get_cloned(k), Some(2), "an update was lost");
    UPDATE_VS_UPDATE.record(if calls.load(Ordering::Relaxed) > 2 { "retried" } else { "no retry" });
    map.reclaim();
    assert_eq!(map.stats().pending, 0);
});

static TAKE_VS_GET: Outcomes = Outcomes::new();
scenario!(take_vs_get, heavy, TAKE_VS_GET => ["hit", "miss"], |r: Reclaimer| {
    let side = Side::new(1);
    let map: Arc<Map> = Arc::new(r.map());
    let k = map.insert(Val::new(0, &side));
    let taker = {
        let map = map.clone();
        thread::spawn(move || {
            let mut v = map.take(k).expect("live");
            // take returned: no reader may still be looking at the value. Writing to it
            // races (and loom reports it) if one is.
            v.poke();
            assert_eq!(v.id, 0);
        })
    };
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            match guard.get(k) {
                Some(v) => {
                    read_as(&side, v, 0);
                    TAKE_VS_GET.record("hit");
                }
                None => TAKE_VS_GET.record("miss"),
            }
        })
    };
    taker.join().unwrap();
    reader.join().unwrap();
    side.assert_all_dropped([0]);
    assert!(map.is_empty());
});

static RETAIN_VS_INSERT: Outcomes = Outcomes::new();
scenario!(retain_vs_insert, RETAIN_VS_INSERT => ["visited 2", "visited 3"], |r: Reclaimer| {
    let side = Side::new(3);
    let map: Arc<Map> = Arc::new(r.map());
    let k0 = map.insert(Val::new(0, &side));
    let k1 = map.insert(Val::new(1, &side));
    let retainer = {
        let map = map.clone();
        thread::spawn(move || {
            let mut visited = 0;
            let removed = map.retain(|_, v| {
                visited += 1;
                v.id != 0
            });
            assert_eq!(removed, 1);
            RETAIN_VS_INSERT.record(format!("visited {visited}"));
        })
    };
    let inserter = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || map.insert(Val::new(2, &side)))
    };
    retainer.join().unwrap();
    let k2 = inserter.join().unwrap();
    assert!(!map.contains_key(k0) && map.contains_key(k1) && map.contains_key(k2));
    assert_eq!(map.len(), 2);
    drop(map);
    side.assert_all_dropped([0, 1, 2]);
});

static ITER_VS_REMOVE: Outcomes = Outcomes::new();
scenario!(iter_vs_remove, scan, ITER_VS_REMOVE => ["saw 1", "saw 3"], |r: Reclaimer| {
    let side = Side::new(3);
    let map: Arc<Map> = Arc::new(r.map());
    let keys: Vec<_> = (0..3).map(|i| map.insert(Val::new(i, &side))).collect();
    let remover = {
        let (map, keys) = (map.clone(), keys.clone());
        thread::spawn(move || {
            // Two removes fill a batch (2 under loom): recycling runs concurrently.
            assert!(map.remove(keys[1]));
            assert!(map.remove(keys[2]));
        })
    };
    let iterator = {
        let (map, side, keys) = (map.clone(), side.clone(), keys.clone());
        thread::spawn(move || {
            let guard = map.pin();
            let mut seen = Vec::new();
            for (k, v) in guard.iter() {
                let id = keys.iter().position(|x| *x == k).expect("a key the map handed out");
                read_as(&side, v, id);
                assert!(!seen.contains(&id), "yielded twice");
                seen.push(id);
            }
            assert!(seen.contains(&0), "a value live for the whole iteration was missed");
            ITER_VS_REMOVE.record(format!("saw {}", seen.len()));
        })
    };
    remover.join().unwrap();
    iterator.join().unwrap();
    map.reclaim();
    side.assert_all_dropped([1, 2]);
});

static NEW_PAGE: Outcomes = Outcomes::new();
scenario!(inserts_race_to_allocate_a_page, heavy, NEW_PAGE => ["thread with value 2 got index 2", "thread with value 2 got index 3", "one page"], |r: Reclaimer| {
    let side = Side::new(4);
    let map: Arc<Map> = Arc::new(r.map());
    // Under loom the first page holds 2 slots: fill it.
    map.insert(Val::new(0, &side));
    map.insert(Val::new(1, &side));
    assert_eq!(map.capacity(), 2);
    let handles: Vec<_> = (2..4)
        .map(|id| {
            let (map, side) = (map.clone(), side.clone());
            thread::spawn(move || (id, map.insert(Val::new(id, &side))))
        })
        .collect();
    let keys: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(index(keys[0].1), index(keys[1].1));
    let guard = map.pin();
    for (id, k) in &keys {
        read_as(&side, guard.get(*k).unwrap(), *id);
    }
    drop(guard);
    // Both found their own lists empty and nothing to steal, and both went to grow. The
    // second to take the growth lock looks at every free list again under it and finds the
    // slots of the page the first installed: one page, whatever the interleaving (the memory
    // bound of shared.rs), and never a slot handed out twice.
    match map.capacity() {
        6 => NEW_PAGE.record("one page"),
        c => panic!("capacity {c}: a second page was installed while the first one's slots were vacant"),
    }
    NEW_PAGE.record(format!("thread with value 2 got index {}", index(keys[0].1)));
    drop(map);
    side.assert_all_dropped(0..4);
});

static ABA: Outcomes = Outcomes::new();
scenario!(free_list_aba_three_actors, three_actors, ABA => ["reused"], |r: Reclaimer| {
    let map: Arc<SlotMap<DefaultKey, usize>> = Arc::new(r.map());
    // Three vacant slots on the free list.
    let setup: Vec<_> = (0..3).map(|i| map.insert(i)).collect();
    for k in &setup {
        map.remove(*k);
    }
    map.reclaim();
    let popper = {
        let map = map.clone();
        thread::spawn(move || vec![map.insert(10)])
    };
    let churner = {
        let map = map.clone();
        // Pops two, pushes one back: the ABA pattern for the popper above.
        thread::spawn(move || {
            let a = map.insert(20);
            let b = map.insert(21);
            assert!(map.remove(a));
            assert!(map.remove(b));
            map.try_reclaim();
            vec![map.insert(22)]
        })
    };
    let third = {
        let map = map.clone();
        thread::spawn(move || vec![map.insert(30)])
    };
    let mut live: Vec<DefaultKey> = Vec::new();
    for h in [popper, churner, third] {
        live.extend(h.join().unwrap());
    }
    let mut indexes: Vec<_> = live.iter().map(|k| index(*k)).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), live.len(), "a slot was handed out twice");
    for (k, v) in live.iter().zip([10, 22, 30]) {
        assert_eq!(map.get_cloned(*k), Some(v));
    }
    ABA.record(if map.capacity() > 2 + 4 { "grew" } else { "reused" });
});

static RECLAIM_VS_READER: Outcomes = Outcomes::new();
scenario!(reclaim_vs_pinned_reader, heavy, RECLAIM_VS_READER => ["hit", "miss"], |r: Reclaimer| {
    let side = Side::new(1);
    let map: Arc<Map> = Arc::new(r.map());
    let k = map.insert(Val::new(0, &side));
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            RECLAIM_VS_READER.record(if pinned_read(&map, &side, k, 0) { "hit" } else { "miss" });
        })
    };
    let reclaimer = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            assert!(map.remove(k));
            map.reclaim();
            // reclaim returned: the value removed before it has been dropped.
            assert!(side.is_dropped(0), "reclaim returned before the removed value was dropped");
            assert_eq!(map.stats().pending, 0);
        })
    };
    reader.join().unwrap();
    reclaimer.join().unwrap();
    side.assert_all_dropped([0]);
});

scenario!(drop_with_values_pending, |r: Reclaimer| {
    let side = Side::new(4);
    let map: Arc<Map> = Arc::new(r.map());
    let keys: Vec<_> = (0..3).map(|i| map.insert(Val::new(i, &side))).collect();
    let writer = {
        let (map, side, keys) = (map.clone(), side.clone(), keys.clone());
        thread::spawn(move || {
            assert!(map.remove(keys[0]));
            assert!(map.replace(keys[1], Val::new(3, &side)).is_ok());
        })
    };
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            if let Some(v) = guard.get(keys[2]) {
                read_as(&side, v, 2);
            }
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    // Values are pending (a batch is 2 retirements): dropping the map drops them all.
    drop(map);
    side.assert_all_dropped(0..4);
});

static RETIREMENT: Outcomes = Outcomes::new();
scenario!(version_retirement_at_the_last_version, heavy, RETIREMENT => ["hit", "miss"], |r: Reclaimer| {
    let side = Side::new(2);
    // The first insert gets version u32::MAX: its remove retires the slot.
    let map: Arc<Map> = Arc::new(r.map_with_first_version(u32::MAX - 1));
    let k = map.insert(Val::new(0, &side));
    assert_eq!((k.data().as_ffi() >> 32) as u32, u32::MAX);
    let remover = {
        let map = map.clone();
        thread::spawn(move || {
            assert!(map.remove(k));
            map.try_reclaim();
        })
    };
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let guard = map.pin();
            match guard.get(k) {
                Some(v) => {
                    read_as(&side, v, 0);
                    RETIREMENT.record("hit");
                }
                None => RETIREMENT.record("miss"),
            }
        })
    };
    remover.join().unwrap();
    reader.join().unwrap();
    map.reclaim();
    assert_eq!(map.stats().retired, 1);
    let next = map.insert(Val::new(1, &side));
    assert_ne!(index(next), index(k), "a retired slot was reused");
    assert!(!map.contains_key(k));
    drop(map);
    side.assert_all_dropped([0, 1]);
});

static PUBLISH: Outcomes = Outcomes::new();
scenario!(insert_publishes_the_value_with_the_key, PUBLISH => ["hit", "not yet"], |r: Reclaimer| {
    use loom::sync::atomic::AtomicU64;
    let side = Side::new(1);
    let map: Arc<Map> = Arc::new(r.map());
    // The key travels through a Relaxed mailbox: only the map's own publication (the
    // version's Release store) may order the value's contents before a reader's use.
    let mailbox = Arc::new(AtomicU64::new(0));
    let inserter = {
        let (map, side, mailbox) = (map.clone(), side.clone(), mailbox.clone());
        thread::spawn(move || {
            // Built inside the insert, after the slot was allocated: nothing but the
            // version's publication orders the value's construction before a reader.
            let k = map.insert_with_key(|_| Val::new(0, &side));
            mailbox.store(k.data().as_ffi(), Ordering::Relaxed);
        })
    };
    let reader = {
        let (map, side, mailbox) = (map.clone(), side.clone(), mailbox.clone());
        thread::spawn(move || {
            let ffi = mailbox.load(Ordering::Relaxed);
            if ffi == 0 {
                PUBLISH.record("not yet");
                return;
            }
            let key: DefaultKey = epoch_slotmap::KeyData::from_ffi(ffi).into();
            match map.pin().get(key) {
                Some(v) => {
                    read_as(&side, v, 0);
                    PUBLISH.record("hit");
                }
                None => PUBLISH.record("key seen, value not yet"),
            }
        })
    };
    inserter.join().unwrap();
    reader.join().unwrap();
    drop(map);
    side.assert_all_dropped([0]);
});

static ABA_PANIC: Outcomes = Outcomes::new();
scenario!(free_list_aba_through_a_panicking_insert, bound 3, ABA_PANIC => ["no overlap"], |r: Reclaimer| {
    // The one push that needs no grace period: an insert whose closure panics gives its slot
    // back at once, onto the inserting thread's own list. Inside that closure another insert
    // pops the next slot, so the churner's own list goes a -> b, then (b taken, a given back)
    // a -> nil: the ABA pattern for a steal by the popper that read head a and a.next = b in
    // between. Its CAS must fail (the tag moved on), or b, which the churner holds, would be
    // on a free list and handed out twice.
    //
    // The main thread leaves six vacant slots on its own lists, more than the threads ever
    // need at once, so nobody installs a page or waits at a limit: no thread holds a lock
    // while a panic unwinds (see `sync::Lock` on loom and panics).
    let map: Arc<SlotMap<DefaultKey, usize>> = Arc::new(r.map());
    let setup: Vec<_> = (0..6).map(|i| map.insert(i)).collect();
    for k in setup {
        map.remove(k);
    }
    map.reclaim();
    assert_eq!(map.capacity(), 6);
    let popper = {
        let map = map.clone();
        thread::spawn(move || map.insert(10))
    };
    let churner = {
        let map = map.clone();
        thread::spawn(move || {
            let fail = |f: &mut dyn FnMut()| {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                assert!(result.is_err());
            };
            // Two slots come onto the churner's own list the same way: taken from the main
            // thread's lists by two nested inserts whose closures panic, and given back to its
            // own, the inner one's first: the list is then a -> b.
            fail(&mut || {
                map.insert_with_key(|_| -> usize {
                    fail(&mut || {
                        map.insert_with_key(|_| -> usize { panic!("closure fails") });
                    });
                    panic!("closure fails")
                });
            });
            let mut inner = None;
            fail(&mut || {
                map.insert_with_key(|_| {
                    inner = Some(map.insert(20));
                    panic!("closure fails after another insert")
                });
            });
            inner.unwrap()
        })
    };
    let k10 = popper.join().unwrap();
    let k20 = churner.join().unwrap();
    // Fill the map (the last inserts steal whatever is on the churner's list), then one more:
    // every list is empty now, so it must install a page. A slot the churner holds, left on
    // its list by a stale CAS, would come back here.
    let mut keys = vec![(k10, 10), (k20, 20)];
    keys.extend((30..35).map(|v| (map.insert(v), v)));
    let mut indexes: Vec<_> = keys.iter().map(|(k, _)| index(*k)).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 7, "a slot was handed out twice");
    for (k, v) in keys {
        assert_eq!(map.get_cloned(k), Some(v));
    }
    assert_eq!(map.capacity(), 14, "one page was installed, for the seventh value");
    ABA_PANIC.record("no overlap");
});
