//! `boifi delete NAME...` and `boifi delete -f FILE|DIR|-`: delete policies by name, or the
//! policies the documents name.
//!
//! Documents go through the same checks as for `apply` (a file that would not apply names
//! nothing for sure); then each policy is deleted on its own: one that does not exist is
//! reported (`error: policy/NAME: not found`), the others are still deleted, and the command
//! exits 1. `--reason` goes to the server's audit trail with each delete.

use clap::Args;
use ureq::http::Method;

use super::client::{policy_path, Connection, ConnectionArgs};
use super::{audit, documents};
use super::{each_policy, CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Names of the policies to delete.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub names: Vec<String>,
    /// Delete the policies these YAML or JSON documents name (file, directory, or - for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Why, for the server's audit trail (e.g. "game day over").
    #[arg(long, value_name = "TEXT", value_parser = audit::parse_reason)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub fn run(
    args: &DeleteArgs,
    vars: Vec<(String, String)>,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let names: Vec<String> = if args.files.is_empty() {
        args.names.clone()
    } else {
        let documents = documents::read_args(&args.files, io.stdin)?;
        documents::valid_or_report(documents, io.err, "deleted")?
            .iter()
            .map(|policy| policy.name().to_owned())
            .collect()
    };
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let headers: Vec<(&str, &str)> = audit::reason_header(args.reason.as_deref())
        .into_iter()
        .collect();
    each_policy(&names, String::as_str, "deleted", io, |name| {
        let reply = client.send(Method::DELETE, &policy_path(name), &headers, None)?;
        match reply.status {
            404 => Err(CliError::Reported("not found".to_owned())),
            _ => reply.success().map(|_| "deleted"),
        }
    })
}
