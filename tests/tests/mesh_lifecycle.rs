//! Policies over time on the local mesh: how fast a change reaches every sidecar, rules that
//! stop on time, the kill switch, and a control plane that dies and comes back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boifi_tests::mesh::{
    run_scenarios, ControlPlaneKind, Mesh, MeshBuilder, Replica, Req, Scenario, WorkloadSpec,
};
use boifi_tests::wait_until;
use serde_json::{json, Value};

fn mesh() -> Mesh {
    MeshBuilder::new(ControlPlaneKind::Separate)
        .workload(WorkloadSpec::new("demo", "reviews"))
        .workload(WorkloadSpec::new("demo", "ratings"))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"))
}

#[test]
fn policies_change_expire_halt_and_survive_the_control_plane() {
    let scenarios: &[Scenario<Mesh>] = &[
        ("an update reaches every sidecar", propagation),
        ("a rule stops on time on every sidecar", expiry),
        (
            "halt stops every fault, resume restores them",
            halt_and_resume,
        ),
        ("control plane killed and restarted", control_plane_outage),
    ];
    run_scenarios(&mut mesh(), scenarios);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn abort_everywhere(name: &str, path: &str, status: u16) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"namespace": "demo"},
            "rules": [{"match": {"path": {"prefix": path}}, "fault": {"abort": {"httpStatus": status}}}]
        }
    })
}

/// Sends `req` to `replica` until it answers `status` or `deadline` passes.
fn until_status(replica: &Replica, req: &Req, status: u16, deadline: Instant) -> bool {
    wait_until(deadline, || {
        replica.request(req).is_ok_and(|r| r.status == status)
    })
}

fn propagation(mesh: &mut Mesh) {
    let req = Req::get("/prop");
    let mut applied = Vec::new();
    let mut enforced = Vec::new();
    for (i, status) in [500u16, 501, 502, 503, 504].into_iter().enumerate() {
        let start = Instant::now();
        let written = mesh
            .put_policy(&abort_everywhere("t-prop", "/prop", status))
            .expect("write");
        // Enforcement: every sidecar answers with the new status.
        for replica in mesh.replicas() {
            assert!(
                until_status(replica, &req, status, start + Duration::from_secs(10)),
                "change {i}: {} never answered {status}",
                replica.name()
            );
        }
        enforced.push(start.elapsed());
        mesh.wait_all_applied(written.revision)
            .expect("every VM applied it");
        applied.push(start.elapsed());
    }
    eprintln!(
        "propagation over {} changes to {} sidecars: enforced everywhere after {enforced:.1?}; \
         every plugin VM logged it after {applied:.1?}",
        enforced.len(),
        mesh.replicas().count()
    );
    let slowest = enforced.iter().max().expect("changes");
    assert!(*slowest < Duration::from_secs(1), "propagation {slowest:?}");
    assert!(mesh.control().delete_policy("t-prop").expect("delete"));
}

fn expiry(mesh: &mut Mesh) {
    let written = mesh
        .apply(
            &json!({
                "metadata": {"name": "t-expiry"},
                "spec": {
                    "selector": {"namespace": "demo"},
                    "rules": [{"match": {"path": {"prefix": "/expiring"}}, "fault": {"duration_seconds": 1, "abort": {"httpStatus": 503}}}]
                }
            }),
            &["reviews", "ratings"],
        )
        .expect("apply");
    let expires = written.expires_at_ms[0].expect("a rule with a duration has an expiry");
    let req = Req::get("/expiring");
    // Until the server's expiry time every request is faulted; once it has passed, none is.
    // A request counts on the side of the boundary it was entirely on.
    let (mut before, mut after) = (0, 0);
    let deadline = Instant::now() + Duration::from_millis(expires.saturating_sub(now_ms()) + 500);
    while Instant::now() < deadline {
        for replica in mesh.replicas() {
            let sent = now_ms();
            let response = replica.request(&req).expect("request");
            let answered = now_ms();
            if answered < expires {
                assert_eq!(response.status, 503, "{} before expiry", replica.name());
                before += 1;
            } else if sent > expires {
                assert_eq!(
                    response.status,
                    200,
                    "{}: {} ms after expiry",
                    replica.name(),
                    sent - expires
                );
                after += 1;
            }
        }
    }
    eprintln!("expiry: {before} requests faulted before it, {after} passed after it");
    assert!(before > 0 && after > 0, "{before} before, {after} after");
    // The broadcaster drops the expired rule too; the policy (now without rules) stays.
    assert!(mesh.control().delete_policy("t-expiry").expect("delete"));
}

