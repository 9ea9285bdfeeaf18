use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::*;
use crate::{compile, Policy, Selector, Workload};

const POLICY: &str = r#"{"metadata":{"name":"p1"},"spec":{"selector":{"namespace":"demo"},"rules":[{"match":{},"fault":{"abort":{"httpStatus":503}}}]},"status":{"revision":3,"created_at_ms":1,"updated_at_ms":1,"rules":[{"expires_at_ms":9,"expired":false}]}}"#;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(namespace: &str, service: &str, pairs: &[(&str, &str)]) -> Selector {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Selector {
        namespace: opt(namespace),
        service: opt(service),
        labels: labels(pairs),
    }
}

fn filter(namespace: Option<&str>, service: Option<&str>, labels: Option<&str>) -> Filter {
    Filter::parse(namespace, service, labels).expect("valid filter")
}

fn fields(query: &str) -> Vec<&'static str> {
    StreamQuery::parse(query)
        .unwrap_err()
        .into_iter()
        .map(|p| p.field)
        .collect()
}

#[test]
fn the_expiry_boundary_is_exclusive() {
    assert!(rule_active(None, u64::MAX));
    assert!(rule_active(Some(1_000), 999));
    assert!(
        !rule_active(Some(1_000), 1_000),
        "expired from that instant on"
    );
    assert!(!rule_active(Some(0), 0));
}

