//! Strict parsing of policies written by users.
//!
//! Plain `serde_json::from_slice::<Policy>` stays lenient (unknown fields ignored, `status`
//! kept), which is what readers of the server's own output want. Input from users goes through
//! [`crate::ValidPolicy::parse`], whose first step is this strict parse: it reports every
//! unknown field and drops `status`.

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::limits::{MAX_POLICY_BYTES, MAX_REPORTED_UNKNOWN_FIELDS};
use crate::{Metadata, Policy, PolicySpec, ValidationErrors};

/// What a user may send: [`Policy`] without its server-owned `status`. `status` is read as
/// [`IgnoredAny`] so that any shape is accepted, then thrown away.
#[derive(Deserialize)]
#[serde(rename = "Policy")]
struct Input {
    metadata: Metadata,
    spec: PolicySpec,
    #[serde(default, rename = "status")]
    _status: IgnoredAny,
}

/// Parse a policy from JSON, strictly: unknown fields (except the read-only `status`) and
/// type errors are reported with their field paths.
///
/// All unknown fields are reported at once. Deserialization stops at the first type error, so
/// at most one type error is reported, after the unknown fields seen before it. The returned
/// policy has `status: None`; call [`crate::compile`] to check its values, or use
/// [`crate::ValidPolicy::parse`], which does both and reports every problem of both steps.
pub fn parse_policy(json: &[u8]) -> Result<Policy, ValidationErrors> {
    match parse_json(json) {
        (Some(policy), errors) if errors.is_empty() => Ok(policy),
        (_, errors) => Err(errors),
    }
}

/// The strict parse, keeping the typed policy when unknown fields were its only problem (so
/// the caller can still check the values and report both kinds of problem in one answer).
/// `None` when the text is not a well-typed policy; the errors then say why.
pub(crate) fn parse_json(json: &[u8]) -> (Option<Policy>, ValidationErrors) {
    if let Some(errors) = too_large(json.len()) {
        return (None, errors);
    }
    let mut errors = ValidationErrors::default();

    // serde would also build a struct from a JSON array, by position; a policy is an object.
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        errors.push("", "the body must be a JSON object");
        return (None, errors);
    }

    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| {
        let path = field_path(&path);
        // The one ignored field that is allowed: clients may send back what they read.
        if path != "status" {
            unknown.push(path);
        }
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = serde_path_to_error::deserialize::<_, Input>(serde_ignored::Deserializer::new(
        &mut de,
        &mut record,
    ))
    .map_err(|e| describe(&e.path().to_string(), e.inner()))
    .and_then(|input| {
        // Trailing text after the object.
        de.end().map(|()| input).map_err(|e| describe("", &e))
    });

    let unlisted = unknown.len().saturating_sub(MAX_REPORTED_UNKNOWN_FIELDS);
    for path in unknown.into_iter().take(MAX_REPORTED_UNKNOWN_FIELDS) {
        errors.push(path, "unknown field");
    }
    if unlisted > 0 {
        errors.push("", format!("{unlisted} more unknown fields not listed"));
    }
    match parsed {
        Ok(input) => (
            Some(Policy {
                metadata: input.metadata,
                spec: input.spec,
                status: None,
            }),
            errors,
        ),
        Err((field, message)) => {
            errors.push(field, message);
            (None, errors)
        }
    }
}

/// The size check of a policy document of `len` bytes, whatever its format.
pub(crate) fn too_large(len: usize) -> Option<ValidationErrors> {
    if len <= MAX_POLICY_BYTES {
        return None;
    }
    let mut errors = ValidationErrors::default();
    errors.push(
        "",
        format!("policy is {len} bytes, at most {MAX_POLICY_BYTES} allowed"),
    );
    Some(errors)
}

/// `a.b[0].c` from serde_ignored's linked path.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Field path and message of a deserialization error at `path` (serde_path_to_error's
/// rendering, `.` for the root). serde reports a missing field at its parent's path; the path
/// is extended so it names the field itself.
fn describe(path: &str, e: &serde_json::Error) -> (String, String) {
    // serde_json files a number no type can hold (`1e309`) under syntax, yet the text is JSON
    // and the value is what is wrong, so it is reported at its field like other bad values.
    let out_of_range = e.to_string().starts_with("number out of range");
    if (e.is_syntax() && !out_of_range) || e.is_eof() {
        // Not JSON, so no field to blame; where it is in the text is what helps.
        return (String::new(), format!("invalid JSON: {e}"));
    }
    let mut field = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    // serde_json appends " at line L column C"; the field path says more to a user.
    let mut message = e.to_string();
    if e.line() > 0 {
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
    }
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        field = if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
        message = "missing field".to_string();
    }
    (field, message)
}
