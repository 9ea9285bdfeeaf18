//! Sidecar reports end to end on the local mesh: Envoy sidecars running the real plugin poll
//! two sse-broadcaster replicas on one etcd; each replica's `GET /v1/sidecars` lists the
//! sidecars polling it, with their identity, the revision they enforce and the faults they
//! injected, as their own Envoy stats count them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use boifi_policy::wire::{SidecarState, SidecarStatus, SidecarsPage};
use boifi_tests::istio::POD_TEMPLATE_HASH;
use boifi_tests::mesh::{
    run_scenarios, ControlPlaneKind, Mesh, MeshBuilder, Replica, Req, Scenario, WorkloadSpec,
};
use boifi_tests::wait_until;
use serde_json::json;

/// Short, so a stopped sidecar is forgotten within the test.
const TTL: Duration = Duration::from_secs(2);
/// The plugin's poll wait in the harness (`EnvoyBuilder::default_plugin_config`).
const POLL_WAIT: Duration = Duration::from_secs(2);
/// Bounds a broken run only; the scenarios assert their own, tighter times.
const DEADLINE: Duration = Duration::from_secs(20);

fn mesh() -> Mesh {
    MeshBuilder::new(ControlPlaneKind::Separate)
        .broadcasters(2)
        .broadcaster_env("BOIFI_SIDECAR_TTL_SECS", &TTL.as_secs().to_string())
        .workload(WorkloadSpec::new("demo", "reviews").label("version", "v2"))
        .workload(WorkloadSpec::new("shop", "cart").replicas(1))
        .workload(WorkloadSpec::new("demo", "ratings").broadcaster(1))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"))
}

#[test]
fn each_broadcaster_replica_reports_the_sidecars_polling_it() {
    let scenarios: &[Scenario<Mesh>] = &[
        (
            "every sidecar is listed by its own replica, with its identity",
            listed_by_own_replica,
        ),
        (
            "a change shows on the sidecars it concerns within a second",
            revisions_follow_changes,
        ),
        (
            "injected counts equal each sidecar's Envoy stats",
            injected_counts_match_envoy_stats,
        ),
        (
            "a stopped sidecar is forgotten after the TTL",
            stopped_sidecar_forgotten,
        ),
    ];
    run_scenarios(&mut mesh(), scenarios);
}

/// Which replica each workload polls.
fn replica_of(workload: &str) -> usize {
    usize::from(workload == "ratings")
}

fn page(mesh: &Mesh, replica: usize) -> SidecarsPage {
    mesh.control()
        .sidecars(replica)
        .unwrap_or_else(|e| panic!("replica {replica}: {e}"))
}

/// Every sidecar listed by either replica, by pod.
fn listed(mesh: &Mesh) -> BTreeMap<String, SidecarStatus> {
    (0..2)
        .flat_map(|replica| page(mesh, replica).sidecars)
        .map(|s| (s.pod.clone(), s))
        .collect()
}

fn listed_by_own_replica(mesh: &mut Mesh) {
    let listed_all = wait_until(Instant::now() + DEADLINE, || {
        listed(mesh).len() == mesh.replicas().count()
    });
    assert!(listed_all, "{:?}", listed(mesh).keys());
    for replica in 0..2 {
        let page = page(mesh, replica);
        assert_eq!(page.replica, format!("sse-broadcaster-{replica}"));
        assert!(!page.halted);
        let mut expected: Vec<&str> = mesh
            .workloads()
            .iter()
            .filter(|w| replica_of(w.name()) == replica)
            .flat_map(|w| w.replicas().iter().map(Replica::pod))
            .collect();
        expected.sort_unstable();
        let pods: Vec<&str> = page.sidecars.iter().map(|s| s.pod.as_str()).collect();
        // Sorted by namespace, then pod: demo before shop.
        let mut by_namespace: Vec<(&str, &str)> = page
            .sidecars
            .iter()
            .map(|s| (s.namespace.as_str(), s.pod.as_str()))
            .collect();
        by_namespace.sort_unstable();
        assert_eq!(
            pods,
            by_namespace.iter().map(|(_, p)| *p).collect::<Vec<_>>()
        );
        let mut sorted = pods.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "replica {replica} lists only its own");
    }
    let all = listed(mesh);
    for workload in mesh.workloads() {
        let spec = workload.spec();
        for sidecar in workload.replicas() {
            let seen = &all[sidecar.pod()];
            assert_eq!(seen.namespace, spec.namespace);
            assert_eq!(seen.workload, spec.name);
            let labels = seen.labels.as_ref().expect("labels reported");
            for (key, value) in &spec.labels {
                assert_eq!(labels.get(key), Some(value), "{}", sidecar.pod());
            }
            assert!(!labels.contains_key(POD_TEMPLATE_HASH), "as pilot-agent");
            assert_eq!(seen.state, SidecarState::Current, "{seen:?}");
        }
    }
}

/// Waits until every pod in `pods` is listed at `revision` or later and current; returns how
/// long that took from `since`.
fn wait_revision(mesh: &Mesh, pods: &[&str], revision: u64, since: Instant) -> Duration {
    let reached = wait_until(since + DEADLINE, || {
        let all = listed(mesh);
        pods.iter().all(|pod| {
            all.get(*pod)
                .is_some_and(|s| s.revision >= revision && s.state == SidecarState::Current)
        })
    });
    let took = since.elapsed();
    assert!(
        reached,
        "not every sidecar at {revision}: {:?}",
        listed(mesh)
    );
    took
}

