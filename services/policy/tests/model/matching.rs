use std::collections::BTreeMap;

use boifi_policy::{CompiledRule, RequestView, Selector, Workload};
use serde_json::json;

use crate::{check, example, set};

fn workload(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn selector(namespace: Option<&str>, service: Option<&str>, labels: &[(&str, &str)]) -> Selector {
    Selector {
        namespace: namespace.map(Into::into),
        service: service.map(Into::into),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn selector_matches_namespace_service_and_labels() {
    let reviews_v2 = workload(
        "demo",
        "reviews-v2",
        &[("app", "reviews"), ("version", "v2")],
    );
    let example = selector(Some("demo"), Some("reviews"), &[("version", "v2")]);
    assert!(
        example.matches(&reviews_v2),
        "service matches the app label"
    );
    assert!(
        selector(None, Some("reviews-v2"), &[]).matches(&reviews_v2),
        "or the workload name"
    );

    assert!(!example.matches(&workload(
        "prod",
        "reviews-v2",
        &[("app", "reviews"), ("version", "v2")]
    )));
    assert!(!example.matches(&workload(
        "demo",
        "reviews-v1",
        &[("app", "reviews"), ("version", "v1")]
    )));
    assert!(!example.matches(&workload(
        "demo",
        "ratings",
        &[("app", "ratings"), ("version", "v2")]
    )));
    assert!(
        !example.matches(&workload("demo", "reviews", &[])),
        "labels must be present"
    );
}

#[test]
fn omitted_empty_and_star_selector_fields_match_anything() {
    let any = workload("ns", "svc", &[]);
    for wildcard in [None, Some(""), Some("*")] {
        assert!(selector(wildcard, wildcard, &[]).matches(&any));
    }
    assert!(Selector::default().matches(&Workload::default()));
    // A literal `*` on the workload side is not special.
    assert!(!selector(Some("demo"), None, &[]).matches(&workload("*", "svc", &[])));
}

#[test]
fn may_match_filters_streams_by_namespace_and_service() {
    let demo_reviews = selector(Some("demo"), Some("reviews"), &[("version", "v2")]);
    assert!(demo_reviews.may_match(None, None), "no filter: everything");
    assert!(demo_reviews.may_match(Some("demo"), None));
    assert!(demo_reviews.may_match(Some("demo"), Some("reviews")));
    assert!(
        demo_reviews.may_match(Some(""), Some("")),
        "empty filters are no filter"
    );
    assert!(!demo_reviews.may_match(Some("prod"), None));
    assert!(!demo_reviews.may_match(Some("demo"), Some("ratings")));
    assert!(!demo_reviews.may_match(None, Some("ratings")));

    let any_service_in_demo = selector(Some("demo"), Some("*"), &[]);
    assert!(any_service_in_demo.may_match(Some("demo"), Some("ratings")));
    assert!(!any_service_in_demo.may_match(Some("prod"), Some("ratings")));
    assert!(Selector::default().may_match(Some("prod"), Some("x")));
}

/// The first rule of the example with its `match` replaced.
fn rule_with_match(matches: serde_json::Value) -> CompiledRule {
    let mut doc = example();
    set(&mut doc, "/spec/rules/0/match", matches);
    check(&doc).expect("valid").rules()[0].clone()
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> RequestView<'a> {
    RequestView {
        method,
        path,
        headers,
    }
}

#[test]
fn the_example_rule_matches_get_api_requests_of_test_users() {
    let rule = check(&example()).unwrap().rules()[0].clone();
    let user = [("x-user", "test")];
    assert!(rule.matches(&request("GET", "/api/reviews?page=2", &user)));
    assert!(!rule.matches(&request("POST", "/api/reviews", &user)));
    assert!(
        !rule.matches(&request("get", "/api/reviews", &user)),
        "methods compare as given"
    );
    assert!(!rule.matches(&request("GET", "/static/api", &user)));
    assert!(!rule.matches(&request("GET", "/api", &[("x-user", "other")])));
    assert!(!rule.matches(&request("GET", "/api", &[])), "absent header");
}

#[test]
fn an_empty_match_matches_every_request() {
    let rule = rule_with_match(json!({}));
    assert!(rule.matches(&request("DELETE", "/", &[])));
}

#[test]
fn paths_are_matched_without_the_query_string() {
    let exact = rule_with_match(json!({"path": {"exact": "/items"}}));
    assert!(exact.matches(&request("GET", "/items", &[])));
    assert!(exact.matches(&request("GET", "/items?x=1", &[])));
    assert!(exact.matches(&request("GET", "/items?", &[])));
    assert!(!exact.matches(&request("GET", "/items/1", &[])));

    let regex = rule_with_match(json!({"path": {"regex": "/items/[0-9]+"}}));
    assert!(regex.matches(&request("GET", "/items/42?sort=asc", &[])));
    assert!(!regex.matches(&request("GET", "/items/42x", &[])));
}

#[test]
fn regexes_are_anchored_to_the_whole_value() {
    let rule = rule_with_match(json!({"path": {"regex": "/api|/v1"}}));
    assert!(rule.matches(&request("GET", "/api", &[])));
    assert!(rule.matches(&request("GET", "/v1", &[])));
    assert!(
        !rule.matches(&request("GET", "/api/x", &[])),
        "no implicit suffix"
    );
    assert!(
        !rule.matches(&request("GET", "/x/v1", &[])),
        "no implicit prefix"
    );
}

#[test]
fn regex_classes_are_ascii_like_re2() {
    let rule = rule_with_match(json!({"headers": [{"name": "x-id", "regex": r"(?i)id-\d+"}]}));
    assert!(rule.matches(&request("GET", "/", &[("x-id", "ID-123")])));
    assert!(
        !rule.matches(&request("GET", "/", &[("x-id", "id-١٢٣")])),
        "Arabic-Indic digits are not \\d"
    );
    let utf8 = rule_with_match(json!({"headers": [{"name": "x-n", "exact": "zoë"}]}));
    assert!(utf8.matches(&request("GET", "/", &[("x-n", "zoë")])));
}

#[test]
fn header_names_compare_ignoring_case_and_any_value_may_match() {
    let rule = rule_with_match(json!({"headers": [{"name": "X-User", "prefix": "te"}]}));
    assert!(rule.matches(&request("GET", "/", &[("x-user", "test")])));
    assert!(rule.matches(&request("GET", "/", &[("X-USER", "test")])));
    assert!(
        rule.matches(&request(
            "GET",
            "/",
            &[("x-user", "other"), ("x-user", "tester")]
        )),
        "a repeated header matches if one of its values does"
    );
    assert!(!rule.matches(&request("GET", "/", &[("x-user", "other")])));
}

#[test]
fn an_absent_header_never_matches_even_a_match_all_regex() {
    let rule = rule_with_match(json!({"headers": [{"name": "x-user", "regex": ".*"}]}));
    assert!(rule.matches(&request("GET", "/", &[("x-user", "")])));
    assert!(!rule.matches(&request("GET", "/", &[("x-other", "a")])));
}

#[test]
fn every_header_condition_must_hold() {
    let rule = rule_with_match(json!({"headers": [
        {"name": "a", "exact": "1"},
        {"name": "b", "exact": "2"}
    ]}));
    assert!(rule.matches(&request("GET", "/", &[("b", "2"), ("a", "1")])));
    assert!(!rule.matches(&request("GET", "/", &[("a", "1")])));
}

#[test]
fn pseudo_headers_can_be_matched() {
    let rule =
        rule_with_match(json!({"headers": [{"name": ":authority", "exact": "reviews:9080"}]}));
    assert!(rule.matches(&request("GET", "/", &[(":authority", "reviews:9080")])));
    assert!(!rule.matches(&request("GET", "/", &[(":authority", "ratings:9080")])));
}

fn fault_with_percentage(percentage: f64) -> boifi_policy::CompiledFault {
    let mut doc = example();
    set(
        &mut doc,
        "/spec/rules/0/fault/percentage",
        json!(percentage),
    );
    check(&doc).unwrap().rules()[0].fault().clone()
}

/// `n` evenly spaced inputs covering all of `u64`, each in the middle of its 1/n slice.
fn evenly_spaced(n: u64) -> impl Iterator<Item = u64> {
    let step = u64::MAX / n;
    (0..n).map(move |i| i * step + step / 2)
}

#[test]
fn zero_and_hundred_percent_are_never_and_always() {
    let never = fault_with_percentage(0.0);
    let always = fault_with_percentage(100.0);
    for random in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
        assert!(!never.sample(random), "{random}");
        assert!(always.sample(random), "{random}");
    }
}

#[test]
fn sampling_accepts_exactly_the_configured_share() {
    for (percentage, expected) in [
        (30.0, 3_000),
        (50.0, 5_000),
        (12.5, 1_250),
        (0.01, 1),
        (99.99, 9_999),
    ] {
        let fault = fault_with_percentage(percentage);
        let accepted = evenly_spaced(10_000).filter(|&r| fault.sample(r)).count();
        assert_eq!(accepted, expected, "{percentage}%");
    }
}

#[test]
fn sampling_accepts_the_low_end_of_the_range() {
    // Monotone: every accepted input is below every rejected one, so there is one threshold.
    let fault = fault_with_percentage(30.0);
    let threshold = (u64::MAX as f64 * 0.3) as u64;
    assert!(fault.sample(threshold - (1 << 20)));
    assert!(!fault.sample(threshold + (1 << 20)));
}

#[test]
fn rules_expire_at_their_expiry_time() {
    let mut policy = crate::parse_value(&example());
    boifi_policy::status::stamp(&mut policy, 10_000, None);
    let compiled = boifi_policy::compile(&policy).unwrap();
    let rule = &compiled.rules()[0];
    let expires = 10_000 + 300 * 1000;
    assert_eq!(rule.expires_at_ms(), Some(expires));
    assert!(rule.is_active(10_000));
    assert!(rule.is_active(expires - 1));
    assert!(!rule.is_active(expires));
    assert!(!rule.is_active(u64::MAX));

    let forever = rule_with_match(json!({}));
    assert!(forever.is_active(u64::MAX), "no status: runs until deleted");
}
