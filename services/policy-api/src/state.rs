//! What the handlers share: the store, the clock, auth and metrics. Each part is its own
//! `Arc`, so another service can mount its routes next to ours with the same `Auth` and
//! `ApiMetrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use boifi_store::PolicyStore;

use crate::{ApiMetrics, Auth};

/// The server's clock, in Unix milliseconds. Passed in so tests control time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 is a broken host; 0 keeps the server answering.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock(AtomicU64::new(now_ms))
    }

    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn PolicyStore>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<ApiMetrics>,
}

impl AppState {
    /// State on the system clock with fresh metrics.
    pub fn new(store: Arc<dyn PolicyStore>, auth: Auth) -> Result<Self, prometheus::Error> {
        Ok(AppState {
            store,
            clock: Arc::new(SystemClock),
            auth: Arc::new(auth),
            metrics: Arc::new(ApiMetrics::new()?),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
