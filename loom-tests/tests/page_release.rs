//! Loom scenarios for `shrink_to_fit`: page release against stale readers, inserts, the
//! removal of a page's last occupant, and a snapshot (`serde`) being taken. Pages are tiny under loom: page 0 holds slots 0-1
//! (it always stays), page 1 holds slots 2-5.
#![cfg(loom)]

use epoch_slotmap::{DefaultKey, SlotMap};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{Outcomes, Reclaimer, Side, Val, read_as, scenario};

type Map = SlotMap<DefaultKey, Val>;

/// Fills page 0 with live values 0-1 and page 1 with values 2-5, removes 2-5 and reclaims:
/// page 1 is wholly vacant. Returns the stale keys of page 1.
fn vacant_second_page(map: &Map, side: &Arc<Side>) -> Vec<DefaultKey> {
    let keys: Vec<_> = (0..6).map(|i| map.insert(Val::new(i, side))).collect();
    for &k in &keys[2..] {
        assert!(map.remove(k));
    }
    map.reclaim();
    keys[2..].to_vec()
}

static SHRINK_VS_STALE: Outcomes = Outcomes::new();
scenario!(shrink_vs_stale_reader, heavy, SHRINK_VS_STALE => ["released"], |r: Reclaimer| {
    let side = Side::new(10);
    let map: Arc<Map> = Arc::new(r.map());
    let stale = vacant_second_page(&map, &side);
    let reader = {
        let map = map.clone();
        let k = stale[0];
        thread::spawn(move || {
            let guard = map.pin();
            assert!(guard.get(k).is_none(), "a stale key resolved");
            drop(guard);
            assert!(!map.contains_key(k));
        })
    };
    let shrinker = {
        let map = map.clone();
        thread::spawn(move || map.shrink_to_fit())
    };
    reader.join().unwrap();
    shrinker.join().unwrap();
    if map.capacity() == 2 {
        SHRINK_VS_STALE.record("released");
    }
    // The page comes back with versions above the watermark: old keys stay dead.
    let fresh: Vec<_> = (6..10).map(|i| map.insert(Val::new(i, &side))).collect();
    for &k in &stale {
        assert!(map.pin().get(k).is_none(), "a key from before the release resolved");
        assert!(!fresh.contains(&k));
    }
    drop(map);
    side.assert_all_dropped(0..10);
});

static SHRINK_VS_INSERT: Outcomes = Outcomes::new();
scenario!(shrink_vs_insert, heavy, SHRINK_VS_INSERT => ["page kept or reallocated"], |r: Reclaimer| {
    let side = Side::new(7);
    let map: Arc<Map> = Arc::new(r.map());
    let _stale = vacant_second_page(&map, &side);
    let inserter = {
        let (map, side) = (map.clone(), side.clone());
        thread::spawn(move || {
            let k = map.insert(Val::new(6, &side));
            let guard = map.pin();
            read_as(&side, guard.get(k).expect("a fresh key resolves"), 6);
            k
        })
    };
    let shrinker = {
        let map = map.clone();
        thread::spawn(move || map.shrink_to_fit())
    };
    let k = inserter.join().unwrap();
    shrinker.join().unwrap();
    // The value is reachable and in a page that exists (never in a freed one).
    read_as(&side, map.pin().get(k).unwrap(), 6);
    // 6 slots: the insert took a slot of page 1 before the shrink took page 1's lists (page
    // kept), or it found nothing while the shrink held them and waited for the growth lock,
    // behind which the shrink either gave them back or released page 1, which the insert then
    // installed again. Never page 2: no page is installed while the shrink holds slots.
    SHRINK_VS_INSERT.record(match map.capacity() {
        6 => "page kept or reallocated",
        c => panic!("capacity {c}: a page was installed while page 1's slots were vacant"),
    });
    drop(map);
    side.assert_all_dropped(0..7);
});

static SHRINK_VS_REMOVE: Outcomes = Outcomes::new();
scenario!(shrink_vs_remove_of_the_last_occupant, heavy, SHRINK_VS_REMOVE => ["kept", "released"], |r: Reclaimer| {
    let side = Side::new(6);
    let map: Arc<Map> = Arc::new(r.map());
    let keys: Vec<_> = (0..6).map(|i| map.insert(Val::new(i, &side))).collect();
    for &k in &keys[2..5] {
        assert!(map.remove(k));
    }
    map.reclaim();
    let last = keys[5];
    let remover = {
        let map = map.clone();
        thread::spawn(move || {
            assert!(map.remove(last));
            map.reclaim();
        })
    };
    let shrinker = {
        let map = map.clone();
        thread::spawn(move || map.shrink_to_fit())
    };
    remover.join().unwrap();
    shrinker.join().unwrap();
    SHRINK_VS_REMOVE.record(if map.capacity() == 2 { "released" } else { "kept" });
    assert!(map.pin().get(last).is_none());
    map.shrink_to_fit();
    assert_eq!(map.capacity(), 2);
    assert!(map.pin().get(last).is_none());
    drop(map);
    side.assert_all_dropped(0..6);
});

static SNAPSHOT_VS_SHRINK: Outcomes = Outcomes::new();
scenario!(snapshot_vs_shrink, heavy, SNAPSHOT_VS_SHRINK => ["page in the snapshot", "page released before the snapshot"], |r: Reclaimer| {
    // Keys of page 1 were dead before the snapshot began; whether the snapshot lists the
    // page or only its watermark, they must stay dead in the restored map.
    let map: Arc<SlotMap<DefaultKey, u32>> = Arc::new(r.map());
    let keys: Vec<_> = (0..6).map(|i| map.insert(i)).collect();
    for &k in &keys[2..] {
        assert!(map.remove(k));
    }
    map.reclaim();
    let shrinker = {
        let map = map.clone();
        thread::spawn(move || map.shrink_to_fit())
    };
    let snapshotter = {
        let map = map.clone();
        thread::spawn(move || postcard::to_stdvec(&*map).unwrap())
    };
    shrinker.join().unwrap();
    let bytes = snapshotter.join().unwrap();
    let restored: SlotMap<DefaultKey, u32> = postcard::from_bytes(&bytes).unwrap();
    SNAPSHOT_VS_SHRINK.record(if restored.capacity() == 6 {
        "page in the snapshot"
    } else {
        "page released before the snapshot"
    });
    for i in 6..10 {
        restored.insert(i);
    }
    for &k in &keys[2..] {
        assert!(!restored.contains_key(k), "a key dead before the snapshot came back");
    }
    for (i, &k) in keys[..2].iter().enumerate() {
        assert_eq!(restored.get_cloned(k), Some(i as u32));
    }
});
