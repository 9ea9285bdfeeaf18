//! Wire types of a policy, as users write them (JSON, or YAML converted to JSON).
//!
//! Field names follow the existing BOIFI format so existing policies load: `httpStatus` (alias
//! `http_status`), `fixed_delay_ms`, `start_delay_ms`, `duration_seconds`; `grpcStatus` as in
//! Istio's VirtualService abort. These structs accept
//! anything that is well-typed; `crate::validate` turns them into checked, compiled policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::FaultCounts;

/// A fault-injection policy: which workloads (`spec.selector`) and which of their requests
/// (`spec.rules[].match`) get which fault (`spec.rules[].fault`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = policy_example))]
pub struct Policy {
    pub metadata: Metadata,
    pub spec: PolicySpec,
    /// Read-only, filled in by the server. Clients may send it back; it is ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub status: Option<PolicyStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metadata {
    /// DNS label: 1-63 characters, lower-case letters, digits and `-`, starting and ending
    /// with a letter or digit.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 63,
            pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        )
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicySpec {
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub rules: Vec<Rule>,
    /// How each rule's `percentage` is drawn. Default `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// At most this many requests held by this policy's delays at once in one sidecar; past
    /// it requests pass undelayed. Default: the plugin's `max_held_requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub max_held_requests: Option<u32>,
}

/// How a rule's percentage is drawn for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// One decision per request, keyed by its `x-request-id`: every retry of a faulted request
    /// is faulted again, on any replica, so the caller sees the declared share.
    #[default]
    Request,
    /// Each attempt drawn on its own, retries included (the caller sees a smaller share).
    Attempt,
}

/// Which workloads a policy applies to. Omitted, empty or `"*"` fields match any workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Workload name (`WORKLOAD_NAME` in Envoy node metadata) or its `app` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Every label given must be present on the workload with this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    /// Every condition given must hold. Omitted: every request matches.
    #[serde(default, rename = "match")]
    pub matches: RequestMatch,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// Exactly one of `exact`, `prefix`, `regex` must be given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style syntax (Rust `regex`), anchored at both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A header condition: the header `name` (compared lower-case) with one string matcher.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fault {
    /// Share of matching requests that get the fault, 0-100 (fractions allowed). Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100, default = 100))]
    pub percentage: Option<f64>,
    /// Wait this long after the request arrives before the fault acts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_delay_ms: u64,
    /// The rule stops acting this long after the policy was written. 0: until deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duration_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelayFault {
    pub fixed_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AbortFault {
    /// 200-599. At least one of `httpStatus` and `grpcStatus`; the one missing is derived from
    /// the other (gRPC's status mapping).
    #[serde(
        rename = "httpStatus",
        alias = "http_status",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 200, maximum = 599))]
    pub http_status: Option<u16>,
    /// The gRPC status code gRPC requests are aborted with, by name as in Istio
    /// (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...).
    #[serde(
        rename = "grpcStatus",
        alias = "grpc_status",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Read-only fields the server adds. Times are Unix milliseconds (what the plugin compares
/// against its clock) with an RFC 3339 copy for people.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyStatus {
    /// Store revision of the last write of this policy (use it in `If-Match`).
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub created_at_ms: u64,
    #[serde(default)]
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// One entry per rule, in rule order.
    #[serde(default)]
    pub rules: Vec<RuleStatus>,
    /// Which live sidecars the policy selects and how many enforce this revision. Reads only,
    /// and only on a server that gathers the sidecar tables (`docs/sidecar-status.md`).
    /// Read back (deserialized) only with the feature `sidecar-status`: the plugin never needs
    /// it, and reading these two fields would cost its module 6 KB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(not(feature = "sidecar-status"), serde(skip_deserializing))]
    pub enforcement: Option<Enforcement>,
    /// Faults injected under this policy's name, summed over the live sidecars (each counts
    /// since its Envoy started). Reads only, like `enforcement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(not(feature = "sidecar-status"), serde(skip_deserializing))]
    pub injected: Option<FaultCounts>,
}

/// How far a policy's revision has reached the sidecars it selects (`status.enforcement`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enforcement {
    /// Live sidecars whose identity (namespace, workload, labels) the selector matches.
    pub selected: u64,
    /// Of those, the ones whose revision is at least the policy's.
    pub enforcing: u64,
    /// Pod names of selected sidecars not enforcing it yet, the furthest behind first; at
    /// most 20.
    #[serde(default)]
    pub lagging: Vec<String>,
    /// How many selected sidecars do not enforce it yet (`selected - enforcing`).
    pub lagging_count: u64,
    /// Broadcaster replicas that did not answer: their sidecars are not counted. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreachable_replicas: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleStatus {
    /// When the rule stops acting (Unix ms); absent when it runs until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// True once `expires_at_ms` has passed (computed when the policy is read).
    #[serde(default)]
    pub expired: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The OpenAPI document's example policy (docs/examples/json/reviews-abort.json, shortened).
#[cfg(feature = "openapi")]
fn policy_example() -> serde_json::Value {
    serde_json::json!({
        "metadata": { "name": "reviews-abort", "version": "1.0.0" },
        "spec": {
            "selector": { "namespace": "demo", "service": "reviews", "labels": { "version": "v2" } },
            "rules": [ {
                "match": { "method": { "exact": "GET" }, "path": { "prefix": "/api" } },
                "fault": { "percentage": 50, "abort": { "httpStatus": 503 } }
            } ]
        }
    })
}
