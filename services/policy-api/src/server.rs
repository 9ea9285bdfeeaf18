//! Serving: a bound listener, the state, and a shutdown signal.

use std::future::Future;
use std::io;
use std::net::TcpListener;

use actix_web::HttpServer;

use crate::{app, AppState};

/// In-flight requests get this long to finish after the shutdown signal.
const SHUTDOWN_GRACE_SECS: u64 = 10;

/// Serve `listener` until `shutdown` completes, then stop accepting and let in-flight
/// requests finish. The caller binds, so tests can use port 0 and read the address first.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = HttpServer::new(move || app(state.clone()))
        .listen(listener)?
        // The shutdown future is the one signal path, for the binary and for tests.
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .run();
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        () = shutdown => {}
    }
    log::info!("shutting down");
    // The server future itself carries out the stop command, so it is polled alongside.
    let (res, ()) = tokio::join!(server, handle.stop(true));
    res
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => log::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        log::error!("cannot listen for Ctrl-C ({e}); stop the process with SIGKILL");
        std::future::pending::<()>().await;
    }
}
