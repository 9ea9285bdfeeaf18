//! `bench-plugin`: what the BOIFI plugin costs a request, and how fast a policy change is
//! enforced by every sidecar. A benchmark, not a test: it prints numbers (a Markdown table for
//! `docs/benchmarks.md`) and checks nothing but the budgets it reports against.
//!
//! Cost: four Envoys (`--concurrency 1`, pinned to CPU 0, every route a `direct_response`, so
//! Envoy is the only server) differ only in their HTTP filters:
//! - `base`: router only;
//! - `fault`: Envoy's native fault filter with an abort and a delay at 0% (idle);
//! - `plugin-0`: the BOIFI plugin, no policy selecting this workload;
//! - `plugin-100`: the BOIFI plugin with 100 policies (`--policies`) selecting this workload,
//!   none matching
//!   the benchmark's requests (so every request is checked against all of them).
//!
//! The load runs on CPU 1. In each round every variant is measured in turn (order rotated per
//! round): latency over one keep-alive connection (each request timed), then Envoy CPU per
//! request under closed-loop load on several connections (Envoy's CPU time from
//! `/proc/<pid>/task/*/schedstat` divided by the requests served). Added costs are
//! differences within the same round; the report shows the median over rounds.
//!
//! Propagation: `boifi serve` plus 3 workloads x 2 replicas with the plugin's default poll
//! settings; a policy selecting everyone is changed repeatedly (a new abort status each time)
//! and every sidecar is probed until it answers with the new status. Meanwhile the API is
//! asked what it says (the policy's `status.enforcement`, `GET /v1/sidecars?policy=`), and the
//! two times are compared per change and per sidecar. `--propagation-only` skips the cost.
//!
//! Build and run (release; `boifi` must sit next to this binary):
//! `cargo build --release --bin boifi --bin bench-plugin && target/release/bench-plugin`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boifi_tests::bench::{median, quantile, whole_number};
use boifi_tests::binaries::plugin_wasm;
use boifi_tests::envoy::{Envoy, LaunchOptions, BROADCASTER_AUTHORITY, BROADCASTER_CLUSTER};
use boifi_tests::mesh::{ControlPlane, ControlPlaneKind, MeshBuilder, Req, WorkloadSpec};
use boifi_tests::wait_until;
use clap::Parser;
use serde_json::json;

const ENVOY_CPU: &str = "0";
const LOAD_CPU: &str = "1";
const LOAD_CONNECTIONS: usize = 4;
const DEFAULT_POLICIES: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(10);
/// The plugin's stat holding how many policies select the workload.
const POLICIES_ACTIVE: &str = "wasmcustom.boifi_policies_active";

/// What the BOIFI plugin costs a request, and how fast a policy change reaches every sidecar.
#[derive(Debug, Parser)]
#[command(name = "bench-plugin")]
struct Args {
    /// Interleaved rounds.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = whole_number(1, MAX))]
    rounds: usize,
    /// Timed requests per variant and round, on one connection (at least 100).
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = whole_number(100, MAX))]
    requests: usize,
    /// Seconds of closed-loop load per variant and round.
    #[arg(long, value_name = "S", default_value_t = 2, value_parser = whole_number(1, MAX))]
    seconds: usize,
    /// Policy changes for the propagation measurement.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = whole_number(1, MAX))]
    changes: usize,
    /// Policies loaded in the `plugin-100` variant (at most 1000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POLICIES, value_parser = whole_number(1, 1000))]
    policies: usize,
    /// Measure only propagation (no cost rounds).
    #[arg(long)]
    propagation_only: bool,
}

