//! Where a warm lookup's time goes: slot layouts built up step by step towards
//! epoch-slotmap's, each timed against `slotmap::SlotMap::get` in the same round.
//!
//! `cargo run --release -p benches --bin lookup_layout`
//!
//! Every variant holds the same 100k rules in its own memory and reads them with the same
//! shuffled keys, under one guard (or none) per batch of 256. The probe's own variants take
//! their keys as `u64`s and decode them as `slotmap::KeyData` does, as slotmap's and
//! epoch-slotmap's lookups must (the report's adapters hand every contender `u64` keys). A round gives each variant
//! untimed passes (`benches::WARM_LOOKUPS` lookups: a table the other variants' passes evicted
//! takes that long to stop getting faster, and the program first prints slotmap's curve) and
//! then three timed ones; the figure is the median, over the rounds, of the variant's time
//! divided by slotmap's in the same round. `docs/design.md` (Layout) quotes this program's
//! output and says what timing before the curve flattens did.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use benches::{
    ConcurrentSlotMap, Contender, Ours, Rng, Rule, SlotMapInline, checksum, filled, median, timed_pass,
    warm_passes,
};

const N: usize = 100_000;
const ROUNDS: usize = 31;
const BATCH: usize = 256;
/// The first page holds `1 << FIRST_PAGE_SHIFT` slots, as epoch-slotmap's does.
const FIRST_PAGE_SHIFT: u32 = 5;

/// epoch-slotmap's slot layout: a 16-byte header (version, link word, value pointer), then the
/// value written at insert.
#[repr(C)]
struct Slot {
    version: AtomicU32,
    aux: AtomicU32,
    value: AtomicPtr<Rule>,
    inline: Rule,
}

/// Slots whose value pointers point at their own inline values. The boxed slices never move,
/// so the pointers stay valid for as long as this lives.
struct Slots(Vec<Box<[Slot]>>);

impl Slots {
    /// `sizes` slots per allocation; slot `i` (counting across allocations) holds rule `i`.
    fn new(sizes: impl Iterator<Item = usize>) -> Self {
        let mut next = 0;
        let pages = sizes
            .map(|len| {
                let page: Box<[Slot]> = (0..len)
                    .map(|_| {
                        next += 1;
                        Slot {
                            version: AtomicU32::new(1),
                            aux: AtomicU32::new(0),
                            value: AtomicPtr::new(std::ptr::null_mut()),
                            inline: Rule::new(next - 1),
                        }
                    })
                    .collect();
                for slot in page.iter() {
                    // Relaxed: the program is single-threaded.
                    slot.value.store(std::ptr::from_ref(&slot.inline).cast_mut(), Ordering::Relaxed);
                }
                page
            })
            .collect();
        Self(pages)
    }
}

// Which value a lookup reads: a const parameter, so that each variant's loop is its own.
/// The slot's inline value, at an address computed from the slot's.
const INLINE: u8 = 0;
/// Whatever the value pointer points at.
const POINTER: u8 = 1;
/// The inline value unless a flag in the link word (on the version's line) says the value moved
/// out, then the pointer: the branch is predicted, so the value's loads need not wait for the
/// pointer's.
const FLAGGED: u8 = 2;

/// The flag of `FLAGGED`: a spare bit of the probe's link word, never set (no value here was
/// replaced).
const MOVED_OUT: u32 = 1 << 29;

#[inline(always)]
fn read<const READ: u8>(slot: &Slot) -> &Rule {
    let inline = READ == INLINE
        // Relaxed: nothing here stores the flag (single-threaded, never set); an engine with
        // it would need the store's Release and its own argument.
        || (READ == FLAGGED && slot.aux.load(Ordering::Relaxed) & MOVED_OUT == 0);
    if inline {
        return &slot.inline;
    }
    // SAFETY: every value pointer points at its own slot's inline rule (`Slots::new`), which
    // lives as long as the slot. (Acquire, as epoch-slotmap's readers load the pointer; here
    // the only store is the single-threaded one in `Slots::new`.)
    unsafe { &*slot.value.load(Ordering::Acquire) }
}

/// A key's index and version, decoded from its `u64` form as slotmap's `KeyData` does (which
/// makes the version odd): the work a lookup in slotmap or epoch-slotmap does first.
#[inline(always)]
fn decode(key: u64) -> (u32, u32) {
    let key = slotmap::KeyData::from_ffi(key).as_ffi();
    (key as u32, (key >> 32) as u32)
}

