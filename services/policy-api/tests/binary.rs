//! Black-box tests of the real `policy-api` binary: HTTP on a loopback port, the embedded
//! store, a tokens file; killed by PID and restarted; refusing to start without tokens.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boifi_tests::{free_port, wait_until};
use common::{policy, READER, WRITER};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_policy-api");
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `policy-api`, killed and reaped on drop. Its stderr goes to a log file that
/// failure messages include.
struct Service {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Service {
    fn start(dir: &Path, env: &[(&str, String)]) -> Service {
        let port = free_port();
        let log = dir.join(format!("policy-api-{port}.log"));
        let child = command(env, &log)
            .env("BOIFI_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .spawn()
            .expect("spawn policy-api");
        let mut service = Service {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
        };
        let agent = agent();
        let up = wait_until(Instant::now() + START_TIMEOUT, || {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("policy-api exited with {status}:\n{}", service.log_text());
            }
            agent
                .get(format!("{}/v1/ready", service.base))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        assert!(up, "policy-api not ready in time:\n{}", service.log_text());
        service
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as Kubernetes sends; returns how the process exited.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "could not signal {pid}");
        let mut status = None;
        let exited = wait_until(Instant::now() + START_TIMEOUT, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(exited, "no exit after SIGTERM:\n{}", self.log_text());
        status.unwrap()
    }

    /// Like a crash: SIGKILL, then reap.
    fn kill(mut self) {
        self.child.kill().expect("kill policy-api");
        self.child.wait().expect("reap policy-api");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with a clean environment (only what the test gives), stderr to `log`.
fn command(env: &[(&str, String)], log: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("create log file"));
    cmd
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn json_of(res: &mut ureq::http::Response<ureq::Body>) -> Value {
    res.body_mut().read_json().expect("JSON body")
}

#[test]
fn serves_persists_across_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# test tokens\nops writer {WRITER}\ndash reader {READER}\n"),
    )
    .unwrap();
    let env = [
        ("BOIFI_TOKENS_FILE", tokens.display().to_string()),
        (
            "BOIFI_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ];
    let agent = agent();

    let first = Service::start(dir.path(), &env);
    let mut created = agent
        .post(format!("{}/v1/policies", first.base))
        .header("Authorization", format!("Bearer {WRITER}"))
        .send_json(policy("reviews-abort"))
        .unwrap();
    assert_eq!(created.status(), 201, "{}", first.log_text());
    let created = json_of(&mut created);
    let unauthenticated = agent
        .get(format!("{}/v1/policies", first.base))
        .call()
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    // One log line per request, with the token's name and never the token.
    let log = first.log_text();
    assert!(
        log.contains("POST /v1/policies 201") && log.contains("token=ops"),
        "{log}"
    );
    assert!(!log.contains(WRITER), "token leaked into the log:\n{log}");
    first.kill();

    let second = Service::start(dir.path(), &env);
    let mut read = agent
        .get(format!("{}/v1/policies/reviews-abort", second.base))
        .header("Authorization", format!("Bearer {READER}"))
        .call()
        .unwrap();
    assert_eq!(read.status(), 200, "{}", second.log_text());
    assert_eq!(json_of(&mut read), created);
    let log = second.log.clone();
    let status = second.terminate();
    assert!(
        status.success(),
        "{status}:\n{}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// Runs the binary to completion, failing if it is still running at the deadline.
fn run_to_exit(env: &[(&str, String)], log: &Path) -> ExitStatus {
    let mut child = command(env, log).spawn().expect("spawn policy-api");
    let mut status = None;
    let exited = wait_until(Instant::now() + START_TIMEOUT, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "policy-api kept running:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    status.unwrap()
}

#[test]
fn refuses_to_start_without_tokens_or_with_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = (
        "BOIFI_DATA_DIR",
        dir.path().join("data").display().to_string(),
    );
    let addr = ("BOIFI_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()));

    let log = dir.path().join("no-tokens.log");
    let status = run_to_exit(&[data.clone(), addr.clone()], &log);
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("BOIFI_TOKENS_FILE"), "{text}");
    assert!(
        !dir.path().join("data").exists(),
        "store opened before the auth check"
    );

    let tokens = dir.path().join("bad-tokens");
    std::fs::write(&tokens, "# comment\nops admin secret-value-0123456789\n").unwrap();
    let log = dir.path().join("bad-tokens.log");
    let status = run_to_exit(
        &[
            data,
            addr,
            ("BOIFI_TOKENS_FILE", tokens.display().to_string()),
        ],
        &log,
    );
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("line 2"), "{text}");
    assert!(
        !text.contains("secret-value-0123456789"),
        "token leaked:\n{text}"
    );
}
