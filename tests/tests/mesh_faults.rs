//! End to end on the local mesh (real etcd, policy-api, sse-broadcaster, Envoy replicas with
//! the real plugin): each fault kind, request matching, and selector targeting with no fault
//! leaking to other workloads. One mesh for the file; each scenario uses its own paths and
//! policies and deletes them when done.

use std::time::Duration;

use boifi_tests::mesh::{
    run_scenarios, ControlPlaneKind, Mesh, MeshBuilder, Outcomes, Req, Scenario, WorkloadSpec,
};
use serde_json::{json, Value};

fn mesh() -> Mesh {
    MeshBuilder::new(ControlPlaneKind::Separate)
        .workload(WorkloadSpec::new("demo", "reviews").label("version", "v1"))
        // Another workload of the same service (`app: reviews`), as a second version.
        .workload(
            WorkloadSpec::new("demo", "reviews-v2")
                .label("app", "reviews")
                .label("version", "v2"),
        )
        .workload(WorkloadSpec::new("demo", "ratings"))
        .workload(WorkloadSpec::new("staging", "ratings"))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"))
}

#[test]
fn faults_reach_exactly_the_requests_and_workloads_they_select() {
    let scenarios: &[Scenario<Mesh>] = &[
        ("abort", abort),
        ("delay", delay),
        ("start delay", start_delay),
        ("delay then abort", delay_then_abort),
        ("method, path and header matching", matching),
        ("selector targeting, nothing leaks", selector_targeting),
    ];
    run_scenarios(&mut mesh(), scenarios);
}

/// Writes `policy` and waits until the sidecars of `workloads` run it.
fn apply(mesh: &Mesh, policy: Value, workloads: &[&str]) {
    mesh.apply(&policy, workloads)
        .unwrap_or_else(|e| panic!("apply {}: {e}", policy["metadata"]["name"]));
}

fn remove(mesh: &Mesh, name: &str) {
    assert!(
        mesh.control().delete_policy(name).expect("delete"),
        "{name} existed"
    );
}

fn upstream_requests(mesh: &Mesh, workload: &str) -> u64 {
    mesh.workload(workload)
        .replicas()
        .iter()
        .map(|r| r.upstream().requests())
        .sum()
}

/// Every replica answered part of the batch (the requests really went round-robin).
fn assert_every_replica_answered(mesh: &Mesh, workload: &str, outcomes: &Outcomes) {
    for replica in mesh.workload(workload).replicas() {
        assert!(
            outcomes.served_by.contains_key(replica.name()),
            "{} served nothing: {outcomes}",
            replica.name()
        );
    }
}

fn abort(mesh: &mut Mesh) {
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-abort"},
            "spec": {
                "selector": {"namespace": "demo", "service": "reviews"},
                "rules": [{
                    "match": {"path": {"prefix": "/abort/"}},
                    "fault": {"abort": {"httpStatus": 503, "body": "injected", "headers": {"x-extra": "1"}}}
                }]
            }
        }),
        // `service` is the workload name or its `app` label: both reviews workloads.
        &["reviews", "reviews-v2"],
    );
    for workload in ["reviews", "reviews-v2"] {
        let before = upstream_requests(mesh, workload);
        let faulted = mesh.workload(workload).send(40, &Req::get("/abort/items"));
        assert_eq!(faulted.status(503), 40, "{workload}: {faulted}");
        assert_eq!(faulted.faulted_by("t-abort"), 40, "{workload}: {faulted}");
        assert_eq!(
            upstream_requests(mesh, workload),
            before,
            "{workload}: aborted requests never reach the upstream"
        );
        let replica = &mesh.workload(workload).replicas()[1];
        let one = replica.request(&Req::get("/abort/one")).expect("request");
        assert_eq!(one.body_text(), "injected");
        assert_eq!(one.header("x-extra"), Some("1"));

        let untouched = mesh.workload(workload).send(20, &Req::get("/abortive"));
        assert_eq!(untouched.status(200), 20, "{workload}: {untouched}");
        assert_eq!(untouched.faulted(), 0, "{workload}: {untouched}");
        assert_every_replica_answered(mesh, workload, &untouched);
    }
    let elsewhere = mesh
        .workload("demo/ratings")
        .send(20, &Req::get("/abort/items"));
    assert_eq!(elsewhere.status(200), 20, "ratings: {elsewhere}");
    remove(mesh, "t-abort");
}

