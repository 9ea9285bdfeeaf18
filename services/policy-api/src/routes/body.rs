//! [`Body`]: a write's body and its format, for every route that reads one.

use std::future::Future;
use std::pin::Pin;

use actix_web::web::Bytes;
use actix_web::{dev::Payload, error::PayloadError, FromRequest, HttpRequest};
use boifi_policy::Format;

use crate::error::payload_error;
use crate::write_guard::{body_format, no_content_type};
use crate::ApiError;

/// A request body read as bytes up to the route's `PayloadConfig` limit (1 MiB, or less where
/// the route sets its own), and its format from `Content-Type`. Without one the body must be
/// empty (415 otherwise); an empty body then counts as JSON.
pub struct Body {
    pub bytes: Bytes,
    pub format: Format,
}

impl Body {
    /// True when there is nothing but whitespace.
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let format = body_format(req.headers());
        let bytes = Bytes::from_request(req, payload);
        Box::pin(async move {
            let format = format?;
            let bytes = bytes
                .await
                .map_err(|e| match e.as_error::<PayloadError>() {
                    Some(payload) => payload_error(payload),
                    None => ApiError::BadRequest(format!("cannot read the request body: {e}")),
                })?;
            let format = match format {
                Some(format) => format,
                None if bytes.is_empty() => Format::Json,
                None => return Err(no_content_type()),
            };
            Ok(Body { bytes, format })
        })
    }
}
