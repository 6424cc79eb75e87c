//! The order of a kind's rules (and of all rules): a persistent B+tree of `(OrderKey, RuleId)`
//! entries, shared between versions by path copying.
//!
//! Invariant: a [`Tree`] reachable from a published version is never modified. A writer edits
//! its own clone: `Arc::make_mut` copies each node on the path it changes that is still shared
//! (with a published version), and changes in place the nodes only its clone holds (those it
//! copied earlier in the same commit). So one insert or remove copies at most `height` nodes
//! of at most `MAX_ENTRIES` entries, and a commit of n changes to one tree costs
//! O(n log k), with its copies shared by every later change of the same commit.
//!
//! Shape: a branch lists its children with a lower bound each; every key of child `i` is at
//! least bound `i` (child 0's bound is never read) and below bound `i + 1`; the bounds of
//! children 1.. ascend. Removing keys never raises a bound, so stale bounds stay lower bounds. Nodes are not merged when they shrink
//! (empty ones are dropped); instead, a tree whose height exceeds what its length needs with
//! full nodes by more than `SLACK` levels is rebuilt three quarters full (at most one level
//! above full nodes, so within `SLACK`), which keeps the height (and the iterator's fixed
//! stack) bounded by the length: at most `MAX_HEIGHT`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::RuleId;

/// Entries per node at most (small under loom and Miri, so models and Miri's scaled-down tests
/// build branches and split them).
const MAX_ENTRIES: usize = if cfg!(any(loom, miri)) { 4 } else { 32 };

/// Levels a tree may exceed its compact height by before it is rebuilt.
const SLACK: usize = 3;

/// The height a tree can reach: compact height for `usize::MAX` entries, plus `SLACK`, plus
/// the one level an insert may add before the check.
const MAX_HEIGHT: usize = compact_height(usize::MAX) + SLACK + 1;

/// Where a rule sorts: higher priority first, then older (smaller `order`) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderKey {
    pub(crate) priority: i64,
    pub(crate) order: u64,
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other.priority.cmp(&self.priority).then(self.order.cmp(&other.order))
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

type Entry = (OrderKey, RuleId);

#[derive(Clone)]
enum Node {
    Leaf(Vec<Entry>),
    Branch(Vec<(OrderKey, Arc<Node>)>),
}

/// A persistent ordered set of rules (see the module header). Cloning is O(1).
#[derive(Clone, Default)]
pub(crate) struct Tree {
    root: Option<Arc<Node>>,
    len: usize,
    height: usize,
}

/// The child of `children` whose range holds `key`: the last one whose bound is at most
/// `key`, child 0 standing for everything below child 1's bound (its own bound is not read:
/// a split of child 0 can put a smaller bound after it).
fn child_for(children: &[(OrderKey, Arc<Node>)], key: &OrderKey) -> usize {
    children.get(1..).map_or(0, |rest| rest.partition_point(|(bound, _)| bound <= key))
}

/// Splits an overfull node's entries in two halves; returns the right half's first key and
/// the right half.
fn split_half<T>(entries: &mut Vec<(OrderKey, T)>) -> (OrderKey, Vec<(OrderKey, T)>) {
    let half = entries.len() / 2;
    split_at(entries, half)
}

fn split_at<T>(entries: &mut Vec<(OrderKey, T)>, at: usize) -> (OrderKey, Vec<(OrderKey, T)>) {
    let right = entries.split_off(at);
    entries.shrink_to_fit();
    (right[0].0, right)
}

fn insert_into(node: &mut Arc<Node>, key: OrderKey, id: RuleId) -> Option<(OrderKey, Arc<Node>)> {
    match Arc::make_mut(node) {
        Node::Leaf(entries) => {
            let at = entries.partition_point(|(k, _)| *k < key);
            // Exactly one more: a node's buffer grows by one entry, never doubles (nodes are
            // copied often, and a copy is exact anyway).
            entries.reserve_exact(1);
            entries.insert(at, (key, id));
            (entries.len() > MAX_ENTRIES).then(|| {
                // Appending (rules added in order at one priority) leaves the left node full
                // instead of half full.
                let (bound, right) =
                    if at == MAX_ENTRIES { split_at(entries, MAX_ENTRIES) } else { split_half(entries) };
                (bound, Arc::new(Node::Leaf(right)))
            })
        }
        Node::Branch(children) => {
            let at = child_for(children, &key);
            let (bound, right) = insert_into(&mut children[at].1, key, id)?;
            children.reserve_exact(1);
            children.insert(at + 1, (bound, right));
            (children.len() > MAX_ENTRIES).then(|| {
                let (bound, right) = split_half(children);
                (bound, Arc::new(Node::Branch(right)))
            })
        }
    }
}

