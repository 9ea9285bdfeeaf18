//! A real etcd for tests: free loopback ports, a fresh data dir, readiness by a real HTTP
//! health call, stop by PID.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::binaries::{etcd_binary, ETCD_BIN_ENV};
use crate::free_port;
use crate::http::http_request;
use crate::process::{retry, Process};

/// Start attempts: a port reported free can be taken by another test before etcd binds it.
const START_ATTEMPTS: u32 = 3;
/// Healthy in well under a second when idle; generous because tests run in parallel on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One single-member etcd cluster on 127.0.0.1. Killed, waited for and its data dir removed
/// on drop.
pub struct EtcdServer {
    // Before `dir`: stopped (and its log printed on failure) while the log still exists.
    process: Option<Process>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`. Panics (with the log) after
    /// [`START_ATTEMPTS`] failed starts.
    pub fn start() -> EtcdServer {
        retry(START_ATTEMPTS, || {
            let mut server = EtcdServer {
                process: None,
                dir: tempfile::Builder::new()
                    .prefix("boifi-etcd-")
                    .tempdir()
                    .expect("create temp dir for etcd"),
                client_port: free_port(),
                peer_port: free_port(),
            };
            if server.client_port == server.peer_port {
                return Err("client and peer port collided".into());
            }
            server.launch()?;
            Ok(server)
        })
        .unwrap_or_else(|e| {
            panic!(
                "etcd did not start after {START_ATTEMPTS} attempts (binary {}; set {ETCD_BIN_ENV} to override):\n{e}",
                etcd_binary().display()
            )
        })
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
        self.process.as_ref().and_then(Process::pid)
    }

    /// etcd's combined stdout/stderr, kept across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills etcd by PID (SIGKILL, like a crash; etcd fsyncs its WAL before acknowledging, so
    /// acknowledged writes survive) and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop();
        }
    }

    /// Stops etcd and starts it again on the same ports and data dir, so data survives.
    /// Retries on the same ports (the old process's sockets may linger briefly).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = retry(START_ATTEMPTS, || self.launch()) {
            panic!("etcd did not restart on port {}:\n{e}", self.client_port);
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Spawns etcd and waits for health; on failure the child is stopped and the error carries
    /// the exit status and log tail.
    fn launch(&mut self) -> Result<(), String> {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(etcd_binary());
        command
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
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let name = format!("etcd (port {})", self.client_port);
        let log = self.log_path();
        let process = self
            .process
            .insert(Process::spawn(&name, &mut command, &log)?);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        process.wait_ready(READY_TIMEOUT, || health(addr))
    }
}

/// One `GET /health` over a fresh connection; Ok when etcd reports itself healthy.
fn health(addr: SocketAddr) -> Result<(), String> {
    let response = http_request(addr, "GET", "/health", &[], None, Duration::from_secs(1))
        .map_err(|e| format!("GET /health: {e}"))?;
    let body_ok = response
        .body_text()
        .replace(' ', "")
        .contains("\"health\":\"true\"");
    if response.status == 200 && body_ok {
        Ok(())
    } else {
        Err(format!(
            "unhealthy: {} {}",
            response.status,
            response.body_text()
        ))
    }
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
