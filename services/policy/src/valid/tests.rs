use serde_json::{json, Value};

use super::*;
use crate::{parse_policy, FieldError, PolicyStatus};

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn valid_doc(name: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": { "rules": [ { "fault": { "abort": { "httpStatus": 503 } } } ] }
    })
}

fn fields(errors: &ValidationErrors) -> Vec<&str> {
    errors.errors.iter().map(|e| e.field.as_str()).collect()
}

/// What policy-api did before this module existed: strict parse, a second, lenient parse when
/// the strict one failed, then `compile`. [`ValidPolicy::parse`] must answer the same, in the
/// same order. (The path-name check came last then as now; the tests below pin it.)
fn two_pass(body: &[u8]) -> Result<Policy, ValidationErrors> {
    let (policy, mut errors) = match parse_policy(body) {
        Ok(policy) => (Some(policy), ValidationErrors::default()),
        Err(errors) => (serde_json::from_slice::<Policy>(body).ok(), errors),
    };
    let found = policy.as_ref().and_then(|p| compile(p).err());
    for e in found.map(|found| found.errors).unwrap_or_default() {
        if !errors.errors.contains(&e) {
            errors.errors.push(e);
        }
    }
    policy.filter(|_| errors.is_empty()).ok_or(errors)
}

#[test]
fn a_valid_body_parses_and_a_status_sent_back_is_dropped() {
    let mut doc = valid_doc("ok");
    doc["status"] = json!({ "revision": 7, "anything": true });
    let valid = ValidPolicy::parse(&body(&doc), Format::Json, Some("ok")).unwrap();
    assert_eq!(valid.name(), "ok");
    assert_eq!(valid.status, None);
    assert_eq!(valid.policy().spec.rules.len(), 1);
}

#[test]
fn unknown_fields_rule_problems_and_the_path_name_come_in_one_answer() {
    let doc = json!({
        "metadata": { "name": "Not_A_Label", "colour": "red" },
        "spec": { "rules": [ { "fault": { "percentage": 150, "abort": { "httpStatus": 503 } } } ] }
    });
    let errors = ValidPolicy::parse(&body(&doc), Format::Json, Some("other")).unwrap_err();
    assert_eq!(
        fields(&errors),
        [
            "metadata.colour",
            "metadata.name",
            "spec.rules[0].fault.percentage",
            "metadata.name"
        ]
    );
    assert_eq!(
        errors.errors[3],
        FieldError {
            field: "metadata.name".into(),
            message: "must equal the name in the path, \"other\"".into(),
        }
    );
}

#[test]
fn a_type_error_stops_before_the_value_checks() {
    let doc = json!({ "metadata": { "name": "BAD" }, "spec": { "rules": "none" } });
    let errors = ValidPolicy::parse(&body(&doc), Format::Json, Some("x")).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules"]);
    let errors = ValidPolicy::parse(b"{not json", Format::Json, None).unwrap_err();
    assert_eq!(fields(&errors), [""]);
    assert!(errors.errors[0].message.starts_with("invalid JSON"));
}

#[test]
fn a_name_that_differs_from_the_path_is_the_only_problem() {
    let errors = ValidPolicy::parse(&body(&valid_doc("a")), Format::Json, Some("b")).unwrap_err();
    assert_eq!(fields(&errors), ["metadata.name"]);
}

#[test]
fn answers_exactly_as_the_two_pass_check_did() {
    let mut unknown_and_bad = valid_doc("a");
    unknown_and_bad["spec"]["rules"][0]["fault"]["percentage"] = json!(-1);
    unknown_and_bad["spec"]["rules"][0]["typo"] = json!(1);
    unknown_and_bad["extra"] = json!({ "deep": [1, 2] });
    let mut regex = valid_doc("b");
    regex["spec"]["rules"][0]["match"] = json!({ "path": { "regex": "(" }, "method": {} });
    let mut many_unknown = valid_doc("c");
    for i in 0..70 {
        many_unknown["metadata"][format!("u{i}")] = json!(i);
    }
    let mut with_status = valid_doc("d");
    with_status["status"] = json!({ "rules": [ { "expires_at_ms": 5 } ] });
    with_status["spec"]["rules"][0]["fault"]["abort"]["httpStatus"] = json!(700);
    let docs = [
        valid_doc("a"),
        valid_doc("Bad Name"),
        unknown_and_bad,
        regex,
        many_unknown,
        with_status,
        json!({ "metadata": { "name": "a" } }),
        json!({ "spec": {} }),
        json!({ "metadata": { "name": 5 }, "spec": { "rules": [] }, "x": 1 }),
        json!({}),
    ];
    let mut bodies: Vec<Vec<u8>> = docs.iter().map(body).collect();
    bodies.extend([
        b"".to_vec(),
        b"{".to_vec(),
        b"{} trailing".to_vec(),
        br#"{"metadata":{"name":"a"},"spec":{"rules":[{"fault":{"percentage":1e309}}]}}"#.to_vec(),
    ]);
    for body in &bodies {
        let new = ValidPolicy::parse(body, Format::Json, None).map(Policy::from);
        assert_eq!(new, two_pass(body), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_typed_policy_is_checked_and_keeps_its_status() {
    let mut policy: Policy = serde_json::from_value(valid_doc("typed")).unwrap();
    policy.status = Some(PolicyStatus {
        created_at_ms: 5,
        ..PolicyStatus::default()
    });
    let valid = ValidPolicy::try_from(policy.clone()).unwrap();
    assert_eq!(valid.policy(), &policy);

    policy.spec.rules.clear();
    let errors = ValidPolicy::try_from(policy).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules"]);
}

#[test]
fn stamping_changes_only_the_status() {
    let mut doc = valid_doc("ttl");
    doc["spec"]["rules"][0]["fault"]["duration_seconds"] = json!(10);
    let mut valid = ValidPolicy::parse(&body(&doc), Format::Json, None).unwrap();
    let spec = valid.spec.clone();
    valid.stamp(1_000, Some(500));
    let status = valid.status.clone().unwrap();
    assert_eq!(status.created_at_ms, 500);
    assert_eq!(status.updated_at_ms, 1_000);
    assert_eq!(status.rules[0].expires_at_ms, Some(11_000));
    assert_eq!(valid.spec, spec);
}
