//! Validation of every rule of the design brief, and compilation into matchers.
//!
//! Every check runs even after one fails, so a user sees every problem at once, each with the
//! field path it concerns (`spec.rules[2].match.headers[1].regex`).

use regex_lite::{Regex, RegexBuilder};

use crate::grpc;
use crate::limits::*;
use crate::matching::{HeaderMatcher, StringMatcher};
use crate::{
    AbortFault, CompiledAbort, CompiledFault, CompiledPolicy, CompiledRule, Fault, Metadata,
    Policy, RequestMatch, Rule, Selector, ValidationErrors,
};

/// Check every rule of the design brief; on success the policy is ready for matching.
///
/// Rule expiry is taken from `policy.status.rules[i].expires_at_ms` when present (see
/// [`crate::status::stamp`]); `status` is not otherwise checked.
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    check_metadata(&policy.metadata, &mut errors);
    check_selector(&policy.spec.selector, &mut errors);

    let rules = &policy.spec.rules;
    if rules.is_empty() {
        errors.push("spec.rules", "at least one rule is required");
    } else if rules.len() > MAX_RULES {
        errors.push(
            "spec.rules",
            format!(
                "at most {MAX_RULES} rules allowed, got {} (rules after the {MAX_RULES}th are not checked)",
                rules.len()
            ),
        );
    }
    if let Some(max) = policy.spec.max_held_requests {
        if !(1..=MAX_HELD_REQUESTS).contains(&max) {
            errors.push(
                "spec.max_held_requests",
                format!("must be from 1 to {MAX_HELD_REQUESTS}, got {max}"),
            );
        }
    }
    let mut compiled = Vec::with_capacity(rules.len().min(MAX_RULES));
    // Checking rules past the limit would only add work (regex compilation) and noise.
    for (i, rule) in rules.iter().take(MAX_RULES).enumerate() {
        let expires_at_ms = policy
            .status
            .as_ref()
            .and_then(|status| status.rules.get(i))
            .and_then(|status| status.expires_at_ms);
        let field = format!("spec.rules[{i}]");
        if let Some(rule) = compile_rule(rule, &field, expires_at_ms, &mut errors) {
            compiled.push(rule);
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CompiledPolicy {
        name: policy.metadata.name.clone(),
        version: policy.metadata.version.clone(),
        selector: policy.spec.selector.clone(),
        rules: compiled,
        sampling: policy.spec.sampling.unwrap_or_default(),
        max_held_requests: policy.spec.max_held_requests,
    })
}

fn check_metadata(metadata: &Metadata, errors: &mut ValidationErrors) {
    if let Err(message) = check_dns_label(&metadata.name) {
        errors.push("metadata.name", message);
    }
    if let Some(version) = &metadata.version {
        check_len("metadata.version", version, MAX_VERSION_LEN, errors);
    }
}

/// Whether `name` is a valid policy name (`metadata.name`): a DNS label of 1-63 characters;
/// `Err` says what is wrong.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "at most {MAX_NAME_LEN} characters allowed, got {}",
            name.len()
        ));
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let bytes = name.as_bytes();
    if !bytes.iter().all(|&b| allowed(b)) || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(
            "must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn check_selector(selector: &Selector, errors: &mut ValidationErrors) {
    if let Some(namespace) = &selector.namespace {
        check_len("spec.selector.namespace", namespace, MAX_STRING_LEN, errors);
    }
    if let Some(service) = &selector.service {
        check_len("spec.selector.service", service, MAX_STRING_LEN, errors);
    }
    if selector.labels.len() > MAX_SELECTOR_LABELS {
        errors.push(
            "spec.selector.labels",
            format!(
                "at most {MAX_SELECTOR_LABELS} labels allowed, got {}",
                selector.labels.len()
            ),
        );
    }
    for (key, value) in &selector.labels {
        if key.is_empty() {
            errors.push("spec.selector.labels", "label names must not be empty");
        } else if key.len() > MAX_STRING_LEN {
            errors.push(
                "spec.selector.labels",
                format!("label names are at most {MAX_STRING_LEN} bytes"),
            );
        } else {
            let field = format!("spec.selector.labels.{key}");
            check_len(&field, value, MAX_STRING_LEN, errors);
        }
    }
}

