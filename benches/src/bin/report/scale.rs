//! The scaling workload (`report --scale`): throughput against thread count, every contender
//! alternated within each round, for the five shapes a service's table sees.
//!
//! Each scenario builds its contenders' tables once (100 000 live 64-byte rules, shuffled
//! keys), then in each round runs every contender, in an order rotated from round to round,
//! at every thread count back to back, one window each, after one untimed window each.
//! Figures are Mops/s summed over threads, medians over rounds; the scaling ratio is the
//! median over rounds of each round's ratio, whose two figures were taken seconds apart (this
//! machine's speed moves by 2-3x within a minute). Writers work on their own partition of the
//! key table (no two writers on one key); a write is one remove + one insert.

use std::fmt::Write as _;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::*;

/// The shapes measured, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every thread reads, one pin (or lock, or guard) per lookup.
    ReadsPin,
    /// Every thread reads, one guard per 256 lookups.
    ReadsGuard,
    /// Every thread: 90% reads (a pin per lookup, anywhere in the table), 10% writes (in its
    /// own partition).
    Mixed,
    /// Every thread writes in its own partition.
    Writes,
    /// One writer over the whole table, T - 1 readers (a pin per lookup).
    OneWriter,
}

impl Scenario {
    pub const ALL: [Scenario; 5] =
        [Scenario::ReadsPin, Scenario::ReadsGuard, Scenario::Mixed, Scenario::Writes, Scenario::OneWriter];

    pub fn title(self) -> &'static str {
        match self {
            Scenario::ReadsPin => "reads, a pin per lookup",
            Scenario::ReadsGuard => "reads, a guard per 256 lookups",
            Scenario::Mixed => "90% reads / 10% writes on every thread",
            Scenario::Writes => "writes only (remove + insert) on every thread",
            Scenario::OneWriter => "1 writer + (T - 1) readers (a pin per lookup)",
        }
    }

    /// What the scenario's table lists: total Mops/s, or the writer's for `OneWriter`.
    fn contenders(self) -> &'static [Who] {
        use Who::*;
        match self {
            Scenario::ReadsPin => &[Ours, PinFloor, ConcurrentSlotMap, ShardedSlab, Scc, Papaya, RwLock],
            Scenario::ReadsGuard => &[Ours, NoSync, ConcurrentSlotMap, RwLock],
            Scenario::Mixed => &[Ours, ShardedSlab, DashMap, ConcurrentSlotMap, RwLock],
            Scenario::Writes => &[Ours, ShardedSlab, DashMap, ConcurrentSlotMap, RwLock],
            Scenario::OneWriter => &[Ours, ShardedSlab, ConcurrentSlotMap, RwLock],
        }
    }
}

/// The contenders of the scaling workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Ours,
    PinFloor,
    NoSync,
    ShardedSlab,
    ConcurrentSlotMap,
    DashMap,
    Papaya,
    Scc,
    RwLock,
}

impl Who {
    pub fn name(self) -> &'static str {
        match self {
            Who::Ours => benches::Ours::NAME,
            Who::PinFloor => SharedSlotMap::<true>::NAME,
            Who::NoSync => SharedSlotMap::<false>::NAME,
            Who::ShardedSlab => benches::ShardedSlab::NAME,
            Who::ConcurrentSlotMap => benches::ConcurrentSlotMap::NAME,
            Who::DashMap => benches::DashMap::NAME,
            Who::Papaya => benches::Papaya::NAME,
            Who::Scc => SccHashIndex::NAME,
            Who::RwLock => StdRwLockSlotMap::NAME,
        }
    }

    fn build(self, n: usize) -> Table {
        fn of<C: Contender + Send + Sync + 'static>(n: usize) -> Table {
            let (c, keys) = filled::<C>(n);
            Table { keys: KeySet::new(&keys), ops: Box::new(c) }
        }
        match self {
            Who::Ours => of::<benches::Ours>(n),
            Who::ShardedSlab => of::<benches::ShardedSlab>(n),
            Who::ConcurrentSlotMap => of::<benches::ConcurrentSlotMap>(n),
            Who::DashMap => of::<benches::DashMap>(n),
            Who::Papaya => of::<benches::Papaya>(n),
            Who::Scc => of::<SccHashIndex>(n),
            Who::RwLock => of::<StdRwLockSlotMap>(n),
            Who::PinFloor => {
                let (c, keys) = SharedSlotMap::<true>::filled(n);
                Table { keys: KeySet::new(&keys), ops: Box::new(ReadOnly(c)) }
            }
            Who::NoSync => {
                let (c, keys) = SharedSlotMap::<false>::filled(n);
                Table { keys: KeySet::new(&keys), ops: Box::new(ReadOnly(c)) }
            }
        }
    }
}

