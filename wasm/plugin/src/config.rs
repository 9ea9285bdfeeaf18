//! The plugin configuration: the WasmPlugin `pluginConfig`, or the Envoy filter's configuration
//! string, as JSON.
//!
//! `broadcaster_cluster` and `broadcaster_authority` are required; everything else has a default.
//! Unknown fields are reported as warnings, not errors, so a newer chart still works with an
//! older plugin.

use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest configuration accepted, in bytes; real ones are a few hundred.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

pub const DEFAULT_STREAM_PATH: &str = "/v1/config/stream";
pub const DEFAULT_POLL_WAIT_MS: u64 = 30_000;
pub const DEFAULT_BACKOFF_MIN_MS: u64 = 250;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;
/// Requests one plugin VM (one Envoy worker) holds in delays at once; past it requests pass
/// unfaulted. Like Envoy's `max_active_faults`, it keeps a flood from holding unbounded memory
/// and connections.
pub const DEFAULT_MAX_HELD_REQUESTS: u64 = 1_000;
const MAX_MAX_HELD_REQUESTS: u64 = 100_000;
/// How much longer than the long-poll wait a poll may take before it counts as failed.
pub const DEFAULT_POLL_TIMEOUT_MARGIN_MS: u64 = 5_000;

/// Bounds that keep a typo from turning into a busy loop or a poll that never ends.
const MAX_POLL_WAIT_MS: u64 = 300_000;
const MAX_BACKOFF_MS: u64 = 600_000;

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Envoy cluster of the sse-broadcaster (in Istio `outbound|8081||<service FQDN>`).
    pub broadcaster_cluster: String,
    /// `:authority` of poll requests.
    pub broadcaster_authority: String,
    /// Path of the stream endpoint, without query.
    pub stream_path: String,
    /// How long the broadcaster may hold a poll open when nothing changed.
    pub poll_wait_ms: u64,
    /// Extra time on top of `poll_wait_ms` before a poll counts as failed.
    pub poll_timeout_margin_ms: u64,
    /// Retry delay after the first failure; doubles per failure up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Cap on requests held by delays in this VM (a policy's `max_held_requests` overrides it).
    pub max_held_requests: u64,
}

/// Fields the plugin knows; anything else is reported as unknown.
const KNOWN_FIELDS: [&str; 8] = [
    "broadcaster_cluster",
    "broadcaster_authority",
    "stream_path",
    "poll_wait_ms",
    "poll_timeout_margin_ms",
    "backoff_min_ms",
    "backoff_max_ms",
    "max_held_requests",
];

struct RawConfig {
    broadcaster_cluster: Option<String>,
    broadcaster_authority: Option<String>,
    stream_path: Option<String>,
    poll_wait_ms: Option<u64>,
    poll_timeout_margin_ms: Option<u64>,
    backoff_min_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    max_held_requests: Option<u64>,
}

/// Why a configuration was rejected; the plugin then logs it and lets all traffic through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is {0} bytes, more than {MAX_CONFIG_BYTES}")]
    TooLarge(usize),
    /// Not a JSON object.
    #[error("configuration is not valid: {0}")]
    Syntax(String),
    #[error("{0}: required")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A configuration and the unknown fields it contained (to be logged as warnings).
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub config: PluginConfig,
    pub unknown_fields: Vec<String>,
}

