//! Bearer-token authentication with two roles, `reader` (GET) and `writer` (everything).
//!
//! Handlers ask for a role by taking a [`Reader`] or [`Writer`] argument; the extractor
//! reads [`Auth`] from the app data, checks the `Authorization` header and records the
//! token's name (never the token) in the request extensions for the request log.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::io::Read;
use std::path::{Path, PathBuf};

use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use constant_time_eq::constant_time_eq;

use crate::{ApiError, AuthConfig};

/// A tokens file is a short list; anything bigger is a mistake (or an attack on startup).
pub const MAX_TOKENS_FILE_BYTES: u64 = 64 * 1024;
/// Tokens shorter than this are too easy to guess.
pub const MIN_TOKEN_LEN: usize = 16;
pub const MAX_TOKEN_LEN: usize = 512;
/// Names appear in logs, so they are short and plain.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Writer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
        }
    }
}

/// Who made a request: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

struct TokenEntry {
    name: String,
    role: Role,
    token: String,
}

/// The accepted tokens, or auth switched off (`BOIFI_AUTH_DISABLED=true`).
pub struct Auth {
    /// `None`: auth disabled, every request acts as a writer named `anonymous`.
    tokens: Option<Vec<TokenEntry>>,
}

impl fmt::Debug for Auth {
    // Hand-written so a token can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tokens {
            None => f.write_str("Auth(disabled)"),
            Some(t) => write!(f, "Auth({} tokens)", t.len()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {} is larger than {MAX_TOKENS_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    /// Never carries the token text.
    #[error("tokens file line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("tokens file holds no tokens")]
    Empty,
}

impl Auth {
    pub fn disabled() -> Self {
        Auth { tokens: None }
    }

    pub fn is_disabled(&self) -> bool {
        self.tokens.is_none()
    }

    /// Number of accepted tokens (0 when disabled).
    pub fn token_count(&self) -> usize {
        self.tokens.as_ref().map_or(0, Vec::len)
    }

    /// Auth as configured; logs a warning when it is disabled.
    pub fn from_config(config: &AuthConfig) -> Result<Self, TokensError> {
        match config {
            AuthConfig::Disabled => {
                log::warn!(
                    "authentication is DISABLED (BOIFI_AUTH_DISABLED=true): anyone who can \
                     reach this port can change policies; use this for local work only"
                );
                Ok(Auth::disabled())
            }
            AuthConfig::TokensFile(path) => {
                let auth = Auth::load(path)?;
                log::info!("loaded {} API token(s)", auth.token_count());
                Ok(auth)
            }
        }
    }

    /// Read a tokens file (at most [`MAX_TOKENS_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let read_err = |source| TokensError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKENS_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_TOKENS_FILE_BYTES {
            return Err(TokensError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&bytes)
    }

    /// Parse the tokens file format: one `<name> <role> <token>` per line, separated by
    /// spaces; blank lines and lines starting with `#` are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Self, TokensError> {
        let mut tokens: Vec<TokenEntry> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut seen_tokens: HashMap<String, usize> = HashMap::new();
        for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = index + 1;
            let err = |reason: String| TokensError::Line { line, reason };
            let text = std::str::from_utf8(raw)
                .map_err(|_| err("not valid UTF-8".to_owned()))?
                .trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let entry = parse_line(text).map_err(err)?;
            if let Some(first) = names.insert(entry.name.clone(), line) {
                return Err(err(format!("the name is already used on line {first}")));
            }
            if let Some(first) = seen_tokens.insert(entry.token.clone(), line) {
                return Err(err(format!("same token as line {first}")));
            }
            tokens.push(entry);
        }
        if tokens.is_empty() {
            return Err(TokensError::Empty);
        }
        Ok(Auth {
            tokens: Some(tokens),
        })
    }

    /// Check an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Principal, ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Principal {
                name: "anonymous".to_owned(),
                role: Role::Writer,
            });
        };
        let Some(header) = header else {
            return Err(ApiError::Unauthorized {
                message: "missing bearer token (Authorization: Bearer <token>)",
                invalid_token: false,
            });
        };
        let presented = header
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthorized {
                message: "malformed Authorization header (expected `Bearer <token>`)",
                invalid_token: true,
            })?;
        // Compare against every token without stopping early, so the time taken does not
        // tell which token (or how much of one) matched.
        let mut found = None;
        for entry in tokens {
            if constant_time_eq(entry.token.as_bytes(), presented.as_bytes()) && found.is_none() {
                found = Some(entry);
            }
        }
        found
            .map(|e| Principal {
                name: e.name.clone(),
                role: e.role,
            })
            .ok_or(ApiError::Unauthorized {
                message: "unknown bearer token",
                invalid_token: true,
            })
    }
}

fn parse_line(text: &str) -> Result<TokenEntry, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [name, role, token] = fields[..] else {
        return Err(format!(
            "expected `<name> <role> <token>`, found {} field(s)",
            fields.len()
        ));
    };
    let name_ok = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !name_ok {
        return Err(format!(
            "name must be 1-{MAX_NAME_LEN} characters of letters, digits, `-`, `_`, `.`, `@`"
        ));
    }
    let role = match role {
        "reader" => Role::Reader,
        "writer" => Role::Writer,
        // Not echoed: with columns swapped, this field could be a token.
        _ => return Err("role must be `reader` or `writer`".to_owned()),
    };
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
        return Err(format!(
            "token must be {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} characters long"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("token must be printable ASCII".to_owned());
    }
    Ok(TokenEntry {
        name: name.to_owned(),
        role,
        token: token.to_owned(),
    })
}

/// Authenticate `req` and require `role`. The principal is recorded for the request log
/// before the role check, so a 403 is logged with the token's name.
fn authorize(req: &HttpRequest, role: Role) -> Result<Principal, ApiError> {
    let auth = req
        .app_data::<web::Data<Auth>>()
        .ok_or_else(|| ApiError::Internal("Auth is not registered in the app data".to_owned()))?;
    let principal = auth.authenticate(req.headers().get(AUTHORIZATION))?;
    req.extensions_mut().insert(principal.clone());
    if role == Role::Writer && principal.role != Role::Writer {
        return Err(ApiError::Forbidden {
            role: principal.role.as_str(),
            action: "change anything",
        });
    }
    Ok(principal)
}

/// Extractor: any valid token (reader or writer).
#[derive(Debug)]
pub struct Reader(pub Principal);

/// Extractor: a token with the `writer` role, on a request that may write at all: same-origin
/// and with a JSON or YAML body ([`crate::write_guard`], checked first, with auth on or off).
/// Every write handler takes one, so no write escapes those checks.
#[derive(Debug)]
pub struct Writer(pub Principal);

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req, Role::Reader).map(Reader))
    }
}

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            crate::write_guard::check(req)
                .and_then(|()| authorize(req, Role::Writer))
                .map(Writer),
        )
    }
}

#[cfg(test)]
mod tests;