/// Removes `key`; returns `None` if it is absent, else whether `node` is now empty.
fn remove_from(node: &mut Arc<Node>, key: &OrderKey) -> Option<bool> {
    // Look before copying: a miss must not copy a shared path.
    match &**node {
        Node::Leaf(entries) => {
            let at = entries.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
            let Node::Leaf(entries) = Arc::make_mut(node) else { unreachable!("checked above") };
            entries.remove(at);
            Some(entries.is_empty())
        }
        Node::Branch(children) => {
            let at = child_for(children, key);
            if !contains(&children[at].1, key) {
                return None;
            }
            let Node::Branch(children) = Arc::make_mut(node) else { unreachable!("checked above") };
            if remove_from(&mut children[at].1, key)? {
                children.remove(at);
            }
            Some(children.is_empty())
        }
    }
}

fn contains(mut node: &Node, key: &OrderKey) -> bool {
    loop {
        match node {
            Node::Leaf(entries) => return entries.binary_search_by(|(k, _)| k.cmp(key)).is_ok(),
            Node::Branch(children) => node = &children[child_for(children, key)].1,
        }
    }
}

/// The height of a tree of `len` entries with full nodes.
const fn compact_height(len: usize) -> usize {
    let (mut height, mut reach) = (1, MAX_ENTRIES);
    while reach < len {
        reach = reach.saturating_mul(MAX_ENTRIES);
        height += 1;
    }
    height
}

impl Tree {
    /// How many entries the tree holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `key` (not present yet) for rule `id`.
    pub(crate) fn insert(&mut self, key: OrderKey, id: RuleId) {
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(Node::Leaf(vec![(key, id)])));
            self.len = 1;
            self.height = 1;
            return;
        };
        if let Some((bound, right)) = insert_into(root, key, id) {
            let left = self.root.take().expect("checked above");
            self.root = Some(Arc::new(Node::Branch(vec![(bound, left), (bound, right)])));
            self.height += 1;
        }
        self.len += 1;
        self.keep_height_bounded();
    }

    /// Adds `entries` (keys not present yet, in any order). Many at once (a bulk load, a
    /// kind reloaded) rebuild the tree in O(k + m log m), three quarters full, instead of m
    /// path copies.
    pub(crate) fn insert_many(&mut self, mut entries: Vec<Entry>) {
        if entries.len() < MAX_ENTRIES || entries.len() < self.len / 2 {
            for (key, id) in entries {
                self.insert(key, id);
            }
            return;
        }
        entries.sort_unstable_by_key(|&(key, _)| key);
        let mut merged = Vec::with_capacity(self.len + entries.len());
        let mut old = self.iter().peekable();
        for entry in entries {
            while let Some(&before) = old.peek().filter(|(key, _)| *key < entry.0) {
                merged.push(before);
                old.next();
            }
            merged.push(entry);
        }
        merged.extend(old);
        *self = Self::from_sorted(merged);
    }

    /// Removes `key`; false if it is absent.
    pub(crate) fn remove(&mut self, key: &OrderKey) -> bool {
        let Some(root) = &mut self.root else { return false };
        let Some(empty) = remove_from(root, key) else { return false };
        self.len -= 1;
        if empty {
            self.root = None;
            self.height = 0;
        }
        // A root branch with one child is that child.
        while let Some(Node::Branch(children)) = self.root.as_deref() {
            if children.len() != 1 {
                break;
            }
            self.root = Some(children[0].1.clone());
            self.height -= 1;
        }
        self.keep_height_bounded();
        true
    }

    /// Rebuilds the tree with full nodes when removals left it more than `SLACK` levels
    /// taller than its length needs (amortized: each level of excess took `MAX_ENTRIES / 2`
    /// times more inserts than the level below).
    fn keep_height_bounded(&mut self) {
        if self.height <= compact_height(self.len) + SLACK {
            return;
        }
        let entries: Vec<Entry> = self.iter().collect();
        *self = Self::from_sorted(entries);
    }

    /// A tree of `entries`, which are sorted and distinct.
    pub(crate) fn from_sorted(entries: Vec<Entry>) -> Self {
        let len = entries.len();
        if len == 0 {
            return Self::default();
        }
        // Three quarters full: room for later inserts before a node splits in two halves.
        let fill = (MAX_ENTRIES * 3 / 4).max(2);
        let mut level: Vec<(OrderKey, Arc<Node>)> =
            entries.chunks(fill).map(|chunk| (chunk[0].0, Arc::new(Node::Leaf(chunk.to_vec())))).collect();
        let mut height = 1;
        while level.len() > 1 {
            level = level
                .chunks(fill)
                .map(|chunk| (chunk[0].0, Arc::new(Node::Branch(chunk.to_vec()))))
                .collect();
            height += 1;
        }
        let root = level.pop().map(|(_, node)| node);
        Self { root, len, height }
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> TreeIter<'_> {
        let mut iter = TreeIter { stack: [(None, 0); MAX_HEIGHT], depth: 0, remaining: self.len };
        if let Some(root) = &self.root {
            iter.stack[0] = (Some(&**root), 0);
            iter.depth = 1;
        }
        iter
    }
}