fn delay(mesh: &mut Mesh) {
    const DELAY: Duration = Duration::from_millis(120);
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-delay"},
            "spec": {
                "selector": {"service": "ratings", "namespace": "demo"},
                "rules": [{
                    "match": {"path": {"prefix": "/delay"}},
                    "fault": {"delay": {"fixed_delay_ms": DELAY.as_millis() as u64}}
                }]
            }
        }),
        &["demo/ratings"],
    );
    let ratings = mesh.workload("demo/ratings");
    let delayed = ratings.send(8, &Req::get("/delay/x"));
    assert_eq!(delayed.status(200), 8, "a delay alone forwards: {delayed}");
    assert_eq!(delayed.faulted_by("t-delay"), 8, "{delayed}");
    assert_eq!(delayed.upstream_answered(), 8, "{delayed}");
    let fastest = delayed.min_latency().expect("latencies");
    assert!(fastest >= DELAY, "never early: {fastest:?}");
    let median = delayed.latency_quantile(0.5).expect("latencies");
    assert!(
        median < DELAY + Duration::from_millis(50),
        "median {median:?}"
    );
    eprintln!("delay {DELAY:?}: fastest {fastest:?}, median {median:?}");

    let fast = ratings.send(8, &Req::get("/fast"));
    assert_eq!(fast.faulted(), 0, "{fast}");
    assert!(fast.max_latency().expect("latencies") < DELAY, "{fast}");
    remove(mesh, "t-delay");
}

fn start_delay(mesh: &mut Mesh) {
    const START: Duration = Duration::from_millis(150);
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-start"},
            "spec": {
                "selector": {"service": "ratings"},
                "rules": [{
                    "match": {"path": {"prefix": "/start"}},
                    "fault": {"start_delay_ms": START.as_millis() as u64, "abort": {"httpStatus": 500}}
                }]
            }
        }),
        &["ratings"],
    );
    // Selector without a namespace: both ratings workloads.
    for workload in ["demo/ratings", "staging/ratings"] {
        let outcomes = mesh.workload(workload).send(6, &Req::get("/start"));
        assert_eq!(outcomes.status(500), 6, "{workload}: {outcomes}");
        assert_eq!(outcomes.faulted_by("t-start"), 6, "{workload}: {outcomes}");
        let fastest = outcomes.min_latency().expect("latencies");
        assert!(
            fastest >= START,
            "{workload}: the abort waits for its start delay: {fastest:?}"
        );
    }
    remove(mesh, "t-start");
}

fn delay_then_abort(mesh: &mut Mesh) {
    // Held start delay + delay in total, then aborted: the upstream never sees the request.
    const HOLD: Duration = Duration::from_millis(50 + 100);
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-both"},
            "spec": {
                "selector": {"labels": {"version": "v2"}},
                "rules": [{
                    "match": {"path": {"exact": "/both"}},
                    "fault": {
                        "start_delay_ms": 50,
                        "delay": {"fixed_delay_ms": 100},
                        "abort": {"http_status": 504, "body": "late and failed"}
                    }
                }]
            }
        }),
        &["reviews-v2"],
    );
    let before = upstream_requests(mesh, "reviews-v2");
    let outcomes = mesh.workload("reviews-v2").send(6, &Req::get("/both"));
    assert_eq!(outcomes.status(504), 6, "{outcomes}");
    assert_eq!(outcomes.faulted_by("t-both"), 6, "{outcomes}");
    let fastest = outcomes.min_latency().expect("latencies");
    assert!(fastest >= HOLD, "delayed before the abort: {fastest:?}");
    assert_eq!(upstream_requests(mesh, "reviews-v2"), before);
    remove(mesh, "t-both");
}

