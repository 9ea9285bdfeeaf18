//! `/v1/policies`: list, get, create or replace, delete.
//!
//! Writes read the body as bytes and hand them to [`ValidPolicy::parse`], which names unknown
//! fields, type errors and rule problems by path in one answer; only a [`ValidPolicy`] can be
//! stored. The server stamps `status` (times, expiry); reads fill in the store revision and
//! mark expired rules.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use boifi_policy::{status, Format, Policy, ValidPolicy};
use boifi_store::{AuditAction, Precondition, Revision, StoreError, StoredPolicy};
use serde::Serialize;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::auth::{Reader, Writer};
use crate::error::ErrorBody;
use crate::routes::audit;
use crate::routes::body::Body;
use crate::sidecars::SidecarView;
use crate::{ApiError, AppState};

pub mod list;

use list::ListQuery;

/// Writes without a client precondition are checked against what we read, so the kept
/// `created_at` is that of the policy replaced; when other writers keep getting in between,
/// the last attempt writes unconditionally (last writer wins, as the client asked).
const WRITE_ATTEMPTS: usize = 4;

/// The optimistic-concurrency headers of `POST`/`PUT` ([`precondition`] reads them).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WritePreconditions {
    /// Write only if the stored revision is this one (the `ETag`, quotes optional).
    #[param(rename = "If-Match", pattern = r#"^("[0-9]{1,19}"|[0-9]{1,19})$"#)]
    pub if_match: Option<String>,
    /// `*`: write only if the name is new.
    #[param(rename = "If-None-Match", pattern = r"^\*$")]
    pub if_none_match: Option<String>,
}

/// What `POST` and `PUT` answer (for the OpenAPI document).
#[derive(IntoResponses)]
pub enum WriteResponses {
    #[response(status = 201, description = "Created", headers(
        ("ETag" = String, description = "Quoted store revision"),
        ("Location" = String, description = "The new policy's path")))]
    Created(Policy),
    #[response(status = 200, description = "Replaced", headers(
        ("ETag" = String, description = "Quoted store revision")))]
    Replaced(Policy),
    #[response(
        status = 400,
        description = "Every problem, with field paths (YAML syntax: field \"\", message \"line L, column C: ...\")"
    )]
    Invalid(ErrorBody),
    #[response(status = 401, description = "Missing or unknown token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "Token is not a writer, or the request came from another origin"
    )]
    Forbidden(ErrorBody),
    #[response(status = 409, description = "Precondition failed")]
    Conflict(ErrorBody),
    #[response(status = 413, description = "Body larger than 1 MiB")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Body neither JSON nor YAML")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 503, description = "Store unavailable")]
    Unavailable(ErrorBody),
}

/// `GET /v1/policies`: a page of policies.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// Sorted by name.
    pub policies: Vec<Policy>,
    /// Present when more policies remain: send it back as `continue` (with the same other
    /// parameters) for the next page. Opaque.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/policies", tag = "policies",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Policies per page, 1-1000; default 500"),
        ("continue" = Option<String>, Query, pattern = "^(2d|3[0-9]|6[1-9a-f]|7[0-9a]){1,63}$",
            description = "The `continue` of the previous page"),
        ("namespace" = Option<String>, Query, max_length = 253, pattern = "^[!-~]*$",
            description = "Only policies whose selector can match a workload in this namespace"),
        ("service" = Option<String>, Query, max_length = 253, pattern = "^[!-~]*$",
            description = "Only policies whose selector can match a workload of this name"),
    ),
    responses(
        (status = 200, description = "A page of policies, sorted by name", body = PolicyList),
        (status = 400, description = "A query parameter is unknown, repeated or invalid; `details` names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_policies(
    _: Reader,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<web::Json<PolicyList>, ApiError> {
    let query = ListQuery::parse(req.query_string()).map_err(ApiError::invalid_query)?;
    let snapshot = state
        .metrics
        .store_result("snapshot", state.store.snapshot().await)?;
    state.metrics.set_policies(snapshot.policies.len());
    let (page, next) = list::page(
        snapshot.policies,
        &query,
        |p| &p.policy.metadata.name,
        |p| &p.policy.spec.selector,
    );
    let newest = page.iter().map(|p| p.revision).max().unwrap_or(0);
    let view = sidecar_view(&state, newest).await;
    let now = state.clock.now_ms();
    let policies = page
        .into_iter()
        .map(|p| with_sidecar_status(for_output(p.policy, p.revision, now), view.as_deref()))
        .collect();
    Ok(web::Json(PolicyList { policies, next }))
}

#[utoipa::path(
    get, path = "/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "Policy name", example = "reviews-abort")),
    responses(
        (status = 200, description = "The policy; `ETag` is its revision", body = Policy,
            headers(("ETag" = String, description = "Quoted store revision"))),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_policy(
    _: Reader,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let StoredPolicy { policy, revision } = state
        .metrics
        .store_result("get", state.store.get(&name).await)?
        .ok_or_else(|| not_found(&name))?;
    let view = sidecar_view(&state, revision).await;
    let policy = with_sidecar_status(
        for_output(policy, revision, state.clock.now_ms()),
        view.as_deref(),
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(revision)))
        .json(policy))
}

#[utoipa::path(
    post, path = "/v1/policies", tag = "policies",
    request_body(description = "The policy, JSON or YAML (one document); `status` is ignored",
        content((Policy = "application/json"), (Policy = "application/yaml"))),
    params(
        WritePreconditions,
        ("X-Boifi-Reason" = Option<String>, Header, max_length = 512,
            description = "Why, for the audit trail: one line of UTF-8 text, at most 512 characters"),
    ),
    responses(WriteResponses),
    security(("bearer" = []))
)]
pub async fn create_policy(
    who: Writer,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let precondition = precondition(req.headers())?;
    let reason = audit::header_reason(req.headers())?;
    let policy = validate(&body.bytes, body.format, None)?;
    write(&state, &who, reason.as_deref(), policy, precondition).await
}

