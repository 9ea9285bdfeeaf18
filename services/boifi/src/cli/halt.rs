//! `boifi halt [--reason TEXT]` and `boifi resume [--reason TEXT]`: the global kill switch
//! (`POST` and `DELETE /v1/halt`). The reason, when given, goes to the server as
//! `{"reason": "..."}` for its log and audit trail.

use clap::Args;
use serde::Deserialize;
use ureq::http::Method;

use super::client::{Connection, ConnectionArgs};
use super::{CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct HaltArgs {
    /// Why, for the server's log and audit trail (e.g. "incident 123").
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The answer of `/v1/halt`.
#[derive(Debug, Deserialize)]
struct HaltState {
    halted: bool,
    revision: u64,
}

/// Sets the kill switch (`halt` true) or clears it.
pub fn run(
    args: &HaltArgs,
    halt: bool,
    vars: Vec<(String, String)>,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let body = args
        .reason
        .as_ref()
        .map(|reason| serde_json::to_vec(&serde_json::json!({ "reason": reason })))
        .transpose()
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    let method = if halt { Method::POST } else { Method::DELETE };
    let state: HaltState = client.send(method, "/v1/halt", &[], body)?.json()?;
    if state.halted != halt {
        return Err(CliError::Protocol(format!(
            "the server reports halted={} after the request",
            state.halted
        )));
    }
    let revision = state.revision;
    if halt {
        writeln!(
            io.out,
            "halted (revision {revision}): no sidecar injects faults until `boifi resume`"
        )?;
    } else {
        writeln!(io.out, "resumed (revision {revision}): policies act again")?;
    }
    Ok(())
}
