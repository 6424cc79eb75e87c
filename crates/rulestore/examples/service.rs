//! A request-matching service under rule churn: the leak story, replayed without the leak.
//!
//! Request threads match synthetic requests (method + path, highest priority wins) against
//! the rules while a control-plane thread adds, replaces and deletes rules, including whole
//! kinds at once (the Go service's `Del(typ)`). Every second one line: requests/s, rule
//! updates/s, live rules, values pending reclamation, heap in use (a counting allocator)
//! and RSS. At the end every rule is deleted, `reclaim()` and `shrink_to_fit()` run, and the
//! heap in use is compared with the baseline taken before the first rule was added: the run
//! fails (exit 1) if anything is left beyond the store's remaining slot pages.
//!
//! ```text
//! cargo run --release -p rulestore --example service -- [--seconds N] [--readers N]
//!     [--rules N] [--store epoch|rwlock] [--compare] [--plot PATH]
//!     [--rules-file PATH] [--save-rules PATH] [--metrics-addr 127.0.0.1:PORT] [--quiet]
//! ```
//! `--store rwlock` runs the same workload on `RwLock<Vec<Arc<Rule>>>`, the direct translation
//! of the Go design; `--compare` runs both and prints both summaries.
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
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use rulestore::{Rule, RuleId, RuleStore};

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

/// A routing rule: requests with this method and a path under `prefix` go to `backend`;
/// among matches, the highest priority wins.
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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVICES: u64 = 64;
const RESOURCES: u64 = 16;

fn random_route(rng: &mut Rng) -> Route {
    let method = METHODS[rng.below(METHODS.len() as u64) as usize];
    let prefix = match rng.below(3) {
        0 => format!("/svc{}", rng.below(SERVICES)),
        _ => format!("/svc{}/r{}", rng.below(SERVICES), rng.below(RESOURCES)),
    };
    Route { method, prefix, priority: rng.below(1000) as u32, backend: rng.below(100) as u32 }
}

fn random_request(rng: &mut Rng, path: &mut String) -> Method {
    use std::fmt::Write;
    path.clear();
    let _ = write!(path, "/svc{}/r{}/item{}", rng.below(SERVICES), rng.below(RESOURCES), rng.below(1000));
    METHODS[rng.below(METHODS.len() as u64) as usize]
}

/// First match wins among equal priorities; highest priority first.
fn best<'a>(candidates: impl Iterator<Item = &'a Route>, path: &str) -> Option<u32> {
    candidates.filter(|r| path.starts_with(r.prefix.as_str())).max_by_key(|r| r.priority).map(|r| r.backend)
}

// ---------------------------------------------------------------------------------------
// The two stores behind one interface.

/// What the service needs from a rule table.
trait Store: Send + Sync {
    type Id: Copy + Send;
    fn add(&self, rule: Route) -> Self::Id;
    fn replace(&self, id: Self::Id, rule: Route) -> bool;
    fn remove(&self, id: Self::Id) -> bool;
    fn remove_kind(&self, kind: Method) -> usize;
    fn route(&self, method: Method, path: &str) -> Option<u32>;
    fn len(&self) -> usize;
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

impl Store for RuleStore<Route> {
    type Id = RuleId;
    fn add(&self, rule: Route) -> RuleId {
        RuleStore::add(self, rule)
    }
    fn replace(&self, id: RuleId, rule: Route) -> bool {
        RuleStore::replace(self, id, rule).is_ok()
    }
    fn remove(&self, id: RuleId) -> bool {
        RuleStore::remove(self, id)
    }
    fn remove_kind(&self, kind: Method) -> usize {
        RuleStore::remove_kind(self, &kind)
    }
    fn route(&self, method: Method, path: &str) -> Option<u32> {
        let rules = self.pin();
        best(rules.of_kind(&method).map(|(_, r)| r), path)
    }
    fn len(&self) -> usize {
        RuleStore::len(self)
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

/// The Go design, translated: a vector of shared rules behind a reader-writer lock. Ids are
/// positions plus a generation check so stale ids miss, as in the Go service's lookups.
struct RwLockStore {
    rules: RwLock<Vec<(u64, Arc<Route>)>>,
    next: AtomicU64,
}

impl Store for RwLockStore {
    type Id = u64;
    fn add(&self, rule: Route) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.rules.write().unwrap().push((id, Arc::new(rule)));
        id
    }
    fn replace(&self, id: u64, rule: Route) -> bool {
        let mut rules = self.rules.write().unwrap();
        match rules.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => {
                entry.1 = Arc::new(rule);
                true
            }
            None => false,
        }
    }
    fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.write().unwrap();
        match rules.iter().position(|(i, _)| *i == id) {
            // `Vec::remove` drops the Arc: Rust cannot keep the Go slice's stale pointer.
            Some(at) => {
                rules.remove(at);
                true
            }
            None => false,
        }
    }
    fn remove_kind(&self, kind: Method) -> usize {
        let mut rules = self.rules.write().unwrap();
        let before = rules.len();
        rules.retain(|(_, r)| r.method != kind);
        before - rules.len()
    }
    fn route(&self, method: Method, path: &str) -> Option<u32> {
        let rules = self.rules.read().unwrap();
        best(rules.iter().map(|(_, r)| &**r).filter(|r| r.method == method), path)
    }
    fn len(&self) -> usize {
        self.rules.read().unwrap().len()
    }
    fn pending(&self) -> usize {
        0
    }
    fn quiesce(&self) {
        self.rules.write().unwrap().shrink_to_fit();
    }
    fn table_bytes(&self) -> usize {
        self.rules.read().unwrap().capacity() * size_of::<(u64, Arc<Route>)>()
    }
    fn publish_metrics(&self) {
        metrics::gauge!("rulestore_len").set(self.len() as f64);
    }
    fn snapshot_json(&self) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// Command-line settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub seconds: f64,
    pub readers: usize,
    pub rules: usize,
    pub store: String,
    pub compare: bool,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            seconds: 10.0,
            readers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            rules: 10_000,
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

/// One per-second sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub t: f64,
    pub requests_per_s: f64,
    pub updates_per_s: f64,
    pub live: usize,
    pub pending: usize,
    pub heap: isize,
    pub rss: u64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    pub store: String,
    pub requests: u64,
    pub updates: u64,
    pub seconds: f64,
    pub peak_heap: isize,
    pub baseline_heap: isize,
    pub final_heap: isize,
    /// Table storage still held at the end (slot pages, or the Vec's buffer).
    pub final_table_bytes: usize,
    pub table_bytes_at_baseline: usize,
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

