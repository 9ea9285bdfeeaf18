use std::time::{Duration, SystemTime};

use boifi_policy::wire::SidecarState;

use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// A live sidecar of `namespace/workload` (label `app: <workload>`) at `revision`.
fn sidecar(namespace: &str, pod: &str, workload: &str, revision: u64) -> SidecarStatus {
    SidecarStatus {
        pod: pod.into(),
        namespace: namespace.into(),
        workload: workload.into(),
        labels: Some(BTreeMap::from([("app".to_owned(), workload.to_owned())])),
        revision,
        state: SidecarState::Current,
        behind_seconds: 0.0,
        first_seen: at(0),
        last_seen: at(10),
        polling: true,
        injected: BTreeMap::new(),
    }
}

/// A sidecar of the `reviews` app, version `version`.
fn reviews(pod: &str, version: &str, revision: u64) -> SidecarStatus {
    let s = sidecar("demo", pod, &format!("reviews-{version}"), revision);
    with_label(with_label(s, "app", "reviews"), "version", version)
}

fn with_label(mut s: SidecarStatus, key: &str, value: &str) -> SidecarStatus {
    s.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    s
}

fn with_counts(mut s: SidecarStatus, policy: &str, abort: u64, delay: u64) -> SidecarStatus {
    s.injected
        .insert(policy.into(), FaultCounts { abort, delay });
    s
}

fn replica(name: &str, sidecars: Vec<SidecarStatus>) -> ReplicaRead {
    ReplicaRead {
        address: format!("{name}:8081"),
        outcome: Ok(SidecarsPage {
            replica: name.into(),
            revision: 50,
            halted: false,
            sidecars,
            continue_token: None,
        }),
    }
}

