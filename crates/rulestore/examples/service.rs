//! The rule store's main job: a request-routing service under rule pushes, the leak story
//! replayed without the leak.
//!
//! Request threads (one per core) route synthetic requests, a method and a path, as fast as
//! they can: each request pins the store and takes the first rule of its method whose prefix
//! matches the path, highest priority first and, among equal priorities, the rule added
//! earliest. Meanwhile a control plane keeps about `--rules` rules in the table: it loads them
//! in one push, then pushes `--pushes-per-s` transactions a second, each of 1-50 changes
//! (adds, replaces, removes) committed at once, and every 200th push reloads a whole method
//! (`remove_kind`, the Go service's `Del(typ)`, then as many new rules of that method). A
//! request sees a push whole or not at all.
//!
//! Every second one line; a legend before the first explains the columns:
//!
//! - `req/s`: requests routed per second, all request threads together;
//! - `updates/s`: rule changes committed per second, and `pushes/s` the transactions they came
//!   in (the control plane's rate is a target: it falls short when the store makes it wait);
//! - `live`: rules in the store;
//! - `pending`: removed or replaced rules, and old index versions, waiting for their grace
//!   period: no reader can see them any more, and they are freed once every guard older than
//!   the removal is dropped (always 0 for `rwlock`, which frees at once under its write lock);
//! - `heap`: heap in use by the whole process, counted by a counting allocator: the rules
//!   themselves, the store's slot pages, its index and values pending reclamation;
//! - `rss`: resident memory.
//!
//! At the end every rule is deleted (one push of `remove_kind` per method), `reclaim()` and
//! `shrink_to_fit()` run, and the heap is compared with the baseline taken before the first
//! rule was added: the memory check fails (exit 1) if anything is left beyond the store's
//! remaining slot pages and [`BOOKKEEPING_ALLOWANCE`]. Then, with no readers, the commit time
//! of one push of 1 000 adds is compared with 1 000 single adds.
//!
//! ```text
//! cargo run --release -p rulestore --example service -- [OPTIONS]
//!
//!   --seconds N          how long each store runs, more than 0, at most 3600 (default 10)
//!   --readers N          request threads, 1-1024 (default: one per core)
//!   --rules N            rules the control plane keeps in the table, 2-10000000
//!                        (default 10000; with --rules-file, the file's count)
//!   --pushes-per-s N     control-plane transactions per second, 0.01-1000000, or max for
//!                        no limit (default 100)
//!   --store epoch|rwlock epoch: RuleStore; rwlock: RwLock<Vec<Arc<Route>>>, the Go design
//!                        translated (default epoch)
//!   --compare            run both stores, then ratios, a routing check and both memory checks
//!   --plot PATH          write an SVG of the heap and the live rules over time
//!   --rules-file PATH    start from the rules in a JSON file
//!   --save-rules PATH    write the epoch store's snapshot at the end of the run
//!   --metrics-addr ADDR  serve the store's gauges at http://ADDR/metrics (loopback only)
//!   --quiet              no per-second lines
//!   -h, --help           the options with their defaults
//! ```
//!
//! Exit status: 0 when every check passed, 1 when a memory or routing check failed, 2 for a
//! bad argument or an unreadable rules file.
//!
//! `--store rwlock` runs the same workload on `RwLock<Vec<Arc<Route>>>`, the direct
//! translation of the Go design: a push takes the write lock once, a request the read lock.
//! `--compare` runs both, one after the other, prints a ratio line (epoch / rwlock), checks
//! that both stores route the same pushes identically, and gives each store its own memory
//! check line.
//!
//! `--rules-file` starts from the rules in a JSON file: either a store snapshot (as written by
//! `--save-rules`, which keeps rule ids) or a plain array of routes, such as
//! `[{"method": "Get", "prefix": "/svc1", "priority": 10, "backend": 3}]`.
//! `--save-rules` writes the store's snapshot at the end of the run, before the rules are
//! deleted. `--metrics-addr` serves the store's gauges (`rulestore_len`, `_capacity`,
//! `_vacant`, `_retired`, `_pending`, `_allocated_bytes`), refreshed every second, in the
//! Prometheus text format at `http://ADDR/metrics` (loopback addresses only). A scrape:
//!
//! ```text
//! $ curl -s http://127.0.0.1:9898/metrics
//! # TYPE rulestore_allocated_bytes gauge
//! rulestore_allocated_bytes 1048576
//!
//! # TYPE rulestore_capacity gauge
//! rulestore_capacity 16352
//!
//! # TYPE rulestore_len gauge
//! rulestore_len 5136
//!
//! # TYPE rulestore_pending gauge
//! rulestore_pending 285
//!
//! # TYPE rulestore_vacant gauge
//! rulestore_vacant 11134
//!
//! # TYPE rulestore_retired gauge
//! rulestore_retired 0
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rulestore::{Rule, RuleId, RuleStore, Transaction};

/// `println!` that ignores a closed stdout (`service | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

// ---------------------------------------------------------------------------------------
// Heap accounting: the counting allocator the benchmark report and the engine's memory test
// use too.

#[path = "../../../benches/src/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::in_use as heap_in_use;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

/// What the run may keep beyond the store's slot pages: crossbeam-epoch's own bookkeeping
/// (its ~2 KiB queue nodes that sit in threads' local bags and its global queue until they
/// are collected, and the registration of threads that first touched a table after the
/// baseline). Measured on the 2-vCPU VM: 38-135 KiB at the end of runs of 3-10 s with 100 to
/// 100 000 rules, against peaks of 0.5-35 MB; not proportional to the rules (see
/// docs/rulestore.md).
pub const BOOKKEEPING_ALLOWANCE: isize = 256 * 1024;

/// Resident set size from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    if cfg!(miri) {
        return 0; // no file system under Miri's isolation
    }
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

// ---------------------------------------------------------------------------------------
// Units.

/// `n` bytes in binary units, three significant digits: "512 B", "188 KiB", "1.23 MiB".
pub fn fmt_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let sign = if n < 0.0 { "-" } else { "" };
    let (mut value, mut unit) = (n.abs(), 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match (unit, value) {
        (0, _) => format!("{sign}{value:.0} B"),
        (_, v) if v < 10.0 => format!("{sign}{value:.2} {}", UNITS[unit]),
        (_, v) if v < 100.0 => format!("{sign}{value:.1} {}", UNITS[unit]),
        _ => format!("{sign}{value:.0} {}", UNITS[unit]),
    }
}

/// A difference in bytes, always signed: "+1.20 KiB", "-188 KiB", "+0 B".
pub fn fmt_signed_bytes(n: f64) -> String {
    if n < 0.0 { fmt_bytes(n) } else { format!("+{}", fmt_bytes(n)) }
}

