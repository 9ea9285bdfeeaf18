//! Errors: the one place where a failed broadcaster request becomes HTTP, plus the error of
//! starting a broadcaster.
//!
//! The body is policy-api's, [`ErrorBody`] from `boifi-runtime`:
//! `{"error": code, "message": text, "details": [{"field", "message"}]}`; a bad query
//! parameter is a detail whose `field` is the parameter's name.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use boifi_policy::FieldError;
use boifi_runtime::ErrorBody;

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
        let mut body = ErrorBody::new(self.code(), self.to_string());
        if let RequestError::Invalid(problems) = self {
            body = body.with_details(problems.iter().map(detail).collect());
        }
        let mut response = body.respond(self.status_code());
        if matches!(self, RequestError::Refused(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A bad query parameter as a detail of the error body.
fn detail(problem: &FieldProblem) -> FieldError {
    FieldError {
        field: problem.field.to_owned(),
        message: problem.message.clone(),
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
