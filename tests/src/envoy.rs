//! A real Envoy with the real BOIFI plugin, for tests: config from `wasm/plugin/envoy.yaml`
//! with free loopback ports and node metadata as Istio sets it; readiness on the admin
//! `/ready`; log kept in a file and printed when a test fails; stopped by PID on drop.
//! Also a tiny upstream server to put behind it.
//!
//! Envoy and the plugin module come from [`crate::binaries`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::binaries::{envoy_binary, plugin_wasm, ENVOY_BIN_ENV};
use crate::http::http_request;
use crate::istio::{self, sha256_hex, FailStrategy, Pod, WasmPlugin};
use crate::process::{retry, Process};
use crate::{free_port, wait_until};

/// The header in which an [`Upstream`] names itself.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// The broadcaster's cluster in a sidecar, as the chart computes it for release `boifi` in
/// namespace `boifi` (istiod's `outbound|<port>||<FQDN>`).
pub const BROADCASTER_CLUSTER: &str =
    "outbound|8081||boifi-sse-broadcaster.boifi.svc.cluster.local";
/// The `:authority` of the plugin's polls, as the chart computes it.
pub const BROADCASTER_AUTHORITY: &str = "boifi-sse-broadcaster.boifi.svc.cluster.local:8081";

const START_ATTEMPTS: u32 = 3;
/// Envoy with V8 and the plugin is ready in about a second; tests run in parallel on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start an [`Envoy`] as Istio runs a workload's sidecar: the bootstrap pilot-agent
/// writes for the pod (node metadata, Istio's stats tags and matcher; see [`crate::istio`]),
/// an inbound listener in front of the workload's upstream, and the plugin delivered as istiod
/// delivers the chart's WasmPlugin, over ECDS.
#[derive(Debug, Clone)]
pub struct EnvoyBuilder {
    namespace: String,
    workload_name: String,
    labels: Vec<(String, String)>,
    replica: usize,
    upstream_port: u16,
    broadcaster_port: u16,
    plugin_config: Option<String>,
    module: Option<PathBuf>,
    upstream_http2: bool,
    concurrency: u32,
    cpus: Option<String>,
    /// Other releases' WasmPlugins in the same filter chain: (namespace, broadcaster port).
    other_releases: Vec<(String, u16)>,
}

impl EnvoyBuilder {
    /// An Envoy for workload `demo/reviews` (label `app: reviews`) in front of
    /// `127.0.0.1:upstream_port`, with the broadcaster at `127.0.0.1:broadcaster_port`.
    pub fn new(upstream_port: u16, broadcaster_port: u16) -> Self {
        EnvoyBuilder {
            namespace: "demo".into(),
            workload_name: "reviews".into(),
            labels: vec![("app".into(), "reviews".into())],
            replica: 0,
            upstream_port,
            broadcaster_port,
            plugin_config: None,
            module: None,
            upstream_http2: false,
            concurrency: 2,
            cpus: None,
            other_releases: Vec::new(),
        }
    }

    /// Adds a second BOIFI release's WasmPlugin (named as the chart names it, in `namespace`,
    /// e.g. a release in another namespace that also targets this workload), after this one in
    /// the filter chain, polling its own broadcaster at `127.0.0.1:broadcaster_port`. istiod
    /// gives neither plugin a `vm_id`, so both run in Envoy's shared-data namespace "".
    pub fn other_release(mut self, namespace: &str, broadcaster_port: u16) -> Self {
        self.other_releases
            .push((namespace.to_owned(), broadcaster_port));
        self
    }

    /// The module the WasmPlugin delivers; by default the plugin ([`plugin_wasm`]).
    pub fn module(mut self, path: &Path) -> Self {
        self.module = Some(path.to_path_buf());
        self
    }

    /// The namespace and the Deployment this sidecar's pod belongs to.
    pub fn workload(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = namespace.into();
        self.workload_name = name.into();
        self
    }

    /// Replaces the pod's own labels (Istio's and `pod-template-hash` are added).
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// The workload speaks HTTP/2 (gRPC): istiod gives its inbound cluster HTTP/2 for a port
    /// named or declared `grpc`.
    pub fn upstream_http2(mut self) -> Self {
        self.upstream_http2 = true;
        self
    }

