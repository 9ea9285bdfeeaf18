//! `bench-store`: what one policy write costs the stores, as the number of stored policies grows.
//! A benchmark, not a test: it prints numbers (Markdown tables for `docs/benchmarks.md`).
//!
//! Throughput and latency: for each size (`--sizes`, default 100, 1,000 and 10,000 policies) a
//! fresh embedded store (temp dir) and a fresh real etcd (the test harness's, also in a temp
//! dir) are filled with that many policies of about 400 bytes; then one writer replaces existing
//! policies one at a time (`put` awaited before the next), in interleaved rounds (embedded, etcd,
//! embedded, ... with the order swapped every round), and every write is timed. etcd is the
//! baseline measured in the same run: the report gives the embedded store's writes/s as a ratio
//! of etcd's. A third row, in the same rounds, is the disk's own floor for a durable write: one
//! 4 KiB `pwrite` plus `fdatasync` into a preallocated file in the same temp directory.
//!
//! Open: the embedded store of each size closed and opened again (its checksums verified, its
//! policies loaded into memory).
//!
//! Growth: one policy with a 60 KB abort body (`--large-bytes`) written `--large-updates` times
//! (default 650) into a fresh store: the data directory's size at the end and the latency of the
//! first and the last 50 writes.
//!
//! Build and run (release):
//! `cargo build --release -p boifi-tests --bin bench-store && target/release/bench-store`

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use boifi_policy::{Policy, ValidPolicy};
use boifi_store::{
    Attribution, Clock, EmbeddedStore, EtcdConfig, EtcdStore, PolicyStore, Precondition,
    SystemClock,
};
use boifi_tests::bench::whole_number;
use boifi_tests::EtcdServer;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

/// Stride through the stored names: prime, so coprime with every size, and far from 1 so
/// consecutive writes touch distant keys.
const NAME_STRIDE: usize = 7919;
/// Concurrent writes while filling a store (only the fill; the measured writes are serial).
const FILL_CONCURRENCY: usize = 32;
/// Writes at each end of the growth series whose latency is reported.
const GROWTH_WINDOW: usize = 50;

/// What one policy write costs the embedded store and etcd, by the number of stored policies.
#[derive(Debug, Parser)]
#[command(name = "bench-store")]
struct Args {
    /// Stored policies, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000, 10_000],
          value_parser = whole_number(1, 1_000_000))]
    sizes: Vec<usize>,
    /// Timed writes per store and size, split over the rounds.
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = whole_number(10, 1_000_000))]
    writes: usize,
    /// Interleaved rounds.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = whole_number(1, 1_000))]
    rounds: usize,
    /// Updates of the one large policy in the growth series (0: skip it).
    #[arg(long, value_name = "N", default_value_t = 650, value_parser = whole_number(0, 1_000_000))]
    large_updates: usize,
    /// Abort body size of the large policy, in bytes (the policy limit is 64 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 60_000, value_parser = whole_number(1, 64 * 1024))]
    large_bytes: usize,
    /// Measure the embedded store only.
    #[arg(long)]
    no_etcd: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench-store: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-store: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    println!("| store | policies | writes | writes/s | p50 | p99 | max | writes/s vs etcd |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut opens = Vec::new();
    for &size in &args.sizes {
        let mut backends = vec![Backend::embedded()?];
        if !args.no_etcd {
            backends.push(Backend::etcd().await?);
        }
        for backend in &backends {
            let started = Instant::now();
            fill(backend.store(), size).await?;
            eprintln!(
                "filled {} with {size} policies in {:.1?}",
                backend.name,
                started.elapsed()
            );
        }
        let mut disk = DiskFloor::new()?;
        let (series, floor) = measure_writes(&backends, &mut disk, size, args).await?;
        let etcd_rate = series.last().filter(|_| !args.no_etcd).map(Series::rate);
        let rows = backends
            .iter()
            .map(|b| b.name)
            .chain(["disk: 4 KiB write + fdatasync"])
            .zip(series.iter().chain([&floor]));
        for (name, s) in rows {
            let ratio = etcd_rate.map_or("-".into(), |etcd| format!("{:.2}x", s.rate() / etcd));
            println!(
                "| {name} | {size} | {} | {:.0} | {} | {} | {} | {ratio} |",
                s.latencies.len(),
                s.rate(),
                ms(s.percentile(0.50)),
                ms(s.percentile(0.99)),
                ms(s.percentile(1.0)),
            );
        }
        let embedded = backends.swap_remove(0);
        opens.push((size, reopen(embedded).await?));
    }
    println!();
    println!("| embedded store: policies | open (verify the file, load the policies) |");
    println!("|---:|---:|");
    for (size, took) in opens {
        println!("| {size} | {} |", ms(took));
    }
    if args.large_updates > 0 {
        println!();
        println!(
            "| store | one {} KB policy, updates | data dir after | first {GROWTH_WINDOW}: p50 / p99 | last {GROWTH_WINDOW}: p50 / p99 |",
            args.large_bytes / 1000
        );
        println!("|---|---:|---:|---:|---:|");
        let mut backends = vec![Backend::embedded()?];
        if !args.no_etcd {
            backends.push(Backend::etcd().await?);
        }
        for backend in &backends {
            let latencies = grow(backend.store(), args.large_updates, args.large_bytes).await?;
            let window = GROWTH_WINDOW.min(latencies.len());
            let first = Series::new(latencies[..window].to_vec(), Duration::ZERO);
            let last = Series::new(
                latencies[latencies.len() - window..].to_vec(),
                Duration::ZERO,
            );
            let size = backend
                .dir
                .as_ref()
                .map_or("-".into(), |dir| mib(dir_bytes(dir.path())));
            println!(
                "| {} | {} | {size} | {} / {} | {} / {} |",
                backend.name,
                latencies.len(),
                ms(first.percentile(0.50)),
                ms(first.percentile(0.99)),
                ms(last.percentile(0.50)),
                ms(last.percentile(0.99)),
            );
        }
    }
    Ok(())
}

