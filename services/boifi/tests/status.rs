//! `boifi status` and `boifi apply --wait` on the local mesh: Envoy sidecars running the real
//! plugin poll a real `boifi serve` (policy-api reads its broadcaster's sidecar table in
//! process), or two sse-broadcaster replicas on etcd that policy-api gathers over HTTP. The
//! CLI is the real binary; "reality" is each Envoy's own stats.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use boifi_policy::wire::{SidecarList, SidecarState};
use boifi_tests::mesh::{
    run_scenarios, ControlPlaneKind, Mesh, MeshBuilder, Replica, Req, Scenario, WorkloadSpec,
};
use boifi_tests::wait_until;
use serde_json::{json, Value};

use support::{boifi, Run};

/// The plugin's poll wait in the harness: injected counts trail Envoy's stats by at most one.
const POLL_WAIT: Duration = Duration::from_secs(2);
/// Bounds a broken run only; the scenarios assert their own, tighter times.
const DEADLINE: Duration = Duration::from_secs(20);

fn server(mesh: &Mesh) -> String {
    format!("http://{}", mesh.control().api_addr())
}

/// `boifi <args>` against the mesh's API.
fn cli(mesh: &Mesh, args: &[&str]) -> Run {
    let url = server(mesh);
    boifi(args, &[("BOIFI_SERVER", url.as_str())], None)
}

/// `boifi status [args] -o json`.
fn status_json(mesh: &Mesh, args: &[&str]) -> Value {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let run = cli(mesh, &all).expect(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"))
}

/// Revision per pod, as `boifi status -o json` shows it.
fn shown_revisions(mesh: &Mesh) -> BTreeMap<String, u64> {
    let list: SidecarList = serde_json::from_value(status_json(mesh, &[])).expect("a list");
    list.sidecars
        .into_iter()
        .map(|s| (s.pod, s.revision))
        .collect()
}

/// A policy file in a fresh temp dir.
fn policy_file(policy: &Value) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.json");
    std::fs::write(&path, policy.to_string()).expect("write policy");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `to - from` in seconds, negative when `to` came first.
fn seconds_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
        - from.saturating_duration_since(to).as_secs_f64()
}

fn abort_policy(name: &str, selector: Value, path: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"selector": selector, "rules": [{
            "match": {"path": {"prefix": path}},
            "fault": {"abort": {"httpStatus": 503}}
        }]}
    })
}

#[test]
fn boifi_status_and_apply_wait_on_boifi_serve() {
    let mut mesh = MeshBuilder::new(ControlPlaneKind::Serve)
        .workload(WorkloadSpec::new("demo", "reviews").label("version", "v2"))
        .workload(WorkloadSpec::new("demo", "ratings"))
        .workload(WorkloadSpec::new("shop", "cart").replicas(1))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"));
    let scenarios: &[Scenario<Mesh>] = &[
        (
            "boifi status shows each sidecar and its revision within a second of reality",
            status_follows_the_sidecars,
        ),
        (
            "a policy's injected counts equal the sidecars' Envoy stats",
            injected_counts_match_envoy_stats,
        ),
        (
            "apply --wait returns once every selected sidecar enforces the policy",
            apply_wait_returns_when_enforced,
        ),
        (
            "apply --wait with a stopped sidecar times out naming it",
            apply_wait_names_a_stopped_sidecar,
        ),
    ];
    run_scenarios(&mut mesh, scenarios);
}

