//! The control plane of the local mesh: real etcd plus the `policy-api` and `sse-broadcaster`
//! binaries ([`ControlPlaneKind::Separate`], with one or more broadcaster replicas on the same
//! etcd), or `boifi serve` alone on its embedded store ([`ControlPlaneKind::Serve`]), as
//! processes on loopback with auth off (policy-api gathers the sidecar tables of every
//! replica: `BOIFI_BROADCASTERS`); and the API calls the scenarios make (policies, the kill
//! switch, a broadcaster replica's sidecar table, the API's merged one).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boifi_policy::wire::{SidecarList, SidecarsPage, SidecarsQuery};
use serde_json::Value;
use tempfile::TempDir;

use super::REQUEST_TIMEOUT;
use crate::binaries::workspace_binary;
use crate::http::{http_request, ready, HttpResponse};
use crate::process::{retry, Process};
use crate::{free_port, EtcdServer};

const START_ATTEMPTS: u32 = 3;
/// A service is ready in well under a second; generous because tests share 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which processes make up the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlaneKind {
    /// Real etcd plus the `policy-api` and `sse-broadcaster` binaries, as in Kubernetes.
    Separate,
    /// `boifi serve`: API and stream on one port, embedded store.
    Serve,
}

/// One control-plane service process.
struct Service {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    log: PathBuf,
    process: Option<Process>,
}

/// A command for a service binary: only the variables given here configure it, whatever the
/// caller's environment holds (e.g. a tokens file); auth off, logs at `info`.
fn service_command(binary: &Path, env: &[(String, String)], addr: SocketAddr) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BOIFI_") {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("BOIFI_AUTH_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BOIFI_LISTEN_ADDR", addr.to_string());
    command
}

impl Service {
    fn launch(&mut self) -> Result<(), String> {
        let mut command = service_command(&self.binary, &self.env, self.addr);
        command.args(&self.args);
        let name = format!("{} on {}", self.name, self.addr);
        let process = self
            .process
            .insert(Process::spawn(&name, &mut command, &self.log)?);
        let addr = self.addr;
        process.wait_ready(READY_TIMEOUT, || ready(addr))
    }

    fn stop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop();
        }
    }
}

/// A policy as policy-api stored it.
#[derive(Debug, Clone)]
pub struct Written {
    /// The store revision of the write (`status.revision`).
    pub revision: u64,
    /// Per rule, the server's expiry time (Unix ms), if the rule has a duration.
    pub expires_at_ms: Vec<Option<u64>>,
    /// The whole response body.
    pub policy: Value,
}

/// The broadcasters of a control plane: how many replicas (each its own process on the same
/// etcd, named `sse-broadcaster-<i>` by `HOSTNAME`; `Serve` has exactly one) and `BOIFI_*`
/// variables for them (`boifi serve` takes them too).
#[derive(Debug, Clone)]
pub struct Broadcasters {
    pub replicas: usize,
    pub env: Vec<(String, String)>,
}

impl Default for Broadcasters {
    fn default() -> Self {
        Broadcasters {
            replicas: 1,
            env: Vec::new(),
        }
    }
}

/// The control plane: its processes, data and ports survive [`stop`](Self::stop) and
/// [`restart`](Self::restart). Stopped by PID on drop.
pub struct ControlPlane {
    kind: ControlPlaneKind,
    broadcasters: Broadcasters,
    services: Vec<Service>,
    etcd: Option<EtcdServer>,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts the control plane on free loopback ports (or `api_port` for the API when given)
    /// and waits until every service is ready.
    pub fn start(kind: ControlPlaneKind, api_port: Option<u16>) -> Result<ControlPlane, String> {
        Self::start_with(kind, api_port, Broadcasters::default())
    }

