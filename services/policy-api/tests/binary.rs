//! Black-box tests of the real `policy-api` binary: HTTP on a loopback port, the embedded
//! store, a tokens file; killed by PID and restarted; refusing to start without tokens.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boifi_tests::http::{agent, ready};
use boifi_tests::process::Process;
use boifi_tests::{free_port, wait_until};
use common::{policy, tokens_file, READER, WRITER};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_policy-api");
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `policy-api`, killed and reaped on drop. Its output goes to a log file that
/// failure messages include.
struct Service {
    process: Process,
    base: String,
}

impl Service {
    fn start(dir: &Path, env: &[(&str, String)]) -> Service {
        let port = free_port();
        let log = dir.join(format!("policy-api-{port}.log"));
        let mut command = command(env);
        command.env("BOIFI_LISTEN_ADDR", format!("127.0.0.1:{port}"));
        let mut process = Process::spawn("policy-api", &mut command, &log).expect("spawn");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        process
            .wait_ready(START_TIMEOUT, || ready(addr))
            .unwrap_or_else(|e| panic!("{e}"));
        Service {
            process,
            base: format!("http://{addr}"),
        }
    }

    fn log_text(&self) -> String {
        self.process.log()
    }

    /// SIGTERM, as Kubernetes sends; returns how the process exited.
    fn terminate(mut self) -> ExitStatus {
        self.process
            .terminate(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}:\n{}", self.log_text()))
    }

    /// Like a crash: SIGKILL, then reap.
    fn kill(mut self) {
        assert_eq!(self.process.exited(), None, "running until the crash");
        self.process.stop();
    }
}

