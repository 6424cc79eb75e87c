//! Rules by id, by kind and by match, on [`epoch_slotmap`], with snapshot reads and atomic
//! pushes.
//!
//! A service keeps its rules (routes, ACL entries, feature flags) in a [`RuleStore`]. A control
//! plane changes them, a whole push at a time ([`RuleStore::transaction`]); request threads
//! [`pin`](RuleStore::pin) the store and look rules up by id, scan them in priority order, or
//! scan one kind. What one [`RulesGuard`] reads is one committed state of the store, the
//! latest when it was pinned, however long it is held: a request never sees half a push, and
//! two lookups in one request never see two rule sets. Readers take no lock and never wait;
//! transactions are serialised among themselves and never wait for a reader. A removed rule's
//! memory is released once no guard can still see it ([`RuleStore::reclaim`] waits for that
//! moment).
//!
//! ```
//! use rulestore::{Rule, RuleStore};
//!
//! struct Route { method: &'static str, prefix: &'static str, priority: i64 }
//! impl Rule for Route {
//!     type Kind = &'static str;
//!     fn kind(&self) -> &'static str { self.method }
//!     fn priority(&self) -> i64 { self.priority }
//! }
//!
//! let store = RuleStore::new();
//! let api = store.add(Route { method: "GET", prefix: "/api", priority: 1 });
//! let before = store.pin();
//!
//! // One push: readers see all of it or none of it.
//! let users = store.transaction(|push| {
//!     push.remove(api);
//!     push.add(Route { method: "POST", prefix: "/upload", priority: 0 });
//!     Ok::<_, ()>(push.add(Route { method: "GET", prefix: "/api/users", priority: 2 }))
//! }).unwrap();
//!
//! assert!(before.get(api).is_some()); // a guard keeps its snapshot
//! assert_eq!(before.version(), 1);
//! let rules = store.pin();
//! assert_eq!(rules.version(), 2);
//! // First match wins: highest priority first, then the oldest rule.
//! let hit = rules.of_kind(&"GET").find(|(_, r)| "/api/users/7".starts_with(r.prefix));
//! assert_eq!(hit.map(|(id, _)| id), Some(users));
//! drop((before, rules));
//!
//! assert_eq!(store.remove_kind(&"GET"), 1);
//! store.reclaim();
//! assert_eq!(store.stats().pending, 0);
//! ```
//!
//! # How it works
//!
//! Every slot of the rule table holds a chain of versions stamped with the commit that made
//! them visible; a guard reads the commit counter once, when it is pinned, and resolves every
//! slot to the version its commit saw (see `versioned.rs` for the protocol and its argument).
//! The order of each kind's rules is a persistent B+tree published the same way, one
//! versioned cell per kind, so a commit copies only the paths it changes: O(log k) per rule for
//! a kind of k rules. What a commit supersedes (old versions of rules and tree paths) is
//! retired to the engine in one batch once the commit is published and dropped after its grace
//! period; a removed rule's slot (its tombstone) is freed by the first write (or `reclaim`)
//! after no guard older than the removal remains. `docs/rulestore.md` has the design and the
//! measurements.
//!
//! # Features
//!
//! - `serde`: `Serialize`/`Deserialize` for [`RuleStore`] when the rule type has them. A
//!   snapshot is the latest committed state (taken with the writer lock held; readers are not
//!   blocked) and keeps rule ids and the order rules were added in: after a restore every id
//!   from the snapshot names the same rule, and ids of rules removed before it stay dead.
//! - `metrics`: `RuleStore::publish_metrics` sets the store's gauges through the
//!   [`metrics`](https://docs.rs/metrics) facade.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

use std::fmt;
use std::hash::Hash;

use epoch_slotmap::{DefaultKey, Guard, SlotMap, Stats};

#[cfg(feature = "serde")]
mod snapshot;
mod tree;
mod versioned;

use tree::{OrderKey, Tree};
use versioned::{Owned, Versioned};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

/// The synchronisation primitives: loom's under `cfg(loom)`, std's otherwise.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard};

    /// The hasher of the store's hash maps: std's randomly keyed one, except under loom. A
    /// loom model must be deterministic (loom replays its recorded choices by position), and
    /// each `RandomState` has its own keys, so a commit would walk its edits (and stage and
    /// install index cells) in an order that changes between executions: loom would then feed
    /// a load the choice recorded for another one and report values no execution can produce.
    #[cfg(not(loom))]
    pub(crate) type BuildHasher = std::collections::hash_map::RandomState;
    #[cfg(loom)]
    pub(crate) type BuildHasher = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
}

/// Every hash map of the store (see `sync::BuildHasher`).
type HashMap<K, V> = std::collections::HashMap<K, V, sync::BuildHasher>;

use sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