/// A rate without its unit: "950", "2612", "294.9k", "1.23M".
fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2}M", per_s / 1e6)
    } else if per_s >= 1e4 {
        format!("{:.1}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// A duration in µs below a millisecond, in ms above.
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// `a / b` as "1.23x", or "n/a" when `b` is not positive.
fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}x", a / b) } else { "n/a".into() }
}

/// The column legend, printed once before the per-second lines.
const LEGEND: &str = "columns: t = seconds since the start; req/s = requests routed per second by all \
request threads; updates/s = rule changes (adds, replaces, removes) committed per second, in pushes/s \
transactions; live = rules in the store; pending = removed or replaced rules and old index versions \
waiting for their grace period: no reader can see them any more, they are freed once every guard older \
than the removal is dropped (always 0 for rwlock); heap = heap in use by the whole process (counting \
allocator: rules, slot pages, index, values pending reclamation); rss = resident memory";

// ---------------------------------------------------------------------------------------
// Rules and requests.

/// HTTP methods: a rule's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
}

const METHODS: [Method; 6] =
    [Method::Get, Method::Post, Method::Put, Method::Delete, Method::Patch, Method::Head];

/// A routing rule: requests with this method and a path under `prefix` go to `backend`.
/// Among matches the highest priority wins, and among equal priorities the rule added
/// earliest (a replace keeps the rule's place).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub method: Method,
    pub prefix: String,
    pub priority: u32,
    pub backend: u32,
}

impl Rule for Route {
    type Kind = Method;
    fn kind(&self) -> Method {
        self.method
    }
    fn priority(&self) -> i64 {
        self.priority.into()
    }
}

/// A small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform enough in `0..n`; `n` must not be 0.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn method(&mut self) -> Method {
        METHODS[self.below(METHODS.len() as u64) as usize]
    }
}

const SERVICES: u64 = 64;
const RESOURCES: u64 = 16;
/// Priority levels of the workload's routes: ties among matches are possible but rare.
const PRIORITIES: u64 = 1000;

fn random_route(rng: &mut Rng, priorities: u64) -> Route {
    let method = rng.method();
    let prefix = match rng.below(3) {
        0 => format!("/svc{}", rng.below(SERVICES)),
        _ => format!("/svc{}/r{}", rng.below(SERVICES), rng.below(RESOURCES)),
    };
    Route { method, prefix, priority: rng.below(priorities) as u32, backend: rng.below(100) as u32 }
}

fn random_request(rng: &mut Rng, path: &mut String) -> Method {
    use std::fmt::Write;
    path.clear();
    let _ = write!(path, "/svc{}/r{}/item{}", rng.below(SERVICES), rng.below(RESOURCES), rng.below(1000));
    rng.method()
}

/// The winner among `matches` given in the order the rules were added: the highest priority,
/// and among equal priorities the first (`reduce` keeps `best` unless `r` is strictly higher;
/// `max_by_key` would keep the last).
fn first_highest<'a>(matches: impl Iterator<Item = &'a Route>) -> Option<&'a Route> {
    matches.reduce(|best, r| if r.priority > best.priority { r } else { best })
}

// ---------------------------------------------------------------------------------------
// The two stores behind one interface.

/// One push's changes to a store; they become visible together when the push returns.
pub trait Push<Id> {
    /// Stages `rule`; its id is usable at once in the same push.
    fn add(&mut self, rule: Route) -> Id;
    /// Replaces a live rule, keeping its id and its place; `false` if `id` is not live.
    fn replace(&mut self, id: Id, rule: Route) -> bool;
    /// Removes a live rule; `false` if `id` is not live.
    fn remove(&mut self, id: Id) -> bool;
    /// Removes every rule of `kind`; returns how many.
    fn remove_kind(&mut self, kind: Method) -> usize;
}

/// What the service needs from a rule table.
pub trait Store: Send + Sync + Sized {
    type Id: Copy + Send + 'static;
    /// An empty store.
    fn empty() -> Self;
    /// One rule added on its own: a commit of one change.
    fn add(&self, rule: Route) -> Self::Id;
    /// Applies the changes `f` makes as one atomic push: a request routed before it returns
    /// sees none of them, one routed after sees all.
    fn push<T>(&self, f: impl FnOnce(&mut dyn Push<Self::Id>) -> T) -> T;
    /// The backend of the first highest-priority rule of `method` whose prefix matches.
    fn route(&self, method: Method, path: &str) -> Option<u32>;
    /// Rules in the store.
    fn live(&self) -> usize;
    fn pending(&self) -> usize;
    /// Quiesce: release everything removed (and give back emptied pages).
    fn quiesce(&self);
    /// Bytes of the store's own table storage (slot pages; the Vec's buffer).
    fn table_bytes(&self) -> usize;
    /// Sets the `rulestore_*` gauges (a no-op without a `metrics` recorder).
    fn publish_metrics(&self);
    /// A JSON snapshot of the store, if it can make one.
    fn snapshot_json(&self) -> Option<String>;
}

impl Push<RuleId> for Transaction<'_, Route> {
    fn add(&mut self, rule: Route) -> RuleId {
        Transaction::add(self, rule)
    }
    fn replace(&mut self, id: RuleId, rule: Route) -> bool {
        Transaction::replace(self, id, rule).is_ok()
    }
    fn remove(&mut self, id: RuleId) -> bool {
        Transaction::remove(self, id)
    }
    fn remove_kind(&mut self, kind: Method) -> usize {
        Transaction::remove_kind(self, &kind)
    }
}

