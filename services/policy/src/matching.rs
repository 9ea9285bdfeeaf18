//! Selector and request matching on validated policies.
//!
//! Deciding for one request is, per policy and rule in order: does the policy's selector match
//! this workload ([`Selector::matches`]), is the rule still active ([`CompiledRule::is_active`]),
//! does the request match ([`CompiledRule::matches`]), and is this request sampled
//! ([`CompiledFault::sample`]). Sampling is the caller's job and must happen **once per request
//! and rule**: draw one random `u64`, call `sample` once, and remember the answer for the rest of
//! the request (sampling again, e.g. after a delay, would skew the share of faulted requests).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Sampling, Selector};

/// The identity of the workload a sidecar serves (from Envoy node metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    /// `WORKLOAD_NAME`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The parts of a request that rules look at. Header names are compared ignoring ASCII case.
/// `path` is the `:path` pseudo-header; matchers see it without the query string.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// A request that rules read part by part, for callers where each part has a cost (the Wasm
/// plugin fetches each from Envoy with a host call). A rule asks for the path, then the method,
/// then each header it names, and stops at the first condition that fails, so a caller that
/// fetches on demand reads only what the rules get to.
pub trait RequestLookup {
    /// `:method`.
    fn method(&self) -> &str;
    /// `:path`, query string included.
    fn path(&self) -> &str;
    /// Whether some value of the header `name` (lower-case) satisfies `accept`: a repeated
    /// header matches if any of its values does, an absent one never does.
    fn any_header_value(&self, name: &str, accept: &dyn Fn(&str) -> bool) -> bool;
}

impl RequestLookup for RequestView<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn any_header_value(&self, name: &str, accept: &dyn Fn(&str) -> bool) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, value)| accept(value))
    }
}

/// The value of a selector field that constrains something: `None` for omitted, empty or `"*"`.
fn constraint(field: &Option<String>) -> Option<&str> {
    match field.as_deref() {
        None | Some("") | Some("*") => None,
        Some(value) => Some(value),
    }
}

impl Selector {
    /// Whether a policy with this selector applies to `workload`. `service` matches the
    /// workload name or its `app` label; every selector label must be on the workload with the
    /// same value. Omitted, empty or `"*"` fields match anything.
    pub fn matches(&self, workload: &Workload) -> bool {
        let namespace_ok = constraint(&self.namespace).is_none_or(|ns| ns == workload.namespace);
        let service_ok = constraint(&self.service).is_none_or(|svc| {
            svc == workload.name || workload.labels.get("app").is_some_and(|app| app == svc)
        });
        let labels_ok = self
            .labels
            .iter()
            .all(|(key, value)| workload.labels.get(key) == Some(value));
        namespace_ok && service_ok && labels_ok
    }

    /// Whether this selector can match some workload in `namespace` named `service`, for a
    /// client that filters by these two only (labels are unknown, so they never exclude). An
    /// absent or empty filter value accepts any selector value. A sidecar whose workload name
    /// and `app` label differ should filter by namespace only, or it would miss policies that
    /// select it by the other name.
    pub fn may_match(&self, namespace: Option<&str>, service: Option<&str>) -> bool {
        let fits = |selector: &Option<String>, filter: Option<&str>| match (
            constraint(selector),
            filter.filter(|f| !f.is_empty()),
        ) {
            (Some(wanted), Some(given)) => wanted == given,
            _ => true,
        };
        fits(&self.namespace, namespace) && fits(&self.service, service)
    }

    /// The namespace a workload must be in, when this selector names one (an omitted, empty
    /// or `"*"` namespace names none).
    pub fn required_namespace(&self) -> Option<&str> {
        constraint(&self.namespace)
    }

    /// The service (workload name or `app` label) a workload must have, when this selector
    /// names one.
    pub fn required_service(&self) -> Option<&str> {
        constraint(&self.service)
    }
}

/// A validated policy, regexes compiled. Built by [`crate::compile`] only; read through the
/// accessors.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) selector: Selector,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) sampling: Sampling,
    pub(crate) max_held_requests: Option<u32>,
}

impl CompiledPolicy {
    /// `metadata.name`, e.g. the value of the `x-boifi-fault` header.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// How the rules' percentages are drawn (`spec.sampling`).
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// `spec.max_held_requests`: this policy's own cap on requests held by its delays.
    pub fn max_held_requests(&self) -> Option<u32> {
        self.max_held_requests
    }

