//! YAML policies (crate feature `yaml`; the Wasm plugin never enables it).
//!
//! - [`crate::Format::Yaml`] in [`crate::ValidPolicy::parse`]: one policy, as an API request
//!   body carries it. More than one document is an error.
//! - [`parse_yaml_stream`]: a file of `---`-separated policies, as the CLI reads them; each
//!   document is parsed and validated on its own ([`YamlDocument`]).
//!
//! A document is read by serde-saphyr into JSON text, keys in document order, and that text
//! goes through the same strict parse as a JSON body. Unknown fields, type errors and value
//! problems therefore get exactly the field paths and messages JSON gets. What JSON cannot
//! say is reported by this layer as one error with the field `""` and a message that starts
//! with where it is, `line L, column C: ...` (1-based): the text is not a well-formed YAML
//! policy, so no field can be blamed, and the position is what helps.
//!
//! Scalars follow YAML 1.2's core schema, with the YAML 1.1 readings that would change a
//! value turned off:
//! - only `true`/`false` are booleans; `yes`, `no`, `on`, `off`, `y`, `n` are strings, so
//!   `name: no` is the name `"no"` and `name: true` is a type error on `metadata.name`;
//! - a number written with leading zeros (`0503`) or underscores (`1_000`) stays a string, so
//!   a number field reports a type error instead of reading 503, octal 323 or 1000;
//! - `.inf`, `.nan` and numbers too large for a double are refused (JSON has none of them);
//! - tags other than YAML's own (`!!str`, `!!int`, ...), binary values, merge keys (`<<`)
//!   and duplicate keys are refused.
//!
//! Limits: the text is at most [`MAX_POLICY_BYTES`] for one policy ([`MAX_YAML_STREAM_BYTES`]
//! for a stream), each document's JSON form at most [`MAX_POLICY_BYTES`] (aliases can make a
//! small text large), at most [`MAX_YAML_NODES`] nodes and [`MAX_YAML_DEPTH`] levels per
//! document, alias replays bounded by [`MAX_YAML_NODES`]: a "billion laughs" stops there.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{MergeKeyPolicy, MessageFormatter, Spanned, UserMessageFormatter};

use crate::limits::MAX_POLICY_BYTES;
use crate::{parse, Policy, ValidPolicy, ValidationErrors};

/// A stream of policies ([`parse_yaml_stream`]), in bytes.
pub const MAX_YAML_STREAM_BYTES: usize = 16 * MAX_POLICY_BYTES;
/// Nodes (keys, scalars, sequences, mappings) in one document, aliases expanded. A policy at
/// every limit of [`crate::limits`] has about 9,500; an alias bomb stops here (in tens of
/// milliseconds).
pub const MAX_YAML_NODES: usize = 50_000;
/// Nesting of sequences and mappings in one document (a policy needs 7).
pub const MAX_YAML_DEPTH: usize = 64;

/// One document of a YAML stream, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlDocument {
    /// 1-based position among the stream's documents. Documents with no content (a trailing
    /// `---`, or only comments) are skipped and not counted, as `kubectl apply` does.
    pub index: usize,
    /// 1-based line where the document's content starts. For a document that is not
    /// well-formed YAML, the line of the problem (its message says the column too).
    pub line: usize,
    /// The policy, or every problem found in it.
    pub policy: Result<ValidPolicy, ValidationErrors>,
}

/// Parse a stream of YAML policies (`---`-separated documents, at most
/// [`MAX_YAML_STREAM_BYTES`]), each on its own: a document with problems does not hide the
/// others. A YAML syntax error ends the stream (what follows cannot be read reliably); it is
/// the last entry. A stream over the size limit, or not UTF-8, is one entry with index 1.
pub fn parse_yaml_stream(bytes: &[u8]) -> Vec<YamlDocument> {
    if bytes.len() > MAX_YAML_STREAM_BYTES {
        let message = format!(
            "the YAML stream is {} bytes, at most {MAX_YAML_STREAM_BYTES} allowed",
            bytes.len()
        );
        return vec![YamlDocument {
            index: 1,
            line: 1,
            policy: Err(single("", message)),
        }];
    }
    documents(bytes, MAX_YAML_STREAM_BYTES, usize::MAX)
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let (line, parsed) = match doc {
                Ok(json) => (json.line, parse::parse_json(&json.text)),
                Err(problem) => (problem.line, (None, single("", problem.message))),
            };
            YamlDocument {
                index: i + 1,
                line,
                policy: ValidPolicy::from_parsed(parsed, None),
            }
        })
        .collect()
}

/// The strict parse of one YAML policy: [`parse::parse_json`] of its JSON form, or the YAML
/// problem. Used by [`crate::ValidPolicy::parse`] for [`crate::Format::Yaml`].
pub(crate) fn parse_yaml(bytes: &[u8]) -> (Option<Policy>, ValidationErrors) {
    match to_json(bytes) {
        Ok(json) => parse::parse_json(&json),
        Err(errors) => (None, errors),
    }
}

/// One YAML document holding a mapping (at most [`MAX_POLICY_BYTES`], as is its JSON form) as
/// compact JSON text, keys in document order, scalars read as this module says. For request
/// bodies other than policies (the API's halt reason); policies go through
/// [`crate::ValidPolicy::parse`]. A problem is one error on the field `""`.
pub fn to_json(bytes: &[u8]) -> Result<Vec<u8>, ValidationErrors> {
    optional_to_json(bytes)?.ok_or_else(|| single("", "the body holds no YAML document"))
}

