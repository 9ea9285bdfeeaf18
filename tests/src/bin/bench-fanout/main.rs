//! `bench-fanout`: how fast a policy change reaches thousands of sidecars through the
//! sse-broadcaster, and what it costs the broadcaster. A benchmark, not a test: it prints
//! numbers (Markdown tables for `docs/benchmarks.md`).
//!
//! Setup: a real etcd and `policy-api` (this build), one policy per workload (selecting it by
//! namespace and `app` label) and one selecting everyone. Each variant is an `sse-broadcaster`
//! binary (`--variant NAME=PATH`; by default this build's), started fresh on the same etcd for
//! each of its rounds. Simulated sidecars (`sidecars.rs`) connect to it, spread over
//! `--workloads` workloads in `--namespaces` namespaces, each asking exactly what the Wasm
//! plugin asks (`--transport poll`, the default) or holding an event stream (`stream`).
//!
//! Per round and variant, once every sidecar holds its poll (the broadcaster's
//! `boifi_broadcaster_clients` gauge says so):
//! - memory: the broadcaster's RSS with every sidecar connected minus its RSS before, per sidecar;
//! - selective changes: the policy of one workload is rewritten through policy-api (a
//!   different workload each time); time until each of that workload's sidecars has the new
//!   revision, counted from sending the write; sidecars of other workloads must not be answered;
//! - global changes: the policy selecting everyone is rewritten; time until every sidecar has it.
//! - broadcaster CPU per change: its CPU time (`/proc/<pid>/task/*/schedstat`) from sending the
//!   write until every selected sidecar has its answer and has sent its next poll, plus a short
//!   settle, minus the idle rate measured in the same round for as long.
//!
//! Rounds interleave the variants (order rotated per round), so a ratio compares variants on
//! the same machine state. The poll wait (`--wait-ms`, default 60 s) is longer than a round, so
//! no poll times out inside a measurement; the report counts timeouts to show it.
//!
//! Build and run (release):
//! `cargo build --release --bin sse-broadcaster --bin policy-api --bin bench-fanout &&
//!  target/release/bench-fanout --sidecars 1000,10000`

mod sidecars;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boifi_tests::bench::{median, quantile, whole_number};
use boifi_tests::binaries::workspace_binary;
use boifi_tests::http::http_request;
use boifi_tests::mesh::{BroadcasterProcess, ControlPlane, ControlPlaneKind};
use boifi_tests::process::{cpu_time, resident_bytes};
use boifi_tests::wait_until;
use clap::builder::RangedU64ValueParser;
use clap::Parser;
use serde_json::{json, Value};

use sidecars::{app_name, namespace_name, Board, Fleet, FleetSpec, Transport};

/// How long a sidecar may take to get a change before the run is declared broken.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting every sidecar may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// After the last selected sidecar sent its next poll: time for the broadcaster to take it.
const SETTLE: Duration = Duration::from_millis(50);
/// Idle time measured per round, for the broadcaster's background CPU rate.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Sidecars between connecting and their first answer at once.
const CONNECTING: usize = 128;

/// Time-to-reach and cost of policy changes fanned out to many sidecars.
#[derive(Debug, Parser)]
#[command(name = "bench-fanout")]
struct Args {
    /// Sidecar counts to measure, comma-separated.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_values_t = [1000, 5000, 10000])]
    sidecars: Vec<usize>,
    /// Workloads the sidecars are spread over.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = whole_number(1, 10_000))]
    workloads: usize,
    /// Namespaces the workloads are spread over.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = whole_number(1, 10_000))]
    namespaces: usize,
    /// Interleaved rounds per sidecar count.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = whole_number(1, 1000))]
    rounds: usize,
    /// Changes selecting one workload, per round and variant.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = whole_number(0, 10_000))]
    selective: usize,
    /// Changes selecting every sidecar, per round and variant.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = whole_number(0, 10_000))]
    global: usize,
    /// `poll` (as the Wasm plugin) or `stream` (event streams).
    #[arg(long, default_value = "poll", value_parser = ["poll", "stream"])]
    transport: String,
    /// Long-poll wait the sidecars ask for (`wait_ms`).
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = millis(1000, 3_600_000))]
    wait_ms: u64,
    /// After a change, each sidecar polls again after a random pause of up to this many ms, as
    /// the plugin does in an Envoy with more than one worker (Istio's sidecars run 2): its
    /// polling VM waits until the other VMs picked the change up on their 50 ms tick. 0: at
    /// once, as with one VM (the default, and the harder case).
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = millis(0, 10_000))]
    repoll_spread_ms: u64,
    /// A broadcaster to measure: `NAME=PATH`, PATH an `sse-broadcaster` binary or a directory
    /// holding one. Repeat to compare; default: `current=` this build's.
    #[arg(long = "variant", value_name = "NAME=PATH")]
    variants: Vec<String>,
}

