//! Snapshots (the `serde` feature): a map serializes what one guard sees, and deserializes
//! into a map where every key of the snapshot is live again with the same value.
//!
//! Invariant: a snapshot lists every slot of every page that exists, with its version
//! (`0` = retired, even = vacant, odd = occupied, followed by its value), plus every page's
//! version watermark, so that after a restore no key that was dead in the snapshot can come
//! alive: vacant slots keep their versions, retired slots stay off the free list, and pages
//! that did not exist start above their watermark when they are allocated again. A page
//! holds exactly the slots listed for it (the last page of a map with a limit is cut there),
//! so the memory a restore allocates is proportional to its input; nothing in the input is
//! trusted before it has been checked, and a bad snapshot is an error.
//!
//! Format (`serde` data model; a slot is a sequence, so a value that serializes as `null`
//! is never confused with a missing one):
//!
//! ```text
//! SlotMap { max_slots: u32, watermarks: [u32], pages: [Page { page: u32, slots: [[version] or [version, value]] }] }
//! ```

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, SerializeStruct, Serializer};
use slotmap::Key;

use crate::domain::Domain;
use crate::guard::Guard;
use crate::map::SlotMap;
use crate::page::{MAX_SLOTS, PAGES, locate_page, page_len_below, page_start};
use crate::slot::{FRESH_VERSION, Slot};
use crate::sync::Ordering;

/// Serializes what a fresh [`Guard`] sees (see the `Guard` impl): each slot is read once, so
/// an insert or remove running meanwhile may or may not be in the snapshot. For a
/// point-in-time snapshot, make sure no writer runs (or hold `&mut`).
///
/// ```
/// use epoch_slotmap::{DefaultKey, SlotMap};
///
/// let map = SlotMap::new();
/// let gone = map.insert("old".to_string());
/// let kept = map.insert("kept".to_string());
/// map.remove(gone);
/// let json = serde_json::to_string(&map).unwrap();
///
/// let restored: SlotMap<DefaultKey, String> = serde_json::from_str(&json).unwrap();
/// assert_eq!(restored.get_cloned(kept).as_deref(), Some("kept"));
/// assert_eq!(restored.get_cloned(gone), None); // a dead key stays dead
/// let new = restored.insert("new".to_string()); // reuses the vacant slot...
/// assert_ne!(new, gone); // ...with a new version
/// ```
impl<K: Key, V: Serialize> Serialize for SlotMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.pin().serialize(serializer)
    }
}

/// Serializes the map as this guard sees it: every value is read under the guard, so each
/// one in the snapshot is whole and was live at the moment it was read.
///
/// ```
/// use epoch_slotmap::SlotMap;
///
/// let map = SlotMap::new();
/// map.insert(7u8);
/// let guard = map.pin();
/// let bytes = postcard::to_stdvec(&guard).unwrap();
/// let restored: SlotMap<epoch_slotmap::DefaultKey, u8> = postcard::from_bytes(&bytes).unwrap();
/// assert_eq!(restored.pin().iter().map(|(_, v)| *v).collect::<Vec<_>>(), [7]);
/// ```
impl<K: Key, V: Serialize> Serialize for Guard<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shared = &*self.map.shared;
        let mut watermarks = Vec::with_capacity(PAGES);
        let mut pages = Vec::new();
        for page in 0..PAGES {
            // The watermark before the page pointer: a page that exists then started at or
            // above it, so every version listed for it is at least this. A page seen absent
            // may have been released just now: read its watermark again, after the pointer
            // (see `PageTable::watermark`), to get the raise.
            let before = shared.pages.watermark(page);
            match shared.pages.page(page) {
                Some(slots) => {
                    watermarks.push(before);
                    pages.push(PageOut { page: page as u32, slots });
                }
                None => watermarks.push(shared.pages.watermark(page)),
            }
        }
        let mut out = serializer.serialize_struct("SlotMap", 3)?;
        out.serialize_field("max_slots", &(shared.max_slots as u32))?;
        out.serialize_field("watermarks", &watermarks)?;
        out.serialize_field("pages", &pages)?;
        out.end()
    }
}

struct PageOut<'g, V> {
    page: u32,
    slots: &'g [Slot<V>],
}

