//! A real Prometheus for tests: Debian's `prometheus` (installed by `scripts/install-deps.sh`)
//! with a config of our own, scraping loopback targets every second into a temp storage dir,
//! its web API on a free loopback port. Ready when `/-/ready` answers; log kept in a file and
//! printed when a test fails; stopped by PID on drop.
//!
//! Queries go to the HTTP API (`/api/v1/query`); a scrape lands about five seconds after the
//! start even with a one-second interval, so callers wait with [`Prometheus::wait_for`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::binaries::{prometheus_binary, promtool_binary, PROMETHEUS_BIN_ENV, PROMTOOL_BIN_ENV};
use crate::free_port;
use crate::http::http_request;
use crate::process::{retry, Process};

const START_ATTEMPTS: u32 = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape job: a name (the `job` label), a loopback target and its metrics path.
#[derive(Debug, Clone)]
struct Job {
    name: String,
    target: SocketAddr,
    path: String,
    /// A YAML list of `metric_relabel_configs`, as in a Prometheus config file.
    metric_relabel_configs: Option<String>,
}

/// How to start a [`Prometheus`]: its scrape jobs and rule files.
#[derive(Debug, Clone, Default)]
pub struct PrometheusBuilder {
    jobs: Vec<Job>,
    rule_files: Vec<PathBuf>,
}

impl PrometheusBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scrapes `http://{target}{path}` every second as job `name`. Names are letters, digits,
    /// `-` and `_`; paths start with `/`.
    pub fn scrape(mut self, name: &str, target: SocketAddr, path: &str) -> Self {
        self.jobs.push(Job {
            name: name.to_owned(),
            target,
            path: path.to_owned(),
            metric_relabel_configs: None,
        });
        self
    }

    /// Applies `rules` (a YAML list of Prometheus `metric_relabel_configs`) to the samples of
    /// the job added last.
    pub fn metric_relabel_configs(mut self, rules: &str) -> Self {
        if let Some(job) = self.jobs.last_mut() {
            job.metric_relabel_configs = Some(rules.to_owned());
        }
        self
    }

    /// Loads a Prometheus rule file (recording and alerting rules, evaluated every second).
    pub fn rule_file(mut self, path: &Path) -> Self {
        self.rule_files.push(path.to_path_buf());
        self
    }

    fn config(&self) -> Result<String, String> {
        // A 1 s interval needs a timeout no longer than it.
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !self.rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for path in &self.rule_files {
                let path = path.display().to_string();
                if path.contains(['\'', '\n']) {
                    return Err(format!("bad rule file path {path:?}"));
                }
                config.push_str(&format!("  - '{path}'\n"));
            }
        }
        config.push_str("scrape_configs:\n");
        for job in &self.jobs {
            let name_ok = !job.name.is_empty()
                && job
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            let path_ok = job.path.starts_with('/')
                && !job
                    .path
                    .contains(|c: char| c.is_whitespace() || c == '\'' || c == '"');
            if !name_ok || !path_ok {
                return Err(format!("bad scrape job {job:?}"));
            }
            config.push_str(&format!(
                "  - job_name: '{}'\n    metrics_path: '{}'\n    static_configs:\n      - targets: ['{}']\n",
                job.name, job.path, job.target
            ));
            if let Some(rules) = &job.metric_relabel_configs {
                config.push_str("    metric_relabel_configs:\n");
                for line in rules.lines() {
                    config.push_str(&format!("      {line}\n"));
                }
            }
        }
        Ok(config)
    }

    /// Starts Prometheus and waits until `/-/ready` answers 200. Panics with the log after
    /// [`START_ATTEMPTS`] failed starts (a port reported free can be taken meanwhile).
    pub fn start(&self) -> Prometheus {
        let config = self
            .config()
            .unwrap_or_else(|e| panic!("Prometheus config: {e}"));
        let binary = prometheus_binary();
        retry(START_ATTEMPTS, || Prometheus::launch(&binary, &config)).unwrap_or_else(|e| {
            panic!(
                "Prometheus did not start after {START_ATTEMPTS} attempts (binary {}; scripts/install-deps.sh installs it, {PROMETHEUS_BIN_ENV} overrides):\n{e}",
                binary.display()
            )
        })
    }
}

/// One series of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every label, `__name__` included.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A running Prometheus on loopback. Killed and waited for on drop; its temp dir (config,
/// storage, log) removed.
pub struct Prometheus {
    // Before `dir`: stopped (and its log printed on failure) while the log still exists.
    process: Process,
    _dir: TempDir,
    port: u16,
}

