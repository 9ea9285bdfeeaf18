//! Faults as the caller sees them. A caller's sidecar with Istio's default retry policy (503
//! retried twice, on the other replica first) sits in front of two replicas of `reviews`,
//! each behind its own sidecar with the plugin. A 50 % abort must reach the caller as 50 % with
//! request-keyed sampling (every attempt of a faulted request is faulted again, on any
//! replica) and as the re-rolled 12.5 % (0.5^3) with `sampling: attempt`.

use std::time::Duration;

use boifi_sse_broadcaster::Settings;
use boifi_tests::envoy::{Envoy, EnvoyBuilder, LaunchOptions, Upstream};
use boifi_tests::http::KeepAliveClient;
use boifi_tests::istio::{caller_bootstrap, Pod};
use boifi_tests::mesh::binomial_bound_999;
use boifi_tests::services::Services;
use boifi_tests::wait_until;
use serde_json::{json, Value};

const REQUESTS: usize = 1_000;
const SERVICE: &str = "reviews.demo.svc.cluster.local";

fn abort_half(sampling: &str) -> Value {
    json!({
        "metadata": {"name": "reviews-abort"},
        "spec": {
            "sampling": sampling,
            "selector": {"namespace": "demo", "service": "reviews"},
            "rules": [{"match": {"path": {"prefix": "/api"}},
                       "fault": {"percentage": 50, "abort": {"httpStatus": 503}}}]
        }
    })
}

/// How many of `REQUESTS` calls through `caller` came back 503 from the plugin.
fn failed_calls(caller: &Envoy) -> usize {
    let client = KeepAliveClient::new(caller.addr(), Duration::from_secs(10));
    (0..REQUESTS)
        .filter(|i| {
            let r = client
                .request("GET", &format!("/api/{i}"), &[], None)
                .expect("call through the caller's sidecar");
            assert!(r.status == 200 || r.status == 503, "status {}", r.status);
            r.status == 503 && r.header("x-boifi-fault") == Some("reviews-abort")
        })
        .count()
}

#[test]
fn the_caller_sees_the_declared_share_with_request_sampling_and_the_rerolled_one_per_attempt() {
    let plane = Services::embedded(Settings::default(), None);
    let upstreams = [Upstream::named("reviews-0"), Upstream::named("reviews-1")];
    let replicas: Vec<Envoy> = upstreams
        .iter()
        .enumerate()
        .map(|(i, upstream)| {
            EnvoyBuilder::new(upstream.port(), plane.broadcaster().port())
                .workload("demo", "reviews")
                .replica(i)
                .concurrency(1)
                .start()
        })
        .collect();
    let replica_ports: Vec<u16> = replicas.iter().map(|r| r.addr().port()).collect();
    let caller_pod = Pod::of_deployment(
        "demo",
        "productpage",
        &[("app".into(), "productpage".into())],
        0,
    );
    let caller = Envoy::start_with(
        &LaunchOptions {
            concurrency: 1,
            cpus: None,
        },
        |ports, _| {
            Ok(caller_bootstrap(
                &caller_pod,
                SERVICE,
                &replica_ports,
                ports.listen,
                ports.admin,
            )
            .to_string())
        },
    );

    for (sampling, expected) in [("request", 0.5), ("attempt", 0.125)] {
        let revision = plane.put(&abort_half(sampling));
        let applied = wait_until(boifi_tests::services::deadline(), || {
            replicas.iter().all(|r| r.has_applied(revision))
        });
        assert!(applied, "both replicas at revision {revision}");
        let failed = failed_calls(&caller);
        let bound = binomial_bound_999(REQUESTS, expected);
        let share = expected * REQUESTS as f64;
        println!("sampling {sampling}: the caller saw {failed} of {REQUESTS} calls fail");
        assert!(
            (failed as f64 - share).abs() <= bound,
            "sampling {sampling}: {failed} of {REQUESTS} calls failed, expected {share} +/- {bound:.0}"
        );
    }
}