/// No bound but the machine's.
const MAX: u64 = u32::MAX as u64;

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err("needs 2 CPUs (Envoy on one, the load on the other)".into());
    }
    let plugin_size = std::fs::metadata(plugin_wasm()?)
        .map_err(|e| format!("plugin: {e}"))?
        .len();
    println!(
        "plugin module: {plugin_size} bytes; Envoy pinned to CPU {ENVOY_CPU}, load on CPU {LOAD_CPU}"
    );
    if args.propagation_only {
        report_propagation(&measure_propagation(args.changes)?);
        return Ok(());
    }
    let cost = measure_cost(args)?;
    let propagation = measure_propagation(args.changes)?;
    report(args, plugin_size, &cost, &propagation);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Base,
    Fault,
    Plugin0,
    Plugin100,
    /// One policy matching every request at a share so small it never faults, so each request
    /// pays the draw: keyed by `x-request-id` (read from the request, hashed) ...
    DrawRequest,
    /// ... or per attempt (the VM's random number): the difference is the cost of reading and
    /// hashing `x-request-id`.
    DrawAttempt,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Base,
        Variant::Fault,
        Variant::Plugin0,
        Variant::Plugin100,
        Variant::DrawRequest,
        Variant::DrawAttempt,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Base => "base (router only)",
            Variant::Fault => "native fault filter, idle",
            Variant::Plugin0 => "plugin, 0 policies",
            Variant::Plugin100 => "plugin, --policies loaded, none matching",
            Variant::DrawRequest => "plugin, 1 matching policy, drawn by x-request-id",
            Variant::DrawAttempt => "plugin, 1 matching policy, drawn per attempt",
        }
    }

    /// The workload identity (node metadata) of the plugin variants.
    fn workload(self) -> &'static str {
        match self {
            Variant::Plugin100 => "loaded",
            Variant::DrawRequest => "draw-request",
            Variant::DrawAttempt => "draw-attempt",
            _ => "idle",
        }
    }
}

/// One variant's figures in one round.
#[derive(Debug, Clone, Copy)]
struct Sample {
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_request: f64,
    requests_per_s: f64,
}

const CONFIG: &str = r#"
node:
  id: "sidecar~127.0.0.1~{{WORKLOAD}}"
  cluster: "{{WORKLOAD}}.bench"
  metadata:
    WORKLOAD_NAME: "{{WORKLOAD}}"
    NAMESPACE: "bench"
    LABELS: {app: "{{WORKLOAD}}"}
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} }
static_resources:
  listeners:
  - name: bench
    address:
      socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            name: bench
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
          http_filters:
{{FILTERS}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: boifi-broadcaster
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: boifi-broadcaster
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{BROADCASTER_PORT}} }
"#;

const FAULT_FILTER: &str = r#"          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort:
                http_status: 503
                percentage: { numerator: 0, denominator: HUNDRED }
              delay:
                fixed_delay: 1s
                percentage: { numerator: 0, denominator: HUNDRED }"#;

const PLUGIN_FILTER: &str = r#"          - name: boifi
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: boifi
                failure_policy: FAIL_OPEN
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"broadcaster_cluster":"boifi-broadcaster","broadcaster_authority":"boifi-broadcaster"}'
                vm_config:
                  vm_id: boifi
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: { filename: "{{PLUGIN_PATH}}" }"#;

/// The Envoy configuration of `variant`.
fn render(variant: Variant, plugin: &str, listen: u16, admin: u16, broadcaster: u16) -> String {
    let filters = match variant {
        Variant::Base => "",
        Variant::Fault => FAULT_FILTER,
        Variant::Plugin0 | Variant::Plugin100 | Variant::DrawRequest | Variant::DrawAttempt => {
            PLUGIN_FILTER
        }
    };
    CONFIG
        .replace("{{FILTERS}}", filters)
        .replace("{{PLUGIN_PATH}}", plugin)
        .replace("{{WORKLOAD}}", variant.workload())
        .replace("{{LISTEN_PORT}}", &listen.to_string())
        .replace("{{ADMIN_PORT}}", &admin.to_string())
        .replace("{{BROADCASTER_PORT}}", &broadcaster.to_string())
}

