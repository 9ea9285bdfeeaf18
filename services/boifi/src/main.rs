//! `boifi`: the BOIFI command. `boifi serve` runs policy-api and sse-broadcaster together on
//! one port (see `boifi::serve`); configuration comes from `BOIFI_*` variables.

use std::process::ExitCode;

use boifi::cli::Cli;
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    boifi_runtime::init_logger();
    let name = command.name();
    boifi_runtime::exit_code(name, command.run().await)
}
