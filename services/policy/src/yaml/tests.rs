use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::{FieldError, Format};

fn yaml(body: &str) -> Result<ValidPolicy, ValidationErrors> {
    ValidPolicy::parse(body.as_bytes(), Format::Yaml, None)
}

fn json_of(value: &serde_json::Value) -> Result<ValidPolicy, ValidationErrors> {
    ValidPolicy::parse(&serde_json::to_vec(value).unwrap(), Format::Json, None)
}

fn only_error(result: Result<ValidPolicy, ValidationErrors>) -> FieldError {
    let errors = result.unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    errors.errors.into_iter().next().unwrap()
}

/// A valid `spec:` line.
const SPEC: &str = "spec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n";

#[test]
fn the_yaml_example_is_the_json_example() {
    let yaml = include_str!("../../../../docs/examples/reviews-abort.yaml");
    let json = include_str!("../../../../docs/examples/json/reviews-abort.json");
    assert_eq!(
        ValidPolicy::parse(yaml.as_bytes(), Format::Yaml, None).unwrap(),
        ValidPolicy::parse(json.as_bytes(), Format::Json, None).unwrap()
    );
}

#[test]
fn json_text_is_yaml_too() {
    let body =
        r#"{"metadata":{"name":"p"},"spec":{"rules":[{"fault":{"abort":{"httpStatus":503}}}]}}"#;
    assert_eq!(
        ValidPolicy::parse(body.as_bytes(), Format::Yaml, Some("p")).unwrap(),
        ValidPolicy::parse(body.as_bytes(), Format::Json, Some("p")).unwrap()
    );
}

#[test]
fn problems_have_the_json_field_paths_in_document_order() {
    let body = "\
spec:
  rules:
    - fault: { percentage: 150, abort: { httpStatus: 503 }, colour: red }
metadata:
  owner: me
  name: Not_A_Label
";
    let doc = json!({
        "spec": { "rules": [ { "fault": { "percentage": 150, "abort": { "httpStatus": 503 }, "colour": "red" } } ] },
        "metadata": { "owner": "me", "name": "Not_A_Label" }
    });
    // serde_json::Value sorts keys; the JSON text must keep the YAML's order to compare.
    let json_text = r#"{"spec":{"rules":[{"fault":{"percentage":150,"abort":{"httpStatus":503},"colour":"red"}}]},"metadata":{"owner":"me","name":"Not_A_Label"}}"#;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json_text).unwrap(),
        doc
    );
    let from_yaml = ValidPolicy::parse(body.as_bytes(), Format::Yaml, Some("other")).unwrap_err();
    let from_json =
        ValidPolicy::parse(json_text.as_bytes(), Format::Json, Some("other")).unwrap_err();
    assert_eq!(from_yaml, from_json);
    let fields: Vec<&str> = from_yaml.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].fault.colour",
            "metadata.owner",
            "metadata.name",
            "spec.rules[0].fault.percentage",
            "metadata.name"
        ]
    );
}

#[test]
fn type_errors_name_the_field_as_json_does() {
    let error = only_error(yaml("metadata: { name: p }\nspec: { rules: none }\n"));
    assert_eq!(error.field, "spec.rules");
    assert_eq!(
        error,
        only_error(json_of(
            &json!({ "metadata": { "name": "p" }, "spec": { "rules": "none" } })
        ))
    );
    let missing = only_error(yaml(
        "spec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n",
    ));
    assert_eq!(
        missing,
        FieldError {
            field: "metadata".into(),
            message: "missing field".into()
        }
    );
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let error = only_error(yaml("metadata:\n  name: x\n spec: [\n"));
    assert_eq!(error.field, "");
    assert!(
        error.message.starts_with("line 3, column 2: "),
        "{}",
        error.message
    );
    let error = only_error(yaml("metadata:\n  name: \"unterminated\n"));
    assert_eq!(error.field, "");
    assert!(error.message.starts_with("line "), "{}", error.message);
}

#[test]
fn yaml_1_1_booleans_stay_strings_and_a_real_bool_is_a_type_error_on_the_name() {
    for name in ["on", "no", "yes", "off", "y", "n"] {
        let body = format!("metadata: {{ name: {name} }}\n{SPEC}");
        let policy = yaml(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.name(), name);
    }
    for name in ["true", "false", "True"] {
        let error = only_error(yaml(&format!("metadata: {{ name: {name} }}\n{SPEC}")));
        assert_eq!(error.field, "metadata.name", "{name}");
        assert!(
            error.message.starts_with("invalid type: boolean"),
            "{name}: {}",
            error.message
        );
    }
}

