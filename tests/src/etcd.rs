//! A real etcd for tests: free loopback ports, a fresh data dir, readiness by a real HTTP
//! health call, stop by PID.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Environment variable naming the etcd binary; `etcd` on `PATH` when unset.
pub const ETCD_BIN_ENV: &str = "BOIFI_TEST_ETCD_BIN";

/// Start attempts: a port reported free can be taken by another test before etcd binds it.
const START_ATTEMPTS: u32 = 3;
/// Healthy in well under a second when idle; generous because tests run in parallel on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the log a failure message shows (the whole file stays on disk until drop).
const LOG_TAIL_BYTES: u64 = 8 * 1024;
/// Bound on the health response we read.
const HEALTH_RESPONSE_LIMIT: u64 = 16 * 1024;

fn etcd_binary() -> &'static OsString {
    static BIN: OnceLock<OsString> = OnceLock::new();
    BIN.get_or_init(|| std::env::var_os(ETCD_BIN_ENV).unwrap_or_else(|| OsString::from("etcd")))
}

/// One single-member etcd cluster on 127.0.0.1. Killed, waited for and its data dir removed
/// on drop.
pub struct EtcdServer {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`. Panics (with the log) after
    /// [`START_ATTEMPTS`] failed starts.
    pub fn start() -> EtcdServer {
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut server = EtcdServer {
                dir: tempfile::Builder::new()
                    .prefix("boifi-etcd-")
                    .tempdir()
                    .expect("create temp dir for etcd"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            };
            if server.client_port == server.peer_port {
                failures.push(format!("attempt {attempt}: client and peer port collided"));
                continue;
            }
            match server.launch() {
                Ok(()) => return server,
                Err(e) => failures.push(format!("attempt {attempt}: {e}")),
            }
        }
        panic!(
            "etcd did not start after {START_ATTEMPTS} attempts (binary {:?}; set {ETCD_BIN_ENV} to override):\n{}",
            etcd_binary(),
            failures.join("\n")
        );
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// PID of the running etcd, `None` after [`stop`](Self::stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// etcd's combined stdout/stderr, kept across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills etcd by PID (SIGKILL, like a crash; etcd fsyncs its WAL before acknowledging, so
    /// acknowledged writes survive) and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Err only if it already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops etcd and starts it again on the same ports and data dir, so data survives.
    /// Retries on the same ports (the old process's sockets may linger briefly).
    pub fn restart(&mut self) {
        self.stop();
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(e) => failures.push(format!("attempt {attempt}: {e}")),
            }
        }
        panic!(
            "etcd did not restart on port {}:\n{}",
            self.client_port,
            failures.join("\n")
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Spawns etcd and waits for health; on failure the child is stopped and the error carries
    /// the exit status and log tail.
    fn launch(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open etcd log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("clone etcd log handle: {e}"))?;
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg("n1")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("n1={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", etcd_binary()))?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(format!(
                    "{e}\n--- etcd log ({}) ---\n{}",
                    self.log_path().display(),
                    log_tail(&self.log_path())
                ))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let mut last_error = String::from("not polled yet");
        let ready = crate::wait_until(deadline, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("etcd exited early with {status}");
                    return true;
                }
            }
            match health(addr) {
                Ok(()) => {
                    last_error.clear();
                    true
                }
                Err(e) => {
                    last_error = e;
                    false
                }
            }
        });
        if ready && last_error.is_empty() {
            Ok(())
        } else if ready {
            Err(last_error)
        } else {
            Err(format!(
                "not healthy within {READY_TIMEOUT:?} (last error: {last_error})"
            ))
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // The test harness shows captured output of failed tests only.
            eprintln!(
                "--- etcd log (port {}) ---\n{}",
                self.client_port,
                log_tail(&self.log_path())
            );
        }
    }
}

/// One `GET /health` over a fresh connection; Ok when etcd reports itself healthy.
fn health(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(1);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("set socket timeouts: {e}"))?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send health request: {e}"))?;
    let mut response = String::new();
    stream
        .take(HEALTH_RESPONSE_LIMIT)
        .read_to_string(&mut response)
        .map_err(|e| format!("read health response: {e}"))?;
    let status_ok = response.starts_with("HTTP/1.1 200");
    let body_ok = response.replace(' ', "").contains("\"health\":\"true\"");
    if status_ok && body_ok {
        Ok(())
    } else {
        let first_line = response.lines().next().unwrap_or("<empty response>");
        Err(format!("unhealthy: {first_line}"))
    }
}

/// The last [`LOG_TAIL_BYTES`] of the log, or why it could not be read.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_restarts_and_cleans_up() {
        let mut etcd = EtcdServer::start();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd.client_port()));
        assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
        health(addr).expect("healthy after start");
        let first_pid = etcd.pid().expect("running");

        etcd.stop();
        assert!(etcd.pid().is_none());
        assert!(health(addr).is_err(), "no answer after stop");

        etcd.restart();
        assert_ne!(etcd.pid(), Some(first_pid));
        health(addr).expect("healthy after restart on the same port");

        let dir = etcd.dir.path().to_path_buf();
        drop(etcd);
        assert!(!dir.exists(), "data dir removed on drop");
        assert!(health(addr).is_err(), "killed on drop");
    }
}
