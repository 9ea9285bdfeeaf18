//! The query string of `GET /v1/config/stream`: [`StreamQuery::encode`] for clients,
//! [`StreamQuery::parse`] (strict, every limit) for the broadcaster.
//!
//! Which policies a client may receive is its [`Filter`]. A sidecar says who it is; every
//! parameter it leaves out is unknown and therefore matches anything, so a filter can only
//! narrow what a client receives, never hide a policy that could apply to it:
//!
//! - `namespace=demo`: the workload's namespace (`NAMESPACE` in Envoy node metadata);
//! - `service=reviews`: the workload name (`WORKLOAD_NAME`);
//! - `labels=version:v2,app:reviews`: the workload's labels (`LABELS`), as comma-separated
//!   `key:value` pairs. Given, it is the complete label set: a selector label missing from it
//!   does not match. The `app` label also counts as a service name, as in selector semantics.
//!
//! An empty value or `*` for `namespace`/`service` means "unknown" (same as leaving it out).
//!
//! Parsing follows `application/x-www-form-urlencoded` as the broadcaster's HTTP framework
//! always read it (`+` is a space, `%XX` a byte, invalid UTF-8 replaced), and reports what it
//! refuses with the same messages: an unknown or repeated parameter is one problem naming it.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::{Selector, Workload};

/// Longest query string accepted.
pub const MAX_QUERY_LEN: usize = 8192;
/// Longest namespace or service name accepted (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Most label pairs accepted in `labels`.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value accepted (a prefixed Kubernetes key is at most 317).
pub const MAX_LABEL_PART_LEN: usize = 317;

/// Every parameter, in the order an unknown one's message lists them.
const PARAMETERS: [&str; 7] = [
    "namespace",
    "service",
    "labels",
    "mode",
    "last_event_id",
    "revision",
    "wait_ms",
];

/// The identity a client gave; `None` parts are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A query parameter that could not be used, with its name (`query` for the query string as
/// a whole: too long, an unknown or repeated parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldProblem {
    pub field: &'static str,
    pub message: String,
}

impl FieldProblem {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldProblem {
            field,
            message: message.into(),
        }
    }
}

/// `mode`: a stream that stays open, or one complete response per change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    #[default]
    Stream,
    Poll,
}

/// Everything a client may put in the query. Resuming: `last_event_id` or `revision` (the
/// same thing; the `Last-Event-ID` header, which the broadcaster reads besides, wins over both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    pub filter: Filter,
    pub mode: Mode,
    pub last_event_id: Option<u64>,
    pub revision: Option<u64>,
    /// `mode=poll` only: how long the broadcaster may hold the request.
    pub wait_ms: Option<u64>,
}

impl Filter {
    /// Builds a filter from the raw query values.
    pub fn parse(
        namespace: Option<&str>,
        service: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Filter, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let namespace = parse_name("namespace", namespace, &mut problems);
        let service = parse_name("service", service, &mut problems);
        let labels = match labels.map(parse_labels).transpose() {
            Ok(labels) => labels,
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        if problems.is_empty() {
            Ok(Filter {
                namespace,
                service,
                labels,
            })
        } else {
            Err(problems)
        }
    }

    /// What a sidecar of `workload` may send. It may only narrow what it receives to what can
    /// apply to it, so anything uncertain is left out: the service name goes with the complete
    /// label set (a policy may select the workload by its `app` label instead), and labels go
    /// only when they were read (`labels_known`), are not empty and fit the `key:value,...`
    /// syntax.
    pub fn for_workload(workload: &Workload, labels_known: bool) -> Filter {
        let given = |value: &String| (!value.is_empty()).then(|| value.clone());
        let labels_sendable = labels_known
            && workload
                .labels
                .iter()
                .all(|(k, v)| !(k.is_empty() || k.contains([',', ':']) || v.contains([',', ':'])));
        Filter {
            namespace: given(&workload.namespace),
            service: if labels_sendable {
                given(&workload.name)
            } else {
                None
            },
            labels: (labels_sendable && !workload.labels.is_empty())
                .then(|| workload.labels.clone()),
        }
    }

    /// True when a policy with `selector` could apply to this client's workload.
    pub fn admits(&self, selector: &Selector) -> bool {
        let namespace = self.namespace.as_deref();
        let app = self
            .labels
            .as_ref()
            .and_then(|labels| labels.get("app"))
            .map(String::as_str);
        let service_ok = selector.may_match(namespace, self.service.as_deref())
            || app.is_some_and(|app| selector.may_match(namespace, Some(app)));
        if !service_ok {
            return false;
        }
        match &self.labels {
            // Unknown labels could be anything.
            None => true,
            Some(labels) => selector
                .labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value)),
        }
    }
}

