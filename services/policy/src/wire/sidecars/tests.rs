use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn reviews() -> SidecarIdentity {
    SidecarIdentity {
        pod: "reviews-v2-7d9f".into(),
        namespace: "demo".into(),
        workload: "reviews-v2".into(),
        labels: Some(labels(&[("app", "reviews"), ("version", "v2")])),
    }
}

#[test]
fn the_identity_header_has_the_pinned_shape_and_reads_back() {
    let header = reviews().header_value().unwrap();
    assert_eq!(
        header.value,
        r#"{"pod":"reviews-v2-7d9f","namespace":"demo","workload":"reviews-v2","labels":{"app":"reviews","version":"v2"}}"#
    );
    assert!(!header.labels_dropped);
    assert_eq!(
        SidecarIdentity::parse_header(header.value.as_bytes()).unwrap(),
        reviews()
    );
    // Unknown labels are absent; fields a newer plugin may add are ignored.
    let unknown = SidecarIdentity {
        labels: None,
        ..reviews()
    };
    let value = unknown.header_value().unwrap().value;
    assert!(!value.contains("labels"), "{value}");
    let newer = br#"{"pod":"p","namespace":"n","workload":"w","zone":"a"}"#;
    assert_eq!(
        SidecarIdentity::parse_header(newer).unwrap().labels,
        None,
        "no labels given"
    );
}

#[test]
fn labels_that_do_not_fit_are_left_out_and_said_so() {
    let many: BTreeMap<String, String> = (0..=MAX_LABELS)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let long = labels(&[("k", &"v".repeat(MAX_LABEL_PART_LEN + 1))]);
    // 40 labels of 300 bytes each: every part is allowed, the whole is over 4 KiB.
    let large: BTreeMap<String, String> = (0..40)
        .map(|i| (format!("k{i}"), "v".repeat(300)))
        .collect();
    for labels in [many, long, large] {
        let identity = SidecarIdentity {
            labels: Some(labels),
            ..reviews()
        };
        let header = identity.header_value().unwrap();
        assert!(header.labels_dropped);
        assert!(header.value.len() <= MAX_SIDECAR_HEADER_BYTES);
        let back = SidecarIdentity::parse_header(header.value.as_bytes()).unwrap();
        assert_eq!(back.labels, None);
        assert_eq!(back.pod, identity.pod);
    }
}

#[test]
fn unusable_identities_are_refused_on_both_ends() {
    for identity in [
        SidecarIdentity::default(),
        SidecarIdentity {
            pod: "p".repeat(MAX_NAME_LEN + 1),
            ..reviews()
        },
        SidecarIdentity {
            namespace: "a\nb".into(),
            ..reviews()
        },
    ] {
        assert!(identity.header_value().is_err(), "{identity:?}");
        let forged = serde_json::to_vec(&identity).unwrap();
        assert!(SidecarIdentity::parse_header(&forged).is_err());
    }
    let too_large = format!(
        r#"{{"pod":"p","namespace":"n","workload":"w","x":"{}"}}"#,
        "a".repeat(MAX_SIDECAR_HEADER_BYTES)
    );
    assert!(matches!(
        SidecarIdentity::parse_header(too_large.as_bytes()),
        Err(ReportError::TooLarge {
            header: SIDECAR_HEADER,
            ..
        })
    ));
    for bad in [
        &b"not json"[..],
        b"{\"pod\":\"p\"}",
        b"{\"pod\":1,\"namespace\":\"n\",\"workload\":\"w\"}",
        b"[]",
        b"",
    ] {
        let err = SidecarIdentity::parse_header(bad).unwrap_err();
        assert!(err.to_string().starts_with(SIDECAR_HEADER), "{err}");
    }
    let many_labels = json!({"pod": "p", "namespace": "n", "workload": "w",
        "labels": (0..=MAX_LABELS).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()});
    assert!(SidecarIdentity::parse_header(many_labels.to_string().as_bytes()).is_err());
}