#[test]
fn numbers_with_leading_zeros_or_underscores_are_type_errors_not_octal() {
    let rule = |fault: &str| {
        format!("metadata: {{ name: p }}\nspec:\n  rules:\n    - fault: {{ {fault} }}\n")
    };
    for (fault, field) in [
        (
            "abort: { httpStatus: 0503 }",
            "spec.rules[0].fault.abort.httpStatus",
        ),
        (
            "delay: { fixed_delay_ms: 010 }",
            "spec.rules[0].fault.delay.fixed_delay_ms",
        ),
        (
            "delay: { fixed_delay_ms: 1_000 }",
            "spec.rules[0].fault.delay.fixed_delay_ms",
        ),
    ] {
        let error = only_error(yaml(&rule(fault)));
        assert_eq!(error.field, field, "{fault}");
        assert!(
            error.message.starts_with("invalid type: string"),
            "{fault}: {}",
            error.message
        );
    }
    // YAML 1.2's explicit forms are numbers.
    let policy = yaml(&rule("delay: { fixed_delay_ms: 0o17 }")).unwrap();
    let delay = policy.spec.rules[0].fault.delay.as_ref().unwrap();
    assert_eq!(delay.fixed_delay_ms, 15);
}

#[test]
fn a_label_value_written_as_a_number_is_a_type_error_as_in_json() {
    let error = only_error(yaml(
        "metadata: { name: p }\nspec: { selector: { labels: { version: 2 } } }\n",
    ));
    assert_eq!(error.field, "spec.selector.labels.version");
    let policy = yaml("metadata: { name: p }\nspec: { selector: { labels: { version: '2' } }, rules: [ { fault: { delay: { fixed_delay_ms: 1 } } } ] }\n")
        .unwrap();
    assert_eq!(policy.spec.selector.labels["version"], "2");
}

#[test]
fn what_json_cannot_hold_is_refused_with_its_position() {
    for (body, line) in [
        ("metadata: { name: p }\nspec:\n  rules:\n    - fault: { percentage: .inf }\n", 4),
        ("metadata: { name: p }\nspec:\n  rules:\n    - fault: { percentage: .nan }\n", 4),
        ("metadata:\n  name: p\n  name: q\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n", 3),
        ("metadata: !thing { name: p }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n", 1),
        ("metadata: { name: !!binary /w== }\nspec: {}\n", 1),
        ("base: &b { name: p }\nmetadata:\n  <<: *b\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n", 3),
    ] {
        let error = only_error(yaml(body));
        assert_eq!(error.field, "", "{body}");
        assert!(
            error.message.starts_with(&format!("line {line}, column ")),
            "{body}: {}",
            error.message
        );
    }
}

#[test]
fn only_a_mapping_is_a_policy() {
    for body in ["just text\n", "- a\n- b\n", "42\n"] {
        let error = only_error(yaml(body));
        assert_eq!(error.field, "", "{body}");
        assert!(
            error.message.contains("a YAML mapping"),
            "{}",
            error.message
        );
    }
    for body in ["", "# only a comment\n", "---\n"] {
        let error = only_error(yaml(body));
        assert_eq!(error.message, "the body holds no YAML document", "{body:?}");
    }
}

#[test]
fn a_second_document_is_refused_with_its_line() {
    let body = "metadata: { name: a }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n---\nmetadata: { name: b }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n";
    let error = only_error(yaml(body));
    assert_eq!(error.field, "");
    assert!(
        error.message.starts_with("line 4: a second YAML document"),
        "{}",
        error.message
    );
    // An explicit start marker and a trailing one are still one document.
    assert!(yaml("---\nmetadata: { name: a }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n---\n").is_ok());
}

#[test]
fn aliases_are_expanded_within_bounds() {
    let body = "\
metadata: { name: p }
spec:
  rules:
    - fault: &f { abort: { httpStatus: 503 } }
    - fault: *f
";
    let policy = yaml(body).unwrap();
    assert_eq!(policy.spec.rules[0], policy.spec.rules[1]);
}

/// Nine levels of nine aliases: 9^9 (387 million) strings if expanded.
fn billion_laughs() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names: Vec<char> = "abcdefghi".chars().collect();
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    text
}

#[test]
fn alias_bombs_stop_at_the_limits_quickly() {
    let big_anchor = format!(
        "x: &x [{}]\ny: [{}]\n",
        vec!["1"; 50_000].join(","),
        vec!["*x"; 50_000].join(",")
    );
    let long_string = format!(
        "metadata: {{ name: p }}\nspec:\n  rules:\n    - fault: {{ abort: {{ httpStatus: 503, body: &s \"{}\" }} }}\n{}",
        "x".repeat(60_000),
        "    - fault: { abort: { httpStatus: 503, body: *s } }\n".repeat(20)
    );
    for (what, body, expect) in [
        ("billion laughs", billion_laughs(), "values"),
        ("one large anchor, many aliases", big_anchor, "values"),
        (
            "one long string, many aliases",
            long_string,
            "bytes as JSON",
        ),
    ] {
        assert!(body.len() <= MAX_POLICY_BYTES, "{what}");
        let started = Instant::now();
        let error = only_error(yaml(&body));
        // Generous for a debug build on a shared machine; unbounded expansion takes minutes.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(error.field, "", "{what}");
        assert!(
            error.message.starts_with("line ") && error.message.contains(expect),
            "{what}: {}",
            error.message
        );
    }
}

