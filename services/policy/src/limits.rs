//! Bounds on everything a policy may ask for. Checked by [`crate::compile`].

/// `metadata.name` is a DNS label.
pub const MAX_NAME_LEN: usize = 63;
pub const MAX_VERSION_LEN: usize = 64;
pub const MAX_RULES: usize = 64;
pub const MAX_HEADER_MATCHERS: usize = 16;
/// Source length of one regex, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size bound passed to the regex engine (`RegexBuilder::size_limit`).
pub const MAX_REGEX_COMPILED_BYTES: usize = 256 * 1024;
/// `fixed_delay_ms` and `start_delay_ms`: at most one hour.
pub const MAX_DELAY_MS: u64 = 3_600_000;
pub const MIN_HTTP_STATUS: u16 = 200;
pub const MAX_HTTP_STATUS: u16 = 599;
/// Abort body, in bytes.
pub const MAX_ABORT_BODY_LEN: usize = 64 * 1024;
pub const MAX_ABORT_HEADERS: usize = 16;
pub const MAX_SELECTOR_LABELS: usize = 16;
/// Any other string value (exact/prefix matchers, label and header values), in bytes.
pub const MAX_STRING_LEN: usize = 1024;
/// Nesting depth of one regex (groups, repetitions), before BOIFI's own anchoring group.
pub const MAX_REGEX_NEST: u32 = 32;
/// `duration_seconds`: at most 30 days.
pub const MAX_DURATION_SECONDS: u64 = 30 * 24 * 3600;
/// One policy document, in bytes (the API's request body limit).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Unknown fields listed by [`crate::parse_policy`]; the rest are counted in one more error.
pub const MAX_REPORTED_UNKNOWN_FIELDS: usize = 64;
/// `spec.max_held_requests`: requests one policy may hold at once in one sidecar.
pub const MAX_HELD_REQUESTS: u32 = 100_000;