/// A rule a [`RuleStore`] can hold: anything with a kind, and optionally a priority.
///
/// ```
/// use rulestore::Rule;
///
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum Action { Allow, Deny }
///
/// struct Acl { action: Action, cidr: &'static str, line: i64 }
/// impl Rule for Acl {
///     type Kind = Action;
///     fn kind(&self) -> Action { self.action }
///     // Lower line numbers match first.
///     fn priority(&self) -> i64 { -self.line }
/// }
/// let deny = Acl { action: Action::Deny, cidr: "10.0.0.0/8", line: 10 };
/// assert_eq!((deny.kind(), deny.priority()), (Action::Deny, -10));
/// ```
pub trait Rule: Send + Sync + 'static {
    /// What rules are grouped by (for [`RulesGuard::of_kind`] and
    /// [`RuleStore::remove_kind`]).
    type Kind: Eq + Hash + Clone + Send + Sync + 'static;
    /// This rule's kind. Called by writers when the rule is stored, replaced or removed (the
    /// store keeps no copy: a rule costs only its own size): it must return equal kinds for
    /// the same rule every time, as a `HashMap` key's hash must not change. A rule that breaks
    /// this is a logic error: it may be listed under a kind it no longer has, or twice by
    /// [`RulesGuard::iter`], and may stay in memory until its old kind is removed; never a
    /// panic or undefined behaviour.
    fn kind(&self) -> Self::Kind;
    /// Where this rule comes in [`RulesGuard::iter`], [`of_kind`](RulesGuard::of_kind) and
    /// [`find`](RulesGuard::find): higher first; among equals, the rule added first comes
    /// first. Called by writers, like [`kind`](Self::kind), and bound by the same rule: the
    /// same priority every time. The default puts every rule at 0, so rules come in the order
    /// they were added.
    fn priority(&self) -> i64 {
        0
    }
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

/// A stored rule and its place in the order rules were added (kept by `replace`).
struct RuleData<R: Rule> {
    order: u64,
    rule: R,
}

impl<R: Rule> RuleData<R> {
    fn new(rule: R, order: u64) -> Self {
        Self { order, rule }
    }

    fn kind(&self) -> R::Kind {
        self.rule.kind()
    }

    /// Where the rule sorts.
    fn key(&self) -> OrderKey {
        OrderKey { priority: self.rule.priority(), order: self.order }
    }
}

/// What a slot of the rule table holds.
type RuleCell<R> = Versioned<RuleData<R>>;

/// Kind -> the key of its tree cell.
type Directory<Kd> = HashMap<Kd, DefaultKey>;

/// What a slot of the index table holds.
enum IndexCell<R: Rule> {
    /// The directory of kinds. One per store, at a fixed key.
    Directory(Versioned<Directory<R::Kind>>),
    /// The order of one kind's rules.
    Order(Versioned<Tree>),
    /// A retired commit's garbage, and word of its grace period (see [`GraceProbe`]).
    Probe(#[expect(dead_code, reason = "held only to be dropped by the engine")] GraceProbe<R>),
}

/// The versions commits replaced (see `versioned.rs`), freed together.
struct Garbage<R: Rule> {
    rules: Vec<Owned<RuleData<R>>>,
    trees: Vec<Owned<Tree>>,
    directories: Vec<Owned<Directory<R::Kind>>>,
}

impl<R: Rule> Default for Garbage<R> {
    fn default() -> Self {
        Self { rules: Vec::new(), trees: Vec::new(), directories: Vec::new() }
    }
}

impl<R: Rule> Garbage<R> {
    fn len(&self) -> usize {
        self.rules.len() + self.trees.len() + self.directories.len()
    }
}

/// What the probes tell the store.
struct Grace {
    /// The latest commit every guard's snapshot has reached, as far as probes have told.
    graced: AtomicU64,
    /// Replaced versions in probes not dropped yet (for `stats`).
    garbage: AtomicUsize,
}

/// Inserted in the index table and removed at once, after the commit `tag` was published:
/// the engine drops it once no guard pinned before the removal is left. Then every guard has
/// a snapshot at least `tag`, so no guard can reach `garbage` (the versions replaced up to
/// `tag`, freed with the probe), and the tombstones of commits up to `tag` can be freed.
struct GraceProbe<R: Rule> {
    grace: std::sync::Arc<Grace>,
    tag: u64,
    garbage: Garbage<R>,
}

impl<R: Rule> Drop for GraceProbe<R> {
    fn drop(&mut self) {
        // The counters first: a rule's `Drop` that panics below (the engine catches it) must
        // not leave them behind.
        // Relaxed: a statistic (`stats`).
        self.grace.garbage.fetch_sub(self.garbage.len(), Ordering::Relaxed);
        // Release: pairs with the Acquire load in `sweep`.
        self.grace.graced.fetch_max(self.tag, Ordering::Release);
        drop(std::mem::take(&mut self.garbage));
    }
}

/// The writers' view of the index (the latest commit), behind the writer mutex.
struct Writer<Kd> {
    kinds: HashMap<Kd, KindState>,
    /// The next rule's place in the order rules are added.
    next_order: u64,
    /// Slots of removed rules and of emptied kinds' trees, with the commit that removed them:
    /// freed once every guard has a snapshot at least that commit.
    tombstones: Vec<(RuleId, u64)>,
    dead_cells: Vec<(DefaultKey, u64)>,
    /// The tag of the probe retired last (0: none yet).
    probe_tag: u64,
}

struct KindState {
    cell: DefaultKey,
    tree: Tree,
}

/// A concurrent rule table: rules by id, by kind, and by predicate, read in snapshots and
/// written in transactions.
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
    rules: SlotMap<RuleId, RuleCell<R>>,
    index: SlotMap<DefaultKey, IndexCell<R>>,
    directory: DefaultKey,
    /// The number of the latest published commit (a guard's snapshot).
    committed: AtomicU64,
    /// Live rules as of the latest commit.
    live: AtomicUsize,
    /// Tombstones not freed yet (for `stats`).
    unswept: AtomicUsize,
    /// What the probes tell (see [`GraceProbe`]).
    grace: std::sync::Arc<Grace>,
    writer: Mutex<Writer<R::Kind>>,
}

