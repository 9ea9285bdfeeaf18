//! BOIFI policy-api: the REST API that creates, lists and deletes fault-injection policies.
//!
//! - [`configure`]: registers every route of the contract in one place; [`app`] wraps it
//!   with the request middleware and a JSON 404, ready for `HttpServer` or `test::init_service`.
//! - [`server::run`]: serves an already bound listener until a shutdown future completes.
//! - [`config`]: `BOIFI_*` settings, parsed from key/value pairs.
//! - [`error`]: [`ApiError`], the only place that builds the error JSON, and the extractor
//!   error handlers.
//! - [`auth`]: bearer tokens with `reader`/`writer` roles ([`Reader`], [`Writer`] extractors).
//! - [`metrics`]: [`ApiMetrics`] (own Prometheus registry), the request log/metrics
//!   middleware and `/metrics`.
//! - [`routes`]: handlers, one file per route group (`policies`, `halt`, `audit`, `health`,
//!   `sidecars`).
//! - [`sidecars`]: sidecar status: the broadcaster replicas' sidecar tables gathered (behind
//!   the [`sidecars::SidecarSource`] trait), merged and cached, for `GET /v1/sidecars` and the
//!   `status.enforcement` and `status.injected` of policy reads.
//! - [`openapi`]: the OpenAPI document generated from the handlers.
//! - [`write_guard`]: what every write must be, auth on or off: same-origin (`Origin`) and a
//!   JSON or YAML body (`Content-Type`); checked by the [`Writer`] extractor.
//!
//! | route | token | statuses |
//! |---|---|---|
//! | `GET /v1/health` | none | 200 |
//! | `GET /v1/ready` | none | 200, 503 (store does not answer `ping` within 800 ms) |
//! | `GET /metrics` | none | 200 (Prometheus text) |
//! | `GET /v1/openapi.json` | none | 200 |
//! | `GET /v1/policies` | reader | 200 `{"policies":[...],"continue"?}` (pages), 400, 401, 503 |
//! | `POST /v1/policies` | writer | 201 created, 200 replaced, 400, 401, 403, 409, 413, 415, 503 |
//! | `GET /v1/policies/{name}` | reader | 200 (`ETag: "<revision>"`), 401, 404, 503 |
//! | `PUT /v1/policies/{name}` | writer | as POST; `metadata.name` must equal `{name}` |
//! | `DELETE /v1/policies/{name}` | writer | 204, 400, 401, 403, 404, 409, 415, 503 |
//! | `GET /v1/halt` | reader | 200 `{"halted":bool,"revision":N}`, 401, 503 |
//! | `GET /v1/sidecars` | reader | 200 `{"sidecars":[...],"replicas","unreachable","continue"?}`, 400, 401, 404 (`policy`), 503 (no sidecar source) |
//! | `POST`/`DELETE /v1/halt` | writer | 200 (set / cleared), 400, 401, 403, 413, 415, 503 |
//! | `GET /v1/audit` | reader | 200 `{"entries":[...],"continue"?}` (newest first, pages), 400, 401, 503 |
//!
//! Unknown paths get a JSON 404, unknown methods on a known path a JSON 405 with `Allow`.
//! Policy bodies are JSON or YAML (`Content-Type`); writes from a foreign `Origin` are 403.
//! Writes accept `If-Match: <revision>` (quotes optional) and `If-None-Match: *`, and
//! `X-Boifi-Reason: <why>` for the audit trail, which records every write, delete, halt and
//! resume with the token's name in the same store transaction as the change.
//!
//! The pieces of [`AppState`] (`Auth`, `ApiMetrics`, the clock) are separate `Arc`s so a second
//! service (the sse-broadcaster, or both in `boifi serve`) can mount its routes next to ours.

#![forbid(unsafe_code)]

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod sidecars;
mod state;
pub mod write_guard;

pub use auth::{Auth, Principal, Reader, Role, Writer};
pub use boifi_store::{Clock, ManualClock, SystemClock};
pub use config::{AuthConfig, Config, ConfigError};
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use openapi::ApiDoc;
pub use state::AppState;

/// Register the shared state, the extractor settings and every policy-api route.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    use routes::{audit, halt, health, policies, sidecars};

    cfg.app_data(web::Data::new(state.clone()))
        .app_data(web::Data::from(Arc::clone(&state.auth)))
        .app_data(web::Data::from(Arc::clone(&state.metrics)));
    error::configure_extractors(cfg);
    cfg.service(resource("/v1/health", "GET").route(web::get().to(health::health)))
        .service(resource("/v1/ready", "GET").route(web::get().to(health::ready)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics::metrics)))
        .service(resource("/v1/openapi.json", "GET").route(web::get().to(openapi::openapi_json)))
        .service(
            resource("/v1/policies", "GET, POST")
                .route(web::get().to(policies::list_policies))
                .route(web::post().to(policies::create_policy)),
        )
        .service(
            resource("/v1/policies/{name}", "GET, PUT, DELETE")
                .route(web::get().to(policies::get_policy))
                .route(web::put().to(policies::replace_policy))
                .route(web::delete().to(policies::delete_policy)),
        )
        .service(
            resource("/v1/halt", "GET, POST, DELETE")
                .app_data(web::PayloadConfig::new(halt::MAX_BODY_BYTES))
                .route(web::get().to(halt::get_halt))
                .route(web::post().to(halt::set_halt))
                .route(web::delete().to(halt::clear_halt)),
        )
        .service(resource("/v1/sidecars", "GET").route(web::get().to(sidecars::list_sidecars)))
        .service(resource("/v1/audit", "GET").route(web::get().to(audit::list_audit)));
}

/// A resource serving the methods `allow` (as the `Allow` header lists them, e.g.
/// `"GET, POST"`); any other method gets a JSON 405 with that `Allow`.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(error::method_not_allowed(allow))
}

/// The whole application: request log and metrics around [`configure`], JSON 404 for
/// unknown paths.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(metrics::observe))
        .configure(|cfg| configure(cfg, &state))
        .default_service(web::to(error::not_found))
}
