//! Rules by id, by kind and by match, on [`epoch_slotmap`].
//!
//! A service keeps its rules (routes, ACL entries, feature flags) in a [`RuleStore`]. A control
//! plane adds, replaces and deletes them, often a whole kind at once
//! ([`RuleStore::remove_kind`]); request threads [`pin`](RuleStore::pin) the store and look
//! rules up by id, scan them, or scan one kind. Readers never take a lock and never wait;
//! writers are serialised among themselves by one mutex and never wait for a reader. A removed
//! rule's key is dead the moment `remove` returns, and its memory is released as soon as no
//! guard can still see it ([`RuleStore::reclaim`] waits for that moment).
//!
//! ```
//! use rulestore::{Rule, RuleStore};
//!
//! struct Route { method: &'static str, prefix: &'static str }
//! impl Rule for Route {
//!     type Kind = &'static str;
//!     fn kind(&self) -> &'static str { self.method }
//! }
//!
//! let store = RuleStore::new();
//! let api = store.add(Route { method: "GET", prefix: "/api" });
//! store.add(Route { method: "POST", prefix: "/upload" });
//!
//! let rules = store.pin();
//! assert_eq!(rules.get(api).unwrap().prefix, "/api");
//! assert_eq!(rules.of_kind(&"POST").count(), 1);
//! let hit = rules.find(|r| "/api/users".starts_with(r.prefix));
//! assert_eq!(hit.map(|(id, _)| id), Some(api));
//! drop(rules);
//!
//! assert_eq!(store.remove_kind(&"GET"), 1);
//! store.reclaim();
//! assert_eq!(store.stats().pending, 0);
//! ```
//!
//! # The kind index
//!
//! Rules live in one [`SlotMap`]; each entry stores its rule and the kind it had when it was
//! stored. The kind index is a second, small `SlotMap` of copy-on-write snapshots: one
//! *directory* (kind → the key of that kind's member list) and one *member list* per kind
//! (the ids of its rules). A writer publishes a new member list with
//! [`SlotMap::replace`], so it costs O(rules of that kind); the directory is republished
//! only when a kind appears or disappears. A reader finds the list, then looks every id up in
//! the rule table and keeps only entries whose stored kind is the one asked for. The rule
//! table is therefore the single source of truth, and the index only has to be a superset of
//! it, which the writer order guarantees (see `docs/rulestore.md`):
//!
//! - `add`: insert the rule, then publish the member list with its id.
//! - `remove`: remove the rule (its key dies at once), then publish the list without it.
//! - `replace` to another kind: publish the new kind's list with the id, replace the entry
//!   (one atomic swap: old kind or new, whole), then publish the old list without it.
//!
//! # Features
//!
//! - `serde`: `Serialize`/`Deserialize` for [`RuleStore`] when the rule type has them. A
//!   snapshot is taken with the writer lock held (point-in-time; readers are not blocked) and
//!   keeps rule ids: after a restore every id from the snapshot names the same rule, and ids
//!   of rules removed before it stay dead. The kind index is rebuilt on restore.
//! - `metrics`: `RuleStore::publish_metrics` sets the store's gauges through the
//!   [`metrics`](https://docs.rs/metrics) facade.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use epoch_slotmap::{DefaultKey, Guard, SlotMap, Stats};

#[cfg(feature = "serde")]
mod snapshot;

#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

/// A rule a [`RuleStore`] can hold: anything with a kind.
///
/// ```
/// use rulestore::Rule;
///
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum Action { Allow, Deny }
///
/// struct Acl { action: Action, cidr: &'static str }
/// impl Rule for Acl {
///     type Kind = Action;
///     fn kind(&self) -> Action { self.action }
/// }
/// assert_eq!(Acl { action: Action::Deny, cidr: "10.0.0.0/8" }.kind(), Action::Deny);
/// ```
pub trait Rule: Send + Sync + 'static {
    /// What rules are grouped by (for [`RulesGuard::of_kind`] and
    /// [`RuleStore::remove_kind`]).
    type Kind: Eq + Hash + Clone + Send + Sync + 'static;
    /// This rule's kind. Called once when the rule is stored; a rule's kind is the one it had
    /// then.
    fn kind(&self) -> Self::Kind;
}

epoch_slotmap::new_key_type! {
    /// The key of a rule in a [`RuleStore`]: stays valid until the rule is removed (a
    /// `replace` keeps it), and never refers to another rule afterwards.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore, RuleId};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let id: RuleId = store.add(R);
    /// assert!(store.remove(id));
    /// assert!(store.pin().get(id).is_none());
    /// ```
    pub struct RuleId;
}

