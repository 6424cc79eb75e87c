//! Snapshots (the `serde` feature): a store serializes its latest commit as one snapshot and
//! deserializes into a store where every rule id from the snapshot is valid again, with the
//! same rule in the same place of the order.
//!
//! Invariant: the snapshot is the rule table alone (an `epoch_slotmap` snapshot, each slot's
//! value serialized as `[order, rule]`, or as `null` for a removed rule whose slot is not
//! freed yet); the order trees are derived data, rebuilt from the table on restore with each
//! rule's kind and priority as `Rule` gives them then.

use epoch_slotmap::SlotMap;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde::ser::{Serialize, Serializer};

use crate::tree::{OrderKey, Tree};
use crate::{HashMap, IndexCell, KindState, Rule, RuleCell, RuleData, RuleId, RuleStore, Versioned};

impl<R: Rule + Serialize> Serialize for Versioned<RuleData<R>> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.newest().map(|data| (data.order, &data.rule)).serialize(serializer)
    }
}

impl<'de, R: Rule + Deserialize<'de>> Deserialize<'de> for Versioned<RuleData<R>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Option::<(u64, R)>::deserialize(deserializer)?;
        Ok(Versioned::new(0, stored.map(|(order, rule)| RuleData::new(rule, order))))
    }
}

/// Serializes every rule with its id and its place in the order rules were added, as of the
/// latest commit: writers wait while it runs (it holds the writer lock), readers do not.
///
/// ```
/// use rulestore::{Rule, RuleStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Flag { name: String, on: bool }
/// impl Rule for Flag {
///     type Kind = bool;
///     fn kind(&self) -> bool { self.on }
/// }
///
/// let store = RuleStore::new();
/// let beta = store.add(Flag { name: "beta".into(), on: true });
/// let old = store.add(Flag { name: "old".into(), on: false });
/// store.remove(old);
/// let json = serde_json::to_string(&store).unwrap();
///
/// let restored: RuleStore<Flag> = serde_json::from_str(&json).unwrap();
/// let rules = restored.pin();
/// assert_eq!(rules.get(beta).unwrap().name, "beta");
/// assert!(rules.get(old).is_none());
/// assert_eq!(rules.of_kind(&true).count(), 1);
/// ```
impl<R: Rule + Serialize> Serialize for RuleStore<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let _writers_wait = self.lock();
        self.rules.serialize(serializer)
    }
}

/// Restores a snapshot made by the `Serialize` impl and rebuilds the kind index. A malformed
/// snapshot is an error (see `epoch_slotmap::SlotMap`'s `Deserialize`).
///
/// ```
/// use rulestore::{Rule, RuleStore};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct R(u8);
/// # impl Rule for R { type Kind = u8; fn kind(&self) -> u8 { self.0 } }
/// let store = RuleStore::new();
/// let id = store.add(R(3));
/// let bytes = postcard::to_stdvec(&store).unwrap();
/// let restored: RuleStore<R> = postcard::from_bytes(&bytes).unwrap();
/// assert_eq!(restored.pin().of_kind(&3).map(|(i, _)| i).collect::<Vec<_>>(), [id]);
/// assert!(postcard::from_bytes::<RuleStore<R>>(&bytes[..bytes.len() / 2]).is_err());
/// ```
impl<'de, R: Rule + Deserialize<'de>> Deserialize<'de> for RuleStore<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rules = SlotMap::<RuleId, RuleCell<R>>::deserialize(deserializer)?;
        RuleStore::from_table(rules).map_err(D::Error::custom)
    }
}

impl<R: Rule> RuleStore<R> {
    /// A store around a restored rule table nobody else can reach yet: removed rules' slots
    /// freed (their ids stay dead), the order trees built. Two rules with one place in the
    /// order are an error.
    fn from_table(rules: SlotMap<RuleId, RuleCell<R>>) -> Result<Self, String> {
        let mut by_kind: HashMap<R::Kind, Vec<(OrderKey, RuleId)>> = HashMap::default();
        let mut all = Vec::new();
        let mut removed = Vec::new();
        let mut next_order = 0;
        for (id, cell) in rules.pin().iter() {
            match cell.newest() {
                Some(data) => {
                    by_kind.entry(data.kind()).or_default().push((data.key(), id));
                    all.push(data.order);
                    // A place at u64::MAX leaves none for the next rule: an error below.
                    next_order = next_order.max(data.order.saturating_add(1));
                }
                None => removed.push(id),
            }
        }
        for id in removed {
            rules.remove(id);
        }
        rules.reclaim();
        let live = all.len();
        let sorted = |mut entries: Vec<(OrderKey, RuleId)>| {
            entries.sort_unstable_by_key(|&(key, _)| key);
            Tree::from_sorted(entries)
        };
        let mut orders = all;
        orders.sort_unstable();
        if orders.last() == Some(&u64::MAX) {
            return Err("a rule's place in the order is u64::MAX: no place is left after it".into());
        }
        if let Some(pair) = orders.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("two rules have the same place in the order ({})", pair[0]));
        }
        let store = Self::from_maps(rules, SlotMap::new());
        let kinds: HashMap<R::Kind, KindState> = by_kind
            .into_iter()
            .map(|(kind, entries)| {
                let tree = sorted(entries);
                let cell = store.index.insert(IndexCell::Order(Versioned::new(0, Some(tree.clone()))));
                (kind, KindState { cell, tree })
            })
            .collect();
        let directory = kinds.iter().map(|(kind, state)| (kind.clone(), state.cell)).collect();
        let replaced =
            store.index.replace(store.directory, IndexCell::Directory(Versioned::new(0, Some(directory))));
        debug_assert!(replaced.is_ok());
        store.index.reclaim();
        store.live.store(live, crate::sync::Ordering::Relaxed);
        {
            let mut writer = store.lock();
            writer.kinds = kinds;
            writer.next_order = next_order;
        }
        Ok(store)
    }
}
