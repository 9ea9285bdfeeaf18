//! `boifi`: the BOIFI command. `boifi serve` runs policy-api and sse-broadcaster together on
//! one port (see `boifi::serve`); configuration comes from `BOIFI_*` variables.

use std::net::TcpListener;
use std::process::ExitCode;

use boifi::serve::{self, Serve, ServeConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boifi",
    version,
    about = "Fault injection for Istio service meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run policy-api and the sse-broadcaster stream in one process (local use: the embedded
    /// store and no tokens unless BOIFI_ETCD_ENDPOINTS / BOIFI_TOKENS_FILE are set).
    Serve,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let Cli {
        command: Command::Serve,
    } = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match start().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("boifi serve: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServeConfig::from_env()?;
    if config.auth_off_by_default {
        log::warn!(
            "serving WITHOUT authentication (set BOIFI_TOKENS_FILE to require tokens); \
             keep BOIFI_LISTEN_ADDR on loopback"
        );
    }
    let listener = TcpListener::bind(&config.listen_addr)
        .map_err(|e| format!("BOIFI_LISTEN_ADDR {}: {e}", config.listen_addr))?;
    let serve = Serve::start(&config).await?;
    log::info!(
        "boifi serve on http://{} ({} store): API /v1/policies, stream /v1/config/stream",
        listener.local_addr()?,
        serve.store_kind()
    );
    serve::run(listener, serve, boifi_policy_api::server::shutdown_signal()).await?;
    Ok(())
}