impl<R: Rule> Default for RuleStore<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Rule> fmt::Debug for RuleStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleStore")
            .field("len", &self.len())
            .field("version", &self.committed.load(Ordering::SeqCst))
            .field("stats", &self.stats())
            .finish()
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
    /// assert_eq!(store.pin().version(), 0);
    /// ```
    pub fn new() -> Self {
        Self::from_maps(SlotMap::with_key(), SlotMap::new())
    }

    /// An empty store that holds at most `max` rules; [`try_add`](Self::try_add) says when it
    /// is full. A removed rule's slot counts until no guard older than the removal is left
    /// and a later write (or [`reclaim`](Self::reclaim)) has freed it: an add that finds the
    /// store full frees the tombstones every guard has moved past, and fails otherwise. A
    /// freed slot is reusable one grace period later; an add that finds only such slots waits
    /// for that grace period (the engine's limited insert), holding the writer lock, so a
    /// thread must not hold a guard of a full store while it writes to it.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug, PartialEq)] struct R(u8); impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::with_max_capacity(1);
    /// let id = store.try_add(R(1)).unwrap();
    /// assert_eq!(store.try_add(R(2)), Err(R(2)));
    /// store.remove(id);
    /// store.reclaim(); // frees the removed rule's slot once no guard can see it
    /// assert!(store.try_add(R(3)).is_ok());
    /// ```
    pub fn with_max_capacity(max: usize) -> Self {
        Self::from_maps(SlotMap::with_max_capacity_and_key(max), SlotMap::new())
    }

    /// A store whose maps use the engine's minimal grace-period reclaimer (for loom model
    /// checks only).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_grace_reclaimer() -> Self {
        Self::from_maps(SlotMap::with_grace_reclaimer(), SlotMap::with_grace_reclaimer())
    }

    fn from_maps(rules: SlotMap<RuleId, RuleCell<R>>, index: SlotMap<DefaultKey, IndexCell<R>>) -> Self {
        let directory = index.insert(IndexCell::Directory(Versioned::new(0, Some(HashMap::default()))));
        Self {
            rules,
            index,
            directory,
            committed: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            unswept: AtomicUsize::new(0),
            grace: std::sync::Arc::new(Grace { graced: AtomicU64::new(0), garbage: AtomicUsize::new(0) }),
            writer: Mutex::new(Writer {
                kinds: HashMap::default(),
                next_order: 0,
                tombstones: Vec::new(),
                dead_cells: Vec::new(),
                probe_tag: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writer<R::Kind>> {
        // A transaction that panicked before its commit point has undone its staging before
        // the lock was released (`Transaction`'s drop); one that panics after it aborts.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on a [`Transaction`] and commits everything it staged at once when it returns
    /// `Ok`: a guard pinned before the commit sees none of it, one pinned after sees all of
    /// it. When `f` returns `Err` or panics (the panic reaches the caller), nothing is
    /// committed, the rules it staged are dropped (their ids never become live) and the store
    /// stays usable.
    ///
    /// Transactions (and the single-rule methods, one-operation transactions) are serialised
    /// among themselves; readers never wait for them. A transaction that leaves the store as it
    /// found it (no rule replaced or removed, no added rule kept) is not a commit:
    /// [`RulesGuard::version`] counts only the others.
    ///
    /// A commit runs the kinds' `Hash` and `Eq` again, on kinds they already ran on, once it
    /// is published; a panic there (or in a kind's `Drop`) aborts the process rather than
    /// leave half a commit behind.
    ///
    /// Inside `f`, write through the `Transaction`: the store's own write methods (and
    /// `reclaim`) wait for the transaction to end, which never comes (a deadlock). Reads
    /// through [`pin`](Self::pin) see the latest commit, without the staged changes. A commit costs O(log k) per rule changed
    /// in a kind of k rules, plus O(kinds) when a kind appears or disappears.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug)] struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let deny_all = store.add(R(0));
    /// // Replace "deny all" by three allows, atomically.
    /// let ids = store.transaction(|push| {
    ///     push.remove(deny_all);
    ///     Ok::<_, String>((1..=3).map(|k| push.add(R(k))).collect::<Vec<_>>())
    /// }).unwrap();
    /// assert_eq!((store.len(), ids.len()), (3, 3));
    ///
    /// // An error commits nothing.
    /// let failed = store.transaction(|push| {
    ///     push.remove_kind(&1);
    ///     Err::<(), _>("validation failed")
    /// });
    /// assert_eq!(failed, Err("validation failed"));
    /// assert_eq!(store.len(), 3);
    /// ```
    pub fn transaction<T, E>(&self, f: impl FnOnce(&mut Transaction<'_, R>) -> Result<T, E>) -> Result<T, E> {
        let writer = self.lock();
        let commit = self.committed.load(Ordering::Relaxed) + 1;
        // Unreachable in practice (2^63 commits); a version's stamp needs the top bit.
        assert!(commit < versioned::TOMBSTONE, "rulestore: commit numbers exhausted");
        let mut tx = Transaction {
            store: self,
            writer,
            commit,
            added: Vec::new(),
            changes: HashMap::default(),
            committed: false,
        };
        let result = f(&mut tx)?;
        tx.commit();
        Ok(result)
    }

    /// Stores `rule` and returns its id.
    ///
    /// # Panics
    /// When the store is full (a store made with [`with_max_capacity`](Self::with_max_capacity),
    /// or 2^32 slots): use [`try_add`](Self::try_add) to get the rule back instead.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(7));
    /// assert_eq!(store.pin().of_kind(&7).next().map(|(i, _)| i), Some(id));
    /// ```
    pub fn add(&self, rule: R) -> RuleId {
        match self.try_add(rule) {
            Ok(id) => id,
            Err(_) => panic!("rulestore: the store is full"),
        }
    }

    /// Stores `rule` and returns its id, or gives it back when the store is full.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug, PartialEq)] struct R(u8); impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::with_max_capacity(2);
    /// assert!(store.try_add(R(1)).is_ok());
    /// assert!(store.try_add(R(2)).is_ok());
    /// assert_eq!(store.try_add(R(3)), Err(R(3)));
    /// ```
    pub fn try_add(&self, rule: R) -> Result<RuleId, R> {
        self.transaction(|tx| tx.try_add(rule))
    }

    /// Removes the rule `id`; `false` if it was not in the store. No guard pinned after this
    /// returns can see the rule; guards pinned before still do.
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
        self.transaction(|tx| Ok::<_, ()>(tx.remove(id))).unwrap_or(false)
    }

    /// Removes every rule of `kind` and returns how many; O(rules of that kind), in one
    /// commit.
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
        self.transaction(|tx| Ok::<_, ()>(tx.remove_kind(kind))).unwrap_or(0)
    }

    /// Replaces the rule `id`, keeping its id and its place among rules of equal priority;
    /// `Err(rule)` if `id` is not in the store. The kind and the priority may change.
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
        self.transaction(|tx| tx.replace(id, rule))
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
        // Both pins come before `committed` is read; the order does not matter to the argument
        // (the engine's pin orders a thread's previous critical section before the epoch it
        // publishes: see `Claimed::pin` in epoch-slotmap).
        let index = self.index.pin();
        let rules = self.rules.pin();
        // SeqCst, after both pins: the snapshot the versioned cells' argument needs (a guard
        // that reads an older commit than a retirement's is protected from it).
        let version = self.committed.load(Ordering::SeqCst);
        RulesGuard { rules, index, version, directory: self.directory }
    }

    /// How many rules the latest commit holds.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.add(R);
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Whether the latest commit holds no rule.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// assert!(RuleStore::<R>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule table's [`Stats`] with `len` the rules of the latest commit, and in `pending`
    /// everything superseded that is not freed yet: old versions of rules and of the order
    /// trees, and removed rules' slots (so `reclaim()` brings it to 0).
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
        stats.len = self.len();
        // Relaxed: statistics.
        stats.pending += self.index.stats().pending
            + self.unswept.load(Ordering::Relaxed)
            + self.grace.garbage.load(Ordering::Relaxed);
        stats
    }

    /// Bytes of slot pages the store's two tables hold (rules and order trees' cells),
    /// excluding memory behind pointers (the rules' versions and the trees' nodes).
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

    /// Returns once everything removed or replaced before the call (rules, their slots, old
    /// tree paths) has been dropped, waiting for guards other threads hold. Neither readers
    /// nor writers wait for it.
    ///
    /// If the calling thread holds a guard of this store, waiting could never end: then it
    /// only starts the reclamation of what no guard can see and returns (as
    /// [`SlotMap::reclaim`] does).
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
        // Retire a probe tagged with the latest commit, then wait without the writer lock (a
        // writer holding a guard of its own would otherwise wait for us while we wait for its
        // guard): once the index table's reclamation has dropped the probe, every guard has
        // read at least that commit, and the sweep frees every tombstone up to it.
        self.retire_probe(&mut self.lock(), Garbage::default());
        self.index.reclaim();
        self.sweep(&mut self.lock(), Garbage::default());
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

    /// The newest version of rule `id` as the writer sees it: `(kind, key)` if it is live.
    fn committed_rule(&self, id: RuleId) -> Option<(R::Kind, OrderKey)> {
        self.rules.get_with(id, |cell| cell.newest().map(|data| (data.kind(), data.key()))).flatten()
    }

    /// Frees the tombstones of commits every guard has moved past, then retires `garbage`
    /// (versions the latest commit replaced; it is published) in a probe, and a probe too
    /// when tombstones newer than the last probe's remain.
    fn sweep(&self, writer: &mut Writer<R::Kind>, garbage: Garbage<R>) {
        // Acquire: pairs with the probes' Release, after which no guard with an older
        // snapshot is left.
        let graced = self.grace.graced.load(Ordering::Acquire);
        let freed = free_graced(&mut writer.tombstones, graced, |id| {
            let freed = self.rules.remove(id);
            debug_assert!(freed, "a tombstone is removed once");
        });
        // Relaxed: a statistic (`stats`), changed only under the writer lock.
        self.unswept.fetch_sub(freed, Ordering::Relaxed);
        free_graced(&mut writer.dead_cells, graced, |cell| {
            let freed = self.index.remove(cell);
            debug_assert!(freed, "a dead cell is removed once");
        });
        let waiting =
            writer.tombstones.iter().map(|t| t.1).chain(writer.dead_cells.iter().map(|c| c.1)).max();
        if garbage.len() > 0 || waiting.is_some_and(|newest| writer.probe_tag < newest) {
            self.retire_probe(writer, garbage);
        }
    }

    /// Retires a grace probe tagged with the latest commit, carrying `garbage`: once the
    /// engine drops it, every guard has read at least that commit. The writer lock is held and
    /// every commit so far is published, so the retirement follows the publication.
    fn retire_probe(&self, writer: &mut Writer<R::Kind>, garbage: Garbage<R>) {
        // Relaxed: the writer lock orders this load after the writers' own SeqCst stores.
        let latest = self.committed.load(Ordering::Relaxed);
        // Relaxed: a statistic; counted before the probe can be dropped.
        self.grace.garbage.fetch_add(garbage.len(), Ordering::Relaxed);
        let probe = GraceProbe { grace: self.grace.clone(), tag: latest, garbage };
        let cell = self.index.insert(IndexCell::Probe(probe));
        let retired = self.index.remove(cell);
        debug_assert!(retired);
        writer.probe_tag = latest;
    }
}

/// Frees (with `free`) the entries of `list` removed in commits up to `graced`, and returns
/// how many. A drained list gives its memory back (a reload of a big kind fills it at once).
fn free_graced<K: Copy>(list: &mut Vec<(K, u64)>, graced: u64, mut free: impl FnMut(K)) -> usize {
    let before = list.len();
    list.retain(|&(key, removed_in)| {
        let keep = removed_in > graced;
        if !keep {
            free(key);
        }
        keep
    });
    if list.capacity() > 4 * list.len() + 64 {
        list.shrink_to_fit();
    }
    before - list.len()
}

/// One change a transaction stages for a rule that was live before it.
enum Change<R: Rule> {
    /// Boxed: a transaction that removes a whole big kind stages one small entry per rule.
    Replace(Box<RuleData<R>>),
    Remove,
}

/// The staged changes of a [`RuleStore::transaction`]: what it adds, replaces and removes is
/// committed at once when the transaction's closure returns `Ok`. Every method sees the
/// store as the transaction has changed it so far.
///
/// ```
/// # use rulestore::{Rule, RuleStore};
/// # #[derive(Debug)] struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
/// let store = RuleStore::new();
/// store.transaction(|tx| {
///     let id = tx.add(R(1));
///     assert!(tx.replace(id, R(2)).is_ok()); // the id is usable at once
///     assert_eq!(tx.remove_kind(&2), 1);
///     assert!(!tx.remove(id));
///     Ok::<_, ()>(())
/// }).unwrap();
/// assert!(store.is_empty());
/// ```
pub struct Transaction<'s, R: Rule> {
    store: &'s RuleStore<R>,
    writer: MutexGuard<'s, Writer<R::Kind>>,
    /// The number this transaction's commit will have.
    commit: u64,
    /// Rules added, each in a slot of its own born in `commit` (invisible until then).
    added: Vec<RuleId>,
    /// Rules live before the transaction that it replaces or removes.
    changes: HashMap<RuleId, Change<R>>,
    /// Whether the commit was published (then `Drop` must leave the added slots alone).
    committed: bool,
}