fn start_variant(variant: Variant, broadcaster_port: u16) -> Result<Envoy, String> {
    let plugin = plugin_wasm()?.display().to_string();
    let options = LaunchOptions {
        concurrency: 1,
        cpus: Some(ENVOY_CPU.into()),
    };
    Ok(Envoy::start_with(&options, |ports, _dir| {
        Ok(render(
            variant,
            &plugin,
            ports.listen,
            ports.admin,
            broadcaster_port,
        ))
    }))
}

/// Pins the calling thread to `cpus` (`taskset` on the thread's id).
fn pin_current_thread(cpus: &str) -> Result<(), String> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| format!("thread id: {e}"))?;
    let tid = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("thread id: unexpected /proc/thread-self")?
        .to_owned();
    let status = Command::new("taskset")
        .args(["-p", "-c", cpus, &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -p -c {cpus} {tid}: {status}"))
    }
}

/// `n` policies that select workload `bench/loaded` and never match `GET /bench`: each needs
/// its own path prefix and header, like real experiments on other routes.
fn loaded_policies(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            json!({
                "metadata": {"name": format!("bench-{i:03}")},
                "spec": {
                    "selector": {"namespace": "bench", "service": "loaded"},
                    "rules": [{
                        "match": {
                            "method": {"exact": "GET"},
                            "path": {"prefix": format!("/route-{i}/")},
                            "headers": [{"name": "x-user", "exact": format!("user-{i}")}]
                        },
                        "fault": {"percentage": 50, "abort": {"httpStatus": 503}}
                    }]
                }
            })
        })
        .collect()
}

/// The draw variants' policies: they match the benchmark's requests, but one request in 10^8
/// faults, so every request is sampled and (practically) none is faulted.
fn draw_policies() -> Vec<serde_json::Value> {
    [
        (Variant::DrawRequest, "request"),
        (Variant::DrawAttempt, "attempt"),
    ]
    .into_iter()
    .map(|(variant, sampling)| {
        json!({
            "metadata": {"name": variant.workload()},
            "spec": {
                "sampling": sampling,
                "selector": {"namespace": "bench", "service": variant.workload()},
                "rules": [{"match": {"path": {"exact": "/bench"}},
                           "fault": {"percentage": 0.000001, "abort": {"httpStatus": 503}}}]
            }
        })
    })
    .collect()
}

type CostSamples = BTreeMap<Variant, Vec<Sample>>;

fn measure_cost(args: &Args) -> Result<CostSamples, String> {
    let control = ControlPlane::start(ControlPlaneKind::Serve, None)?;
    let mut last_revision = 0;
    for policy in loaded_policies(args.policies)
        .into_iter()
        .chain(draw_policies())
    {
        last_revision = control.put_policy(&policy)?.revision;
    }
    let broadcaster = control.stream_addr().port();
    let envoys: Vec<(Variant, Envoy)> = Variant::ALL
        .iter()
        .map(|&v| start_variant(v, broadcaster).map(|e| (v, e)))
        .collect::<Result<_, _>>()?;
    for (variant, envoy) in &envoys {
        let expected = match variant {
            Variant::Plugin100 => Some(args.policies as u64),
            Variant::Plugin0 => Some(0),
            Variant::DrawRequest | Variant::DrawAttempt => Some(1),
            _ => None,
        };
        if let Some(expected) = expected {
            let ready = wait_until(Instant::now() + Duration::from_secs(30), || {
                envoy.stat("wasmcustom.boifi_config_revision") >= Some(last_revision)
                    && envoy.stat(POLICIES_ACTIVE) == Some(expected)
            });
            if !ready {
                return Err(format!(
                    "{}: plugin holds {:?} policies, expected {expected}",
                    variant.name(),
                    envoy.stat(POLICIES_ACTIVE)
                ));
            }
        }
    }
    let mut samples: CostSamples = BTreeMap::new();
    for round in 0..args.rounds {
        for k in 0..envoys.len() {
            let (variant, envoy) = &envoys[(k + round) % envoys.len()];
            let sample = measure_one(envoy, args)?;
            eprintln!(
                "round {} {:<38} p50 {:>6.1} us  p99 {:>6.1} us  cpu {:>5.2} us/req  {:>6.0} req/s",
                round + 1,
                variant.name(),
                sample.p50_us,
                sample.p99_us,
                sample.cpu_us_per_request,
                sample.requests_per_s
            );
            samples.entry(*variant).or_default().push(sample);
        }
    }
    // Nothing faulted: the policies really did not match.
    for (variant, envoy) in &envoys {
        let faults = envoy
            .admin_get("/stats?filter=boifi_faults_injected")
            .unwrap_or_default();
        if faults.lines().any(|l| !l.ends_with(": 0") && !l.is_empty()) {
            return Err(format!(
                "{}: faults were injected: {faults}",
                variant.name()
            ));
        }
    }
    drop(envoys);
    drop(control);
    Ok(samples)
}