#[test]
fn bodies_over_the_limit_are_refused_before_parsing() {
    let body = format!(
        "metadata: {{ name: p }}\n#{}\n",
        "x".repeat(MAX_POLICY_BYTES)
    );
    let error = only_error(yaml(&body));
    assert_eq!(error.field, "");
    assert!(
        error.message.contains("at most 1048576"),
        "{}",
        error.message
    );
    let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
    let error = only_error(yaml(&deep));
    assert!(error.message.contains("deeper than"), "{}", error.message);
}

#[test]
fn a_stream_is_read_document_by_document() {
    let stream = "\
# policies for the demo
metadata: { name: first }
spec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }
---
---
metadata: { name: Second }
spec: { rules: [ { fault: { percentage: 150, abort: { httpStatus: 503 } } } ] }
---
metadata:
  name: third
  name: again
spec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }
---

metadata: { name: fourth }
spec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }
";
    let docs = parse_yaml_stream(stream.as_bytes());
    let summary: Vec<(usize, usize, Vec<String>)> = docs
        .iter()
        .map(|d| {
            let fields = match &d.policy {
                Ok(p) => vec![format!("ok {}", p.name())],
                Err(e) => e.errors.iter().map(|e| e.field.clone()).collect(),
            };
            (d.index, d.line, fields)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 2, vec!["ok first".to_owned()]),
            (
                2,
                6,
                vec![
                    "metadata.name".to_owned(),
                    "spec.rules[0].fault.percentage".to_owned()
                ]
            ),
            (3, 11, vec![String::new()]),
            (4, 15, vec!["ok fourth".to_owned()]),
        ]
    );
    let Err(duplicate) = &docs[2].policy else {
        unreachable!()
    };
    assert!(
        duplicate.errors[0]
            .message
            .starts_with("line 11, column 3: "),
        "{}",
        duplicate.errors[0].message
    );
}

#[test]
fn a_syntax_error_ends_the_stream_as_its_last_entry() {
    let stream = "metadata: { name: a }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n---\nmetadata: [\n---\nmetadata: { name: c }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n";
    let docs = parse_yaml_stream(stream.as_bytes());
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert!(docs[0].policy.is_ok());
    let Err(errors) = &docs[1].policy else {
        panic!("{docs:?}")
    };
    assert_eq!(docs[1].index, 2);
    assert!(errors.errors[0].message.starts_with("line "), "{errors}");
    assert!(parse_yaml_stream(b"").is_empty());
    let huge = vec![b'#'; MAX_YAML_STREAM_BYTES + 1];
    let docs = parse_yaml_stream(&huge);
    assert_eq!((docs.len(), docs[0].index), (1, 1));
    assert!(docs[0].policy.as_ref().unwrap_err().errors[0]
        .message
        .contains("at most"));
    assert!(parse_yaml_stream(b"# nothing\n---\n").is_empty());
}

#[test]
fn text_that_is_not_utf8_is_refused_with_its_position() {
    let body = b"metadata:\n  name: ab\xff\n";
    let error = only_error(ValidPolicy::parse(body, Format::Yaml, None));
    assert_eq!(error.message, "line 2, column 11: the text is not UTF-8");
}

#[test]
fn a_policy_at_every_limit_is_within_the_node_limit() {
    use crate::limits::{MAX_ABORT_HEADERS, MAX_HEADER_MATCHERS, MAX_RULES, MAX_SELECTOR_LABELS};
    let mut body = String::from("metadata: { name: big, version: '1' }\nspec:\n  selector:\n    namespace: demo\n    service: reviews\n    labels:\n");
    for i in 0..MAX_SELECTOR_LABELS {
        body.push_str(&format!("      l{i}: v\n"));
    }
    body.push_str("  rules:\n");
    for _ in 0..MAX_RULES {
        body.push_str("    - match:\n        method: { exact: GET }\n        path: { prefix: /api }\n        headers:\n");
        for i in 0..MAX_HEADER_MATCHERS {
            body.push_str(&format!("          - {{ name: h{i}, exact: v }}\n"));
        }
        body.push_str("      fault:\n        percentage: 50\n        start_delay_ms: 1\n        duration_seconds: 60\n        delay: { fixed_delay_ms: 1 }\n        abort:\n          httpStatus: 503\n          grpcStatus: UNAVAILABLE\n          body: text\n          headers:\n");
        for i in 0..MAX_ABORT_HEADERS {
            body.push_str(&format!("            x-h{i}: v\n"));
        }
    }
    let policy = yaml(&body).unwrap();
    assert_eq!(policy.spec.rules.len(), MAX_RULES);
}