    /// Which replica of the Deployment this pod is (its pod name differs).
    pub fn replica(mut self, index: usize) -> Self {
        self.replica = index;
        self
    }

    /// The WasmPlugin's `pluginConfig` as JSON; by default
    /// [`EnvoyBuilder::default_plugin_config`].
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.into());
        self
    }

    /// Worker threads (each runs its own plugin VM).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Pins Envoy to these CPUs (`taskset -c` syntax, e.g. `"0"`), for benchmarks.
    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// The chart's computed `pluginConfig` with a short poll wait and backoff, so tests see
    /// changes and retries quickly.
    pub fn default_plugin_config() -> String {
        Self::plugin_config_for(BROADCASTER_CLUSTER, BROADCASTER_AUTHORITY)
    }

    /// The same, for the broadcaster behind `cluster` at `authority`.
    fn plugin_config_for(cluster: &str, authority: &str) -> String {
        format!(
            r#"{{"broadcaster_cluster":"{cluster}","broadcaster_authority":"{authority}","poll_wait_ms":2000,"backoff_min_ms":50,"backoff_max_ms":500}}"#
        )
    }

    /// The pod this sidecar belongs to.
    pub fn pod(&self) -> Pod {
        Pod::of_deployment(
            &self.namespace,
            &self.workload_name,
            &self.labels,
            self.replica,
        )
    }

    /// The chart's WasmPlugin for this sidecar's namespace, pinned to the module's sha256 and
    /// failing open, as the chart renders it.
    pub fn wasm_plugin(&self, module: &Path) -> WasmPlugin {
        let sha256 = fs::read(module).ok().map(|bytes| sha256_hex(&bytes));
        WasmPlugin {
            namespace: self.namespace.clone(),
            name: WASM_PLUGIN_NAME.into(),
            module: module.to_path_buf(),
            sha256,
            fail_strategy: FailStrategy::FailOpen,
            plugin_config: self
                .plugin_config
                .clone()
                .unwrap_or_else(Self::default_plugin_config),
        }
    }

    /// The WasmPlugins of [`EnvoyBuilder::other_release`], each with the cluster of its
    /// broadcaster (as istiod names the Service `boifi-sse-broadcaster` in that namespace).
    fn other_plugins(&self, module: &Path) -> Vec<(WasmPlugin, String, u16)> {
        self.other_releases
            .iter()
            .map(|(namespace, port)| {
                let host = format!("boifi-sse-broadcaster.{namespace}.svc.cluster.local");
                let cluster = format!("outbound|8081||{host}");
                let mut plugin = self.wasm_plugin(module);
                plugin.namespace = namespace.clone();
                plugin.plugin_config = Self::plugin_config_for(&cluster, &format!("{host}:8081"));
                (plugin, cluster, *port)
            })
            .collect()
    }

    /// The bootstrap: what pilot-agent writes, plus the inbound listener and the clusters
    /// istiod would send over LDS and CDS, with each plugin's filter reading its file of
    /// `ecds_files`.
    fn bootstrap(
        &self,
        plugins: &[(WasmPlugin, String, u16)],
        ports: &Ports,
        ecds_files: &[PathBuf],
    ) -> Value {
        let cluster = |name: &str, port: u16| {
            json!({
                "name": name,
                // Istio 1.23+ names clusters "<name>;" in stats (the delimited cluster_name tag).
                "alt_stat_name": format!("{name};"),
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                ]}]}
            })
        };
        let mut inbound = cluster(INBOUND_CLUSTER, self.upstream_port);
        if self.upstream_http2 {
            inbound["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            });
        }
        let router = json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
        let http_filters: Vec<Value> = plugins
            .iter()
            .zip(ecds_files)
            .map(|((plugin, _, _), file)| plugin.http_filter(file))
            .chain([router])
            .collect();
        let clusters: Vec<Value> = [inbound]
            .into_iter()
            .chain(plugins.iter().map(|(_, name, port)| cluster(name, *port)))
            .collect();
        json!({
            "node": self.pod().node(),
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
            "stats_config": istio::stats_config(),
            "static_resources": {
                "listeners": [{
                    "name": "virtualInbound",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.listen}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": format!("inbound_0.0.0.0_{}", ports.listen),
                            "route_config": {"name": "inbound", "virtual_hosts": [{
                                "name": "inbound|http|8080", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": INBOUND_CLUSTER}}]
                            }]},
                            "http_filters": http_filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }

    /// Starts Envoy and waits until its admin `/ready` says LIVE and the plugin was delivered.
    /// Panics with the log after `START_ATTEMPTS` (3) failed starts (a port reported free can
    /// be taken meanwhile).
    pub fn start(&self) -> Envoy {
        let module = match &self.module {
            Some(module) => module.clone(),
            None => plugin_wasm().unwrap_or_else(|e| panic!("no plugin: {e}")),
        };
        let plugins: Vec<(WasmPlugin, String, u16)> = [(
            self.wasm_plugin(&module),
            BROADCASTER_CLUSTER.to_owned(),
            self.broadcaster_port,
        )]
        .into_iter()
        .chain(self.other_plugins(&module))
        .collect();
        let options = LaunchOptions {
            concurrency: self.concurrency,
            cpus: self.cpus.clone(),
        };
        let resources: Vec<Value> = plugins
            .iter()
            .map(|(plugin, _, _)| {
                plugin
                    .delivered_resource()
                    .unwrap_or_else(|e| panic!("the chart's WasmPlugin is not delivered: {e}"))
            })
            .collect();
        // Envoy's file-based ECDS takes one resource per file (istiod's ADS sends them all).
        let ecds_name = |i: usize| match i {
            0 => ECDS_FILE.to_owned(),
            i => format!("ecds-{i}.json"),
        };
        let mut envoy = Envoy::start_with(&options, |ports, dir| {
            let mut files = Vec::new();
            for (i, resource) in resources.iter().enumerate() {
                let file = dir.join(ecds_name(i));
                istio::write_ecds(&file, 1, std::slice::from_ref(resource))
                    .map_err(|e| format!("write {}: {e}", file.display()))?;
                files.push(file);
            }
            Ok(self.bootstrap(&plugins, ports, &files).to_string())
        });
        envoy.plugin = Some(DeliveredPlugin {
            resource_name: plugins[0].0.resource_name(),
            ecds_file: envoy._dir.path().join(ECDS_FILE),
            version: AtomicU64::new(1),
        });
        envoy
            .wait_plugin_version(1)
            .unwrap_or_else(|e| panic!("plugin not delivered: {e}\n{}", envoy.log()));
        envoy
    }
}

/// The WasmPlugin's name in the chart (release `boifi`).
pub const WASM_PLUGIN_NAME: &str = "boifi-plugin";
/// The workload's inbound cluster, as istiod names it for port 8080.
const INBOUND_CLUSTER: &str = "inbound|8080||";
/// The ECDS file in Envoy's temp dir.
const ECDS_FILE: &str = "ecds.json";
/// How long Envoy may take to apply an ECDS update.
const ECDS_TIMEOUT: Duration = Duration::from_secs(20);

/// The free loopback ports an Envoy listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The HTTP listener in front of the upstream.
    pub listen: u16,
    pub admin: u16,
}

/// The plugin's filter in a sidecar started by [`EnvoyBuilder`], and the last ECDS version
/// written for it.
#[derive(Debug)]
struct DeliveredPlugin {
    resource_name: String,
    ecds_file: PathBuf,
    version: AtomicU64,
}

/// How [`Envoy::start_with`] runs Envoy.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Worker threads.
    pub concurrency: u32,
    /// CPUs to pin Envoy to (`taskset -c` syntax); `None` leaves it to the scheduler.
    pub cpus: Option<String>,
}

/// A running Envoy on loopback. Killed and waited for on drop; its temp dir (config, log)
/// removed.
pub struct Envoy {
    // Before `dir`: stopped (and its log printed on failure) while the log still exists.
    process: Process,
    _dir: TempDir,
    listen_port: u16,
    admin_port: u16,
    concurrency: u32,
    plugin: Option<DeliveredPlugin>,
}

impl Envoy {
    /// Starts Envoy with the configuration `render(ports, dir)` returns, on free loopback
    /// ports, and waits until its admin `/ready` says LIVE. The configuration must put the
    /// admin interface on `ports.admin` and a listener on `ports.listen`; files it refers to
    /// may be written to `dir`, Envoy's temp dir. Panics with the log after `START_ATTEMPTS`
    /// (3) failed starts (a port reported free can be taken meanwhile).
    pub fn start_with(
        options: &LaunchOptions,
        mut render: impl FnMut(&Ports, &Path) -> Result<String, String>,
    ) -> Envoy {
        let binary = envoy_binary().unwrap_or_else(|e| panic!("no Envoy: {e}"));
        retry(START_ATTEMPTS, || {
            let dir = tempfile::Builder::new()
                .prefix("boifi-envoy-")
                .tempdir()
                .expect("temp dir for Envoy");
            let (listen_port, admin_port) = (free_port(), free_port());
            if listen_port == admin_port {
                return Err("ports collided".into());
            }
            let ports = Ports {
                listen: listen_port,
                admin: admin_port,
            };
            let config =
                render(&ports, dir.path()).unwrap_or_else(|e| panic!("Envoy config: {e}"));
            let config_path = dir.path().join("envoy.yaml");
            fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
            // `taskset` execs Envoy, so the PID stays Envoy's.
            let mut command = match options.cpus.as_deref() {
                Some(cpus) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", cpus]).arg(&binary);
                    c
                }
                None => Command::new(&binary),
            };
            command
                .arg("-c")
                .arg(&config_path)
                .args(["--concurrency", &options.concurrency.to_string()])
                // Several Envoys run at once; hot restart would make them share memory by base id.
                .arg("--disable-hot-restart")
                .args(["--log-level", "info"]);
            let name = format!("Envoy (listener {listen_port}, admin {admin_port})");
            let mut process = Process::spawn(&name, &mut command, &dir.path().join("envoy.log"))?;
            let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
            process.wait_ready(READY_TIMEOUT, || live(admin))?;
            Ok(Envoy {
                process,
                _dir: dir,
                listen_port,
                admin_port,
                concurrency: options.concurrency,
                plugin: None,
            })
        })
        .unwrap_or_else(|e| {
            panic!(
                "Envoy did not start after {START_ATTEMPTS} attempts (binary from {ENVOY_BIN_ENV} or the venv):\n{e}"
            )
        })
    }

    /// The HTTP listener, in front of the upstream.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.listen_port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port))
    }

    /// Plugin VMs, each with its own root context and policy poller: one per worker thread
    /// plus one on the main thread.
    pub fn plugin_vms(&self) -> usize {
        self.concurrency as usize + 1
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A GET on the admin interface; the body when it answered 200.
    pub fn admin_get(&self, path: &str) -> Result<String, String> {
        let response = http_request(
            self.admin_addr(),
            "GET",
            path,
            &[],
            None,
            Duration::from_secs(5),
        )
        .map_err(|e| format!("GET {path}: {e}"))?;
        if response.status == 200 {
            Ok(response.body_text())
        } else {
            Err(format!("GET {path}: status {}", response.status))
        }
    }

    /// The plugin's count of `fault_type` (`abort` or `delay`) faults injected by `policy`, from
    /// Envoy's stats; 0 while the counter is not defined.
    pub fn faults_injected(&self, policy: &str, fault_type: &str) -> u64 {
        self.stat(&format!(
            "wasmcustom.boifi_faults_injected.fault_type.{fault_type}.policy.{policy}"
        ))
        .unwrap_or(0)
    }

    /// The value of counter or gauge `name` (as in `/stats`, e.g.
    /// `wasmcustom.boifi_config_revision`); `None` while it is not defined.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = self.admin_get("/stats?usedonly").ok()?;
        body.lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Delivers a new version of the plugin's ECDS resource, as istiod does when the
    /// WasmPlugin changes (pilot-agent's fetch step included), and waits until Envoy took it.
    /// `Err` when nothing reaches Envoy (a FAIL_CLOSE plugin that failed its fetch) or Envoy
    /// rejected it (a module that does not load); Envoy then keeps the previous filter.
    pub fn deliver_plugin(&self, plugin: &WasmPlugin) -> Result<(), String> {
        let resource = plugin.delivered_resource()?;
        let rejected_before = self.ecds_rejections();
        let delivered = self
            .plugin
            .as_ref()
            .ok_or("this Envoy was not started by EnvoyBuilder")?;
        let version = delivered.version.fetch_add(1, Ordering::SeqCst) + 1;
        istio::write_ecds(&delivered.ecds_file, version, &[resource])
            .map_err(|e| format!("write ECDS: {e}"))?;
        self.wait_plugin_version(version)?;
        match self.ecds_rejections() {
            n if n > rejected_before => Err(format!("Envoy rejected ECDS version {version}")),
            _ => Ok(()),
        }
    }

    /// ECDS updates Envoy rejected so far, from its log. (Istio's stats matcher drops Envoy's
    /// `extension_config_discovery.*` counters, so a sidecar has no stat for it.)
    fn ecds_rejections(&self) -> usize {
        self.log().matches("config update rejected").count()
    }

    /// Waits until Envoy has handled the plugin filter's ECDS `version` (taken or rejected;
    /// `/config_dump` shows the newest version received).
    fn wait_plugin_version(&self, version: u64) -> Result<(), String> {
        let delivered = self
            .plugin
            .as_ref()
            .ok_or("this Envoy was not started by EnvoyBuilder")?;
        let current = || -> Option<String> {
            let dump: Value =
                serde_json::from_str(&self.admin_get("/config_dump?resource=ecds_filters").ok()?)
                    .ok()?;
            dump["configs"]
                .as_array()?
                .iter()
                .find(|c| c["ecds_filter"]["name"] == delivered.resource_name.as_str())
                .and_then(|c| c["version_info"].as_str().map(str::to_owned))
        };
        let deadline = Instant::now() + ECDS_TIMEOUT;
        let expected = version.to_string();
        if wait_until(deadline, || current().as_deref() == Some(expected.as_str())) {
            Ok(())
        } else {
            Err(format!(
                "ECDS version {:?} after {ECDS_TIMEOUT:?}, expected {expected}",
                current()
            ))
        }
    }

    /// Per plugin VM (by Envoy thread), the newest revision it applied, from the plugin's log
    /// lines `policies at revision N: ...`.
    pub fn applied_revisions(&self) -> BTreeMap<String, u64> {
        applied_revisions(&self.log())
    }

    /// True when every plugin VM applied `revision` or a newer one.
    pub fn has_applied(&self, revision: u64) -> bool {
        let revisions = self.applied_revisions();
        revisions.len() >= self.plugin_vms() && revisions.values().all(|r| *r >= revision)
    }

    /// Kills Envoy by PID and waits for it. Idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Envoy's heap in use: tcmalloc's allocated bytes from `/memory` (V8's own pages are not
    /// in it).
    pub fn heap_allocated(&self) -> Result<u64, String> {
        let body = self.admin_get("/memory")?;
        let memory: Value = serde_json::from_str(&body).map_err(|e| format!("/memory: {e}"))?;
        memory["allocated"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no allocated in /memory: {body}"))
    }

    /// CPU time Envoy's threads have used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::process::cpu_time(self.pid()?)
    }
}