fn measure_one(envoy: &Envoy, args: &Args) -> Result<Sample, String> {
    let (p50_us, p99_us) = std::thread::scope(|scope| {
        scope
            .spawn(|| latency(envoy, args.requests))
            .join()
            .map_err(|_| "latency thread panicked".to_owned())?
    })?;
    let (cpu_us_per_request, requests_per_s) = throughput(envoy, args.seconds as u64)?;
    Ok(Sample {
        p50_us,
        p99_us,
        cpu_us_per_request,
        requests_per_s,
    })
}

/// p50 and p99 in us of `n` sequential requests over one keep-alive connection.
/// The benchmark's own client: `GET /bench` over one kept-alive connection, with Nagle off,
/// reading exactly the answer's `content-length`. A general HTTP client (ureq) costs a few
/// hundred us per request here, which would swamp the few us being measured.
struct BenchClient {
    conn: BufReader<TcpStream>,
}

impl BenchClient {
    fn connect(envoy: &Envoy) -> Result<Self, String> {
        let conn = TcpStream::connect(envoy.addr()).map_err(|e| format!("connect: {e}"))?;
        conn.set_nodelay(true).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(BenchClient {
            conn: BufReader::new(conn),
        })
    }

    /// One request; its status.
    fn get(&mut self) -> Result<u16, String> {
        const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nhost: bench\r\nx-user: bench\r\n\r\n";
        self.conn
            .get_mut()
            .write_all(REQUEST)
            .map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        let (mut status, mut length) = (0u16, 0usize);
        loop {
            line.clear();
            let n = self
                .conn
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some(rest) = header.strip_prefix("HTTP/1.1 ") {
                status = rest.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            } else if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| "bad content-length")?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.conn
            .read_exact(&mut body)
            .map_err(|e| format!("body: {e}"))?;
        Ok(status)
    }
}

fn latency(envoy: &Envoy, n: usize) -> Result<(f64, f64), String> {
    pin_current_thread(LOAD_CPU)?;
    let mut client = BenchClient::connect(envoy)?;
    let mut send = || -> Result<Duration, String> {
        let start = Instant::now();
        let status = client.get()?;
        let elapsed = start.elapsed();
        if status != 200 {
            return Err(format!("status {status}"));
        }
        Ok(elapsed)
    };
    for _ in 0..n / 10 {
        send()?;
    }
    let mut times = (0..n).map(|_| send()).collect::<Result<Vec<_>, _>>()?;
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Ok((at(0.50), at(0.99)))
}

