//! The BOIFI policy model, shared by policy-api, sse-broadcaster and the Wasm plugin.
//!
//! - [`types`]: the wire format (serde), as users write it and the API returns it.
//! - [`ValidPolicy::parse`]: the one entry point for a policy from a user: request bytes in a
//!   [`Format`] become a [`ValidPolicy`] (a type only validation builds, and the only thing the
//!   store accepts), or every problem with its field path. It runs the two steps below.
//! - [`parse_policy`]: strict JSON parsing: unknown fields and wrong types are reported with
//!   their field paths, all at once.
//! - [`compile`]: validation of every rule in the design brief (all problems, each with its
//!   field path), producing a [`CompiledPolicy`] with regexes built once (what the Wasm plugin
//!   runs).
//! - Matching: [`Selector::matches`] a [`Workload`] ([`Selector::may_match`] for stream
//!   filters), [`CompiledRule::matches`] a [`RequestView`] (or any [`RequestLookup`], for
//!   callers that read headers on demand; [`CompiledPolicy::header_names`] says which), expiry
//!   ([`CompiledRule::is_active`]) and unbiased sampling ([`CompiledFault::sample`]: once per
//!   request and rule, by the caller). Regexes use `regex-lite` syntax, ASCII classes as in RE2,
//!   anchored to the whole value.
//! - [`sampling`]: the draw of request-keyed sampling, a pure function of `x-request-id`,
//!   policy and rule (`spec.sampling: request`, the default).
//! - [`grpc`]: gRPC status names and the HTTP/gRPC status mappings of `abort`.
//! - [`limits`]: every bound [`compile`] and [`parse_policy`] enforce.
//! - [`status`]: the read-only `status` the server stamps on write and refreshes on read.
//! - [`yaml`] (feature `yaml`): YAML policies, one per API request or a stream of them for
//!   the CLI ([`yaml::parse_yaml_stream`]), read into JSON so they get the same checks and
//!   field paths.
//! - [`wire`]: the sse-broadcaster's stream contract for both ends: snapshot and event data,
//!   SSE framing, the stream query (encode and parse) and the expiry rule ([`wire::rule_active`]).
//!
//! No I/O, no clock, no randomness: time and random numbers are passed in, so the crate builds
//! for `wasm32-unknown-unknown` and its tests are deterministic.

#![forbid(unsafe_code)]

mod error;
pub mod grpc;
pub mod limits;
mod matching;
mod parse;
pub mod sampling;
pub mod status;
pub mod types;
mod valid;
mod validate;
pub mod wire;
#[cfg(feature = "yaml")]
pub mod yaml;

pub use error::{FieldError, ValidationErrors};
pub use matching::{
    CompiledAbort, CompiledFault, CompiledPolicy, CompiledRule, RequestLookup, RequestView,
    Workload,
};
pub use parse::parse_policy;
pub use types::*;
pub use valid::{Format, ValidPolicy};
pub use validate::{check_dns_label, compile};
