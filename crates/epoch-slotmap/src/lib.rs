//! A concurrent generational slot map: lock-free reads, values stored inline, and removed
//! values released by epoch-based reclamation at a moment the program can know.
//!
//! # Why
//!
//! A service kept its rules in a slice behind a read-write lock and deleted with
//! `append(s[:i], s[i+1:]...)`: the removed pointer stayed in the backing array, nothing could
//! free it, and memory crept up until the service was restarted. In this map every value lives
//! in a slot with a version. Removing a value kills its key at once; a stale key never reaches
//! the slot's next occupant; the value is dropped, and its slot reused, as soon as no reader can
//! still see it, and [`SlotMap::reclaim`] / [`SlotMap::stats`] tell you when that happened.
//!
//! # Usage
//!
//! ```
//! use epoch_slotmap::SlotMap;
//!
//! let rules = SlotMap::new();
//! let id = rules.insert(String::from("deny 10.0.0.0/8"));
//! {
//!     let guard = rules.pin(); // lock-free; hold it across a batch of lookups
//!     assert_eq!(guard.get(id).map(String::as_str), Some("deny 10.0.0.0/8"));
//! }
//! rules.replace(id, String::from("allow 10.0.0.0/8")).unwrap();
//! assert!(rules.remove(id));
//! assert_eq!(rules.get_cloned(id), None); // the key died with the remove
//! rules.reclaim(); // every removed or replaced value has been dropped now
//! assert_eq!(rules.stats().pending, 0);
//! ```
//!
//! # When values are dropped
//!
//! - `remove`, `retain` and `clear` unlink a value at once; it is dropped after every guard
//!   that existed at that moment is gone. Retirements are batched ([`SlotMap::stats`]'s
//!   `pending` counts those waiting): with no guard held, `pending` stays below 1024 per
//!   writing thread during steady churn without anyone calling `reclaim`.
//! - `replace` and `update` keep the key; the old value is dropped the same way.
//! - [`SlotMap::reclaim`] returns once everything removed or replaced before the call has
//!   been dropped; [`SlotMap::take`] hands the value back once no guard can see it. Both wait
//!   for guards other threads hold: [`SlotMap::reclaim_timeout`] and
//!   [`SlotMap::take_timeout`] bound the wait, and debug builds warn when a wait is stuck.
//! - Dropping the map drops every value before `drop` returns (unless a `Guard` was leaked
//!   with `mem::forget`: what it could see is then leaked, never freed under it).
//!
//! # Memory
//!
//! A slot costs 16 bytes plus the value (for values aligned to 8 bytes or less): a 32-bit
//! version, a 32-bit link word and a pointer to the current value, which is the slot's own
//! inline storage unless the value was replaced (replacements are boxed, so readers always
//! see a whole value). Each page also keeps one occupancy bit per slot, so iteration costs
//! one load per 64 slots plus the live values, not a read of every vacant slot. Slots live
//! in pages that double in size (32, 64, 128, ...) and never move, so references stay valid
//! while the map grows.
//!
//! Capacity stays within `4 (L + P + T) + 2 R + 32` slots (L, P: the peaks of live and
//! pending values, T: threads in the map at once, R: slots retired for good, 0 in practice;
//! docs/design.md), whatever the interleaving: an insert installs a page only after a look at
//! every thread's free slots found none. Pages asked for up front (`with_capacity`,
//! `reserve`) come on top.
//!
//! A map that grew and then shrank can give its memory back: after `reclaim`,
//! [`SlotMap::shrink_to_fit`] releases every page whose slots are all vacant (not the first),
//! concurrently with readers and writers. Keys into a released page stay dead forever: each
//! page keeps a version watermark, and a re-allocated page starts above it. Measured: 100 000
//! values of 64 bytes, all removed, `reclaim` and `shrink_to_fit`: 0.26 bytes per former slot
//! stay allocated.
//!
//! # Compared with
//!
//! | | keys | reads | writes | removed values freed | memory after shrinking |
//! |---|---|---|---|---|---|
//! | **epoch-slotmap** | generational | lock-free, inline value, no RMW | lock-free, `&self`, per-thread free lists | after a grace period; `reclaim()` says when | pages released, keys stay stale |
//! | `slotmap::SlotMap` | generational | `&self`, single thread | `&mut self` | at once (exclusive) | never shrinks |
//! | `sharded-slab` | index + generation | lock-free, guard per item (RMW) | lock-free | when the last guard goes | pages freed only on drop |
//! | `concurrent-slotmap` | generational | lock-free (Hyaline) | lock-free | after reclamation, not observable | never shrinks |
//! | `papaya::HashMap` | your own (no generations) | lock-free | lock-free | after reclamation (seize) | table shrinks; stale keys can alias |
//! | `RwLock<SlotMap>` | generational | wait for writers | exclusive; readers and writers wait for each other | at once | never shrinks |
//!
//! Where another table is the better choice (`docs/benchmarks.md` has the figures, all
//! contenders measured in one run, and `report --scale` measures them on your cores):
//!
//! - **Write-heavy tables: `sharded-slab`.** When most operations are inserts and removes
//!   (the Exchange mix, or writes on every thread) it does more of them per second than this
//!   map.
//! - **One thread alone: `RwLock<SlotMap>`.** Uncontended, a lock and a plain `slotmap` write
//!   faster than a map that must defer every free; it falls behind once a second thread
//!   contends for the lock.
//! - **Lookups as cheap as they get: `slotmap` or `concurrent-slotmap`.** A lookup under a held
//!   guard costs this map a little more than theirs, and `concurrent-slotmap`'s pin per lookup
//!   scales better with reader threads.
//! - **Memory after deleting everything: a hash map that shrinks.** After `reclaim` and
//!   [`SlotMap::shrink_to_fit`] this map still keeps its first page and its bookkeeping.
//!
//! It wins read-mostly mixes where every thread reads and sometimes writes, sparse
//! iteration, and the guarantee the others do not give: `reclaim()` returns when removed
//! values are dropped.
//!
//! # Versions
//!
//! Keys are the [`slotmap`] crate's: a 32-bit index and a 32-bit version, odd while occupied.
//! `new_key_type!`, [`KeyData::as_ffi`]/[`KeyData::from_ffi`] and `slotmap::SecondaryMap`
//! work with them. Each slot goes through at most 2^31 - 1 occupants; a slot whose version would
//! wrap is retired for good (`stats().retired`), so no stale key can ever alias a new value.
//!
//! A key is checked only against its slot's version, as in `slotmap`: it does not remember its
//! map, so a key of another map whose index and version are live in this one reads this one's
//! value (fresh maps hand out the same first keys). Declare one key type per map with
//! [`new_key_type!`] and the compiler keeps them apart:
//!
//! ```compile_fail
//! epoch_slotmap::new_key_type! { struct RouteId; struct AclId; }
//! let routes = epoch_slotmap::SlotMap::<RouteId, &str>::with_key();
//! let acls = epoch_slotmap::SlotMap::<AclId, &str>::with_key();
//! let route = routes.insert("/api");
//! acls.remove(route); // error: expected `AclId`, found `RouteId`
//! ```
//!
//! # Features
//!
//! - `serde`: `Serialize` for [`SlotMap`] and [`Guard`] (what one guard sees) and
//!   `Deserialize` for [`SlotMap`]. A restored map gives every key of the snapshot the same
//!   value; vacant slots keep their versions, retired slots stay retired and released pages
//!   keep their watermarks, so every key that was dead stays dead. Malformed input is an
//!   error, never a panic, and a restore allocates in proportion to its input.
//! - `metrics`: `SlotMap::publish_metrics` and `Stats::publish_metrics` set gauges
//!   (`{prefix}_len`, `_capacity`, `_vacant`, `_retired`, `_pending`, and for the map
//!   `_allocated_bytes`) through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! `docs/reclamation.md` in the repository is the guide to when memory comes back.
//!
//! # Loom
//!
//! Built with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"` and the `loom` feature, the crate
//! takes its atomics, cells and thread-locals from loom and runs crossbeam-epoch in loom mode,
//! so downstream crates can model-check code that embeds the map.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod clone;
mod config;
mod domain;
mod free_list;
#[cfg(feature = "metrics")]
mod gauges;
mod growth;
mod guard;
mod iter;
mod map;
mod mutant;
mod page;
mod retire;
mod shard;
mod shared;
mod slot;
#[cfg(feature = "serde")]
mod snapshot;
mod sync;
mod wait;

pub use guard::{Guard, Iter, Keys, Values};
pub use iter::{Drain, IntoIter, IterMut, ValuesMut};
pub use map::{InsertError, ReserveError, SlotMap, Stats};
pub use slotmap::{DefaultKey, Key, KeyData, new_key_type};
pub use wait::TakeError;

/// The examples of `docs/reclamation.md`, run as doctests so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/reclamation.md")]
pub struct ReclamationGuide;

/// The examples of `docs/migrating.md`, run as doctests so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/migrating.md")]
pub struct MigratingGuide;