/// What a thread does to a table, whatever the contender.
trait Ops: Send + Sync {
    fn read(&self, k: u64) -> Option<u64>;
    fn read_batch(&self, keys: &[u64]) -> u64;
    /// Removes `k` and inserts rule `id`; returns its key.
    fn write(&self, k: u64, id: u64) -> u64;
}

impl<C: Contender + Send + Sync> Ops for C {
    #[inline]
    fn read(&self, k: u64) -> Option<u64> {
        Contender::read(self, k)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        Contender::read_batch(self, keys)
    }
    #[inline]
    fn write(&self, k: u64, id: u64) -> u64 {
        self.remove(k);
        self.insert(Rule::new(id))
    }
}

/// A read-only baseline.
struct ReadOnly<const PIN: bool>(SharedSlotMap<PIN>);

impl<const PIN: bool> Ops for ReadOnly<PIN> {
    #[inline]
    fn read(&self, k: u64) -> Option<u64> {
        self.0.read(k)
    }
    fn read_batch(&self, keys: &[u64]) -> u64 {
        self.0.read_batch(keys)
    }
    fn write(&self, _: u64, _: u64) -> u64 {
        unreachable!("read-only baselines run in read scenarios only")
    }
}

struct Table {
    keys: std::sync::Arc<KeySet>,
    ops: Box<dyn Ops>,
}

/// One measurement: Mops/s summed over all threads, and the writer's alone (`OneWriter`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    pub total: f64,
    pub writer: f64,
}

/// Runs `threads` threads of `scenario` on `table` for about `window`; each thread times itself
/// from the common start to its last operation.
fn run(table: &Table, scenario: Scenario, threads: usize, window: Duration) -> Point {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let n = table.keys.0.len();
    let rates: Vec<(bool, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || {
                    let (ops, keys) = (&*table.ops, &*table.keys);
                    // This thread's partition of the key table (writers), and where it starts
                    // reading (readers spread over the table).
                    let (lo, hi) = (t * n / threads, (t + 1) * n / threads);
                    let mut rng =
                        Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
                    let mut id = (t as u64) << 40;
                    let mut done = 0u64;
                    let mut sum = 0u64;
                    let mut pos = lo;
                    let mut buf = [0u64; 256];
                    let writer = scenario == Scenario::OneWriter && t == 0;
                    barrier.wait();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            match scenario {
                                Scenario::ReadsPin => {
                                    sum += ops.read(keys.get(pos)).unwrap_or(0);
                                    pos = if pos + 1 == n { 0 } else { pos + 1 };
                                    done += 1;
                                }
                                Scenario::ReadsGuard => {
                                    for (i, slot) in buf.iter_mut().enumerate() {
                                        *slot = keys.get((pos + i) % n);
                                    }
                                    sum += ops.read_batch(&buf);
                                    pos = (pos + 256) % n;
                                    done += 256;
                                }
                                Scenario::Mixed => {
                                    let roll = rng.next_u64();
                                    if roll.is_multiple_of(10) {
                                        let k = keys.get(pos);
                                        id += 1;
                                        keys.set(pos, ops.write(k, id));
                                        pos = if pos + 1 == hi { lo } else { pos + 1 };
                                    } else {
                                        sum += ops.read(keys.get((roll >> 8) as usize % n)).unwrap_or(0);
                                    }
                                    done += 1;
                                }
                                Scenario::Writes => {
                                    let k = keys.get(pos);
                                    id += 1;
                                    keys.set(pos, ops.write(k, id));
                                    pos = if pos + 1 == hi { lo } else { pos + 1 };
                                    done += 1;
                                }
                                Scenario::OneWriter if writer => {
                                    let k = keys.get(pos);
                                    id += 1;
                                    keys.set(pos, ops.write(k, id));
                                    pos = if pos + 1 == n { 0 } else { pos + 1 };
                                    done += 1;
                                }
                                Scenario::OneWriter => {
                                    sum += ops.read(keys.get(pos)).unwrap_or(0);
                                    pos = if pos + 1 == n { 0 } else { pos + 1 };
                                    done += 1;
                                }
                            }
                        }
                    }
                    std::hint::black_box(sum);
                    (writer, done as f64 / start.elapsed().as_secs_f64() / 1e6)
                })
            })
            .collect();
        barrier.wait();
        // Bounds the run; the threads time themselves.
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().expect("a scaling worker panicked")).collect()
    });
    Point { total: rates.iter().map(|r| r.1).sum(), writer: rates.iter().filter(|r| r.0).map(|r| r.1).sum() }
}