impl<V: Serialize> Serialize for PageOut<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Page", 2)?;
        out.serialize_field("page", &self.page)?;
        out.serialize_field("slots", &SlotsOut(self.slots))?;
        out.end()
    }
}

struct SlotsOut<'g, V>(&'g [Slot<V>]);

impl<V: Serialize> Serialize for SlotsOut<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for slot in self.0 {
            seq.serialize_element(&SlotOut(slot.read_whole()))?;
        }
        seq.end()
    }
}

/// One slot: `[version]`, or `[version, value]` when the version is live.
struct SlotOut<'g, V>((u32, Option<&'g V>));

impl<V: Serialize> Serialize for SlotOut<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (version, value) = self.0;
        let mut seq = serializer.serialize_seq(Some(1 + usize::from(value.is_some())))?;
        seq.serialize_element(&version)?;
        if let Some(value) = value {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

/// What a snapshot says, before it is checked.
#[derive(serde::Deserialize)]
#[serde(rename = "SlotMap", deny_unknown_fields)]
struct SnapshotIn<V> {
    max_slots: u32,
    watermarks: Vec<u32>,
    pages: Vec<PageIn<V>>,
}

#[derive(serde::Deserialize)]
#[serde(rename = "Page", deny_unknown_fields)]
struct PageIn<V> {
    page: u32,
    slots: Vec<SlotIn<V>>,
}

/// One slot as read: its version, and its value when the version is odd.
struct SlotIn<V>(u32, Option<V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SlotIn<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SlotVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for SlotVisitor<V> {
            type Value = SlotIn<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a slot: [even version] or [odd version, value]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SlotIn<V>, A::Error> {
                let version: u32 = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let value = if version & 1 == 1 {
                    Some(seq.next_element()?.ok_or_else(|| A::Error::invalid_length(1, &self))?)
                } else {
                    None
                };
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(3, &self));
                }
                Ok(SlotIn(version, value))
            }
        }
        deserializer.deserialize_seq(SlotVisitor(std::marker::PhantomData))
    }
}

/// Why a snapshot was rejected.
#[derive(Debug)]
enum Invalid {
    MaxSlots(u32),
    Watermarks(usize),
    OddWatermark { page: usize, version: u32 },
    PageOrder { page: u32 },
    PageLength { page: usize, found: usize, expected: usize },
    BelowWatermark { index: usize, version: u32, watermark: u32 },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid slot map snapshot: ")?;
        match *self {
            Self::MaxSlots(max) => write!(f, "max_slots {max} is above the limit {MAX_SLOTS}"),
            Self::Watermarks(n) => write!(f, "{n} watermarks, at most {PAGES} expected"),
            Self::OddWatermark { page, version } => {
                write!(f, "page {page} has an odd watermark {version}")
            }
            Self::PageOrder { page } => write!(
                f,
                "page {page} is out of range, listed twice or out of order (pages are listed in \
                 ascending order, below max_slots)"
            ),
            Self::PageLength { page, found, expected } => {
                write!(f, "page {page} lists {found} slots, {expected} expected")
            }
            Self::BelowWatermark { index, version, watermark } => {
                write!(f, "slot {index} has version {version}, below its page's watermark {watermark}")
            }
        }
    }
}

/// Rejects every snapshot a map could not have produced (see the module invariant).
fn check<V>(snapshot: &SnapshotIn<V>) -> Result<(), Invalid> {
    let max_slots = snapshot.max_slots as usize;
    if max_slots > MAX_SLOTS {
        return Err(Invalid::MaxSlots(snapshot.max_slots));
    }
    if snapshot.watermarks.len() > PAGES {
        return Err(Invalid::Watermarks(snapshot.watermarks.len()));
    }
    if let Some((page, &version)) = snapshot.watermarks.iter().enumerate().find(|(_, w)| *w & 1 == 1) {
        return Err(Invalid::OddWatermark { page, version });
    }
    let mut next_page = 0;
    for page_in in &snapshot.pages {
        let page = page_in.page as usize;
        if page < next_page || page >= PAGES || page_start(page) >= max_slots {
            return Err(Invalid::PageOrder { page: page_in.page });
        }
        next_page = page + 1;
        let expected = page_len_below(page, max_slots);
        if page_in.slots.len() != expected {
            return Err(Invalid::PageLength { page, found: page_in.slots.len(), expected });
        }
        let watermark = snapshot.watermarks.get(page).copied().unwrap_or(0);
        for (offset, SlotIn(version, _)) in page_in.slots.iter().enumerate() {
            // `SlotIn` pairs a value with exactly the odd versions; 0 marks a retired slot.
            let (index, version) = (page_start(page) + offset, *version);
            if version != 0 && version < watermark {
                return Err(Invalid::BelowWatermark { index, version, watermark });
            }
        }
    }
    Ok(())
}

