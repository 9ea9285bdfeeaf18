//! Configuration from `BOIFI_*` variables, parsed from any list of key/value pairs so tests
//! never touch the process environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BOIFI_LISTEN_ADDR` | `127.0.0.1:8080` | `host:port` to listen on (the Helm chart sets `0.0.0.0:8080`) |
//! | `BOIFI_ETCD_ENDPOINTS` | unset | comma list of etcd URLs; unset or empty: the embedded store |
//! | `BOIFI_ETCD_PREFIX` | `/boifi/` | key prefix in etcd (made to start and end with `/`) |
//! | `BOIFI_DATA_DIR` | `./boifi-data` | directory of the embedded store |
//! | `BOIFI_TOKENS_FILE` | unset | API tokens, one `<name> <role> <token>` per line |
//! | `BOIFI_AUTH_DISABLED` | `false` | `true` serves without tokens (local use only) |
//! | `BOIFI_BROADCASTERS` | unset | comma list of sse-broadcaster URLs (`http://host:port`) whose sidecar tables sidecar status gathers; each host resolved to all its addresses (the chart: the broadcaster's headless Service). Unset: no sidecar status |
//! | `BOIFI_AUDIT_MAX_ENTRIES` | `10000` | audit entries kept (1 to 10,000,000) |
//! | `BOIFI_AUDIT_MAX_AGE` | `30d` | audit entries older than this go (1 s to 10 years) |
//!
//! Surrounding whitespace is ignored and a blank value counts as unset, as for every BOIFI
//! variable ([`boifi_runtime::env`]).

use std::path::PathBuf;

use boifi_runtime::env::ServerVars;
use boifi_runtime::{EnvError, InvalidVar};
use boifi_store::StoreSettings;
use serde::Deserialize;

use crate::sidecars::{parse_broadcasters, BroadcasterUrl};

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
pub use boifi_store::DEFAULT_DATA_DIR;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `host:port`, resolved when binding.
    pub listen_addr: String,
    pub store: StoreSettings,
    pub auth: AuthConfig,
    /// `BOIFI_BROADCASTERS`; empty when unset.
    pub broadcasters: Vec<BroadcasterUrl>,
}

/// Where API tokens come from. There is no third option: the service never starts open by
/// accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    TokensFile(PathBuf),
    /// `BOIFI_AUTH_DISABLED=true`: every request acts as a writer.
    Disabled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable that cannot be used: `BOIFI_LISTEN_ADDR: expected host:port, ...`.
    #[error(transparent)]
    Invalid(#[from] InvalidVar),
    #[error(
        "no API tokens: set BOIFI_TOKENS_FILE, or BOIFI_AUTH_DISABLED=true to serve without \
         authentication (local use only)"
    )]
    NoTokens,
    #[error("BOIFI_TOKENS_FILE and BOIFI_AUTH_DISABLED=true are both set; choose one")]
    AuthAmbiguous,
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// The variables as strings; each is checked by hand so an error names the full variable.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(flatten)]
    server: ServerVars,
    tokens_file: Option<String>,
    auth_disabled: Option<String>,
    broadcasters: Option<String>,
}

impl Config {
    /// Parse from key/value pairs (keys with the `BOIFI_` prefix; others are ignored).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let raw: RawConfig = boifi_runtime::env::from_vars(vars)?;
        let server = raw.server.check(DEFAULT_LISTEN_ADDR)?;

        let auth_disabled = match raw.auth_disabled.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(InvalidVar {
                    var: "BOIFI_AUTH_DISABLED",
                    reason: format!("expected `true` or `false`, found `{}`", v.escape_default()),
                }
                .into())
            }
        };
        let auth = match (raw.tokens_file, auth_disabled) {
            (Some(_), true) => return Err(ConfigError::AuthAmbiguous),
            (Some(path), false) => AuthConfig::TokensFile(PathBuf::from(path)),
            (None, true) => AuthConfig::Disabled,
            (None, false) => return Err(ConfigError::NoTokens),
        };

        let broadcasters = match raw.broadcasters.as_deref() {
            None => Vec::new(),
            Some(text) => parse_broadcasters(text).map_err(|reason| InvalidVar {
                var: "BOIFI_BROADCASTERS",
                reason,
            })?,
        };

        Ok(Config {
            listen_addr: server.listen_addr,
            store: server.store,
            auth,
            broadcasters,
        })
    }
}

#[cfg(test)]
mod tests;
