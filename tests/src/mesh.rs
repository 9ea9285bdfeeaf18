//! A local mesh on loopback, for the end-to-end scenarios, the demo and the benchmarks.
//!
//! - [`ControlPlane`]: real etcd plus the `policy-api` and `sse-broadcaster` binaries as
//!   processes ([`ControlPlaneKind::Separate`]), or `boifi serve` alone on its embedded store
//!   ([`ControlPlaneKind::Serve`]). Auth is off. It can be killed and restarted on the same
//!   ports and data, like a crashed control plane.
//! - [`MeshBuilder`] / [`Mesh`]: the control plane plus workloads, each with Envoy replicas
//!   running the real plugin (node metadata as Istio sets it) in front of an [`Upstream`] that
//!   names the workload and replica in [`UPSTREAM_HEADER`].
//! - Helpers: write policies and the kill switch through the API (HTTP), wait until every
//!   plugin VM of every sidecar applied a revision, send requests round-robin across a
//!   workload's replicas and count the outcomes ([`Outcomes`]).
//!
//! Every process is stopped by PID on drop. The binaries come from [`crate::binaries`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::binaries::workspace_binary;
use crate::envoy::{Envoy, EnvoyBuilder, Upstream, UPSTREAM_HEADER};
use crate::http::{http_request, ready, HttpResponse, KeepAliveClient};
use crate::process::{retry, Process};
use crate::{free_port, wait_until, EtcdServer};

/// The header on faulted responses (the plugin's contract).
pub const FAULT_HEADER: &str = "x-boifi-fault";
/// Name of the policy [`Mesh::barrier`] writes; it selects every workload and matches nothing.
pub const BARRIER_POLICY: &str = "zz-mesh-barrier";
/// Path the barrier policy matches; no scenario sends it.
const BARRIER_PATH: &str = "/__boifi_mesh_barrier__";

const START_ATTEMPTS: u32 = 3;
/// A service is ready in well under a second; generous because tests share 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Every request of the harness, API or data plane.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sidecars apply a change within milliseconds; the deadline only bounds a broken run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

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

