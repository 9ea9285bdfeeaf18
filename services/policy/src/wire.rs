//! The sse-broadcaster's stream contract (`docs/api-stream.md`), typed once for both ends: the
//! broadcaster writes it and parses its query; the Wasm plugin encodes the query and reads it.
//!
//! - Events: [`EventKind`] names them; the `data:` of each is [`SnapshotData`],
//!   [`DeleteData`], [`HaltData`] or [`ResyncData`] (a `policy` event's data is a
//!   [`crate::Policy`], with its `status`).
//! - [`sse`]: the Server-Sent Events framing, written and read.
//! - [`StreamQuery`]: the query string of `GET /v1/config/stream` (`mode`, `revision`,
//!   `wait_ms`, ...), encoded by clients and parsed by the broadcaster with every limit and
//!   check; its [`Filter`] says which policies a workload may receive.
//! - [`sidecars`]: sidecar reports: the identity and fault-count headers of every poll, and
//!   the broadcaster's `GET /v1/sidecars` query and answer.
//! - [`gathered`]: policy-api's `GET /v1/sidecars` answer, every replica's table merged.
//! - [`rule_active`]: the expiry boundary, the same for the server's `expired` flag, the
//!   broadcaster's removal of expired rules and the plugin's matching.
//!
//! Only serde and serde_json: the plugin builds this for wasm32, where every byte counts.

use serde::{Deserialize, Serialize};

pub mod gathered;
mod query;
pub mod sidecars;
pub mod sse;

pub use gathered::{ReplicaSummary, SidecarList, UnreachableReplica};
pub use query::{
    read_query, FieldProblem, Filter, Mode, StreamQuery, MAX_LABELS, MAX_LABEL_PART_LEN,
    MAX_NAME_LEN, MAX_QUERY_LEN,
};
pub use sidecars::{
    parse_injected, FaultCounts, IdentityHeader, InjectedHeader, ReportError, SidecarIdentity,
    SidecarState, SidecarStatus, SidecarsPage, SidecarsQuery, INJECTED_HEADER,
    MAX_INJECTED_HEADER_BYTES, MAX_INJECTED_POLICIES, MAX_SIDECARS_PAGE, MAX_SIDECAR_HEADER_BYTES,
    SIDECAR_HEADER,
};

/// The event types of the stream (`event:` lines), as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`SnapshotData`]: the complete set for the client's filter; replace everything.
    Snapshot,
    /// A [`crate::Policy`]: create or replace the policy with this name.
    Policy,
    /// [`DeleteData`]: remove the policy.
    Delete,
    /// [`HaltData`]: the global kill switch.
    Halt,
    /// [`ResyncData`]: the client fell behind; the stream ends.
    Resync,
}

impl EventKind {
    /// The `event:` field.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Snapshot => "snapshot",
            EventKind::Policy => "policy",
            EventKind::Delete => "delete",
            EventKind::Halt => "halt",
            EventKind::Resync => "resync",
        }
    }
}

/// Data of `event: snapshot`: `{"revision":N,"halted":bool,"policies":[...]}`, policies
/// sorted by name.
///
/// `P` is how a policy is held: [`crate::Policy`] for a typed reader, `&RawValue` for a
/// reader that parses each policy on its own (one bad policy must not cost the others) and
/// for a writer that splices policies serialized once (`Box<RawValue>` or `&RawValue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData<P> {
    /// The store revision; the event's `id:` carries the same number.
    pub revision: u64,
    /// Read as `false` when absent.
    #[serde(default)]
    pub halted: bool,
    /// Read as none when absent.
    #[serde(default = "Vec::new")]
    pub policies: Vec<P>,
}

/// Data of `event: delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteData {
    /// `metadata.name` of the policy to remove.
    pub name: String,
}

/// Data of `event: halt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltData {
    pub halted: bool,
}

/// Data of `event: resync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncData {
    /// Why: [`ResyncData::LAGGED`] is the only reason today.
    pub reason: String,
}

impl ResyncData {
    /// The client fell more than the broadcaster's buffer behind.
    pub const LAGGED: &'static str = "lagged";
}

/// Whether a rule with `expires_at_ms` (`status.rules[i].expires_at_ms`, stamped by the server
/// from `duration_seconds`) still acts at `now_ms`: until that instant, not from it on. A rule
/// without expiry always acts. The one definition of the boundary: the server's `expired` flag,
/// the broadcaster's removal of expired rules and the plugin's matching all use it, so no
/// sidecar ever acts on a rule the server already reports expired.
pub fn rule_active(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_none_or(|expires| now_ms < expires)
}

#[cfg(test)]
mod tests;
