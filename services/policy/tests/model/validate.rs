use boifi_policy::limits::*;
use boifi_policy::{compile, Fault};
use serde_json::{json, Value};

use crate::{check, example, fields, parse_value, remove, set};

/// One validation rule: `bad` values must each give exactly one error at `field`, `good`
/// values must pass. Values are set at `pointer` in the example policy.
struct Case {
    rule: &'static str,
    pointer: &'static str,
    field: &'static str,
    bad: Vec<Value>,
    good: Vec<Value>,
}

fn header_matchers(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"name": format!("x-h{i}"), "exact": "v"}))
        .collect()
}

fn object(n: usize, prefix: &str) -> Value {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), json!("v")))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn rules(n: usize) -> Value {
    let rule = example()["spec"]["rules"][0].clone();
    Value::Array(vec![rule; n])
}

fn nested(depth: usize) -> String {
    format!("{}a{}", "(".repeat(depth), ")".repeat(depth))
}

fn cases() -> Vec<Case> {
    let long = |n: usize| json!("a".repeat(n));
    vec![
        Case {
            rule: "name is a DNS label of 1-63 characters",
            pointer: "/metadata/name",
            field: "metadata.name",
            bad: vec![
                json!(""),
                long(64),
                json!("Reviews"),
                json!("-reviews"),
                json!("reviews-"),
                json!("re_views"),
                json!("re.views"),
            ],
            good: vec![json!("a"), long(63), json!("reviews-v2"), json!("9lives")],
        },
        Case {
            rule: "version is at most 64 characters",
            pointer: "/metadata/version",
            field: "metadata.version",
            bad: vec![long(65)],
            good: vec![long(64), json!("")],
        },
        Case {
            rule: "1 to 64 rules",
            pointer: "/spec/rules",
            field: "spec.rules",
            bad: vec![rules(0), rules(MAX_RULES + 1)],
            good: vec![rules(1), rules(MAX_RULES)],
        },
        Case {
            rule: "at most 16 header matchers per rule",
            pointer: "/spec/rules/0/match/headers",
            field: "spec.rules[0].match.headers",
            bad: vec![header_matchers(MAX_HEADER_MATCHERS + 1)],
            good: vec![header_matchers(MAX_HEADER_MATCHERS), json!([])],
        },
        Case {
            rule: "header names are non-empty HTTP tokens",
            pointer: "/spec/rules/0/match/headers/0/name",
            field: "spec.rules[0].match.headers[0].name",
            bad: vec![
                json!(""),
                json!("x user"),
                json!("x:user"),
                json!(":"),
                json!("é"),
            ],
            good: vec![
                json!("X-User"),
                json!(":authority"),
                json!("x_!#$%&'*+.^`|~1"),
            ],
        },
        Case {
            rule: "header matchers have exactly one of exact/prefix/regex",
            pointer: "/spec/rules/0/match/headers/0",
            field: "spec.rules[0].match.headers[0]",
            bad: vec![
                json!({"name": "x-user"}),
                json!({"name": "x-user", "exact": "a", "regex": "a"}),
            ],
            good: vec![
                json!({"name": "x-user", "prefix": "a"}),
                json!({"name": "x-user", "regex": "a"}),
            ],
        },
        Case {
            rule: "method matchers have exactly one of exact/prefix/regex",
            pointer: "/spec/rules/0/match/method",
            field: "spec.rules[0].match.method",
            bad: vec![json!({}), json!({"exact": "GET", "prefix": "G"})],
            good: vec![json!({"prefix": "G"}), json!({"regex": "GET|HEAD"})],
        },
        Case {
            rule: "path matchers have exactly one of exact/prefix/regex",
            pointer: "/spec/rules/0/match/path",
            field: "spec.rules[0].match.path",
            bad: vec![
                json!({}),
                json!({"exact": "/", "prefix": "/", "regex": "/"}),
            ],
            good: vec![json!({"exact": "/"})],
        },
        Case {
            rule: "exact strings are bounded",
            pointer: "/spec/rules/0/match/path",
            field: "spec.rules[0].match.path.exact",
            bad: vec![json!({"exact": "a".repeat(MAX_STRING_LEN + 1)})],
            good: vec![json!({"exact": "a".repeat(MAX_STRING_LEN)})],
        },
        Case {
            rule: "prefix strings are bounded",
            pointer: "/spec/rules/0/match/headers/0",
            field: "spec.rules[0].match.headers[0].prefix",
            bad: vec![json!({"name": "x-user", "prefix": "a".repeat(MAX_STRING_LEN + 1)})],
            good: vec![json!({"name": "x-user", "prefix": "a".repeat(MAX_STRING_LEN)})],
        },
        Case {
            rule: "regexes are valid, at most 1 KiB, bounded in compiled size and nesting",
            pointer: "/spec/rules/0/match/method",
            field: "spec.rules[0].match.method.regex",
            bad: vec![
                json!({"regex": "("}),
                json!({"regex": "a)|(b"}),
                json!({"regex": "[z-a]"}),
                json!({"regex": "a".repeat(MAX_REGEX_LEN + 1)}),
                json!({"regex": "(?:a{1000}){1000}"}),
                json!({"regex": nested(MAX_REGEX_NEST as usize + 1)}),
                json!({"regex": r"\pL"}),
                json!({"regex": "(?=a)"}),
            ],
            good: vec![
                json!({"regex": "a".repeat(MAX_REGEX_LEN)}),
                json!({"regex": "a{100}"}),
                json!({"regex": nested(MAX_REGEX_NEST as usize - 2)}),
                json!({"regex": r"(?i)get|\w+\d*\s?"}),
                json!({"regex": ""}),
            ],
        },
        Case {
            rule: "fault has a delay or an abort",
            pointer: "/spec/rules/0/fault",
            field: "spec.rules[0].fault",
            bad: vec![json!({}), json!({"percentage": 10, "duration_seconds": 5})],
            good: vec![
                json!({"delay": {"fixed_delay_ms": 1}}),
                json!({"abort": {"httpStatus": 500}}),
            ],
        },
        Case {
            rule: "percentage is 0-100",
            pointer: "/spec/rules/0/fault/percentage",
            field: "spec.rules[0].fault.percentage",
            bad: vec![json!(-0.001), json!(100.001), json!(1e300)],
            good: vec![json!(0), json!(100), json!(12.5), json!(0.001)],
        },
        Case {
            rule: "fixed delay is at most an hour",
            pointer: "/spec/rules/0/fault/delay/fixed_delay_ms",
            field: "spec.rules[0].fault.delay.fixed_delay_ms",
            bad: vec![json!(MAX_DELAY_MS + 1), json!(u64::MAX)],
            good: vec![json!(MAX_DELAY_MS), json!(0)],
        },
        Case {
            rule: "start delay is at most an hour",
            pointer: "/spec/rules/0/fault/start_delay_ms",
            field: "spec.rules[0].fault.start_delay_ms",
            bad: vec![json!(MAX_DELAY_MS + 1)],
            good: vec![json!(MAX_DELAY_MS)],
        },
        Case {
            rule: "duration is at most 30 days",
            pointer: "/spec/rules/0/fault/duration_seconds",
            field: "spec.rules[0].fault.duration_seconds",
            bad: vec![json!(MAX_DURATION_SECONDS + 1), json!(u64::MAX)],
            good: vec![json!(MAX_DURATION_SECONDS), json!(0)],
        },
        Case {
            rule: "abort status is 200-599",
            pointer: "/spec/rules/0/fault/abort/httpStatus",
            field: "spec.rules[0].fault.abort.httpStatus",
            bad: vec![json!(0), json!(199), json!(600)],
            good: vec![json!(200), json!(599)],
        },
        Case {
            rule: "abort gRPC status is an error code by name, as in Istio",
            pointer: "/spec/rules/0/fault/abort/grpcStatus",
            field: "spec.rules[0].fault.abort.grpcStatus",
            bad: vec![json!("OK"), json!("unavailable"), json!("14"), json!("")],
            good: vec![
                json!("UNAVAILABLE"),
                json!("DEADLINE_EXCEEDED"),
                json!("INTERNAL"),
            ],
        },
        Case {
            rule: "a policy's cap on held requests is 1-100000",
            pointer: "/spec/max_held_requests",
            field: "spec.max_held_requests",
            bad: vec![json!(0), json!(MAX_HELD_REQUESTS + 1)],
            good: vec![json!(1), json!(MAX_HELD_REQUESTS)],
        },
        Case {
            rule: "abort body is bounded",
            pointer: "/spec/rules/0/fault/abort/body",
            field: "spec.rules[0].fault.abort.body",
            bad: vec![long(MAX_ABORT_BODY_LEN + 1)],
            good: vec![long(MAX_ABORT_BODY_LEN), json!("")],
        },
        Case {
            rule: "abort header count is bounded",
            pointer: "/spec/rules/0/fault/abort/headers",
            field: "spec.rules[0].fault.abort.headers",
            bad: vec![object(MAX_ABORT_HEADERS + 1, "x-")],
            good: vec![object(MAX_ABORT_HEADERS, "x-"), json!({})],
        },
        Case {
            rule: "abort header names are HTTP tokens",
            pointer: "/spec/rules/0/fault/abort/headers",
            field: "spec.rules[0].fault.abort.headers",
            bad: vec![
                json!({"": "v"}),
                json!({"x k": "v"}),
                json!({":status": "500"}),
            ],
            good: vec![json!({"Retry-After": "1"})],
        },
        Case {
            rule: "abort header values are bounded and free of control characters",
            pointer: "/spec/rules/0/fault/abort/headers",
            field: "spec.rules[0].fault.abort.headers.x-k",
            bad: vec![
                json!({"x-k": "a\r\nx-injected: 1"}),
                json!({"x-k": "\u{0}"}),
                json!({"x-k": "a".repeat(MAX_STRING_LEN + 1)}),
            ],
            good: vec![json!({"x-k": "a\tb c é"}), json!({"x-k": ""})],
        },
        Case {
            rule: "selector label count is bounded",
            pointer: "/spec/selector/labels",
            field: "spec.selector.labels",
            bad: vec![object(MAX_SELECTOR_LABELS + 1, "l"), json!({"": "v"})],
            good: vec![object(MAX_SELECTOR_LABELS, "l"), json!({})],
        },
        Case {
            rule: "selector label values are bounded",
            pointer: "/spec/selector/labels",
            field: "spec.selector.labels.version",
            bad: vec![json!({"version": "a".repeat(MAX_STRING_LEN + 1)})],
            good: vec![json!({"version": "a".repeat(MAX_STRING_LEN)})],
        },
        Case {
            rule: "selector namespace is bounded; * and empty are allowed",
            pointer: "/spec/selector/namespace",
            field: "spec.selector.namespace",
            bad: vec![long(MAX_STRING_LEN + 1)],
            good: vec![json!("*"), json!(""), json!(null)],
        },
        Case {
            rule: "selector service is bounded; * and empty are allowed",
            pointer: "/spec/selector/service",
            field: "spec.selector.service",
            bad: vec![long(MAX_STRING_LEN + 1)],
            good: vec![json!("*"), json!(""), json!(null)],
        },
    ]
}

