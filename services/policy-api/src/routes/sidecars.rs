//! `GET /v1/sidecars`: the sidecars of every sse-broadcaster replica, merged
//! (`docs/sidecar-status.md`).

use actix_web::{web, HttpRequest};
use boifi_policy::wire::SidecarList;

use crate::auth::Reader;
use crate::error::ErrorBody;
use crate::sidecars::SidecarListQuery;
use crate::{ApiError, AppState};

#[utoipa::path(
    get, path = "/v1/sidecars", tag = "sidecars",
    params(
        ("namespace" = Option<String>, Query, max_length = 253,
            description = "Only sidecars of this namespace"),
        ("service" = Option<String>, Query, max_length = 253,
            description = "Only sidecars whose workload name or `app` label is this"),
        ("policy" = Option<String>, Query, max_length = 63,
            description = "Only sidecars this policy's selector matches (labels included)"),
        ("state" = Option<String>, Query, pattern = "^(current|behind)$",
            description = "Only sidecars enforcing every change that concerns them (`current`), or not yet (`behind`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "Sidecars per page, 1-10000; default 500"),
        ("continue" = Option<String>, Query, pattern = "^([0-9a-f]{2})+$",
            description = "The `continue` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of live sidecars, sorted by namespace and pod; \
            replicas that did not answer are listed in `unreachable`", body = SidecarList),
        (status = 400, description = "A query parameter is unknown, repeated or invalid; `details` names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No policy named by `policy`", body = ErrorBody),
        (status = 503, description = "Store unavailable (with `policy`), or no sidecar source (policy-api without BOIFI_BROADCASTERS)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_sidecars(
    _: Reader,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<web::Json<SidecarList>, ApiError> {
    let query = SidecarListQuery::parse(req.query_string()).map_err(ApiError::invalid_query)?;
    let sidecars = state.sidecars.as_ref().ok_or(ApiError::NoSidecarSource)?;
    let (selector, revision) = match &query.policy {
        None => (None, 0),
        Some(name) => {
            let stored = state
                .metrics
                .store_result("get", state.store.get(name).await)?
                .ok_or_else(|| ApiError::NotFound(format!("policy \"{name}\" not found")))?;
            (Some(stored.policy.spec.selector), stored.revision)
        }
    };
    let view = sidecars.view(revision).await;
    Ok(web::Json(view.list(&query, selector.as_ref())))
}
