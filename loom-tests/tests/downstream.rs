//! How a downstream crate model-checks its own code with the map inside: a config reloader
//! swaps a service's rules while a request handler reads them. Public API only, plain
//! `loom::model` (see docs/loom.md for the cfg flags this needs).
#![cfg(loom)]

use epoch_slotmap::{DefaultKey, Key, KeyData, SlotMap};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

/// The service's view of its configuration: the live rule set and which key is current.
struct Config {
    rules: SlotMap<DefaultKey, String>,
    current: AtomicU64,
}

impl Config {
    fn handle_request(&self) -> Option<String> {
        let key = KeyData::from_ffi(self.current.load(Ordering::Acquire)).into();
        self.rules.pin().get(key).cloned()
    }

    fn reload(&self, rule: &str) {
        let new = self.rules.insert(rule.to_owned());
        let old = self.current.swap(new.data().as_ffi(), Ordering::AcqRel);
        self.rules.remove(KeyData::from_ffi(old).into());
    }
}

#[test]
fn reload_while_handling_a_request() {
    let mut builder = loom::model::Builder::new();
    // crossbeam-epoch's internals: explore at preemption bound 2, and allow more branches per
    // execution than loom's default 1000 (its collection loops take many).
    builder.preemption_bound = Some(2);
    builder.max_branches = 20_000;
    builder.check(|| {
        let rules = SlotMap::new();
        let first = rules.insert("allow all".to_owned());
        let config = Arc::new(Config { rules, current: AtomicU64::new(first.data().as_ffi()) });
        let handler = {
            let config = config.clone();
            thread::spawn(move || {
                // A request sees the old rule or the new one, never nothing, never garbage.
                let rule = config.handle_request();
                assert!(matches!(rule.as_deref(), Some("allow all") | Some("deny all") | None));
                rule
            })
        };
        let reloader = {
            let config = config.clone();
            thread::spawn(move || config.reload("deny all"))
        };
        let seen = handler.join().unwrap();
        reloader.join().unwrap();
        // `None` is possible only if the handler read the old key after the reloader removed
        // it; the map never hands out the other rule under the old key.
        let _ = seen;
        assert_eq!(config.handle_request().as_deref(), Some("deny all"));
        config.rules.reclaim();
        assert_eq!(config.rules.stats().pending, 0);
        assert_eq!(config.rules.len(), 1);
    });
}