/// A store under test, with what keeps it alive.
struct Backend {
    name: &'static str,
    store: Box<dyn PolicyStore>,
    /// The embedded store's data directory.
    dir: Option<tempfile::TempDir>,
    /// Stopped by PID on drop.
    _etcd: Option<EtcdServer>,
}

impl Backend {
    fn embedded() -> Result<Backend, String> {
        let dir = tempfile::Builder::new()
            .prefix("boifi-bench-store-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let store = EmbeddedStore::open(dir.path()).map_err(|e| format!("embedded store: {e}"))?;
        Ok(Backend {
            name: "embedded",
            store: Box::new(store),
            dir: Some(dir),
            _etcd: None,
        })
    }

    async fn etcd() -> Result<Backend, String> {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .map_err(|e| format!("etcd start: {e}"))?;
        let config = EtcdConfig::new(vec![server.endpoint()], "/boifi-bench/");
        let store = EtcdStore::connect(config)
            .await
            .map_err(|e| format!("etcd store: {e}"))?;
        Ok(Backend {
            name: "etcd",
            store: Box::new(store),
            dir: None,
            _etcd: Some(server),
        })
    }

    fn store(&self) -> &dyn PolicyStore {
        self.store.as_ref()
    }
}

/// Closes the embedded store and times opening it again.
async fn reopen(backend: Backend) -> Result<Duration, String> {
    let Backend { store, dir, .. } = backend;
    drop(store);
    let dir = dir.ok_or("reopen: not the embedded store")?;
    let started = Instant::now();
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || EmbeddedStore::open(path))
        .await
        .map_err(|e| format!("reopen: {e}"))?
        .map_err(|e| format!("reopen: {e}"))?;
    Ok(started.elapsed())
}

/// A policy like a real experiment's: a selector, a matcher, an abort and a delay (about 400
/// bytes stored), or with an abort body of `body_bytes`.
fn policy(name: &str, version: &str, body_bytes: usize) -> Result<ValidPolicy, String> {
    let mut abort = json!({ "httpStatus": 503 });
    if body_bytes > 0 {
        abort["body"] = json!("x".repeat(body_bytes));
    }
    let policy: Policy = serde_json::from_value(json!({
        "metadata": { "name": name, "version": version },
        "spec": {
            "selector": { "namespace": "bench", "service": "reviews", "labels": { "version": "v2" } },
            "rules": [ {
                "match": { "method": { "exact": "GET" }, "path": { "prefix": "/api/v1/reviews" } },
                "fault": { "percentage": 5, "delay": { "fixed_delay_ms": 250 }, "abort": abort }
            } ]
        }
    }))
    .map_err(|e| format!("bench policy: {e}"))?;
    ValidPolicy::try_from(policy).map_err(|e| format!("bench policy: {e:?}"))
}

/// Who the benchmark's writes are by, for the audit trail each write records.
fn bench_attribution() -> Attribution {
    Attribution::new("bench", None, SystemClock.now_ms()).expect("a valid attribution")
}

