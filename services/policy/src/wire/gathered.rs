//! policy-api's `GET /v1/sidecars`: the tables of every sse-broadcaster replica, merged
//! (`docs/sidecar-status.md`). policy-api writes it, the CLI (`boifi status`) reads it.

use serde::{Deserialize, Serialize};

use super::SidecarStatus;

/// One page of the merged sidecar table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SidecarList {
    /// Live sidecars, sorted by namespace, then pod. A sidecar listed by two replicas (it
    /// moved) appears once, as the replica that saw it last says.
    pub sidecars: Vec<SidecarStatus>,
    /// The replicas that answered.
    pub replicas: Vec<ReplicaSummary>,
    /// The replicas that did not answer (or could not be resolved): their sidecars are
    /// missing from `sidecars`.
    pub unreachable: Vec<UnreachableReplica>,
    /// Present when more sidecars remain: send it back as `continue` (with the same other
    /// parameters) for the next page. Opaque.
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// A broadcaster replica that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaSummary {
    /// Its name (host name), as it answered.
    pub replica: String,
    /// Where it was asked (`ip:port`; `in-process` in `boifi serve`).
    pub address: String,
    /// The store revision it serves.
    pub revision: u64,
    pub halted: bool,
    /// Live sidecars polling it.
    pub sidecars: u64,
}

/// A broadcaster replica that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnreachableReplica {
    /// Where it was asked: `ip:port`, or the configured URL when it could not be resolved.
    pub address: String,
    /// Why: refused, timed out, a bad answer, ...
    pub error: String,
}
