//! `BOIFI_*` variables, parsed from key/value pairs.
//!
//! # Blank values
//! One rule for every variable of every binary: surrounding whitespace is ignored, and a value
//! that is empty or only whitespace counts as unset, so the default applies as if the variable
//! were absent. `BOIFI_TOKENS_FILE=` in a shell, or `value: ""` in a Kubernetes manifest, is
//! what people write to turn a setting off; no BOIFI value has a meaning when blank or
//! starts or ends with a space.
//!
//! # Reading them
//! A service describes its variables as a struct of `Option<String>` fields named without the
//! prefix (`tokens_file` for `BOIFI_TOKENS_FILE`), with [`ServerVars`] flattened in for the ones
//! every server reads, passes the pairs to [`from_vars`], and checks each value by hand, so an
//! error names the variable as the operator wrote it ([`InvalidVar`]).
//!
//! ```
//! # use boifi_runtime::env::{from_vars, ServerVars};
//! #[derive(serde::Deserialize)]
//! struct Vars {
//!     #[serde(flatten)]
//!     server: ServerVars,
//!     tokens_file: Option<String>,
//! }
//! let pairs = [("BOIFI_TOKENS_FILE", " "), ("BOIFI_ETCD_PREFIX", "chaos")];
//! let vars: Vars = from_vars(pairs.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap();
//! assert_eq!(vars.tokens_file, None);
//! let server = vars.server.check("127.0.0.1:8080").unwrap();
//! assert_eq!(server.listen_addr, "127.0.0.1:8080");
//! assert_eq!(server.store.etcd_prefix, "/chaos/");
//! ```

use std::path::PathBuf;

use std::time::Duration;

use boifi_store::{normalize_prefix, AuditRetention, StoreSettings, DEFAULT_DATA_DIR};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The prefix of every BOIFI variable.
pub const PREFIX: &str = "BOIFI_";

/// A variable that cannot be used, named as the operator wrote it: `BOIFI_LISTEN_ADDR: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct InvalidVar {
    pub var: &'static str,
    pub reason: String,
}

/// The variables do not fit the struct they are read into (envy's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment: {0}")]
pub struct EnvError(pub String);

/// The process environment as key/value pairs, for `Config::from_vars` in each `main`.
/// Variables that are not UTF-8 are dropped; no BOIFI value can be such a value.
pub fn process_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// The `BOIFI_*` pairs of `vars` under the blank rule: values trimmed, blank ones dropped.
/// Other variables are dropped too.
pub fn boifi_vars<I>(vars: I) -> impl Iterator<Item = (String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    vars.into_iter()
        .filter(|(key, _)| key.starts_with(PREFIX))
        .filter_map(|(key, value)| {
            let value = value.trim();
            (!value.is_empty()).then(|| (key, value.to_owned()))
        })
}

/// Read `T` from the `BOIFI_*` pairs of `vars` (envy, prefix stripped, names lower-cased),
/// after the blank rule: a blank variable reaches `T` as absent.
pub fn from_vars<T, I>(vars: I) -> Result<T, EnvError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    envy::prefixed(PREFIX)
        .from_iter(boifi_vars(vars))
        .map_err(|e| EnvError(e.to_string()))
}

/// Most audit entries `BOIFI_AUDIT_MAX_ENTRIES` may keep.
pub const MAX_AUDIT_ENTRIES: u64 = 10_000_000;
/// Longest `BOIFI_AUDIT_MAX_AGE`: ten years.
pub const MAX_AUDIT_AGE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The variables every BOIFI server reads, as given: `BOIFI_LISTEN_ADDR`,
/// `BOIFI_ETCD_ENDPOINTS`, `BOIFI_ETCD_PREFIX`, `BOIFI_DATA_DIR`, `BOIFI_AUDIT_MAX_ENTRIES`,
/// `BOIFI_AUDIT_MAX_AGE`. Flatten it into a service's variables (`#[serde(flatten)]`), then
/// [`ServerVars::check`] it.
#[derive(Debug, Default, Deserialize)]
pub struct ServerVars {
    listen_addr: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_prefix: Option<String>,
    data_dir: Option<String>,
    audit_max_entries: Option<String>,
    audit_max_age: Option<String>,
}

