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
//! - [`routes`]: handlers, one file per route group (`policies`, `halt`, `health`).
//! - [`openapi`]: the OpenAPI document generated from the handlers.
//!
//! | route | token | statuses |
//! |---|---|---|
//! | `GET /v1/health` | none | 200 |
//! | `GET /v1/ready` | none | 200, 503 (store does not answer `ping` within 800 ms) |
//! | `GET /metrics` | none | 200 (Prometheus text) |
//! | `GET /v1/openapi.json` | none | 200 |
//! | `GET /v1/policies` | reader | 200 `{"policies":[...]}`, 401, 503 |
//! | `POST /v1/policies` | writer | 201 created, 200 replaced, 400, 401, 403, 409, 413, 503 |
//! | `GET /v1/policies/{name}` | reader | 200 (`ETag: "<revision>"`), 401, 404, 503 |
//! | `PUT /v1/policies/{name}` | writer | as POST; `metadata.name` must equal `{name}` |
//! | `DELETE /v1/policies/{name}` | writer | 204, 400, 401, 403, 404, 409, 503 |
//! | `GET /v1/halt` | reader | 200 `{"halted":bool,"revision":N}`, 401, 503 |
//! | `POST`/`DELETE /v1/halt` | writer | 200 (set / cleared), 401, 403, 503 |
//!
//! Unknown paths get a JSON 404, unknown methods on a known path a JSON 405. Writes accept
//! `If-Match: <revision>` (quotes optional) and `If-None-Match: *`.
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
mod state;

pub use auth::{Auth, Principal, Reader, Role, Writer};
pub use boifi_store::{Clock, ManualClock, SystemClock};
pub use config::{AuthConfig, Config, ConfigError};
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use openapi::ApiDoc;
pub use state::AppState;

/// Register the shared state, the extractor settings and every policy-api route.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    use routes::{halt, health, policies};

    cfg.app_data(web::Data::new(state.clone()))
        .app_data(web::Data::from(Arc::clone(&state.auth)))
        .app_data(web::Data::from(Arc::clone(&state.metrics)));
    error::configure_extractors(cfg);
    cfg.service(resource("/v1/health").route(web::get().to(health::health)))
        .service(resource("/v1/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(metrics::metrics)))
        .service(resource("/v1/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(
            resource("/v1/policies")
                .route(web::get().to(policies::list_policies))
                .route(web::post().to(policies::create_policy)),
        )
        .service(
            resource("/v1/policies/{name}")
                .route(web::get().to(policies::get_policy))
                .route(web::put().to(policies::replace_policy))
                .route(web::delete().to(policies::delete_policy)),
        )
        .service(
            resource("/v1/halt")
                .route(web::get().to(halt::get_halt))
                .route(web::post().to(halt::set_halt))
                .route(web::delete().to(halt::clear_halt)),
        );
}

/// A resource whose unknown methods get a JSON 405.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(error::method_not_allowed))
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