impl Prometheus {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// The last part of the log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// An instant query (`/api/v1/query`) whose result is a vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let response = http_request(self.addr(), "GET", &path, &[], None, QUERY_TIMEOUT)
            .map_err(|e| format!("query {promql:?}: {e}"))?;
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            format!(
                "query {promql:?}: status {}, not JSON ({e}): {}",
                response.status,
                response.body_text()
            )
        })?;
        if response.status != 200 || body["status"] != "success" {
            return Err(format!(
                "query {promql:?}: status {}: {body}",
                response.status
            ));
        }
        parse_vector(&body["data"])
    }

    /// Polls `promql` until `condition` holds for its result (then that result) or `deadline`
    /// passes (then the last result or error).
    pub fn wait_for(
        &self,
        promql: &str,
        deadline: Instant,
        mut condition: impl FnMut(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>, String> {
        let mut last = Err("not queried yet".to_owned());
        let held = crate::wait_until(deadline, || {
            last = self.query(promql);
            last.as_deref().is_ok_and(&mut condition)
        });
        match last {
            Ok(samples) if held => Ok(samples),
            Ok(samples) => Err(format!(
                "{promql}: condition not met by the deadline; last result {samples:?}"
            )),
            Err(e) => Err(e),
        }
    }

    /// Kills Prometheus by PID and waits for it. Idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts Prometheus with `config` on a free port and waits until `/-/ready` answers 200.
    fn launch(binary: &Path, config: &str) -> Result<Prometheus, String> {
        let dir = tempfile::Builder::new()
            .prefix("boifi-prometheus-")
            .tempdir()
            .map_err(|e| format!("temp dir for Prometheus: {e}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let name = format!("Prometheus (port {})", addr.port());
        let log = dir.path().join("prometheus.log");
        let mut process = Process::spawn(&name, &mut command, &log)?;
        process.wait_ready(READY_TIMEOUT, || {
            match http_request(addr, "GET", "/-/ready", &[], None, Duration::from_secs(1)) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("/-/ready: {}", r.status)),
                Err(e) => Err(format!("/-/ready: {e}")),
            }
        })?;
        Ok(Prometheus {
            process,
            _dir: dir,
            port: addr.port(),
        })
    }
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("port", &self.port)
            .field("pid", &self.process.pid())
            .finish()
    }
}

/// Lints a `/metrics` exposition with `promtool check metrics` (names, types, help, units).
/// Panics, as a failed test, when promtool rejects it, and when promtool is missing: the check
/// is never skipped ([`promtool_binary`]; `scripts/install-deps.sh` installs Debian's
/// `prometheus`, which ships it).
pub fn promtool_check_metrics(text: &str) {
    let binary = promtool_binary();
    let mut child = Command::new(&binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/install-deps.sh installs promtool (Debian package \
                 `prometheus`), {PROMTOOL_BIN_ENV} overrides; the metrics check is not skipped",
                binary.display()
            )
        });
    // promtool reads all of stdin before it answers, so writing first cannot block on it.
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes());
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        written.is_ok() && out.status.success(),
        "promtool check metrics failed ({}{:?}):\n{}{}\n--- input:\n{text}",
        out.status,
        written.err(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `data` of a successful query: `{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}`.
fn parse_vector(data: &Value) -> Result<Vec<Sample>, String> {
    if data["resultType"] != "vector" {
        return Err(format!("expected a vector result, got {data}"));
    }
    let bad = |what: &str| format!("{what} in {data}");
    let series = data["result"]
        .as_array()
        .ok_or_else(|| bad("no result list"))?;
    series
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .ok_or_else(|| bad("no metric object"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("no sample value"))?;
            Ok(Sample { labels, value })
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_job_and_refuses_odd_ones() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let config = PrometheusBuilder::new()
            .scrape("policy-api", addr, "/metrics")
            .scrape("envoy", addr, "/stats/prometheus")
            .metric_relabel_configs("- action: keep\n  regex: boifi_.*")
            .config()
            .expect("valid jobs");
        assert!(config.contains(
            "targets: ['127.0.0.1:9']\n    metric_relabel_configs:\n      - action: keep\n        regex: boifi_.*\n"
        ));
        assert!(config.contains("scrape_interval: 1s"));
        assert!(config.contains("job_name: 'envoy'\n    metrics_path: '/stats/prometheus'"));
        assert!(config.contains("targets: ['127.0.0.1:9']"));
        assert!(PrometheusBuilder::new()
            .scrape("a b", addr, "/m")
            .config()
            .is_err());
        assert!(PrometheusBuilder::new()
            .scrape("a", addr, "m'")
            .config()
            .is_err());
    }

    #[test]
    fn queries_are_encoded_and_vectors_parsed() {
        assert_eq!(
            url_encode(r#"up{job="a b"} == 1"#),
            "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%201"
        );
        let data = serde_json::json!({
            "resultType": "vector",
            "result": [{"metric": {"__name__": "up", "job": "x"}, "value": [1.5, "1"]}]
        });
        let samples = parse_vector(&data).expect("vector");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].label("job"), Some("x"));
        assert_eq!(samples[0].value, 1.0);
        assert!(parse_vector(&serde_json::json!({"resultType": "matrix", "result": []})).is_err());
    }

    #[test]
    fn promtool_accepts_good_metrics_and_rejects_bad_ones() {
        promtool_check_metrics(
            "# HELP boifi_x_total X.\n# TYPE boifi_x_total counter\nboifi_x_total 1\n",
        );
        let bad = std::panic::catch_unwind(|| promtool_check_metrics("boifi_x_total{ 1\n"));
        assert!(bad.is_err(), "a malformed exposition passed");
    }
}
