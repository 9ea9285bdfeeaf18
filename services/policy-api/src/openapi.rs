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
            do everything. Errors have the body `{\"error\", \"message\", \"details\"}`. \
            Writes take JSON or YAML bodies (`application/json`, `application/yaml`; 415 \
            otherwise) and are refused (403 `cross_origin`) when their `Origin` is not this \
            server's own. A method a path does not serve is 405 with `Allow`."
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
        routes::sidecars::list_sidecars,
        routes::audit::list_audit,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken, &HeadersNotNullable),
    tags(
        (name = "policies", description = "Fault-injection policies"),
        (name = "halt", description = "Global kill switch"),
        (name = "sidecars", description = "Which sidecars enforce which revision, and the faults they injected"),
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

/// utoipa makes an optional (`Option`) header parameter nullable too, which HTTP cannot say:
/// a client following the document would send the text `null`. An optional header is one that
/// is left out, so the `null` is removed from every header parameter's type.
struct HeadersNotNullable;

impl Modify for HeadersNotNullable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{SchemaType, Type};
        use utoipa::openapi::{RefOr, Schema};

        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
        });
        for operation in operations.flatten() {
            let headers = operation
                .parameters
                .iter_mut()
                .flatten()
                .filter(|p| p.parameter_in == ParameterIn::Header);
            for header in headers {
                if let Some(RefOr::T(Schema::Object(object))) = &mut header.schema {
                    if let SchemaType::Array(types) = &object.schema_type {
                        let mut kept = types.iter().filter(|t| **t != Type::Null);
                        if let (Some(only), None) = (kept.next(), kept.next()) {
                            object.schema_type = SchemaType::Type(only.clone());
                        }
                    }
                }
            }
        }
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
