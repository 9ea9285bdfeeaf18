//! `policy-api`: the BOIFI REST API. Configuration comes from `BOIFI_*` variables (see
//! `boifi_policy_api::config`); logs go to stderr (`RUST_LOG`, default `info`).

use std::process::ExitCode;
use std::sync::Arc;

use boifi_policy_api::sidecars::Broadcasters;
use boifi_policy_api::{server, AppState, Auth, Config};

#[actix_web::main]
async fn main() -> ExitCode {
    boifi_runtime::init_logger();
    boifi_runtime::exit_code("policy-api", start().await)
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_vars(boifi_runtime::env::process_vars())?;
    let auth = Auth::from_config(&config.auth)?;
    let store = boifi_store::open_store(&config.store).await?;
    let listener = boifi_runtime::bind(&config.listen_addr)?;
    let addr = listener.local_addr()?;
    log::info!("listening on http://{addr} ({} store)", store.kind());
    let mut state = AppState::new(store, auth)?;
    if !config.broadcasters.is_empty() {
        state = state.with_sidecars(Arc::new(Broadcasters::new(config.broadcasters)));
    }
    server::run(listener, state, boifi_runtime::shutdown_signal()).await?;
    Ok(())
}
