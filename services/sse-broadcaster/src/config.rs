//! Configuration from `BOIFI_*` variables, parsed from any list of key/value pairs so tests
//! never touch the process environment. Surrounding whitespace is ignored and a blank value
//! counts as unset, as for every BOIFI variable ([`boifi_runtime::env`]).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BOIFI_LISTEN_ADDR` | `127.0.0.1:8081` | `host:port` to listen on |
//! | `BOIFI_ETCD_ENDPOINTS` | unset | comma list of etcd URLs; unset: the embedded store |
//! | `BOIFI_ETCD_PREFIX` | `/boifi/` | key prefix in etcd |
//! | `BOIFI_DATA_DIR` | `./boifi-data` | directory of the embedded store |
//! | `BOIFI_STREAM_HEARTBEAT_SECS` | `15` | seconds between `: ping` comments on idle streams |
//! | `BOIFI_STREAM_RETRY_MS` | `3000` | reconnect delay advised to clients (`retry:`) |
//! | `BOIFI_STREAM_BUFFER` | `256` | events (and pings) a stream client may fall behind before it is cut off |
//! | `BOIFI_STREAM_HISTORY` | `4096` | recent changes kept for `Last-Event-ID` resume |
//! | `BOIFI_MAX_CLIENTS` | `20000` | open streams plus held polls; beyond it requests get 503 |
//! | `BOIFI_POLL_WAIT_MS` | `30000` | long-poll wait when the request gives no `wait_ms` |
//! | `BOIFI_POLL_MAX_WAIT_MS` | `60000` | upper bound of `wait_ms` |
//! | `BOIFI_SIDECAR_TTL_SECS` | `30` | a sidecar is forgotten this long after its last poll was answered (5 s after one cut off, if shorter) |
//!
//! The replica's name in `GET /v1/sidecars` answers is `HOSTNAME` (the pod name in
//! Kubernetes), else the listen address.

use std::time::Duration;

use boifi_runtime::env::ServerVars;
use boifi_runtime::{EnvError, InvalidVar};
use boifi_store::StoreSettings;
use serde::Deserialize;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8081";
pub use boifi_store::DEFAULT_DATA_DIR;

/// Tunables of a running broadcaster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Interval of `: ping` comments, so proxies keep idle streams open and dead peers show up.
    pub heartbeat: Duration,
    /// Reconnect delay sent to stream clients in `retry:`.
    pub retry: Duration,
    /// Events (and pings) a stream client may fall behind before it is cut off with
    /// `event: resync`.
    pub client_buffer: usize,
    /// Recent changes kept so reconnecting clients get only what they missed.
    pub history: usize,
    /// Open streams plus held long polls.
    pub max_clients: usize,
    /// Long-poll wait when the request gives none.
    pub poll_wait: Duration,
    /// Upper bound of a requested long-poll wait.
    pub poll_max_wait: Duration,
    /// First retry delay after the store watch is lost; doubles (with jitter) up to
    /// `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a sidecar stays in the table after its last poll ended.
    pub sidecar_ttl: Duration,
    /// This replica's name in `GET /v1/sidecars` answers.
    pub replica: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_millis(3000),
            client_buffer: 256,
            history: 4096,
            max_clients: 20_000,
            poll_wait: Duration::from_secs(30),
            poll_max_wait: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            sidecar_ttl: Duration::from_secs(30),
            replica: "local".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `host:port`, resolved when binding.
    pub listen_addr: String,
    pub store: StoreSettings,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable that cannot be used: `BOIFI_STREAM_BUFFER: expected a whole number ...`.
    #[error(transparent)]
    Invalid(#[from] InvalidVar),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Every variable as a string, checked by hand so an error names the full variable.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(flatten)]
    server: ServerVars,
    stream_heartbeat_secs: Option<String>,
    stream_retry_ms: Option<String>,
    stream_buffer: Option<String>,
    stream_history: Option<String>,
    max_clients: Option<String>,
    poll_wait_ms: Option<String>,
    poll_max_wait_ms: Option<String>,
    sidecar_ttl_secs: Option<String>,
}

impl Config {
    /// Parse from key/value pairs (keys with the `BOIFI_` prefix; others are ignored).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let hostname = vars
            .iter()
            .find(|(key, value)| key == "HOSTNAME" && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_owned());
        let raw: RawConfig = boifi_runtime::env::from_vars(vars)?;
        let server = raw.server.check(DEFAULT_LISTEN_ADDR)?;