/// Envoy CPU time per request (us) and requests per second under closed-loop load.
fn throughput(envoy: &Envoy, seconds: u64) -> Result<(f64, f64), String> {
    let stop = AtomicBool::new(false);
    let served = AtomicU64::new(0);
    let started = AtomicU64::new(0);
    let result = std::thread::scope(|scope| -> Result<(f64, f64), String> {
        let workers: Vec<_> = (0..LOAD_CONNECTIONS)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    pin_current_thread(LOAD_CPU)?;
                    let mut client = BenchClient::connect(envoy)?;
                    started.fetch_add(1, Ordering::SeqCst);
                    while !stop.load(Ordering::Relaxed) {
                        let status = client.get()?;
                        if status != 200 {
                            return Err(format!("status {status}"));
                        }
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let all_started = wait_until(Instant::now() + TIMEOUT, || {
            started.load(Ordering::SeqCst) == LOAD_CONNECTIONS as u64
        });
        // Warm up, then measure a window; every figure comes from inside it.
        let warm = Instant::now() + Duration::from_millis(300);
        wait_until(warm, || Instant::now() >= warm);
        let (cpu0, n0, t0) = (
            envoy.cpu_time(),
            served.load(Ordering::SeqCst),
            Instant::now(),
        );
        let end = t0 + Duration::from_secs(seconds);
        wait_until(end, || Instant::now() >= end);
        let (cpu1, n1, elapsed) = (
            envoy.cpu_time(),
            served.load(Ordering::SeqCst),
            t0.elapsed(),
        );
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker
                .join()
                .map_err(|_| "load thread panicked".to_owned())??;
        }
        if !all_started {
            return Err("load threads did not start".into());
        }
        let (Some(cpu0), Some(cpu1)) = (cpu0, cpu1) else {
            return Err("cannot read Envoy's CPU time".into());
        };
        let requests = (n1 - n0).max(1) as f64;
        Ok((
            (cpu1 - cpu0).as_secs_f64() * 1e6 / requests,
            requests / elapsed.as_secs_f64(),
        ))
    })?;
    Ok(result)
}

/// Per change, the time from sending the write to the sidecars enforcing it: as probing them
/// shows, and as the API says (`status.enforcement`, and `GET /v1/sidecars?policy=` per
/// sidecar).
struct Propagation {
    sidecars: usize,
    /// Until every sidecar enforced the change, by probing.
    all: Vec<Duration>,
    /// Until each sidecar enforced it, by probing (sidecars x changes).
    each: Vec<Duration>,
    /// The API's answer to the write.
    write: Vec<Duration>,
    /// Until the policy's `status.enforcement` said every selected sidecar enforces it.
    api_all: Vec<Duration>,
    /// Until the API's sidecar list showed each sidecar at the change's revision.
    api_each: Vec<Duration>,
    /// Per change, `api_all - all` in ms (negative: the API said so before the probes saw it).
    gap_all: Vec<f64>,
    /// Per sidecar and change, `api_each - each` in ms.
    gap_each: Vec<f64>,
    /// Changes where a probe sent right after `status.enforcement` said every sidecar enforces
    /// it found one that did not yet.
    ahead_all: usize,
    /// Sidecars that a probe sent right after the API listed them at the revision found not
    /// enforcing it yet (of sidecars x changes).
    ahead_each: usize,
    /// Per change, the sidecars not enforcing it when `status.enforcement` said all did.
    behind_at_api_all: Vec<usize>,
}

/// When each sidecar was first seen enforcing a change, by probing and by the API.
#[derive(Default)]
struct Seen {
    probe: BTreeMap<usize, Duration>,
    api: BTreeMap<usize, Duration>,
    api_all: Option<Duration>,
}

