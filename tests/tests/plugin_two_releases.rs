//! Two BOIFI releases whose WasmPlugins both target one workload (say one installed in
//! `boifi`, one in `chaos-team`): one Envoy, two plugin filters, each polling its own control
//! plane. istiod gives neither a `vm_id` (`tests/src/istio.rs`), so both run in Envoy's one
//! shared-data namespace; each must still elect its own poller and apply its own policies.

use std::time::Duration;

use boifi_sse_broadcaster::Settings;
use boifi_tests::envoy::{Envoy, EnvoyBuilder, Upstream};
use boifi_tests::http::http_request;
use boifi_tests::services::{deadline, Services};
use boifi_tests::wait_until;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn abort(name: &str, path: &str, status: u16) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"rules": [{"match": {"path": {"prefix": path}},
                            "fault": {"abort": {"httpStatus": status}}}]}
    })
}

/// The status of a GET `path` through the sidecar and the policy that faulted it.
fn get(envoy: &Envoy, path: &str) -> (u16, Option<String>) {
    let response = http_request(envoy.addr(), "GET", path, &[], None, TIMEOUT).expect("request");
    let policy = response.header("x-boifi-fault").map(str::to_owned);
    (response.status, policy)
}

#[test]
fn two_releases_in_one_envoy_each_apply_their_own_policies() {
    let first = Services::embedded(Settings::default(), None);
    let second = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    // Four workers: five plugin VMs per release, all in one shared-data namespace.
    let envoy = EnvoyBuilder::new(upstream.port(), first.broadcaster().port())
        .other_release("chaos-team", second.broadcaster().port())
        .concurrency(4)
        .start();
    first.put(&abort("first-release", "/first", 503));
    second.put(&abort("second-release", "/second", 429));

    let both = wait_until(deadline(), || {
        (0..20).all(|_| {
            get(&envoy, "/first") == (503, Some("first-release".into()))
                && get(&envoy, "/second") == (429, Some("second-release".into()))
        })
    });
    assert!(
        both,
        "/first: {:?}, /second: {:?}\n{}",
        get(&envoy, "/first"),
        get(&envoy, "/second"),
        envoy.log()
    );
    assert_eq!(get(&envoy, "/other"), (200, None), "nothing else faulted");

    // A halt of one release stops only its faults.
    first.set_halt(true);
    let halted = wait_until(deadline(), || {
        (0..20).all(|_| get(&envoy, "/first") == (200, None))
    });
    assert!(halted, "/first: {:?}", get(&envoy, "/first"));
    for _ in 0..20 {
        assert_eq!(get(&envoy, "/second"), (429, Some("second-release".into())));
    }
}