/// Parses and checks the configuration bytes. `None` (Envoy passes no configuration) is an
/// error too: the broadcaster's cluster cannot be guessed.
pub fn parse(bytes: Option<&[u8]>) -> Result<Parsed, ConfigError> {
    let bytes = bytes.unwrap_or_default();
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge(bytes.len()));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::Missing("broadcaster_cluster"));
    }
    // Field by field rather than one derived struct: errors name the field, unknown fields
    // are collected, and the module stays small (the plugin has a size budget).
    let fields: Fields<'_> =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let unknown_fields = fields
        .0
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    let raw = RawConfig {
        broadcaster_cluster: field(&fields, "broadcaster_cluster", "a string")?,
        broadcaster_authority: field(&fields, "broadcaster_authority", "a string")?,
        stream_path: field(&fields, "stream_path", "a string")?,
        poll_wait_ms: field(&fields, "poll_wait_ms", NUMBER)?,
        poll_timeout_margin_ms: field(&fields, "poll_timeout_margin_ms", NUMBER)?,
        backoff_min_ms: field(&fields, "backoff_min_ms", NUMBER)?,
        backoff_max_ms: field(&fields, "backoff_max_ms", NUMBER)?,
        max_held_requests: field(&fields, "max_held_requests", "a whole number")?,
    };
    Ok(Parsed {
        config: check(raw)?,
        unknown_fields,
    })
}

fn check(raw: RawConfig) -> Result<PluginConfig, ConfigError> {
    let broadcaster_cluster = required(raw.broadcaster_cluster, "broadcaster_cluster")?;
    let broadcaster_authority = required(raw.broadcaster_authority, "broadcaster_authority")?;
    let stream_path = raw
        .stream_path
        .unwrap_or_else(|| DEFAULT_STREAM_PATH.to_owned());
    if !stream_path.starts_with('/') || stream_path.contains(['?', '#']) {
        return Err(invalid(
            "stream_path",
            "must start with '/' and have no query or fragment",
        ));
    }
    let poll_wait_ms = raw.poll_wait_ms.unwrap_or(DEFAULT_POLL_WAIT_MS);
    if poll_wait_ms > MAX_POLL_WAIT_MS {
        return Err(invalid(
            "poll_wait_ms",
            format!("at most {MAX_POLL_WAIT_MS}"),
        ));
    }
    let poll_timeout_margin_ms = raw
        .poll_timeout_margin_ms
        .unwrap_or(DEFAULT_POLL_TIMEOUT_MARGIN_MS);
    if !(100..=MAX_POLL_WAIT_MS).contains(&poll_timeout_margin_ms) {
        return Err(invalid(
            "poll_timeout_margin_ms",
            format!("between 100 and {MAX_POLL_WAIT_MS}"),
        ));
    }
    let backoff_min_ms = raw.backoff_min_ms.unwrap_or(DEFAULT_BACKOFF_MIN_MS);
    let backoff_max_ms = raw.backoff_max_ms.unwrap_or(DEFAULT_BACKOFF_MAX_MS);
    if !(1..=MAX_BACKOFF_MS).contains(&backoff_min_ms) {
        return Err(invalid(
            "backoff_min_ms",
            format!("between 1 and {MAX_BACKOFF_MS}"),
        ));
    }
    if !(backoff_min_ms..=MAX_BACKOFF_MS).contains(&backoff_max_ms) {
        return Err(invalid(
            "backoff_max_ms",
            format!("between backoff_min_ms ({backoff_min_ms}) and {MAX_BACKOFF_MS}"),
        ));
    }
    let max_held_requests = raw.max_held_requests.unwrap_or(DEFAULT_MAX_HELD_REQUESTS);
    if !(1..=MAX_MAX_HELD_REQUESTS).contains(&max_held_requests) {
        return Err(invalid(
            "max_held_requests",
            format!("between 1 and {MAX_MAX_HELD_REQUESTS}"),
        ));
    }
    Ok(PluginConfig {
        broadcaster_cluster,
        broadcaster_authority,
        stream_path,
        poll_wait_ms,
        poll_timeout_margin_ms,
        backoff_min_ms,
        backoff_max_ms,
        max_held_requests,
    })
}

const NUMBER: &str = "a whole number of milliseconds";

/// The members of a JSON object in order, values unparsed. A list, not a map: the plugin has
/// a size budget and each map type costs code; a repeated key counts once (the last).
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'de>, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Fields(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// One field's value; `null` counts as absent.
fn field<T: DeserializeOwned>(
    fields: &Fields<'_>,
    name: &'static str,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    fields
        .0
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, raw)| raw)
        .map(|raw| serde_json::from_str::<Option<T>>(raw.get()))
        .transpose()
        .map(Option::flatten)
        .map_err(|_| invalid(name, format!("expected {expected}")))
}

