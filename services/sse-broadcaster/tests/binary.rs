//! Black-box test of the real `sse-broadcaster` binary on the embedded store: SIGTERM (what
//! Kubernetes sends) ends open streams, held long polls and idle keep-alive connections, and
//! the process exits promptly and cleanly, well inside a pod's grace period.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use boifi_tests::http::{call, ready};
use boifi_tests::process::Process;
use boifi_tests::services::{deadline, DEADLINE};
use boifi_tests::{free_port, wait_until};
use common::{next_event, open_stream};

const BIN: &str = env!("CARGO_BIN_EXE_sse-broadcaster");
/// Kubernetes' default grace period is 30 s and test-images.sh allows 10 s; the binary needs
/// well under one.
const STOP_BUDGET: Duration = Duration::from_secs(5);

/// A running `sse-broadcaster`, killed and reaped on drop. Its output goes to a log file that
/// failure messages include.
struct Service {
    process: Process,
    addr: SocketAddr,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = dir.join(format!("sse-broadcaster-{}.log", addr.port()));
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("RUST_LOG", "info")
            .env("BOIFI_LISTEN_ADDR", addr.to_string())
            .env("BOIFI_DATA_DIR", dir.join("data"));
        let mut process = Process::spawn("sse-broadcaster", &mut command, &log).expect("spawn");
        process
            .wait_ready(DEADLINE, || ready(addr))
            .unwrap_or_else(|e| panic!("{e}"));
        Service { process, addr }
    }

    fn log_text(&self) -> String {
        self.process.log()
    }

    /// Sends SIGTERM; returns the exit status and how long the exit took, or panics with the
    /// log when the process is still running after [`STOP_BUDGET`].
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let status = self
            .process
            .terminate(STOP_BUDGET)
            .unwrap_or_else(|e| panic!("{e}:\n{}", self.log_text()));
        (status, start.elapsed())
    }
}

#[test]
fn sigterm_ends_streams_polls_and_idle_connections_and_exits_promptly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut service = Service::start(dir.path());
    let addr = service.addr;

    // An open stream, past its snapshot.
    let mut stream = open_stream(addr, "namespace=demo&service=reviews", None);
    assert_eq!(next_event(&mut stream).name(), "snapshot");
    // A long poll held at the current revision (nothing will change for a minute).
    let held = std::thread::spawn(move || {
        call(
            addr,
            "GET",
            "/v1/config/stream?mode=poll&namespace=demo&service=reviews&revision=0&wait_ms=60000",
            None,
            deadline(),
        )
    });
    assert!(
        wait_until(deadline(), || metric(
            addr,
            "boifi_broadcaster_clients{mode=\"poll\"}"
        ) == 1.0),
        "poll not held:\n{}",
        service.log_text()
    );
    // An idle keep-alive connection that already had one answer.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    idle.set_read_timeout(Some(STOP_BUDGET)).expect("timeout");
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).expect("health answer");
    assert_eq!(&head, b"HTTP/1.1 200");

    let (status, took) = service.terminate();
    assert!(status.success(), "{status}:\n{}", service.log_text());
    eprintln!("sse-broadcaster exited {took:?} after SIGTERM");

    // The held poll was answered ("nothing new up to revision 0"), long before its 60 s wait.
    let (status, body) = held
        .join()
        .expect("poll thread")
        .expect("the held poll is answered before the exit");
    assert_eq!((status, body.as_str()), (200, ": timeout\nid: 0\n\n"));
    // The stream and the idle connection are closed: reading them to the end does not time out.
    assert!(stream.body_to_end(deadline()).is_ok(), "stream still open");
    assert!(
        idle.read_to_end(&mut Vec::new()).is_ok(),
        "idle connection still open"
    );
    let log = service.log_text();
    assert!(log.contains("shutting down"), "{log}");
}

/// The value of the sample `name` (with labels as written) in `/metrics`; 0 when absent.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let body = call(addr, "GET", "/metrics", None, deadline())
        .map(|(_, body)| body)
        .unwrap_or_default();
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
