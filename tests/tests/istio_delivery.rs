//! The plugin delivered as istiod delivers the chart's WasmPlugin: over ECDS, with
//! pilot-agent's fetch step in front (see `boifi_tests::istio`). A WasmPlugin change is a new
//! ECDS resource that Envoy applies live; these tests check that requests keep flowing through
//! each kind of change a real mesh sees.
//!
//! policy-api and the broadcaster run in this process on one embedded store; Envoy and the
//! plugin are the real ones.

use std::fs;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boifi_sse_broadcaster::Settings;
use boifi_tests::binaries::plugin_wasm;
use boifi_tests::envoy::{
    Envoy, EnvoyBuilder, Upstream, BROADCASTER_AUTHORITY, BROADCASTER_CLUSTER,
};
use boifi_tests::http::{http_request, HttpResponse};
use boifi_tests::istio::{sha256_hex, FailStrategy};
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

fn is_faulted(r: &HttpResponse) -> bool {
    r.status == 503 && r.header("x-boifi-fault") == Some("reviews-abort")
}

/// An abort on `/api` for `demo/reviews`; returns its revision.
fn put_abort(plane: &Services) -> u64 {
    plane.put(&json!({
        "metadata": {"name": "reviews-abort"},
        "spec": {
            "selector": {"namespace": "demo", "service": "reviews"},
            "rules": [{"match": {"path": {"prefix": "/api"}}, "fault": {"abort": {"httpStatus": 503}}}]
        }
    }))
}

fn wait_faulted(envoy: &Envoy) {
    let faulted = wait_until(deadline(), || {
        get(envoy.addr(), "/api").is_ok_and(|r| is_faulted(&r))
    });
    assert!(faulted, "the abort is enforced:\n{}", envoy.log());
}

/// Sends requests to an unfaulted path from a second thread while `change` runs, and returns
/// how many were sent and every answer that was not a plain 200 from the upstream.
fn traffic_during(envoy: &Envoy, change: impl FnOnce()) -> (usize, Vec<String>) {
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match get(envoy.addr(), "/ok") {
                    Ok(r) if r.status == 200 && r.body_text() == Upstream::BODY => {}
                    Ok(r) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.body_text()))
                    }
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        });
        change();
        // A few more requests after the change landed.
        let after = sent.load(Ordering::Relaxed) + 20;
        wait_until(deadline(), || sent.load(Ordering::Relaxed) >= after);
        stop.store(true, Ordering::Relaxed);
    });
    (sent.into_inner(), failures.into_inner().unwrap())
}

#[test]
fn a_plugin_config_change_takes_effect_without_failing_requests() {
    let plane = Services::embedded(Settings::default(), None);
    put_abort(&plane);
    let upstream = Upstream::start();
    // First the WasmPlugin names a cluster the sidecar does not have: no policies arrive.
    let wrong = format!(
        r#"{{"broadcaster_cluster":"outbound|8081||nowhere.boifi.svc.cluster.local","broadcaster_authority":"{BROADCASTER_AUTHORITY}","backoff_min_ms":50,"backoff_max_ms":200}}"#
    );
    let builder = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port());
    let envoy = builder.clone().plugin_config(&wrong).start();
    assert_eq!(get(envoy.addr(), "/api").expect("request").status, 200);

    // `helm upgrade` fixes pluginConfig: istiod sends a new ECDS resource.
    let fixed = format!(
        r#"{{"broadcaster_cluster":"{BROADCASTER_CLUSTER}","broadcaster_authority":"{BROADCASTER_AUTHORITY}","poll_wait_ms":2000,"backoff_min_ms":50,"backoff_max_ms":500}}"#
    );
    let module = plugin_wasm().expect("plugin module");
    let (sent, failures) = traffic_during(&envoy, || {
        let plugin = builder.clone().plugin_config(&fixed).wasm_plugin(&module);
        envoy
            .deliver_plugin(&plugin)
            .expect("new pluginConfig delivered");
        wait_faulted(&envoy);
    });
    assert!(sent > 20, "traffic ran during the change: {sent}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
}

#[test]
fn a_module_that_cannot_load_leaves_traffic_flowing() {
    let plane = Services::embedded(Settings::default(), None);
    put_abort(&plane);
    let upstream = Upstream::start();
    let builder = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port());
    let envoy = builder.start();
    wait_faulted(&envoy);
    let module = plugin_wasm().expect("plugin module");
    let dir = tempfile::tempdir().expect("temp dir");

    // A module that passes pilot-agent's checksum but that V8 cannot load (say, a broken
    // build pushed and pinned): Envoy rejects the ECDS update and keeps the running plugin.
    let broken = dir.path().join("broken.wasm");
    fs::write(&broken, b"\0asm\x01\0\0\0 not a module").expect("write");
    let (_, failures) = traffic_during(&envoy, || {
        let err = envoy
            .deliver_plugin(&builder.wasm_plugin(&broken))
            .expect_err("Envoy rejects a module that does not load");
        assert!(err.contains("rejected"), "{err}");
    });
    assert!(failures.is_empty(), "{failures:?}");
    wait_faulted(&envoy);

    // A module that fails its checksum (or cannot be fetched): a FAIL_CLOSE plugin reaches
    // Envoy not at all, and the running one stays.
    let mut tampered = builder.wasm_plugin(&module);
    tampered.sha256 = Some(sha256_hex(b"another module"));
    tampered.fail_strategy = FailStrategy::FailClose;
    assert!(envoy.deliver_plugin(&tampered).is_err());
    wait_faulted(&envoy);

    // The chart's FAIL_OPEN: pilot-agent hands Envoy an allow-all filter instead, so the
    // sidecar stops faulting and passes every request untouched.
    tampered.fail_strategy = FailStrategy::FailOpen;
    let (sent, failures) = traffic_during(&envoy, || {
        envoy
            .deliver_plugin(&tampered)
            .expect("allow-all delivered");
    });
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    let r = get(envoy.addr(), "/api").expect("request");
    assert_eq!((r.status, r.body_text()), (200, Upstream::BODY.to_owned()));
}

/// Envoy's behaviour, documented in docs/deploy.md: when the *first* module a sidecar gets
/// cannot be loaded, the filter has no config and Envoy answers 500 on that listener
/// (Istio sets no default config). pilot-agent's sha256 check is what keeps a corrupt download
/// from getting there, which is why the chart refuses an unpinned WasmPlugin.
#[test]
fn a_first_module_that_cannot_load_fails_requests_as_envoy_does() {
    let plane = Services::embedded(Settings::default(), None);
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.wasm");
    fs::write(&broken, b"\0asm\x01\0\0\0 not a module").expect("write");
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster().port())
        .module(&broken)
        .start();
    let r = get(envoy.addr(), "/ok").expect("request");
    assert_eq!(r.status, 500, "{}", r.body_text());
    assert_eq!(upstream.requests(), 0);
}
