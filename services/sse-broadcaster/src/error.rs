//! Errors: the one place where a failed broadcaster request becomes HTTP, plus the error of
//! starting a broadcaster.
//!
//! The body has the same shape as every BOIFI API error:
//! `{"error": code, "message": text, "details": [{"field", "message"}]}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::hub::Refusal;
use boifi_policy::wire::FieldProblem;

/// Seconds a refused client should wait before trying again.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A query parameter or header cannot be used; `details` names each one.
    #[error("invalid request: {}", list(.0))]
    Invalid(Vec<FieldProblem>),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A bug; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn list(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Serialize)]
struct Detail<'a> {
    field: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    details: Vec<Detail<'a>>,
}

impl RequestError {
    fn code(&self) -> &'static str {
        match self {
            RequestError::Invalid(_) => "invalid_request",
            RequestError::Refused(Refusal::NotReady) => "not_ready",
            RequestError::Refused(Refusal::ShuttingDown) => "shutting_down",
            RequestError::Refused(Refusal::TooManyClients) => "too_many_clients",
            RequestError::NotFound(_) => "not_found",
            RequestError::MethodNotAllowed => "method_not_allowed",
            RequestError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for RequestError {
    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let RequestError::Internal(cause) = self {
            log::error!("internal error: {cause}");
        }
        let details = match self {
            RequestError::Invalid(problems) => problems
                .iter()
                .map(|p| Detail {
                    field: p.field,
                    message: &p.message,
                })
                .collect(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            details,
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, RequestError::Refused(_)) {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        response.json(body)
    }
}

/// Why a broadcaster could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(err: RequestError) -> (StatusCode, serde_json::Value) {
        let response = err.error_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn invalid_lists_every_field() {
        let (status, body) = body_of(RequestError::Invalid(vec![
            FieldProblem::new("service", "too long"),
            FieldProblem::new("wait_ms", "not a number"),
        ]))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["details"][0]["field"], "service");
        assert_eq!(body["details"][1]["message"], "not a number");
        assert!(body["message"].as_str().unwrap().contains("wait_ms"));
    }

    #[actix_web::test]
    async fn refusals_are_503_with_retry_after() {
        for (refusal, code) in [
            (Refusal::NotReady, "not_ready"),
            (Refusal::ShuttingDown, "shutting_down"),
            (Refusal::TooManyClients, "too_many_clients"),
        ] {
            let response = RequestError::from(refusal).error_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
            let (_, body) = body_of(refusal.into()).await;
            assert_eq!(body["error"], code);
        }
        let (status, body) = body_of(RequestError::Internal("secret cause".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("secret"));
    }
}
