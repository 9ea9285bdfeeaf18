//! Choosing and opening the store from settings: etcd when endpoints are given, else the
//! embedded store. Every binary opens its store through [`open_store`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::{AuditRetention, EmbeddedStore, EtcdConfig, EtcdStore, PolicyStore, StoreError};

/// Key prefix used when `BOIFI_ETCD_PREFIX` is unset or empty.
pub const DEFAULT_ETCD_PREFIX: &str = "/boifi/";

/// Directory of the embedded store when `BOIFI_DATA_DIR` is unset or empty.
pub const DEFAULT_DATA_DIR: &str = "./boifi-data";

/// Which store to open. `boifi_runtime` reads it from the `BOIFI_*` store variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Empty: use the embedded store at `data_dir`.
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub data_dir: PathBuf,
    /// How much of the audit trail to keep.
    pub audit_retention: AuditRetention,
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
        let retention = settings.audit_retention;
        // Opening takes a file lock, verifies and reads the database file: blocking work.
        let store =
            tokio::task::spawn_blocking(move || EmbeddedStore::open_with_retention(dir, retention))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))??;
        log::info!("store: embedded at {}", settings.data_dir.display());
        return Ok(Arc::new(store));
    }
    let mut config = EtcdConfig::new(endpoints, &settings.etcd_prefix);
    config.audit_retention = settings.audit_retention;
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

    #[tokio::test]
    async fn no_endpoints_opens_embedded_and_creates_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            etcd_endpoints: vec![" ".into()],
            etcd_prefix: String::new(),
            data_dir: tmp.path().join("nested").join("data"),
            audit_retention: AuditRetention::default(),
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
            audit_retention: AuditRetention::default(),
        };
        let store = open_store(&settings).await.unwrap();
        assert_eq!(store.kind(), "etcd");
    }
}