impl<R: Rule> fmt::Debug for Transaction<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("commit", &self.commit)
            .field("added", &self.added.len())
            .field("changed", &self.changes.len())
            .finish()
    }
}

impl<R: Rule> Transaction<'_, R> {
    /// Stages `rule` and returns its id, usable at once in this transaction.
    ///
    /// # Panics
    /// When the store is full (see [`RuleStore::add`]); the panic aborts the transaction.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug)] struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let id = store.transaction(|tx| Ok::<_, ()>(tx.add(R))).unwrap();
    /// assert!(store.pin().get(id).is_some());
    /// ```
    pub fn add(&mut self, rule: R) -> RuleId {
        match self.try_add(rule) {
            Ok(id) => id,
            Err(_) => panic!("rulestore: the store is full"),
        }
    }

    /// Stages `rule` and returns its id, or gives it back when the store is full. A staged
    /// rule holds its slot, so the commit cannot fail for lack of room.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug, PartialEq)] struct R(u8); impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::with_max_capacity(1);
    /// let second = store.transaction(|tx| {
    ///     tx.try_add(R(1)).unwrap();
    ///     Ok::<_, ()>(tx.try_add(R(2)))
    /// });
    /// assert_eq!(second, Ok(Err(R(2))));
    /// assert_eq!(store.len(), 1);
    /// ```
    pub fn try_add(&mut self, rule: R) -> Result<RuleId, R> {
        let order = self.writer.next_order;
        let data = RuleData::new(rule, order);
        let cell = Versioned::new(self.commit, Some(data));
        let cell = match self.store.rules.try_insert(cell) {
            Ok(id) => {
                self.writer.next_order += 1;
                self.added.push(id);
                return Ok(id);
            }
            Err(full) => full.into_inner(),
        };
        // Full: free the tombstones every guard has moved past, then try once more. No
        // blocking wait here: the writer lock is held, and a thread holding a guard may be
        // waiting for that lock.
        if !self.writer.tombstones.is_empty() {
            self.store.index.try_reclaim();
            self.store.sweep(&mut self.writer, Garbage::default());
            self.store.rules.try_reclaim();
        }
        match self.store.rules.try_insert(cell) {
            Ok(id) => {
                self.writer.next_order += 1;
                self.added.push(id);
                Ok(id)
            }
            Err(full) => Err(full.into_inner().into_value().expect("staged with a rule").rule),
        }
    }

    /// Stages the removal of rule `id`; `false` if it is not live in this transaction's view.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug)] struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let id = store.add(R);
    /// store.transaction(|tx| {
    ///     assert!(tx.remove(id));
    ///     assert!(!tx.remove(id));
    ///     Ok::<_, ()>(())
    /// }).unwrap();
    /// assert!(store.is_empty());
    /// ```
    pub fn remove(&mut self, id: RuleId) -> bool {
        if let Some(at) = self.added.iter().position(|&a| a == id) {
            self.added.swap_remove(at);
            // Never visible to anyone: its commit is not published.
            let removed = self.store.rules.remove(id);
            debug_assert!(removed);
            return true;
        }
        match self.changes.get_mut(&id) {
            Some(Change::Remove) => false,
            Some(change) => {
                *change = Change::Remove;
                true
            }
            None if self.store.committed_rule(id).is_some() => {
                self.changes.insert(id, Change::Remove);
                true
            }
            None => false,
        }
    }

    /// Stages `rule` in place of rule `id`, which keeps its id and its place among rules of
    /// equal priority; `Err(rule)` if `id` is not live in this transaction's view.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug)] struct R(u8); impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// let id = store.add(R(1));
    /// store.transaction(|tx| tx.replace(id, R(2)).map_err(|_| "gone")).unwrap();
    /// assert_eq!(store.pin().get(id).unwrap().0, 2);
    /// ```
    pub fn replace(&mut self, id: RuleId, rule: R) -> Result<(), R> {
        if self.added.contains(&id) {
            let order = self.store.rules.get_with(id, |cell| cell.newest().map(|data| data.order)).flatten();
            let Some(order) = order else { return Err(rule) };
            // Not visible to anyone yet: replace the staged version outright.
            // (The engine retires the replaced cell; rare enough that its node does not matter.)
            let replaced =
                self.store.rules.replace(id, Versioned::new(self.commit, Some(RuleData::new(rule, order))));
            return replaced.map_err(|cell| cell.into_value().expect("staged with a rule").rule);
        }
        let order = match self.changes.get(&id) {
            Some(Change::Remove) => return Err(rule),
            Some(Change::Replace(data)) => data.order,
            None => match self.store.committed_rule(id) {
                Some((_, key)) => key.order,
                None => return Err(rule),
            },
        };
        self.changes.insert(id, Change::Replace(Box::new(RuleData::new(rule, order))));
        Ok(())
    }

    /// Stages the removal of every rule of `kind` in this transaction's view and returns how
    /// many; O(rules of that kind + rules this transaction touched).
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # #[derive(Debug)] struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// store.add(R(1));
    /// let n = store.transaction(|tx| {
    ///     tx.add(R(1));
    ///     Ok::<_, ()>(tx.remove_kind(&1))
    /// }).unwrap();
    /// assert_eq!((n, store.len()), (2, 0));
    /// ```
    pub fn remove_kind(&mut self, kind: &R::Kind) -> usize {
        let mut removed = 0;
        // Rules of that kind in the latest commit, unless this transaction moved them away.
        let members: Vec<RuleId> = self
            .writer
            .kinds
            .get(kind)
            .map(|state| state.tree.iter().map(|(_, id)| id).collect())
            .unwrap_or_default();
        for id in members {
            match self.changes.get(&id) {
                None => {
                    self.changes.insert(id, Change::Remove);
                    removed += 1;
                }
                Some(Change::Replace(data)) if data.kind() == *kind => {
                    self.changes.insert(id, Change::Remove);
                    removed += 1;
                }
                Some(_) => {}
            }
        }
        // Rules this transaction replaced into that kind.
        for change in self.changes.values_mut() {
            if matches!(change, Change::Replace(data) if data.kind() == *kind) {
                *change = Change::Remove;
                removed += 1;
            }
        }
        // Rules this transaction added with that kind.
        let store = self.store;
        self.added.retain(|&id| {
            let of_kind = store.rules.get_with(id, |cell| cell.newest().is_some_and(|d| d.kind() == *kind))
                == Some(true);
            if of_kind {
                store.rules.remove(id);
                removed += 1;
            }
            !of_kind
        });
        removed
    }

    /// Publishes everything staged as one commit (see `versioned.rs` for the protocol).
    fn commit(mut self) {
        let store = self.store;
        let commit = self.commit;
        let changes = std::mem::take(&mut self.changes);
        // Kept in `self.added` too: a panic before the commit point must still free them.
        let added = self.added.clone();
        if changes.is_empty() && added.is_empty() {
            self.committed = true;
            return;
        }

        // Prepare (may run user code: kinds' Clone, Hash and Eq): the new trees, and the
        // rule versions to install. Nothing shared changes here.
        let mut edits: HashMap<R::Kind, Tree> = HashMap::default();
        let mut installs: Vec<(RuleId, Option<RuleData<R>>)> = Vec::with_capacity(changes.len());
        let mut removed = 0;
        for (id, change) in changes {
            let Some((old_kind, old_key)) = store.committed_rule(id) else { continue };
            let payload = match change {
                // (A tree misses a live rule only when its kind or priority changed, which
                // `Rule` documents as a logic error: the stale entry stays.)
                Change::Replace(data) => {
                    let (kind, key) = (data.kind(), data.key());
                    // Same kind, same place: the trees do not change.
                    if kind != old_kind || key != old_key {
                        tree_of(&self.writer, &mut edits, &old_kind).remove(&old_key);
                        tree_of(&self.writer, &mut edits, &kind).insert(key, id);
                    }
                    Some(*data)
                }
                Change::Remove => {
                    tree_of(&self.writer, &mut edits, &old_kind).remove(&old_key);
                    removed += 1;
                    None
                }
            };
            installs.push((id, payload));
        }
        let mut adds_by_kind: HashMap<R::Kind, Vec<(OrderKey, RuleId)>> = HashMap::default();
        for &id in &added {
            let (kind, key) = store.committed_rule(id).expect("an added rule's slot stays until its commit");
            adds_by_kind.entry(kind).or_default().push((key, id));
        }
        for (kind, adds) in adds_by_kind {
            tree_of(&self.writer, &mut edits, &kind).insert_many(adds);
        }
        // Kinds that appear (a new cell, born in this commit) or become empty (their cell is
        // freed once no guard can reach it through an older directory).
        let mut new_kinds: Vec<(R::Kind, Tree)> = Vec::new();
        let mut emptied: Vec<R::Kind> = Vec::new();
        let mut tree_versions: Vec<(R::Kind, DefaultKey, Tree)> = Vec::new();
        for (kind, tree) in edits {
            match self.writer.kinds.get(&kind) {
                Some(_) if tree.len() == 0 => emptied.push(kind),
                Some(state) => tree_versions.push((kind.clone(), state.cell, tree)),
                None if tree.len() == 0 => {}
                None => new_kinds.push((kind, tree)),
            }
        }
        let directory_changes = !new_kinds.is_empty() || !emptied.is_empty();
        let mut new_cells: Vec<(R::Kind, KindState)> = Vec::with_capacity(new_kinds.len());
        // New kinds' cells are born in this commit, invisible until it is published; if the
        // directory's construction below panics (a kind's Clone, Hash or Eq), they go.
        let mut unpublished = RemoveOnUnwind { index: &store.index, cells: Vec::new() };
        for (kind, tree) in new_kinds {
            let cell = store.index.insert(IndexCell::Order(Versioned::new(commit, Some(tree.clone()))));
            unpublished.cells.push(cell);
            new_cells.push((kind, KindState { cell, tree }));
        }
        let directory = directory_changes.then(|| {
            let mut directory: HashMap<R::Kind, DefaultKey> =
                self.writer.kinds.iter().map(|(kind, state)| (kind.clone(), state.cell)).collect();
            for kind in &emptied {
                directory.remove(kind);
            }
            directory.extend(new_cells.iter().map(|(kind, state)| (kind.clone(), state.cell)));
            directory
        });

        // Install, publish, then update the writer's view and retire what was replaced. From
        // the first install on, an unwind would free versions a guard can already reach (and
        // publish half a commit): a panic here aborts the process. Only internal invariant
        // failures and the kinds' Hash, Eq and Drop in the writer's view update (user code
        // that already ran on the same kinds above) can panic here.
        unpublished.cells.clear();
        let abort_on_unwind = AbortOnUnwind;
        let mut garbage = Garbage::default();
        for (_, cell, tree) in &tree_versions {
            let replaced = store.index.get_with(*cell, |current| match current {
                IndexCell::Order(order) => order.install(commit, Some(tree.clone())),
                _ => unreachable!("cells keep their kind"),
            });
            garbage.trees.push(replaced.expect("index cells stay while the writer lock is held"));
        }
        if let Some(directory) = directory {
            let replaced = store.index.get_with(store.directory, |current| match current {
                IndexCell::Directory(cell) => cell.install(commit, Some(directory)),
                _ => unreachable!("cells keep their kind"),
            });
            garbage.directories.push(replaced.expect("the directory stays"));
        }
        for (id, payload) in installs {
            let tombstone = payload.is_none();
            let replaced = store.rules.get_with(id, |cell| cell.install(commit, payload));
            garbage.rules.push(replaced.expect("a live rule's slot stays while the writer lock is held"));
            if tombstone {
                self.writer.tombstones.push((id, commit));
                // Relaxed: a statistic (`stats`), changed only under the writer lock.
                store.unswept.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The commit point. SeqCst: pairs with the SeqCst load in `pin` (see versioned.rs).
        store.committed.store(commit, Ordering::SeqCst);
        // The staged adds are published: an abort must not free them any more.
        self.committed = true;
        // Relaxed load: only writers store `live`, under the writer lock.
        let live = store.live.load(Ordering::Relaxed) + added.len() - removed;
        store.live.store(live, Ordering::SeqCst);

        // The writer's view follows (kinds' Hash and Eq run again here, on kinds they already
        // ran on; the tables are consistent whatever happens now).
        for (kind, _, tree) in tree_versions {
            if let Some(state) = self.writer.kinds.get_mut(&kind) {
                state.tree = tree;
            }
        }
        for kind in emptied {
            if let Some(state) = self.writer.kinds.remove(&kind) {
                self.writer.dead_cells.push((state.cell, commit));
            }
        }
        self.writer.kinds.extend(new_cells);
        let writer = &mut *self.writer;
        // Still under the abort guard: until the probe holds it, an unwind would free the
        // garbage at once, under guards that can still reach it.
        store.sweep(writer, garbage);
        std::mem::forget(abort_on_unwind);
        // Hand this commit's superseded versions (and the tree paths only they held) to the
        // reclaimer now rather than when a batch fills: what a push supersedes is freed one
        // grace period later, not a few pushes later.
        // (Not under loom: it only hands values over sooner, through the engine's own
        // protocol, and crossbeam's collection multiplies a model's interleavings.)
        if !cfg!(loom) {
            store.rules.try_reclaim();
            store.index.try_reclaim();
        }
    }
}

/// The tree `kind` has so far in a commit's `edits` (its latest committed tree at first).
fn tree_of<'e, Kd: Eq + Hash + Clone>(
    writer: &Writer<Kd>,
    edits: &'e mut HashMap<Kd, Tree>,
    kind: &Kd,
) -> &'e mut Tree {
    if !edits.contains_key(kind) {
        let tree = writer.kinds.get(kind).map(|state| state.tree.clone()).unwrap_or_default();
        edits.insert(kind.clone(), tree);
    }
    edits.get_mut(kind).expect("inserted above")
}