impl Store for RuleStore<Route> {
    type Id = RuleId;
    fn empty() -> Self {
        RuleStore::new()
    }
    fn add(&self, rule: Route) -> RuleId {
        RuleStore::add(self, rule)
    }
    fn push<T>(&self, f: impl FnOnce(&mut dyn Push<RuleId>) -> T) -> T {
        let Ok(value) = self.transaction(|tx| Ok::<T, Infallible>(f(tx)));
        value
    }
    fn route(&self, method: Method, path: &str) -> Option<u32> {
        // `of_kind` yields by priority, highest first, then oldest first: the first match is
        // the winner.
        let rules = self.pin();
        rules.of_kind(&method).find(|(_, r)| path.starts_with(r.prefix.as_str())).map(|(_, r)| r.backend)
    }
    fn live(&self) -> usize {
        self.len()
    }
    fn pending(&self) -> usize {
        self.stats().pending
    }
    fn quiesce(&self) {
        self.reclaim();
        self.shrink_to_fit();
    }
    fn table_bytes(&self) -> usize {
        self.allocated_bytes()
    }
    fn publish_metrics(&self) {
        RuleStore::publish_metrics(self, "rulestore");
    }
    fn snapshot_json(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

/// The Go design, translated: a vector of shared rules behind a reader-writer lock, in the
/// order they were added. Ids are handed out in increasing order and a rule keeps its place
/// until removed, so the vector stays sorted by id and a lookup by id is a binary search;
/// stale ids miss.
#[derive(Debug, Default)]
pub struct RwLockStore {
    table: RwLock<RwTable>,
}

#[derive(Debug, Default)]
struct RwTable {
    rules: Vec<(u64, Arc<Route>)>,
    next: u64,
}

impl RwTable {
    fn position(&self, id: u64) -> Option<usize> {
        self.rules.binary_search_by_key(&id, |(i, _)| *i).ok()
    }
}

impl Push<u64> for RwTable {
    fn add(&mut self, rule: Route) -> u64 {
        self.next += 1;
        self.rules.push((self.next, Arc::new(rule)));
        self.next
    }
    fn replace(&mut self, id: u64, rule: Route) -> bool {
        let Some(at) = self.position(id) else { return false };
        self.rules[at].1 = Arc::new(rule);
        true
    }
    fn remove(&mut self, id: u64) -> bool {
        let Some(at) = self.position(id) else { return false };
        // `Vec::remove` drops the Arc: Rust cannot keep the Go slice's stale pointer.
        self.rules.remove(at);
        true
    }
    fn remove_kind(&mut self, kind: Method) -> usize {
        let before = self.rules.len();
        self.rules.retain(|(_, r)| r.method != kind);
        before - self.rules.len()
    }
}

impl RwLockStore {
    // A panic under the lock (a failed consistency assertion) must not cascade to readers.
    fn read(&self) -> RwLockReadGuard<'_, RwTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> RwLockWriteGuard<'_, RwTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for RwLockStore {
    type Id = u64;
    fn empty() -> Self {
        Self::default()
    }
    fn add(&self, rule: Route) -> u64 {
        self.write().add(rule)
    }
    fn push<T>(&self, f: impl FnOnce(&mut dyn Push<u64>) -> T) -> T {
        f(&mut *self.write())
    }
    fn route(&self, method: Method, path: &str) -> Option<u32> {
        let table = self.read();
        let matches = table.rules.iter().map(|(_, r)| &**r);
        first_highest(matches.filter(|r| r.method == method && path.starts_with(r.prefix.as_str())))
            .map(|r| r.backend)
    }
    fn live(&self) -> usize {
        self.read().rules.len()
    }
    fn pending(&self) -> usize {
        0
    }
    fn quiesce(&self) {
        self.write().rules.shrink_to_fit();
    }
    fn table_bytes(&self) -> usize {
        self.read().rules.capacity() * size_of::<(u64, Arc<Route>)>()
    }
    fn publish_metrics(&self) {
        metrics::gauge!("rulestore_len").set(self.live() as f64);
    }
    fn snapshot_json(&self) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// The control plane.

/// A push changes 1 to this many rules.
const MAX_CHANGES: u64 = 50;
/// Every this many pushes, one reloads a whole method.
const RELOAD_EVERY: u64 = 200;
const CONTROL_SEED: u64 = 0xDEAD_BEEF_CAFE_F00D;

/// The control plane's side: what it believes the table holds, and how to make the next push.
/// Its choices depend only on its seed and its own bookkeeping, never on id values, so two
/// stores fed by control planes with the same seed receive the same pushes.
struct ControlPlane<Id> {
    rng: Rng,
    ids: Vec<(Id, Method)>,
    target: usize,
    priorities: u64,
    pushes: u64,
}

impl<Id: Copy> ControlPlane<Id> {
    fn new(seed: u64, ids: Vec<(Id, Method)>, target: usize, priorities: u64) -> Self {
        Self { rng: Rng(seed), ids, target, priorities, pushes: 0 }
    }

    /// Fills the table up to the target in one push; returns the rules added.
    fn load<S: Store<Id = Id>>(&mut self, store: &S) -> usize {
        let missing = self.target.saturating_sub(self.ids.len());
        let (rng, ids, priorities) = (&mut self.rng, &mut self.ids, self.priorities);
        if missing > 0 {
            store.push(|p| {
                for _ in 0..missing {
                    let route = random_route(rng, priorities);
                    let method = route.method;
                    ids.push((p.add(route), method));
                }
            });
        }
        missing
    }

    /// Makes one push; returns the number of rule changes it committed.
    fn push<S: Store<Id = Id>>(&mut self, store: &S) -> u64 {
        self.pushes += 1;
        let (rng, ids, target, priorities) = (&mut self.rng, &mut self.ids, self.target, self.priorities);
        if self.pushes.is_multiple_of(RELOAD_EVERY) {
            // Reload a whole method, as the Go service's Del(typ) followed by its new rules.
            let kind = rng.method();
            let expected = ids.iter().filter(|(_, m)| *m == kind).count();
            ids.retain(|(_, m)| *m != kind);
            return store.push(|p| {
                let removed = p.remove_kind(kind);
                assert_eq!(removed, expected, "remove_kind removed the wrong rules");
                for _ in 0..removed {
                    let route = Route { method: kind, ..random_route(rng, priorities) };
                    ids.push((p.add(route), kind));
                }
                1 + removed as u64
            });
        }
        let changes = 1 + rng.below(MAX_CHANGES);
        store.push(|p| {
            for _ in 0..changes {
                let roll = rng.below(10);
                if roll < 4 && !ids.is_empty() {
                    let at = rng.below(ids.len() as u64) as usize;
                    let route = random_route(rng, priorities);
                    let method = route.method;
                    assert!(p.replace(ids[at].0, route), "a live rule could not be replaced");
                    ids[at].1 = method;
                } else if ids.len() < target || ids.is_empty() {
                    let route = random_route(rng, priorities);
                    let method = route.method;
                    ids.push((p.add(route), method));
                } else {
                    let at = rng.below(ids.len() as u64) as usize;
                    let (id, _) = ids.swap_remove(at);
                    assert!(p.remove(id), "a live rule could not be removed");
                }
            }
        });
        changes
    }
}

/// Sleeps until `deadline`, waking every 50 ms to check `stop`; `false` if it was set.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// `--seconds`: default and upper limit (so every per-second buffer stays small).
pub const DEFAULT_SECONDS: f64 = 10.0;
pub const MAX_SECONDS: f64 = 3600.0;
/// `--rules`: default and accepted range.
pub const DEFAULT_RULES: usize = 10_000;
pub const RULES_RANGE: RangeInclusive<usize> = 2..=10_000_000;
/// `--readers`: accepted range (the default is one per core).
pub const READERS_RANGE: RangeInclusive<usize> = 1..=1024;
/// `--pushes-per-s`: default and accepted range (or `max`).
pub const DEFAULT_PUSHES_PER_S: f64 = 100.0;
pub const PUSHES_PER_S_RANGE: RangeInclusive<f64> = 0.01..=1_000_000.0;
/// The commit-time comparison: one push of this many adds against this many single adds.
pub const COMMIT_BENCH_RULES: usize = 1000;

/// Command-line settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How long each store runs.
    pub seconds: f64,
    /// Request threads.
    pub readers: usize,
    /// Rules the control plane keeps in the table (0: as many as the rules file holds).
    pub rules: usize,
    /// Control-plane pushes per second; `f64::INFINITY` for no limit.
    pub pushes_per_s: f64,
    /// `epoch` or `rwlock`.
    pub store: String,
    /// Run both stores.
    pub compare: bool,
    /// Write an SVG plot here.
    pub plot: Option<String>,
    /// Print the per-second lines.
    pub verbose: bool,
    /// Start from the rules in this JSON file.
    pub rules_file: Option<String>,
    /// Write the store's snapshot here at the end of the run.
    pub save_rules: Option<String>,
    /// Serve the gauges in the Prometheus format on this loopback address.
    pub metrics_addr: Option<String>,
}

fn default_readers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).min(*READERS_RANGE.end())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seconds: DEFAULT_SECONDS,
            readers: default_readers(),
            rules: DEFAULT_RULES,
            pushes_per_s: DEFAULT_PUSHES_PER_S,
            store: "epoch".into(),
            compare: false,
            plot: None,
            verbose: true,
            rules_file: None,
            save_rules: None,
            metrics_addr: None,
        }
    }
}