    fn print(&self) {
        println!(
            "summary store={} requests/s={:.0} updates/s={:.0} peak-heap={} baseline-heap={} final-heap={} \
             (+{} bytes over baseline: remaining slot pages {} bytes, other {} bytes)",
            self.store,
            self.requests as f64 / self.seconds,
            self.updates as f64 / self.seconds,
            self.peak_heap,
            self.baseline_heap,
            self.final_heap,
            self.final_heap - self.baseline_heap,
            self.final_table_bytes as isize - self.table_bytes_at_baseline as isize,
            self.beyond_tables()
        );
    }
}

fn run_store<S: Store + 'static>(store: Arc<S>, initial: Vec<(S::Id, Method)>, config: &Config) -> Summary {
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let updates = Arc::new(AtomicU64::new(0));
    let started = Arc::new(Barrier::new(config.readers + 2));
    let mut samples = Vec::with_capacity(config.seconds as usize + 16);

    let mut threads = Vec::new();
    for r in 0..config.readers {
        let (store, stop, requests, started) =
            (store.clone(), stop.clone(), requests.clone(), started.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (r as u64 + 1));
            let mut path = String::with_capacity(64);
            // Registers this thread with the store's reclamation before the baseline.
            let method = random_request(&mut rng, &mut path);
            std::hint::black_box(store.route(method, &path));
            started.wait();
            let mut local = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let method = random_request(&mut rng, &mut path);
                    std::hint::black_box(store.route(method, &path));
                }
                local += 64;
                if local.is_multiple_of(4096) {
                    requests.fetch_add(4096, Ordering::Relaxed);
                }
            }
            requests.fetch_add(local % 4096, Ordering::Relaxed);
        }));
    }

    let control = {
        let (store, stop, updates, started) = (store.clone(), stop.clone(), updates.clone(), started.clone());
        let target = config.rules;
        std::thread::spawn(move || {
            let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
            let mut ids: Vec<(S::Id, Method)> = initial;
            ids.reserve(target * 2);
            let probe = store.add(random_route(&mut rng));
            store.remove(probe);
            started.wait();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let roll = rng.below(1000);
                if ids.len() < target / 2 || (ids.len() < target && roll < 500) {
                    let route = random_route(&mut rng);
                    let method = route.method;
                    ids.push((store.add(route), method));
                } else if roll < 800 {
                    let at = rng.below(ids.len() as u64) as usize;
                    let route = random_route(&mut rng);
                    let method = route.method;
                    if store.replace(ids[at].0, route) {
                        ids[at].1 = method;
                    }
                } else if roll < 998 {
                    let at = rng.below(ids.len() as u64) as usize;
                    let (id, _) = ids.swap_remove(at);
                    assert!(store.remove(id), "a live rule could not be removed");
                } else {
                    // Delete a whole kind, as the Go service's Del(typ) did.
                    let kind = METHODS[rng.below(METHODS.len() as u64) as usize];
                    let expected = ids.iter().filter(|(_, m)| *m == kind).count();
                    let removed = store.remove_kind(kind);
                    assert_eq!(removed, expected, "remove_kind removed the wrong rules");
                    ids.retain(|(_, m)| *m != kind);
                }
                count += 1;
                if count.is_multiple_of(256) {
                    updates.fetch_add(256, Ordering::Relaxed);
                }
            }
            updates.fetch_add(count % 256, Ordering::Relaxed);
            ids.len()
        })
    };

    // Registers the gauges before the baseline (a no-op without a recorder).
    store.publish_metrics();
    let table_bytes_at_baseline = store.table_bytes();
    // Everything the run allocates up front exists by now; the rules do not.
    let baseline_heap = heap_in_use();
    started.wait();
    let start = Instant::now();
    let mut peak_heap = baseline_heap;
    let (mut last_requests, mut last_updates, mut last_t) = (0, 0, 0.0);
    while start.elapsed().as_secs_f64() < config.seconds {
        let remaining = config.seconds - start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs_f64(remaining.clamp(0.0, 1.0)));
        let t = start.elapsed().as_secs_f64();
        let (r, u) = (requests.load(Ordering::Relaxed), updates.load(Ordering::Relaxed));
        let sample = Sample {
            t,
            requests_per_s: (r - last_requests) as f64 / (t - last_t),
            updates_per_s: (u - last_updates) as f64 / (t - last_t),
            live: store.len(),
            pending: store.pending(),
            heap: heap_in_use(),
            rss: rss_bytes(),
        };
        (last_requests, last_updates, last_t) = (r, u, t);
        store.publish_metrics();
        peak_heap = peak_heap.max(sample.heap);
        if config.verbose {
            println!(
                "t={:>5.1}s store={} requests/s={:>10.0} updates/s={:>8.0} live={:>6} pending={:>5} heap={:>10} rss={:>10}",
                sample.t,
                config.store,
                sample.requests_per_s,
                sample.updates_per_s,
                sample.live,
                sample.pending,
                sample.heap,
                sample.rss
            );
        }
        if samples.len() < samples.capacity() {
            samples.push(sample);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().expect("a request thread panicked");
    }
    let live = control.join().expect("the control plane panicked");
    assert_eq!(store.len(), live, "the store's count disagrees with the control plane's");
    if let Some(path) = &config.save_rules {
        match store.snapshot_json().map(|json| std::fs::write(path, json)) {
            Some(Ok(())) => println!("rules saved to {path} ({live} rules)"),
            Some(Err(e)) => eprintln!("could not save the rules to {path}: {e}"),
            None => eprintln!("store={} cannot save a snapshot", config.store),
        }
    }

    // Delete every rule, kind by kind, then release what they held.
    let removed: usize = METHODS.iter().map(|&m| store.remove_kind(m)).sum();
    assert_eq!(removed, live);
    store.quiesce();
    Summary {
        store: config.store.clone(),
        requests: requests.load(Ordering::Relaxed),
        updates: updates.load(Ordering::Relaxed),
        seconds,
        peak_heap,
        baseline_heap,
        final_heap: heap_in_use(),
        final_table_bytes: store.table_bytes(),
        table_bytes_at_baseline,
        samples,
    }
}