#[test]
fn injected_counts_have_the_pinned_shape_and_read_back() {
    let mut header = InjectedHeader::default();
    assert!(header.is_empty());
    assert!(header.push(
        "reviews-abort",
        FaultCounts {
            abort: 12,
            delay: 0
        }
    ));
    assert!(header.push(
        "b",
        FaultCounts {
            abort: 0,
            delay: u64::MAX
        }
    ));
    assert_eq!(header.len(), 2);
    let value = header.finish().unwrap();
    assert_eq!(
        value,
        format!(r#"{{"reviews-abort":[12,0],"b":[0,{}]}}"#, u64::MAX)
    );
    let back = parse_injected(value.as_bytes()).unwrap();
    assert_eq!(
        back["reviews-abort"],
        FaultCounts {
            abort: 12,
            delay: 0
        }
    );
    assert_eq!(back["b"].delay, u64::MAX);
    assert_eq!(InjectedHeader::default().finish(), None, "left out");
}

#[test]
fn injected_headers_are_bounded_on_both_ends() {
    let mut header = InjectedHeader::default();
    for i in 0..MAX_INJECTED_POLICIES {
        assert!(header.push(&format!("p{i}"), FaultCounts::default()));
    }
    assert!(!header.push("one-more", FaultCounts::default()));
    let full = header.finish().unwrap();
    assert_eq!(parse_injected(full.as_bytes()).unwrap().len(), 64);

    // Names that need escaping fill the bytes before the count.
    let mut header = InjectedHeader::default();
    let escaped = "\u{1}".repeat(200);
    let mut pushed = 0;
    while header.push(&format!("{escaped}{pushed}"), FaultCounts::default()) {
        pushed += 1;
    }
    assert!(pushed < MAX_INJECTED_POLICIES);
    assert!(header.finish().unwrap().len() <= MAX_INJECTED_HEADER_BYTES);

    let sixty_five: serde_json::Map<String, serde_json::Value> = (0..=MAX_INJECTED_POLICIES)
        .map(|i| (format!("p{i}"), json!([1, 2])))
        .collect();
    let oversized = format!(r#"{{"p":[1,2],"x":"{}"}}"#, "a".repeat(8192));
    for bad in [
        serde_json::Value::Object(sixty_five).to_string(),
        oversized,
        r#"{"Bad_Name":[1,2]}"#.to_owned(),
        r#"{"p":[1]}"#.to_owned(),
        r#"{"p":[1,2,3]}"#.to_owned(),
        r#"{"p":[-1,2]}"#.to_owned(),
        r#"{"p":{"abort":1,"delay":2}}"#.to_owned(),
        "[]".to_owned(),
        "{".to_owned(),
    ] {
        let err = parse_injected(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with(INJECTED_HEADER), "{bad}: {err}");
    }
}

#[test]
fn sidecars_queries_round_trip_and_name_bad_parameters() {
    let query = SidecarsQuery {
        namespace: Some("demo".into()),
        service: Some("reviews".into()),
        limit: Some(50),
        continue_token: Some("a/b c".into()),
    };
    assert_eq!(
        query.encode(),
        "namespace=demo&service=reviews&continue=a%2Fb%20c&limit=50"
    );
    assert_eq!(SidecarsQuery::parse(&query.encode()).unwrap(), query);
    let all = SidecarsQuery::parse("").unwrap();
    assert_eq!(all, SidecarsQuery::default());
    assert_eq!(all.page_size(), MAX_SIDECARS_PAGE);
    assert_eq!(
        SidecarsQuery::parse("namespace=*&continue=")
            .unwrap()
            .continue_token,
        None
    );
    let fields = |q: &str| -> Vec<&'static str> {
        SidecarsQuery::parse(q)
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect()
    };
    assert_eq!(fields("limit=0"), ["limit"]);
    assert_eq!(fields("limit=10001"), ["limit"]);
    assert_eq!(fields("limit=x&namespace=%01"), ["namespace", "limit"]);
    assert_eq!(
        fields(&format!("continue={}", "a".repeat(2049))),
        ["continue"]
    );
    assert_eq!(fields("policy=x"), ["query"]);
    assert_eq!(fields("limit=1&limit=2"), ["query"]);
    assert_eq!(
        SidecarsQuery::parse("limit=10000").unwrap().page_size(),
        10_000
    );
}

#[test]
fn the_sidecars_answer_has_the_pinned_shape() {
    let seen = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
    let page = SidecarsPage {
        replica: "boifi-sse-broadcaster-0".into(),
        revision: 42,
        halted: false,
        sidecars: vec![SidecarStatus {
            pod: "reviews-v2-7d9f".into(),
            namespace: "demo".into(),
            workload: "reviews-v2".into(),
            labels: Some(labels(&[("app", "reviews"), ("version", "v2")])),
            revision: 42,
            state: SidecarState::Current,
            behind_seconds: 0.0,
            first_seen: seen,
            last_seen: seen + Duration::from_secs(1),
            polling: true,
            injected: [(
                "reviews-abort".to_owned(),
                FaultCounts {
                    abort: 12,
                    delay: 0,
                },
            )]
            .into_iter()
            .collect(),
        }],
        continue_token: Some("next".into()),
    };
    let value = serde_json::to_value(&page).unwrap();
    assert_eq!(
        value,
        json!({"replica": "boifi-sse-broadcaster-0", "revision": 42, "halted": false,
            "sidecars": [{"pod": "reviews-v2-7d9f", "namespace": "demo", "workload": "reviews-v2",
                "labels": {"app": "reviews", "version": "v2"},
                "revision": 42, "state": "current", "behind_seconds": 0.0,
                "first_seen": "2024-05-01T12:00:00.123Z", "last_seen": "2024-05-01T12:00:01.123Z",
                "polling": true, "injected": {"reviews-abort": {"abort": 12, "delay": 0}}}],
            "continue": "next"})
    );
    let back: SidecarsPage = serde_json::from_value(value).unwrap();
    assert_eq!(back, page);
    assert_eq!(back.sidecars[0].identity().labels, page.sidecars[0].labels);
    let last = SidecarsPage {
        continue_token: None,
        sidecars: vec![],
        ..page
    };
    assert!(!serde_json::to_string(&last).unwrap().contains("continue"));
    assert_eq!(SidecarState::Behind.name(), "behind");
    assert!(serde_json::from_str::<SidecarStatus>(
        r#"{"pod":"p","namespace":"n","workload":"w","revision":1,"state":"current","behind_seconds":0,"first_seen":"yesterday","last_seen":"2024-05-01T12:00:00Z","polling":false}"#
    )
    .is_err());
}