/// [`to_json`] for an optional body: `None` when the text holds no document (empty, only
/// comments, or `null`/`~`).
pub fn optional_to_json(bytes: &[u8]) -> Result<Option<Vec<u8>>, ValidationErrors> {
    if let Some(errors) = parse::too_large(bytes.len()) {
        return Err(errors);
    }
    // A second document is enough to refuse the body.
    let mut docs = documents(bytes, MAX_POLICY_BYTES, 2).into_iter();
    let first = match docs.next() {
        None => return Ok(None),
        Some(Err(problem)) => return Err(single("", problem.message)),
        Some(Ok(json)) => json,
    };
    if let Some(second) = docs.next() {
        let line = match second {
            Ok(json) => json.line,
            Err(problem) => problem.line,
        };
        return Err(single(
            "",
            format!(
                "line {line}: a second YAML document; send one per request (one policy per \
                 request; the CLI applies files of many)"
            ),
        ));
    }
    Ok(Some(first.text))
}

fn single(field: &str, message: impl Into<String>) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    errors.push(field, message);
    errors
}

/// A document's JSON form and the line its content starts on.
struct JsonDocument {
    line: usize,
    text: Vec<u8>,
}

/// A document that could not be read as YAML: where, and why (the message starts with
/// `line L, column C: `).
struct YamlProblem {
    line: usize,
    message: String,
}

/// The first `max_docs` documents of `bytes`, each as JSON text or the problem that stopped
/// it (a syntax error or a breached limit is the last).
fn documents(
    bytes: &[u8],
    max_bytes: usize,
    max_docs: usize,
) -> Vec<Result<JsonDocument, YamlProblem>> {
    // Checked here, where the position can be given (serde-saphyr says only "IO error").
    if let Err(e) = std::str::from_utf8(bytes) {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        return vec![Err(YamlProblem {
            line,
            message: format!("line {line}, column {column}: the text is not UTF-8"),
        })];
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(max_bytes),
            max_nodes: MAX_YAML_NODES,
            max_depth: MAX_YAML_DEPTH,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_YAML_NODES,
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        merge_keys: MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
    };
    let mut reader = bytes;
    serde_saphyr::read_with_options::<_, Spanned<JsonText>>(&mut reader, options)
        .take(max_docs)
        .map(|doc| {
            doc.map(|spanned| JsonDocument {
                line: spanned.referenced.line() as usize,
                text: spanned.value.0,
            })
            .map_err(|e| problem(&e))
        })
        .collect()
}

/// `line L, column C: message` for a serde-saphyr error.
fn problem(error: &serde_saphyr::Error) -> YamlProblem {
    let message = Messages.format_message(error);
    match error.location().filter(|l| l.line() > 0) {
        Some(at) => YamlProblem {
            line: at.line() as usize,
            message: format!("line {}, column {}: {message}", at.line(), at.column()),
        },
        None => YamlProblem {
            line: 1,
            message: message.into_owned(),
        },
    }
}

/// serde-saphyr's user-facing messages, with budget breaches said in words.
struct Messages;

impl MessageFormatter for Messages {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        let inner = match err {
            serde_saphyr::Error::AliasError { error, .. } => error.as_ref(),
            other => other,
        };
        match inner {
            serde_saphyr::Error::Budget { breach, .. } => Cow::Owned(budget_message(breach)),
            serde_saphyr::Error::AliasReplayLimitExceeded { .. } => Cow::Owned(format!(
                "aliases expand to more than {MAX_YAML_NODES} values"
            )),
            _ => UserMessageFormatter.format_message(err),
        }
    }
}

fn budget_message(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Nodes { .. } => {
            format!("the document has more than {MAX_YAML_NODES} values (aliases expanded)")
        }
        BudgetBreach::Depth { .. } => {
            format!("the document nests deeper than {MAX_YAML_DEPTH} levels")
        }
        BudgetBreach::InputBytes { .. } => "the YAML text is too large".to_owned(),
        other => format!("the document exceeds a YAML parsing limit ({other:?})"),
    }
}

/// A document as compact JSON text, written while serde-saphyr reads it.
struct JsonText(Vec<u8>);

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_any(Node { out: &mut out })?;
        if out.first() != Some(&b'{') {
            return Err(de::Error::custom(
                "the document must be a YAML mapping (`key: value` lines, like `metadata:` and \
                 `spec:` of a policy), not a single value or a list",
            ));
        }
        Ok(JsonText(out))
    }
}

/// One value, appended to `out` as JSON.
struct Node<'a> {
    out: &'a mut Vec<u8>,
}

impl Node<'_> {
    fn write<E: de::Error>(self, value: &impl serde::Serialize) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, value).map_err(E::custom)?;
        check_size(self.out)
    }
}

fn check_size<E: de::Error>(out: &[u8]) -> Result<(), E> {
    if out.len() > MAX_POLICY_BYTES {
        return Err(E::custom(format_args!(
            "the document is larger than {MAX_POLICY_BYTES} bytes as JSON (aliases expanded)"
        )));
    }
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value JSON can hold")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json would write `null` for these.
        if !v.is_finite() {
            return Err(E::custom(format_args!("{v} is not a number JSON can hold")));
        }
        self.write(&v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Err(E::custom("binary values are not supported"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.write(&())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.write(&())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                self.out.push(b',');
            }
            let len = self.out.len();
            if seq.next_element_seed(Node { out: self.out })?.is_none() {
                if !first {
                    // The comma written for an element that did not come.
                    self.out.truncate(len - 1);
                }
                break;
            }
            first = false;
        }
        self.out.push(b']');
        check_size(self.out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !first {
                self.out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.out, &key).map_err(de::Error::custom)?;
            self.out.push(b':');
            map.next_value_seed(Node { out: self.out })?;
        }
        self.out.push(b'}');
        check_size(self.out)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(
            "tagged values are not supported (only YAML's own tags, like `!!str`)",
        ))
    }
}

#[cfg(test)]
mod tests;