fn matching(mesh: &mut Mesh) {
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-match"},
            "spec": {
                "selector": {"namespace": "demo", "service": "ratings"},
                "rules": [
                    {
                        "match": {
                            "method": {"exact": "POST"},
                            "path": {"regex": "^/match/[0-9]+$"},
                            "headers": [
                                {"name": "x-user", "exact": "test"},
                                {"name": "X-Canary", "prefix": "yes"}
                            ]
                        },
                        "fault": {"abort": {"httpStatus": 503}}
                    },
                    {
                        "match": {"path": {"exact": "/match/exact"}},
                        "fault": {"abort": {"httpStatus": 418}}
                    }
                ]
            }
        }),
        &["demo/ratings"],
    );
    let ratings = mesh.workload("demo/ratings");
    let full = || {
        Req::new("POST", "/match/42")
            .header("x-user", "test")
            .header("x-canary", "yes-please")
            .body("{}")
    };
    let cases: Vec<(&str, Req, u16)> = vec![
        ("everything matches", full(), 503),
        (
            "header names compare case-insensitively",
            Req::new("POST", "/match/7")
                .header("X-USER", "test")
                .header("x-canary", "yes")
                .body("{}"),
            503,
        ),
        (
            "wrong method",
            Req::get("/match/42")
                .header("x-user", "test")
                .header("x-canary", "yes"),
            200,
        ),
        (
            "path not matching the regex",
            Req::new("POST", "/match/42a")
                .header("x-user", "test")
                .header("x-canary", "yes")
                .body("{}"),
            200,
        ),
        (
            "header value differs",
            Req::new("POST", "/match/42")
                .header("x-user", "Test")
                .header("x-canary", "yes")
                .body("{}"),
            200,
        ),
        (
            "header missing",
            Req::new("POST", "/match/42")
                .header("x-user", "test")
                .body("{}"),
            200,
        ),
        (
            "header prefix not matching",
            Req::new("POST", "/match/42")
                .header("x-user", "test")
                .header("x-canary", "no")
                .body("{}"),
            200,
        ),
        ("second rule, exact path", Req::get("/match/exact"), 418),
        ("exact is not a prefix", Req::get("/match/exact/more"), 200),
    ];
    for (case, req, status) in cases {
        let outcomes = ratings.send(4, &req);
        assert_eq!(outcomes.status(status), 4, "{case}: {outcomes}");
        let expected_faults = if status == 200 { 0 } else { 4 };
        assert_eq!(outcomes.faulted(), expected_faults, "{case}: {outcomes}");
        if status == 200 {
            assert_eq!(outcomes.upstream_answered(), 4, "{case}: {outcomes}");
        }
    }
    // The same requests to another workload are never faulted.
    let staging = mesh.workload("staging/ratings").send(4, &full());
    assert_eq!(staging.status(200), 4, "{staging}");
    remove(mesh, "t-match");
}

fn selector_targeting(mesh: &mut Mesh) {
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-sel-v2"},
            "spec": {
                "selector": {"namespace": "demo", "service": "reviews", "labels": {"version": "v2"}},
                "rules": [{"match": {"path": {"prefix": "/sel"}}, "fault": {"abort": {"httpStatus": 503}}}]
            }
        }),
        &["reviews-v2"],
    );
    apply(
        mesh,
        json!({
            "metadata": {"name": "t-sel-staging"},
            "spec": {
                "selector": {"namespace": "staging"},
                "rules": [{"match": {"path": {"prefix": "/sel"}}, "fault": {"abort": {"httpStatus": 502}}}]
            }
        }),
        &["staging/ratings"],
    );
    // Every sidecar is current (so a leaked policy would have arrived) before we count.
    mesh.barrier().expect("barrier");
    let expected: [(&str, u16, &str); 4] = [
        ("reviews-v2", 503, "t-sel-v2"),
        ("staging/ratings", 502, "t-sel-staging"),
        ("reviews", 200, ""),
        ("demo/ratings", 200, ""),
    ];
    for (workload, status, policy) in expected {
        let outcomes = mesh.workload(workload).send(200, &Req::get("/sel/x"));
        assert_eq!(outcomes.status(status), 200, "{workload}: {outcomes}");
        if policy.is_empty() {
            assert_eq!(
                outcomes.faulted(),
                0,
                "{workload}: a fault leaked: {outcomes}"
            );
            assert_eq!(outcomes.upstream_answered(), 200, "{workload}: {outcomes}");
            assert_every_replica_answered(mesh, workload, &outcomes);
        } else {
            assert_eq!(outcomes.faulted_by(policy), 200, "{workload}: {outcomes}");
        }
    }
    // Only the selected sidecars hold the policies at all.
    for replica in mesh.workload("reviews").replicas() {
        assert_eq!(
            replica.envoy().stat("wasmcustom.boifi_policies_active"),
            Some(1),
            "{}: only the barrier policy",
            replica.name()
        );
    }
    remove(mesh, "t-sel-v2");
    remove(mesh, "t-sel-staging");
}