impl Filter {
    /// The namespace [`Filter::admits`] checks a selector's required namespace against;
    /// `None` when the client gave none, so any passes. A selector that requires a namespace
    /// can be admitted only when this is `None` or that namespace (indexes of clients rely
    /// on it).
    pub fn namespace_key(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|ns| !ns.is_empty())
    }

    /// The names [`Filter::admits`] checks a selector's required service against: the
    /// workload name, and the `app` label when it differs; `None` when any service passes (no
    /// workload name given, or an empty `app` label). A selector that requires a service can
    /// be admitted only when this is `None` or holds that service.
    pub fn service_keys(&self) -> Option<(&str, Option<&str>)> {
        let service = self.service.as_deref().filter(|s| !s.is_empty())?;
        match self.labels.as_ref().and_then(|labels| labels.get("app")) {
            Some(app) if app.is_empty() => None,
            Some(app) if app != service => Some((service, Some(app))),
            _ => Some((service, None)),
        }
    }
}

impl StreamQuery {
    /// The revision to resume after: `last_event_id`, else `revision`.
    pub fn resume(&self) -> Option<u64> {
        self.last_event_id.or(self.revision)
    }

    /// The query string (without `?`): `mode=poll&wait_ms=..&revision=..&namespace=..&...`,
    /// parameters left out when `None` (and `mode` when it is `stream`). Values are
    /// percent-encoded but for RFC 3986 unreserved characters; label keys and values must not
    /// hold `,` or `:` (see [`Filter::for_workload`]).
    pub fn encode(&self) -> String {
        let mut query = Query(String::new());
        if self.mode == Mode::Poll {
            query.start("mode").push_str("poll");
        }
        for (name, number) in [
            ("wait_ms", self.wait_ms),
            ("last_event_id", self.last_event_id),
            ("revision", self.revision),
        ] {
            if let Some(number) = number {
                let _ = write!(query.start(name), "{number}");
            }
        }
        let filter = &self.filter;
        for (name, value) in [
            ("namespace", &filter.namespace),
            ("service", &filter.service),
        ] {
            if let Some(value) = value {
                query.start(name);
                query.push_encoded(value);
            }
        }
        if let Some(labels) = &filter.labels {
            query.start("labels");
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    query.0.push(',');
                }
                query.push_encoded(key);
                query.0.push(':');
                query.push_encoded(value);
            }
        }
        query.0
    }

    /// Parses a query string as the broadcaster receives it. Values are checked strictly and
    /// every problem is reported, each naming its parameter; an unknown or repeated parameter,
    /// or a query over [`MAX_QUERY_LEN`] bytes, is reported alone.
    pub fn parse(query: &str) -> Result<StreamQuery, Vec<FieldProblem>> {
        let values = read_query(query, &PARAMETERS).map_err(|problem| vec![problem])?;
        let [namespace, service, labels, mode, last_event_id, revision, wait_ms] = values;
        let mut problems = Vec::new();
        let filter = Filter::parse(namespace.as_deref(), service.as_deref(), labels.as_deref())
            .map_err(|found| problems.extend(found))
            .ok();
        let mut number = |field, value: Option<String>| whole_number(field, value?, &mut problems);
        let last_event_id = number("last_event_id", last_event_id);
        let revision = number("revision", revision);
        let wait_ms = number("wait_ms", wait_ms);
        if let (Some(a), Some(b)) = (last_event_id, revision) {
            if a != b {
                problems.push(FieldProblem::new(
                    "revision",
                    "differs from last_event_id; give one of them",
                ));
            }
        }
        let mode = match mode.as_deref() {
            None | Some("stream") => Mode::Stream,
            Some("poll") => Mode::Poll,
            Some(other) => {
                problems.push(FieldProblem::new(
                    "mode",
                    format!(
                        "expected `stream` or `poll`, found `{}`",
                        other.escape_default()
                    ),
                ));
                Mode::Stream
            }
        };
        if wait_ms.is_some() && mode != Mode::Poll {
            problems.push(FieldProblem::new("wait_ms", "only allowed with mode=poll"));
        }
        match filter {
            Some(filter) if problems.is_empty() => Ok(StreamQuery {
                filter,
                mode,
                last_event_id,
                revision,
                wait_ms,
            }),
            _ => Err(problems),
        }
    }
}