impl Config {
    /// The control plane's rate in words: "100 pushes/s" or "full-speed pushes".
    fn push_rate(&self) -> String {
        if self.pushes_per_s.is_finite() {
            format!("{} pushes/s", self.pushes_per_s)
        } else {
            "full-speed pushes".into()
        }
    }
}

/// One per-second sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub t: f64,
    pub requests_per_s: f64,
    pub updates_per_s: f64,
    pub pushes_per_s: f64,
    pub live: usize,
    pub pending: usize,
    pub heap: isize,
    pub rss: u64,
}

/// The commit time of one push of `rules` adds against `rules` single adds (best of a few
/// rounds, each into a new empty store, with no readers).
#[derive(Clone, Copy, Debug)]
pub struct CommitBench {
    pub rules: usize,
    pub one_push: Duration,
    pub single_adds: Duration,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    pub store: String,
    pub requests: u64,
    /// Rule changes committed by the control plane's pushes (not counting the initial load).
    pub updates: u64,
    pub pushes: u64,
    pub seconds: f64,
    /// Rules added by the initial load (one push), and how long its commit took.
    pub initial_load: usize,
    pub initial_load_time: Duration,
    /// Highest heap in use seen (checked every 50 ms).
    pub peak_heap: isize,
    pub baseline_heap: isize,
    pub final_heap: isize,
    /// Table storage still held at the end (slot pages, or the Vec's buffer).
    pub final_table_bytes: usize,
    pub table_bytes_at_baseline: usize,
    pub commit: CommitBench,
    pub samples: Vec<Sample>,
}

impl Summary {
    /// Bytes still allocated at the end beyond the baseline and the store's own remaining
    /// table storage.
    pub fn beyond_tables(&self) -> isize {
        self.final_heap
            - self.baseline_heap
            - (self.final_table_bytes as isize - self.table_bytes_at_baseline as isize)
    }

    /// Whether the end-of-run memory check passes: nothing beyond the remaining slot pages
    /// except the reclamation bookkeeping allowance.
    pub fn memory_check_passes(&self) -> bool {
        self.beyond_tables() <= BOOKKEEPING_ALLOWANCE
    }

    /// The highest heap in use above the baseline: what the rules and the store cost.
    pub fn peak_above_baseline(&self) -> isize {
        self.peak_heap - self.baseline_heap
    }

    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn updates_per_s(&self) -> f64 {
        self.updates as f64 / self.seconds
    }

    fn report(&self) -> String {
        let tables = self.final_table_bytes as f64 - self.table_bytes_at_baseline as f64;
        format!(
            "summary store={}: {} req/s, {} updates/s in {:.0} pushes/s over {:.1} s; {}; heap: baseline \
             {}, peak {} above it, at the end {} ({} in the store's remaining {}, {} other)",
            self.store,
            fmt_rate(self.requests_per_s()),
            fmt_rate(self.updates_per_s()),
            self.pushes as f64 / self.seconds,
            self.seconds,
            match self.initial_load {
                0 => "no initial load (the rules file filled the table)".to_owned(),
                n =>
                    format!("initial load of {n} rules in one push: {}", fmt_duration(self.initial_load_time)),
            },
            fmt_bytes(self.baseline_heap as f64),
            fmt_bytes(self.peak_above_baseline() as f64),
            fmt_signed_bytes((self.final_heap - self.baseline_heap) as f64),
            fmt_signed_bytes(tables),
            if self.store == "rwlock" { "Vec buffer" } else { "slot pages" },
            fmt_signed_bytes(self.beyond_tables() as f64),
        )
    }

    fn commit_report(&self) -> String {
        let c = &self.commit;
        let (batch, singles) = match self.store.as_str() {
            "rwlock" => ("under one write lock", "single adds (a write lock each)"),
            _ => ("in one transaction", "single adds (a commit each)"),
        };
        format!(
            "commit store={}: {n} adds {batch} {}, {n} {singles} {}: {} (target: under 2x)",
            self.store,
            fmt_duration(c.one_push),
            fmt_duration(c.single_adds),
            fmt_ratio(c.one_push.as_secs_f64(), c.single_adds.as_secs_f64()),
            n = c.rules,
        )
    }

    fn memory_check_report(&self) -> String {
        let (verdict, what) = match (self.memory_check_passes(), self.store.as_str()) {
            (true, "rwlock") => ("passed", "the Vec's buffer"),
            (true, _) => ("passed", "the slot pages"),
            (false, "rwlock") => ("FAILED", "the Vec's buffer"),
            (false, _) => ("FAILED", "the slot pages"),
        };
        format!(
            "memory check store={}: {verdict}: after deleting every rule, {} beyond {what} (allowance {} of \
             reclamation bookkeeping; peak was {} above the baseline)",
            self.store,
            fmt_signed_bytes(self.beyond_tables() as f64),
            fmt_bytes(BOOKKEEPING_ALLOWANCE as f64),
            fmt_bytes(self.peak_above_baseline() as f64),
        )
    }
}

/// Counters and barriers shared by a run's threads.
struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    updates: AtomicU64,
    pushes: AtomicU64,
    /// Every thread has registered with the store's reclamation: the baseline is taken next.
    ready: Barrier,
    /// The baseline is taken: go.
    go: Barrier,
}

