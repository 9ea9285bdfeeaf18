//! `boifi delete NAME...` and `boifi delete -f FILE|DIR|-`: delete policies by name, or the
//! policies the documents name.
//!
//! Documents go through the same checks as for `apply` (a file that would not apply names
//! nothing for sure); then each policy is deleted on its own: one that does not exist is
//! reported and the others are still deleted, and the command exits 1.

use clap::Args;
use ureq::http::Method;

use super::client::{policy_path, Client, Connection, ConnectionArgs};
use super::documents::{self, Source};
use super::{CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Names of the policies to delete.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub names: Vec<String>,
    /// Delete the policies these YAML or JSON documents name (file, directory, or - for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
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
        let sources: Vec<Source> = args
            .files
            .iter()
            .map(|f| Source::from(f.as_str()))
            .collect();
        let documents = documents::read(&sources, io.stdin)?;
        documents::valid_or_report(documents, io.err, "deleted")?
            .iter()
            .map(|policy| policy.name().to_owned())
            .collect()
    };
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let mut failed = 0;
    for name in &names {
        match delete_one(&client, name) {
            Ok(()) => writeln!(io.out, "policy/{name} deleted")?,
            Err(e) if e.concerns_every_request() => return Err(e),
            Err(e) => {
                e.report(io.err)?;
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::Reported(format!(
            "{n} of {} policies not deleted",
            names.len()
        ))),
    }
}

fn delete_one(client: &Client, name: &str) -> Result<(), CliError> {
    client
        .send(Method::DELETE, &policy_path(name), &[], None)?
        .success()
        .map(|_| ())
}
