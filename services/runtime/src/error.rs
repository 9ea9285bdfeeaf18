//! The JSON body of every BOIFI error response, the shape `docs/api.md` documents:
//! `{"error": code, "message": text, "details": [{"field": path, "message": text}]}`.
//!
//! Each service keeps its own error enum (its codes and statuses) and turns it into an
//! [`ErrorBody`] in its one `ResponseError` impl; the shape itself is only written here.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use boifi_policy::FieldError;
use serde::Serialize;

/// The error body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_request`, `conflict`, `unauthorized`.
    pub error: &'static str,
    /// One sentence for people.
    pub message: String,
    /// Every problem found, each with its field path (empty when the error has no fields).
    pub details: Vec<FieldError>,
}

impl ErrorBody {
    /// A body without field details.
    pub fn new(error: &'static str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> ErrorBody {
        self.details = details;
        self
    }

    /// A response with `status` and this body as JSON. Add headers (`WWW-Authenticate`,
    /// `Retry-After`) to the returned response.
    pub fn respond(self, status: StatusCode) -> HttpResponse {
        HttpResponse::build(status).json(self)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::http::header;

    use super::*;

    #[actix_web::test]
    async fn the_body_has_the_documented_shape() {
        let response = ErrorBody::new("invalid_request", "the policy has 1 problem(s)")
            .with_details(vec![FieldError {
                field: "spec.rules[0].fault.percentage".into(),
                message: "must be a number from 0 to 100, got 150".into(),
            }])
            .respond(StatusCode::BAD_REQUEST);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let bytes = to_bytes(response.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "invalid_request",
                "message": "the policy has 1 problem(s)",
                "details": [{
                    "field": "spec.rules[0].fault.percentage",
                    "message": "must be a number from 0 to 100, got 150"
                }]
            })
        );
    }

    #[actix_web::test]
    async fn details_are_an_empty_list_when_there_are_none() {
        let response =
            ErrorBody::new("not_found", "no route for /x").respond(StatusCode::NOT_FOUND);
        let bytes = to_bytes(response.into_body()).await.unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"error":"not_found","message":"no route for /x","details":[]}"#
        );
    }
}