fn run_store<S: Store + 'static>(store: Arc<S>, initial: Vec<(S::Id, Method)>, config: &Config) -> Summary {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        updates: AtomicU64::new(0),
        pushes: AtomicU64::new(0),
        ready: Barrier::new(config.readers + 2),
        go: Barrier::new(config.readers + 2),
    });
    // `seconds` is validated (at most MAX_SECONDS), so this is small.
    let mut samples = Vec::with_capacity(config.seconds.ceil() as usize + 3);

    let mut readers = Vec::with_capacity(config.readers);
    for r in 0..config.readers {
        let (store, shared) = (store.clone(), shared.clone());
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (r as u64 + 1));
            let mut path = String::with_capacity(64);
            // Registers this thread with the store's reclamation before the baseline.
            let method = random_request(&mut rng, &mut path);
            std::hint::black_box(store.route(method, &path));
            shared.ready.wait();
            shared.go.wait();
            let mut local = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let method = random_request(&mut rng, &mut path);
                    std::hint::black_box(store.route(method, &path));
                }
                local += 64;
                if local.is_multiple_of(4096) {
                    shared.requests.fetch_add(4096, Ordering::Relaxed);
                }
            }
            shared.requests.fetch_add(local % 4096, Ordering::Relaxed);
        }));
    }

    let control = {
        let (store, shared) = (store.clone(), shared.clone());
        let (target, rate) = (config.rules, config.pushes_per_s);
        std::thread::spawn(move || {
            let mut plane = ControlPlane::new(CONTROL_SEED, initial, target, PRIORITIES);
            // The control plane's own bookkeeping: allocated before the baseline, large enough
            // for the whole run (adds only fill up to the target; a reload re-adds what it
            // removed), and handed back to be dropped after the final measurement, so it
            // neither adds to nor hides anything from the memory check.
            let capacity = plane.ids.len().max(target) + 1;
            plane.ids.reserve(capacity - plane.ids.len());
            // Registers this thread with the store's reclamation before the baseline.
            let probe = store.push(|p| p.add(random_route(&mut Rng(1), PRIORITIES)));
            store.push(|p| p.remove(probe));
            shared.ready.wait();
            shared.go.wait();
            let started = Instant::now();
            let loaded = plane.load(&*store);
            let load_time = started.elapsed();
            // A rate limiter, not synchronisation: pushes are due every `period`; a control
            // plane more than a second late (a store that makes it wait) does not burst.
            let period = rate.is_finite().then(|| Duration::from_secs_f64(1.0 / rate));
            let mut due = Instant::now();
            // The first push comes right after the load, so even a run shorter than the load
            // pushes once.
            let changes = plane.push(&*store);
            shared.updates.fetch_add(changes, Ordering::Relaxed);
            shared.pushes.fetch_add(1, Ordering::Relaxed);
            while !shared.stop.load(Ordering::Relaxed) {
                if let Some(period) = period {
                    due += period;
                    if !sleep_until(due, &shared.stop) {
                        break;
                    }
                    if let Some(floor) = Instant::now().checked_sub(Duration::from_secs(1)) {
                        due = due.max(floor);
                    }
                }
                let changes = plane.push(&*store);
                shared.updates.fetch_add(changes, Ordering::Relaxed);
                shared.pushes.fetch_add(1, Ordering::Relaxed);
            }
            (plane.ids, loaded, load_time)
        })
    };

    shared.ready.wait();
    // Release the probe, register the gauges (a no-op without a recorder), then the baseline:
    // everything the run allocates up front exists by now; the rules do not.
    store.quiesce();
    store.publish_metrics();
    let table_bytes_at_baseline = store.table_bytes();
    let baseline_heap = heap_in_use();
    // The t = 0 point of the plot: the baseline, before the first push.
    let (live, pending, rss) = (store.live(), store.pending(), rss_bytes());
    samples.push(Sample {
        t: 0.0,
        requests_per_s: 0.0,
        updates_per_s: 0.0,
        pushes_per_s: 0.0,
        live,
        pending,
        heap: baseline_heap,
        rss,
    });
    shared.go.wait();
    let start = Instant::now();
    let mut peak_heap = baseline_heap;
    let (mut last_requests, mut last_updates, mut last_pushes, mut last_t) = (0, 0, 0, 0.0);
    while last_t < config.seconds {
        let next = (last_t + 1.0).min(config.seconds);
        // The heap is checked every 50 ms for the peak; a line is printed every second.
        loop {
            peak_heap = peak_heap.max(heap_in_use());
            let now = start.elapsed().as_secs_f64();
            if now >= next {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64((next - now).min(0.05)));
        }
        let t = start.elapsed().as_secs_f64();
        let r = shared.requests.load(Ordering::Relaxed);
        let u = shared.updates.load(Ordering::Relaxed);
        let p = shared.pushes.load(Ordering::Relaxed);
        let dt = t - last_t;
        let sample = Sample {
            t,
            requests_per_s: (r - last_requests) as f64 / dt,
            updates_per_s: (u - last_updates) as f64 / dt,
            pushes_per_s: (p - last_pushes) as f64 / dt,
            live: store.live(),
            pending: store.pending(),
            heap: heap_in_use(),
            rss: rss_bytes(),
        };
        (last_requests, last_updates, last_pushes, last_t) = (r, u, p, t);
        store.publish_metrics();
        peak_heap = peak_heap.max(sample.heap);
        if config.verbose {
            say!(
                "t={:>6.1}s {:<6} {:>8} req/s {:>8} updates/s {:>6.0} pushes/s  live {:>7}  pending {:>6}  \
                 heap {:>10}  rss {:>10}",
                sample.t,
                config.store,
                fmt_rate(sample.requests_per_s),
                fmt_rate(sample.updates_per_s),
                sample.pushes_per_s,
                sample.live,
                sample.pending,
                fmt_bytes(sample.heap as f64),
                fmt_bytes(sample.rss as f64),
            );
        }
        if samples.len() < samples.capacity() {
            samples.push(sample);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    for t in readers {
        t.join().expect("a request thread panicked");
    }
    let (ids, initial_load, initial_load_time) = control.join().expect("the control plane panicked");
    let live = ids.len();
    assert_eq!(store.live(), live, "the store's count disagrees with the control plane's");
    if let Some(path) = &config.save_rules {
        // Readers are stopped: release what the last pushes removed first, so the snapshot
        // holds only live rules (a removed rule not yet freed is saved as a null entry).
        store.quiesce();
        match store.snapshot_json().map(|json| std::fs::write(path, json)) {
            Some(Ok(())) => say!("rules saved to {path} ({live} rules)"),
            Some(Err(e)) => eprintln!("could not save the rules to {path}: {e}"),
            None => eprintln!("store={} cannot save a snapshot", config.store),
        }
    }

    // Delete every rule in one push, kind by kind, then release what they held.
    let removed: usize = store.push(|p| METHODS.iter().map(|&m| p.remove_kind(m)).sum());
    assert_eq!(removed, live, "deleting every kind removed the wrong number of rules");
    store.quiesce();
    let final_heap = heap_in_use();
    let final_table_bytes = store.table_bytes();
    drop((store, ids));
    // Measured after the memory figures, so its stores do not count in them.
    let commit = if cfg!(miri) { bench_commit::<S>(10, 1) } else { bench_commit::<S>(COMMIT_BENCH_RULES, 5) };
    Summary {
        store: config.store.clone(),
        requests: shared.requests.load(Ordering::Relaxed),
        updates: shared.updates.load(Ordering::Relaxed),
        pushes: shared.pushes.load(Ordering::Relaxed),
        seconds,
        initial_load,
        initial_load_time,
        peak_heap,
        baseline_heap,
        final_heap,
        final_table_bytes,
        table_bytes_at_baseline,
        commit,
        samples,
    }
}

/// The commit time of one push of `rules` adds against `rules` single adds, best of `rounds`,
/// each into a new empty store.
pub fn bench_commit<S: Store>(rules: usize, rounds: usize) -> CommitBench {
    let mut rng = Rng(0x243F_6A88_85A3_08D3);
    let mut routes = || (0..rules).map(|_| random_route(&mut rng, PRIORITIES)).collect::<Vec<_>>();
    let (mut one_push, mut single_adds) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds.max(1) {
        let (batch, store) = (routes(), S::empty());
        let started = Instant::now();
        store.push(|p| {
            for route in batch {
                p.add(route);
            }
        });
        one_push = one_push.min(started.elapsed());
        drop(store);
        let (batch, store) = (routes(), S::empty());
        let started = Instant::now();
        for route in batch {
            store.add(route);
        }
        single_adds = single_adds.min(started.elapsed());
    }
    CommitBench { rules, one_push, single_adds }
}

/// What `routing_check` found: every request agreed, and how many were decided by the tie-break
/// (two or more matching rules at the top priority).
#[derive(Clone, Copy, Debug)]
pub struct RoutingCheck {
    pub rules: usize,
    pub pushes: usize,
    pub requests: usize,
    pub ties: usize,
}

/// Feeds both stores the same pushes (with few priority levels, so ties are common), then
/// routes `requests` requests through both: `Err` names the first request they route
/// differently.
pub fn routing_check(rules: usize, pushes: usize, requests: usize) -> Result<RoutingCheck, String> {
    const LEVELS: u64 = 4;
    let (epoch, rwlock) = (RuleStore::<Route>::new(), RwLockStore::empty());
    let mut a = ControlPlane::new(CONTROL_SEED, Vec::new(), rules, LEVELS);
    let mut b = ControlPlane::new(CONTROL_SEED, Vec::new(), rules, LEVELS);
    a.load(&epoch);
    b.load(&rwlock);
    for _ in 0..pushes {
        a.push(&epoch);
        b.push(&rwlock);
    }
    let (mut rng, mut path, mut ties) = (Rng(0x1319_8A2E_0370_7344), String::with_capacity(64), 0);
    let table = rwlock.read();
    for i in 0..requests {
        let method = random_request(&mut rng, &mut path);
        let (x, y) = (epoch.route(method, &path), rwlock_route(&table, method, &path));
        if x != y {
            return Err(format!(
                "request {i} ({method:?} {path}): the epoch store chose backend {x:?}, the rwlock store {y:?}"
            ));
        }
        let matches = table.rules.iter().filter(|(_, r)| r.method == method && path.starts_with(&r.prefix));
        let top = matches.clone().map(|(_, r)| r.priority).max();
        if matches.filter(|(_, r)| Some(r.priority) == top).count() > 1 {
            ties += 1;
        }
    }
    Ok(RoutingCheck { rules, pushes, requests, ties })
}

/// `RwLockStore::route` on a table already locked.
fn rwlock_route(table: &RwTable, method: Method, path: &str) -> Option<u32> {
    let matches = table.rules.iter().map(|(_, r)| &**r);
    first_highest(matches.filter(|r| r.method == method && path.starts_with(r.prefix.as_str())))
        .map(|r| r.backend)
}

/// Reads a rules file: a store snapshot (ids kept) or a JSON array of routes.
pub fn load_rules(path: &str) -> Result<RuleStore<Route>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if text.trim_start().starts_with('[') {
        let routes: Vec<Route> = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let store = RuleStore::new();
        // One transaction: a request would see the whole file or none of it.
        let Ok(()) = store.transaction(|tx| {
            for route in routes {
                tx.add(route);
            }
            Ok::<(), Infallible>(())
        });
        Ok(store)
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }
}

