//! The one place where failures become HTTP responses.
//!
//! Every error the API sends, whether from a handler, an extractor or an unknown route, has
//! the body [`ErrorBody`] (`{"error": code, "message": text, "details": [{"field",
//! "message"}]}`, shared with the sse-broadcaster through `boifi-runtime`). Internal causes
//! (store I/O, corrupt data) are logged here and replaced by a generic message.

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use boifi_policy::wire::FieldProblem;
use boifi_policy::{FieldError, ValidationErrors};
pub use boifi_runtime::ErrorBody;
use boifi_store::{Revision, StoreError};

/// Largest request body any route accepts (1 MiB, the policy model's document limit).
pub const MAX_BODY_BYTES: usize = boifi_policy::limits::MAX_POLICY_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The policy (or another request part) has problems; `details` lists all of them.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    /// Malformed request outside the policy body (header, path, query).
    #[error("{0}")]
    BadRequest(String),
    /// No usable bearer token. `invalid_token` is true when a token was sent but not accepted.
    #[error("{message}")]
    Unauthorized {
        message: &'static str,
        invalid_token: bool,
    },
    #[error("the token's role `{role}` may not {action}")]
    Forbidden {
        role: &'static str,
        action: &'static str,
    },
    /// A write from a browser page of another origin (or an `Origin` that cannot be checked).
    #[error("{0}")]
    CrossOrigin(String),
    #[error("{0}")]
    NotFound(String),
    /// `allow`: the methods the route serves, for the `Allow` header.
    #[error("method not allowed on this route; it serves {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// A precondition (`If-Match`, `If-None-Match`) did not hold.
    #[error("{}", conflict_message(*.current))]
    Conflict { current: Option<Revision> },
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// A write whose body is not JSON or YAML.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The store did not answer; the cause is logged.
    #[error("the policy store is unavailable")]
    Unavailable(String),
    /// Sidecar status was asked of a server that has no source for it.
    #[error(
        "sidecar status is not available: this policy-api was started without \
         BOIFI_BROADCASTERS (the sse-broadcaster URLs whose sidecar tables it gathers)"
    )]
    NoSidecarSource,
    /// A bug or damaged data; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn conflict_message(current: Option<Revision>) -> String {
    match current {
        Some(rev) => format!("precondition failed: the current revision is {rev}"),
        None => "precondition failed: the policy does not exist".to_owned(),
    }
}

impl ApiError {
    /// A 400 that lists every problem of a policy.
    pub fn invalid_policy(errors: ValidationErrors) -> Self {
        ApiError::invalid_body("policy", errors)
    }

    /// A 400 that lists every problem of a request body (`what`: "policy", "halt request").
    pub fn invalid_body(what: &str, errors: ValidationErrors) -> Self {
        ApiError::Invalid {
            message: format!("the {what} has {} problem(s)", errors.errors.len()),
            details: errors.errors,
        }
    }

    /// A 400 naming the query parameters that could not be used.
    pub fn invalid_query(problems: Vec<FieldProblem>) -> Self {
        ApiError::Invalid {
            message: "invalid query parameters".to_owned(),
            details: problems
                .into_iter()
                .map(|p| FieldError {
                    field: p.field.to_owned(),
                    message: p.message,
                })
                .collect(),
        }
    }

    /// A 400 about a single field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: format!("invalid {field}"),
            details: vec![FieldError {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_request",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::CrossOrigin(_) => "cross_origin",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NoSidecarSource => "sidecars_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn body(&self) -> ErrorBody {
        let body = ErrorBody::new(self.code(), self.to_string());
        match self {
            ApiError::Invalid { details, .. } => body.with_details(details.clone()),
            _ => body,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::CrossOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::NoSidecarSource => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Unavailable(cause) => log::warn!("store unavailable: {cause}"),
            ApiError::Internal(cause) => log::error!("internal error: {cause}"),
            _ => {}
        }
        let mut res = self.body().respond(self.status_code());
        match self {
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if *invalid_token {
                    r#"Bearer realm="boifi", error="invalid_token""#
                } else {
                    r#"Bearer realm="boifi""#
                };
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::MethodNotAllowed { allow } => {
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { current } => ApiError::Conflict { current },
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Map a body-reading failure: too large is 413, anything else (bad length, broken
/// connection, bad compression) is 400.
pub fn payload_error(err: &PayloadError) -> ApiError {
    match err {
        PayloadError::Overflow => ApiError::PayloadTooLarge,
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    }
}

/// Register the body limit and the JSON error handlers of the JSON, path, query and payload
/// extractors, so their failures have the same shape as every other error.
pub fn configure_extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(json_error),
        )
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error));
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::Payload(e) => payload_error(&e),
        JsonPayloadError::ContentType => {
            ApiError::BadRequest("expected Content-Type: application/json".to_owned())
        }
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
    }
    .into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {err}")).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

/// Default service for paths no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {}", req.path())))
}

/// Default service of a resource serving `allow` (e.g. `"GET, POST"`): a known path with a
/// method it does not serve.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let res = err.error_response();
        let status = res.status();
        let bytes = to_bytes(res.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn internal_causes_are_not_sent() {
        let (status, body) = body_of(ApiError::from(StoreError::Corrupt {
            key: "/boifi/policies/x".into(),
            reason: "secret detail".into(),
        }))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal");
        assert!(!body.to_string().contains("secret detail"));
    }

    #[actix_web::test]
    async fn conflict_names_the_current_revision() {
        let (status, body) = body_of(StoreError::Conflict { current: Some(42) }.into()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "conflict");
        assert!(body["message"].as_str().unwrap().contains("42"));
        assert_eq!(body["details"], serde_json::json!([]));
    }

    #[actix_web::test]
    async fn unauthorized_carries_a_bearer_challenge() {
        let res = ApiError::Unauthorized {
            message: "unknown token",
            invalid_token: true,
        }
        .error_response();
        let challenge = res.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
    }

    #[actix_web::test]
    async fn method_not_allowed_names_the_methods_in_allow() {
        let res = ApiError::MethodNotAllowed { allow: "GET, POST" }.error_response();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET, POST");
    }

    #[test]
    fn overflow_is_413_and_other_payload_errors_400() {
        assert_eq!(
            payload_error(&PayloadError::Overflow).status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            payload_error(&PayloadError::Incomplete(None)).status_code(),
            StatusCode::BAD_REQUEST
        );
    }
}