fn measure_propagation(changes: usize) -> Result<Propagation, String> {
    let mut builder = MeshBuilder::new(ControlPlaneKind::Serve)
        // The plugin's defaults (30 s long poll, 250 ms..30 s backoff), as deployed.
        .plugin_config(&format!(
            r#"{{"broadcaster_cluster":"{BROADCASTER_CLUSTER}","broadcaster_authority":"{BROADCASTER_AUTHORITY}"}}"#
        ));
    for name in ["productpage", "reviews", "ratings"] {
        builder = builder.workload(WorkloadSpec::new("demo", name));
    }
    let mesh = builder.start()?;
    let replicas: Vec<_> = mesh.replicas().collect();
    let probe = Req::get("/propagation");
    let mut result = Propagation {
        sidecars: replicas.len(),
        all: Vec::new(),
        each: Vec::new(),
        write: Vec::new(),
        api_all: Vec::new(),
        api_each: Vec::new(),
        gap_all: Vec::new(),
        gap_each: Vec::new(),
        ahead_all: 0,
        ahead_each: 0,
        behind_at_api_all: Vec::new(),
    };
    let signed_ms =
        |api: Duration, probe: Duration| (api.as_secs_f64() - probe.as_secs_f64()) * 1e3;
    for i in 0..changes {
        let status = 520 + (i % 40) as u16;
        let policy = json!({
            "metadata": {"name": "propagation"},
            "spec": {"rules": [{"match": {"path": {"exact": "/propagation"}}, "fault": {"abort": {"httpStatus": status}}}]}
        });
        let start = Instant::now();
        let revision = mesh.put_policy(&policy)?.revision;
        result.write.push(start.elapsed());
        let deadline = start + Duration::from_secs(30);
        let mut seen = Seen::default();
        // Each pass asks the API what it says and, the moment it says a sidecar enforces the
        // change, probes that sidecar (does the data plane agree?); then probes the sidecars
        // not yet seen enforcing it; until both say every sidecar enforces it.
        while seen.probe.len() < replicas.len()
            || seen.api.len() < replicas.len()
            || seen.api_all.is_none()
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "change {i}: not every sidecar enforced revision {revision} within 30 s \
                     (probed: {:?}, the API: {:?}, all by the API: {:?})",
                    seen.probe.keys(),
                    seen.api.keys(),
                    seen.api_all
                ));
            }
            let enforces = |k: usize| {
                replicas[k]
                    .request(&probe)
                    .is_ok_and(|r| r.status == status)
            };
            if seen.api.len() < replicas.len() {
                let listed = mesh.control().api_sidecars("policy=propagation")?;
                let at = start.elapsed();
                for (k, replica) in replicas.iter().enumerate() {
                    let listed_at_revision = listed
                        .sidecars
                        .iter()
                        .any(|s| s.pod == replica.pod() && s.revision >= revision);
                    if listed_at_revision && !seen.api.contains_key(&k) {
                        seen.api.insert(k, at);
                        if enforces(k) {
                            seen.probe.entry(k).or_insert_with(|| start.elapsed());
                        } else {
                            result.ahead_each += 1;
                        }
                    }
                }
            }
            if seen.api_all.is_none() {
                let read = mesh.control().policy("propagation")?;
                let at = start.elapsed();
                let enforcement = &read["status"]["enforcement"];
                let current = read["status"]["revision"].as_u64() == Some(revision);
                if current
                    && enforcement["selected"] == replicas.len()
                    && enforcement["enforcing"] == replicas.len()
                {
                    seen.api_all = Some(at);
                    let mut behind = 0;
                    for k in 0..replicas.len() {
                        if enforces(k) {
                            seen.probe.entry(k).or_insert_with(|| start.elapsed());
                        } else {
                            behind += 1;
                        }
                    }
                    result.ahead_all += usize::from(behind > 0);
                    result.behind_at_api_all.push(behind);
                }
            }
            for k in 0..replicas.len() {
                if !seen.probe.contains_key(&k) && enforces(k) {
                    seen.probe.insert(k, start.elapsed());
                }
            }
        }
        let probe_all = seen.probe.values().copied().max().unwrap_or_default();
        let api_all = seen.api_all.unwrap_or_default();
        result.all.push(probe_all);
        result.api_all.push(api_all);
        result.gap_all.push(signed_ms(api_all, probe_all));
        for k in 0..replicas.len() {
            result.each.push(seen.probe[&k]);
            result.api_each.push(seen.api[&k]);
            result
                .gap_each
                .push(signed_ms(seen.api[&k], seen.probe[&k]));
        }
    }
    Ok(result)
}

fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    quantile(values, q).as_secs_f64() * 1e3
}

