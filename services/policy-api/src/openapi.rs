//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! policy types' schemas. Served at `GET /v1/openapi.json` without a token: it describes the
//! API and holds nothing secret, and tools fetch it before they have one.

use actix_web::http::header;
use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::{metrics, routes, ApiError};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "BOIFI policy-api",
        description = "Create, list and delete fault-injection policies for BOIFI's Envoy plugin. \
            Send `Authorization: Bearer <token>`; `reader` tokens may GET, `writer` tokens may \
            do everything. Errors have the body `{\"error\", \"message\", \"details\"}`."
    ),
    paths(
        routes::health::health,
        routes::health::ready,
        metrics::metrics,
        openapi_json,
        routes::policies::list_policies,
        routes::policies::create_policy,
        routes::policies::get_policy,
        routes::policies::replace_policy,
        routes::policies::delete_policy,
        routes::halt::get_halt,
        routes::halt::set_halt,
        routes::halt::clear_halt,
        routes::audit::list_audit,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "policies", description = "Fault-injection policies"),
        (name = "halt", description = "Global kill switch"),
        (name = "audit", description = "Who changed what, when and why"),
        (name = "health", description = "Probes, metrics and this document (no token)"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json() -> Result<HttpResponse, ApiError> {
    let doc = ApiDoc::openapi()
        .to_json()
        .map_err(|e| ApiError::Internal(format!("rendering the OpenAPI document: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(doc))
}