/// Removes index cells inserted for a commit that will not be published (dropped while
/// `cells` is not empty: an unwind before the commit point).
struct RemoveOnUnwind<'i, R: Rule> {
    index: &'i SlotMap<DefaultKey, IndexCell<R>>,
    cells: Vec<DefaultKey>,
}

impl<R: Rule> Drop for RemoveOnUnwind<'_, R> {
    fn drop(&mut self) {
        for &cell in &self.cells {
            self.index.remove(cell);
        }
    }
}

/// Aborts the process if dropped during an unwind (see `Transaction::commit`); forgotten at
/// the end of the section it guards.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::process::abort();
        }
    }
}

impl<R: Rule> Drop for Transaction<'_, R> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Aborted (an `Err` or a panic): the staged adds were never visible; free their slots.
        for &id in &self.added {
            self.store.rules.remove(id);
        }
    }
}

/// A read view of a [`RuleStore`], from [`RuleStore::pin`]: a snapshot of the latest commit
/// at the time of `pin`. Everything read through it (and every reference it hands out)
/// reflects that one commit, whatever writers do meanwhile. Taking one is lock-free; hold it
/// across a request, not for long (while a guard lives, what was removed after its pin stays
/// in memory).
///
/// ```
/// use rulestore::{Rule, RuleStore};
/// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
/// let store = RuleStore::new();
/// let id = store.add(R(3));
/// let rules = store.pin();
/// store.remove(id);
/// store.add(R(3));
/// // Still the snapshot of the pin: the removed rule, and not the new one.
/// assert_eq!(rules.get(id).map(|r| r.0), Some(3));
/// assert_eq!(rules.of_kind(&3).count(), 1);
/// assert_eq!(store.pin().get(id).map(|r| r.0), None);
/// ```
pub struct RulesGuard<'s, R: Rule> {
    rules: Guard<'s, RuleId, RuleCell<R>>,
    index: Guard<'s, DefaultKey, IndexCell<R>>,
    version: u64,
    directory: DefaultKey,
}

