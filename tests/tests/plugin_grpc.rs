//! gRPC aborts with a real gRPC client and server (Python grpcio and its standard health
//! service, `tests/grpc/health.py`) through a sidecar-like Envoy with the real plugin. A
//! gRPC request must get what gRPC clients expect from an aborting proxy: HTTP 200,
//! trailers-only, `grpc-status` and `grpc-message`, plus the `x-boifi-fault` metadata.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use boifi_sse_broadcaster::Settings;
use boifi_tests::binaries::{repo_file, venv_python as python};
use boifi_tests::envoy::{Envoy, EnvoyBuilder};
use boifi_tests::process::Process;
use boifi_tests::services::{deadline, Services};
use boifi_tests::{free_port, wait_until};
use serde_json::{json, Value};

fn script() -> PathBuf {
    repo_file("tests/grpc/health.py")
}

/// A gRPC health server on loopback, stopped by PID on drop.
struct GrpcServer {
    _process: Process,
    _dir: tempfile::TempDir,
    port: u16,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut command = Command::new(python());
        command.arg(script()).args(["serve", &port.to_string()]);
        let mut process =
            Process::spawn("grpc health server", &mut command, &dir.path().join("log"))
                .unwrap_or_else(|e| panic!("{e}; run scripts/install-deps.sh"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        process
            .wait_ready(Duration::from_secs(30), || {
                TcpStream::connect(addr)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        GrpcServer {
            _process: process,
            _dir: dir,
            port,
        }
    }
}

/// `n` Health/Check calls through `envoy`: per call, code, details and the fault metadata.
fn check(envoy: &Envoy, n: usize) -> Vec<Value> {
    let output = Command::new(python())
        .arg(script())
        .args(["check", &envoy.addr().to_string(), &n.to_string()])
        .output()
        .expect("run the gRPC client");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn abort(policy: &str, abort: Value) -> Value {
    json!({
        "metadata": {"name": policy},
        "spec": {"selector": {"namespace": "demo", "service": "reviews"},
                 "rules": [{"match": {"path": {"prefix": "/grpc.health.v1.Health/"}},
                            "fault": {"abort": abort}}]}
    })
}

#[test]
fn grpc_requests_get_grpc_aborts() {
    let plane = Services::embedded(Settings::default(), None);
    let server = GrpcServer::start();
    let envoy = EnvoyBuilder::new(server.port, plane.broadcaster().port())
        .upstream_http2()
        .start();

    // No policy: the real server answers.
    let calls = check(&envoy, 1);
    assert_eq!(calls[0]["code"], "OK", "{calls:?}");

    // grpcStatus, as in Istio: the code by name, the body as grpc-message.
    let revision = plane.put(&abort(
        "reviews-grpc",
        json!({"grpcStatus": "DEADLINE_EXCEEDED", "body": "injected by boifi"}),
    ));
    assert!(wait_until(deadline(), || envoy.has_applied(revision)));
    for call in check(&envoy, 5) {
        assert_eq!(call["code"], "DEADLINE_EXCEEDED", "{call}");
        assert_eq!(call["details"], "injected by boifi");
        assert_eq!(call["fault"], "reviews-grpc");
    }

    // httpStatus only: gRPC's mapping of it (503 -> UNAVAILABLE), never an HTTP error that
    // a gRPC client would read as a broken protocol.
    plane.delete("reviews-grpc");
    let revision = plane.put(&abort("reviews-http", json!({"httpStatus": 503})));
    assert!(wait_until(deadline(), || envoy.has_applied(revision)));
    for call in check(&envoy, 5) {
        assert_eq!(call["code"], "UNAVAILABLE", "{call}");
        assert_eq!(call["fault"], "reviews-http");
    }
}
