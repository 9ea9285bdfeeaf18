//! What every BOIFI server binary (`policy-api`, `sse-broadcaster`, `boifi serve`) does the same
//! way, written once.
//!
//! - [`env`]: `BOIFI_*` variables parsed from key/value pairs with envy ([`env::from_vars`]),
//!   the one rule for blank values, the variables every server reads ([`env::ServerVars`]:
//!   listen address and store settings); [`env::process_vars`] for `main`.
//! - [`serve`](mod@serve): an actix-web server on an already bound listener until a shutdown
//!   future completes, with a grace period ([`serve()`]); [`bind`]; [`shutdown_signal`]
//!   (SIGTERM or Ctrl-C).
//! - [`process`]: [`init_logger`] (env_logger, `RUST_LOG`, default `info`), [`exit_code`],
//!   and the open files limit (raised to the hard limit when binding: [`bind`]).
//! - [`error`]: [`ErrorBody`], the JSON body of every BOIFI error response
//!   (`{"error","message","details":[{"field","message"}]}`); each service maps its own error
//!   enum onto it.
//!
//! Nothing here reads the process environment except [`env::process_vars`], so tests pass
//! pairs and never set variables.

#![forbid(unsafe_code)]

pub mod env;
pub mod error;
pub mod process;
pub mod serve;

pub use env::{EnvError, InvalidVar};
pub use error::ErrorBody;
pub use process::{exit_code, init_logger};
pub use serve::{bind, serve, shutdown_signal, BindError};