impl<R: Rule> fmt::Debug for RulesGuard<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesGuard").field("version", &self.version).finish_non_exhaustive()
    }
}

impl<'s, R: Rule> RulesGuard<'s, R> {
    /// The number of commits this view includes (0 for a new store): which rule set a
    /// request used.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R; impl Rule for R { type Kind = (); fn kind(&self) {} }
    /// let store = RuleStore::new();
    /// store.add(R);
    /// store.transaction(|tx| { tx.add(R); tx.add(R); Ok::<_, ()>(()) }).unwrap();
    /// assert_eq!(store.pin().version(), 2);
    /// ```
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The rule `id`, if this view holds it.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(u8); impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
    /// let store = RuleStore::new();
    /// let id = store.add(R(9));
    /// assert_eq!(store.pin().get(id).map(|r| r.0), Some(9));
    /// ```
    pub fn get(&self, id: RuleId) -> Option<&R> {
        self.data(id).map(|data| &data.rule)
    }

    fn data(&self, id: RuleId) -> Option<&RuleData<R>> {
        let cell = self.rules.get(id)?;
        // SAFETY: read under `self.rules`, with `self.index` held too, both pinned before
        // `self.version` was loaded (`pin`); the writer follows the commit protocol
        // (`Transaction::commit`).
        unsafe { cell.at(self.version) }
    }