/// Reads a rules file: a store snapshot (ids kept) or a JSON array of routes.
pub fn load_rules(path: &str) -> Result<RuleStore<Route>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if text.trim_start().starts_with('[') {
        let routes: Vec<Route> = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let store = RuleStore::new();
        for route in routes {
            store.add(route);
        }
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
            let store = Arc::new(RwLockStore { rules: RwLock::new(Vec::new()), next: AtomicU64::new(1) });
            let rules =
                initial.map(|initial| initial.pin().iter().map(|(_, r)| r.clone()).collect::<Vec<_>>());
            let ids = rules.unwrap_or_default().into_iter().map(|r| (r.method, store.add(r)));
            let ids = ids.map(|(method, id)| (id, method)).collect();
            run_store(store, ids, config)
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

/// Serves the Prometheus scrape of `handle` at `addr` (loopback only) on a background thread.
fn serve_metrics(addr: &str, handle: metrics_exporter_prometheus::PrometheusHandle) -> Result<(), String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if !local.ip().is_loopback() {
        return Err(format!("--metrics-addr {addr}: only loopback addresses are served"));
    }
    println!("metrics: http://{local}/metrics");
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

fn plot(path: &str, runs: &[Summary]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(300);
    let t_max = runs.iter().flat_map(|r| r.samples.last()).map(|s| s.t).fold(1.0, f64::max);
    let heap_max = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(move |s| (s.heap - r.baseline_heap) as f64 / 1e6))
        .fold(0.1, f64::max);
    let live_max = runs.iter().flat_map(|r| r.samples.iter().map(|s| s.live as f64)).fold(1.0, f64::max);
    let colors = [RED, BLUE];
    let mut heap_chart = ChartBuilder::on(&upper)
        .caption("heap in use above baseline (MB)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..heap_max * 1.1)?;
    heap_chart.configure_mesh().x_desc("seconds").draw()?;
    for (run, color) in runs.iter().zip(colors) {
        heap_chart
            .draw_series(LineSeries::new(
                run.samples.iter().map(|s| (s.t, (s.heap - run.baseline_heap) as f64 / 1e6)),
                color,
            ))?
            .label(run.store.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    heap_chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    let mut live_chart = ChartBuilder::on(&lower)
        .caption("live rules", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..live_max * 1.1)?;
    live_chart.configure_mesh().x_desc("seconds").draw()?;
    for (run, color) in runs.iter().zip(colors) {
        live_chart.draw_series(LineSeries::new(run.samples.iter().map(|s| (s.t, s.live as f64)), color))?;
    }
    root.present()?;
    Ok(())
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config::default();
    let mut explicit_rules = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                config.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--readers" => {
                config.readers = value("--readers")?.parse().map_err(|e| format!("--readers: {e}"))?
            }
            "--rules" => {
                config.rules = value("--rules")?.parse().map_err(|e| format!("--rules: {e}"))?;
                explicit_rules = true;
            }
            "--store" => {
                config.store = value("--store")?;
                if config.store != "epoch" && config.store != "rwlock" {
                    return Err("--store is epoch or rwlock".into());
                }
            }
            "--compare" => config.compare = true,
            "--plot" => config.plot = Some(value("--plot")?),
            "--quiet" => config.verbose = false,
            "--rules-file" => config.rules_file = Some(value("--rules-file")?),
            "--save-rules" => config.save_rules = Some(value("--save-rules")?),
            "--metrics-addr" => config.metrics_addr = Some(value("--metrics-addr")?),
            "-h" | "--help" => {
                return Err("usage: service [--seconds N] [--readers N] [--rules N] [--store epoch|rwlock] \
                            [--compare] [--plot PATH] [--rules-file PATH] [--save-rules PATH] \
                            [--metrics-addr 127.0.0.1:PORT] [--quiet]"
                    .into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if config.rules_file.is_some() && !explicit_rules {
        config.rules = 0; // filled in from the file
    } else if config.rules < 2 {
        return Err("--rules must be at least 2".into());
    }
    Ok(config)
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let mut config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let initial = match &config.rules_file {
        None => None,
        Some(path) => match load_rules(path) {
            Ok(store) => {
                println!("loaded {} rules from {path}", store.len());
                if config.rules == 0 {
                    config.rules = store.len().max(2);
                }
                Some(store)
            }
            Err(message) => {
                eprintln!("cannot load the rules: {message}");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(addr) = &config.metrics_addr {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("a metrics recorder is already installed");
            return ExitCode::FAILURE;
        }
        if let Err(message) = serve_metrics(addr, handle) {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    }
    println!(
        "service: {} request threads, ~{} rules, {}s per store, {} cores available",
        config.readers,
        config.rules,
        config.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let stores: Vec<&str> =
        if config.compare { vec!["epoch", "rwlock"] } else { vec![config.store.as_str()] };
    let runs: Vec<Summary> = stores
        .iter()
        .map(|s| run_with(&Config { store: (*s).to_owned(), ..config.clone() }, initial.as_ref()))
        .collect();
    for summary in &runs {
        summary.print();
    }
    if let Some(path) = &config.plot {
        match plot(path, &runs) {
            Ok(()) => println!("plot written to {path}"),
            Err(e) => {
                eprintln!("plot failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let failed: Vec<_> = runs.iter().filter(|s| !s.memory_check_passes()).collect();
    if failed.is_empty() {
        println!(
            "memory check: passed (peak {} bytes; after deleting every rule, nothing beyond the slot pages \
             but {} bytes of reclamation bookkeeping, allowance {BOOKKEEPING_ALLOWANCE})",
            runs.iter().map(|s| s.peak_heap - s.baseline_heap).max().unwrap_or(0),
            runs.iter().map(|s| s.beyond_tables()).max().unwrap_or(0)
        );
        ExitCode::SUCCESS
    } else {
        for s in failed {
            println!(
                "memory check: FAILED: store={} kept {} bytes beyond its slot pages (allowance {BOOKKEEPING_ALLOWANCE})",
                s.store,
                s.beyond_tables()
            );
        }
        ExitCode::FAILURE
    }
}
