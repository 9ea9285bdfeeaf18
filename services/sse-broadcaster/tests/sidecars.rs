//! The sidecar table at the service boundary: polls with report headers, sent by real HTTP
//! clients to a real broadcaster (policy-api and the broadcaster on the embedded store), read
//! back from `GET /v1/sidecars` and `/metrics`.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use boifi_policy::wire::{
    SidecarState, SidecarStatus, SidecarsPage, SidecarsQuery, INJECTED_HEADER, SIDECAR_HEADER,
};
use boifi_sse_broadcaster::{RequestError, Settings};
use boifi_tests::http::{http_request, HttpResponse};
use boifi_tests::services::{deadline, Services};
use boifi_tests::wait_until;
use common::policy;
use serde_json::{json, Value};

const TTL: Duration = Duration::from_secs(1);

fn services() -> Services {
    Services::embedded(
        Settings {
            sidecar_ttl: TTL,
            ..Settings::default()
        },
        None,
    )
}

/// Writes policy `name` for `demo/reviews` and waits until the broadcaster has it; its
/// revision.
fn put_reviews_policy(services: &Services, name: &str) -> u64 {
    let revision = services.put(&policy(name, "reviews", 0));
    services.wait_broadcaster_at(revision);
    revision
}

fn identity(pod: &str, service: &str) -> String {
    json!({"pod": pod, "namespace": "demo", "workload": service, "labels": {"app": service}})
        .to_string()
}

/// One poll of `service`'s sidecar with `headers`; `wait_ms` 0 answers at once.
fn poll(
    addr: SocketAddr,
    service: &str,
    revision: Option<u64>,
    wait_ms: u64,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let revision = revision.map_or(String::new(), |r| format!("&revision={r}"));
    let path = format!(
        "/v1/config/stream?mode=poll&namespace=demo&service={service}&wait_ms={wait_ms}{revision}"
    );
    let response =
        http_request(addr, "GET", &path, headers, None, Duration::from_secs(30)).expect("poll");
    assert_eq!(response.status, 200, "{}", response.body_text());
    response
}

fn sidecars(addr: SocketAddr, query: &str) -> (u16, Value) {
    let response = http_request(
        addr,
        "GET",
        &format!("/v1/sidecars{query}"),
        &[],
        None,
        Duration::from_secs(10),
    )
    .expect("GET /v1/sidecars");
    let body = serde_json::from_slice(&response.body).expect("JSON");
    (response.status, body)
}

fn page(addr: SocketAddr) -> SidecarsPage {
    let (status, body) = sidecars(addr, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).expect("a sidecars page")
}

fn sidecar(addr: SocketAddr, pod: &str) -> Option<SidecarStatus> {
    page(addr).sidecars.into_iter().find(|s| s.pod == pod)
}

