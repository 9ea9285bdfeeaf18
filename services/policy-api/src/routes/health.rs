//! `/v1/health` (the process answers) and `/v1/ready` (and the store answers too). No token.

use std::time::Duration;

use actix_web::web;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// A readiness probe must answer well within Kubernetes' default 1 s probe timeout.
const PING_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (health) or `ready` (readiness).
    pub status: String,
    /// Store backend, `etcd` or `embedded` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/health", tag = "health",
    responses((status = 200, description = "The process is up", body = HealthStatus))
)]
pub async fn health() -> web::Json<HealthStatus> {
    web::Json(HealthStatus {
        status: "ok".to_owned(),
        store: None,
    })
}

#[utoipa::path(
    get, path = "/v1/ready", tag = "health",
    responses(
        (status = 200, description = "The store answers", body = HealthStatus),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> Result<web::Json<HealthStatus>, ApiError> {
    let ping = tokio::time::timeout(PING_TIMEOUT, state.store.ping())
        .await
        .unwrap_or_else(|_| {
            Err(boifi_store::StoreError::Unavailable(format!(
                "no answer to ping within {PING_TIMEOUT:?}"
            )))
        });
    state.metrics.store_result("ping", ping)?;
    Ok(web::Json(HealthStatus {
        status: "ready".to_owned(),
        store: Some(state.store.kind().to_owned()),
    }))
}