    /// [`ControlPlane::start`] with `broadcasters` replicas and settings.
    pub fn start_with(
        kind: ControlPlaneKind,
        api_port: Option<u16>,
        broadcasters: Broadcasters,
    ) -> Result<ControlPlane, String> {
        if broadcasters.replicas == 0
            || (kind == ControlPlaneKind::Serve && broadcasters.replicas != 1)
        {
            return Err(format!(
                "{kind:?} cannot run {} broadcasters",
                broadcasters.replicas
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("boifi-control-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut failures = Vec::new();
        let etcd = match kind {
            ControlPlaneKind::Separate => Some(EtcdServer::start()),
            ControlPlaneKind::Serve => None,
        };
        let mut plane = ControlPlane {
            kind,
            broadcasters,
            services: Vec::new(),
            etcd,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            plane.services = plane.plan(api_port)?;
            match plane.launch_all() {
                Ok(()) => return Ok(plane),
                // A port reported free can be taken meanwhile: try other ports, unless the
                // caller chose the port.
                Err(e) if api_port.is_none() => failures.push(format!("attempt {attempt}: {e}")),
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "control plane did not start after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        ))
    }

    fn plan(&self, api_port: Option<u16>) -> Result<Vec<Service>, String> {
        let addr = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let api_addr = addr(api_port.unwrap_or_else(free_port));
        let log = |name: &str| self.dir.path().join(format!("{name}.log"));
        Ok(match self.kind {
            ControlPlaneKind::Serve => {
                let data = self.dir.path().join("data");
                let mut env = vec![("BOIFI_DATA_DIR".into(), data.display().to_string())];
                env.extend(self.broadcasters.env.iter().cloned());
                vec![Service {
                    name: "boifi serve",
                    binary: workspace_binary("boifi")?,
                    args: vec!["serve".into()],
                    env,
                    addr: api_addr,
                    log: log("boifi"),
                    process: None,
                }]
            }
            ControlPlaneKind::Separate => {
                let endpoints = self
                    .etcd
                    .as_ref()
                    .map(EtcdServer::endpoint)
                    .ok_or("no etcd")?;
                let store = vec![("BOIFI_ETCD_ENDPOINTS".to_owned(), endpoints)];
                let mut stream_addrs: Vec<SocketAddr> = Vec::new();
                while stream_addrs.len() < self.broadcasters.replicas {
                    let stream_addr = addr(free_port());
                    if stream_addr != api_addr && !stream_addrs.contains(&stream_addr) {
                        stream_addrs.push(stream_addr);
                    }
                }
                // policy-api gathers the sidecar tables of every replica.
                let broadcasters: Vec<String> =
                    stream_addrs.iter().map(|a| format!("http://{a}")).collect();
                let mut api_env = store.clone();
                api_env.push(("BOIFI_BROADCASTERS".to_owned(), broadcasters.join(",")));
                let mut services = vec![Service {
                    name: "policy-api",
                    binary: workspace_binary("policy-api")?,
                    args: Vec::new(),
                    env: api_env,
                    addr: api_addr,
                    log: log("policy-api"),
                    process: None,
                }];
                for (replica, stream_addr) in stream_addrs.into_iter().enumerate() {
                    let mut env = store.clone();
                    env.extend(self.broadcasters.env.iter().cloned());
                    env.push(("HOSTNAME".into(), format!("sse-broadcaster-{replica}")));
                    services.push(Service {
                        name: "sse-broadcaster",
                        binary: workspace_binary("sse-broadcaster")?,
                        args: Vec::new(),
                        env,
                        addr: stream_addr,
                        log: log(&format!("sse-broadcaster-{replica}")),
                        process: None,
                    });
                }
                services
            }
        })
    }

    fn launch_all(&mut self) -> Result<(), String> {
        for i in 0..self.services.len() {
            if let Err(e) = self.services[i].launch() {
                self.stop_services();
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn kind(&self) -> ControlPlaneKind {
        self.kind
    }

    /// Where policy-api (or `boifi serve`) listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.services[0].addr
    }

    /// Where the sidecars poll for policies (the first broadcaster replica).
    pub fn stream_addr(&self) -> SocketAddr {
        self.stream_addrs()[0]
    }

    /// Every broadcaster replica, in order.
    pub fn stream_addrs(&self) -> Vec<SocketAddr> {
        let first = self.services.len() - self.broadcasters.replicas;
        self.services[first..].iter().map(|s| s.addr).collect()
    }

    /// Broadcaster replica `replica`'s own sidecar table (`GET /v1/sidecars`, every page).
    /// `Serve` has no such route (policy-api owns `/v1/sidecars` there).
    pub fn sidecars(&self, replica: usize) -> Result<SidecarsPage, String> {
        let addr = *self
            .stream_addrs()
            .get(replica)
            .ok_or_else(|| format!("no broadcaster replica {replica}"))?;
        let mut query = SidecarsQuery::default();
        let mut all: Option<SidecarsPage> = None;
        loop {
            let path = format!("/v1/sidecars?{}", query.encode());
            let r = http_request(addr, "GET", &path, &[], None, REQUEST_TIMEOUT)
                .map_err(|e| format!("GET {path}: {e}"))?;
            if r.status != 200 {
                return Err(format!("GET {path}: {} {}", r.status, r.body_text()));
            }
            let page: SidecarsPage = serde_json::from_slice(&r.body)
                .map_err(|e| format!("GET {path}: not a sidecars page: {e}"))?;
            query.continue_token = page.continue_token.clone();
            match all.as_mut() {
                None => all = Some(page),
                Some(all) => all.sidecars.extend(page.sidecars),
            }
            if query.continue_token.is_none() {
                break;
            }
        }
        Ok(all.expect("one page at least"))
    }

    /// policy-api's merged sidecar table (`GET /v1/sidecars?<query>`, every page).
    pub fn api_sidecars(&self, query: &str) -> Result<SidecarList, String> {
        let mut all: Option<SidecarList> = None;
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/v1/sidecars?{query}");
            if let Some(token) = &token {
                path.push_str(&format!("&continue={token}"));
            }
            let r = self.call("GET", &path, None)?;
            if r.status != 200 {
                return Err(format!("GET {path}: {} {}", r.status, r.body_text()));
            }
            let mut page: SidecarList = serde_json::from_slice(&r.body)
                .map_err(|e| format!("GET {path}: not a sidecar list: {e}"))?;
            token = page.continue_token.take();
            match all.as_mut() {
                None => all = Some(page),
                Some(all) => all.sidecars.extend(page.sidecars),
            }
            if token.is_none() {
                return Ok(all.expect("one page at least"));
            }
        }
    }

    /// `GET /v1/policies/{name}` as the API answers it.
    pub fn policy(&self, name: &str) -> Result<Value, String> {
        let r = self.call("GET", &format!("/v1/policies/{name}"), None)?;
        if r.status != 200 {
            return Err(format!("GET {name}: {} {}", r.status, r.body_text()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {name}: not JSON: {e}"))
    }

    /// Stops broadcaster replica `replica` by PID (SIGKILL, like a crash); the other
    /// processes keep running.
    pub fn stop_broadcaster(&mut self, replica: usize) {
        let first = self.services.len() - self.broadcasters.replicas;
        if let Some(service) = self.services.get_mut(first + replica) {
            service.stop();
        }
    }

    /// etcd's client URL, when the control plane has one.
    pub fn etcd_endpoint(&self) -> Option<String> {
        self.etcd.as_ref().map(EtcdServer::endpoint)
    }

    /// `(name, PID)` of every running process, for people to look at.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .services
            .iter()
            .filter_map(|s| Some((s.name.to_owned(), s.process.as_ref()?.pid()?)))
            .collect();
        if let Some(pid) = self.etcd.as_ref().and_then(EtcdServer::pid) {
            out.push(("etcd".into(), pid));
        }
        out
    }

    /// Kills every process by PID (SIGKILL, like a crash) and waits for them; data and ports
    /// are kept for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.stop_services();
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.stop();
        }
    }

    fn stop_services(&mut self) {
        for service in &mut self.services {
            service.stop();
        }
    }

    /// Starts everything again on the same ports and data; retries while the old sockets
    /// linger.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.restart();
        }
        retry(START_ATTEMPTS, || self.launch_all())
            .map_err(|e| format!("control plane did not restart:\n{e}"))
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<HttpResponse, String> {
        let bytes = body.map(Value::to_string);
        let headers: &[(&str, &str)] = if bytes.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        http_request(
            self.api_addr(),
            method,
            path,
            headers,
            bytes.as_deref().map(str::as_bytes),
            REQUEST_TIMEOUT,
        )
        .map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Creates or replaces a policy through `POST /v1/policies`.
    pub fn put_policy(&self, policy: &Value) -> Result<Written, String> {
        let r = self.call("POST", "/v1/policies", Some(policy))?;
        if !matches!(r.status, 200 | 201) {
            return Err(format!("POST /v1/policies: {} {}", r.status, r.body_text()));
        }
        let stored: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("POST /v1/policies: response is not JSON: {e}"))?;
        let revision = stored["status"]["revision"]
            .as_u64()
            .ok_or("POST /v1/policies: no status.revision in the response")?;
        let expires_at_ms = stored["status"]["rules"]
            .as_array()
            .map(|rules| rules.iter().map(|r| r["expires_at_ms"].as_u64()).collect())
            .unwrap_or_default();
        Ok(Written {
            revision,
            expires_at_ms,
            policy: stored,
        })
    }

    /// Deletes a policy; `Ok(false)` when it did not exist.
    pub fn delete_policy(&self, name: &str) -> Result<bool, String> {
        let r = self.call("DELETE", &format!("/v1/policies/{name}"), None)?;
        match r.status {
            200 | 204 => Ok(true),
            404 => Ok(false),
            other => Err(format!("DELETE {name}: {other} {}", r.body_text())),
        }
    }

    /// Sets (`true`) or clears the kill switch; returns the store revision of the change.
    pub fn set_halt(&self, halted: bool) -> Result<u64, String> {
        let method = if halted { "POST" } else { "DELETE" };
        let r = self.call(method, "/v1/halt", None)?;
        if r.status != 200 {
            return Err(format!("{method} /v1/halt: {} {}", r.status, r.body_text()));
        }
        let state: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{method} /v1/halt: response is not JSON: {e}"))?;
        state["revision"]
            .as_u64()
            .ok_or_else(|| format!("{method} /v1/halt: no revision in {state}"))
    }
}

/// An `sse-broadcaster` process of a given build on a control plane's etcd, started and
/// stopped on its own (the fan-out benchmark starts each build it compares fresh for each
/// round; [`Broadcasters`] are the plane's own replicas). Stopped by PID on drop.
pub struct BroadcasterProcess {
    // Before `dir`: stopped while its log still exists.
    process: Process,
    addr: SocketAddr,
    dir: TempDir,
}

impl BroadcasterProcess {
    /// Starts `binary` (default: this build's `sse-broadcaster`) on the etcd at `endpoint`,
    /// with the variables `env` besides, on a free loopback port; returns once it is ready
    /// (its first snapshot is loaded).
    pub fn start(
        endpoint: &str,
        binary: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<BroadcasterProcess, String> {
        let binary = match binary {
            Some(path) => path.to_path_buf(),
            None => workspace_binary("sse-broadcaster")?,
        };
        let dir = tempfile::Builder::new()
            .prefix("boifi-broadcaster-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut vars = vec![("BOIFI_ETCD_ENDPOINTS".to_owned(), endpoint.to_owned())];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (process, addr) = retry(START_ATTEMPTS, || {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut command = service_command(&binary, &vars, addr);
            let log = dir
                .path()
                .join(format!("sse-broadcaster-{}.log", addr.port()));
            let name = format!("sse-broadcaster on {addr}");
            let mut process = Process::spawn(&name, &mut command, &log)?;
            process.wait_ready(READY_TIMEOUT, || ready(addr))?;
            Ok((process, addr))
        })?;
        Ok(BroadcasterProcess { process, addr, dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Where its log is written.
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}
