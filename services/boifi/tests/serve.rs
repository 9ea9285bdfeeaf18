//! `boifi serve` in-process and as the real binary: one port answers the API and the stream, a
//! policy written through the API shows up on the stream, one `/metrics` shows both halves,
//! and shutdown does not wait for open streams.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use boifi::serve::{self, Serve, ServeConfig};
use boifi_policy_api::AuthConfig;
use boifi_tests::free_port;
use boifi_tests::http::{self, ready};
use serde_json::{json, Value};

mod support;

const DEADLINE: Duration = Duration::from_secs(20);

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every call of these tests, through boifi-tests' ureq agent.
fn agent() -> ureq::Agent {
    http::agent(Duration::from_secs(10))
}

fn example_policy() -> Value {
    json!({
        "metadata": { "name": "reviews-abort" },
        "spec": {
            "selector": { "namespace": "demo", "service": "reviews" },
            "rules": [ { "fault": { "abort": { "httpStatus": 503 } } } ]
        }
    })
}

/// Creates the example policy and returns the stream's long-poll body for `service`.
fn create_and_poll(base: &str, service: &str) -> String {
    let agent = agent();
    let res = agent
        .post(format!("{base}/v1/policies"))
        .send_json(example_policy())
        .expect("POST /v1/policies");
    assert_eq!(res.status(), 201, "policy created");
    // The broadcaster learns of the write from the store's watch, a moment after the API
    // answered: poll until its snapshot is at least as new as the write.
    let mut body = String::new();
    let caught_up = boifi_tests::wait_until(std::time::Instant::now() + DEADLINE, || {
        let mut res = agent
            .get(format!(
                "{base}/v1/config/stream?mode=poll&namespace=demo&service={service}"
            ))
            .call()
            .expect("poll the stream");
        assert_eq!(res.status(), 200);
        body = res.body_mut().read_to_string().expect("poll body");
        !body.contains("\"revision\":0,")
    });
    assert!(caught_up, "the stream never showed the write: {body}");
    body
}

#[test]
fn config_defaults_to_no_auth_and_respects_a_tokens_file() {
    let config = ServeConfig::from_vars(vars(&[])).expect("defaults parse");
    assert!(config.auth_off_by_default);
    assert_eq!(config.auth, AuthConfig::Disabled);
    assert_eq!(config.listen_addr, "127.0.0.1:8080");
    assert!(
        config.store.etcd_endpoints.is_empty(),
        "embedded store by default"
    );

    let config = ServeConfig::from_vars(vars(&[("BOIFI_TOKENS_FILE", "/etc/boifi/tokens")]))
        .expect("tokens file parses");
    assert!(!config.auth_off_by_default);
    assert!(matches!(config.auth, AuthConfig::TokensFile(_)));

    // An explicit `false` without tokens is the services' own error, not a silent default.
    let err = ServeConfig::from_vars(vars(&[("BOIFI_AUTH_DISABLED", "false")])).unwrap_err();
    assert!(err.to_string().contains("BOIFI_TOKENS_FILE"), "{err}");

    let err = ServeConfig::from_vars(vars(&[("BOIFI_STREAM_BUFFER", "lots")])).unwrap_err();
    assert!(err.to_string().contains("BOIFI_STREAM_BUFFER"), "{err}");
}

#[test]
fn blank_auth_variables_count_as_unset_as_in_the_services() {
    let config = ServeConfig::from_vars(vars(&[
        ("BOIFI_TOKENS_FILE", "  "),
        ("BOIFI_AUTH_DISABLED", ""),
        ("BOIFI_LISTEN_ADDR", " 127.0.0.1:9999 "),
    ]))
    .expect("blank values parse");
    assert!(config.auth_off_by_default);
    assert_eq!(config.auth, AuthConfig::Disabled);
    assert_eq!(config.listen_addr, "127.0.0.1:9999");
}

#[actix_web::test]
async fn one_port_serves_api_stream_and_metrics_and_stops_with_streams_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = ServeConfig::from_vars(vars(&[(
        "BOIFI_DATA_DIR",
        data_dir.to_str().expect("utf-8 temp path"),
    )]))
    .expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let base = format!("http://{addr}");
    let serve = Serve::start(&config).await.expect("start");
    assert_eq!(serve.store_kind(), "embedded");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(listener, serve, async {
        let _ = stop_rx.await;
    }));

    let poll_base = base.clone();
    let body = tokio::task::spawn_blocking(move || create_and_poll(&poll_base, "reviews"))
        .await
        .expect("client thread");
    assert!(body.contains("event: snapshot"), "{body}");
    assert!(body.contains("\"reviews-abort\""), "{body}");

    let metrics_base = base.clone();
    let (metrics, stream) = tokio::task::spawn_blocking(move || {
        let mut res = agent()
            .get(format!("{metrics_base}/metrics"))
            .call()
            .expect("GET /metrics");
        let metrics = res.body_mut().read_to_string().expect("metrics body");
        // An open stream, read up to its first event, must not hold up shutdown.
        let stream = open_stream(addr);
        (metrics, stream)
    })
    .await
    .expect("client thread");
    assert!(metrics.contains("boifi_http_requests_total"), "{metrics}");
    assert!(metrics.contains("boifi_broadcaster_clients"), "{metrics}");

    let asked = Instant::now();
    stop_tx.send(()).expect("server still running");
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("run returns despite the open stream")
        .expect("server task")
        .expect("server result");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        asked.elapsed()
    );
    drop(stream);
}

/// Opens `/v1/config/stream` and reads until the snapshot event has arrived.
fn open_stream(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET /v1/config/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: snapshot") {
        let n = stream.read(&mut buf).expect("read the stream");
        assert!(n > 0, "stream closed before the snapshot");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

#[test]
fn the_binary_serves_locally_warns_about_auth_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut boifi = support::start_serve(dir.path(), port, &[]);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    boifi
        .wait_ready(DEADLINE, || ready(addr))
        .unwrap_or_else(|e| panic!("{e}"));
    let agent = agent();

    let body = create_and_poll(&base, "reviews");
    assert!(body.contains("\"reviews-abort\""), "{body}");
    // A workload the selector does not name gets an empty snapshot.
    let mut res = agent
        .get(format!(
            "{base}/v1/config/stream?mode=poll&namespace=demo&service=ratings"
        ))
        .call()
        .expect("poll as ratings");
    let other = res.body_mut().read_to_string().expect("body");
    assert!(
        other.contains("event: snapshot") && !other.contains("reviews-abort"),
        "{other}"
    );

    let exit = boifi
        .terminate(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}:\n{}", boifi.log()));
    assert!(exit.success(), "{}", boifi.log());
    let log = boifi.log();
    assert!(
        log.contains("WITHOUT authentication"),
        "warning missing:\n{log}"
    );
}
