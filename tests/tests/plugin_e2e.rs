//! End to end: a policy written through policy-api reaches a real Envoy's plugin through the
//! sse-broadcaster's long poll, and the plugin injects exactly that fault.
//!
//! policy-api and the broadcaster run in this process on one embedded store (as `boifi serve`
//! does); Envoy and the plugin are the real ones.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_policy_api::{AppState, Auth};
use boifi_sse_broadcaster::{Broadcaster, Settings, SystemClock};
use boifi_store::{open_store, StoreSettings};
use boifi_tests::envoy::{http_request, Envoy, EnvoyBuilder, HttpResponse, Upstream};
use boifi_tests::wait_until;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(10);

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// policy-api and the broadcaster on one embedded store, in a runtime of their own, stopped on
/// drop.
struct ControlPlane {
    api: SocketAddr,
    broadcaster: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    broadcaster_service: Option<Broadcaster>,
    runtime: Runtime,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = runtime
            .block_on(open_store(&StoreSettings {
                etcd_endpoints: Vec::new(),
                etcd_prefix: String::new(),
                data_dir: dir.path().to_path_buf(),
            }))
            .expect("open the embedded store");
        let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let (api_listener, b_listener) = (bind(), bind());
        let api = api_listener.local_addr().expect("api addr");
        let broadcaster_addr = b_listener.local_addr().expect("broadcaster addr");
        let state = AppState::new(store.clone(), Auth::disabled()).expect("api state");
        let (api_stop, api_stopped) = oneshot::channel::<()>();
        runtime.spawn(boifi_policy_api::server::run(api_listener, state, async {
            let _ = api_stopped.await;
        }));
        let broadcaster = {
            let _guard = runtime.enter();
            Broadcaster::start(store, Arc::new(SystemClock), Settings::default())
                .expect("start the broadcaster")
        };
        let (b_stop, b_stopped) = oneshot::channel::<()>();
        runtime.spawn(boifi_sse_broadcaster::run(
            b_listener,
            broadcaster.clone(),
            async {
                let _ = b_stopped.await;
            },
        ));
        let plane = ControlPlane {
            api,
            broadcaster: broadcaster_addr,
            stops: vec![api_stop, b_stop],
            broadcaster_service: Some(broadcaster),
            runtime,
            _dir: dir,
        };
        for addr in [plane.api, plane.broadcaster] {
            assert!(
                wait_until(deadline(), || get(addr, "/v1/ready")
                    .is_ok_and(|r| r.status == 200)),
                "{addr} ready"
            );
        }
        plane
    }

    /// Creates or replaces a policy; returns the store revision of the write.
    fn put(&self, policy: &Value) -> u64 {
        let body = policy.to_string();
        let r = http_request(
            self.api,
            "POST",
            "/v1/policies",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
            TIMEOUT,
        )
        .expect("POST /v1/policies");
        assert!(
            matches!(r.status, 200 | 201),
            "{} {}",
            r.status,
            r.body_text()
        );
        let stored: Value = serde_json::from_slice(&r.body).expect("policy JSON");
        stored["status"]["revision"]
            .as_u64()
            .expect("status.revision")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The broadcaster's tasks belong to the runtime: end them inside it, then stop both
        // servers; dropping the runtime afterwards cancels whatever is left.
        let _guard = self.runtime.enter();
        self.broadcaster_service.take();
        self.stops.clear();
    }
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
            && envoy
                .log()
                .matches(&format!("policies at revision {revision}:"))
                .count()
                >= envoy.plugin_vms()
    });
    assert!(
        reached,
        "plugin reached revision {revision}: {:?}",
        envoy.stat("wasmcustom.boifi_config_revision")
    );
}

#[test]
fn abort_policy_is_enforced_with_header_body_and_stats() {
    let plane = ControlPlane::start();
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster.port()).start();

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

    // Policy and fault type are tags, not parts of the name, once stats_tags apply.
    let prometheus = envoy
        .admin_get("/stats/prometheus")
        .expect("prometheus stats");
    let line = prometheus
        .lines()
        .find(|l| l.starts_with("boifi_faults_injected{"))
        .unwrap_or_else(|| panic!("faults counter exported:\n{prometheus}"));
    assert!(
        line.contains(r#"policy="reviews-abort""#) && line.contains(r#"fault_type="abort""#),
        "{line}"
    );
    assert!(line.ends_with(" 10"), "{line}");
}

#[test]
fn delay_is_never_early_and_only_a_few_ms_late() {
    const DELAY_MS: u64 = 150;
    let plane = ControlPlane::start();
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), plane.broadcaster.port()).start();
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