/// The values of a query string (at most [`MAX_QUERY_LEN`] bytes) whose parameters must be
/// among `parameters`, each given at most once, in the order of `parameters`. An unknown or
/// repeated parameter, or a query too long, is one problem on the field `query` that names
/// it. Decoding as in [`StreamQuery::parse`]; the policy-api's list reads its query this way.
pub fn read_query<const N: usize>(
    query: &str,
    parameters: &[&'static str; N],
) -> Result<[Option<String>; N], FieldProblem> {
    if query.len() > MAX_QUERY_LEN {
        return Err(FieldProblem::new(
            "query",
            format!("longer than {MAX_QUERY_LEN} bytes"),
        ));
    }
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in form_pairs(query) {
        let Some(index) = parameters.iter().position(|p| *p == name) else {
            let expected: Vec<String> = parameters.iter().map(|p| format!("`{p}`")).collect();
            return Err(FieldProblem::new(
                "query",
                format!(
                    "unknown field `{name}`, expected one of {}",
                    expected.join(", ")
                ),
            ));
        };
        if values[index].is_some() {
            return Err(FieldProblem::new(
                "query",
                format!("duplicate field `{}`", parameters[index]),
            ));
        }
        values[index] = Some(value);
    }
    Ok(values)
}

/// `value` as a whole number, or a problem naming `field`.
pub(super) fn whole_number(
    field: &'static str,
    value: String,
    problems: &mut Vec<FieldProblem>,
) -> Option<u64> {
    match value.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(FieldProblem::new(
                field,
                format!(
                    "expected a whole number, found `{}`",
                    value.escape_default()
                ),
            ));
            None
        }
    }
}

/// A query string being written.
pub(super) struct Query(pub(super) String);

impl Query {
    /// Starts parameter `name` and returns the string to write its value to.
    pub(super) fn start(&mut self, name: &str) -> &mut String {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        &mut self.0
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    pub(super) fn push_encoded(&mut self, value: &str) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                self.0.push(char::from(b));
            } else {
                self.0.push('%');
                self.0.push(char::from(HEX[usize::from(b >> 4)]));
                self.0.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// `application/x-www-form-urlencoded` pairs: split at `&` (empty pieces skipped), then at the
/// first `=` (none: an empty value); `+` is a space, `%XX` a byte; invalid UTF-8 is replaced.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (form_decode(name), form_decode(value))
        })
}

fn form_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'+' => b' ',
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_digit),
                bytes.get(i + 2).copied().and_then(hex_digit),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    high << 4 | low
                }
                // Not an escape: the `%` stands for itself.
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

pub(super) fn parse_name(
    field: &'static str,
    value: Option<&str>,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    let value = value?;
    if value.is_empty() || value == "*" {
        return None;
    }
    if value.len() > MAX_NAME_LEN {
        problems.push(FieldProblem::new(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
        return None;
    }
    if value.chars().any(char::is_control) {
        problems.push(FieldProblem::new(field, "contains control characters"));
        return None;
    }
    Some(value.to_owned())
}

fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, FieldProblem> {
    let mut labels = BTreeMap::new();
    if raw.is_empty() {
        return Ok(labels);
    }
    for pair in raw.split(',') {
        let Some((key, value)) = pair.split_once(':') else {
            return Err(FieldProblem::new(
                "labels",
                format!("`{pair}` is not a `key:value` pair"),
            ));
        };
        if key.is_empty() {
            return Err(FieldProblem::new(
                "labels",
                format!("`{pair}` has an empty key"),
            ));
        }
        if key.len() > MAX_LABEL_PART_LEN || value.len() > MAX_LABEL_PART_LEN {
            return Err(FieldProblem::new(
                "labels",
                format!("keys and values are at most {MAX_LABEL_PART_LEN} characters"),
            ));
        }
        if labels.len() == MAX_LABELS {
            return Err(FieldProblem::new(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(FieldProblem::new(
                "labels",
                format!("label `{key}` given twice"),
            ));
        }
    }
    Ok(labels)
}
