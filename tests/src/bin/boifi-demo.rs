//! `boifi-demo`: BOIFI on a local mesh, to see a fault injected into real traffic.
//!
//! Starts `boifi serve` (embedded store, no auth, loopback), two workloads (`demo/reviews`
//! v2 and `demo/ratings` v1, two Envoy replicas each with the real plugin), sends traffic,
//! applies the example policies (`docs/examples/reviews-abort.yaml`, `ratings-delay.yaml`)
//! with the `boifi` CLI, as a user would, and prints what the traffic got. Then it keeps
//! running until Ctrl-C, with `boifi` and curl commands to try more; `--once` exits after the
//! demo instead.
//!
//! Needs `scripts/install-deps.sh` (Envoy), `scripts/build-plugin.sh` (the plugin) and the
//! `boifi` binary built next to this one (`cargo build --bin boifi --bin boifi-demo`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use boifi_tests::binaries::{repo_file, workspace_binary};
use boifi_tests::envoy::{Envoy, LaunchOptions};
use boifi_tests::http::http_request;
use boifi_tests::istio::{caller_bootstrap, Pod};
use boifi_tests::mesh::{ControlPlaneKind, Mesh, MeshBuilder, Outcomes, Req, WorkloadSpec};
use clap::Parser;
use serde_json::Value;

/// The documented example: reviews v2, GET /api* with `x-user: test`, 50%: 200 ms delay, then 503.
const EXAMPLE_FILE: &str = "docs/examples/reviews-abort.yaml";
/// The second example: ratings, /api*: 100 ms delay.
const DELAY_FILE: &str = "docs/examples/ratings-delay.yaml";
/// Requests per row of the results table.
const REQUESTS: usize = 20;

/// BOIFI on a local mesh: `boifi serve`, two workloads behind real Envoys with the plugin, and
/// traffic before and after the example policy.
#[derive(Debug, Parser)]
#[command(name = "boifi-demo")]
struct Args {
    /// Exit after the demo instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Port of the BOIFI API on 127.0.0.1 (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    port: u16,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boifi-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    println!(
        "Starting boifi serve and 2 workloads x 2 Envoy replicas (real plugin) on 127.0.0.1 ..."
    );
    let mut builder = MeshBuilder::new(ControlPlaneKind::Serve)
        .workload(WorkloadSpec::new("demo", "reviews").label("version", "v2"))
        .workload(WorkloadSpec::new("demo", "ratings").label("version", "v1"));
    if args.port != 0 {
        builder = builder.api_port(args.port);
    }
    let mesh = builder.start()?;
    print_layout(&mesh);

    println!("\n1. Traffic before any policy:");
    print_results(&traffic(&mesh));

    let boifi = Cli::new(&mesh)?;
    println!("\n2. Applying the example policies with the boifi CLI:");
    println!(
        "   reviews-abort: reviews v2, GET /api* with x-user: test, 50% -> 200 ms delay then 503\n   \
         ratings-delay: ratings, /api* -> 100 ms delay"
    );
    boifi.run(&["apply", "-f", EXAMPLE_FILE, "-f", DELAY_FILE])?;
    mesh.wait_applied(boifi.revision("reviews-abort")?, &["reviews"])?;
    mesh.wait_applied(boifi.revision("ratings-delay")?, &["ratings"])?;
    boifi.run(&["get"])?;
    println!("   every sidecar applied both");

    println!("\n3. The same traffic now:");
    print_results(&traffic(&mesh));
    println!(
        "   reviews with x-user: test: about half delayed 200 ms then 503 (x-boifi-fault: \
         reviews-abort);\n   reviews without the header and every other request: untouched; \
         ratings: 100 ms slower, still 200."
    );

    println!("\n4. Through a caller's sidecar that retries like Istio's default (503 twice more, on the other replica):");
    let (failed, calls) = caller_view(&mesh)?;
    println!(
        "   productpage -> reviews, GET /api/products with x-user: test: {failed} of {calls} calls \
         failed\n   (request-keyed sampling: every retry of a faulted request is faulted again, so \
         the caller sees the declared 50%, not 0.5^3 = 12.5%)"
    );

    print_next_steps(&mesh, &boifi);
    if args.once {
        return Ok(());
    }
    println!("\nRunning; Ctrl-C stops everything.");
    wait_for_signal()?;
    println!("stopping");
    Ok(())
}

