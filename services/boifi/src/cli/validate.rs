//! `boifi validate -f FILE|DIR|-`: the checks of `boifi apply` and of the API, offline.
//! Prints `policy/NAME valid (<file> document <n>)` per policy, or every problem as
//! `<file> document <n>: <field>: <message>` and exits 1.

use clap::Args;

use super::documents::{self, FilesArgs};
use super::{CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub files: FilesArgs,
}

pub fn run(args: &ValidateArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    let documents = documents::read_args(&args.files.files, io.stdin)?;
    let bad = documents::report_problems(&documents, io.err)?;
    if bad > 0 {
        return Err(CliError::Reported(format!(
            "{bad} of {} documents have problems",
            documents.len()
        )));
    }
    for document in &documents {
        for policy in document.result.as_deref().unwrap_or_default() {
            writeln!(
                io.out,
                "policy/{} valid ({})",
                policy.name(),
                document.place()
            )?;
        }
    }
    Ok(())
}
