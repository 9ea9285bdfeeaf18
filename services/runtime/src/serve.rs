//! Serving: an actix-web server on a listener the caller bound, until a shutdown future
//! completes, then a graceful stop.
//!
//! The caller binds (tests use port 0 and read the address first) and passes any future as the
//! shutdown signal; binaries pass [`shutdown_signal`]. actix's own signal handling is off, so
//! that future is the one way a server stops.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer};

/// Serve `listener` with the apps `app` builds (one per worker) until the server fails or
/// `shutdown` completes. Then `before_stop` runs (e.g. to end long-lived streams that would
/// hold the stop up), the server stops accepting, and in-flight requests get `grace` to finish.
pub async fn serve<F, T, B>(
    listener: TcpListener,
    app: F,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    before_stop: impl FnOnce(),
) -> io::Result<()>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let server = HttpServer::new(app)
        // A client that closes its connection ends the request it was waiting on: a held long
        // poll of a sidecar that went away ends then, not when its wait runs out, so the
        // sidecar table sees it go (actix-web keeps half-closed connections by default, and
        // neither Envoy nor the CLI half-closes).
        .h1_allow_half_closed(false)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(grace.as_secs())
        .run();
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

/// `BOIFI_LISTEN_ADDR` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("BOIFI_LISTEN_ADDR {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: io::Error,
}

/// Bind the listen address (`host:port`, the host resolved now). First the open files limit
/// is raised as far as allowed ([`crate::process::raise_open_files_limit`]): every client
/// of a server is a descriptor.
pub fn bind(addr: &str) -> Result<TcpListener, BindError> {
    match crate::process::raise_open_files_limit() {
        Ok(limit) => log::info!("open files limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }
    TcpListener::bind(addr).map_err(|source| BindError {
        addr: addr.to_owned(),
        source,
    })
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what Kubernetes sends).
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

#[cfg(test)]
mod tests;