#[test]
fn the_example_is_valid() {
    check(&example()).expect("the design brief's example is valid");
}

#[test]
fn every_rule_rejects_bad_values_and_accepts_good_ones() {
    for case in cases() {
        assert!(
            !case.bad.is_empty() && !case.good.is_empty(),
            "{}: needs both a failing and a passing case",
            case.rule
        );
        for bad in &case.bad {
            let mut doc = example();
            set(&mut doc, case.pointer, bad.clone());
            let errors = match check(&doc) {
                Ok(_) => panic!("{}: {} accepted", case.rule, short(bad)),
                Err(errors) => errors,
            };
            assert_eq!(
                fields(&errors),
                [case.field],
                "{}: {} gave {errors}",
                case.rule,
                short(bad)
            );
        }
        for good in &case.good {
            let mut doc = example();
            set(&mut doc, case.pointer, good.clone());
            if let Err(errors) = check(&doc) {
                panic!("{}: {} rejected: {errors}", case.rule, short(good));
            }
        }
    }
}

fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 80 {
        text.truncate(80);
        text.push('…');
    }
    text
}

#[test]
fn non_finite_percentages_are_rejected() {
    let mut policy = parse_value(&example());
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        policy.spec.rules[0].fault.percentage = Some(bad);
        let errors = compile(&policy).unwrap_err();
        assert_eq!(fields(&errors), ["spec.rules[0].fault.percentage"]);
    }
    policy.spec.rules[0].fault.percentage = None;
    let compiled = compile(&policy).expect("absent percentage is valid");
    assert_eq!(compiled.rules()[0].fault().percentage(), 100.0);
}

