use actix_web::http::header::{HeaderMap, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use actix_web::ResponseError;
use serde_json::json;

use super::*;

fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), HeaderValue::from_static(value));
    }
    map
}

fn fields(err: ApiError) -> Vec<String> {
    match err {
        ApiError::Invalid { details, .. } => details.into_iter().map(|d| d.field).collect(),
        other => panic!("expected a 400 with details, got {other:?}"),
    }
}

#[test]
fn if_match_takes_a_revision_with_or_without_quotes() {
    assert_eq!(precondition(&headers(&[])).unwrap(), None);
    for value in ["42", "\"42\"", " \"42\" "] {
        let map = headers(&[(IF_MATCH, value)]);
        assert_eq!(
            precondition(&map).unwrap(),
            Some(Precondition::Revision(42)),
            "{value}"
        );
    }
    assert_eq!(
        precondition(&headers(&[(IF_NONE_MATCH, "*")])).unwrap(),
        Some(Precondition::Absent)
    );
}

#[test]
fn malformed_preconditions_are_400() {
    let bad = [
        headers(&[(IF_MATCH, "abc")]),
        headers(&[(IF_MATCH, "W/\"4\"")]),
        headers(&[(IF_MATCH, "\"\"")]),
        headers(&[(IF_MATCH, "-1")]),
        headers(&[(IF_MATCH, "*")]),
        headers(&[(IF_MATCH, "99999999999999999999999")]),
        headers(&[(IF_NONE_MATCH, "\"4\"")]),
        headers(&[(IF_MATCH, "1"), (IF_NONE_MATCH, "*")]),
        headers(&[(IF_MATCH, "1"), (IF_MATCH, "2")]),
    ];
    for map in bad {
        let err = precondition(&map).unwrap_err();
        assert_eq!(err.status_code(), 400, "{map:?}");
    }
}

fn policy_json(name: &str) -> serde_json::Value {
    json!({
        "metadata": { "name": name },
        "spec": { "rules": [ { "fault": { "abort": { "httpStatus": 503 } } } ] }
    })
}

#[test]
fn a_valid_policy_passes_and_status_sent_back_is_ignored() {
    let mut body = policy_json("ok");
    body["status"] = json!({ "revision": 7, "anything": true });
    let policy = validate(body.to_string().as_bytes(), Format::Json, Some("ok")).unwrap();
    assert_eq!(policy.metadata.name, "ok");
    assert_eq!(policy.status, None);
}

#[test]
fn unknown_fields_and_rule_problems_are_reported_together() {
    let body = json!({
        "metadata": { "name": "Not_A_Label", "colour": "red" },
        "spec": { "rules": [ { "fault": { "percentage": 150, "abort": { "httpStatus": 503 } } } ] }
    });
    let found =
        fields(validate(body.to_string().as_bytes(), Format::Json, Some("other")).unwrap_err());
    for want in [
        "metadata.colour",
        "metadata.name",
        "spec.rules[0].fault.percentage",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} missing from {found:?}"
        );
    }
    assert_eq!(
        found.iter().filter(|f| *f == "metadata.name").count(),
        2,
        "{found:?}"
    );
}

#[test]
fn a_name_that_differs_from_the_path_is_a_field_error() {
    let found = fields(
        validate(
            policy_json("a").to_string().as_bytes(),
            Format::Json,
            Some("b"),
        )
        .unwrap_err(),
    );
    assert_eq!(found, ["metadata.name"]);
}

#[test]
fn type_errors_and_non_json_are_400() {
    let body = json!({ "metadata": { "name": "x" }, "spec": { "rules": "none" } });
    assert_eq!(
        fields(validate(body.to_string().as_bytes(), Format::Json, None).unwrap_err()),
        ["spec.rules"]
    );
    let err = validate(b"not json", Format::Json, None).unwrap_err();
    assert_eq!(err.status_code(), 400);
}

#[test]
fn output_carries_the_store_revision_and_expiry() {
    let mut policy = validate(
        json!({
            "metadata": { "name": "ttl" },
            "spec": { "rules": [ { "fault": { "duration_seconds": 10, "delay": { "fixed_delay_ms": 5 } } } ] }
        })
        .to_string()
        .as_bytes(),
        Format::Json,
        None,
    )
    .unwrap();
    policy.stamp(1_000, None);
    let fresh = for_output(policy.clone().into(), 9, 5_000);
    let status = fresh.status.unwrap();
    assert_eq!(status.revision, 9);
    assert!(!status.rules[0].expired);
    let old = for_output(policy.into(), 9, 11_000);
    assert!(old.status.unwrap().rules[0].expired);
}
