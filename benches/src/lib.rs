//! Contenders behind one adapter trait, and the workloads the report and the criterion
//! benches run on them. Adding a contender is one `impl Contender` (~30 lines) plus a line in
//! `report.rs`.
//!
//! Keys cross the trait as `u64` handles (a slot map's key bits, a slab index, a hash key).
//! The value is a ~64-byte rule.
#![allow(missing_docs, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use epoch_slotmap::{DefaultKey, Key, KeyData};

/// The value every contender stores: 64 bytes, like a small routing rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: u64,
    pub priority: u32,
    pub backend: u32,
    pub prefix: [u8; 40],
    pub flags: u64,
}

const _: () = assert!(size_of::<Rule>() == 64);

impl Rule {
    pub fn new(id: u64) -> Self {
        Self { id, priority: id as u32, backend: 7, prefix: [b'/'; 40], flags: id ^ 0x55 }
    }
}

/// A table under test. Writes take `&self`; single-threaded baselines use a `RefCell`.
pub trait Contender {
    const NAME: &'static str;
    fn new() -> Self;
    fn insert(&self, rule: Rule) -> u64;
    fn remove(&self, key: u64) -> bool;
    /// Replaces the value of `key`; returns the key it now lives under (contenders without an
    /// in-place replace remove and insert).
    fn replace(&self, key: u64, rule: Rule) -> u64;
    /// One lookup, including whatever protection a reader needs (a pin, a lock, a guard).
    fn read(&self, key: u64) -> Option<u64>;
    /// A batch of lookups; contenders with a reusable read guard hold one for the batch.
    fn read_batch(&self, keys: &[u64]) -> u64 {
        keys.iter().map(|&k| self.read(k).unwrap_or(0)).sum()
    }
    /// Sum of all ids, visiting every live value.
    fn iter_sum(&self) -> u64;
    /// Makes the contender release what it removed (its own quiescence step).
    fn quiesce(&self) {}
    /// What `quiesce` calls, for the memory rows ("nothing" when it does nothing).
    const QUIESCE: &'static str = "nothing";
    /// Whether the contender supports write workloads at 100k entries (false for snapshots).
    const WRITES: bool = true;
}

/// What every read does with the rule it found: reads two fields, one at each end of it.
#[inline(always)]
pub fn checksum(rule: &Rule) -> u64 {
    rule.id ^ u64::from(rule.priority)
}

/// The median of samples (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Lookups to make over a table, untimed, before timing lookups over it. A 100k-entry table
/// that other tables' passes have evicted takes five to eight passes over all its keys before
/// a pass stops getting faster (on the 2-vCPU VM of docs/benchmarks.md; `lookup_layout`
/// prints the curve, and docs/design.md, Layout, says what timing inside it did): twelve
/// passes' worth is past that.
pub const WARM_LOOKUPS: usize = 1_200_000;

/// Untimed passes of `pass_len` lookups each that add up to [`WARM_LOOKUPS`].
pub fn warm_passes(pass_len: usize) -> usize {
    WARM_LOOKUPS.div_ceil(pass_len.max(1))
}