/// Milliseconds in `min..=max`.
fn millis(min: u64, max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(min..=max)
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Variant {
    name: String,
    binary: PathBuf,
}

fn variants(args: &Args) -> Result<Vec<Variant>, String> {
    if args.variants.is_empty() {
        return Ok(vec![Variant {
            name: "current".into(),
            binary: workspace_binary("sse-broadcaster")?,
        }]);
    }
    args.variants
        .iter()
        .map(|spec| {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| format!("--variant {spec}: expected NAME=PATH"))?;
            let mut binary = PathBuf::from(path);
            if binary.is_dir() {
                binary = binary.join("sse-broadcaster");
            }
            if !binary.is_file() {
                return Err(format!(
                    "--variant {spec}: {} is not a file",
                    binary.display()
                ));
            }
            Ok(Variant {
                name: name.to_owned(),
                binary,
            })
        })
        .collect()
}

fn run(args: &Args) -> Result<(), String> {
    let transport = match args.transport.as_str() {
        "stream" => Transport::Stream,
        _ => Transport::Poll {
            wait_ms: args.wait_ms,
            repoll_spread_ms: args.repoll_spread_ms,
        },
    };
    let variants = variants(args)?;
    // The sidecars' sockets; broadcaster children inherit the raised limit.
    let nofile =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let most = args.sidecars.iter().copied().max().unwrap_or(0);
    if (most as u64) + 256 > nofile {
        return Err(format!(
            "{most} sidecars need more descriptors than RLIMIT_NOFILE allows ({nofile})"
        ));
    }
    let plane = ControlPlane::start(ControlPlaneKind::Separate, None)?;
    let etcd = plane.etcd_endpoint().ok_or("no etcd")?;
    for w in 0..args.workloads {
        plane.put_policy(&workload_policy(w, args.namespaces, 0))?;
    }
    plane.put_policy(&global_policy(0))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;

    println!(
        "bench-fanout: {} transport, {} workloads in {} namespaces, {} rounds, {} selective + {} global changes per round, next poll after a change within {} ms; RLIMIT_NOFILE {nofile}",
        args.transport, args.workloads, args.namespaces, args.rounds, args.selective, args.global, args.repoll_spread_ms
    );
    let mut change = 0usize;
    for &count in &args.sidecars {
        let mut results: BTreeMap<String, Vec<Round>> = BTreeMap::new();
        for round in 0..args.rounds {
            for i in 0..variants.len() {
                let variant = &variants[(i + round) % variants.len()];
                let setup = RoundSetup {
                    args,
                    plane: &plane,
                    etcd: &etcd,
                    runtime: &runtime,
                    transport,
                    sidecars: count,
                };
                let result = setup.run(variant, &mut change)?;
                eprintln!(
                    "  {count} sidecars, round {}, {}: {}",
                    round + 1,
                    variant.name,
                    result.summary()
                );
                results
                    .entry(variant.name.clone())
                    .or_default()
                    .push(result);
            }
        }
        report(count, &variants, &results);
    }
    Ok(())
}

fn workload_policy(workload: usize, namespaces: usize, change: usize) -> Value {
    policy(
        &format!("w{workload}"),
        json!({ "namespace": namespace_name(workload, namespaces), "service": app_name(workload) }),
        change,
    )
}

fn global_policy(change: usize) -> Value {
    policy("everyone", json!({}), change)
}

/// A policy with one abort rule on a path no traffic uses; `change` makes each write differ.
fn policy(name: &str, selector: Value, change: usize) -> Value {
    json!({
        "metadata": { "name": name, "version": format!("{change}") },
        "spec": {
            "selector": selector,
            "rules": [ { "match": { "path": { "prefix": "/bench" } },
                         "fault": { "abort": { "httpStatus": 500 + (change % 100) } } } ]
        }
    })
}