/// The `boifi` command, pointed at the demo's API, run the way a user types it.
struct Cli {
    binary: PathBuf,
    server: String,
}

impl Cli {
    fn new(mesh: &Mesh) -> Result<Cli, String> {
        Ok(Cli {
            binary: workspace_binary("boifi")?,
            server: format!("http://{}", mesh.control().api_addr()),
        })
    }

    /// Runs `boifi args...` in the repository (the examples' paths are relative to it) and
    /// prints the command and its output; its stdout, or an error when it failed.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        println!("   $ boifi {}", args.join(" "));
        let stdout = self.output(args)?;
        for line in stdout.lines() {
            println!("   {line}");
        }
        Ok(stdout)
    }

    /// `boifi args...`'s stdout, printing nothing.
    fn output(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .args(args)
            .current_dir(repo_file(""))
            .env("BOIFI_SERVER", &self.server)
            .env_remove("BOIFI_TOKEN")
            .env_remove("BOIFI_STREAM_SERVER")
            .output()
            .map_err(|e| format!("run {}: {e}", self.binary.display()))?;
        if !output.status.success() {
            return Err(format!(
                "boifi {} failed ({}):\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The revision of policy `name` (`boifi get NAME -o json`).
    fn revision(&self, name: &str) -> Result<u64, String> {
        let text = self.output(&["get", name, "-o", "json"])?;
        let policy: Value =
            serde_json::from_str(&text).map_err(|e| format!("boifi get {name}: {e}"))?;
        policy["status"]["revision"]
            .as_u64()
            .ok_or_else(|| format!("boifi get {name}: no status.revision in {text}"))
    }

    /// The directory of the binary, for `PATH`.
    fn dir(&self) -> &Path {
        self.binary.parent().unwrap_or(Path::new("."))
    }
}

/// Calls reviews through a sidecar of `productpage` with Istio's default retry policy, 10 at a
/// time; how many of them failed with the plugin's abort.
fn caller_view(mesh: &Mesh) -> Result<(usize, usize), String> {
    const CALLS: usize = 100;
    const PARALLEL: usize = 10;
    let replicas: Vec<u16> = mesh
        .workload("reviews")
        .replicas()
        .iter()
        .map(|r| r.envoy().addr().port())
        .collect();
    let pod = Pod::of_deployment(
        "demo",
        "productpage",
        &[("app".into(), "productpage".into())],
        0,
    );
    let options = LaunchOptions {
        concurrency: 1,
        cpus: None,
    };
    let caller = Envoy::start_with(&options, |ports, _| {
        Ok(caller_bootstrap(
            &pod,
            "reviews.demo.svc.cluster.local",
            &replicas,
            ports.listen,
            ports.admin,
        )
        .to_string())
    });
    let failed = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|_| {
                scope.spawn(|| {
                    (0..CALLS / PARALLEL)
                        .filter(|_| {
                            http_request(
                                caller.addr(),
                                "GET",
                                "/api/products",
                                &[("x-user", "test")],
                                None,
                                Duration::from_secs(10),
                            )
                            .is_ok_and(|r| r.header("x-boifi-fault") == Some("reviews-abort"))
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok((failed, CALLS))
}

/// The requests of each results row: (label, workload, request).
fn rows() -> Vec<(&'static str, &'static str, Req)> {
    vec![
        (
            "reviews  GET /api/products  x-user: test",
            "reviews",
            Req::get("/api/products").header("x-user", "test"),
        ),
        (
            "reviews  GET /api/products",
            "reviews",
            Req::get("/api/products"),
        ),
        (
            "reviews  GET /health        x-user: test",
            "reviews",
            Req::get("/health").header("x-user", "test"),
        ),
        (
            "ratings  GET /api/ratings",
            "ratings",
            Req::get("/api/ratings"),
        ),
        (
            "ratings  POST /other",
            "ratings",
            Req::new("POST", "/other").body("{}"),
        ),
    ]
}

fn traffic(mesh: &Mesh) -> Vec<(&'static str, Outcomes)> {
    rows()
        .into_iter()
        .map(|(label, workload, req)| (label, mesh.workload(workload).send(REQUESTS, &req)))
        .collect()
}

fn print_results(results: &[(&str, Outcomes)]) {
    println!(
        "   {:<42} {:>4} {:>5} {:>5} {:>6} {:>14} {:>9} {:>9}",
        "requests (round-robin over 2 replicas)",
        "sent",
        "200",
        "503",
        "other",
        "x-boifi-fault",
        "p50",
        "max"
    );
    for (label, o) in results {
        let other = o.sent - o.status(200) - o.status(503);
        println!(
            "   {:<42} {:>4} {:>5} {:>5} {:>6} {:>14} {:>9} {:>9}",
            label,
            o.sent,
            o.status(200),
            o.status(503),
            other,
            o.faulted(),
            ms(o.latency_quantile(0.5)),
            ms(o.max_latency()),
        );
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

fn print_layout(mesh: &Mesh) {
    let control = mesh.control();
    println!("\nWhere everything listens:");
    println!(
        "   BOIFI API + stream (boifi serve)  http://{}   (OpenAPI: /v1/openapi.json)",
        control.api_addr()
    );
    for workload in mesh.workloads() {
        for replica in workload.replicas() {
            println!(
                "   {:<10} Envoy http://{}  admin http://{}  upstream 127.0.0.1:{}",
                replica.name(),
                replica.envoy().addr(),
                replica.envoy().admin_addr(),
                replica.upstream().port()
            );
        }
    }
    let pids: Vec<String> = control
        .processes()
        .iter()
        .map(|(name, pid)| format!("{name} {pid}"))
        .chain(
            mesh.replicas()
                .filter_map(|r| Some(format!("envoy/{} {}", r.name(), r.envoy().pid()?))),
        )
        .collect();
    println!("   PIDs: {}", pids.join(", "));
}

fn print_next_steps(mesh: &Mesh, boifi: &Cli) {
    let api = mesh.control().api_addr();
    let reviews = mesh.workload("reviews").replicas()[0].envoy();
    let ratings = mesh.workload("ratings").replicas()[0].envoy();
    println!("\nTry more in another terminal, in this directory, while the demo runs:");
    println!(
        "   export PATH=\"{}:$PATH\"   # the boifi command built by run-local.sh",
        boifi.dir().display()
    );
    if api.port() != 8080 {
        println!("   export BOIFI_SERVER={}", boifi.server);
    }
    println!("   boifi get                      # the policies, their revision and expiry");
    println!("   boifi watch                    # every change, as the sidecars receive it");
    println!("   boifi apply -f {EXAMPLE_FILE}   # after editing it: configured");
    println!("   boifi halt --reason \"enough\"   # kill switch: no faults anywhere");
    println!("   boifi resume");
    println!("   boifi delete ratings-delay");
    println!(
        "   curl -si -H 'x-user: test' http://{}/api/products   # reviews-0: sometimes 503",
        reviews.addr()
    );
    println!(
        "   curl -s -o /dev/null -w '%{{http_code}} %{{time_total}}s\\n' http://{}/api/ratings",
        ratings.addr()
    );
    println!(
        "   curl -s http://{}/stats/prometheus | grep boifi_faults   # the plugin's stats",
        reviews.admin_addr()
    );
    println!("   curl -s http://{api}/v1/policies   # the API under the CLI (docs/api.md)");
}

/// Blocks until Ctrl-C or SIGTERM, so the mesh is dropped (every process stopped) either way.
fn wait_for_signal() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| format!("Ctrl-C: {e}")),
            _ = term.recv() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn args(list: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("boifi-demo").chain(list.iter().copied()))
    }

    #[test]
    fn arguments() {
        Args::command().debug_assert();
        let a = args(&[]).expect("defaults");
        assert!(!a.once);
        assert_eq!(a.port, 8080);
        let a = args(&["--port", "0", "--once"]).expect("both");
        assert!(a.once);
        assert_eq!(a.port, 0);
        assert!(args(&["--port"])
            .unwrap_err()
            .to_string()
            .contains("--port"));
        assert!(args(&["--port", "x"])
            .unwrap_err()
            .to_string()
            .contains("'x'"));
        assert!(args(&["--fast"])
            .unwrap_err()
            .to_string()
            .contains("--fast"));
        assert_eq!(
            args(&["--help"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
    }

    #[test]
    fn the_examples_exist() {
        for file in [EXAMPLE_FILE, DELAY_FILE] {
            assert!(repo_file(file).is_file(), "{file}");
        }
    }
}
