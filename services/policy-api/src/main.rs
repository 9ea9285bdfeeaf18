//! `policy-api`: the BOIFI REST API. Configuration comes from `BOIFI_*` variables (see
//! `boifi_policy_api::config`); logs go to stderr (`RUST_LOG`, default `info`).

use std::net::TcpListener;
use std::process::ExitCode;

use boifi_policy_api::{server, AppState, Auth, Config};

#[actix_web::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match start().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("policy-api: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let auth = Auth::from_config(&config.auth)?;
    let store = boifi_store::open_store(&config.store).await?;
    let listener = TcpListener::bind(&config.listen_addr)
        .map_err(|e| format!("BOIFI_LISTEN_ADDR {}: {e}", config.listen_addr))?;
    log::info!(
        "listening on http://{} ({} store)",
        listener.local_addr()?,
        store.kind()
    );
    let state = AppState::new(store, auth)?;
    server::run(listener, state, server::shutdown_signal()).await?;
    Ok(())
}