fn compile_rule(
    rule: &Rule,
    field: &str,
    expires_at_ms: Option<u64>,
    errors: &mut ValidationErrors,
) -> Option<CompiledRule> {
    let before = errors.errors.len();
    let (method, path, headers) = compile_match(&rule.matches, &format!("{field}.match"), errors);
    let fault = compile_fault(&rule.fault, &format!("{field}.fault"), errors);
    if errors.errors.len() != before {
        return None;
    }
    Some(CompiledRule {
        method,
        path,
        headers,
        fault: fault?,
        expires_at_ms,
    })
}

type Matchers = (
    Option<StringMatcher>,
    Option<StringMatcher>,
    Vec<HeaderMatcher>,
);

fn compile_match(matches: &RequestMatch, field: &str, errors: &mut ValidationErrors) -> Matchers {
    let method = matches.method.as_ref().and_then(|m| {
        compile_string_match(
            &format!("{field}.method"),
            [&m.exact, &m.prefix, &m.regex],
            errors,
        )
    });
    let path = matches.path.as_ref().and_then(|m| {
        compile_string_match(
            &format!("{field}.path"),
            [&m.exact, &m.prefix, &m.regex],
            errors,
        )
    });

    if matches.headers.len() > MAX_HEADER_MATCHERS {
        errors.push(
            format!("{field}.headers"),
            format!(
                "at most {MAX_HEADER_MATCHERS} header matchers allowed, got {}",
                matches.headers.len()
            ),
        );
    }
    let mut headers = Vec::with_capacity(matches.headers.len());
    for (i, header) in matches.headers.iter().enumerate() {
        let field = format!("{field}.headers[{i}]");
        let name_ok = match check_header_name(&header.name, true) {
            Ok(()) => true,
            Err(message) => {
                errors.push(format!("{field}.name"), message);
                false
            }
        };
        let value = compile_string_match(
            &field,
            [&header.exact, &header.prefix, &header.regex],
            errors,
        );
        if let (true, Some(value)) = (name_ok, value) {
            headers.push(HeaderMatcher {
                name: header.name.to_ascii_lowercase(),
                value,
            });
        }
    }
    (method, path, headers)
}

/// `options` are `exact`, `prefix`, `regex`, in this order; exactly one must be given.
fn compile_string_match(
    field: &str,
    [exact, prefix, regex]: [&Option<String>; 3],
    errors: &mut ValidationErrors,
) -> Option<StringMatcher> {
    match (exact, prefix, regex) {
        (Some(exact), None, None) => {
            check_len(&format!("{field}.exact"), exact, MAX_STRING_LEN, errors)
                .then(|| StringMatcher::Exact(exact.clone()))
        }
        (None, Some(prefix), None) => {
            check_len(&format!("{field}.prefix"), prefix, MAX_STRING_LEN, errors)
                .then(|| StringMatcher::Prefix(prefix.clone()))
        }
        (None, None, Some(regex)) => match compile_regex(regex) {
            Ok(regex) => Some(StringMatcher::Regex(regex)),
            Err(message) => {
                errors.push(format!("{field}.regex"), message);
                None
            }
        },
        _ => {
            errors.push(field, "exactly one of exact, prefix, regex must be given");
            None
        }
    }
}

/// `regex-lite` syntax (Rust `regex` without Unicode classes): `\d`, `\w`, `\s` and `(?i)` are
/// ASCII-only as in RE2, `.` matches one character. Anchored at both ends.
fn compile_regex(source: &str) -> Result<Regex, String> {
    if source.len() > MAX_REGEX_LEN {
        return Err(format!(
            "at most {MAX_REGEX_LEN} bytes allowed, got {}",
            source.len()
        ));
    }
    let build = |pattern: &str, nest_limit: u32| {
        RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_COMPILED_BYTES)
            .nest_limit(nest_limit)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))
    };
    // Alone first: `a)|(b` is invalid, yet wrapped it would turn into a valid, unanchored
    // alternation.
    build(source, MAX_REGEX_NEST)?;
    build(&format!("^(?:{source})$"), MAX_REGEX_NEST + 1)
}

