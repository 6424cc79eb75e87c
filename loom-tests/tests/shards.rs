//! Loom scenarios for the per-thread write path: a thread's own free lists and retire stacks
//! (its shard), a batch of one thread run by another (the hand-back of its slots, and the
//! free lists' non-empty hint), and a map at its limit waiting for slots in their grace period.
//! Under loom page 0 holds slots 0-1, so a map limited to 2 slots is full with two values.
#![cfg(loom)]

use epoch_slotmap::{DefaultKey, Key, SlotMap};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{Outcomes, Reclaimer, Side, Val, pinned_read, read_as, scenario};

type Map = SlotMap<DefaultKey, Val>;

fn index(k: DefaultKey) -> u32 {
    k.data().as_ffi() as u32
}

static HAND_BACK: Outcomes = Outcomes::new();
scenario!(batch_run_by_another_thread_while_its_owner_inserts, bound 3, HAND_BACK => ["owner ran it", "reclaimer ran it"], |r: Reclaimer| {
    // The owner's two removals make a batch (2 under loom). Whoever runs it once its grace
    // period has passed (the owner, or the other thread's `reclaim`) pushes both slots back
    // onto the owner's lists, which the owner may be popping from at that moment: a push that
    // lands while the owner finds its list empty and clears the list's hint must stay visible,
    // or the owner's insert below would find the map full with two slots vacant.
    let side = Side::new(3);
    let map: Arc<Map> = Arc::new(r.map_with_max_capacity(2));
    let owner = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let k0 = map.insert(Val::new(0, &side));
            let k1 = map.insert(Val::new(1, &side));
            assert!(map.remove(k0));
            assert!(map.remove(k1));
            let ran_it_itself = map.stats().pending == 0;
            let k2 = map.try_insert(Val::new(2, &side)).unwrap_or_else(|_| panic!("full with two slots vacant"));
            assert!(index(k2) < 2);
            read_as(&side, map.pin().get(k2).expect("a fresh key resolves"), 2);
            ran_it_itself
        })
    };
    let reclaimer = {
        let map = map.clone();
        thread::spawn(move || map.reclaim())
    };
    let ran_it_itself = owner.join().unwrap();
    reclaimer.join().unwrap();
    HAND_BACK.record(if ran_it_itself { "owner ran it" } else { "reclaimer ran it" });
    assert_eq!(map.capacity(), 2);
    map.reclaim();
    side.assert_all_dropped([0, 1]);
    drop(map);
    side.assert_all_dropped(0..3);
});

static AT_THE_LIMIT: Outcomes = Outcomes::new();
scenario!(insert_at_the_limit_waits_for_a_grace_period, heavy, AT_THE_LIMIT => ["reader saw it", "reader missed it"], |r: Reclaimer| {
    // A full map whose only vacant slot is still in its grace period (a reader may hold it):
    // the insert waits for the reader's guard instead of reporting the map full.
    let side = Side::new(3);
    let map: Arc<Map> = Arc::new(r.map_with_max_capacity(2));
    let k0 = map.insert(Val::new(0, &side));
    let _k1 = map.insert(Val::new(1, &side));
    let reader = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            AT_THE_LIMIT.record(if pinned_read(&map, &side, k0, 0) { "reader saw it" } else { "reader missed it" });
        })
    };
    let writer = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            assert!(map.remove(k0));
            let k2 = map.try_insert(Val::new(2, &side)).unwrap_or_else(|_| panic!("full while a slot was pending"));
            assert_eq!(index(k2), index(k0), "the only slot that can be free");
        })
    };
    reader.join().unwrap();
    writer.join().unwrap();
    assert_eq!(map.capacity(), 2);
    drop(map);
    side.assert_all_dropped(0..3);
});