#[utoipa::path(
    put, path = "/v1/policies/{name}", tag = "policies",
    request_body(description = "The policy, JSON or YAML (one document); `metadata.name` must equal `name`",
        content((Policy = "application/json"), (Policy = "application/yaml"))),
    params(
        ("name" = String, Path, description = "Policy name", example = "reviews-abort"),
        WritePreconditions,
        ("X-Boifi-Reason" = Option<String>, Header, max_length = 512,
            description = "Why, for the audit trail: one line of UTF-8 text, at most 512 characters"),
    ),
    responses(WriteResponses),
    security(("bearer" = []))
)]
pub async fn replace_policy(
    who: Writer,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let precondition = precondition(req.headers())?;
    let reason = audit::header_reason(req.headers())?;
    let policy = validate(&body.bytes, body.format, Some(&name))?;
    write(&state, &who, reason.as_deref(), policy, precondition).await
}

#[utoipa::path(
    delete, path = "/v1/policies/{name}", tag = "policies",
    params(
        ("name" = String, Path, description = "Policy name", example = "reviews-abort"),
        ("If-Match" = Option<String>, Header, pattern = r#"^("[0-9]{1,19}"|[0-9]{1,19})$"#,
            description = "Delete only if the stored revision is this one (the `ETag`, quotes optional)"),
        ("X-Boifi-Reason" = Option<String>, Header, max_length = 512,
            description = "Why, for the audit trail: one line of UTF-8 text, at most 512 characters"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed precondition or `X-Boifi-Reason`", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token is not a writer, or the request came from another origin", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 409, description = "Precondition failed", body = ErrorBody),
        (status = 415, description = "A body that is neither JSON nor YAML (none is needed)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_policy(
    who: Writer,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    // Read only so that a body without Content-Type is refused as on every write; ignored.
    _body: Body,
) -> Result<HttpResponse, ApiError> {
    let precondition = match precondition(req.headers())? {
        Some(Precondition::Absent) => {
            return Err(ApiError::BadRequest(
                "If-None-Match has no meaning on DELETE".to_owned(),
            ))
        }
        other => other.unwrap_or_default(),
    };
    let reason = audit::header_reason(req.headers())?;
    let by = audit::attribution(&who.0, reason.as_deref(), state.clock.now_ms())?;
    let deleted = state
        .metrics
        .store_result("delete", state.store.delete(&name, precondition, &by).await)?;
    let Some(revision) = deleted else {
        return Err(not_found(&name));
    };
    audit::log_entry(&by, AuditAction::Delete, Some(&name), revision);
    state.metrics.policy_deleted();
    Ok(HttpResponse::NoContent().finish())
}

/// Stamp and store `policy` on behalf of `who`, keeping `created_at` of the policy it
/// replaces.
async fn write(
    state: &AppState,
    who: &Writer,
    reason: Option<&str>,
    mut policy: ValidPolicy,
    precondition: Option<Precondition>,
) -> Result<HttpResponse, ApiError> {
    let name = policy.name().to_owned();
    let metrics = &state.metrics;
    for attempt in 1..=WRITE_ATTEMPTS {
        let existing = metrics.store_result("get", state.store.get(&name).await)?;
        let last_seen = existing.as_ref().map(|s| s.revision);
        let created_at = existing
            .and_then(|s| s.policy.status)
            .map(|s| s.created_at_ms)
            .filter(|ms| *ms > 0);
        let effective = match (precondition, last_seen) {
            (Some(client), _) => client,
            (None, _) if attempt == WRITE_ATTEMPTS => Precondition::None,
            (None, Some(rev)) => Precondition::Revision(rev),
            (None, None) => Precondition::Absent,
        };
        let now = state.clock.now_ms();
        policy.stamp(now, created_at);
        let by = audit::attribution(&who.0, reason, now)?;
        match metrics.store_result("put", state.store.put(&policy, effective, &by).await) {
            Ok(outcome) => {
                let action = if outcome.created {
                    metrics.policy_created();
                    AuditAction::Create
                } else {
                    AuditAction::Replace
                };
                audit::log_entry(&by, action, Some(&name), outcome.revision);
                let mut res = if outcome.created {
                    let mut res = HttpResponse::Created();
                    res.insert_header((header::LOCATION, format!("/v1/policies/{name}")));
                    res
                } else {
                    HttpResponse::Ok()
                };
                res.insert_header((header::ETAG, etag(outcome.revision)));
                return Ok(res.json(for_output(policy.into(), outcome.revision, now)));
            }
            Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    // The last attempt is unconditional and cannot conflict.
    Err(ApiError::Internal(
        "unconditional write reported a conflict".to_owned(),
    ))
}

/// Parse and check a policy body, JSON or YAML ([`ValidPolicy::parse`]): every problem, each
/// with its field path, in one 400.
pub fn validate(
    body: &[u8],
    format: Format,
    path_name: Option<&str>,
) -> Result<ValidPolicy, ApiError> {
    ValidPolicy::parse(body, format, path_name).map_err(ApiError::invalid_policy)
}

/// The optimistic-concurrency headers of a write: `If-Match: <revision>` (quotes optional)
/// or `If-None-Match: *`.
pub fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let if_match = single(headers, header::IF_MATCH)?;
    let if_none_match = single(headers, header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "send If-Match or If-None-Match, not both".to_owned(),
        )),
        (Some(value), None) => parse_revision(value)
            .map(|rev| Some(Precondition::Revision(rev)))
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "If-Match: expected a revision number, e.g. `If-Match: \"42\"`".to_owned(),
                )
            }),
        (None, Some(value)) if value.as_bytes().trim_ascii() == b"*" => {
            Ok(Some(Precondition::Absent))
        }
        (None, Some(_)) => Err(ApiError::BadRequest(
            "If-None-Match: only `*` is supported (write only if the name is new)".to_owned(),
        )),
        (None, None) => Ok(None),
    }
}

