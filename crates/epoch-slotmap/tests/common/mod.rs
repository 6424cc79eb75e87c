//! A drop-tracking value shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts creations and drops; flags double drops.
#[derive(Default, Debug)]
pub struct Ledger {
    pub created: AtomicUsize,
    pub dropped: AtomicUsize,
    pub double_drops: AtomicUsize,
}

impl Ledger {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Values created and not yet dropped. Under concurrency, an over-estimate, never an
    /// underflow: drops are read first, and a value is created before it is dropped.
    pub fn live(&self) -> usize {
        let dropped = self.dropped.load(Ordering::SeqCst);
        self.created.load(Ordering::SeqCst) - dropped
    }
}

/// A value that knows whether it is still alive and records its drop exactly once.
#[derive(Debug)]
pub struct Tracked {
    pub id: u64,
    pub alive: AtomicBool,
    pub ledger: Arc<Ledger>,
}

impl Tracked {
    pub fn new(id: u64, ledger: &Arc<Ledger>) -> Self {
        ledger.created.fetch_add(1, Ordering::SeqCst);
        Self { id, alive: AtomicBool::new(true), ledger: ledger.clone() }
    }
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Self::new(self.id, &self.ledger)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            self.ledger.dropped.fetch_add(1, Ordering::SeqCst);
        } else {
            self.ledger.double_drops.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Scales iteration counts down under Miri.
pub fn scaled(n: usize) -> usize {
    if cfg!(miri) { (n / 400).max(4) } else { n }
}