/// One allocation of slots, found by index as a `Vec` finds them.
#[inline(never)]
fn flat_batch<const READ: u8>(slots: &[Slot], keys: &[u64]) -> u64 {
    keys.iter()
        .map(|&key| {
            let (index, version) = decode(key);
            let Some(slot) = slots.get(index as usize) else { return 0 };
            // Acquire, as epoch-slotmap's readers load the version (nothing stores it here).
            if slot.version.load(Ordering::Acquire) != version {
                return 0;
            }
            checksum(read::<READ>(slot))
        })
        .sum()
}

/// Pages of 32, 64, 128, ... slots, found as epoch-slotmap finds them: the page number from a
/// bit scan, then the page's biased base (the address slot 0 would have, plus one byte so that
/// it is never null) plus index times the slot size.
struct Paged {
    biased: [*const u8; 32],
    len: usize,
    _slots: Slots,
}

impl Paged {
    /// `one_allocation`: the same pages carved out of one allocation (the same code path).
    fn new(one_allocation: bool) -> Self {
        let pages = (0..).map(|p| 1usize << (FIRST_PAGE_SHIFT + p)).scan(0, |start, len| {
            let this = *start;
            *start += len;
            (this < N).then_some((this, len))
        });
        let pages: Vec<(usize, usize)> = pages.collect();
        let len = pages.last().map_or(0, |&(start, len)| start + len);
        let slots = if one_allocation {
            Slots::new(std::iter::once(len))
        } else {
            Slots::new(pages.iter().map(|&(_, len)| len))
        };
        let mut biased = [std::ptr::null(); 32];
        let size = std::mem::size_of::<Slot>();
        for (page, &(start, _)) in pages.iter().enumerate() {
            let base = if one_allocation { slots.0[0][start..].as_ptr() } else { slots.0[page].as_ptr() };
            biased[page] = base.cast::<u8>().wrapping_sub(start * size).wrapping_add(1);
        }
        Self { biased, len, _slots: slots }
    }
}

#[inline(never)]
fn paged_batch<const READ: u8>(table: &Paged, keys: &[u64]) -> u64 {
    keys.iter()
        .map(|&key| {
            let (index, version) = decode(key);
            let index = index as usize;
            if index >= table.len {
                return 0;
            }
            let page = ((index >> FIRST_PAGE_SHIFT) + 1).ilog2() as usize;
            let biased = table.biased[page];
            if biased.is_null() {
                return 0;
            }
            let slot = biased.wrapping_add(index * std::mem::size_of::<Slot>()).wrapping_sub(1);
            // SAFETY: `index < len`, so page `page` exists and holds `index`; its biased base plus
            // `index` slots, less the one byte of bias, is that slot's address inside the page's
            // allocation, which `_slots` keeps alive.
            let slot = unsafe { &*slot.cast::<Slot>() };
            // Acquire, as epoch-slotmap's readers load the version (nothing stores it here).
            if slot.version.load(Ordering::Acquire) != version {
                return 0;
            }
            checksum(read::<READ>(slot))
        })
        .sum()
}

/// Not a step on from the layouts above but the alternative to the page table: the slots as
/// one range whose address never changes (what reserving the whole capacity as virtual memory
/// up front gives: no page base to load), with a presence bit per page tested before the slot
/// is read. A map that may release any emptied page (as `SlotMap::shrink_to_fit` does) needs
/// that test, made under a pin so that the page cannot go between the test and the read; a map
/// that never releases (concurrent-slotmap) needs only `index < capacity`, which is what
/// `flat_batch` does.
struct OneRange {
    slots: Slots,
    present: AtomicU32,
}

impl OneRange {
    fn new() -> Self {
        // Every page present: the probe never releases one.
        Self { slots: Slots::new(std::iter::once(N)), present: AtomicU32::new(u32::MAX) }
    }
}