/// The binary with a clean environment (only what the test gives).
fn command(env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn json_of(res: &mut ureq::http::Response<ureq::Body>) -> Value {
    res.body_mut().read_json().expect("JSON body")
}

/// The environment of a service with the test tokens (written into `dir`) on an embedded store
/// in `dir/data`.
fn tokens_and_data_dir(dir: &Path) -> [(&'static str, String); 2] {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, tokens_file()).unwrap();
    [
        ("BOIFI_TOKENS_FILE", tokens.display().to_string()),
        ("BOIFI_DATA_DIR", dir.join("data").display().to_string()),
    ]
}

#[test]
fn serves_persists_across_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = tokens_and_data_dir(dir.path());
    let agent = agent(Duration::from_secs(10));

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
    let log = second.process.log_path().to_path_buf();
    let status = second.terminate();
    assert!(
        status.success(),
        "{status}:\n{}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// Every write the API acknowledged before a SIGKILL is there after the restart, with the
/// revision it was acknowledged at: the store commits durably before a write returns. The kill
/// comes while a writer thread keeps writing, so it may cut a write mid-commit.
#[test]
fn acknowledged_writes_survive_a_kill_in_the_middle_of_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let env = tokens_and_data_dir(dir.path());
    let first = Service::start(dir.path(), &env);
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let writer = {
        let (base, acknowledged) = (first.base.clone(), Arc::clone(&acknowledged));
        std::thread::spawn(move || {
            let agent = agent(Duration::from_secs(10));
            for i in 0.. {
                let name = format!("burst-{i}");
                // Fails once the service is killed: the end of the burst.
                let Ok(mut reply) = agent
                    .post(format!("{base}/v1/policies"))
                    .header("Authorization", format!("Bearer {WRITER}"))
                    .send_json(policy(&name))
                else {
                    return;
                };
                assert_eq!(reply.status(), 201);
                let revision = json_of(&mut reply)["status"]["revision"].as_u64().unwrap();
                acknowledged.lock().unwrap().push((name, revision));
            }
        })
    };
    let enough = wait_until(Instant::now() + START_TIMEOUT, || {
        acknowledged.lock().unwrap().len() >= 50
    });
    assert!(
        enough,
        "writes were not acknowledged:\n{}",
        first.log_text()
    );
    first.kill();
    writer.join().expect("writer thread");
    let acknowledged = acknowledged.lock().unwrap().clone();

    let second = Service::start(dir.path(), &env);
    let agent = agent(Duration::from_secs(10));
    for (name, revision) in &acknowledged {
        let mut read = agent
            .get(format!("{}/v1/policies/{name}", second.base))
            .header("Authorization", format!("Bearer {READER}"))
            .call()
            .unwrap();
        assert_eq!(read.status(), 200, "{name} lost:\n{}", second.log_text());
        assert_eq!(
            json_of(&mut read)["status"]["revision"].as_u64(),
            Some(*revision),
            "{name}"
        );
    }
}

/// Runs the binary to completion, failing if it is still running at the deadline.
fn run_to_exit(env: &[(&str, String)], log: &Path) -> ExitStatus {
    let mut process = Process::spawn("policy-api", &mut command(env), log).expect("spawn");
    process
        .wait_exit(START_TIMEOUT)
        .unwrap_or_else(|| panic!("policy-api kept running:\n{}", process.log()))
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

/// Over real HTTP, without tokens: the cross-site writes a web page could send are refused
/// (they were accepted before the write guard), DNS rebinding included; a same-origin write
/// and a kill switch with a reason pass, and the reason is logged with the caller's name.
#[test]
fn cross_site_writes_are_refused_over_http_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BOIFI_AUTH_DISABLED", "true".to_owned()),
        (
            "BOIFI_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ];
    let service = Service::start(dir.path(), &env);
    let base = &service.base;
    let own = base.as_str();
    let authority = base.trim_start_matches("http://").to_owned();
    let port = authority.rsplit(':').next().unwrap().to_owned();
    let agent = agent(Duration::from_secs(10));
    let body = policy("drive-by").to_string();

    let text_plain = agent
        .post(format!("{base}/v1/policies"))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "text/plain")
        .send(body.as_str())
        .unwrap();
    assert_eq!(text_plain.status(), 403);
    let form_halt = agent
        .post(format!("{base}/v1/halt"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("halt=1")
        .unwrap();
    assert_eq!(form_halt.status(), 415);
    // A page of evil.example whose name now resolves to 127.0.0.1.
    let mut rebound = agent
        .post(format!("{base}/v1/policies"))
        .header("Host", format!("evil.example:{port}"))
        .header("Origin", format!("http://evil.example:{port}"))
        .header("Content-Type", "application/json")
        .send(body.as_str())
        .unwrap();
    assert_eq!(rebound.status(), 403, "{}", service.log_text());
    let message = json_of(&mut rebound)["message"].to_string();
    assert!(message.contains("loopback host name"), "{message}");

    let mut halt = agent.get(format!("{base}/v1/halt")).call().unwrap();
    assert_eq!(json_of(&mut halt)["halted"], false);
    let mut list = agent.get(format!("{base}/v1/policies")).call().unwrap();
    assert_eq!(json_of(&mut list)["policies"], serde_json::json!([]));

    let same_origin = agent
        .post(format!("{base}/v1/policies"))
        .header("Origin", own)
        .header("Content-Type", "application/yaml")
        .send("metadata: { name: yaml-one }\nspec: { rules: [ { fault: { abort: { httpStatus: 503 } } } ] }\n")
        .unwrap();
    assert_eq!(same_origin.status(), 201, "{}", service.log_text());
    let with_reason = agent
        .post(format!("{base}/v1/halt"))
        .header("Origin", own)
        .header("Content-Type", "application/json")
        .send(r#"{"reason":"drill: stop everything"}"#)
        .unwrap();
    assert_eq!(with_reason.status(), 200);
    let patch = agent.patch(format!("{base}/v1/halt")).send_empty().unwrap();
    assert_eq!(patch.status(), 405);
    assert_eq!(
        patch.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST, DELETE")
    );
    let log = service.log_text();
    assert!(
        log.contains(r#"kill switch set by anonymous at revision"#)
            && log.contains(r#"reason "drill: stop everything""#),
        "{log}"
    );
}
