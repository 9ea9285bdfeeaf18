//! Sidecar reports (`docs/sidecar-status.md`): what the plugin tells the broadcaster on every
//! poll, and what a broadcaster answers on `GET /v1/sidecars`.
//!
//! - [`SIDECAR_HEADER`]: the sidecar's [`SidecarIdentity`] as compact JSON, at most
//!   [`MAX_SIDECAR_HEADER_BYTES`]; [`SidecarIdentity::header_value`] writes it (leaving the
//!   labels out when they do not fit), [`SidecarIdentity::parse_header`] reads it.
//! - [`INJECTED_HEADER`]: the plugin's cumulative fault counts per policy, as
//!   `{"<policy>":[aborts,delays],...}`, at most [`MAX_INJECTED_POLICIES`] policies and
//!   [`MAX_INJECTED_HEADER_BYTES`]; [`InjectedHeader`] writes it, [`parse_injected`] reads it.
//! - [`SidecarsQuery`] and [`SidecarsPage`]: the query and the answer of a broadcaster's
//!   `GET /v1/sidecars` (one replica's table).
//!
//! Headers, not query parameters: an older broadcaster answers 400 to an unknown parameter but
//! ignores unknown headers, so a newer plugin still gets its policies from it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::query::{parse_name, read_query, whole_number, Query};
use super::{FieldProblem, MAX_LABELS, MAX_LABEL_PART_LEN, MAX_NAME_LEN};

/// Request header of every poll: the sidecar's [`SidecarIdentity`].
pub const SIDECAR_HEADER: &str = "x-boifi-sidecar";
/// Request header of a poll: fault counts per policy that changed since the last report that
/// got an answer. Absent when none changed.
pub const INJECTED_HEADER: &str = "x-boifi-injected";
/// Longest [`SIDECAR_HEADER`] value.
pub const MAX_SIDECAR_HEADER_BYTES: usize = 4096;
/// Longest [`INJECTED_HEADER`] value.
pub const MAX_INJECTED_HEADER_BYTES: usize = 8192;
/// Most policies in one [`INJECTED_HEADER`]; the rest go with the next poll.
pub const MAX_INJECTED_POLICIES: usize = 64;
/// Default and largest `limit` of `GET /v1/sidecars`.
pub const MAX_SIDECARS_PAGE: usize = 10_000;
/// Longest `continue` token accepted.
pub const MAX_CONTINUE_LEN: usize = 2048;

/// Who a sidecar is: its pod and the workload identity it filters policies by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarIdentity {
    /// Node metadata `NAME` (the pod name), else the Envoy node id.
    pub pod: String,
    /// Node metadata `NAMESPACE`; empty when unknown.
    pub namespace: String,
    /// Node metadata `WORKLOAD_NAME`; empty when unknown.
    pub workload: String,
    /// Node metadata `LABELS`. `None` (absent on the wire): unknown, because the plugin could
    /// not read them or they did not fit the header. `Some` of an empty map: no labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Why a report header was ignored (the poll itself is served).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("{header}: {len} bytes, more than {max}")]
    TooLarge {
        header: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{header}: {message}")]
    Invalid {
        header: &'static str,
        message: String,
    },
}

impl ReportError {
    fn invalid(header: &'static str, message: impl Into<String>) -> ReportError {
        ReportError::Invalid {
            header,
            message: message.into(),
        }
    }
}

/// A [`SidecarIdentity`] written for [`SIDECAR_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    pub value: String,
    /// The labels were known but left out: too many, too long, or over the size limit.
    pub labels_dropped: bool,
}

impl SidecarIdentity {
    /// The [`SIDECAR_HEADER`] value: compact JSON of at most [`MAX_SIDECAR_HEADER_BYTES`].
    /// Labels the broadcaster would refuse, or that make the value too long, are left out
    /// (and said so). `Err` when even that does not fit or a name is unusable.
    pub fn header_value(&self) -> Result<IdentityHeader, ReportError> {
        self.check_names()?;
        let fits = |identity: &SidecarIdentity| {
            serde_json::to_string(identity)
                .ok()
                .filter(|value| value.len() <= MAX_SIDECAR_HEADER_BYTES)
        };
        let labels_ok = self.labels.as_ref().is_none_or(|l| check_labels(l).is_ok());
        if labels_ok {
            if let Some(value) = fits(self) {
                return Ok(IdentityHeader {
                    value,
                    labels_dropped: false,
                });
            }
        }
        let without = SidecarIdentity {
            labels: None,
            ..self.clone()
        };
        match fits(&without) {
            Some(value) => Ok(IdentityHeader {
                value,
                labels_dropped: self.labels.is_some(),
            }),
            None => Err(ReportError::TooLarge {
                header: SIDECAR_HEADER,
                len: serde_json::to_string(&without).map_or(usize::MAX, |v| v.len()),
                max: MAX_SIDECAR_HEADER_BYTES,
            }),
        }
    }