#[inline(never)]
fn one_range_batch<const READ: u8>(table: &OneRange, keys: &[u64]) -> u64 {
    let slots = &table.slots.0[0];
    keys.iter()
        .map(|&key| {
            let (index, version) = decode(key);
            let Some(slot) = slots.get(index as usize) else { return 0 };
            let page = ((index >> FIRST_PAGE_SHIFT) + 1).ilog2();
            // Acquire, as a reader would need to pair with the Release that publishes a page
            // (nothing stores it here).
            if table.present.load(Ordering::Acquire) & (1 << page) == 0 {
                return 0;
            }
            // Acquire, as epoch-slotmap's readers load the version (nothing stores it here).
            if slot.version.load(Ordering::Acquire) != version {
                return 0;
            }
            checksum(read::<READ>(slot))
        })
        .sum()
}

/// Nanoseconds per lookup of three passes over `keys` in batches, after the untimed ones.
fn time<K>(keys: &[K], mut batch: impl FnMut(&[K]) -> u64) -> f64 {
    for _ in 0..warm_passes(keys.len()) {
        timed_pass(keys, BATCH, &mut batch);
    }
    (0..3).map(|_| timed_pass(keys, BATCH, &mut batch)).sum::<f64>() / 3.0
}

fn main() {
    let (slotmap, slotmap_keys) = filled::<SlotMapInline>(N);
    let (ours, ours_keys) = filled::<Ours>(N);
    let (csm, csm_keys) = filled::<ConcurrentSlotMap>(N);
    let inline = Slots::new(std::iter::once(N));
    let pointer = Slots::new(std::iter::once(N));
    let paged = Paged::new(false);
    let paged_one = Paged::new(true);
    let one_range = OneRange::new();
    let paged_pinned = Paged::new(false);
    let collector = crossbeam_epoch::Collector::new();
    let handle = collector.register();
    let paged_inline = Paged::new(false);
    let paged_flagged = Paged::new(false);
    // Index `i`, version 1 (what every probe slot holds).
    let mut keys: Vec<u64> = (0..N as u64).map(|i| (1 << 32) | i).collect();
    Rng(7).shuffle(&mut keys);

    // The warm-up curve of slotmap's table, cold here: every table built after it wrote its
    // own 8 MB or more.
    let curve: Vec<String> = (0..16)
        .map(|_| format!("{:.1}", timed_pass(&slotmap_keys, BATCH, |b| slotmap.read_batch(b))))
        .collect();
    println!("slotmap::SlotMap::get, ns per lookup, 16 passes from cold: {}", curve.join(" "));

    let names = [
        "80-byte slots (16-byte header first), value read inline",
        "  ... value read through the value pointer",
        "  ... in doubling pages found by bit scan and biased base",
        "  ... the same pages in one allocation",
        "  ... pages, value read inline (no pointer)",
        "  ... pages, inline unless a flag in the link word says moved out",
        "  ... pages and pointer, with a crossbeam-epoch pin per batch",
        "instead of pages: one range, presence bit per page, pointer",
        "epoch-slotmap (guard per batch)",
        "concurrent-slotmap (guard per batch)",
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut baseline = Vec::new();
    for _ in 0..ROUNDS {
        let base = time(&slotmap_keys, |b| slotmap.read_batch(b));
        let times = [
            time(&keys, |b| flat_batch::<INLINE>(&inline.0[0], b)),
            time(&keys, |b| flat_batch::<POINTER>(&pointer.0[0], b)),
            time(&keys, |b| paged_batch::<POINTER>(&paged, b)),
            time(&keys, |b| paged_batch::<POINTER>(&paged_one, b)),
            time(&keys, |b| paged_batch::<INLINE>(&paged_inline, b)),
            time(&keys, |b| paged_batch::<FLAGGED>(&paged_flagged, b)),
            time(&keys, |b| {
                let _pin = handle.pin();
                paged_batch::<POINTER>(&paged_pinned, b)
            }),
            time(&keys, |b| one_range_batch::<POINTER>(&one_range, b)),
            time(&ours_keys, |b| ours.read_batch(b)),
            time(&csm_keys, |b| csm.read_batch(b)),
        ];
        baseline.push(base);
        for (r, t) in ratios.iter_mut().zip(times) {
            r.push(t / base);
        }
    }
    println!(
        "slotmap::SlotMap::get, warm, 100k shuffled keys: {:.2} ns per lookup (median of {ROUNDS} rounds)",
        median(baseline)
    );
    println!("time per lookup / slotmap's in the same round, median of {ROUNDS} rounds:");
    for (name, r) in names.iter().zip(ratios) {
        println!("  {:.2}x  {name}", median(r));
    }
}
