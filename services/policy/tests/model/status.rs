use boifi_policy::status::{refresh_expired, stamp};
use boifi_policy::RuleStatus;
use serde_json::json;

use crate::{example, parse_value, set};

/// 2024-05-01T12:00:00Z.
const MAY_1: u64 = 1_714_564_800_000;

#[test]
fn stamp_sets_times_and_per_rule_expiry() {
    let mut doc = example();
    let second_rule = json!({"fault": {"abort": {"httpStatus": 500}}});
    doc["spec"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(second_rule);
    let mut policy = parse_value(&doc);
    stamp(&mut policy, MAY_1 + 1_500, None);

    let status = policy.status.expect("stamped");
    assert_eq!(status.revision, 0, "left for the store");
    assert_eq!(status.created_at_ms, MAY_1 + 1_500);
    assert_eq!(status.updated_at_ms, MAY_1 + 1_500);
    assert_eq!(
        status.created_at.as_deref(),
        Some("2024-05-01T12:00:01.500Z")
    );
    assert_eq!(
        status.updated_at.as_deref(),
        Some("2024-05-01T12:00:01.500Z")
    );
    assert_eq!(
        status.rules,
        [
            RuleStatus {
                expires_at_ms: Some(MAY_1 + 1_500 + 300_000),
                expires_at: Some("2024-05-01T12:05:01.500Z".into()),
                expired: false,
            },
            RuleStatus::default(),
        ]
    );
}

#[test]
fn replacing_keeps_the_creation_time() {
    let mut policy = parse_value(&example());
    stamp(&mut policy, MAY_1 + 60_000, Some(MAY_1));
    let status = policy.status.unwrap();
    assert_eq!(status.created_at_ms, MAY_1);
    assert_eq!(
        status.created_at.as_deref(),
        Some("2024-05-01T12:00:00.000Z")
    );
    assert_eq!(status.updated_at_ms, MAY_1 + 60_000);
    assert_eq!(
        status.updated_at.as_deref(),
        Some("2024-05-01T12:01:00.000Z")
    );
}

#[test]
fn a_revision_set_by_the_store_survives_restamping() {
    let mut policy = parse_value(&example());
    stamp(&mut policy, MAY_1, None);
    policy.status.as_mut().unwrap().revision = 42;
    stamp(&mut policy, MAY_1 + 1, Some(MAY_1));
    assert_eq!(policy.status.unwrap().revision, 42);
}

#[test]
fn refresh_marks_rules_expired_from_their_expiry_on() {
    let mut policy = parse_value(&example());
    stamp(&mut policy, MAY_1, None);
    let mut status = policy.status.unwrap();
    let expires = MAY_1 + 300_000;

    refresh_expired(&mut status, expires - 1);
    assert!(!status.rules[0].expired);
    refresh_expired(&mut status, expires);
    assert!(status.rules[0].expired);
    // Idempotent, and a clock that went back un-expires (the flag is computed, not stored).
    refresh_expired(&mut status, expires);
    assert!(status.rules[0].expired);
    refresh_expired(&mut status, MAY_1);
    assert!(!status.rules[0].expired);
}

#[test]
fn rules_without_duration_never_expire() {
    let mut doc = example();
    set(&mut doc, "/spec/rules/0/fault/duration_seconds", json!(0));
    let mut policy = parse_value(&doc);
    stamp(&mut policy, MAY_1, None);
    let mut status = policy.status.unwrap();
    refresh_expired(&mut status, u64::MAX);
    assert_eq!(status.rules[0], RuleStatus::default());
}

#[test]
fn extreme_clock_values_do_not_panic() {
    let mut policy = parse_value(&example());
    stamp(&mut policy, u64::MAX, Some(0));
    let status = policy.status.unwrap();
    assert_eq!(
        status.created_at.as_deref(),
        Some("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(status.updated_at, None, "past year 9999: no RFC 3339 text");
    assert_eq!(status.rules[0].expires_at_ms, Some(u64::MAX));
    assert!(status.rules[0].expired);
}
