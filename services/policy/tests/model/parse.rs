use boifi_policy::{compile, parse_policy, Policy};
use serde_json::json;

use crate::{example, fields, set, EXISTING_FORMAT, EXISTING_FORMAT_HTTP_STATUS};

#[test]
fn existing_format_loads_and_compiles() {
    let policy = parse_policy(EXISTING_FORMAT.as_bytes()).expect("parses");
    assert_eq!(policy.metadata.name, "reviews-abort");
    let fault = &policy.spec.rules[0].fault;
    assert_eq!(fault.percentage, Some(50.0));
    assert_eq!(fault.duration_seconds, 300);
    assert_eq!(fault.delay.as_ref().unwrap().fixed_delay_ms, 200);
    let abort = fault.abort.as_ref().unwrap();
    assert_eq!(abort.http_status, Some(503));
    assert_eq!(abort.headers["x-k"], "v");
    compile(&policy).expect("valid");
}

#[test]
fn http_status_alias_loads_and_status_is_dropped() {
    let policy = parse_policy(EXISTING_FORMAT_HTTP_STATUS.as_bytes()).expect("parses");
    let abort = policy.spec.rules[0].fault.abort.as_ref().unwrap();
    assert_eq!(abort.http_status, Some(429));
    assert_eq!(policy.spec.rules[0].fault.start_delay_ms, 1500);
    assert_eq!(policy.status, None, "client-sent status is read-only");
    compile(&policy).expect("valid");
}