fn halt_and_resume(mesh: &mut Mesh) {
    mesh.apply(
        &abort_everywhere("t-halt", "/halt", 503),
        &["reviews", "ratings"],
    )
    .expect("apply");
    let req = Req::get("/halt/x");
    for workload in ["reviews", "ratings"] {
        let on = mesh.workload(workload).send(20, &req);
        assert_eq!(on.faulted_by("t-halt"), 20, "{workload}: {on}");
    }
    mesh.set_halt(true).expect("halt");
    for workload in ["reviews", "ratings"] {
        let halted = mesh.workload(workload).send(100, &req);
        assert_eq!(halted.faulted(), 0, "{workload} halted: {halted}");
        assert_eq!(halted.status(200), 100, "{workload} halted: {halted}");
    }
    for replica in mesh.replicas() {
        assert_eq!(replica.envoy().stat("wasmcustom.boifi_halted"), Some(1));
    }
    mesh.set_halt(false).expect("resume");
    for workload in ["reviews", "ratings"] {
        let resumed = mesh.workload(workload).send(20, &req);
        assert_eq!(
            resumed.faulted_by("t-halt"),
            20,
            "{workload} resumed: {resumed}"
        );
    }
    assert!(mesh.control().delete_policy("t-halt").expect("delete"));
}

fn control_plane_outage(mesh: &mut Mesh) {
    let written = mesh
        .apply(
            &json!({
                "metadata": {"name": "t-outage"},
                "spec": {
                    "selector": {"service": "reviews"},
                    "rules": [
                        {"match": {"path": {"prefix": "/outage"}}, "fault": {"abort": {"httpStatus": 503}}},
                        {"match": {"path": {"prefix": "/short"}}, "fault": {"duration_seconds": 2, "abort": {"httpStatus": 503}}}
                    ]
                }
            }),
            &["reviews"],
        )
        .expect("apply");
    let expires = written.expires_at_ms[1].expect("the short rule expires");
    let failures = |mesh: &Mesh| -> u64 {
        mesh.workload("reviews")
            .replicas()
            .iter()
            .filter_map(|r| r.envoy().stat("wasmcustom.boifi_config_fetch_failures"))
            .sum()
    };
    let failures_before = failures(mesh);

    mesh.control_mut().stop();
    // The sidecars notice (their polls fail) but keep the last policies.
    assert!(
        wait_until(Instant::now() + Duration::from_secs(10), || failures(mesh)
            >= failures_before + 2),
        "polls fail while the control plane is down"
    );
    let reviews = mesh.workload("reviews");
    let during = reviews.send(100, &Req::get("/outage"));
    assert_eq!(
        during.faulted_by("t-outage"),
        100,
        "last policies still applied: {during}"
    );
    let untouched = mesh.workload("ratings").send(40, &Req::get("/outage"));
    assert_eq!(untouched.status(200), 40, "traffic flows: {untouched}");
    // The short rule still stops on time, with nobody to tell the sidecars.
    let short = Req::get("/short");
    if now_ms() + 50 < expires {
        let before = reviews.send(10, &short);
        assert!(now_ms() < expires, "checked before the expiry");
        assert_eq!(before.faulted_by("t-outage"), 10, "{before}");
    }
    assert!(wait_until(
        Instant::now() + Duration::from_secs(5),
        || now_ms() > expires
    ));
    let after_expiry = reviews.send(20, &short);
    assert_eq!(
        after_expiry.status(200),
        20,
        "expired during the outage: {after_expiry}"
    );

    mesh.control_mut().restart().expect("restart");
    // A change made after the restart reaches every sidecar.
    let start = Instant::now();
    let written = mesh
        .put_policy(&abort_everywhere("t-outage", "/outage", 502))
        .expect("write after restart");
    mesh.wait_applied(written.revision, &["reviews", "ratings"])
        .expect("sidecars converge after the restart");
    eprintln!(
        "after the restart, every sidecar applied the next change within {:.1?}",
        start.elapsed()
    );
    for workload in ["reviews", "ratings"] {
        let after = mesh.workload(workload).send(20, &Req::get("/outage"));
        assert_eq!(after.status(502), 20, "{workload}: {after}");
    }
    assert!(mesh.control().delete_policy("t-outage").expect("delete"));
}
