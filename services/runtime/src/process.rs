//! Process concerns of a binary's `main`: logging and the exit status.

use std::error::Error;
use std::process::ExitCode;

/// Logs to stderr through env_logger: `RUST_LOG` chooses what (default `info`). A second call
/// keeps the first logger.
pub fn init_logger() {
    let env = env_logger::Env::default().default_filter_or("info");
    // Fails only when a logger is already set, which is fine.
    let _ = env_logger::Builder::from_env(env).try_init();
}

/// The exit status of a binary whose work returned `result`; an error is logged first, as
/// `<name>: <error>`.
pub fn exit_code(name: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