/// The value of a metric line (`name{labels} value`) on `/metrics`.
fn metric(services: &Services, series: &str) -> Option<f64> {
    services.metrics().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn every_poll_updates_its_sidecar_and_the_table_forgets_it_after_the_ttl() {
    let services = services();
    let addr = services.broadcaster();
    let revision = put_reviews_policy(&services, "reviews-abort");
    let reviews = identity("reviews-0", "reviews");
    let headers = [
        (SIDECAR_HEADER, reviews.as_str()),
        (INJECTED_HEADER, r#"{"reviews-abort":[12,3]}"#),
    ];
    // First poll: no revision, answered with the snapshot at once.
    let first = poll(addr, "reviews", None, 30_000, &headers);
    assert!(first.body_text().contains("event: snapshot"));
    let seen = sidecar(addr, "reviews-0").expect("listed after its first poll");
    assert_eq!(
        (seen.namespace.as_str(), seen.workload.as_str()),
        ("demo", "reviews")
    );
    assert_eq!(seen.labels.unwrap()["app"], "reviews");
    assert_eq!(seen.revision, 0);
    assert_eq!(seen.state, SidecarState::Behind, "it had nothing yet");
    assert_eq!(seen.injected["reviews-abort"].abort, 12);
    assert_eq!(seen.injected["reviews-abort"].delay, 3);
    assert!(!seen.polling);
    // In process (`boifi serve`'s policy-api reads it so), the same table.
    let in_process = services
        .broadcaster_handle()
        .sidecars(&SidecarsQuery::default())
        .expect("in-process page");
    let over_http = page(addr);
    let summary = |page: &SidecarsPage| -> Vec<_> {
        page.sidecars
            .iter()
            .map(|s| (s.identity(), s.revision, s.state, s.injected.clone()))
            .collect()
    };
    assert_eq!(summary(&in_process), summary(&over_http));
    assert_eq!(
        (in_process.replica, in_process.revision),
        (over_http.replica, over_http.revision)
    );
    let bad = SidecarsQuery {
        continue_token: Some("zz".into()),
        ..SidecarsQuery::default()
    };
    assert!(matches!(
        services.broadcaster_handle().sidecars(&bad),
        Err(RequestError::Invalid(_))
    ));

    // Its next poll is held: polling, current at the revision it sent; no counts changed.
    let held = std::thread::scope(|scope| {
        let held = scope.spawn(|| poll(addr, "reviews", Some(revision), 3_000, &headers[..1]));
        let polling = wait_until(deadline(), || {
            sidecar(addr, "reviews-0").is_some_and(|s| s.polling)
        });
        assert!(polling, "the held poll shows");
        let now = sidecar(addr, "reviews-0").unwrap();
        assert_eq!((now.revision, now.state), (revision, SidecarState::Current));
        assert_eq!(now.behind_seconds, 0.0);
        assert_eq!(now.injected["reviews-abort"].abort, 12, "kept");
        assert!(now.last_seen >= seen.last_seen && now.first_seen == seen.first_seen);
        held.join().unwrap()
    });
    assert!(held.body_text().starts_with(": timeout"));

    // Forgotten once its last poll ended longer than the TTL ago, not before.
    let ended = Instant::now();
    assert!(sidecar(addr, "reviews-0").is_some_and(|s| !s.polling));
    let gone = wait_until(deadline(), || sidecar(addr, "reviews-0").is_none());
    let after = ended.elapsed();
    assert!(gone, "forgotten");
    assert!(
        after >= TTL - Duration::from_millis(50) && after < TTL + Duration::from_secs(2),
        "forgotten {after:?} after its poll ended (TTL {TTL:?})"
    );
    // The sweeper forgets it too (within a second), and the gauges say so.
    let swept = wait_until(deadline(), || {
        metric(&services, r#"boifi_broadcaster_sidecars{state="current"}"#) == Some(0.0)
    });
    assert!(swept);
}

/// A sidecar that goes away while its poll is held (its Envoy stopped, so the connection
/// closed) stops polling at once, not when the poll's wait runs out a minute later (the servers
/// drop a request whose client closed the connection: `boifi-runtime`'s serve), and is
/// forgotten after the cut-off TTL (5 s), not the TTL (30 s here).
#[test]
fn a_held_poll_ends_when_its_connection_closes() {
    const CUT_OFF_TTL: Duration = Duration::from_secs(5);
    let services = Services::embedded(
        Settings {
            sidecar_ttl: Duration::from_secs(30),
            ..Settings::default()
        },
        None,
    );
    let addr = services.broadcaster();
    let revision = put_reviews_policy(&services, "reviews-abort");
    let reviews = identity("reviews-1", "reviews");
    let mut socket = TcpStream::connect(addr).expect("connect");
    write!(
        socket,
        "GET /v1/config/stream?mode=poll&namespace=demo&service=reviews&wait_ms=60000&revision={revision} HTTP/1.1\r\n\
         host: broadcaster\r\n{SIDECAR_HEADER}: {reviews}\r\n\r\n"
    )
    .expect("send the poll");
    let held = wait_until(deadline(), || {
        sidecar(addr, "reviews-1").is_some_and(|s| s.polling)
    });
    assert!(held, "the poll is held");

    drop(socket);
    let closed = Instant::now();
    let ended = wait_until(deadline(), || {
        sidecar(addr, "reviews-1").is_none_or(|s| !s.polling)
    });
    let after = closed.elapsed();
    assert!(ended, "still polling");
    assert!(
        after < Duration::from_secs(1),
        "the poll ended {after:?} after its connection closed (its wait was 60 s)"
    );
    let gone = wait_until(closed + CUT_OFF_TTL + Duration::from_secs(5), || {
        sidecar(addr, "reviews-1").is_none()
    });
    let after = closed.elapsed();
    assert!(gone, "still listed {after:?} after its connection closed");
    assert!(
        after >= CUT_OFF_TTL - Duration::from_millis(100)
            && after < CUT_OFF_TTL + Duration::from_secs(2),
        "forgotten {after:?} after its connection closed"
    );
}

#[test]
fn a_change_puts_the_sidecars_it_concerns_behind_until_they_poll() {
    let services = services();
    let addr = services.broadcaster();
    let start = put_reviews_policy(&services, "base");
    let reviews = identity("reviews-0", "reviews");
    let ratings = identity("ratings-0", "ratings");
    // Both hold a poll at `start`, so the TTL does not forget them meanwhile.
    std::thread::scope(|scope| {
        let reviews_poll = scope.spawn(|| {
            poll(
                addr,
                "reviews",
                Some(start),
                20_000,
                &[(SIDECAR_HEADER, &reviews)],
            )
        });
        let ratings_poll = scope.spawn(|| {
            poll(
                addr,
                "ratings",
                Some(start),
                4_000,
                &[(SIDECAR_HEADER, &ratings)],
            )
        });
        assert!(wait_until(deadline(), || page(addr).sidecars.len() == 2));
        // A change for reviews answers its poll at once; it has not polled again yet.
        let written = Instant::now();
        let change = services.put(&policy("reviews-abort", "reviews", 0));
        let answered = reviews_poll.join().unwrap();
        assert!(answered.body_text().contains(&format!("id: {change}")));
        let behind = wait_until(deadline(), || {
            sidecar(addr, "reviews-0").is_some_and(|s| s.behind_seconds >= 0.2)
        });
        assert!(behind, "{:?}", sidecar(addr, "reviews-0"));
        let lagging = sidecar(addr, "reviews-0").unwrap();
        assert_eq!(
            (lagging.state, lagging.revision),
            (SidecarState::Behind, start)
        );
        assert!(lagging.behind_seconds <= written.elapsed().as_secs_f64() + 0.01);
        // ratings is not concerned: current at its older revision.
        let other = sidecar(addr, "ratings-0").unwrap();
        assert_eq!(
            (other.state, other.revision),
            (SidecarState::Current, start)
        );
        let gauges = wait_until(deadline(), || {
            metric(&services, r#"boifi_broadcaster_sidecars{state="behind"}"#) == Some(1.0)
                && metric(&services, r#"boifi_broadcaster_sidecars{state="current"}"#) == Some(1.0)
                && metric(&services, "boifi_broadcaster_sidecar_max_lag_seconds")
                    .is_some_and(|lag| lag > 0.0)
        });
        assert!(gauges, "{}", services.metrics());
        // Its next poll acknowledges the change.
        poll(
            addr,
            "reviews",
            Some(change),
            0,
            &[(SIDECAR_HEADER, &reviews)],
        );
        let current = sidecar(addr, "reviews-0").unwrap();
        assert_eq!(
            (current.state, current.revision),
            (SidecarState::Current, change)
        );
        ratings_poll.join().unwrap();
    });
}

#[test]
fn bad_report_headers_still_get_config_and_are_counted() {
    let services = services();
    let addr = services.broadcaster();
    put_reviews_policy(&services, "a");
    let good = identity("reviews-0", "reviews");
    let oversized = identity(&"p".repeat(5000), "reviews");
    let cases: [&[(&str, &str)]; 5] = [
        &[(SIDECAR_HEADER, "{not json")],
        &[(SIDECAR_HEADER, &oversized)],
        &[(
            SIDECAR_HEADER,
            r#"{"pod":"","namespace":"demo","workload":"reviews"}"#,
        )],
        &[
            (SIDECAR_HEADER, &good),
            (INJECTED_HEADER, r#"{"a":"many"}"#),
        ],
        &[
            (SIDECAR_HEADER, &good),
            (
                INJECTED_HEADER,
                &format!("{{\"a\":[1,2],\"x\":\"{}\"}}", "y".repeat(9000)),
            ),
        ],
    ];
    for headers in cases {
        let answer = poll(addr, "reviews", None, 0, headers);
        assert!(
            answer.body_text().contains("\"name\":\"a\""),
            "the poll still gets its policies"
        );
    }
    assert_eq!(
        metric(&services, "boifi_broadcaster_bad_reports_total"),
        Some(5.0)
    );
    // Only the sidecar whose identity was good is listed, without the refused counts.
    let listed = page(addr).sidecars;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].pod, "reviews-0");
    assert!(listed[0].injected.is_empty());
    // A poll without reports (an older plugin) is served and not tracked.
    poll(addr, "ratings", None, 0, &[]);
    assert_eq!(page(addr).sidecars.len(), 1);
}

#[test]
fn the_sidecars_route_names_bad_parameters() {
    let services = services();
    let addr = services.broadcaster();
    services.wait_broadcaster_at(0);
    for (query, field) in [
        ("?policy=a", "query"),
        ("?limit=0", "limit"),
        ("?limit=10001", "limit"),
        ("?continue=zz", "continue"),
        ("?namespace=a%0Ab", "namespace"),
    ] {
        let (status, body) = sidecars(addr, query);
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
    let (status, body) = sidecars(addr, "?namespace=demo&service=reviews&limit=10");
    assert_eq!(status, 200);
    assert_eq!(body["sidecars"], json!([]));
    assert_eq!(body["halted"], false);
    assert!(body["replica"].is_string());
    assert!(body.get("continue").is_none());
    let post = http_request(
        addr,
        "POST",
        "/v1/sidecars",
        &[],
        None,
        Duration::from_secs(5),
    )
    .expect("POST");
    assert_eq!(post.status, 405);
}

#[test]
fn the_table_holds_as_many_sidecars_as_clients_and_makes_room_after_the_ttl() {
    let services = Services::embedded(
        Settings {
            sidecar_ttl: TTL,
            max_clients: 1,
            ..Settings::default()
        },
        None,
    );
    let addr = services.broadcaster();
    let revision = put_reviews_policy(&services, "a");
    let reviews = identity("reviews-0", "reviews");
    let ratings = identity("ratings-0", "ratings");
    let ratings_poll = |wait_ms: u64| {
        let path = format!(
            "/v1/config/stream?mode=poll&namespace=demo&service=ratings&wait_ms={wait_ms}&revision={revision}"
        );
        http_request(
            addr,
            "GET",
            &path,
            &[(SIDECAR_HEADER, ratings.as_str())],
            None,
            Duration::from_secs(10),
        )
        .expect("poll")
    };
    std::thread::scope(|scope| {
        // reviews holds the only client slot, and the only place in the table.
        let held = scope.spawn(|| {
            poll(
                addr,
                "reviews",
                Some(revision),
                2_000,
                &[(SIDECAR_HEADER, &reviews)],
            )
        });
        assert!(wait_until(deadline(), || {
            sidecar(addr, "reviews-0").is_some_and(|s| s.polling)
        }));
        let refused = ratings_poll(0);
        assert_eq!(refused.status, 503, "{}", refused.body_text());
        assert_eq!(
            metric(&services, "boifi_broadcaster_sidecars_untracked_total"),
            Some(1.0)
        );
        assert!(sidecar(addr, "ratings-0").is_none());
        held.join().unwrap();
    });
    // Once reviews is forgotten (the TTL after its poll ended, then the sweep), ratings gets
    // its place.
    let ended = Instant::now();
    let listed = wait_until(deadline(), || {
        ratings_poll(0).status == 200 && sidecar(addr, "ratings-0").is_some()
    });
    assert!(listed);
    assert!(ended.elapsed() >= TTL - Duration::from_millis(50));
    assert!(sidecar(addr, "reviews-0").is_none());
}