#[test]
fn rule_bodies_can_be_minimal() {
    let mut doc = example();
    remove(&mut doc, "/spec/rules/0/match");
    remove(&mut doc, "/spec/selector");
    remove(&mut doc, "/metadata/version");
    set(
        &mut doc,
        "/spec/rules/0/fault",
        json!({"abort": {"httpStatus": 503}}),
    );
    let compiled = check(&doc).expect("valid");
    assert_eq!(compiled.version(), None);
    assert_eq!(compiled.rules().len(), 1);
}

#[test]
fn several_errors_are_all_reported_in_document_order() {
    let mut doc = example();
    set(&mut doc, "/metadata/name", json!("Bad_Name"));
    set(&mut doc, "/spec/rules/0/match/method", json!({}));
    set(&mut doc, "/spec/rules/0/fault/percentage", json!(150));
    set(&mut doc, "/spec/rules/0/fault/abort/httpStatus", json!(700));
    let rule = json!({
        "match": {"headers": [
            {"name": "x-ok", "exact": "a"},
            {"name": "x-bad", "regex": "(unclosed"}
        ]},
        "fault": {"delay": {"fixed_delay_ms": 7_200_000}}
    });
    doc["spec"]["rules"]
        .as_array_mut()
        .unwrap()
        .extend([json!({"fault": {}}), rule]);

    let errors = check(&doc).unwrap_err();
    assert_eq!(
        fields(&errors),
        [
            "metadata.name",
            "spec.rules[0].match.method",
            "spec.rules[0].fault.percentage",
            "spec.rules[0].fault.abort.httpStatus",
            "spec.rules[1].fault",
            "spec.rules[2].match.headers[1].regex",
            "spec.rules[2].fault.delay.fixed_delay_ms",
        ],
        "{errors}"
    );
    let regex_error = &errors.errors[5].message;
    assert!(
        regex_error.starts_with("invalid regex: ") && !regex_error.contains('\n'),
        "{regex_error}"
    );
}