/// Runs one store per `config.store`, starting from the rules of `initial` (a loaded rules
/// file) if any.
pub fn run_with(config: &Config, initial: Option<&RuleStore<Route>>) -> Summary {
    match config.store.as_str() {
        "rwlock" => {
            let store = RwLockStore::empty();
            // `iter` yields by priority, then oldest first: equal priorities keep their order.
            let ids: Vec<(u64, Method)> = match initial {
                Some(initial) => {
                    store.push(|p| initial.pin().iter().map(|(_, r)| (p.add(r.clone()), r.method)).collect())
                }
                None => Vec::new(),
            };
            run_store(Arc::new(store), ids, config)
        }
        _ => {
            // A copy of the loaded store through its snapshot, so every id is kept.
            let store: RuleStore<Route> = match initial {
                Some(initial) => serde_json::to_string(initial)
                    .and_then(|json| serde_json::from_str(&json))
                    .expect("a store's own snapshot restores"),
                None => RuleStore::new(),
            };
            let ids = store.pin().iter().map(|(id, route)| (id, route.method)).collect();
            run_store(Arc::new(store), ids, config)
        }
    }
}

/// Runs one store per `config.store`, from scratch.
pub fn run(config: &Config) -> Summary {
    run_with(config, None)
}

// ---------------------------------------------------------------------------------------
// Metrics, the plot, the command line.

/// Serves the Prometheus scrape of `handle` at `addr` (loopback only) on a background thread.
fn serve_metrics(addr: &str, handle: metrics_exporter_prometheus::PrometheusHandle) -> Result<(), String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if !local.ip().is_loopback() {
        return Err(format!("--metrics-addr {addr}: only loopback addresses are served"));
    }
    say!("metrics: http://{local}/metrics");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let body = handle.render();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

