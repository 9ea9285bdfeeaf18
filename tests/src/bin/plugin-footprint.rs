//! `plugin-footprint`: what loading the BOIFI plugin costs a sidecar: the time from the
//! WasmPlugin's ECDS resource arriving until Envoy serves with it, and the heap its VMs take
//! (one per worker thread plus one on the main thread). A benchmark, not a test: it prints a
//! Markdown table for `wasm/plugin/README.md`.
//!
//! How: a sidecar-like Envoy (`EnvoyBuilder`, as Istio runs one) is switched between the plugin
//! and pilot-agent's allow-all stand-in (an RBAC filter, no VM) over ECDS, `--rounds` times per
//! worker count. Load time is from writing the resource until `/config_dump` shows it (so it
//! includes Envoy noticing the file, a few ms); memory is Envoy's resident set (`VmRSS`, which
//! includes V8's own heap pages) and its tcmalloc heap (`/memory` allocated, which does not),
//! each with the plugin minus without, divided by the VMs.
//!
//! Run: `cargo build --release --bin plugin-footprint && target/release/plugin-footprint`

use boifi_tests::bench::median;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use boifi_tests::binaries::plugin_wasm;
use boifi_tests::envoy::{Envoy, EnvoyBuilder, Upstream};
use boifi_tests::free_port;
use boifi_tests::istio::sha256_hex;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "plugin-footprint")]
struct Args {
    /// Plugin loads measured per worker count.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn rss(envoy: &Envoy) -> Result<u64, String> {
    boifi_tests::process::resident_bytes(envoy.pid().ok_or("Envoy has no PID")?)
}

fn measure(concurrency: u32, rounds: usize) -> Result<(f64, f64, f64), String> {
    let upstream = Upstream::start();
    // No broadcaster: the plugin's polls fail and back off, which costs nothing here.
    let builder = EnvoyBuilder::new(upstream.port(), free_port()).concurrency(concurrency);
    let envoy = builder.start();
    let module = plugin_wasm()?;
    let plugin = builder.wasm_plugin(&module);
    let mut stand_in = plugin.clone();
    stand_in.sha256 = Some(sha256_hex(b"not the module"));
    let vms = f64::from(concurrency + 1);
    let (mut load_ms, mut kib_per_vm, mut rss_per_vm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        envoy.deliver_plugin(&stand_in)?;
        // Envoy frees a replaced filter's VMs on its main thread shortly after the swap.
        std::thread::sleep(Duration::from_millis(300));
        let (without, rss_without) = (envoy.heap_allocated()?, rss(&envoy)?);
        let start = Instant::now();
        envoy.deliver_plugin(&plugin)?;
        load_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let with = envoy.heap_allocated()?;
        kib_per_vm.push(with.saturating_sub(without) as f64 / 1024.0 / vms);
        rss_per_vm.push(rss(&envoy)?.saturating_sub(rss_without) as f64 / 1024.0 / vms);
    }
    Ok((median(load_ms), median(rss_per_vm), median(kib_per_vm)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!("| Envoy workers | plugin VMs | load time (p50) | RSS per VM (p50) | tcmalloc heap per VM (p50) |");
    println!("|---:|---:|---:|---:|---:|");
    for concurrency in [1, 2, 4] {
        match measure(concurrency, args.rounds) {
            Ok((load_ms, rss_kib, heap_kib)) => println!(
                "| {concurrency} | {} | {load_ms:.0} ms | {rss_kib:.0} KiB | {heap_kib:.0} KiB |",
                concurrency + 1
            ),
            Err(e) => {
                eprintln!("plugin-footprint: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
