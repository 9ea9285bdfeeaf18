//! `/v1/halt`: the global kill switch. While it is set, no sidecar injects any fault.

use actix_web::web;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Reader, Writer};
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct HaltState {
    pub halted: bool,
    /// Store revision at which this state was read or written.
    pub revision: u64,
}

#[utoipa::path(
    get, path = "/v1/halt", tag = "halt",
    responses(
        (status = 200, description = "Current kill-switch state", body = HaltState),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_halt(
    _: Reader,
    state: web::Data<AppState>,
) -> Result<web::Json<HaltState>, ApiError> {
    let snapshot = state
        .metrics
        .store_result("snapshot", state.store.snapshot().await)?;
    state.metrics.set_halted(snapshot.halted);
    Ok(web::Json(HaltState {
        halted: snapshot.halted,
        revision: snapshot.revision,
    }))
}

#[utoipa::path(
    post, path = "/v1/halt", tag = "halt",
    responses(
        (status = 200, description = "Halted: no faults anywhere", body = HaltState),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token is not a writer", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_halt(
    who: Writer,
    state: web::Data<AppState>,
) -> Result<web::Json<HaltState>, ApiError> {
    switch(&state, &who, true).await
}

#[utoipa::path(
    delete, path = "/v1/halt", tag = "halt",
    responses(
        (status = 200, description = "Resumed: policies act again", body = HaltState),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token is not a writer", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn clear_halt(
    who: Writer,
    state: web::Data<AppState>,
) -> Result<web::Json<HaltState>, ApiError> {
    switch(&state, &who, false).await
}

async fn switch(
    state: &AppState,
    who: &Writer,
    halted: bool,
) -> Result<web::Json<HaltState>, ApiError> {
    let revision = state
        .metrics
        .store_result("set_halted", state.store.set_halted(halted).await)?;
    state.metrics.set_halted(halted);
    log::warn!(
        "kill switch {} by {} at revision {revision}",
        if halted { "set" } else { "cleared" },
        who.0.name
    );
    Ok(web::Json(HaltState { halted, revision }))
}
