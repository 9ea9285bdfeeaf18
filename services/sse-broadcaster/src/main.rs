//! `sse-broadcaster`: reads `BOIFI_*` settings, opens the store, serves until Ctrl-C/SIGTERM.
//! Logs go to stderr (`RUST_LOG`, default `info`).

use std::process::ExitCode;
use std::sync::Arc;

use boifi_sse_broadcaster::{run, Broadcaster, Config, SystemClock};

// See the `jemalloc` feature in Cargo.toml.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    boifi_runtime::init_logger();
    boifi_runtime::exit_code("sse-broadcaster", start().await)
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_vars(boifi_runtime::env::process_vars())?;
    let store = boifi_store::open_store(&config.store).await?;
    let broadcaster = Broadcaster::start(store, Arc::new(SystemClock), config.settings)?;
    let listener = boifi_runtime::bind(&config.listen_addr)?;
    log::info!("sse-broadcaster listening on {}", listener.local_addr()?);
    run(listener, broadcaster, boifi_runtime::shutdown_signal()).await?;
    Ok(())
}