/// Nanoseconds per lookup of one pass over `keys` in batches of `batch`.
pub fn timed_pass<K>(keys: &[K], batch: usize, mut lookups: impl FnMut(&[K]) -> u64) -> f64 {
    let start = std::time::Instant::now();
    std::hint::black_box(keys.chunks(batch).map(&mut lookups).sum::<u64>());
    start.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn ffi(key: DefaultKey) -> u64 {
    key.data().as_ffi()
}

fn key(bits: u64) -> DefaultKey {
    KeyData::from_ffi(bits).into()
}

// -- ours ---------------------------------------------------------------------------------

/// epoch-slotmap, one pin per lookup (`read`), one guard per batch (`read_batch`).
pub struct Ours(pub epoch_slotmap::SlotMap<DefaultKey, Rule>);

impl Contender for Ours {
    const NAME: &'static str = "epoch-slotmap";
    fn new() -> Self {
        Self(epoch_slotmap::SlotMap::new())
    }
    fn insert(&self, rule: Rule) -> u64 {
        ffi(self.0.insert(rule))
    }
    fn remove(&self, k: u64) -> bool {
        self.0.remove(key(k))
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        let _ = self.0.replace(key(k), rule);
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.pin().get(key(k)).map(checksum)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let guard = self.0.pin();
        keys.iter().map(|&k| guard.get(key(k)).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        self.0.pin().iter().map(|(_, r)| r.id).sum()
    }
    fn quiesce(&self) {
        self.0.reclaim();
    }
    const QUIESCE: &'static str = "reclaim()";
}

/// epoch-slotmap whose `replace` is a remove plus an insert (a new key), like the adapters of
/// contenders without an in-place replace (concurrent-slotmap, sharded-slab): the report runs
/// it in the mixed workloads only, to separate the cost of keeping the key from the rest.
pub struct OursRemoveInsert(pub Ours);

impl Contender for OursRemoveInsert {
    const NAME: &'static str = "epoch-slotmap (replace = remove + insert)";
    fn new() -> Self {
        Self(Ours::new())
    }
    fn insert(&self, rule: Rule) -> u64 {
        self.0.insert(rule)
    }
    fn remove(&self, k: u64) -> bool {
        self.0.remove(k)
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        self.0.remove(k);
        self.0.insert(rule)
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.read(k)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        self.0.read_batch(keys)
    }
    fn iter_sum(&self) -> u64 {
        self.0.iter_sum()
    }
    fn quiesce(&self) {
        self.0.quiesce();
    }
}

// -- slotmap baselines --------------------------------------------------------------------

/// `slotmap::SlotMap`, single-threaded (a `RefCell` stands in for `&mut`).
pub struct SlotMapInline(RefCell<slotmap::SlotMap<DefaultKey, Rule>>);

impl Contender for SlotMapInline {
    const NAME: &'static str = "slotmap (inline, &mut)";
    fn new() -> Self {
        Self(RefCell::new(slotmap::SlotMap::new()))
    }
    fn insert(&self, rule: Rule) -> u64 {
        ffi(self.0.borrow_mut().insert(rule))
    }
    fn remove(&self, k: u64) -> bool {
        self.0.borrow_mut().remove(key(k)).is_some()
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        if let Some(v) = self.0.borrow_mut().get_mut(key(k)) {
            *v = rule;
        }
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.borrow().get(key(k)).map(checksum)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let map = self.0.borrow();
        keys.iter().map(|&k| map.get(key(k)).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        self.0.borrow().values().map(|r| r.id).sum()
    }
}

/// `slotmap::SlotMap<_, Box<Rule>>`: the floor for a lookup through a pointer.
pub struct SlotMapBoxed(RefCell<slotmap::SlotMap<DefaultKey, Box<Rule>>>);

impl Contender for SlotMapBoxed {
    const NAME: &'static str = "slotmap (Box<V>, &mut)";
    fn new() -> Self {
        Self(RefCell::new(slotmap::SlotMap::new()))
    }
    fn insert(&self, rule: Rule) -> u64 {
        ffi(self.0.borrow_mut().insert(Box::new(rule)))
    }
    fn remove(&self, k: u64) -> bool {
        self.0.borrow_mut().remove(key(k)).is_some()
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        if let Some(v) = self.0.borrow_mut().get_mut(key(k)) {
            **v = rule;
        }
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.borrow().get(key(k)).map(|r| checksum(r))
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let map = self.0.borrow();
        keys.iter().map(|&k| map.get(key(k)).map_or(0, |r| checksum(r))).sum()
    }
    fn iter_sum(&self) -> u64 {
        self.0.borrow().values().map(|r| r.id).sum()
    }
}

// -- locked slot maps ---------------------------------------------------------------------

macro_rules! locked_slotmap {
    ($name:ident, $label:expr, $lock:ty, $read:ident, $write:ident $(, $unwrap:ident)?) => {
        /// A slot map behind a reader-writer lock.
        pub struct $name($lock);

        impl Contender for $name {
            const NAME: &'static str = $label;
            fn new() -> Self {
                Self(<$lock>::new(slotmap::SlotMap::new()))
            }
            fn insert(&self, rule: Rule) -> u64 {
                ffi(self.0.$write()$(.$unwrap())?.insert(rule))
            }
            fn remove(&self, k: u64) -> bool {
                self.0.$write()$(.$unwrap())?.remove(key(k)).is_some()
            }
            fn replace(&self, k: u64, rule: Rule) -> u64 {
                if let Some(v) = self.0.$write()$(.$unwrap())?.get_mut(key(k)) {
                    *v = rule;
                }
                k
            }
            fn read(&self, k: u64) -> Option<u64> {
                self.0.$read()$(.$unwrap())?.get(key(k)).map(checksum)
            }
            fn read_batch(&self, keys: &[u64]) -> u64 {
                let map = self.0.$read()$(.$unwrap())?;
                keys.iter().map(|&k| map.get(key(k)).map_or(0, checksum)).sum()
            }
            fn iter_sum(&self) -> u64 {
                self.0.$read()$(.$unwrap())?.values().map(|r| r.id).sum()
            }
        }
    };
}

locked_slotmap!(
    StdRwLockSlotMap,
    "std RwLock<SlotMap>",
    std::sync::RwLock<slotmap::SlotMap<DefaultKey, Rule>>,
    read,
    write,
    unwrap
);
locked_slotmap!(
    ParkingLotSlotMap,
    "parking_lot RwLock<SlotMap>",
    parking_lot::RwLock<slotmap::SlotMap<DefaultKey, Rule>>,
    read,
    write
);

// -- sharded-slab -------------------------------------------------------------------------

pub struct ShardedSlab(sharded_slab::Slab<Rule>);

impl Contender for ShardedSlab {
    const NAME: &'static str = "sharded-slab";
    fn new() -> Self {
        Self(sharded_slab::Slab::new())
    }
    fn insert(&self, rule: Rule) -> u64 {
        self.0.insert(rule).expect("slab full") as u64
    }
    fn remove(&self, k: u64) -> bool {
        self.0.remove(k as usize)
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        self.0.remove(k as usize);
        self.insert(rule)
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.get(k as usize).map(|r| checksum(&r))
    }
    fn iter_sum(&self) -> u64 {
        // A shared `Slab` has no iterator (`unique_iter` needs `&mut`), and its packed indexes
        // cannot be probed meaningfully: iteration is reported as n/a (`ITER_UNSUPPORTED`).
        0
    }
}

// -- hash maps ----------------------------------------------------------------------------

type StdHasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

pub struct DashMap(dashmap::DashMap<u64, Rule>, AtomicU64);

impl Contender for DashMap {
    const NAME: &'static str = "dashmap";
    fn new() -> Self {
        Self(dashmap::DashMap::new(), AtomicU64::new(1))
    }
    fn insert(&self, rule: Rule) -> u64 {
        let k = self.1.fetch_add(1, Ordering::Relaxed);
        self.0.insert(k, rule);
        k
    }
    fn remove(&self, k: u64) -> bool {
        self.0.remove(&k).is_some()
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        self.0.insert(k, rule);
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.get(&k).map(|r| checksum(&r))
    }
    fn iter_sum(&self) -> u64 {
        self.0.iter().map(|e| e.value().id).sum()
    }
    fn quiesce(&self) {
        self.0.shrink_to_fit();
    }
    const QUIESCE: &'static str = "shrink_to_fit()";
}

pub struct Papaya(papaya::HashMap<u64, Rule>, AtomicU64);

impl Contender for Papaya {
    const NAME: &'static str = "papaya";
    fn new() -> Self {
        Self(papaya::HashMap::new(), AtomicU64::new(1))
    }
    fn insert(&self, rule: Rule) -> u64 {
        let k = self.1.fetch_add(1, Ordering::Relaxed);
        self.0.pin().insert(k, rule);
        k
    }
    fn remove(&self, k: u64) -> bool {
        self.0.pin().remove(&k).is_some()
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        self.0.pin().insert(k, rule);
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.pin().get(&k).map(checksum)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let map = self.0.pin();
        keys.iter().map(|k| map.get(k).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        self.0.pin().values().map(|r| r.id).sum()
    }
}

pub struct SccHashIndex(scc::HashIndex<u64, Rule>, AtomicU64);

impl Contender for SccHashIndex {
    const NAME: &'static str = "scc HashIndex";
    fn new() -> Self {
        Self(scc::HashIndex::new(), AtomicU64::new(1))
    }
    fn insert(&self, rule: Rule) -> u64 {
        let k = self.1.fetch_add(1, Ordering::Relaxed);
        let _ = self.0.insert(k, rule);
        k
    }
    fn remove(&self, k: u64) -> bool {
        self.0.remove(&k)
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        // HashIndex values are immutable for readers: replace is remove + insert (same key).
        self.0.remove(&k);
        let _ = self.0.insert(k, rule);
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.peek_with(&k, |_, r| checksum(r))
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let guard = scc::ebr::Guard::new();
        keys.iter().map(|k| self.0.peek(k, &guard).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        let guard = scc::ebr::Guard::new();
        self.0.iter(&guard).map(|(_, r)| r.id).sum()
    }
}

// -- concurrent-slotmap ------------------------------------------------------------------

pub struct ConcurrentSlotMap(concurrent_slotmap::SlotMap<concurrent_slotmap::SlotId, Rule>);

fn csm_key(k: u64) -> concurrent_slotmap::SlotId {
    concurrent_slotmap::SlotId::new(k as u32, (k >> 32) as u32)
}

fn csm_bits(id: concurrent_slotmap::SlotId) -> u64 {
    u64::from(id.index()) | (u64::from(id.generation()) << 32)
}

impl Contender for ConcurrentSlotMap {
    const NAME: &'static str = "concurrent-slotmap";
    fn new() -> Self {
        Self(concurrent_slotmap::SlotMap::new(1 << 22))
    }
    fn insert(&self, rule: Rule) -> u64 {
        let guard = self.0.pin();
        csm_bits(self.0.insert(rule, &guard))
    }
    fn remove(&self, k: u64) -> bool {
        let guard = self.0.pin();
        self.0.remove(csm_key(k), &guard).is_some()
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        let guard = self.0.pin();
        self.0.remove(csm_key(k), &guard);
        csm_bits(self.0.insert(rule, &guard))
    }
    fn read(&self, k: u64) -> Option<u64> {
        let guard = self.0.pin();
        self.0.get(csm_key(k), &guard).map(checksum)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let guard = self.0.pin();
        keys.iter().map(|&k| self.0.get(csm_key(k), &guard).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        let guard = self.0.pin();
        self.0.iter(&guard).map(|(_, r)| r.id).sum()
    }
}

// -- arc-swap snapshot --------------------------------------------------------------------

/// A copy-on-write snapshot (`ArcSwap<HashMap>`): reads are one atomic load; every write
/// copies the whole table, so it only runs in read workloads and at small sizes.
pub struct ArcSwapSnapshot(arc_swap::ArcSwap<HashMap<u64, Rule, StdHasher>>, AtomicU64);

impl Contender for ArcSwapSnapshot {
    const NAME: &'static str = "arc-swap snapshot";
    const WRITES: bool = false;
    fn new() -> Self {
        Self(arc_swap::ArcSwap::from_pointee(HashMap::default()), AtomicU64::new(1))
    }
    fn insert(&self, rule: Rule) -> u64 {
        let k = self.1.fetch_add(1, Ordering::Relaxed);
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(k, rule.clone());
            m
        });
        k
    }
    fn remove(&self, k: u64) -> bool {
        let mut found = false;
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            found = m.remove(&k).is_some();
            m
        });
        found
    }
    fn replace(&self, k: u64, rule: Rule) -> u64 {
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(k, rule.clone());
            m
        });
        k
    }
    fn read(&self, k: u64) -> Option<u64> {
        self.0.load().get(&k).map(checksum)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        let m = self.0.load();
        keys.iter().map(|k| m.get(k).map_or(0, checksum)).sum()
    }
    fn iter_sum(&self) -> u64 {
        self.0.load().values().map(|r| r.id).sum()
    }
}

