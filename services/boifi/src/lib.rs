//! The `boifi` command.
//!
//! - [`serve`]: `boifi serve`, policy-api and the sse-broadcaster's stream in one process on one
//!   port, for local use and development. It uses the embedded store unless
//!   `BOIFI_ETCD_ENDPOINTS` is set, and serves without tokens unless `BOIFI_TOKENS_FILE` is set.

#![forbid(unsafe_code)]

pub mod serve;
