//! The request as rules read it, fetched from Envoy part by part, only when a rule asks.
//!
//! Reading Envoy's whole request-header map costs a host call that serializes every header,
//! then an allocation per name and value inside the VM, on every request. Rules look at far
//! less: the path, the method, and the few headers they name. [`LazyRequest`] fetches each of
//! these the first time a rule asks and keeps it for the rest of the request; rules check the
//! path, then the method, then headers, and stop at the first condition that fails, so a
//! request that no rule's path fits costs one small host call. (Each call that returns a value
//! also calls back into the VM to allocate; in Envoy's V8 the pair costs a few microseconds.)
//!
//! Repeated headers: Envoy's single-header host call returns the **first** value of a header
//! that appears several times. A header condition still holds when any value matches: when the
//! first value fails a condition, the whole map is read (once per request) and every value of
//! that name is tried. An absent header needs no fallback (no value can match).

use std::cell::{Cell, OnceCell};

use boifi_policy::RequestLookup;

/// A host call failed. The request's decision is then void and the request passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a host call failed")]
pub struct HostFailed;

/// Where request headers come from: Envoy (`host`), or a fake in tests.
pub trait HeaderSource {
    /// The value of request header `name` (lower-case; pseudo-headers like `:path` too), `None`
    /// when absent. For a repeated header, Envoy gives its first value.
    fn first(&self, name: &str) -> Result<Option<String>, HostFailed>;

    /// Every request header as (name, value), repeated headers once per value.
    fn all(&self) -> Result<Vec<(String, String)>, HostFailed>;
}

/// One request, read on demand. After deciding, check [`LazyRequest::failed`].
pub struct LazyRequest<'n, S> {
    source: S,
    /// The policy set's header names: one cache slot per name.
    names: &'n [String],
    method: OnceCell<Option<String>>,
    path: OnceCell<Option<String>>,
    first_values: Vec<OnceCell<Option<String>>>,
    all: OnceCell<Vec<(String, String)>>,
    failed: Cell<bool>,
}

impl<'n, S: HeaderSource> LazyRequest<'n, S> {
    /// `names`: every header name the rules may ask for; a name outside it is still answered,
    /// just not cached.
    pub fn new(source: S, names: &'n [String]) -> Self {
        LazyRequest {
            source,
            names,
            method: OnceCell::new(),
            path: OnceCell::new(),
            first_values: names.iter().map(|_| OnceCell::new()).collect(),
            all: OnceCell::new(),
            failed: Cell::new(false),
        }
    }

    /// Whether a host call failed: the rules saw an absent value instead, so the decision
    /// must not be acted on.
    pub fn failed(&self) -> bool {
        self.failed.get()
    }

    fn fetch(&self, name: &str) -> Option<String> {
        self.source.first(name).unwrap_or_else(|HostFailed| {
            self.failed.set(true);
            None
        })
    }

    /// The first value of `name`, fetched into `slot` on first use. (One function for every
    /// slot: each distinct cache closure would be its own copy of the code in the module.)
    fn cached<'a>(&self, slot: &'a OnceCell<Option<String>>, name: &str) -> Option<&'a str> {
        slot.get_or_init(|| self.fetch(name)).as_deref()
    }

    fn all(&self) -> &[(String, String)] {
        self.all.get_or_init(|| {
            self.source.all().unwrap_or_else(|HostFailed| {
                self.failed.set(true);
                Vec::new()
            })
        })
    }
}

impl<S: HeaderSource> RequestLookup for LazyRequest<'_, S> {
    fn method(&self) -> &str {
        self.cached(&self.method, ":method").unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.cached(&self.path, ":path").unwrap_or_default()
    }

    fn any_header_value(&self, name: &str, accept: &dyn Fn(&str) -> bool) -> bool {
        let uncached;
        let first = match self.names.iter().position(|n| n == name) {
            Some(i) => self.cached(&self.first_values[i], name),
            None => {
                uncached = self.fetch(name);
                uncached.as_deref()
            }
        };
        match first {
            None => false,
            Some(value) if accept(value) => true,
            // Envoy gave only the first value; a later one of a repeated header may match.
            Some(_) => self
                .all()
                .iter()
                .any(|(n, value)| n.eq_ignore_ascii_case(name) && accept(value)),
        }
    }
}

#[cfg(test)]
mod tests;
