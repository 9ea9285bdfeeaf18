//! `/v1/audit`: who changed what, when and why, newest first; and how the write handlers
//! attribute their changes.
//!
//! Every write, delete, halt and resume is stored with an entry in the same store transaction
//! ([`boifi_store::audit`]): the token's name (never the token; `anonymous` with auth
//! disabled), the action, the policy, the revision, the server's time and an optional reason.
//! Policy writes and deletes take the reason from the `X-Boifi-Reason` header; halt and resume
//! from their body's `reason` or that header. Each entry is also logged at info ([`log_entry`]).
//!
//! `GET /v1/audit?limit=N&continue=TOKEN&policy=NAME&actor=NAME&action=ACTION` pages like
//! `GET /v1/policies`: an unknown or repeated parameter is a 400 naming it.

use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest};
use boifi_policy::wire::{read_query, FieldProblem};
use boifi_store::audit::{check_reason, MAX_ACTOR_CHARS};
use boifi_store::{Attribution, AuditAction, AuditEntry, AuditQuery, Revision};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Principal, Reader};
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// The header that carries the reason of a policy write or delete (and may carry that of a
/// halt or resume).
pub const REASON_HEADER: &str = "x-boifi-reason";
/// Entries in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;

const PARAMETERS: [&str; 5] = ["limit", "continue", "policy", "actor", "action"];
/// A cursor is a position, at most 20 digits.
const MAX_TOKEN_LEN: usize = 20;

/// `GET /v1/audit`: a page of the trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub entries: Vec<AuditRecord>,
    /// Present when more entries may remain: send it back as `continue` (with the same other
    /// parameters) for the next page. Opaque.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecord {
    /// The store revision of the change.
    pub revision: u64,
    /// When the server made the change (RFC 3339, UTC, milliseconds).
    #[schema(example = "2024-05-01T12:05:00.123Z")]
    pub time: String,
    /// The name of the token that made it (`anonymous` when auth is disabled).
    pub actor: String,
    #[schema(value_type = String, pattern = "^(create|replace|delete|halt|resume)$")]
    pub action: AuditAction,
    /// The policy written or deleted; absent for halt and resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<AuditEntry> for AuditRecord {
    fn from(entry: AuditEntry) -> Self {
        AuditRecord {
            revision: entry.revision,
            time: rfc3339_ms(entry.at_ms),
            actor: entry.actor,
            action: entry.action,
            policy: entry.policy,
            reason: entry.reason,
        }
    }
}

/// `ms` (Unix) as RFC 3339 in UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Entries per page, 1-1000; default 100"),
        ("continue" = Option<String>, Query, pattern = "^[0-9]{1,20}$",
            description = "The `continue` of the previous page"),
        ("policy" = Option<String>, Query, max_length = 63,
            description = "Only changes of this policy"),
        ("actor" = Option<String>, Query, max_length = 64,
            description = "Only changes by this token name"),
        ("action" = Option<String>, Query, pattern = "^(create|replace|delete|halt|resume)$",
            description = "Only this kind of change"),
    ),
    responses(
        (status = 200, description = "A page of the audit trail, newest first. A page may hold \
            fewer entries than `limit` and still carry `continue` when filters skipped many.",
            body = AuditList),
        (status = 400, description = "A query parameter is unknown, repeated or invalid; `details` names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_audit(
    _: Reader,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<web::Json<AuditList>, ApiError> {
    let query =
        parse_query(req.query_string(), state.clock.now_ms()).map_err(ApiError::invalid_query)?;
    let page = state
        .metrics
        .store_result("audit", state.store.audit(&query).await)?;
    Ok(web::Json(AuditList {
        entries: page.entries.into_iter().map(AuditRecord::from).collect(),
        next: page.next.map(|position| position.to_string()),
    }))
}

/// The query of `GET /v1/audit`, strictly: every problem, each naming its parameter.
pub fn parse_query(query: &str, now_ms: u64) -> Result<AuditQuery, Vec<FieldProblem>> {
    let [limit, token, policy, actor, action] =
        read_query(query, &PARAMETERS).map_err(|problem| vec![problem])?;
    let mut problems = Vec::new();
    let mut parsed = AuditQuery::newest(DEFAULT_LIMIT, now_ms);
    if let Some(limit) = limit {
        match limit.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => parsed.limit = n,
            _ => problems.push(FieldProblem::new(
                "limit",
                format!(
                    "expected a whole number from 1 to {MAX_LIMIT}, found `{}`",
                    limit.escape_default()
                ),
            )),
        }
    }
    if let Some(token) = token {
        let digits = !token.is_empty()
            && token.len() <= MAX_TOKEN_LEN
            && token.bytes().all(|b| b.is_ascii_digit());
        match token.parse::<u64>() {
            Ok(position) if digits => parsed.before = Some(position),
            _ => problems.push(FieldProblem::new(
                "continue",
                "not a token this server gave; list again without `continue`",
            )),
        }
    }
    if let Some(policy) = policy {
        if policy.is_empty() || policy.len() > boifi_policy::limits::MAX_NAME_LEN {
            problems.push(FieldProblem::new(
                "policy",
                format!(
                    "a policy name, 1-{} characters",
                    boifi_policy::limits::MAX_NAME_LEN
                ),
            ));
        } else {
            parsed.policy = Some(policy);
        }
    }
    if let Some(actor) = actor {
        if actor.is_empty() || actor.chars().count() > MAX_ACTOR_CHARS {
            problems.push(FieldProblem::new(
                "actor",
                format!("a token name, 1-{MAX_ACTOR_CHARS} characters"),
            ));
        } else {
            parsed.actor = Some(actor);
        }
    }
    if let Some(action) = action {
        match AuditAction::parse(&action) {
            Some(action) => parsed.action = Some(action),
            None => problems.push(FieldProblem::new(
                "action",
                format!(
                    "expected one of create, replace, delete, halt, resume; found `{}`",
                    action.escape_default()
                ),
            )),
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// The reason in [`REASON_HEADER`], if any: once, UTF-8, one line, at most 512 characters.
pub fn header_reason(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(REASON_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |message: String| ApiError::invalid_field("X-Boifi-Reason", message);
    if values.next().is_some() {
        return Err(invalid("send it once".to_owned()));
    }
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| invalid("expected UTF-8 text".to_owned()))?;
    check_reason(text).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(text.to_owned()))
}

/// Who is making a change at `at_ms` (the server's clock), and why (a reason already checked
/// by [`header_reason`] or the halt body).
pub fn attribution(
    who: &Principal,
    reason: Option<&str>,
    at_ms: u64,
) -> Result<Attribution, ApiError> {
    Attribution::new(&who.name, reason, at_ms)
        .map_err(|e| ApiError::Internal(format!("attributing a change: {e}")))
}

/// The log line of an audit entry (info): actor, action, policy (`-` for none), revision and
/// reason (quoted and escaped, so a reason cannot forge a log line).
pub fn log_entry(by: &Attribution, action: AuditAction, policy: Option<&str>, revision: Revision) {
    log::info!("{}", log_line(by, action, policy, revision));
}

fn log_line(
    by: &Attribution,
    action: AuditAction,
    policy: Option<&str>,
    revision: Revision,
) -> String {
    let reason = by
        .reason()
        .map(|r| format!(" reason={r:?}"))
        .unwrap_or_default();
    format!(
        "audit actor={} action={} policy={} revision={revision}{reason}",
        by.actor(),
        action.as_str(),
        policy.unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests;
