//! Prometheus metrics in a registry of our own (not the global default, so each app and
//! each test has its own), the request middleware that fills them and writes the request
//! log, and the `/metrics` handler.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `boifi_http_requests_total` | counter | `route`, `method`, `status` |
//! | `boifi_http_request_duration_seconds` | histogram | `route`, `method`, `status` |
//! | `boifi_policies` | gauge | |
//! | `boifi_halted` | gauge (0 or 1) | |
//! | `boifi_store_errors_total` | counter | `operation`, `kind` |
//!
//! `route` is the route pattern (`/v1/policies/{name}`), or `unmatched`, so label values stay
//! few whatever paths clients send.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use boifi_store::StoreError;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::auth::Principal;
use crate::{ApiError, AppState};

/// A store that does not answer within this time makes a scrape skip the store gauges.
const SCRAPE_STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    policies: IntGauge,
    halted: IntGauge,
    store_errors: IntCounterVec,
}

impl ApiMetrics {
    /// Metrics in a fresh registry. Other services sharing the process (the broadcaster in
    /// `boifi serve`) add theirs to [`ApiMetrics::registry`].
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let labels = &["route", "method", "status"];
        let requests = IntCounterVec::new(
            Opts::new("boifi_http_requests_total", "HTTP requests served."),
            labels,
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "boifi_http_request_duration_seconds",
                "Time to serve an HTTP request, until the response head.",
            ),
            labels,
        )?;
        let policies = IntGauge::new("boifi_policies", "Policies in the store.")?;
        let halted = IntGauge::new(
            "boifi_halted",
            "1 while the global kill switch is set (no faults anywhere).",
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "boifi_store_errors_total",
                "Failed store operations (revision conflicts are not errors).",
            ),
            &["operation", "kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(policies.clone()))?;
        registry.register(Box::new(halted.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(ApiMetrics {
            registry,
            requests,
            durations,
            policies,
            halted,
            store_errors,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [route, method_label(method), status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.durations
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_policies(&self, count: usize) {
        self.policies.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn policy_created(&self) {
        self.policies.inc();
    }

    pub fn policy_deleted(&self) {
        self.policies.dec();
    }

    pub fn set_halted(&self, halted: bool) {
        self.halted.set(i64::from(halted));
    }

    /// Count a failed store call (conflicts are answers, not failures) and pass it on.
    pub fn store_result<T>(
        &self,
        operation: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(err) = &result {
            let kind = match err {
                StoreError::Conflict { .. } => return result,
                StoreError::Compacted { .. } => "compacted",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Corrupt { .. } => "corrupt",
                StoreError::Io(_) => "io",
            };
            self.store_errors
                .with_label_values(&[operation, kind])
                .inc();
        }
        result
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Standard methods by name, anything else as `other`, so the label stays bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware (`actix_web::middleware::from_fn(observe)`): counts and times every request by
/// route pattern and writes the one log line per request, with the token's name.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<ApiMetrics>>().cloned();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let result = next.call(req).await;
    let elapsed = started.elapsed();

    let (status, route, who) = match &result {
        Ok(res) => (
            res.status(),
            res.request().match_pattern(),
            res.request()
                .extensions()
                .get::<Principal>()
                .map(|p| p.name.clone()),
        ),
        Err(err) => (err.as_response_error().status_code(), None, None),
    };
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    if let Some(metrics) = metrics {
        metrics.observe_request(&route, &method, status.as_u16(), elapsed);
    }
    log::info!(
        "{method} {path} {} {:.1}ms token={}",
        status.as_u16(),
        elapsed.as_secs_f64() * 1000.0,
        who.as_deref().unwrap_or("-")
    );
    result
}

/// `GET /metrics`: no token needed. Refreshes the store gauges from a snapshot first, so
/// they are right even when another replica made the changes; a slow store only leaves them
/// as they were.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    let snapshot = tokio::time::timeout(SCRAPE_STORE_TIMEOUT, state.store.snapshot())
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {SCRAPE_STORE_TIMEOUT:?}"
            )))
        });
    match metrics.store_result("snapshot", snapshot) {
        Ok(snap) => {
            metrics.set_policies(snap.policies.len());
            metrics.set_halted(snap.halted);
        }
        Err(err) => log::warn!("metrics scrape: cannot read the store: {err}"),
    }
    let body = metrics
        .encode()
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, TextEncoder::new().format_type()))
        .body(body))
}