/// How the scaling workload runs.
pub struct Settings {
    pub threads: Vec<usize>,
    pub rounds: usize,
    pub window: Duration,
    pub live: usize,
}

impl Settings {
    /// 1, 2, 4, ... up to the available cores (and the core count itself).
    pub fn default_threads() -> Vec<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut t: Vec<usize> =
            std::iter::successors(Some(1), |&x| Some(x * 2)).take_while(|&x| x <= cores).collect();
        if t.last() != Some(&cores) {
            t.push(cores);
        }
        t
    }
}

/// One contender's row in a scenario: the median at each thread count, and the median of the
/// per-round ratios of the highest thread count to the base one (1 thread; 2 for
/// `OneWriter`, where the writer's figure counts).
pub struct Row {
    pub who: Who,
    pub points: Vec<Point>,
    pub ratio: Option<f64>,
}

/// The method, in two sentences.
pub fn method(s: &Settings) -> String {
    format!(
        "Each scenario builds every contender's table once ({} live 64-byte rules), then in each \
         of {} rounds runs every contender at every thread count back to back, {} ms each, in an \
         order rotated per round; figures are Mops/s summed over threads, medians of the rounds, \
         and the scaling ratio is the median of each round's ratio. Writers work on their own \
         partition of the key table; a write is one remove + one insert.",
        s.live,
        s.rounds,
        s.window.as_millis()
    )
}

/// Every scenario's rows.
pub struct Results {
    pub threads: Vec<usize>,
    pub by: Vec<(Scenario, Vec<Row>)>,
}

impl Results {
    /// The median for `who` in `scenario` at `threads` threads.
    pub fn get(&self, scenario: Scenario, who: Who, threads: usize) -> Option<Point> {
        let column = self.threads.iter().position(|&t| t == threads)?;
        self.row(scenario, who).map(|row| row.points[column])
    }

    /// The row of `who` in `scenario`.
    pub fn row(&self, scenario: Scenario, who: Who) -> Option<&Row> {
        let (_, rows) = self.by.iter().find(|(s, _)| *s == scenario)?;
        rows.iter().find(|row| row.who == who)
    }
}

impl Scenario {
    /// The thread count a scaling ratio divides by, and the figure it takes of a point.
    fn base(self) -> usize {
        if self == Scenario::OneWriter { 2 } else { 1 }
    }

    fn value(self, p: &Point) -> f64 {
        if self == Scenario::OneWriter { p.writer } else { p.total }
    }
}