fn report(args: &Args, plugin_size: u64, cost: &CostSamples, propagation: &Propagation) {
    let med = |v: Variant, f: fn(&Sample) -> f64| median(cost[&v].iter().map(f));
    // Differences within a round, then the median over rounds.
    let added = |v: Variant, against: Variant, f: fn(&Sample) -> f64| {
        median(
            cost[&v]
                .iter()
                .zip(&cost[&against])
                .map(|(a, b)| f(a) - f(b)),
        )
    };
    println!(
        "\n### Cost per request ({} rounds; latency: {} requests on 1 connection; CPU: {} s at {} connections)\n",
        args.rounds, args.requests, args.seconds, LOAD_CONNECTIONS
    );
    println!("| variant | p50 | p99 | added p50 / p99 vs base | added p50 / p99 vs fault filter | Envoy CPU per request | req/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for v in Variant::ALL {
        let vs = |against: Variant| {
            if v == against {
                "-".to_owned()
            } else {
                format!(
                    "{:+.1} / {:+.1} us",
                    added(v, against, |s| s.p50_us),
                    added(v, against, |s| s.p99_us)
                )
            }
        };
        println!(
            "| {} | {:.1} us | {:.1} us | {} | {} | {:.2} us | {:.0} |",
            v.name(),
            med(v, |s| s.p50_us),
            med(v, |s| s.p99_us),
            vs(Variant::Base),
            vs(Variant::Fault),
            med(v, |s| s.cpu_us_per_request),
            med(v, |s| s.requests_per_s),
        );
    }
    let cpu = |s: &Sample| s.cpu_us_per_request;
    let fault_added = added(Variant::Fault, Variant::Base, cpu);
    let plugin_added = added(Variant::Plugin100, Variant::Base, cpu);
    let plugin0_added = added(Variant::Plugin0, Variant::Base, cpu);
    let total_ratio = median(
        cost[&Variant::Plugin100]
            .iter()
            .zip(&cost[&Variant::Fault])
            .map(|(p, f)| p.cpu_us_per_request / f.cpu_us_per_request),
    );
    let added_p99 = added(Variant::Plugin100, Variant::Base, |s| s.p99_us);
    println!("\nEnvoy CPU per request, added over base: fault filter {fault_added:+.2} us, plugin with 0 policies {plugin0_added:+.2} us, plugin with {} policies {plugin_added:+.2} us", args.policies);
    println!(
        "plugin-100 / fault filter, whole CPU per request: {total_ratio:.2}x (budget <= 3x); added CPU: {:.1}x",
        plugin_added / fault_added.max(0.01)
    );
    println!("plugin-100 added p99 over base: {added_p99:+.1} us (budget < 1000 us, aim < 50 us)");
    println!(
        "reading and hashing x-request-id for a draw: {:+.2} us Envoy CPU per request, {:+.1} / {:+.1} us p50 / p99 (x-request-id vs per-attempt draw)",
        added(Variant::DrawRequest, Variant::DrawAttempt, cpu),
        added(Variant::DrawRequest, Variant::DrawAttempt, |s| s.p50_us),
        added(Variant::DrawRequest, Variant::DrawAttempt, |s| s.p99_us)
    );
    report_propagation(propagation);
    println!("\nplugin module {plugin_size} bytes");
}