/// A stored rule with the kind it had when stored.
struct Entry<R: Rule> {
    kind: R::Kind,
    rule: R,
}

/// A node of the kind index.
enum IndexNode<Kd> {
    /// Kind → key of its member list. One per store, at a fixed key.
    Directory(HashMap<Kd, DefaultKey>),
    /// The ids of one kind's rules, no duplicates.
    Members(Box<[RuleId]>),
}

/// The writers' view of the index, behind the writer mutex.
struct Writer<Kd> {
    kinds: HashMap<Kd, KindState>,
}

struct KindState {
    node: DefaultKey,
    members: Vec<RuleId>,
}

/// A concurrent rule table: rules by id, by kind, and by predicate.
///
/// `Send + Sync`: share it with an `Arc` or a scoped thread.
///
/// ```
/// use rulestore::{Rule, RuleStore};
/// # struct Flag(&'static str, bool);
/// # impl Rule for Flag { type Kind = &'static str; fn kind(&self) -> &'static str { self.0 } }
/// let store = RuleStore::new();
/// let id = store.add(Flag("beta", true));
/// std::thread::scope(|s| {
///     // The reader sees the old rule or the new one, whole: both are named "beta".
///     s.spawn(|| assert_eq!(store.pin().get(id).unwrap().0, "beta"));
///     s.spawn(|| store.replace(id, Flag("beta", false)).ok().unwrap());
/// });
/// assert!(!store.pin().get(id).unwrap().1);
/// ```
pub struct RuleStore<R: Rule> {
    rules: SlotMap<RuleId, Entry<R>>,
    index: SlotMap<DefaultKey, IndexNode<R::Kind>>,
    directory: DefaultKey,
    writer: Mutex<Writer<R::Kind>>,
}

impl<R: Rule> Default for RuleStore<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Rule> fmt::Debug for RuleStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleStore").field("len", &self.len()).field("stats", &self.stats()).finish()
    }
}

