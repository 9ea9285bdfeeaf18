//! `boifi completion SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell
//! (clap_complete), e.g. `source <(boifi completion bash)`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    // Written to a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "boifi", &mut script);
    io.out.write_all(&script)?;
    Ok(())
}
