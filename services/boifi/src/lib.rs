//! The `boifi` command.
//!
//! - [`cli`]: the command line ([`cli::Cli`]), one module per subcommand: the client of the
//!   BOIFI API (`apply`, `get`, `delete`, `halt`, `resume`, `watch`, `validate`,
//!   `completion`), documented for users in docs/cli.md.
//! - [`serve`]: `boifi serve`, policy-api and the sse-broadcaster's stream in one process on one
//!   port, for local use and development. It uses the embedded store unless
//!   `BOIFI_ETCD_ENDPOINTS` is set, and serves without tokens unless `BOIFI_TOKENS_FILE` is set.
//!   It mounts each service through its public app-building API (`boifi_policy_api::app`,
//!   `boifi_sse_broadcaster::configure_stream`) and serves with `boifi_runtime::serve`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod serve;