fn plot(path: &str, runs: &[Summary], config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    const MIB: f64 = 1024.0 * 1024.0;
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "service example: {} rules, {} request threads, control plane {} of 1-{MAX_CHANGES} changes",
        config.rules,
        config.readers,
        config.push_rate()
    );
    let root = root.titled(&title, ("sans-serif", 17))?;
    let (upper, lower) = root.split_vertically(380);
    let t_max = runs.iter().flat_map(|r| r.samples.last()).map(|s| s.t).fold(1.0, f64::max);
    let above = |run: &Summary, s: &Sample| (s.heap - run.baseline_heap) as f64 / MIB;
    let heap_max = runs.iter().flat_map(|r| r.samples.iter().map(move |s| above(r, s))).fold(0.1, f64::max);
    let live_max = runs.iter().flat_map(|r| r.samples.iter().map(|s| s.live as f64)).fold(1.0, f64::max);
    let colors = [RED, BLUE];
    let label = |store: &str| match store {
        "rwlock" => "rwlock (RwLock<Vec>)",
        _ => "epoch (RuleStore)",
    };
    let mut heap_chart = ChartBuilder::on(&upper)
        .caption(
            "Heap in use by the whole process, above its baseline before the first rule (counting allocator): \
             the rules themselves, the store's slot pages, its index, and values pending reclamation",
            ("sans-serif", 13),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..heap_max * 1.1)?;
    heap_chart.configure_mesh().x_desc("seconds since the start").y_desc("MiB above baseline").draw()?;
    for (run, color) in runs.iter().zip(colors) {
        heap_chart
            .draw_series(LineSeries::new(run.samples.iter().map(|s| (s.t, above(run, s))), color))?
            .label(label(&run.store))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    heap_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    let mut live_chart = ChartBuilder::on(&lower)
        .caption("Live rules (the control plane keeps about --rules)", ("sans-serif", 13))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..live_max * 1.1)?;
    live_chart.configure_mesh().x_desc("seconds since the start").y_desc("rules").draw()?;
    for (run, color) in runs.iter().zip(colors) {
        live_chart.draw_series(LineSeries::new(run.samples.iter().map(|s| (s.t, s.live as f64)), color))?;
    }
    root.present()?;
    Ok(())
}

/// The outcome of parsing the command line other than a `Config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// `-h` or `--help`: print `usage()` and exit 0.
    Help,
    /// A bad argument: print the message and exit 2.
    Invalid(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Help => f.write_str(&usage()),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

/// The `--help` text, with each option's default.
pub fn usage() -> String {
    format!(
        "The rule store's main job: request threads route synthetic requests (method + path) against a
table of routing rules as fast as they can, while a control plane pushes rule changes in transactions.
One line per second; at the end every rule is deleted and the heap must return to its baseline.

usage: cargo run --release -p rulestore --example service -- [OPTIONS]

options:
  --seconds N          how long each store runs, in seconds: more than 0, at most {max_seconds}
                       (default {DEFAULT_SECONDS})
  --readers N          request threads, each routing as fast as it can: {r0}-{r1}
                       (default: one per core, here {readers})
  --rules N            rules the control plane keeps in the table: {n0}-{n1}
                       (default {DEFAULT_RULES}; with --rules-file, the file's count)
  --pushes-per-s N     control-plane pushes per second, each one transaction of 1-{MAX_CHANGES} rule
                       changes (adds, replaces, removes; every {RELOAD_EVERY}th push reloads a whole method):
                       {p0}-{p1}, or max for no limit (default {DEFAULT_PUSHES_PER_S})
  --store epoch|rwlock the rule table: epoch = RuleStore (lock-free readers, epoch reclamation);
                       rwlock = RwLock<Vec<Arc<Route>>>, the Go design translated (default epoch)
  --compare            run both stores one after the other, then print the epoch/rwlock ratios, check
                       that both route the same pushes identically, and a memory check per store
  --plot PATH          write an SVG of the heap in use (whole process, above the baseline) and of the
                       live rules over time (default: no plot)
  --rules-file PATH    start from the rules in a JSON file: a --save-rules snapshot or an array of
                       routes such as crates/rulestore/examples/rules.json (default: start empty)
  --save-rules PATH    write the epoch store's snapshot (JSON, ids kept) at the end of the run,
                       before the rules are deleted (default: not saved)
  --metrics-addr ADDR  serve the store's gauges in the Prometheus text format at http://ADDR/metrics,
                       loopback only, e.g. 127.0.0.1:9898 (default: not served)
  --quiet              no per-second lines (default: one line per second)
  -h, --help           this help

Columns of the per-second lines: req/s = requests routed per second by all request threads; updates/s =
rule changes committed per second, in pushes/s transactions; live = rules in the store; pending = removed or
replaced rules and old index versions waiting for their grace period (no reader can see them any more; they
are freed once every guard older than the removal is dropped); heap = heap in use by the whole process
(counting allocator); rss = resident memory.

exit status: 0 all checks passed; 1 a memory check (or, with --compare, the routing check) failed;
2 a bad argument or an unreadable rules file",
        max_seconds = MAX_SECONDS,
        r0 = READERS_RANGE.start(),
        r1 = READERS_RANGE.end(),
        readers = default_readers(),
        n0 = RULES_RANGE.start(),
        n1 = RULES_RANGE.end(),
        p0 = PUSHES_PER_S_RANGE.start(),
        p1 = PUSHES_PER_S_RANGE.end(),
    )
}

fn invalid(message: String) -> ArgError {
    ArgError::Invalid(message)
}

/// A whole number in `range`.
fn parse_count(flag: &str, text: &str, range: &RangeInclusive<usize>) -> Result<usize, ArgError> {
    match text.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(format!(
            "{flag}: expected a whole number from {} to {}, got {text:?}",
            range.start(),
            range.end()
        ))),
    }
}

/// A finite number in `range` (`min_exclusive`: the start itself is not allowed).
fn parse_number(
    flag: &str,
    text: &str,
    range: &RangeInclusive<f64>,
    min_exclusive: bool,
    what: &str,
) -> Result<f64, ArgError> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && range.contains(&x) && !(min_exclusive && x == *range.start()) => Ok(x),
        _ => Err(invalid(format!("{flag}: expected {what}, got {text:?}"))),
    }
}

/// `IP:PORT` or `localhost:PORT`, on a loopback address.
fn parse_metrics_addr(text: &str) -> Result<String, ArgError> {
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port.parse::<u16>().ok().map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        None => text.parse::<SocketAddr>().ok(),
    };
    match addr {
        Some(addr) if addr.ip().is_loopback() => Ok(addr.to_string()),
        Some(_) => Err(invalid(format!("--metrics-addr: only loopback addresses are served, got {text:?}"))),
        None => {
            Err(invalid(format!("--metrics-addr: expected IP:PORT such as 127.0.0.1:9898, got {text:?}")))
        }
    }
}