fn status_follows_the_sidecars(mesh: &mut Mesh) {
    let demo = mesh.replicas_of(&["reviews", "ratings"]);
    let cart = mesh.workload("cart").replicas()[0].pod().to_owned();
    let listed = wait_until(Instant::now() + DEADLINE, || {
        shown_revisions(mesh).len() == mesh.replicas().count()
    });
    assert!(listed, "{:?}", shown_revisions(mesh));
    let cart_before = shown_revisions(mesh)[&cart];
    let mut lags = Vec::new();
    let mut pass_times = Vec::new();
    for status in [500u16, 501, 502] {
        let written = mesh
            .put_policy(&abort_policy(
                "t-status",
                json!({"namespace": "demo"}),
                &format!("/status{status}"),
            ))
            .expect("write");
        let revision = written.revision;
        // When each sidecar really applied it (every plugin VM, by its Envoy's stats), and
        // when `boifi status` first showed it: both as the test's loop first saw them, so each
        // time is late by up to one pass of the loop (reading the stats, then running the CLI).
        let mut applied: BTreeMap<&str, Instant> = BTreeMap::new();
        let mut shown: BTreeMap<String, Instant> = BTreeMap::new();
        let mut passes = 0u32;
        let start = Instant::now();
        let done = wait_until(start + DEADLINE, || {
            passes += 1;
            for r in &demo {
                if r.has_applied(revision) {
                    applied.entry(r.pod()).or_insert_with(Instant::now);
                }
            }
            let now = Instant::now();
            for (pod, shown_revision) in shown_revisions(mesh) {
                if shown_revision >= revision {
                    shown.entry(pod).or_insert(now);
                }
            }
            demo.iter()
                .all(|r| applied.contains_key(r.pod()) && shown.contains_key(r.pod()))
        });
        assert!(done, "applied {applied:?}, shown {shown:?}");
        pass_times.push(start.elapsed() / passes);
        for r in &demo {
            let lag = seconds_between(applied[r.pod()], shown[r.pod()]);
            lags.push(lag);
            assert!(
                lag < 1.0,
                "{} shown {lag:.3}s after it applied revision {revision}",
                r.pod()
            );
        }
        // Not concerned, so not woken: still current at its own revision.
        let cart_now = shown_revisions(mesh)[&cart];
        assert_eq!(cart_now, cart_before);
    }
    eprintln!(
        "boifi status showed the new revision {lags:.3?} s after the sidecar applied it, as \
         sampled by a loop whose passes took {pass_times:.0?} (negative: seen in the same pass)"
    );

    // The table, as people read it.
    let run = cli(mesh, &["status"]).expect(0);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "POD",
            "NAMESPACE",
            "WORKLOAD",
            "REVISION",
            "STATE",
            "LAST",
            "SEEN",
            "INJECTED"
        ]
    );
    assert_eq!(lines.len(), 1 + mesh.replicas().count(), "{run}");
    let revision = mesh.control().policy("t-status").expect("policy")["status"]["revision"]
        .as_u64()
        .unwrap();
    for r in mesh.replicas() {
        let row = lines
            .iter()
            .find(|cells| cells[0] == r.pod())
            .unwrap_or_else(|| panic!("no row for {}:\n{run}", r.pod()));
        let expected = if r.pod() == cart {
            cart_before
        } else {
            revision
        };
        assert_eq!(row[3], expected.to_string(), "{run}");
        assert_eq!(row[4], "current", "{run}");
    }
    let run = cli(mesh, &["status", "--namespace", "shop"]).expect(0);
    assert_eq!(run.stdout.lines().count(), 2, "{run}");
    assert!(mesh.control().delete_policy("t-status").expect("delete"));
}

fn injected_counts_match_envoy_stats(mesh: &mut Mesh) {
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
            .send(100, &Req::get("/count"))
            .faulted_by("t-count");
    }
    assert!(faulted > 0);
    let sent = Instant::now();
    let stat = |r: &Replica, fault_type: &str| r.envoy().faults_injected("t-count", fault_type);
    let sidecars = mesh.replicas_of(&["reviews", "ratings"]);
    let envoy_total = |fault_type: &str| sidecars.iter().map(|r| stat(r, fault_type)).sum::<u64>();
    let mut last = Value::Null;
    let matched = wait_until(sent + DEADLINE, || {
        last = status_json(mesh, &["t-count"]);
        let per_sidecar_ok = sidecars.iter().all(|r| {
            let listed = last["sidecars"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["pod"] == r.pod()));
            let counts = listed.map(|s| &s["injected"]["t-count"]);
            counts.is_some_and(|c| c["abort"] == stat(r, "abort") && c["delay"] == stat(r, "delay"))
        });
        per_sidecar_ok
            && last["injected"]
                == json!({"abort": envoy_total("abort"), "delay": envoy_total("delay")})
    });
    let lag = sent.elapsed();
    assert!(
        matched,
        "boifi status: {last:#}\nEnvoy: abort {} delay {}",
        envoy_total("abort"),
        envoy_total("delay")
    );
    assert_eq!(
        envoy_total("abort"),
        faulted as u64,
        "the responses that said so"
    );
    assert!(lag < POLL_WAIT + Duration::from_secs(2), "{lag:?}");
    eprintln!(
        "boifi status t-count matched Envoy's stats {lag:.1?} after the traffic: {}",
        last["injected"]
    );

    let run = cli(mesh, &["status", "t-count"]).expect(0);
    assert!(
        run.stdout.contains("Enforcing:  4 of 4 selected sidecars"),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!(
            "Injected:   {} aborts, {} delays",
            envoy_total("abort"),
            envoy_total("delay")
        )),
        "{run}"
    );
    assert!(mesh.control().delete_policy("t-count").expect("delete"));
}