/// Everything one round of one variant measured.
#[derive(Debug, Default)]
struct Round {
    connect: Duration,
    rss_per_sidecar_kib: f64,
    /// How long each write through policy-api took (time to reach counts from its start).
    writes: Vec<Duration>,
    /// Time to reach each selected sidecar, per kind of change.
    selective: Vec<Duration>,
    global: Vec<Duration>,
    /// Broadcaster CPU per change, idle rate removed.
    selective_cpu: Vec<Duration>,
    global_cpu: Vec<Duration>,
    /// The load generator's own CPU per global change (it shares the cores).
    global_client_cpu: Vec<Duration>,
    /// Sidecars of other workloads that were answered during selective changes.
    unselected_answers: usize,
    timeouts: usize,
    failures: usize,
}

impl Round {
    fn summary(&self) -> String {
        format!(
            "connect {:.2?}, {:.1} KiB/sidecar, selective p99 {:.1?} cpu {:.2?}, global p99 {:.1?} cpu {:.2?}, timeouts {}, failures {}",
            self.connect,
            self.rss_per_sidecar_kib,
            quantile(&self.selective, 0.99),
            quantile(&self.selective_cpu, 0.5),
            quantile(&self.global, 0.99),
            quantile(&self.global_cpu, 0.5),
            self.timeouts,
            self.failures
        )
    }
}

struct RoundSetup<'a> {
    args: &'a Args,
    plane: &'a ControlPlane,
    etcd: &'a str,
    runtime: &'a tokio::runtime::Runtime,
    transport: Transport,
    sidecars: usize,
}

impl RoundSetup<'_> {
    fn run(&self, variant: &Variant, change: &mut usize) -> Result<Round, String> {
        let max_clients = (self.sidecars + 1000).to_string();
        let max_wait = self.args.wait_ms.max(60_000).to_string();
        let server = BroadcasterProcess::start(
            self.etcd,
            Some(&variant.binary),
            &[
                ("BOIFI_MAX_CLIENTS", &max_clients),
                ("BOIFI_POLL_MAX_WAIT_MS", &max_wait),
                // Heartbeats would land in the measured windows of stream rounds.
                ("BOIFI_STREAM_HEARTBEAT_SECS", "3600"),
            ],
        )?;
        let pid = server.pid().ok_or("broadcaster not running")?;
        self.measure(server.addr(), pid, change)
    }

    fn measure(&self, addr: SocketAddr, pid: u32, change: &mut usize) -> Result<Round, String> {
        let args = self.args;
        let mut round = Round::default();
        let rss_idle = resident_bytes(pid)? / 1024;
        let board = Arc::new(Board::new(self.sidecars));
        let started = Instant::now();
        let spec = FleetSpec {
            addr,
            workloads: args.workloads,
            namespaces: args.namespaces,
            transport: self.transport,
            connecting: CONNECTING,
        };
        let fleet = Fleet::start(self.runtime, &spec, board.clone());
        let everyone: Vec<usize> = (0..self.sidecars).collect();
        wait_for(
            &board,
            &everyone,
            started + CONNECT_TIMEOUT,
            "connect",
            |s| board.answers(s) > 0,
        )?;
        round.connect = started.elapsed();
        let mode = match self.transport {
            Transport::Poll { .. } => "poll",
            Transport::Stream => "stream",
        };
        let gauge = format!(
            "boifi_broadcaster_clients{{mode=\"{mode}\"}} {}",
            self.sidecars
        );
        let held = wait_until(Instant::now() + CONNECT_TIMEOUT, || {
            metrics(addr).is_some_and(|m| m.lines().any(|l| l == gauge))
        });
        if !held {
            return Err(format!(
                "the broadcaster never held all {} sidecars",
                self.sidecars
            ));
        }
        round.rss_per_sidecar_kib =
            (resident_bytes(pid)? / 1024).saturating_sub(rss_idle) as f64 / self.sidecars as f64;
        // The idle CPU rate, subtracted from every change's CPU below.
        std::thread::sleep(Duration::from_millis(200));
        let cpu0 = cpu_time(pid).ok_or("cannot read the broadcaster's CPU time")?;
        let idle_started = Instant::now();
        std::thread::sleep(IDLE_WINDOW);
        let idle_rate = (cpu_time(pid).ok_or("cannot read the broadcaster's CPU time")? - cpu0)
            .as_secs_f64()
            / idle_started.elapsed().as_secs_f64();

        let measure = Measure {
            pid,
            board: &board,
            poll: matches!(self.transport, Transport::Poll { .. }),
            idle_rate,
        };
        for k in 0..args.selective {
            *change += 1;
            // Spread over namespaces and workloads.
            let workload = (k * 37 + *change) % args.workloads;
            let selected: Vec<usize> = (workload..self.sidecars).step_by(args.workloads).collect();
            let policy = workload_policy(workload, args.namespaces, *change);
            let measured = measure.change(self.plane, &selected, &policy)?;
            round.writes.push(measured.write);
            round.selective.extend(measured.latencies);
            round.selective_cpu.push(measured.cpu);
            round.unselected_answers += measured.unselected_answers;
        }
        for _ in 0..args.global {
            *change += 1;
            let measured = measure.change(self.plane, &everyone, &global_policy(*change))?;
            round.writes.push(measured.write);
            round.global.extend(measured.latencies);
            round.global_cpu.push(measured.cpu);
            round.global_client_cpu.push(measured.client_cpu);
        }
        round.timeouts = board.timeouts.load(Ordering::Relaxed);
        round.failures = board.failures.load(Ordering::Relaxed);
        drop(fleet);
        Ok(round)
    }
}