impl ArcSwapSnapshot {
    /// Builds the snapshot in one go (inserting one by one would be quadratic).
    pub fn bulk(n: u64) -> (Self, Vec<u64>) {
        let map: HashMap<u64, Rule, StdHasher> = (1..=n).map(|k| (k, Rule::new(k))).collect();
        (Self(arc_swap::ArcSwap::from_pointee(map), AtomicU64::new(n + 1)), (1..=n).collect())
    }
}

/// Contenders whose `iter_sum` is not a real iteration.
pub const ITER_UNSUPPORTED: &[&str] = &[ShardedSlab::NAME];

/// Contenders whose memory a counting global allocator cannot see: concurrent-slotmap keeps
/// its slots in a virtual-memory reservation made outside the allocator.
pub const MEMORY_UNCOUNTED: &[&str] = &[ConcurrentSlotMap::NAME];

// -- workload helpers ---------------------------------------------------------------------

/// Deterministic shuffling (xorshift), no external RNG.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Fills a contender with `n` rules; returns their keys, shuffled.
pub fn filled<C: Contender>(n: usize) -> (C, Vec<u64>) {
    let c = C::new();
    let mut keys: Vec<u64> = (0..n as u64).map(|i| c.insert(Rule::new(i))).collect();
    Rng(0x2545_F491_4F6C_DD1D).shuffle(&mut keys);
    (c, keys)
}

