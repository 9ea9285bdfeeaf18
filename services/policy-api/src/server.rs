//! Serving: a bound listener, the state, and a shutdown signal.

use std::future::Future;
use std::io;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::HttpServer;

use crate::{app, AppState};

/// In-flight requests get this long to finish after the shutdown signal.
pub const SHUTDOWN_GRACE_SECS: u64 = 10;

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
    serve_until(server, shutdown, || {}).await
}

/// Drive a running `server` until it ends or `shutdown` completes; then call `before_stop`
/// (e.g. to end long-lived streams that would hold the stop up) and stop gracefully.
/// `boifi serve` builds its own server (both route sets) and stops it through this.
pub async fn serve_until(
    server: Server,
    shutdown: impl Future<Output = ()>,
    before_stop: impl FnOnce(),
) -> io::Result<()> {
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        res = &mut server => {
            before_stop();
            return res;
        }
        () = shutdown => {}
    }
    log::info!("shutting down");
    before_stop();
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
