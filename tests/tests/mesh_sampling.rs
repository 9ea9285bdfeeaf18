//! Percentage sampling across replicas on the local mesh: a fractional percentage holds over
//! thousands of requests spread over three sidecars (each sampling on its own), and 100% and 0%
//! are exact.

use boifi_tests::mesh::{
    binomial_bound_999, run_scenarios, ControlPlaneKind, Mesh, MeshBuilder, Req, Scenario,
    WorkloadSpec,
};
use serde_json::json;

fn mesh() -> Mesh {
    MeshBuilder::new(ControlPlaneKind::Separate)
        .workload(WorkloadSpec::new("demo", "reviews").replicas(3))
        .workload(WorkloadSpec::new("demo", "ratings"))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"))
}

#[test]
fn percentages_hold_across_replicas() {
    let scenarios: &[Scenario<Mesh>] = &[
        ("30% within the 99.9% binomial bound", thirty_percent),
        ("100% and 0% are exact", all_or_nothing),
    ];
    run_scenarios(&mut mesh(), scenarios);
}

fn thirty_percent(mesh: &mut Mesh) {
    const N: usize = 2400;
    const P: f64 = 0.30;
    mesh.apply(
        &json!({
            "metadata": {"name": "t-thirty"},
            "spec": {
                "selector": {"service": "reviews"},
                "rules": [{"match": {"path": {"prefix": "/sampled"}}, "fault": {"percentage": 30, "abort": {"httpStatus": 503}}}]
            }
        }),
        &["reviews"],
    )
    .expect("apply");
    let outcomes = mesh.workload("reviews").send(N, &Req::get("/sampled"));
    let faulted = outcomes.faulted_by("t-thirty");
    let expected = N as f64 * P;
    let bound = binomial_bound_999(N, P);
    eprintln!(
        "30% of {N}: {faulted} faulted (expected {expected:.0} +- {bound:.1}); passed per replica {:?}",
        outcomes.served_by
    );
    assert_eq!(outcomes.errors, 0, "{outcomes}");
    assert_eq!(outcomes.status(503), faulted, "every 503 is a fault");
    assert_eq!(
        outcomes.status(200),
        N - faulted,
        "the rest pass: {outcomes}"
    );
    assert!(
        (faulted as f64 - expected).abs() <= bound,
        "{faulted} of {N} faulted, expected {expected:.0} +- {bound:.1}"
    );
    // Each replica samples on its own, and each lets some through and faults some.
    let share = N / mesh.workload("reviews").replicas().len();
    for replica in mesh.workload("reviews").replicas() {
        let passed = outcomes.served_by.get(replica.name()).copied().unwrap_or(0);
        assert!(
            passed > 0 && passed < share,
            "{}: {passed} of {share} passed",
            replica.name()
        );
    }
    assert!(mesh.control().delete_policy("t-thirty").expect("delete"));
}

fn all_or_nothing(mesh: &mut Mesh) {
    mesh.apply(
        &json!({
            "metadata": {"name": "t-exact"},
            "spec": {
                "selector": {"namespace": "demo"},
                "rules": [
                    {"match": {"path": {"exact": "/always"}}, "fault": {"percentage": 100, "abort": {"httpStatus": 503}}},
                    {"match": {"path": {"exact": "/never"}}, "fault": {"percentage": 0, "abort": {"httpStatus": 503}}}
                ]
            }
        }),
        &["reviews", "ratings"],
    )
    .expect("apply");
    for workload in ["reviews", "ratings"] {
        let always = mesh.workload(workload).send(900, &Req::get("/always"));
        assert_eq!(always.faulted_by("t-exact"), 900, "{workload}: {always}");
        assert_eq!(always.status(503), 900, "{workload}: {always}");
        let never = mesh.workload(workload).send(900, &Req::get("/never"));
        assert_eq!(never.faulted(), 0, "{workload}: {never}");
        assert_eq!(never.upstream_answered(), 900, "{workload}: {never}");
    }
    assert!(mesh.control().delete_policy("t-exact").expect("delete"));
}