        let defaults = Settings::default();
        let number =
            |var: &'static str, value: Option<String>, min: u64, max: u64, default: u64| {
                let Some(value) = value else {
                    return Ok(default);
                };
                match value.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(InvalidVar {
                        var,
                        reason: format!(
                            "expected a whole number from {min} to {max}, found `{}`",
                            value.escape_default()
                        ),
                    }),
                }
            };
        let as_u64 = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let settings = Settings {
            heartbeat: Duration::from_secs(number(
                "BOIFI_STREAM_HEARTBEAT_SECS",
                raw.stream_heartbeat_secs,
                1,
                3600,
                defaults.heartbeat.as_secs(),
            )?),
            retry: Duration::from_millis(number(
                "BOIFI_STREAM_RETRY_MS",
                raw.stream_retry_ms,
                0,
                3_600_000,
                as_u64(defaults.retry),
            )?),
            client_buffer: to_usize(number(
                "BOIFI_STREAM_BUFFER",
                raw.stream_buffer,
                1,
                1 << 20,
                defaults.client_buffer as u64,
            )?),
            history: to_usize(number(
                "BOIFI_STREAM_HISTORY",
                raw.stream_history,
                1,
                1 << 20,
                defaults.history as u64,
            )?),
            max_clients: to_usize(number(
                "BOIFI_MAX_CLIENTS",
                raw.max_clients,
                1,
                10_000_000,
                defaults.max_clients as u64,
            )?),
            poll_wait: Duration::from_millis(number(
                "BOIFI_POLL_WAIT_MS",
                raw.poll_wait_ms,
                0,
                3_600_000,
                as_u64(defaults.poll_wait),
            )?),
            poll_max_wait: Duration::from_millis(number(
                "BOIFI_POLL_MAX_WAIT_MS",
                raw.poll_max_wait_ms,
                0,
                3_600_000,
                as_u64(defaults.poll_max_wait),
            )?),
            sidecar_ttl: Duration::from_secs(number(
                "BOIFI_SIDECAR_TTL_SECS",
                raw.sidecar_ttl_secs,
                1,
                3600,
                defaults.sidecar_ttl.as_secs(),
            )?),
            replica: hostname.unwrap_or_else(|| server.listen_addr.clone()),
            ..defaults
        };
        if settings.poll_wait > settings.poll_max_wait {
            return Err(InvalidVar {
                var: "BOIFI_POLL_WAIT_MS",
                reason: "must not exceed BOIFI_POLL_MAX_WAIT_MS".to_owned(),
            }
            .into());
        }
        Ok(Config {
            listen_addr: server.listen_addr,
            store: server.store,
            settings,
        })
    }
}

/// Bounded by the caller's range check, which is far below `usize::MAX` on 64 and 32 bits.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults() {
        let config = parse(&[("PATH", "/bin"), ("BOIFI_TOKENS_FILE", "x")]).unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:8081");
        assert!(config.store.etcd_endpoints.is_empty());
        assert_eq!(config.store.etcd_prefix, "/boifi/");
        assert_eq!(config.store.data_dir, PathBuf::from("./boifi-data"));
        assert_eq!(
            config.settings,
            Settings {
                replica: "127.0.0.1:8081".into(),
                ..Settings::default()
            }
        );
        assert_eq!(
            parse(&[("BOIFI_STREAM_BUFFER", " ")])
                .unwrap()
                .settings
                .client_buffer,
            256
        );
    }

    #[test]
    fn every_variable_is_read() {
        let config = parse(&[
            ("BOIFI_LISTEN_ADDR", "0.0.0.0:9000"),
            ("BOIFI_ETCD_ENDPOINTS", "http://a:2379, http://b:2379,"),
            ("BOIFI_ETCD_PREFIX", "x"),
            ("BOIFI_DATA_DIR", "/var/lib/boifi"),
            ("BOIFI_STREAM_HEARTBEAT_SECS", "5"),
            ("BOIFI_STREAM_RETRY_MS", "100"),
            ("BOIFI_STREAM_BUFFER", "16"),
            ("BOIFI_STREAM_HISTORY", "10"),
            ("BOIFI_MAX_CLIENTS", "3"),
            ("BOIFI_POLL_WAIT_MS", "1000"),
            ("BOIFI_POLL_MAX_WAIT_MS", "2000"),
            ("BOIFI_SIDECAR_TTL_SECS", "7"),
            ("HOSTNAME", "boifi-sse-broadcaster-5c8d-x2"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:9000");
        assert_eq!(
            config.store.etcd_endpoints,
            ["http://a:2379", "http://b:2379"]
        );
        assert_eq!(config.store.etcd_prefix, "/x/");
        assert_eq!(config.store.data_dir, PathBuf::from("/var/lib/boifi"));
        let s = config.settings;
        assert_eq!(s.heartbeat, Duration::from_secs(5));
        assert_eq!(s.retry, Duration::from_millis(100));
        assert_eq!((s.client_buffer, s.history, s.max_clients), (16, 10, 3));
        assert_eq!(s.poll_wait, Duration::from_secs(1));
        assert_eq!(s.poll_max_wait, Duration::from_secs(2));
        assert_eq!(s.sidecar_ttl, Duration::from_secs(7));
        assert_eq!(s.replica, "boifi-sse-broadcaster-5c8d-x2");
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("BOIFI_LISTEN_ADDR", "nowhere"),
            ("BOIFI_LISTEN_ADDR", "host:99999"),
            ("BOIFI_ETCD_ENDPOINTS", "http://a b"),
            ("BOIFI_STREAM_HEARTBEAT_SECS", "0"),
            ("BOIFI_STREAM_BUFFER", "-1"),
            ("BOIFI_STREAM_HISTORY", "many"),
            ("BOIFI_MAX_CLIENTS", "0"),
            ("BOIFI_POLL_MAX_WAIT_MS", "99999999999"),
            ("BOIFI_SIDECAR_TTL_SECS", "0"),
            ("BOIFI_SIDECAR_TTL_SECS", "3601"),
        ] {
            let err = parse(&[(var, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid(InvalidVar { var: v, .. }) if *v == var),
                "{var}={value}: {err}"
            );
            assert!(err.to_string().starts_with(var), "{err}");
        }
        let err = parse(&[
            ("BOIFI_POLL_WAIT_MS", "5000"),
            ("BOIFI_POLL_MAX_WAIT_MS", "10"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("BOIFI_POLL_MAX_WAIT_MS"), "{err}");
    }
}
