//! The command line: one enum of subcommands, each handing its work to its own module.

use clap::{Parser, Subcommand};

use crate::serve;

#[derive(Parser)]
#[command(
    name = "boifi",
    version,
    about = "Fault injection for Istio service meshes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run policy-api and the sse-broadcaster stream in one process (local use: the embedded
    /// store and no tokens unless BOIFI_ETCD_ENDPOINTS / BOIFI_TOKENS_FILE are set).
    Serve,
}

impl Command {
    /// How logs and errors name the command: `boifi serve`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Serve => "boifi serve",
        }
    }

    pub async fn run(self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Command::Serve => serve::serve_from_env().await,
        }
    }
}