/// Parses the command line (without the program name). Every value is checked here, so a
/// `Config` that comes out of it runs.
pub fn parse_args_from<I, A>(args: I) -> Result<Config, ArgError>
where
    I: IntoIterator<Item = A>,
    A: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    // Help wins over any error elsewhere on the line.
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Err(ArgError::Help);
    }
    let mut config = Config::default();
    let (mut explicit_rules, mut explicit_store) = (false, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        let takes_value = matches!(
            flag.as_str(),
            "--seconds"
                | "--readers"
                | "--rules"
                | "--pushes-per-s"
                | "--store"
                | "--plot"
                | "--rules-file"
                | "--save-rules"
                | "--metrics-addr"
        );
        let value = if takes_value {
            match inline.or_else(|| args.next()) {
                Some(value) if !value.is_empty() && !value.starts_with("--") => value,
                _ => return Err(invalid(format!("{flag} needs a value (see --help)"))),
            }
        } else if inline.is_some() {
            return Err(invalid(format!("{flag} takes no value")));
        } else {
            String::new()
        };
        match flag.as_str() {
            "--seconds" => {
                let what = format!("a number of seconds, more than 0 and at most {MAX_SECONDS}");
                config.seconds = parse_number(&flag, &value, &(0.0..=MAX_SECONDS), true, &what)?;
            }
            "--readers" => config.readers = parse_count(&flag, &value, &READERS_RANGE)?,
            "--rules" => {
                config.rules = parse_count(&flag, &value, &RULES_RANGE)?;
                explicit_rules = true;
            }
            "--pushes-per-s" => {
                config.pushes_per_s = if value == "max" {
                    f64::INFINITY
                } else {
                    let what = format!(
                        "pushes per second from {} to {}, or max",
                        PUSHES_PER_S_RANGE.start(),
                        PUSHES_PER_S_RANGE.end()
                    );
                    parse_number(&flag, &value, &PUSHES_PER_S_RANGE, false, &what)?
                };
            }
            "--store" => {
                if value != "epoch" && value != "rwlock" {
                    return Err(invalid(format!("--store: expected epoch or rwlock, got {value:?}")));
                }
                config.store = value;
                explicit_store = true;
            }
            "--plot" => config.plot = Some(value),
            "--rules-file" => config.rules_file = Some(value),
            "--save-rules" => config.save_rules = Some(value),
            "--metrics-addr" => config.metrics_addr = Some(parse_metrics_addr(&value)?),
            "--compare" => config.compare = true,
            "--quiet" => config.verbose = false,
            "-h" | "--help" => return Err(ArgError::Help),
            other => return Err(invalid(format!("unknown argument {other:?} (see --help)"))),
        }
    }
    if config.compare && explicit_store {
        return Err(invalid("--compare runs both stores: leave out --store".into()));
    }
    if config.save_rules.is_some() && config.store == "rwlock" {
        return Err(invalid("--save-rules needs the epoch store: rwlock cannot save a snapshot".into()));
    }
    if config.rules_file.is_some() && !explicit_rules {
        config.rules = 0; // filled in from the file
    }
    Ok(config)
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let parsed = match args {
        Ok(args) => parse_args_from(args),
        Err(bad) => Err(ArgError::Invalid(format!("argument {bad:?} is not valid UTF-8"))),
    };
    let mut config = match parsed {
        Ok(config) => config,
        Err(ArgError::Help) => {
            say!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(ArgError::Invalid(message)) => {
            eprintln!("service: {message}");
            return ExitCode::from(2);
        }
    };
    let initial = match &config.rules_file {
        None => None,
        Some(path) => match load_rules(path) {
            Ok(store) => {
                say!("loaded {} rules from {path}", store.len());
                if config.rules == 0 {
                    config.rules = store.len().max(*RULES_RANGE.start());
                }
                Some(store)
            }
            Err(message) => {
                eprintln!("service: cannot load the rules: {message}");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(addr) = &config.metrics_addr {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("service: a metrics recorder is already installed");
            return ExitCode::FAILURE;
        }
        if let Err(message) = serve_metrics(addr, handle) {
            eprintln!("service: {message}");
            return ExitCode::from(2);
        }
    }
    let stores: Vec<&str> =
        if config.compare { vec!["epoch", "rwlock"] } else { vec![config.store.as_str()] };
    let headline = format!(
        "store={} rules={} request threads={} (full speed) control plane: {} of 1-{MAX_CHANGES} changes \
         (every {RELOAD_EVERY}th reloads a whole method); {} s per store, {} cores",
        stores.join(" then "),
        config.rules,
        config.readers,
        config.push_rate(),
        config.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    say!("{headline}");
    if config.verbose {
        say!("{LEGEND}");
    }
    let mut runs = Vec::with_capacity(stores.len());
    for store in &stores {
        // Only the epoch store can save a snapshot.
        let save_rules = config.save_rules.clone().filter(|_| *store == "epoch");
        let run_config = Config { store: (*store).to_owned(), save_rules, ..config.clone() };
        let summary = run_with(&run_config, initial.as_ref());
        say!("{}", summary.report());
        say!("{}", summary.commit_report());
        runs.push(summary);
    }
    let mut passed = true;
    if let [epoch, rwlock] = runs.as_slice() {
        let rate_note = if config.pushes_per_s.is_finite() {
            format!(
                " (both held to {} by the control plane; --pushes-per-s max measures throughput)",
                config.push_rate()
            )
        } else {
            String::new()
        };
        say!(
            "ratio epoch/rwlock: requests/s {}, updates/s {}{rate_note}, peak heap above baseline {}",
            fmt_ratio(epoch.requests_per_s(), rwlock.requests_per_s()),
            fmt_ratio(epoch.updates_per_s(), rwlock.updates_per_s()),
            fmt_ratio(epoch.peak_above_baseline() as f64, rwlock.peak_above_baseline() as f64),
        );
        let (rules, pushes, requests) = if cfg!(miri) { (20, 5, 50) } else { (2000, 450, 20_000) };
        match routing_check(rules, pushes, requests) {
            Ok(c) => say!(
                "routing check: passed: both stores chose the same backend for all {} requests, {} of them \
                 decided among equal top priorities ({} rules with 4 priority levels, after {} pushes)",
                c.requests,
                c.ties,
                c.rules,
                c.pushes
            ),
            Err(message) => {
                say!("routing check: FAILED: {message}");
                passed = false;
            }
        }
    }
    if let Some(path) = &config.plot {
        match plot(path, &runs, &config) {
            Ok(()) => say!("plot written to {path}"),
            Err(e) => {
                eprintln!("service: plot failed: {e}");
                passed = false;
            }
        }
    }
    for summary in &runs {
        say!("{}", summary.memory_check_report());
        passed &= summary.memory_check_passes();
    }
    if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
