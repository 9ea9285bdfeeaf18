//! BOIFI sse-broadcaster: watches the policy store and pushes each workload the policies that
//! may apply to it, as Server-Sent Events (wire format: `docs/api-stream.md`).
//!
//! - [`Broadcaster`]: the running service; [`Broadcaster::start`] spawns the store watcher
//!   and the heartbeat, [`Broadcaster::shut_down`] (or dropping it) ends them and every stream.
//! - [`configure`] mounts every route; [`configure_stream`] (`/v1/config/stream`),
//!   [`configure_sidecars`] (`/v1/sidecars`) and [`configure_ops`] (`/v1/health`, `/v1/ready`,
//!   `/metrics`) separately, so `boifi serve` can mount the stream next to policy-api's own
//!   routes. [`Broadcaster::sidecars`] reads the sidecar table in process.
//! - [`run`]: serves a bound listener until a shutdown future completes.
//! - [`Config`]: `BOIFI_*` settings parsed from key/value pairs; [`Settings`]: the tunables.
//! - [`Clock`]: the wall clock rule expiry is measured against ([`SystemClock`],
//!   [`ManualClock`] for tests); re-exported from `boifi_store`, which policy-api shares.
//! - [`Filter`]: which policies a client may receive (`namespace`, `service`, `labels`); it,
//!   the query parser and the event data types are `boifi_policy::wire`, the contract the
//!   Wasm plugin reads with the same types.
//!
//! Inside: `watcher` (one store watch with backoff, resume and compaction reload; expiry
//! timer), `model` (stored vs effective policies, deltas), `hub` (current view, resume history,
//! handing each change to the clients it concerns), `registry` (waiting clients indexed by
//! their filter's names), `stream` (the stream and long-poll handlers), `sidecars` (the table
//! of the sidecars polling this replica, from their report headers), `ops`, `metrics`, `sse`.

#![forbid(unsafe_code)]

mod config;
mod error;
mod hub;
mod metrics;
mod model;
mod ops;
mod registry;
mod server;
mod sidecars;
mod sse;
mod stream;
mod watcher;

#[cfg(test)]
mod test_support;

pub use boifi_policy::wire::{FieldProblem, Filter};
pub use boifi_store::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, Settings, DEFAULT_DATA_DIR, DEFAULT_LISTEN_ADDR};
pub use error::{RequestError, StartError};
pub use hub::Refusal;
pub use server::{
    configure, configure_ops, configure_sidecars, configure_stream, run, Broadcaster,
};
