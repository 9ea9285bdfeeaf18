//! Process concerns of a binary's `main`: logging, the exit status, the open files limit.

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

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and returns the
/// soft limit now in force. Each client of a server holds a connection, so a descriptor:
/// thousands of sidecars need thousands, while container runtimes may start a process with a
/// soft limit of 1024 under a hard limit far above it (Go programs raise it at start; Rust's
/// standard library does not).
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The soft limit on open files, when the platform has one.
pub fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!((raised, soft), (hard, hard));
        assert_eq!(open_files_limit(), Some(hard));
    }
}