fn compile_fault(
    fault: &Fault,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<CompiledFault> {
    let before = errors.errors.len();
    let percentage = fault.percentage.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&percentage) {
        // Also catches NaN, which no range contains.
        errors.push(
            format!("{field}.percentage"),
            format!("must be a number from 0 to 100, got {percentage}"),
        );
    }
    check_max(
        &format!("{field}.start_delay_ms"),
        fault.start_delay_ms,
        MAX_DELAY_MS,
        errors,
    );
    check_max(
        &format!("{field}.duration_seconds"),
        fault.duration_seconds,
        MAX_DURATION_SECONDS,
        errors,
    );
    if fault.delay.is_none() && fault.abort.is_none() {
        errors.push(field, "at least one of delay, abort must be given");
    }
    if let Some(delay) = &fault.delay {
        check_max(
            &format!("{field}.delay.fixed_delay_ms"),
            delay.fixed_delay_ms,
            MAX_DELAY_MS,
            errors,
        );
    }
    let abort = fault
        .abort
        .as_ref()
        .and_then(|abort| compile_abort(abort, &format!("{field}.abort"), errors));

    (errors.errors.len() == before).then(|| {
        CompiledFault::new(
            percentage,
            fault.start_delay_ms,
            fault.delay.as_ref().map(|d| d.fixed_delay_ms),
            abort,
        )
    })
}

fn compile_abort(
    abort: &AbortFault,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<CompiledAbort> {
    let before = errors.errors.len();
    if let Some(status) = abort.http_status {
        if !(MIN_HTTP_STATUS..=MAX_HTTP_STATUS).contains(&status) {
            errors.push(
                format!("{field}.httpStatus"),
                format!("must be from {MIN_HTTP_STATUS} to {MAX_HTTP_STATUS}, got {status}"),
            );
        }
    }
    let grpc_code = abort.grpc_status.as_deref().and_then(|name| {
        let code = grpc::code_of(name);
        if code.is_none() {
            let known: Vec<&str> = grpc::names().collect();
            errors.push(
                format!("{field}.grpcStatus"),
                format!(
                    "must be a gRPC error code name, one of {}; got {name:?}",
                    known.join(", ")
                ),
            );
        }
        code
    });
    if abort.http_status.is_none() && abort.grpc_status.is_none() {
        errors.push(
            field,
            "at least one of httpStatus, grpcStatus must be given",
        );
    }
    if let Some(body) = &abort.body {
        check_len(&format!("{field}.body"), body, MAX_ABORT_BODY_LEN, errors);
    }
    if abort.headers.len() > MAX_ABORT_HEADERS {
        errors.push(
            format!("{field}.headers"),
            format!(
                "at most {MAX_ABORT_HEADERS} headers allowed, got {}",
                abort.headers.len()
            ),
        );
    }
    for (name, value) in &abort.headers {
        if let Err(message) = check_header_name(name, false) {
            errors.push(
                format!("{field}.headers"),
                format!("header name: {message}"),
            );
            continue;
        }
        let field = format!("{field}.headers.{name}");
        if check_len(&field, value, MAX_STRING_LEN, errors) && !is_header_value(value) {
            errors.push(
                field,
                "header values must not contain control characters other than tab",
            );
        }
    }
    (errors.errors.len() == before).then(|| CompiledAbort {
        // Each side derived from the other when only one is given.
        status: abort
            .http_status
            .unwrap_or_else(|| grpc::to_http(grpc_code.unwrap_or(2))),
        grpc_status: grpc_code.unwrap_or_else(|| grpc::from_http(abort.http_status.unwrap_or(500))),
        body: abort.body.clone(),
        headers: abort
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect(),
    })
}

/// An HTTP field name (RFC 9110 token). Request matchers may also name an HTTP/2 pseudo-header
/// such as `:authority`, which is how Envoy exposes the host.
fn check_header_name(name: &str, allow_pseudo: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_STRING_LEN {
        return Err(format!("at most {MAX_STRING_LEN} bytes allowed"));
    }
    let token = match name.strip_prefix(':') {
        Some(rest) if allow_pseudo => rest,
        _ => name,
    };
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if token.is_empty() || !token.bytes().all(tchar) {
        let what = if allow_pseudo {
            "a valid HTTP header name (or a pseudo-header like :authority)"
        } else {
            "a valid HTTP header name"
        };
        return Err(format!("`{name}` is not {what}"));
    }
    Ok(())
}

fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// Pushes an error and returns false when `value` is longer than `max` bytes.
fn check_len(field: &str, value: &str, max: usize, errors: &mut ValidationErrors) -> bool {
    if value.len() > max {
        errors.push(
            field,
            format!("at most {max} bytes allowed, got {}", value.len()),
        );
        return false;
    }
    true
}

fn check_max(field: &str, value: u64, max: u64, errors: &mut ValidationErrors) {
    if value > max {
        errors.push(field, format!("at most {max} allowed, got {value}"));
    }
}
