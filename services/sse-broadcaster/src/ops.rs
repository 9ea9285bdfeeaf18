//! `/v1/health`, `/v1/ready` and `/metrics`. No token, like policy-api's.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::RequestError;
use crate::hub::{Hub, Refusal};

#[derive(Serialize)]
struct Status {
    /// `ok` (health) or `ready` (readiness).
    status: &'static str,
    /// The store revision served (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

/// The process answers.
pub(crate) async fn health() -> web::Json<impl Serialize> {
    web::Json(Status {
        status: "ok",
        revision: None,
    })
}

/// 200 once the first snapshot of the store is loaded; 503 before.
pub(crate) async fn ready(hub: web::Data<Hub>) -> Result<web::Json<impl Serialize>, RequestError> {
    let revision = hub.revision().ok_or(Refusal::NotReady)?;
    Ok(web::Json(Status {
        status: "ready",
        revision: Some(revision),
    }))
}

pub(crate) async fn metrics(hub: web::Data<Hub>) -> Result<HttpResponse, RequestError> {
    let text = hub
        .metrics
        .render()
        .map_err(|err| RequestError::Internal(format!("encoding metrics: {err}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, prometheus::TEXT_FORMAT))
        .body(text))
}