#[test]
fn status_expiry_is_carried_into_compiled_rules() {
    let mut policy = parse_value(&example());
    boifi_policy::status::stamp(&mut policy, 1_000_000, None);
    let compiled = compile(&policy).unwrap();
    assert_eq!(
        compiled.rules()[0].expires_at_ms(),
        Some(1_000_000 + 300_000)
    );

    policy.status = None;
    assert_eq!(compile(&policy).unwrap().rules()[0].expires_at_ms(), None);
}

#[test]
fn compiled_fault_exposes_what_the_plugin_needs() {
    let mut doc = example();
    set(&mut doc, "/spec/rules/0/fault/start_delay_ms", json!(250));
    set(
        &mut doc,
        "/spec/rules/0/fault/abort/headers",
        json!({"Retry-After": "3", "x-k": "v"}),
    );
    let compiled = check(&doc).unwrap();
    assert_eq!(compiled.name(), "reviews-abort");
    assert_eq!(compiled.version(), Some("1.0.0"));
    assert_eq!(compiled.selector().namespace.as_deref(), Some("demo"));
    let fault = compiled.rules()[0].fault();
    assert_eq!(fault.percentage(), 50.0);
    assert_eq!(fault.start_delay(), std::time::Duration::from_millis(250));
    assert_eq!(fault.delay(), Some(std::time::Duration::from_millis(200)));
    let abort = fault.abort().unwrap();
    assert_eq!(abort.status(), 503);
    assert_eq!(abort.body(), Some("optional"));
    assert_eq!(
        abort.headers(),
        [
            ("retry-after".to_string(), "3".to_string()),
            ("x-k".to_string(), "v".to_string())
        ]
    );

    let delay_only = Fault {
        abort: None,
        ..parse_value(&doc).spec.rules[0].fault.clone()
    };
    let mut policy = parse_value(&doc);
    policy.spec.rules[0].fault = delay_only;
    let compiled = compile(&policy).unwrap();
    assert!(compiled.rules()[0].fault().abort().is_none());
}