impl Service {
    fn launch(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command.args(&self.args);
        // Only the variables given here configure the service, whatever the caller's
        // environment holds (e.g. a tokens file).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BOIFI_") {
                command.env_remove(key);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BOIFI_LISTEN_ADDR", self.addr.to_string())
            .env("BOIFI_AUTH_DISABLED", "true")
            .env("RUST_LOG", "info");
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

/// The control plane: its processes, data and ports survive [`stop`](Self::stop) and
/// [`restart`](Self::restart). Stopped by PID on drop.
pub struct ControlPlane {
    kind: ControlPlaneKind,
    services: Vec<Service>,
    etcd: Option<EtcdServer>,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts the control plane on free loopback ports (or `api_port` for the API when given)
    /// and waits until every service is ready.
    pub fn start(kind: ControlPlaneKind, api_port: Option<u16>) -> Result<ControlPlane, String> {
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
                vec![Service {
                    name: "boifi serve",
                    binary: workspace_binary("boifi")?,
                    args: vec!["serve".into()],
                    env: vec![("BOIFI_DATA_DIR".into(), data.display().to_string())],
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
                let mut stream_addr = addr(free_port());
                while stream_addr == api_addr {
                    stream_addr = addr(free_port());
                }
                vec![
                    Service {
                        name: "policy-api",
                        binary: workspace_binary("policy-api")?,
                        args: Vec::new(),
                        env: store.clone(),
                        addr: api_addr,
                        log: log("policy-api"),
                        process: None,
                    },
                    Service {
                        name: "sse-broadcaster",
                        binary: workspace_binary("sse-broadcaster")?,
                        args: Vec::new(),
                        env: store,
                        addr: stream_addr,
                        log: log("sse-broadcaster"),
                        process: None,
                    },
                ]
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

    /// Where the sidecars poll for policies.
    pub fn stream_addr(&self) -> SocketAddr {
        self.services[self.services.len() - 1].addr
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

/// A workload to start: its identity and how many Envoy replicas serve it.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub replicas: usize,
}

impl WorkloadSpec {
    /// Workload `namespace/name` with label `app: name` and 2 replicas.
    pub fn new(namespace: &str, name: &str) -> Self {
        WorkloadSpec {
            namespace: namespace.into(),
            name: name.into(),
            labels: vec![("app".into(), name.into())],
            replicas: 2,
        }
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.retain(|(k, _)| k != key);
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
}

/// How to start a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    kind: ControlPlaneKind,
    api_port: Option<u16>,
    workloads: Vec<WorkloadSpec>,
    plugin_config: Option<String>,
}

impl MeshBuilder {
    pub fn new(kind: ControlPlaneKind) -> Self {
        MeshBuilder {
            kind,
            api_port: None,
            workloads: Vec::new(),
            plugin_config: None,
        }
    }

    pub fn workload(mut self, spec: WorkloadSpec) -> Self {
        self.workloads.push(spec);
        self
    }

    /// The API's port (default: a free one).
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = Some(port);
        self
    }

    /// The plugin configuration; by default the tests' short poll wait and backoff
    /// ([`EnvoyBuilder::default_plugin_config`]).
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.into());
        self
    }

    /// Starts the control plane, then every Envoy replica in parallel, and waits until every
    /// plugin VM holds the control plane's first snapshot.
    pub fn start(self) -> Result<Mesh, String> {
        let control = ControlPlane::start(self.kind, self.api_port)?;
        let stream_port = control.stream_addr().port();
        let jobs: Vec<(usize, usize)> = self
            .workloads
            .iter()
            .enumerate()
            .flat_map(|(w, spec)| (0..spec.replicas).map(move |r| (w, r)))
            .collect();
        let started: Vec<Replica> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|&(w, r)| {
                    let spec = &self.workloads[w];
                    let plugin_config = self.plugin_config.as_deref();
                    scope.spawn(move || Replica::start(spec, r, stream_port, plugin_config))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut replicas = started.into_iter();
        let workloads = self
            .workloads
            .into_iter()
            .map(|spec| Workload {
                replicas: replicas.by_ref().take(spec.replicas).collect(),
                spec,
            })
            .collect();
        let mesh = Mesh { workloads, control };
        // Every VM polls at once; its first snapshot (revision >= 1 once anything was
        // written, else 0) arrives within milliseconds.
        mesh.wait_applied_by(0, |_| true)?;
        Ok(mesh)
    }
}

/// One Envoy sidecar and the upstream it fronts.
pub struct Replica {
    name: String,
    envoy: Envoy,
    upstream: Upstream,
    client: KeepAliveClient,
}

impl Replica {
    fn start(
        spec: &WorkloadSpec,
        index: usize,
        stream_port: u16,
        plugin_config: Option<&str>,
    ) -> Replica {
        let name = format!("{}-{index}", spec.name);
        let upstream = Upstream::named(&name);
        let labels: Vec<(&str, &str)> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut builder = EnvoyBuilder::new(upstream.port(), stream_port)
            .workload(&spec.namespace, &spec.name)
            .labels(&labels)
            .replica(index)
            .concurrency(1);
        if let Some(config) = plugin_config {
            builder = builder.plugin_config(config);
        }
        let envoy = builder.start();
        let client = KeepAliveClient::new(envoy.addr(), REQUEST_TIMEOUT);
        Replica {
            name,
            envoy,
            upstream,
            client,
        }
    }

    /// `<workload>-<index>`, as the upstream names itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// One request over this replica's keep-alive connection.
    pub fn request(&self, req: &Req) -> io::Result<HttpResponse> {
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = req.body.as_deref().map(str::as_bytes);
        self.client.request(&req.method, &req.path, &headers, body)
    }

    /// Per plugin VM (by Envoy thread), the newest revision it applied.
    pub fn applied_revisions(&self) -> BTreeMap<String, u64> {
        self.envoy.applied_revisions()
    }

    /// True when every plugin VM of this sidecar applied `revision` or a newer one.
    pub fn has_applied(&self, revision: u64) -> bool {
        self.envoy.has_applied(revision)
    }
}

/// A workload: its identity and its replicas.
pub struct Workload {
    spec: WorkloadSpec,
    replicas: Vec<Replica>,
}

impl Workload {
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether `name` (or `namespace/name`) names this workload.
    fn is(&self, name: &str) -> bool {
        match name.split_once('/') {
            Some((namespace, name)) => self.spec.namespace == namespace && self.spec.name == name,
            None => self.spec.name == name,
        }
    }

    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// Sends `n` requests, request `i` to replica `i % replicas` (round-robin), each replica's
    /// share in order on its keep-alive connection, the replicas in parallel.
    pub fn send(&self, n: usize, req: &Req) -> Outcomes {
        let count = self.replicas.len();
        let parts: Vec<Outcomes> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter()
                .enumerate()
                .map(|(i, replica)| {
                    let share = n / count + usize::from(i < n % count);
                    scope.spawn(move || {
                        let mut outcomes = Outcomes::default();
                        for _ in 0..share {
                            let start = Instant::now();
                            let result = replica.request(req);
                            outcomes.record(result, start.elapsed());
                        }
                        outcomes
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut total = Outcomes::default();
        for part in parts {
            total.merge(part);
        }
        total
    }
}

/// A running mesh. Envoys, upstreams and the control plane are stopped on drop.
pub struct Mesh {
    // Sidecars first: they go down before the control plane they poll.
    workloads: Vec<Workload>,
    control: ControlPlane,
}

impl Mesh {
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// For [`ControlPlane::stop`] and [`ControlPlane::restart`].
    pub fn control_mut(&mut self) -> &mut ControlPlane {
        &mut self.control
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload called `name` (or `namespace/name`). Panics when there is none or more
    /// than one (a test bug).
    pub fn workload(&self, name: &str) -> &Workload {
        let mut found = self.workloads.iter().filter(|w| w.is(name));
        match (found.next(), found.next()) {
            (Some(w), None) => w,
            (None, _) => panic!("no workload {name:?} in this mesh"),
            (Some(_), Some(_)) => panic!("{name:?} is ambiguous: say namespace/name"),
        }
    }

    /// Every sidecar of every workload.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.workloads.iter().flat_map(|w| w.replicas.iter())
    }

    /// Writes a policy through the API.
    pub fn put_policy(&self, policy: &Value) -> Result<Written, String> {
        self.control.put_policy(policy)
    }

    /// Writes a policy and waits until every sidecar of the named workloads applied it.
    pub fn apply(&self, policy: &Value, workloads: &[&str]) -> Result<Written, String> {
        let written = self.put_policy(policy)?;
        self.wait_applied(written.revision, workloads)?;
        Ok(written)
    }

    /// Waits until every plugin VM of every sidecar of the named workloads (`name` means every
    /// namespace's) applied `revision` (or newer); returns how long that took. Only sidecars that a change concerns receive
    /// it, so name those (or use [`Mesh::barrier`]).
    pub fn wait_applied(&self, revision: u64, workloads: &[&str]) -> Result<Duration, String> {
        for name in workloads {
            assert!(
                self.workloads.iter().any(|w| w.is(name)),
                "no workload {name:?} in this mesh"
            );
        }
        self.wait_applied_by(revision, |w| workloads.iter().any(|name| w.is(name)))
    }

    /// [`Mesh::wait_applied`] for every sidecar (for changes every sidecar receives: the kill
    /// switch, a policy selecting everyone).
    pub fn wait_all_applied(&self, revision: u64) -> Result<Duration, String> {
        self.wait_applied_by(revision, |_| true)
    }

    fn wait_applied_by(
        &self,
        revision: u64,
        selected: impl Fn(&Workload) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let replicas: Vec<&Replica> = self
            .workloads
            .iter()
            .filter(|w| selected(w))
            .flat_map(|w| w.replicas.iter())
            .collect();
        let done = wait_until(start + APPLY_TIMEOUT, || {
            replicas.iter().all(|r| r.has_applied(revision))
        });
        if done {
            return Ok(start.elapsed());
        }
        let lagging: Vec<String> = replicas
            .iter()
            .filter(|r| !r.has_applied(revision))
            .map(|r| format!("{} {:?}", r.name, r.applied_revisions()))
            .collect();
        Err(format!(
            "not every sidecar applied revision {revision} within {APPLY_TIMEOUT:?}; lagging \
             (revision per VM): {}",
            lagging.join(", ")
        ))
    }

    /// Makes sure every sidecar is current: rewrites [`BARRIER_POLICY`] (selects everyone,
    /// matches no request) and waits until every VM applied it, hence everything before it.
    /// Returns the barrier's revision.
    pub fn barrier(&self) -> Result<u64, String> {
        let written = self.put_policy(&json!({
            "metadata": {"name": BARRIER_POLICY},
            "spec": {"rules": [{
                "match": {"path": {"exact": BARRIER_PATH}},
                "fault": {"abort": {"httpStatus": 599}}
            }]}
        }))?;
        self.wait_all_applied(written.revision)?;
        Ok(written.revision)
    }

    /// Sets or clears the kill switch and waits until every sidecar applied it.
    pub fn set_halt(&self, halted: bool) -> Result<u64, String> {
        let revision = self.control.set_halt(halted)?;
        self.wait_all_applied(revision)?;
        Ok(revision)
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("control", &self.control.kind)
            .field("api", &self.control.api_addr())
            .field(
                "replicas",
                &self.replicas().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A request to send to a workload.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Req {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(path: &str) -> Self {
        Req::new("GET", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// What a batch of requests got back.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub sent: usize,
    /// Requests that got no response (connection or protocol errors).
    pub errors: usize,
    /// The first few errors, for messages.
    pub error_samples: Vec<String>,
    pub statuses: BTreeMap<u16, usize>,
    /// Faulted responses by [`FAULT_HEADER`] value (the policy).
    pub faults: BTreeMap<String, usize>,
    /// Responses by [`UPSTREAM_HEADER`] value: which replica's upstream answered.
    pub served_by: BTreeMap<String, usize>,
    pub latencies: Vec<Duration>,
}

impl Outcomes {
    /// Adds one result.
    pub fn record(&mut self, result: io::Result<HttpResponse>, elapsed: Duration) {
        self.sent += 1;
        self.latencies.push(elapsed);
        match result {
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(e.to_string());
                }
            }
            Ok(r) => {
                *self.statuses.entry(r.status).or_default() += 1;
                if let Some(policy) = r.header(FAULT_HEADER) {
                    *self.faults.entry(policy.to_owned()).or_default() += 1;
                }
                if let Some(upstream) = r.header(UPSTREAM_HEADER) {
                    *self.served_by.entry(upstream.to_owned()).or_default() += 1;
                }
            }
        }
    }

    pub fn merge(&mut self, other: Outcomes) {
        self.sent += other.sent;
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in other.served_by {
            *self.served_by.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }

    /// Responses with this status.
    pub fn status(&self, code: u16) -> usize {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// Responses carrying [`FAULT_HEADER`], whatever the policy.
    pub fn faulted(&self) -> usize {
        self.faults.values().sum()
    }

    /// Responses carrying [`FAULT_HEADER`] with this policy.
    pub fn faulted_by(&self, policy: &str) -> usize {
        self.faults.get(policy).copied().unwrap_or(0)
    }

    /// Responses that reached an upstream.
    pub fn upstream_answered(&self) -> usize {
        self.served_by.values().sum()
    }

    /// The `q` quantile (0..=1) of the latencies, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let rank = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(sorted[rank])
    }

    pub fn min_latency(&self) -> Option<Duration> {
        self.latencies.iter().min().copied()
    }

    pub fn max_latency(&self) -> Option<Duration> {
        self.latencies.iter().max().copied()
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent, statuses {:?}, faults {:?}, served by {:?}",
            self.sent, self.statuses, self.faults, self.served_by
        )?;
        if let (Some(p50), Some(max)) = (self.latency_quantile(0.5), self.max_latency()) {
            write!(f, ", latency p50 {p50:?} max {max:?}")?;
        }
        if self.errors > 0 {
            write!(f, ", {} errors {:?}", self.errors, self.error_samples)?;
        }
        Ok(())
    }
}

/// A named check run on a shared mesh by [`run_scenarios`].
pub type Scenario<M> = (&'static str, fn(&mut M));

/// Runs every scenario on `mesh` in order (they share it, so each uses its own paths and
/// policies), reports each as it finishes, and panics at the end naming those that failed.
/// One mesh per test file keeps the suite fast; the scenarios still fail one by one.
pub fn run_scenarios<M>(mesh: &mut M, scenarios: &[Scenario<M>]) {
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(mesh)));
        match result {
            Ok(()) => eprintln!("scenario {name} ... ok ({:.2?})", start.elapsed()),
            Err(cause) => {
                let message = cause
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| cause.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                eprintln!("scenario {name} ... FAILED: {message}");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

/// The two-sided bound on `|faulted - n * p|` that a correct sampler stays within with
/// probability 99.9% (normal approximation of the binomial, z = 3.29).
pub fn binomial_bound_999(n: usize, p: f64) -> f64 {
    3.29 * (n as f64 * p * (1.0 - p)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_and_quantiles() {
        let mut outcomes = Outcomes::default();
        let response = |status, fault: Option<&str>| HttpResponse {
            status,
            headers: fault
                .map(|f| vec![(FAULT_HEADER.to_owned(), f.to_owned())])
                .unwrap_or_else(|| vec![(UPSTREAM_HEADER.to_owned(), "a-0".to_owned())]),
            body: Vec::new(),
        };
        for i in 0..10u64 {
            let r = if i < 3 {
                Ok(response(503, Some("p")))
            } else {
                Ok(response(200, None))
            };
            outcomes.record(r, Duration::from_millis(i));
        }
        outcomes.record(
            Err(io::Error::new(io::ErrorKind::TimedOut, "slow")),
            Duration::from_millis(10),
        );
        assert_eq!(outcomes.sent, 11);
        assert_eq!(outcomes.errors, 1);
        assert_eq!(outcomes.status(503), 3);
        assert_eq!(outcomes.faulted_by("p"), 3);
        assert_eq!(outcomes.upstream_answered(), 7);
        assert_eq!(
            outcomes.latency_quantile(0.5),
            Some(Duration::from_millis(5))
        );
        assert_eq!(outcomes.max_latency(), Some(Duration::from_millis(10)));
        let mut total = Outcomes::default();
        total.merge(outcomes.clone());
        total.merge(outcomes);
        assert_eq!(total.status(200), 14);
    }

    #[test]
    fn binomial_bound_matches_the_normal_approximation() {
        let bound = binomial_bound_999(2400, 0.3);
        assert!((bound - 73.8).abs() < 0.5, "{bound}");
        assert_eq!(binomial_bound_999(100, 1.0), 0.0);
    }
}