    /// In the policy's order; the first rule that matches and is sampled decides.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The headers any of its rules looks at: lower-case, each once, in the order the rules
    /// first name them. (Not sorted: the lists are short, and a sort costs the Wasm plugin
    /// kilobytes of code.)
    pub fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.rules.iter().flat_map(|r| r.header_names()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// One string condition, checked by [`crate::compile`].
#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends.
    Regex(regex_lite::Regex),
}

impl StringMatcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(exact) => value == exact,
            StringMatcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            StringMatcher::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    /// Lower-case.
    pub(crate) name: String,
    pub(crate) value: StringMatcher,
}

/// A validated rule: request conditions, the fault, and when it stops acting.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub(crate) method: Option<StringMatcher>,
    pub(crate) path: Option<StringMatcher>,
    pub(crate) headers: Vec<HeaderMatcher>,
    pub(crate) fault: CompiledFault,
    pub(crate) expires_at_ms: Option<u64>,
}

impl CompiledRule {
    /// Whether every condition of the rule holds. The method is compared as given (case
    /// sensitive); the path without its query string; a header condition holds when some
    /// header of that name (ASCII case ignored) has a matching value, so an absent header never
    /// matches, whatever the matcher.
    ///
    /// `request` is a [`RequestView`] or any [`RequestLookup`]; conditions are checked path,
    /// method, then headers in order, and only up to the first that fails.
    pub fn matches(&self, request: &(impl RequestLookup + ?Sized)) -> bool {
        // The path first: it is what usually tells rules apart, so a caller that reads on demand
        // often needs nothing else.
        if let Some(path) = &self.path {
            let without_query = request.path().split('?').next().unwrap_or_default();
            if !path.matches(without_query) {
                return false;
            }
        }
        if let Some(method) = &self.method {
            if !method.matches(request.method()) {
                return false;
            }
        }
        self.headers.iter().all(|header| {
            request.any_header_value(&header.name, &|value| header.value.matches(value))
        })
    }

    /// The headers its conditions look at, lower-case, in condition order (a name given twice
    /// appears twice).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|h| h.name.as_str())
    }

    /// False from `expires_at_ms` on (`status.rules[i].expires_at_ms` of the policy, stamped
    /// by the server from `duration_seconds`); always true for a rule without expiry. The
    /// boundary is [`crate::wire::rule_active`].
    pub fn is_active(&self, now_ms: u64) -> bool {
        crate::wire::rule_active(self.expires_at_ms, now_ms)
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    pub fn fault(&self) -> &CompiledFault {
        &self.fault
    }
}

/// A validated fault: delay, abort or both (delay first), acting after `start_delay`.
#[derive(Debug, Clone)]
pub struct CompiledFault {
    pub(crate) percentage: f64,
    /// `sample(r)` is `r < threshold`; up to 2^64, so 100 % accepts every `u64`.
    pub(crate) threshold: u128,
    pub(crate) start_delay_ms: u64,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) abort: Option<CompiledAbort>,
}

impl CompiledFault {
    pub(crate) fn new(
        percentage: f64,
        start_delay_ms: u64,
        delay_ms: Option<u64>,
        abort: Option<CompiledAbort>,
    ) -> Self {
        // percentage * 2^64 is exact in f64, so the one rounding is in the division: the
        // threshold is within 2^11 of the exact share of the 2^64 inputs.
        let threshold = (percentage * 18_446_744_073_709_551_616.0 / 100.0).round() as u128;
        CompiledFault {
            percentage,
            threshold,
            start_delay_ms,
            delay_ms,
            abort,
        }
    }

    /// Whether the request that drew `random` (uniform over all `u64`) gets the fault: true for
    /// the configured share of inputs, without modulo bias. 100 % is always true, 0 % never.
    /// Call it once per request and rule (see the module docs).
    pub fn sample(&self, random: u64) -> bool {
        u128::from(random) < self.threshold
    }

    /// 0-100, 100 when the policy left it out.
    pub fn percentage(&self) -> f64 {
        self.percentage
    }

    /// How long after the request arrives the fault acts (zero: at once).
    pub fn start_delay(&self) -> Duration {
        Duration::from_millis(self.start_delay_ms)
    }

    /// How long to hold the request before forwarding it (or aborting it, if both are set).
    pub fn delay(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }

    pub fn abort(&self) -> Option<&CompiledAbort> {
        self.abort.as_ref()
    }
}

/// The local reply of an abort fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledAbort {
    pub(crate) status: u16,
    pub(crate) grpc_status: u8,
    pub(crate) body: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

impl CompiledAbort {
    /// HTTP status, 200-599, for HTTP requests (`httpStatus`, or derived from `grpcStatus`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// gRPC status code, 1-16, for gRPC requests (`grpcStatus`, or derived from `httpStatus`).
    pub fn grpc_status(&self) -> u8 {
        self.grpc_status
    }

    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    /// Extra response headers, names lower-case, sorted by name.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
}

#[cfg(test)]
mod tests;