    /// Reads a [`SIDECAR_HEADER`] value, with every limit: size, names (non-empty pod; at most
    /// [`MAX_NAME_LEN`] bytes, no control characters), at most [`MAX_LABELS`] labels of at
    /// most [`MAX_LABEL_PART_LEN`] bytes per key and value.
    pub fn parse_header(value: &[u8]) -> Result<SidecarIdentity, ReportError> {
        if value.len() > MAX_SIDECAR_HEADER_BYTES {
            return Err(ReportError::TooLarge {
                header: SIDECAR_HEADER,
                len: value.len(),
                max: MAX_SIDECAR_HEADER_BYTES,
            });
        }
        let identity: SidecarIdentity = serde_json::from_slice(value)
            .map_err(|e| ReportError::invalid(SIDECAR_HEADER, e.to_string()))?;
        identity.check_names()?;
        if let Some(labels) = &identity.labels {
            check_labels(labels).map_err(|m| ReportError::invalid(SIDECAR_HEADER, m))?;
        }
        Ok(identity)
    }

    fn check_names(&self) -> Result<(), ReportError> {
        if self.pod.is_empty() {
            return Err(ReportError::invalid(SIDECAR_HEADER, "pod: empty"));
        }
        for (field, value) in [
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("workload", &self.workload),
        ] {
            if value.len() > MAX_NAME_LEN {
                return Err(ReportError::invalid(
                    SIDECAR_HEADER,
                    format!("{field}: longer than {MAX_NAME_LEN} bytes"),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(ReportError::invalid(
                    SIDECAR_HEADER,
                    format!("{field}: contains control characters"),
                ));
            }
        }
        Ok(())
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("labels: more than {MAX_LABELS}"));
    }
    if labels
        .iter()
        .any(|(k, v)| k.len() > MAX_LABEL_PART_LEN || v.len() > MAX_LABEL_PART_LEN)
    {
        return Err(format!(
            "labels: keys and values are at most {MAX_LABEL_PART_LEN} bytes"
        ));
    }
    Ok(())
}

/// Faults one sidecar injected for one policy since its Envoy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaultCounts {
    pub abort: u64,
    pub delay: u64,
}

/// An [`INJECTED_HEADER`] value being written: policies are added while they fit.
#[derive(Debug, Clone, Default)]
pub struct InjectedHeader {
    text: String,
    policies: usize,
}

impl InjectedHeader {
    /// Adds `policy`'s counts; false (nothing added) when that would pass
    /// [`MAX_INJECTED_POLICIES`] or [`MAX_INJECTED_HEADER_BYTES`].
    pub fn push(&mut self, policy: &str, counts: FaultCounts) -> bool {
        if self.policies == MAX_INJECTED_POLICIES {
            return false;
        }
        let Ok(name) = serde_json::to_string(policy) else {
            return false;
        };
        let mut entry = String::with_capacity(name.len() + 44);
        entry.push(if self.policies == 0 { '{' } else { ',' });
        let _ = write!(entry, "{name}:[{},{}]", counts.abort, counts.delay);
        // One byte more for the closing brace.
        if self.text.len() + entry.len() + 1 > MAX_INJECTED_HEADER_BYTES {
            return false;
        }
        self.text.push_str(&entry);
        self.policies += 1;
        true
    }

    /// Policies added so far.
    pub fn len(&self) -> usize {
        self.policies
    }

    pub fn is_empty(&self) -> bool {
        self.policies == 0
    }

    /// The header value; `None` when no policy was added (the header is then left out).
    pub fn finish(mut self) -> Option<String> {
        if self.policies == 0 {
            return None;
        }
        self.text.push('}');
        Some(self.text)
    }
}

/// Reads an [`INJECTED_HEADER`] value: at most [`MAX_INJECTED_HEADER_BYTES`] and
/// [`MAX_INJECTED_POLICIES`] policies, each a policy name (a DNS label) with two counts.
pub fn parse_injected(value: &[u8]) -> Result<BTreeMap<String, FaultCounts>, ReportError> {
    if value.len() > MAX_INJECTED_HEADER_BYTES {
        return Err(ReportError::TooLarge {
            header: INJECTED_HEADER,
            len: value.len(),
            max: MAX_INJECTED_HEADER_BYTES,
        });
    }
    let raw: BTreeMap<String, (u64, u64)> = serde_json::from_slice(value)
        .map_err(|e| ReportError::invalid(INJECTED_HEADER, e.to_string()))?;
    if raw.len() > MAX_INJECTED_POLICIES {
        return Err(ReportError::invalid(
            INJECTED_HEADER,
            format!("more than {MAX_INJECTED_POLICIES} policies"),
        ));
    }
    raw.into_iter()
        .map(|(policy, (abort, delay))| {
            crate::validate::check_dns_label(&policy).map_err(|message| {
                ReportError::invalid(
                    INJECTED_HEADER,
                    format!("policy `{}`: {message}", policy.escape_default()),
                )
            })?;
            Ok((policy, FaultCounts { abort, delay }))
        })
        .collect()
}