/// Restores a snapshot (see the `Deserialize` impl of [`SlotMap`]).
fn restore<K: Key, V>(snapshot: SnapshotIn<V>) -> Result<SlotMap<K, V>, Invalid> {
    check(&snapshot)?;
    let map = SlotMap::<K, V>::build(0, snapshot.max_slots as usize, FRESH_VERSION, Domain::new());
    let shared = &*map.shared;
    let shard = map.own_shard();
    for (page, &watermark) in snapshot.watermarks.iter().enumerate() {
        shared.pages.set_watermark(page, watermark);
    }
    let mut vacant = Vec::new();
    for page_in in snapshot.pages {
        let page = page_in.page as usize;
        let slots = shared.restore_page(page).expect("`check` lets each page through once");
        for (offset, SlotIn(version, value)) in page_in.slots.into_iter().enumerate() {
            let slot = &slots[offset];
            // Relaxed (every store below): the map is not shared yet; whoever receives it
            // synchronises with this thread.
            slot.version.store(version, Ordering::Relaxed);
            match value {
                None if version == 0 => {
                    shard.counters.retired_slots.fetch_add(1, Ordering::Relaxed);
                }
                None => vacant.push((page_start(page) + offset) as u32),
                Some(value) => {
                    // SAFETY: `restore_page` just allocated this slot in a map no other thread
                    // can reach, and it is on no free list: we own it, and it holds no value.
                    unsafe { slot.inline_mut().write(value) };
                    slot.value.store(slot.inline_mut(), Ordering::Relaxed);
                    shared.pages.set_occupied((page_start(page) + offset) as u32, true);
                }
            }
        }
    }
    // Vacant slots go on the restoring thread's free lists, one chain per page, lowest index
    // on top.
    for page in 0..PAGES {
        let of_page: Vec<u32> = vacant.iter().copied().filter(|&i| locate_page(i as usize) == page).collect();
        if let (Some(&first), Some(&last)) = (of_page.first(), of_page.last()) {
            for pair in of_page.windows(2) {
                // Relaxed: the map is not shared yet (as above).
                shared.slot(pair[0]).aux.store(pair[1], Ordering::Relaxed);
            }
            shard.free.push_chain(&shared.pages, page, first, last);
        }
    }
    Ok(map)
}

/// Restores a snapshot made by the `Serialize` impl: every key that was live in it is live
/// again with the same value; vacant slots keep their versions and retired slots stay retired,
/// so every key that was dead stays dead. Values removed but not yet reclaimed when the
/// snapshot was taken are simply absent (their slots are vacant). Keys the original map
/// issued *after* the snapshot mean nothing to the restored map, which may issue the same
/// keys for other values: restore from the newest snapshot, or treat older keys as unknown.
///
/// A snapshot the map could not have produced (pages out of order or of the wrong length,
/// a value in a slot with an even version, a missing one with an odd version, more pages than
/// the map has, versions below their page's watermark) is a deserialization error. What a restore allocates is proportional to the
/// input; lengths written in the input are not trusted.
///
/// ```
/// use epoch_slotmap::{DefaultKey, SlotMap};
///
/// let bad = r#"{"max_slots": 1, "watermarks": [], "pages": [{"page": 0, "slots": [[4, "x"]]}]}"#;
/// let err = serde_json::from_str::<SlotMap<DefaultKey, String>>(bad).unwrap_err();
/// assert!(err.to_string().contains("[even version] or [odd version, value]"), "{err}");
/// ```
impl<'de, K: Key, V: Deserialize<'de>> Deserialize<'de> for SlotMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let snapshot = SnapshotIn::deserialize(deserializer)?;
        restore(snapshot).map_err(D::Error::custom)
    }
}
