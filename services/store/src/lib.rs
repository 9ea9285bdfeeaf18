//! Storage for BOIFI policies.
//!
//! - [`PolicyStore`]: the contract (get/list/put/delete with optimistic concurrency, a global
//!   halt flag, and a revision-ordered watch).
//! - [`EtcdStore`]: production backend on etcd (keys under a prefix, default `/boifi/`).
//! - [`EmbeddedStore`]: single-machine backend, one file under a data directory, written
//!   atomically so a crash leaves the old or the new state, never a torn one.

mod api;
mod embedded;
mod error;
mod etcd;

pub use api::{
    Change, PolicyStore, Precondition, PutOutcome, Revision, Snapshot, StoredPolicy, WatchEvent,
    WatchStream,
};
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore};