/// An in-order walk of a [`Tree`], with a fixed stack (the height is bounded, see the module
/// header).
pub(crate) struct TreeIter<'t> {
    stack: [(Option<&'t Node>, usize); MAX_HEIGHT],
    depth: usize,
    remaining: usize,
}

impl Iterator for TreeIter<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while self.depth > 0 {
            let (node, at) = &mut self.stack[self.depth - 1];
            match node.expect("frames below depth are set") {
                Node::Leaf(entries) => {
                    if let Some(&entry) = entries.get(*at) {
                        *at += 1;
                        self.remaining -= 1;
                        return Some(entry);
                    }
                    self.depth -= 1;
                }
                Node::Branch(children) => {
                    let Some((_, child)) = children.get(*at) else {
                        self.depth -= 1;
                        continue;
                    };
                    *at += 1;
                    self.stack[self.depth] = (Some(&**child), 0);
                    self.depth += 1;
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// The entries of several trees with distinct keys, in one order (a k-way merge: O(log k)
/// per entry for k trees).
pub(crate) struct Merge<'t> {
    iters: Vec<TreeIter<'t>>,
    /// The next entry of each iterator that has one, smallest on top.
    heads: BinaryHeap<Reverse<(OrderKey, usize)>>,
    ids: Vec<RuleId>,
}

impl<'t> Merge<'t> {
    pub(crate) fn new(trees: impl IntoIterator<Item = &'t Tree>) -> Self {
        let mut iters: Vec<TreeIter<'t>> = trees.into_iter().map(Tree::iter).collect();
        let mut heads = BinaryHeap::with_capacity(iters.len());
        let mut ids = Vec::with_capacity(iters.len());
        for (at, iter) in iters.iter_mut().enumerate() {
            match iter.next() {
                Some((key, id)) => {
                    heads.push(Reverse((key, at)));
                    ids.push(id);
                }
                None => ids.push(RuleId::default()),
            }
        }
        Self { iters, heads, ids }
    }
}

impl Iterator for Merge<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let Reverse((key, at)) = self.heads.pop()?;
        let id = self.ids[at];
        if let Some((next_key, next_id)) = self.iters[at].next() {
            self.heads.push(Reverse((next_key, at)));
            self.ids[at] = next_id;
        }
        Some((key, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epoch_slotmap::{Key, KeyData};

    fn id(n: u64) -> RuleId {
        RuleId::from(KeyData::from_ffi((1 << 32) | n))
    }

    fn key(priority: i64, order: u64) -> OrderKey {
        OrderKey { priority, order }
    }

    #[test]
    fn keys_sort_by_priority_then_age() {
        assert!(key(5, 9) < key(4, 1));
        assert!(key(5, 1) < key(5, 2));
        assert_eq!(key(5, 1).cmp(&key(5, 1)), Ordering::Equal);
        assert!(!id(3).is_null());
    }

    #[test]
    fn edits_match_a_sorted_model_and_leave_clones_alone() {
        let mut tree = Tree::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let rounds = if cfg!(miri) { 300 } else { 20_000 };
        let mut snapshots = Vec::new();
        for order in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && !model.is_empty() {
                let victim = *model.iter().nth((x >> 8) as usize % model.len()).unwrap();
                assert!(tree.remove(&victim));
                assert!(!tree.remove(&victim));
                model.remove(&victim);
            } else {
                let k = key((x % 7) as i64 - 3, order);
                tree.insert(k, id(order));
                model.insert(k);
            }
            if order % 97 == 0 {
                snapshots.push((tree.clone(), model.clone()));
            }
            assert!(tree.height <= compact_height(tree.len) + SLACK);
        }
        // Every clone still holds what it held when it was taken.
        for (tree, model) in snapshots.iter().chain(std::iter::once(&(tree.clone(), model.clone()))) {
            let keys: Vec<OrderKey> = tree.iter().map(|(k, _)| k).collect();
            assert_eq!(keys, model.iter().copied().collect::<Vec<_>>());
            assert_eq!(tree.len(), model.len());
            assert_eq!(tree.iter().size_hint().0, model.len());
        }
    }

    #[test]
    fn inserting_many_at_once_matches_inserting_one_by_one() {
        let n = if cfg!(miri) { 60 } else { 3000 };
        let mut one_by_one = Tree::default();
        let mut at_once = Tree::default();
        let first: Vec<Entry> = (0..n).step_by(2).map(|o| (key((o % 7) as i64, o), id(o))).collect();
        for &(k, i) in &first {
            one_by_one.insert(k, i);
        }
        at_once.insert_many(first.iter().rev().copied().collect());
        let second: Vec<Entry> = (1..n).step_by(2).map(|o| (key((o % 5) as i64, o), id(o))).collect();
        for &(k, i) in &second {
            one_by_one.insert(k, i);
        }
        at_once.insert_many(second);
        at_once.insert_many(vec![(key(9, n), id(n))]);
        one_by_one.insert(key(9, n), id(n));
        assert_eq!(at_once.iter().collect::<Vec<_>>(), one_by_one.iter().collect::<Vec<_>>());
        assert_eq!(at_once.len(), one_by_one.len());
        assert!(at_once.height <= compact_height(at_once.len) + SLACK);
    }

    #[test]
    fn a_merge_yields_every_tree_in_one_order() {
        let trees: Vec<Tree> = (0..3u64)
            .map(|t| {
                Tree::from_sorted(
                    (0..40)
                        .filter(|o| o % 3 == t)
                        .map(|o| (key(-((o % 5) as i64), o), id(o)))
                        .collect::<Vec<_>>()
                        .tap_sort(),
                )
            })
            .collect();
        let merged: Vec<OrderKey> = Merge::new(&trees).map(|(k, _)| k).collect();
        let mut want: Vec<OrderKey> = (0..40).map(|o| key(-((o % 5) as i64), o)).collect();
        want.sort();
        assert_eq!(merged, want);
        assert_eq!(Merge::new(&[]).count(), 0);
    }

    trait TapSort {
        fn tap_sort(self) -> Self;
    }

    impl TapSort for Vec<Entry> {
        fn tap_sort(mut self) -> Self {
            self.sort_by_key(|&(k, _)| k);
            self
        }
    }

    #[test]
    fn removing_almost_everything_keeps_the_height_bounded() {
        let n = if cfg!(miri) { 200 } else { 50_000 };
        let mut tree = Tree::from_sorted((0..n).map(|o| (key(0, o), id(o))).collect());
        for o in 0..n {
            if o % 50 != 0 {
                assert!(tree.remove(&key(0, o)));
            }
            assert!(tree.height <= compact_height(tree.len) + SLACK);
        }
        assert_eq!(
            tree.iter().map(|(k, _)| k.order).collect::<Vec<_>>(),
            (0..n).step_by(50).collect::<Vec<_>>()
        );
        for o in (0..n).step_by(50) {
            assert!(tree.remove(&key(0, o)));
        }
        assert_eq!((tree.len(), tree.iter().count(), tree.height), (0, 0, 0));
    }
}