fn report_propagation(propagation: &Propagation) {
    println!(
        "\n### Propagation ({} changes, {} sidecars, plugin defaults)\n",
        propagation.all.len(),
        propagation.sidecars
    );
    println!("| from the API write to | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (what, values) in [
        ("the API's answer", &propagation.write),
        ("enforcement in each sidecar (probed)", &propagation.each),
        ("enforcement in every sidecar (probed)", &propagation.all),
        (
            "the API listing each sidecar at the revision",
            &propagation.api_each,
        ),
        (
            "the API's status.enforcement: every selected sidecar",
            &propagation.api_all,
        ),
    ] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms |",
            quantile_ms(values, 0.5),
            quantile_ms(values, 0.99),
            quantile_ms(values, 1.0)
        );
    }
    println!("\n| the API's time minus the probes' | min | p50 | p99 | max | API earlier |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, gaps) in [
        ("every sidecar (per change)", &propagation.gap_all),
        ("each sidecar", &propagation.gap_each),
    ] {
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let earlier = sorted.iter().filter(|g| **g < 0.0).count();
        println!(
            "| {what} | {:+.1} ms | {:+.1} ms | {:+.1} ms | {:+.1} ms | {earlier} of {} |",
            q(0.0),
            q(0.5),
            q(0.99),
            q(1.0),
            sorted.len()
        );
    }
    println!(
        "\nprobed right after the API said so: {} of {} changes had a sidecar not enforcing it yet; {} of {} sidecars",
        propagation.ahead_all,
        propagation.all.len(),
        propagation.ahead_each,
        propagation.each.len()
    );
    println!("\n| change | every sidecar, probed | the API said so | API minus probes | sidecars not enforcing it when the API said so |");
    println!("|---:|---:|---:|---:|---:|");
    for (i, (probed, api)) in propagation.all.iter().zip(&propagation.api_all).enumerate() {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:+.1} ms | {} |",
            i + 1,
            probed.as_secs_f64() * 1e3,
            api.as_secs_f64() * 1e3,
            propagation.gap_all[i],
            propagation.behind_at_api_all[i]
        );
    }
    println!(
        "\npropagation p99 {:.1} ms (budget < 1000 ms); the API says every sidecar enforces it {:.1} ms (p99) after the write",
        quantile_ms(&propagation.all, 0.99),
        quantile_ms(&propagation.api_all, 0.99)
    );
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(list: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("bench-plugin").chain(list.iter().copied()))
    }

    #[test]
    fn arguments() {
        Args::command().debug_assert();
        let a = parse(&[]).expect("defaults");
        assert_eq!(
            (a.rounds, a.requests, a.seconds, a.changes, a.policies),
            (5, 5000, 2, 50, DEFAULT_POLICIES)
        );
        let a = parse(&["--rounds", "2", "--changes", "3"]).expect("values");
        assert_eq!((a.rounds, a.changes), (2, 3));
        let message = |list: &[&str]| parse(list).unwrap_err().to_string();
        assert!(message(&["--rounds", "0"]).contains("--rounds"));
        assert!(message(&["--requests", "99"]).contains("--requests"));
        assert!(message(&["--policies", "1001"]).contains("--policies"));
        assert!(message(&["--seconds"]).contains("--seconds"));
        assert!(message(&["--x"]).contains("'--x'"));
    }

    #[test]
    fn loaded_policies_are_distinct_and_select_the_loaded_workload() {
        let policies = loaded_policies(DEFAULT_POLICIES);
        assert_eq!(policies.len(), DEFAULT_POLICIES);
        let names: std::collections::BTreeSet<_> = policies
            .iter()
            .map(|p| p["metadata"]["name"].as_str().expect("name").to_owned())
            .collect();
        assert_eq!(names.len(), DEFAULT_POLICIES);
        assert!(policies
            .iter()
            .all(|p| p["spec"]["selector"]["service"] == Variant::Plugin100.workload()));
    }

    #[test]
    fn every_variant_renders_a_complete_config() {
        for variant in Variant::ALL {
            let config = render(variant, "p.wasm", 1, 2, 3);
            assert!(!config.contains("{{"), "{variant:?}: {config}");
            assert!(config.contains("port_value: 2 }"), "admin port");
            let wasm = config.contains("filters.http.wasm.v3.Wasm");
            let fault = config.contains("filters.http.fault.v3.HTTPFault");
            let expected = match variant {
                Variant::Base => (false, false),
                Variant::Fault => (false, true),
                Variant::Plugin0
                | Variant::Plugin100
                | Variant::DrawRequest
                | Variant::DrawAttempt => (true, false),
            };
            assert_eq!((wasm, fault), expected, "{variant:?}");
        }
    }
}
