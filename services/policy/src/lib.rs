//! The BOIFI policy model, shared by policy-api, sse-broadcaster and the Wasm plugin.
//!
//! - [`types`]: the wire format (serde), as users write it and the API returns it.
//! - [`parse_policy`]: strict JSON parsing: unknown fields and wrong types are reported with
//!   their field paths, all at once.
//! - [`compile`]: validation of every rule in the design brief (all problems, each with its
//!   field path), producing a [`CompiledPolicy`] with regexes built once.
//! - Matching: [`Selector::matches`] a [`Workload`] ([`Selector::may_match`] for stream
//!   filters), [`CompiledRule::matches`] a [`RequestView`] (or any [`RequestLookup`], for
//!   callers that read headers on demand; [`CompiledPolicy::header_names`] says which), expiry
//!   ([`CompiledRule::is_active`]) and unbiased sampling ([`CompiledFault::sample`]: once per
//!   request and rule, by the caller). Regexes use `regex-lite` syntax, ASCII classes as in RE2,
//!   anchored to the whole value.
//! - [`limits`]: every bound [`compile`] and [`parse_policy`] enforce.
//! - [`status`]: the read-only `status` the server stamps on write and refreshes on read.
//! - [`wire`]: the sse-broadcaster's stream contract for both ends: snapshot and event data,
//!   SSE framing, the stream query (encode and parse) and the expiry rule ([`wire::rule_active`]).
//!
//! No I/O, no clock, no randomness: time and random numbers are passed in, so the crate builds
//! for `wasm32-unknown-unknown` and its tests are deterministic.

#![forbid(unsafe_code)]

mod error;
pub mod limits;
mod matching;
mod parse;
pub mod status;
pub mod types;
mod validate;
pub mod wire;

pub use error::{FieldError, ValidationErrors};
pub use matching::{
    CompiledAbort, CompiledFault, CompiledPolicy, CompiledRule, RequestLookup, RequestView,
    Workload,
};
pub use parse::parse_policy;
pub use types::*;
pub use validate::compile;
