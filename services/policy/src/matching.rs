//! Selector and request matching on validated policies.

use std::collections::BTreeMap;

/// The identity of the workload a sidecar serves (from Envoy node metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    /// `WORKLOAD_NAME`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The parts of a request that rules look at. Header names must be lower-case.
/// `path` is the `:path` pseudo-header; matchers see it without the query string.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// A validated policy, regexes compiled.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    _todo: (),
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    _todo: (),
}

#[derive(Debug, Clone)]
pub struct CompiledFault {
    _todo: (),
}