/// One change at a time, measured against a round's broadcaster and sidecars.
struct Measure<'a> {
    pid: u32,
    board: &'a Board,
    poll: bool,
    idle_rate: f64,
}

impl Measure<'_> {
    /// Writes `policy`, waits until every `selected` sidecar has its revision (and, polling,
    /// has asked again), and returns the times and the broadcaster's CPU for it.
    fn change(
        &self,
        plane: &ControlPlane,
        selected: &[usize],
        policy: &Value,
    ) -> Result<Measured, String> {
        let board = self.board;
        let answered_before: Vec<u32> = (0..board.len()).map(|s| board.answers(s)).collect();
        let cpu0 = cpu_time(self.pid).ok_or("cannot read the broadcaster's CPU time")?;
        let own0 = cpu_time(std::process::id()).ok_or("cannot read own CPU time")?;
        let t0 = Instant::now();
        let revision = plane.put_policy(policy)?.revision;
        let write = t0.elapsed();
        wait_for(board, selected, t0 + CHANGE_TIMEOUT, "change", |s| {
            board.revision(s) >= revision && (!self.poll || board.asked_again(s))
        })?;
        std::thread::sleep(SETTLE);
        let window = t0.elapsed();
        let cpu = (cpu_time(self.pid).ok_or("cannot read the broadcaster's CPU time")? - cpu0)
            .saturating_sub(Duration::from_secs_f64(
                self.idle_rate * window.as_secs_f64(),
            ));
        let client_cpu = cpu_time(std::process::id()).ok_or("cannot read own CPU time")? - own0;
        let latencies = selected
            .iter()
            .map(|&s| board.reached_at(s).saturating_duration_since(t0))
            .collect();
        let mut is_selected = vec![false; board.len()];
        for &s in selected {
            is_selected[s] = true;
        }
        let unselected_answers = (0..board.len())
            .filter(|&s| !is_selected[s] && board.answers(s) > answered_before[s])
            .count();
        Ok(Measured {
            write,
            latencies,
            cpu,
            client_cpu,
            unselected_answers,
        })
    }
}

struct Measured {
    write: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
    client_cpu: Duration,
    unselected_answers: usize,
}

