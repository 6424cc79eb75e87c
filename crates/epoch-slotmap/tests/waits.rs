//! The calls that wait for other threads' guards, and their bounded forms: a guard held by
//! another thread makes the bounded forms give up at their deadline, and debug builds warn.
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Ledger, Tracked};
use epoch_slotmap::{DefaultKey, SlotMap, TakeError};

/// Runs `f` while another thread holds a guard of `map`, released after `f` returns.
fn with_guard_elsewhere<V: Send + Sync, R>(map: &SlotMap<DefaultKey, V>, f: impl FnOnce() -> R) -> R {
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _guard = map.pin();
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        pinned_rx.recv().unwrap();
        let out = f();
        release_tx.send(()).unwrap();
        out
    })
}

#[test]
fn reclaim_timeout_gives_up_while_another_thread_holds_a_guard() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert(Tracked::new(1, &ledger));
    let timed_out = with_guard_elsewhere(&map, || {
        assert!(map.remove(k));
        let done = map.reclaim_timeout(Duration::from_millis(50));
        (done, map.stats().pending)
    });
    assert_eq!(timed_out, (false, 1), "the other thread's guard keeps the value pending");
    assert!(map.reclaim_timeout(Duration::from_secs(30)));
    assert_eq!((map.stats().pending, ledger.live()), (0, 0));
}

#[test]
fn reclaim_timeout_under_this_threads_own_guard_returns_false_at_once() {
    let map = SlotMap::new();
    let k = map.insert(1);
    let guard = map.pin();
    map.remove(k);
    let start = std::time::Instant::now();
    assert!(!map.reclaim_timeout(Duration::from_secs(60)));
    assert!(start.elapsed() < Duration::from_secs(60), "it did not wait for its own guard");
    drop(guard);
    assert!(map.reclaim_timeout(Duration::from_secs(30)));
}

#[test]
fn take_timeout_gives_up_and_the_value_is_dropped_later() {
    let ledger = Ledger::new();
    let map = SlotMap::new();
    let k = map.insert(Tracked::new(7, &ledger));
    let result = with_guard_elsewhere(&map, || map.take_timeout(k, Duration::from_millis(50)).map(|v| v.id));
    assert_eq!(result, Err(TakeError::TimedOut));
    assert!(!map.contains_key(k), "the key died with the attempt");
    assert_eq!(map.take_timeout(k, Duration::from_secs(1)).map(|v| v.id), Err(TakeError::NotLive));
    map.reclaim();
    assert_eq!(ledger.live(), 0, "the value went the way of a removed one");
}

#[test]
fn try_take_says_why() {
    let map = SlotMap::new();
    let k = map.insert("v");
    let guard = map.pin();
    assert_eq!(map.try_take(k), Err(TakeError::GuardHeld));
    assert_eq!(map.take(k), None);
    assert!(map.contains_key(k), "under this thread's guard the map is unchanged");
    drop(guard);
    assert_eq!(map.try_take(k), Ok("v"));
    assert_eq!(map.try_take(k), Err(TakeError::NotLive));
    assert_eq!(TakeError::GuardHeld.to_string(), "the calling thread holds a guard of this map");
}

#[test]
fn shrink_to_fit_timeout_gives_up_while_another_thread_holds_a_guard() {
    let map = SlotMap::new();
    let keys: Vec<_> = (0..if cfg!(miri) { 200 } else { 1000 }).map(|i| map.insert(i)).collect();
    for &k in &keys {
        map.remove(k);
    }
    assert!(map.reclaim_timeout(Duration::from_secs(30)));
    let done = with_guard_elsewhere(&map, || map.shrink_to_fit_timeout(Duration::from_millis(50)));
    assert!(!done, "the released pages' memory waits for the other thread's guard");
    assert_eq!(map.capacity(), 32, "the pages were released anyway");
    assert!(map.shrink_to_fit_timeout(Duration::from_secs(30)));
}

/// The child of `a_stuck_wait_warns_once_in_debug_builds`: waits for a guard another thread
/// holds until its deadline, with the warning threshold lowered. Does nothing unless that test
/// runs it.
#[test]
fn stuck_wait_child() {
    if std::env::var("EPOCH_SLOTMAP_WAIT_CHILD").is_err() {
        return;
    }
    let map = SlotMap::new();
    let k = map.insert(1u8);
    with_guard_elsewhere(&map, || {
        map.remove(k);
        assert!(!map.reclaim_timeout(Duration::from_millis(400)));
    });
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot spawn a process; the wait itself runs in the tests above")]
fn a_stuck_wait_warns_once_in_debug_builds() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stuck_wait_child", "--nocapture", "--test-threads=1"])
        .env("EPOCH_SLOTMAP_WAIT_CHILD", "1")
        .env("EPOCH_SLOTMAP_WARN_AFTER_MS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings = stderr.matches("epoch_slotmap: reclaim has waited").count();
    if cfg!(debug_assertions) {
        assert_eq!(warnings, 1, "one warning, naming the stats: {stderr}");
        assert!(stderr.contains("pending: 1"), "{stderr}");
    } else {
        assert_eq!(warnings, 0, "release builds stay quiet: {stderr}");
    }
}
