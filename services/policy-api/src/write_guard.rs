//! What a write (POST, PUT, DELETE) must be before anything else is looked at, with auth on or
//! off: not sent by a browser page of another site, and with a JSON or YAML body.
//!
//! A browser lets any page send "simple" cross-site requests without asking the server first:
//! a form post (`application/x-www-form-urlencoded`, `multipart/form-data`) or a `fetch` with
//! `text/plain`. Without tokens (`boifi serve` on a laptop) such a request could create
//! policies or set the kill switch. Two rules close that door:
//!
//! - **Origin.** Browsers send `Origin` on every cross-site write. A write whose `Origin` is
//!   present and is not this server's own is 403 `cross_origin`. Own origin: the scheme of the
//!   connection (`https` only when this server terminates TLS), and the request's `Host` (the
//!   `:authority` in HTTP/2) with its port (default 80/443 when absent), compared as browsers
//!   compare origins (`url`'s parser: case, IDNA, default ports). `Origin: null`, an origin
//!   that does not parse, or a request without a `Host` is foreign. `X-Forwarded-*` and
//!   `Forwarded` are not trusted: a proxy can set any of them. Behind a proxy that changes the
//!   scheme or the `Host`, a browser page on the proxy's origin is refused too; BOIFI has no
//!   browser UI, and its clients (CLI, curl, the optimizer) send no `Origin`.
//! - **DNS rebinding.** A page of `evil.example` whose name is made to resolve to 127.0.0.1 is
//!   same-origin with itself, so the Origin rule alone lets it in. On a connection to a
//!   loopback address, a write that carries an `Origin` must therefore name a loopback host
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`).
//! - **Content-Type.** Writes take `application/json` or YAML (`application/yaml`,
//!   `application/x-yaml`, `text/yaml`), parameters allowed, `charset` only `utf-8`; anything
//!   else is 415 `unsupported_media_type` naming the accepted types. A write without a body
//!   needs no `Content-Type`; a body without one is 415 too (told by a non-zero
//!   `Content-Length` before anything is read, or, for a chunked body, once it is read).
//!
//! Reads are not checked: without CORS headers a browser never lets a foreign page read the
//! answer.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::mime::Mime;
use actix_web::HttpRequest;
use boifi_policy::Format;
use url::{Host, Url};

use crate::ApiError;

/// What the 415 answer says writes accept.
pub const ACCEPTED_TYPES: &str =
    "application/json or application/yaml (also application/x-yaml, text/yaml)";

/// Refuse a write that a browser page of another origin sent, or whose body is neither JSON
/// nor YAML. Called by the [`crate::Writer`] extractor, so before authentication.
pub fn check(req: &HttpRequest) -> Result<(), ApiError> {
    check_origin(req)?;
    match body_format(req.headers())? {
        Some(_) => Ok(()),
        // A chunked body may still be empty: [`crate::routes::body::Body`] decides once read.
        None if announces_body(req.headers()) => Err(no_content_type()),
        None => Ok(()),
    }
}

/// The 415 of a body sent without `Content-Type`.
pub fn no_content_type() -> ApiError {
    ApiError::UnsupportedMediaType(format!(
        "the body has no Content-Type; send {ACCEPTED_TYPES}"
    ))
}

/// The format of the body from `Content-Type`; `None` when there is none.
pub fn body_format(headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let unsupported = |what: &str| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type {what} is not accepted; send {ACCEPTED_TYPES}"
        ))
    };
    let text = value.to_str().map_err(|_| unsupported("(not text)"))?;
    let mime: Mime = text
        .parse()
        .map_err(|_| unsupported(&format!("`{}`", text.escape_default())))?;
    let format = match (mime.type_().as_str(), mime.subtype().as_str()) {
        ("application", "json") => Format::Json,
        ("application", "yaml" | "x-yaml") | ("text", "yaml") => Format::Yaml,
        _ => return Err(unsupported(&format!("`{}`", mime.essence_str()))),
    };
    if let Some(charset) = mime.get_param(actix_web::mime::CHARSET) {
        if !charset.as_str().eq_ignore_ascii_case("utf-8") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "charset `{}` is not accepted; bodies are UTF-8",
                charset.as_str().escape_default()
            )));
        }
    }
    Ok(Some(format))
}

/// True when `Content-Length` announces a body. (A chunked one is judged when read: some
/// clients send an empty chunked body for a bodiless POST.)
fn announces_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|len| len.as_bytes().trim_ascii() != b"0")
}

fn check_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let config = req.app_config();
    let host = match req.headers().get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    let connection = Connection {
        secure: config.secure(),
        loopback: config.local_addr().ip().is_loopback(),
        host,
    };
    origin_allowed(req.headers().get(header::ORIGIN), &connection)
}

/// What the origin check needs to know of a request besides its `Origin`.
struct Connection<'a> {
    /// This server terminated TLS.
    secure: bool,
    /// The connection is to a loopback address.
    loopback: bool,
    /// `Host`, or the HTTP/2 authority.
    host: Option<&'a str>,
}

fn origin_allowed(origin: Option<&HeaderValue>, connection: &Connection) -> Result<(), ApiError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let shown = String::from_utf8_lossy(origin.as_bytes())
        .escape_default()
        .to_string();
    let refused = |why: &str| {
        ApiError::CrossOrigin(format!(
            "writes from another origin are refused (Origin `{shown}`: {why})"
        ))
    };
    let claimed = origin
        .to_str()
        .ok()
        .and_then(parse_origin)
        .ok_or_else(|| refused("not an origin of the form scheme://host[:port]"))?;
    let scheme = if connection.secure { "https" } else { "http" };
    let own = connection
        .host
        .and_then(|host| own_origin(scheme, host))
        .ok_or_else(|| refused("the request has no usable Host"))?;
    if claimed.origin() != own.origin() {
        return Err(refused(&format!(
            "this server is {}",
            own.origin().ascii_serialization()
        )));
    }
    if connection.loopback && !is_loopback(own.host()) {
        return Err(refused(
            "a loopback server takes browser writes only for a loopback host name",
        ));
    }
    Ok(())
}

/// `scheme://host[:port]` exactly, as browsers send it: nothing after the authority.
fn parse_origin(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    let bare = url.path() == "/"
        && !text.ends_with('/')
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && url.has_host();
    bare.then_some(url)
}

/// This server's origin as the client addressed it: `scheme` and `host` (`Host`, `host:port`).
fn own_origin(scheme: &str, host: &str) -> Option<Url> {
    // An authority only: no user info, path, query or fragment may hide in it.
    if host.is_empty() || host.contains(['@', '/', '?', '#', '\\']) {
        return None;
    }
    let url = Url::parse(&format!("{scheme}://{host}")).ok()?;
    url.has_host().then_some(url)
}

fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests;
