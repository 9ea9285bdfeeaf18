//! `bench-sidecars`: what sidecar reports cost the sse-broadcaster. A benchmark, not a test: it
//! prints numbers (Markdown for `docs/benchmarks.md`).
//!
//! Setup: the `Separate` control plane (real etcd, `policy-api`, one `sse-broadcaster`, this
//! build), one policy per workload. `--sidecars` simulated sidecars spread over `--workloads`
//! workloads in `--namespaces` namespaces, each with the poll query the plugin sends
//! (`Filter::for_workload`) and, when reporting, the headers it sends: its identity (pod,
//! namespace, workload and the five labels Istio leaves in `LABELS`) and counts for 3 policies.
//! `--clients` keep-alive connections send the polls, each poll for the next sidecar, with
//! `wait_ms=0` at the current revision, so each is answered at once (the timeout answer every
//! poll of a sidecar that is current ends with).
//!
//! - Memory per tracked sidecar: the broadcaster's RSS after one reporting poll of every
//!   sidecar minus before, divided by the sidecars.
//! - Sweep: the broadcaster's idle CPU per second with the table full minus with it empty (the
//!   once-a-second sweep and census of every entry).
//! - `GET /v1/sidecars`: time to serve the whole table (one page of up to 10,000), as a client
//!   on loopback sees it, and the broadcaster's CPU per answer.
//! - CPU per poll: the broadcaster's CPU time (`/proc/<pid>/task/*/schedstat`) over
//!   `--polls` polls, divided by them, for polls without report headers (`bare`), with the
//!   identity only (`identity`, what a sidecar sends when no count changed) and with identity
//!   and counts (`identity+counts`). Rounds interleave the variants (order rotated per round);
//!   ratios are per round, the table shows medians.
//!
//! Build and run (release):
//! `cargo build --release --bin sse-broadcaster --bin policy-api --bin bench-sidecars &&
//!  target/release/bench-sidecars`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boifi_policy::wire::{
    FaultCounts, Filter, InjectedHeader, Mode, SidecarIdentity, SidecarsPage, StreamQuery,
    INJECTED_HEADER, SIDECAR_HEADER,
};
use boifi_policy::Workload;
use boifi_tests::bench::{median, quantile, whole_number};
use boifi_tests::http::{http_request, KeepAliveClient};
use boifi_tests::mesh::{Broadcasters, ControlPlane, ControlPlaneKind};
use boifi_tests::process::{cpu_time, resident_bytes};
use boifi_tests::wait_until;
use clap::Parser;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time measured for the sweep's cost.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// What sidecar reports cost the broadcaster: CPU per poll, memory per sidecar, the listing.
#[derive(Debug, Parser)]
#[command(name = "bench-sidecars")]
struct Args {
    /// Simulated sidecars (distinct pods).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = whole_number(1, 10_000))]
    sidecars: usize,
    /// Workloads the sidecars are spread over.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = whole_number(1, 10_000))]
    workloads: usize,
    /// Namespaces the workloads are spread over.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = whole_number(1, 10_000))]
    namespaces: usize,
    /// Interleaved rounds of the CPU-per-poll variants.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = whole_number(1, 1000))]
    rounds: usize,
    /// Polls per variant and round.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = whole_number(100, 10_000_000))]
    polls: usize,
    /// Concurrent keep-alive connections sending polls.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = whole_number(1, 256))]
    clients: usize,
    /// `GET /v1/sidecars` answers timed.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = whole_number(1, 10_000))]
    listings: usize,
}

/// What one simulated sidecar sends.
struct Sidecar {
    path: String,
    identity: String,
    counts: String,
}

/// Which headers a variant's polls carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Identity,
    IdentityAndCounts,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Bare, Variant::Identity, Variant::IdentityAndCounts];

    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Identity => "identity",
            Variant::IdentityAndCounts => "identity+counts",
        }
    }

    fn headers(self, sidecar: &Sidecar) -> Vec<(&str, &str)> {
        match self {
            Variant::Bare => vec![],
            Variant::Identity => vec![(SIDECAR_HEADER, &sidecar.identity)],
            Variant::IdentityAndCounts => vec![
                (SIDECAR_HEADER, &sidecar.identity),
                (INJECTED_HEADER, &sidecar.counts),
            ],
        }
    }
}

fn app_name(workload: usize) -> String {
    format!("svc{workload}")
}

