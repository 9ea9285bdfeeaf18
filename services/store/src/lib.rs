//! Storage for BOIFI policies.
//!
//! - [`PolicyStore`]: the contract (get/list/put/delete with optimistic concurrency, a global
//!   halt flag, and a revision-ordered watch).
//! - [`EtcdStore`]: production backend on etcd (keys under a prefix, default `/boifi/`).
//! - [`EmbeddedStore`]: single-machine backend, one file under a data directory, written
//!   atomically so a crash leaves the old or the new state, never a torn one.
//! - [`open_store`]: picks and opens one of them from [`StoreSettings`] (what every binary
//!   calls); [`normalize_prefix`] cleans up an etcd key prefix.

#![forbid(unsafe_code)]

mod api;
mod embedded;
mod error;
mod etcd;
mod open;

pub use api::{
    Change, PolicyStore, Precondition, PutOutcome, Revision, Snapshot, StoredPolicy, WatchEvent,
    WatchStream,
};
pub use embedded::{EmbeddedStore, HISTORY_EVENTS};
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore, MAX_VALUE_BYTES};
pub use open::{normalize_prefix, open_store, StoreSettings, DEFAULT_ETCD_PREFIX};