#[test]
fn event_data_has_the_pinned_shape() {
    assert_eq!(
        json(&DeleteData {
            name: "reviews-abort".into()
        }),
        r#"{"name":"reviews-abort"}"#
    );
    assert_eq!(json(&HaltData { halted: true }), r#"{"halted":true}"#);
    assert_eq!(
        json(&ResyncData {
            reason: ResyncData::LAGGED.into()
        }),
        r#"{"reason":"lagged"}"#
    );
    let empty: SnapshotData<Policy> = SnapshotData {
        revision: 41,
        halted: false,
        policies: vec![],
    };
    assert_eq!(
        json(&empty),
        r#"{"revision":41,"halted":false,"policies":[]}"#
    );
    let names: Vec<&str> = [
        EventKind::Snapshot,
        EventKind::Policy,
        EventKind::Delete,
        EventKind::Halt,
        EventKind::Resync,
    ]
    .map(EventKind::name)
    .to_vec();
    assert_eq!(names, ["snapshot", "policy", "delete", "halt", "resync"]);
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("serializable")
}

#[test]
fn snapshots_round_trip_typed_and_raw() {
    let policy: Policy = serde_json::from_str(POLICY).unwrap();
    let typed = SnapshotData {
        revision: 7,
        halted: true,
        policies: vec![policy.clone(), policy.clone()],
    };
    let text = serde_json::to_string(&typed).unwrap();
    assert_eq!(
        serde_json::from_str::<SnapshotData<Policy>>(&text).unwrap(),
        typed
    );
    // Written from policies serialized once (as the broadcaster does), read per policy (as
    // the plugin does): the same bytes as the typed writer, the same policies back.
    let cached: Vec<Box<RawValue>> = vec![serde_json::value::to_raw_value(&policy).unwrap(); 2];
    let spliced = SnapshotData {
        revision: 7,
        halted: true,
        policies: cached.iter().map(|p| &**p).collect::<Vec<&RawValue>>(),
    };
    assert_eq!(serde_json::to_string(&spliced).unwrap(), text);
    let raw: SnapshotData<&RawValue> = serde_json::from_str(&text).unwrap();
    assert_eq!((raw.revision, raw.halted, raw.policies.len()), (7, true, 2));
    for each in raw.policies {
        assert_eq!(each.get(), POLICY);
        let back: Policy = serde_json::from_str(each.get()).unwrap();
        assert_eq!(back, policy);
        compile(&back).expect("still valid");
    }
    // Readers take a snapshot without `halted` or `policies`.
    let bare: SnapshotData<&RawValue> = serde_json::from_str(r#"{"revision":1}"#).unwrap();
    assert_eq!(
        (bare.revision, bare.halted, bare.policies.len()),
        (1, false, 0)
    );
    assert!(serde_json::from_str::<SnapshotData<&RawValue>>(r#"{"halted":true}"#).is_err());
}

#[test]
fn frames_read_back_as_written() {
    let data = br#"{"revision":41,"halted":false,"policies":[]}"#;
    let frame = sse::event(41, EventKind::Snapshot.name(), data);
    assert_eq!(
        frame,
        b"id: 41\nevent: snapshot\ndata: {\"revision\":41,\"halted\":false,\"policies\":[]}\n\n"
    );
    let mut body = sse::retry(3000);
    body.extend(sse::comment("ping"));
    body.extend(&frame);
    body.extend(sse::event(42, "halt", br#"{"halted":true}"#));
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        sse::last_event_data(&body, "snapshot").as_deref(),
        Some(std::str::from_utf8(data).unwrap())
    );
    assert_eq!(
        sse::last_event_data(&body, "halt").as_deref(),
        Some(r#"{"halted":true}"#)
    );
    assert_eq!(sse::comment("ping"), b": ping\n\n");
    assert_eq!(sse::retry(3000), b"retry: 3000\n\n");
    assert_eq!(sse::id_only("timeout", 9), b": timeout\nid: 9\n\n");
    assert_eq!(
        sse::event_without_id("resync", br#"{"reason":"lagged"}"#),
        b"event: resync\ndata: {\"reason\":\"lagged\"}\n\n"
    );
    let timeout = String::from_utf8(sse::id_only("timeout", 9)).unwrap();
    assert_eq!(sse::last_event_data(&timeout, "snapshot"), None);
}

#[test]
fn sse_reading_follows_the_spec() {
    // Last event of the type wins; CRLF; multi-line data; other events and fields ignored; a
    // body that ends without a blank line still ends its event.
    let body = "retry: 1000\r\nevent: snapshot\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n\
                event: other\ndata: x\n\n:comment\nevent: snapshot\ndata:second";
    assert_eq!(
        sse::last_event_data(body, "snapshot").as_deref(),
        Some("second")
    );
    assert_eq!(sse::last_event_data(body, "other").as_deref(), Some("x"));
    assert_eq!(
        sse::last_event_data("event: snapshot\ndata: {\"a\":\ndata: 1}\n\n", "snapshot").as_deref(),
        Some("{\"a\":\n1}")
    );
    assert_eq!(
        sse::last_event_data("data: no event type\n\n", "snapshot"),
        None
    );
    assert_eq!(
        sse::last_event_data("event: snapshot\n\n", "snapshot"),
        None,
        "no data"
    );
    assert_eq!(sse::last_event_data("", "snapshot"), None);
}

#[test]
fn queries_round_trip() {
    let plugin = StreamQuery {
        filter: Filter {
            namespace: Some("demo ns".into()),
            service: Some("reviews".into()),
            labels: Some(labels(&[("app", "reviews"), ("version", "v2")])),
        },
        mode: Mode::Poll,
        last_event_id: None,
        revision: Some(42),
        wait_ms: Some(30_000),
    };
    assert_eq!(
        plugin.encode(),
        "mode=poll&wait_ms=30000&revision=42&namespace=demo%20ns&service=reviews&labels=app:reviews,version:v2"
    );
    let odd = StreamQuery {
        filter: Filter {
            namespace: Some("a&b=c+d%25é/?#".into()),
            service: Some("~x.y_z-0".into()),
            labels: Some(labels(&[("k+1", "v 1"), ("example.com/x", "%ff&")])),
        },
        mode: Mode::Stream,
        last_event_id: Some(u64::MAX),
        revision: Some(u64::MAX),
        wait_ms: None,
    };
    let everything_unknown = StreamQuery::default();
    assert_eq!(everything_unknown.encode(), "");
    let no_labels = StreamQuery {
        filter: Filter {
            labels: Some(BTreeMap::new()),
            ..Filter::default()
        },
        ..StreamQuery::default()
    };
    assert_eq!(no_labels.encode(), "labels=");
    for query in [plugin, odd, everything_unknown, no_labels] {
        let text = query.encode();
        assert_eq!(StreamQuery::parse(&text), Ok(query), "{text}");
    }
}

#[test]
fn a_workload_sends_only_what_is_certain() {
    let workload = |name: &str, pairs: &[(&str, &str)]| Workload {
        namespace: "demo".into(),
        name: name.into(),
        labels: labels(pairs),
    };
    let full = Filter::for_workload(&workload("reviews-v2", &[("app", "reviews")]), true);
    assert_eq!(
        full,
        filter(Some("demo"), Some("reviews-v2"), Some("app:reviews"))
    );
    // Unknown labels: the service name alone could hide policies selecting the `app` label.
    let unknown = Filter::for_workload(&workload("reviews-v2", &[("app", "reviews")]), false);
    assert_eq!(unknown, filter(Some("demo"), None, None));
    // Known but none: service, and no labels parameter.
    let bare = Filter::for_workload(&workload("ratings", &[]), true);
    assert_eq!(bare, filter(Some("demo"), Some("ratings"), None));
    // Labels the syntax cannot carry: neither labels nor service.
    let odd = Filter::for_workload(&workload("x", &[("app", "a,b")]), true);
    assert_eq!(odd, filter(Some("demo"), None, None));
    assert_eq!(
        Filter::for_workload(&Workload::default(), true),
        Filter::default()
    );
    // Whatever a workload sends, the broadcaster reads the same filter back.
    for sent in [full, unknown, bare, odd] {
        let query = StreamQuery {
            filter: sent,
            ..StreamQuery::default()
        };
        assert_eq!(StreamQuery::parse(&query.encode()), Ok(query));
    }
}

#[test]
fn form_decoding_as_the_broadcaster_always_did() {
    let namespace = |query: &str| {
        StreamQuery::parse(query)
            .expect("valid")
            .filter
            .namespace
            .unwrap_or_default()
    };
    assert_eq!(namespace("namespace=a+b"), "a b");
    assert_eq!(namespace("namespace=a%2Bb%2fc"), "a+b/c");
    assert_eq!(namespace("namespace=100%zz%4"), "100%zz%4");
    assert_eq!(namespace("namespace=%C3%A9"), "é");
    assert_eq!(namespace("namespace=%ff"), "\u{fffd}");
    assert_eq!(namespace("&&namespace=x&&"), "x");
    assert_eq!(namespace("namespace=a=b"), "a=b");
    assert_eq!(namespace("namespace"), "", "no `=`: empty, i.e. unknown");
    assert_eq!(namespace("na%6Despace=y"), "y", "names are decoded too");
    assert_eq!(
        StreamQuery::parse("mode=poll&revision=5&wait_ms=250"),
        Ok(StreamQuery {
            mode: Mode::Poll,
            revision: Some(5),
            wait_ms: Some(250),
            ..StreamQuery::default()
        })
    );
}

#[test]
fn bad_queries_name_every_field() {
    assert_eq!(
        fields("mode=push&revision=x&wait_ms=-1&labels=v2"),
        ["labels", "revision", "wait_ms", "mode"]
    );
    assert_eq!(fields("wait_ms=10"), ["wait_ms"]);
    assert_eq!(fields("wait_ms=10&mode=stream"), ["wait_ms"]);
    assert_eq!(fields("revision=1&last_event_id=2"), ["revision"]);
    assert_eq!(fields("last_event_id=1e3"), ["last_event_id"]);
    assert!(StreamQuery::parse("revision=1&last_event_id=1").is_ok());
    assert_eq!(fields(&"a".repeat(MAX_QUERY_LEN + 1)), ["query"]);
    assert!(StreamQuery::parse(&format!("namespace={}", "a".repeat(MAX_NAME_LEN))).is_ok());
    // An unknown or repeated parameter is reported alone, with the message the broadcaster's
    // HTTP framework gave.
    assert_eq!(
        StreamQuery::parse("mode=push&servce=reviews"),
        Err(vec![FieldProblem::new(
            "query",
            "unknown field `servce`, expected one of `namespace`, `service`, `labels`, `mode`, \
             `last_event_id`, `revision`, `wait_ms`"
        )])
    );
    assert_eq!(
        StreamQuery::parse("service=a&labels=x&service=b"),
        Err(vec![FieldProblem::new(
            "query",
            "duplicate field `service`"
        )])
    );
    let problem = &StreamQuery::parse("mode=p%0Aoll").unwrap_err()[0];
    assert_eq!(
        problem.message,
        "expected `stream` or `poll`, found `p\\noll`"
    );
}

#[test]
fn filter_values_name_their_field() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let problems = Filter::parse(Some(&long), Some("a\nb"), Some("version")).unwrap_err();
    let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
    assert_eq!(fields, ["namespace", "service", "labels"]);
    assert!(problems[2].message.contains("key:value"), "{problems:?}");
    for bad in [":v", "a:1,a:2"] {
        assert_eq!(
            Filter::parse(None, None, Some(bad)).unwrap_err()[0].field,
            "labels"
        );
    }
    let part = "k".repeat(MAX_LABEL_PART_LEN + 1);
    let problems = Filter::parse(None, None, Some(&format!("{part}:v"))).unwrap_err();
    assert!(problems[0].message.contains("at most"), "{problems:?}");
    let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}:v")).collect();
    let problems = Filter::parse(None, None, Some(&many.join(","))).unwrap_err();
    assert!(problems[0].message.contains("at most"), "{problems:?}");
    assert!(Filter::parse(None, None, Some(&many[1..].join(","))).is_ok());
}

#[test]
fn unknown_parts_match_anything() {
    let everything = Filter::default();
    assert!(everything.admits(&selector("demo", "reviews", &[("version", "v2")])));
    assert!(everything.admits(&selector("", "", &[])));
    assert_eq!(filter(Some(""), Some("*"), None), Filter::default());
}

#[test]
fn namespace_and_service_narrow() {
    let reviews = filter(Some("demo"), Some("reviews"), None);
    assert!(reviews.admits(&selector("demo", "reviews", &[])));
    assert!(reviews.admits(&selector("", "reviews", &[])));
    assert!(reviews.admits(&selector("demo", "", &[])));
    assert!(reviews.admits(&selector("", "*", &[])));
    assert!(!reviews.admits(&selector("demo", "ratings", &[])));
    assert!(!reviews.admits(&selector("prod", "reviews", &[])));
    // Labels are unknown, so a label selector may still match.
    assert!(reviews.admits(&selector("demo", "reviews", &[("version", "v2")])));
}

#[test]
fn given_labels_are_the_complete_set() {
    let v2 = filter(None, Some("reviews"), Some("version:v2,team:a"));
    assert!(v2.admits(&selector("", "reviews", &[("version", "v2")])));
    assert!(v2.admits(&selector(
        "",
        "reviews",
        &[("version", "v2"), ("team", "a")]
    )));
    assert!(!v2.admits(&selector("", "reviews", &[("version", "v1")])));
    assert!(!v2.admits(&selector("", "reviews", &[("tier", "x")])));
    let none = filter(None, None, Some(""));
    assert!(none.admits(&selector("", "", &[])));
    assert!(!none.admits(&selector("", "", &[("version", "v2")])));
}

#[test]
fn app_label_counts_as_service_name() {
    let by_app = filter(Some("demo"), Some("reviews-v2"), Some("app:reviews"));
    assert!(by_app.admits(&selector("demo", "reviews", &[])));
    assert!(by_app.admits(&selector("demo", "reviews-v2", &[])));
    assert!(!by_app.admits(&selector("demo", "ratings", &[])));
}

/// What an index of clients relies on: a filter admits a selector only when the selector's
/// required namespace and service are among the filter's keys (or the filter has none).
#[test]
fn admitted_selectors_fit_the_filter_keys() {
    let mut checked = 0;
    for namespace in [None, Some(""), Some("demo"), Some("prod")] {
        for service in [None, Some(""), Some("reviews"), Some("reviews-v1")] {
            for labels in [
                None,
                Some(labels(&[])),
                Some(labels(&[("app", "reviews")])),
                Some(labels(&[("app", "")])),
                Some(labels(&[("app", "ratings"), ("version", "v2")])),
            ] {
                let filter = Filter {
                    namespace: namespace.map(str::to_owned),
                    service: service.map(str::to_owned),
                    labels,
                };
                for sel_ns in ["", "*", "demo", "prod"] {
                    for sel_svc in ["", "*", "reviews", "reviews-v1", "ratings"] {
                        for sel_labels in [&[][..], &[("version", "v2")][..]] {
                            let selector = selector(sel_ns, sel_svc, sel_labels);
                            if !filter.admits(&selector) {
                                continue;
                            }
                            checked += 1;
                            if let (Some(required), Some(key)) =
                                (selector.required_namespace(), filter.namespace_key())
                            {
                                assert_eq!(required, key, "{filter:?} {selector:?}");
                            }
                            if let (Some(required), Some((name, app))) =
                                (selector.required_service(), filter.service_keys())
                            {
                                assert!(
                                    required == name || Some(required) == app,
                                    "{filter:?} {selector:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
    // The keys narrow where they can.
    let sidecar = filter(
        Some("demo"),
        Some("reviews-v1"),
        Some("app:reviews,version:v1"),
    );
    assert_eq!(sidecar.namespace_key(), Some("demo"));
    assert_eq!(
        sidecar.service_keys(),
        Some(("reviews-v1", Some("reviews")))
    );
    assert_eq!(
        filter(None, Some("reviews"), None).service_keys(),
        Some(("reviews", None))
    );
    assert_eq!(filter(Some("demo"), None, None).service_keys(), None);
}