fn revisions_follow_changes(mesh: &mut Mesh) {
    let demo: Vec<String> = ["reviews", "ratings"]
        .iter()
        .flat_map(|w| {
            mesh.workload(w)
                .replicas()
                .iter()
                .map(|r| r.pod().to_owned())
        })
        .collect();
    let demo: Vec<&str> = demo.iter().map(String::as_str).collect();
    let cart = mesh.workload("cart").replicas()[0].pod().to_owned();
    let cart_before = listed(mesh)[&cart].revision;
    let mut took = Vec::new();
    for status in [500u16, 501, 502, 503, 504] {
        let start = Instant::now();
        let written = mesh
            .put_policy(&json!({
                "metadata": {"name": "t-status"},
                "spec": {"selector": {"namespace": "demo"}, "rules": [{
                    "match": {"path": {"prefix": "/status"}},
                    "fault": {"abort": {"httpStatus": status}}
                }]}
            }))
            .expect("write");
        took.push(wait_revision(mesh, &demo, written.revision, start));
        // The shop sidecar is not concerned: current at the revision it had.
        let cart_now = &listed(mesh)[&cart];
        assert_eq!(cart_now.state, SidecarState::Current, "{cart_now:?}");
        assert_eq!(cart_now.revision, cart_before);
    }
    // The kill switch concerns every sidecar.
    let start = Instant::now();
    let halted = mesh.control().set_halt(true).expect("halt");
    let every: Vec<&str> = mesh.replicas().map(Replica::pod).collect();
    took.push(wait_revision(mesh, &every, halted, start));
    assert!((0..2).all(|replica| page(mesh, replica).halted));
    let start = Instant::now();
    let resumed = mesh.control().set_halt(false).expect("resume");
    took.push(wait_revision(mesh, &every, resumed, start));
    eprintln!("sidecars listed at the new revision after {took:.1?}");
    let slowest = took.iter().max().expect("changes");
    assert!(*slowest < Duration::from_secs(1), "{took:?}");
    assert!(mesh.control().delete_policy("t-status").expect("delete"));
}

fn injected_counts_match_envoy_stats(mesh: &mut Mesh) {
    // Half the requests delayed 1 ms then aborted: both counters move.
    mesh.apply(
        &json!({
            "metadata": {"name": "t-count"},
            "spec": {"selector": {"namespace": "demo"}, "rules": [{
                "match": {"path": {"prefix": "/count"}},
                "fault": {"percentage": 50, "delay": {"fixed_delay_ms": 1}, "abort": {"httpStatus": 503}}
            }]}
        }),
        &["reviews", "ratings"],
    )
    .expect("apply");
    let mut faulted = 0;
    for workload in ["reviews", "ratings"] {
        faulted += mesh
            .workload(workload)
            .send(200, &Req::get("/count"))
            .faulted_by("t-count");
    }
    assert!(faulted > 0);
    let sent = Instant::now();
    let stat = |r: &Replica, fault_type: &str| r.envoy().faults_injected("t-count", fault_type);
    let sidecars = mesh.replicas_of(&["reviews", "ratings"]);
    let matched = wait_until(sent + DEADLINE, || {
        let all = listed(mesh);
        sidecars.iter().all(|r| {
            let counts = all
                .get(r.pod())
                .and_then(|s| s.injected.get("t-count").copied())
                .unwrap_or_default();
            counts.abort == stat(r, "abort") && counts.delay == stat(r, "delay")
        })
    });
    let lag = sent.elapsed();
    let all = listed(mesh);
    let report: Vec<String> = sidecars
        .iter()
        .map(|r| {
            format!(
                "{}: reported {:?}, Envoy abort {} delay {}",
                r.pod(),
                all.get(r.pod()).map(|s| s.injected.get("t-count")),
                stat(r, "abort"),
                stat(r, "delay")
            )
        })
        .collect();
    assert!(matched, "{report:#?}");
    let total: u64 = sidecars.iter().map(|r| stat(r, "abort")).sum();
    assert_eq!(
        total, faulted as u64,
        "the responses that said so: {report:#?}"
    );
    assert!(sidecars.iter().all(|r| stat(r, "abort") > 0), "{report:#?}");
    eprintln!("counts reported {lag:.1?} after the traffic (poll wait {POLL_WAIT:?}): {report:#?}");
    // A report goes with the next poll: at most one poll wait behind (plus the test's reads).
    assert!(lag < POLL_WAIT + Duration::from_secs(1), "{lag:?}");
    // The shop sidecar injected nothing and reports nothing.
    let cart = mesh.workload("cart").replicas()[0].pod();
    assert!(all[cart].injected.is_empty(), "{:?}", all[cart]);
    assert!(mesh.control().delete_policy("t-count").expect("delete"));
}

fn stopped_sidecar_forgotten(mesh: &mut Mesh) {
    let pod = mesh.workload("ratings").replicas()[1].pod().to_owned();
    let other = mesh.workload("ratings").replicas()[0].pod().to_owned();
    assert!(page(mesh, 1).sidecars.iter().any(|s| s.pod == pod));
    let name = mesh.workload("ratings").replicas()[1].name().to_owned();
    mesh.replica_mut(&name).stop();
    let stopped = Instant::now();
    let listed_by_1 = |mesh: &Mesh, pod: &str| page(mesh, 1).sidecars.iter().any(|s| s.pod == pod);
    let gone = wait_until(stopped + DEADLINE, || !listed_by_1(mesh, &pod));
    let after = stopped.elapsed();
    assert!(gone, "{pod} still listed");
    // Its held poll ends as soon as its connection closes (not when the wait runs out); the
    // TTL counts from then.
    assert!(
        after >= TTL - Duration::from_millis(100) && after < TTL + Duration::from_secs(1),
        "forgotten {after:?} after it stopped (TTL {TTL:?}, poll wait {POLL_WAIT:?})"
    );
    assert!(listed_by_1(mesh, &other), "the other replica stays");
    eprintln!("stopped sidecar forgotten after {after:.1?}");
}
