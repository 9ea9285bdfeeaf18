//! Storage for BOIFI policies.
//!
//! - [`PolicyStore`]: the contract (get/list/put/delete with optimistic concurrency, a global
//!   halt flag, and a revision-ordered watch).
//! - [`EtcdStore`]: production backend on etcd (keys under a prefix, default `/boifi/`).
//! - [`EmbeddedStore`]: single-machine backend, one redb database file under a data directory;
//!   each write is one durable transaction, so a crash keeps every acknowledged write and
//!   never leaves a torn one.
//! - [`open_store`]: picks and opens one of them from [`StoreSettings`] (what every binary
//!   calls; `boifi_runtime` reads the settings from the `BOIFI_*` store variables);
//!   [`normalize_prefix`] cleans up an etcd key prefix.
//! - [`audit`]: the audit trail every change writes in its own transaction ([`Attribution`],
//!   [`AuditEntry`], [`AuditRetention`], [`AuditQuery`]).
//! - [`Clock`]: the server clock policies are stamped and expired by ([`SystemClock`], and
//!   [`ManualClock`] for tests); policy-api and the sse-broadcaster share it from here.

#![forbid(unsafe_code)]

mod api;
pub mod audit;
mod clock;
mod embedded;
mod error;
mod etcd;
mod open;

pub use api::{
    Change, PolicyStore, Precondition, PutOutcome, Revision, Snapshot, StoredPolicy, WatchEvent,
    WatchStream,
};
pub use audit::{
    Attribution, AttributionError, AuditAction, AuditEntry, AuditPage, AuditQuery, AuditRetention,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedStore, HISTORY_BYTES, HISTORY_EVENTS};
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore, MAX_VALUE_BYTES};
pub use open::{
    normalize_prefix, open_store, StoreSettings, DEFAULT_DATA_DIR, DEFAULT_ETCD_PREFIX,
};