impl<R: Rule> RuleStore<R> {
    /// An empty store.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store: RuleStore<R> = RuleStore::new();
    /// assert!(store.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::from_maps(SlotMap::with_key(), SlotMap::new())
    }

    /// A store whose maps use the engine's minimal grace-period reclaimer (for loom model
    /// checks only).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer() -> Self {
        Self::from_maps(SlotMap::with_grace_reclaimer(), SlotMap::with_grace_reclaimer())
    }

    fn from_maps(rules: SlotMap<RuleId, Entry<R>>, index: SlotMap<DefaultKey, IndexNode<R::Kind>>) -> Self {
        let directory = index.insert(IndexNode::Directory(HashMap::new()));
        Self { rules, index, directory, writer: Mutex::new(Writer { kinds: HashMap::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Writer<R::Kind>> {
        // A panic under the lock (in a `Kind`'s `Hash` or `Eq`) may leave the writers' view
        // behind the tables; readers filter by the rule table, so they stay correct.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `rule` and returns its id.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(7));
    /// assert_eq!(store.pin().of_kind(&7).next().map(|(i, _)| i), Some(id));
    /// ```
    pub fn add(&self, rule: R) -> RuleId {
        let kind = rule.kind();
        let mut writer = self.lock();
        let id = self.rules.insert(Entry { kind: kind.clone(), rule });
        self.add_member(&mut writer, kind, id);
        id
    }

    /// Removes the rule `id`; `false` if it was not in the store. No guard pinned after this
    /// returns can see the rule.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let id = store.add(R);
    /// assert!(store.remove(id));
    /// assert!(!store.remove(id));
    /// ```
    pub fn remove(&self, id: RuleId) -> bool {
        let mut writer = self.lock();
        let Some(kind) = self.rules.pin().get(id).map(|entry| entry.kind.clone()) else {
            return false;
        };
        // Writers are serialised, so the entry is still there.
        let removed = self.rules.remove(id);
        debug_assert!(removed);
        self.remove_member(&mut writer, &kind, id);
        removed
    }

    /// Removes every rule of `kind` and returns how many; O(rules of that kind). No guard
    /// pinned after this returns can see any of them.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// store.add(R(1));
    /// store.add(R(1));
    /// store.add(R(2));
    /// assert_eq!(store.remove_kind(&1), 2);
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn remove_kind(&self, kind: &R::Kind) -> usize {
        let mut writer = self.lock();
        let Some(state) = writer.kinds.remove(kind) else { return 0 };
        let removed = state.members.iter().filter(|&&id| self.rules.remove(id)).count();
        self.publish_directory(&writer);
        self.index.remove(state.node);
        removed
    }

    /// Replaces the rule `id`, keeping its id; `Err(rule)` if `id` is not in the store. The
    /// kind may change: a reader sees the rule under its old kind or its new one, never both
    /// and never neither.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(1));
    /// assert!(store.replace(id, R(2)).is_ok());
    /// let rules = store.pin();
    /// assert_eq!(rules.of_kind(&1).count(), 0);
    /// assert_eq!(rules.of_kind(&2).count(), 1);
    /// ```
    pub fn replace(&self, id: RuleId, rule: R) -> Result<(), R> {
        let kind = rule.kind();
        let mut writer = self.lock();
        let Some(old_kind) = self.rules.pin().get(id).map(|entry| entry.kind.clone()) else {
            return Err(rule);
        };
        if old_kind == kind {
            return self.rules.replace(id, Entry { kind, rule }).map_err(|entry| entry.rule);
        }
        // New list first, then the swap, then the old list: the index stays a superset of
        // the table at every moment.
        self.add_member(&mut writer, kind.clone(), id);
        let swapped = self.rules.replace(id, Entry { kind, rule });
        debug_assert!(swapped.is_ok(), "writers are serialised");
        self.remove_member(&mut writer, &old_kind, id);
        Ok(())
    }

    /// Pins the store for reading; see [`RulesGuard`].
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.add(R);
    /// assert_eq!(store.pin().iter().count(), 1);
    /// ```
    pub fn pin(&self) -> RulesGuard<'_, R> {
        RulesGuard { rules: self.rules.pin(), index: self.index.pin(), directory: self.directory }
    }

    /// How many rules are stored.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.add(R);
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is stored.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// assert!(RuleStore::<R>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule table's [`Stats`], with the kind index's values still pending added to
    /// `pending` (so `reclaim()` brings it to 0).
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.remove(store.add(R));
    /// store.reclaim();
    /// let stats = store.stats();
    /// assert_eq!((stats.len, stats.pending), (0, 0));
    /// ```
    pub fn stats(&self) -> Stats {
        let mut stats = self.rules.stats();
        stats.pending += self.index.stats().pending;
        stats
    }

    /// Bytes of slot pages the store's two tables hold (rule table and kind index), excluding
    /// memory the rules own behind pointers.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.add(R);
    /// assert!(store.allocated_bytes() > 0);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        self.rules.allocated_bytes() + self.index.allocated_bytes()
    }

    /// Releases the slot pages left wholly vacant (see [`SlotMap::shrink_to_fit`]).
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let ids: Vec<_> = (0..1000).map(|_| store.add(R)).collect();
    /// let full = store.allocated_bytes();
    /// ids.into_iter().for_each(|id| { store.remove(id); });
    /// store.reclaim();
    /// store.shrink_to_fit();
    /// assert!(store.allocated_bytes() < full / 10);
    /// ```
    pub fn shrink_to_fit(&self) {
        self.rules.shrink_to_fit();
        self.index.shrink_to_fit();
    }

    /// Returns once every rule removed or replaced before the call (and every index snapshot
    /// it left behind) has been dropped. See [`SlotMap::reclaim`], including what happens when
    /// the calling thread holds a guard.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.remove(store.add(R));
    /// store.reclaim();
    /// assert_eq!(store.stats().pending, 0);
    /// ```
    pub fn reclaim(&self) {
        self.rules.reclaim();
        self.index.reclaim();
    }

    /// Publishes [`stats`](Self::stats) as gauges under `prefix` (`{prefix}_len`,
    /// `{prefix}_capacity`, `{prefix}_vacant`, `{prefix}_retired`, `{prefix}_pending`) and
    /// [`allocated_bytes`](Self::allocated_bytes) as `{prefix}_allocated_bytes`, through the
    /// `metrics` facade (feature `metrics`). Cheap and non-blocking: call it periodically.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// let store = RuleStore::new();
    /// store.add(R);
    /// metrics::with_local_recorder(&recorder, || store.publish_metrics("routes"));
    /// assert!(handle.render().contains("routes_len 1"));
    /// ```
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self, prefix: &str) {
        self.stats().publish_metrics(prefix);
        metrics::gauge!(format!("{prefix}_allocated_bytes")).set(self.allocated_bytes() as f64);
    }

    fn add_member(&self, writer: &mut Writer<R::Kind>, kind: R::Kind, id: RuleId) {
        if let Some(state) = writer.kinds.get_mut(&kind) {
            state.members.push(id);
            let published = self.index.replace(state.node, members_node(&state.members));
            debug_assert!(published.is_ok());
            return;
        }
        let members = vec![id];
        let node = self.index.insert(members_node(&members));
        writer.kinds.insert(kind, KindState { node, members });
        self.publish_directory(writer);
    }

    fn remove_member(&self, writer: &mut Writer<R::Kind>, kind: &R::Kind, id: RuleId) {
        let Some(state) = writer.kinds.get_mut(kind) else { return };
        state.members.retain(|&member| member != id);
        if !state.members.is_empty() {
            let published = self.index.replace(state.node, members_node(&state.members));
            debug_assert!(published.is_ok());
            return;
        }
        // The kind's last rule: drop the kind from the directory first, then its list, so a
        // reader never follows the directory to a list that is gone (it would see an empty
        // kind, which is right, but this keeps the list's key live while referenced).
        if let Some(state) = writer.kinds.remove(kind) {
            self.publish_directory(writer);
            self.index.remove(state.node);
        }
    }

    fn publish_directory(&self, writer: &Writer<R::Kind>) {
        let directory = writer.kinds.iter().map(|(kind, state)| (kind.clone(), state.node)).collect();
        let published = self.index.replace(self.directory, IndexNode::Directory(directory));
        debug_assert!(published.is_ok());
    }
}

fn members_node<Kd>(members: &[RuleId]) -> IndexNode<Kd> {
    IndexNode::Members(members.into())
}

/// A read view of a [`RuleStore`], from [`RuleStore::pin`]: every reference it hands out
/// stays valid while it lives, whatever writers do meanwhile. Taking one is lock-free; hold
/// it across a batch of lookups (a request), not for long (while any guard is alive, removed
/// rules wait to be freed).
///
/// ```
/// use rulestore::{Rule, RuleStore};
/// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
/// let store = RuleStore::new();
/// let id = store.add(R(3));
/// let rules = store.pin();
/// let rule = rules.get(id).unwrap();
/// store.remove(id); // the reference stays valid while `rules` lives
/// assert_eq!(rule.0, 3);
/// ```
pub struct RulesGuard<'s, R: Rule> {
    rules: Guard<'s, RuleId, Entry<R>>,
    index: Guard<'s, DefaultKey, IndexNode<R::Kind>>,
    directory: DefaultKey,
}