fn single(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&HeaderValue>, ApiError> {
    let mut values = headers.get_all(&name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::BadRequest(format!("{name}: send it once")));
    }
    Ok(first)
}

fn parse_revision(value: &HeaderValue) -> Option<Revision> {
    let text = value.to_str().ok()?.trim();
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if unquoted.is_empty() || !unquoted.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    unquoted.parse().ok()
}

fn etag(revision: Revision) -> String {
    format!("\"{revision}\"")
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("policy \"{}\" not found", name.escape_default()))
}

/// The sidecar tables, when this server has a source for them, from replicas that know of
/// `revision` if they can.
async fn sidecar_view(state: &AppState, revision: u64) -> Option<Arc<SidecarView>> {
    match &state.sidecars {
        Some(sidecars) => Some(sidecars.view(revision).await),
        None => None,
    }
}

/// `status.enforcement` and `status.injected` of a policy read, from the sidecar tables
/// (left out when the server has none).
fn with_sidecar_status(mut policy: Policy, view: Option<&SidecarView>) -> Policy {
    let Some(view) = view else {
        return policy;
    };
    let Policy {
        metadata,
        spec,
        status,
    } = &mut policy;
    let status = status.get_or_insert_with(Default::default);
    status.enforcement = Some(view.enforcement(&spec.selector, status.revision));
    status.injected = Some(view.injected(&metadata.name));
    policy
}

/// A stored policy as the API returns it: `status.revision` from the store, expired rules
/// marked for `now_ms`.
fn for_output(mut policy: Policy, revision: Revision, now_ms: u64) -> Policy {
    let status = policy.status.get_or_insert_with(Default::default);
    status.revision = revision;
    status::refresh_expired(status, now_ms);
    policy
}

#[cfg(test)]
mod tests;