/// Sidecar `index`: a pod of workload `index % workloads`, with the labels Istio leaves in
/// `LABELS` (`pod-template-hash` dropped), polling at `revision`.
fn sidecar(index: usize, args: &Args, revision: u64) -> Result<Sidecar, String> {
    let w = index % args.workloads;
    let app = app_name(w);
    let labels: BTreeMap<String, String> = [
        ("app", app.as_str()),
        ("version", "v1"),
        ("security.istio.io/tlsMode", "istio"),
        ("service.istio.io/canonical-name", app.as_str()),
        ("service.istio.io/canonical-revision", "v1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let workload = Workload {
        namespace: format!("ns{}", w % args.namespaces),
        name: format!("{app}-v1"),
        labels: labels.clone(),
    };
    let query = StreamQuery {
        filter: Filter::for_workload(&workload, true),
        mode: Mode::Poll,
        last_event_id: None,
        revision: Some(revision),
        wait_ms: Some(0),
    };
    let identity = SidecarIdentity {
        pod: format!("{}-7d9f5c8b4-{index:05x}", workload.name),
        namespace: workload.namespace.clone(),
        workload: workload.name.clone(),
        labels: Some(labels),
    }
    .header_value()
    .map_err(|e| e.to_string())?
    .value;
    let mut counts = InjectedHeader::default();
    for (i, policy) in [
        format!("{app}-abort"),
        format!("{app}-delay"),
        "everyone".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let n = index as u64 * 7 + i as u64;
        counts.push(
            policy,
            FaultCounts {
                abort: n,
                delay: n / 2,
            },
        );
    }
    Ok(Sidecar {
        path: format!("/v1/config/stream?{}", query.encode()),
        identity,
        counts: counts.finish().ok_or("no counts")?,
    })
}

/// Sends `polls` polls over `clients` connections, poll `i` for sidecar `i % sidecars`.
fn send_polls(
    clients: &[KeepAliveClient],
    sidecars: &[Sidecar],
    polls: usize,
    variant: Variant,
) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = clients
            .iter()
            .map(|client| {
                let next = &next;
                scope.spawn(move || -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= polls {
                            return Ok(());
                        }
                        let sidecar = &sidecars[i % sidecars.len()];
                        let r = client
                            .request("GET", &sidecar.path, &variant.headers(sidecar), None)
                            .map_err(|e| format!("poll: {e}"))?;
                        if r.status != 200 {
                            return Err(format!("poll: {} {}", r.status, r.body_text()));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "poll thread panicked".to_owned())?)
    })
}

fn listing(control: &ControlPlane) -> Result<(Duration, usize, SidecarsPage), String> {
    let start = Instant::now();
    let r = http_request(
        control.stream_addr(),
        "GET",
        "/v1/sidecars",
        &[],
        None,
        TIMEOUT,
    )
    .map_err(|e| format!("GET /v1/sidecars: {e}"))?;
    let took = start.elapsed();
    if r.status != 200 {
        return Err(format!("GET /v1/sidecars: {}", r.status));
    }
    let page: SidecarsPage =
        serde_json::from_slice(&r.body).map_err(|e| format!("/v1/sidecars: {e}"))?;
    Ok((took, r.body.len(), page))
}

fn cpu(pid: u32) -> Result<Duration, String> {
    cpu_time(pid).ok_or_else(|| format!("no CPU time for {pid}"))
}

