//! Fixtures of the `boifi` binary's tests: `boifi serve` as a real process on a free loopback
//! port (optionally with a tokens file), and the CLI run as a real process with only the
//! environment a test gives it. The binary comes from `boifi_tests::binaries` (cargo, or
//! `BOIFI_TEST_BIN_DIR`).

#![allow(dead_code)] // each test file uses its own part

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boifi_tests::binaries::workspace_binary;
use boifi_tests::http::ready;
use boifi_tests::process::{retry, Process};
use boifi_tests::{free_port, wait_until};

/// Generous: tests share two cores with builds and other suites.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `boifi` executable.
pub fn boifi_binary() -> PathBuf {
    workspace_binary("boifi").unwrap_or_else(|e| panic!("{e}"))
}

/// `boifi serve` as the real binary on `port`, its data and log in `dir`, with `env` added
/// to an otherwise empty environment.
pub fn start_serve(dir: &Path, port: u16, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(boifi_binary());
    command
        .arg("serve")
        .env_clear()
        .env("BOIFI_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BOIFI_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    Process::spawn("boifi serve", &mut command, &dir.join("boifi.log")).expect("spawn")
}

/// A running `boifi serve` with its own data directory; stopped on drop.
pub struct Server {
    pub process: Process,
    pub port: u16,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// Token of the `admin` writer in [`Server::with_tokens`].
pub const WRITER_TOKEN: &str = "writer-token-5f1c2e8a9b7d4c3e";
/// Token of the `viewer` reader in [`Server::with_tokens`].
pub const READER_TOKEN: &str = "reader-token-0a9b8c7d6e5f4a3b";

impl Server {
    /// Without tokens (what `boifi serve` does by default).
    pub fn start() -> Server {
        Server::start_with(Vec::new())
    }

    /// Requiring tokens: [`WRITER_TOKEN`] (writer) and [`READER_TOKEN`] (reader).
    pub fn with_tokens() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("admin writer {WRITER_TOKEN}\nviewer reader {READER_TOKEN}\n"),
        )
        .expect("tokens file");
        let env = vec![(
            "BOIFI_TOKENS_FILE".to_owned(),
            tokens.to_string_lossy().into_owned(),
        )];
        Server::start_in(dir, env)
    }

    /// Requiring tokens: `tokens` is the tokens file (`<name> <role> <token>` lines); `env`
    /// adds variables.
    pub fn with_tokens_file(tokens: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, tokens).expect("tokens file");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "BOIFI_TOKENS_FILE".to_owned(),
            path.to_string_lossy().into_owned(),
        ));
        Server::start_in(dir, env)
    }

    fn start_with(env: Vec<(String, String)>) -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"), env)
    }

    fn start_in(dir: tempfile::TempDir, env: Vec<(String, String)>) -> Server {
        let (process, port) = retry(3, || {
            let port = free_port();
            let mut process = launch(dir.path(), port, &env);
            process.wait_ready(DEADLINE, || ready(addr(port)))?;
            Ok((process, port))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Server {
            process,
            port,
            dir,
            env,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL, like a crash).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and data, retrying while the old socket lingers.
    pub fn restart(&mut self) {
        self.stop();
        let ok = wait_until(Instant::now() + DEADLINE, || {
            let mut process = launch(self.dir.path(), self.port, &self.env);
            match process.wait_ready(DEADLINE, || ready(addr(self.port))) {
                Ok(()) => {
                    self.process = process;
                    true
                }
                Err(_) => false,
            }
        });
        assert!(ok, "boifi serve did not restart on port {}", self.port);
    }
}

fn launch(dir: &Path, port: u16, env: &[(String, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_serve(dir, port, &env)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// What one CLI run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything the run printed unless it exited with `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- exit {} ---\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `boifi args...` with only `env` in its environment (plus `stdin` when given) and
/// waits for it, at most [`DEADLINE`].
pub fn boifi(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(boifi_binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn boifi");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let mut status = None;
    let exited = wait_until(Instant::now() + DEADLINE, || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        exited,
        "boifi {args:?} did not exit within {DEADLINE:?}\n{run}"
    );
    run
}
