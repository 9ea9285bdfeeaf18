//! The command line: one enum of subcommands, each handing its work to its own module.
//!
//! - [`apply`], [`get`], [`delete`], [`halt`] (`halt` and `resume`), [`audit`], [`watch`],
//!   [`validate`], [`status`], [`completion`]: one file per command, each with its arguments
//!   and its `run`.
//! - [`wait`]: `apply --wait`, until the selected sidecars enforce what was applied.
//! - [`client`]: where the server is, the token, the HTTP client (timeouts, bounded bodies).
//! - [`documents`]: policy documents from files, directories and stdin, checked offline with
//!   the API's own checks.
//! - [`table`]: the text tables of `get`; [`sse`]: the event stream reader of `watch`.
//! - [`error`]: [`CliError`], how errors are printed, and the exit codes (0 ok, 1 refused or
//!   failed, 2 usage).
//! - `serve` runs [`crate::serve`].
//!
//! Client commands write to the [`Io`] they are given and read the environment from the pairs
//! they are given, so tests run them without a terminal or process variables.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::serve;

pub mod apply;
pub mod audit;
pub mod client;
pub mod completion;
pub mod delete;
pub mod documents;
pub mod error;
pub mod get;
pub mod halt;
pub mod sse;
pub mod status;
pub mod table;
pub mod validate;
pub mod wait;
pub mod watch;

pub use error::{CliError, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

#[derive(Parser)]
#[command(
    name = "boifi",
    version,
    about = "Fault injection for Istio service meshes",
    after_help = "Server: --server or BOIFI_SERVER (default http://127.0.0.1:8080). Token: \
                  BOIFI_TOKEN or --token-file PATH.\nExit codes: 0 done, 1 refused or failed, \
                  2 wrong usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create or update policies from YAML or JSON files; nothing is written unless every
    /// document is valid.
    Apply(apply::ApplyArgs),
    /// List policies, or show one.
    Get(get::GetArgs),
    /// Delete policies by name, or those named in files.
    Delete(delete::DeleteArgs),
    /// Turn the kill switch on: no sidecar injects any fault until `boifi resume`.
    Halt(halt::HaltArgs),
    /// Turn the kill switch off: policies act again.
    Resume(halt::HaltArgs),
    /// Who changed what, when and why: the server's audit trail, newest first.
    Audit(audit::AuditArgs),
    /// Follow the changes the sidecars receive, one line each.
    Watch(watch::WatchArgs),
    /// Check policy files offline, with the API's own checks (no server needed).
    Validate(validate::ValidateArgs),
    /// Show the sidecars, the revision each enforces and the faults it injected; or, for one
    /// policy, how many of the sidecars it selects enforce it.
    Status(status::StatusArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Run policy-api and the sse-broadcaster stream in one process (local use: the embedded
    /// store and no tokens unless BOIFI_ETCD_ENDPOINTS / BOIFI_TOKENS_FILE are set).
    Serve,
}

/// Where a client command reads and writes.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// The `boifi` binary: parse the command line (clap exits 2 on a usage error), run the
/// command, and return its exit code.
pub fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    if let Command::Serve = command {
        return serve_main();
    }
    let stdin = std::io::stdin();
    let mut io = Io {
        stdin: &mut stdin.lock(),
        out: &mut std::io::stdout().lock(),
        err: &mut std::io::stderr().lock(),
    };
    ExitCode::from(run(command, boifi_runtime::env::process_vars(), &mut io))
}

/// `boifi serve`: logs through `RUST_LOG`, serves until SIGTERM or Ctrl-C.
fn serve_main() -> ExitCode {
    boifi_runtime::init_logger();
    let result = actix_web::rt::System::new().block_on(serve::serve_from_env());
    boifi_runtime::exit_code("boifi serve", result)
}

/// The workload filter of `--namespace` and `--service` (`get`, `watch`), checked as the
/// server checks it.
pub fn workload_filter(
    namespace: Option<&str>,
    service: Option<&str>,
) -> Result<boifi_policy::wire::Filter, CliError> {
    boifi_policy::wire::Filter::parse(namespace, service, None).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(|p| format!("--{p}")).collect();
        CliError::Usage(listed.join("; "))
    })
}

/// Runs `act` on each item in turn and prints `policy/NAME <what act did>` for each success.
/// A failure is reported as `error: policy/NAME: ...` and the others go on, unless it would
/// repeat for every item ([`CliError::concerns_every_request`]: no token, wrong role, server
/// gone), which ends the command at once. When some failed, the result is the error
/// `N of M policies not <not_done>` (exit 1).
pub fn each_policy<T>(
    items: &[T],
    name_of: impl Fn(&T) -> &str,
    not_done: &str,
    io: &mut Io<'_>,
    mut act: impl FnMut(&T) -> Result<&'static str, CliError>,
) -> Result<(), CliError> {
    let mut failed = 0;
    for item in items {
        let subject = format!("policy/{}", name_of(item));
        match act(item) {
            Ok(done) => writeln!(io.out, "{subject} {done}")?,
            Err(e) if e.concerns_every_request() => return Err(e),
            Err(e) => {
                e.report_about(Some(&subject), io.err)?;
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::Reported(format!(
            "{n} of {} policies not {not_done}",
            items.len()
        ))),
    }
}

/// Runs a client command with the environment `vars`; prints its error, if any, to `io.err`
/// and returns the exit code.
pub fn run<I>(command: Command, vars: I, io: &mut Io<'_>) -> u8
where
    I: IntoIterator<Item = (String, String)>,
{
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let result = match command {
        Command::Apply(args) => apply::run(&args, vars, io),
        Command::Get(args) => get::run(&args, vars, io),
        Command::Delete(args) => delete::run(&args, vars, io),
        Command::Halt(args) => halt::run(&args, true, vars, io),
        Command::Resume(args) => halt::run(&args, false, vars, io),
        Command::Audit(args) => audit::run(&args, vars, io),
        Command::Watch(args) => watch::run(&args, vars, io),
        Command::Validate(args) => validate::run(&args, io),
        Command::Status(args) => status::run(&args, vars, io),
        Command::Completion(args) => completion::run(&args, io),
        Command::Serve => Err(CliError::Usage("serve is not a client command".to_owned())),
    };
    let flushed = io.out.flush().map_err(CliError::Output);
    match result.and(flushed) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = e.report(io.err);
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("boifi").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_and_help_exits_0() {
        for wrong in [
            &["apply"][..],
            &["get", "-o", "xml"],
            &["delete"],
            &["delete", "a", "-f", "x.yaml"],
            &["frobnicate"],
            &["get", "--token", "secret"],
            &["get", "--timeout", "0s"],
            &["completion", "tcsh"],
            &["audit", "--action", "stop"],
            &["audit", "--limit", "0"],
            &["delete", "a", "--reason", "two\nlines"],
        ] {
            let err = parse(wrong)
                .err()
                .unwrap_or_else(|| panic!("{wrong:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{wrong:?}: {err}");
        }
        assert_eq!(parse(&["--help"]).err().unwrap().exit_code(), 0);
        assert_eq!(parse(&["get", "--help"]).err().unwrap().exit_code(), 0);
    }

    #[test]
    fn a_usage_error_found_while_running_exits_2() {
        let Cli { command } = parse(&["get", "--server", "localhost:8080"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut std::io::empty(),
            out: &mut out,
            err: &mut err,
        };
        assert_eq!(run(command, Vec::new(), &mut io), EXIT_USAGE);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("error: --server: "), "{err}");
    }
}