fn apply_wait_returns_when_enforced(mesh: &mut Mesh) {
    let reviews = mesh.replicas_of(&["reviews"]);
    for round in 0..3 {
        let policy = abort_policy(
            "t-wait",
            json!({"namespace": "demo", "service": "reviews", "labels": {"version": "v2"}}),
            &format!("/wait{round}"),
        );
        let (_dir, file) = policy_file(&policy);
        let start = Instant::now();
        let run = cli(mesh, &["apply", "--wait", "--timeout", "20s", "-f", &file]).expect(0);
        let returned = Instant::now();
        let revision = mesh.control().policy("t-wait").expect("policy")["status"]["revision"]
            .as_u64()
            .unwrap();
        assert!(
            run.stdout.contains(&format!(
                "policy/t-wait enforced by 2 sidecars at revision {revision}"
            )),
            "{run}"
        );
        // The API counts a sidecar once the VM that polls applied the revision; its other VMs
        // take it from shared data on their next tick, which `--wait` waits out.
        let applied: Vec<_> = reviews.iter().map(|r| r.applied_revisions()).collect();
        assert!(
            reviews.iter().all(|r| r.has_applied(revision)),
            "apply --wait returned, yet not every VM applied {revision}: {applied:?}"
        );
        // And they enforce it.
        for r in &reviews {
            let answer = r
                .request(&Req::get(&format!("/wait{round}")))
                .expect("request");
            assert_eq!(answer.status, 503, "{}", r.pod());
        }
        eprintln!("apply --wait took {:.0?}", returned - start);
    }

    // A policy that selects no live sidecar: done at once, with a warning.
    let (_dir, file) = policy_file(&abort_policy(
        "t-nobody",
        json!({"namespace": "nowhere"}),
        "/x",
    ));
    let run = cli(mesh, &["apply", "--wait", "-f", &file]).expect(0);
    assert!(run.stdout.contains("policy/t-nobody created"), "{run}");
    assert!(
        run.stderr
            .contains("warning: policy/t-nobody selects no live sidecar"),
        "{run}"
    );
    let run = cli(mesh, &["status", "t-nobody"]).expect(0);
    assert!(
        run.stdout
            .contains("Enforcing:  no live sidecar is selected"),
        "{run}"
    );
    for name in ["t-wait", "t-nobody"] {
        assert!(mesh.control().delete_policy(name).expect("delete"));
    }
}