/// Parses the plugin's `policies at revision N:` log lines; Envoy's default log format puts
/// the thread id in the second bracket: `[time][thread][level][logger] ... message`.
fn applied_revisions(log: &str) -> BTreeMap<String, u64> {
    const MARK: &str = "policies at revision ";
    let mut by_thread = BTreeMap::new();
    for line in log.lines() {
        let Some(at) = line.find(MARK) else { continue };
        let Some(revision) = line[at + MARK.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(thread) = line.split("][").nth(1) else {
            continue;
        };
        let entry = by_thread.entry(thread.to_owned()).or_insert(0);
        *entry = (*entry).max(revision);
    }
    by_thread
}

/// Ok when the admin `/ready` says LIVE.
fn live(admin: SocketAddr) -> Result<(), String> {
    match http_request(admin, "GET", "/ready", &[], None, Duration::from_secs(1)) {
        Ok(r) if r.status == 200 && r.body_text().trim() == "LIVE" => Ok(()),
        Ok(r) => Err(format!("/ready: {} {}", r.status, r.body_text().trim())),
        Err(e) => Err(format!("/ready: {e}")),
    }
}

/// A tiny HTTP/1.1 upstream on loopback: answers every request `200` with body
/// [`Upstream::BODY`] and header [`UPSTREAM_HEADER`] (`1`, or the name it was started with),
/// and counts requests. Stopped on drop.
pub struct Upstream {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    pub const BODY: &'static str = "hello from upstream";

    /// An upstream that answers with `x-upstream: 1`.
    pub fn start() -> Upstream {
        Upstream::named("1")
    }

    /// An upstream that identifies itself as `name` in [`UPSTREAM_HEADER`] (e.g. the workload
    /// and replica it stands for).
    pub fn named(name: &str) -> Upstream {
        let name: Arc<str> = Arc::from(name);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, name) = (Arc::clone(&requests), Arc::clone(&name));
                    std::thread::spawn(move || {
                        let _ = serve_connection(conn, &requests, &name);
                    });
                }
            })
        };
        Upstream {
            addr,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves keep-alive requests on one connection until the peer closes or goes idle.
fn serve_connection(conn: TcpStream, requests: &AtomicU64, name: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?).take(u64::MAX);
    let mut writer = conn;
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        reader.set_limit(64 * 1024);
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((n, v)) = trimmed.split_once(':') {
                if n.trim().eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        reader.set_limit(content_length as u64);
        io::copy(&mut reader, &mut io::sink())?;
        requests.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{UPSTREAM_HEADER}: {name}\r\ncontent-length: {}\r\n\r\n{}",
            Upstream::BODY.len(),
            Upstream::BODY
        );
        writer.write_all(response.as_bytes())?;
    }
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("listener", &self.listen_port)
            .field("admin", &self.admin_port)
            .field("pid", &self.pid())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_an_istio_sidecars() {
        let builder = EnvoyBuilder::new(1, 2)
            .workload("shop", "cart-v1")
            .labels(&[("app", "cart"), ("version", "v\"1")]);
        let dir = tempfile::tempdir().expect("temp dir");
        let module = dir.path().join("plugin.wasm");
        fs::write(&module, b"module").expect("module");
        let plugin = builder.wasm_plugin(&module);
        let ecds = dir.path().join(ECDS_FILE);
        let ports = Ports {
            listen: 3,
            admin: 4,
        };
        let plugins = [(plugin.clone(), BROADCASTER_CLUSTER.to_owned(), 2)];
        let config = builder.bootstrap(&plugins, &ports, std::slice::from_ref(&ecds));
        assert_eq!(config["node"]["metadata"]["WORKLOAD_NAME"], "cart-v1");
        assert_eq!(config["node"]["metadata"]["LABELS"]["version"], "v\"1");
        assert_eq!(config["node"]["cluster"], "cart.shop");
        assert_eq!(
            config["admin"]["address"]["socket_address"]["port_value"],
            4
        );
        let filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        assert_eq!(
            filters[0]["name"],
            "extenstions.istio.io/wasmplugin/shop.boifi-plugin"
        );
        assert_eq!(
            filters[0]["config_discovery"]["config_source"]["path_config_source"]["path"],
            ecds.display().to_string()
        );
        assert_eq!(
            plugin.sha256.as_deref(),
            Some(sha256_hex(b"module").as_str())
        );
        let clusters = &config["static_resources"]["clusters"];
        assert_eq!(clusters[1]["name"], BROADCASTER_CLUSTER);
    }

    #[test]
    fn revisions_are_read_per_thread() {
        let log = "\
[2025-01-01 00:00:00.001][100][info][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log boifi boifi: policies at revision 3: 0 for this workload
[2025-01-01 00:00:00.002][101][info][wasm] [x] wasm log boifi boifi: policies at revision 3: 0 for this workload
[2025-01-01 00:00:00.003][100][info][wasm] [x] wasm log boifi boifi: policies at revision 7: 1 for this workload, halted
[2025-01-01 00:00:00.004][101][warning][wasm] [x] wasm log boifi boifi: policy poll failed: no response; keeping revision 3
";
        let revisions = applied_revisions(log);
        assert_eq!(revisions.len(), 2);
        assert_eq!(revisions["100"], 7);
        assert_eq!(revisions["101"], 3);
    }

    #[test]
    fn upstream_answers_and_counts() {
        let upstream = Upstream::start();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.port()));
        let r = http_request(
            addr,
            "POST",
            "/x",
            &[("x-a", "b")],
            Some(b"abc"),
            Duration::from_secs(5),
        )
        .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some("1"));
        assert_eq!(r.body_text(), Upstream::BODY);
        assert_eq!(upstream.requests(), 1);
    }
}