fn selector(namespace: Option<&str>, service: Option<&str>, labels: &[(&str, &str)]) -> Selector {
    Selector {
        namespace: namespace.map(str::to_owned),
        service: service.map(str::to_owned),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn pods(list: &SidecarList) -> Vec<&str> {
    list.sidecars.iter().map(|s| s.pod.as_str()).collect()
}

/// demo: reviews-v1-a/b (v1), reviews-v2-a/b (v2), ratings-a; shop: cart-a.
fn mesh() -> SidecarView {
    SidecarView::build(vec![
        replica(
            "b-0",
            vec![
                reviews("reviews-v1-a", "v1", 42),
                reviews("reviews-v2-a", "v2", 42),
                reviews("reviews-v2-b", "v2", 40),
            ],
        ),
        replica(
            "b-1",
            vec![
                reviews("reviews-v1-b", "v1", 41),
                sidecar("demo", "ratings-a", "ratings", 42),
                sidecar("shop", "cart-a", "cart", 7),
            ],
        ),
    ])
}

#[test]
fn a_selector_counts_the_sidecars_it_matches_labels_included() {
    let view = mesh();
    let reviews = view.enforcement(&selector(Some("demo"), Some("reviews"), &[]), 42);
    assert_eq!(
        reviews,
        Enforcement {
            selected: 4,
            enforcing: 2,
            lagging: vec!["reviews-v2-b".into(), "reviews-v1-b".into()],
            lagging_count: 2,
            unreachable_replicas: 0,
        },
        "the furthest behind first"
    );
    let v2 = view.enforcement(&selector(None, Some("reviews"), &[("version", "v2")]), 42);
    assert_eq!((v2.selected, v2.enforcing), (2, 1));
    assert_eq!(v2.lagging, ["reviews-v2-b"]);
    let everyone = view.enforcement(&selector(None, None, &[]), 41);
    assert_eq!((everyone.selected, everyone.enforcing), (6, 4));
    assert_eq!(everyone.lagging, ["cart-a", "reviews-v2-b"]);
    // By workload name as well as by `app` label.
    let by_name = view.enforcement(&selector(Some("demo"), Some("reviews-v1"), &[]), 1);
    assert_eq!((by_name.selected, by_name.enforcing), (2, 2));
    for nobody in [
        selector(Some("prod"), None, &[]),
        selector(Some("demo"), Some("cart"), &[]),
        selector(None, None, &[("version", "v3")]),
    ] {
        let e = view.enforcement(&nobody, 42);
        assert_eq!(
            (e.selected, e.enforcing, e.lagging_count),
            (0, 0, 0),
            "{nobody:?}"
        );
    }
}

#[test]
fn selector_wildcards_select_as_the_plugin_does() {
    let view = mesh();
    let any = view.enforcement(&selector(Some("*"), Some(""), &[]), 0);
    assert_eq!(any.selected, 6);
}

#[test]
fn unknown_labels_count_as_none() {
    let mut unknown = sidecar("demo", "reviews-v2-c", "reviews-v2", 42);
    unknown.labels = None;
    let view = SidecarView::build(vec![replica("b-0", vec![unknown])]);
    let by_label = view.enforcement(&selector(None, None, &[("version", "v2")]), 42);
    assert_eq!(by_label.selected, 0);
    let by_app = view.enforcement(&selector(None, Some("reviews"), &[]), 42);
    assert_eq!(by_app.selected, 0, "the app label is unknown too");
    let by_name = view.enforcement(&selector(None, Some("reviews-v2"), &[]), 42);
    assert_eq!(by_name.selected, 1);
}

#[test]
fn at_most_20_lagging_names_the_furthest_behind_first() {
    let sidecars: Vec<SidecarStatus> = (0..50)
        .map(|i| {
            sidecar(
                "demo",
                &format!("pod-{i:02}"),
                &format!("w{}", i % 3),
                100 - i,
            )
        })
        .collect();
    let view = SidecarView::build(vec![replica("b-0", sidecars)]);
    let e = view.enforcement(&selector(None, None, &[]), 100);
    assert_eq!((e.selected, e.enforcing, e.lagging_count), (50, 1, 49));
    let expected: Vec<String> = (30..50).rev().map(|i| format!("pod-{i:02}")).collect();
    assert_eq!(e.lagging, expected);
}

#[test]
fn a_sidecar_on_two_replicas_is_taken_from_the_one_that_saw_it_last() {
    let mut old = sidecar("demo", "ratings-a", "ratings", 40);
    old.last_seen = at(5);
    old.polling = false;
    let moved = sidecar("demo", "ratings-a", "ratings", 42);
    for reads in [
        vec![
            replica("b-0", vec![old.clone()]),
            replica("b-1", vec![moved.clone()]),
        ],
        vec![
            replica("b-1", vec![moved.clone()]),
            replica("b-0", vec![old.clone()]),
        ],
    ] {
        let view = SidecarView::build(reads);
        assert_eq!(view.len(), 1);
        let list = view.list(&SidecarListQuery::default(), None);
        assert_eq!(list.sidecars, std::slice::from_ref(&moved));
        assert_eq!(list.replicas.len(), 2);
        let e = view.enforcement(&selector(None, None, &[]), 42);
        assert_eq!((e.selected, e.enforcing), (1, 1));
    }
}

#[test]
fn an_unreachable_replica_is_listed_and_counted() {
    let view = SidecarView::build(vec![
        replica("b-0", vec![sidecar("demo", "ratings-a", "ratings", 42)]),
        ReplicaRead {
            address: "10.0.0.9:8081".into(),
            outcome: Err("connection refused".into()),
        },
    ]);
    let list = view.list(&SidecarListQuery::default(), None);
    assert_eq!(pods(&list), ["ratings-a"]);
    assert_eq!(
        list.unreachable,
        [UnreachableReplica {
            address: "10.0.0.9:8081".into(),
            error: "connection refused".into()
        }]
    );
    assert_eq!(
        list.replicas,
        [ReplicaSummary {
            replica: "b-0".into(),
            address: "b-0:8081".into(),
            revision: 50,
            halted: false,
            sidecars: 1,
        }]
    );
    let e = view.enforcement(&selector(None, None, &[]), 42);
    assert_eq!((e.selected, e.unreachable_replicas), (1, 1));
}

#[test]
fn injected_counts_are_summed_over_sidecars_per_policy() {
    let view = SidecarView::build(vec![
        replica(
            "b-0",
            vec![
                with_counts(sidecar("demo", "a", "reviews", 1), "p", 3, 1),
                with_counts(
                    with_counts(sidecar("demo", "b", "reviews", 1), "p", 4, 0),
                    "q",
                    0,
                    9,
                ),
            ],
        ),
        replica(
            "b-1",
            vec![with_counts(sidecar("shop", "c", "cart", 1), "p", 10, 2)],
        ),
    ]);
    assert_eq!(
        view.injected("p"),
        FaultCounts {
            abort: 17,
            delay: 3
        }
    );
    assert_eq!(view.injected("q"), FaultCounts { abort: 0, delay: 9 });
    assert_eq!(view.injected("none"), FaultCounts::default());
}

#[test]
fn a_list_filters_by_namespace_service_policy_and_state() {
    let mut view_reads = vec![replica(
        "b-0",
        vec![
            reviews("reviews-v2-a", "v2", 42),
            sidecar("demo", "ratings-a", "ratings", 42),
            sidecar("shop", "cart-a", "cart", 7),
        ],
    )];
    if let Ok(page) = &mut view_reads[0].outcome {
        page.sidecars[1].state = SidecarState::Behind;
    }
    let view = SidecarView::build(view_reads);
    let query = |namespace: Option<&str>, service: Option<&str>, state| SidecarListQuery {
        namespace: namespace.map(str::to_owned),
        service: service.map(str::to_owned),
        state,
        ..SidecarListQuery::default()
    };
    assert_eq!(
        pods(&view.list(&query(None, None, None), None)),
        ["ratings-a", "reviews-v2-a", "cart-a"],
        "sorted by namespace, then pod"
    );
    assert_eq!(
        pods(&view.list(&query(Some("demo"), None, None), None)),
        ["ratings-a", "reviews-v2-a"]
    );
    assert_eq!(
        pods(&view.list(&query(None, Some("reviews"), None), None)),
        ["reviews-v2-a"],
        "the app label"
    );
    assert_eq!(
        pods(&view.list(&query(None, Some("reviews-v2"), None), None)),
        ["reviews-v2-a"],
        "the workload name"
    );
    assert_eq!(
        pods(&view.list(&query(None, None, Some(SidecarState::Behind)), None)),
        ["ratings-a"]
    );
    let v2 = selector(None, None, &[("version", "v2")]);
    assert_eq!(
        pods(&view.list(&query(None, None, None), Some(&v2))),
        ["reviews-v2-a"]
    );
}

#[test]
fn pages_follow_the_continue_token_and_list_each_sidecar_once() {
    let sidecars: Vec<SidecarStatus> = (0..7)
        .map(|i| sidecar(if i < 4 { "a" } else { "b" }, &format!("p{i}"), "w", 1))
        .collect();
    let view = SidecarView::build(vec![replica("b-0", sidecars)]);
    let mut query = SidecarListQuery {
        limit: 3,
        ..SidecarListQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let list = view.list(&query, None);
        seen.extend(list.sidecars.iter().map(|s| s.pod.clone()));
        let Some(token) = list.continue_token else {
            break;
        };
        query = SidecarListQuery::parse(&format!("limit=3&continue={token}")).unwrap();
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    // A page that ends exactly at the last sidecar has no token.
    query.after = None;
    query.limit = 7;
    assert_eq!(view.list(&query, None).continue_token, None);
}