fn required(value: Option<String>, field: &'static str) -> Result<String, ConfigError> {
    match value {
        None => Err(ConfigError::Missing(field)),
        Some(v) if v.trim().is_empty() => Err(invalid(field, "must not be empty")),
        Some(v) => Ok(v),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"broadcaster_cluster":"outbound|8081||boifi.svc","broadcaster_authority":"boifi:8081"}"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let parsed = parse(Some(MINIMAL.as_bytes())).expect("valid");
        assert!(parsed.unknown_fields.is_empty());
        let c = parsed.config;
        assert_eq!(c.broadcaster_cluster, "outbound|8081||boifi.svc");
        assert_eq!(c.broadcaster_authority, "boifi:8081");
        assert_eq!(c.stream_path, DEFAULT_STREAM_PATH);
        assert_eq!(c.poll_wait_ms, DEFAULT_POLL_WAIT_MS);
        assert_eq!(c.backoff_min_ms, DEFAULT_BACKOFF_MIN_MS);
        assert_eq!(c.backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
    }

    #[test]
    fn every_field_can_be_set() {
        let json = r#"{"broadcaster_cluster":"c","broadcaster_authority":"a","stream_path":"/s",
            "poll_wait_ms":1000,"poll_timeout_margin_ms":200,"backoff_min_ms":10,"backoff_max_ms":20,
            "max_held_requests":5}"#;
        let c = parse(Some(json.as_bytes())).expect("valid").config;
        assert_eq!(
            c,
            PluginConfig {
                broadcaster_cluster: "c".into(),
                broadcaster_authority: "a".into(),
                stream_path: "/s".into(),
                poll_wait_ms: 1000,
                poll_timeout_margin_ms: 200,
                backoff_min_ms: 10,
                backoff_max_ms: 20,
                max_held_requests: 5,
            }
        );
        let zero =
            r#"{"broadcaster_cluster":"c","broadcaster_authority":"a","max_held_requests":0}"#;
        assert!(parse(Some(zero.as_bytes())).is_err());
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let json = r#"{"broadcaster_cluster":"c","broadcaster_authority":"a","pol_wait_ms":5,"stream_path":null}"#;
        let parsed = parse(Some(json.as_bytes())).expect("still valid");
        assert_eq!(parsed.unknown_fields, vec!["pol_wait_ms".to_owned()]);
        assert_eq!(
            parsed.config.stream_path, DEFAULT_STREAM_PATH,
            "null is absent"
        );
    }

    #[test]
    fn missing_or_empty_required_fields_are_named() {
        assert_eq!(
            parse(None).unwrap_err(),
            ConfigError::Missing("broadcaster_cluster")
        );
        assert_eq!(
            parse(Some(br#"{"broadcaster_cluster":"c"}"#)).unwrap_err(),
            ConfigError::Missing("broadcaster_authority")
        );
        let err = parse(Some(
            br#"{"broadcaster_cluster":" ","broadcaster_authority":"a"}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().starts_with("broadcaster_cluster:"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_field() {
        let cases = [
            (r#""stream_path":"v1""#, "stream_path"),
            (r#""stream_path":"/a?b=1""#, "stream_path"),
            (r#""poll_wait_ms":300001"#, "poll_wait_ms"),
            (r#""poll_timeout_margin_ms":1"#, "poll_timeout_margin_ms"),
            (r#""backoff_min_ms":0"#, "backoff_min_ms"),
            (
                r#""backoff_min_ms":100,"backoff_max_ms":50"#,
                "backoff_max_ms",
            ),
            (r#""poll_wait_ms":"soon""#, "poll_wait_ms"),
            (r#""poll_wait_ms":-1"#, "poll_wait_ms"),
            (r#""broadcaster_authority":5"#, "broadcaster_authority"),
        ];
        for (extra, field) in cases {
            let json =
                format!(r#"{{"broadcaster_cluster":"c","broadcaster_authority":"a",{extra}}}"#);
            let err = parse(Some(json.as_bytes())).expect_err(extra).to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
    }

    #[test]
    fn not_json_or_too_large_is_an_error() {
        for bad in [&b"broadcaster_cluster: c"[..], b"[1]", b"\"c\""] {
            assert!(matches!(parse(Some(bad)), Err(ConfigError::Syntax(_))));
        }
        assert!(matches!(
            parse(Some(format!("{MINIMAL} trailing").as_bytes())),
            Err(ConfigError::Syntax(_))
        ));
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            parse(Some(&big)),
            Err(ConfigError::TooLarge(MAX_CONFIG_BYTES + 1))
        );
    }

    /// Parses possibly broken bytes: no panic, and a rejection names a field it knows.
    fn assert_handled(bytes: &[u8]) -> Result<Parsed, ConfigError> {
        let result = parse(Some(bytes));
        match &result {
            Err(ConfigError::Missing(field) | ConfigError::Invalid { field, .. }) => {
                assert!(KNOWN_FIELDS.contains(field), "{field}")
            }
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(_) => {}
        }
        result
    }

    const FULL: &str = r#"{"broadcaster_cluster":"outbound|8081||boifi.svc","broadcaster_authority":"boifi:8081","stream_path":"/v1/config/stream","poll_wait_ms":30000,"poll_timeout_margin_ms":5000,"backoff_min_ms":250,"backoff_max_ms":30000}"#;

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..FULL.len() {
            assert_handled(&FULL.as_bytes()[..len]).expect_err(&FULL[..len]);
        }
        assert_handled(FULL.as_bytes()).expect("complete");
    }

    #[test]
    fn mutations_never_panic() {
        let mut rejected = 0;
        for mutant in crate::test_support::mutants(FULL.as_bytes(), 7, 3_000) {
            rejected += usize::from(assert_handled(&mutant).is_err());
        }
        assert!(rejected > 1_500, "only {rejected} rejected");
    }

    #[test]
    fn hostile_values_are_rejected_with_their_field() {
        let deep = crate::test_support::nested(10_000);
        for field in KNOWN_FIELDS {
            for value in [
                deep.as_str(),
                "1e309",
                "-1",
                "18446744073709551616",
                "1.5",
                "\"\\ud800\"",
                "{}",
            ] {
                let json = format!(
                    r#"{{"broadcaster_cluster":"c","broadcaster_authority":"a","{field}":{value}}}"#
                );
                match assert_handled(json.as_bytes()) {
                    Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                    other => panic!("{field}={}: {other:?}", &value[..value.len().min(20)]),
                }
            }
        }
        // Deep nesting and long strings in an unknown field: skipped, reported, not fatal.
        let json =
            format!(r#"{{"broadcaster_cluster":"c","broadcaster_authority":"a","x":{deep}}}"#);
        assert_eq!(
            assert_handled(json.as_bytes()).unwrap().unknown_fields,
            ["x"]
        );
        // A long unknown key filling the limit exactly, then one byte more.
        let long = "k".repeat(MAX_CONFIG_BYTES - MINIMAL.len() - 5);
        let at_limit = format!(r#"{{"{long}":1,{}"#, &MINIMAL[1..]);
        assert_eq!(at_limit.len(), MAX_CONFIG_BYTES);
        assert_eq!(
            assert_handled(at_limit.as_bytes()).unwrap().unknown_fields,
            [long.as_str()]
        );
        let over = format!(r#"{{"{long}k":1,{}"#, &MINIMAL[1..]);
        assert_eq!(
            assert_handled(over.as_bytes()),
            Err(ConfigError::TooLarge(MAX_CONFIG_BYTES + 1))
        );
    }
}
