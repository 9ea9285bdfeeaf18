//! etcd backend: one key per policy under `{prefix}policies/`, the halt flag at `{prefix}halt`.

use std::time::Duration;

use crate::StoreError;

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/boifi/` (always ends with `/`).
    pub prefix: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

pub struct EtcdStore {
    _todo: (),
}

impl EtcdStore {
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let _ = config;
        todo!("implemented by the store work")
    }
}