fn run(args: &Args) -> Result<(), String> {
    let control = ControlPlane::start_with(
        ControlPlaneKind::Separate,
        None,
        Broadcasters {
            replicas: 1,
            // Nothing is forgotten while the benchmark runs.
            env: vec![("BOIFI_SIDECAR_TTL_SECS".into(), "3600".into())],
        },
    )?;
    let pid = control
        .processes()
        .into_iter()
        .find(|(name, _)| name == "sse-broadcaster")
        .map(|(_, pid)| pid)
        .ok_or("no broadcaster PID")?;
    let mut revision = 0;
    for w in 0..args.workloads {
        let app = app_name(w);
        let written = control.put_policy(&json!({
            "metadata": {"name": format!("{app}-abort")},
            "spec": {
                "selector": {"namespace": format!("ns{}", w % args.namespaces), "service": app},
                "rules": [{"match": {"path": {"exact": "/never"}}, "fault": {"abort": {"httpStatus": 503}}}]
            }
        }))?;
        revision = written.revision;
    }
    let at_revision = wait_until(Instant::now() + TIMEOUT, || {
        http_request(
            control.stream_addr(),
            "GET",
            "/v1/ready",
            &[],
            None,
            TIMEOUT,
        )
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .and_then(|v| v["revision"].as_u64())
            >= Some(revision)
    });
    if !at_revision {
        return Err(format!("broadcaster not at revision {revision}"));
    }
    let sidecars = (0..args.sidecars)
        .map(|i| sidecar(i, args, revision))
        .collect::<Result<Vec<_>, _>>()?;
    let clients: Vec<KeepAliveClient> = (0..args.clients)
        .map(|_| KeepAliveClient::new(control.stream_addr(), TIMEOUT))
        .collect();
    let sample = &sidecars[0];
    println!(
        "{} sidecars, {} workloads in {} namespaces; identity header {} bytes, counts header {} bytes; machine shared with other work",
        args.sidecars,
        args.workloads,
        args.namespaces,
        sample.identity.len(),
        sample.counts.len()
    );

    // Warm up the connections and the broadcaster's caches, then the idle rate, empty table.
    send_polls(&clients, &sidecars, args.sidecars.min(2_000), Variant::Bare)?;
    let idle = |pid: u32| -> Result<f64, String> {
        let before = cpu(pid)?;
        std::thread::sleep(IDLE_WINDOW);
        Ok((cpu(pid)? - before).as_secs_f64() / IDLE_WINDOW.as_secs_f64())
    };
    let idle_empty = idle(pid)?;

    // Memory: one reporting poll of every sidecar.
    let rss_before = resident_bytes(pid)?;
    send_polls(
        &clients,
        &sidecars,
        args.sidecars,
        Variant::IdentityAndCounts,
    )?;
    let rss_after = resident_bytes(pid)?;
    let per_sidecar = rss_after.saturating_sub(rss_before) as f64 / args.sidecars as f64;
    let (_, _, page) = listing(&control)?;
    if page.sidecars.len() != args.sidecars {
        return Err(format!(
            "{} sidecars listed, {} polled",
            page.sidecars.len(),
            args.sidecars
        ));
    }
    let idle_full = idle(pid)?;

    // The listing.
    let mut times = Vec::new();
    let mut bytes = 0;
    let cpu_before = cpu(pid)?;
    for _ in 0..args.listings {
        let (took, size, page) = listing(&control)?;
        if page.sidecars.len() != args.sidecars {
            return Err(format!("{} sidecars listed", page.sidecars.len()));
        }
        times.push(took);
        bytes = size;
    }
    let listing_cpu = (cpu(pid)? - cpu_before) / args.listings as u32;

    // CPU per poll, interleaved.
    let mut per_poll: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        let mut order = Variant::ALL.to_vec();
        order.rotate_left(round % Variant::ALL.len());
        let mut this_round = BTreeMap::new();
        for variant in order {
            let before = cpu(pid)?;
            let start = Instant::now();
            send_polls(&clients, &sidecars, args.polls, variant)?;
            let wall = start.elapsed();
            let used = cpu(pid)? - before;
            let us = used.as_secs_f64() * 1e6 / args.polls as f64;
            this_round.insert(variant.name(), us);
            per_poll.entry(variant.name()).or_default().push(us);
            rates
                .entry(variant.name())
                .or_default()
                .push(args.polls as f64 / wall.as_secs_f64());
        }
        let bare = this_round[Variant::Bare.name()];
        for (name, us) in &this_round {
            ratios.entry(name).or_default().push(us / bare);
        }
        eprintln!("round {round}: {this_round:?} us per poll");
    }

    println!();
    println!("| polls | broadcaster CPU per poll (median) | ratio to bare (median of rounds) | polls/s (median) |");
    println!("|---|---:|---:|---:|");
    for variant in Variant::ALL {
        let name = variant.name();
        println!(
            "| {name} | {:.1} us | {:.2}x | {:.0} |",
            median(per_poll[name].clone()),
            median(ratios[name].clone()),
            median(rates[name].clone())
        );
    }
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| broadcaster RSS per tracked sidecar | {:.2} KiB ({} sidecars: {:.1} MiB) |",
        per_sidecar / 1024.0,
        args.sidecars,
        rss_after.saturating_sub(rss_before) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "| idle CPU, table empty / full (sweep and census every second) | {:.2} ms/s / {:.2} ms/s |",
        idle_empty * 1e3,
        idle_full * 1e3
    );
    println!(
        "| GET /v1/sidecars, {} sidecars ({:.1} MB): time p50 / max | {:.1} ms / {:.1} ms |",
        args.sidecars,
        bytes as f64 / 1e6,
        quantile(&times, 0.5).as_secs_f64() * 1e3,
        quantile(&times, 1.0).as_secs_f64() * 1e3
    );
    println!(
        "| GET /v1/sidecars: broadcaster CPU per answer | {:.1} ms |",
        listing_cpu.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-sidecars: {e}");
            ExitCode::FAILURE
        }
    }
}
