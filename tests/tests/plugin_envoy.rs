//! The real plugin in a real Envoy, without a control plane: whatever goes wrong on the
//! plugin's side, traffic passes untouched (fail open), and the plugin says why in its log
//! and stats.

use std::process::Command;
use std::time::{Duration, Instant};

use boifi_tests::binaries::{envoy_binary, plugin_wasm};
use boifi_tests::envoy::{EnvoyBuilder, Upstream};
use boifi_tests::http::http_request;
use boifi_tests::{free_port, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
fn unreachable_broadcaster_lets_traffic_through_and_is_reported() {
    let upstream = Upstream::start();
    // Nothing listens there: every poll fails.
    let envoy = EnvoyBuilder::new(upstream.port(), free_port()).start();

    for i in 0..20 {
        let path = format!("/api/items/{i}");
        let r = http_request(
            envoy.addr(),
            "GET",
            &path,
            &[("x-user", "test")],
            None,
            TIMEOUT,
        )
        .expect("request through Envoy");
        assert_eq!(r.status, 200, "request {i}: {}", r.body_text());
        assert_eq!(r.body_text(), Upstream::BODY);
        assert_eq!(r.header("x-upstream"), Some("1"));
        assert_eq!(r.header("x-boifi-fault"), None);
    }
    let r = http_request(envoy.addr(), "POST", "/api", &[], Some(b"payload"), TIMEOUT)
        .expect("POST through Envoy");
    assert_eq!(r.status, 200);
    assert_eq!(upstream.requests(), 21);

    // Polls fail, are counted and retried with backoff; no policy set is in use.
    assert!(
        wait_until(deadline(), || envoy
            .stat("wasmcustom.boifi_config_fetch_failures")
            .is_some_and(|n| n >= 3)),
        "fetch failures counted: {:?}",
        envoy.stat("wasmcustom.boifi_config_fetch_failures")
    );
    assert_eq!(envoy.stat("wasmcustom.boifi_config_revision"), Some(0));
    assert_eq!(envoy.stat("wasmcustom.boifi_fail_open"), None);
    let log = envoy.log();
    assert!(log.contains("policy poll failed"), "log says why:\n{log}");
    assert!(
        log.contains("workload demo/reviews"),
        "identity read:\n{log}"
    );
    assert!(
        !log.contains("workload identity:"),
        "no identity problems:\n{log}"
    );

    // Prometheus sees the plugin's stats under their own names.
    let prometheus = envoy
        .admin_get("/stats/prometheus")
        .expect("prometheus stats");
    assert!(
        prometheus.contains("boifi_config_fetch_failures"),
        "{prometheus}"
    );
}

#[test]
fn invalid_plugin_config_fails_open() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.port(), free_port())
        .plugin_config(r#"{"broadcaster_cluster":"boifi-broadcaster","poll_wait_ms":"soon"}"#)
        .start();
    for _ in 0..5 {
        let r = http_request(envoy.addr(), "GET", "/", &[], None, TIMEOUT).expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.body_text(), Upstream::BODY);
    }
    assert_eq!(upstream.requests(), 5);
    let log = envoy.log();
    assert!(
        log.contains("invalid plugin configuration") && log.contains("poll_wait_ms: expected"),
        "error names the field:\n{log}"
    );
    assert!(envoy
        .stat("wasmcustom.boifi_fail_open")
        .is_some_and(|n| n >= 1));
    // An inactive plugin does not poll.
    assert_eq!(envoy.stat("wasmcustom.boifi_config_fetch_failures"), None);
}

/// `wasm/plugin/envoy.yaml`, the config for running the plugin by hand, still loads with the
/// plugin in it (`--mode validate` creates the Wasm VM without serving).
#[test]
fn hand_run_config_loads() {
    let module = plugin_wasm().expect("plugin module");
    let mut config = include_str!("../../wasm/plugin/envoy.yaml").to_owned();
    for (key, value) in [
        (
            "NODE_ID",
            "sidecar~127.0.0.1~reviews-1.demo~demo.svc.cluster.local".to_owned(),
        ),
        ("WORKLOAD_NAME", "reviews".to_owned()),
        ("NAMESPACE", "demo".to_owned()),
        ("LABELS_JSON", r#"{"app": "reviews"}"#.to_owned()),
        ("ADMIN_PORT", free_port().to_string()),
        ("LISTEN_PORT", free_port().to_string()),
        ("UPSTREAM_PORT", free_port().to_string()),
        ("BROADCASTER_PORT", free_port().to_string()),
        ("PLUGIN_PATH", module.display().to_string()),
        ("PLUGIN_CONFIG", EnvoyBuilder::default_plugin_config()),
    ] {
        config = config.replace(&format!("{{{{{key}}}}}"), &value);
    }
    assert!(!config.contains("{{"), "placeholder left:\n{config}");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(envoy_binary().expect("envoy"))
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