/// The query of a broadcaster's `GET /v1/sidecars`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarsQuery {
    /// Only sidecars of this namespace.
    pub namespace: Option<String>,
    /// Only sidecars whose workload name or `app` label is this (selector semantics).
    pub service: Option<String>,
    /// Page size, 1 to [`MAX_SIDECARS_PAGE`]; `None` is the maximum.
    pub limit: Option<usize>,
    /// Where the previous page ended (its answer's `continue`).
    pub continue_token: Option<String>,
}

const SIDECARS_PARAMETERS: [&str; 4] = ["namespace", "service", "limit", "continue"];

impl SidecarsQuery {
    /// The page size asked for.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(MAX_SIDECARS_PAGE)
    }

    /// Parses the query strictly: every problem names its parameter; an unknown or repeated
    /// parameter is refused alone.
    pub fn parse(query: &str) -> Result<SidecarsQuery, Vec<FieldProblem>> {
        let [namespace, service, limit, continue_token] =
            read_query(query, &SIDECARS_PARAMETERS).map_err(|problem| vec![problem])?;
        let mut problems = Vec::new();
        let namespace = parse_name("namespace", namespace.as_deref(), &mut problems);
        let service = parse_name("service", service.as_deref(), &mut problems);
        let limit = limit
            .and_then(|value| whole_number("limit", value, &mut problems))
            .and_then(|n| match usize::try_from(n) {
                Ok(n) if (1..=MAX_SIDECARS_PAGE).contains(&n) => Some(n),
                _ => {
                    problems.push(FieldProblem::new(
                        "limit",
                        format!("expected 1 to {MAX_SIDECARS_PAGE}, found {n}"),
                    ));
                    None
                }
            });
        if continue_token
            .as_ref()
            .is_some_and(|token| token.len() > MAX_CONTINUE_LEN)
        {
            problems.push(FieldProblem::new(
                "continue",
                format!("longer than {MAX_CONTINUE_LEN} bytes"),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SidecarsQuery {
            namespace,
            service,
            limit,
            continue_token: continue_token.filter(|token| !token.is_empty()),
        })
    }

    /// The query string (without `?`); parameters left out when `None`.
    pub fn encode(&self) -> String {
        let mut query = Query(String::new());
        for (name, value) in [
            ("namespace", &self.namespace),
            ("service", &self.service),
            ("continue", &self.continue_token),
        ] {
            if let Some(value) = value {
                query.start(name);
                query.push_encoded(value);
            }
        }
        if let Some(limit) = self.limit {
            let _ = write!(query.start("limit"), "{limit}");
        }
        query.0
    }
}

/// Whether a sidecar is enforcing every change that concerns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SidecarState {
    /// Its revision is at least that of the latest change concerning it.
    Current,
    /// A change concerning it is newer than its revision.
    Behind,
}

impl SidecarState {
    /// The name on the wire (and the `state` label of the broadcaster's gauge).
    pub const fn name(self) -> &'static str {
        match self {
            SidecarState::Current => "current",
            SidecarState::Behind => "behind",
        }
    }
}

/// One sidecar in a `GET /v1/sidecars` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SidecarStatus {
    pub pod: String,
    pub namespace: String,
    pub workload: String,
    /// Absent when unknown (see [`SidecarIdentity::labels`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The revision it enforces (its last poll's `revision`; 0 before its first snapshot).
    pub revision: u64,
    pub state: SidecarState,
    /// Seconds since the broadcaster received the oldest change concerning this sidecar that
    /// it has not acknowledged; 0 when current.
    pub behind_seconds: f64,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: SystemTime,
    /// When its last poll arrived or ended.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: SystemTime,
    /// A poll of it is held now.
    pub polling: bool,
    /// Cumulative counts per policy, as its last report said.
    #[serde(default)]
    pub injected: BTreeMap<String, FaultCounts>,
}

impl SidecarStatus {
    /// The identity part.
    pub fn identity(&self) -> SidecarIdentity {
        SidecarIdentity {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// The answer of a broadcaster's `GET /v1/sidecars`: its own table, sorted by namespace, then
/// pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarsPage {
    /// Which replica answered: its host name, else its listen address.
    pub replica: String,
    /// The store revision this replica serves.
    pub revision: u64,
    pub halted: bool,
    pub sidecars: Vec<SidecarStatus>,
    /// Present when more sidecars remain: pass it as `continue` for the next page.
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// RFC 3339 times in UTC with milliseconds (`2024-05-01T12:00:00.123Z`), as the API writes
/// `status` times.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
