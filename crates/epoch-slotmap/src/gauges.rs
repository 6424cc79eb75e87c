//! Gauges (the `metrics` feature): a map's [`Stats`] published through the `metrics` facade,
//! so whichever exporter the program installed (Prometheus, StatsD, ...) shows them.
//!
//! Invariant: publishing only reads the map's counters (as [`SlotMap::stats`] does): it never
//! waits, takes a lock or changes the map. It pins (to count occupancy bits and page bytes)
//! and allocates each gauge's name (`format!`).

use metrics::gauge;
use slotmap::Key;

use crate::map::{SlotMap, Stats};

impl Stats {
    /// Sets the gauges `{prefix}_len`, `{prefix}_capacity`, `{prefix}_vacant`,
    /// `{prefix}_retired` and `{prefix}_pending` to these counters, through the recorder
    /// installed for the `metrics` crate (without one, this does nothing).
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// let map = SlotMap::new();
    /// map.insert("rule");
    /// metrics::with_local_recorder(&recorder, || map.stats().publish_metrics("acl"));
    /// assert!(handle.render().contains("acl_len 1"));
    /// ```
    pub fn publish_metrics(&self, prefix: &str) {
        let Stats { len, capacity, vacant, retired, pending } = *self;
        for (name, value) in [
            ("len", len),
            ("capacity", capacity),
            ("vacant", vacant),
            ("retired", retired),
            ("pending", pending),
        ] {
            gauge!(format!("{prefix}_{name}")).set(value as f64);
        }
    }
}

impl<K: Key, V> SlotMap<K, V> {
    /// Publishes [`stats`](Self::stats) as gauges (see [`Stats::publish_metrics`]) and
    /// [`allocated_bytes`](Self::allocated_bytes) as `{prefix}_allocated_bytes`. Call it
    /// from a periodic task. Cost: what `stats` and `allocated_bytes` cost (two pins, one
    /// load per 64 slots, a few loads per writing thread and per page), six small allocations
    /// for the gauges' names, and the recorder's own work; it never waits.
    ///
    /// ```
    /// use epoch_slotmap::SlotMap;
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// let map = SlotMap::new();
    /// let k = map.insert(1u64);
    /// map.remove(k);
    /// metrics::with_local_recorder(&recorder, || map.publish_metrics("flags"));
    /// let scrape = handle.render();
    /// assert!(scrape.contains("flags_len 0"), "{scrape}");
    /// assert!(scrape.contains("flags_allocated_bytes"), "{scrape}");
    /// ```
    pub fn publish_metrics(&self, prefix: &str) {
        self.stats().publish_metrics(prefix);
        gauge!(format!("{prefix}_allocated_bytes")).set(self.allocated_bytes() as f64);
    }
}