#[test]
fn rules_past_the_limit_are_not_checked() {
    let mut doc = example();
    set(&mut doc, "/spec/rules", rules(MAX_RULES + 2));
    set(
        &mut doc,
        &format!("/spec/rules/{MAX_RULES}/fault"),
        json!({}),
    );
    let errors = check(&doc).unwrap_err();
    assert_eq!(fields(&errors), ["spec.rules"]);
    assert!(errors.errors[0].message.contains("not checked"), "{errors}");
}

#[test]
fn abort_needs_a_status_and_derives_the_other_one() {
    let mut doc = example();
    remove(&mut doc, "/spec/rules/0/fault/abort/httpStatus");
    let errors = check(&doc).expect_err("no status");
    assert_eq!(fields(&errors), ["spec.rules[0].fault.abort"]);
    assert!(errors.errors[0].message.contains("httpStatus, grpcStatus"));

    set(
        &mut doc,
        "/spec/rules/0/fault/abort/grpcStatus",
        json!("DEADLINE_EXCEEDED"),
    );
    let policy = check(&doc).expect("gRPC status alone");
    let abort = policy.rules()[0].fault().abort().expect("abort");
    assert_eq!((abort.status(), abort.grpc_status()), (504, 4));

    remove(&mut doc, "/spec/rules/0/fault/abort/grpcStatus");
    set(&mut doc, "/spec/rules/0/fault/abort/httpStatus", json!(503));
    let policy = check(&doc).expect("HTTP status alone");
    let abort = policy.rules()[0].fault().abort().expect("abort");
    assert_eq!((abort.status(), abort.grpc_status()), (503, 14));

    set(
        &mut doc,
        "/spec/rules/0/fault/abort/grpcStatus",
        json!("NOT_FOUND"),
    );
    let policy = check(&doc).expect("both");
    let abort = policy.rules()[0].fault().abort().expect("abort");
    assert_eq!((abort.status(), abort.grpc_status()), (503, 5));
}

#[test]
fn sampling_defaults_to_request_and_is_checked() {
    use boifi_policy::Sampling;
    let mut doc = example();
    assert_eq!(check(&doc).expect("valid").sampling(), Sampling::Request);
    set(&mut doc, "/spec/sampling", json!("attempt"));
    let policy = check(&doc).expect("attempt");
    assert_eq!(policy.sampling(), Sampling::Attempt);
    assert_eq!(policy.max_held_requests(), None);
    set(&mut doc, "/spec/sampling", json!("per-request"));
    let errors = check(&doc).expect_err("unknown mode");
    assert_eq!(fields(&errors), ["spec.sampling"]);
}
