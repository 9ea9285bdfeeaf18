//! End to end: a policy written through policy-api reaches a real Envoy's plugin through the
//! sse-broadcaster's long poll, and the plugin injects exactly that fault.
//!
//! policy-api and the broadcaster run in this process on one embedded store (as `boifi serve`
//! does); Envoy and the plugin are the real ones.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boifi_sse_broadcaster::Settings;
use boifi_tests::envoy::{Envoy, EnvoyBuilder, Upstream};
use boifi_tests::http::{http_request, HttpResponse};
use boifi_tests::services::Services;
use boifi_tests::wait_until;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", path, &[], None, TIMEOUT)
}

/// Waits until every plugin VM of `envoy` runs `revision`; the gauge is shared by the VMs, so
/// also wait for each VM's log line.
fn wait_for_revision(envoy: &Envoy, revision: u64) {
    let reached = wait_until(deadline(), || {
        envoy
            .stat("wasmcustom.boifi_config_revision")
            .is_some_and(|r| r >= revision)
            && envoy.has_applied(revision)
    });
    assert!(
        reached,
        "plugin reached revision {revision}: {:?}",
        envoy.stat("wasmcustom.boifi_config_revision")
    );
}

#[test]
fn abort_policy_is_enforced_with_header_body_and_stats() {
    let plane = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port()).start();

    let revision = plane.put(&json!({
        "metadata": {"name": "reviews-abort"},
        "spec": {
            "selector": {"namespace": "demo", "service": "reviews"},
            "rules": [{
                "match": {"path": {"prefix": "/api"}},
                "fault": {"abort": {"httpStatus": 503, "body": "injected by boifi", "headers": {"x-extra": "1"}}}
            }]
        }
    }));
    wait_for_revision(&envoy, revision);

    for _ in 0..10 {
        let r = get(envoy.addr(), "/api/items").expect("faulted request");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-boifi-fault"), Some("reviews-abort"));
        assert_eq!(r.header("x-extra"), Some("1"));
        assert_eq!(r.body_text(), "injected by boifi");
        let r = get(envoy.addr(), "/other").expect("untouched request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-boifi-fault"), None);
    }
    assert_eq!(
        upstream.requests(),
        10,
        "aborted requests never reach the upstream"
    );

    // The counter keeps policy and fault type whole in its name under Istio's stats tags; the
    // Prometheus relabel rules turn them into labels (tests/prometheus.rs).
    assert_eq!(
        envoy.stat("wasmcustom.boifi_faults_injected.fault_type.abort.policy.reviews-abort"),
        Some(10)
    );
    let prometheus = envoy
        .admin_get("/stats/prometheus")
        .expect("prometheus stats");
    assert!(
        prometheus
            .lines()
            .any(|l| l == "boifi_faults_injected_fault_type_abort_policy_reviews_abort{} 10"),
        "faults counter exported:\n{prometheus}"
    );
}

#[test]
fn delay_is_never_early_and_only_a_few_ms_late() {
    const DELAY_MS: u64 = 150;
    let plane = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port()).start();
    let revision = plane.put(&json!({
        "metadata": {"name": "reviews-delay"},
        "spec": {
            "selector": {"labels": {"app": "reviews"}},
            "rules": [{
                "match": {"method": {"exact": "GET"}, "path": {"prefix": "/slow"}},
                "fault": {"delay": {"fixed_delay_ms": DELAY_MS}}
            }]
        }
    }));
    wait_for_revision(&envoy, revision);

    // Baseline: the same request path without the fault.
    let mut baseline = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let r = get(envoy.addr(), "/fast").expect("request");
        baseline.push(start.elapsed());
        assert_eq!(r.header("x-boifi-fault"), None);
    }
    let mut lateness_us = Vec::new();
    for i in 0..20 {
        let start = Instant::now();
        let r = get(envoy.addr(), "/slow/x").expect("delayed request");
        let elapsed = start.elapsed();
        assert_eq!(r.status, 200, "a delay alone forwards the request");
        assert_eq!(r.body_text(), Upstream::BODY);
        assert_eq!(r.header("x-boifi-fault"), Some("reviews-delay"));
        assert!(
            elapsed >= Duration::from_millis(DELAY_MS),
            "request {i} early: {elapsed:?}"
        );
        lateness_us.push((elapsed - Duration::from_millis(DELAY_MS)).as_micros());
    }
    // A POST to the same path does not match the method.
    let start = Instant::now();
    let r = http_request(envoy.addr(), "POST", "/slow/x", &[], Some(b"x"), TIMEOUT).expect("POST");
    assert_eq!(r.header("x-boifi-fault"), None);
    assert!(start.elapsed() < Duration::from_millis(DELAY_MS));

    lateness_us.sort_unstable();
    let p50 = lateness_us[lateness_us.len() / 2];
    let max = lateness_us[lateness_us.len() - 1];
    eprintln!(
        "delay {DELAY_MS} ms: lateness p50 {p50} us, max {max} us (includes the request's own time; baseline {:?})",
        baseline.iter().max()
    );
    // Generous for a loaded 2-core machine; the typical figure is a few ms.
    assert!(p50 < 20_000, "median lateness {p50} us");
    assert_eq!(upstream.requests(), 5 + 20 + 1);
}

/// Held polls the broadcaster counts, from its `/metrics`.
fn held_polls(plane: &Services) -> Option<u64> {
    plane
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(r#"boifi_broadcaster_clients{mode="poll"} "#))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends `n` requests, each on its own connection (Envoy spreads connections over its workers),
/// and returns how many were aborted by `policy` with `status`.
fn faulted(envoy: &Envoy, n: usize, policy: &str, status: u16) -> usize {
    (0..n)
        .filter(|_| {
            get(envoy.addr(), "/api/items")
                .is_ok_and(|r| r.status == status && r.header("x-boifi-fault") == Some(policy))
        })
        .count()
}

#[test]
fn one_poll_per_envoy_feeds_every_worker() {
    const REQUESTS: usize = 60;
    let plane = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    // A long wait, so the one poll is held steadily between changes.
    let config = EnvoyBuilder::default_plugin_config().replace("2000", "20000");
    assert!(config.contains("\"poll_wait_ms\":20000"), "{config}");
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port())
        .plugin_config(&config)
        .concurrency(3)
        .start();
    let policy = |status: u16| {
        json!({
            "metadata": {"name": "reviews-abort"},
            "spec": {
                "selector": {"namespace": "demo", "service": "reviews"},
                "rules": [{"fault": {"abort": {"httpStatus": status}, "percentage": 100}}]
            }
        })
    };

    let revision = plane.put(&policy(503));
    // Every VM, the four of them, applies it: the three workers and the main thread.
    wait_for_revision(&envoy, revision);
    assert_eq!(envoy.plugin_vms(), 4);
    assert!(
        wait_until(deadline(), || held_polls(&plane) == Some(1)),
        "one held poll: {:?}",
        held_polls(&plane)
    );
    assert_eq!(faulted(&envoy, REQUESTS, "reviews-abort", 503), REQUESTS);

    let revision = plane.put(&policy(429));
    wait_for_revision(&envoy, revision);
    assert_eq!(faulted(&envoy, REQUESTS, "reviews-abort", 429), REQUESTS);
    assert_eq!(upstream.requests(), 0, "every request was aborted");
    // Still one poll after the change: the followers never poll.
    assert!(
        wait_until(deadline(), || held_polls(&plane) == Some(1)),
        "one held poll after the update: {:?}",
        held_polls(&plane)
    );
    let log = envoy.log();
    assert!(
        !log.contains("cannot poll") && !log.contains("policy poll failed"),
        "{log}"
    );
}