impl<R: Rule> fmt::Debug for RulesGuard<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesGuard").finish_non_exhaustive()
    }
}

impl<'s, R: Rule> RulesGuard<'s, R> {
    /// The rule `id`, if it is in the store.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(9));
    /// assert_eq!(store.pin().get(id).map(|r| r.0), Some(9));
    /// ```
    pub fn get(&self, id: RuleId) -> Option<&R> {
        self.rules.get(id).map(|entry| &entry.rule)
    }

    /// Every rule, in slot order (weakly consistent, like
    /// [`epoch_slotmap::Guard::iter`]).
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// store.add(R(1));
    /// store.add(R(2));
    /// assert_eq!(store.pin().iter().map(|(_, r)| r.0 as u32).sum::<u32>(), 3);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &R)> {
        self.rules.iter().map(|(id, entry)| (id, &entry.rule))
    }

    /// The rules of `kind`; O(rules of that kind). Every rule yielded was live and of that
    /// kind when it was looked up, none twice.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// store.add(R(1));
    /// store.add(R(2));
    /// store.add(R(1));
    /// assert_eq!(store.pin().of_kind(&1).count(), 2);
    /// assert_eq!(store.pin().of_kind(&5).count(), 0);
    /// ```
    pub fn of_kind(&self, kind: &R::Kind) -> impl Iterator<Item = (RuleId, &R)> {
        let members: &[RuleId] = match self.index.get(self.directory) {
            Some(IndexNode::Directory(directory)) => {
                match directory.get(kind).and_then(|&n| self.index.get(n)) {
                    Some(IndexNode::Members(members)) => members,
                    _ => &[],
                }
            }
            _ => &[],
        };
        members.iter().filter_map(move |&id| match self.rules.get(id) {
            Some(entry) if entry.kind == *kind => Some((id, &entry.rule)),
            _ => None,
        })
    }

    /// The first rule (in slot order) for which `pred` holds.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(4));
    /// assert_eq!(store.pin().find(|r| r.0 > 3).map(|(i, _)| i), Some(id));
    /// ```
    pub fn find(&self, mut pred: impl FnMut(&R) -> bool) -> Option<(RuleId, &R)> {
        self.iter().find(|(_, rule)| pred(rule))
    }
}
