//! `sse-broadcaster`: reads `BOIFI_*` settings, opens the store, serves until Ctrl-C/SIGTERM.
//! Logs go to stderr (`RUST_LOG`, default `info`).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use boifi_sse_broadcaster::{run, Broadcaster, Config, SystemClock};

// The actix runtime, as policy-api and `boifi serve` use: one way to run the servers.
#[actix_web::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match start().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("sse-broadcaster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let store = boifi_store::open_store(&config.store).await?;
    let broadcaster = Broadcaster::start(store, Arc::new(SystemClock), config.settings)?;
    let listener = TcpListener::bind(&config.listen_addr)
        .map_err(|e| format!("BOIFI_LISTEN_ADDR {}: {e}", config.listen_addr))?;
    log::info!("sse-broadcaster listening on {}", listener.local_addr()?);
    run(listener, broadcaster, shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends). Each binary has its own: it is a
/// process concern, and no library both binaries share is about processes.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(e) => {
            log::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
            if let Err(e) = tokio::signal::ctrl_c().await {
                log::error!("cannot listen for Ctrl-C ({e}); stop the process with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
