//! `boifi`: the BOIFI command. Client commands (`apply`, `get`, `delete`, `halt`, `resume`,
//! `watch`, `validate`, `completion`) talk to the API; `boifi serve` runs policy-api and
//! sse-broadcaster together on one port. See `boifi::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    boifi::cli::main()
}
