//! Serving: a bound listener, the state, and a shutdown signal.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::time::Duration;

use crate::{app, AppState};

/// In-flight requests get this long to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serve `listener` until `shutdown` completes, then stop accepting and let in-flight
/// requests finish ([`boifi_runtime::serve`]). The caller binds, so tests can use port 0 and
/// read the address first.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    boifi_runtime::serve(
        listener,
        move || app(state.clone()),
        SHUTDOWN_GRACE,
        shutdown,
        || {},
    )
    .await
}
