//! Health, readiness, metrics and request errors of the standalone broadcaster.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;

use boifi_sse_broadcaster::{run, Broadcaster, Settings, SystemClock};
use boifi_store::{open_store, AuditRetention, StoreSettings};
use boifi_tests::http::{call, request};
use boifi_tests::prometheus::promtool_check_metrics;
use boifi_tests::services::{deadline, Services, DEADLINE};
use boifi_tests::wait_until;
use common::*;
use serde_json::Value;

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    call(addr, "GET", path, None, deadline()).expect(path)
}

#[test]
fn health_ready_and_metrics() {
    let services = Services::embedded(Settings::default(), None);
    let addr = services.broadcaster();
    let (status, body) = get(addr, "/v1/health");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = get(addr, "/v1/ready");
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(ready["revision"].is_u64());

    // Traffic, so every metric family has samples.
    let mut client = open_stream(addr, "", None);
    next_event(&mut client);
    services.put(&policy("a", "reviews", 0));
    next_event(&mut client);
    let text = services.metrics();
    for name in [
        "boifi_broadcaster_clients{mode=\"stream\"} 1",
        "boifi_broadcaster_clients{mode=\"poll\"} 0",
        "boifi_broadcaster_events_sent_total{event=\"policy\"} 1",
        "boifi_broadcaster_events_sent_total{event=\"snapshot\"} 1",
        "boifi_broadcaster_fanout_duration_seconds_count 1",
        "boifi_broadcaster_watch_restarts_total 0",
        "boifi_broadcaster_snapshot_reloads_total 0",
        "boifi_broadcaster_store_revision",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    promtool_check_metrics(&text);
}

#[test]
fn bad_requests_get_json_errors() {
    let services = Services::embedded(Settings::default(), None);
    let addr = services.broadcaster();
    let (status, body) = get(addr, "/v1/config/stream?mode=push&servce=x");
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "invalid_request");
    assert_eq!(error["details"][0]["field"], "query");
    assert!(error["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("servce"));
    let (status, body) = get(addr, "/v1/config/stream?mode=poll&wait_ms=soon&labels=v2");
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    let fields: Vec<_> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["labels", "wait_ms"]);

    let (status, body) = call(addr, "POST", "/v1/config/stream", Some("{}"), deadline()).unwrap();
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "method_not_allowed"
    );
    let (status, body) = get(addr, "/v1/nothing");
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "not_found"
    );
}

#[test]
fn not_ready_until_the_store_answers() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // An etcd endpoint where nothing listens: the first snapshot never loads.
    let nothing = boifi_tests::free_port();
    let store = runtime
        .block_on(open_store(&StoreSettings {
            etcd_endpoints: vec![format!("http://127.0.0.1:{nothing}")],
            etcd_prefix: "/boifi/".into(),
            data_dir: Default::default(),
            audit_retention: AuditRetention::default(),
        }))
        .unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let _guard = runtime.enter();
        let broadcaster =
            Broadcaster::start(store, Arc::new(SystemClock), Settings::default()).unwrap();
        assert_eq!(broadcaster.revision(), None);
        runtime.spawn(run(listener, broadcaster, async {
            let _ = stopped.await;
        }))
    };
    assert!(wait_until(deadline(), || call(
        addr,
        "GET",
        "/v1/health",
        None,
        deadline()
    )
    .is_ok()));
    let (status, body) = get(addr, "/v1/ready");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "not_ready"
    );
    for query in ["", "?mode=poll"] {
        let response = request(
            addr,
            "GET",
            &format!("/v1/config/stream{query}"),
            &[],
            None,
            deadline(),
        )
        .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.header("retry-after"), Some("1"));
    }
    stop.send(()).unwrap();
    runtime
        .block_on(async { tokio::time::timeout(DEADLINE, server).await })
        .expect("stops within the deadline")
        .unwrap()
        .unwrap();
}
