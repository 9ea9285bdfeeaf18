//! `/v1/halt`: the global kill switch. While it is set, no sidecar injects any fault.
//!
//! `POST` (set) and `DELETE` (clear) take an optional JSON or YAML body `{"reason": "..."}`
//! (or the `X-Boifi-Reason` header, not both), logged and kept in the audit trail with the
//! token's name.

use std::borrow::Cow;

use actix_web::{web, HttpRequest};
use boifi_policy::{yaml, Format, ValidationErrors};
use boifi_store::AuditAction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Reader, Writer};
use crate::error::ErrorBody;
use crate::routes::audit;
use crate::routes::body::Body;
use crate::{ApiError, AppState};

/// Largest body of `POST`/`DELETE /v1/halt` (a reason and some room).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = boifi_store::audit::MAX_REASON_CHARS;

#[derive(Debug, Serialize, ToSchema)]
pub struct HaltState {
    pub halted: bool,
    /// Store revision at which this state was read or written.
    pub revision: u64,
}

/// Optional body of `POST`/`DELETE /v1/halt`; `null` is the same as none.
#[derive(Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltRequest {
    /// Why, in one line (no control characters); logged and kept in the audit trail with the
    /// token's name.
    #[schema(max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub reason: Option<String>,
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
    let (halted, revision) = state
        .metrics
        .store_result("halt_state", state.store.halt_state().await)?;
    state.metrics.set_halted(halted);
    Ok(web::Json(HaltState { halted, revision }))
}

#[utoipa::path(
    post, path = "/v1/halt", tag = "halt",
    request_body(description = "Optional: why",
        content((Option<HaltRequest> = "application/json"), (Option<HaltRequest> = "application/yaml"))),
    params(
        ("X-Boifi-Reason" = Option<String>, Header, max_length = 512,
            pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
            description = "Why, instead of the body's `reason`: one line of UTF-8 text, at most 512 characters"),
    ),
    responses(
        (status = 200, description = "Halted: no faults anywhere", body = HaltState),
        (status = 400, description = "The body has problems; `details` names each field", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token is not a writer, or the request came from another origin", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Body neither JSON nor YAML", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_halt(
    who: Writer,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Body,
) -> Result<web::Json<HaltState>, ApiError> {
    let reason = reason(&req, &body)?;
    switch(&state, &who, true, reason).await
}

#[utoipa::path(
    delete, path = "/v1/halt", tag = "halt",
    request_body(description = "Optional: why",
        content((Option<HaltRequest> = "application/json"), (Option<HaltRequest> = "application/yaml"))),
    params(
        ("X-Boifi-Reason" = Option<String>, Header, max_length = 512,
            pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
            description = "Why, instead of the body's `reason`: one line of UTF-8 text, at most 512 characters"),
    ),
    responses(
        (status = 200, description = "Resumed: policies act again", body = HaltState),
        (status = 400, description = "The body has problems; `details` names each field", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token is not a writer, or the request came from another origin", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Body neither JSON nor YAML", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn clear_halt(
    who: Writer,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Body,
) -> Result<web::Json<HaltState>, ApiError> {
    let reason = reason(&req, &body)?;
    switch(&state, &who, false, reason).await
}

async fn switch(
    state: &AppState,
    who: &Writer,
    halted: bool,
    reason: Option<String>,
) -> Result<web::Json<HaltState>, ApiError> {
    let by = audit::attribution(&who.0, reason.as_deref(), state.clock.now_ms())?;
    let revision = state
        .metrics
        .store_result("set_halted", state.store.set_halted(halted, &by).await)?;
    state.metrics.set_halted(halted);
    let action = AuditAction::of_halt(halted);
    audit::log_entry(&by, action, None, revision);
    let reason = reason
        .map(|reason| format!(", reason {reason:?}"))
        .unwrap_or_default();
    log::warn!(
        "kill switch {} by {} at revision {revision}{reason}",
        if halted { "set" } else { "cleared" },
        who.0.name
    );
    Ok(web::Json(HaltState { halted, revision }))
}

/// The reason from the body or the `X-Boifi-Reason` header; both is a 400 (a blank one is no
/// reason).
fn reason(req: &HttpRequest, body: &Body) -> Result<Option<String>, ApiError> {
    let from_body = halt_request(body)?.reason.filter(|r| !r.trim().is_empty());
    let from_header = audit::header_reason(req.headers())?;
    match (from_body, from_header) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "reason",
            "give the reason once: in the body or in X-Boifi-Reason",
        )),
        (body, header) => Ok(body.or(header)),
    }
}

/// The optional body: blank is no reason.
fn halt_request(body: &Body) -> Result<HaltRequest, ApiError> {
    if body.is_blank() {
        return Ok(HaltRequest::default());
    }
    parse_halt_request(&body.bytes, body.format)
        .map_err(|errors| ApiError::invalid_body("halt request", errors))
}

/// `{"reason": "..."}`, JSON or YAML (`null`, `""`, or a YAML text without a document, is no
/// reason): every problem, each naming its field.
pub fn parse_halt_request(body: &[u8], format: Format) -> Result<HaltRequest, ValidationErrors> {
    let json: Cow<[u8]> = match format {
        Format::Yaml => match yaml::optional_to_json(body)? {
            Some(json) => Cow::Owned(json),
            None => return Ok(HaltRequest::default()),
        },
        _ => Cow::Borrowed(body),
    };
    let mut errors = ValidationErrors::default();
    let fields = match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Object(fields)) => fields,
        Ok(Value::Null) => return Ok(HaltRequest::default()),
        Ok(_) => {
            errors.push("", "the body must be an object, like {\"reason\": \"...\"}");
            return Err(errors);
        }
        Err(e) => {
            errors.push("", format!("invalid JSON: {e}"));
            return Err(errors);
        }
    };
    let mut request = HaltRequest::default();
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("reason", Value::Null) => {}
            ("reason", Value::String(reason)) if reason.is_empty() => {}
            ("reason", Value::String(reason)) => {
                if reason.chars().count() > MAX_REASON_CHARS {
                    errors.push("reason", format!("at most {MAX_REASON_CHARS} characters"));
                } else if reason.chars().any(char::is_control) {
                    errors.push("reason", "one line of text, without control characters");
                } else {
                    request.reason = Some(reason);
                }
            }
            ("reason", _) => errors.push("reason", "expected a string"),
            _ => errors.push(field, "unknown field"),
        }
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