fn median_point(mut v: Vec<Point>) -> Point {
    let total = median(v.iter().map(|p| p.total).collect());
    let writer = median(v.drain(..).map(|p| p.writer).collect());
    Point { total, writer }
}

/// Runs every scenario.
pub fn measure(s: &Settings) -> Results {
    let mut by = Vec::new();
    let top = *s.threads.last().expect("at least one thread count");
    for scenario in Scenario::ALL {
        let who = scenario.contenders();
        let tables: Vec<Table> = who.iter().map(|w| w.build(s.live)).collect();
        // One untimed window each, at the highest thread count.
        for table in &tables {
            run(table, scenario, top, s.window / 2);
        }
        let counts: Vec<usize> =
            s.threads.iter().copied().filter(|&t| scenario != Scenario::OneWriter || t >= 2).collect();
        // samples[contender][round][count]
        let mut samples = vec![Vec::new(); who.len()];
        for round in 0..s.rounds {
            for k in 0..who.len() {
                let i = (k + round) % who.len();
                let points: Vec<Point> =
                    counts.iter().map(|&t| run(&tables[i], scenario, t, s.window)).collect();
                samples[i].push(points);
            }
        }
        let base = counts.iter().position(|&t| t == scenario.base());
        let rows = who
            .iter()
            .zip(samples)
            .map(|(&who, rounds)| {
                let points = s
                    .threads
                    .iter()
                    .map(|t| match counts.iter().position(|c| c == t) {
                        Some(c) => median_point(rounds.iter().map(|r| r[c]).collect()),
                        None => Point::default(),
                    })
                    .collect();
                let ratio = base.filter(|&b| b + 1 < counts.len()).map(|b| {
                    median(
                        rounds
                            .iter()
                            .map(|r| scenario.value(&r[counts.len() - 1]) / scenario.value(&r[b]))
                            .collect(),
                    )
                });
                Row { who, points, ratio }
            })
            .collect();
        by.push((scenario, rows));
        eprintln!("scale: {} done", scenario.title());
    }
    Results { threads: s.threads.clone(), by }
}

/// A target of the many-cores issue, checked on this run.
pub struct Target {
    pub pass: bool,
    pub text: String,
}

/// The targets that apply to the thread counts measured.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let mut ratio = |text: &str, got: Option<f64>, need: f64| {
        let pass = got.is_some_and(|g| g >= need);
        let shown = got.map_or("missing".to_owned(), |g| format!("{g:.2}x"));
        out.push(Target { pass, text: format!("{text}: {shown} (needs >= {need}x)") });
    };
    let at = |scenario, who, t| r.get(scenario, who, t);
    let total = |scenario, who, t| at(scenario, who, t).map(|p| p.total);
    if r.threads == [1, 2] {
        ratio(
            "writes at 2 threads / writes at 1 thread, ours (writes share nothing between threads)",
            r.row(Scenario::Writes, Who::Ours).and_then(|row| row.ratio),
            1.6,
        );
    }
    if r.threads.contains(&16) {
        let ours = |s| total(s, Who::Ours, 16);
        // Ours at 16 threads against ours at `base` threads: the per-round median when 16 is the
        // top count (the figures were taken side by side), else the ratio of the medians.
        let own_scaling = |scenario: Scenario, base: usize, value: fn(&Point) -> f64| {
            if r.threads.last() == Some(&16) {
                r.row(scenario, Who::Ours).and_then(|row| row.ratio)
            } else {
                at(scenario, Who::Ours, 16)
                    .zip(at(scenario, Who::Ours, base))
                    .map(|(a, b)| value(&a) / value(&b))
            }
        };
        ratio(
            "writes at 16 threads, ours / sharded-slab",
            ours(Scenario::Writes).zip(total(Scenario::Writes, Who::ShardedSlab, 16)).map(|(a, b)| a / b),
            1.2,
        );
        ratio(
            "writes at 16 threads / at 1 thread, ours",
            own_scaling(Scenario::Writes, 1, |p| p.total),
            10.0,
        );
        ratio(
            "90/10 at 16 threads, ours / sharded-slab",
            ours(Scenario::Mixed).zip(total(Scenario::Mixed, Who::ShardedSlab, 16)).map(|(a, b)| a / b),
            1.2,
        );
        ratio(
            "pin per lookup at 16 threads, ours / slotmap + crossbeam pin (crossbeam's own floor)",
            ours(Scenario::ReadsPin).zip(total(Scenario::ReadsPin, Who::PinFloor, 16)).map(|(a, b)| a / b),
            1.0,
        );
        ratio(
            "the writer with 15 readers / with 1 reader, ours (grace periods do not throttle the writer)",
            own_scaling(Scenario::OneWriter, 2, |p| p.writer),
            0.7,
        );
    }
    out
}