/// Waits until `done` holds for every sidecar in `sidecars`, checking the ones not done yet
/// every millisecond; an error naming `what` at `deadline`.
fn wait_for(
    board: &Board,
    sidecars: &[usize],
    deadline: Instant,
    what: &str,
    done: impl Fn(usize) -> bool,
) -> Result<(), String> {
    let mut waiting = sidecars.to_vec();
    loop {
        waiting.retain(|&s| !done(s));
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: {} of {} sidecars not done before the deadline ({} failures)",
                waiting.len(),
                sidecars.len(),
                board.failures.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn metrics(addr: SocketAddr) -> Option<String> {
    let response =
        http_request(addr, "GET", "/metrics", &[], None, Duration::from_secs(10)).ok()?;
    (response.status == 200).then(|| response.body_text())
}

/// Latencies pooled over rounds; CPU and memory as medians over changes and rounds.
struct Summary {
    connect: Duration,
    rss_kib: f64,
    writes: [Duration; 3],
    selective: [Duration; 3],
    selective_cpu: Duration,
    global: [Duration; 3],
    global_cpu: Duration,
    global_client_cpu: Duration,
    unselected_answers: usize,
    timeouts: usize,
    failures: usize,
}

fn summarize(rounds: &[Round]) -> Summary {
    let pooled = |f: fn(&Round) -> &Vec<Duration>| -> Vec<Duration> {
        rounds.iter().flat_map(|r| f(r).iter().copied()).collect()
    };
    let spread = |samples: &[Duration]| {
        [
            quantile(samples, 0.5),
            quantile(samples, 0.99),
            quantile(samples, 1.0),
        ]
    };
    Summary {
        connect: quantile(&rounds.iter().map(|r| r.connect).collect::<Vec<_>>(), 0.5),
        rss_kib: median(rounds.iter().map(|r| r.rss_per_sidecar_kib)),
        writes: spread(&pooled(|r| &r.writes)),
        selective: spread(&pooled(|r| &r.selective)),
        selective_cpu: quantile(&pooled(|r| &r.selective_cpu), 0.5),
        global: spread(&pooled(|r| &r.global)),
        global_cpu: quantile(&pooled(|r| &r.global_cpu), 0.5),
        global_client_cpu: quantile(&pooled(|r| &r.global_client_cpu), 0.5),
        unselected_answers: rounds.iter().map(|r| r.unselected_answers).sum(),
        timeouts: rounds.iter().map(|r| r.timeouts).sum(),
        failures: rounds.iter().map(|r| r.failures).sum(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn report(count: usize, variants: &[Variant], results: &BTreeMap<String, Vec<Round>>) {
    println!();
    println!("### {count} sidecars");
    println!();
    println!("| variant | connect all | RSS per sidecar | one workload: p50 / p99 / max | CPU per change | everyone: p50 / p99 / max | CPU per change | CPU per answered sidecar | others answered | timeouts | failures |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut summaries = Vec::new();
    for variant in variants {
        let Some(rounds) = results.get(&variant.name) else {
            continue;
        };
        let s = summarize(rounds);
        println!(
            "| {} | {:.2} s | {:.1} KiB | {} / {} / {} | {} | {} / {} / {} | {} | {:.1} us | {} | {} | {} |",
            variant.name,
            s.connect.as_secs_f64(),
            s.rss_kib,
            ms(s.selective[0]),
            ms(s.selective[1]),
            ms(s.selective[2]),
            us(s.selective_cpu),
            ms(s.global[0]),
            ms(s.global[1]),
            ms(s.global[2]),
            us(s.global_cpu),
            s.global_cpu.as_secs_f64() * 1e6 / count as f64,
            s.unselected_answers,
            s.timeouts,
            s.failures,
        );
        summaries.push((variant.name.clone(), s));
    }
    println!();
    for (name, s) in &summaries {
        println!(
            "{name}: the load generator used {} of CPU per change selecting everyone (same cores); API writes p50 / p99 / max {} / {} / {}",
            ms(s.global_client_cpu),
            ms(s.writes[0]),
            ms(s.writes[1]),
            ms(s.writes[2])
        );
    }
    if let Some(((base_name, base), rest)) = summaries.split_first() {
        for (name, s) in rest {
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            println!();
            println!(
                "{name} / {base_name}: one-workload CPU {:.2}x, p99 {:.2}x; everyone CPU {:.2}x, p99 {:.2}x; RSS per sidecar {:.2}x",
                ratio(s.selective_cpu, base.selective_cpu),
                ratio(s.selective[1], base.selective[1]),
                ratio(s.global_cpu, base.global_cpu),
                ratio(s.global[1], base.global[1]),
                s.rss_kib / base.rss_kib.max(1e-9),
            );
        }
    }
}