/// A shared, atomically updated key set for writers that change keys (remove + insert).
pub struct KeySet(pub Vec<AtomicU64>);

impl KeySet {
    pub fn new(keys: &[u64]) -> Arc<Self> {
        Arc::new(Self(keys.iter().map(|&k| AtomicU64::new(k)).collect()))
    }
    /// The key at position `i` (below the number of keys). Inlined and without a modulo:
    /// it sits in the mixed readers' loop, where a call and a division per key were a
    /// per-read cost of the harness, the same for every contender, that diluted their ratios.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
    /// Stores the key at position `i` (below the number of keys).
    #[inline]
    pub fn set(&self, i: usize, k: u64) {
        self.0[i].store(k, Ordering::Relaxed);
    }
}

// -- read-only baselines for the scaling workload --------------------------------------------

/// A plain `slotmap::SlotMap` shared by reference among reader threads (no writer: nothing to
/// synchronise), read with one crossbeam-epoch pin per lookup (`PIN_FLOOR`) or with nothing:
/// the floor any crossbeam-based pin-per-lookup map can reach, and the floor of a lookup.
pub struct SharedSlotMap<const PIN: bool> {
    map: slotmap::SlotMap<DefaultKey, Rule>,
}

impl<const PIN: bool> SharedSlotMap<PIN> {
    pub const NAME: &'static str =
        if PIN { "slotmap + crossbeam-epoch pin (the pin floor)" } else { "slotmap (read-only, no sync)" };

    /// `n` rules and their keys, shuffled.
    pub fn filled(n: usize) -> (Self, Vec<u64>) {
        let mut map = slotmap::SlotMap::with_capacity(n);
        let mut keys: Vec<u64> = (0..n as u64).map(|i| ffi(map.insert(Rule::new(i)))).collect();
        Rng(0x2545_F491_4F6C_DD1D).shuffle(&mut keys);
        (Self { map }, keys)
    }

    #[inline]
    pub fn read(&self, k: u64) -> Option<u64> {
        if PIN {
            let _pin = crossbeam_epoch::pin();
            self.map.get(key(k)).map(checksum)
        } else {
            self.map.get(key(k)).map(checksum)
        }
    }

    pub fn read_batch(&self, keys: &[u64]) -> u64 {
        let _pin = PIN.then(crossbeam_epoch::pin);
        keys.iter().map(|&k| self.map.get(key(k)).map_or(0, checksum)).sum()
    }
}