/// The scaling section: one table per scenario (Mops/s per thread count, then the median
/// per-round ratio of the highest count to the base one).
pub fn render(r: &Results, chart_file: &str) -> String {
    let mut md = String::new();
    let top = *r.threads.last().unwrap_or(&1);
    for (scenario, rows) in &r.by {
        let _ = writeln!(md, "### {} (Mops/s, higher is better)\n", scenario.title());
        let mut head = "| contender |".to_owned();
        let mut rule = "|---|".to_owned();
        for t in &r.threads {
            let _ = write!(head, " {t} |");
            rule.push_str("---:|");
        }
        let _ = write!(head, " {top}/{} |", scenario.base());
        rule.push_str("---:|");
        let _ = writeln!(md, "{head}\n{rule}");
        for row in rows {
            let mut line = format!("| {} |", row.who.name());
            for (i, p) in row.points.iter().enumerate() {
                if *scenario == Scenario::OneWriter {
                    if r.threads[i] < 2 {
                        line.push_str(" - |");
                    } else {
                        let _ = write!(line, " {:.1} / {:.2} |", p.total - p.writer, p.writer);
                    }
                } else {
                    let _ = write!(line, " {:.1} |", p.total);
                }
            }
            match row.ratio {
                Some(ratio) => {
                    let _ = write!(line, " {ratio:.2}x |");
                }
                None => line.push_str(" - |"),
            }
            let _ = writeln!(md, "{line}");
        }
        if *scenario == Scenario::OneWriter {
            let _ = writeln!(md, "\nEach cell: the readers' total / the writer; the ratio is the writer's.");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "![throughput against threads]({chart_file})\n");
    md
}

/// The chart: one panel per scenario, Mops/s against threads, ours in red.
pub fn chart(r: &Results, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 2));
    let colors = [BLUE, GREEN, MAGENTA, CYAN, BLACK, RGBColor(200, 120, 0), RGBColor(120, 60, 160)];
    let max_t = *r.threads.last().unwrap_or(&1) as f64;
    for ((scenario, rows), panel) in r.by.iter().zip(panels.iter()) {
        let value = |p: &Point| if *scenario == Scenario::OneWriter { p.writer } else { p.total };
        let top = rows.iter().flat_map(|row| row.points.iter().map(value)).fold(0.0, f64::max) * 1.1 + 0.1;
        let title = if *scenario == Scenario::OneWriter {
            "the writer, 1 writer + (T - 1) readers"
        } else {
            scenario.title()
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(44)
            .build_cartesian_2d(1.0..max_t.max(2.0), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("threads")
            .y_desc("Mops/s")
            .x_labels(r.threads.len().max(2))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (i, row) in rows.iter().enumerate() {
            let (who, points) = (&row.who, &row.points);
            let color = if *who == Who::Ours { RED } else { colors[i % colors.len()] };
            let series: Vec<(f64, f64)> = r
                .threads
                .iter()
                .zip(points)
                .filter(|(t, _)| *scenario != Scenario::OneWriter || **t >= 2)
                .map(|(t, p)| (*t as f64, value(p)))
                .collect();
            // Markers too: a scenario measured at one thread count is one point.
            chart.draw_series(series.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))?
                .label(who.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 10))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
