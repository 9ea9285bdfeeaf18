//! `sse-broadcaster`: reads `BOIFI_*` settings, opens the store, serves until Ctrl-C/SIGTERM.

use std::net::TcpListener;
use std::sync::Arc;

use boifi_sse_broadcaster::{run, Broadcaster, Config, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::from_env()?;
    let store = boifi_store::open_store(&config.store).await?;
    let broadcaster = Broadcaster::start(store, Arc::new(SystemClock), config.settings)?;
    let listener = TcpListener::bind(&config.listen_addr)?;
    log::info!("sse-broadcaster listening on {}", listener.local_addr()?);
    run(listener, broadcaster, shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(err) => {
            log::warn!("cannot listen for SIGTERM ({err}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