#[test]
fn serialization_round_trips_with_the_brief_field_names() {
    let policy = parse_policy(EXISTING_FORMAT.as_bytes()).unwrap();
    let text = serde_json::to_string(&policy).unwrap();
    assert!(text.contains(r#""httpStatus":503"#), "{text}");
    assert!(text.contains(r#""match":{"#), "{text}");
    assert_eq!(parse_policy(text.as_bytes()).unwrap(), policy);

    // With a status, as the server returns it: readers use plain serde and keep it.
    let mut stamped = policy.clone();
    boifi_policy::status::stamp(&mut stamped, 1_714_564_800_000, None);
    let text = serde_json::to_string(&stamped).unwrap();
    assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), stamped);
}

#[test]
fn every_unknown_field_is_reported_with_its_path() {
    let mut doc = example();
    set(&mut doc, "/extra", json!(1));
    set(&mut doc, "/metadata/nmae", json!("x"));
    set(&mut doc, "/spec/selector/labelz", json!({}));
    set(&mut doc, "/spec/rules/0/match/headers/0/exakt", json!("a"));
    set(&mut doc, "/spec/rules/0/fault/percentge", json!(5));
    set(&mut doc, "/spec/rules/0/fault/abort/bdy", json!("b"));
    let errors = parse_policy(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    let mut got = fields(&errors);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "extra",
            "metadata.nmae",
            "spec.rules[0].fault.abort.bdy",
            "spec.rules[0].fault.percentge",
            "spec.rules[0].match.headers[0].exakt",
            "spec.selector.labelz",
        ]
    );
    assert!(errors.errors.iter().all(|e| e.message == "unknown field"));
}

#[test]
fn unknown_fields_come_in_document_order() {
    let text = br#"{"metadata":{"name":"a","zz":1},"spec":{"rules":[{"fault":{"abort":{"httpStatus":503}},"aa":2}]}}"#;
    let errors = parse_policy(text).unwrap_err();
    assert_eq!(fields(&errors), ["metadata.zz", "spec.rules[0].aa"]);
}

#[test]
fn type_errors_name_their_path() {
    let mut doc = example();
    set(&mut doc, "/spec/rules/0/fault/percentage", json!("x"));
    let errors = parse_policy(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules[0].fault.percentage"]);
    assert_eq!(
        errors.errors[0].message,
        r#"invalid type: string "x", expected f64"#
    );

    let mut doc = example();
    set(
        &mut doc,
        "/spec/rules/0/fault/abort/httpStatus",
        json!(70000),
    );
    let errors = parse_policy(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules[0].fault.abort.httpStatus"]);
}

#[test]
fn unknown_fields_before_a_type_error_are_reported_too() {
    let text =
        br#"{"metadata":{"name":"a","typo":1},"spec":{"rules":[{"fault":{"percentage":"x"}}]}}"#;
    let errors = parse_policy(text).unwrap_err();
    assert_eq!(
        fields(&errors),
        ["metadata.typo", "spec.rules[0].fault.percentage"]
    );
}

#[test]
fn missing_fields_name_the_field_itself() {
    let text = br#"{"metadata":{},"spec":{"rules":[]}}"#;
    let errors = parse_policy(text).unwrap_err();
    assert_eq!(fields(&errors), ["metadata.name"]);
    assert_eq!(errors.errors[0].message, "missing field");

    let errors = parse_policy(br#"{"spec":{}}"#).unwrap_err();
    assert_eq!(fields(&errors), ["metadata"]);

    let text = br#"{"metadata":{"name":"a"},"spec":{"rules":[{"match":{}}]}}"#;
    let errors = parse_policy(text).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules[0].fault"]);
}

#[test]
fn status_of_any_shape_is_accepted_and_dropped() {
    for status in [
        json!("whatever"),
        json!([1, 2, 3]),
        json!(null),
        json!({"revision": "not a number", "unknown": {"deep": true}}),
    ] {
        let mut doc = example();
        set(&mut doc, "/status", status.clone());
        let policy = parse_policy(&serde_json::to_vec(&doc).unwrap())
            .unwrap_or_else(|e| panic!("status {status} rejected: {e}"));
        assert_eq!(policy.status, None);
    }
}

#[test]
fn only_the_top_level_status_is_exempt() {
    let mut doc = example();
    set(&mut doc, "/spec/status", json!({}));
    let errors = parse_policy(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert_eq!(fields(&errors), ["spec.status"]);
}

#[test]
fn bodies_that_are_not_a_json_object_are_rejected_at_the_root() {
    for body in [
        &b"not json"[..],
        b"",
        b"[1,2]",
        b"\"text\"",
        b"42",
        b"{\"metadata\":",
    ] {
        let errors = parse_policy(body).unwrap_err();
        assert_eq!(
            fields(&errors),
            [""],
            "{}: {errors}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn trailing_text_is_rejected() {
    let mut text = EXISTING_FORMAT.as_bytes().to_vec();
    text.extend_from_slice(b" {}");
    let errors = parse_policy(&text).unwrap_err();
    assert_eq!(fields(&errors), [""]);
    assert!(errors.errors[0].message.contains("trailing"), "{errors}");
}

#[test]
fn oversized_documents_are_rejected_unread() {
    let mut text = EXISTING_FORMAT.as_bytes().to_vec();
    text.resize(boifi_policy::limits::MAX_POLICY_BYTES + 1, b' ');
    let errors = parse_policy(&text).unwrap_err();
    assert_eq!(fields(&errors), [""]);

    // Whitespace padding up to the limit is fine.
    text.truncate(boifi_policy::limits::MAX_POLICY_BYTES);
    parse_policy(&text).expect("at the limit");
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let mut text = String::from(r#"{"metadata":{"name":"a"},"status":"#);
    text.push_str(&"[".repeat(100_000));
    let errors = parse_policy(text.as_bytes()).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
}

#[test]
fn the_list_of_unknown_fields_is_bounded() {
    let mut doc = example();
    let extra = boifi_policy::limits::MAX_REPORTED_UNKNOWN_FIELDS + 10;
    for i in 0..extra {
        set(&mut doc, &format!("/metadata/x{i:03}"), json!(i));
    }
    let errors = parse_policy(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    let listed = boifi_policy::limits::MAX_REPORTED_UNKNOWN_FIELDS;
    assert_eq!(errors.errors.len(), listed + 1);
    assert_eq!(errors.errors[0].field, "metadata.x000");
    let last = errors.errors.last().unwrap();
    assert_eq!(last.field, "");
    assert_eq!(last.message, "10 more unknown fields not listed");
}