    fn tree(&self, cell: DefaultKey) -> Option<&Tree> {
        match self.index.get(cell)? {
            // SAFETY: as in `data`, with `self.index`.
            IndexCell::Order(cell) => unsafe { cell.at(self.version) },
            _ => None,
        }
    }

    fn ordered<'g>(
        &'g self,
        entries: impl Iterator<Item = (OrderKey, RuleId)> + 'g,
    ) -> impl Iterator<Item = (RuleId, &'g R)> + 'g {
        // Every id in a tree of this snapshot is live in it; the filter only guards the
        // invariant.
        entries.filter_map(move |(_, id)| self.get(id).map(|rule| (id, rule)))
    }

    fn directory(&self) -> Option<&HashMap<R::Kind, DefaultKey>> {
        match self.index.get(self.directory)? {
            // SAFETY: as in `data`, with `self.index`.
            IndexCell::Directory(directory) => unsafe { directory.at(self.version) },
            _ => None,
        }
    }

    /// Every rule, highest priority first, then in the order they were added (a replaced
    /// rule keeps its place). A merge of the kinds' orders: O(log kinds) per rule yielded,
    /// plus O(kinds) to start.
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(i64); impl Rule for R { type Kind = (); fn kind(&self) {} fn priority(&self) -> i64 { self.0 } }
    /// let store = RuleStore::new();
    /// store.add(R(1));
    /// store.add(R(5));
    /// store.add(R(1));
    /// assert_eq!(store.pin().iter().map(|(_, r)| r.0).collect::<Vec<_>>(), [5, 1, 1]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &R)> {
        let trees = self.directory().into_iter().flat_map(|d| d.values()).filter_map(|&cell| self.tree(cell));
        self.ordered(tree::Merge::new(trees))
    }

    /// The rules of `kind`, in the order of [`iter`](Self::iter). O(1) per rule yielded,
    /// plus one directory lookup.
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
        let tree = self.directory().and_then(|d| d.get(kind)).and_then(|&cell| self.tree(cell));
        self.ordered(tree.into_iter().flat_map(Tree::iter))
    }

    /// The first rule in the order of [`iter`](Self::iter) for which `pred` holds: with
    /// priorities, "first match wins".
    ///
    /// ```
    /// # use rulestore::{Rule, RuleStore};
    /// # struct R(&'static str, i64);
    /// # impl Rule for R { type Kind = (); fn kind(&self) {} fn priority(&self) -> i64 { self.1 } }
    /// let store = RuleStore::new();
    /// store.add(R("/", 0));
    /// let api = store.add(R("/api", 10));
    /// let hit = store.pin().find(|r| "/api/v1".starts_with(r.0)).map(|(i, _)| i);
    /// assert_eq!(hit, Some(api));
    /// ```
    pub fn find(&self, mut pred: impl FnMut(&R) -> bool) -> Option<(RuleId, &R)> {
        self.iter().find(|(_, rule)| pred(rule))
    }
}
