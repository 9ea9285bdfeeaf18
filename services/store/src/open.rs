//! Choosing and opening the store from settings: etcd when endpoints are given, else the
//! embedded store. Every binary opens its store through [`open_store`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::{EmbeddedStore, EtcdConfig, EtcdStore, PolicyStore, StoreError};

/// Key prefix used when `BOIFI_ETCD_PREFIX` is unset or empty.
pub const DEFAULT_ETCD_PREFIX: &str = "/boifi/";

/// Directory of the embedded store when `BOIFI_DATA_DIR` is unset or empty.
pub const DEFAULT_DATA_DIR: &str = "./boifi-data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Empty: use the embedded store at `data_dir`.
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub data_dir: PathBuf,
}

/// A store variable that cannot be used, named as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    pub var: &'static str,
    pub reason: String,
}

impl StoreSettings {
    /// The settings every binary reads, from the values of `BOIFI_ETCD_ENDPOINTS` (comma list,
    /// blank items skipped), `BOIFI_ETCD_PREFIX` and `BOIFI_DATA_DIR`. Missing or blank values
    /// mean no endpoints (the embedded store), [`DEFAULT_ETCD_PREFIX`] and [`DEFAULT_DATA_DIR`].
    pub fn from_values(
        etcd_endpoints: Option<&str>,
        etcd_prefix: Option<&str>,
        data_dir: Option<&str>,
    ) -> Result<StoreSettings, SettingsError> {
        let invalid = |var, reason| SettingsError { var, reason };
        let etcd_endpoints = etcd_endpoints
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.chars().any(char::is_whitespace) {
                    Err(invalid(
                        "BOIFI_ETCD_ENDPOINTS",
                        format!("endpoint `{}` contains whitespace", e.escape_default()),
                    ))
                } else {
                    Ok(e.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let etcd_prefix = normalize_prefix(etcd_prefix.unwrap_or(""));
        if etcd_prefix.chars().any(char::is_whitespace) {
            return Err(invalid(
                "BOIFI_ETCD_PREFIX",
                "must not contain whitespace".to_owned(),
            ));
        }
        let data_dir = data_dir
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR);
        Ok(StoreSettings {
            etcd_endpoints,
            etcd_prefix,
            data_dir: PathBuf::from(data_dir),
        })
    }
}

/// Opens etcd (default timeouts) when endpoints are configured, else the embedded store at
/// `data_dir`, creating the directory if needed. etcd connects lazily, so this succeeds while
/// etcd is down; `ping` reports it.
pub async fn open_store(settings: &StoreSettings) -> Result<Arc<dyn PolicyStore>, StoreError> {
    let endpoints: Vec<String> = settings
        .etcd_endpoints
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        let dir = settings.data_dir.clone();
        // Opening takes a file lock and reads the state file: blocking work.
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))??;
        log::info!("store: embedded at {}", settings.data_dir.display());
        return Ok(Arc::new(store));
    }
    let config = EtcdConfig::new(endpoints, &settings.etcd_prefix);
    log::info!(
        "store: etcd at {} under prefix {}",
        config.endpoints.join(","),
        config.prefix
    );
    Ok(Arc::new(EtcdStore::connect(config).await?))
}

/// A key prefix that starts and ends with `/`; blank means [`DEFAULT_ETCD_PREFIX`].
/// `boifi` and `/boifi` both become `/boifi/`.
pub fn normalize_prefix(raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return DEFAULT_ETCD_PREFIX.to_owned();
    }
    let mut prefix = String::with_capacity(trimmed.len() + 2);
    if !trimmed.starts_with('/') {
        prefix.push('/');
    }
    prefix.push_str(trimmed);
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// The process environment as key/value pairs, for the services' `Config::from_vars`. Variables
/// that are not UTF-8 are dropped; none of BOIFI's can be such a value.
pub fn process_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Checks a `BOIFI_LISTEN_ADDR` value: `host:port` with a non-empty host and a valid port.
pub fn check_listen_addr(addr: &str) -> Result<(), String> {
    let expected = || format!("expected host:port, found `{}`", addr.escape_default());
    let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(expected());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_normalised() {
        assert_eq!(normalize_prefix(""), "/boifi/");
        assert_eq!(normalize_prefix("  "), "/boifi/");
        assert_eq!(normalize_prefix("boifi"), "/boifi/");
        assert_eq!(normalize_prefix("/boifi"), "/boifi/");
        assert_eq!(normalize_prefix("boifi/"), "/boifi/");
        assert_eq!(normalize_prefix("/a/b/"), "/a/b/");
        assert_eq!(normalize_prefix("/"), "/");
    }

    #[test]
    fn settings_from_values() {
        let defaults = StoreSettings::from_values(None, Some(" "), Some("")).unwrap();
        assert_eq!(
            defaults,
            StoreSettings {
                etcd_endpoints: Vec::new(),
                etcd_prefix: "/boifi/".into(),
                data_dir: PathBuf::from("./boifi-data"),
            }
        );
        let given = StoreSettings::from_values(
            Some(" http://a:2379, ,http://b:2379 "),
            Some("chaos"),
            Some("/var/lib/boifi"),
        )
        .unwrap();
        assert_eq!(given.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(given.etcd_prefix, "/chaos/");
        assert_eq!(given.data_dir, PathBuf::from("/var/lib/boifi"));
        let err = StoreSettings::from_values(Some("http://a:1,http://b :2"), None, None);
        assert_eq!(err.unwrap_err().var, "BOIFI_ETCD_ENDPOINTS");
        let err = StoreSettings::from_values(None, Some("/a b/"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BOIFI_ETCD_PREFIX: must not contain whitespace"
        );
    }

    #[tokio::test]
    async fn no_endpoints_opens_embedded_and_creates_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            etcd_endpoints: vec![" ".into()],
            etcd_prefix: String::new(),
            data_dir: tmp.path().join("nested").join("data"),
        };
        let store = open_store(&settings).await.unwrap();
        assert_eq!(store.kind(), "embedded");
        assert!(settings.data_dir.is_dir());
    }

    #[tokio::test]
    async fn endpoints_open_etcd_lazily() {
        let settings = StoreSettings {
            etcd_endpoints: vec!["http://127.0.0.1:9".into()],
            etcd_prefix: "x".into(),
            data_dir: PathBuf::new(),
        };
        let store = open_store(&settings).await.unwrap();
        assert_eq!(store.kind(), "etcd");
    }
}