fn apply_wait_names_a_stopped_sidecar(mesh: &mut Mesh) {
    let stopped = mesh.workload("ratings").replicas()[1].pod().to_owned();
    let running = mesh.workload("ratings").replicas()[0].pod().to_owned();
    let name = mesh.workload("ratings").replicas()[1].name().to_owned();
    mesh.replica_mut(&name).stop();
    // Still live for the table's TTL (30 s): it polled moments ago.
    let (_dir, file) = policy_file(&abort_policy(
        "t-stopped",
        json!({"service": "ratings"}),
        "/s",
    ));
    let start = Instant::now();
    let run = cli(mesh, &["apply", "--wait", "--timeout", "3s", "-f", &file]).expect(1);
    let took = start.elapsed();
    assert!(run.stdout.contains("policy/t-stopped created"), "{run}");
    assert!(
        run.stderr.contains("error: policy/t-stopped: not enforced after 3s: 1 of 2 selected sidecars enforce revision"),
        "{run}"
    );
    assert!(run.stderr.contains(&format!("lagging: {stopped}")), "{run}");
    assert!(!run.stderr.contains(&running), "{run}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let shown = status_json(mesh, &["t-stopped"]);
    assert_eq!(shown["enforcement"]["lagging"], json!([stopped]));
    let behind: Vec<&Value> = shown["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == json!(SidecarState::Behind.name()))
        .collect();
    assert_eq!(behind.len(), 1, "{shown:#}");
    assert!(mesh.control().delete_policy("t-stopped").expect("delete"));
}

#[test]
fn policy_api_gathers_two_broadcaster_replicas_on_etcd() {
    let mut mesh = MeshBuilder::new(ControlPlaneKind::Separate)
        .broadcasters(2)
        .workload(WorkloadSpec::new("demo", "reviews"))
        .workload(WorkloadSpec::new("demo", "ratings").broadcaster(1))
        .start()
        .unwrap_or_else(|e| panic!("mesh: {e}"));
    let all_listed = wait_until(Instant::now() + DEADLINE, || {
        mesh.control()
            .api_sidecars("")
            .is_ok_and(|l| l.sidecars.len() == 4)
    });
    let list = mesh.control().api_sidecars("").expect("list");
    assert!(all_listed, "{list:?}");
    let mut replicas: Vec<(&str, u64)> = list
        .replicas
        .iter()
        .map(|r| (r.replica.as_str(), r.sidecars))
        .collect();
    replicas.sort_unstable();
    assert_eq!(
        replicas,
        [("sse-broadcaster-0", 2), ("sse-broadcaster-1", 2)]
    );
    assert!(list.unreachable.is_empty(), "{list:?}");

    // One policy over both replicas' sidecars: enforced by all four within a second.
    let written = mesh
        .put_policy(&abort_policy(
            "t-both",
            json!({"namespace": "demo"}),
            "/both",
        ))
        .expect("write");
    let start = Instant::now();
    let mut last = Value::Null;
    let enforced = wait_until(start + DEADLINE, || {
        last = mesh.control().policy("t-both").expect("policy");
        last["status"]["enforcement"]["enforcing"] == 4
    });
    let took = start.elapsed();
    assert!(enforced, "{last:#}");
    assert_eq!(
        last["status"]["enforcement"],
        json!({"selected": 4, "enforcing": 4, "lagging": [], "lagging_count": 0})
    );
    // The polling VM of each sidecar applied it; the others follow within their 50 ms tick.
    let every_vm = wait_until(Instant::now() + Duration::from_millis(200), || {
        mesh.replicas().all(|r| r.has_applied(written.revision))
    });
    assert!(every_vm);
    assert!(took < Duration::from_secs(1), "{took:?}");
    eprintln!("policy-api said 4 of 4 enforce it {took:.0?} after the write");
    let run = cli(&mesh, &["status"]).expect(0);
    assert_eq!(run.stdout.lines().count(), 5, "{run}");

    // A replica that goes away is named, never a failed request.
    mesh.control_mut().stop_broadcaster(1);
    let stopped = Instant::now();
    let named = wait_until(stopped + DEADLINE, || {
        mesh.control()
            .api_sidecars("")
            .is_ok_and(|l| l.unreachable.len() == 1)
    });
    let took = stopped.elapsed();
    let list = mesh.control().api_sidecars("").expect("list");
    assert!(named, "{list:?}");
    // The last gathering is reused for 500 ms; a refused connection fails at once.
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        list.unreachable[0].address,
        mesh.control().stream_addrs()[1].to_string()
    );
    let pods: Vec<&str> = list.sidecars.iter().map(|s| s.pod.as_str()).collect();
    assert!(pods.iter().all(|p| p.starts_with("reviews")), "{pods:?}");
    let policy = mesh.control().policy("t-both").expect("policy");
    assert_eq!(policy["status"]["enforcement"]["unreachable_replicas"], 1);
    let run = cli(&mesh, &["status"]).expect(0);
    assert!(run.stderr.contains("did not answer"), "{run}");
    let (_dir, file) = policy_file(&abort_policy(
        "t-both",
        json!({"namespace": "demo"}),
        "/both2",
    ));
    let run = cli(&mesh, &["apply", "--wait", "--timeout", "2s", "-f", &file]).expect(1);
    assert!(
        run.stderr
            .contains("1 broadcaster replica(s) did not answer"),
        "{run}"
    );
}

#[test]
fn without_sidecars_status_says_so_and_apply_wait_returns_at_once() {
    let server = support::Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let run = boifi(&["status"], &env, None).expect(0);
    assert_eq!(run.stdout, "", "{run}");
    assert_eq!(
        run.stderr,
        format!("No sidecars report to {url}.\n"),
        "{run}"
    );
    let run = boifi(&["status", "-o", "json"], &env, None).expect(0);
    let list: SidecarList = serde_json::from_str(&run.stdout).expect("a list");
    assert!(list.sidecars.is_empty() && list.unreachable.is_empty());
    assert_eq!(list.replicas[0].address, "in-process");

    let (_dir, file) = policy_file(&abort_policy("t-alone", json!({"namespace": "demo"}), "/a"));
    let start = Instant::now();
    let run = boifi(&["apply", "--wait", "-f", &file], &env, None).expect(0);
    assert!(start.elapsed() < Duration::from_secs(5), "{run}");
    assert_eq!(run.stdout, "policy/t-alone created\n", "{run}");
    assert_eq!(
        run.stderr,
        "warning: policy/t-alone selects no live sidecar: nothing to wait for\n"
    );
    let run = boifi(&["status", "t-alone"], &env, None).expect(0);
    assert!(
        run.stdout.starts_with("Policy:     t-alone\nRevision:   "),
        "{run}"
    );
    assert!(run.stdout.contains("Selector:   demo/*\n"), "{run}");
    assert!(
        run.stdout
            .contains("Enforcing:  no live sidecar is selected\n"),
        "{run}"
    );
    assert!(
        run.stdout.contains("Injected:   0 aborts, 0 delays\n"),
        "{run}"
    );
    let run = boifi(&["status", "nope"], &env, None).expect(1);
    assert!(run.stderr.contains("policy \"nope\" not found"), "{run}");
    let run = boifi(&["status", "t-alone", "--namespace", "x"], &env, None).expect(2);
    assert!(run.stderr.contains("cannot be used with"), "{run}");
}