fn name(index: usize) -> String {
    format!("bench-{index:07}")
}

async fn fill(store: &dyn PolicyStore, size: usize) -> Result<(), String> {
    let policies = (0..size)
        .map(|i| policy(&name(i), "0", 0))
        .collect::<Result<Vec<_>, _>>()?;
    let by = bench_attribution();
    let mut writes = futures::stream::iter(&policies)
        .map(|p| store.put(p, Precondition::None, &by))
        .buffer_unordered(FILL_CONCURRENCY);
    while let Some(written) = writes.next().await {
        written.map_err(|e| format!("fill: {e}"))?;
    }
    Ok(())
}

/// Timed writes of one store, in order.
struct Series {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Series {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Series {
        latencies.sort_unstable();
        Series { latencies, elapsed }
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile, `q` in 0..=1.
    fn percentile(&self, q: f64) -> Duration {
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// A preallocated file that takes one durable 4 KiB write at a time: the least a durable write
/// costs on this disk.
struct DiskFloor {
    _dir: tempfile::TempDir,
    file: std::fs::File,
    page: Vec<u8>,
    offset: u64,
}

impl DiskFloor {
    const PAGE: u64 = 4096;
    const PAGES: u64 = 4096;

    fn new() -> Result<DiskFloor, String> {
        let dir = tempfile::Builder::new()
            .prefix("boifi-bench-disk-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut file = std::fs::File::create(dir.path().join("floor"))
            .map_err(|e| format!("disk floor file: {e}"))?;
        let zeros = vec![0u8; (Self::PAGE * Self::PAGES) as usize];
        file.write_all(&zeros)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("disk floor file: {e}"))?;
        Ok(DiskFloor {
            _dir: dir,
            file,
            page: vec![0xA5; Self::PAGE as usize],
            offset: 0,
        })
    }

    /// One 4 KiB write (the next page, wrapping) and `fdatasync`.
    fn write(&mut self) -> Result<(), String> {
        self.file
            .write_all_at(&self.page, self.offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("disk floor write: {e}"))?;
        self.offset = (self.offset + Self::PAGE) % (Self::PAGE * Self::PAGES);
        Ok(())
    }
}

/// `args.writes` replacements per backend, in `args.rounds` interleaved rounds: one series per
/// backend, in the order given, and the disk floor's, measured in the same rounds.
async fn measure_writes(
    backends: &[Backend],
    disk: &mut DiskFloor,
    size: usize,
    args: &Args,
) -> Result<(Vec<Series>, Series), String> {
    let per_round = args.writes.div_ceil(args.rounds);
    let mut latencies = vec![Vec::with_capacity(args.writes); backends.len()];
    let mut elapsed = vec![Duration::ZERO; backends.len()];
    let mut floor = Vec::with_capacity(args.writes);
    let mut floor_elapsed = Duration::ZERO;
    let mut next = 0usize;
    for round in 0..args.rounds {
        let started = Instant::now();
        for _ in 0..per_round {
            let write = Instant::now();
            disk.write()?;
            floor.push(write.elapsed());
        }
        floor_elapsed += started.elapsed();
        let mut order: Vec<usize> = (0..backends.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &b in &order {
            // Same names and values for every backend in a round.
            let first = next;
            let started = Instant::now();
            for i in 0..per_round {
                let index = ((first + i) * NAME_STRIDE) % size;
                let p = policy(&name(index), &format!("r{round}-{i}"), 0)?;
                let write = Instant::now();
                backends[b]
                    .store()
                    .put(&p, Precondition::None, &bench_attribution())
                    .await
                    .map_err(|e| format!("{} write: {e}", backends[b].name))?;
                latencies[b].push(write.elapsed());
            }
            elapsed[b] += started.elapsed();
        }
        next += per_round;
    }
    let series = latencies
        .into_iter()
        .zip(elapsed)
        .map(|(l, e)| Series::new(l, e))
        .collect();
    Ok((series, Series::new(floor, floor_elapsed)))
}

/// Writes one large policy `updates` times; the latency of each write, in order.
async fn grow(
    store: &dyn PolicyStore,
    updates: usize,
    body_bytes: usize,
) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(updates);
    for i in 0..updates {
        let p = policy("large", &i.to_string(), body_bytes)?;
        let write = Instant::now();
        store
            .put(&p, Precondition::None, &bench_attribution())
            .await
            .map_err(|e| format!("large write: {e}"))?;
        latencies.push(write.elapsed());
    }
    Ok(latencies)
}

/// Total size of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
