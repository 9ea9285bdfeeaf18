//! The storage contract every backend implements.
//!
//! # What is trusted
//! Writes take a [`ValidPolicy`], so nothing unchecked enters the store through BOIFI. Reads
//! give back plain [`Policy`] values in a [`StoredPolicy`]: the store checks that a stored
//! value is a well-typed policy (else [`StoreError::Corrupt`]) but does not run the value
//! checks again. What BOIFI wrote was valid when written; a value that was not (written into
//! etcd by another tool, or by a version with other limits) is passed on as it is, and the
//! Wasm plugin, which compiles every policy it receives, skips it, logs why and counts it (fail open).
//! A caller that must act only on valid policies checks again with
//! `ValidPolicy::try_from(stored.policy)`.

use async_trait::async_trait;
use boifi_policy::{Policy, ValidPolicy};
use futures::stream::BoxStream;

use crate::{Attribution, AuditPage, AuditQuery, StoreError};

/// A store revision. Revisions only grow; every change gets a new, larger one.
pub type Revision = u64;

/// A policy as stored, with the revision of its last write (`mod_revision` in etcd terms).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: Policy,
    pub revision: Revision,
}

/// Everything in the store at one revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub revision: Revision,
    pub halted: bool,
    /// Sorted by name.
    pub policies: Vec<StoredPolicy>,
}

/// Condition for a write (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Write whatever is there.
    #[default]
    None,
    /// Only if the name does not exist yet.
    Absent,
    /// Only if the current policy was last written at this revision.
    Revision(Revision),
}

/// Result of a successful `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub revision: Revision,
    /// True when the name did not exist before.
    pub created: bool,
}

/// One change, in revision order.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub revision: Revision,
    pub change: Change,
}

// Events are few and short-lived; boxing the policy would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(StoredPolicy),
    Delete { name: String },
    Halt { halted: bool },
}

/// Stream of changes; it ends with `Err` when the watch is lost (the caller resumes from the
/// last revision it saw) or `Err(StoreError::Compacted)` when that revision is gone.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Short name for logs and metrics: `etcd` or `embedded`.
    fn kind(&self) -> &'static str;

    /// Succeeds when the backend answers (used by `/v1/ready`).
    async fn ping(&self) -> Result<(), StoreError>;

    async fn get(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError>;

    /// All policies and the halt flag at one consistent revision.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// The halt flag and the revision it was read at, without reading the policies (the
    /// backends override this; the default reads a whole snapshot).
    async fn halt_state(&self) -> Result<(bool, Revision), StoreError> {
        let snapshot = self.snapshot().await?;
        Ok((snapshot.halted, snapshot.revision))
    }

    /// Create or replace `policy` (keyed by `policy.metadata.name`), if `precondition` holds
    /// (else `StoreError::Conflict`). The stored `status.revision` is the write's revision.
    /// The audit entry (`create` or `replace`, attributed to `by`) is written in the same
    /// transaction.
    async fn put(
        &self,
        policy: &ValidPolicy,
        precondition: Precondition,
        by: &Attribution,
    ) -> Result<PutOutcome, StoreError>;

    /// Delete by name. `Ok(None)` when absent (nothing written, no audit entry); otherwise
    /// the revision of the delete, whose `delete` entry is written with it.
    async fn delete(
        &self,
        name: &str,
        precondition: Precondition,
        by: &Attribution,
    ) -> Result<Option<Revision>, StoreError>;

    /// Set the global kill switch, with its `halt` or `resume` audit entry. Returns the
    /// revision of the change.
    async fn set_halted(&self, halted: bool, by: &Attribution) -> Result<Revision, StoreError>;

    /// A page of the audit trail, newest first, within the store's retention.
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;

    /// Changes with revision strictly greater than `after`, in order, then live changes.
    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError>;
}
