//! What the handlers share: the store, the clock, auth and metrics. Each part is its own
//! `Arc`, so another service can mount its routes next to ours with the same `Auth` and
//! `ApiMetrics`.

use std::sync::Arc;

use boifi_store::{Clock, PolicyStore, SystemClock};

use crate::sidecars::{SidecarSource, Sidecars};
use crate::{ApiMetrics, Auth};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn PolicyStore>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<ApiMetrics>,
    /// The broadcasters' sidecar tables; `None` when the server has no source for them
    /// (policy-api without `BOIFI_BROADCASTERS`).
    pub sidecars: Option<Arc<Sidecars>>,
}

impl AppState {
    /// State on the system clock with fresh metrics.
    pub fn new(store: Arc<dyn PolicyStore>, auth: Auth) -> Result<Self, prometheus::Error> {
        Ok(AppState {
            store,
            clock: Arc::new(SystemClock),
            auth: Arc::new(auth),
            metrics: Arc::new(ApiMetrics::new()?),
            sidecars: None,
        })
    }

    /// Answers sidecar status from `source` (cached for [`crate::sidecars::MAX_AGE`]).
    pub fn with_sidecars(mut self, source: Arc<dyn SidecarSource>) -> Self {
        self.sidecars = Some(Arc::new(Sidecars::new(source)));
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
