//! Snapshots (the `serde` feature): a store serializes its rule table as one point-in-time
//! snapshot and deserializes into a store where every rule id from the snapshot is valid
//! again, with the same rule.
//!
//! Invariant: the snapshot is the rule table alone (an `epoch_slotmap` snapshot of the rules,
//! each serialized as the rule itself); the kind index is derived data and is rebuilt from
//! the table, with every rule filed under the kind `Rule::kind` gives on restore.

use std::collections::HashMap;

use epoch_slotmap::SlotMap;
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

use crate::{Entry, IndexNode, KindState, Rule, RuleId, RuleStore, Writer, members_node};

impl<R: Rule + Serialize> Serialize for Entry<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rule.serialize(serializer)
    }
}

impl<'de, R: Rule + Deserialize<'de>> Deserialize<'de> for Entry<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rule = R::deserialize(deserializer)?;
        Ok(Entry { kind: rule.kind(), rule })
    }
}

/// Serializes every rule with its id, as of one moment: writers wait while it runs (it holds
/// the writer lock), readers do not.
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
        let rules = SlotMap::<RuleId, Entry<R>>::deserialize(deserializer)?;
        Ok(RuleStore::from_table(rules))
    }
}

impl<R: Rule> RuleStore<R> {
    /// A store around a rule table nobody else can reach yet, with its kind index built.
    fn from_table(rules: SlotMap<RuleId, Entry<R>>) -> Self {
        let mut by_kind: HashMap<R::Kind, Vec<RuleId>> = HashMap::new();
        for (id, entry) in rules.pin().iter() {
            by_kind.entry(entry.kind.clone()).or_default().push(id);
        }
        let index = SlotMap::new();
        let kinds: HashMap<R::Kind, KindState> = by_kind
            .into_iter()
            .map(|(kind, members)| (kind, KindState { node: index.insert(members_node(&members)), members }))
            .collect();
        let directory = kinds.iter().map(|(kind, state)| (kind.clone(), state.node)).collect();
        let directory = index.insert(IndexNode::Directory(directory));
        Self { rules, index, directory, writer: crate::Mutex::new(Writer { kinds }) }
    }
}