/// Where a server listens and which store it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `host:port`, resolved when binding.
    pub listen_addr: String,
    pub store: StoreSettings,
}

impl ServerVars {
    /// Check the values: the listen address ([`listen_addr`], `default_listen_addr` when
    /// unset) and the store. `BOIFI_ETCD_ENDPOINTS` is a comma list whose blank items are
    /// skipped; none at all means the embedded store in `BOIFI_DATA_DIR` (default
    /// `./boifi-data`). `BOIFI_ETCD_PREFIX` defaults to `/boifi/` and is made to start and end
    /// with `/`. Endpoints and the prefix must not contain whitespace. The audit trail keeps
    /// at most `BOIFI_AUDIT_MAX_ENTRIES` entries (1 to 10,000,000; default 10,000) of at most
    /// `BOIFI_AUDIT_MAX_AGE` (a duration like `30d` or `12h`, up to ten years; default 30 days).
    pub fn check(self, default_listen_addr: &str) -> Result<ServerSettings, InvalidVar> {
        let mut store = store_settings(self.etcd_endpoints, self.etcd_prefix, self.data_dir)?;
        store.audit_retention = audit_retention(self.audit_max_entries, self.audit_max_age)?;
        Ok(ServerSettings {
            listen_addr: listen_addr(self.listen_addr, default_listen_addr)?,
            store,
        })
    }
}

fn audit_retention(
    max_entries: Option<String>,
    max_age: Option<String>,
) -> Result<AuditRetention, InvalidVar> {
    let mut retention = AuditRetention::default();
    if let Some(value) = max_entries {
        retention.max_entries = value
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT_ENTRIES).contains(n))
            .ok_or_else(|| InvalidVar {
                var: "BOIFI_AUDIT_MAX_ENTRIES",
                reason: format!(
                    "expected a whole number from 1 to {MAX_AUDIT_ENTRIES}, found `{}`",
                    value.escape_default()
                ),
            })?;
    }
    if let Some(value) = max_age {
        retention.max_age = humantime::parse_duration(&value)
            .ok()
            .filter(|age| !age.is_zero() && *age <= MAX_AUDIT_AGE)
            .ok_or_else(|| InvalidVar {
                var: "BOIFI_AUDIT_MAX_AGE",
                reason: format!(
                    "expected a duration from 1s to 10 years, like `30d` or `12h`, found `{}`",
                    value.escape_default()
                ),
            })?;
    }
    Ok(retention)
}

fn store_settings(
    etcd_endpoints: Option<String>,
    etcd_prefix: Option<String>,
    data_dir: Option<String>,
) -> Result<StoreSettings, InvalidVar> {
    let etcd_endpoints = etcd_endpoints
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.chars().any(char::is_whitespace) {
                Err(InvalidVar {
                    var: "BOIFI_ETCD_ENDPOINTS",
                    reason: format!("endpoint `{}` contains whitespace", e.escape_default()),
                })
            } else {
                Ok(e.to_owned())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let etcd_prefix = normalize_prefix(etcd_prefix.as_deref().unwrap_or(""));
    if etcd_prefix.chars().any(char::is_whitespace) {
        return Err(InvalidVar {
            var: "BOIFI_ETCD_PREFIX",
            reason: "must not contain whitespace".to_owned(),
        });
    }
    Ok(StoreSettings {
        etcd_endpoints,
        etcd_prefix,
        data_dir: PathBuf::from(data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)),
        audit_retention: AuditRetention::default(),
    })
}

/// `BOIFI_LISTEN_ADDR`: `host:port` with a non-empty host and a numeric port (the host is
/// resolved when binding); `default` when unset.
pub fn listen_addr(value: Option<String>, default: &str) -> Result<String, InvalidVar> {
    let addr = value.unwrap_or_else(|| default.to_owned());
    let invalid = || InvalidVar {
        var: "BOIFI_LISTEN_ADDR",
        reason: format!("expected host:port, found `{}`", addr.escape_default()),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests;
